"""E-mail-able alerts when a training execution fails, times out or is aborted."""

from __future__ import annotations

from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

#: Execution statuses that alert.
ALERT_STATUSES = ("FAILED", "TIMED_OUT", "ABORTED")


class FailureNotifications(Construct):
    """An EventBridge rule on the state machine's failed, timed-out and aborted executions,
    publishing a one-line message to a KMS-encrypted, TLS-only SNS topic.

    ``email`` (default none) adds an e-mail subscription, which the recipient must confirm.
    Only this rule may publish (the topic policy denies EventBridge any other source ARN); its use
    of the key is granted in the key policy (see ``TrainingDataKey``).
    """

    def __init__(self, scope: Construct, construct_id: str, *, state_machine: sfn.IStateMachine,
                 key: kms.IKey, email: str | None = None) -> None:
        super().__init__(scope, construct_id)
        self.topic = sns.Topic(self, "Topic", master_key=key, enforce_ssl=True,
                               display_name="SageMaker training failures")
        if email is not None:
            self.topic.add_subscription(subscriptions.EmailSubscription(email))
        self.rule = events.Rule(
            self, "ExecutionFailed",
            description="Training executions that failed, timed out or were aborted",
            event_pattern=events.EventPattern(
                source=["aws.states"],
                detail_type=["Step Functions Execution Status Change"],
                detail={"status": list(ALERT_STATUSES),
                        "stateMachineArn": [state_machine.state_machine_arn]},
            ),
        )
        # CDK's target lets any EventBridge rule publish; deny all but this one.
        self.topic.add_to_resource_policy(iam.PolicyStatement(
            sid="OnlyTheFailureRuleMayPublish",
            effect=iam.Effect.DENY,
            principals=[iam.ServicePrincipal("events.amazonaws.com")],
            actions=["sns:Publish"],
            resources=[self.topic.topic_arn],
            conditions={"ArnNotEquals": {"aws:SourceArn": self.rule.rule_arn}},
        ))
        self.rule.add_target(targets.SnsTopic(self.topic, message=events.RuleTargetInput.from_text(
            f"Training execution {events.EventField.from_path('$.detail.name')} ended "
            f"{events.EventField.from_path('$.detail.status')}: "
            f"{events.EventField.from_path('$.detail.error')} "
            f"{events.EventField.from_path('$.detail.cause')} "
            f"({events.EventField.from_path('$.detail.executionArn')})"
        )))
