"""The workflow stack: the state machine's role, logging, tracing, alerts and outputs."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.helpers import (
    Synthesized,
    actions_by_resource,
    as_list,
    only_resource,
    policies_attached_to,
    resources_of_type,
    statements_of,
)


def _state_machine_role_statements(synthesized: Synthesized) -> list[dict[str, Any]]:
    template = synthesized.workflow
    _, machine = only_resource(template, "AWS::StepFunctions::StateMachine")
    role_id = machine["Properties"]["RoleArn"]["Fn::GetAtt"][0]
    policy_ids = list(policies_attached_to(template, role_id))
    return [s for policy_id in policy_ids for s in statements_of(template, policy_id)]


def _account_arn(text: str) -> str:
    prefix, suffix = text.split("{account}")
    return json.dumps({"Fn::Join": ["", [prefix, {"Ref": "AWS::AccountId"}, suffix]]},
                      sort_keys=True)


#: What CDK adds for LoggingConfiguration (vended logs) and TracingConfiguration (X-Ray).
LOG_DELIVERY_ACTIONS = (
    "logs:CreateLogDelivery", "logs:DeleteLogDelivery", "logs:DescribeLogGroups",
    "logs:DescribeResourcePolicies", "logs:GetLogDelivery", "logs:ListLogDeliveries",
    "logs:PutResourcePolicy", "logs:UpdateLogDelivery",
)
XRAY_ACTIONS = ("xray:GetSamplingRules", "xray:GetSamplingTargets", "xray:PutTelemetryRecords",
                "xray:PutTraceSegments")


def test_state_machine_role_may_do_exactly_this(synthesized: Synthesized) -> None:
    statements = _state_machine_role_statements(synthesized)
    star = json.dumps("*")
    training = _account_arn("arn:aws:sagemaker:us-east-1:{account}:training-job/smtrain-*")
    tuning = _account_arn("arn:aws:sagemaker:us-east-1:{account}:hyper-parameter-tuning-job/smtrain-*")
    rules = [_account_arn(f"arn:aws:events:us-east-1:{{account}}:rule/{name}") for name in (
        "StepFunctionsGetEventsForSageMakerTrainingJobsRule",
        "StepFunctionsGetEventsForSageMakerTuningJobsRule")]
    pass_role = [s for s in statements if "iam:PassRole" in as_list(s["Action"])]
    assert len(pass_role) == 1
    # Each program's role (read from the storage stack's outputs), never the earlier shared one.
    passed = [json.dumps(r, sort_keys=True) for r in as_list(pass_role[0]["Resource"])]
    program_roles = sorted(json.dumps({"Fn::GetStackOutput": {
        "OutputName": name, "Region": "us-east-1", "StackName": "smtrain-storage"}}, sort_keys=True)
        for name in synthesized.storage["Outputs"]
        if name.startswith("PublishOutputFnGetAttExecutionRole") and name.endswith(tuple("0123456789ABCDEF")))
    assert len(program_roles) == 3 and sorted(passed) == program_roles
    assert pass_role[0]["Condition"] == {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}}
    key = json.dumps({"Fn::ImportValue": "smtrain-storage:ExportsOutputFnGetAttDataKey2A0DE9E6Arn11FE9379"})
    repository = json.dumps({"Fn::ImportValue": (
        "smtrain-storage:ExportsOutputFnGetAttTrainingImagesRepositoryC21C6A2AArn55BC9E47")})

    expected = {
        *((action, star) for action in (*LOG_DELIVERY_ACTIONS, *XRAY_ACTIONS, "sagemaker:ListTags")),
        *((action, training) for action in (
            "sagemaker:CreateTrainingJob", "sagemaker:DescribeTrainingJob",
            "sagemaker:StopTrainingJob", "sagemaker:AddTags")),
        *((action, tuning) for action in (
            "sagemaker:CreateHyperParameterTuningJob", "sagemaker:DescribeHyperParameterTuningJob",
            "sagemaker:StopHyperParameterTuningJob", "sagemaker:AddTags",
            # A tuning run's cost: its training jobs, listed (TuningCost).
            "sagemaker:ListTrainingJobsForHyperParameterTuningJob")),
        *((action, rule) for action in ("events:PutTargets", "events:PutRule", "events:DescribeRule")
          for rule in rules),
        *(("iam:PassRole", role) for role in passed),
        *((action, key) for action in ("kms:Decrypt", "kms:GenerateDataKey")),
        # The model registry (ModelRegistration): versions of the three groups, the quality
        # report, the model's frozen copy under registry/ (read from models/), and read access to
        # what a version names.
        *(("sagemaker:CreateModelPackage", versions) for versions in _version_arns(synthesized)),
        ("s3:PutObject", _artifacts_objects("model-quality/*")),
        ("s3:PutObject", _artifacts_objects("registry/*")),
        ("s3:GetObject", _artifacts_objects("models/*")),
        ("s3:GetObject", _artifacts_objects("registry/*")),
        *((action, repository) for action in ("ecr:BatchGetImage", "ecr:DescribeImages")),
    }
    assert actions_by_resource(statements) == expected


def _artifacts_objects(pattern: str) -> str:
    return json.dumps({"Fn::Join": ["", [{"Fn::ImportValue": (
        "smtrain-storage:ExportsOutputFnGetAttBucketsArtifactsB9EE6400Arn92A234F0")}, f"/{pattern}"]]},
        sort_keys=True)


def _version_arns(synthesized: Synthesized) -> list[str]:
    """Each program's ``ModelPackageVersions<Id>`` output of the storage stack, read with
    Fn::GetStackOutput (a weak reference)."""
    return [json.dumps({"Fn::GetStackOutput": {"OutputName": name, "Region": "us-east-1",
                                               "StackName": "smtrain-storage"}}, sort_keys=True)
            for name in sorted(synthesized.storage["Outputs"]) if name.startswith("ModelPackageVersions")]


def test_execution_data_is_encrypted_with_the_stack_key(synthesized: Synthesized) -> None:
    """Step Functions encrypts execution data with the stack key; the role may use the key only
    under the encryption contexts of this state machine and of CloudWatch Logs delivery, and the
    key policy lets log delivery decrypt (developer guide, "Data at rest encryption")."""
    (machine,) = [r for r in synthesized.workflow["Resources"].values()
                  if r["Type"] == "AWS::StepFunctions::StateMachine"]
    encryption = machine["Properties"]["EncryptionConfiguration"]
    assert encryption["Type"] == "CUSTOMER_MANAGED_KMS_KEY"
    assert "DataKey" in json.dumps(encryption["KmsKeyId"])
    assert encryption["KmsDataKeyReusePeriodSeconds"] == 300
    kms = [s for s in _state_machine_role_statements(synthesized)
           if any(a.startswith("kms:") for a in as_list(s["Action"]))]
    conditions = sorted((sorted(as_list(s["Action"])), json.dumps(s["Condition"], sort_keys=True))
                        for s in kms)
    machine_arn = json.loads(_account_arn(
        "arn:aws:states:us-east-1:{account}:stateMachine:smtrain-training"))
    logs_arn = json.loads(_account_arn("arn:aws:logs:us-east-1:{account}:*"))
    assert conditions == sorted([
        (["kms:Decrypt", "kms:GenerateDataKey"], json.dumps({"StringEquals": {
            "kms:EncryptionContext:aws:states:stateMachineArn": machine_arn}}, sort_keys=True)),
        (["kms:GenerateDataKey"], json.dumps({"StringEquals": {
            "kms:EncryptionContext:SourceArn": logs_arn}}, sort_keys=True)),
        # The model registry's quality report and model reads, through S3 only.
        (["kms:Decrypt", "kms:GenerateDataKey"], json.dumps({"StringEquals": {
            "kms:ViaService": "s3.us-east-1.amazonaws.com"}}, sort_keys=True)),
    ])
    (key,) = [r for r in synthesized.storage["Resources"].values() if r["Type"] == "AWS::KMS::Key"]
    delivery = [s for s in key["Properties"]["KeyPolicy"]["Statement"]
                if s["Principal"] == {"Service": "delivery.logs.amazonaws.com"}]
    assert delivery == [{"Action": "kms:Decrypt", "Effect": "Allow",
                         "Principal": {"Service": "delivery.logs.amazonaws.com"},
                         "Resource": "*", "Sid": "AllowLogDeliveryOfEncryptedExecutionData"}]


def test_pass_role_only_to_sagemaker(synthesized: Synthesized) -> None:
    (statement,) = [s for s in _state_machine_role_statements(synthesized)
                    if "iam:PassRole" in as_list(s["Action"])]
    assert as_list(statement["Action"]) == ["iam:PassRole"]
    assert statement["Condition"] == {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}}


def test_state_machine_is_standard_logged_and_traced(synthesized: Synthesized) -> None:
    template = synthesized.workflow
    _, machine = only_resource(template, "AWS::StepFunctions::StateMachine")
    # The image copy function has a log group of its own (tests/test_training_image.py).
    (log_id,) = [i for i in resources_of_type(template, "AWS::Logs::LogGroup")
                 if not i.startswith("ImageDigitsLightgbm")]
    log_group = template["Resources"][log_id]
    props = machine["Properties"]
    assert props["StateMachineType"] == "STANDARD"
    assert props["StateMachineName"] == "smtrain-training"
    assert props["TracingConfiguration"] == {"Enabled": True}
    assert props["LoggingConfiguration"] == {
        "Destinations": [{"CloudWatchLogsLogGroup": {"LogGroupArn": {"Fn::GetAtt": [log_id, "Arn"]}}}],
        "IncludeExecutionData": True, "Level": "ALL"}
    # Retained on delete (the execution history is an audit trail), and named after the stack's
    # own id (AWS::StackId's last part), so a deploy after a destroy makes a new group instead of
    # colliding with the retained one; under the key policy's prefix /aws/vendedlogs/states/smtrain-.
    assert log_group["DeletionPolicy"] == log_group["UpdateReplacePolicy"] == "Retain"
    assert log_group["Properties"]["LogGroupName"] == {"Fn::Join": ["", [
        "/aws/vendedlogs/states/smtrain-training-",
        {"Fn::Select": [2, {"Fn::Split": ["/", {"Ref": "AWS::StackId"}]}]}]]}
    # cdk.json's logRetentionDays, one of the periods CloudWatch Logs accepts (API reference,
    # PutRetentionPolicy retentionInDays).
    retention = log_group["Properties"]["RetentionInDays"]
    assert retention == 365
    assert retention in (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827,
                         2192, 2557, 2922, 3288, 3653)
    assert "DataKey" in json.dumps(log_group["Properties"]["KmsKeyId"]), "encrypted with the stack key"
    assert "QueryLanguage" not in props or props["QueryLanguage"] == "JSONPath"


def test_failure_alerts(synthesized: Synthesized) -> None:
    template = synthesized.workflow
    machine_id, _ = only_resource(template, "AWS::StepFunctions::StateMachine")
    topic_id, topic = only_resource(template, "AWS::SNS::Topic")
    # The alerts have a key of their own, which EventBridge may use only in this account.
    key_id, key = only_resource(template, "AWS::KMS::Key")
    assert topic["Properties"]["KmsMasterKeyId"] == {"Fn::GetAtt": [key_id, "Arn"]}
    assert key["Properties"]["EnableKeyRotation"] is True
    grants = [st for st in key["Properties"]["KeyPolicy"]["Statement"]
              if st["Principal"] == {"Service": "events.amazonaws.com"}]
    assert grants == [{"Sid": "AllowEventBridgeToPublishEncryptedAlerts", "Effect": "Allow",
                       "Principal": {"Service": "events.amazonaws.com"},
                       "Action": ["kms:Decrypt", "kms:GenerateDataKey"], "Resource": "*",
                       "Condition": {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}}]
    rules = resources_of_type(template, "AWS::Events::Rule")
    (rule_id,) = [i for i in rules if i.startswith("FailureAlertsExecutionFailed")]
    (approval_id,) = [i for i in rules if i.startswith("FailureAlertsModelApprovalChanged")]
    rule = rules[rule_id]
    assert rule["Properties"]["EventPattern"] == {
        "source": ["aws.states"],
        "detail-type": ["Step Functions Execution Status Change"],
        "detail": {"status": ["FAILED", "TIMED_OUT", "ABORTED"],
                   "stateMachineArn": [{"Ref": machine_id}]},
    }
    (target,) = rule["Properties"]["Targets"]
    assert target["Arn"] == {"Ref": topic_id}
    transformer = target["InputTransformer"]
    # The execution, its status and the error's name: never the cause, which holds a failed
    # job's description (hyperparameters, S3 URIs, a reason that can echo data).
    assert "$.detail.cause" not in transformer["InputPathsMap"].values()
    event: dict[str, Any] = {"detail": {"name": "nightly-1", "status": "FAILED", "error": "TrainingJobFailed",
                        "cause": "secret data", "executionArn": "arn:aws:states:x:1:execution:m:nightly-1"}}
    message = transformer["InputTemplate"]
    for variable, path in transformer["InputPathsMap"].items():
        value: Any = event
        for part in path.removeprefix("$.").split("."):
            value = value[part]
        message = message.replace(f"<{variable}>", str(value))
    assert message == ('"Training execution nightly-1 ended FAILED: TrainingJobFailed. The cause is not sent '
                       'by e-mail: `smtrain status nightly-1` shows it (arn:aws:states:x:1:execution:m:nightly-1)"')
    _, topic_policy = only_resource(template, "AWS::SNS::TopicPolicy")
    statements = {s["Sid"]: s for s in topic_policy["Properties"]["PolicyDocument"]["Statement"]}
    assert statements["AllowPublishThroughSSLOnly"]["Effect"] == "Deny"
    rule_arns = [{"Fn::GetAtt": [rule_id, "Arn"]}, {"Fn::GetAtt": [approval_id, "Arn"]}]
    (allow,) = [st for st in statements.values() if st["Effect"] == "Allow"]
    assert allow["Action"] == "sns:Publish"
    assert allow["Principal"] == {"Service": "events.amazonaws.com"}
    # Only the two alert rules (failures, model approvals: test_model_approval_alerts) may publish.
    deny_others = statements["OnlyTheAlertRulesMayPublish"]
    assert deny_others["Effect"] == "Deny"
    assert deny_others["Condition"] == {"ArnNotEquals": {"aws:SourceArn": rule_arns}}
    assert not resources_of_type(template, "AWS::SNS::Subscription"), "no e-mail configured"


def test_image_copy_role_is_scoped(synthesized: Synthesized) -> None:
    template = synthesized.workflow
    roles = {i: r for i, r in resources_of_type(template, "AWS::IAM::Role").items()
             if i.startswith("ImageDigitsLightgbmCopyRole")}
    (role_id,) = roles
    statements = [s for p in policies_attached_to(template, role_id) for s in statements_of(template, p)]
    push = next(s for s in statements if s.get("Sid") == "PushToProjectRepository")
    assert "TrainingImagesRepository" in json.dumps(push["Resource"])
    assert all(as_list(s["Resource"]) != ["*"] or as_list(s["Action"]) == ["ecr:GetAuthorizationToken"]
               for s in statements)
    (_function_id, function) = next(iter(resources_of_type(template, "AWS::Lambda::Function").items()))
    assert function["Properties"]["Role"] == {"Fn::GetAtt": [role_id, "Arn"]}
    # No other policy sneaks onto the copy role (tests/test_training_image.py checks its exact actions).
    assert all(p.startswith("ImageDigitsLightgbmCopyPolicy") for p in policies_attached_to(template, role_id))


def test_execution_role_reads_only_this_code_asset(synthesized: Synthesized) -> None:
    """The one script program's role (digits_mlp's, read by name from the storage stack) may read
    its code asset, and no other role."""
    template = synthesized.workflow
    policies = {i: p for i, p in resources_of_type(template, "AWS::IAM::ManagedPolicy").items()
                if i.startswith("ReadSource")}
    (policy,) = policies.values()
    (role,) = policy["Properties"]["Roles"]
    role_output = synthesized.storage["Outputs"][role["Fn::GetStackOutput"]["OutputName"]]
    assert role_output["Value"]["Ref"].startswith("ExecutionRoleDigitsMlpRole")
    # The object, and (the default network, sealed, sends it as an input channel, which SageMaker
    # lists first) the listing of that key alone.
    statement, listing = policy["Properties"]["PolicyDocument"]["Statement"]
    assert statement["Action"] == "s3:GetObject"
    resource = json.dumps(statement["Resource"])
    assert "cdk-hnb659fds-assets-" in resource and resource.endswith('.gz"]]}')
    assert listing["Action"] == "s3:ListBucket"
    assert list(listing["Condition"]) == ["StringEquals"]


@pytest.mark.parametrize("output", ["StateMachineArn", "DataBucketName", "ArtifactsBucketName",
                                    "RepositoryUri", "ProgramImageDigitsLightgbm", "ProgramSourceDigitsMlp"])
def test_workflow_outputs(synthesized: Synthesized, output: str) -> None:
    assert output in synthesized.workflow["Outputs"]


def test_deployed_limits_are_outputs_the_cli_reads(synthesized: Synthesized) -> None:
    from smtrain.cli.deployment_lookup import limits_from_outputs

    outputs = {key: value["Value"] for key, value in synthesized.workflow["Outputs"].items()
               if key in ("AllowedInstanceTypes", "MaxInstanceCount")}
    limits = limits_from_outputs(outputs)
    # cdk.json's allowedInstanceTypes and maxInstanceCount.
    assert limits is not None
    assert limits.allowed_instance_types == (
        "ml.m5.large", "ml.m5.xlarge", "ml.m5.2xlarge", "ml.c5.xlarge", "ml.c5.2xlarge",
        "ml.g5.xlarge", "ml.g5.2xlarge")
    assert limits.max_instance_count == 4


def test_byoc_image_is_tagged_with_its_asset_hash(synthesized: Synthesized) -> None:
    uri = json.dumps(synthesized.workflow["Outputs"]["ProgramImageDigitsLightgbm"]["Value"])
    manifest = json.loads((synthesized.outdir / "Workflow.assets.json").read_text())
    (image_hash,) = manifest["dockerImages"]
    assert f":{image_hash}" in uri


def test_email_subscription_when_configured(cdk_context: dict[str, Any], tmp_path_factory: Any) -> None:
    from infra.settings import settings_from_context
    from tests.conftest import REGION, synthesize

    training = {**cdk_context["training"], "notificationEmail": "ml-team@example.com"}
    settings = settings_from_context(training, region=REGION)
    synthesized = synthesize({**cdk_context, "training": training}, settings,
                             tmp_path_factory.mktemp("cdk.out-email"))
    topic_id, _ = only_resource(synthesized.workflow, "AWS::SNS::Topic")
    _, subscription = only_resource(synthesized.workflow, "AWS::SNS::Subscription")
    assert subscription["Properties"] == {"Protocol": "email", "Endpoint": "ml-team@example.com",
                                          "TopicArn": {"Ref": topic_id}}
