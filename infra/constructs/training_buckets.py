"""The S3 buckets of the project: datasets, training artifacts, and the access-log sink."""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra.compliance import REPLICATION_RULES, acknowledge, acknowledge_checkov
from smtrain.core import contract

#: The prefixes of the execution contract (smtrain/core/contract.py): data under ``datasets/``,
#: models under ``models/``, spot checkpoints under ``checkpoints/``.
DATASETS_PREFIX = contract.DATASETS_PREFIX
MODELS_PREFIX = contract.MODELS_PREFIX
CHECKPOINTS_PREFIX = contract.CHECKPOINTS_PREFIX

#: The request's encryption headers, as bucket policy condition keys (S3 user guide, "Amazon S3
#: condition key examples").
SSE_KEY = "s3:x-amz-server-side-encryption"
SSE_KMS_KEY_ID_KEY = "s3:x-amz-server-side-encryption-aws-kms-key-id"
#: The artifacts bucket's prefixes whose writers' encryption headers are known (see
#: :func:`only_the_stack_key`).
ENFORCED_ARTIFACT_PREFIXES = (contract.MODELS_PREFIX, contract.REGISTERED_MODELS_PREFIX,
                              contract.QUALITY_REPORTS_PREFIX)
#: The Deny statements that keep objects under the stack key (see :func:`only_the_stack_key`).
OTHER_ENCRYPTION_SID = "DenyObjectsEncryptedOtherwise"
OTHER_KEY_SID = "DenyObjectsUnderAnotherKey"
AWS_MANAGED_KEY_SID = "DenyObjectsUnderTheAwsManagedKey"


def only_the_stack_key(bucket: s3.IBucket, key: kms.IKey, *, prefixes: Sequence[str] | None = None) -> None:
    """Deny ``s3:PutObject`` (under ``prefixes`` of ``bucket``, default: everywhere) to everyone
    when the request asks for an encryption other than the stack key. A request without
    encryption headers gets the bucket's default (the stack key); with headers, PutObject's API
    reference says: ``aws:kms`` "but do not provide x-amz-server-side-encryption-aws-kms-key-id,
    Amazon S3 uses the Amazon Web Services managed key (aws/s3)", and the key id header may name
    "Key ID, Key ARN, or Key Alias". So three Denies: another algorithm (SSE-S3, DSSE); another
    key (by ARN or id; an alias is refused too); ``aws:kms`` without a key id. SageMaker sends the
    stack key's ARN (every job's ``OutputDataConfig.KmsKeyId``); the CLI and the state machine's
    copies and reports send no header. Where a writer's headers are not documented (SageMaker's
    checkpoint sync, an MLflow server or App writing its artifacts), the prefix is left out
    rather than risk refusing it."""
    objects = [bucket.arn_for_objects(f"{prefix}*") for prefix in prefixes] if prefixes is not None \
        else [bucket.arn_for_objects("*")]

    def deny(sid: str, conditions: dict[str, dict[str, object]]) -> None:
        bucket.add_to_resource_policy(iam.PolicyStatement(
            sid=sid, effect=iam.Effect.DENY, principals=[iam.AnyPrincipal()], actions=["s3:PutObject"],
            resources=objects, conditions=conditions))

    deny(OTHER_ENCRYPTION_SID, {"Null": {SSE_KEY: "false"}, "StringNotEquals": {SSE_KEY: "aws:kms"}})
    deny(OTHER_KEY_SID, {"Null": {SSE_KMS_KEY_ID_KEY: "false"},
                         "StringNotEquals": {SSE_KMS_KEY_ID_KEY: [key.key_arn, key.key_id]}})
    deny(AWS_MANAGED_KEY_SID, {"Null": {SSE_KEY: "false", SSE_KMS_KEY_ID_KEY: "true"}})


class TrainingBuckets(Construct):
    """Three buckets that never lose data.

    Guarantees for the data and artifacts buckets: KMS encryption with ``key`` (bucket keys on),
    versioning, all public access blocked, TLS-only access (bucket policy), bucket-owner-enforced
    object ownership, no object written under another encryption or key than ``key`` (the data
    bucket's, and the artifacts bucket's models, registered copies and quality reports:
    :func:`only_the_stack_key`), server access logs to the logs bucket, noncurrent versions expired after
    ``noncurrent_version_days`` days (default 90). The logs bucket has the same protections but uses
    SSE-S3, because S3 server access logging cannot deliver to a KMS-encrypted bucket; its logs
    expire after ``access_log_days`` (default 365).

    Every bucket and every bucket policy is retained on stack deletion; there are no
    auto-delete custom resources.
    """

    def __init__(self, scope: Construct, construct_id: str, *, key: kms.IKey,
                 noncurrent_version_days: int = 90, access_log_days: int = 365) -> None:
        super().__init__(scope, construct_id)
        if noncurrent_version_days < 1:
            raise ValueError(f"noncurrent_version_days must be >= 1, got {noncurrent_version_days}")
        if access_log_days < 1:
            raise ValueError(f"access_log_days must be >= 1, got {access_log_days}")

        self.access_logs = s3.Bucket(
            self,
            "AccessLogs",
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            versioned=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            removal_policy=RemovalPolicy.RETAIN,
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="ExpireAccessLogs",
                    expiration=Duration.days(access_log_days),
                    noncurrent_version_expiration=Duration.days(30),
                )
            ],
        )
        self.data = self._bucket("Data", key=key, log_prefix="data/",
                                 noncurrent_version_days=noncurrent_version_days)
        self.artifacts = self._bucket("Artifacts", key=key, log_prefix="artifacts/",
                                      noncurrent_version_days=noncurrent_version_days)
        # Every object of the data bucket (datasets users upload); in the artifacts bucket, where
        # the writers' headers are known: SageMaker's models, the registry's frozen copies and the
        # quality reports (not checkpoints/ nor mlflow/: see only_the_stack_key).
        only_the_stack_key(self.data, key)
        only_the_stack_key(self.artifacts, key, prefixes=ENFORCED_ARTIFACT_PREFIXES)
        for bucket in (self.access_logs, self.data, self.artifacts):
            assert bucket.policy is not None  # enforce_ssl always creates one
            bucket.policy.apply_removal_policy(RemovalPolicy.RETAIN)
            acknowledge(
                bucket, REPLICATION_RULES,
                "Cross-region replication needs a bucket in a second region, which this "
                "single-region app does not own; versioning, retention on delete and the "
                "noncurrent-version lifecycle protect the data within the region.",
            )
        acknowledge(
            self.access_logs,
            ["HIPAA.Security-S3DefaultEncryptionKMS", "NIST.800.53.R5-S3DefaultEncryptionKMS",
             "PCI.DSS.321-S3DefaultEncryptionKMS"],
            "S3 server access logging delivers only to buckets encrypted with SSE-S3, not SSE-KMS; "
            "the bucket holds access logs only, is encrypted at rest with SSE-S3 and TLS-only.",
        )
        acknowledge_checkov(
            self.access_logs, ["CKV_AWS_18"],
            "This is the server access log bucket of the data and artifacts buckets: logging its "
            "own access into itself would log every delivery of a log (the S3 user guide advises "
            "against a bucket logging into itself); it is versioned, retained and TLS-only.")

    def _bucket(self, construct_id: str, *, key: kms.IKey, log_prefix: str,
                noncurrent_version_days: int) -> s3.Bucket:
        return s3.Bucket(
            self,
            construct_id,
            encryption=s3.BucketEncryption.KMS,
            encryption_key=key,
            bucket_key_enabled=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            versioned=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            server_access_logs_bucket=self.access_logs,
            server_access_logs_prefix=log_prefix,
            removal_policy=RemovalPolicy.RETAIN,
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="ExpireNoncurrentVersions",
                    noncurrent_version_expiration=Duration.days(noncurrent_version_days),
                    abort_incomplete_multipart_upload_after=Duration.days(7),
                )
            ],
        )
