"""SageMaker's machine-readable API contract: botocore's service model, checked the way the
service checks it.

botocore's own ``ParamValidator`` checks required members, unknown members, types and minimums
only (``VALIDATED_METADATA_ATTRS`` in ``botocore/validate.py``: required, min, document, union);
the rest of what the model states (maximum lengths, sizes and values, enum values, patterns) the
service enforces on its side and answers with a ``ValidationException``. :func:`request_violations`
runs both, so a request the offline engine accepts is one SageMaker's front end would accept.

:func:`response_violations` checks an answer the other way round: every required member present,
no member the model does not define (a test double must never answer what AWS never returns).

Patterns in the model come without anchors and are Java regexes matched whole (``\\p{L}`` and
friends included), hence the ``regex`` module and ``fullmatch``.
"""

from __future__ import annotations

import datetime
import functools
from collections.abc import Iterator
from typing import Any

import botocore.session
import regex
from botocore.model import OperationModel, ServiceModel, Shape
from botocore.validate import ParamValidator

SERVICE = "sagemaker"


@functools.cache
def service_model(service: str = SERVICE) -> ServiceModel:
    return botocore.session.get_session().get_service_model(service)


def operation_model(operation: str, service: str = SERVICE) -> OperationModel:
    """``operation`` in the model's spelling, e.g. ``CreateTrainingJob``."""
    return service_model(service).operation_model(operation)


@functools.cache
def _compiled(pattern: str) -> Any:
    return regex.compile(pattern)


def _lower_first(name: str) -> str:
    return name[:1].lower() + name[1:]


def request_violations(operation: str, request: dict[str, Any], *,
                       service: str = SERVICE) -> list[str]:
    """Every way ``request`` breaks the input contract of ``operation`` (of ``service``, SageMaker
    by default), in SageMaker's wording (``Value '…' at 'path' failed to satisfy constraint:
    …``); empty when it is valid."""
    shape = operation_model(operation, service).input_shape
    report = ParamValidator().validate(request, shape)
    problems = [line.strip() for line in report.generate_report().splitlines()
                if line.strip()] if report.has_errors() else []
    problems.extend(_constraint_violations(request, shape, ""))
    return problems


def _constraint_violations(value: Any, shape: Shape, path: str) -> Iterator[str]:
    """What the service checks beyond botocore: max, enum and pattern (types already checked)."""
    metadata = shape.metadata
    kind = shape.type_name
    where = path or "request"
    if kind == "structure" and isinstance(value, dict):
        for name, member in shape.members.items():
            if name in value:
                child = f"{path}.{_lower_first(name)}" if path else _lower_first(name)
                yield from _constraint_violations(value[name], member, child)
    elif kind == "list" and isinstance(value, list):
        if "max" in metadata and len(value) > metadata["max"]:
            yield (f"Value at '{where}' failed to satisfy constraint: Member must have length "
                   f"less than or equal to {metadata['max']}")
        for index, item in enumerate(value, start=1):
            yield from _constraint_violations(item, shape.member, f"{path}.{index}.member")
    elif kind == "map" and isinstance(value, dict):
        if "max" in metadata and len(value) > metadata["max"]:
            yield (f"Value at '{where}' failed to satisfy constraint: Map value must have length "
                   f"less than or equal to {metadata['max']}")
        for key, item in value.items():
            yield from _constraint_violations(key, shape.key, f"{path}.key")
            yield from _constraint_violations(item, shape.value, f"{path}.{key}")
    elif kind == "string" and isinstance(value, str):
        if "max" in metadata and len(value) > metadata["max"]:
            yield (f"Value '{value[:40]}' at '{where}' failed to satisfy constraint: Member must "
                   f"have length less than or equal to {metadata['max']}")
        if shape.enum and value not in shape.enum:
            yield (f"Value '{value}' at '{where}' failed to satisfy constraint: Member must "
                   f"satisfy enum value set: [{', '.join(shape.enum)}]")
        pattern = metadata.get("pattern")
        if pattern and _compiled(pattern).fullmatch(value) is None:
            yield (f"Value '{value[:80]}' at '{where}' failed to satisfy constraint: Member must "
                   f"satisfy regular expression pattern: {pattern}")
    elif kind in ("integer", "long", "float", "double") and isinstance(value, int | float) \
            and not isinstance(value, bool) and "max" in metadata and value > metadata["max"]:
        yield (f"Value '{value}' at '{where}' failed to satisfy constraint: Member must have value "
               f"less than or equal to {metadata['max']}")


def answer_as_aws(operation: str, answer: dict[str, Any], *,
                  answered_by: str = "the offline SageMaker") -> dict[str, Any]:
    """``answer``, once it is shown to be one SageMaker could give (botocore's output shape):
    a stand-in that answers otherwise is a bug of the stand-in, not an AWS error."""
    problems = response_violations(operation, answer)
    if problems:
        raise RuntimeError(f"{answered_by} answered {operation} as AWS never would: "
                           + "; ".join(problems))
    return answer


def response_violations(operation: str, response: dict[str, Any]) -> list[str]:
    """Members of an answer to ``operation`` that AWS would never send that way: a required
    member missing, a member the model does not define, a value of the wrong JSON type."""
    shape = operation_model(operation).output_shape
    return list(_response_problems(response, shape, operation))


def _response_problems(value: Any, shape: Shape, path: str) -> Iterator[str]:
    kind = shape.type_name
    if kind == "structure":
        if not isinstance(value, dict):
            yield f"{path}: expected an object, got {type(value).__name__}"
            return
        for name in shape.required_members:
            if name not in value:
                yield f"{path}: required member {name} is missing"
        for name, item in value.items():
            if name not in shape.members:
                yield f"{path}: {name} is not a member of {shape.name}"
            else:
                yield from _response_problems(item, shape.members[name], f"{path}.{name}")
    elif kind == "list":
        if not isinstance(value, list):
            yield f"{path}: expected a list"
            return
        for index, item in enumerate(value):
            yield from _response_problems(item, shape.member, f"{path}[{index}]")
    elif kind == "map":
        if not isinstance(value, dict):
            yield f"{path}: expected a map"
            return
        for key, item in value.items():
            yield from _response_problems(item, shape.value, f"{path}.{key}")
    elif kind == "string" and not isinstance(value, str):
        yield f"{path}: expected a string"
    elif kind == "string" and shape.enum and value not in shape.enum:
        yield f"{path}: {value!r} is not one of {shape.enum}"
    elif kind in ("integer", "long") and (not isinstance(value, int) or isinstance(value, bool)):
        yield f"{path}: expected an integer"
    elif kind in ("float", "double") and (not isinstance(value, int | float) or isinstance(value, bool)):
        yield f"{path}: expected a number"
    elif kind == "boolean" and not isinstance(value, bool):
        yield f"{path}: expected a boolean"
    elif kind == "timestamp" and not isinstance(value, str | datetime.datetime | int | float):
        yield f"{path}: expected a timestamp"
