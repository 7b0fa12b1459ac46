"""The model registry in the templates: a retained group per program, unique per creation of the
storage stack, read by the workflow stack without exports; the registration states and the exact
IAM the state machine gets for them; the approval alerts."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aws_cdk import App

from infra.constructs.model_registry import MAX_GROUP_NAME
from infra.settings import Settings, SettingsError
from smtrain.core import contract
from smtrain.core.programs import discover
from tests.helpers import Synthesized, references, resources_of_type

PROGRAMS = ("digits_lightgbm", "digits_mlp", "digits_xgboost")
GROUP_TYPE = "AWS::SageMaker::ModelPackageGroup"


def groups(synthesized: Synthesized) -> dict[str, dict[str, Any]]:
    return resources_of_type(synthesized.storage, GROUP_TYPE)


def state_machine_statements(synthesized: Synthesized) -> list[dict[str, Any]]:
    (policy,) = [r for logical_id, r in resources_of_type(synthesized.workflow, "AWS::IAM::Policy").items()
                 if logical_id.startswith("TrainingStateMachineRoleDefaultPolicy")]
    statements: list[dict[str, Any]] = policy["Properties"]["PolicyDocument"]["Statement"]
    return statements


def test_a_group_per_program_named_uniquely_per_stack_creation(synthesized: Synthesized) -> None:
    found = groups(synthesized)
    assert len(found) == len(PROGRAMS)
    stack_uuid_head = {"Fn::Select": [0, {"Fn::Split": ["-", {"Fn::Select": [2, {"Fn::Split": [
        "/", {"Ref": "AWS::StackId"}]}]}]}]}
    names = []
    for program in PROGRAMS:
        (resource,) = [r for logical_id, r in found.items()
                       if logical_id.startswith(f"ModelRegistry{contract.output_id(program)}")]
        properties = resource["Properties"]
        base = f"smtrain-{program.replace('_', '-')}"
        assert properties["ModelPackageGroupName"] == {"Fn::Join": ["-", [base, stack_uuid_head]]}
        assert len(base) + 1 + 8 <= MAX_GROUP_NAME
        assert program in properties["ModelPackageGroupDescription"]
        names.append(base)
    assert len(set(names)) == len(names)


def test_groups_outlive_the_stack_but_not_a_failed_first_deploy(synthesized: Synthesized) -> None:
    for logical_id, resource in groups(synthesized).items():
        assert resource["DeletionPolicy"] == "RetainExceptOnCreate", logical_id
        assert resource["UpdateReplacePolicy"] == "Retain", logical_id


def test_the_workflow_stack_reads_the_groups_without_exports(synthesized: Synthesized) -> None:
    """The storage stack publishes each group's name and its versions' ARN pattern as plain
    outputs; the workflow stack reads them with Fn::GetStackOutput and never cuts them out of an
    ARN (CloudFormation's Fn::Split takes no Fn::GetStackOutput)."""
    storage, workflow = synthesized.storage, synthesized.workflow
    for program in PROGRAMS:
        output_id = contract.output_id(program)
        (group_id,) = [i for i in groups(synthesized) if i.startswith(f"ModelRegistry{output_id}")]
        name = storage["Outputs"][f"{contract.OUTPUT_MODEL_PACKAGE_GROUP}{output_id}"]
        versions = storage["Outputs"][f"ModelPackageVersions{output_id}"]
        assert "Export" not in name and "Export" not in versions
        name_value = storage["Resources"][group_id]["Properties"]["ModelPackageGroupName"]
        assert name["Value"] == name_value
        assert versions["Value"] == {"Fn::Join": ["", [
            "arn:aws:sagemaker:us-east-1:", {"Ref": "AWS::AccountId"}, ":model-package/",
            name_value, "/*"]]}
        read = {"Fn::GetStackOutput": {"StackName": "smtrain-storage", "Region": "us-east-1",
                                       "OutputName": f"{contract.OUTPUT_MODEL_PACKAGE_GROUP}{output_id}"}}
        assert workflow["Outputs"][f"{contract.OUTPUT_MODEL_PACKAGE_GROUP}{output_id}"]["Value"] == read
    assert not [i for i in references(workflow, "Fn::ImportValue") if "ModelRegistry" in str(i)]
    assert "Fn::Split" not in json.dumps(references(workflow, "Fn::GetStackOutput"))
    for split in references(workflow, "Fn::Split"):
        assert "Fn::GetStackOutput" not in json.dumps(split)


def test_state_machine_may_create_versions_pending_approval_in_its_groups_only(
        synthesized: Synthesized) -> None:
    statements = state_machine_statements(synthesized)
    (create,) = [s for s in statements if s["Action"] == "sagemaker:CreateModelPackage"]
    assert create["Effect"] == "Allow"
    assert create["Condition"] == {"StringEquals": {
        "sagemaker:ModelApprovalStatus": contract.PENDING_APPROVAL}}
    assert sorted(r["Fn::GetStackOutput"]["OutputName"] for r in create["Resource"]) == [
        f"ModelPackageVersions{contract.output_id(p)}" for p in PROGRAMS]
    # Nothing else of the registry: no approval, no deletion, no group management.
    actions = {a for s in statements for a in (s["Action"] if isinstance(s["Action"], list) else [s["Action"]])}
    assert {a for a in actions if "ModelPackage" in a} == {"sagemaker:CreateModelPackage"}
    (put,) = [s for s in statements if s["Action"] == "s3:PutObject"]
    # The quality reports, and the frozen copies of registered models (nothing else: not models/).
    assert [r["Fn::Join"][1][1] for r in put["Resource"]] == [
        f"/{contract.QUALITY_REPORTS_PREFIX}*", f"/{contract.REGISTERED_MODELS_PREFIX}*"]
    via_s3 = [s for s in statements if "kms:ViaService" in json.dumps(s.get("Condition", {}))]
    assert [s["Condition"] for s in via_s3] == [
        {"StringEquals": {"kms:ViaService": "s3.us-east-1.amazonaws.com"}}]
    assert sorted(via_s3[0]["Action"]) == ["kms:Decrypt", "kms:GenerateDataKey"]


def test_registration_request(synthesized: Synthesized) -> None:
    states = synthesized.definition()["States"]
    register = states["RegisterModelVersion"]
    assert register["Resource"] == "arn:aws:states:::aws-sdk:sagemaker:createModelPackage"
    parameters = register["Parameters"]
    assert parameters["ModelApprovalStatus"] == contract.PENDING_APPROVAL
    # The run's UUID (never the execution ARN, which comes back: a token SageMaker has seen
    # answers with the old version and creates none).
    assert parameters["ClientToken.$"] == "$.run.id"
    assert states["ApplyDefaults"]["Parameters"]["run"] == {"id.$": "States.UUID()"}
    # The version names the model's frozen copy (FreezeRegisteredModel), not the job's output.
    assert parameters["InferenceSpecification"]["Containers"] == [{
        "Image.$": "$.method.registry.image", "ModelDataUrl.$": "$.frozen.uri",
        "Environment.$": "$.method.registry.environment"}]
    assert parameters["CustomerMetadataProperties.$"] == "$.frozen.metadata"
    freeze = states["FreezeRegisteredModel"]
    assert freeze["Resource"] == "arn:aws:states:::aws-sdk:s3:copyObject"
    assert freeze["Arguments"]["ChecksumAlgorithm"] == "SHA256"
    assert f"'{contract.REGISTERED_MODELS_PREFIX}'" in freeze["Arguments"]["Key"]
    assert freeze["Next"] == "RegisterModelVersion" and states["WriteQualityReport"]["Next"] == "FreezeRegisteredModel"
    assert freeze["Catch"][0]["Next"] == "ExplainRegistrationFailure" and "Output" in freeze["Catch"][0]
    assert parameters["ModelMetrics"]["ModelQuality"]["Statistics"]["ContentType"] == "application/json"
    assert parameters["MetadataProperties"] == {"GeneratedBy.$": "$$.Execution.Id"}
    assert "ModelPackageName" not in parameters and "Tags" not in parameters
    assert [rule["ErrorEquals"] for rule in register["Retry"]] == [
        ["SageMaker.ThrottlingException", "SageMaker.SageMakerException"]]
    assert register["Retry"][0]["MaxAttempts"] == 3
    assert register["Catch"][0]["Next"] == "ExplainRegistrationFailure"
    assert states["RegistrationFailed"]["Error"] == contract.REGISTRATION_FAILED_ERROR
    # Both ends of a run go through the decision.
    # Each run's report goes through its cost first (tests/test_state_machine_definition.py).
    assert states["ReckonCost"]["Next"] == states["ReportTuningCost"]["Next"] == "RegistrationRequested"
    write = states["WriteQualityReport"]
    assert write["Resource"] == "arn:aws:states:::aws-sdk:s3:putObject"
    assert write["Parameters"]["Key.$"] == (
        f"States.Format('{contract.QUALITY_REPORTS_PREFIX}{{}}.json', $.report.trainingJobName)")
    assert [rule["ErrorEquals"] for rule in write["Retry"]] == [["States.TaskFailed"]]
    assert write["Catch"][0]["Next"] == "ExplainRegistrationFailure"


def test_each_program_prepares_its_inference_container(synthesized: Synthesized,
                                                       settings: Settings) -> None:
    from infra.images import training_images

    images = training_images(region="us-east-1", pytorch_version=settings.pytorch_version,
                             pytorch_py_version=settings.pytorch_py_version,
                             xgboost_version=settings.xgboost_version)
    states = synthesized.definition()["States"]
    programs = discover(synthesized.training_code)
    expected = {"PrepareDigitsMlpCpu": images.pytorch_inference_cpu,
                "PrepareDigitsMlpGpu": images.pytorch_inference_cpu,
                "PrepareDigitsXgboost": images.xgboost}
    for state, image in expected.items():
        registry = states[state]["Result"]["registry"]
        assert registry["image"] == image, state
    mlp = states["PrepareDigitsMlpCpu"]["Result"]["registry"]
    assert mlp["environment"]["SAGEMAKER_PROGRAM"] == programs["digits_mlp"].serving.entry_point
    assert mlp["contentTypes"] == list(programs["digits_mlp"].serving.content_types)
    byoc = states["PrepareDigitsLightgbm"]["Result"]
    assert byoc["registry"]["image"] == byoc["algorithm"]["TrainingImage"]
    assert byoc["registry"]["environment"] == {}


def test_approval_decisions_alert_through_the_alerts_topic(synthesized: Synthesized) -> None:
    rules = resources_of_type(synthesized.workflow, "AWS::Events::Rule")
    (approval,) = [r for logical_id, r in rules.items() if "ModelApprovalChanged" in logical_id]
    pattern = approval["Properties"]["EventPattern"]
    assert pattern["source"] == ["aws.sagemaker"]
    assert pattern["detail-type"] == ["SageMaker Model Package State Change"]
    assert pattern["detail"]["ModelApprovalStatus"] == [contract.APPROVED, contract.REJECTED]
    assert len(pattern["detail"]["ModelPackageGroupName"]) == len(PROGRAMS)
    (topic_id,) = resources_of_type(synthesized.workflow, "AWS::SNS::Topic")
    assert approval["Properties"]["Targets"][0]["Arn"] == {"Ref": topic_id}


def test_group_names_fit_sagemaker_for_every_allowed_prefix_and_program() -> None:
    """The longest prefix (16) and program name (32) make a 58-character name; a longer one than
    SageMaker's 63 fails synth naming the setting."""
    from aws_cdk import Stack

    from infra.constructs.model_registry import ModelRegistry

    stack = Stack(App(), "Registry")
    registry = ModelRegistry(stack, "Longest", name_prefix="a" * 16, programs=["p" * 32])
    assert set(registry.groups) == {"p" * 32}
    with pytest.raises(SettingsError, match="setting 'namePrefix'"):
        ModelRegistry(stack, "TooLong", name_prefix="a" * 22, programs=["p" * 32])
