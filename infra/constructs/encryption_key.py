"""The customer-managed KMS key that encrypts every bucket, the repository, the logs and the topic."""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import ArnFormat, Duration, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from constructs import Construct

#: What CloudWatch Logs needs on a key that encrypts a log group (the Logs user guide lists these
#: as wildcards; spelt out here so no wildcard action reaches the policy).
LOGS_KEY_ACTIONS = [
    "kms:Encrypt", "kms:Decrypt", "kms:ReEncryptFrom", "kms:ReEncryptTo", "kms:GenerateDataKey",
    "kms:GenerateDataKeyWithoutPlaintext", "kms:DescribeKey",
]


class TrainingDataKey(Construct):
    """A KMS key with yearly rotation, retained when the stack is deleted.

    Guarantees:
    - rotation is on and the key (and so every object it encrypted) survives ``cdk destroy``;
    - CloudWatch Logs may use it only for log groups whose names start with
      one of ``log_group_name_prefixes`` in this account and region;
    - CloudWatch Logs delivery may decrypt with it (``kms:Decrypt`` for
      ``delivery.logs.amazonaws.com``, the statement the Step Functions guide's "Data at rest
      encryption" gives for a state machine whose execution data is encrypted with a
      customer-managed key and logged);
    - no other service principal may use it (the failure alerts have a key of their own).

    The account root keeps the default administrative statement, so IAM policies of this account
    (the execution role, the state machine role) can be granted use of the key.
    """

    def __init__(self, scope: Construct, construct_id: str, *,
                 log_group_name_prefixes: Sequence[str]) -> None:
        super().__init__(scope, construct_id)
        if not log_group_name_prefixes:
            raise ValueError("log_group_name_prefixes must name at least one prefix")
        for prefix in log_group_name_prefixes:
            if not prefix.startswith("/"):
                raise ValueError(f"log group name prefixes must start with '/', got {prefix!r}")
        stack = Stack.of(self)
        self.key = kms.Key(
            self,
            "Key",
            description="Encrypts SageMaker training data, models, images and logs",
            enable_key_rotation=True,
            pending_window=Duration.days(30),
            removal_policy=RemovalPolicy.RETAIN,
        )
        self.key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowCloudWatchLogsForTrainingLogGroups",
                principals=[iam.ServicePrincipal(f"logs.{stack.region}.amazonaws.com")],
                actions=LOGS_KEY_ACTIONS,
                resources=["*"],  # in a key policy "*" means this key
                conditions={
                    "ArnLike": {
                        "kms:EncryptionContext:aws:logs:arn": [
                            stack.format_arn(
                                service="logs", resource="log-group",
                                resource_name=f"{prefix}*",
                                arn_format=ArnFormat.COLON_RESOURCE_NAME,
                            )
                            for prefix in log_group_name_prefixes
                        ]
                    }
                },
            )
        )
        self.key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowLogDeliveryOfEncryptedExecutionData",
                principals=[iam.ServicePrincipal("delivery.logs.amazonaws.com")],
                actions=["kms:Decrypt"],
                resources=["*"],  # in a key policy "*" means this key
            )
        )
