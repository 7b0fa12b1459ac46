"""The SageMaker API reference's rules that its machine-readable model cannot state.

Each rule below quotes or names its source: the API reference text (which botocore ships as the
model's ``documentation``: ``HyperbandStrategyConfig.MaxResource``, ``StoppingCondition.
MaxWaitTimeInSeconds``, ...) or the SageMaker developer guide. A request that breaks one is
answered by SageMaker with a ``ValidationException``; :func:`rule_violations` lists them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

from smtrain.core import builtin_algorithms
from smtrain.core.instance_storage import UnknownInstanceStorage, has_local_nvme

#: "HyperbandTraining attempts to infer MaxResource from the following keys (if present) in
#: StaticHyperParameters: epochs, numepochs, n-epochs, n_epochs, num_epochs. If
#: HyperbandStrategyConfig is unable to infer a value for MaxResource, it generates a validation
#: error. The maximum value is 20,000 epochs." (API reference, HyperbandStrategyConfig.MaxResource)
HYPERBAND_EPOCH_KEYS = ("epochs", "numepochs", "n-epochs", "n_epochs", "num_epochs")
HYPERBAND_MAX_RESOURCE = 20_000

#: Repositories of SageMaker's built-in algorithms (the catalogue's, plus XGBoost's first-party
#: ``xgboost``). "Built-in algorithms publish their own metrics; you can't define metrics for
#: them" (developer guide, "Define metrics and environment variables": metric definitions are for
#: custom algorithms only).
BUILTIN_ALGORITHM_REPOSITORIES = tuple(sorted({*builtin_algorithms.REPOSITORIES.values(), "xgboost"}))

Rule = Callable[[dict[str, Any]], Iterator[str]]


def _number(text: Any) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _is_builtin(image: str) -> bool:
    repository = image.rsplit("/", 1)[-1].split(":", 1)[0].split("@", 1)[0]
    return repository in BUILTIN_ALGORITHM_REPOSITORIES


def _algorithm_rules(algorithm: dict[str, Any], hyperparameters: dict[str, Any]) -> Iterator[str]:
    image = algorithm.get("TrainingImage", "")
    # The XGBoost image runs a script instead of the algorithm when sagemaker_program names one
    # (the SDK's XGBoost framework estimator; sagemaker-xgboost-container, training.py): then it
    # is a custom algorithm, whose metrics the job's definitions read from its log. (Not
    # confirmed against AWS: whether SageMaker tells the two modes apart here.)
    script_mode = "sagemaker_program" in hyperparameters
    if image and _is_builtin(image) and not script_mode and algorithm.get("MetricDefinitions"):
        yield ("MetricDefinitions are not allowed for built-in algorithm image "
               f"{image}: it publishes its own metrics")


def _spot_rules(spot: bool, stopping: dict[str, Any]) -> Iterator[str]:
    # "MaxWaitTimeInSeconds ... It must be equal to or greater than MaxRuntimeInSeconds."
    # (API reference, StoppingCondition.MaxWaitTimeInSeconds; managed spot training requires it:
    # developer guide, "Managed Spot Training": "MaxWaitTimeInSeconds ... must be set".)
    wait = stopping.get("MaxWaitTimeInSeconds")
    runtime = stopping.get("MaxRuntimeInSeconds", 86_400)
    if spot and wait is None:
        yield "MaxWaitTimeInSeconds is required when EnableManagedSpotTraining is true"
    # "Invalid MaxWaitTimeInSeconds. It is only supported when EnableManagedSpotTraining is set
    # to true" (SageMaker's ValidationException, quoted in aws/amazon-sagemaker-examples#869).
    if wait is not None and not spot:
        yield "MaxWaitTimeInSeconds is allowed only with EnableManagedSpotTraining"
    if wait is not None and wait < runtime:
        yield (f"MaxWaitTimeInSeconds ({wait}) must be equal to or greater than "
               f"MaxRuntimeInSeconds ({runtime})")


def _volume_key_rules(resources: dict[str, Any]) -> Iterator[str]:
    # "You can't request a VolumeKmsKeyId when using an instance type with local storage." (API
    # reference, ResourceConfig.VolumeKmsKeyId; the table and its sources: smtrain/
    # instance_storage.py). A family the table does not know is refused too: nothing may pass
    # here that AWS might refuse.
    instance_type = resources.get("InstanceType", "")
    if "VolumeKmsKeyId" not in resources or not instance_type:
        return
    try:
        local = has_local_nvme(instance_type)
    except UnknownInstanceStorage as error:
        yield f"VolumeKmsKeyId: cannot tell whether {instance_type} has local storage ({error})"
        return
    if local:
        yield (f"VolumeKmsKeyId is not supported for instance type {instance_type}: its local "
               "NVMe storage is encrypted by the instance")


def _channel_rules(channels: list[dict[str, Any]], training_input_mode: str | None) -> Iterator[str]:
    # "CompressionType is used only in Pipe input mode. In File mode, leave this field unset or
    # set it to None" (API reference, Channel.CompressionType); a channel without InputMode takes
    # the job's TrainingInputMode (Channel.InputMode). FastFile is not Pipe: refused too
    # (CONSERVATIVE: the reference names File only; the project never sends it).
    for channel in channels:
        mode = channel.get("InputMode", training_input_mode)
        if channel.get("CompressionType", "None") != "None" and mode != "Pipe":
            yield (f"Channel {channel.get('ChannelName')}: CompressionType "
                   f"{channel['CompressionType']} is used only in Pipe input mode, not {mode}")


def training_job_rules(request: dict[str, Any]) -> Iterator[str]:
    algorithm = request.get("AlgorithmSpecification", {})
    yield from _channel_rules(request.get("InputDataConfig", []), algorithm.get("TrainingInputMode"))
    yield from _algorithm_rules(request.get("AlgorithmSpecification", {}),
                                request.get("HyperParameters", {}))
    yield from _volume_key_rules(request.get("ResourceConfig", {}))
    yield from _spot_rules(bool(request.get("EnableManagedSpotTraining")),
                           request.get("StoppingCondition", {}))


def _range_rules(ranges: dict[str, Any]) -> Iterator[str]:
    names: list[str] = []
    for kind in ("IntegerParameterRanges", "ContinuousParameterRanges"):
        for item in ranges.get(kind, []):
            names.append(item["Name"])
            low, high = _number(item.get("MinValue")), _number(item.get("MaxValue"))
            if low is None or high is None:
                yield f"{kind} {item['Name']}: MinValue and MaxValue must be numbers"
                continue
            if kind == "IntegerParameterRanges" and not (low.is_integer() and high.is_integer()):
                yield f"{kind} {item['Name']}: MinValue and MaxValue must be integers"
            if low > high:
                yield f"{kind} {item['Name']}: MinValue must not exceed MaxValue"
            scaling = item.get("ScalingType", "Auto")
            # "Logarithmic scaling works only for ranges that have only values greater than 0.
            # Reverse logarithmic scaling works only for ranges that are entirely within the range
            # 0<=x<1.0." (API reference, ContinuousParameterRange.ScalingType); reverse
            # logarithmic is not supported for integer ranges (IntegerParameterRange.ScalingType).
            if scaling == "Logarithmic" and low <= 0:
                yield f"{kind} {item['Name']}: Logarithmic scaling needs MinValue > 0"
            if scaling == "ReverseLogarithmic" and (
                    kind == "IntegerParameterRanges" or not (low >= 0 and high < 1)):
                yield f"{kind} {item['Name']}: ReverseLogarithmic scaling needs 0 <= values < 1"
    names.extend(item["Name"] for item in ranges.get("CategoricalParameterRanges", []))
    # "the sum of the number of hyperparameters for all the ranges can't exceed the maximum
    # number specified" (30; API reference, ParameterRanges).
    if len(names) > 30:
        yield f"ParameterRanges name {len(names)} hyperparameters; at most 30 may be tuned"
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        yield f"ParameterRanges name {', '.join(duplicates)} more than once"


def tuning_job_rules(request: dict[str, Any]) -> Iterator[str]:
    config = request.get("HyperParameterTuningJobConfig", {})
    definition = request.get("TrainingJobDefinition", {})
    strategy = config.get("Strategy")
    ranges = config.get("ParameterRanges", {})
    limits = config.get("ResourceLimits", {})
    static = definition.get("StaticHyperParameters", {})
    yield from _range_rules(ranges)
    yield from _channel_rules(definition.get("InputDataConfig", []),
                              definition.get("AlgorithmSpecification", {}).get("TrainingInputMode"))

    if strategy == "Grid":
        # Developer guide, "Understand the hyperparameter tuning strategies": grid search
        # "requires categorical hyperparameters" and "you do not need to specify
        # MaxNumberOfTrainingJobs" (the grid decides it). That SageMaker refuses the field is
        # CONSERVATIVE (the guide says only that it is not needed): the state machine never
        # sends it with Grid, so nothing depends on either answer.
        if ranges.get("IntegerParameterRanges") or ranges.get("ContinuousParameterRanges"):
            yield "Grid search supports only CategoricalParameterRanges"
        if "MaxNumberOfTrainingJobs" in limits:
            yield "MaxNumberOfTrainingJobs must not be set for the Grid strategy"

    # "This parameter should be provided only if Hyperband is selected" (StrategyConfig).
    hyperband = config.get("StrategyConfig", {}).get("HyperbandStrategyConfig")
    if "StrategyConfig" in config and strategy != "Hyperband":
        yield "StrategyConfig is allowed only with the Hyperband strategy"
    if strategy == "Hyperband":
        # "TrainingJobEarlyStoppingType must be OFF to use Hyperband" (API reference).
        if config.get("TrainingJobEarlyStoppingType", "Off") != "Off":
            yield "TrainingJobEarlyStoppingType must be Off with the Hyperband strategy"
        max_resource = (hyperband or {}).get("MaxResource")
        if max_resource is None:
            inferred = [key for key in HYPERBAND_EPOCH_KEYS if key in static]
            if not inferred:
                yield ("Hyperband could not infer MaxResource: give HyperbandStrategyConfig."
                       "MaxResource or a static hyperparameter named one of "
                       + ", ".join(HYPERBAND_EPOCH_KEYS))
            max_resource = _number(static[inferred[0]]) if inferred else None
        if max_resource is not None and max_resource > HYPERBAND_MAX_RESOURCE:
            yield f"Hyperband MaxResource must be at most {HYPERBAND_MAX_RESOURCE}"
        min_resource = (hyperband or {}).get("MinResource")
        if min_resource is not None and max_resource is not None and min_resource > max_resource:
            yield "Hyperband MinResource must not exceed MaxResource"

    # A tuned hyperparameter must not also be static (API reference, StaticHyperParameters:
    # "the values of hyperparameters that do not change"; developer guide, "Define hyperparameter
    # ranges": "do not specify a hyperparameter in both").
    tuned = {item["Name"] for kind in ("IntegerParameterRanges", "ContinuousParameterRanges",
                                       "CategoricalParameterRanges")
             for item in ranges.get(kind, [])}
    both = sorted(tuned & set(static))
    if both:
        yield f"Hyperparameters {', '.join(both)} are both tuned and static"

    # CONSERVATIVE, no published source: treated as refused so that nothing depends on it.
    if limits.get("MaxParallelTrainingJobs", 0) > limits.get("MaxNumberOfTrainingJobs", math.inf):
        yield "MaxParallelTrainingJobs must not exceed MaxNumberOfTrainingJobs"

    yield from _algorithm_rules(definition.get("AlgorithmSpecification", {}),
                                definition.get("StaticHyperParameters", {}))
    yield from _volume_key_rules(definition.get("ResourceConfig", {}))
    yield from _spot_rules(bool(definition.get("EnableManagedSpotTraining")),
                           definition.get("StoppingCondition", {}))


def model_package_rules(request: dict[str, Any]) -> Iterator[str]:
    """``ModelPackageName`` "is required for unversioned models. It is not applicable to
    versioned models"; ``ModelPackageGroupName`` "is required for versioned models, and does not
    apply to unversioned models"; ``ModelApprovalStatus`` "does not apply to unversioned models"
    (API reference, CreateModelPackage). A request is one or the other."""
    versioned = "ModelPackageGroupName" in request
    if versioned and "ModelPackageName" in request:
        yield ("ModelPackageName is not applicable to versioned models: give ModelPackageGroupName "
               "or ModelPackageName, not both")
    if not versioned and "ModelPackageName" not in request:
        yield "ModelPackageGroupName (a versioned model) or ModelPackageName is required"
    if not versioned and "ModelApprovalStatus" in request:
        yield "ModelApprovalStatus does not apply to unversioned models"


RULES: dict[str, Rule] = {
    "CreateTrainingJob": training_job_rules,
    "CreateHyperParameterTuningJob": tuning_job_rules,
    "CreateModelPackage": model_package_rules,
}


def rule_violations(operation: str, request: dict[str, Any]) -> list[str]:
    """The prose rules ``request`` breaks (none for an operation without rules here)."""
    rules = RULES.get(operation)
    return list(rules(request)) if rules else []
