"""The IAM statements a Step Functions role needs to run SageMaker jobs with ``.sync``.

Source: Step Functions developer guide, "IAM policies for Amazon SageMaker AI" (the ``.sync``
pattern polls with Describe*, stops the job when the execution stops, tags it, and manages
the EventBridge rule named below).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from aws_cdk import ArnFormat, Stack
from aws_cdk import aws_iam as iam

JobKind = Literal["training-job", "hyper-parameter-tuning-job"]


@dataclass(frozen=True)
class _JobKindActions:
    create: str
    describe: str
    stop: str
    events_rule: str


_ACTIONS: dict[JobKind, _JobKindActions] = {
    "training-job": _JobKindActions(
        create="sagemaker:CreateTrainingJob",
        describe="sagemaker:DescribeTrainingJob",
        stop="sagemaker:StopTrainingJob",
        events_rule="StepFunctionsGetEventsForSageMakerTrainingJobsRule",
    ),
    "hyper-parameter-tuning-job": _JobKindActions(
        create="sagemaker:CreateHyperParameterTuningJob",
        describe="sagemaker:DescribeHyperParameterTuningJob",
        stop="sagemaker:StopHyperParameterTuningJob",
        events_rule="StepFunctionsGetEventsForSageMakerTuningJobsRule",
    ),
}


def sync_job_statements(stack: Stack, *, kind: JobKind, name_prefix: str,
                        create_conditions: Sequence[Mapping[str, Any]] = ()) -> list[iam.PolicyStatement]:
    """Create/describe/stop/tag jobs of ``kind`` whose names start with ``name_prefix``, plus the
    managed EventBridge rule that ``.sync`` uses to learn when such a job ends. The create action
    has a statement per set of ``create_conditions`` (keys of the create request, which describe,
    stop and tag requests do not carry: under the same conditions they would be denied); none:
    one statement without conditions."""
    actions = _ACTIONS[kind]
    job_arn = stack.format_arn(service="sagemaker", resource=kind, resource_name=f"{name_prefix}*")
    return [
        *(iam.PolicyStatement(actions=[actions.create], resources=[job_arn],
                              conditions=dict(conditions) if conditions else None)
          for conditions in (create_conditions or [{}])),
        iam.PolicyStatement(
            actions=[actions.describe, actions.stop, "sagemaker:AddTags"],
            resources=[job_arn],
        ),
        iam.PolicyStatement(
            actions=["events:PutTargets", "events:PutRule", "events:DescribeRule"],
            resources=[
                stack.format_arn(service="events", resource="rule", resource_name=actions.events_rule,
                                 arn_format=ArnFormat.SLASH_RESOURCE_NAME)
            ],
        ),
    ]


def list_tags_statement() -> iam.PolicyStatement:
    """``sagemaker:ListTags``, which the ``.sync`` integration calls on resources it does not
    name in advance; the Step Functions guide grants it on ``*``."""
    return iam.PolicyStatement(actions=["sagemaker:ListTags"], resources=["*"])


def pass_role_statement(role_arns: Sequence[str]) -> iam.PolicyStatement:
    """Pass exactly ``role_arns``, and only to SageMaker."""
    return iam.PolicyStatement(
        actions=["iam:PassRole"],
        resources=list(role_arns),
        conditions={"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}},
    )
