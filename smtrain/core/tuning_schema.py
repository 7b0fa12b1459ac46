"""The ``tuning`` object of the execution input, as a JSON Schema (checked before any call)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from smtrain.core import contract
from smtrain.core.errors import InputError

_NAME = {"type": "string", "minLength": 1, "maxLength": 256}
_NUMBER_TEXT = {"type": "string", "pattern": r"^[-+]?[0-9]*\.?[0-9]+([eE][-+]?[0-9]+)?$"}
_SCALING = {"enum": list(contract.SCALING_TYPES)}

TUNING_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "strategy": {"enum": list(contract.TUNING_STRATEGIES)},
        "maxJobs": {"type": "integer", "minimum": 1, "maximum": contract.MAX_TUNING_JOBS},
        "maxParallelJobs": {"type": "integer", "minimum": 1,
                            "maximum": contract.MAX_PARALLEL_TUNING_JOBS},
        "objective": {
            "type": "object", "additionalProperties": False,
            "required": ["metricName", "type"],
            "properties": {"metricName": _NAME, "type": {"enum": list(contract.OBJECTIVE_TYPES)}},
        },
        "parameterRanges": {
            "type": "object", "additionalProperties": False, "minProperties": 1,
            "properties": {
                "ContinuousParameterRanges": {"type": "array", "items": {
                    "type": "object", "additionalProperties": False,
                    "required": ["Name", "MinValue", "MaxValue"],
                    "properties": {"Name": _NAME, "MinValue": _NUMBER_TEXT, "MaxValue": _NUMBER_TEXT,
                                   "ScalingType": _SCALING}}},
                "IntegerParameterRanges": {"type": "array", "items": {
                    "type": "object", "additionalProperties": False,
                    "required": ["Name", "MinValue", "MaxValue"],
                    "properties": {"Name": _NAME, "MinValue": {"type": "string", "pattern": r"^-?[0-9]+$"},
                                   "MaxValue": {"type": "string", "pattern": r"^-?[0-9]+$"},
                                   "ScalingType": _SCALING}}},
                "CategoricalParameterRanges": {"type": "array", "items": {
                    "type": "object", "additionalProperties": False, "required": ["Name", "Values"],
                    "properties": {"Name": _NAME, "Values": {
                        "type": "array", "minItems": 1, "maxItems": 30, "items": {"type": "string"}}}}},
            },
        },
        "earlyStopping": {"enum": ["Off", "Auto"]},
        # Hyperband's resources: "The maximum value is 20,000 epochs" (API reference,
        # HyperbandStrategyConfig.MaxResource).
        "hyperband": {
            "type": "object", "additionalProperties": False,
            "required": ["minResource", "maxResource"],
            "properties": {"minResource": {"type": "integer", "minimum": 1, "maximum": 20000},
                           "maxResource": {"type": "integer", "minimum": 1, "maximum": 20000}},
        },
    },
}


def load_tuning(path: Path, *, hyperparameters: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Read and check a tuning JSON file; one-line :class:`InputError` on any problem."""
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"tuning file {path} does not exist") from None
    except json.JSONDecodeError as error:
        raise InputError(f"tuning file {path} is not valid JSON: {error}") from None
    check_tuning(document, source=str(path), hyperparameters=hyperparameters)
    return document  # type: ignore[no-any-return]


def check_tuning(document: Any, *, source: str = "tuning",
                 hyperparameters: Mapping[str, str] | None = None) -> None:
    """The state machine's tuning checks, and what SageMaker refuses that it cannot check: a
    hyperparameter both tuned and given a static value (``hyperparameters``, the user's)."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(TUNING_SCHEMA)
    errors = sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
    if errors:
        error = errors[0]
        where = ".".join(str(p) for p in error.absolute_path) or "(top level)"
        raise InputError(f"{source}: {where}: {error.message}")
    ranges = document.get("parameterRanges", {})
    for spec in [*ranges.get("ContinuousParameterRanges", []), *ranges.get("IntegerParameterRanges", [])]:
        if float(spec["MinValue"]) > float(spec["MaxValue"]):
            raise InputError(f"{source}: range {spec['Name']!r} has MinValue above MaxValue")
    if document.get("strategy") == "Hyperband" and document.get("earlyStopping") == "Auto":
        raise InputError(f"{source}: earlyStopping must be Off with the Hyperband strategy")
    if document.get("strategy") == "Grid" and (
            not ranges.get("CategoricalParameterRanges") or ranges.get("ContinuousParameterRanges")
            or ranges.get("IntegerParameterRanges")):
        raise InputError(f"{source}: the Grid strategy takes only CategoricalParameterRanges "
                         "(SageMaker's rule): list the values to try as categorical ranges")
    if document.get("strategy", "Bayesian") != "Grid" and \
            document.get("maxParallelJobs", 0) > document.get("maxJobs", contract.MAX_TUNING_JOBS):
        raise InputError(f"{source}: maxParallelJobs must not exceed maxJobs")
    hyperband = document.get("hyperband")
    if hyperband and hyperband["minResource"] > hyperband["maxResource"]:
        raise InputError(f"{source}: hyperband.minResource must not exceed hyperband.maxResource")
    tuned = {spec["Name"] for kind in ranges.values() for spec in kind}
    both = sorted(tuned & set(hyperparameters or {}))
    if both:
        raise InputError(f"{source}: {', '.join(both)} is both tuned and given with --hp; SageMaker "
                         "refuses a hyperparameter that is tuned and static: drop one")
