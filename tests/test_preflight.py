"""`smtrain preflight` offline: moto answers STS and CloudFormation; tests/aws_stub.py answers what
moto 5.2.5 does not (Step Functions' ValidateStateMachineDefinition, IAM's SimulateCustomPolicy and
SimulatePrincipalPolicy), checking every request against botocore's model.

What these tests prove: the CLI renders the synthesized app with the caller's account and region,
sends requests AWS accepts the shape of, reads answers shaped like AWS's, derives the calls a run
makes, and prints and exits as documented. What they cannot prove: the verdicts of AWS's own
validator and simulator (the stub's are its own; see tests/aws_stub.py).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from infra.settings import Settings
from smtrain.cli import EXIT_ENVIRONMENT, EXIT_FAILED, EXIT_OK, EXIT_USAGE, main
from tests.aws_stub import AwsStub, serve
from tests.conftest import ROOT, code_without_script_requirements, synthesize
from tests.helpers import Synthesized, as_list, policies_attached_to

ACCOUNT = "123456789012"  # moto's STS answer
REGION = "us-east-1"
Templates = dict[str, dict[str, Any]]


class Aws:
    def __init__(self, moto_endpoint: str, stub: AwsStub) -> None:
        self.moto_endpoint, self.stub = moto_endpoint, stub

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SMTRAIN_"))}
        env.update({"AWS_ENDPOINT_URL": self.moto_endpoint, "AWS_ENDPOINT_URL_SFN": self.stub.endpoint,
                    "AWS_ENDPOINT_URL_IAM": self.stub.endpoint, "AWS_ACCESS_KEY_ID": "testing",
                    "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": REGION, "AWS_CONFIG_FILE": "/dev/null",
                    "AWS_SHARED_CREDENTIALS_FILE": "/dev/null", "AWS_MAX_ATTEMPTS": "1"})
        return env

    def client(self, service: str, **kwargs: Any) -> Any:
        endpoint = self.stub.endpoint if service in ("stepfunctions", "iam") else self.moto_endpoint
        return boto3.client(service, endpoint_url=endpoint, region_name=REGION, aws_access_key_id="testing",
                            aws_secret_access_key="testing", **kwargs)


@pytest.fixture(scope="module")
def aws() -> Iterator[Aws]:
    from moto.server import ThreadedMotoServer

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        with serve() as stub:
            yield Aws(f"http://127.0.0.1:{port}", stub)
    finally:
        server.stop()


@pytest.fixture()
def stub(aws: Aws) -> Iterator[AwsStub]:
    aws.stub.requests.clear()
    yield aws.stub
    aws.stub.extra_diagnostics.clear()
    aws.stub.principal_policies.clear()
    aws.stub.scp_denied_actions.clear()
    aws.stub.boundary_denied_actions.clear()
    aws.stub.denied_operations.clear()
    aws.stub.unsupported_fields.clear()


Run = Callable[..., tuple[int, str, str]]


@pytest.fixture()
def preflight(aws: Aws, stub: AwsStub, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Run:
    """Run ``smtrain preflight`` in this process (the CLI's own entry point) with ``env``."""

    def run(outdir: Path, env: dict[str, str] | None = None) -> tuple[int, str, str]:
        for key in list(os.environ):
            if key.startswith("AWS_"):
                monkeypatch.delenv(key)
        for key, value in (env if env is not None else aws.env()).items():
            if key.startswith("AWS_"):
                monkeypatch.setenv(key, value)
        capsys.readouterr()
        code = main(["preflight", "--cdk-out", str(outdir)])
        out, err = capsys.readouterr()
        return code, out, err

    return run


# -- the synthesized app and edited copies of it -------------------------------------------------
def app_copy(synthesized: Synthesized, tmp_path: Path, edit: Callable[[Templates], None] | None = None) -> Path:
    outdir = tmp_path / "cdk.out"
    outdir.mkdir()
    shutil.copy(synthesized.outdir / "manifest.json", outdir)
    templates = {path.name: json.loads(path.read_text()) for path in synthesized.outdir.glob("*.template.json")}
    if edit is not None:
        edit(templates)
    for name, template in templates.items():
        (outdir / name).write_text(json.dumps(template))
    return outdir


def role_policies(templates: Templates, role_prefix: str) -> list[dict[str, Any]]:
    """The policy documents the app attaches to the role whose logical id starts with ``role_prefix``."""
    documents = []
    for template in templates.values():
        for role_id, resource in template["Resources"].items():
            if resource["Type"] == "AWS::IAM::Role" and role_id.startswith(role_prefix):
                documents += [template["Resources"][policy]["Properties"]["PolicyDocument"]
                              for policy in policies_attached_to(template, role_id)]
    assert documents, role_prefix
    return documents


#: digits_mlp's execution role (each program's jobs run as a role of their own).
EXECUTION_ROLE, MACHINE_ROLE = "ExecutionRoleDigitsMlpRole", "TrainingStateMachineRole"


def remove_action(templates: Templates, role_prefix: str, action: str) -> None:
    for document in role_policies(templates, role_prefix):
        for statement in document["Statement"]:
            statement["Action"] = [a for a in as_list(statement["Action"]) if a != action] or ["none:None"]


def edit_definition(templates: Templates, old: str, new: str) -> None:
    workflow = next(t for t in templates.values()
                    if any(r["Type"] == "AWS::StepFunctions::StateMachine" for r in t["Resources"].values()))
    machine = next(r for r in workflow["Resources"].values() if r["Type"] == "AWS::StepFunctions::StateMachine")
    parts = machine["Properties"]["DefinitionString"]["Fn::Join"][1]
    hits = [i for i, part in enumerate(parts) if isinstance(part, str) and old in part]
    assert len(hits) == 1, old
    parts[hits[0]] = parts[hits[0]].replace(old, new, 1)


# -- what moto answers, and the stub's own guard ------------------------------------------------
def test_moto_does_not_answer_validate_or_simulate() -> None:
    """If this fails, moto learned an operation: test against moto instead of the stub."""
    from moto import mock_aws

    with mock_aws():
        sfn = boto3.client("stepfunctions", region_name=REGION)
        iam = boto3.client("iam", region_name=REGION)
        with pytest.raises(NotImplementedError):
            sfn.validate_state_machine_definition(definition='{"StartAt":"A","States":{"A":{"Type":"Succeed"}}}')
        with pytest.raises(NotImplementedError):
            iam.simulate_custom_policy(PolicyInputList=["{}"], ActionNames=["s3:GetObject"])
        with pytest.raises(NotImplementedError):
            iam.simulate_principal_policy(PolicySourceArn=f"arn:aws:iam::{ACCOUNT}:role/r",
                                          ActionNames=["s3:GetObject"])
        assert boto3.client("sts", region_name=REGION).get_caller_identity()["Account"] == ACCOUNT


def test_the_stub_refuses_requests_aws_would_refuse(aws: Aws, stub: AwsStub) -> None:
    unchecked = Config(parameter_validation=False, retries={"max_attempts": 1})
    sfn = aws.client("stepfunctions", config=unchecked)
    with pytest.raises(ClientError) as refused:
        sfn.validate_state_machine_definition(definition="{}", type="BATCH")
    assert refused.value.response["Error"]["Code"] == "ValidationException"
    iam = aws.client("iam", config=unchecked)
    with pytest.raises(ClientError) as refused:
        iam.simulate_custom_policy(PolicyInputList=["{}"], ActionNames=["s3:GetObject"],
                                   ContextEntries=[{"ContextKeyName": "k", "ContextKeyValues": ["v"],
                                                    "ContextKeyType": "text"}])
    assert refused.value.response["Error"]["Code"] == "ValidationException"
    with pytest.raises(ClientError) as refused:
        iam.simulate_principal_policy(ActionNames=["s3:GetObject"])  # no PolicySourceArn
    assert refused.value.response["Error"]["Code"] == "ValidationException"
    assert stub.requests == [], "refused requests are not answered"
    answer = aws.client("iam").simulate_custom_policy(
        PolicyInputList=[json.dumps({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/p/*"}]})],
        ActionNames=["s3:GetObject", "s3:PutObject"], ResourceArns=["arn:aws:s3:::b/p/x"])
    assert [(r["EvalActionName"], r["EvalDecision"]) for r in answer["EvaluationResults"]] == [
        ("s3:GetObject", "allowed"), ("s3:PutObject", "implicitDeny")]


# -- the command ---------------------------------------------------------------------------------
def test_the_synthesized_app_passes(synthesized: Synthesized, stub: AwsStub, preflight: Run) -> None:
    stub.extra_diagnostics.append({"severity": "WARNING", "code": "NO_DOLLAR", "location": "/States/ReadInput",
                                   "message": "a field looks like a path but has no .$"})
    code, out, err = preflight(synthesized.outdir)
    assert code == EXIT_OK, out + err
    assert f"account {ACCOUNT}, region {REGION}" in out
    assert "result OK: 0 errors, 1 warnings" in out
    assert "WARNING NO_DOLLAR at /States/ReadInput: a field looks like a path but has no .$" in out
    assert "(SimulateCustomPolicy with the synthesized policies): " in out
    assert "denied" not in out.replace("0 denied", "")
    assert out.count("all allowed") == 4, "the state machine role and each program's execution role"
    assert "Not covered (check these yourself):" in out and "service quotas" in out
    assert "SCPs, permission boundaries" in out
    assert "Nothing that preflight checks would fail." in out

    validated = stub.calls("ValidateStateMachineDefinition")[0]
    assert validated["type"] == "STANDARD"
    definition = validated["definition"]
    assert f"arn:aws:iam::{ACCOUNT}:role/" in definition and "Fn::" not in definition and "${" not in definition
    simulated = stub.calls("SimulateCustomPolicy")
    asked = {(action, tuple(call.get("ResourceArns", ["*"])), json.dumps(call.get("ContextEntries", [])))
             for call in simulated for action in call["ActionNames"]}
    actions = {action for action, _, _ in asked}
    assert {"sagemaker:CreateTrainingJob", "sagemaker:StopTrainingJob", "sagemaker:CreateHyperParameterTuningJob",
            "events:PutRule", "iam:PassRole", "s3:GetObject", "s3:ListBucket", "s3:PutObject", "kms:Encrypt",
            "kms:GenerateDataKey", "kms:Decrypt", "ecr:BatchGetImage", "logs:CreateLogStream",
            "cloudwatch:PutMetricData", "xray:PutTraceSegments", "logs:CreateLogDelivery"} <= actions
    # The registry's calls: a version in each program's group, pending approval only, and the
    # quality report through S3 with the bucket's key.
    versions = sorted(a[1][0] for a in asked if a[0] == "sagemaker:CreateModelPackage")
    assert [re.sub(r"-[0-9a-f]{8}/1$", "", v.split(":model-package/")[1]) for v in versions] == [
        "smtrain-digits-lightgbm", "smtrain-digits-mlp", "smtrain-digits-xgboost"]
    assert {a[2] for a in asked if a[0] == "sagemaker:CreateModelPackage"} == {json.dumps([{
        "ContextKeyName": "sagemaker:ModelApprovalStatus", "ContextKeyValues": ["PendingManualApproval"],
        "ContextKeyType": "string"}])}
    assert any(a[0] == "s3:PutObject" and "/model-quality/" in a[1][0] for a in asked)
    # Each program's own role, passed to SageMaker only; each simulated with its program's calls.
    pass_roles = [a for a in asked if a[0] == "iam:PassRole"]
    assert len({a[1][0] for a in pass_roles}) == 3
    for pass_role in pass_roles:
        assert json.loads(pass_role[2]) == [{"ContextKeyName": "iam:PassedToService",
                                             "ContextKeyValues": ["sagemaker.amazonaws.com"],
                                             "ContextKeyType": "string"}]
    # The three programs' roles (placeholder names: <stack>-<logical id>-<digest>, lower case),
    # never the earlier shared role.
    assert sorted(a[1][0].split(":role/")[1].split("-")[2][:len("executionroledigits")]
                  for a in pass_roles) == ["executionroledigits"] * 3, pass_roles
    jobs = [a for a in asked if a[0] == "sagemaker:CreateTrainingJob"]
    assert jobs and all(a[1][0].startswith(f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:training-job/smtrain-")
                        for a in jobs)


def test_the_team_queue_s_calls_are_derived_and_allowed(team_queue_app: Synthesized, stub: AwsStub,
                                                        preflight: Run) -> None:
    code, out, err = preflight(team_queue_app.outdir)
    assert code == EXIT_OK, out + err
    assert out.count("all allowed") == 5, "the state machine, each program's and the queue cleanup roles"
    assert "(not derived)" not in out, out  # every Task state's calls were derived
    asked = {(action, tuple(call.get("ResourceArns", ["*"])), json.dumps(call.get("ContextEntries", [])))
             for call in stub.calls("SimulateCustomPolicy") for action in call["ActionNames"]}
    submitted = {a[1][0] for a in asked if a[0] == "batch:SubmitServiceJob"}
    assert submitted == {f"arn:aws:batch:{REGION}:{ACCOUNT}:job-queue/smtrain-fair-high",
                         f"arn:aws:batch:{REGION}:{ACCOUNT}:job-queue/smtrain-fair-normal",
                         f"arn:aws:batch:{REGION}:{ACCOUNT}:service-job/0a1b2c3d"}
    (terminate,) = [a for a in asked if a[0] == "batch:TerminateServiceJob"]
    assert json.loads(terminate[2])[0]["ContextKeyName"] == "aws:ResourceTag/project"
    assert not [a for a in asked if a[0] == "sagemaker:CreateTrainingJob"]  # Batch creates it
    described = [a[1][0] for a in asked if a[0] == "sagemaker:DescribeTrainingJob"]
    assert any(":training-job/awsbatchsmtrain" in arn for arn in described)
    # The job Batch starts runs as the execution role: its reads and writes are simulated too.
    assert {"s3:GetObject", "s3:PutObject", "iam:PassRole"} <= {a[0] for a in asked}


def test_a_definition_error_fails(synthesized: Synthesized, tmp_path: Path, preflight: Run) -> None:
    def unsupported_field(templates: Templates) -> None:
        edit_definition(templates, 'createTrainingJob.sync","Parameters":{',
                        'createTrainingJob.sync","Parameters":{"TrainingJobNamePrefix":"x",')

    code, out, _ = preflight(app_copy(synthesized, tmp_path, unsupported_field))
    assert code == EXIT_FAILED, out
    assert "result FAIL: 1 errors, 0 warnings" in out
    assert ('ERROR   SCHEMA_VALIDATION_FAILED at /States/TrainModel/Parameters: The field "TrainingJobNamePrefix" '
            "is not supported by Step Functions") in out
    assert "Summary: definition FAIL;" in out and "Something would fail" in out


# -- RetryStrategy (setting sagemakerRetryAttempts): what ValidateStateMachineDefinition answers ----
RETRY_TASKS = ("TrainModel", "TuneBuiltinModel", "TuneModel")
ACCEPTED_WITH_IT = ("  RetryStrategy: ValidateStateMachineDefinition accepts the definition with it (result OK); "
                    "that API checks the definition's syntax, and AWS does not document whether it refuses a "
                    "field the SageMaker integration does not support, so `cdk deploy` may still refuse it")


def _job_fields(definition: dict[str, Any], task: str) -> dict[str, Any]:
    parameters: dict[str, Any] = definition["States"][task]["Parameters"]
    return parameters if task == "TrainModel" else parameters["TrainingJobDefinition"]


def test_the_validators_answer_on_retry_strategy_is_reported(synthesized: Synthesized, stub: AwsStub,
                                                              preflight: Run) -> None:
    """Off by default: preflight asks again with RetryStrategy on every job and says what came back."""
    code, out, err = preflight(synthesized.outdir)
    assert code == EXIT_OK, out + err
    deployed, probe = stub.calls("ValidateStateMachineDefinition")
    assert "RetryStrategy" not in deployed["definition"]
    assert probe["type"] == deployed["type"] == "STANDARD"
    probed = json.loads(probe["definition"])
    for task in RETRY_TASKS:
        assert _job_fields(probed, task)["RetryStrategy"] == {"MaximumRetryAttempts": 2}, task
    assert probe["definition"].replace(',"RetryStrategy":{"MaximumRetryAttempts":2}', "") \
        == json.dumps(json.loads(deployed["definition"]), separators=(",", ":"))
    assert ("  RetryStrategy: sent by no task (setting 'sagemakerRetryAttempts' is null); asking "
            "ValidateStateMachineDefinition again with it in TrainModel, TuneBuiltinModel, TuneModel") in out
    assert ACCEPTED_WITH_IT in out.splitlines()


def test_retry_strategy_refused_while_off_is_reported_and_passes(synthesized: Synthesized, stub: AwsStub,
                                                                  preflight: Run) -> None:
    """Step Functions' own list of fields may lack one botocore's model has (design.md): the stub
    stands in for a validator that refuses RetryStrategy. Off, nothing deploys it: exit 0."""
    stub.unsupported_fields.add("RetryStrategy")
    code, out, err = preflight(synthesized.outdir)
    assert code == EXIT_OK, out + err
    assert "  result FAIL: 3 errors, 0 warnings" in out
    assert ('  ERROR   SCHEMA_VALIDATION_FAILED at /States/TuneModel/Parameters/TrainingJobDefinition: '
            'The field "RetryStrategy" is not supported by Step Functions') in out
    assert ("  RetryStrategy: ValidateStateMachineDefinition refuses the definition with it (result FAIL) and "
            "accepts it without: keep setting 'sagemakerRetryAttempts' null") in out.splitlines()


def test_retry_strategy_refused_while_on_fails_naming_the_setting(synthesized: Synthesized, tmp_path: Path,
                                                                   stub: AwsStub, preflight: Run) -> None:
    def send_it(templates: Templates) -> None:
        edit_definition(templates, 'createTrainingJob.sync","Parameters":{',
                        'createTrainingJob.sync","Parameters":{"RetryStrategy":{"MaximumRetryAttempts":3},')

    stub.unsupported_fields.add("RetryStrategy")
    code, out, _ = preflight(app_copy(synthesized, tmp_path, send_it))
    assert code == EXIT_FAILED, out
    deployed, probe = stub.calls("ValidateStateMachineDefinition")
    assert "RetryStrategy" in deployed["definition"] and "RetryStrategy" not in probe["definition"]
    assert ("  RetryStrategy: sent by TrainModel (setting 'sagemakerRetryAttempts'); asking "
            "ValidateStateMachineDefinition again without it") in out
    assert ("  RetryStrategy: ValidateStateMachineDefinition refuses the definition with it (result FAIL) and "
            "accepts it without: set 'sagemakerRetryAttempts' to null in the training context of cdk.json"
            ) in out.splitlines()
    assert "Summary: definition FAIL;" in out


def test_a_denied_action_fails(synthesized: Synthesized, tmp_path: Path, preflight: Run) -> None:
    def break_roles(templates: Templates) -> None:
        remove_action(templates, MACHINE_ROLE, "sagemaker:StopTrainingJob")
        for document in role_policies(templates, MACHINE_ROLE):
            for statement in document["Statement"]:
                if "iam:PassRole" in as_list(statement["Action"]):
                    statement["Condition"]["StringEquals"]["iam:PassedToService"] = "ec2.amazonaws.com"

    code, out, _ = preflight(app_copy(synthesized, tmp_path, break_roles))
    assert code == EXIT_FAILED, out
    assert (f"DENIED sagemaker:StopTrainingJob on arn:aws:sagemaker:{REGION}:{ACCOUNT}:training-job/smtrain-"
            in out)
    assert "needed: TrainModel (createTrainingJob.sync): stops the job when the execution stops" in out
    assert f"DENIED iam:PassRole on arn:aws:iam::{ACCOUNT}:role/" in out
    assert "[iam:PassedToService=sagemaker.amazonaws.com] (implicitDeny)" in out
    # StopTrainingJob, and the PassRole of each of the three programs' roles.
    assert "result OK" in out and ", 4 denied" in out


def test_deployed_roles_are_simulated_as_principals(aws: Aws, synthesized: Synthesized, tmp_path: Path,
                                                    stub: AwsStub, preflight: Run) -> None:
    """Deployed stacks: their real role names, and SimulatePrincipalPolicy (SCPs, boundaries)."""
    cloudformation = aws.client("cloudformation")
    role = {"Type": "AWS::IAM::Role", "Properties": {"AssumeRolePolicyDocument": {
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                 "Principal": {"Service": "states.amazonaws.com"}}]}}}
    templates = {p.name: json.loads(p.read_text()) for p in synthesized.outdir.glob("*.template.json")}
    manifest = json.loads((synthesized.outdir / "manifest.json").read_text())
    deployed = {}
    for artifact in manifest["artifacts"].values():
        if artifact["type"] != "aws:cloudformation:stack":
            continue
        template = templates[artifact["properties"]["templateFile"]]
        role_ids = [lid for lid, r in template["Resources"].items() if r["Type"] == "AWS::IAM::Role"
                    and lid.startswith((EXECUTION_ROLE, MACHINE_ROLE))]
        name = artifact["properties"]["stackName"]
        cloudformation.create_stack(StackName=name, TemplateBody=json.dumps(
            {"Resources": {lid: role for lid in role_ids}}))
        for summary in cloudformation.list_stack_resources(StackName=name)["StackResourceSummaries"]:
            deployed[summary["LogicalResourceId"]] = f"arn:aws:iam::{ACCOUNT}:role/{summary['PhysicalResourceId']}"
    try:
        everything_but_stop = {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "NotAction": "sagemaker:StopTrainingJob", "Resource": "*"}]}
        everything = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
        for logical_id, arn in deployed.items():
            policy = everything_but_stop if logical_id.startswith(MACHINE_ROLE) else everything
            stub.principal_policies[arn] = [json.dumps(policy)]
        stub.scp_denied_actions.add("sagemaker:CreateHyperParameterTuningJob")
        code, out, _ = preflight(app_copy(synthesized, tmp_path))
    finally:
        for name in ("smtrain-storage", "smtrain-workflow"):
            cloudformation.delete_stack(StackName=name)
    assert code == EXIT_FAILED, out
    assert "smtrain-storage (deployed), smtrain-workflow (deployed)" in out
    principals = {call["PolicySourceArn"] for call in stub.calls("SimulatePrincipalPolicy")}
    assert principals == set(deployed.values())
    assert "denied now, allowed once deployed: sagemaker:StopTrainingJob on" in out
    assert "DENIED sagemaker:CreateHyperParameterTuningJob on" in out and "denied by an SCP" in out
    assert ", 1 denied" in out, "the SCP denial fails; the policy the deploy brings does not"
    # The deployed role's real name is what the definition passes and the simulator is asked about.
    validated = stub.calls("ValidateStateMachineDefinition")[0]
    execution_arn = next(arn for lid, arn in deployed.items() if lid.startswith(EXECUTION_ROLE))
    assert execution_arn in validated["definition"]


def test_a_check_that_cannot_run_exits_4(synthesized: Synthesized, tmp_path: Path, stub: AwsStub,
                                         preflight: Run) -> None:
    stub.denied_operations.add("ValidateStateMachineDefinition")
    code, out, _ = preflight(app_copy(synthesized, tmp_path))
    assert code == EXIT_ENVIRONMENT, out
    assert "not checked: An error occurred (AccessDeniedException)" in out
    assert "could not check: ValidateStateMachineDefinition" in out


def test_no_synthesized_app_is_bad_usage(aws: Aws, tmp_path: Path, preflight: Run) -> None:
    env = aws.env()
    del env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]
    code, out, err = preflight(tmp_path / "cdk.out", env)
    assert code == EXIT_USAGE
    assert err.strip() == f"smtrain: error: {tmp_path / 'cdk.out'} holds no synthesized app: run `make synth` " \
                          "first (or pass --cdk-out)"
    assert out == ""


def test_no_credentials_and_no_aws(aws: Aws, synthesized: Synthesized, preflight: Run) -> None:
    env = aws.env()
    del env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]
    code, _, err = preflight(synthesized.outdir, env)
    assert code == EXIT_ENVIRONMENT
    assert err.startswith("smtrain: error: no AWS credentials found")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    env = {**aws.env(), "AWS_ENDPOINT_URL": closed}
    started = time.monotonic()
    code, _, err = preflight(synthesized.outdir, env)
    assert code == EXIT_ENVIRONMENT
    assert err.startswith("smtrain: error: cannot reach AWS")
    assert time.monotonic() - started < 30


def test_entry_point_help_and_make_target(aws: Aws, synthesized: Synthesized, tmp_path: Path) -> None:
    smtrain = str(Path(sys.executable).parent / "smtrain")
    helped = subprocess.run([smtrain, "preflight", "--help"], capture_output=True, text=True, timeout=60)
    assert helped.returncode == 0 and "--cdk-out" in helped.stdout
    lazy = subprocess.run([sys.executable, "-c", "import sys, smtrain.cli, smtrain.cli.preflight; "
                           "sys.exit('boto3' in sys.modules or 'botocore' in sys.modules)"],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert lazy.returncode == 0, "boto3 must be imported only when AWS is called"
    result = subprocess.run([smtrain, "preflight", "--cdk-out", str(app_copy(synthesized, tmp_path))],
                            capture_output=True, text=True, timeout=120, env=aws.env(), cwd=ROOT)
    assert result.returncode == EXIT_OK, result.stdout + result.stderr
    dry_run = subprocess.run(["make", "-n", "preflight"], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert dry_run.returncode == 0, dry_run.stderr
    lines = dry_run.stdout.splitlines()
    synth = next(i for i, line in enumerate(lines) if " synth " in line)
    run = next(i for i, line in enumerate(lines) if "smtrain.cli preflight" in line)
    assert synth < run, "make preflight synthesizes first"


def test_an_isolated_vpc_app_passes_and_its_new_needs_are_asked(
        cdk_context: dict[str, Any], settings: Settings, tmp_path_factory: pytest.TempPathFactory,
        stub: AwsStub, preflight: Run) -> None:
    """network: isolated in an existing VPC: the volume key's grant, the job's network interfaces
    and the code channel's listing are derived from the definition and allowed by the policies."""
    code = code_without_script_requirements(tmp_path_factory.mktemp("preflight-isolated") / "code")
    isolated = dataclasses.replace(
        settings, network="isolated", vpc_id="vpc-0123456789abcdef0",
        subnet_ids=("subnet-0123456789abcdef0", "subnet-0fedcba987654321f"),
        security_group_ids=("sg-0123456789abcdef0",))
    app = synthesize(cdk_context, isolated, tmp_path_factory.mktemp("cdk.out-preflight-isolated"),
                     training_code_dir=code)
    code_, out, err = preflight(app.outdir)
    assert code_ == EXIT_OK, out + err
    asked = {(action, tuple(call.get("ResourceArns", ["*"])), json.dumps(call.get("ContextEntries", [])))
             for call in stub.calls("SimulateCustomPolicy") for action in call["ActionNames"]}
    (grant,) = [a for a in asked if a[0] == "kms:CreateGrant"]
    assert json.loads(grant[2]) == [{"ContextKeyName": "kms:GrantIsForAWSResource",
                                     "ContextKeyValues": ["true"], "ContextKeyType": "boolean"}]
    interfaces = {a[1][0] for a in asked if a[0] == "ec2:CreateNetworkInterface"}
    assert f"arn:aws:ec2:{REGION}:{ACCOUNT}:subnet/subnet-0fedcba987654321f" in interfaces
    assert f"arn:aws:ec2:{REGION}:{ACCOUNT}:security-group/sg-0123456789abcdef0" in interfaces
    listings = [json.loads(a[2]) for a in asked if a[0] == "s3:ListBucket"
                and "cdk-hnb659fds-assets" in a[1][0]]
    assert listings and all(entry[0]["ContextKeyValues"][0].endswith(".gz") for entry in listings)
    # Each create call is simulated with the condition keys the run sends, which the state machine
    # role's IAM requires (infra/constructs/training_job_task.py, JobSecurity.create_conditions).
    (create,) = [json.loads(a[2]) for a in asked if a[0] == "sagemaker:CreateTrainingJob"]
    entries = {entry["ContextKeyName"]: (entry["ContextKeyType"], entry["ContextKeyValues"]) for entry in create}
    assert entries["sagemaker:NetworkIsolation"] == ("boolean", ["true"])
    assert entries["sagemaker:VpcSubnets"] == ("stringList", ["subnet-0123456789abcdef0", "subnet-0fedcba987654321f"])
    assert entries["sagemaker:VpcSecurityGroupIds"] == ("stringList", ["sg-0123456789abcdef0"])
    assert entries["sagemaker:InstanceTypes"] == ("stringList", ["ml.m5.xlarge"])  # cdk.json's default
    assert entries["sagemaker:VolumeKmsKeyArn"][1] == entries["sagemaker:OutputKmsKeyArn"][1], "an EBS volume"
    assert "Nothing that preflight checks would fail." in out


def test_a_request_is_checked_with_each_program_s_role_and_locations() -> None:
    """A job request that reads its role and locations from the program's settings ($.method) is
    expanded per program; a path the program's state does not set is left alone (and noted)."""
    from smtrain.cli.preflight import SAMPLE, _with_method

    method = {"roleArn": "arn:aws:iam::1:role/mlp", "outputUri": "s3://a/models/digits_mlp/",
              "checkpointUri": "s3://a/checkpoints/digits_mlp/"}
    request = {"RoleArn.$": "$.method.roleArn",
               "OutputDataConfig": {"S3OutputPath.$": "$.method.outputUri", "KmsKeyId": "k"},
               "CheckpointConfig": {"S3Uri.$": "States.Format('{}{}/', $.method.checkpointUri, $.run.id)"},
               "HyperParameters.$": "$.trainingHyperparameters",
               "Other": {"S3Uri.$": "States.Format('{}{}/', $.method.missing, $.run.id)"}}
    assert _with_method(request, method) == {
        "RoleArn": "arn:aws:iam::1:role/mlp",
        "OutputDataConfig": {"S3OutputPath": "s3://a/models/digits_mlp/", "KmsKeyId": "k"},
        "CheckpointConfig": {"S3Uri": f"s3://a/checkpoints/digits_mlp/{SAMPLE}/"},
        "HyperParameters.$": "$.trainingHyperparameters",
        "Other": {"S3Uri.$": "States.Format('{}{}/', $.method.missing, $.run.id)"}}
