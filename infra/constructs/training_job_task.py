"""A Step Functions task that runs one SageMaker training job to completion (``.sync``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
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
from smtrain.core import contract

#: Longest job name SageMaker accepts.
TRAINING_JOB_NAME_LIMIT = 63
#: Characters of a ``States.UUID()``.
UUID_LENGTH = 36


@dataclass(frozen=True, kw_only=True)
class ChannelPaths:
    """Where a task reads each part of its request from the state's input (JSONPaths)."""

    algorithm: str = "$.method.algorithm"
    #: A tuning job's algorithm: SageMaker's ``HyperParameterAlgorithmSpecification`` takes
    #: fewer fields than a training job's (no ``EnableSageMakerMetricsTimeSeries``).
    tuning_algorithm: str = "$.method.tuningAlgorithm"
    #: SageMaker's ``InputDataConfig``, built from the program's channels (a variable).
    channels: str = "$channels"
    instance_type: str = "$.config.instanceType"
    #: SageMaker's ``ResourceConfig``, with ``VolumeKmsKeyId`` for instance types without local
    #: storage (built by the state machine's ``ChooseVolumeEncryption``).
    resources: str = "$.resources"
    #: Whether to encrypt traffic between the job's instances (true with more than one).
    inter_container_encryption: str = "$.encryptInterContainerTraffic"
    stopping_condition: str = "$.stopping"
    spot: str = "$.config.spot"
    program: str = "$.config.program"
    kind: str = "$.method.kind"
    #: The program's execution role (each program's jobs run as a role of their own).
    role: str = "$.method.roleArn"
    #: The program's model prefix (``s3://<artifacts>/models/<program>/``): ``S3OutputPath``.
    output_uri: str = "$.method.outputUri"
    #: The program's checkpoint prefix (``s3://<artifacts>/checkpoints/<program>/``).
    checkpoint_uri: str = "$.method.checkpointUri"


@dataclass(frozen=True, kw_only=True)
class JobSecurity:
    """What every training job (and every tuning trial) of the stack carries, fixed at synth.

    Defaults: no VPC, no network isolation, no stack tags."""

    #: SageMaker's ``VpcConfig`` (``{"SecurityGroupIds": [...], "Subnets": [...]}``); none:
    #: SageMaker's own network.
    vpc_config: Mapping[str, Any] | None = None
    #: ``EnableNetworkIsolation``: the containers make no outbound network call at all.
    network_isolation: bool = False
    #: The stack's tags (the project tag and the ``tags`` setting), for cost attribution.
    tags: Mapping[str, str] = field(default_factory=dict)
    #: The instance types a job may use (``allowedInstanceTypes``); empty: any. The role's IAM
    #: enforces it too (:meth:`create_conditions`).
    instance_types: tuple[str, ...] = ()

    def request_fields(self, paths: ChannelPaths) -> dict[str, Any]:
        """The request fields these settings add to a ``CreateTrainingJob`` request or a
        ``TrainingJobDefinition`` (both take the same names)."""
        fields: dict[str, Any] = {
            "EnableInterContainerTrafficEncryption.$": paths.inter_container_encryption,
        }
        if self.vpc_config is not None:
            fields["VpcConfig"] = {"SecurityGroupIds": list(self.vpc_config["SecurityGroupIds"]),
                                   "Subnets": list(self.vpc_config["Subnets"])}
        if self.network_isolation:
            fields["EnableNetworkIsolation"] = True
        return fields


    def create_conditions(self, *, kms_key_arn: str) -> list[dict[str, Any]]:
        """IAM conditions on ``CreateTrainingJob`` and ``CreateHyperParameterTuningJob`` that
        hold the role itself to these settings, whatever the state machine's definition sends
        (defence in depth; condition keys of the Service Authorization Reference, "Actions,
        resources, and condition keys for Amazon SageMaker", listed for both actions). One
        statement per set (a request allowed by any set is allowed):

        - ``sagemaker:OutputKmsKeyArn`` is the stack key (every request sends it);
        - on instance types without local NVMe storage, ``sagemaker:VolumeKmsKeyArn`` is the
          stack key and must be there; on those with it, there is none (SageMaker refuses a
          volume key there: smtrain/core/instance_storage.py); ``sagemaker:InstanceTypes`` are
          all of that class and of :attr:`instance_types` (without :attr:`instance_types`, one
          set where a volume key, if any, is the stack key);
        - with network isolation, ``sagemaker:NetworkIsolation`` is true;
        - in a VPC, ``sagemaker:VpcSubnets`` and ``sagemaker:VpcSecurityGroupIds`` are present
          and hold only the stack's (``ForAllValues`` alone would pass a request without them:
          the developer guide's "Restrict training to a specific VPC" example)."""
        common: dict[str, Any] = {"ArnEquals": {"sagemaker:OutputKmsKeyArn": kms_key_arn}}
        if self.network_isolation:
            common["Bool"] = {"sagemaker:NetworkIsolation": "true"}
        only: dict[str, list[str]] = {}
        null: dict[str, str] = {}
        if self.vpc_config is not None:
            only["sagemaker:VpcSubnets"] = list(self.vpc_config["Subnets"])
            only["sagemaker:VpcSecurityGroupIds"] = list(self.vpc_config["SecurityGroupIds"])
            null = {"sagemaker:VpcSubnets": "false", "sagemaker:VpcSecurityGroupIds": "false"}
        if not self.instance_types:
            return [{**common, "ArnEqualsIfExists": {"sagemaker:VolumeKmsKeyArn": kms_key_arn},
                     **({"ForAllValues:StringEquals": only} if only else {}), **({"Null": null} if null else {})}]
        from smtrain.core.instance_storage import has_local_nvme

        sets = []
        ebs = [t for t in self.instance_types if not has_local_nvme(t)]
        nvme = [t for t in self.instance_types if has_local_nvme(t)]
        if ebs:
            sets.append({**common, "ArnEquals": {**common["ArnEquals"], "sagemaker:VolumeKmsKeyArn": kms_key_arn},
                         "ForAllValues:StringEquals": {**only, "sagemaker:InstanceTypes": ebs},
                         **({"Null": null} if null else {})})
        if nvme:
            sets.append({**common, "ForAllValues:StringEquals": {**only, "sagemaker:InstanceTypes": nvme},
                         "Null": {**null, "sagemaker:VolumeKmsKeyArn": "true"}})
        return sets


#: What a finished training job's state keeps of its DescribeTrainingJob answer (created directly
#: or through the team queue): the name, model and final metrics the run reports. Nothing more:
#: the answer echoes the request's hyperparameters, and a state's data is limited to 256 KiB.
TRAINING_RESULT_SELECTOR: dict[str, str] = {
    "TrainingJobName.$": "$.TrainingJobName",
    "ModelArtifacts.$": "$.ModelArtifacts.S3ModelArtifacts",
    "FinalMetricDataList.$": "$.FinalMetricDataList",
}


def retry_strategy(sagemaker_retries: int | None) -> dict[str, Any]:
    """The request fields that have SageMaker retry a job that failed with an internal error:
    ``{"RetryStrategy": {"MaximumRetryAttempts": n}}``, or none for ``None``.

    ``CreateTrainingJob`` and a tuning job's ``TrainingJobDefinition`` both take the field
    (botocore's sagemaker model); ``MaximumRetryAttempts`` is 1 to 30 (API reference,
    RetryStrategy). Whether Step Functions' SageMaker integration accepts it is not documented
    (see ``contract.SAGEMAKER_RETRY_SETTING``), so the stack sends it only when asked."""
    if sagemaker_retries is None:
        return {}
    low, high = contract.SAGEMAKER_RETRY_ATTEMPTS_MIN, contract.SAGEMAKER_RETRY_ATTEMPTS_MAX
    if not (isinstance(sagemaker_retries, int) and not isinstance(sagemaker_retries, bool)
            and low <= sagemaker_retries <= high):
        raise ValueError(f"sagemaker_retries must be None (no RetryStrategy) or an integer from {low} "
                         f"to {high}, got {sagemaker_retries!r}")
    return {"RetryStrategy": {"MaximumRetryAttempts": sagemaker_retries}}


def tracking_environment(tracking_uri: str, paths: ChannelPaths) -> dict[str, str]:
    """The variables ``training_code/common/tracking.py`` reads: where to log, and the tags that
    trace a run back to its execution."""
    return {
        contract.ENV_TRACKING_URI: tracking_uri,
        contract.ENV_EXPERIMENT: contract.EXPERIMENT,
        f"{contract.ENV_EXECUTION}.$": "$$.Execution.Name",
        f"{contract.ENV_PROGRAM}.$": paths.program,
    }


def job_tags(paths: ChannelPaths, stack_tags: Mapping[str, str]) -> list[dict[str, str]]:
    """The stack's tags (cost attribution), then the tags that trace a job back to the execution,
    program and kind that started it."""
    return [
        *({"Key": key, "Value": value} for key, value in stack_tags.items()),
        {"Key": contract.TAG_EXECUTION, "Value.$": "$$.Execution.Name"},
        {"Key": contract.TAG_PROGRAM, "Value.$": paths.program},
        {"Key": contract.TAG_KIND, "Value.$": paths.kind},
    ]


class TrainingJobTask(sfn.CustomState):
    """``arn:aws:states:::sagemaker:createTrainingJob.sync`` with the full request.

    Unlike CDK's ``SageMakerCreateTrainingJob`` it sends managed spot, checkpoints and
    ``MaxWaitTimeInSeconds``, and ``RetryStrategy`` when asked. Guarantees:

    - the job name is ``<name_prefix>-<execution run id>-<attempt>``: unique per execution and
      per attempt (``$.attempt.number``, see :class:`~infra.constructs.create_job_retry.
      CreateJobRetry`, which retries throttling and limits), at most 63 characters (checked
      here); with ``sagemaker_retries`` (1-30; default None: no ``RetryStrategy`` is sent, see
      :func:`retry_strategy`) SageMaker itself retries a job that failed with an internal error
      up to that many times;
    - the result is trimmed to the job name, model artifact URI and final metrics;
    - :attr:`policy_statements` holds exactly the IAM the task needs.

    ``security`` (default :class:`JobSecurity`: none of it) adds the VPC, network isolation and
    the stack's tags; inter-container traffic encryption and the volume key come with the state
    (``paths.inter_container_encryption``, ``paths.resources``).

    With ``tracking_uri`` (default none) every job gets the MLflow variables of
    :func:`tracking_environment`. The request reads from the state input described by ``paths``:
    the job runs as the program's role (``paths.role``, one of ``role_arns``, the only roles the
    state machine may pass), writes the model under the program's ``paths.output_uri`` encrypted
    with ``kms_key_arn``, and checkpoints to ``<paths.checkpoint_uri><run id>/`` (for spot
    resumption).
    """

    def __init__(self, scope: Construct, construct_id: str, *, name_prefix: str,
                 role_arns: Sequence[str], kms_key_arn: str,
                 run_id_path: str = "$.run.id", paths: ChannelPaths | None = None,
                 sagemaker_retries: int | None = None,
                 result_path: str = "$.training", tracking_uri: str | None = None,
                 security: JobSecurity | None = None) -> None:
        longest = len(name_prefix) + 1 + UUID_LENGTH + 1 + ATTEMPT_DIGITS
        if longest > TRAINING_JOB_NAME_LIMIT:
            raise ValueError(
                f"name_prefix {name_prefix!r} makes training job names of {longest} characters; "
                f"SageMaker allows {TRAINING_JOB_NAME_LIMIT}"
            )
        paths = paths or ChannelPaths()
        security = security or JobSecurity()
        state_json: dict[str, Any] = {
            "Type": "Task",
            "Resource": "arn:aws:states:::sagemaker:createTrainingJob.sync",
            "Parameters": {
                "TrainingJobName.$": f"States.Format('{name_prefix}-{{}}-{{}}', {run_id_path}, "
                                     f"{ATTEMPT_PATH})",
                "RoleArn.$": paths.role,
                "AlgorithmSpecification.$": paths.algorithm,
                "HyperParameters.$": "$.trainingHyperparameters",
                "InputDataConfig.$": paths.channels,
                "OutputDataConfig": {"S3OutputPath.$": paths.output_uri, "KmsKeyId": kms_key_arn},
                "ResourceConfig.$": paths.resources,
                "StoppingCondition.$": paths.stopping_condition,
                "EnableManagedSpotTraining.$": paths.spot,
                **security.request_fields(paths),
                "CheckpointConfig": {
                    "S3Uri.$": f"States.Format('{{}}{{}}/', {paths.checkpoint_uri}, {run_id_path})",
                },
                **retry_strategy(sagemaker_retries),
                "Tags": job_tags(paths, security.tags),
            },
            "ResultSelector": dict(TRAINING_RESULT_SELECTOR),
            "ResultPath": result_path,
        }
        if tracking_uri is not None:
            state_json["Parameters"]["Environment"] = tracking_environment(tracking_uri, paths)
        #: The ``CreateTrainingJob`` request (JSONPath parameters), as the team queue sends it too.
        self.request: dict[str, Any] = dict(state_json["Parameters"])
        super().__init__(scope, construct_id, state_json=state_json)
        stack = Stack.of(self)
        self.policy_statements: list[iam.PolicyStatement] = [
            *sync_job_statements(stack, kind="training-job", name_prefix=f"{name_prefix}-",
                                 create_conditions=security.create_conditions(kms_key_arn=kms_key_arn)),
            list_tags_statement(),
            pass_role_statement(role_arns),
        ]

