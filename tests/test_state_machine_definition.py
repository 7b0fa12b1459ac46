"""The rendered state machine definition, state by state."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from infra.images import training_images
from infra.settings import Settings
from infra.training_methods import TRAINING_METHODS
from tests.helpers import Synthesized

Definition = dict[str, Any]


@pytest.fixture(scope="module")
def definition(synthesized: Synthesized) -> Definition:
    return synthesized.definition()


def states(definition: Definition) -> dict[str, Any]:
    return definition["States"]  # type: ignore[no-any-return]


def test_starts_by_merging_input_over_defaults(definition: Definition, settings: Settings) -> None:
    assert definition["StartAt"] == "ReadInput"
    read = states(definition)["ReadInput"]
    assert read["Parameters"]["defaults"] == {
        "hyperparameters": {}, "instanceType": settings.default_instance_type,
        "instanceCount": settings.default_instance_count,
        "volumeSizeInGB": settings.default_volume_size_gb,
        "maxRuntimeInSeconds": settings.max_runtime_seconds, "spot": settings.spot_by_default,
        "inputs": {},
    }
    assert read["Next"] == "ApplyDefaults"
    merge = states(definition)["ApplyDefaults"]
    assert merge["Parameters"]["config.$"] == "States.JsonMerge($.defaults, $.input, false)"
    assert merge["Parameters"]["run"] == {"id.$": "States.UUID()"}
    assert merge["Next"] == "DescribeNumbers"
    # Integer fields are also read as JSON text: 2.0 or 1e3 is a number, but no integer.
    numbers = states(definition)["DescribeNumbers"]
    assert numbers["Parameters"]["instanceCount.$"] == "States.JsonToString($.config.instanceCount)"
    assert numbers["Next"] == "ValidateInput"


def _rejections(definition: Definition, choice: str) -> dict[str, dict[str, str]]:
    result = {}
    for rule in states(definition)[choice]["Choices"]:
        target = states(definition)[rule["Next"]]
        assert target["Type"] == "Pass" and target["Next"] == "RejectInput"
        assert target["ResultPath"] == "$.rejection"
        result[rule["Next"]] = target["Result"]
    return result


def test_input_validation_names_each_field(definition: Definition) -> None:
    rejections = _rejections(definition, "ValidateInput")
    assert rejections["InvalidMethodMissing"] == {
        "error": "InvalidExecutionInput",
        "cause": "field 'method' is required: one of script, byoc, builtin"}
    assert rejections["InvalidMethodValue"]["error"] == "UnknownMethod"
    causes = " ".join(r["cause"] for r in rejections.values())
    for field in ("method", "instanceType", "instanceCount", "volumeSizeInGB",
                  "maxRuntimeInSeconds", "spot"):
        assert f"field '{field}'" in causes
    assert states(definition)["ValidateInput"]["Default"] == "ChooseMethod"
    reject = states(definition)["RejectInput"]
    assert reject == {"Type": "Fail", "ErrorPath": "$.rejection.error",
                      "CausePath": "$.rejection.cause"}


def test_instance_type_allow_list_is_enforced(definition: Definition, settings: Settings) -> None:
    (rule,) = [r for r in states(definition)["ValidateInput"]["Choices"]
               if r["Next"] == "InvalidInstanceTypeValue"]
    allowed = [c["StringEquals"] for c in rule["Or"][1]["Not"]["Or"]]
    assert allowed == list(settings.allowed_instance_types)


def test_methods_pick_their_images(definition: Definition, settings: Settings) -> None:
    images = training_images(region=settings.region, pytorch_version=settings.pytorch_version,
                             pytorch_py_version=settings.pytorch_py_version,
                             xgboost_version=settings.xgboost_version)
    s = states(definition)
    assert re.fullmatch(r"\d{12}\.dkr\.ecr\.us-east-1\.amazonaws\.com/sagemaker-xgboost:1\.7-1",
                        images.xgboost)
    assert images.pytorch_cpu.endswith("pytorch-training:2.5-cpu-py311")
    assert images.pytorch_gpu.endswith("pytorch-training:2.5-gpu-py311")
    assert s["PrepareBuiltin"]["Result"]["algorithm"]["TrainingImage"] == images.xgboost
    assert s["PrepareScriptCpu"]["Result"]["algorithm"]["TrainingImage"] == images.pytorch_cpu
    assert s["PrepareScriptGpu"]["Result"]["algorithm"]["TrainingImage"] == images.pytorch_gpu
    byoc_image = s["PrepareByoc"]["Result"]["algorithm"]["TrainingImage"]
    assert re.search(r"/import-[a-z0-9]+:[0-9a-f]{64}$", byoc_image), byoc_image
    (gpu_rule,) = s["ChooseScriptImage"]["Choices"]
    gpu_types = [c["StringEquals"] for c in gpu_rule["Or"]]
    assert gpu_types == [t for t in settings.allowed_instance_types if t.startswith(("ml.g", "ml.p"))]
    assert gpu_rule["Next"] == "PrepareScriptGpu"
    assert s["ChooseScriptImage"]["Default"] == "PrepareScriptCpu"


def test_script_mode_points_at_the_source_tarball(definition: Definition) -> None:
    fixed = states(definition)["PrepareScriptCpu"]["Result"]["fixedHyperparameters"]
    assert fixed["sagemaker_program"] == "train.py"
    assert re.fullmatch(r"s3://cdk-hnb659fds-assets-123456789012-us-east-1/[0-9a-f]{64}\.gz",
                        fixed["sagemaker_submit_directory"]), fixed
    assert fixed["sagemaker_region"] == "us-east-1"


@pytest.mark.parametrize("method", list(TRAINING_METHODS))
def test_method_defaults(definition: Definition, method: str) -> None:
    state = states(definition)[{"script": "PrepareScriptCpu", "byoc": "PrepareByoc",
                                "builtin": "PrepareBuiltin"}[method]]
    assert state["ResultPath"] == "$.method" and state["Next"] == "ResolveJob"
    result = state["Result"]
    spec = TRAINING_METHODS[method]  # type: ignore[index]
    assert result["trainingDefaults"] == dict(spec.training_defaults)
    assert result["baseHyperparameters"] == dict(spec.base_hyperparameters)
    assert result["inputDefaults"] == {
        "train": f"s3://import-exportsoutputrefbucketsdata941f65f0dc630599/datasets/{method}/train/",
        "validation": f"s3://import-exportsoutputrefbucketsdata941f65f0dc630599/datasets/{method}/validation/",
    }
    assert result["contentType"] == "text/csv"
    assert result["tuningDefaults"]["objective"]["metricName"] == spec.tuning.objective_metric
    metric_names = [m["Name"] for m in result["algorithm"].get("MetricDefinitions", [])]
    if method == "builtin":
        assert metric_names == [], "SageMaker refuses metric definitions for built-in algorithms"
    else:
        assert metric_names == ["train:loss", "validation:loss", "validation:accuracy"]
        assert spec.tuning.objective_metric in metric_names


def test_hyperparameters_merge_in_order(definition: Definition) -> None:
    params = states(definition)["ResolveJob"]["Parameters"]
    assert params["trainingHyperparameters.$"] == (
        "States.JsonMerge(States.JsonMerge(States.JsonMerge($.method.baseHyperparameters, "
        "$.method.trainingDefaults, false), $.config.hyperparameters, false), "
        "$.method.fixedHyperparameters, false)")
    assert params["staticHyperparameters.$"] == (
        "States.JsonMerge(States.JsonMerge($.method.baseHyperparameters, "
        "$.config.hyperparameters, false), $.method.fixedHyperparameters, false)")
    assert params["inputs.$"] == "States.JsonMerge($.method.inputDefaults, $.config.inputs, false)"


def test_channels_must_be_s3_uris(definition: Definition) -> None:
    rejections = _rejections(definition, "ValidateChannels")
    assert {r["cause"] for r in rejections.values()} == {
        "field 'inputs.train' must be an S3 URI like s3://bucket/prefix/",
        "field 'inputs.validation' must be an S3 URI like s3://bucket/prefix/"}


def test_spot_adds_max_wait(definition: Definition, settings: Settings) -> None:
    s = states(definition)
    (rule,) = s["ChooseCapacity"]["Choices"]
    assert rule == {"Variable": "$.config.spot", "BooleanEquals": True, "Next": "UseSpotCapacity"}
    assert s["UseSpotCapacity"]["Parameters"] == {
        "MaxRuntimeInSeconds.$": "$.config.maxRuntimeInSeconds",
        "MaxWaitTimeInSeconds": settings.spot_max_wait_seconds}
    assert s["UseOnDemandCapacity"]["Parameters"] == {
        "MaxRuntimeInSeconds.$": "$.config.maxRuntimeInSeconds"}
    assert settings.spot_max_wait_seconds >= settings.max_runtime_seconds


def test_training_request(definition: Definition) -> None:
    task = states(definition)["TrainModel"]
    assert task["Resource"] == "arn:aws:states:::sagemaker:createTrainingJob.sync"
    p = task["Parameters"]
    assert p["TrainingJobName.$"] == "States.Format('smtrain-{}-{}', $.run.id, $.attempt.number)"
    assert p["RoleArn"].startswith("arn:aws:iam::123456789012:role/")
    assert p["AlgorithmSpecification.$"] == "$.method.algorithm"
    assert p["HyperParameters.$"] == "$.trainingHyperparameters"
    assert [c["ChannelName"] for c in p["InputDataConfig"]] == ["train", "validation"]
    assert p["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri.$"] == "$.inputs.train"
    assert p["OutputDataConfig"]["S3OutputPath"] == (
        "s3://import-exportsoutputrefbucketsartifactsb9ee640063e0f2d8/models/")
    assert p["OutputDataConfig"]["KmsKeyId"].startswith("arn:aws:")
    assert p["StoppingCondition.$"] == "$.stopping"
    assert p["EnableManagedSpotTraining.$"] == "$.config.spot"
    assert p["CheckpointConfig"]["S3Uri.$"] == (
        "States.Format('s3://import-exportsoutputrefbucketsartifactsb9ee640063e0f2d8/checkpoints/{}/', "
        "$.run.id)")
    assert p["RetryStrategy"] == {"MaximumRetryAttempts": 2}
    assert {t["Key"] for t in p["Tags"]} == {"smtrain:execution", "smtrain:method"}
    assert task["ResultSelector"] == {
        "TrainingJobName.$": "$.TrainingJobName",
        "ModelArtifacts.$": "$.ModelArtifacts.S3ModelArtifacts",
        "FinalMetricDataList.$": "$.FinalMetricDataList"}


@pytest.mark.parametrize(("task_name", "label"), [("TrainModel", "Training"),
                                                   ("TuneModel", "Tuning")])
def test_create_errors_are_told_apart_by_cause(definition: Definition, task_name: str,
                                               label: str) -> None:
    """Step Functions names throttling and validation alike (SageMaker.AmazonSageMakerException)
    and the account limit SageMaker.ResourceLimitExceededException: only the cause tells
    throttling apart, so no Retry may name them; a Choice on the cause decides."""
    s = states(definition)
    task = s[task_name]
    assert "Retry" not in task
    first, rest = task["Catch"]
    assert first == {"ErrorEquals": ["SageMaker.ResourceLimitExceededException",
                                     "SageMaker.AmazonSageMakerException"],
                     "ResultPath": "$.failure", "Next": f"Retry{label}Create"}
    assert rest["ErrorEquals"] == ["States.ALL"]
    decide = s[f"Retry{label}Create"]
    text = json.dumps(decide["Choices"])
    assert "*Error Code: ThrottlingException*" in text
    assert "SageMaker.ResourceLimitExceededException" in text
    assert "ValidationException" not in text
    assert decide["Default"] == f"Explain{label}Failure"
    # Three attempts: two scheduled retries, 15-30 s then 30-60 s, each waiting a random time.
    schedules = [s[f"Schedule{label}Attempt{n}"]["Parameters"] for n in (2, 3)]
    assert schedules == [{"number": 1, "waitSeconds.$": "States.MathRandom(15, 30)"},
                         {"number": 2, "waitSeconds.$": "States.MathRandom(30, 60)"}]
    assert f"Schedule{label}Attempt4" not in s
    assert s[f"Wait{label}Backoff"] == {"Type": "Wait", "SecondsPath": "$.attempt.waitSeconds",
                                        "Next": task_name}


@pytest.mark.parametrize(("task_name", "explain", "fail", "error"), [
    ("TrainModel", "ExplainTrainingFailure", "TrainingFailed", "TrainingJobFailed"),
    ("TuneModel", "ExplainTuningFailure", "TuningFailed", "TuningJobFailed"),
    ("DescribeBestTrainingJob", "ExplainTuningFailure", "TuningFailed", "TuningJobFailed"),
])
def test_failures_carry_the_reason(definition: Definition, task_name: str, explain: str,
                                   fail: str, error: str) -> None:
    s = states(definition)
    catch = s[task_name]["Catch"][-1]
    assert catch == {"ErrorEquals": ["States.ALL"], "ResultPath": "$.failure", "Next": explain}
    assert s[explain]["Parameters"] == {
        "cause.$": "States.Format('{}: {}', $.failure.Error, $.failure.Cause)"}
    assert s[explain]["Next"] == fail
    assert s[fail] == {"Type": "Fail", "Error": error, "CausePath": "$.failureReport.cause"}


def test_tuning_branch(definition: Definition) -> None:
    s = states(definition)
    (rule,) = s["TrainOrTune"]["Choices"]
    assert rule == {"Variable": "$.config.tuning", "IsPresent": True, "Next": "TuningGiven"}
    assert s["TrainOrTune"]["Default"] == "TrainModel"
    (null_rule,) = s["TuningGiven"]["Choices"]
    assert null_rule == {"Variable": "$.config.tuning", "IsNull": True, "Next": "TrainModel"}
    assert s["TuningGiven"]["Default"] == "ApplyTuningDefaults"
    assert s["ApplyTuningDefaults"]["Parameters"] == {
        "config.$": "States.JsonMerge($.method.tuningDefaults, $.config.tuning, false)"}
    causes = {r["cause"] for r in _rejections(definition, "ValidateTuning").values()}
    assert "field 'tuning.strategy' must be one of Bayesian, Random, Hyperband, Grid" in causes
    assert "field 'tuning.earlyStopping' must be Off with the Hyperband strategy" in causes
    assert s["ConfigureGridSearch"]["Parameters"]["ResourceLimits"] == {
        "MaxParallelTrainingJobs.$": "$.tuning.config.maxParallelJobs"}
    assert set(s["ConfigureSearch"]["Parameters"]["ResourceLimits"]) == {
        "MaxNumberOfTrainingJobs.$", "MaxParallelTrainingJobs.$"}
    assert "StrategyConfig" not in s["ConfigureSearch"]["Parameters"]
    assert "StrategyConfig" not in s["ConfigureGridSearch"]["Parameters"]
    assert s["ConfigureHyperband"]["Parameters"]["StrategyConfig"] == {"HyperbandStrategyConfig": {
        "MinResource.$": "$.tuning.config.hyperband.minResource",
        "MaxResource.$": "$.tuning.config.hyperband.maxResource"}}
    task = s["TuneModel"]
    assert task["Resource"] == "arn:aws:states:::sagemaker:createHyperParameterTuningJob.sync"
    p = task["Parameters"]
    assert p["HyperParameterTuningJobName.$"] == (
        "States.Format('smtrain-{}-{}', $.run.shortId, $.attempt.number)")
    assert p["HyperParameterTuningJobConfig.$"] == "$.tuning.job"
    definition_ = p["TrainingJobDefinition"]
    assert definition_["StaticHyperParameters.$"] == "$.staticHyperparameters"
    assert definition_["AlgorithmSpecification.$"] == "$.method.tuningAlgorithm"
    # Spot trials can resume: every trial of the run checkpoints under the run's prefix.
    assert definition_["CheckpointConfig"]["S3Uri.$"].startswith("States.Format('s3://")
    assert "/checkpoints/{}/', $.run.shortId)" in definition_["CheckpointConfig"]["S3Uri.$"]
    # Trimmed: however many training jobs the tuning job ran, only the best is kept.
    assert task["ResultSelector"] == {
        "HyperParameterTuningJobName.$": "$.HyperParameterTuningJobName",
        "HyperParameterTuningJobStatus.$": "$.HyperParameterTuningJobStatus",
        "TrainingJobStatusCounters.$": "$.TrainingJobStatusCounters",
        "BestTrainingJob.$": "$.BestTrainingJob"}
    assert task["Next"] == "DescribeBestTrainingJob"
    describe = s["DescribeBestTrainingJob"]
    assert describe["Resource"] == "arn:aws:states:::aws-sdk:sagemaker:describeTrainingJob"
    assert describe["Parameters"] == {
        "TrainingJobName.$": "$.tuningResult.BestTrainingJob.TrainingJobName"}


def test_outputs_are_small_and_named(definition: Definition) -> None:
    s = states(definition)
    assert set(s["ReportTraining"]["Parameters"]) == {
        "method.$", "trainingJobName.$", "modelArtifacts.$", "metrics.$"}
    assert s["ReportTraining"]["End"] is True
    assert {"tuningJobName.$", "trainingJobName.$", "objective.$", "modelArtifacts.$",
            "metrics.$"} <= set(s["ReportTuning"]["Parameters"])
    assert s["ReportTuning"]["End"] is True


def test_every_state_is_reachable_and_jsonpath(definition: Definition) -> None:
    s = states(definition)
    assert "QueryLanguage" not in definition or definition["QueryLanguage"] == "JSONPath"
    reachable, frontier = set(), [definition["StartAt"]]
    while frontier:
        name = frontier.pop()
        if name in reachable:
            continue
        reachable.add(name)
        state = s[name]
        targets = [state.get("Next"), state.get("Default")]
        targets += [c["Next"] for c in state.get("Choices", [])]
        targets += [c["Next"] for c in state.get("Catch", [])]
        frontier += [t for t in targets if t]
    assert reachable == set(s)
