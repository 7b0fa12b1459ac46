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
from tests.helpers import Synthesized
from tests.scripted_sagemaker import JobScript, ScriptedBackend, limit_exceeded, throttling

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
    # SageMaker's integer fields refuse 2.0 and 1e3 alike (botocore: type integer).
    ({"method": "script", "instanceCount": 2.0}, "InvalidExecutionInput",
     "field 'instanceCount' must be a whole number"),
    ({"method": "script", "volumeSizeInGB": 1.5}, "InvalidExecutionInput",
     "field 'volumeSizeInGB' must be a whole number"),
    ({"method": "script", "tuning": {"maxJobs": 2.5}}, "InvalidExecutionInput",
     "field 'tuning.maxJobs' must be a whole number"),
    # Grid search takes only categorical ranges; each method's defaults have numeric ones.
    ({"method": "script", "tuning": {"strategy": "Grid"}}, "InvalidExecutionInput",
     "field 'tuning.parameterRanges' may hold only CategoricalParameterRanges with the Grid"),
    ({"method": "builtin", "tuning": {"strategy": "Grid", "parameterRanges": {
        "IntegerParameterRanges": [{"Name": "max_depth", "MinValue": "3", "MaxValue": "5"}]}}},
     "InvalidExecutionInput", "field 'tuning.parameterRanges' may hold only Categorical"),
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


@pytest.mark.parametrize("name", ["run(1)", "bang!", "it's"])
def test_execution_names_that_are_no_tag_value_are_refused(harness: Harness, name: str) -> None:
    """Jobs carry the execution name as a tag; a tag value allows no ( ) ! ' (botocore's
    TagValue pattern), although Step Functions allows them in execution names."""
    harness.backend.script = JobScript()
    result = harness.engine.run({"method": "script"}, name=name, timeout=60)
    assert result.status == "FAILED" and result.error == "InvalidExecutionInput"
    assert (result.cause or "").startswith("the execution name must not contain ( ) ! '")
    assert harness.backend.requests == []


def test_tuning_request_and_small_output_with_500_jobs(harness: Harness) -> None:
    """DescribeHyperParameterTuningJob echoes the request (here ~30 KB of static
    hyperparameters); the task's ResultSelector keeps the execution's data small."""
    script = JobScript(tuning_jobs=500)
    padding = {f"note{index}": "x" * 1000 for index in range(30)}
    result = harness.run({"method": "script", "hyperparameters": {"epochs": "4", **padding},
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
    ranges = {"CategoricalParameterRanges": [{"Name": "epochs", "Values": ["2", "3"]}]}
    result = harness.run({"method": "script", "tuning": {"strategy": "Grid", "parameterRanges": ranges}})
    assert result.succeeded, result.cause
    (request,) = harness.backend.created("create_hyper_parameter_tuning_job")
    config = request["HyperParameterTuningJobConfig"]
    assert config["ResourceLimits"] == {"MaxParallelTrainingJobs": 2}
    assert "StrategyConfig" not in config


@pytest.mark.parametrize("method", ["script", "byoc", "builtin"])
def test_hyperband_with_defaults_sends_max_resource(harness: Harness, method: str) -> None:
    """With each method's defaults SageMaker cannot infer Hyperband's MaxResource (no static
    epochs-like hyperparameter), so the request must carry HyperbandStrategyConfig."""
    result = harness.run({"method": method, "tuning": {"strategy": "Hyperband"}})
    assert result.succeeded, result.cause
    (request,) = harness.backend.created("create_hyper_parameter_tuning_job")
    config = request["HyperParameterTuningJobConfig"]
    assert config["Strategy"] == "Hyperband" and config["TrainingJobEarlyStoppingType"] == "Off"
    resources = config["StrategyConfig"]["HyperbandStrategyConfig"]
    assert resources["MinResource"] == 1 and 1 <= resources["MaxResource"] <= 20_000


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
    assert re.fullmatch(r"s3://local-buckets-artifacts/checkpoints/[0-9a-f]{12}/",
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
