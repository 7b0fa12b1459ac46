"""E-mail-able alerts when a training execution fails, times out or is aborted."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy, Stack
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
    Only this rule may publish (the topic policy denies EventBridge any other source ARN).

    The topic has a key of its own (rotated, deleted with the stack after 7 days): EventBridge
    must be able to use the key of a topic it publishes to (SNS developer guide, "Enable
    compatibility between event sources from AWS services and encrypted topics"), and a key that
    encrypts only these alerts keeps that grant away from the training data. The grant is
    limited to this account (``aws:SourceAccount``); CDK's own unconditioned grant is avoided by
    setting the key on the topic resource rather than on the construct.
    """

    def __init__(self, scope: Construct, construct_id: str, *, state_machine: sfn.IStateMachine,
                 email: str | None = None) -> None:
        super().__init__(scope, construct_id)
        self.key = kms.Key(self, "Key", description="Encrypts the training failure alerts",
                           enable_key_rotation=True, pending_window=Duration.days(7),
                           removal_policy=RemovalPolicy.DESTROY)
        self.key.add_to_resource_policy(iam.PolicyStatement(
            sid="AllowEventBridgeToPublishEncryptedAlerts",
            principals=[iam.ServicePrincipal("events.amazonaws.com")],
            actions=["kms:Decrypt", "kms:GenerateDataKey"],
            resources=["*"],  # in a key policy "*" means this key
            conditions={"StringEquals": {"aws:SourceAccount": Stack.of(self).account}},
        ))
        self.topic = sns.Topic(self, "Topic", enforce_ssl=True,
                               display_name="SageMaker training failures")
        # Set on the resource, not as the Topic's master_key: the SNS target would otherwise add
        # its own, unconditioned key grant for EventBridge.
        cfn_topic = self.topic.node.default_child
        assert isinstance(cfn_topic, sns.CfnTopic)
        cfn_topic.kms_master_key_id = self.key.key_arn
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
