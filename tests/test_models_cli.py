"""``smtrain models`` driven as a process: against the offline registry (``--local``), and against
moto running as a real HTTP server on loopback, whose CloudFormation holds a stand-in for the
deployed workflow stack with its ``ModelPackageGroup<Id>`` outputs.

moto 5.2.5 implements every call the commands make (CreateModelPackageGroup, CreateModelPackage,
ListModelPackages with pagination, DescribeModelPackage, UpdateModelPackage). One quirk of its
UpdateModelPackage: it clears CustomerMetadataProperties unless they are sent again (AWS keeps
them), so nothing here reads a version's metadata after approving it on moto.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from smtrain.core import contract
from smtrain.local.model_registry import LocalModelRegistry
from tests.helpers import run_cli
from tests.test_model_registry_local import registration

ROOT = Path(__file__).resolve().parents[1]
SMTRAIN = str(Path(sys.executable).parent / "smtrain")
STACK = "smtrain-models-test"
#: The deployed stack's interface (spelt out: renaming an output breaks deployed stacks' CLIs).
GROUPS = {"ModelPackageGroupDigitsMlp": "smtrain-digits-mlp",
          "ModelPackageGroupDigitsXgboost": "smtrain-digits-xgboost"}
ARN_PREFIX = "arn:aws:sagemaker:us-east-1:123456789012:model-package/"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _env(endpoint: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SMTRAIN_"))}
    env.update({"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
                "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"})
    env.update(extra)
    return env


def smtrain(*args: str, env: dict[str, str] | None = None,
            process: bool = False) -> subprocess.CompletedProcess[str]:
    """The CLI in this process (:func:`tests.helpers.run_cli`), or with ``process`` as a process."""
    env = env if env is not None else _env("http://127.0.0.1:9")
    if process:
        return subprocess.run([SMTRAIN, *args], capture_output=True, text=True, timeout=120,
                              env=env, cwd=ROOT)
    return run_cli(args, env=env, cwd=ROOT)


def _refused(result: subprocess.CompletedProcess[str], code: int, message: str) -> None:
    assert result.returncode == code, result.stdout + result.stderr
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


# -- AWS (moto) ---------------------------------------------------------------------------------
class Cloud:
    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint

    def env(self, **extra: str) -> dict[str, str]:
        return _env(self.endpoint, **extra)

    def client(self, service: str) -> Any:
        return boto3.client(service, endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def deploy(self, outputs: dict[str, str], stack: str = STACK) -> None:
        template = {"Resources": {"Topic": {"Type": "AWS::SNS::Topic"}},
                    "Outputs": {key: {"Value": value} for key, value in outputs.items()}}
        self.client("cloudformation").create_stack(StackName=stack, TemplateBody=json.dumps(template))
        for group in outputs.values():
            if group.startswith("smtrain-digits"):
                self.client("sagemaker").create_model_package_group(ModelPackageGroupName=group)

    def register(self, group: str, *, job: str, program: str) -> str:
        request = registration(group, job=job)
        request["CustomerMetadataProperties"][contract.METADATA_PROGRAM] = program
        arn: str = self.client("sagemaker").create_model_package(**request)["ModelPackageArn"]
        return arn

    def status(self, arn: str) -> tuple[str, str | None]:
        described = self.client("sagemaker").describe_model_package(ModelPackageName=arn)
        return described["ModelApprovalStatus"], described.get("ApprovalDescription")


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = _free_port()
    moto_server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto_server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        moto_server.stop()


@pytest.fixture
def cloud(server: str) -> Cloud:
    """A fresh account: the stack stand-in deployed, its groups created, nothing registered."""
    import urllib.request

    urllib.request.urlopen(urllib.request.Request(f"{server}/moto-api/reset", method="POST")).close()
    cloud = Cloud(server)
    cloud.deploy({"StateMachineArn": "arn:aws:states:us-east-1:123456789012:stateMachine:sm", **GROUPS})
    return cloud


def test_list_newest_first_with_program_and_training_job(cloud: Cloud) -> None:
    mlp = [cloud.register("smtrain-digits-mlp", job=f"mlp-job-{i}", program="digits_mlp") for i in range(3)]
    xgb = cloud.register("smtrain-digits-xgboost", job="xgb-job-0", program="digits_xgboost")
    result = smtrain("models", "list", "--stack-name", STACK, "--json", env=cloud.env())
    assert result.returncode == 0, result.stderr
    listed = json.loads(result.stdout)
    assert [v["arn"] for v in listed] == [xgb, *reversed(mlp)]
    assert mlp == [f"{ARN_PREFIX}smtrain-digits-mlp/{n}" for n in (1, 2, 3)]
    assert [v["program"] for v in listed] == ["digits_xgboost"] + ["digits_mlp"] * 3
    assert [v["trainingJob"] for v in listed] == ["xgb-job-0", "mlp-job-2", "mlp-job-1", "mlp-job-0"]
    assert {v["status"] for v in listed} == {contract.PENDING_APPROVAL}
    assert listed[1]["group"] == "smtrain-digits-mlp" and listed[1]["version"] == 3

    text = smtrain("models", "list", "--stack-name", STACK, "--program", "digits_mlp", "--max", "2",
                   env=cloud.env())
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0].split() == ["VERSION", "PROGRAM", "STATUS", "CREATED", "(UTC)", "TRAINING", "JOB"]
    rows = [line.split() for line in lines[1:] if not line.startswith(" ")]
    assert [(row[0], row[1], row[2], row[-1]) for row in rows] == [
        (mlp[2], "digits_mlp", contract.PENDING_APPROVAL, "mlp-job-2"),
        (mlp[1], "digits_mlp", contract.PENDING_APPROVAL, "mlp-job-1")]
    assert "    description: digits_mlp: validation:accuracy 0.97" in lines


def test_list_by_status(cloud: Cloud) -> None:
    first = cloud.register("smtrain-digits-mlp", job="a", program="digits_mlp")
    cloud.register("smtrain-digits-mlp", job="b", program="digits_mlp")
    cloud.client("sagemaker").update_model_package(ModelPackageArn=first, ModelApprovalStatus="Approved",
                                                   ApprovalDescription="reviewed")
    result = smtrain("models", "list", "--stack-name", STACK, "--status", "Approved", "--json",
                     env=cloud.env())
    assert result.returncode == 0, result.stderr
    assert [(v["arn"], v["approvalDescription"]) for v in json.loads(result.stdout)] == [(first, "reviewed")]
    none = smtrain("models", "list", "--stack-name", STACK, "--status", "Rejected", env=cloud.env())
    assert (none.returncode, none.stdout.strip()) == (0, "no model versions with status Rejected")


def test_the_default_stack_is_the_projects(cloud: Cloud) -> None:
    cloud.deploy({"ModelPackageGroupDigitsMlp": "smtrain-digits-mlp"}, stack="smtrain-workflow")
    arn = cloud.register("smtrain-digits-mlp", job="a", program="digits_mlp")
    result = smtrain("models", "list", "--json", env=cloud.env())
    assert result.returncode == 0, result.stderr
    assert [v["arn"] for v in json.loads(result.stdout)] == [arn]


def test_an_unknown_program_names_the_known_ones(cloud: Cloud) -> None:
    result = smtrain("models", "list", "--stack-name", STACK, "--program", "nope", env=cloud.env())
    _refused(result, 2, f"--program nope: no model package group for it in stack {STACK}; "
                        "programs with one: digits_mlp, digits_xgboost")


def test_a_stack_without_the_registry(cloud: Cloud) -> None:
    cloud.deploy({"StateMachineArn": "arn:aws:states:us-east-1:123456789012:stateMachine:sm"},
                 stack="smtrain-old")
    _refused(smtrain("models", "list", "--stack-name", "smtrain-old", env=cloud.env()), 4,
             "stack smtrain-old has no ModelPackageGroup<Program> outputs")
    _refused(smtrain("models", "list", "--stack-name", "smtrain-missing", env=cloud.env()), 4,
             "stack smtrain-missing is not deployed")


@pytest.mark.parametrize(("action", "status"), [("approve", "Approved"), ("reject", "Rejected")])
def test_approve_and_reject(cloud: Cloud, action: str, status: str) -> None:
    arn = cloud.register("smtrain-digits-mlp", job="a", program="digits_mlp")
    other = cloud.register("smtrain-digits-mlp", job="b", program="digits_mlp")
    result = smtrain("models", action, arn, "--reason", "validation accuracy 0.97 on holdout",
                     env=cloud.env())
    assert result.returncode == 0, result.stderr
    first, *shown = result.stdout.splitlines()
    assert first == f"{arn}: {status} (was PendingManualApproval)"
    # What was approved or rejected: its job, and its metrics (here no report was written).
    assert shown[0] == "    program digits_mlp, training job a"
    assert shown[1].startswith("    metrics: not read from s3://smtrain-artifacts/model-quality/run-1.json: ")
    assert cloud.status(arn) == (status, "validation accuracy 0.97 on holdout")
    assert cloud.status(other) == (contract.PENDING_APPROVAL, None)


def test_approve_sends_exactly_one_update(cloud: Cloud, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """In process, with every SageMaker request recorded as botocore builds it (after which
    botocore validates it: a request that reaches AWS passed its parameter validation)."""
    from smtrain import cli
    from smtrain.cli import outcome

    arn = cloud.register("smtrain-digits-mlp", job="a", program="digits_mlp")
    for key, value in cloud.env().items():
        if key.startswith("AWS_"):
            monkeypatch.setenv(key, value)
    sent: list[tuple[str, dict[str, Any]]] = []
    real_session = outcome.aws_session

    def recording_session() -> Any:
        session = real_session()
        session.events.register("before-parameter-build.sagemaker",
                                lambda params, model, **_: sent.append((model.name, dict(params))))
        return session

    monkeypatch.setattr(outcome, "aws_session", recording_session)
    assert cli.main(["models", "reject", arn, "--reason", "drift on March data"]) == 0
    assert [name for name, _ in sent] == ["DescribeModelPackage", "UpdateModelPackage",
                                          "DescribeModelPackage"]
    assert sent[1][1] == {"ModelPackageArn": arn, "ModelApprovalStatus": "Rejected",
                          "ApprovalDescription": "drift on March data"}
    assert capsys.readouterr().out.splitlines()[0] == f"{arn}: Rejected (was PendingManualApproval)"

    sent.clear()
    assert cli.main(["models", "list", "--stack-name", STACK, "--program", "digits_mlp",
                     "--status", "Rejected"]) == 0
    assert sent[0] == ("ListModelPackages", {
        "ModelPackageGroupName": "smtrain-digits-mlp", "SortBy": "CreationTime",
        "SortOrder": "Descending", "ModelApprovalStatus": "Rejected", "MaxResults": 100})
    assert sent[1] == ("DescribeModelPackage", {"ModelPackageName": arn})


def test_listing_follows_pages(cloud: Cloud) -> None:
    from smtrain.cli.model_commands import AwsRegistry

    arns = [cloud.register("smtrain-digits-mlp", job=f"job-{i}", program="digits_mlp") for i in range(5)]
    calls: list[dict[str, Any]] = []
    client = cloud.client("sagemaker")
    client.meta.events.register("before-parameter-build.sagemaker.ListModelPackages",
                                lambda params, **_: calls.append(dict(params)))
    versions = AwsRegistry(client, page_size=2).versions("smtrain-digits-mlp", status=None, limit=5)
    assert [v["ModelPackageArn"] for v in versions] == list(reversed(arns))
    assert len(calls) == 3 and "NextToken" in calls[1]
    assert len(AwsRegistry(client, page_size=2).versions("smtrain-digits-mlp", status=None, limit=3)) == 3


@pytest.mark.parametrize(("args", "message"), [
    (["arn:aws:sagemaker:us-east-1:123456789012:model-package/smtrain-digits-mlp"],
     "is not a model version's ARN"),
    (["smtrain-digits-mlp/1"], "is not a model version's ARN"),
    (["arn:aws:sagemaker:us-east-1:1234:model-package/smtrain-digits-mlp/1"], "is not a model version's ARN"),
    (["arn:aws:sagemaker:us-east-1:123456789012:training-job/x"], "is not a model version's ARN"),
    ([f"{ARN_PREFIX}smtrain-digits-mlp/1", "--reason", "x" * 1025],
     "--reason is 1025 characters; SageMaker's ApprovalDescription takes at most 1024"),
    ([f"{ARN_PREFIX}smtrain-digits-mlp/1", "--reason", "first\nsecond"], "--reason must be one line"),
    ([f"{ARN_PREFIX}smtrain-digits-mlp/1", "--reason", "  "], "--reason must say why"),
])
def test_bad_arguments_are_refused_before_any_call(args: list[str], message: str) -> None:
    """The endpoint is a closed port: any call would end in exit 4, not 2."""
    arguments = args if "--reason" in args else [*args, "--reason", "ok"]
    _refused(smtrain("models", "approve", *arguments), 2, message)


def test_a_reason_of_1024_characters_is_sent(cloud: Cloud) -> None:
    arn = cloud.register("smtrain-digits-mlp", job="a", program="digits_mlp")
    result = smtrain("models", "approve", arn, "--reason", "r" * 1024, env=cloud.env())
    assert result.returncode == 0, result.stderr
    assert cloud.status(arn) == ("Approved", "r" * 1024)


def test_reason_is_required_without_a_terminal() -> None:
    """Nobody to ask (stdin is not a terminal, as in a script or CI): refused before AWS is called."""
    _refused(smtrain("models", "approve", f"{ARN_PREFIX}smtrain-digits-mlp/1"), 2,
             "--reason is required when stdin is not a terminal: pass --reason TEXT")


def test_aws_errors_are_one_line(cloud: Cloud) -> None:
    result = smtrain("models", "approve", f"{ARN_PREFIX}smtrain-digits-mlp/7", "--reason", "ok",
                     env=cloud.env())
    _refused(result, 4, "AWS answered: An error occurred (ValidationException)")
    other_region = "arn:aws:sagemaker:eu-west-1:123456789012:model-package/smtrain-digits-mlp/1"
    _refused(smtrain("models", "approve", other_region, "--reason", "ok", env=cloud.env()), 2,
             "set AWS_REGION=eu-west-1")
    no_credentials = {k: v for k, v in cloud.env().items() if not k.startswith("AWS_SECRET")}
    del no_credentials["AWS_ACCESS_KEY_ID"]
    _refused(smtrain("models", "list", "--stack-name", STACK, env=no_credentials), 4,
             "no AWS credentials found")


# -- offline (--local) --------------------------------------------------------------------------
@pytest.fixture
def work_dir(tmp_path: Path) -> Path:
    """A work directory whose registry holds what the engine registers: two programs' versions."""
    registry = LocalModelRegistry(tmp_path / contract.LOCAL_REGISTRY_DIR)
    for index in range(2):
        registry.create_model_package(registration("smtrain-digits-mlp", job=f"mlp-job-{index}",
                                                   ClientToken=f"run-{index}"))
    request = registration("smtrain-digits-xgboost", job="xgb-job-0")
    request["CustomerMetadataProperties"][contract.METADATA_PROGRAM] = "digits_xgboost"
    registry.create_model_package(request)
    return tmp_path


def test_local_list(work_dir: Path) -> None:
    result = smtrain("models", "list", "--local", "--work-dir", str(work_dir), "--json")
    assert result.returncode == 0, result.stderr
    listed = json.loads(result.stdout)
    assert [(v["arn"].removeprefix(ARN_PREFIX), v["program"], v["trainingJob"]) for v in listed] == [
        ("smtrain-digits-xgboost/1", "digits_xgboost", "xgb-job-0"),
        ("smtrain-digits-mlp/2", "digits_mlp", "mlp-job-1"),
        ("smtrain-digits-mlp/1", "digits_mlp", "mlp-job-0")]
    assert listed[0]["metadata"]["hp:epochs"] == "10"
    only = smtrain("models", "list", "--local", "--work-dir", str(work_dir), "--program", "digits_mlp",
                   "--max", "1")
    assert only.returncode == 0, only.stderr
    assert [line.split()[0] for line in only.stdout.splitlines()[1:] if not line.startswith(" ")] == [
        f"{ARN_PREFIX}smtrain-digits-mlp/2"]


def test_local_approve_then_reject(work_dir: Path) -> None:
    arn = f"{ARN_PREFIX}smtrain-digits-mlp/1"
    local = ["--local", "--work-dir", str(work_dir)]
    approved = smtrain("models", "approve", arn, "--reason", "looks good", *local)
    assert approved.returncode == 0, approved.stderr
    assert approved.stdout.splitlines()[0] == f"{arn}: Approved (was PendingManualApproval)"
    assert "    metrics: not read from s3://smtrain-artifacts/model-quality/run-1.json: no such object" \
        in approved.stdout.splitlines()
    rejected = smtrain("models", "reject", arn, "--reason", "regressed on new data", *local)
    assert rejected.stdout.splitlines()[0] == f"{arn}: Rejected (was Approved)"
    listed = json.loads(smtrain("models", "list", *local, "--status", "Rejected", "--json").stdout)
    assert [(v["arn"], v["approvalDescription"]) for v in listed] == [(arn, "regressed on new data")]
    stored = json.loads((work_dir / "registry" / "smtrain-digits-mlp" / "1.json").read_text())
    assert (stored["ModelApprovalStatus"], stored["ApprovalDescription"]) == ("Rejected", "regressed on new data")


def test_local_errors(work_dir: Path, tmp_path: Path) -> None:
    local = ["--local", "--work-dir", str(work_dir)]
    _refused(smtrain("models", "list", *local, "--program", "nope"), 2,
             "--program nope: no model package group for it in the offline registry of "
             f"{work_dir}; programs with one: digits_mlp, digits_xgboost")
    _refused(smtrain("models", "approve", f"{ARN_PREFIX}smtrain-digits-mlp/9", "--reason", "ok", *local), 4,
             f"the offline model registry answered: ValidationException: ModelPackage "
             f"{ARN_PREFIX}smtrain-digits-mlp/9 does not exist.")
    _refused(smtrain("models", "list", "--local", "--work-dir", str(tmp_path / "empty")), 2,
             "no model registry under")
    _refused(smtrain("models", "list", *local, "--max", "0"), 2, "--max 0 must be from 1 to 1000")


def test_help_of_every_models_command() -> None:
    for command in (["models"], ["models", "list"], ["models", "approve"], ["models", "reject"]):
        result = smtrain(*command, "--help")
        assert result.returncode == 0 and "usage: smtrain models" in result.stdout, command


def test_list_reads_each_versions_metrics_from_its_report_in_s3(cloud: Cloud) -> None:
    """The report the state machine wrote (s3://<artifacts>/model-quality/<job>.json), read with
    GetObject; a version whose report cannot be read is listed all the same, saying why."""
    report = {"version": 0, "smtrain": {"qualityGate": {"minimum": {"validation:accuracy": 0.9},
                                                        "maximum": {}, "passed": True}},
              "training_job_final_metrics": {"validation:accuracy": {"value": 0.9694},
                                             "train:loss": {"value": 0.0312}}}
    s3 = cloud.client("s3")
    s3.create_bucket(Bucket="smtrain-artifacts")
    s3.put_object(Bucket="smtrain-artifacts", Key="model-quality/run-1.json", Body=json.dumps(report))
    readable = cloud.register("smtrain-digits-mlp", job="mlp-job-0", program="digits_mlp")
    request = registration("smtrain-digits-mlp", job="mlp-job-1")
    missing_uri = "s3://smtrain-artifacts/model-quality/mlp-job-1.json"
    request["ModelMetrics"]["ModelQuality"]["Statistics"]["S3Uri"] = missing_uri
    missing = cloud.client("sagemaker").create_model_package(**request)["ModelPackageArn"]

    result = smtrain("models", "list", "--stack-name", STACK, "--program", "digits_mlp", env=cloud.env())
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()

    def details(arn: str) -> list[str]:
        row = next(i for i, line in enumerate(lines) if line.startswith(arn + " "))
        return [line for line in lines[row + 1:row + 5] if line.startswith("    ")]

    assert "    metrics: validation:accuracy 0.9694, train:loss 0.0312" in details(readable)
    assert "    quality gate: passed (validation:accuracy 0.9694 >= 0.9)" in details(readable)
    assert [line for line in details(missing) if line.startswith("    metrics:")] == [
        f"    metrics: not read from {missing_uri}: NoSuchKey: An error occurred (NoSuchKey) when "
        "calling the GetObject operation: The specified key does not exist."]
    listed = json.loads(smtrain("models", "list", "--stack-name", STACK, "--json", env=cloud.env()).stdout)
    by_arn = {v["arn"]: v for v in listed}
    assert by_arn[readable]["metrics"] == {"validation:accuracy": 0.9694, "train:loss": 0.0312}
    assert by_arn[readable]["qualityReport"] == "s3://smtrain-artifacts/model-quality/run-1.json"
    assert by_arn[missing]["metrics"] is None and "NoSuchKey" in by_arn[missing]["qualityReportError"]


def test_local_commands_at_their_default_point_to_the_demos_work_dir(work_dir: Path, tmp_path: Path) -> None:
    """`make demo` keeps its registry and runs in .work/demo; `--local` reads .work/local by
    default: run from where the demo left its, the error names the option that finds them."""
    checkout = tmp_path / "checkout"
    (checkout / ".work" / "demo").mkdir(parents=True)
    (work_dir / contract.LOCAL_REGISTRY_DIR).rename(checkout / ".work" / "demo" / contract.LOCAL_REGISTRY_DIR)
    listed = run_cli(["models", "list", "--local"], env=dict(os.environ), cwd=checkout)
    _refused(listed, 2, "no model registry under .work/local (a run of `smtrain start --local` that "
                        "registers a model creates it); `make demo` keeps its under .work/demo: "
                        "pass --work-dir .work/demo")
    found = run_cli(["models", "list", "--local", "--work-dir", ".work/demo"], env=dict(os.environ), cwd=checkout)
    assert found.returncode == 0, found.stderr
    assert f"{ARN_PREFIX}smtrain-digits-mlp/2" in found.stdout
    # Where no demo ran, the error is the plain one.
    alone = run_cli(["models", "list", "--local"], env=dict(os.environ), cwd=tmp_path)
    _refused(alone, 2, "no model registry under .work/local")
    assert "make demo" not in alone.stderr


def test_local_approve_refuses_a_version_that_would_not_serve(tmp_path: Path) -> None:
    """Its model.tar.gz lacks the handler SAGEMAKER_PROGRAM names (issue 19, item 6)."""
    from smtrain.local.s3_stand_in import LocalS3
    from tests.test_model_registry_local import _model_archive, _serving

    s3 = LocalS3(tmp_path / "s3")  # where OfflineEngine(work_dir=tmp_path) keeps its S3 stand-in
    registry = LocalModelRegistry(tmp_path / contract.LOCAL_REGISTRY_DIR, s3=s3)
    uri = "s3://smtrain-artifacts/models/{}/output/model.tar.gz"
    _model_archive(s3.path(uri.format("bad")), {"model.pth": "weights"})
    _model_archive(s3.path(uri.format("good")), {"model.pth": "weights", "code/inference.py": ""})
    bad = registry.create_model_package(_serving("bad"))["ModelPackageArn"]
    good = registry.create_model_package(_serving("good"))["ModelPackageArn"]
    local = ["--local", "--work-dir", str(tmp_path)]

    _refused(smtrain("models", "approve", bad, "--reason", "looks good", *local), 2,
             f"smtrain: error: {bad} not approved: the model archive {uri.format('bad')} has no "
             "code/inference.py: its inference image imports the handler "
             "SAGEMAKER_PROGRAM=inference.py from the archive's code/ folder")
    assert registry.describe_model_package(bad)["ModelApprovalStatus"] == contract.PENDING_APPROVAL
    rejected = smtrain("models", "reject", bad, "--reason", "no handler", *local)
    assert rejected.returncode == 0, rejected.stderr
    approved = smtrain("models", "approve", good, "--reason", "looks good", *local)
    assert approved.returncode == 0, approved.stderr
    assert registry.describe_model_package(good)["ModelApprovalStatus"] == contract.APPROVED
