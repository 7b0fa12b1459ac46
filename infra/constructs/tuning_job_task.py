"""A Step Functions task that runs one SageMaker hyperparameter tuning job to completion."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aws_cdk import Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from infra.constructs.create_job_retry import ATTEMPT_DIGITS, ATTEMPT_PATH
from infra.constructs.sagemaker_task_policy import (
    list_tags_statement,
    pass_role_statement,
    sync_job_statements,
)
from infra.constructs.sdk_call_retry import retry_sagemaker_call
from infra.constructs.training_job_task import (
    ChannelPaths,
    JobSecurity,
    job_tags,
    retry_strategy,
    tracking_environment,
)
from smtrain.core import contract

#: Longest tuning job name SageMaker accepts.
TUNING_JOB_NAME_LIMIT = 32
#: Characters of the short run id (the first two groups of a UUID, 12 hex digits).
SHORT_RUN_ID_LENGTH = 12


class TuningJobTask(sfn.CustomState):
    """``arn:aws:states:::sagemaker:createHyperParameterTuningJob.sync`` (CDK has no such task).

    Reads SageMaker's whole ``HyperParameterTuningJobConfig`` from ``$.tuning.job`` (built per
    strategy by the state machine), and the training job definition from the same paths as
    :class:`~infra.constructs.training_job_task.TrainingJobTask`, with the static
    hyperparameters from ``$.staticHyperparameters``.

    Guarantees:
    - the tuning job name is ``<name_prefix>-<short run id>-<attempt>``, within 32 characters
      (checked here); SageMaker names its training jobs after it, so they share the prefix;
    - every trial runs as the program's role (``paths.role``, one of ``role_arns``, the only
      roles the state machine may pass) and writes its model under the program's
      ``paths.output_uri``;
    - with ``checkpoints`` (false: no ``CheckpointConfig``), every trial checkpoints under
      ``<paths.checkpoint_uri><short run id>/``: one prefix for all trials, which SageMaker restores into
      each trial that starts, so the training code must keep each job's checkpoint apart (the
      project's script does, by ``TRAINING_JOB_NAME``);
    - with ``sagemaker_retries`` (1-30; default None: none) every trial carries SageMaker's
      ``RetryStrategy`` (see :func:`~infra.constructs.training_job_task.retry_strategy`);
    - ``security`` (default none) puts the VPC, isolation and inter-container encryption on every
      trial, and the stack's tags on the tuning job, which SageMaker copies to its trials;
    - the result keeps only the job name, status, counters and the best training job, so the
      payload stays small however many training jobs ran;
    - :attr:`policy_statements` holds the exact IAM.
    """

    def __init__(self, scope: Construct, construct_id: str, *, name_prefix: str,
                 role_arns: Sequence[str], checkpoints: bool, kms_key_arn: str,
                 short_run_id_path: str = "$.run.shortId",
                 paths: ChannelPaths | None = None,
                 sagemaker_retries: int | None = None, result_path: str = "$.tuningResult",
                 tracking_uri: str | None = None, security: JobSecurity | None = None) -> None:
        longest = len(name_prefix) + 1 + SHORT_RUN_ID_LENGTH + 1 + ATTEMPT_DIGITS
        if longest > TUNING_JOB_NAME_LIMIT:
            raise ValueError(
                f"name_prefix {name_prefix!r} makes tuning job names of {longest} characters; "
                f"SageMaker allows {TUNING_JOB_NAME_LIMIT}"
            )
        paths = paths or ChannelPaths()
        security = security or JobSecurity()
        tuning_job_name = (f"States.Format('{name_prefix}-{{}}-{{}}', {short_run_id_path}, "
                           f"{ATTEMPT_PATH})")
        state_json: dict[str, Any] = {
            "Type": "Task",
            "Resource": "arn:aws:states:::sagemaker:createHyperParameterTuningJob.sync",
            "Parameters": {
                "HyperParameterTuningJobName.$": tuning_job_name,
                "HyperParameterTuningJobConfig.$": "$.tuning.job",
                "TrainingJobDefinition": {
                    "AlgorithmSpecification.$": paths.tuning_algorithm,
                    "RoleArn.$": paths.role,
                    "StaticHyperParameters.$": "$.staticHyperparameters",
                    "InputDataConfig.$": paths.channels,
                    "OutputDataConfig": {"S3OutputPath.$": paths.output_uri, "KmsKeyId": kms_key_arn},
                    "ResourceConfig.$": paths.resources,
                    "StoppingCondition.$": paths.stopping_condition,
                    "EnableManagedSpotTraining.$": paths.spot,
                    **security.request_fields(paths),
                    **retry_strategy(sagemaker_retries),
                },
                # "Tags that you specify for the tuning job are also added to all training jobs
                # that the tuning job launches" (API reference, CreateHyperParameterTuningJob,
                # Tags); a TrainingJobDefinition has no Tags of its own.
                "Tags": job_tags(paths, security.tags),
            },
            "ResultSelector": {
                "HyperParameterTuningJobName.$": "$.HyperParameterTuningJobName",
                "HyperParameterTuningJobStatus.$": "$.HyperParameterTuningJobStatus",
                "TrainingJobStatusCounters.$": "$.TrainingJobStatusCounters",
                "BestTrainingJob.$": "$.BestTrainingJob",
            },
            "ResultPath": result_path,
        }
        if checkpoints:
            state_json["Parameters"]["TrainingJobDefinition"]["CheckpointConfig"] = {
                "S3Uri.$": f"States.Format('{{}}{{}}/', {paths.checkpoint_uri}, {short_run_id_path})"}
        if tracking_uri is not None:
            state_json["Parameters"]["TrainingJobDefinition"]["Environment"] = {
                **tracking_environment(tracking_uri, paths), f"{contract.ENV_TUNING_JOB}.$": tuning_job_name}
        super().__init__(scope, construct_id, state_json=state_json)
        stack = Stack.of(self)
        self.policy_statements: list[iam.PolicyStatement] = [
            *sync_job_statements(stack, kind="hyper-parameter-tuning-job",
                                 name_prefix=f"{name_prefix}-",
                                 create_conditions=security.create_conditions(kms_key_arn=kms_key_arn)),
            list_tags_statement(),
            pass_role_statement(role_arns),
        ]


class DescribeTrainingJobTask(sfn.CustomState):
    """``aws-sdk:sagemaker:describeTrainingJob`` for the tuning job's best training job, trimmed
    to its model artifact URI and final metrics (the tuning job's answer lacks both).

    :attr:`policy_statements`: ``sagemaker:DescribeTrainingJob`` on jobs named
    ``<name_prefix>-*`` (SageMaker names tuning trials after their tuning job).
    """

    def __init__(self, scope: Construct, construct_id: str, *, name_prefix: str,
                 job_name_path: str, result_path: str) -> None:
        state_json = {
            "Type": "Task",
            "Resource": "arn:aws:states:::aws-sdk:sagemaker:describeTrainingJob",
            "Parameters": {"TrainingJobName.$": job_name_path},
            "ResultSelector": {
                "ModelArtifacts.$": "$.ModelArtifacts.S3ModelArtifacts",
                "FinalMetricDataList.$": "$.FinalMetricDataList",
            },
            "ResultPath": result_path,
        }
        super().__init__(scope, construct_id, state_json=state_json)
        # The AWS SDK integration names errors "SageMaker.<Code>Exception" (Step Functions
        # guide, "AWS SDK service integrations"); an error SageMaker's model does not define,
        # throttling among them, arrives as the SDK's base class, SageMakerException. Which of
        # the two a throttled describe gets is not documented, so both; a describe is safe to
        # repeat.
        retry_sagemaker_call(self)
        self.policy_statements = [
            iam.PolicyStatement(
                actions=["sagemaker:DescribeTrainingJob"],
                resources=[Stack.of(self).format_arn(service="sagemaker", resource="training-job",
                                                     resource_name=f"{name_prefix}-*")],
            )
        ]
