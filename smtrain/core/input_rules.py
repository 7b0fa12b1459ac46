"""The program-aware checks of an execution input, written once in JSONata.

The same expression runs in two places: the state machine's ``CheckProgramInput`` state (a
JSONata Pass state inside the JSONPath state machine: Step Functions lets a state choose its own
``QueryLanguage``, developer guide "Transforming data with JSONata in Step Functions"), and the
CLI, which evaluates it with ``jsonata-python`` before it starts anything. So a raw
``StartExecution`` input and ``smtrain start`` are refused by the same rules with the same words:

- an unknown top-level field, or a ``tuning`` field SageMaker's request has no place for;
- an unknown ``program`` (or a ``method`` that names no program, or more than one);
- a hyperparameter the program does not declare, a value that is not text, of the wrong type or
  out of its bounds (values are never reformatted: ``2.10`` stays ``2.10``);
- an input channel the program does not read, or a URI that is not ``s3://bucket/...``;
- a tuning range on an undeclared or untunable name, of the wrong kind or outside the bounds; an
  objective the program does not print; a hyperparameter both tuned and given;
- a ``register`` that is not true, false, null or an object of ``minimum``/``maximum`` (metrics
  the program prints, to numbers) and ``description`` (SageMaker's description text).

:func:`expression` gives the JSONata body: it reads the raw input as ``$in`` and yields
``{"program": <resolved name or undefined>, "instanceType": <the program's default instance
type when the input gives none, or undefined>, "register": <see below>, "problems": [{"error",
"cause"}, ...]}``. ``register`` is what the run registers: ``{"enabled": false}``, or
``{"enabled": true, "minimum": {...}, "maximum": {...}}`` (with the input's ``description`` when
it gives one). The input's ``register`` decides whether (absent or null: the program's
``[register] default``); each bound is the input's when it gives that bound (``{}`` clears it),
else the program's, so ``true``, a description alone or a ``minimum`` alone keep the program's
other limits.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from smtrain.core import contract
from smtrain.core.programs import Program


def catalog(programs: Mapping[str, Program]) -> dict[str, Any]:
    """The programs' checkable facts, as JSON data."""
    return {name: program.catalog_entry() for name, program in sorted(programs.items())}


def _list(values: Any) -> str:
    return json.dumps(list(values))


def expression(programs: Mapping[str, Program]) -> str:
    """The checks as one JSONata expression over ``$in`` (the raw execution input)."""
    fields = _list(contract.INPUT_FIELDS)
    tuning_fields = _list(contract.TUNING_FIELDS)
    range_kinds = json.dumps(contract.RANGE_KINDS)
    invalid = json.dumps(contract.INVALID_INPUT_ERROR)
    unknown_program = json.dumps(contract.UNKNOWN_PROGRAM_ERROR)
    program_field, method_field = contract.PROGRAM, contract.METHOD
    register_fields = _list(contract.REGISTER_FIELDS)
    description_refused = contract.DESCRIPTION_REFUSED
    max_description = contract.MAX_MODEL_DESCRIPTION
    # Each $problem is an array of {error, cause}; $append keeps them in order, and the first is
    # the one the execution fails with. One line: a JSONata string in a definition is "{% ... %}"
    # on one line (asl-validator's schema; JSONata itself ignores the line breaks).
    return _one_line(f"""(
  $catalog := {json.dumps(catalog(programs), sort_keys=True)};
  $names := $sort($keys($catalog));
  $bad := function($cause) {{ {{"error": {invalid}, "cause": $cause}} }};
  $isObject := function($v) {{ $type($v) = "object" }};
  $shown := function($v) {{ $length($v) > 40 ? $substring($v, 0, 40) & "..." : $v }};
  $problemsOfValue := function($where, $spec, $v) {{(
    $type($v) != "string"
      ? [$bad($where & " must be a string, such as \\"" & $string($v) & "\\": SageMaker takes hyperparameters as text")]
    : $spec.type = "int" and $not($contains($v, /{contract.INT_TEXT}/))
      ? [$bad($where & " must be a whole number, got '" & $shown($v) & "'")]
    : $spec.type = "float" and $not($contains($v, /{contract.FLOAT_TEXT}/))
      ? [$bad($where & " must be a number, got '" & $shown($v) & "'")]
    : $spec.type = "bool" and $not($v in {_list(contract.BOOL_VALUES)})
      ? [$bad($where & " must be true or false, got '" & $shown($v) & "'")]
    : $spec.type = "categorical" and $not($v in $spec.values)
      ? [$bad($where & " must be one of " & $join($spec.values, ", ") & ", got '" & $shown($v) & "'")]
    : $spec.type in ["int", "float"] and $exists($spec.min) and $number($v) < $spec.min
      ? [$bad($where & " must be at least " & $string($spec.min) & ", got " & $v)]
    : $spec.type in ["int", "float"] and $exists($spec.max) and $number($v) > $spec.max
      ? [$bad($where & " must be at most " & $string($spec.max) & ", got " & $v)]
    : []
  )}};

  $inputProblems := $isObject($in) ? [] : [$bad("the execution input must be a JSON object")];
  $unknownFields := $isObject($in) ? [$filter($keys($in), function($k) {{ $not($k in {fields}) }})] : [];
  $fieldProblems := $count($unknownFields) > 0
    ? [$bad("unknown field(s) " & $join($unknownFields, ", ") & "; allowed: " & $join({fields}, ", "))]
    : [];

  $given := $in.{program_field};
  $method := $in.{method_field};
  $ofKind := function($kind) {{ [$filter($names, function($n) {{ $lookup($catalog, $n).kind = $kind }})] }};
  $resolution := (
    $exists($given) and $exists($method)
      ? {{"problems": [$bad("give field '{program_field}' or the older '{method_field}', not both")]}}
    : $exists($given)
      ? ($type($given) = "string" and $given in $names
          ? {{"program": $given, "problems": []}}
          : {{"problems": [{{"error": {unknown_program}, "cause": "field '{program_field}' must be one of " & $join($names, ", ")}}]}})
    : $exists($method)
      ? (
          $candidates := $type($method) = "string" ? $ofKind($method) : [];
          $count($candidates) = 1
            ? {{"program": $candidates[0], "problems": []}}
          : $count($candidates) = 0
            ? {{"problems": [{{"error": {unknown_program}, "cause": "field '{method_field}' names no program: give field '{program_field}', one of " & $join($names, ", ")}}]}}
            : {{"problems": [{{"error": {unknown_program}, "cause": "field '{method_field}' '" & $method & "' is ambiguous: programs " & $join($candidates, ", ") & " are of that kind; give field '{program_field}'"}}]}}
        )
    : {{"problems": [{{"error": {invalid}, "cause": "field '{program_field}' is required: one of " & $join($names, ", ")}}]}}
  );
  $name := $resolution.program;
  $spec := $exists($name) ? $lookup($catalog, $name);
  $declared := $exists($spec) ? [$keys($spec.hyperparameters)] : [];
  $known := function() {{ $count($declared) > 0 ? $join($sort($declared), ", ") : "none" }};

  $hps := $in.hyperparameters;
  $hpProblems := $not($exists($spec)) or $not($exists($hps)) ? [] :
    $isObject($hps) = false ? [$bad("field 'hyperparameters' must be an object of name: text")] :
    $reduce([$keys($hps)], function($acc, $k) {{
      $append($acc, $k in $declared
        ? $problemsOfValue("hyperparameter '" & $k & "'", $lookup($spec.hyperparameters, $k), $lookup($hps, $k))
        : [$bad("hyperparameter '" & $k & "' is not declared by program " & $name & "; known: " & $known())])
    }}, []);

  $inputs := $in.inputs;
  $channels := $exists($spec) ? [$spec.channels] : [];
  $channelProblems := $not($exists($spec)) or $not($exists($inputs)) ? [] :
    $isObject($inputs) = false ? [$bad("field 'inputs' must be an object of channel: s3 URI")] :
    $reduce([$keys($inputs)], function($acc, $k) {{
      $append($acc,
        $not($k in $channels)
          ? [$bad("input channel '" & $k & "' is not read by program " & $name & "; its channels: " & $join($channels, ", "))]
        : $type($lookup($inputs, $k)) != "string" or $not($contains($lookup($inputs, $k), /^s3:\\/\\/[^\\/\\s]+\\/.*(?![\\s\\S])/))
          ? [$bad("field 'inputs." & $k & "' must be an S3 URI like s3://bucket/prefix/")]
          : [])
    }}, []);

  $tuning := $in.tuning;
  $ranges := $tuning.parameterRanges;
  $tuned := $isObject($ranges) ? [$ranges.*.Name] : $isObject($tuning) and $exists($spec.tuned) ? $spec.tuned : [];
  $rangeNames := $isObject($ranges) ? [$ranges.*.Name] : [];
  $repeated := [$filter($distinct($rangeNames), function($n) {{ $count($filter($rangeNames, function($m) {{ $m = $n }})) > 1 }})];
  $tuningShape := $not($exists($spec)) or $not($exists($tuning)) or $type($tuning) = "null" ? [] :
    $not($isObject($tuning)) ? [$bad("field 'tuning' must be an object (or null for a training job)")] :
    $count($repeated) > 0 ? [$bad("tuning range(s) on " & $join($repeated, ", ") & " given more than once")] : [];
  $tuningProblems := $append($tuningShape, $not($exists($spec)) or $not($isObject($tuning)) ? [] : $append($append($append(
    (
      $extra := [$filter($keys($tuning), function($k) {{ $not($k in {tuning_fields}) }})];
      $count($extra) > 0
        ? [$bad("unknown tuning field(s) " & $join($extra, ", ") & "; allowed: " & $join({tuning_fields}, ", "))]
        : []
    ),
    $not($exists($ranges)) or $type($ranges) = "null" ? [] :
    $not($isObject($ranges)) ? [$bad("field 'tuning.parameterRanges' must be SageMaker's ParameterRanges object")] :
    $reduce([$keys($ranges)], function($acc, $member) {{
      $append($acc,
        $not($member in $keys({range_kinds}))
          ? [$bad("tuning.parameterRanges." & $member & " is not one of " & $join($keys({range_kinds}), ", "))]
          : $type($lookup($ranges, $member)) != "array"
            ? [$bad("field 'tuning.parameterRanges." & $member & "' must be a list of ranges")]
          : $reduce($lookup($ranges, $member), function($acc2, $r) {{
              $append($acc2, (
                $numeric := $member != "CategoricalParameterRanges";
                $allowed := $numeric ? ["Name", "MinValue", "MaxValue", "ScalingType"] : ["Name", "Values"];
                $hp := $isObject($r) and $type($r.Name) = "string" ? $r.Name : "";
                $hpSpec := $hp in $declared ? $lookup($spec.hyperparameters, $hp);
                $where := "tuning range '" & $hp & "'";
                $extraKeys := $isObject($r) ? [$filter($keys($r), function($k) {{ $not($k in $allowed) }})] : [];
                $not($isObject($r)) or $hp = ""
                  ? [$bad("each entry of tuning.parameterRanges." & $member & " must be an object with a Name (" & $join($allowed, ", ") & ")")]
                : $count($extraKeys) > 0
                  ? [$bad($where & " has unknown field(s) " & $join($extraKeys, ", ") & "; allowed: " & $join($allowed, ", "))]
                : $not($hp in $declared)
                  ? [$bad("tuning range on '" & $hp & "', which program " & $name & " does not declare; known: " & $known())]
                : $hpSpec.tunable = false
                  ? [$bad($where & ": program " & $name & " declares it not tunable")]
                : $not($numeric)
                  ? ($type($r.Values) = "array" and $count($r.Values) >= 1 and $count($r.Values) <= {contract.MAX_CATEGORICAL_VALUES}
                      ? $reduce($r.Values, function($acc3, $v) {{ $append($acc3, $problemsOfValue($where & " value", $hpSpec, $v)) }}, [])
                      : [$bad($where & " needs Values: a list of 1 to {contract.MAX_CATEGORICAL_VALUES} values")])
                : $lookup({range_kinds}, $member) != $hpSpec.type
                  ? [$bad($where & ": " & $member & " do not fit a " & $hpSpec.type & " hyperparameter")]
                : $not($exists($r.MinValue)) or $not($exists($r.MaxValue))
                  ? [$bad($where & " needs MinValue and MaxValue")]
                : $exists($r.ScalingType) and $not($r.ScalingType in {_list(contract.SCALING_TYPES)})
                  ? [$bad($where & " ScalingType must be one of " & $join({_list(contract.SCALING_TYPES)}, ", "))]
                : (
                    $bounds := $append($problemsOfValue($where & " MinValue", $hpSpec, $r.MinValue),
                                       $problemsOfValue($where & " MaxValue", $hpSpec, $r.MaxValue));
                    $count($bounds) > 0 ? $bounds
                    : $number($r.MinValue) > $number($r.MaxValue)
                      ? [$bad($where & " MinValue " & $r.MinValue & " is above its MaxValue " & $r.MaxValue)]
                    : $r.ScalingType in ["Logarithmic", "ReverseLogarithmic"] and $number($r.MinValue) <= 0
                      ? [$bad($where & ": " & $r.ScalingType & " scaling needs a MinValue above 0 (SageMaker's rule)")]
                    : $r.ScalingType = "ReverseLogarithmic" and $number($r.MaxValue) >= 1
                      ? [$bad($where & ": ReverseLogarithmic scaling needs a MaxValue below 1 (SageMaker's rule)")]
                    : []
                  )
              ))
            }}, []))
    }}, [])),
    $exists($tuning.objective.metricName) and $type($tuning.objective.metricName) = "string"
      and $not($tuning.objective.metricName in $spec.metrics)
      ? [$bad("tuning objective '" & $tuning.objective.metricName & "' is not a metric of program " & $name & ": " & $join($spec.metrics, ", "))]
      : []),
    (
      $both := $isObject($hps) ? [$filter($tuned, function($n) {{ $exists($lookup($hps, $n)) }})] : [];
      $count($both) > 0
        ? [$bad("hyperparameter(s) " & $join($both, ", ") & " both tuned and given: SageMaker refuses a hyperparameter that is tuned and static" & ($isObject($ranges) ? "" : " (the program's default tuning ranges tune it: give parameterRanges of your own, or drop the value)"))]
        : []
    )));

  $reg := $in.register;
  $regGiven := $exists($reg) and $type($reg) != "null";
  $thresholdProblems := function($bound) {{(
    $limits := $lookup($reg, $bound);
    $not($exists($limits)) or $type($limits) = "null" ? [] :
    $not($isObject($limits)) ? [$bad("field 'register." & $bound & "' must be an object of metric: number")] :
    $reduce([$keys($limits)], function($acc, $m) {{
      $append($acc,
        $not($m in $spec.metrics)
          ? [$bad("register." & $bound & " names '" & $m & "', not a metric of program " & $name & ": " & $join($spec.metrics, ", "))]
        : $type($lookup($limits, $m)) != "number"
          ? [$bad("field 'register." & $bound & "." & $m & "' must be a number")]
          : [])
    }}, [])
  )}};
  $registerProblems := $not($exists($spec)) or $not($regGiven) or $type($reg) = "boolean" ? [] :
    $not($isObject($reg)) ? [$bad("field 'register' must be true, false or an object of " & $join({register_fields}, ", "))] :
    $append($append($append(
      (
        $extra := [$filter($keys($reg), function($k) {{ $not($k in {register_fields}) }})];
        $count($extra) > 0
          ? [$bad("unknown register field(s) " & $join($extra, ", ") & "; allowed: " & $join({register_fields}, ", "))]
          : []
      ),
      $thresholdProblems("minimum")), $thresholdProblems("maximum")),
      $not($exists($reg.description)) ? [] :
      $type($reg.description) != "string" or $length($reg.description) > {max_description} or $contains($reg.description, /{description_refused}/)
        ? [$bad("field 'register.description' must be text of at most {max_description} characters without line breaks, control or invisible format characters (SageMaker's ModelPackageDescription)")]
        : []);
  $gateOf := function($asked) {{ {{
    "enabled": true,
    "minimum": $isObject($asked.minimum) ? $asked.minimum : $spec.register.minimum,
    "maximum": $isObject($asked.maximum) ? $asked.maximum : $spec.register.maximum
  }} }};
  $register := $regGiven
    ? ($reg = true ? $gateOf({{}})
      : $isObject($reg) ? $merge([$gateOf($reg), $type($reg.description) = "string" ? {{"description": $reg.description}} : {{}}])
      : {{"enabled": false}})
    : ($spec.register.default = true ? $gateOf({{}}) : {{"enabled": false}});

  {{
    "program": $name,
    "instanceType": $exists($spec.instanceType) and $not($exists($in.instanceType)) ? $spec.instanceType,
    "register": $exists($spec) ? $register,
    "problems": $append($append($append($append($append($append($inputProblems, $fieldProblems),
                $resolution.problems), $hpProblems), $channelProblems), $tuningProblems),
                $registerProblems)
  }}
)""")


def _one_line(text: str) -> str:
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


@dataclass(frozen=True)
class Checked:
    """The rules' answer: the program the input resolves to, and its problems in order."""

    program: str | None
    problems: list[dict[str, str]]
    #: What the run registers (see :func:`expression`); None when no program resolved.
    register: dict[str, Any] | None = None


@lru_cache(maxsize=8)
def _compiled(body: str) -> Any:
    import jsonata

    return jsonata.Jsonata("($in := $; " + body + ")")


def check(programs: Mapping[str, Program], execution_input: Any) -> Checked:
    """Apply the rules to ``execution_input`` in this process (``jsonata-python``). The rules
    guard every operation that could fail; should one fail anyway, the input is refused with
    the evaluation error rather than a traceback."""
    try:
        result = _compiled(expression(programs)).evaluate(execution_input)
    except Exception as error:  # jsonata-python raises its own JException
        return Checked(program=None, problems=[{
            "error": contract.INVALID_INPUT_ERROR,
            "cause": f"the execution input could not be checked: {error}"}])
    return Checked(program=result.get("program"), problems=list(result.get("problems") or []),
                   register=result.get("register"))
