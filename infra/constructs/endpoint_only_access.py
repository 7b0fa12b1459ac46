"""Bucket policies that keep the SageMaker execution role's data access inside the training network.

The pattern is AWS's: the S3 user guide, "Controlling access from VPC endpoints with bucket
policies" (a Deny with ``Principal: *`` and ``StringNotEquals`` on ``aws:SourceVpce``, or on
``aws:SourceVpc`` for a whole VPC), as used by the aws-samples "amazon-sagemaker-secure-mlops"
and "amazon-sagemaker-administration-workshop" data buckets. Two facts make it safe here:

- ``aws:SourceVpce`` / ``aws:SourceVpc`` are in the request only when it comes through a VPC
  endpoint (re:Post knowledge center, "iam-restrict-access-policy"); ``StringNotEquals`` on a key
  that is absent matches (IAM user guide, "Condition operators"), so every request of the role
  from outside the endpoint is denied;
- ``aws:PrincipalArn`` is the role's ARN (not the session's) when a role's session makes the
  request (IAM user guide, "AWS global condition context keys"). The Deny names the role in a
  condition, not as ``Principal``, so it holds for every session of the role and survives the
  role being recreated; every other principal (deploys, the console, the MLflow server's role)
  is untouched, and this adds no permission to anyone.
"""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3

#: Every data-plane action the execution role is granted on the buckets (execution_role.py, and
#: the MLflow client policy of experiment_tracking.py, which is s3:PutObject).
OBJECT_ACTIONS = ("s3:AbortMultipartUpload", "s3:DeleteObject", "s3:GetObject", "s3:PutObject")
BUCKET_ACTIONS = ("s3:ListBucket",)
#: The two Deny statements: object actions on the objects, bucket actions on the bucket (each
#: action only on the resource type it acts on: Service Authorization Reference, Amazon S3).
OBJECTS_SID = "DenyExecutionRoleObjectsOutsideTrainingNetwork"
BUCKET_SID = "DenyExecutionRoleBucketOutsideTrainingNetwork"


def network_condition(*, s3_endpoint_id: str | None, vpc_id: str) -> dict[str, dict[str, str]]:
    """The condition that matches requests *not* made through the training network: not through
    the S3 endpoint the stack created, or (an existing VPC, whose endpoints the stack does not
    know) not from that VPC."""
    if s3_endpoint_id is not None:
        return {"StringNotEquals": {"aws:SourceVpce": s3_endpoint_id}}
    return {"StringNotEquals": {"aws:SourceVpc": vpc_id}}


def deny_outside_network(bucket: s3.IBucket, *, roles: Sequence[iam.IRole], s3_endpoint_id: str | None,
                         vpc_id: str) -> list[iam.PolicyStatement]:
    """Add to ``bucket``'s policy a Deny of the roles' data-plane actions (``OBJECT_ACTIONS`` on
    its objects, ``BUCKET_ACTIONS`` on the bucket) unless the request comes through the training
    network; return the statements."""
    conditions = {
        "ArnEquals": {"aws:PrincipalArn": [role.role_arn for role in roles]},
        **network_condition(s3_endpoint_id=s3_endpoint_id, vpc_id=vpc_id),
    }
    statements = [
        iam.PolicyStatement(sid=OBJECTS_SID, effect=iam.Effect.DENY, principals=[iam.AnyPrincipal()],
                            actions=list(OBJECT_ACTIONS), resources=[bucket.arn_for_objects("*")],
                            conditions=conditions),
        iam.PolicyStatement(sid=BUCKET_SID, effect=iam.Effect.DENY, principals=[iam.AnyPrincipal()],
                            actions=list(BUCKET_ACTIONS), resources=[bucket.bucket_arn],
                            conditions=conditions),
    ]
    for statement in statements:
        if not bucket.add_to_resource_policy(statement).statement_added:
            raise ValueError(f"{bucket.node.path} has no bucket policy to add the network Deny to")
    return statements
