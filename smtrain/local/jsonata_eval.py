"""JSONata for moto's Step Functions interpreter.

moto's ASL parser (ported from LocalStack) parses JSONata states and builds each expression with
its variables bound, then hands the text to ``_eval_jsonata``, which LocalStack fills with a
JVM bridge to jsonata-java and moto leaves empty. ``jsonata-python`` is a pure-Python port of
that same jsonata-java (JSONata 2.0, as Step Functions implements: developer guide,
"Transforming data with JSONata in Step Functions"), so it fills the gap without a JVM. moto is
pinned exactly for this hook as for the SageMaker one.

moto hands over one text, ``(`` + the bindings as ``$name:=<JSON>;`` declarations (``$states``,
the state machine's variables) + the state's own expression + ``)``
(``moto.stepfunctions.parser.asl.jsonata.jsonata.compose_jsonata_expression``). The state's
expression is the same in every execution, the bindings are not, and parsing was most of the
cost (the input check's text, about 25,000 characters with its bindings, took 37 ms to parse
and 5 ms to evaluate). So the leading declarations whose values are JSON are read as JSON and
passed as bindings, and the rest is parsed once and kept. Binding a JSON value outside the block
is what declaring it first inside the block does, once the value is the one JSONata's parser
builds from the same literal (numbers as its tokenizer reads them, ``null`` as its null value);
a declaration that is not JSON (moto's text for an intrinsic function, a string moto did not
escape, ``NaN``) ends the hoisting there, and the text from it on is parsed whole, as before.
"""

from __future__ import annotations

import json
import math
import re
import threading
from collections import OrderedDict
from typing import Any

import jsonata
from jsonata.utils import Utils
from moto.stepfunctions.parser.asl.jsonata import jsonata as moto_jsonata

_DECLARATION = re.compile(r"\$([A-Za-z0-9_]+):=")


def _number(text: str) -> Any:
    """A JSON number as JSONata's tokenizer reads one: a float, whole ones as int (``1.0`` is 1,
    and integers past 2**53 are rounded as a float rounds them)."""
    number = float(text)
    if math.isinf(number):  # JSONata has no such number: parsed whole, it fails as it did
        raise ValueError(text)
    return Utils.convert_number(number)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is no JSONata literal")  # NaN, Infinity: JSONata reads names


_JSON = json.JSONDecoder(parse_float=_number, parse_int=_number, parse_constant=_no_constant)


def _as_jsonata(value: Any) -> Any:
    """A decoded JSON value as JSONata's parser builds the same literal: ``null`` is JSONata's
    null value (Python's None is JSONata's *undefined*)."""
    if value is None:
        return Utils.NULL_VALUE
    if isinstance(value, dict):
        return {key: _as_jsonata(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_as_jsonata(item) for item in value]
    return value
#: Parsed expressions kept (a definition has a few dozen JSONata texts).
_CACHE_SIZE = 256


class _Parsed:
    """One parsed expression; evaluations of it take turns (jsonata-python keeps per-evaluation
    state, such as ``$now()``'s timestamp, on the instance)."""

    def __init__(self, text: str) -> None:
        self.expression = jsonata.Jsonata(text)
        self.lock = threading.Lock()

    def evaluate(self, bindings: dict[str, Any]) -> Any:
        with self.lock:
            return self.expression.evaluate(None, bindings)


_parsed: OrderedDict[str, _Parsed] = OrderedDict()
_parsed_lock = threading.Lock()


def _parse(text: str) -> _Parsed:
    with _parsed_lock:
        found = _parsed.get(text)
        if found is not None:
            _parsed.move_to_end(text)
            return found
    parsed = _Parsed(text)  # a syntax error raises here, as the whole text's parse would
    with _parsed_lock:
        _parsed[text] = parsed
        while len(_parsed) > _CACHE_SIZE:
            _parsed.popitem(last=False)
    return parsed


def split_bindings(expression: str) -> tuple[dict[str, Any], str]:
    """The leading ``$name:=<JSON>;`` declarations of a composed ``( ... )`` text as bindings
    (names without ``$``), and the rest of the block, as a block. A text of another shape is returned
    whole, with no bindings."""
    if not (expression.startswith("(") and expression.endswith(")")):
        return {}, expression
    bindings: dict[str, Any] = {}
    position = 1
    while (declaration := _DECLARATION.match(expression, position)) is not None:
        try:
            value, end = _JSON.raw_decode(expression, declaration.end())
        except ValueError:
            break
        if not expression.startswith(";", end):
            break
        bindings[declaration.group(1)] = _as_jsonata(value)
        position = end + 1
    body = expression[position:-1]
    if not bindings or not body.strip():
        return {}, expression
    return bindings, f"({body})"  # still a block: its own assignments stay in its scope


#: moto's checks of a state's result: when an expression returns a string or nothing, moto asks
#: ``$type(<the composed text>)`` or ``$exists(<the composed text>)`` of the same composed text
#: again (``moto.stepfunctions.parser.asl.jsonata.validations``).
_RESULT_CHECKS = ("$type(", "$exists(")


def _split_result_check(expression: str) -> tuple[dict[str, Any], str]:
    """For moto's ``$type(( ... ))`` or ``$exists(( ... ))``: the composed text's bindings, and the
    check of its own body (``$type((body))``), parsed once like the body itself. Any other text:
    no bindings."""
    for check in _RESULT_CHECKS:
        if expression.startswith(check) and expression.endswith(")"):
            bindings, body = split_bindings(expression[len(check):-1])
            # Declared inside the block, a variable named like the check (``$type``) is out of
            # the check's sight; bound outside, it would hide the built-in function from it.
            if bindings and check[1:-1] not in bindings:
                return bindings, f"{check}{body})"
    return {}, expression


def evaluate(expression: str) -> Any:
    """What moto's JVM bridge would return: the value of a closed JSONata expression. Only a
    state's own expression (and moto's ``$type``/``$exists`` check of it) is kept parsed; a text
    with no bindings to split off (moto also asks ``$type(...)`` of other whole values) is parsed
    and dropped, as before."""
    try:
        bindings, body = split_bindings(expression)
        if not bindings:
            bindings, body = _split_result_check(expression)
        if not bindings:
            return evaluate_whole(expression)
        return _parse(body).evaluate(bindings)
    except Exception as error:  # moto turns JSONataException into States.QueryEvaluationError
        raise moto_jsonata.JSONataException("UNKNOWN", str(error)) from error


def evaluate_whole(expression: str) -> Any:
    """The same value, the text parsed whole (the reference :func:`evaluate` is tested against)."""
    return jsonata.Jsonata(expression).evaluate(None)


def enable() -> None:
    """Let moto's interpreter evaluate JSONata (idempotent)."""
    moto_jsonata._eval_jsonata = evaluate
