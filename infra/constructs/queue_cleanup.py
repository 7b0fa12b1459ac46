"""Stopping an execution stops its queued training job too.

A ``.sync`` task stops its SageMaker job when the execution is stopped, but an AWS SDK task
does not follow anything, and a Batch service job has no optimized integration (developer guide,
"Run AWS Batch workloads with Step Functions": ``SubmitJob`` only). So an EventBridge rule on the
training state machine's executions that end ABORTED, TIMED_OUT or FAILED ("Step Functions
Execution Status Change"; its ``detail`` holds the execution's ``name``) starts a small state
machine that finds the execution's service job by name in each job queue (``ListServiceJobs``
with the ``JOB_NAME`` filter, which returns jobs "with any status") and terminates it while it
has not ended (``TerminateServiceJob``; Batch's service-linked role may stop the SageMaker job it
started: ``AWSBatchServiceRolePolicyForSageMaker`` grants ``sagemaker:StopTrainingJob``).
"""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import Duration, Fn, Stack
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from infra.compliance import INLINE_POLICY_RULES, acknowledge, nag_arn
from infra.constructs.queued_training_job import service_job_name
from smtrain.core import contract


class QueueCleanup(Construct):
    """The rule and the state machine (``<prefix>-queue-cleanup``, STANDARD, JSONata) described
    above. Its role may list service jobs (``ListServiceJobs`` takes no resource) and terminate
    only service jobs tagged ``project: <prefix>``; the rule's role may start only this state
    machine. Its execution history is logged to a log group encrypted with ``key``."""

    def __init__(self, scope: Construct, construct_id: str, *, training_state_machine: sfn.IStateMachine,
                 name_prefix: str, queue_arns: Mapping[str, str], key: kms.IKey,
                 log_retention: logs.RetentionDays) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        active = ", ".join(f"'{status}'" for status in contract.SERVICE_JOB_ACTIVE)
        name = service_job_name(name_prefix, "$states.input.detail.name")
        states: dict[str, dict[str, object]] = {}
        priorities = list(queue_arns)
        for index, (priority, arn) in enumerate(queue_arns.items()):
            after = ({"Next": f"Find{priorities[index + 1].capitalize()}Job"}
                     if index + 1 < len(priorities) else {"End": True})
            label = priority.capitalize()
            states[f"Find{label}Job"] = {
                "Type": "Task",
                "Resource": "arn:aws:states:::aws-sdk:batch:listServiceJobs",
                "Arguments": {"JobQueue": arn, "Filters": [{"Name": "JOB_NAME", "Values": [f"{{% {name} %}}"]}]},
                # An Assign that yields nothing is an error (States.QueryEvaluationError): null.
                # JOB_NAME matches without case; the name must match exactly (two executions
                # whose names differ in case only must not stop each other's jobs).
                "Assign": {"jobId": f"{{% ($name := {name}; $id := $states.result.JobSummaryList"
                                    f"[Status in [{active}] and JobName = $name][0].JobId; "
                                    "$exists($id) ? $id : null) %}"},
                "Output": "{% $states.input %}",
                "Retry": [{"ErrorEquals": ["Batch.ServerException"], "IntervalSeconds": 5,
                           "BackoffRate": 2, "MaxAttempts": 4}],
                "Next": f"Stop{label}JobIfAny",
            }
            states[f"Stop{label}JobIfAny"] = {
                "Type": "Choice",
                "Choices": [{"Condition": "{% $jobId != null %}", "Next": f"Terminate{label}Job"}],
                "Default": after.get("Next", "Done"),
            }
            states[f"Terminate{label}Job"] = {
                "Type": "Task",
                "Resource": "arn:aws:states:::aws-sdk:batch:terminateServiceJob",
                "Arguments": {"JobId": "{% $jobId %}",
                              "Reason": "{% 'execution ' & $states.input.detail.name & ' ended ' "
                                        "& $states.input.detail.status %}"},
                "Output": "{% $states.input %}",
                "Retry": [{"ErrorEquals": ["Batch.ServerException"], "IntervalSeconds": 5,
                           "BackoffRate": 2, "MaxAttempts": 4}],
                **after,
            }
        states["Done"] = {"Type": "Succeed"}
        definition = {"QueryLanguage": "JSONata", "Comment": "Terminates the service job a "
                      "stopped training execution left in the team queue",
                      "StartAt": f"Find{priorities[0].capitalize()}Job", "States": states}
        # Retained (CDK's default for a log group); named after the stack's id, like the training
        # state machine's, so a deploy after a destroy does not collide with the kept group.
        stack_uuid = Fn.select(2, Fn.split("/", stack.stack_id))
        self.log_group = logs.LogGroup(
            self, "Logs", encryption_key=key, retention=log_retention,
            log_group_name=Fn.join("", [f"/aws/vendedlogs/states/{name_prefix}"
                                        f"{contract.QUEUE_CLEANUP_SUFFIX}-", stack_uuid]))
        self.state_machine = sfn.StateMachine(
            self, "StateMachine", state_machine_name=f"{name_prefix}{contract.QUEUE_CLEANUP_SUFFIX}",
            state_machine_type=sfn.StateMachineType.STANDARD,
            definition_body=sfn.DefinitionBody.from_string(stack.to_json_string(definition)),
            logs=sfn.LogOptions(destination=self.log_group, level=sfn.LogLevel.ALL),
            tracing_enabled=True, timeout=Duration.minutes(15),
            comment="Terminates the queued training job of a stopped execution",
        )
        self.state_machine.add_to_role_policy(iam.PolicyStatement(
            actions=["batch:ListServiceJobs"], resources=["*"]))
        service_jobs = stack.format_arn(service="batch", resource="service-job", resource_name="*")
        self.state_machine.add_to_role_policy(iam.PolicyStatement(
            actions=["batch:TerminateServiceJob"],
            resources=[service_jobs],
            conditions={"StringEquals": {"aws:ResourceTag/project": name_prefix}}))
        self.rule = events.Rule(
            self, "ExecutionEnded",
            description="Stops the queued training job of an execution that did not succeed",
            event_pattern=events.EventPattern(
                source=["aws.states"], detail_type=["Step Functions Execution Status Change"],
                detail={"status": list(contract.QUEUE_CLEANUP_STATUSES),
                        "stateMachineArn": [training_state_machine.state_machine_arn]}),
            targets=[targets.SfnStateMachine(self.state_machine)],
        )
        default_policy = self.state_machine.role.node.find_child("DefaultPolicy")
        events_policy = self.state_machine.node.find_child("EventsRole").node.find_child("DefaultPolicy")
        for policy in (default_policy, events_policy):
            acknowledge(policy, INLINE_POLICY_RULES,
                        "CDK puts the grants it derives (logging, tracing, the rule's "
                        "states:StartExecution on this state machine) into each role's default "
                        "policy; each belongs to its one role, and tests assert their actions.")
        acknowledge(
            default_policy, "AwsSolutions-IAM5",
            "batch:ListServiceJobs takes no resource; a service job's ARN ends in the id Batch "
            "gives it, so TerminateServiceJob is on service-job/* with the project tag required; "
            "the rest is what CDK adds for logging and tracing.",
            applies_to=["Resource::*", f"Resource::{nag_arn(stack, service_jobs)}"],
        )
