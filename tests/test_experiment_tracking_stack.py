"""The optional MLflow tracking server: present with exact permissions only when asked for, and
a lifecycle that survives switching it off and on, destroying and redeploying (see the
``ExperimentTracking`` docstring)."""

from __future__ import annotations

import json
import re
from typing import Any

import botocore.session
import pytest
from aws_cdk import App, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3

from infra.constructs.experiment_tracking import (
    MLFLOW_CLIENT_ACTIONS,
    NAME_PREFIX_MAX,
    ROLE_ID_MAX,
    TRACKING_SERVER_NAME,
    TRACKING_SERVER_NAME_MAX,
    ExperimentTracking,
)
from smtrain.core.assembly import resolve_intrinsics
from tests.helpers import (
    Synthesized,
    actions_by_resource,
    cfn_lint,
    client_policy_of_every_job_role,
    mapping_resolver,
    one_logical_id,
    only_resource,
    policies_attached_to,
    reads_besides_the_programs,
    references,
    resource_arn,
    resources_of_type,
    statements_of,
)

TRACKING_RESOURCES = ("ExperimentTrackingServerRole", "ExperimentTrackingServerPolicy",
                      "ExperimentTrackingServer", "ExperimentTrackingClientPolicy")


@pytest.fixture(scope="module")
def with_tracking(tracking_server_app: Synthesized) -> Synthesized:
    """A Medium server, ``network: public`` (tests/conftest.py, shared with the IAM reference)."""
    return tracking_server_app


def test_tracking_server(with_tracking: Synthesized) -> None:
    template = with_tracking.storage
    server_id, server = only_resource(template, "AWS::SageMaker::MlflowTrackingServer")
    props = server["Properties"]
    assert props["TrackingServerSize"] == "Medium"
    assert props["AutomaticModelRegistration"] is False
    assert json.dumps(props["ArtifactStoreUri"]).endswith('/mlflow/"]]}')
    assert template["Outputs"]["TrackingServerArn"]["Value"] == {"Fn::GetAtt": [server_id, "TrackingServerArn"]}
    assert template["Outputs"]["TrackingServerName"]["Value"] == props["TrackingServerName"]
    # The server waits for its role's policy (attached through the policy's Roles list).
    assert server["DependsOn"] == [one_logical_id(template, "ExperimentTrackingServerPolicy")]


def test_server_role_and_history_outlive_the_flag_but_not_a_rollback(with_tracking: Synthesized) -> None:
    """Removed from the template or deleted with the stack: kept. Created by an operation that
    rolls back: deleted, so that a retry starts clean (RetainExceptOnCreate)."""
    resources = with_tracking.storage["Resources"]
    for prefix in ("ExperimentTrackingServerRole", "ExperimentTrackingServerPolicy", "ExperimentTrackingServer"):
        resource = resources[one_logical_id(with_tracking.storage, prefix)]
        assert resource["DeletionPolicy"] == "RetainExceptOnCreate", prefix
        assert resource["UpdateReplacePolicy"] == "Retain", prefix
    # The execution role's permission to log holds no data and goes with the flag.
    client = resources[one_logical_id(with_tracking.storage, "ExperimentTrackingClientPolicy")]
    assert client["DeletionPolicy"] == "Delete"


def test_server_name_is_new_with_every_creation(with_tracking: Synthesized) -> None:
    """``<namePrefix>-mlflow-<RoleId of the server's own role>``: a role CloudFormation names (no
    RoleName), created with the server, so every creation of the server has a name no retained
    server can hold, and an update (same role) keeps it."""
    template = with_tracking.storage
    _, server = only_resource(template, "AWS::SageMaker::MlflowTrackingServer")
    role_id = server["Properties"]["RoleArn"]["Fn::GetAtt"][0]
    assert role_id == one_logical_id(template, "ExperimentTrackingServerRole")
    assert "RoleName" not in template["Resources"][role_id]["Properties"]
    name = server["Properties"]["TrackingServerName"]
    assert name == {"Fn::Join": ["-", ["smtrain-mlflow", {"Fn::GetAtt": [role_id, "RoleId"]}]]}

    def rendered(unique_id: str) -> str:
        return str(resolve_intrinsics(name, mapping_resolver({f"{role_id}.RoleId": unique_id})))

    # Two creations (two roles, two IAM unique IDs) give two names.
    first, second = rendered("AROADBQP57FF2AEXAMPLE"), rendered("AROAZ3K5X7QW9EXAMPLE2")
    assert first == "smtrain-mlflow-AROADBQP57FF2AEXAMPLE" and first != second


def test_server_names_fit_what_sagemaker_accepts() -> None:
    """The longest prefix the construct accepts plus the longest role ID IAM may return still
    fits the TrackingServerName shape of botocore's sagemaker model (length and pattern)."""
    shape = botocore.session.get_session().get_service_model("sagemaker").shape_for("TrackingServerName")
    pattern, longest = shape.metadata["pattern"], shape.metadata["max"]
    assert (TRACKING_SERVER_NAME.pattern, TRACKING_SERVER_NAME_MAX) == (f"^{pattern}$", longest)
    iam_id = botocore.session.get_session().get_service_model("iam").shape_for("idType")
    assert iam_id.metadata["max"] == ROLE_ID_MAX
    for prefix in ("smtrain-mlflow", "a" * (NAME_PREFIX_MAX - 7) + "-mlflow"):
        for role_id in ("AROADBQP57FF2AEXAMPLE", "AROA" + "Z9" * ((ROLE_ID_MAX - 4) // 2)):
            name = f"{prefix}-{role_id}"
            assert re.fullmatch(pattern, name) and len(name) <= longest, name


@pytest.mark.parametrize("prefix", ["", "-smtrain", "smtrain-", "smtrain_mlflow", "a" * (NAME_PREFIX_MAX + 1)])
def test_bad_name_prefix_fails_synth(prefix: str) -> None:
    stack = Stack(App(), "Test")
    role = iam.Role(stack, "Role", assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"))
    with pytest.raises(ValueError, match="name_prefix"):
        ExperimentTracking(stack, "Tracking", name_prefix=prefix, artifacts_bucket=s3.Bucket(stack, "Bucket"),
                           key=kms.Key(stack, "Key"), execution_roles=[role])


def test_no_export_of_the_tracking_server(with_tracking: Synthesized) -> None:
    """The workflow stack reads the ARN with Fn::GetStackOutput from a plain output: no export
    that CloudFormation would refuse to remove while the workflow stack imports it."""
    storage, workflow = with_tracking.storage, with_tracking.workflow
    server_id, _ = only_resource(storage, "AWS::SageMaker::MlflowTrackingServer")
    for name, output in storage["Outputs"].items():
        if "Export" in output:
            assert server_id not in json.dumps(output["Value"]), name
    assert not any("ExperimentTracking" in str(i) for i in references(workflow, "Fn::ImportValue"))
    # (The model registry's outputs are read the same way: test_model_registry_stack.)
    reads = reads_besides_the_programs(workflow)
    assert reads, "the workflow stack does not read the tracking server"
    for read in reads:
        assert read["StackName"] == "smtrain-storage"
        output = storage["Outputs"][read["OutputName"]]
        assert output["Value"] == {"Fn::GetAtt": [server_id, "TrackingServerArn"]} and "Export" not in output
    assert workflow["Outputs"]["TrackingServerArn"]["Value"] == {"Fn::GetStackOutput": reads[0]}


@pytest.mark.parametrize("stack", ["Storage", "Workflow"])
def test_cfn_lint_accepts_the_templates_with_tracking(with_tracking: Synthesized, stack: str) -> None:
    """CloudFormation's resource schemas (through cfn-lint) accept RetainExceptOnCreate, the
    server's properties and Fn::GetStackOutput in the definition and the outputs."""
    assert cfn_lint(with_tracking.outdir / f"{stack}.template.json") == []


def test_switching_the_flag_touches_nothing_else(public_app: Synthesized, with_tracking: Synthesized) -> None:
    """With and without the flag the storage stack differs only by the tracking resources, and the
    workflow stack only by the state machine's definition and the policy that reads the script
    bundle (which now holds digits_mlp's tracking requirements): switching it replaces nothing."""
    synthesized = public_app
    off, on = synthesized.storage["Resources"], with_tracking.storage["Resources"]
    added = sorted(set(on) - set(off))
    assert set(off) <= set(on)
    assert [re.sub("[0-9A-F]{8}$", "", i) for i in added] == sorted(TRACKING_RESOURCES)
    for logical_id, resource in off.items():
        assert on[logical_id] == resource, logical_id
    off_wf, on_wf = synthesized.workflow["Resources"], with_tracking.workflow["Resources"]
    assert set(off_wf) == set(on_wf)
    changed = [i for i in off_wf if off_wf[i] != on_wf[i]]
    assert sorted(off_wf[i]["Type"] for i in changed) == [
        "AWS::IAM::ManagedPolicy", "AWS::StepFunctions::StateMachine"]
    # The tracking requirements join the bundle only where jobs get a tracking URI.
    assert with_tracking.workflow["Outputs"]["ProgramSourceDigitsMlp"] != \
        public_app.workflow["Outputs"]["ProgramSourceDigitsMlp"]


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

    # Every role a job runs as (each program's, and the earlier shared one) is a client.
    client_policy = client_policy_of_every_job_role(template, "ExperimentTracking")
    server_arn = json.dumps({"Fn::GetAtt": [server_id, "TrackingServerArn"]}, sort_keys=True)
    assert actions_by_resource(statements_of(template, client_policy)) == {
        *((action, server_arn) for action in MLFLOW_CLIENT_ACTIONS),
        ("s3:PutObject", resource_arn(artifacts, "/mlflow/*"))}
    assert not any(a.endswith("*") for a in MLFLOW_CLIENT_ACTIONS)


def test_jobs_get_the_tracking_uri(with_tracking: Synthesized) -> None:
    states = with_tracking.definition()["States"]
    environment = states["TrainModel"]["Parameters"]["Environment"]
    # The URI is the storage stack's server ARN, read with Fn::GetStackOutput (no export).
    definition_string = json.dumps(next(iter(resources_of_type(
        with_tracking.workflow, "AWS::StepFunctions::StateMachine").values()))["Properties"]["DefinitionString"])
    assert '"MLFLOW_TRACKING_URI\\":\\""' in definition_string.replace(" ", "")
    assert '{"Fn::GetStackOutput": {"StackName": "smtrain-storage"' in definition_string
    assert environment["MLFLOW_TRACKING_URI"]
    assert environment["MLFLOW_EXPERIMENT_NAME"] == "smtrain"
    assert environment["SMTRAIN_EXECUTION.$"] == "$$.Execution.Name"
    assert environment["SMTRAIN_PROGRAM.$"] == "$.config.program"
    tuning = states["TuneModel"]["Parameters"]["TrainingJobDefinition"]["Environment"]
    assert tuning["SMTRAIN_PROGRAM.$"] == "$.config.program"
    assert tuning["SMTRAIN_TUNING_JOB.$"] == states["TuneModel"]["Parameters"]["HyperParameterTuningJobName.$"]


def test_compliance_with_tracking(with_tracking: Synthesized) -> None:
    findings = [m for m in with_tracking.messages if m[0].rsplit(".", 1)[-1].lower() in ("error", "warning")]
    assert findings == []


def test_snapshot_with_tracking(with_tracking: Synthesized, snapshot: Any) -> None:
    from syrupy.extensions.json import JSONSnapshotExtension

    from tests.test_snapshots import stabilised

    assert stabilised(with_tracking.storage) == snapshot.use_extension(JSONSnapshotExtension)


def test_nothing_without_the_flag(synthesized: Synthesized) -> None:
    """Flag off: no tracking resource, output or reference in either stack."""
    for template in synthesized.templates.values():
        assert not resources_of_type(template, "AWS::SageMaker::MlflowTrackingServer")
        assert not [i for i in template["Resources"] if i.startswith("ExperimentTracking")]
        assert not [o for o in template.get("Outputs", {}) if "Tracking" in o]
        assert not reads_besides_the_programs(template)
        assert "mlflow" not in json.dumps(template).lower()
    states = synthesized.definition()["States"]
    assert "Environment" not in states["TrainModel"]["Parameters"]
    assert "Environment" not in states["TuneModel"]["Parameters"]["TrainingJobDefinition"]
