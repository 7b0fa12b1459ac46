"""The bodies of prediction requests and responses, as every shipped program serves them.

One owner for the serving formats of the script-mode handler (``digits_mlp/inference.py``, run by
the PyTorch inference toolkit) and the BYOC ``serve`` program, so that both endpoints accept the
same requests and answer bad ones with the same status and message:

- ``text/csv``: one row per line, the feature values only (no label, no header), comma-separated;
- ``application/json``: ``{"instances": [[...], ...]}`` (or the bare list of rows);
- the response (``Accept``: ``application/json``, the default, or ``text/csv``):
  ``{"predictions": [label, ...]}``, or one label per line.

A bad request raises :class:`RequestError` with an HTTP status (400, 406 or 415) and a message
for the caller; nothing here raises anything else for bad input.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

CSV = "text/csv"
JSON = "application/json"
CONTENT_TYPES = (CSV, JSON)
DEFAULT_ACCEPT = JSON


class RequestError(ValueError):
    """A request the server cannot answer: ``status`` is the HTTP status to send (4xx), the
    message says why, in terms of the request."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def media_type(header: str | None) -> str:
    """``text/csv; charset=utf-8`` -> ``text/csv`` (lower case); ``""`` for no header."""
    return (header or "").split(";", 1)[0].strip().lower()


def decode_features(body: bytes | bytearray | memoryview | str, content_type: str | None, *,
                    num_features: int | None = None) -> np.ndarray:
    """The request's rows as a ``(rows, features)`` float32 array: every row as wide as the
    first, and ``num_features`` wide when given (else see :func:`check_width`)."""
    kind = media_type(content_type)
    if kind not in CONTENT_TYPES:
        shown = f"'{content_type}'" if content_type else "none"
        raise RequestError(415, f"Content-Type {shown} is not supported; send {' or '.join(CONTENT_TYPES)}")
    # TorchServe hands the PyTorch image's handler the body as a bytearray (its serving toolkit
    # sets decode_input_request=false; sagemaker-inference decodes it to str only for exactly
    # text/csv or application/json, so "text/csv; charset=utf-8" arrives undecoded).
    if isinstance(body, (bytes, bytearray, memoryview)):
        try:
            body = bytes(body).decode("utf-8")
        except UnicodeDecodeError as error:
            raise RequestError(400, f"the body is not UTF-8 text: {error}") from None
    rows = _csv_rows(body) if kind == CSV else _json_rows(body)
    if not rows:
        raise RequestError(400, "the request holds no rows")
    width = len(rows[0]) if num_features is None else num_features
    for number, row in enumerate(rows, start=1):
        if len(row) != width:
            raise RequestError(400, _width_message(f"row {number} has {len(row)} values", width))
    return np.asarray(rows, dtype=np.float32)


def check_width(rows: np.ndarray, *, num_features: int) -> None:
    """For rows decoded before the model's width was known: every row has ``num_features``."""
    if rows.shape[1] != num_features:
        raise RequestError(400, _width_message(f"rows have {rows.shape[1]} values", num_features))


def _width_message(found: str, num_features: int) -> str:
    return f"{found}; the model takes {num_features} features per row (no label column)"


def _finite(number: float, where: str, shown: str) -> float:
    if not math.isfinite(number):
        raise RequestError(400, f"{where}: {shown} is not a finite number")
    return number


def _csv_number(cell: str, where: str) -> float:
    try:
        number = float(cell)
    except ValueError:
        raise RequestError(400, f"{where}: '{cell}' is not a number") from None
    return _finite(number, where, cell)


def _json_number(value: Any, where: str) -> float:
    # A JSON number only: not a string, and not true/false (bool is an int in Python).
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RequestError(400, f"{where}: {json.dumps(value)} is not a number")
    return _finite(float(value), where, json.dumps(value))


def _csv_rows(text: str) -> list[list[float]]:
    rows = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        rows.append([_csv_number(cell.strip(), f"line {line_number}, column {column}")
                     for column, cell in enumerate(line.split(","), start=1)])
    return rows


def _json_rows(text: str) -> list[list[float]]:
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise RequestError(400, f"the body is not valid JSON: {error}") from None
    instances = document.get("instances") if isinstance(document, dict) else document
    if not isinstance(instances, list):
        raise RequestError(400, 'send {"instances": [[feature, ...], ...]}: a list of rows under "instances"')
    rows = []
    for number, row in enumerate(instances, start=1):
        if not isinstance(row, list):
            raise RequestError(400, f"instance {number} is not a list of feature values")
        rows.append([_json_number(value, f"instance {number}, value {index}")
                     for index, value in enumerate(row, start=1)])
    return rows


def response_type(accept: str | None) -> str:
    """The first type of ``Accept`` this server writes; ``*/*`` or none: JSON."""
    offered = [media_type(part) for part in (accept or "").split(",")]
    offered = [kind for kind in offered if kind]
    if not offered:
        return DEFAULT_ACCEPT
    for kind in offered:
        if kind in CONTENT_TYPES:
            return kind
        if kind == "*/*":
            return DEFAULT_ACCEPT
    raise RequestError(406, f"Accept '{accept}' names no type this model answers in; "
                            f"ask for {' or '.join(CONTENT_TYPES)}")


def encode_predictions(labels: Sequence[int], accept: str | None) -> tuple[str, str]:
    """``(body, content type)`` of the response for the predicted labels."""
    kind = response_type(accept)
    values = [int(label) for label in labels]
    if kind == CSV:
        return "".join(f"{value}\n" for value in values), CSV
    return json.dumps({"predictions": values}), JSON
