"""``network: sealed``: every job with ``EnableNetworkIsolation`` and no VPC, so nothing that
costs by the month (no VPC endpoints). What SageMaker receives (the real synthesized state
machine on the offline interpreter, every request judged by AWS's contract), what the stacks
hold, and what the state machine role's own IAM allows (evaluated)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest

from infra.settings import Settings, SettingsError
from smtrain.core import contract
from tests.conftest import code_without_script_requirements, synthesize
from tests.helpers import Synthesized, resources_of_type
from tests.iam_policy_eval import Account, Request
from tests.scripted_sagemaker import ScriptedBackend, scripted_engine
from tests.test_job_security import Runs


@pytest.fixture(scope="module")
def sealed(cdk_context: dict[str, Any], settings: Settings,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runs]:
    code = code_without_script_requirements(tmp_path_factory.mktemp("sealed-code") / "code")
    app = synthesize(cdk_context, dataclasses.replace(settings, network="sealed"),
                     tmp_path_factory.mktemp("cdk.out-sealed"), training_code_dir=code)
    backend = ScriptedBackend()
    with scripted_engine(outdir=app.outdir, work_dir=tmp_path_factory.mktemp("sealed-work"),
                         backend=backend) as engine:
        yield Runs(engine, backend, code, app)


def app(runs: Runs) -> Synthesized:
    assert runs.app is not None
    return runs.app


def test_every_job_is_isolated_outside_any_vpc(sealed: Runs) -> None:
    """Training (script, BYOC, built-in) and tuning trials: EnableNetworkIsolation, no VpcConfig;
    a script's code arrives as the code channel (an isolated container downloads nothing)."""
    for execution_input in ({"program": "digits_mlp"}, {"program": "digits_lightgbm"},
                            {"program": "digits_xgboost"},
                            {"program": "digits_mlp", "tuning": {"maxJobs": 2, "maxParallelJobs": 1}}):
        result, requests = sealed.run(execution_input)
        assert result.succeeded, (execution_input, result.cause)
        ((action, request),) = requests
        body = request.get("TrainingJobDefinition", request) if action.endswith("tuning_job") else request
        assert body["EnableNetworkIsolation"] is True, execution_input
        assert "VpcConfig" not in body, execution_input
        channels = [c["ChannelName"] for c in body["InputDataConfig"]]
        assert (contract.CODE_CHANNEL in channels) == (execution_input["program"] == "digits_mlp"), channels
    # No MLflow variables: an isolated container reaches no tracking server.
    _, ((_, request),) = sealed.run({"program": "digits_mlp", "hyperparameters": {"epochs": "2"}})
    assert contract.ENV_TRACKING_URI not in request.get("Environment", {})


def test_nothing_that_costs_by_the_month(sealed: Runs) -> None:
    """No VPC, subnets, endpoints or NAT in either stack (the isolated and vpc modes' endpoints
    are billed by the hour); the buckets keep their TLS-only policies."""
    for template in (app(sealed).storage, app(sealed).workflow):
        for kind in ("AWS::EC2::VPC", "AWS::EC2::Subnet", "AWS::EC2::VPCEndpoint", "AWS::EC2::NatGateway",
                     "AWS::EC2::SecurityGroup"):
            assert not resources_of_type(template, kind), kind
    policies = resources_of_type(app(sealed).storage, "AWS::S3::BucketPolicy")
    assert len(policies) == 3  # data, artifacts, access logs
    tls_only = {"Bool": {"aws:SecureTransport": "false"}}
    for policy in policies.values():
        statements = policy["Properties"]["PolicyDocument"]["Statement"]
        assert any(s["Effect"] == "Deny" and s.get("Condition") == tls_only for s in statements)


def test_the_role_refuses_a_job_without_isolation(sealed: Runs) -> None:
    """The state machine role's own IAM allows a create only with sagemaker:NetworkIsolation true
    (and asks no VPC): the request the state machine sends is allowed, the same without
    isolation is not."""
    account = Account(storage=app(sealed).storage, workflow=app(sealed).workflow)
    (machine,) = [arn for arn, lid in account.roles().items() if lid.startswith("TrainingStateMachineRole")]
    creates = [s for s in account.identity_statements(machine) if s["Action"] == "sagemaker:CreateTrainingJob"]
    assert creates, "no create statement"
    for create in creates:
        conditions = create["Condition"]
        assert conditions["Bool"] == {"sagemaker:NetworkIsolation": "true"}
        assert "sagemaker:VpcSubnets" not in conditions.get("ForAllValues:StringEquals", {})
        assert "sagemaker:VpcSubnets" not in conditions.get("Null", {})
    key = creates[0]["Condition"]["ArnEquals"]["sagemaker:OutputKmsKeyArn"]
    job = "arn:aws:sagemaker:us-east-1:123456789012:training-job/smtrain-1-0"
    context = {"sagemaker:OutputKmsKeyArn": key, "sagemaker:VolumeKmsKeyArn": key,
               "sagemaker:InstanceTypes": ["ml.m5.xlarge"], "sagemaker:NetworkIsolation": "true"}
    assert account.decide(Request(machine, "sagemaker:CreateTrainingJob", job, context)) == "Allow"
    assert account.decide(Request(machine, "sagemaker:CreateTrainingJob", job,
                                  {**context, "sagemaker:NetworkIsolation": "false"})) != "Allow"


def test_script_requirements_are_vendored_and_vpc_settings_refused(settings: Settings) -> None:
    """An isolated container reaches no package index: a script program's requirements travel in
    its bundle as wheels, as with vpc and isolated (tests/test_source_bundle.py and
    tests/test_local_isolation.py check the vendored bundle); a VPC id has no place here."""
    from infra.stacks.workflow_stack import _wheels_for

    sealed = dataclasses.replace(settings, network="sealed")
    assert settings.network == "sealed", "the shipped default (cdk.json)"
    assert sealed.network_isolation and not sealed.in_vpc
    assert _wheels_for(sealed) is not None
    assert _wheels_for(dataclasses.replace(settings, network="public")) is None
    with pytest.raises(SettingsError, match=r"^setting 'vpcId' is invalid.*null while 'network' is sealed"):
        dataclasses.replace(settings, network="sealed", vpc_id="vpc-0123456789abcdef0",
                            subnet_ids=("subnet-0123456789abcdef0", "subnet-0fedcba987654321f"))
