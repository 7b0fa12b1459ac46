"""The optional MLflow tracking server: present with exact permissions only when asked for."""

from __future__ import annotations

import json
from typing import Any

import pytest

from infra.constructs.experiment_tracking import MLFLOW_CLIENT_ACTIONS
from infra.settings import settings_from_context
from tests.conftest import REGION, synthesize
from tests.helpers import (
    Synthesized,
    actions_by_resource,
    only_resource,
    policies_attached_to,
    resource_arn,
    resources_of_type,
    statements_of,
)


@pytest.fixture(scope="module")
def with_tracking(cdk_context: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    training = {**cdk_context["training"], "mlflowTrackingServer": True, "mlflowTrackingServerSize": "Medium"}
    settings = settings_from_context(training, region=REGION)
    return synthesize({**cdk_context, "training": training}, settings, tmp_path_factory.mktemp("cdk.out-mlflow"))


def test_tracking_server(with_tracking: Synthesized) -> None:
    template = with_tracking.storage
    server_id, server = only_resource(template, "AWS::SageMaker::MlflowTrackingServer")
    assert server["DeletionPolicy"] == "Retain"
    props = server["Properties"]
    assert props["TrackingServerName"] == "smtrain-mlflow"
    assert props["TrackingServerSize"] == "Medium"
    assert props["AutomaticModelRegistration"] is False
    assert json.dumps(props["ArtifactStoreUri"]).endswith('/mlflow/"]]}')
    assert template["Outputs"]["TrackingServerArn"]["Value"] == {"Fn::GetAtt": [server_id, "TrackingServerArn"]}
    assert "TrackingServerArn" in with_tracking.workflow["Outputs"]


def test_exact_permissions(with_tracking: Synthesized) -> None:
    template = with_tracking.storage
    server_id, server = only_resource(template, "AWS::SageMaker::MlflowTrackingServer")
    artifacts = next(i for i in resources_of_type(template, "AWS::S3::Bucket") if i.startswith("BucketsArtifacts"))
    key_id, _ = only_resource(template, "AWS::KMS::Key")
    server_role = server["Properties"]["RoleArn"]["Fn::GetAtt"][0]
    (server_policy,) = policies_attached_to(template, server_role)
    assert actions_by_resource(statements_of(template, server_policy)) == {
        ("s3:GetObject", resource_arn(artifacts, "/mlflow/*")), ("s3:PutObject", resource_arn(artifacts, "/mlflow/*")),
        ("s3:DeleteObject", resource_arn(artifacts, "/mlflow/*")), ("s3:ListBucket", resource_arn(artifacts)),
        ("kms:Decrypt", resource_arn(key_id)), ("kms:GenerateDataKey", resource_arn(key_id))}
    trust = template["Resources"][server_role]["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]
    assert trust["Principal"] == {"Service": "sagemaker.amazonaws.com"}
    assert trust["Condition"] == {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}

    execution_role = next(i for i in resources_of_type(template, "AWS::IAM::Role")
                          if i.startswith("SageMakerExecution"))
    added = [p for p in policies_attached_to(template, execution_role) if p.startswith("ExperimentTracking")]
    (client_policy,) = added
    server_arn = json.dumps({"Fn::GetAtt": [server_id, "TrackingServerArn"]}, sort_keys=True)
    assert actions_by_resource(statements_of(template, client_policy)) == {
        *((action, server_arn) for action in MLFLOW_CLIENT_ACTIONS),
        ("s3:PutObject", resource_arn(artifacts, "/mlflow/*"))}
    assert not any(a.endswith("*") for a in MLFLOW_CLIENT_ACTIONS)


def test_jobs_get_the_tracking_uri(with_tracking: Synthesized) -> None:
    states = with_tracking.definition()["States"]
    environment = states["TrainModel"]["Parameters"]["Environment"]
    # The URI is the storage stack's server ARN, imported across stacks.
    definition_string = json.dumps(next(iter(resources_of_type(
        with_tracking.workflow, "AWS::StepFunctions::StateMachine").values()))["Properties"]["DefinitionString"])
    assert '"MLFLOW_TRACKING_URI\\":\\""' in definition_string.replace(" ", "")
    assert "ExportsOutputFnGetAttExperimentTrackingServer" in definition_string
    assert environment["MLFLOW_TRACKING_URI"]
    assert environment["MLFLOW_EXPERIMENT_NAME"] == "smtrain"
    assert environment["SMTRAIN_EXECUTION.$"] == "$$.Execution.Name"
    assert environment["SMTRAIN_METHOD.$"] == "$.config.method"
    tuning = states["TuneModel"]["Parameters"]["TrainingJobDefinition"]["Environment"]
    assert tuning["SMTRAIN_TUNING_JOB.$"] == states["TuneModel"]["Parameters"]["HyperParameterTuningJobName.$"]


def test_compliance_with_tracking(with_tracking: Synthesized) -> None:
    findings = [m for m in with_tracking.messages if m[0].rsplit(".", 1)[-1].lower() in ("error", "warning")]
    assert findings == []


def test_snapshot_with_tracking(with_tracking: Synthesized, snapshot: Any) -> None:
    from syrupy.extensions.json import JSONSnapshotExtension

    from tests.test_snapshots import stabilised

    assert stabilised(with_tracking.storage) == snapshot.use_extension(JSONSnapshotExtension)


def test_nothing_without_the_flag(synthesized: Synthesized) -> None:
    assert not resources_of_type(synthesized.storage, "AWS::SageMaker::MlflowTrackingServer")
    states = synthesized.definition()["States"]
    assert "Environment" not in states["TrainModel"]["Parameters"]
    assert "Environment" not in states["TuneModel"]["Parameters"]["TrainingJobDefinition"]
    assert "TrackingServerArn" not in synthesized.storage["Outputs"]
