"""The stateful stack: everything that holds data and must survive ``cdk destroy``."""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, Stack
from constructs import Construct

from infra.constructs.encryption_key import TrainingDataKey
from infra.constructs.execution_role import SageMakerExecutionRole
from infra.constructs.experiment_tracking import ExperimentTracking
from infra.constructs.training_buckets import (
    CHECKPOINTS_PREFIX,
    DATASETS_PREFIX,
    MODELS_PREFIX,
    TrainingBuckets,
)
from infra.constructs.training_repository import TrainingRepository
from infra.settings import Settings
from smtrain import contract


def workflow_log_group_prefix(settings: Settings) -> str:
    """The name prefix of the state machine's log group (the key lets Logs use it)."""
    return f"/aws/vendedlogs/states/{settings.name_prefix}-"


class StorageStack(Stack):
    """KMS key, buckets, ECR repository and the SageMaker execution role, all retained."""

    def __init__(self, scope: Construct, construct_id: str, *, settings: Settings,
                 **kwargs: Any) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.key = TrainingDataKey(
            self, "DataKey", log_group_name_prefix=workflow_log_group_prefix(settings),
        ).key
        buckets = TrainingBuckets(self, "Buckets", key=self.key)
        self.data_bucket = buckets.data
        self.artifacts_bucket = buckets.artifacts
        self.repository = TrainingRepository(
            self, "TrainingImages", key=self.key).repository
        self.execution_role = SageMakerExecutionRole(
            self, "SageMakerExecution", data_bucket=self.data_bucket,
            artifacts_bucket=self.artifacts_bucket, key=self.key, repository=self.repository,
            input_prefix=DATASETS_PREFIX, model_prefix=MODELS_PREFIX,
            checkpoint_prefix=CHECKPOINTS_PREFIX,
        ).role

        # Optional: an MLflow tracking server (billed hourly). Switching it off keeps the server and
        # its history; switching it on again creates a new one beside it (see ExperimentTracking).
        # Nothing of it is exported: the workflow stack reads the ARN with Fn::GetStackOutput.
        self.tracking_server_arn: str | None = None
        if settings.mlflow_tracking_server:
            tracking = ExperimentTracking(
                self, "ExperimentTracking", name_prefix=f"{settings.name_prefix}-mlflow",
                artifacts_bucket=self.artifacts_bucket, key=self.key, execution_role=self.execution_role,
                tracking_server_size=settings.mlflow_tracking_server_size)
            self.tracking_server_arn = tracking.tracking_server_arn
            CfnOutput(self, contract.OUTPUT_TRACKING_SERVER_ARN, value=tracking.tracking_server_arn)
            CfnOutput(self, "TrackingServerName", value=tracking.tracking_server_name)

        CfnOutput(self, contract.OUTPUT_DATA_BUCKET, value=self.data_bucket.bucket_name)
        CfnOutput(self, contract.OUTPUT_ARTIFACTS_BUCKET, value=self.artifacts_bucket.bucket_name)
        CfnOutput(self, contract.OUTPUT_REPOSITORY_URI, value=self.repository.repository_uri)
        CfnOutput(self, "ExecutionRoleArn", value=self.execution_role.role_arn)
        CfnOutput(self, "DataKeyArn", value=self.key.key_arn)
