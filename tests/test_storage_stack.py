"""The stateful stack: nothing is lost on delete, everything is encrypted, the role is minimal."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.helpers import (
    Synthesized,
    actions_by_resource,
    all_actions,
    only_resource,
    policies_attached_to,
    resource_arn,
    resources_of_type,
    statements_of,
)

MODEL_PACKAGE_GROUP = "AWS::SageMaker::ModelPackageGroup"
STATEFUL_TYPES = ("AWS::KMS::Key", "AWS::S3::Bucket", "AWS::S3::BucketPolicy",
                  "AWS::ECR::Repository", "AWS::IAM::Role", "AWS::IAM::ManagedPolicy")


def test_every_resource_is_retained_on_delete(synthesized: Synthesized) -> None:
    resources = synthesized.storage["Resources"]
    assert {r["Type"] for r in resources.values()} == {*STATEFUL_TYPES, MODEL_PACKAGE_GROUP}
    for logical_id, resource in resources.items():
        # A model package group is deleted only by the rollback of the deploy that created it
        # (still empty then); see infra/constructs/model_registry.py.
        expected = "RetainExceptOnCreate" if resource["Type"] == MODEL_PACKAGE_GROUP else "Retain"
        assert resource.get("DeletionPolicy") == expected, logical_id
        assert resource.get("UpdateReplacePolicy") == "Retain", logical_id


def test_no_auto_delete_custom_resources(synthesized: Synthesized) -> None:
    for template in synthesized.templates.values():
        types = {r["Type"] for r in template["Resources"].values()}
        assert "Custom::S3AutoDeleteObjects" not in types
        assert "Custom::ECRAutoDeleteImages" not in types


def test_key_rotates_and_scopes_service_use(synthesized: Synthesized) -> None:
    _, key = only_resource(synthesized.storage, "AWS::KMS::Key")
    assert key["Properties"]["EnableKeyRotation"] is True
    statements = {s.get("Sid"): s for s in key["Properties"]["KeyPolicy"]["Statement"]}
    logs = statements["AllowCloudWatchLogsForTrainingLogGroups"]
    assert logs["Principal"] == {"Service": "logs.us-east-1.amazonaws.com"}
    assert sorted(logs["Action"]) == sorted([
        "kms:Encrypt", "kms:Decrypt", "kms:ReEncryptFrom", "kms:ReEncryptTo", "kms:GenerateDataKey",
        "kms:GenerateDataKeyWithoutPlaintext", "kms:DescribeKey"])
    condition = json.dumps(logs["Condition"])
    assert "kms:EncryptionContext:aws:logs:arn" in condition
    assert "log-group:/aws/vendedlogs/states/smtrain-*" in condition
    # The network's flow logs: admitted whether or not the network is on, so that flow logs
    # retained from an earlier vpc mode stay readable.
    assert "log-group:/smtrain/network/*" in condition
    # No service but CloudWatch Logs (and its delivery of the state machine's encrypted
    # execution data) may use the data key: the failure alerts have their own.
    services = [st["Principal"] for st in statements.values() if "Service" in st.get("Principal", {})]
    assert services == [{"Service": "logs.us-east-1.amazonaws.com"},
                        {"Service": "delivery.logs.amazonaws.com"}]
    assert statements["AllowLogDeliveryOfEncryptedExecutionData"]["Action"] == "kms:Decrypt"


def _buckets(synthesized: Synthesized) -> dict[str, dict[str, Any]]:
    buckets = resources_of_type(synthesized.storage, "AWS::S3::Bucket")
    assert len(buckets) == 3
    return buckets


def test_buckets_are_private_versioned_and_owner_enforced(synthesized: Synthesized) -> None:
    for logical_id, bucket in _buckets(synthesized).items():
        props = bucket["Properties"]
        assert props["PublicAccessBlockConfiguration"] == {
            "BlockPublicAcls": True, "BlockPublicPolicy": True, "IgnorePublicAcls": True,
            "RestrictPublicBuckets": True}, logical_id
        assert props["VersioningConfiguration"] == {"Status": "Enabled"}, logical_id
        assert props["OwnershipControls"] == {
            "Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}, logical_id
        rules = props["LifecycleConfiguration"]["Rules"]
        assert any("NoncurrentVersionExpiration" in rule for rule in rules), logical_id


def test_data_buckets_use_the_key_and_log_access(synthesized: Synthesized) -> None:
    key_id, _ = only_resource(synthesized.storage, "AWS::KMS::Key")
    buckets = _buckets(synthesized)
    logs_id = next(i for i in buckets if i.startswith("BucketsAccessLogs"))
    for logical_id, bucket in buckets.items():
        encryption = bucket["Properties"]["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
        if logical_id == logs_id:
            # S3 server access logging delivers only to SSE-S3 buckets.
            assert encryption["ServerSideEncryptionByDefault"] == {"SSEAlgorithm": "AES256"}
            continue
        assert encryption["ServerSideEncryptionByDefault"] == {
            "SSEAlgorithm": "aws:kms", "KMSMasterKeyID": {"Fn::GetAtt": [key_id, "Arn"]}}
        assert encryption["BucketKeyEnabled"] is True
        assert bucket["Properties"]["LoggingConfiguration"]["DestinationBucketName"] == {"Ref": logs_id}


def test_bucket_policies_deny_plain_http(synthesized: Synthesized) -> None:
    policies = resources_of_type(synthesized.storage, "AWS::S3::BucketPolicy")
    assert len(policies) == 3
    for logical_id, policy in policies.items():
        denies = [s for s in policy["Properties"]["PolicyDocument"]["Statement"] if s["Effect"] == "Deny"]
        assert any(s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}} for s in denies), logical_id


def test_repository_is_immutable_scanned_and_encrypted(synthesized: Synthesized) -> None:
    key_id, _ = only_resource(synthesized.storage, "AWS::KMS::Key")
    _, repository = only_resource(synthesized.storage, "AWS::ECR::Repository")
    props = repository["Properties"]
    assert props["ImageTagMutability"] == "IMMUTABLE"
    assert props["ImageScanningConfiguration"] == {"ScanOnPush": True}
    assert props["EncryptionConfiguration"] == {
        "EncryptionType": "KMS", "KmsKey": {"Fn::GetAtt": [key_id, "Arn"]}}
    rules = json.loads(props["LifecyclePolicy"]["LifecyclePolicyText"])["rules"]
    # Only untagged images expire: a tagged one may be a registered model version's image.
    assert [r["selection"]["tagStatus"] for r in rules] == ["untagged"]
    assert "RepositoryName" not in props, "a fixed name would collide after cdk destroy"


#: Each role a job may run as (logical id prefix) and the part of the artifacts bucket it writes:
#: each program's own, and the earlier shared role's (kept one release: docs/security.md).
JOB_ROLES = {"ExecutionRoleDigitsMlpRole": "digits_mlp/", "ExecutionRoleDigitsLightgbmRole": "digits_lightgbm/",
             "ExecutionRoleDigitsXgboostRole": "digits_xgboost/", "SageMakerExecutionRole": ""}


def _job_role(template: dict[str, Any], prefix: str) -> tuple[str, dict[str, Any]]:
    (found,) = [(i, r) for i, r in resources_of_type(template, "AWS::IAM::Role").items() if i.startswith(prefix)]
    return found


def test_one_execution_role_per_program_and_the_earlier_shared_one(synthesized: Synthesized) -> None:
    """A role per program, and the shared role of earlier releases, still exported under the name
    the previous workflow stack imports (CloudFormation refuses to remove an export in use), but
    passed to no job (tests/test_workflow_stack.py: PassRole)."""
    roles = resources_of_type(synthesized.storage, "AWS::IAM::Role")
    assert sorted(re.sub("[0-9A-F]{8}$", "", i) for i in roles) == sorted(JOB_ROLES)
    shared_id, _ = _job_role(synthesized.storage, "SageMakerExecutionRole")
    export_name = "ExportsOutputFnGetAttSageMakerExecutionRole38ADDEB7Arn6AE73636"
    assert synthesized.storage["Outputs"][export_name] == {
        "Value": {"Fn::GetAtt": [shared_id, "Arn"]}, "Export": {"Name": f"smtrain-storage:{export_name}"}}
    # Every export the previous release's workflow stack imports (its template at be5c0ef) is
    # still exported, so the storage stack's update is not refused.
    exported = {o["Export"]["Name"] for o in synthesized.storage["Outputs"].values() if "Export" in o}
    assert exported >= {f"smtrain-storage:ExportsOutput{name}" for name in (
        "FnGetAttSageMakerExecutionRole38ADDEB7Arn6AE73636", "FnGetAttDataKey2A0DE9E6Arn11FE9379",
        "FnGetAttBucketsArtifactsB9EE6400Arn92A234F0", "RefBucketsArtifactsB9EE640063E0F2D8",
        "RefBucketsData941F65F0DC630599", "FnGetAttTrainingImagesRepositoryC21C6A2AArn55BC9E47",
        "RefTrainingImagesRepositoryC21C6A2AFD4E1B99")}
    # The programs' roles are read as weak references, never exported.
    for name, output in synthesized.storage["Outputs"].items():
        if "ExecutionRoleDigits" in json.dumps(output["Value"]):
            assert "Export" not in output, name


@pytest.mark.parametrize("role_prefix", sorted(JOB_ROLES))
def test_execution_role_trust_is_guarded_against_confused_deputy(synthesized: Synthesized, role_prefix: str) -> None:
    _, role = _job_role(synthesized.storage, role_prefix)
    (statement,) = role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert statement["Principal"] == {"Service": "sagemaker.amazonaws.com"}
    assert statement["Action"] == "sts:AssumeRole"
    assert statement["Condition"]["StringEquals"] == {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}
    # The project's own training and tuning jobs only (tests/test_iam_evaluated.py evaluates it).
    assert statement["Condition"]["ArnLike"] == {"aws:SourceArn": [{"Fn::Join": [
        "", ["arn:aws:sagemaker:us-east-1:", {"Ref": "AWS::AccountId"}, f":{kind}/smtrain-*"]]}
        for kind in ("training-job", "hyper-parameter-tuning-job")]}
    assert "ManagedPolicyArns" not in role["Properties"], "no AWS managed (FullAccess) policies"


@pytest.mark.parametrize("role_prefix", sorted(JOB_ROLES))
def test_execution_role_may_do_exactly_this(synthesized: Synthesized, role_prefix: str) -> None:
    template = synthesized.storage
    role_id, _ = _job_role(template, role_prefix)
    program = JOB_ROLES[role_prefix]
    key_id, _ = only_resource(template, "AWS::KMS::Key")
    repo_id, _ = only_resource(template, "AWS::ECR::Repository")
    buckets = _buckets(synthesized)
    data = next(i for i in buckets if i.startswith("BucketsData"))
    artifacts = next(i for i in buckets if i.startswith("BucketsArtifacts"))
    (policy_id,) = policies_attached_to(template, role_id)
    statements = statements_of(template, policy_id)

    logs_arn = json.dumps({"Fn::Join": ["", [
        "arn:aws:logs:us-east-1:", {"Ref": "AWS::AccountId"},
        ":log-group:/aws/sagemaker/TrainingJobs:*"]]}, sort_keys=True)
    star = json.dumps("*")
    expected = {
        ("s3:GetObject", resource_arn(data, "/datasets/*")),
        ("s3:ListBucket", resource_arn(data)),
        # Its program's models and checkpoints only.
        ("s3:PutObject", resource_arn(artifacts, f"/models/{program}*")),
        ("s3:AbortMultipartUpload", resource_arn(artifacts, f"/models/{program}*")),
        *((action, resource_arn(artifacts, f"/checkpoints/{program}*")) for action in (
            "s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload")),
        ("s3:ListBucket", resource_arn(artifacts)),
        ("kms:Decrypt", resource_arn(key_id)),
        # "the SageMaker execution role must include permissions to call kms:Encrypt" when a job
        # names a KMS key for its output (API reference, OutputDataConfig.KmsKeyId).
        ("kms:Encrypt", resource_arn(key_id)),
        ("kms:GenerateDataKey", resource_arn(key_id)),
        # A job on an EBS-only instance type names the key as its VolumeKmsKeyId (developer
        # guide, "CreateTrainingJob API: Execution Role Permissions": kms:CreateGrant).
        ("kms:CreateGrant", resource_arn(key_id)),
        *((action, resource_arn(repo_id)) for action in (
            "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability")),
        ("ecr:GetAuthorizationToken", star),
        *((action, logs_arn) for action in (
            "logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents",
            "logs:DescribeLogStreams")),
        ("cloudwatch:PutMetricData", star),
    }
    assert actions_by_resource(statements) == expected
    assert not any("*" in action for action in all_actions(statements))

    by_sid = {s["Sid"]: s for s in statements}
    assert by_sid["EncryptTrainingVolumes"]["Condition"] == {
        "Bool": {"kms:GrantIsForAWSResource": "true"}}, "grants for the volume only, not people"
    assert by_sid["ListTrainingInputs"]["Condition"] == {"StringLike": {"s3:prefix": ["datasets/*"]}}
    assert by_sid["ListCheckpoints"]["Condition"] == {"StringLike": {"s3:prefix": [f"checkpoints/{program}*"]}}
    assert by_sid["PublishTrainingMetrics"]["Condition"] == {
        "StringEquals": {"cloudwatch:namespace": "/aws/sagemaker/TrainingJobs"}}


@pytest.mark.parametrize("output", ["DataBucketName", "ArtifactsBucketName", "RepositoryUri", "DataKeyArn"])
def test_storage_outputs(synthesized: Synthesized, output: str) -> None:
    assert output in synthesized.storage["Outputs"]
