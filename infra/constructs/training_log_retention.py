"""A retention period for SageMaker's training log group, which the account shares."""

from __future__ import annotations

from aws_cdk import ArnFormat, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import custom_resources as cr
from constructs import Construct

from infra.compliance import (
    INLINE_POLICY_RULES,
    acknowledge,
    acknowledge_aws_custom_resource_provider,
    nag_arn,
)
from infra.constructs.execution_role import TRAINING_LOG_GROUP
from infra.settings import LOG_RETENTION_DAYS

#: What CloudWatch Logs answers to CreateLogGroup for a group that exists (CloudWatch Logs API
#: reference, CreateLogGroup, Errors).
ALREADY_EXISTS = "ResourceAlreadyExistsException"


class TrainingLogRetention(Construct):
    """Gives ``/aws/sagemaker/TrainingJobs`` a retention of ``retention_days``.

    SageMaker creates that group on the first training job of an account and region, and every
    training job of the account writes to it, so the stack never owns it. Guarantees:

    - deploy (create or update): the group is created if it does not exist yet (CreateLogGroup;
      "already exists" is ignored: the group of an account that trained before), then its
      retention is set (PutRetentionPolicy, which would fail with ResourceNotFoundException on a
      missing group, hence the first call). Neither call fails the deploy in either case;
    - a changed ``retention_days`` sets the new period on the next deploy;
    - delete (the setting removed, or ``cdk destroy``): nothing is called; the group, its logs
      and the retention last set stay (other stacks and jobs of the account use the group);
    - the custom resource's function may call exactly ``logs:CreateLogGroup`` and
      ``logs:PutRetentionPolicy`` on that one group.

    The group keeps SageMaker's encryption (CloudWatch Logs' own keys): SageMaker creates it and
    names no key, and a key set here would have to admit every job of the account.
    """

    def __init__(self, scope: Construct, construct_id: str, *, retention_days: int) -> None:
        super().__init__(scope, construct_id)
        if retention_days not in LOG_RETENTION_DAYS:
            raise ValueError(f"retention_days must be one of {LOG_RETENTION_DAYS}, got {retention_days}")
        stack = Stack.of(self)
        group_arn = stack.format_arn(service="logs", resource="log-group",
                                     resource_name=TRAINING_LOG_GROUP,
                                     arn_format=ArnFormat.COLON_RESOURCE_NAME)
        policy = cr.AwsCustomResourcePolicy.from_statements([
            iam.PolicyStatement(actions=["logs:CreateLogGroup", "logs:PutRetentionPolicy"],
                                resources=[group_arn, f"{group_arn}:*"]),
        ])
        create_group = cr.AwsSdkCall(
            service="CloudWatchLogs", action="createLogGroup",
            parameters={"logGroupName": TRAINING_LOG_GROUP},
            physical_resource_id=cr.PhysicalResourceId.of(TRAINING_LOG_GROUP),
            ignore_error_codes_matching=ALREADY_EXISTS,
        )
        self.ensure_group = cr.AwsCustomResource(
            self, "EnsureGroup", on_create=create_group, on_update=create_group, policy=policy,
            install_latest_aws_sdk=False)
        set_retention = cr.AwsSdkCall(
            service="CloudWatchLogs", action="putRetentionPolicy",
            parameters={"logGroupName": TRAINING_LOG_GROUP, "retentionInDays": retention_days},
            physical_resource_id=cr.PhysicalResourceId.of(f"{TRAINING_LOG_GROUP}:retention"),
        )
        self.set_retention = cr.AwsCustomResource(
            self, "SetRetention", on_create=set_retention, on_update=set_retention, policy=policy,
            install_latest_aws_sdk=False)
        self.set_retention.node.add_dependency(self.ensure_group)
        for resource in (self.ensure_group, self.set_retention):
            acknowledge(
                resource.node.find_child("CustomResourcePolicy"), INLINE_POLICY_RULES,
                "CDK's AwsCustomResource attaches its call's statements as an inline policy of the "
                "provider function's role; the policy holds two log actions on one log group.")
            acknowledge(
                resource.node.find_child("CustomResourcePolicy"), "AwsSolutions-IAM5",
                "The log group's ARN with ':*' is the form IAM matches for actions on a log "
                "group's streams; the statement names one log group only.",
                applies_to=[f"Resource::{nag_arn(stack, f'{group_arn}:*')}"])
        acknowledge_aws_custom_resource_provider(stack)
