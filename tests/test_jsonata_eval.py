"""The emulator's JSONata: moto's composed texts evaluate as a whole parse would, each state's
expression parsed once (smtrain/local/jsonata_eval.py)."""

from __future__ import annotations

from typing import Any

import pytest
from jsonata.jexception import JException
from moto.stepfunctions.parser.asl.jsonata.jsonata import (
    JSONataException,
    compose_jsonata_expression,
    encode_jsonata_variable_declarations,
)

from smtrain.core import input_rules, programs
from smtrain.local import jsonata_eval


def _composed(expression: str, **bindings: Any) -> str:
    """The text moto hands to the evaluator for ``expression`` with these variables bound."""
    declarations = encode_jsonata_variable_declarations({f"${k}": v for k, v in bindings.items()})
    return str(compose_jsonata_expression(expression, [declarations]))


def test_the_leading_json_declarations_become_bindings() -> None:
    text = _composed("$states.input.a + $limit", states={"input": {"a": 2}}, limit=3)
    bindings, body = jsonata_eval.split_bindings(text)
    assert bindings == {"states": {"input": {"a": 2}}, "limit": 3}
    assert body == "($states.input.a + $limit)"


@pytest.mark.parametrize(("expression", "bindings"), [
    ("$states.input.a + $limit", {"states": {"input": {"a": 2}}, "limit": 3}),
    # The block's own assignment shadows a binding, as it did in the composed block.
    ("($limit := 10; $limit * 2)", {"limit": 3}),
    ("$x := $limit + 1; $x", {"limit": 3}),
    ("$count($states.input.items[$ > 1])", {"states": {"input": {"items": [1, 2, 3.5]}}}),
    ('$string($n) & "/" & $string($f)', {"n": 2, "f": 2.5}),
    ("$exists($missing)", {"present": None}),
    # A string moto does not escape is no JSON: the text is parsed whole from there on.
    ('$s & "!"', {"s": 'say "hi"'}),
    ("$nested[0][1]", {"nested": [[1, 2], [3]]}),
    # Values as JSONata's parser builds them: whole numbers as integers (a metric of 1.0 in the
    # quality gate's report text), integers past 2**53 rounded as a double, null its null value.
    ("$x", {"x": 3.0}),
    ("$string($report)", {"report": {"accuracy": 1.0, "loss": [0.5, 2.0]}}),
    ("$x + 1", {"x": 2**60}),
    ("$x - 0.5", {"x": -2}),
    ("[$exists($x), $type($x), {'k': $x}]", {"x": None}),
    ("$each($o, function($v, $k) {$k & '=' & $string($v)})", {"o": {"a": None, "b": 1.0}}),
])
def test_the_value_is_the_whole_parse_s(expression: str, bindings: dict[str, Any]) -> None:
    text = _composed(expression, **bindings)
    try:
        expected = jsonata_eval.evaluate_whole(text)
    except Exception as error:  # moto's unescaped string: an error either way
        with pytest.raises(Exception) as raised:
            jsonata_eval.evaluate(text)
        assert type(raised.value).__name__ == "JSONataException", (error, raised.value)
        return
    got = jsonata_eval.evaluate(text)
    assert got == expected and repr(got) == repr(expected)  # 3 is not 3.0 here


@pytest.mark.parametrize("text", ["($x:=NaN;$exists($x))", "($x:=Infinity;$type($x))"])
def test_a_literal_json_has_and_jsonata_has_not_is_parsed_whole(text: str) -> None:
    assert jsonata_eval.split_bindings(text) == ({}, text)
    assert jsonata_eval.evaluate(text) == jsonata_eval.evaluate_whole(text)


def test_a_number_jsonata_cannot_hold_fails_as_the_whole_parse_does() -> None:
    text = "($x:=1e999;$type($x))"
    assert jsonata_eval.split_bindings(text) == ({}, text)
    with pytest.raises(JException, match="out of range"):
        jsonata_eval.evaluate_whole(text)
    with pytest.raises(JSONataException, match="out of range"):
        jsonata_eval.evaluate(text)


@pytest.mark.parametrize("check", ["$type", "$exists"])
@pytest.mark.parametrize(("expression", "bindings"), [
    ("$s & '!'", {"s": "hi"}),  # a string: moto asks its $type
    ("$x", {"x": None}),  # null: moto asks whether it $exists
    ("$missing", {"x": 1}),  # undefined
    ("$states.input.items", {"states": {"input": {"items": [1, 2]}}}),
    ("($n := 2; $string($n))", {"n": 1}),
])
def test_moto_s_check_of_a_result_is_the_whole_parse_s(check: str, expression: str,
                                                       bindings: dict[str, Any]) -> None:
    """moto checks a string or missing result with ``$type(<composed text>)`` or
    ``$exists(<composed text>)``: the same answer as the whole text's parse, the check of the
    state's expression parsed once."""
    text = f"{check}({_composed(expression, **bindings)})"
    jsonata_eval._parsed.clear()
    assert repr(jsonata_eval.evaluate(text)) == repr(jsonata_eval.evaluate_whole(text))
    assert list(jsonata_eval._parsed) == [f"{check}(({expression}))"]


@pytest.mark.parametrize("check", ["$type", "$exists"])
def test_a_variable_named_like_the_check_does_not_hide_it(check: str) -> None:
    """A state machine variable ``type`` (or ``exists``) is declared inside moto's composed block,
    out of the check's sight: the check still calls JSONata's own function."""
    text = f"{check}({_composed('$type & $exists', type='a', exists='b')})"
    assert jsonata_eval.evaluate(text) == jsonata_eval.evaluate_whole(text)


def test_only_a_state_s_own_expression_is_kept_parsed() -> None:
    """moto also asks ``$type(...)`` of every whole string result: such texts are not kept."""
    jsonata_eval._parsed.clear()
    jsonata_eval.evaluate('$type("' + "x" * 1000 + '")')
    jsonata_eval.evaluate(_composed("$a + 1", a=1))
    jsonata_eval.evaluate(_composed("$a + 1", a=2))
    assert list(jsonata_eval._parsed) == ["($a + 1)"]


def test_a_text_of_another_shape_is_parsed_whole() -> None:
    assert jsonata_eval.split_bindings("1 + 2") == ({}, "1 + 2")
    assert jsonata_eval.split_bindings('($f := function($x){$x * 2}; $f(2))') == (
        {}, '($f := function($x){$x * 2}; $f(2))')
    assert jsonata_eval.evaluate('($f := function($x){$x * 2}; $f(2))') == 4


def test_the_input_check_is_parsed_once_and_answers_as_the_whole_parse() -> None:
    """The state machine's input check, the largest text: each input its own bindings, one parse."""
    shipped = programs.discover()
    rules = input_rules.expression(shipped)
    inputs = ({"program": "digits_mlp"}, {"program": "nope"},
              {"program": "digits_mlp", "hyperparameters": {"epochs": "0"}})
    # As ReadInput hands them over: the input and its JSON text inside $states.input.
    over_state = f"($in := $states.input.input; $text := $states.input.text; {rules})"
    texts = [_composed(over_state, states={"input": {
        "input": execution_input, "text": input_rules.input_text(execution_input)}})
        for execution_input in inputs]
    jsonata_eval._parsed.clear()
    answers = [jsonata_eval.evaluate(text) for text in texts]
    assert answers == [jsonata_eval.evaluate_whole(text) for text in texts]
    assert len(jsonata_eval._parsed) == 1
    assert [answer.get("program") for answer in answers] == ["digits_mlp", None, "digits_mlp"]
    assert not answers[0].get("problems")
    assert all(answer.get("problems") for answer in answers[1:])
