"""The stateless stack: code assets, the state machine, its logs and its alerts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aws_cdk import CfnOutput, Stack
from aws_cdk import aws_iam as iam
from constructs import Construct

from infra.constructs.execution_input import InputDefaults
from infra.constructs.failure_notifications import FailureNotifications
from infra.constructs.source_bundle import SourceBundle
from infra.constructs.training_image import TrainingImage
from infra.constructs.training_state_machine import (
    TrainingStateMachine,
    TrainingStateMachineProps,
)
from infra.images import training_images
from infra.log_retention import retention_for_days
from infra.settings import Settings
from infra.stacks.storage_stack import StorageStack

TRAINING_CODE_DIR = Path(__file__).resolve().parents[2] / "training_code"


class WorkflowStack(Stack):
    """Everything that can be destroyed and redeployed freely; reads data resources from
    ``storage``."""

    def __init__(self, scope: Construct, construct_id: str, *, settings: Settings,
                 storage: StorageStack, training_code_dir: Path = TRAINING_CODE_DIR,
                 **kwargs: Any) -> None:
        super().__init__(scope, construct_id, **kwargs)
        images = training_images(
            region=settings.region, pytorch_version=settings.pytorch_version,
            pytorch_py_version=settings.pytorch_py_version, xgboost_version=settings.xgboost_version,
        )
        source = SourceBundle(self, "ScriptModeSource", source_dir=training_code_dir / "script_mode",
                              extra_packages={"common": training_code_dir / "common"})
        byoc_image = TrainingImage(self, "ByocImage", directory=training_code_dir,
                                   dockerfile="byoc/Dockerfile", repository=storage.repository)

        # A policy in this stack, so that a code change never touches the storage stack.
        execution_role = iam.Role.from_role_arn(self, "ExecutionRole",
                                                storage.execution_role.role_arn, mutable=True)
        iam.ManagedPolicy(self, "ReadScriptModeSource", roles=[execution_role], statements=[
            iam.PolicyStatement(
                actions=["s3:GetObject"],
                resources=[source.asset.bucket.arn_for_objects(source.asset.s3_object_key)],
            )
        ])

        workflow = TrainingStateMachine(self, "Training", props=TrainingStateMachineProps(
            name_prefix=settings.name_prefix,
            region=settings.region,
            execution_role=storage.execution_role,
            data_bucket=storage.data_bucket,
            artifacts_bucket=storage.artifacts_bucket,
            key=storage.key,
            images=images,
            byoc_image_uri=byoc_image.image_uri,
            script_source_uri=source.s3_uri,
            input_defaults=InputDefaults(
                instance_type=settings.default_instance_type,
                instance_count=settings.default_instance_count,
                volume_size_gb=settings.default_volume_size_gb,
                max_runtime_seconds=settings.max_runtime_seconds,
                spot=settings.spot_by_default,
            ),
            allowed_instance_types=settings.allowed_instance_types,
            max_instance_count=settings.max_instance_count,
            spot_max_wait_seconds=settings.spot_max_wait_seconds,
            log_retention=retention_for_days(settings.log_retention_days),
            tracking_uri=storage.tracking_server_arn,
        ))
        # The training jobs must run only after the image is in the project's repository.
        workflow.state_machine.node.add_dependency(byoc_image.copy)
        self.state_machine = workflow.state_machine
        FailureNotifications(self, "FailureAlerts", state_machine=workflow.state_machine,
                             email=settings.notification_email)

        CfnOutput(self, "StateMachineArn", value=workflow.state_machine.state_machine_arn)
        CfnOutput(self, "DataBucketName", value=storage.data_bucket.bucket_name)
        CfnOutput(self, "ArtifactsBucketName", value=storage.artifacts_bucket.bucket_name)
        CfnOutput(self, "RepositoryUri", value=storage.repository.repository_uri)
        CfnOutput(self, "ByocImageUri", value=byoc_image.image_uri)
        CfnOutput(self, "ScriptSourceUri", value=source.s3_uri)
        if storage.tracking_server_arn is not None:
            CfnOutput(self, "TrackingServerArn", value=storage.tracking_server_arn)
