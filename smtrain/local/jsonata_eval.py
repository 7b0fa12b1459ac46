"""JSONata for moto's Step Functions interpreter.

moto's ASL parser (ported from LocalStack) parses JSONata states and builds each expression with
its variables bound, then hands the text to ``_eval_jsonata``, which LocalStack fills with a
JVM bridge to jsonata-java and moto leaves empty. ``jsonata-python`` is a pure-Python port of
that same jsonata-java (JSONata 2.0, as Step Functions implements: developer guide,
"Transforming data with JSONata in Step Functions"), so it fills the gap without a JVM. moto is
pinned exactly for this hook as for the SageMaker one.
"""

from __future__ import annotations

from typing import Any

import jsonata
from moto.stepfunctions.parser.asl.jsonata import jsonata as moto_jsonata


def evaluate(expression: str) -> Any:
    """What moto's JVM bridge would return: the value of a closed JSONata expression."""
    try:
        return jsonata.Jsonata(expression).evaluate(None)
    except Exception as error:  # moto turns JSONataException into States.QueryEvaluationError
        raise moto_jsonata.JSONataException("UNKNOWN", str(error)) from error


def enable() -> None:
    """Let moto's interpreter evaluate JSONata (idempotent)."""
    moto_jsonata._eval_jsonata = evaluate
