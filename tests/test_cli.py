"""`smtrain` driven as a process against moto running as a real HTTP server on loopback.

The server executes the synthesized definition (moto's ASL interpreter) with SageMaker answered
by the scripted backend, in this test process; the CLI reaches it through AWS_ENDPOINT_URL.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from smtrain.local.deployment import load_deployment
from smtrain.local.s3_stand_in import LocalS3
from smtrain.local.sfn_sagemaker import serve_sagemaker
from tests.conftest import ROOT
from tests.helpers import Synthesized
from tests.scripted_sagemaker import JobScript, ScriptedBackend

SMTRAIN = str(Path(sys.executable).parent / "smtrain")


class Cloud:
    """The moto server and what the CLI needs in it."""

    def __init__(self, endpoint: str, state_machine_arn: str, data_bucket: str,
                 backend: ScriptedBackend) -> None:
        self.endpoint, self.state_machine_arn, self.data_bucket = endpoint, state_machine_arn, data_bucket
        self.backend = backend

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SMTRAIN_"))}
        env.update({"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": "testing",
                    "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
                    "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
                    "SMTRAIN_STATE_MACHINE_ARN": self.state_machine_arn,
                    "SMTRAIN_DATA_BUCKET": self.data_bucket})
        env.update(extra)
        return env

    def smtrain(self, *args: str, env: dict[str, str] | None = None,
                timeout: int = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([SMTRAIN, *args], capture_output=True, text=True, timeout=timeout,
                              env=env if env is not None else self.env(), cwd=ROOT)

    def client(self, service: str) -> Any:
        return boto3.client(service, endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def executions(self) -> list[dict[str, Any]]:
        executions: list[dict[str, Any]] = self.client("stepfunctions").list_executions(
            stateMachineArn=self.state_machine_arn)["executions"]
        return executions


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def cloud(synthesized: Synthesized, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    from moto.core.config import default_user_config
    from moto.server import ThreadedMotoServer

    previous = dict(default_user_config.get("stepfunctions", {}))
    default_user_config["stepfunctions"] = {**previous, "execute_state_machine": True}
    backend = ScriptedBackend(JobScript(statuses=("InProgress", "Completed")))
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    with serve_sagemaker(backend):
        server.start()
        try:
            deployment = load_deployment(synthesized.outdir, s3=LocalS3(tmp_path_factory.mktemp("assets")))
            endpoint = f"http://127.0.0.1:{port}"
            cloud = Cloud(endpoint, "", deployment.data_bucket, backend)
            cloud.client("s3").create_bucket(Bucket=deployment.data_bucket)
            machine = cloud.client("stepfunctions").create_state_machine(
                name="smtrain-training", definition=json.dumps(deployment.definition),
                roleArn="arn:aws:iam::123456789012:role/state-machine")
            cloud.state_machine_arn = machine["stateMachineArn"]
            yield cloud
        finally:
            server.stop()
            default_user_config["stepfunctions"] = previous


def test_help_and_version_of_every_command(cloud: Cloud) -> None:
    for command in ([], ["start"], ["watch"], ["status"], ["list"], ["logs"], ["stop"], ["data", "upload"]):
        result = cloud.smtrain(*command, "--help")
        assert result.returncode == 0 and "usage: smtrain" in result.stdout, command


def test_start_wait_succeeds_and_reports(cloud: Cloud) -> None:
    result = cloud.smtrain("start", "--method", "script", "--hp", "epochs=3", "--hp", "learning-rate=1e-3",
                           "--name", "cli-wait", "--wait", "--interval", "0.3")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Started arn:aws:states:us-east-1:123456789012:execution:smtrain-training:cli-wait" in result.stdout
    console = "https://us-east-1.console.aws.amazon.com/states/home?region=us-east-1#/v2/executions/details/"
    assert console in result.stdout
    assert "state TrainModel" in result.stdout and "SUCCEEDED" in result.stdout
    assert "metrics: validation:accuracy=0.97" in result.stdout
    request = cloud.backend.created("create_training_job")[-1]
    assert f"{request['TrainingJobName']}/output/model.tar.gz" in result.stdout
    assert request["HyperParameters"]["epochs"] == "3"
    assert request["HyperParameters"]["learning-rate"] == "0.001", "typed on the command line, sent as a string"


def test_rerun_is_idempotent(cloud: Cloud) -> None:
    args = ("start", "--method", "builtin", "--hp", "num_round=7")
    first = cloud.smtrain(*args)
    assert first.returncode == 0, first.stderr
    second = cloud.smtrain(*args)
    assert second.returncode == 0, second.stderr
    assert "Already started (same name, same input)" in second.stdout
    names = [e["name"] for e in cloud.executions() if e["name"].startswith("builtin-")]
    assert len(names) == 1
    assert names[0] in first.stdout and names[0] in second.stdout


def test_name_taken_with_different_input(cloud: Cloud) -> None:
    assert cloud.smtrain("start", "--method", "byoc", "--name", "taken").returncode == 0
    before = len(cloud.executions())
    result = cloud.smtrain("start", "--method", "script", "--name", "taken")
    assert result.returncode == 2
    assert "execution name 'taken' is already taken by a run with a different input" in result.stderr
    assert len(cloud.executions()) == before


def test_local_directory_is_uploaded_first(cloud: Cloud, tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "part-1.csv").write_text("1,2,3\n")
    (tmp_path / "train" / "part-2.csv").write_text("0,1,1\n")
    result = cloud.smtrain("start", "--method", "byoc", "--input", f"train={tmp_path / 'train'}",
                           "--name", "with-upload")
    assert result.returncode == 0, result.stderr
    assert "uploaded 2/2" in result.stdout
    keys = sorted(o["Key"] for o in cloud.client("s3").list_objects_v2(
        Bucket=cloud.data_bucket, Prefix="datasets/uploads/with-upload/")["Contents"])
    assert keys == ["datasets/uploads/with-upload/train/part-1.csv",
                    "datasets/uploads/with-upload/train/part-2.csv"]
    execution = cloud.client("stepfunctions").describe_execution(
        executionArn=cloud.state_machine_arn.replace(":stateMachine:", ":execution:") + ":with-upload")
    assert json.loads(execution["input"])["inputs"] == {
        "train": f"s3://{cloud.data_bucket}/datasets/uploads/with-upload/train/"}


def test_watch_status_list_and_logs(cloud: Cloud) -> None:
    assert cloud.smtrain("start", "--method", "script", "--name", "inspect-me").returncode == 0
    watched = cloud.smtrain("watch", "inspect-me", "--interval", "0.3")
    assert watched.returncode == 0, watched.stdout + watched.stderr
    assert "SUCCEEDED" in watched.stdout and "model: " in watched.stdout
    status = cloud.smtrain("status", "inspect-me")
    assert status.returncode == 0 and "inspect-me: SUCCEEDED" in status.stdout
    job = next(line.split(": ", 1)[1] for line in status.stdout.splitlines() if line.startswith("job: "))
    listing = cloud.smtrain("list", "--status", "SUCCEEDED")
    assert listing.returncode == 0 and "inspect-me" in listing.stdout
    logs = cloud.client("logs")
    logs.create_log_group(logGroupName="/aws/sagemaker/TrainingJobs")
    logs.create_log_stream(logGroupName="/aws/sagemaker/TrainingJobs", logStreamName=f"{job}/algo-1-1")
    logs.put_log_events(logGroupName="/aws/sagemaker/TrainingJobs", logStreamName=f"{job}/algo-1-1",
                        logEvents=[{"timestamp": int(time.time() * 1000),
                                    "message": "epoch=1 validation:accuracy=0.9"}])
    printed = cloud.smtrain("logs", "inspect-me")
    assert printed.returncode == 0 and "epoch=1 validation:accuracy=0.9" in printed.stdout


def test_failed_run_exits_1_with_the_reason(cloud: Cloud) -> None:
    cloud.backend.script = JobScript(statuses=("InProgress", "Failed"),
                                     failure_reason="AlgorithmError: loss became NaN")
    try:
        result = cloud.smtrain("start", "--method", "script", "--name", "will-fail", "--wait",
                               "--interval", "0.3")
    finally:
        cloud.backend.script = JobScript(statuses=("InProgress", "Completed"))
    assert result.returncode == 1
    assert "FAILED: TrainingJobFailed" in result.stdout
    assert "reason: AlgorithmError: loss became NaN" in result.stdout


def test_stop_aborts_and_stops_the_job(cloud: Cloud) -> None:
    cloud.backend.script = JobScript(statuses=("InProgress",))
    try:
        assert cloud.smtrain("start", "--method", "script", "--name", "to-stop").returncode == 0
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any(
                r["Tags"][0]["Value"] == "to-stop" for r in cloud.backend.created("create_training_job")):
            time.sleep(0.2)
        stopped = cloud.smtrain("stop", "to-stop")
        assert stopped.returncode == 0 and "Stopped" in stopped.stdout
        watched = cloud.smtrain("watch", "to-stop", "--interval", "0.3")
        assert watched.returncode == 3, "aborted runs have their own exit code"
        assert "ABORTED" in watched.stdout
    finally:
        cloud.backend.script = JobScript(statuses=("InProgress", "Completed"))


def test_data_upload_of_the_sample_data(cloud: Cloud) -> None:
    result = cloud.smtrain("data", "upload")
    assert result.returncode == 0, result.stderr
    keys = {o["Key"] for o in cloud.client("s3").list_objects_v2(
        Bucket=cloud.data_bucket, Prefix="datasets/")["Contents"]}
    assert {f"datasets/{m}/{c}/digits.csv" for m in ("script", "byoc", "builtin")
            for c in ("train", "validation")} <= keys


def _tuning_file(tmp_path: Path, document: Any) -> str:
    path = tmp_path / "tuning.json"
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    return str(path)


BAD = "{bad}"
CASES: list[tuple[list[str], str]] = [
    (["--method", "sklearn"], "method 'sklearn' is not one of script, byoc, builtin"),
    (["--method", "script", "--hp", "epochs"], "hyperparameter 'epochs' must be written key=value"),
    (["--method", "script", "--hp", "=5"], "hyperparameter name '' is empty"),
    (["--method", "script", "--hp", "a b=1"], "hyperparameter name 'a b' is empty or has characters"),
    (["--method", "script", "--hp", "epochs=1", "--hp", "epochs=2"], "hyperparameter 'epochs' is given twice"),
    (["--method", "script", "--hp", "epochs="], "hyperparameter 'epochs' has an empty value"),
    (["--method", "script", "--hp", "x=[1,2]"], "hyperparameter 'x' must be a single value"),
    (["--method", "script", "--hp", "x=NaN"], "hyperparameter 'x' is not a finite number"),
    (["--method", "script", "--hp", "x=" + "v" * 2501], "value is 2501 characters; SageMaker accepts at most 2500"),
    (["--method", "script", "--hp", "k" * 257 + "=1"], "is longer than 256 characters"),
    (["--method", "script", *[a for i in range(101) for a in ("--hp", f"p{i}=1")]],
     "101 hyperparameters given; SageMaker accepts at most 100"),
    (["--method", "script", "--instance-type", "ml.p5.48xlarge"], "is not on the stack's allow-list"),
    (["--method", "script", "--instance-type", "m5.large"], "is not a SageMaker instance type"),
    (["--method", "script", "--instance-count", "0"], "instance count 0 must be from 1 to 4"),
    (["--method", "script", "--instance-count", "9"], "instance count 9 must be from 1 to 4"),
    (["--method", "script", "--max-runtime", "0"], "--max-runtime 0 must be a positive number"),
    (["--method", "script", "--input", "train"], "must be written channel=s3://bucket/prefix/"),
    (["--method", "script", "--input", "test=s3://b/p/"], "input channel 'test' is not one of train, validation"),
    (["--method", "script", "--input", "train=s3://Bad_Bucket/x"], "is not a valid S3 URI"),
    (["--method", "script", "--input", "train=s3://other-bucket/datasets/x/"],
     "bucket 'other-bucket' is outside the stack's data bucket"),
    (["--method", "script", "--input", "train=s3://{bucket}/elsewhere/"], "the training role reads only under"),
    (["--method", "script", "--input", "train=https://example.com/data"],
     "is neither an s3:// URI nor a local directory"),
    (["--method", "script", "--input", "train=/no/such/dir"], "local directory '/no/such/dir' does not exist"),
    (["--method", "script", "--input", "train=s3://{bucket}/datasets/a/", "--input", "train=s3://{bucket}/datasets/b/"],
     "input channel 'train' is given twice"),
    (["--method", "script", "--name", "has space"], "execution name 'has space' must be 1-80 characters"),
    (["--method", "script", "--name", "n" * 81], "must be 1-80 characters"),
    (["--method", "script", "--tune", "/no/such.json"], "tuning file /no/such.json does not exist"),
    (["--method", "script", "--tune", "{tuning:not json}"], "is not valid JSON"),
    (["--method", "script", "--tune", '{tuning:{"strategy": "Genetic"}}'], "strategy: 'Genetic' is not one of"),
    (["--method", "script", "--tune", '{tuning:{"maxJobs": 0}}'], "maxJobs: 0 is less than the minimum of 1"),
    (["--method", "script", "--tune", '{tuning:{"objective": {"metricName": "x"}}}'], "'type' is a required property"),
    (["--method", "script", "--tune", '{tuning:{"parameterRanges": {"ContinuousParameterRanges": '
      '[{"Name": "lr", "MinValue": "1", "MaxValue": "0.1"}]}}}'], "range 'lr' has MinValue above MaxValue"),
    (["--method", "script", "--tune", '{tuning:{"strategy": "Grid", "parameterRanges": {"ContinuousParameterRanges": '
      '[{"Name": "lr", "MinValue": "0.1", "MaxValue": "1"}]}}}'],
     "the Grid strategy takes only CategoricalParameterRanges"),
    (["--method", "script", "--tune", '{tuning:{"strategy": "Grid", "parameterRanges": {"IntegerParameterRanges": '
      '[{"Name": "epochs", "MinValue": "1", "MaxValue": "3"}]}}}'],
     "the Grid strategy takes only CategoricalParameterRanges"),
    (["--method", "script", "--tune", '{tuning:{"strategy": "Grid"}}'],
     "the Grid strategy takes only CategoricalParameterRanges"),
    (["--method", "script", "--tune", '{tuning:{"maxJobs": 2, "maxParallelJobs": 3}}'],
     "maxParallelJobs must not exceed maxJobs"),
    (["--method", "script", "--tune", '{tuning:{"strategy": "Hyperband", "hyperband": '
      '{"minResource": 1, "maxResource": 20001}}}'], "20001 is greater than the maximum of 20000"),
    (["--method", "script", "--tune", '{tuning:{"strategy": "Hyperband", "hyperband": '
      '{"minResource": 5, "maxResource": 4}}}'], "hyperband.minResource must not exceed"),
    (["--method", "script", "--hp", "batch-size=16", "--tune",
      '{tuning:{"parameterRanges": {"CategoricalParameterRanges": [{"Name": "batch-size", "Values": ["8"]}]}}}'],
     "batch-size is both tuned and given with --hp"),
    (["--method", "script", "--tune", '{tuning:{"sizes": 3}}'], "Additional properties are not allowed"),
    (["--method", "script", "--logs"], "--logs needs --wait"),
]


@pytest.mark.parametrize(("args", "message"), CASES, ids=[" ".join(a)[:60] for a, _ in CASES])
def test_bad_input_is_refused_before_anything_starts(cloud: Cloud, tmp_path: Path, args: list[str],
                                                     message: str) -> None:
    resolved = []
    for arg in args:
        if arg.startswith("{tuning:"):
            arg = _tuning_file(tmp_path, arg[len("{tuning:"):-1])
        resolved.append(arg.replace("{bucket}", cloud.data_bucket))
    before = len(cloud.executions())
    result = cloud.smtrain("start", *resolved)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message.replace("{bucket}", cloud.data_bucket) in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, "one clear line"
    assert len(cloud.executions()) == before


def test_missing_credentials(cloud: Cloud) -> None:
    env = cloud.env()
    del env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]
    before = len(cloud.executions())
    result = cloud.smtrain("start", "--method", "script", env=env)
    assert result.returncode == 4
    assert result.stderr.strip() == ("smtrain: error: no AWS credentials found: configure a profile "
                                     "(aws configure), set AWS_PROFILE, or set AWS_ACCESS_KEY_ID and "
                                     "AWS_SECRET_ACCESS_KEY")
    assert len(cloud.executions()) == before


def test_stack_not_deployed(cloud: Cloud) -> None:
    env = cloud.env()
    del env["SMTRAIN_STATE_MACHINE_ARN"]
    before = len(cloud.executions())
    result = cloud.smtrain("start", "--method", "script", "--stack-name", "not-deployed", env=env)
    assert result.returncode == 4
    assert "stack not-deployed is not deployed in this account and region" in result.stderr
    assert len(cloud.executions()) == before


def test_stack_outputs_are_used_when_nothing_is_explicit(cloud: Cloud) -> None:
    template = {"Resources": {"Topic": {"Type": "AWS::SNS::Topic"}},
                "Outputs": {"StateMachineArn": {"Value": cloud.state_machine_arn},
                            "DataBucketName": {"Value": cloud.data_bucket}}}
    cloud.client("cloudformation").create_stack(StackName="outputs-only", TemplateBody=json.dumps(template))
    env = cloud.env()
    del env["SMTRAIN_STATE_MACHINE_ARN"], env["SMTRAIN_DATA_BUCKET"]
    result = cloud.smtrain("start", "--method", "builtin", "--name", "from-outputs",
                           "--stack-name", "outputs-only", env=env)
    assert result.returncode == 0, result.stderr
    assert any(e["name"] == "from-outputs" for e in cloud.executions())


def test_local_start_end_to_end(synthesized: Synthesized, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    result = subprocess.run([SMTRAIN, "start", "--local", "--method", "script", "--hp", "epochs=2",
                             "--cdk-out", str(synthesized.outdir), "--work-dir", str(tmp_path / "work"),
                             "--name", "local-run"], capture_output=True, text=True, timeout=300,
                            env=env, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "SUCCEEDED" in result.stdout
    output = json.loads(result.stdout[result.stdout.index("{"):])
    assert output["trainingJobName"].startswith("smtrain-")
    model = tmp_path / "work" / "s3" / output["modelArtifacts"].removeprefix("s3://")
    assert model.is_file()
    accuracy = next(m["Value"] for m in output["metrics"] if m["MetricName"] == "validation:accuracy")
    assert accuracy >= 0.9


# -- limits, at and one past the boundary ------------------------------------------------------
# AWS's numbers, written out here on purpose (not read from the CLI's constants):
# SageMaker API reference, CreateTrainingJob / HyperParameterTrainingJobDefinition: HyperParameters
# holds at most 100 entries, each key at most 256 characters and each value at most 2500.
# Step Functions API reference, StartExecution: a name is 1-80 characters; this project allows only
# [0-9A-Za-z_-] because the name becomes a SageMaker tag value (pattern ^([\p{L}\p{Z}\p{N}_.:/=+\-@]*)$,
# so '(', ')', '!' and "'" would make CreateTrainingJob fail).
AWS_MAX_HYPERPARAMETERS = 100
AWS_MAX_HYPERPARAMETER_KEY = 256
AWS_MAX_HYPERPARAMETER_VALUE = 2500
AWS_MAX_EXECUTION_NAME = 80
#: The stack's own ceiling: cdk.json's training.maxInstanceCount (checked below, not imported).
STACK_MAX_INSTANCE_COUNT = 4


def _execution_input(cloud: Cloud, name: str) -> dict[str, Any]:
    execution = cloud.client("stepfunctions").describe_execution(
        executionArn=cloud.state_machine_arn.replace(":stateMachine:", ":execution:") + f":{name}")
    document: dict[str, Any] = json.loads(execution["input"])
    return document


def _added_hyperparameters(synthesized: Synthesized, method: str) -> set[str]:
    """The names the deployed state machine merges into a single training job's request for
    ``method``, read from the synthesized definition (its Prepare<Method>* Pass states)."""
    states = synthesized.definition()["States"]
    names: set[str] = set()
    for state_name, state in states.items():
        if state_name.startswith(f"Prepare{method.capitalize()}") and state["Type"] == "Pass":
            result = state["Result"]
            names |= set(result["baseHyperparameters"]) | set(result["trainingDefaults"])
            names |= set(result["fixedHyperparameters"]) | set(result["distributedHyperparameters"])
    assert names, f"no Prepare state for {method}"
    return names


def _hp_args(names: list[str]) -> list[str]:
    return [arg for name in names for arg in ("--hp", f"{name}=1")]


def _refused(result: subprocess.CompletedProcess[str], message: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, "one clear line"


def test_the_stack_ceiling_on_instances_is_cdk_json(cdk_context: dict[str, Any]) -> None:
    assert cdk_context["training"]["maxInstanceCount"] == STACK_MAX_INSTANCE_COUNT


@pytest.mark.parametrize("method", ["script", "byoc", "builtin"])
def test_hyperparameter_count_at_and_past_the_limit(cloud: Cloud, synthesized: Synthesized,
                                                    method: str) -> None:
    """The request SageMaker gets holds the user's hyperparameters merged with the method's: the
    limit applies to that merge, so the CLI counts it."""
    added = sorted(_added_hyperparameters(synthesized, method))
    # 100 given, the method's own names among them: the request holds exactly 100.
    overriding = added + [f"p{i}" for i in range(AWS_MAX_HYPERPARAMETERS - len(added))]
    name = f"hp-limit-{method}"
    at_limit = cloud.smtrain("start", "--method", method, "--name", name, *_hp_args(overriding))
    assert at_limit.returncode == 0, at_limit.stderr
    sent = _execution_input(cloud, name)["hyperparameters"]
    assert len(sent) == AWS_MAX_HYPERPARAMETERS
    assert len(set(sent) | set(added)) == AWS_MAX_HYPERPARAMETERS

    # New names only: 100 - len(added) fit, one more makes the request 101.
    fresh = [f"q{i}" for i in range(AWS_MAX_HYPERPARAMETERS - len(added))]
    name = f"hp-fresh-{method}"
    fits = cloud.smtrain("start", "--method", method, "--name", name, *_hp_args(fresh))
    assert fits.returncode == 0, fits.stderr
    assert len(set(_execution_input(cloud, name)["hyperparameters"]) | set(added)) == AWS_MAX_HYPERPARAMETERS
    before = len(cloud.executions())
    one_more = cloud.smtrain("start", "--method", method, *_hp_args([*fresh, "one_more"]))
    _refused(one_more, f"make {AWS_MAX_HYPERPARAMETERS + 1} hyperparameters; SageMaker accepts at most "
                       f"{AWS_MAX_HYPERPARAMETERS}")
    too_many = cloud.smtrain("start", "--method", method,
                             *_hp_args([f"r{i}" for i in range(AWS_MAX_HYPERPARAMETERS + 1)]))
    _refused(too_many, f"{AWS_MAX_HYPERPARAMETERS + 1} hyperparameters given; SageMaker accepts at most "
                       f"{AWS_MAX_HYPERPARAMETERS}")
    assert len(cloud.executions()) == before


def test_hyperparameter_key_and_value_at_and_past_the_limit(cloud: Cloud) -> None:
    key = "k" * AWS_MAX_HYPERPARAMETER_KEY
    value = "v" * AWS_MAX_HYPERPARAMETER_VALUE
    at_limit = cloud.smtrain("start", "--method", "byoc", "--name", "hp-sizes", "--hp", f"{key}={value}")
    assert at_limit.returncode == 0, at_limit.stderr
    assert _execution_input(cloud, "hp-sizes")["hyperparameters"] == {key: value}
    before = len(cloud.executions())
    _refused(cloud.smtrain("start", "--method", "byoc", "--hp", f"{key}k=1"),
             f"is longer than {AWS_MAX_HYPERPARAMETER_KEY} characters")
    _refused(cloud.smtrain("start", "--method", "byoc", "--hp", f"x={value}v"),
             f"value is {AWS_MAX_HYPERPARAMETER_VALUE + 1} characters; SageMaker accepts at most "
             f"{AWS_MAX_HYPERPARAMETER_VALUE}")
    assert len(cloud.executions()) == before


def test_instance_count_at_and_past_the_stack_ceiling(cloud: Cloud) -> None:
    at_limit = cloud.smtrain("start", "--method", "byoc", "--name", "max-instances",
                             "--instance-count", str(STACK_MAX_INSTANCE_COUNT))
    assert at_limit.returncode == 0, at_limit.stderr
    assert _execution_input(cloud, "max-instances")["instanceCount"] == STACK_MAX_INSTANCE_COUNT
    before = len(cloud.executions())
    _refused(cloud.smtrain("start", "--method", "byoc", "--instance-count", str(STACK_MAX_INSTANCE_COUNT + 1)),
             f"instance count {STACK_MAX_INSTANCE_COUNT + 1} must be from 1 to {STACK_MAX_INSTANCE_COUNT}")
    assert len(cloud.executions()) == before


def test_execution_name_at_and_past_the_limit(cloud: Cloud) -> None:
    longest = "n" * AWS_MAX_EXECUTION_NAME
    at_limit = cloud.smtrain("start", "--method", "byoc", "--name", longest)
    assert at_limit.returncode == 0, at_limit.stderr
    assert any(e["name"] == longest for e in cloud.executions())
    before = len(cloud.executions())
    _refused(cloud.smtrain("start", "--method", "byoc", "--name", longest + "n"), "must be 1-80 characters")
    assert len(cloud.executions()) == before
    # The commands that take a name check it the same way.
    _refused(cloud.smtrain("status", "run(1)"), "must be 1-80 characters of letters, digits, '-' and '_'")


@pytest.mark.parametrize("name", ["run(1)", "run!", "it's", "run.1", "run 1", "rün", "run\n", "run:1", ""],
                         ids=["parens", "bang", "quote", "dot", "space", "non-ascii", "newline", "colon",
                              "empty"])
def test_execution_names_that_would_break_the_job_tag_are_refused(cloud: Cloud, name: str) -> None:
    """Step Functions itself accepts some of these, but the name becomes the jobs' tag value."""
    before = len(cloud.executions())
    _refused(cloud.smtrain("start", "--method", "byoc", "--name", name),
             "must be 1-80 characters of letters, digits, '-' and '_'")
    assert len(cloud.executions()) == before
