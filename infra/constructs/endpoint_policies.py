"""The policies of the training VPC's endpoints: only this account's principals, only this
account's resources (plus the AWS-owned ones a job needs, each named), only what the jobs' role
may do.

Without a policy an endpoint allows "full access to any user or service within the VPC"
(AWS PrivateLink guide, "Control access to VPC endpoints using endpoint policies"): code in a
training container holding *another* account's credentials could write to that account's
buckets, log groups or registries through it, and this account's role could write to another
account's bucket. An endpoint policy does not grant anything; a request through the endpoint must
be allowed by it *and* by the caller's identity policy (and the resource's policy). The shape is
AWS's data perimeter (aws-samples/data-perimeter-policy-examples, ``vpc_endpoint_policies``):
``Principal "*"`` with ``aws:PrincipalAccount`` and ``aws:ResourceAccount`` conditions, "Principal
must be '*'" on a gateway endpoint (Amazon VPC user guide, "Gateway endpoints for Amazon S3"). Each
endpoint admits exactly the actions of its service that the jobs' execution role holds
(``job_actions``), none other.

Exceptions, each from AWS's documents:

- **ECR image layers.** "Amazon ECR uses Amazon S3 to store your image layers", in
  ``arn:aws:s3:::prod-<region>-starport-layer-bucket/*``; the S3 gateway endpoint must allow
  ``s3:GetObject`` on it, with ``Principal "*"`` (Amazon ECR user guide, "Amazon ECR interface
  VPC endpoints", "Create the Amazon S3 gateway endpoint"). The download is a presigned URL
  signed by an ECR account (data perimeter examples, ``service_owned_resources.md``), so no
  account condition can apply.
- **AWS-owned images.** The framework and built-in algorithm images live in AWS accounts per
  region (the SageMaker SDK's image tables, ``infra/image_uris.json``). Whether SageMaker pulls
  them through the job's VPC is not documented, so the ECR endpoints admit this account's
  principals pulling from those accounts' repositories too ("BatchGetImage might require access
  to service-owned repositories", ``ecr.api_endpoint_policy.json`` of the same examples).
- **Actions without a resource** (:data:`RESOURCELESS_ACTIONS`: ``ecr:GetAuthorizationToken``
  and ``sts:GetCallerIdentity``, which have no resource types in the Service Authorization
  Reference, and ``cloudwatch:PutMetricData``, whose one resource type, an OTLP dataset, is not
  what jobs write: metrics are not resources). What ``aws:ResourceAccount`` holds for them is not
  documented, so they are admitted on ``aws:PrincipalAccount`` alone. ``sts:GetCallerIdentity`` needs no permission
  ("No permissions are required to perform this operation", STS API reference) and is how SDKs
  learn the account; it is the STS endpoint's only action.

One policy serves both ECR endpoints ("We recommend creating a single IAM resource policy and
attaching it to both of the Amazon ECR VPC endpoints", Amazon ECR user guide).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from aws_cdk import Stack
from aws_cdk import aws_iam as iam
from constructs import Construct

#: Actions that act on no resource of the jobs (see the module; checked against AWS's action list
#: by tests/test_iam_reference.py).
RESOURCELESS_ACTIONS = frozenset({"ecr:GetAuthorizationToken", "cloudwatch:PutMetricData",
                                  "sts:GetCallerIdentity"})
#: The ECR actions that pull an image (the execution role's PullTrainingImage).
IMAGE_PULL_ACTIONS = ("ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer")
#: What the STS endpoint admits beside the role's own STS actions (it holds none).
STS_ACTIONS = ("sts:GetCallerIdentity",)
#: The statements' ids.
OWN_RESOURCES_SID = "ThisAccountsPrincipalsOnThisAccountsResources"
RESOURCELESS_SID = "ThisAccountsPrincipalsActionsWithoutResource"
AWS_IMAGES_SID = "ThisAccountsPrincipalsPullAwsImages"
ECR_LAYERS_SID = "EcrImageLayers"


def ecr_layer_bucket_objects(region: str) -> str:
    """Where ECR keeps image layers in ``region`` (Amazon ECR user guide, see the module)."""
    return f"arn:aws:s3:::prod-{region}-starport-layer-bucket/*"


def repositories_of(stack: Stack, account: str) -> str:
    """Every ECR repository of ``account`` in the stack's region."""
    return f"arn:{stack.partition}:ecr:{stack.region}:{account}:repository/*"


def service_actions(job_actions: Iterable[str], *services: str) -> list[str]:
    """The actions of ``job_actions`` whose service prefix is one of ``services``, sorted."""
    return sorted({action for action in job_actions if action.split(":", 1)[0] in services})


def own_resources(scope: Construct, service: str) -> list[str]:
    """The ARNs of every resource of ``service`` in this account and region that the jobs' role
    acts on (S3 ARNs carry no account: ``aws:ResourceAccount`` is what holds them to it)."""
    stack = Stack.of(scope)
    prefix = f"arn:{stack.partition}"
    patterns = {
        "s3": f"{prefix}:s3:::*",
        "logs": f"{prefix}:logs:{stack.region}:{stack.account}:log-group:*",
        "kms": f"{prefix}:kms:{stack.region}:{stack.account}:key/*",
        "ecr": repositories_of(stack, stack.account),
        "sagemaker-mlflow": f"{prefix}:sagemaker:{stack.region}:{stack.account}:mlflow-tracking-server/*",
    }
    if service not in patterns:
        raise ValueError(f"no resource pattern for the endpoint of service {service!r}")
    return [patterns[service]]


def account_statements(scope: Construct, actions: Sequence[str]) -> list[iam.PolicyStatement]:
    """``actions`` (of one service) for this account's principals: those with a resource on this
    account's resources only (by ARN where the ARN names the account, by ``aws:ResourceAccount``
    for S3); the :data:`RESOURCELESS_ACTIONS` on the principal's account alone."""
    if len({action.split(":", 1)[0] for action in actions}) > 1:
        raise ValueError(f"one service's actions at a time, got {sorted(actions)}")
    account = Stack.of(scope).account
    with_resource = [a for a in actions if a not in RESOURCELESS_ACTIONS]
    resourceless = [a for a in actions if a in RESOURCELESS_ACTIONS]
    statements = []
    if with_resource:
        service = with_resource[0].split(":", 1)[0]
        # The ARN names the account, but for S3's, which hold none: there ``aws:ResourceAccount``
        # does (it is not added elsewhere, where a service that left it out would be refused).
        conditions = {"aws:PrincipalAccount": account,
                      **({"aws:ResourceAccount": account} if service == "s3" else {})}
        statements.append(iam.PolicyStatement(
            sid=OWN_RESOURCES_SID, principals=[iam.AnyPrincipal()], actions=with_resource,
            resources=own_resources(scope, service), conditions={"StringEquals": conditions}))
    if resourceless:
        statements.append(iam.PolicyStatement(
            sid=RESOURCELESS_SID, principals=[iam.AnyPrincipal()], actions=resourceless,
            resources=["*"], conditions={"StringEquals": {"aws:PrincipalAccount": account}}))
    return statements


def s3_gateway_statements(scope: Construct, *, job_actions: Iterable[str]) -> list[iam.PolicyStatement]:
    """The S3 gateway endpoint: the role's S3 actions on this account's buckets, and ECR's layers."""
    region = Stack.of(scope).region
    return [*account_statements(scope, service_actions(job_actions, "s3")),
            iam.PolicyStatement(sid=ECR_LAYERS_SID, principals=[iam.AnyPrincipal()],
                                actions=["s3:GetObject"], resources=[ecr_layer_bucket_objects(region)])]


def ecr_statements(scope: Construct, *, job_actions: Iterable[str],
                   image_accounts: Sequence[str]) -> list[iam.PolicyStatement]:
    """Both ECR endpoints: the role's ECR actions on this account's repositories, and pulls
    from the repositories of ``image_accounts`` (AWS's image accounts in the region)."""
    stack = Stack.of(scope)
    statements = account_statements(scope, service_actions(job_actions, "ecr"))
    if image_accounts:
        statements.append(iam.PolicyStatement(
            sid=AWS_IMAGES_SID, principals=[iam.AnyPrincipal()], actions=list(IMAGE_PULL_ACTIONS),
            resources=[repositories_of(stack, account) for account in sorted(image_accounts)],
            conditions={"StringEquals": {"aws:PrincipalAccount": stack.account}}))
    return statements
