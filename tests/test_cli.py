"""`smtrain` driven as a process against moto running as a real HTTP server on loopback.

The server executes the synthesized definition (moto's ASL interpreter) with SageMaker answered
by the scripted backend, in this test process; the CLI reaches it through AWS_ENDPOINT_URL.
moto's CloudFormation holds a stand-in for the deployed workflow stack whose outputs are the
synthesized template's (its limits included), so the CLI can find everything the way it does in
an account; ``Cloud.env()`` names the state machine and bucket explicitly instead.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from smtrain.cli.execution_request import program_hyperparameters
from smtrain.core import input_rules
from smtrain.core.programs import Hyperparameter, Program, discover
from smtrain.local.deployment import load_deployment
from smtrain.local.model_registry import LocalModelRegistry
from smtrain.local.s3_stand_in import LocalS3
from smtrain.local.sfn_sagemaker import serve_sagemaker
from tests.conftest import ROOT, SHIPPED_PROGRAMS, shipped_training_code
from tests.helpers import Synthesized, run_cli
from tests.scripted_sagemaker import JobScript, ScriptedBackend

SMTRAIN = str(Path(sys.executable).parent / "smtrain")
#: The older routing option names a kind; each shipped program is the one of its kind.
KIND_OF = {"digits_mlp": "script", "digits_lightgbm": "byoc", "digits_xgboost": "builtin"}
#: The stack outputs the CLI reads (a deployed stack's interface: renaming one breaks the CLI of
#: anyone whose stack was deployed before, so they are written out here).
OUTPUT_STATE_MACHINE, OUTPUT_BUCKET = "StateMachineArn", "DataBucketName"
OUTPUT_ALLOWED_TYPES, OUTPUT_MAX_COUNT = "AllowedInstanceTypes", "MaxInstanceCount"


class Cloud:
    """The moto server and what the CLI needs in it."""

    def __init__(self, endpoint: str, state_machine_arn: str, data_bucket: str,
                 backend: ScriptedBackend) -> None:
        self.endpoint, self.state_machine_arn, self.data_bucket = endpoint, state_machine_arn, data_bucket
        self.backend = backend
        #: The stand-in for the deployed workflow stack (the CLI's default stack name) and one
        #: deployed before the limit outputs existed.
        self.stack_name = ""
        self.stack_before_limits = "smtrain-before-limits"
        self.stack_outputs: dict[str, str] = {}
        self.training_code: Path | None = None

    def env(self, **extra: str) -> dict[str, str]:
        """The state machine and bucket given explicitly: the stack's outputs are not read."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SMTRAIN_"))}
        env.update({"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": "testing",
                    "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
                    "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
                    "SMTRAIN_STATE_MACHINE_ARN": self.state_machine_arn,
                    "SMTRAIN_DATA_BUCKET": self.data_bucket})
        if self.training_code is not None:
            env["SMTRAIN_TRAINING_CODE"] = str(self.training_code)
        env.update(extra)
        return env

    def deployed_env(self) -> dict[str, str]:
        """Nothing explicit: the CLI reads the deployed stack's outputs (limits included)."""
        env = self.env()
        del env["SMTRAIN_STATE_MACHINE_ARN"], env["SMTRAIN_DATA_BUCKET"]
        return env

    def smtrain(self, *args: str, env: dict[str, str] | None = None, timeout: int = 120,
                process: bool = False) -> subprocess.CompletedProcess[str]:
        """The CLI in this process (:func:`tests.helpers.run_cli`), or with ``process`` (and for
        ``--local``, whose engine cannot run beside this process's moto server) as a process."""
        env = env if env is not None else self.env()
        if process or "--local" in args:
            return subprocess.run([SMTRAIN, *args], capture_output=True, text=True, timeout=timeout,
                                  env=env, cwd=ROOT)
        return run_cli(args, env=env, cwd=ROOT)

    def client(self, service: str) -> Any:
        return boto3.client(service, endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def executions(self) -> list[dict[str, Any]]:
        executions: list[dict[str, Any]] = self.client("stepfunctions").list_executions(
            stateMachineArn=self.state_machine_arn)["executions"]
        return executions

    def execution_arn(self, name: str) -> str:
        return self.state_machine_arn.replace(":stateMachine:", ":execution:") + f":{name}"

    def describe(self, name: str) -> dict[str, Any]:
        description: dict[str, Any] = self.client("stepfunctions").describe_execution(
            executionArn=self.execution_arn(name))
        return description

    def jobs_of(self, name: str) -> list[dict[str, Any]]:
        """The CreateTrainingJob requests the execution ``name`` made (its tag)."""
        return [r for r in self.backend.created("create_training_job")
                if {"Key": "smtrain:execution", "Value": name} in r["Tags"]]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _workflow_stack_name(synthesized: Synthesized) -> str:
    """The workflow stack's name as the synthesized app deploys it."""
    manifest = json.loads((synthesized.outdir / "manifest.json").read_text())
    (name,) = [artifact["properties"]["stackName"] for artifact in manifest["artifacts"].values()
               if artifact["type"] == "aws:cloudformation:stack"
               and OUTPUT_STATE_MACHINE in json.loads((synthesized.outdir / artifact["properties"][
                   "templateFile"]).read_text()).get("Outputs", {})]
    return str(name)


def _deploy_stand_in(cloud: Cloud, stack_name: str, outputs: dict[str, str]) -> None:
    template = {"Resources": {"Topic": {"Type": "AWS::SNS::Topic"}},
                "Outputs": {key: {"Value": value} for key, value in outputs.items()}}
    cloud.client("cloudformation").create_stack(StackName=stack_name, TemplateBody=json.dumps(template))


@pytest.fixture(scope="module")
def cloud(synthesized: Synthesized, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    from moto.core.config import default_user_config
    from moto.server import ThreadedMotoServer

    previous = dict(default_user_config.get("stepfunctions", {}))
    default_user_config["stepfunctions"] = {**previous, "execute_state_machine": True}
    backend = ScriptedBackend(JobScript(statuses=("InProgress", "Completed")))
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    deployment = load_deployment(synthesized.outdir, s3=LocalS3(tmp_path_factory.mktemp("assets")))
    # The state machine's registry calls go to an offline registry, and its quality report to an
    # S3 stand-in, in this test process like the scripted SageMaker (moto's own aws-sdk tasks
    # would call its default endpoint, not this server).
    registry = LocalModelRegistry(tmp_path_factory.mktemp("registry"),
                                  groups=deployment.model_groups.values())
    backend.s3 = LocalS3(tmp_path_factory.mktemp("reports"))  # the jobs' models, where the copy reads
    with serve_sagemaker(backend, registry=registry, s3=backend.s3):
        server.start()
        try:
            endpoint = f"http://127.0.0.1:{port}"
            cloud = Cloud(endpoint, "", deployment.data_bucket, backend)
            # The CLI reads the programs the app was synthesized from (the shipped ones), even
            # when a team has added its own to training_code/.
            cloud.training_code = synthesized.training_code
            cloud.client("s3").create_bucket(Bucket=deployment.data_bucket)
            machine = cloud.client("stepfunctions").create_state_machine(
                name="smtrain-training", definition=json.dumps(deployment.definition),
                roleArn="arn:aws:iam::123456789012:role/state-machine")
            cloud.state_machine_arn = machine["stateMachineArn"]
            # The limit outputs as the synthesized workflow stack declares them.
            limits = {key: synthesized.workflow["Outputs"][key]["Value"]
                      for key in (OUTPUT_ALLOWED_TYPES, OUTPUT_MAX_COUNT)}
            assert all(isinstance(value, str) for value in limits.values()), limits
            located = {OUTPUT_STATE_MACHINE: cloud.state_machine_arn, OUTPUT_BUCKET: cloud.data_bucket}
            cloud.stack_name = _workflow_stack_name(synthesized)
            cloud.stack_outputs = {**located, **limits}
            _deploy_stand_in(cloud, cloud.stack_name, cloud.stack_outputs)
            _deploy_stand_in(cloud, cloud.stack_before_limits, located)
            yield cloud
        finally:
            server.stop()
            default_user_config["stepfunctions"] = previous


@pytest.fixture(scope="module")
def shipped(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Program]:
    """The shipped programs (the ones the synthesized state machine runs)."""
    return discover(shipped_training_code(tmp_path_factory.mktemp("shipped-code")))


def _started_name(result: subprocess.CompletedProcess[str]) -> str:
    match = re.search(r"(?:Started|Already started \(same name, same input\):) "
                      r"arn:aws:states:[^:]+:\d+:execution:smtrain-training:([0-9A-Za-z_-]+)", result.stdout)
    assert match is not None, result.stdout + result.stderr
    return match[1]


def _tags(request: dict[str, Any]) -> dict[str, str]:
    return {tag["Key"]: tag["Value"] for tag in request["Tags"]}


def test_help_and_version_of_every_command(cloud: Cloud) -> None:
    for command in ([], ["start"], ["watch"], ["status"], ["list"], ["logs"], ["stop"], ["compare"],
                    ["data", "upload"], ["preflight"], ["programs"], ["new-program"], ["tuning-template"]):
        result = cloud.smtrain(*command, "--help")
        assert result.returncode == 0 and "usage: smtrain" in result.stdout, command


def test_start_wait_succeeds_and_reports(cloud: Cloud) -> None:
    result = cloud.smtrain("start", "--program", "digits_mlp", "--hp", "epochs=3", "--hp", "learning-rate=1e-3",
                           "--name", "cli-wait", "--wait", "--interval", "0.1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Started arn:aws:states:us-east-1:123456789012:execution:smtrain-training:cli-wait" in result.stdout
    console = "https://us-east-1.console.aws.amazon.com/states/home?region=us-east-1#/v2/executions/details/"
    assert console in result.stdout
    assert "state TrainModel" in result.stdout and "SUCCEEDED" in result.stdout
    assert "metrics: validation:accuracy=0.97" in result.stdout
    request = cloud.backend.created("create_training_job")[-1]
    assert f"{request['TrainingJobName']}/output/model.tar.gz" in result.stdout
    assert request["HyperParameters"]["epochs"] == "3"
    assert request["HyperParameters"]["learning-rate"] == "1e-3", "sent exactly as typed, not reformatted"
    # The program's default gate (validation:accuracy >= 0.9) passed: the version and how to
    # approve it are printed.
    output = json.loads(cloud.describe("cli-wait")["output"])
    assert output["registered"] is True
    assert f"registered: {output['modelPackageArn']} (PendingManualApproval)" in result.stdout
    assert "meets the quality gate: validation:accuracy 0.97 >= 0.9" in result.stdout
    assert f"smtrain models approve {output['modelPackageArn']} --reason" in result.stdout


def test_a_quality_gate_from_the_command_line(cloud: Cloud) -> None:
    """--min/--max become the input's register gate; a model that misses it is not registered,
    and the run still succeeds, saying why."""
    result = cloud.smtrain("start", "--program", "digits_mlp", "--min", "validation:accuracy=0.99",
                           "--name", "cli-gate", "--wait", "--interval", "0.1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(cloud.describe("cli-gate")["input"])["register"] == {
        "minimum": {"validation:accuracy": 0.99}}
    assert ("registry: not registered: validation:accuracy 0.97 is below the minimum 0.99"
            in result.stdout)
    skipped = cloud.smtrain("start", "--program", "digits_mlp", "--no-register", "--name", "cli-skip",
                            "--wait", "--interval", "0.1")
    assert skipped.returncode == 0, skipped.stdout + skipped.stderr
    assert json.loads(cloud.describe("cli-skip")["input"])["register"] is False
    assert "registry: not requested" in skipped.stdout


@pytest.mark.parametrize(("arguments", "message"), [
    (["--min", "validation:accuracy"], "--min 'validation:accuracy' must be written METRIC=NUMBER"),
    (["--max", "validation:loss=low"], "--max 'validation:loss=low': 'low' is not a number"),
    (["--min", "accuracy=0.9"], "register.minimum names 'accuracy', not a metric of program digits_mlp"),
    (["--no-register", "--min", "validation:accuracy=0.9"], "--no-register with --min/--max"),
])
def test_a_bad_gate_is_refused_before_anything_starts(cloud: Cloud, arguments: list[str],
                                                      message: str) -> None:
    executions_before = cloud.client("stepfunctions").list_executions(
        stateMachineArn=cloud.state_machine_arn)["executions"]
    result = cloud.smtrain("start", "--program", "digits_mlp", *arguments)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stdout + result.stderr
    assert cloud.client("stepfunctions").list_executions(
        stateMachineArn=cloud.state_machine_arn)["executions"] == executions_before


def test_no_spot_sends_spot_false_and_spot_with_no_spot_is_refused(cloud: Cloud) -> None:
    result = cloud.smtrain("start", "--program", "digits_mlp", "--no-spot", "--keep-alive", "60",
                           "--name", "cli-on-demand")
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(cloud.describe("cli-on-demand")["input"]) == {
        "program": "digits_mlp", "spot": False, "keepAliveSeconds": 60}
    both = cloud.smtrain("start", "--program", "digits_mlp", "--spot", "--no-spot")
    assert both.returncode == 2 and "not allowed with argument" in both.stderr


def test_channel_options_from_the_command_line(cloud: Cloud) -> None:
    """--input-mode, --s3-distribution and --compression become the input's channelOptions and
    the request's channels."""
    result = cloud.smtrain("start", "--program", "digits_lightgbm", "--input-mode", "train=Pipe",
                           "--compression", "train=Gzip", "--s3-distribution", "validation=ShardedByS3Key",
                           "--input-mode", "validation=FastFile", "--name", "cli-modes", "--wait",
                           "--interval", "0.1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(cloud.describe("cli-modes")["input"])["channelOptions"] == {
        "train": {"inputMode": "Pipe", "compressionType": "Gzip"},
        "validation": {"s3DataDistributionType": "ShardedByS3Key", "inputMode": "FastFile"}}
    (request,) = cloud.jobs_of("cli-modes")
    train, validation = request["InputDataConfig"]
    assert (train["InputMode"], train["CompressionType"]) == ("Pipe", "Gzip")
    assert validation["InputMode"] == "FastFile" and "CompressionType" not in validation
    assert validation["DataSource"]["S3DataSource"]["S3DataDistributionType"] == "ShardedByS3Key"


def test_hyperparameters_are_sent_exactly_as_typed(cloud: Cloud) -> None:
    """No JSON round trip: ``2.10`` is not ``2.1``, in the execution input and in the request."""
    result = cloud.smtrain("start", "--program", "digits_mlp", "--hp", "learning-rate=2.10",
                           "--name", "exact-text", "--wait", "--interval", "0.1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(cloud.describe("exact-text")["input"]) == {
        "program": "digits_mlp", "hyperparameters": {"learning-rate": "2.10"}}
    (request,) = cloud.jobs_of("exact-text")
    assert request["HyperParameters"]["learning-rate"] == "2.10"
    # Different text is a different input, so a different derived name: nothing is normalised.
    names = {_started_name(cloud.smtrain("start", "--program", "digits_mlp", "--hp", f"learning-rate={text}"))
             for text in ("2.10", "2.1")}
    assert len(names) == 2


@pytest.mark.parametrize("program", SHIPPED_PROGRAMS)
def test_program_and_method_both_route(cloud: Cloud, program: str) -> None:
    """``--program NAME`` and the first release's ``--method KIND`` (the one program of that
    kind) build the same input, so they name the same run; a raw ``method`` input routes too."""
    hp = {"digits_mlp": "seed=7", "digits_lightgbm": "seed=7", "digits_xgboost": "max_depth=4"}[program]
    by_program = cloud.smtrain("start", "--program", program, "--hp", hp, "--wait", "--interval", "0.1")
    assert by_program.returncode == 0, by_program.stdout + by_program.stderr
    name = _started_name(by_program)
    assert re.fullmatch(re.escape(program.replace("_", "-")) + "-[0-9a-f]{16}", name), name
    assert json.loads(cloud.describe(name)["input"]) == {"program": program,
                                                         "hyperparameters": dict([hp.split("=")])}
    assert json.loads(cloud.describe(name)["output"])["program"] == program
    (request,) = cloud.jobs_of(name)
    assert _tags(request) == {"project": "smtrain", "smtrain:execution": name,
                              "smtrain:program": program, "smtrain:kind": KIND_OF[program]}

    before = len(cloud.executions())
    by_method = cloud.smtrain("start", "--method", KIND_OF[program], "--hp", hp)
    assert by_method.returncode == 0, by_method.stderr
    assert "Already started (same name, same input)" in by_method.stdout
    assert _started_name(by_method) == name
    assert len(cloud.executions()) == before

    # A StartExecution written by hand with the older field is routed by the state machine.
    raw = f"raw-method-{KIND_OF[program]}"
    cloud.client("stepfunctions").start_execution(stateMachineArn=cloud.state_machine_arn, name=raw,
                                                  input=json.dumps({"method": KIND_OF[program]}))
    watched = cloud.smtrain("watch", raw, "--interval", "0.1")
    assert watched.returncode == 0, watched.stdout + watched.stderr
    assert json.loads(cloud.describe(raw)["output"])["program"] == program
    (request,) = cloud.jobs_of(raw)
    assert _tags(request)["smtrain:program"] == program


def test_method_is_shown_apart_from_program_as_the_older_name(tmp_path: Path) -> None:
    """Issue 19, item 8: ``start --help`` lists ``--program`` with the other options and
    ``--method`` apart, as the first release's name; naming neither or both is one line."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SMTRAIN_"))}
    shown = run_cli(["start", "--help"], env=env, cwd=tmp_path)
    assert shown.returncode == 0
    sections = re.split(r"\n\n(?=\S)", shown.stdout)
    (main,) = [s for s in sections if s.startswith("options:")]
    (older,) = [s for s in sections if "--method" in s and not s.startswith("usage:")]
    assert "--program" in main and "--method" not in main
    assert older.splitlines()[0].startswith("older options"), older
    assert "--program" not in older.split("\n", 2)[2]
    for args, message in (([], "smtrain: error: name the program to train: --program NAME "
                               "(`smtrain programs` lists them)"),
                          (["--program", "digits_mlp", "--method", "script"],
                           "smtrain: error: --program and --method both name the program: "
                           "give --program only")):
        refused = run_cli(["start", *args], env=env, cwd=tmp_path)
        assert (refused.returncode, refused.stderr.strip()) == (2, message)


def test_an_unknown_input_field_never_reaches_sagemaker(cloud: Cloud, shipped: dict[str, Program]) -> None:
    """A hand-written input with a name the contract does not know (a hyperparameter put at the
    top level) is refused by the state machine's first states: no job is created. The CLI
    evaluates the same rules and gets the same words."""
    document = {"program": "digits_mlp", "epochs": "3"}
    cause = ("unknown field(s) epochs; allowed: program, method, hyperparameters, instanceType, "
             "instanceCount, volumeSizeInGB, maxRuntimeInSeconds, spot, keepAliveSeconds, inputs, channelOptions, "
             "tuning, register, priority, team")
    assert input_rules.check(shipped, document).problems == [{"error": "InvalidExecutionInput", "cause": cause}]
    requests_before = len(cloud.backend.requests)
    cloud.client("stepfunctions").start_execution(stateMachineArn=cloud.state_machine_arn, name="unknown-field",
                                                  input=json.dumps(document))
    watched = cloud.smtrain("watch", "unknown-field", "--interval", "0.1")
    assert watched.returncode == 1, watched.stdout + watched.stderr
    assert "FAILED: InvalidExecutionInput" in watched.stdout
    assert f"reason: {cause}" in watched.stdout
    description = cloud.describe("unknown-field")
    assert (description["error"], description["cause"]) == ("InvalidExecutionInput", cause)
    entered = [event["stateEnteredEventDetails"]["name"] for event in cloud.client("stepfunctions")
               .get_execution_history(executionArn=cloud.execution_arn("unknown-field"))["events"]
               if "stateEnteredEventDetails" in event]
    assert entered == ["ReadInput", "CheckProgramInput", "ProgramInputValid", "RejectProgramInput",
                       "RejectInput"]
    assert len(cloud.backend.requests) == requests_before, "SageMaker was never called"


def test_rerun_is_idempotent(cloud: Cloud) -> None:
    args = ("start", "--program", "digits_xgboost", "--hp", "num_round=7")
    first = cloud.smtrain(*args)
    assert first.returncode == 0, first.stderr
    second = cloud.smtrain(*args)
    assert second.returncode == 0, second.stderr
    assert "Already started (same name, same input)" in second.stdout
    names = [e["name"] for e in cloud.executions() if e["name"].startswith("digits-xgboost-")
             and json.loads(cloud.describe(e["name"])["input"]).get("hyperparameters") == {"num_round": "7"}]
    assert len(names) == 1
    assert names[0] in first.stdout and names[0] in second.stdout


def test_name_taken_with_different_input(cloud: Cloud) -> None:
    assert cloud.smtrain("start", "--program", "digits_lightgbm", "--name", "taken").returncode == 0
    before = len(cloud.executions())
    result = cloud.smtrain("start", "--program", "digits_mlp", "--name", "taken")
    assert result.returncode == 2
    assert "execution name 'taken' is already taken by a run with a different input" in result.stderr
    assert len(cloud.executions()) == before


def test_local_directory_is_uploaded_first(cloud: Cloud, tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "part-1.csv").write_text("1,2,3\n")
    (tmp_path / "train" / "part-2.csv").write_text("0,1,1\n")
    result = cloud.smtrain("start", "--program", "digits_lightgbm", "--input", f"train={tmp_path / 'train'}",
                           "--name", "with-upload")
    assert result.returncode == 0, result.stderr
    assert "uploaded 2/2" in result.stdout
    keys = sorted(o["Key"] for o in cloud.client("s3").list_objects_v2(
        Bucket=cloud.data_bucket, Prefix="datasets/uploads/with-upload/")["Contents"])
    assert keys == ["datasets/uploads/with-upload/train/part-1.csv",
                    "datasets/uploads/with-upload/train/part-2.csv"]
    assert json.loads(cloud.describe("with-upload")["input"])["inputs"] == {
        "train": f"s3://{cloud.data_bucket}/datasets/uploads/with-upload/train/"}


def test_watch_status_list_and_logs(cloud: Cloud) -> None:
    assert cloud.smtrain("start", "--program", "digits_mlp", "--name", "inspect-me").returncode == 0
    watched = cloud.smtrain("watch", "inspect-me", "--interval", "0.1")
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
        result = cloud.smtrain("start", "--program", "digits_mlp", "--name", "will-fail", "--wait",
                               "--interval", "0.1")
    finally:
        cloud.backend.script = JobScript(statuses=("InProgress", "Completed"))
    assert result.returncode == 1
    assert "FAILED: TrainingJobFailed" in result.stdout
    assert "reason: AlgorithmError: loss became NaN" in result.stdout


def test_stop_aborts_and_stops_the_job(cloud: Cloud) -> None:
    cloud.backend.script = JobScript(statuses=("InProgress",))
    try:
        assert cloud.smtrain("start", "--program", "digits_mlp", "--name", "to-stop").returncode == 0
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not cloud.jobs_of("to-stop"):
            time.sleep(0.2)
        stopped = cloud.smtrain("stop", "to-stop")
        assert stopped.returncode == 0 and "Stopped" in stopped.stdout
        watched = cloud.smtrain("watch", "to-stop", "--interval", "0.1")
        assert watched.returncode == 3, "aborted runs have their own exit code"
        assert "ABORTED" in watched.stdout
    finally:
        cloud.backend.script = JobScript(statuses=("InProgress", "Completed"))


def _default_inputs(synthesized: Synthesized) -> dict[str, set[str]]:
    """Each program's default channel prefixes (keys in the data bucket), from the deployed
    definition's Prepare states."""
    states = synthesized.definition()["States"]
    defaults: dict[str, set[str]] = {}
    for program in SHIPPED_PROGRAMS:
        for result in _prepare_results(states, program):
            defaults.setdefault(program, set()).update(
                uri.removeprefix("s3://").split("/", 1)[1] for uri in result["inputDefaults"].values())
    return defaults


def test_data_upload_of_the_sample_data(cloud: Cloud, synthesized: Synthesized) -> None:
    result = cloud.smtrain("data", "upload")
    assert result.returncode == 0, result.stderr
    keys = {o["Key"] for o in cloud.client("s3").list_objects_v2(
        Bucket=cloud.data_bucket, Prefix="datasets/")["Contents"]}
    assert {f"datasets/{p}/{c}/digits.csv" for p in SHIPPED_PROGRAMS
            for c in ("train", "validation")} <= keys
    # Where each program reads by default is where the sample data went.
    for program, prefixes in _default_inputs(synthesized).items():
        assert prefixes == {f"datasets/{program}/train/", f"datasets/{program}/validation/"}, program
        assert all(f"{prefix}digits.csv" in keys for prefix in prefixes), program


def _tuning_file(tmp_path: Path, document: Any) -> str:
    path = tmp_path / "tuning.json"
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    return str(path)


MLP = ["--program", "digits_mlp"]
MLP_KNOWN = "known: batch-size, epochs, hidden-units, learning-rate, seed"
CASES: list[tuple[list[str], str]] = [
    (["--program", "sklearn"], "field 'program' must be one of digits_lightgbm, digits_mlp, digits_xgboost"),
    (["--method", "sklearn"], "field 'method' names no program: give field 'program', one of digits_lightgbm, "
                              "digits_mlp, digits_xgboost"),
    ([*MLP, "--hp", "epochs"], "hyperparameter 'epochs' must be written key=value"),
    ([*MLP, "--hp", "=5"], "hyperparameter name '' is empty"),
    ([*MLP, "--hp", "a b=1"], "hyperparameter name 'a b' is empty or has characters"),
    ([*MLP, "--hp", "epochs=1", "--hp", "epochs=2"], "hyperparameter 'epochs' is given twice"),
    ([*MLP, "--hp", "epochs="], "hyperparameter 'epochs' has an empty value"),
    ([*MLP, "--hp", "x=1"], f"hyperparameter 'x' is not declared by program digits_mlp; {MLP_KNOWN}"),
    ([*MLP, "--hp", "sagemaker_program=other.py"],
     f"hyperparameter 'sagemaker_program' is not declared by program digits_mlp; {MLP_KNOWN}"),
    (["--program", "digits_lightgbm", "--hp", "epochs=3"],
     "hyperparameter 'epochs' is not declared by program digits_lightgbm; known: learning_rate, "
     "min_data_in_leaf, num_boost_round, num_leaves, report_every, seed"),
    ([*MLP, "--hp", "epochs=[1,2]"], "hyperparameter 'epochs' must be a whole number, got '[1,2]'"),
    ([*MLP, "--hp", "epochs=2.0"], "hyperparameter 'epochs' must be a whole number, got '2.0'"),
    ([*MLP, "--hp", "learning-rate=NaN"], "hyperparameter 'learning-rate' must be a number, got 'NaN'"),
    ([*MLP, "--hp", "learning-rate=Infinity"], "hyperparameter 'learning-rate' must be a number, got 'Infinity'"),
    ([*MLP, "--hp", "epochs=0"], "hyperparameter 'epochs' must be at least 1, got 0"),
    ([*MLP, "--hp", "learning-rate=10.5"], "hyperparameter 'learning-rate' must be at most 10, got 10.5"),
    (["--program", "digits_xgboost", "--hp", "objective=multi:hinge"],
     "hyperparameter 'objective' must be one of multi:softmax, multi:softprob, binary:logistic, "
     "reg:squarederror, got 'multi:hinge'"),
    # SageMaker's own limits are checked first, whatever the program declares.
    ([*MLP, "--hp", "x=" + "v" * 2501], "value is 2501 characters; SageMaker accepts at most 2500"),
    ([*MLP, "--hp", "k" * 257 + "=1"], "is longer than 256 characters"),
    ([*MLP, *[a for i in range(101) for a in ("--hp", f"p{i}=1")]],
     "101 hyperparameters given; SageMaker accepts at most 100"),
    # Checked against the deployed stack's outputs (the cloud's stand-in for it).
    ([*MLP, "--instance-type", "ml.p5.48xlarge"], "instance type ml.p5.48xlarge is not on the stack's allow-list: "
                                                  "ml.m5.large, ml.m5.xlarge, ml.m5.2xlarge, ml.c5.xlarge"),
    ([*MLP, "--instance-count", "9"], "instance count 9 must be from 1 to 4"),
    # Checked before the stack is known: SageMaker-wide, not the stack's.
    ([*MLP, "--instance-type", "m5.large"], "is not a SageMaker instance type"),
    ([*MLP, "--instance-count", "0"], "instance count 0 must be from 1 to 100"),
    ([*MLP, "--instance-count", "101"], "instance count 101 must be from 1 to 100"),
    ([*MLP, "--max-runtime", "0"], "--max-runtime 0 must be a positive number"),
    ([*MLP, "--input", "train"], "must be written channel=s3://bucket/prefix/"),
    ([*MLP, "--input", "test=s3://b/p/"], "input channel 'test' is not one of the program's channels: "
                                          "train, validation"),
    ([*MLP, "--input", "train=s3://Bad_Bucket/x"], "is not a valid S3 URI"),
    ([*MLP, "--input", "train=s3://other-bucket/datasets/x/"],
     "bucket 'other-bucket' is outside the stack's data bucket"),
    ([*MLP, "--input", "train=s3://{bucket}/elsewhere/"], "the training role reads only under"),
    ([*MLP, "--input", "train=https://example.com/data"],
     "is neither an s3:// URI nor a local directory"),
    ([*MLP, "--input", "train=/no/such/dir"], "local directory '/no/such/dir' does not exist"),
    ([*MLP, "--input", "train=s3://{bucket}/datasets/a/", "--input", "train=s3://{bucket}/datasets/b/"],
     "input channel 'train' is given twice"),
    ([*MLP, "--name", "has space"], "execution name 'has space' must be 1-80 characters"),
    ([*MLP, "--name", "n" * 81], "must be 1-80 characters"),
    ([*MLP, "--tune", "/no/such.json"], "tuning file /no/such.json does not exist"),
    ([*MLP, "--tune", "{tuning:not json}"], "is not valid JSON"),
    ([*MLP, "--tune", '{tuning:["Grid"]}'], "must hold a JSON object of tuning fields"),
    ([*MLP, "--tune", '{tuning:{"strategy": "Genetic"}}'],
     "field 'tuning.strategy' must be one of Bayesian, Random, Hyperband, Grid"),
    ([*MLP, "--tune", '{tuning:{"maxJobs": 0}}'], "field 'tuning.maxJobs' must be from 1 to 500"),
    ([*MLP, "--tune", '{tuning:{"objective": {"metricName": "x"}}}'],
     "tuning objective 'x' is not a metric of program digits_mlp"),
    ([*MLP, "--tune", '{tuning:{"objective": {"metricName": "validation:loss"}}}'],
     "field 'tuning.objective.type' is required: one of Maximize, Minimize"),
    ([*MLP, "--tune", '{tuning:{"objective": {"metricName": "validation:f1", "type": "Maximize"}}}'],
     "tuning objective 'validation:f1' is not a metric of program digits_mlp: train:loss, validation:loss, "
     "validation:accuracy"),
    ([*MLP, "--tune", '{tuning:{"parameterRanges": {"ContinuousParameterRanges": '
      '[{"Name": "learning-rate", "MinValue": "1", "MaxValue": "0.1"}]}}}'],
     "tuning range 'learning-rate' MinValue 1 is above its MaxValue 0.1"),
    ([*MLP, "--tune", '{tuning:{"parameterRanges": {"ContinuousParameterRanges": '
      '[{"Name": "lr", "MinValue": "0.01", "MaxValue": "0.1"}]}}}'],
     f"tuning range on 'lr', which program digits_mlp does not declare; {MLP_KNOWN}"),
    ([*MLP, "--tune", '{tuning:{"parameterRanges": {"IntegerParameterRanges": '
      '[{"Name": "seed", "MinValue": "1", "MaxValue": "9"}]}}}'],
     "tuning range 'seed': program digits_mlp declares it not tunable"),
    ([*MLP, "--tune", '{tuning:{"parameterRanges": {"IntegerParameterRanges": '
      '[{"Name": "learning-rate", "MinValue": "1", "MaxValue": "9"}]}}}'],
     "tuning range 'learning-rate': IntegerParameterRanges do not fit a float hyperparameter"),
    ([*MLP, "--tune", '{tuning:{"parameterRanges": {"IntegerParameterRanges": '
      '[{"Name": "epochs", "MinValue": "1", "MaxValue": "1001"}]}}}'],
     "tuning range 'epochs' MaxValue must be at most 1000, got 1001"),
    ([*MLP, "--tune", '{tuning:{"strategy": "Grid", "parameterRanges": {"ContinuousParameterRanges": '
      '[{"Name": "learning-rate", "MinValue": "0.1", "MaxValue": "1"}]}}}'],
     "may hold only CategoricalParameterRanges with the Grid strategy"),
    ([*MLP, "--tune", '{tuning:{"strategy": "Grid", "parameterRanges": {"IntegerParameterRanges": '
      '[{"Name": "epochs", "MinValue": "1", "MaxValue": "3"}]}}}'],
     "may hold only CategoricalParameterRanges with the Grid strategy"),
    ([*MLP, "--tune", '{tuning:{"strategy": "Grid"}}'],
     "may hold only CategoricalParameterRanges with the Grid strategy"),
    ([*MLP, "--tune", '{tuning:{"maxJobs": 2, "maxParallelJobs": 3}}'],
     "field 'tuning.maxParallelJobs' must not exceed 'tuning.maxJobs'"),
    ([*MLP, "--tune", '{tuning:{"strategy": "Hyperband", "hyperband": '
      '{"minResource": 1, "maxResource": 20001}}}'], "field 'tuning.hyperband.maxResource' must be from 1 to 20000"),
    ([*MLP, "--tune", '{tuning:{"strategy": "Hyperband", "hyperband": '
      '{"minResource": 5, "maxResource": 4}}}'],
     "field 'tuning.hyperband.minResource' must not exceed 'tuning.hyperband.maxResource'"),
    ([*MLP, "--hp", "batch-size=16", "--tune",
      '{tuning:{"parameterRanges": {"CategoricalParameterRanges": [{"Name": "batch-size", "Values": ["8"]}]}}}'],
     "hyperparameter(s) batch-size both tuned and given"),
    ([*MLP, "--tune", '{tuning:{"sizes": 3}}'], "unknown tuning field(s) sizes; allowed:"),
    ([*MLP, "--logs"], "--logs needs --wait"),
    ([*MLP, "--input-mode", "train"], "--input-mode 'train' must be written CHANNEL=VALUE"),
    ([*MLP, "--input-mode", "train=Pipe", "--input-mode", "train=File"],
     "--input-mode is given twice for channel 'train'"),
    ([*MLP, "--input-mode", "test=Pipe"], "channel 'test' in field 'channelOptions' is not read by program digits_mlp"),
    ([*MLP, "--input-mode", "train=Stream"],
     "field 'channelOptions.train.inputMode' must be one of File, FastFile, Pipe"),
    ([*MLP, "--compression", "train=Gzip"], "channel 'train': compressionType Gzip is read in Pipe mode only"),
    ([*MLP, "--s3-distribution", "train=Shard"],
     "field 'channelOptions.train.s3DataDistributionType' must be one of FullyReplicated, ShardedByS3Key"),
]


@pytest.mark.parametrize(("args", "message"), CASES, ids=[" ".join(a)[:60] for a, _ in CASES])
def test_bad_input_is_refused_before_anything_starts(cloud: Cloud, tmp_path: Path, args: list[str],
                                                     message: str) -> None:
    """As a user with the stack deployed runs it: nothing explicit, the stack's outputs read."""
    resolved = []
    for arg in args:
        if arg.startswith("{tuning:"):
            arg = _tuning_file(tmp_path, arg[len("{tuning:"):-1])
        resolved.append(arg.replace("{bucket}", cloud.data_bucket))
    before = len(cloud.executions())
    result = cloud.smtrain("start", *resolved, env=cloud.deployed_env())
    assert result.returncode == 2, result.stdout + result.stderr
    assert message.replace("{bucket}", cloud.data_bucket) in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, "one clear line"
    assert len(cloud.executions()) == before


@pytest.mark.parametrize("args", [["--instance-count", "0"], ["--instance-count", "101"],
                                  ["--instance-type", "m5.large"], ["--hp", "x=1"], ["--hp", "epochs=0"]],
                         ids=lambda args: " ".join(args))
def test_program_and_sagemaker_checks_need_no_aws(cloud: Cloud, args: list[str]) -> None:
    """What does not depend on the deployed stack is refused with no credentials at all (exit 2,
    not the missing-credentials exit 4): no AWS call was needed."""
    env = cloud.deployed_env()
    del env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]
    result = cloud.smtrain("start", *MLP, *args, env=env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "credentials" not in result.stderr


def test_missing_credentials(cloud: Cloud) -> None:
    env = cloud.env()
    del env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]
    before = len(cloud.executions())
    result = cloud.smtrain("start", *MLP, env=env)
    assert result.returncode == 4
    assert result.stderr.strip() == ("smtrain: error: no AWS credentials found: pass --profile, "
                                     "configure a profile (aws configure), set AWS_PROFILE, or set "
                                     "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
    assert len(cloud.executions()) == before


def _with_profile_file(cloud: Cloud, tmp_path: Path, **env: str) -> dict[str, str]:
    """A user's environment with one named profile ``team`` (credentials, no region) in their
    AWS config file, and no credentials or region in the environment."""
    config = tmp_path / "aws-config"
    config.write_text("[profile team]\naws_access_key_id = testing\naws_secret_access_key = testing\n")
    base = cloud.env(AWS_CONFIG_FILE=str(config), **env)
    del base["AWS_ACCESS_KEY_ID"], base["AWS_SECRET_ACCESS_KEY"], base["AWS_REGION"]
    return base


def test_profile_and_region_options(cloud: Cloud, tmp_path: Path) -> None:
    """Issue 19, item 8: ``--profile`` and ``--region``, as the AWS CLI has them, before or after
    the command, from the project root and from another folder; the option wins over the
    environment (AWS CLI User Guide, "Configuration and credentials precedence": command line
    options, then environment variables, then the files,
    https://docs.aws.amazon.com/cli/latest/userguide/cli-chap-configure.html#configure-precedence)."""
    env = _with_profile_file(cloud, tmp_path)
    for args, cwd in ((["list", "--profile", "team", "--region", "us-east-1"], ROOT),
                      (["--profile", "team", "--region", "us-east-1", "list"], tmp_path)):
        result = run_cli(args, env=env, cwd=cwd)
        assert result.returncode == 0, result.stderr
    # --profile wins over AWS_PROFILE, --region over AWS_DEFAULT_REGION.
    crossed = _with_profile_file(cloud, tmp_path, AWS_PROFILE="not-there", AWS_DEFAULT_REGION="mars-north-9")
    result = run_cli(["list", "--profile", "team", "--region", "us-east-1"], env=crossed, cwd=tmp_path)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["status", "some-run", "--profile", "not-there"],
     "smtrain: error: --profile not-there: no such profile in your AWS config and credentials files; "
     "pass one they define (aws configure list-profiles)"),
    (["list"],
     "smtrain: error: AWS_PROFILE=not-there: no such profile in your AWS config and credentials files; "
     "pass --profile with one they define, or unset AWS_PROFILE"),
    (["logs", "some-run", "--profile", "team"],
     "smtrain: error: no AWS region configured: pass --region, set AWS_REGION (or AWS_DEFAULT_REGION), "
     "or set a region in your profile"),
])
def test_a_bad_profile_or_no_region_is_one_line(cloud: Cloud, tmp_path: Path, args: list[str],
                                                message: str) -> None:
    env = _with_profile_file(cloud, tmp_path, AWS_PROFILE="not-there")
    if "--profile" in args:
        del env["AWS_PROFILE"]
    result = run_cli(args, env=env, cwd=tmp_path)
    assert (result.returncode, result.stderr.strip()) == (4, message)


def test_stack_not_deployed(cloud: Cloud) -> None:
    env = cloud.env()
    del env["SMTRAIN_STATE_MACHINE_ARN"]
    before = len(cloud.executions())
    result = cloud.smtrain("start", *MLP, "--stack-name", "not-deployed", env=env)
    assert result.returncode == 4
    assert "stack not-deployed is not deployed in this account and region" in result.stderr
    assert len(cloud.executions()) == before


def test_stack_outputs_are_used_when_nothing_is_explicit(cloud: Cloud) -> None:
    """The default stack name is the synthesized workflow stack's; its outputs locate the run."""
    result = cloud.smtrain("start", "--program", "digits_xgboost", "--name", "from-outputs",
                           "--input", f"train=s3://{cloud.data_bucket}/datasets/digits_xgboost/train/",
                           env=cloud.deployed_env())
    assert result.returncode == 0, result.stderr
    assert any(e["name"] == "from-outputs" for e in cloud.executions())
    older = cloud.smtrain("start", "--program", "digits_xgboost", "--name", "from-older-outputs",
                          "--stack-name", cloud.stack_before_limits, env=cloud.deployed_env())
    assert older.returncode == 0, older.stderr
    assert any(e["name"] == "from-older-outputs" for e in cloud.executions())


def test_local_start_end_to_end(synthesized: Synthesized, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    # The programs the app was synthesized from: else a program a team added to training_code/
    # would make cdk.out stale, and the run would re-synthesize the shared test app.
    env["SMTRAIN_TRAINING_CODE"] = str(synthesized.training_code)
    # The BYOC program (no torch to import): the CLI's and the engine's behaviour is the same for
    # every program (the PyTorch program's first run: make demo, tests/test_offline_local.py).
    result = subprocess.run([SMTRAIN, "start", "--local", "--program", "digits_lightgbm",
                             "--hp", "num_boost_round=30",
                             "--cdk-out", str(synthesized.outdir), "--work-dir", str(tmp_path / "work"),
                             "--name", "local-run"], capture_output=True, text=True, timeout=300,
                            env=env, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "SUCCEEDED" in result.stdout
    # The cost, honestly unknown: the shipped price table is empty until `make prices`.
    assert re.search(r"cost: unknown \(\d+ s billable x 1 ml\.m5\.xlarge; no price for ml\.m5\.xlarge "
                     r"in us-east-1: run `make prices`\)", result.stdout), result.stdout[-2000:]
    output = json.loads(result.stdout[result.stdout.index("{"):])
    assert output["program"] == "digits_lightgbm"
    assert output["trainingJobName"].startswith("smtrain-")
    model = tmp_path / "work" / "s3" / output["modelArtifacts"].removeprefix("s3://")
    assert model.is_file()
    accuracy = next(m["Value"] for m in output["metrics"] if m["MetricName"] == "validation:accuracy")
    assert accuracy >= 0.9
    # ... and put on the job's MLflow run, where `smtrain compare` shows it: its billable time,
    # and the line that says why the cost in USD is unknown.
    assert "cost recorded on 1 MLflow run\n" in result.stdout
    from mlflow.tracking import MlflowClient

    from smtrain.local.tracking_store import tracking_store_uri

    client = MlflowClient(tracking_uri=tracking_store_uri((tmp_path / "work" / "mlflow").resolve()))
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()],
                                filter_string=f"tags.`smtrain.training_job` = '{output['trainingJobName']}'")
    assert run.data.metrics["billable_seconds"] >= 1 and "cost_usd" not in run.data.metrics
    assert run.data.tags["smtrain.cost"].startswith("cost: unknown (")


def _local_env(synthesized: Synthesized) -> dict[str, str]:
    """A user's environment for ``--local``: no AWS settings; the programs the app was
    synthesized from (else a program a team added would make the shared cdk.out stale)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SMTRAIN_"))}
    env["SMTRAIN_TRAINING_CODE"] = str(synthesized.training_code)
    return env


def test_local_start_with_own_data_gets_no_sample_data(synthesized: Synthesized, tmp_path: Path) -> None:
    """Issue 19, item 10: the user's own training data with a channel left to its default place
    puts no sample datasets there (nor says so): the missing channel is refused in one line naming
    the option to pass. Run from a folder other than the project root."""
    mine = tmp_path / "my-data" / "train"
    mine.mkdir(parents=True)
    (mine / "part.csv").write_text("1,0.5,0.25\n0,0.1,0.75\n")
    result = run_cli(["start", "--local", *MLP, "--hp", "epochs=1", "--input", "train=my-data/train",
                      "--cdk-out", str(synthesized.outdir), "--work-dir", "work"],
                     env=_local_env(synthesized), cwd=tmp_path)
    assert "put the sample datasets" not in result.stdout, result.stdout[-2000:]
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    (line,) = result.stderr.splitlines()
    assert line.startswith("smtrain: error: program 'digits_mlp' has no data for channel "
                           "'validation' (nothing under s3://"), line
    assert line.endswith(": pass --input validation=<folder or s3:// URI>"), line
    assert not list((tmp_path / "work" / "s3").glob("*/datasets/digits_mlp"))
    assert not (tmp_path / "work" / "mlflow").exists(), "refused before the engine started"


def _offline_record(work: Path, name: str, status: str, *, pid: int | None = None,
                    job: str | None = None, **fields: Any) -> None:
    """A run recorded as the offline engine records it (smtrain.local.execution_records)."""
    import datetime as dt

    from smtrain.local import execution_records

    arn = f"arn:aws:states:us-east-1:123456789012:execution:smtrain-training:{name}"
    events: list[dict[str, Any]] = [{"stateEnteredEventDetails": {"name": "CheckInput"}}]
    if job is not None:
        events += [{"stateEnteredEventDetails": {"name": "TrainModel"}},
                   {"taskScheduledEventDetails": {"parameters": json.dumps({"TrainingJobName": job})}}]
        (work / "jobs" / job).mkdir(parents=True, exist_ok=True)
        (work / "jobs" / job / "log.txt").write_text("epoch=1 loss=0.5\nepoch=2 loss=0.25\n")
    started = dt.datetime(2026, 12, 5, 10, len(list((work / "executions").glob("*.json")))
                          if (work / "executions").is_dir() else 0, tzinfo=dt.UTC)
    execution_records.write(work, {"executionArn": arn, "name": name, "status": status,
                                   "startDate": started, **fields},
                            events=events if status != "RUNNING" else None, pid=pid)


def test_offline_inspection_reads_the_records(tmp_path: Path) -> None:
    """Issue 19, item 8, without training: ``list``/``status``/``logs``/``watch --local`` read
    the records under the work dir; a run whose process died reads ABORTED with why; a run still
    running elsewhere is followed until its record ends; no records or a bad name is one line."""
    import threading

    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SMTRAIN_"))}
    work = tmp_path / ".work" / "local"
    for args in (["list", "--local"], ["status", "x", "--local"], ["logs", "x", "--local"],
                 ["watch", "x", "--local"]):
        empty = run_cli(args, env=env, cwd=tmp_path)
        assert (empty.returncode, empty.stderr.strip()) == (
            4, "smtrain: error: no offline runs recorded under .work/local (`smtrain start --local` "
               "records them there; --work-dir names another folder)"), args
    output = {"trainingJobName": "job-ok", "modelArtifacts": "s3://b/job-ok/output/model.tar.gz",
              "metrics": [{"MetricName": "validation:accuracy", "Value": 0.9}]}
    _offline_record(work, "ok", "SUCCEEDED", job="job-ok", output=json.dumps(output))
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)
    _offline_record(work, "orphan", "RUNNING", pid=int(ended.stdout))

    listing = run_cli(["list", "--local"], env=env, cwd=tmp_path)
    assert listing.returncode == 0, listing.stderr
    assert listing.stdout.splitlines() == [
        f"{'NAME':<40} {'STATUS':<10} STARTED", f"{'orphan':<40} {'ABORTED':<10} 2026-12-05 10:01:00",
        f"{'ok':<40} {'SUCCEEDED':<10} 2026-12-05 10:00:00"]
    assert run_cli(["list", "--local", "--status", "FAILED"], env=env, cwd=tmp_path).stdout == "no runs\n"
    assert run_cli(["list", "--local", "--max", "0"], env=env, cwd=tmp_path).stderr.strip() == (
        "smtrain: error: --max 0 must be from 1 to 1000")

    status = run_cli(["status", "arn:aws:states:us-east-1:123456789012:execution:smtrain-training:ok",
                      "--local"], env=env, cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    assert status.stdout.splitlines()[:4] == ["ok: SUCCEEDED (started 2026-12-05 10:00:00)",
                                              "current or last state: TrainModel", "job: job-ok",
                                              "training job job-ok"]
    assert "metrics: validation:accuracy=0.9" in status.stdout
    orphan = run_cli(["status", "orphan", "--local"], env=env, cwd=tmp_path)
    assert orphan.stdout.splitlines() == [
        "orphan: ABORTED (started 2026-12-05 10:01:00)", "ABORTED: ProcessEnded",
        f"reason: the process that ran it (pid {int(ended.stdout)}) ended before the run did "
        "(interrupted or killed)"]
    assert run_cli(["watch", "orphan", "--local"], env=env, cwd=tmp_path).returncode == 3

    logs = run_cli(["logs", "ok", "--local"], env=env, cwd=tmp_path)
    assert logs.stdout.splitlines() == ["== job-ok", "    | epoch=1 loss=0.5", "    | epoch=2 loss=0.25"]
    assert run_cli(["logs", "orphan", "--local"], env=env, cwd=tmp_path).stdout == (
        "this run has started no SageMaker job\n")

    # Still running in a live process (this one): followed until its record says it ended.
    _offline_record(work, "later", "RUNNING", pid=os.getpid())
    finish = threading.Timer(0.3, _offline_record, (work, "later", "SUCCEEDED"),
                             {"job": "job-later", "output": json.dumps({**output, "trainingJobName": "job-later"})})
    finish.start()
    try:
        watched = run_cli(["watch", "later", "--local", "--logs", "--interval", "0.05"], env=env, cwd=tmp_path)
    finally:
        finish.join()
    assert watched.returncode == 0, watched.stdout + watched.stderr
    lines = watched.stdout.splitlines()
    assert lines[0].startswith("Following arn:aws:states:us-east-1:123456789012:execution:smtrain-training:later "
                               f"(running offline in process {os.getpid()}")
    assert lines[1:6] == ["  state CheckInput", "  state TrainModel", "== job-later",
                          "    | epoch=1 loss=0.5", "    | epoch=2 loss=0.25"]
    assert "training job job-later" in lines

    for args, code, message in (
            (["status", "never-ran"], 4, "no offline run named never-ran under .work/local "
                                         "(`smtrain list --local --work-dir DIR` lists them)"),
            (["logs", "../ok"], 2, "execution name '../ok' must be 1-80 characters of letters, digits, "
                                   "'-' and '_'"),
            (["status", "ok", "--work-dir", "elsewhere"], 4, "no offline runs recorded under elsewhere "
             "(`smtrain start --local` records them there; --work-dir names another folder)")):
        refused = run_cli([*args, "--local"], env=env, cwd=tmp_path)
        assert (refused.returncode, refused.stderr.strip()) == (code, f"smtrain: error: {message}"), args


def test_every_option_has_help() -> None:
    """Issue 19, item 8: ``--help`` explains every option of every command (``--instance-type``,
    ``--instance-count`` and ``stop --reason`` had none)."""
    import argparse

    from smtrain.cli import build_parser

    def parsers(parser: argparse.ArgumentParser, path: str) -> Iterator[tuple[str, argparse.ArgumentParser]]:
        yield path, parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    yield from parsers(child, f"{path} {name}")

    missing = [f"{path} {action.option_strings[0]}" for path, parser in parsers(build_parser(), "smtrain")
               for action in parser._actions
               if action.option_strings and not action.help and action.help is not argparse.SUPPRESS]
    assert missing == []


# -- limits, at and one past the boundary ------------------------------------------------------
# AWS's numbers, written out here on purpose (not read from the CLI's constants):
# SageMaker API reference, CreateTrainingJob / HyperParameterTrainingJobDefinition: HyperParameters
# holds at most 100 entries, each key at most 256 characters and each value at most 2500; a
# ResourceConfig.InstanceCount is at most 100 (the most the stack's setting may allow).
# Step Functions API reference, StartExecution: a name is 1-80 characters; this project allows only
# [0-9A-Za-z_-] because the name becomes a SageMaker tag value (pattern ^([\p{L}\p{Z}\p{N}_.:/=+\-@]*)$,
# so '(', ')', '!' and "'" would make CreateTrainingJob fail).
AWS_MAX_HYPERPARAMETERS = 100
AWS_MAX_HYPERPARAMETER_KEY = 256
AWS_MAX_HYPERPARAMETER_VALUE = 2500
AWS_MAX_INSTANCE_COUNT = 100
AWS_MAX_EXECUTION_NAME = 80
#: The stack's own ceiling: cdk.json's training.maxInstanceCount, deployed as the workflow stack's
#: MaxInstanceCount output (both checked below, not imported).
STACK_MAX_INSTANCE_COUNT = 4


def _execution_input(cloud: Cloud, name: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(cloud.describe(name)["input"])
    return document


def _prepare_results(states: dict[str, Any], program: str) -> list[dict[str, Any]]:
    """The Result of every Prepare Pass state the definition's ``ChooseProgram`` routes
    ``program`` to (through Choice states such as an image choice)."""
    (route,) = [choice["Next"] for choice in states["ChooseProgram"]["Choices"]
                if choice.get("StringEquals") == program]
    results, todo, seen = [], [route], set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        state = states[name]
        if state["Type"] == "Choice":
            todo += [choice["Next"] for choice in state["Choices"]] + [state.get("Default", name)]
        elif state["Type"] == "Pass" and "baseHyperparameters" in state.get("Result", {}):
            results.append(state["Result"])
    assert results, f"no Prepare state for {program}"
    return results


def _added_hyperparameters(synthesized: Synthesized, program: str, *, tuning: bool) -> set[str]:
    """The names the deployed state machine merges into ``program``'s request, read from the
    synthesized definition (training defaults go to single training jobs only)."""
    names: set[str] = set()
    for result in _prepare_results(synthesized.definition()["States"], program):
        names |= set(result["baseHyperparameters"]) | set(result["fixedHyperparameters"])
        names |= set(result["distributedHyperparameters"])
        if not tuning:
            names |= set(result["trainingDefaults"])
    return names


def _hp_args(names: list[str], value: str = "1") -> list[str]:
    return [arg for name in names for arg in ("--hp", f"{name}={value}")]


def _refused(result: subprocess.CompletedProcess[str], message: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, "one clear line"


def test_the_stack_ceiling_on_instances_is_cdk_json(cdk_context: dict[str, Any], synthesized: Synthesized) -> None:
    training = cdk_context["training"]
    assert training["maxInstanceCount"] == STACK_MAX_INSTANCE_COUNT <= AWS_MAX_INSTANCE_COUNT
    outputs = synthesized.workflow["Outputs"]
    assert outputs[OUTPUT_MAX_COUNT]["Value"] == str(STACK_MAX_INSTANCE_COUNT)
    assert outputs[OUTPUT_ALLOWED_TYPES]["Value"] == ",".join(training["allowedInstanceTypes"])


def _declared_value(hyperparameter: Hyperparameter) -> str:
    """A valid text for ``hyperparameter`` that is not its default where one can be told apart."""
    if hyperparameter.values:
        return hyperparameter.values[-1]
    if hyperparameter.min is not None and hyperparameter.type == "int":
        return str(int(hyperparameter.min))
    if hyperparameter.min is not None and hyperparameter.type == "float":
        return f"{hyperparameter.min:g}"
    if hyperparameter.type == "int":
        return "7"
    assert hyperparameter.default is not None, hyperparameter
    return hyperparameter.default


@pytest.mark.parametrize("program", SHIPPED_PROGRAMS)
def test_every_declared_hyperparameter_fits_the_request(cloud: Cloud, synthesized: Synthesized,
                                                        shipped: dict[str, Program], program: str) -> None:
    """SageMaker's 100 counts the request, the user's names merged with the program's. The CLI
    counts that merge with the names it believes the state machine adds: they are the deployed
    definition's. A run giving every declared hyperparameter sends each exactly as typed and
    nothing but those and the program's own."""
    for tuning in (False, True):
        assert program_hyperparameters(shipped[program], tuning=tuning) == _added_hyperparameters(
            synthesized, program, tuning=tuning), (program, tuning)
    given = {name: _declared_value(h) for name, h in shipped[program].hyperparameters.items()}
    name = f"every-hp-{program.replace('_', '-')}"
    result = cloud.smtrain("start", "--program", program, "--name", name, "--wait", "--interval", "0.1",
                           *[arg for key, value in given.items() for arg in ("--hp", f"{key}={value}")])
    assert result.returncode == 0, result.stdout + result.stderr
    assert _execution_input(cloud, name)["hyperparameters"] == given
    (request,) = cloud.jobs_of(name)
    sent = request["HyperParameters"]
    assert {key: sent[key] for key in given} == given
    assert set(sent) - set(given) <= _added_hyperparameters(synthesized, program, tuning=False)
    assert len(sent) <= AWS_MAX_HYPERPARAMETERS


def test_hyperparameter_count_at_and_past_the_limit(cloud: Cloud) -> None:
    """100 names pass SageMaker's count and reach the program's check (undeclared ones are
    refused by name); 101 are refused by SageMaker's limit, checked first."""
    before = len(cloud.executions())
    at_limit = cloud.smtrain("start", *MLP, *_hp_args([f"p{i}" for i in range(AWS_MAX_HYPERPARAMETERS)]))
    _refused(at_limit, f"hyperparameter 'p0' is not declared by program digits_mlp; {MLP_KNOWN}")
    assert "SageMaker accepts" not in at_limit.stderr
    # Declared names among them change nothing: the count comes first.
    declared = ["epochs", "batch-size", "learning-rate", "hidden-units", "seed"]
    one_more = cloud.smtrain("start", *MLP, *_hp_args(
        [*declared, *[f"p{i}" for i in range(AWS_MAX_HYPERPARAMETERS + 1 - len(declared))]]))
    _refused(one_more, f"{AWS_MAX_HYPERPARAMETERS + 1} hyperparameters given; SageMaker accepts at most "
                       f"{AWS_MAX_HYPERPARAMETERS}")
    assert len(cloud.executions()) == before


def test_hyperparameter_key_and_value_at_and_past_the_limit(cloud: Cloud) -> None:
    # A 2500-character value of a declared float (0.1 followed by zeros) is sent as typed.
    value = "0.1" + "0" * (AWS_MAX_HYPERPARAMETER_VALUE - 3)
    at_limit = cloud.smtrain("start", "--program", "digits_lightgbm", "--name", "hp-sizes", "--wait",
                             "--interval", "0.1", "--hp", f"learning_rate={value}")
    assert at_limit.returncode == 0, at_limit.stdout + at_limit.stderr
    assert _execution_input(cloud, "hp-sizes")["hyperparameters"] == {"learning_rate": value}
    (request,) = cloud.jobs_of("hp-sizes")
    assert request["HyperParameters"]["learning_rate"] == value
    before = len(cloud.executions())
    _refused(cloud.smtrain("start", "--program", "digits_lightgbm", "--hp", f"learning_rate={value}0"),
             f"value is {AWS_MAX_HYPERPARAMETER_VALUE + 1} characters; SageMaker accepts at most "
             f"{AWS_MAX_HYPERPARAMETER_VALUE}")
    # No declared name is 256 characters long: one passes SageMaker's length check and is refused
    # as undeclared; one character more is refused by the length check, which comes first.
    key = "k" * AWS_MAX_HYPERPARAMETER_KEY
    longest = cloud.smtrain("start", "--program", "digits_lightgbm", "--hp", f"{key}=1")
    _refused(longest, f"hyperparameter '{key}' is not declared by program digits_lightgbm")
    _refused(cloud.smtrain("start", "--program", "digits_lightgbm", "--hp", f"{key}k=1"),
             f"is longer than {AWS_MAX_HYPERPARAMETER_KEY} characters")
    assert len(cloud.executions()) == before


def test_instance_count_at_and_past_the_stack_ceiling(cloud: Cloud) -> None:
    """The deployed stack's MaxInstanceCount output is the CLI's ceiling."""
    assert cloud.stack_outputs[OUTPUT_MAX_COUNT] == str(STACK_MAX_INSTANCE_COUNT)
    at_limit = cloud.smtrain("start", "--program", "digits_lightgbm", "--name", "max-instances",
                             "--instance-count", str(STACK_MAX_INSTANCE_COUNT), env=cloud.deployed_env())
    assert at_limit.returncode == 0, at_limit.stderr
    assert _execution_input(cloud, "max-instances")["instanceCount"] == STACK_MAX_INSTANCE_COUNT
    before = len(cloud.executions())
    _refused(cloud.smtrain("start", "--program", "digits_lightgbm", "--instance-count",
                           str(STACK_MAX_INSTANCE_COUNT + 1), env=cloud.deployed_env()),
             f"instance count {STACK_MAX_INSTANCE_COUNT + 1} must be from 1 to {STACK_MAX_INSTANCE_COUNT}")
    assert len(cloud.executions()) == before


def test_instance_types_on_and_off_the_stack_allow_list(cloud: Cloud) -> None:
    allowed = cloud.stack_outputs[OUTPUT_ALLOWED_TYPES].split(",")
    on_list = cloud.smtrain("start", "--program", "digits_lightgbm", "--name", "allowed-type",
                            "--instance-type", allowed[-1], env=cloud.deployed_env())
    assert on_list.returncode == 0, on_list.stderr
    assert _execution_input(cloud, "allowed-type")["instanceType"] == allowed[-1]
    before = len(cloud.executions())
    _refused(cloud.smtrain("start", "--program", "digits_lightgbm", "--instance-type", "ml.m5.4xlarge",
                           env=cloud.deployed_env()),
             f"instance type ml.m5.4xlarge is not on the stack's allow-list: {', '.join(allowed)}")
    assert len(cloud.executions()) == before


@pytest.mark.parametrize(("args", "cause"), [
    (["--instance-count", str(STACK_MAX_INSTANCE_COUNT + 5)],
     f"field 'instanceCount' must be from 1 to {STACK_MAX_INSTANCE_COUNT}"),
    (["--instance-type", "ml.p5.48xlarge"],
     "field 'instanceType' must be one of ml.m5.large, ml.m5.xlarge, ml.m5.2xlarge"),
], ids=["count", "type"])
@pytest.mark.parametrize("located_by", ["explicit", "stack-before-limits"])
def test_without_the_limit_outputs_the_state_machine_refuses(cloud: Cloud, args: list[str], cause: str,
                                                             located_by: str) -> None:
    """With the state machine given explicitly, or a stack deployed before the limit outputs, the
    CLI checks only SageMaker-wide limits; the state machine refuses past the deployed ones
    before any SageMaker call."""
    if located_by == "explicit":
        env, where = cloud.env(), []
    else:
        env, where = cloud.deployed_env(), ["--stack-name", cloud.stack_before_limits]
    name = f"limits-{located_by}-{args[0].removeprefix('--')}"
    started = cloud.smtrain("start", "--program", "digits_lightgbm", "--name", name, *args, *where, env=env)
    assert started.returncode == 0, started.stdout + started.stderr
    watched = cloud.smtrain("watch", name, "--interval", "0.1")
    assert watched.returncode == 1, watched.stdout + watched.stderr
    assert "FAILED: InvalidExecutionInput" in watched.stdout
    description = cloud.describe(name)
    assert description["error"] == "InvalidExecutionInput" and cause in description["cause"]
    assert cloud.jobs_of(name) == []


def test_execution_name_at_and_past_the_limit(cloud: Cloud) -> None:
    longest = "n" * AWS_MAX_EXECUTION_NAME
    at_limit = cloud.smtrain("start", "--program", "digits_lightgbm", "--name", longest)
    assert at_limit.returncode == 0, at_limit.stderr
    assert any(e["name"] == longest for e in cloud.executions())
    before = len(cloud.executions())
    _refused(cloud.smtrain("start", "--program", "digits_lightgbm", "--name", longest + "n"),
             "must be 1-80 characters")
    assert len(cloud.executions()) == before
    # The commands that take a name check it the same way.
    _refused(cloud.smtrain("status", "run(1)"), "must be 1-80 characters of letters, digits, '-' and '_'")


@pytest.mark.parametrize("name", ["run(1)", "run!", "it's", "run.1", "run 1", "rün", "run\n", "run:1", ""],
                         ids=["parens", "bang", "quote", "dot", "space", "non-ascii", "newline", "colon",
                              "empty"])
def test_execution_names_that_would_break_the_job_tag_are_refused(cloud: Cloud, name: str) -> None:
    """Step Functions itself accepts some of these, but the name becomes the jobs' tag value."""
    before = len(cloud.executions())
    _refused(cloud.smtrain("start", "--program", "digits_lightgbm", "--name", name),
             "must be 1-80 characters of letters, digits, '-' and '_'")
    assert len(cloud.executions()) == before


def _with_a_broken_program(cloud: Cloud, tmp_path: Path) -> dict[str, str]:
    """The shipped programs plus one whose manifest does not load (a team member's work)."""
    code = shipped_training_code(tmp_path / "training_code")
    broken = code / "half_done"
    broken.mkdir()
    (broken / "program.toml").write_text('name = "half_done"\nkind = "script"\n[script\n')
    return cloud.env(SMTRAIN_TRAINING_CODE=str(code))


def test_one_broken_manifest_does_not_stop_the_other_programs(cloud: Cloud, tmp_path: Path) -> None:
    env = _with_a_broken_program(cloud, tmp_path)
    result = cloud.smtrain("start", "--program", "digits_mlp", "--name", "beside-a-broken-one",
                           "--wait", "--interval", "0.1", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    (warning,) = [line for line in result.stderr.splitlines() if "warning" in line]
    assert warning.startswith("smtrain: warning: program 'half_done' left out: ")
    assert "half_done/program.toml: not valid TOML" in warning and "cdk synth" in warning
    assert "Traceback" not in result.stderr


def test_the_broken_program_itself_is_refused_in_one_line(cloud: Cloud, tmp_path: Path) -> None:
    env = _with_a_broken_program(cloud, tmp_path)
    result = cloud.smtrain("start", "--program", "half_done", env=env)
    assert result.returncode == 2
    assert result.stderr.startswith("smtrain: error: ") and len(result.stderr.splitlines()) == 1
    assert "half_done/program.toml: not valid TOML" in result.stderr
