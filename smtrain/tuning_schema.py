"""The ``tuning`` object of the execution input, as a JSON Schema (checked before any call)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from smtrain.execution_request import InputError

_NAME = {"type": "string", "minLength": 1, "maxLength": 256}
_NUMBER_TEXT = {"type": "string", "pattern": r"^[-+]?[0-9]*\.?[0-9]+([eE][-+]?[0-9]+)?$"}
_SCALING = {"enum": ["Auto", "Linear", "Logarithmic", "ReverseLogarithmic"]}

TUNING_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "strategy": {"enum": ["Bayesian", "Random", "Hyperband", "Grid"]},
        "maxJobs": {"type": "integer", "minimum": 1, "maximum": 500},
        "maxParallelJobs": {"type": "integer", "minimum": 1, "maximum": 100},
        "objective": {
            "type": "object", "additionalProperties": False,
            "required": ["metricName", "type"],
            "properties": {"metricName": _NAME, "type": {"enum": ["Maximize", "Minimize"]}},
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
    },
}


def load_tuning(path: Path) -> dict[str, Any]:
    """Read and check a tuning JSON file; one-line :class:`InputError` on any problem."""
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"tuning file {path} does not exist") from None
    except json.JSONDecodeError as error:
        raise InputError(f"tuning file {path} is not valid JSON: {error}") from None
    check_tuning(document, source=str(path))
    return document  # type: ignore[no-any-return]


def check_tuning(document: Any, *, source: str = "tuning") -> None:
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
    if document.get("strategy") == "Grid" and ranges.get("ContinuousParameterRanges"):
        raise InputError(f"{source}: the Grid strategy takes only integer and categorical ranges")
