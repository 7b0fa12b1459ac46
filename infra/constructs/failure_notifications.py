"""E-mail-able alerts when a training execution fails, times out or is aborted, and (optionally)
when a registered model version is approved or rejected."""

from __future__ import annotations

import re
from collections.abc import Sequence

from aws_cdk import Duration, RemovalPolicy, Stack, Token
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

#: Approval decisions that alert (``ModelApprovalStatus``; ``PendingManualApproval`` does not).
APPROVAL_DECISIONS = ("Approved", "Rejected")

#: ``ModelPackageGroupName`` as the SageMaker API model defines it (``EntityName``: 1 to 63
#: characters, this pattern), checked for names that are not tokens.
MODEL_PACKAGE_GROUP_NAME = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}")


class FailureNotifications(Construct):
    """An EventBridge rule on the state machine's failed, timed-out and aborted executions,
    publishing a one-line message to a KMS-encrypted, TLS-only SNS topic: the execution's name,
    status, error name and ARN, never the error's cause (it can hold job details and data).

    ``email`` (default none) adds an e-mail subscription, which the recipient must confirm.

    ``model_package_group_names`` (default none; literal names or tokens) adds a second rule,
    ``ModelApprovalChanged``, on SageMaker's "SageMaker Model Package State Change" events of
    exactly those model package groups whose ``ModelApprovalStatus`` is ``Approved`` or
    ``Rejected``: one line naming the group, the version, the status, the approval description
    (when the event carries one) and the package ARN, to the same topic. SageMaker emits the
    event on every change of a package, and "may send multiple events ... for each state change"
    (SageMaker developer guide, "Events that Amazon SageMaker AI sends to Amazon EventBridge"),
    so a version created as ``Approved``, or an update of an approved or rejected version that
    keeps its status (its description, metadata or life-cycle stage), alerts as well, possibly
    twice; a version registered as ``PendingManualApproval`` does not. A literal name must be a
    valid group name and no name may repeat (else ``ValueError`` naming the parameter). Without
    group names none of this exists: the template is exactly what it was before the parameter.

    Only these rules may publish: the topic policy denies EventBridge any other source ARN.

    The topic has a key of its own (rotated, deleted with the stack after 7 days): EventBridge
    must be able to use the key of a topic it publishes to (SNS developer guide, "Enable
    compatibility between event sources from AWS services and encrypted topics"), and a key that
    encrypts only these alerts keeps that grant away from the training data. The grant is
    limited to this account (``aws:SourceAccount``); CDK's own unconditioned grant is avoided by
    setting the key on the topic resource rather than on the construct. It adds no IAM role:
    EventBridge publishes to SNS under the topic's resource policy.
    """

    def __init__(self, scope: Construct, construct_id: str, *, state_machine: sfn.IStateMachine,
                 email: str | None = None,
                 model_package_group_names: Sequence[str] = ()) -> None:
        super().__init__(scope, construct_id)
        group_names = _checked_group_names(model_package_group_names)
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
        self.topic = sns.Topic(
            self, "Topic", enforce_ssl=True,
            display_name="SageMaker training alerts" if group_names
            else "SageMaker training failures")
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
        #: The approval rule; ``None`` without ``model_package_group_names``.
        self.approval_rule = self._approval_rule(group_names) if group_names else None
        publishers = [self.rule] + ([self.approval_rule] if self.approval_rule else [])
        # CDK's target lets any EventBridge rule publish; deny all but these rules. A negated
        # operator with several values matches when the key equals none of them (IAM user
        # guide, "Condition with multiple context keys or values": a negated matching condition
        # operator evaluates its values with a logical NOR).
        self.topic.add_to_resource_policy(iam.PolicyStatement(
            sid="OnlyTheAlertRulesMayPublish" if self.approval_rule
            else "OnlyTheFailureRuleMayPublish",
            effect=iam.Effect.DENY,
            principals=[iam.ServicePrincipal("events.amazonaws.com")],
            actions=["sns:Publish"],
            resources=[self.topic.topic_arn],
            conditions={"ArnNotEquals": {"aws:SourceArn": (
                [rule.rule_arn for rule in publishers] if self.approval_rule
                else self.rule.rule_arn)}},
        ))
        # The execution, its status and the error's name only: the cause (a failed job's whole
        # description: hyperparameters, S3 URIs, a failure reason that can echo training data)
        # stays in AWS, in the execution's history, and never leaves as plain e-mail.
        name = events.EventField.from_path("$.detail.name")
        self.rule.add_target(targets.SnsTopic(self.topic, message=events.RuleTargetInput.from_text(
            f"Training execution {name} ended {events.EventField.from_path('$.detail.status')}: "
            f"{events.EventField.from_path('$.detail.error')}. The cause is not sent by e-mail: "
            f"`smtrain status {name}` shows it "
            f"({events.EventField.from_path('$.detail.executionArn')})"
        )))
        if self.approval_rule is not None:
            self.approval_rule.add_target(targets.SnsTopic(
                self.topic, message=approval_message()))

    def _approval_rule(self, group_names: list[str]) -> events.Rule:
        # Event shape: SageMaker developer guide, "Events that Amazon SageMaker AI sends to
        # Amazon EventBridge", section "SageMaker model package state change" (source
        # aws.sagemaker, detail-type "SageMaker Model Package State Change", detail fields
        # ModelPackageGroupName, ModelPackageVersion, ModelPackageArn, ModelApprovalStatus).
        return events.Rule(
            self, "ModelApprovalChanged",
            description="Model versions of the training programs' groups approved or rejected",
            event_pattern=events.EventPattern(
                source=["aws.sagemaker"],
                detail_type=["SageMaker Model Package State Change"],
                detail={"ModelPackageGroupName": group_names,
                        "ModelApprovalStatus": list(APPROVAL_DECISIONS)},
            ),
        )


def approval_message() -> events.RuleTargetInput:
    """One line per approval decision. ``ApprovalDescription`` comes last and unlabelled: a path
    the event lacks is not substituted at all (EventBridge user guide, "Amazon EventBridge input
    transformation", common issues), so without one the line still reads whole."""
    return events.RuleTargetInput.from_text(
        f"Model package group {events.EventField.from_path('$.detail.ModelPackageGroupName')} "
        f"version {events.EventField.from_path('$.detail.ModelPackageVersion')} is now "
        f"{events.EventField.from_path('$.detail.ModelApprovalStatus')} "
        f"({events.EventField.from_path('$.detail.ModelPackageArn')}). "
        f"{events.EventField.from_path('$.detail.ApprovalDescription')}"
    )


def _checked_group_names(names: Sequence[str]) -> list[str]:
    if isinstance(names, str):
        raise ValueError("model_package_group_names must be a sequence of names, not one string "
                         f"({names!r})")
    checked: list[str] = []
    for name in names:
        if not Token.is_unresolved(name) and not MODEL_PACKAGE_GROUP_NAME.fullmatch(name):
            raise ValueError(
                f"model_package_group_names: {name!r} is not a model package group name (1 to 63 "
                "letters, digits and hyphens, starting and ending with a letter or digit)")
        if name in checked:
            raise ValueError(f"model_package_group_names: {name!r} is given twice")
        checked.append(name)
    return checked
