"""GetExecutionHistory's answer, written as moto writes it, without moto's per-member lookups.

moto answers every call through its generic response serializer (``moto.core.serialize``): for
each member of each structure in the operation's output shape it tries the member's name and
its aliases on the value. A history event has one detail structure among some sixty optional
members, each with its own members, so a history of a few hundred events costs moto hundreds of
thousands of lookups: about a fifth of the offline engine's own time in the suite was spent there
(measured with py-spy), most of it reading each execution's history at its end.

moto's Step Functions backend (ported from LocalStack) keeps each event as a plain dict keyed by
the API's member names (``moto.stepfunctions.parser.api.HistoryEvent``). :func:`answer` walks
those dicts against the same output shape (botocore's service model, the one moto serializes
with) and writes what moto's JSON serializer writes for them:

- a member only where its value is not None;
- a timestamp as epoch seconds, milliseconds kept, read as moto reads it (botocore's
  ``parse_to_aware_datetime``, then ``TimestampSerializer._timestamp_unixtimestamp``);
- an integer or long as ``int``, a float or double as ``float``, an enum as its value, any other
  string as ``str``.

Where a value is not of the kind described (a structure that is not a dict, a key that is not a
member, which moto might read under another name, a None in a list or a map), :class:`Unwritable`
is raised and moto's serializer answers as before. The answer is the same either way, byte for
byte: checked on the 166 histories of the offline modules when this was written, and kept by
tests/test_offline_scripted.py on every kind of event. moto is pinned exactly for this hook as for
the others.
"""

from __future__ import annotations

import calendar
import datetime
import functools
import json
from enum import Enum
from typing import Any

from botocore.model import ListShape, MapShape, Shape, StructureShape
from botocore.utils import parse_to_aware_datetime

_original: Any = None


class Unwritable(Exception):
    """A value this writer does not know how moto writes: moto's serializer answers instead."""


def _unix(value: datetime.datetime) -> int | float:
    seconds = calendar.timegm(value.timetuple())
    return seconds + (value.microsecond // 1000) / 1000.0 if value.microsecond else seconds


@functools.lru_cache(maxsize=65536)
def _timestamp_text(text: str) -> int | float:
    """A timestamp moto keeps as text (its events' are ISO 8601 strings), read as moto reads it;
    a history is read again as it grows, its earlier events' texts unchanged."""
    return _unix(parse_to_aware_datetime(text))


def _timestamp(value: Any, shape: Shape) -> int | float:
    if shape.serialization.get("timestampFormat", "unixtimestamp").lower() != "unixtimestamp":
        raise Unwritable(f"{shape.name}: {shape.serialization['timestampFormat']}")
    if isinstance(value, str):
        return _timestamp_text(value)
    return _unix(parse_to_aware_datetime(value))


def _string(value: Any) -> Any:
    if isinstance(value, Enum):
        value = value.value
    return str(value) if value not in (None, {}, []) else value


def write(value: Any, shape: Shape) -> Any:
    """``value`` as moto's JSON serializer writes it for ``shape`` (never called with None)."""
    kind = shape.type_name
    if kind == "structure":
        assert isinstance(shape, StructureShape)
        if shape.is_document_type:
            return value
        if not isinstance(value, dict):
            raise Unwritable(f"{shape.name} is a {type(value).__name__}")
        members = shape.members
        unknown = value.keys() - members.keys()
        if unknown:  # moto would look for a member under other names too, and might find one
            raise Unwritable(f"{shape.name} has {sorted(unknown)}")
        return {member.serialization.get("name", key): write(item, member)
                for key, member in members.items() if (item := value.get(key)) is not None}
    if kind == "list":
        assert isinstance(shape, ListShape)
        if not isinstance(value, list):
            raise Unwritable(f"{shape.name} is a {type(value).__name__}")
        if any(item is None for item in value):  # moto's answer depends on the item's shape
            raise Unwritable(f"{shape.name} holds None")
        return [write(item, shape.member) for item in value]
    if kind == "map":
        assert isinstance(shape, MapShape)
        if not isinstance(value, dict):
            raise Unwritable(f"{shape.name} is a {type(value).__name__}")
        if any(item is None for item in value.values()):  # likewise
            raise Unwritable(f"{shape.name} holds None")
        return {key: write(item, shape.value) for key, item in value.items()}
    if kind == "timestamp":
        return _timestamp(value, shape)
    if kind in ("integer", "long"):
        return int(value)
    if kind in ("float", "double"):
        return float(value)
    if kind == "string":
        return _string(value)
    if kind == "boolean" and isinstance(value, bool):
        return value
    raise Unwritable(f"{shape.name}: {kind} {type(value).__name__}")


def answer(response: Any) -> Any:
    """``StepFunctionResponse.get_execution_history``, its body written by :func:`write` (as moto
    writes it: ``BaseJSONSerializer``, compact JSON, the protocol's content type)."""
    from moto import settings
    from moto.core.responses import ActionResult

    result = _original(response)
    if not isinstance(result, ActionResult) or settings.PRETTIFY_RESPONSES:
        return result
    output, content_type = _operation()
    try:
        body = json.dumps(write(result.result, output))
    except Unwritable:
        return result
    return body, {"Content-Type": content_type}


@functools.cache
def _operation() -> tuple[Shape, str]:
    """GetExecutionHistory's output shape in the model moto serializes with, and the JSON
    protocol's content type."""
    from moto.core.utils import get_service_model

    service = get_service_model("stepfunctions")
    output = service.operation_model("GetExecutionHistory").output_shape
    assert output is not None
    return output, f"application/x-amz-json-{service.metadata['jsonVersion']}"


def enable() -> None:
    """Answer GetExecutionHistory through :func:`answer` (idempotent)."""
    global _original
    from moto.stepfunctions.responses import StepFunctionResponse

    if _original is None:
        _original = StepFunctionResponse.get_execution_history
        StepFunctionResponse.get_execution_history = answer
