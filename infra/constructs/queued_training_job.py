"""A training job that waits its turn in the team queue (AWS Batch for SageMaker Training).

Step Functions has no optimized integration for Batch service jobs (its Batch page lists
``SubmitJob`` only: developer guide, "Run AWS Batch workloads with Step Functions"), so the
chain uses the AWS SDK integration and polls: submit the service job, wait, describe it, and
repeat with a doubling wait until it ends. Under the SDK integration the task's parameters and
its result's fields are PascalCase ("Parameters in Step Functions are expressed in PascalCase,
even if the native service API is in camelCase": "Integrating services with the AWS SDK";
results likewise, localstack/localstack#9853, which moto's interpreter follows), and errors are
``Batch.<Exception>``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aws_cdk import Duration, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from infra.constructs.sdk_call_retry import retry_sagemaker_call
from infra.constructs.training_job_task import TRAINING_RESULT_SELECTOR
from smtrain.core import contract

Cond = sfn.Condition

#: The one error ``SubmitServiceJob`` and ``DescribeServiceJob`` declare for a fault on AWS's
#: side (botocore's batch model: ClientException and ServerException); a client error is not
#: retried.
SERVER_ERROR = "Batch.ServerException"
#: ``$.failure.Error`` of a run whose service job failed.
SERVICE_JOB_FAILED = "Batch.ServiceJobFailed"


def service_job_name(name_prefix: str, execution_name: str) -> str:
    """The JSONata text of a run's service job name, ``<prefix>-<execution name>``. A Batch job
    name holds "letters, numbers, hyphens (-), and underscores (_)" (SubmitServiceJob, jobName),
    and with the queue the input rules refuse an execution name of any other character, so the
    name is taken as it is: the cleanup of an execution named otherwise (refused, never
    submitted) finds no job, rather than another execution's job under a rewritten name."""
    return f"'{name_prefix}-' & {execution_name}"


@dataclass(frozen=True, kw_only=True)
class QueueTarget:
    """The team queue a state machine submits its training jobs to."""

    #: Each priority's job queue ARN (:data:`smtrain.core.contract.QUEUE_PRIORITIES`).
    queue_arns: Mapping[str, str]
    #: The queues schedule by fair share: every job names its share.
    fair_share: bool = False

    @property
    def kind(self) -> str:
        """What the input rules call it (``input_rules.QUEUE_KINDS``)."""
        return "fair-share" if self.fair_share else "fifo"


class QueuedTrainingJob(Construct):
    """Submits ``request`` (a ``CreateTrainingJob`` request: the Parameters of a
    :class:`~infra.constructs.training_job_task.TrainingJobTask`) as a Batch service job and
    follows it to its end. Guarantees:

    - the job waits in the queue of the input's ``config.priority`` (``queue_arns``); with
      ``fair_share`` it is scheduled under the input's ``config.team`` or, without one, its
      program's share (:func:`smtrain.core.contract.program_share`);
    - the service job is named ``<name_prefix>-<execution name>`` (:func:`service_job_name`;
      an execution's name is unique to its state machine, and the cleanup on a stopped execution
      finds the job by it) and the SageMaker job Batch starts is named
      ``AWSBatch<name_prefix><attempt id>`` (``contract.BATCH_TRAINING_JOB_PREFIX``);
    - ``$.queue`` holds the service job's id, its latest status and reason, and the training
      job's ARN once Batch has started one; looks come every 15 s at first, doubling to 20
      minutes (``contract.QUEUE_POLL_MAX_SECONDS``);
    - on success ``result_path`` holds what :class:`TrainingJobTask` leaves there
      (``TrainingJobName``, ``ModelArtifacts``, ``FinalMetricDataList``); on failure ``failure``
      runs with ``$.failure`` (``Error``: ``Batch.ServiceJobFailed`` or the call's error,
      ``Cause``: Batch's status reason, "Received status from SageMaker: ..." for a job that
      SageMaker failed: user guide, "Service job retry strategies");
    - :attr:`policy_statements` is exactly the IAM the chain needs.

    :attr:`start` is the chain's first state; :meth:`next` continues after success."""

    def __init__(self, scope: Construct, construct_id: str, *, name_prefix: str,
                 request: Mapping[str, Any], queue_arns: Mapping[str, str], fair_share: bool,
                 failure: sfn.IChainable, tags: Mapping[str, str] | None = None,
                 result_path: str = "$.training") -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        if set(queue_arns) != set(contract.QUEUE_PRIORITIES):
            raise ValueError(f"queue_arns must name a queue for each of {list(contract.QUEUE_PRIORITIES)}")
        queued_prefix = contract.batch_training_job_prefix(name_prefix)
        build = sfn.Pass(self, "BuildQueuedRequest", result_path="$.queue",
                         parameters={"request": {**{key: value for key, value in request.items()
                                                     if key != "TrainingJobName.$"},
                                                  "TrainingJobName": name_prefix}})
        queues = "{" + ", ".join(f"'{priority}': '{arn}'" for priority, arn in queue_arns.items()) + "}"
        share = ("$exists($states.input.config.team) ? $states.input.config.team : "
                 "$replace($states.input.config.program, /[^A-Za-z0-9]/, '')")
        arguments: dict[str, Any] = {
            "JobName": f"{{% {service_job_name(name_prefix, '$states.context.Execution.Name')} %}}",
            "JobQueue": f"{{% $lookup({queues}, $states.input.config.{contract.PRIORITY}) %}}",
            "ServiceJobType": contract.SERVICE_JOB_TYPE,
            "ServiceRequestPayload": "{% $string($states.input.queue.request) %}",
            "Tags": {**(tags or {}), contract.TAG_EXECUTION: "{% $states.context.Execution.Name %}"},
            # Two submits with the same token and payload: "the second request is rejected"
            # (SubmitServiceJob, clientToken), so a retried submit whose first try did create a
            # job cannot queue a second one (the run fails, and the cleanup stops the first).
            "ClientToken": "{% $states.input.run.id %}",
        }
        if fair_share:
            arguments["ShareIdentifier"] = f"{{% {share} %}}"
        submit = sfn.CustomState(self, contract.QUEUE_SUBMIT_STATE, state_json={
            "Type": "Task", "QueryLanguage": "JSONata",
            "Resource": "arn:aws:states:::aws-sdk:batch:submitServiceJob",
            "Arguments": arguments,
            "Catch": [{"ErrorEquals": ["States.ALL"], "Next": failure.start_state.state_id,
                       # A JSONata catcher has no ResultPath: the error joins the input as Output
                       # (CDK's add_catch renders a CustomState's catcher as JSONPath).
                       "Output": "{% $merge([$states.input, {'failure': $states.errorOutput}]) %}"}],
            "Output": ("{% $merge([$states.input, {'queue': {'jobId': $states.result.JobId, "
                       f"'status': 'SUBMITTED', 'wait': {contract.QUEUE_POLL_FIRST_SECONDS}}}}}]) %}}"),
        })
        wait = sfn.Wait(self, contract.QUEUE_WAIT_STATE, time=sfn.WaitTime.seconds_path("$.queue.wait"))
        describe = sfn.CustomState(self, contract.QUEUE_DESCRIBE_STATE, state_json={
            "Type": "Task", "QueryLanguage": "JSONata",
            "Resource": "arn:aws:states:::aws-sdk:batch:describeServiceJob",
            "Arguments": {"JobId": "{% $states.input.queue.jobId %}"},
            "Catch": [{"ErrorEquals": ["States.ALL"], "Next": failure.start_state.state_id,
                       # A JSONata catcher has no ResultPath: the error joins the input as Output
                       # (CDK's add_catch renders a CustomState's catcher as JSONPath).
                       "Output": "{% $merge([$states.input, {'failure': $states.errorOutput}]) %}"}],
            "Output": ("{% $merge([$states.input, {'queue': $merge([$sift($states.input.queue, "
                       "function($v, $k) { $k != 'statusReason' }), {"
                       "'status': $states.result.Status, 'statusReason': $states.result.StatusReason, "
                       "'trainingJobArn': $states.result.LatestAttempt.ServiceResourceId.Value, "
                       "'wait': $min([$states.input.queue.wait * 2, "
                       f"{contract.QUEUE_POLL_MAX_SECONDS}])}}])}}]) %}}"),
        })
        submit.add_retry(errors=[SERVER_ERROR], interval=Duration.seconds(5), backoff_rate=2,
                         max_attempts=4, jitter_strategy=sfn.JitterType.FULL)
        # A describe is a read, safe to repeat on any error: throttling included, whose name
        # under the SDK integration no AWS document gives (States.TaskFailed matches every
        # error but States.Timeout: developer guide, "Error names").
        describe.add_retry(errors=["States.TaskFailed"], interval=Duration.seconds(5), backoff_rate=2,
                           max_attempts=6, jitter_strategy=sfn.JitterType.FULL)
        # The job's name from its ARN. Whether SageMaker lowercases a name in its ARN is shown
        # both ways in AWS's documents (the Batch user guide's event example keeps
        # "AWSBatch..."), so the name is rebuilt: Batch's prefix as Batch writes it, then the
        # rest (the stack's prefix, lowercase, and the attempt id, lowercase hex in that example).
        prefix_length = len(contract.BATCH_TRAINING_JOB_PREFIX)
        name_job = sfn.Pass(self, "NameQueuedTrainingJob", query_language=sfn.QueryLanguage.JSONATA,
                            outputs=("{% $merge([$states.input, {'queue': $merge([$states.input.queue, "
                                     "{'trainingJobName': '" + contract.BATCH_TRAINING_JOB_PREFIX
                                     + "' & $substring($split($states.input.queue.trainingJobArn, '/')[1], "
                                     f"{prefix_length})}}])}}]) %}}"))
        describe_job = sfn.CustomState(self, "DescribeQueuedTrainingJob", state_json={
            "Type": "Task",
            "Resource": "arn:aws:states:::aws-sdk:sagemaker:describeTrainingJob",
            "Parameters": {"TrainingJobName.$": "$.queue.trainingJobName"},
            "ResultSelector": dict(TRAINING_RESULT_SELECTOR),
            "ResultPath": result_path,
        })
        retry_sagemaker_call(describe_job)
        describe_job.add_catch(failure, errors=["States.ALL"], result_path="$.failure")
        explain = sfn.Pass(self, "QueuedJobFailed", result_path="$.failure", parameters={
            "Error": SERVICE_JOB_FAILED,
            "Cause.$": "States.Format('service job {} ended FAILED: {}', $.queue.jobId, "
                       "$.queue.statusReason)",
        })
        no_reason = sfn.Pass(self, "QueuedJobFailedWithoutReason", result_path="$.failure",
                             parameters={"Error": SERVICE_JOB_FAILED,
                                         "Cause.$": "States.Format('service job {} ended FAILED', "
                                                    "$.queue.jobId)"})
        decide = sfn.Choice(self, contract.QUEUE_CHOICE_STATE)
        decide.when(Cond.string_equals("$.queue.status", contract.SERVICE_JOB_SUCCEEDED),
                    name_job.next(describe_job))
        decide.when(Cond.and_(Cond.string_equals("$.queue.status", contract.SERVICE_JOB_FAILED),
                              Cond.is_present("$.queue.statusReason")), explain.next(failure))
        decide.when(Cond.string_equals("$.queue.status", contract.SERVICE_JOB_FAILED),
                    no_reason.next(failure))
        decide.otherwise(wait)
        build.next(submit).next(wait).next(describe).next(decide)
        self.start: sfn.State = build
        self.end: sfn.CustomState = describe_job

        service_jobs = stack.format_arn(service="batch", resource="service-job", resource_name="*")
        self.policy_statements: list[iam.PolicyStatement] = [
            # SubmitServiceJob needs both resource types, the queue and the (new) service job,
            # and tags it (batch:TagResource) and passes the execution role to SageMaker
            # (Service Authorization Reference, AWS Batch: SubmitServiceJob, dependent actions).
            iam.PolicyStatement(actions=["batch:SubmitServiceJob"],
                                resources=[*queue_arns.values(), service_jobs]),
            iam.PolicyStatement(actions=["batch:TagResource"], resources=[service_jobs]),
            # DescribeServiceJob has no resource type: "*" is the only resource it takes.
            iam.PolicyStatement(actions=["batch:DescribeServiceJob"], resources=["*"]),
            # Batch's own managed policy (AWSBatchServiceRolePolicyForSageMaker) names these jobs
            # training-job/AWSBatch*; whether an ARN keeps that case is not documented for every
            # caller (SageMaker lowercases names in some ARNs), so both spellings.
            iam.PolicyStatement(
                actions=["sagemaker:DescribeTrainingJob"],
                resources=[stack.format_arn(service="sagemaker", resource="training-job",
                                            resource_name=f"{spelling}*")
                           for spelling in (queued_prefix, queued_prefix.lower())]),
        ]

    def next(self, state: sfn.IChainable) -> sfn.Chain:
        return self.end.next(state)

