"""A SageMaker managed MLflow tracking server, and what training jobs need to log to it."""

from __future__ import annotations

from aws_cdk import RemovalPolicy, Stack
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


class ExperimentTracking(Construct):
    """An MLflow tracking server (``tracking_server_size``, default Small) whose artifacts live
    under ``artifact_prefix`` (default ``mlflow/``) of ``artifacts_bucket``.

    Guarantees:
    - the server and its role are retained on stack deletion (the run history lives there);
    - the server's role reads and writes only that prefix, with ``key``;
    - ``execution_role`` may call only the MLflow actions the training code uses, on this server
      only, and write its artifacts under the prefix (the MLflow client uploads them itself).

    :attr:`tracking_server_arn` is the tracking URI the training jobs get. The server is billed
    by the hour while it exists.
    """

    def __init__(self, scope: Construct, construct_id: str, *, name: str, artifacts_bucket: s3.IBucket,
                 key: kms.IKey, execution_role: iam.IRole, artifact_prefix: str = "mlflow/",
                 tracking_server_size: str = "Small") -> None:
        super().__init__(scope, construct_id)
        if tracking_server_size not in TRACKING_SERVER_SIZES:
            raise ValueError(f"tracking_server_size must be one of {TRACKING_SERVER_SIZES}, "
                             f"got {tracking_server_size!r}")
        if not artifact_prefix.endswith("/") or artifact_prefix.startswith("/"):
            raise ValueError(f"artifact_prefix must look like 'mlflow/', got {artifact_prefix!r}")
        stack = Stack.of(self)
        objects = artifacts_bucket.arn_for_objects(f"{artifact_prefix}*")
        server_role = iam.Role(
            self, "ServerRole",
            description="Lets the MLflow tracking server keep artifacts in the artifacts bucket",
            assumed_by=iam.ServicePrincipal(
                "sagemaker.amazonaws.com",
                conditions={"StringEquals": {"aws:SourceAccount": stack.account}}),
        )
        server_policy = iam.ManagedPolicy(self, "ServerPolicy", roles=[server_role], statements=[
            iam.PolicyStatement(sid="ReadWriteArtifacts",
                                actions=["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
                                resources=[objects]),
            iam.PolicyStatement(sid="ListArtifacts", actions=["s3:ListBucket"],
                                resources=[artifacts_bucket.bucket_arn],
                                conditions={"StringLike": {"s3:prefix": [f"{artifact_prefix}*"]}}),
            iam.PolicyStatement(sid="UseDataKey", actions=["kms:Decrypt", "kms:GenerateDataKey"],
                                resources=[key.key_arn]),
        ])
        self.server = sagemaker.CfnMlflowTrackingServer(
            self, "Server",
            tracking_server_name=name,
            artifact_store_uri=f"s3://{artifacts_bucket.bucket_name}/{artifact_prefix}",
            role_arn=server_role.role_arn,
            tracking_server_size=tracking_server_size,
            automatic_model_registration=False,
        )
        self.tracking_server_arn = self.server.attr_tracking_server_arn
        client_policy = iam.ManagedPolicy(self, "ClientPolicy", roles=[execution_role], statements=[
            iam.PolicyStatement(sid="LogToTrackingServer", actions=list(MLFLOW_CLIENT_ACTIONS),
                                resources=[self.tracking_server_arn]),
            iam.PolicyStatement(sid="WriteRunArtifacts", actions=["s3:PutObject"], resources=[objects]),
        ])
        for resource in (server_role, server_policy, self.server, client_policy):
            resource.apply_removal_policy(RemovalPolicy.RETAIN)
        reason = ("MLflow artifact keys are chosen by the MLflow client per run, so access is scoped "
                  f"to the '{artifact_prefix}' prefix of the artifacts bucket.")
        acknowledge(server_policy, "AwsSolutions-IAM5", reason,
                    applies_to=[f"Resource::{nag_arn(stack, objects)}"])
        acknowledge(client_policy, "AwsSolutions-IAM5", reason,
                    applies_to=[f"Resource::{nag_arn(stack, objects)}"])
