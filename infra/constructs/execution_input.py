"""The state machine's public interface: execution input defaults and fail-fast validation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from smtrain.core import contract

Cond = sfn.Condition

#: Error names of rejected input (the Fail state's ``Error``).
INVALID_INPUT_ERROR = contract.INVALID_INPUT_ERROR
UNKNOWN_PROGRAM_ERROR = contract.UNKNOWN_PROGRAM_ERROR

#: SageMaker's volume size range (GB).
MAX_VOLUME_SIZE_GB = contract.MAX_VOLUME_SIZE_GB


@dataclass(frozen=True, kw_only=True)
class InputDefaults:
    """Defaults for every execution input field but ``program``."""

    instance_type: str
    instance_count: int
    volume_size_gb: int
    max_runtime_seconds: int
    spot: bool

    def as_input(self) -> dict[str, Any]:
        return {
            "hyperparameters": {},
            "instanceType": self.instance_type,
            "instanceCount": self.instance_count,
            "volumeSizeInGB": self.volume_size_gb,
            "maxRuntimeInSeconds": self.max_runtime_seconds,
            "spot": self.spot,
            "inputs": {},
        }


@dataclass(frozen=True)
class Rule:
    """A check: when ``violated`` holds, the execution fails with ``error`` and ``message``."""

    violated: sfn.Condition
    error: str
    message: str
    field: str
    check: str

    @property
    def state_name(self) -> str:
        """A readable, unique state name such as ``InvalidTuningMaxJobsRange``."""
        words = self.field.replace(".", " ").replace("_", " ").split()
        return "Invalid" + "".join(w[0].upper() + w[1:] for w in words) + self.check


def number_rules(path: str, field: str, low: int, high: int) -> list[Rule]:
    """``field`` must be a number within ``[low, high]`` (type first, so a string never reaches a
    numeric comparison)."""
    return [
        Rule(Cond.not_(Cond.is_numeric(path)), INVALID_INPUT_ERROR,
             f"field '{field}' must be a number from {low} to {high}", field, "Type"),
        Rule(Cond.or_(Cond.number_less_than(path, low), Cond.number_greater_than(path, high)),
             INVALID_INPUT_ERROR, f"field '{field}' must be from {low} to {high}", field, "Range"),
    ]


def one_of_rules(path: str, field: str, allowed: Sequence[str], *, error: str = INVALID_INPUT_ERROR,
                 required: bool = True) -> list[Rule]:
    """``field`` must be one of ``allowed`` (and present, when ``required``)."""
    allowed_text = ", ".join(allowed)
    rules = []
    if required:
        rules.append(Rule(Cond.not_(Cond.is_present(path)), INVALID_INPUT_ERROR,
                          f"field '{field}' is required: one of {allowed_text}", field, "Missing"))
    in_set = [Cond.string_equals(path, value) for value in allowed]
    rules.append(Rule(
        Cond.or_(Cond.not_(Cond.is_string(path)), Cond.not_(Cond.or_(*in_set) if len(in_set) > 1
                                                           else in_set[0])),
        error, f"field '{field}' must be one of {allowed_text}", field, "Value",
    ))
    return rules


def s3_uri_rules(path: str, field: str) -> list[Rule]:
    return [Rule(
        # A bucket and a key prefix: SageMaker's S3Uri pattern (https|s3)://([^/]+)/?(.*)
        # refuses an empty bucket, which "s3://*/*" alone would let through.
        Cond.or_(Cond.not_(Cond.is_string(path)), Cond.not_(Cond.string_matches(path, "s3://*/*")),
                 Cond.string_matches(path, "s3:///*")),
        INVALID_INPUT_ERROR, f"field '{field}' must be an S3 URI like s3://bucket/prefix/",
        field, "Uri",
    )]


class InputValidation(Construct):
    """A Choice that lets valid input through and sends each violation to its own Pass state,
    which records ``{"error", "cause"}`` at ``$.rejection`` and ends in the shared ``reject``
    Fail state. Rules are checked in order; the first violated one names the problem.

    Call :meth:`then` with the state that valid input goes to.
    """

    def __init__(self, scope: Construct, construct_id: str, *, rules: Sequence[Rule],
                 reject: sfn.Fail, choice_id: str) -> None:
        super().__init__(scope, construct_id)
        if not rules:
            raise ValueError("an InputValidation needs at least one rule")
        self.choice = sfn.Choice(self, choice_id)
        for rule in rules:
            explain = sfn.Pass(
                self, rule.state_name,
                result=sfn.Result.from_object({"error": rule.error, "cause": rule.message}),
                result_path="$.rejection",
            )
            self.choice.when(rule.violated, explain.next(reject))

    def then(self, next_state: sfn.IChainable) -> sfn.Chain:
        self.choice.otherwise(next_state)
        return sfn.Chain.start(self.choice)


#: Characters Step Functions allows in an execution name that a SageMaker tag value refuses
#: (tag values match ``^([\p{L}\p{Z}\p{N}_.:/=+\-@]*)$``: botocore's sagemaker model, TagValue;
#: execution names exclude whitespace, brackets, wildcards and ``"#%\^|~`$&,;:/``: Step
#: Functions API reference, StartExecution ``name``). Jobs carry the execution name as a tag.
EXECUTION_NAME_CHARACTERS_REFUSED_BY_TAGS = contract.EXECUTION_NAME_CHARACTERS_REFUSED_BY_TAGS


def execution_name_rules() -> list[Rule]:
    """The execution's name must be a valid SageMaker tag value."""
    refused = EXECUTION_NAME_CHARACTERS_REFUSED_BY_TAGS
    return [Rule(
        Cond.or_(*[Cond.string_matches("$$.Execution.Name", f"*{char}*") for char in refused]),
        INVALID_INPUT_ERROR,
        f"the execution name must not contain {' '.join(refused)}: it becomes a SageMaker tag "
        "value, which allows only letters, digits, spaces and _ . : / = + - @",
        "execution name", "Characters",
    )]


def config_rules(*, allowed_instance_types: Sequence[str], max_instance_count: int,
                 max_runtime_seconds: int) -> list[Rule]:
    """Checks of the merged execution input at ``$.config``."""
    return [
        *execution_name_rules(),
        *one_of_rules("$.config.instanceType", "instanceType", allowed_instance_types),
        *number_rules("$.config.instanceCount", "instanceCount", 1, max_instance_count),
        *number_rules("$.config.volumeSizeInGB", "volumeSizeInGB", 1, MAX_VOLUME_SIZE_GB),
        *number_rules("$.config.maxRuntimeInSeconds", "maxRuntimeInSeconds", 1, max_runtime_seconds),
        Rule(Cond.not_(Cond.is_boolean("$.config.spot")), INVALID_INPUT_ERROR,
             "field 'spot' must be true or false", "spot", "Type"),
        *integer_rules("$.numberText.instanceCount", "instanceCount"),
        *integer_rules("$.numberText.volumeSizeInGB", "volumeSizeInGB"),
        *integer_rules("$.numberText.maxRuntimeInSeconds", "maxRuntimeInSeconds"),
    ]


#: The integer fields of the merged input whose JSON text :func:`integer_rules` reads.
CONFIG_INTEGER_FIELDS = contract.INTEGER_FIELDS
TUNING_INTEGER_FIELDS = contract.TUNING_INTEGER_FIELDS


def number_text(base: str, fields: Sequence[str]) -> dict[str, str]:
    """Pass parameters that record each field's JSON text under its own name."""
    return {f"{name}.$": f"States.JsonToString({base}.{name})" for name in fields}


TUNING_STRATEGIES = contract.TUNING_STRATEGIES
HYPERBAND_MAX_RESOURCE = contract.HYPERBAND_MAX_RESOURCE


def tuning_rules(*, max_jobs: int = contract.MAX_TUNING_JOBS,
                 max_parallel_jobs: int = contract.MAX_PARALLEL_TUNING_JOBS) -> list[Rule]:
    """Checks of the merged ``tuning`` object at ``$.tuning.config``."""
    base = "$.tuning.config"
    return [
        *one_of_rules(f"{base}.strategy", "tuning.strategy", TUNING_STRATEGIES),
        *number_rules(f"{base}.maxJobs", "tuning.maxJobs", 1, max_jobs),
        *number_rules(f"{base}.maxParallelJobs", "tuning.maxParallelJobs", 1, max_parallel_jobs),
        Rule(Cond.not_(Cond.is_string(f"{base}.objective.metricName")), INVALID_INPUT_ERROR,
             "field 'tuning.objective.metricName' must be a metric name",
             "tuning.objective.metricName", "Type"),
        *one_of_rules(f"{base}.objective.type", "tuning.objective.type", contract.OBJECTIVE_TYPES),
        *one_of_rules(f"{base}.earlyStopping", "tuning.earlyStopping",
                      contract.EARLY_STOPPING_TYPES),
        Rule(Cond.and_(Cond.string_equals(f"{base}.strategy", "Hyperband"),
                       Cond.string_equals(f"{base}.earlyStopping", "Auto")),
             INVALID_INPUT_ERROR,
             "field 'tuning.earlyStopping' must be Off with the Hyperband strategy",
             "tuning.earlyStopping", "WithHyperband"),
        Rule(Cond.or_(Cond.not_(Cond.is_present(f"{base}.parameterRanges")),
                      Cond.is_null(f"{base}.parameterRanges")),
             INVALID_INPUT_ERROR,
             "field 'tuning.parameterRanges' is required (SageMaker's ParameterRanges shape)",
             "tuning.parameterRanges", "Missing"),
        # Grid search "requires categorical hyperparameters" (developer guide, "Understand the
        # hyperparameter tuning strategies"); each method's default ranges are not all
        # categorical, so Grid needs ranges of the user's.
        Rule(Cond.and_(Cond.string_equals(f"{base}.strategy", "Grid"),
                       Cond.or_(Cond.is_present(f"{base}.parameterRanges.ContinuousParameterRanges[0]"),
                                Cond.is_present(f"{base}.parameterRanges.IntegerParameterRanges[0]"))),
             INVALID_INPUT_ERROR,
             "field 'tuning.parameterRanges' may hold only CategoricalParameterRanges with the Grid "
             "strategy (SageMaker's rule): list the values to try as categorical ranges, or choose "
             "Bayesian, Random or Hyperband",
             "tuning.parameterRanges", "WithGrid"),
        Rule(Cond.and_(Cond.string_equals(f"{base}.strategy", "Grid"),
                       Cond.not_(Cond.is_present(
                           f"{base}.parameterRanges.CategoricalParameterRanges[0]"))),
             INVALID_INPUT_ERROR,
             "field 'tuning.parameterRanges' needs at least one CategoricalParameterRanges entry "
             "with the Grid strategy: the grid is made of their values",
             "tuning.parameterRanges", "EmptyGrid"),
        Rule(Cond.and_(Cond.not_(Cond.string_equals(f"{base}.strategy", "Grid")),
                       Cond.number_greater_than_json_path(f"{base}.maxParallelJobs", f"{base}.maxJobs")),
             INVALID_INPUT_ERROR,
             "field 'tuning.maxParallelJobs' must not exceed 'tuning.maxJobs'",
             "tuning.maxParallelJobs", "AboveMaxJobs"),
        *integer_rules("$.numberText.maxJobs", "tuning.maxJobs"),
        *integer_rules("$.numberText.maxParallelJobs", "tuning.maxParallelJobs"),
    ]


def hyperband_rules() -> list[Rule]:
    """Checks of ``tuning.hyperband`` (used only with the Hyperband strategy)."""
    base = "$.tuning.config.hyperband"
    rules: list[Rule] = []
    for name in ("maxResource", "minResource"):
        path, field = f"{base}.{name}", f"tuning.hyperband.{name}"
        rules.append(Rule(Cond.not_(Cond.is_present(path)), INVALID_INPUT_ERROR,
                          f"field '{field}' is required with the Hyperband strategy", field,
                          "Missing"))
        rules.extend(number_rules(path, field, 1, HYPERBAND_MAX_RESOURCE))
    rules.append(Rule(
        Cond.number_greater_than_json_path(f"{base}.minResource", f"{base}.maxResource"),
        INVALID_INPUT_ERROR,
        "field 'tuning.hyperband.minResource' must not exceed 'tuning.hyperband.maxResource'",
        "tuning.hyperband.minResource", "AboveMax"))
    return rules


def integer_rules(text_path: str, field: str) -> list[Rule]:
    """The number whose JSON text is at ``text_path`` must be whole (SageMaker's integer fields
    refuse ``1.5`` and ``2.0`` alike): its text has no ``.`` and no exponent."""
    return [Rule(
        Cond.or_(*[Cond.string_matches(text_path, pattern) for pattern in ("*.*", "*e*", "*E*")]),
        INVALID_INPUT_ERROR, f"field '{field}' must be a whole number", field, "Integer",
    )]
