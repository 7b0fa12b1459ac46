"""A SageMaker managed MLflow tracking server, and what training jobs need to log to it; the
artifact-store role and client policy it shares with the MLflow App (``mlflow_app.py``)."""

from __future__ import annotations

import re
from collections.abc import Sequence

from aws_cdk import CrossStackReferences, Fn, ReferenceStrength, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sagemaker as sagemaker
from constructs import Construct

from infra.compliance import acknowledge, nag_arn

#: What the training code's MLflow client calls (set_experiment, start_run with tags,
#: log_params/log_metrics as batches, end_run), from the SageMaker guide's list of MLflow actions.
MLFLOW_CLIENT_ACTIONS = (
    "sagemaker-mlflow:GetExperimentByName", "sagemaker-mlflow:CreateExperiment",
    "sagemaker-mlflow:CreateRun", "sagemaker-mlflow:GetRun", "sagemaker-mlflow:UpdateRun",
    "sagemaker-mlflow:LogBatch", "sagemaker-mlflow:LogMetric", "sagemaker-mlflow:LogParam",
    "sagemaker-mlflow:SetTag",
)
TRACKING_SERVER_SIZES = ("Small", "Medium", "Large")

#: ``TrackingServerName``: 1-256 characters matching ``[a-zA-Z0-9](-*[a-zA-Z0-9]){0,255}`` (the
#: CloudFormation schema of AWS::SageMaker::MlflowTrackingServer and botocore's sagemaker
#: 2017-07-24 model, shape ``TrackingServerName``, say the same).
TRACKING_SERVER_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,255}$")
TRACKING_SERVER_NAME_MAX = 256
#: IAM's ``Role.RoleId`` (botocore iam model, shape ``idType``) is at most 128 characters. The IAM
#: User Guide ("IAM identifiers", unique IDs) shows them as upper-case letters and digits starting
#: with ``AROA`` for a role, and gives a role created again under the same name a new unique ID.
ROLE_ID_MAX = 128
#: The longest ``name_prefix`` that leaves room for ``-<RoleId>`` within the name limit.
NAME_PREFIX_MAX = TRACKING_SERVER_NAME_MAX - 1 - ROLE_ID_MAX


class ExperimentTracking(Construct):
    """An MLflow tracking server (``tracking_server_size``, default Small) whose artifacts live
    under ``artifact_prefix`` (default ``mlflow/``) of ``artifacts_bucket``.

    Guarantees:
    - the server's role reads and writes only that prefix, with ``key``;
    - ``execution_roles`` (the jobs' roles) may call only the MLflow actions the training code uses, on this server
      only, and write its artifacts under the prefix (the MLflow client uploads them itself);
    - the server is named ``<name_prefix>-<RoleId of its role>``, a name no earlier server of
      this project can hold;
    - :attr:`tracking_server_arn` reaches other stacks as a weak reference (``Fn::GetStackOutput``),
      never as an export.

    The server is billed by the hour while it runs.

    **Lifecycle.** Three facts decide it. (1) CloudFormation identifies a tracking server by its
    name (``primaryIdentifier`` and ``createOnlyProperties`` of the resource schema are
    ``TrackingServerName``): a server that outlives the stack resource blocks any new server of
    that name with "already exists", and a new name replaces the server. (2) The server holds the
    MLflow metadata (experiments, runs, parameters, metrics); SageMaker has no API to export it
    (the MLflow operations are Create/Describe/List/Update/Start/Stop/Delete and presigned URLs),
    so deleting the server deletes the run history; artifacts stay in S3. (3) CloudFormation
    refuses to remove an export another stack imports, so an optional resource must not be
    exported. Hence:

    - the server, its role and the role's policy are kept when they leave the template or the
      stack is deleted, but not when the operation that created them rolls back
      (``DeletionPolicy: RetainExceptOnCreate``, ``UpdateReplacePolicy: Retain``). A retained
      server needs its role: the SageMaker guide ("Clean up MLflow resources") warns that deleting
      the role first loses access to the server. The execution role's client policy holds no
      data and is deleted with the flag;
    - the name ends in the unique ID IAM gives the server's role, which is created together with
      the server. Every creation (first deploy, switching the flag on again, deploying after
      ``cdk destroy``) gets a new role, so a new name: it never collides with a retained server.
      An update keeps the role, so the name and the server (and its history) stay; a size change
      is an in-place update;
    - the ARN goes to the workflow stack through ``Fn::GetStackOutput`` on a plain output, so
      switching the flag off can drop the output whether or not the workflow stack was updated
      first.

    Case by case: *first deploy with the flag on*: role, then server, then the output; the workflow
    stack reads it. *On to off*: the storage stack keeps the server (and its history, still
    running and billed) and deletes the client policy and the output; deploy the stacks in either
    order. *Off to on, or on, off, on*: a new role and a new, empty server beside the retained one;
    the old runs stay readable on the old server. *Destroy both stacks, then deploy*: the same, in
    a new stack. *A failed update that created the server*: the rollback deletes the new server and
    role, so a retry starts clean. *Replacing the role* (a changed construct path): a new server,
    the old one kept. *Workflow stack first while switching the flag on*: its deploy fails, because
    the storage stack's output does not exist yet; deploy the storage stack first (``cdk deploy
    --all`` orders them so). ``Fn::GetStackOutput`` is read only when the workflow stack deploys,
    and the CDK CLI skips a stack whose template did not change: after switching the flag off and
    on again with only the storage stack deployed in between, the workflow stack still names the
    old server, and its jobs report "tracking: starting the run failed" (the old client policy is
    gone). Destroy and redeploy the workflow stack (it holds no data) to read the new ARN.

    Rejected: a fixed or user-set name would let the workflow stack compute the ARN itself
    (``Stack.format_arn``, no deploy-time read), but a name known at synth is the same at every
    creation, so switching the flag on again or deploying after a destroy would fail with "already
    exists" beside the retained server. An SSM parameter read by the workflow stack: CloudFormation
    resolves an ``AWS::SSM::Parameter::Value`` parameter with the deploying role's rights, and the
    CDK bootstrap's deploy role may read only the bootstrap version parameter. Deleting the server
    with the flag (no retention) would delete its run history.
    """

    def __init__(self, scope: Construct, construct_id: str, *, name_prefix: str,
                 artifacts_bucket: s3.IBucket, key: kms.IKey, execution_roles: Sequence[iam.IRole],
                 artifact_prefix: str = "mlflow/", tracking_server_size: str = "Small") -> None:
        super().__init__(scope, construct_id)
        if not TRACKING_SERVER_NAME.fullmatch(name_prefix) or len(name_prefix) > NAME_PREFIX_MAX:
            raise ValueError(f"name_prefix must be 1-{NAME_PREFIX_MAX} characters of a-z, A-Z, 0-9 and "
                             f"'-', starting and ending with a letter or digit, got {name_prefix!r}")
        if tracking_server_size not in TRACKING_SERVER_SIZES:
            raise ValueError(f"tracking_server_size must be one of {TRACKING_SERVER_SIZES}, "
                             f"got {tracking_server_size!r}")
        check_artifact_prefix(artifact_prefix)
        server_role, server_policy = artifact_store_role(
            self, "Server", description="Lets the MLflow tracking server keep artifacts in the artifacts bucket",
            artifacts_bucket=artifacts_bucket, artifact_prefix=artifact_prefix, key=key)
        #: Unique per creation of the role, and so of the server (see the class docstring).
        self.tracking_server_name = Fn.join("-", [name_prefix, server_role.role_id])
        self.server = sagemaker.CfnMlflowTrackingServer(
            self, "Server",
            tracking_server_name=self.tracking_server_name,
            artifact_store_uri=f"s3://{artifacts_bucket.bucket_name}/{artifact_prefix}",
            role_arn=server_role.role_arn,
            tracking_server_size=tracking_server_size,
            automatic_model_registration=False,
        )
        # The policy attaches itself to the role (its Roles list): without this the server could
        # be created, and first reach the bucket, before its role may do so.
        self.server.node.add_dependency(server_policy)
        # Another stack reads the ARN with Fn::GetStackOutput: an export could not be removed
        # while the workflow stack imports it, so the flag could not be switched off.
        CrossStackReferences.of(self.server).produce(ReferenceStrength.WEAK)
        self.tracking_server_arn = self.server.attr_tracking_server_arn
        mlflow_client_policy(self, execution_roles=execution_roles, sid="LogToTrackingServer",
                             actions=MLFLOW_CLIENT_ACTIONS, target_arn=self.tracking_server_arn,
                             artifacts_bucket=artifacts_bucket, artifact_prefix=artifact_prefix)
        for resource in (server_role, server_policy, self.server):
            resource.apply_removal_policy(RemovalPolicy.RETAIN_ON_UPDATE_OR_DELETE)


def check_artifact_prefix(artifact_prefix: str) -> None:
    if not artifact_prefix.endswith("/") or artifact_prefix.startswith("/"):
        raise ValueError(f"artifact_prefix must look like 'mlflow/', got {artifact_prefix!r}")


def _artifact_reason(artifact_prefix: str) -> str:
    return ("MLflow artifact keys are chosen by the MLflow client per run, so access is scoped "
            f"to the '{artifact_prefix}' prefix of the artifacts bucket.")


def artifact_store_role(scope: Construct, id_prefix: str, *, description: str,
                        artifacts_bucket: s3.IBucket, artifact_prefix: str,
                        key: kms.IKey) -> tuple[iam.Role, iam.ManagedPolicy]:
    """The role SageMaker assumes for an MLflow server or app (``<id_prefix>Role``), and its policy
    (``<id_prefix>Policy``): read, write and list ``artifact_prefix`` of ``artifacts_bucket``, with
    ``key``. Trusts ``sagemaker.amazonaws.com`` from this account only (``aws:SourceAccount``)."""
    stack = Stack.of(scope)
    objects = artifacts_bucket.arn_for_objects(f"{artifact_prefix}*")
    role = iam.Role(
        scope, f"{id_prefix}Role", description=description,
        assumed_by=iam.ServicePrincipal(
            "sagemaker.amazonaws.com",
            conditions={"StringEquals": {"aws:SourceAccount": stack.account}}),
    )
    policy = iam.ManagedPolicy(scope, f"{id_prefix}Policy", roles=[role], statements=[
        iam.PolicyStatement(sid="ReadWriteArtifacts",
                            actions=["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
                            resources=[objects]),
        iam.PolicyStatement(sid="ListArtifacts", actions=["s3:ListBucket"],
                            resources=[artifacts_bucket.bucket_arn],
                            conditions={"StringLike": {"s3:prefix": [f"{artifact_prefix}*"]}}),
        iam.PolicyStatement(sid="UseDataKey", actions=["kms:Decrypt", "kms:GenerateDataKey"],
                            resources=[key.key_arn]),
    ])
    acknowledge(policy, "AwsSolutions-IAM5", _artifact_reason(artifact_prefix),
                applies_to=[f"Resource::{nag_arn(stack, objects)}"])
    return role, policy


def mlflow_client_policy(scope: Construct, *, execution_roles: Sequence[iam.IRole], sid: str,
                         actions: Sequence[str], target_arn: str, artifacts_bucket: s3.IBucket,
                         artifact_prefix: str) -> iam.ManagedPolicy:
    """``ClientPolicy`` on ``execution_roles``: ``actions`` on ``target_arn`` only, and
    ``s3:PutObject`` under ``artifact_prefix`` (the MLflow client uploads a run's artifacts to the
    artifact store itself). It holds no data, so it goes with the tracking (``DeletionPolicy:
    Delete``)."""
    stack = Stack.of(scope)
    objects = artifacts_bucket.arn_for_objects(f"{artifact_prefix}*")
    policy = iam.ManagedPolicy(scope, "ClientPolicy", roles=list(execution_roles), statements=[
        iam.PolicyStatement(sid=sid, actions=list(actions), resources=[target_arn]),
        iam.PolicyStatement(sid="WriteRunArtifacts", actions=["s3:PutObject"], resources=[objects]),
    ])
    policy.apply_removal_policy(RemovalPolicy.DESTROY)
    acknowledge(policy, "AwsSolutions-IAM5", _artifact_reason(artifact_prefix),
                applies_to=[f"Resource::{nag_arn(stack, objects)}"])
    return policy
