"""The real synthesized definition on moto's ASL interpreter, SageMaker answering from a script."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

from smtrain.local.backend import SageMakerError
from smtrain.local.engine import OfflineEngine
from smtrain.local.scripted_backend import JobScript, ScriptedBackend
from tests.helpers import Synthesized

JOB_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")


class Harness:
    def __init__(self, engine: OfflineEngine, backend: ScriptedBackend) -> None:
        self.engine, self.backend = engine, backend
        self._count = 0

    def run(self, execution_input: dict[str, Any], script: JobScript | None = None) -> Any:
        self.backend.script = script or JobScript()
        self._count += 1
        return self.engine.run(execution_input, name=f"run-{self._count}", timeout=120)

    def training_requests(self) -> list[dict[str, Any]]:
        return self.backend.created("create_training_job")


@pytest.fixture(scope="module")
def harness(synthesized: Synthesized, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    backend = ScriptedBackend()
    with OfflineEngine(outdir=synthesized.outdir, work_dir=tmp_path_factory.mktemp("scripted"),
                       backend=backend, retry_interval_seconds=1) as engine:
        yield Harness(engine, backend)


@pytest.fixture(autouse=True)
def fresh_requests(harness: Harness) -> None:
    harness.backend.requests.clear()
    harness.backend.stopped.clear()


def test_script_mode_request(harness: Harness) -> None:
    result = harness.run({"method": "script", "hyperparameters": {"epochs": "3",
                                                                  "sagemaker_program": "evil.py"}})
    assert result.succeeded, result.cause
    (request,) = harness.training_requests()
    assert JOB_NAME.match(request["TrainingJobName"]) and len(request["TrainingJobName"]) <= 63
    assert request["TrainingJobName"].startswith("smtrain-") and request["TrainingJobName"].endswith("-0")
    assert request["AlgorithmSpecification"]["TrainingImage"].endswith("pytorch-training:2.5-cpu-py311")
    assert [m["Name"] for m in request["AlgorithmSpecification"]["MetricDefinitions"]] == [
        "train:loss", "validation:loss", "validation:accuracy"]
    assert request["RoleArn"] == "arn:aws:iam::123456789012:role/local-sage-maker-execution-role"
    hp = request["HyperParameters"]
    assert hp["epochs"] == "3", "the user's value wins over the default"
    assert hp["batch-size"] == "64" and hp["learning-rate"] == "0.01", "defaults fill the rest"
    assert hp["sagemaker_program"] == "train.py", "fixed values win over the user's"
    assert hp["sagemaker_submit_directory"].startswith("s3://cdk-hnb659fds-assets-123456789012-us-east-1/")
    assert all(isinstance(v, str) for v in hp.values())
    assert [c["DataSource"]["S3DataSource"]["S3Uri"] for c in request["InputDataConfig"]] == [
        "s3://local-buckets-data/datasets/script/train/",
        "s3://local-buckets-data/datasets/script/validation/"]
    assert request["ResourceConfig"] == {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1,
                                         "VolumeSizeInGB": 30}
    assert request["StoppingCondition"] == {"MaxRuntimeInSeconds": 3600}
    assert request["EnableManagedSpotTraining"] is False
    assert {t["Key"]: t["Value"] for t in request["Tags"]} == {"smtrain:execution": result.name,
                                                               "smtrain:method": "script"}
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
    assert image == harness.engine.deployment.byoc_image
    assert re.fullmatch(r"123456789012\.dkr\.ecr\.us-east-1\.amazonaws\.com/"
                        r"local-training-images-repository:[0-9a-f]{64}", image)
    assert request["HyperParameters"] == {"num_boost_round": "100", "learning_rate": "0.1",
                                          "num_leaves": "31", "seed": "42"}
    uris = [c["DataSource"]["S3DataSource"]["S3Uri"] for c in request["InputDataConfig"]]
    assert uris == ["s3://elsewhere/train/", "s3://local-buckets-data/datasets/byoc/validation/"]


def test_builtin_request(harness: Harness) -> None:
    assert harness.run({"method": "builtin"}).succeeded
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
    assert re.fullmatch(r"s3://local-buckets-artifacts/checkpoints/[0-9a-f-]{36}/", checkpoint)
    assert checkpoint.split("/")[-2] in request["TrainingJobName"]


def test_throttled_create_is_retried_under_a_new_name(harness: Harness) -> None:
    script = JobScript(create_errors=[SageMakerError("ThrottlingException", "Rate exceeded"),
                                      SageMakerError("ResourceLimitExceeded", "too many jobs")])
    result = harness.run({"method": "script"}, script)
    assert result.succeeded, result.cause
    names = [r["TrainingJobName"] for r in harness.training_requests()]
    assert len(names) == 3
    assert [n.rsplit("-", 1)[1] for n in names] == ["0", "1", "2"]
    assert len(set(names)) == 3 and len({n.rsplit("-", 1)[0] for n in names}) == 1


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


def test_a_create_error_that_is_not_retried(harness: Harness) -> None:
    script = JobScript(create_errors=[SageMakerError("ValidationException", "bad image")])
    result = harness.run({"method": "script"}, script)
    assert result.status == "FAILED" and result.error == "TrainingJobFailed"
    assert result.cause == "SageMaker.ValidationException: bad image"


BAD_INPUTS: list[tuple[dict[str, Any], str, str]] = [
    ({}, "InvalidExecutionInput", "field 'method' is required: one of script, byoc, builtin"),
    ({"method": "sklearn"}, "UnknownMethod", "field 'method' must be one of script, byoc, builtin"),
    ({"method": 3}, "UnknownMethod", "field 'method' must be one of script, byoc, builtin"),
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


def test_tuning_request_and_small_output_with_500_jobs(harness: Harness) -> None:
    script = JobScript(tuning_jobs=500)
    result = harness.run({"method": "script", "hyperparameters": {"epochs": "4"},
                          "tuning": {"maxJobs": 500, "maxParallelJobs": 10}}, script)
    assert result.succeeded, result.cause
    (request,) = harness.backend.created("create_hyper_parameter_tuning_job")
    name = request["HyperParameterTuningJobName"]
    assert len(name) <= 32 and JOB_NAME.match(name)
    config = request["HyperParameterTuningJobConfig"]
    assert config["Strategy"] == "Bayesian"
    assert config["ResourceLimits"] == {"MaxNumberOfTrainingJobs": 500, "MaxParallelTrainingJobs": 10}
    assert config["HyperParameterTuningJobObjective"] == {"MetricName": "validation:accuracy",
                                                          "Type": "Maximize"}
    assert config["TrainingJobEarlyStoppingType"] == "Off"
    static = request["TrainingJobDefinition"]["StaticHyperParameters"]
    assert static["epochs"] == "4" and "learning-rate" not in static, "tuned names are not static"
    assert static["sagemaker_program"] == "train.py"
    output = json.dumps(result.output)
    assert len(output.encode()) < 32 * 1024, len(output)
    assert result.output["tuningJobName"] == name
    assert result.output["trainingJobName"] == f"{name}-001-00000000"
    assert result.output["objective"]["Value"] == pytest.approx(0.97)
    assert result.output["trainingJobCounters"]["Completed"] == 500


def test_grid_search_sends_no_job_count(harness: Harness) -> None:
    ranges = {"IntegerParameterRanges": [{"Name": "epochs", "MinValue": "2", "MaxValue": "3",
                                          "ScalingType": "Auto"}]}
    result = harness.run({"method": "script", "tuning": {"strategy": "Grid", "parameterRanges": ranges}})
    assert result.succeeded, result.cause
    (request,) = harness.backend.created("create_hyper_parameter_tuning_job")
    assert request["HyperParameterTuningJobConfig"]["ResourceLimits"] == {"MaxParallelTrainingJobs": 2}


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
