"""The stateful stack: everything that holds data and must survive ``cdk destroy``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aws_cdk import CfnOutput, Fn, Stack
from aws_cdk import aws_iam as iam
from constructs import Construct

from infra.constructs.encryption_key import TrainingDataKey
from infra.constructs.execution_role import SageMakerExecutionRole
from infra.constructs.model_registry import ModelRegistry
from infra.constructs.training_buckets import (
    CHECKPOINTS_PREFIX,
    DATASETS_PREFIX,
    MODELS_PREFIX,
    TrainingBuckets,
)
from infra.constructs.training_repository import TrainingRepository
from infra.settings import Settings, SettingsError
from smtrain.core import contract

if TYPE_CHECKING:
    from infra.constructs.training_network import JobNetwork, TrainingNetwork
    from infra.constructs.training_queue import TrainingQueue

# The constructs of optional settings (a VPC, MLflow tracking) are imported where those settings
# are on: aws_ec2 and custom_resources are large modules, which a synth without them never loads.


def workflow_log_group_prefix(settings: Settings) -> str:
    """The name prefix of the state machine's log group (the key lets Logs use it)."""
    return f"/aws/vendedlogs/states/{settings.name_prefix}-"


def network_log_group_prefix(settings: Settings) -> str:
    """The name prefix of the created VPC's log groups (flow logs; the prefix-list lookup)."""
    return f"/{settings.name_prefix}/network/"



@dataclass(frozen=True)
class TrackingTarget:
    """Where jobs log MLflow runs: the ARN (their ``MLFLOW_TRACKING_URI``) and the storage stack's
    output that holds it, which another stack reads with ``Fn::GetStackOutput``."""

    arn: str
    output_name: str


class StorageStack(Stack):
    """KMS key, buckets, ECR repository, and per training program (``programs``: their names) a
    SageMaker execution role and a model package group, all retained."""

    def __init__(self, scope: Construct, construct_id: str, *, settings: Settings,
                 programs: Sequence[str] = (), **kwargs: Any) -> None:
        super().__init__(scope, construct_id, **kwargs)
        # The network prefix stays when the network goes: its retained flow logs stay readable.
        log_group_prefixes = [workflow_log_group_prefix(settings), network_log_group_prefix(settings)]
        self.key = TrainingDataKey(
            self, "DataKey", log_group_name_prefixes=log_group_prefixes).key
        buckets = TrainingBuckets(self, "Buckets", key=self.key)
        self.data_bucket = buckets.data
        self.artifacts_bucket = buckets.artifacts
        self.repository = TrainingRepository(
            self, "TrainingImages", key=self.key).repository

        def execution_role(construct_id: str, *, model_prefix: str, checkpoint_prefix: str,
                           description: str) -> SageMakerExecutionRole:
            return SageMakerExecutionRole(
                self, construct_id, data_bucket=self.data_bucket, artifacts_bucket=self.artifacts_bucket,
                key=self.key, repository=self.repository, input_prefix=DATASETS_PREFIX,
                model_prefix=model_prefix, checkpoint_prefix=checkpoint_prefix,
                job_name_prefix=f"{settings.name_prefix}-",
                queued_job_name_prefix=(contract.batch_training_job_prefix(settings.name_prefix)
                                        if settings.queue == "batch" else None),
                description=description)

        # Each program's jobs run as a role of their own, which may write only that program's
        # models and checkpoints (models/<program>/, checkpoints/<program>/): one program's job
        # cannot overwrite another's model or plant a checkpoint another resumes from. The
        # workflow stack reads each role as a weak reference (Fn::GetStackOutput), so a program
        # can be added or removed; a removed program's role is retained, like the rest.
        self.program_roles: dict[str, iam.IRole] = {}
        for program in programs:
            self.program_roles[program] = execution_role(
                f"ExecutionRole{contract.output_id(program)}",
                model_prefix=contract.program_models_prefix(program),
                checkpoint_prefix=contract.program_checkpoints_prefix(program),
                description=f"Assumed by SageMaker training and tuning jobs of program {program}",
            ).role
        # The one role every program's jobs ran as before per-program roles: passed by nothing
        # now (the state machine may pass only the programs' roles), kept one release for the
        # jobs already running when the stacks are updated and for the export the previous
        # workflow stack imports, which CloudFormation refuses to remove while it is in use ("You
        # can't modify or remove an output value that is referenced by another stack":
        # Fn::ImportValue, CloudFormation user guide). Retained like every role.
        shared_role = execution_role(
            "SageMakerExecution", model_prefix=MODELS_PREFIX, checkpoint_prefix=CHECKPOINTS_PREFIX,
            description="Shared role of earlier releases of this project; no new job runs as it")
        self.export_value(shared_role.role.role_arn)
        #: Every role a training job may run as (the programs' and the earlier shared one).
        self.job_roles: list[iam.IRole] = [*self.program_roles.values(), shared_role.role]
        role_actions = shared_role.actions

        # Optional: the team queue (AWS Batch for SageMaker Training). The workflow stack names
        # its job queues by ARN (TrainingQueue.queue_arns); switching it off deletes the queues
        # and the environment (they hold no data; jobs still queued are lost: docs/queue.md).
        self.queue: TrainingQueue | None = None
        if settings.queue == "batch":
            from infra.constructs.training_queue import TrainingQueue

            self.queue = TrainingQueue(
                self, "TeamQueue", name_prefix=settings.name_prefix,
                max_instances=settings.queue_max_instances, fair_share=settings.queue_fair_share)

        # Optional: the VPC jobs run in (network vpc or isolated). Everything the workflow stack
        # reads of it is a weak reference (Fn::GetStackOutput), so the network can be switched off.
        self.training_network: TrainingNetwork | None = None
        self.job_network: JobNetwork | None = None
        if settings.in_vpc:
            self.training_network = self._training_network(settings, role_actions=role_actions)
            self.job_network = self.training_network.job_network

        # Optional: MLflow experiment tracking, an MLflow App or a tracking server (billed hourly).
        # Switching it off keeps the app or server and its history; switching it on again creates
        # a new one beside it (see MlflowApp and ExperimentTracking). Nothing of it is exported:
        # the workflow stack reads the ARN with Fn::GetStackOutput.
        self.tracking: TrackingTarget | None = None
        if settings.experiment_tracking == "server":
            from infra.constructs.experiment_tracking import ExperimentTracking

            tracking = ExperimentTracking(
                self, "ExperimentTracking", name_prefix=f"{settings.name_prefix}-mlflow",
                artifacts_bucket=self.artifacts_bucket, key=self.key, execution_roles=self.job_roles,
                tracking_server_size=settings.mlflow_tracking_server_size)
            self.tracking = TrackingTarget(arn=tracking.tracking_server_arn,
                                           output_name=contract.OUTPUT_TRACKING_SERVER_ARN)
            CfnOutput(self, contract.OUTPUT_TRACKING_SERVER_ARN, value=tracking.tracking_server_arn)
            CfnOutput(self, "TrackingServerName", value=tracking.tracking_server_name)
        elif settings.experiment_tracking == "app":
            from infra.constructs.mlflow_app import MlflowApp

            app = MlflowApp(
                self, "MlflowApp", name_prefix=f"{settings.name_prefix}-mlflow",
                artifacts_bucket=self.artifacts_bucket, key=self.key, execution_roles=self.job_roles)
            self.tracking = TrackingTarget(arn=app.app_arn, output_name=contract.OUTPUT_MLFLOW_APP_ARN)
            CfnOutput(self, contract.OUTPUT_MLFLOW_APP_ARN, value=app.app_arn)
            CfnOutput(self, "MlflowAppName", value=app.app_name)

        # The model registry: a group per program, retained with its versions. The workflow stack
        # reads the groups' ARNs with Fn::GetStackOutput (weak references).
        self.registry = ModelRegistry(self, "ModelRegistry", name_prefix=settings.name_prefix,
                                      programs=programs)

        CfnOutput(self, contract.OUTPUT_DATA_BUCKET, value=self.data_bucket.bucket_name)
        CfnOutput(self, contract.OUTPUT_ARTIFACTS_BUCKET, value=self.artifacts_bucket.bucket_name)
        CfnOutput(self, contract.OUTPUT_REPOSITORY_URI, value=self.repository.repository_uri)
        CfnOutput(self, "DataKeyArn", value=self.key.key_arn)

    def _training_network(self, settings: Settings, *, role_actions: Sequence[str]) -> TrainingNetwork:
        from infra.constructs.endpoint_only_access import deny_outside_network
        from infra.constructs.experiment_tracking import MLFLOW_CLIENT_ACTIONS
        from infra.constructs.training_network import TrainingNetwork
        from infra.constructs.vpc_job_access import VpcJobAccess
        from infra.images import image_accounts
        from infra.log_retention import retention_for_days

        # The ECR endpoints admit pulls from AWS's image accounts of the region: without them a
        # job's framework image might not be pulled, so an unknown region fails synth here.
        aws_image_accounts = image_accounts(settings.region)
        if settings.vpc_id is None and not aws_image_accounts:
            raise SettingsError(f"setting 'region' ({settings.region}) has no SageMaker image accounts in "
                                "infra/image_uris.json, which the VPC's ECR endpoint policy names: "
                                "run `make image-uris`")
        # Under isolation the containers reach no network at all, so no MLflow endpoint.
        mlflow_endpoint = (settings.experiment_tracking == "server" and settings.network == "vpc"
                           and settings.vpc_id is None)
        network = TrainingNetwork(
            self, "TrainingNetwork", key=self.key,
            log_group_prefix=network_log_group_prefix(settings),
            log_retention=retention_for_days(settings.log_retention_days),
            vpc_id=settings.vpc_id, subnet_ids=settings.subnet_ids,
            security_group_ids=settings.security_group_ids,
            mlflow_endpoint=mlflow_endpoint,
            # What the jobs' role may do: its own policy, and the MLflow client's actions (the
            # workflow stack's grant on the script-mode code adds no action: s3:GetObject and
            # s3:ListBucket). tests/test_network.py evaluates every grant of the role through
            # the endpoints, so a new one that is missing here fails there.
            job_actions=[*role_actions, *(MLFLOW_CLIENT_ACTIONS if mlflow_endpoint else ())],
            image_accounts=aws_image_accounts,
        )
        # SageMaker attaches each job's network interfaces to these subnets as the execution role.
        VpcJobAccess(self, "VpcJobAccess", roles=self.job_roles, vpc_id=network.vpc_id,
                     subnet_ids=network.subnet_ids,
                     security_group_ids=network.security_group_ids)
        # The execution role reaches the data only through the training network.
        for bucket in (self.data_bucket, self.artifacts_bucket):
            deny_outside_network(bucket, roles=self.job_roles,
                                 s3_endpoint_id=network.s3_endpoint_id, vpc_id=network.vpc_id)
        CfnOutput(self, "TrainingVpcId", value=network.vpc_id)
        CfnOutput(self, "TrainingSubnetIds", value=Fn.join(",", network.subnet_ids))
        CfnOutput(self, "TrainingSecurityGroupIds", value=Fn.join(",", network.security_group_ids))
        return network
