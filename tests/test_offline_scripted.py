"""The real synthesized definition on moto's ASL interpreter, SageMaker answering from a script."""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from infra.settings import Settings
from smtrain.local.backend import SageMakerError
from smtrain.local.engine import ExecutionResult, OfflineEngine
from tests.conftest import shipped_training_code, synthesize
from tests.helpers import Synthesized
from tests.scripted_sagemaker import JobScript, ScriptedBackend, limit_exceeded, scripted_engine, throttling

#: botocore's sagemaker model (2017-07-24), shape TrainingJobName: this pattern, at most 63.
JOB_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
TRAINING_JOB_NAME_MAX = 63
#: The same model, shape HyperParameterTuningJobName: this pattern, at most 32.
TUNING_JOB_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,31}$")
TUNING_JOB_NAME_MAX = 32


class Harness:
    """Runs executions of the engine's state machine, or of ``state_machine_arn`` (another
    definition on the same interpreter and scripted SageMaker)."""

    def __init__(self, engine: OfflineEngine, backend: ScriptedBackend,
                 state_machine_arn: str | None = None) -> None:
        self.engine, self.backend = engine, backend
        self.state_machine_arn = state_machine_arn
        self._count = 0

    def run(self, execution_input: dict[str, Any], script: JobScript | None = None) -> Any:
        self.backend.script = script or JobScript()
        self._count += 1
        name = f"run-{self._count}"
        if self.state_machine_arn is None:
            return self.engine.run(execution_input, name=name, timeout=120)
        arn = self.engine.client.start_execution(
            stateMachineArn=self.state_machine_arn, name=name,
            input=json.dumps(execution_input))["executionArn"]
        return self.engine.wait(arn, timeout=120)

    def training_requests(self) -> list[dict[str, Any]]:
        return self.backend.created("create_training_job")


@pytest.fixture(scope="module")
def harness(synthesized: Synthesized, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    backend = ScriptedBackend()
    with scripted_engine(outdir=synthesized.outdir, work_dir=tmp_path_factory.mktemp("scripted"),
                       backend=backend) as engine:
        yield Harness(engine, backend)


@pytest.fixture(autouse=True)
def fresh_requests(harness: Harness) -> None:
    harness.backend.requests.clear()
    harness.backend.stopped.clear()


def test_a_job_s_end_and_the_execution_s_end_are_seen_at_once_not_at_the_next_poll(
        harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the .sync task's polls and the engine's 30 s apart, a run whose job reports
    InProgress, then Completed, ends long before one poll: the task's wait ended as the job's
    status moved (the scripted job moves at once; a local job as its process ends), the engine's
    as the execution ended (smtrain.local.wakeups)."""
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import (
        state_task_service_callback,
    )

    monkeypatch.setattr(state_task_service_callback, "_DELAY_SECONDS_SYNC_CONDITION_CHECK", 30)
    harness.backend.script = JobScript(statuses=("InProgress", "Completed"))
    started = time.monotonic()
    arn = harness.engine.start({"program": "digits_mlp"}, name="wakeups")
    result = harness.engine.wait(arn, poll=30, timeout=120)
    assert result.status == "SUCCEEDED", (result.error, result.cause)
    assert time.monotonic() - started < 20, "a wait lasted its whole poll interval"
    assert len(harness.training_requests()) == 1


#: A copy of digits_mlp that also declares text hyperparameters ``note0``..``note29``: what a team's
#: program may declare (up to SageMaker's 100 hyperparameters of 2,500 characters), and the one
#: way an execution input can make SageMaker's describe answer, which echoes the request, large.
PADDED_PROGRAM = "digits_mlp_padded"
NOTES = tuple(f"note{index}" for index in range(30))


def padded_training_code(destination: Path) -> Path:
    """The shipped training_code/ plus :data:`PADDED_PROGRAM`, added as a folder only."""
    code = shipped_training_code(destination)
    shutil.copytree(code / "digits_mlp", code / PADDED_PROGRAM)
    manifest = code / PADDED_PROGRAM / "program.toml"
    text = manifest.read_text()
    assert text.count('name = "digits_mlp"') == 1
    manifest.write_text(text.replace('name = "digits_mlp"', f'name = "{PADDED_PROGRAM}"') + "".join(
        f'\n[hyperparameters.{note}]\ntype = "str"\ntunable = false\n' for note in NOTES))
    # The script must define every declared hyperparameter as an option (programs.load checks
    # it); nothing here trains, so the options are only declared.
    script = code / PADDED_PROGRAM / "train.py"
    script.write_text(script.read_text() + "\n\nimport argparse as _notes\n_NOTES = _notes.ArgumentParser()\n"
                      + "".join(f'_NOTES.add_argument("--{note}")\n' for note in NOTES))
    return code


@pytest.fixture(scope="module")
def padded(harness: Harness, cdk_context: dict[str, Any], settings: Settings,
           tmp_path_factory: pytest.TempPathFactory) -> Harness:
    """The app synthesized with :data:`PADDED_PROGRAM` beside the shipped programs, its state
    machine run on the harness's interpreter and scripted SageMaker (one engine serves SageMaker
    at a time: this one is built for its deployment only, retries shortened alike)."""
    code = padded_training_code(tmp_path_factory.mktemp("padded-training-code"))
    app = synthesize(cdk_context, settings, tmp_path_factory.mktemp("cdk.out-padded"),
                     training_code_dir=code)
    deployment = scripted_engine(outdir=app.outdir, work_dir=tmp_path_factory.mktemp("padded"),
                               backend=harness.backend).deployment
    arn = harness.engine.client.create_state_machine(
        name=f"{deployment.state_machine_name}-padded", type="STANDARD",
        definition=json.dumps(deployment.definition),
        roleArn="arn:aws:iam::123456789012:role/local-state-machine")["stateMachineArn"]
    # Its deployment has one more program, so one more model package group.
    registry = harness.engine.registry
    registry.groups = tuple({*(registry.groups or ()), *deployment.model_groups.values()})
    return Harness(harness.engine, harness.backend, state_machine_arn=arn)


#: The stack key as the offline deployment names it (smtrain/local/deployment.py).
LOCAL_KEY_ARN = "arn:aws:kms:us-east-1:123456789012:key/local-data-key"


def test_script_mode_request(harness: Harness) -> None:
    result = harness.run({"program": "digits_mlp", "hyperparameters": {"epochs": "3"}})
    assert result.succeeded, result.cause
    (request,) = harness.training_requests()
    assert JOB_NAME.match(request["TrainingJobName"]) and len(request["TrainingJobName"]) <= 63
    assert request["TrainingJobName"].startswith("smtrain-") and request["TrainingJobName"].endswith("-0")
    assert request["AlgorithmSpecification"]["TrainingImage"].endswith("pytorch-training:2.5-cpu-py311")
    assert [m["Name"] for m in request["AlgorithmSpecification"]["MetricDefinitions"]] == [
        "train:loss", "validation:loss", "validation:accuracy"]
    # Each program's jobs run as its own role and write under its own prefix (docs/security.md).
    assert request["RoleArn"] == "arn:aws:iam::123456789012:role/local-execution-role-digits-mlp-role"
    assert request["OutputDataConfig"]["S3OutputPath"] == "s3://local-buckets-artifacts/models/digits_mlp/"
    hp = request["HyperParameters"]
    assert hp["epochs"] == "3", "the user's value wins over the default"
    assert hp["batch-size"] == "64" and hp["learning-rate"] == "0.01" and hp["hidden-units"] == "64", \
        "the manifest's defaults fill the rest"
    assert hp["seed"] == "42", "an untunable default is sent on every job"
    assert hp["sagemaker_program"] == "train.py", "the manifest's entry point"
    # Under the default network (sealed) the code is the `code` channel, read in the container.
    code_uri = hp["sagemaker_submit_directory"]
    assert re.fullmatch(r"/opt/ml/input/data/code/[0-9a-f]{64}\.gz", code_uri), code_uri
    assert {name for name in hp if not name.startswith("sagemaker_")} == {
        "epochs", "batch-size", "learning-rate", "hidden-units", "seed"}
    assert all(isinstance(v, str) for v in hp.values())
    assert [(c["ChannelName"], c["ContentType"], c["DataSource"]["S3DataSource"]["S3Uri"])
            for c in request["InputDataConfig"] if c["ChannelName"] != "code"] == [
        ("train", "text/csv", "s3://local-buckets-data/datasets/digits_mlp/train/"),
        ("validation", "text/csv", "s3://local-buckets-data/datasets/digits_mlp/validation/")]
    (code,) = [c for c in request["InputDataConfig"] if c["ChannelName"] == "code"]
    assert code["DataSource"]["S3DataSource"]["S3Uri"] == (
        "s3://cdk-hnb659fds-assets-123456789012-us-east-1/" + code_uri.rsplit("/", 1)[1])
    # ml.m5 has no local storage: its EBS volume is encrypted with the stack key.
    assert request["ResourceConfig"] == {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1,
                                         "VolumeSizeInGB": 30, "VolumeKmsKeyId": LOCAL_KEY_ARN}
    assert request["EnableInterContainerTrafficEncryption"] is False, "one instance: nothing to encrypt"
    assert "VpcConfig" not in request and request["EnableNetworkIsolation"] is True, "network: sealed"
    assert request["StoppingCondition"] == {"MaxRuntimeInSeconds": 3600}
    assert request["EnableManagedSpotTraining"] is False
    assert {t["Key"]: t["Value"] for t in request["Tags"]} == {"project": "smtrain",
                                                               "smtrain:execution": result.name,
                                                               "smtrain:program": "digits_mlp",
                                                               "smtrain:kind": "script"}
    assert result.output["program"] == "digits_mlp"
    assert result.output["trainingJobName"] == request["TrainingJobName"]
    assert result.output["modelArtifacts"].endswith("/output/model.tar.gz")
    assert result.output["metrics"][0]["MetricName"] == "validation:accuracy"


def test_gpu_instance_gets_the_gpu_image(harness: Harness) -> None:
    assert harness.run({"method": "script", "instanceType": "ml.g5.xlarge"}).succeeded
    (request,) = harness.training_requests()
    assert request["AlgorithmSpecification"]["TrainingImage"].endswith("pytorch-training:2.5-gpu-py311")


def test_byoc_request(harness: Harness) -> None:
    assert harness.run({"method": "byoc", "inputs": {"train": "s3://elsewhere/train/"}}).succeeded
    (request,) = harness.training_requests()
    image = request["AlgorithmSpecification"]["TrainingImage"]
    (byoc_image,) = harness.engine.deployment.byoc_programs  # the shipped app's only BYOC program
    assert image == byoc_image
    assert re.fullmatch(r"123456789012\.dkr\.ecr\.us-east-1\.amazonaws\.com/"
                        r"local-training-images-repository:[0-9a-f]{64}", image)
    assert request["HyperParameters"] == {"num_boost_round": "100", "learning_rate": "0.1",
                                          "num_leaves": "31", "seed": "42"}
    uris = [c["DataSource"]["S3DataSource"]["S3Uri"] for c in request["InputDataConfig"]]
    assert uris == ["s3://elsewhere/train/",
                    "s3://local-buckets-data/datasets/digits_lightgbm/validation/"]
    assert {t["Key"]: t["Value"] for t in request["Tags"]}["smtrain:program"] == "digits_lightgbm"


def test_builtin_request(harness: Harness) -> None:
    result = harness.run({"method": "builtin"})
    assert result.succeeded, result.cause
    assert result.output["program"] == "digits_xgboost", "the one program of that kind"
    (request,) = harness.training_requests()
    assert request["AlgorithmSpecification"]["TrainingImage"] == (
        "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1")
    assert "MetricDefinitions" not in request["AlgorithmSpecification"]
    assert request["HyperParameters"] == {"objective": "multi:softmax", "num_class": "10",
                                          "num_round": "100", "eval_metric": "merror",
                                          "max_depth": "5", "eta": "0.2"}
    assert all(c["ContentType"] == "text/csv" for c in request["InputDataConfig"])


def test_spot_adds_max_wait_and_checkpoints(harness: Harness) -> None:
    result = harness.run({"method": "script", "spot": True, "maxRuntimeInSeconds": 1800})
    assert result.succeeded, result.cause
    (request,) = harness.training_requests()
    assert request["EnableManagedSpotTraining"] is True
    assert request["StoppingCondition"] == {"MaxRuntimeInSeconds": 1800, "MaxWaitTimeInSeconds": 7200}
    checkpoint = request["CheckpointConfig"]["S3Uri"]
    assert re.fullmatch(r"s3://local-buckets-artifacts/checkpoints/digits_mlp/[0-9a-f-]{36}/", checkpoint)
    assert checkpoint.split("/")[-2] in request["TrainingJobName"]


@pytest.mark.parametrize("tuning", [False, True])
def test_throttled_create_is_retried_under_a_new_name(harness: Harness, tuning: bool) -> None:
    """Throttling (SageMaker.AmazonSageMakerException, "Error Code: ThrottlingException" in the
    cause) and an account limit (SageMaker.ResourceLimitExceededException) are retried."""
    script = JobScript(create_errors=[throttling(), limit_exceeded()])
    execution_input: dict[str, Any] = {"method": "script"}
    if tuning:
        execution_input["tuning"] = {}
    result = harness.run(execution_input, script)
    assert result.succeeded, result.cause
    action, field = (("create_hyper_parameter_tuning_job", "HyperParameterTuningJobName") if tuning
                     else ("create_training_job", "TrainingJobName"))
    names = [r[field] for r in harness.backend.created(action)]
    assert len(names) == 3
    assert [n.rsplit("-", 1)[1] for n in names] == ["0", "1", "2"]
    assert len(set(names)) == 3 and len({n.rsplit("-", 1)[0] for n in names}) == 1


def test_retries_stop_after_three_attempts(harness: Harness) -> None:
    result = harness.run({"method": "script"}, JobScript(create_errors=[throttling()] * 4))
    assert result.status == "FAILED" and result.error == "TrainingJobFailed"
    assert "Error Code: ThrottlingException" in result.cause
    assert len(harness.training_requests()) == 3


def test_failure_reason_reaches_the_execution(harness: Harness) -> None:
    script = JobScript(statuses=("InProgress", "Failed"),
                       failure_reason="AlgorithmError: CUDA out of memory")
    result = harness.run({"method": "script"}, script)
    assert result.status == "FAILED"
    assert result.error == "TrainingJobFailed"
    assert result.cause.startswith("States.TaskFailed: ")
    described = json.loads(result.cause.removeprefix("States.TaskFailed: "))
    assert described["FailureReason"] == "AlgorithmError: CUDA out of memory"
    assert len(harness.training_requests()) == 1, "a failed job is not retried"


def test_a_validation_error_is_not_retried_and_its_message_reaches_the_cause(
        harness: Harness) -> None:
    """A ValidationException arrives under the same error name as throttling; only the cause
    differs, and it is not retried."""
    script = JobScript(create_errors=[SageMakerError("ValidationException", "bad image")])
    result = harness.run({"method": "script"}, script)
    assert result.status == "FAILED" and result.error == "TrainingJobFailed"
    assert re.fullmatch(
        r"SageMaker\.AmazonSageMakerException: bad image \(Service: AmazonSageMaker; Status Code: "
        r"400; Error Code: ValidationException; Request ID: [0-9a-f-]{36}\)", result.cause)
    assert len(harness.training_requests()) == 1


SHIPPED = "digits_lightgbm, digits_mlp, digits_xgboost"
ALLOWED_FIELDS = ("program, method, hyperparameters, instanceType, instanceCount, volumeSizeInGB, "
                  "maxRuntimeInSeconds, spot, keepAliveSeconds, inputs, channelOptions, tuning")
MLP_HYPERPARAMETERS = "batch-size, epochs, hidden-units, learning-rate, seed"

BAD_INPUTS: list[tuple[dict[str, Any], str, str]] = [
    ({}, "InvalidExecutionInput", f"field 'program' is required: one of {SHIPPED}"),
    ({"program": "sklearn"}, "UnknownProgram", f"field 'program' must be one of {SHIPPED}"),
    ({"program": 3}, "UnknownProgram", f"field 'program' must be one of {SHIPPED}"),
    ({"method": "sklearn"}, "UnknownProgram",
     f"field 'method' names no program: give field 'program', one of {SHIPPED}"),
    ({"method": 3}, "UnknownProgram",
     f"field 'method' names no program: give field 'program', one of {SHIPPED}"),
    ({"program": "digits_mlp", "method": "script"}, "InvalidExecutionInput",
     "give field 'program' or the older 'method', not both"),
    # A field the input has no place for is refused, not ignored: a typo of one it has, or a
    # feature it lacks.
    ({"program": "digits_mlp", "hyperparameter": {"epochs": "3"}}, "InvalidExecutionInput",
     f"unknown field(s) hyperparameter; allowed: {ALLOWED_FIELDS}"),
    ({"program": "digits_mlp", "registry": {}}, "InvalidExecutionInput",
     f"unknown field(s) registry; allowed: {ALLOWED_FIELDS}"),
    ({"program": "digits_mlp", "register": {"minimum": {"accuracy": 0.9}}}, "InvalidExecutionInput",
     "register.minimum names 'accuracy', not a metric of program digits_mlp: train:loss, "
     "validation:loss, validation:accuracy"),
    # Hyperparameters are the program's declared ones: the user cannot override the fixed
    # sagemaker_* values (the entry point, the code's location) nor send names it does not read.
    ({"program": "digits_mlp", "hyperparameters": {"epochs": "3", "sagemaker_program": "evil.py"}},
     "InvalidExecutionInput", "hyperparameter 'sagemaker_program' is not declared by program "
     f"digits_mlp; known: {MLP_HYPERPARAMETERS}"),
    ({"method": "script", "hyperparameters": {"sagemaker_submit_directory": "s3://evil/code.tar.gz"}},
     "InvalidExecutionInput", "hyperparameter 'sagemaker_submit_directory' is not declared by "
     f"program digits_mlp; known: {MLP_HYPERPARAMETERS}"),
    ({"program": "digits_mlp", "hyperparameters": {"note0": "x"}}, "InvalidExecutionInput",
     f"hyperparameter 'note0' is not declared by program digits_mlp; known: {MLP_HYPERPARAMETERS}"),
    ({"program": "digits_mlp", "hyperparameters": {"epochs": 3}}, "InvalidExecutionInput",
     "hyperparameter 'epochs' must be a string"),
    ({"program": "digits_mlp", "hyperparameters": {"epochs": "2.5"}}, "InvalidExecutionInput",
     "hyperparameter 'epochs' must be a whole number, got '2.5'"),
    ({"program": "digits_lightgbm", "hyperparameters": {"learning_rate": "2.10"}},
     "InvalidExecutionInput", "hyperparameter 'learning_rate' must be at most 1, got 2.10"),
    ({"program": "digits_mlp", "inputs": {"test": "s3://data-bucket/test/"}}, "InvalidExecutionInput",
     "input channel 'test' is not read by program digits_mlp; its channels: train, validation"),
    ({"program": "digits_mlp", "tuning": {"strategy": "Grid", "parameterRanges": {
        "CategoricalParameterRanges": [{"Name": "seed", "Values": ["1", "2"]}]}}},
     "InvalidExecutionInput", "tuning range 'seed': program digits_mlp declares it not tunable"),
    ({"method": "script", "instanceType": "ml.p5.48xlarge"}, "InvalidExecutionInput",
     "field 'instanceType' must be one of"),
    ({"method": "script", "instanceCount": 9}, "InvalidExecutionInput",
     "field 'instanceCount' must be from 1 to 4"),
    ({"method": "script", "instanceCount": "2"}, "InvalidExecutionInput",
     "field 'instanceCount' must be a number"),
    ({"method": "script", "maxRuntimeInSeconds": 99999}, "InvalidExecutionInput",
     "field 'maxRuntimeInSeconds' must be from 1 to 3600"),
    ({"method": "script", "spot": "yes"}, "InvalidExecutionInput", "field 'spot' must be true or false"),
    ({"method": "script", "inputs": {"train": "/local/dir"}}, "InvalidExecutionInput",
     "field 'inputs.train' must be an S3 URI"),
    ({"method": "script", "tuning": {"strategy": "Genetic"}}, "InvalidExecutionInput",
     "field 'tuning.strategy' must be one of Bayesian, Random, Hyperband, Grid"),
    ({"method": "script", "tuning": {"maxJobs": 0}}, "InvalidExecutionInput",
     "field 'tuning.maxJobs' must be from 1 to 500"),
    ({"method": "script", "tuning": {"strategy": "Hyperband", "earlyStopping": "Auto"}},
     "InvalidExecutionInput", "field 'tuning.earlyStopping' must be Off with the Hyperband strategy"),
    ({"method": "script", "tuning": {"objective": {"metricName": "validation:accuracy"}}},
     "InvalidExecutionInput", "field 'tuning.objective.type' is required"),
    # SageMaker's integer fields refuse 2.0 and 1e3 alike (botocore: type integer).
    ({"method": "script", "instanceCount": 2.0}, "InvalidExecutionInput",
     "field 'instanceCount' must be a whole number"),
    ({"method": "script", "volumeSizeInGB": 1.5}, "InvalidExecutionInput",
     "field 'volumeSizeInGB' must be a whole number"),
    ({"method": "script", "tuning": {"maxJobs": 2.5}}, "InvalidExecutionInput",
     "field 'tuning.maxJobs' must be a whole number"),
    # Grid search takes only categorical ranges; each program's defaults have numeric ones.
    ({"method": "script", "tuning": {"strategy": "Grid"}}, "InvalidExecutionInput",
     "field 'tuning.parameterRanges' may hold only CategoricalParameterRanges with the Grid"),
    ({"method": "builtin", "tuning": {"strategy": "Grid", "parameterRanges": {
        "IntegerParameterRanges": [{"Name": "max_depth", "MinValue": "3", "MaxValue": "5"}]}}},
     "InvalidExecutionInput", "field 'tuning.parameterRanges' may hold only Categorical"),
    ({"method": "script", "tuning": {"strategy": "Grid", "parameterRanges": {
        "CategoricalParameterRanges": []}}}, "InvalidExecutionInput",
     "field 'tuning.parameterRanges' needs at least one CategoricalParameterRanges entry"),
    ({"method": "script", "tuning": {"maxJobs": 2, "maxParallelJobs": 3}}, "InvalidExecutionInput",
     "field 'tuning.maxParallelJobs' must not exceed 'tuning.maxJobs'"),
    # Hyperband: MaxResource at most 20,000 (API reference, HyperbandStrategyConfig).
    ({"method": "byoc", "tuning": {"strategy": "Hyperband",
                                   "hyperband": {"minResource": 1, "maxResource": 20001}}},
     "InvalidExecutionInput", "field 'tuning.hyperband.maxResource' must be from 1 to 20000"),
    ({"method": "byoc", "tuning": {"strategy": "Hyperband", "hyperband": {"maxResource": 5}}},
     "InvalidExecutionInput", "field 'tuning.hyperband.minResource' is required"),
    ({"method": "byoc", "tuning": {"strategy": "Hyperband",
                                   "hyperband": {"minResource": 6, "maxResource": 5}}},
     "InvalidExecutionInput", "field 'tuning.hyperband.minResource' must not exceed"),
    ({"method": "byoc", "tuning": {"strategy": "Hyperband",
                                   "hyperband": {"minResource": 1, "maxResource": 5.5}}},
     "InvalidExecutionInput", "field 'tuning.hyperband.maxResource' must be a whole number"),
    # One past AWS's limits (the values at them are accepted: test_values_at_the_limits_...).
    # VolumeSizeInGB: botocore's model says only "min 1"; SageMaker stores on gp2 volumes (API
    # reference, ResourceConfig.VolumeSizeInGB), which hold at most 16 TiB = 16384 GiB (EBS User
    # Guide, "Amazon EBS volume types").
    ({"method": "script", "volumeSizeInGB": 16385}, "InvalidExecutionInput",
     "field 'volumeSizeInGB' must be from 1 to 16384"),
    # Parallel training jobs per tuning job: 10 by default, at most 100 on request (developer
    # guide, "Resource Limits for Automatic Model Tuning"; botocore: MaxParallelTrainingJobs min 1).
    ({"method": "script", "tuning": {"maxJobs": 200, "maxParallelJobs": 101}}, "InvalidExecutionInput",
     "field 'tuning.maxParallelJobs' must be from 1 to 100"),
    # Warm pools: ResourceConfig.KeepAlivePeriodInSeconds "Valid Range: Minimum value of 0.
    # Maximum value of 21600" (API reference, ResourceConfig); "SageMaker AI managed warm pools
    # cannot be used with spot instances" (developer guide, Managed Warm Pools, Considerations).
    ({"method": "script", "keepAliveSeconds": 21601}, "InvalidExecutionInput",
     "field 'keepAliveSeconds' must be from 0 to 21600"),
    ({"method": "script", "keepAliveSeconds": -1}, "InvalidExecutionInput",
     "field 'keepAliveSeconds' must be from 0 to 21600"),
    ({"method": "script", "keepAliveSeconds": 600.0}, "InvalidExecutionInput",
     "field 'keepAliveSeconds' must be a whole number"),
    ({"method": "script", "keepAliveSeconds": "600"}, "InvalidExecutionInput",
     "field 'keepAliveSeconds' must be a number from 0 to 21600"),
    ({"method": "script", "keepAliveSeconds": 600, "spot": True}, "InvalidExecutionInput",
     "field 'keepAliveSeconds' must be 0 with spot: SageMaker managed warm pools cannot be used with spot"),
    ({"method": "script", "keepAliveSeconds": 600, "tuning": {"maxJobs": 2, "maxParallelJobs": 1}},
     "InvalidExecutionInput", "field 'keepAliveSeconds' applies to training runs only"),
    # A channel is an s3:// URI with a bucket and a key prefix (the state machine's contract).
    ({"method": "script", "inputs": {"train": "s3://bucket"}}, "InvalidExecutionInput",
     "field 'inputs.train' must be an S3 URI"),
    ({"method": "script", "inputs": {"validation": "https://bucket/prefix/"}}, "InvalidExecutionInput",
     "field 'inputs.validation' must be an S3 URI"),
    # channelOptions: SageMaker's values on the program's channels; Gzip in Pipe mode only
    # (API reference, Channel.CompressionType).
    ({"method": "script", "channelOptions": {"test": {"inputMode": "Pipe"}}}, "InvalidExecutionInput",
     "channel 'test' in field 'channelOptions' is not read by program digits_mlp; its channels: "
     "train, validation"),
    ({"method": "script", "channelOptions": {"train": {"inputMode": "Stream"}}}, "InvalidExecutionInput",
     "field 'channelOptions.train.inputMode' must be one of File, FastFile, Pipe"),
    ({"method": "script", "channelOptions": {"train": {"s3DataDistributionType": "Sharded"}}},
     "InvalidExecutionInput",
     "field 'channelOptions.train.s3DataDistributionType' must be one of FullyReplicated, ShardedByS3Key"),
    ({"method": "script", "channelOptions": {"train": {"compressionType": "Gzip"}}}, "InvalidExecutionInput",
     "channel 'train': compressionType Gzip is read in Pipe mode only (SageMaker's "
     "Channel.CompressionType), and its inputMode is File (the program's)"),
    ({"method": "script", "channelOptions": {"train": {"compressionType": "Gzip", "inputMode": "FastFile"}}},
     "InvalidExecutionInput", "channel 'train': compressionType Gzip is read in Pipe mode only"),
    ({"method": "script", "channelOptions": {"train": {"mode": "Pipe"}}}, "InvalidExecutionInput",
     "unknown field(s) mode in 'channelOptions.train'; allowed: inputMode, s3DataDistributionType, "
     "compressionType"),
    ({"method": "builtin", "channelOptions": {"train": {"inputMode": "Pipe"}}}, "InvalidExecutionInput",
     "channel 'train': program digits_xgboost's built-in algorithm refuses Pipe mode"),
    ({"method": "script", "channelOptions": {"train": "Pipe"}}, "InvalidExecutionInput",
     "field 'channelOptions.train' must be an object of inputMode, s3DataDistributionType, compressionType"),
]


@pytest.mark.parametrize(("execution_input", "error", "cause"), BAD_INPUTS,
                         ids=[json.dumps(i) for i, _, _ in BAD_INPUTS])
def test_bad_input_fails_fast_without_a_job(harness: Harness, execution_input: dict[str, Any],
                                            error: str, cause: str) -> None:
    result = harness.run(execution_input)
    assert result.status == "FAILED"
    assert result.error == error
    assert result.cause.startswith(cause), result.cause
    assert harness.backend.requests == []
    assert not any(s.startswith(("TrainModel", "TuneModel")) for s in result.states_entered())


@pytest.mark.parametrize("keep_alive", [1, 21600])
def test_keep_alive_reaches_the_training_request(harness: Harness, keep_alive: int) -> None:
    """keepAliveSeconds becomes ResourceConfig.KeepAlivePeriodInSeconds (AWS's limit accepted);
    without it the request asks for no warm pool (0 is the deployment's default)."""
    result = harness.run({"method": "script", "keepAliveSeconds": keep_alive})
    assert result.succeeded, result.cause
    (request,) = harness.training_requests()
    assert request["ResourceConfig"]["KeepAlivePeriodInSeconds"] == keep_alive
    assert request["EnableManagedSpotTraining"] is False
    harness.backend.requests.clear()
    for without in ({"method": "script"}, {"method": "script", "keepAliveSeconds": 0}):
        assert harness.run(without).succeeded
    requests = harness.training_requests()
    assert len(requests) == 2 and all("KeepAlivePeriodInSeconds" not in r["ResourceConfig"] for r in requests)


def test_channel_options_reach_the_training_and_tuning_requests(harness: Harness) -> None:
    """channelOptions set each channel's InputMode, S3DataDistributionType and CompressionType in
    the request (botocore's model and the API reference's rules judge it); a File channel sends
    no InputMode and an uncompressed one no CompressionType, so the other channel's entry is the
    one every run sent before."""
    options = {"train": {"inputMode": "Pipe", "compressionType": "Gzip",
                         "s3DataDistributionType": "ShardedByS3Key"},
               "validation": {"inputMode": "FastFile"}}
    plain = {"ChannelName": "validation", "ContentType": "text/csv", "DataSource": {"S3DataSource": {
        "S3DataType": "S3Prefix", "S3DataDistributionType": "FullyReplicated"}}}
    result = harness.run({"program": "digits_lightgbm", "channelOptions": options, "instanceCount": 2})
    assert result.succeeded, result.cause
    (request,) = harness.training_requests()
    train, validation = request["InputDataConfig"]
    assert request["AlgorithmSpecification"]["TrainingInputMode"] == "File"
    assert (train["InputMode"], train["CompressionType"]) == ("Pipe", "Gzip")
    assert train["DataSource"]["S3DataSource"]["S3DataDistributionType"] == "ShardedByS3Key"
    assert validation["InputMode"] == "FastFile" and "CompressionType" not in validation
    harness.backend.requests.clear()
    tuned = harness.run({"program": "digits_lightgbm", "channelOptions": {"train": {"inputMode": "FastFile"}},
                         "tuning": {"maxJobs": 2, "maxParallelJobs": 1}})
    assert tuned.succeeded, tuned.cause
    (tuning,) = harness.backend.created("create_hyper_parameter_tuning_job")
    train, validation = tuning["TrainingJobDefinition"]["InputDataConfig"]
    assert train["InputMode"] == "FastFile"
    validation["DataSource"]["S3DataSource"].pop("S3Uri")
    assert validation == plain
    harness.backend.requests.clear()
    assert harness.run({"program": "digits_lightgbm"}).succeeded
    (request,) = harness.training_requests()
    for channel in request["InputDataConfig"]:
        assert "InputMode" not in channel and "CompressionType" not in channel
        assert channel["DataSource"]["S3DataSource"]["S3DataDistributionType"] == "FullyReplicated"


def test_a_hyperparameter_the_default_ranges_tune_cannot_also_be_given(harness: Harness) -> None:
    """With no parameterRanges of the user's, the program's default ranges are tuned
    (digits_mlp's: learning-rate, batch-size); SageMaker refuses a hyperparameter that is both
    tuned and static, so the input is refused by name, as when the user's own ranges tune it."""
    result = harness.run({"program": "digits_mlp", "hyperparameters": {"learning-rate": "0.05"},
                          "tuning": {}})
    assert (result.status, result.error) == ("FAILED", "InvalidExecutionInput"), result.cause
    assert (result.cause or "").startswith("hyperparameter(s) learning-rate both tuned and given")
    assert harness.backend.requests == []


@pytest.mark.parametrize(("execution_input", "name", "text"), [
    ({"program": "digits_mlp", "hyperparameters": {"learning-rate": "2.10"}}, "learning-rate", "2.10"),
    ({"program": "digits_lightgbm", "hyperparameters": {"learning_rate": "1e-3"}},
     "learning_rate", "1e-3"),
    ({"method": "builtin", "hyperparameters": {"eta": "0.10"}}, "eta", "0.10"),
    ({"program": "digits_xgboost", "hyperparameters": {"subsample": "0.50"}, "tuning": {}},
     "subsample", "0.50"),
], ids=["script", "byoc-exponent", "builtin", "builtin-tuning"])
def test_hyperparameter_values_reach_sagemaker_exactly_as_typed(
        harness: Harness, execution_input: dict[str, Any], name: str, text: str) -> None:
    """A float's text is not normalised on the way (2.10 is not sent as 2.1)."""
    result = harness.run(execution_input)
    assert result.succeeded, result.cause
    ((action, request),) = harness.backend.requests
    hyperparameters = (request["HyperParameters"] if action == "create_training_job"
                       else request["TrainingJobDefinition"]["StaticHyperParameters"])
    assert hyperparameters[name] == text


@pytest.mark.parametrize("name", ["run(1)", "bang!", "it's"])
def test_execution_names_that_are_no_tag_value_are_refused(harness: Harness, name: str) -> None:
    """Jobs carry the execution name as a tag; a tag value allows no ( ) ! ' (botocore's
    TagValue pattern), although Step Functions allows them in execution names."""
    harness.backend.script = JobScript()
    result = harness.engine.run({"method": "script"}, name=name, timeout=60)
    assert result.status == "FAILED" and result.error == "InvalidExecutionInput"
    assert (result.cause or "").startswith("the execution name must not contain ( ) ! '")
    assert harness.backend.requests == []


def test_tuning_request_and_small_output_with_500_jobs(padded: Harness) -> None:
    """DescribeHyperParameterTuningJob echoes the request (here ~30 KB of static
    hyperparameters, which the program declares); the task's ResultSelector keeps the
    execution's data small."""
    script = JobScript(tuning_jobs=500)
    padded.backend.listed.clear()
    padding = {note: "x" * 1000 for note in NOTES}
    result = padded.run({"program": PADDED_PROGRAM, "hyperparameters": {"epochs": "4", **padding},
                         "tuning": {"maxJobs": 500, "maxParallelJobs": 10}}, script)
    assert result.succeeded, result.cause
    (request,) = padded.backend.created("create_hyper_parameter_tuning_job")
    name = request["HyperParameterTuningJobName"]
    assert len(name) <= TUNING_JOB_NAME_MAX and TUNING_JOB_NAME.match(name)
    config = request["HyperParameterTuningJobConfig"]
    assert config["Strategy"] == "Bayesian"
    assert config["ResourceLimits"] == {"MaxNumberOfTrainingJobs": 500, "MaxParallelTrainingJobs": 10}
    assert config["HyperParameterTuningJobObjective"] == {"MetricName": "validation:accuracy",
                                                          "Type": "Maximize"}
    assert config["TrainingJobEarlyStoppingType"] == "Off"
    static = request["TrainingJobDefinition"]["StaticHyperParameters"]
    assert static["epochs"] == "4" and "learning-rate" not in static, "tuned names are not static"
    assert static["seed"] == "42", "an untunable default is sent to every trial"
    assert static["sagemaker_program"] == "train.py"
    assert all(static[note] == padding[note] for note in NOTES)
    assert len(json.dumps(static)) > 30_000
    output = json.dumps(result.output)
    assert len(output.encode()) < 32 * 1024, len(output)
    assert result.output["program"] == PADDED_PROGRAM
    assert result.output["tuningJobName"] == name
    assert result.output["trainingJobName"] == f"{name}-001-00000000"
    assert result.output["objective"]["Value"] == pytest.approx(0.97)
    assert result.output["trainingJobCounters"]["Completed"] == 500
    # What the 500 training jobs cost: listed 100 a page (five pages, each after the last's
    # token), each described; the price table ships empty, so none has a known cost.
    assert result.output["cost"] == {"usd": None, "trainingJobs": 500, "trainingJobsOfUnknownCost": 500}
    pages = padded.backend.listed
    assert [page.get("NextToken") for page in pages] == [None, "100", "200", "300", "400"]
    assert {page["MaxResults"] for page in pages} == {100}
    assert {page["HyperParameterTuningJobName"] for page in pages} == {name}


def test_grid_search_sends_no_job_count(harness: Harness) -> None:
    ranges = {"CategoricalParameterRanges": [{"Name": "epochs", "Values": ["2", "3"]}]}
    result = harness.run({"method": "script", "tuning": {"strategy": "Grid", "parameterRanges": ranges}})
    assert result.succeeded, result.cause
    (request,) = harness.backend.created("create_hyper_parameter_tuning_job")
    config = request["HyperParameterTuningJobConfig"]
    assert config["ResourceLimits"] == {"MaxParallelTrainingJobs": 2}
    assert "StrategyConfig" not in config


@pytest.mark.parametrize(("program", "max_resource"),
                         [("digits_mlp", 10), ("digits_lightgbm", 10), ("digits_xgboost", 100)])
def test_hyperband_with_defaults_sends_max_resource(harness: Harness, program: str,
                                                    max_resource: int) -> None:
    """With each program's defaults SageMaker cannot infer Hyperband's MaxResource (no static
    epochs-like hyperparameter), so the request must carry HyperbandStrategyConfig: the
    manifest's hyperband_max_resource (the metric lines a full run prints)."""
    result = harness.run({"program": program, "tuning": {"strategy": "Hyperband"}})
    assert result.succeeded, result.cause
    (request,) = harness.backend.created("create_hyper_parameter_tuning_job")
    config = request["HyperParameterTuningJobConfig"]
    assert config["Strategy"] == "Hyperband" and config["TrainingJobEarlyStoppingType"] == "Off"
    resources = config["StrategyConfig"]["HyperbandStrategyConfig"]
    assert resources == {"MinResource": 1, "MaxResource": max_resource}


def test_tuning_algorithm_has_no_training_only_fields(harness: Harness) -> None:
    """HyperParameterAlgorithmSpecification takes TrainingImage, TrainingInputMode,
    AlgorithmName and MetricDefinitions only (botocore's model)."""
    result = harness.run({"method": "script", "tuning": {}})
    assert result.succeeded, result.cause
    (request,) = harness.backend.created("create_hyper_parameter_tuning_job")
    algorithm = request["TrainingJobDefinition"]["AlgorithmSpecification"]
    assert set(algorithm) <= {"TrainingImage", "TrainingInputMode", "AlgorithmName",
                              "MetricDefinitions"}
    assert algorithm["MetricDefinitions"]


def test_spot_tuning_trials_checkpoint(harness: Harness) -> None:
    result = harness.run({"method": "byoc", "spot": True, "tuning": {}})
    assert result.succeeded, result.cause
    (request,) = harness.backend.created("create_hyper_parameter_tuning_job")
    definition = request["TrainingJobDefinition"]
    assert definition["EnableManagedSpotTraining"] is True
    assert definition["StoppingCondition"]["MaxWaitTimeInSeconds"] >= \
        definition["StoppingCondition"]["MaxRuntimeInSeconds"]
    assert re.fullmatch(r"s3://local-buckets-artifacts/checkpoints/digits_lightgbm/[0-9a-f]{12}/",
                        definition["CheckpointConfig"]["S3Uri"])


def test_stopping_the_execution_stops_the_job(harness: Harness) -> None:
    harness.backend.script = JobScript(statuses=("InProgress",))
    arn = harness.engine.start({"method": "script"}, name="to-be-stopped")
    deadline = time.monotonic() + 30
    while not harness.training_requests() and time.monotonic() < deadline:
        time.sleep(0.1)
    (request,) = harness.training_requests()
    harness.engine.stop(arn)
    result = harness.engine.wait(arn, timeout=60)
    assert result.status == "ABORTED"
    deadline = time.monotonic() + 10
    while not harness.backend.stopped and time.monotonic() < deadline:
        time.sleep(0.1)
    assert harness.backend.stopped == [request["TrainingJobName"]]


# -- AWS's limits, at the boundary ---------------------------------------------------------------

#: A large static payload of declared hyperparameters: SageMaker's describe answer of a tuning job
#: echoes it back.
PADDING = {note: "x" * 1000 for note in NOTES[:20]}

#: Executions whose bounded fields sit at their limits: AWS's (volume 1..16384 GiB, 100 parallel
#: training jobs; see BAD_INPUTS for the sources), cdk.json's (instanceCount up to
#: maxInstanceCount 4, maxRuntimeInSeconds up to 3600), the shortest channel URI the state
#: machine takes (a bucket and a one-character key prefix).
AT_LIMITS: dict[str, dict[str, Any]] = {
    "training": {"program": PADDED_PROGRAM, "volumeSizeInGB": 16384, "instanceCount": 4,
                 "maxRuntimeInSeconds": 3600, "inputs": {"train": "s3://data-bucket/t"},
                 "hyperparameters": PADDING},
    "tuning": {"program": PADDED_PROGRAM, "volumeSizeInGB": 1, "instanceCount": 1,
               "maxRuntimeInSeconds": 1,
               "hyperparameters": PADDING, "tuning": {"maxJobs": 100, "maxParallelJobs": 100}},
}


@dataclass(frozen=True)
class LimitRun:
    result: ExecutionResult
    request: dict[str, Any]


@pytest.fixture(scope="module")
def runs_at_limits(padded: Harness) -> dict[str, LimitRun]:
    runs = {}
    for kind, execution_input in AT_LIMITS.items():
        padded.backend.requests.clear()
        result = padded.run(execution_input)
        assert result.succeeded, result.cause
        ((_, request),) = padded.backend.requests
        runs[kind] = LimitRun(result, request)
    return runs


def test_values_at_the_limits_are_accepted(runs_at_limits: dict[str, LimitRun]) -> None:
    training = runs_at_limits["training"].request
    assert training["ResourceConfig"] == {"InstanceType": "ml.m5.xlarge", "InstanceCount": 4,
                                          "VolumeSizeInGB": 16384, "VolumeKmsKeyId": LOCAL_KEY_ARN}
    assert training["EnableInterContainerTrafficEncryption"] is True, "4 instances talk encrypted"
    assert training["StoppingCondition"] == {"MaxRuntimeInSeconds": 3600}
    assert training["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"] == "s3://data-bucket/t"
    tuning = runs_at_limits["tuning"].request
    assert tuning["HyperParameterTuningJobConfig"]["ResourceLimits"] == {
        "MaxNumberOfTrainingJobs": 100, "MaxParallelTrainingJobs": 100}
    assert tuning["TrainingJobDefinition"]["ResourceConfig"]["VolumeSizeInGB"] == 1
    assert tuning["TrainingJobDefinition"]["StoppingCondition"] == {"MaxRuntimeInSeconds": 1}


def test_channel_uri_without_a_bucket_fails_fast(harness: Harness) -> None:
    """SageMaker's S3Uri pattern (https|s3)://([^/]+)/?(.*) needs a bucket (botocore's model)."""
    result = harness.run({"method": "script", "inputs": {"train": "s3:///prefix/"}})
    assert result.error == "InvalidExecutionInput", result.cause
    assert (result.cause or "").startswith("field 'inputs.train' must be an S3 URI")
    assert harness.backend.requests == []


# -- What a task state hands on (its output in the execution history) -----------------------------

def _state_data(result: ExecutionResult, state: str, details: str, key: str) -> dict[str, Any]:
    found = [json.loads(event[details][key]) for event in result.events
             if event.get(details, {}).get("name") == state]
    assert found, f"{state} has no {details} in the history"
    data: dict[str, Any] = found[-1]
    return data


def state_input(result: ExecutionResult, state: str) -> dict[str, Any]:
    return _state_data(result, state, "stateEnteredEventDetails", "input")


def state_output(result: ExecutionResult, state: str) -> dict[str, Any]:
    return _state_data(result, state, "stateExitedEventDetails", "output")


def task_result(result: ExecutionResult, state: str) -> Any:
    """What the task added to its input (its result, wherever its ResultPath puts it)."""
    before, after = state_input(result, state), state_output(result, state)
    added = [value for key, value in after.items() if before.get(key) != value]
    assert len(added) == 1, f"{state} changed {len(added)} fields of its input"
    return added[0]


def _output_members(operation: str) -> set[str]:
    import botocore.session

    model = botocore.session.get_session().get_service_model("sagemaker")
    return set(model.operation_model(operation).output_shape.members)


@pytest.mark.parametrize(
    ("kind", "state", "operation", "kept"),
    [
        ("training", "TrainModel", "DescribeTrainingJob",
         {"TrainingJobName", "ModelArtifacts", "FinalMetricDataList"}),
        ("tuning", "TuneModel", "DescribeHyperParameterTuningJob",
         {"HyperParameterTuningJobName", "HyperParameterTuningJobStatus",
          "TrainingJobStatusCounters", "BestTrainingJob"}),
    ],
    ids=["training", "tuning"],
)
def test_task_output_keeps_only_the_trimmed_fields(runs_at_limits: dict[str, LimitRun], kind: str,
                                                   state: str, operation: str,
                                                   kept: set[str]) -> None:
    """SageMaker's describe answer echoes the request (hyperparameters included) and, for a
    tuning job, grows with its jobs; a state's data is limited to 256 KiB (Step Functions quotas)
    and States.DataLimitExceeded cannot be caught. The task's own output, not just the
    execution's (which a Pass state picks from), must hold only the trimmed fields."""
    run = runs_at_limits[kind]
    if kind == "tuning":
        # The describe answer echoes TrainingJobDefinition, 20 KB of static hyperparameters.
        assert len(json.dumps(run.request["TrainingJobDefinition"])) > 20_000
    trimmed = task_result(run.result, state)
    assert set(trimmed) == kept
    assert kept <= _output_members(operation), "AWS's field names"
    assert len(json.dumps(trimmed)) < 2048, len(json.dumps(trimmed))
    if kind == "training":
        assert re.fullmatch(r"s3://\S+/output/model\.tar\.gz", trimmed["ModelArtifacts"])


# -- The longest name prefix each task allows -----------------------------------------------------

#: ``<prefix>-<36-character UUID>-<attempt digit>`` and ``<prefix>-<12 hex digits>-<attempt
#: digit>``: the longest prefixes SageMaker's name limits leave room for (24 and 17).
LONGEST_TRAINING_PREFIX = TRAINING_JOB_NAME_MAX - len("-01234567-89ab-cdef-0123-456789abcdef-0")
LONGEST_TUNING_PREFIX = TUNING_JOB_NAME_MAX - len("-0123456789ab-0")


def _task_state(kind: str, name_prefix: str, deployed: dict[str, Any]) -> dict[str, Any]:
    """The state a task construct with ``name_prefix`` renders, with the deployed state's role,
    output location and key."""
    import aws_cdk as cdk

    from infra.constructs.training_job_task import TrainingJobTask
    from infra.constructs.tuning_job_task import TuningJobTask

    parameters = deployed["Parameters"] if kind == "training" else \
        deployed["Parameters"]["TrainingJobDefinition"]
    output = parameters["OutputDataConfig"]
    stack = cdk.Stack(cdk.App(), "Alone")
    # The role and locations come from the program's settings ($.method) as in the deployed state.
    task = (TrainingJobTask(stack, "Task", name_prefix=name_prefix, role_arns=["unused"],
                            kms_key_arn=output["KmsKeyId"]) if kind == "training" else
            TuningJobTask(stack, "Task", name_prefix=name_prefix, role_arns=["unused"], checkpoints=True,
                          kms_key_arn=output["KmsKeyId"]))
    state: dict[str, Any] = stack.resolve(task.to_state_json())
    return state


def _run_alone(harness: Harness, kind: str, state: dict[str, Any],
               execution_input: dict[str, Any], request: dict[str, Any]) -> ExecutionResult:
    """Run ``state`` as a state machine of its own, on the harness's interpreter and SageMaker,
    after a Pass that assigns the ``$channels`` variable the task reads (``DescribeChannels``
    assigns it in the real state machine) as the recorded ``request`` sent it."""
    client = harness.engine.client
    channels = (request.get("TrainingJobDefinition") or request)["InputDataConfig"]
    definition = {"StartAt": "Channels", "States": {
        "Channels": {"Type": "Pass", "Assign": {"channels": channels}, "Next": "Task"},
        "Task": {**state, "End": True}}}
    machine = client.create_state_machine(
        name=f"alone-{kind}", definition=json.dumps(definition),
        roleArn="arn:aws:iam::123456789012:role/local-state-machine")["stateMachineArn"]
    execution = client.start_execution(stateMachineArn=machine, name=f"alone-{kind}",
                                       input=json.dumps(execution_input))["executionArn"]
    return harness.engine.wait(execution, timeout=60)


@pytest.mark.parametrize(
    ("kind", "state_name", "longest", "limit", "pattern", "action", "field"),
    [
        ("training", "TrainModel", LONGEST_TRAINING_PREFIX, TRAINING_JOB_NAME_MAX, JOB_NAME,
         "create_training_job", "TrainingJobName"),
        ("tuning", "TuneModel", LONGEST_TUNING_PREFIX, TUNING_JOB_NAME_MAX, TUNING_JOB_NAME,
         "create_hyper_parameter_tuning_job", "HyperParameterTuningJobName"),
    ],
    ids=["training", "tuning"],
)
def test_longest_name_prefix_makes_names_sagemaker_takes(
        harness: Harness, runs_at_limits: dict[str, LimitRun], kind: str, state_name: str,
        longest: int, limit: int, pattern: re.Pattern[str], action: str, field: str) -> None:
    """A task refuses, when it is built, a prefix one character too long for SageMaker's name
    limit; the longest one it takes makes names of exactly the limit, which SageMaker accepts."""
    deployed = harness.engine.deployment.definition["States"][state_name]
    with pytest.raises(ValueError, match=rf"SageMaker allows {limit}$"):
        _task_state(kind, "p" * (longest + 1), deployed)
    state = _task_state(kind, "p" * longest, deployed)
    result = _run_alone(harness, kind, state, state_input(runs_at_limits[kind].result, state_name),
                        runs_at_limits[kind].request)
    assert result.succeeded, result.cause
    (request,) = harness.backend.created(action)
    name = request[field]
    assert pattern.match(name) and len(name) == limit, name
    assert name.startswith("p" * longest + "-")


@pytest.mark.parametrize("tuning", [False, True])
def test_multi_instance_script_mode_is_one_distributed_job(harness: Harness, tuning: bool) -> None:
    """Without a distribution, the PyTorch image runs one independent copy per instance. The SDK's
    PyTorch(distribution={"torch_distributed": {"enabled": True}}) sends this hyperparameter, which
    the image's toolkit reads to start torchrun across all hosts."""
    execution_input: dict[str, Any] = {"method": "script", "instanceCount": 2}
    if tuning:
        execution_input["tuning"] = {}
    result = harness.run(execution_input)
    assert result.succeeded, result.cause
    if tuning:
        (request,) = harness.backend.created("create_hyper_parameter_tuning_job")
        hyperparameters = request["TrainingJobDefinition"]["StaticHyperParameters"]
        count = request["TrainingJobDefinition"]["ResourceConfig"]["InstanceCount"]
    else:
        (request,) = harness.training_requests()
        hyperparameters, count = request["HyperParameters"], request["ResourceConfig"]["InstanceCount"]
    assert count == 2
    assert hyperparameters["sagemaker_torch_distributed_enabled"] == "true"


def test_one_instance_keeps_the_plain_launcher(harness: Harness) -> None:
    result = harness.run({"method": "script", "instanceCount": 1})
    assert result.succeeded, result.cause
    (request,) = harness.training_requests()
    assert "sagemaker_torch_distributed_enabled" not in request["HyperParameters"]


def test_builtin_tuning_trials_share_no_checkpoint(harness: Harness) -> None:
    """A tuning job's trials share one CheckpointConfig.S3Uri, restored into every trial that
    starts; SageMaker XGBoost resumes from what it finds there, so its trials get none."""
    result = harness.run({"method": "builtin", "spot": True, "tuning": {}})
    assert result.succeeded, result.cause
    (request,) = harness.backend.created("create_hyper_parameter_tuning_job")
    assert "CheckpointConfig" not in request["TrainingJobDefinition"]
    assert "TuneBuiltinModel" in result.states_entered()


# -- The model registry's failure paths ----------------------------------------------------------

def test_a_refused_registration_fails_the_run_and_names_the_model(harness: Harness) -> None:
    """SageMaker refusing CreateModelPackage (here: the group is gone) ends the execution in
    ModelRegistrationFailed; the cause names the trained model, so nothing is lost."""
    registry = harness.engine.registry
    groups = registry.groups
    registry.groups = ()
    try:
        result = harness.run({"program": "digits_mlp"})
    finally:
        registry.groups = groups
    assert result.status == "FAILED"
    assert result.error == "ModelRegistrationFailed"
    (request,) = harness.training_requests()
    model = f"{request['OutputDataConfig']['S3OutputPath']}{request['TrainingJobName']}/output/model.tar.gz"
    assert (result.cause or "").startswith(
        f"the model {model} of training job {request['TrainingJobName']} was not registered: ")
    assert "does not exist" in (result.cause or "")
    assert "RegistrationFailed" in result.states_entered()


def test_a_gate_on_a_metric_the_job_never_reported_keeps_the_model_out(harness: Harness) -> None:
    result = harness.run({"program": "digits_mlp"}, JobScript(metrics=()))
    assert result.succeeded, result.cause
    assert result.output is not None
    assert result.output["metrics"] == []
    (request,) = harness.training_requests()
    assert result.output["registered"] is False
    assert result.output["registrationReason"] == (
        f"not registered: validation:accuracy was not reported by training job "
        f"{request['TrainingJobName']}")
    assert "WriteQualityReport" not in result.states_entered()


def test_the_registration_is_idempotent_per_run(harness: Harness) -> None:
    """Each run registers its own version (the ClientToken is the run's UUID), two runs two."""
    first = harness.run({"program": "digits_lightgbm"})
    second = harness.run({"program": "digits_lightgbm"})
    assert first.output is not None and second.output is not None
    assert first.output["modelPackageArn"] != second.output["modelPackageArn"]
    assert first.output["modelPackageArn"].rsplit("/", 1)[-1].isdigit()


#: Every tuning rule, broken once: (the input's tuning object, the cause the run is refused with).
TUNING_RULES: list[tuple[dict[str, Any], str]] = [
    ({"strategy": "Genetic"}, "field 'tuning.strategy' must be one of Bayesian, Random, Hyperband, Grid"),
    ({"strategy": None}, "field 'tuning.strategy' must be one of Bayesian, Random, Hyperband, Grid"),
    ({"maxJobs": 501}, "field 'tuning.maxJobs' must be from 1 to 500"),
    ({"maxJobs": "4"}, "field 'tuning.maxJobs' must be a number from 1 to 500"),
    ({"maxJobs": 2.5}, "field 'tuning.maxJobs' must be a whole number"),
    ({"maxJobs": 4.0}, "field 'tuning.maxJobs' must be a whole number"),
    ({"maxParallelJobs": 0}, "field 'tuning.maxParallelJobs' must be from 1 to 100"),
    ({"maxJobs": 2, "maxParallelJobs": 3}, "field 'tuning.maxParallelJobs' must not exceed 'tuning.maxJobs'"),
    ({"objective": {"type": "Maximize"}}, "field 'tuning.objective.metricName' must be a metric name"),
    ({"objective": {"metricName": "validation:loss", "type": "Most"}},
     "field 'tuning.objective.type' must be one of Maximize, Minimize"),
    ({"earlyStopping": "Sometimes"}, "field 'tuning.earlyStopping' must be one of Off, Auto"),
    ({"strategy": "Hyperband", "earlyStopping": "Auto"},
     "field 'tuning.earlyStopping' must be Off with the Hyperband strategy"),
    ({"parameterRanges": None}, "field 'tuning.parameterRanges' is required"),
    ({"strategy": "Grid"}, "field 'tuning.parameterRanges' may hold only CategoricalParameterRanges"),
    ({"strategy": "Grid", "parameterRanges": {"CategoricalParameterRanges": []}},
     "field 'tuning.parameterRanges' needs at least one CategoricalParameterRanges entry"),
    ({"strategy": "Hyperband", "hyperband": {"minResource": 1}},
     "field 'tuning.hyperband.maxResource' is required with the Hyperband strategy"),
    ({"strategy": "Hyperband", "hyperband": {"minResource": 1, "maxResource": 20001}},
     "field 'tuning.hyperband.maxResource' must be from 1 to 20000"),
    ({"strategy": "Hyperband", "hyperband": {"minResource": 6, "maxResource": 5}},
     "field 'tuning.hyperband.minResource' must not exceed 'tuning.hyperband.maxResource'"),
    ({"strategy": "Hyperband", "hyperband": {"minResource": 1.0, "maxResource": 5}},
     "field 'tuning.hyperband.minResource' must be a whole number"),
]


@pytest.mark.parametrize(("tuning", "cause"), TUNING_RULES, ids=[json.dumps(t) for t, _ in TUNING_RULES])
def test_each_tuning_rule_is_one_text_for_the_state_machine_and_the_cli(
        harness: Harness, tmp_path: Path, capsys: pytest.CaptureFixture[str], tuning: dict[str, Any],
        cause: str) -> None:
    """The state machine's check and ``smtrain start --tune`` refuse the same tuning with the same
    words, from one JSONata text (:func:`smtrain.core.input_rules.rules`), which the
    definition's check state holds verbatim (with the programs' catalog bound)."""
    from smtrain.cli import EXIT_USAGE, main
    from smtrain.core import input_rules
    from smtrain.core.programs import discover

    check = harness.engine.deployment.definition["States"]["CheckProgramInput"]["Assign"]["inputCheck"]
    programs = {name: program for name, program in discover().items()
                if f'"{name}":' in check}  # the synthesized app's programs (the shipped ones)
    assert input_rules.rules() in check
    assert json.dumps(input_rules.catalog(programs), sort_keys=True) in check
    result = harness.run({"program": "digits_mlp", "tuning": tuning})
    assert (result.status, result.error) == ("FAILED", "InvalidExecutionInput")
    assert result.cause.startswith(cause), result.cause
    assert harness.backend.requests == []
    path = tmp_path / "tuning.json"
    path.write_text(json.dumps(tuning))
    assert main(["start", "--local", "--program", "digits_mlp", "--tune", str(path)]) == EXIT_USAGE
    assert capsys.readouterr().err.strip() == f"smtrain: error: {result.cause}"


def test_the_engines_registry_flags_a_model_archive_without_its_handler(harness: Harness) -> None:
    """The engine's registry reads the archives of its S3 stand-in: a script model whose
    model.tar.gz lacks code/inference.py (the SAGEMAKER_PROGRAM the state machine registers it
    with) would never serve (issue 19, item 6). The version names the model's frozen copy: a later
    write to the job's output changes nothing; only the copy is judged."""
    from tests.test_model_registry_local import _model_archive

    result = harness.run({"program": "digits_mlp"})
    assert result.succeeded and result.output is not None, result.cause
    arn, model = result.output["modelPackageArn"], result.output["modelArtifacts"]
    frozen = result.output["registeredModelData"]
    registry = harness.engine.registry
    assert registry.serving_problems(arn) == []  # the scripted job's archive has its handler
    _model_archive(harness.engine.local_path(model), {"model.pth": "weights"})
    assert registry.serving_problems(arn) == []  # the job's output is not what was registered
    _model_archive(harness.engine.local_path(frozen), {"model.pth": "weights"})
    (problem,) = registry.serving_problems(arn)
    assert problem.startswith(f"the model archive {frozen} has no code/inference.py: ")
    _model_archive(harness.engine.local_path(frozen), {"model.pth": "", "code/inference.py": ""})
    assert registry.serving_problems(arn) == []


# -- the offline engine's own GetExecutionHistory answer (smtrain/local/history_answer.py) -----
def test_histories_are_answered_as_moto_answers_them(harness: Harness,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Each history, written without moto's serializer, is moto's own answer byte for byte: a
    training run, a tuning run, a failed job and a refused input (every kind of event)."""
    from moto.stepfunctions.responses import StepFunctionResponse

    from smtrain.local import history_answer

    runs = [harness.run({"program": "digits_mlp"}),
            harness.run({"program": "digits_lightgbm", "tuning": {"maxJobs": 2, "maxParallelJobs": 2}}),
            harness.run({"method": "script"}, JobScript(statuses=("InProgress", "Failed"))),
            harness.run({"program": "nope"})]
    assert [run.status for run in runs] == ["SUCCEEDED", "SUCCEEDED", "FAILED", "FAILED"]
    bodies: list[bytes] = []

    def keep_body(response_dict: dict[str, Any], **_: Any) -> None:
        bodies.append(response_dict["body"])

    events = harness.engine.client.meta.events
    events.register("before-parse.sfn.GetExecutionHistory", keep_body)
    written: list[Any] = []
    write, output = history_answer.write, history_answer._operation()[0]

    def counted(value: Any, shape: Any) -> Any:
        answer = write(value, shape)
        if shape is output:  # a whole answer written (not one of its members)
            written.append(answer)
        return answer

    monkeypatch.setattr(history_answer, "write", counted)
    try:
        assert StepFunctionResponse.get_execution_history is history_answer.answer
        ours = [harness.engine.history(run.arn) for run in runs]
        assert len(written) == len(runs), "each history written here, none by moto's serializer"
        monkeypatch.setattr(StepFunctionResponse, "get_execution_history", history_answer._original)
        assert ours == [harness.engine.history(run.arn) for run in runs]
    finally:
        events.unregister("before-parse.sfn.GetExecutionHistory", keep_body)
    assert bodies[:len(runs)] == bodies[len(runs):]
    assert sum(len(events) for events in ours) > 50


def test_a_history_it_cannot_write_is_moto_s_to_answer() -> None:
    """A member moto might find under another name (or a value of another kind) is not written:
    moto's serializer answers instead."""
    from smtrain.local import history_answer

    shape, _ = history_answer._operation()
    event = {"id": 1, "previousEventId": 0, "type": "PassStateEntered",
             "timestamp": "2026-12-06T23:09:43.336Z"}
    assert history_answer.write({"events": [event]}, shape) == {"events": [
        {"timestamp": 1796598583.336, "type": "PassStateEntered", "id": 1, "previousEventId": 0}]}
    for odd in ({**event, "previous_event_id": 0}, {**event, "stateEnteredEventDetails": "text"}):
        with pytest.raises(history_answer.Unwritable):
            history_answer.write({"events": [odd]}, shape)
