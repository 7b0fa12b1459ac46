"""What each training method sends to SageMaker: hyperparameter defaults, metrics and tuning defaults.

The metric regexes here and the lines the training code prints must agree (tests run the real
training code and parse its output with the regexes read back from the synthesized template).
Every line the training code prints for metrics has the form::

    epoch=3 train:loss=0.1234 validation:loss=0.2345 validation:accuracy=0.9700
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

MethodName = Literal["script", "byoc", "builtin"]
METHODS: tuple[MethodName, ...] = ("script", "byoc", "builtin")

_NUMBER = r"([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"


def metric_definition(name: str) -> dict[str, str]:
    """A SageMaker MetricDefinition that reads ``name=<number>`` from a log line."""
    return {"Name": name, "Regex": rf"\b{name}={_NUMBER}"}


#: Metrics the project's own training code (script mode and BYOC) prints.
PROJECT_METRICS: tuple[dict[str, str], ...] = tuple(
    metric_definition(name) for name in ("train:loss", "validation:loss", "validation:accuracy")
)


@dataclass(frozen=True, kw_only=True)
class TuningDefaults:
    """Defaults for the execution input's ``tuning`` object, per method."""

    objective_metric: str
    objective_type: Literal["Maximize", "Minimize"]
    parameter_ranges: Mapping[str, Sequence[Mapping[str, Any]]]
    #: Hyperband's resource per training job: how many metric reports ("epochs") a full run
    #: prints. SageMaker needs it as ``HyperbandStrategyConfig.MaxResource`` unless a static
    #: ``epochs``-like hyperparameter gives it (API reference, HyperbandStrategyConfig).
    hyperband_max_resource: int
    strategy: str = "Bayesian"
    max_jobs: int = 4
    max_parallel_jobs: int = 2
    early_stopping: str = "Off"

    def as_input(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy,
            "maxJobs": self.max_jobs,
            "maxParallelJobs": self.max_parallel_jobs,
            "objective": {"metricName": self.objective_metric, "type": self.objective_type},
            "parameterRanges": {key: list(value) for key, value in self.parameter_ranges.items()},
            "earlyStopping": self.early_stopping,
            "hyperband": {"minResource": 1, "maxResource": self.hyperband_max_resource},
        }


@dataclass(frozen=True, kw_only=True)
class TrainingMethod:
    """How one method trains.

    ``base_hyperparameters`` are always sent (the user may override them);
    ``training_defaults`` are sent for a single training job only, since a tuning job must not
    send a static value for a hyperparameter it tunes (the training code has the same defaults).
    """

    name: MethodName
    content_type: str
    base_hyperparameters: Mapping[str, str] = field(default_factory=dict)
    training_defaults: Mapping[str, str] = field(default_factory=dict)
    metric_definitions: Sequence[Mapping[str, str]] = ()
    tuning: TuningDefaults


SCRIPT = TrainingMethod(
    name="script",
    content_type="text/csv",
    training_defaults={"epochs": "10", "batch-size": "64", "learning-rate": "0.01", "seed": "42"},
    metric_definitions=PROJECT_METRICS,
    tuning=TuningDefaults(
        objective_metric="validation:accuracy",
        objective_type="Maximize",
        hyperband_max_resource=10,  # train.py's default epochs
        parameter_ranges={
            "ContinuousParameterRanges": [
                {"Name": "learning-rate", "MinValue": "0.001", "MaxValue": "0.1",
                 "ScalingType": "Logarithmic"}
            ],
            "CategoricalParameterRanges": [{"Name": "batch-size", "Values": ["32", "64", "128"]}],
        },
    ),
)

BYOC = TrainingMethod(
    name="byoc",
    content_type="text/csv",
    training_defaults={"num_boost_round": "100", "learning_rate": "0.1", "num_leaves": "31",
                       "seed": "42"},
    metric_definitions=PROJECT_METRICS,
    tuning=TuningDefaults(
        objective_metric="validation:accuracy",
        objective_type="Maximize",
        hyperband_max_resource=10,  # 100 boosting rounds, a metric line every 10
        parameter_ranges={
            "ContinuousParameterRanges": [
                {"Name": "learning_rate", "MinValue": "0.02", "MaxValue": "0.3",
                 "ScalingType": "Logarithmic"}
            ],
            "IntegerParameterRanges": [
                {"Name": "num_leaves", "MinValue": "8", "MaxValue": "64", "ScalingType": "Auto"}
            ],
        },
    ),
)

BUILTIN = TrainingMethod(
    name="builtin",
    content_type="text/csv",
    # Required by SageMaker XGBoost for multi-class data (the digits sample has 10 classes).
    base_hyperparameters={"objective": "multi:softmax", "num_class": "10", "num_round": "100",
                          "eval_metric": "merror"},
    training_defaults={"max_depth": "5", "eta": "0.2"},
    # Built-in algorithms publish their own metrics (validation:merror, ...); SageMaker refuses
    # metric definitions for them.
    metric_definitions=(),
    tuning=TuningDefaults(
        objective_metric="validation:merror",
        objective_type="Minimize",
        hyperband_max_resource=100,  # num_round: XGBoost reports every round
        parameter_ranges={
            "ContinuousParameterRanges": [
                {"Name": "eta", "MinValue": "0.05", "MaxValue": "0.5", "ScalingType": "Auto"}
            ],
            "IntegerParameterRanges": [
                {"Name": "max_depth", "MinValue": "3", "MaxValue": "10", "ScalingType": "Auto"}
            ],
        },
    ),
)

TRAINING_METHODS: dict[MethodName, TrainingMethod] = {m.name: m for m in (SCRIPT, BYOC, BUILTIN)}

#: The hyperparameter names the AWS training toolkit reads for script mode.
SCRIPT_PROGRAM = "train.py"
