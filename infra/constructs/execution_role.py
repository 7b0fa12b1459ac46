"""The IAM role SageMaker training jobs run as."""

from __future__ import annotations

from aws_cdk import ArnFormat, CrossStackReferences, ReferenceStrength, RemovalPolicy, Stack
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra.compliance import acknowledge, nag_arn
from infra.iam_statements import ecr_authorization_token
from smtrain.core import contract

#: Where SageMaker writes training job logs, and the namespace of its training metrics.
TRAINING_LOG_GROUP = contract.TRAINING_LOG_GROUP
TRAINING_METRICS_NAMESPACE = contract.TRAINING_METRICS_NAMESPACE


class SageMakerExecutionRole(Construct):
    """The least-privilege role that training and tuning jobs assume.

    Guarantees:
    - only ``sagemaker.amazonaws.com`` can assume it, on behalf of this account and only for the
      project's own jobs: ``aws:SourceAccount``, and ``aws:SourceArn`` a training job or a tuning
      job named ``<job_name_prefix>*`` in the stack's region (against the confused deputy: the
      SageMaker developer guide's "Cross-service confused deputy prevention" gives
      ``training-job/*`` for training jobs; for a tuning job's trials it does not say whether the
      source is the trial or the tuning job, so both are admitted, and a trial is named after its
      tuning job);
    - S3: read (and list) only under ``input_prefix`` of ``data_bucket``; write models only under
      ``model_prefix`` and read/write checkpoints only under ``checkpoint_prefix`` of
      ``artifacts_bucket``; nothing else;
    - KMS: decrypt and generate data keys with ``key`` only, and create grants on it for AWS
      resources only (the training volume, ``VolumeKmsKeyId``);
    - ECR: pull from ``repository`` only (plus ``GetAuthorizationToken``, which has no resource);
    - CloudWatch: write to the SageMaker training log group and publish metrics in SageMaker's
      namespace only.

    ``description`` (default: one for all programs' jobs) says whose jobs run as it. The role and
    its policy are retained on stack deletion. Another stack reads the role as a weak reference
    (``Fn::GetStackOutput``), not an automatic export: CloudFormation refuses to remove an export
    another stack imports, so a role that leaves the template (its program removed) must not be
    one (a stack may still export it on purpose, ``Stack.export_value``).
    Grants on resources of other stacks (the script-mode code) are added by those stacks.
    """

    def __init__(self, scope: Construct, construct_id: str, *, data_bucket: s3.IBucket,
                 artifacts_bucket: s3.IBucket, key: kms.IKey, repository: ecr.IRepository,
                 input_prefix: str, model_prefix: str, checkpoint_prefix: str,
                 job_name_prefix: str, queued_job_name_prefix: str | None = None,
                 description: str = "Assumed by SageMaker training and tuning jobs of this project",
                 ) -> None:
        super().__init__(scope, construct_id)
        if not job_name_prefix or "*" in job_name_prefix:
            raise ValueError(f"job_name_prefix must be a job name's start like 'smtrain-', got {job_name_prefix!r}")
        for name, prefix in (("input_prefix", input_prefix), ("model_prefix", model_prefix),
                             ("checkpoint_prefix", checkpoint_prefix)):
            if not prefix.endswith("/") or prefix.startswith("/") or "*" in prefix:
                raise ValueError(f"{name} must be a key prefix like 'datasets/', got {prefix!r}")
        stack = Stack.of(self)
        self.role = iam.Role(
            self,
            "Role",
            description=description,
            assumed_by=iam.ServicePrincipal(
                "sagemaker.amazonaws.com",
                conditions={
                    "StringEquals": {"aws:SourceAccount": stack.account},
                    "ArnLike": {
                        "aws:SourceArn": [
                            stack.format_arn(service="sagemaker", resource=kind,
                                             resource_name=f"{job_name_prefix}*")
                            for kind in ("training-job", "hyper-parameter-tuning-job")]
                        # As Batch writes the name, and lowercased (as some ARNs spell it).
                        + [stack.format_arn(service="sagemaker", resource="training-job",
                                            resource_name=f"{spelling}*")
                           for spelling in dict.fromkeys(
                               [queued_job_name_prefix, queued_job_name_prefix.lower()]
                               if queued_job_name_prefix else [])],
                    },
                },
            ),
        )
        cfn_role = self.role.node.default_child
        assert cfn_role is not None
        CrossStackReferences.of(cfn_role).produce(ReferenceStrength.WEAK)
        log_group_arn = stack.format_arn(service="logs", resource="log-group",
                                         resource_name=f"{TRAINING_LOG_GROUP}:*",
                                         arn_format=ArnFormat.COLON_RESOURCE_NAME)
        statements = [
            iam.PolicyStatement(
                sid="ReadTrainingInputs",
                actions=["s3:GetObject"],
                resources=[data_bucket.arn_for_objects(f"{input_prefix}*")],
            ),
            iam.PolicyStatement(
                sid="ListTrainingInputs",
                actions=["s3:ListBucket"],
                resources=[data_bucket.bucket_arn],
                conditions={"StringLike": {"s3:prefix": [f"{input_prefix}*"]}},
            ),
            iam.PolicyStatement(
                sid="WriteModels",
                actions=["s3:PutObject", "s3:AbortMultipartUpload"],
                resources=[artifacts_bucket.arn_for_objects(f"{model_prefix}*")],
            ),
            iam.PolicyStatement(
                sid="ReadWriteCheckpoints",
                actions=["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"],
                resources=[artifacts_bucket.arn_for_objects(f"{checkpoint_prefix}*")],
            ),
            iam.PolicyStatement(
                sid="ListCheckpoints",
                actions=["s3:ListBucket"],
                resources=[artifacts_bucket.bucket_arn],
                conditions={"StringLike": {"s3:prefix": [f"{checkpoint_prefix}*"]}},
            ),
            # kms:Encrypt: "If you use a KMS key ID or an alias of your KMS key, the SageMaker
            # execution role must include permissions to call kms:Encrypt" (API reference,
            # OutputDataConfig.KmsKeyId); every job names the stack key there.
            iam.PolicyStatement(
                sid="UseDataKey",
                actions=["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey"],
                resources=[key.key_arn],
            ),
            # "If you specify a volume KMS key in the resource configuration of your training
            # job, add ... kms:CreateGrant" (developer guide, "CreateTrainingJob API: Execution
            # Role Permissions"): jobs on EBS-only instance types name the stack key as
            # VolumeKmsKeyId. Only grants for AWS resources (the volume), none to a person.
            iam.PolicyStatement(
                sid="EncryptTrainingVolumes",
                actions=["kms:CreateGrant"],
                resources=[key.key_arn],
                conditions={"Bool": {"kms:GrantIsForAWSResource": "true"}},
            ),
            iam.PolicyStatement(
                sid="PullTrainingImage",
                actions=["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer",
                         "ecr:BatchCheckLayerAvailability"],
                resources=[repository.repository_arn],
            ),
            ecr_authorization_token(),
            iam.PolicyStatement(
                sid="WriteTrainingLogs",
                actions=["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents",
                         "logs:DescribeLogStreams"],
                resources=[log_group_arn],
            ),
            iam.PolicyStatement(
                sid="PublishTrainingMetrics",
                actions=["cloudwatch:PutMetricData"],
                resources=["*"],  # PutMetricData has no resources; the namespace condition scopes it
                conditions={"StringEquals": {"cloudwatch:namespace": TRAINING_METRICS_NAMESPACE}},
            ),
        ]
        #: Every action the role's own policy grants (the training VPC's endpoints admit these).
        self.actions: tuple[str, ...] = tuple(sorted({action for statement in statements
                                                      for action in statement.actions}))
        self.policy = iam.ManagedPolicy(self, "Policy", statements=statements, roles=[self.role],
                                        description="What SageMaker training jobs may do")
        # Jobs that are still running (or models being registered elsewhere) keep working when
        # the stack is deleted; the role goes only when someone deletes it on purpose.
        self.role.apply_removal_policy(RemovalPolicy.RETAIN)
        self.policy.apply_removal_policy(RemovalPolicy.RETAIN)
        acknowledge(
            self.policy, "AwsSolutions-IAM5",
            "Wildcards only as key prefixes inside the project's buckets (datasets/, models/, "
            "checkpoints/: job output keys are chosen by SageMaker at run time), the SageMaker "
            "training log group's streams (named after each job), and '*' for "
            "ecr:GetAuthorizationToken and cloudwatch:PutMetricData, which have no resource "
            "type (PutMetricData is limited by a namespace condition).",
            applies_to=[
                "Resource::*",
                f"Resource::{nag_arn(stack, data_bucket.arn_for_objects(f'{input_prefix}*'))}",
                f"Resource::{nag_arn(stack, artifacts_bucket.arn_for_objects(f'{model_prefix}*'))}",
                f"Resource::{nag_arn(stack, artifacts_bucket.arn_for_objects(f'{checkpoint_prefix}*'))}",
                f"Resource::{nag_arn(stack, log_group_arn)}",
            ],
        )
