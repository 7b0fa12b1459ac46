"""Every rule an execution input must pass, written once in JSONata.

The same text runs in two places: the state machine's ``CheckProgramInput`` state (a JSONata Pass
state inside the JSONPath state machine: Step Functions lets a state choose its own
``QueryLanguage``, developer guide "Transforming data with JSONata in Step Functions"), and the
CLI, which evaluates it with ``jsonata-python`` before it starts anything (and, from it, checks a
``--tune`` file and a manifest's default tuning). So a raw ``StartExecution`` input and ``smtrain
start`` are refused by the same rules with the same words, and no other place restates them:

- an unknown top-level field, or a ``tuning`` field SageMaker's request has no place for;
- an unknown ``program`` (or a ``method`` that names no program, or more than one);
- a hyperparameter the program does not declare, a value that is not text, of the wrong type or
  out of its bounds (values are never reformatted: ``2.10`` stays ``2.10``);
- an input channel the program does not read, or a URI that is not ``s3://bucket/...``;
- ``channelOptions`` on a channel the program does not read, a value that is not SageMaker's
  (InputMode, S3DataDistributionType, CompressionType), Gzip on a channel not in Pipe mode, or
  Pipe for a built-in algorithm whose container refuses it (``contract.PIPE_REFUSING_ALGORITHMS``);
- a tuning range on an undeclared or untunable name, of the wrong kind or outside the bounds; an
  objective the program does not print; a hyperparameter both tuned and given;
- a ``register`` that is not true, false, null or an object of ``minimum``/``maximum`` (metrics
  the program prints, to numbers) and ``description`` (SageMaker's description text);
- with the deployment's settings (``$deployment``, :class:`Deployment`): the run's settings merged
  over the deployment's defaults (an instance type of the allow-list, counts, sizes and runtimes
  within their limits and whole, ``spot`` a boolean, an execution name a tag value may hold);
- a script on more than one instance whose program declares no ``[script] distribution`` and whose
  framework has none by default (``contract.DISTRIBUTIONS``);
- for a tuning run, its settings merged over the program's default tuning: a strategy, job counts
  within SageMaker's limits (``maxParallelJobs`` at most ``maxJobs``), an objective, early
  stopping Off with Hyperband, Grid with categorical ranges only, Hyperband's resources;
- last, the deployment's ``maxJobHours`` and ``maxRunCost`` (:mod:`smtrain.core.budget`).

What SageMaker itself refuses is judged again, independently, by the offline engine's strict
front end (``smtrain/local/strict_sagemaker.py``: botocore's models and the API reference's
rules): that is AWS's contract, kept apart on purpose from these rules, which are ours.

:func:`expression` gives the JSONata body. It reads ``$in`` (the raw input), and where the caller
has them ``$text`` (the input's JSON text: JSONata reads ``2.0`` as ``2``, and SageMaker's integer
fields refuse it, so the number as written is read there), ``$deployment`` (see
:class:`Deployment`; without it the rules that need the deployment are skipped) and
``$executionName``. It yields ``{"program": <resolved name or undefined>, "instanceType": <the
program's default instance type when the input gives none, or undefined>, "register": <see
below>, "problems": [{"error", "cause"}, ...]}``; the first problem is the one reported.
``register`` is what the run registers: ``{"enabled": false}``, or ``{"enabled": true,
"minimum": {...}, "maximum": {...}}`` (with the input's ``description`` when it gives one). The
input's ``register`` decides whether (absent or null: the program's ``[register] default``); each
bound is the input's when it gives that bound (``{}`` clears it), else the program's, so
``true``, a description alone or a ``minimum`` alone keep the program's other limits.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Protocol

from smtrain.core import budget, contract


class CatalogSource(Protocol):
    """What the rules read of a program (:class:`smtrain.core.programs.Program`)."""

    def catalog_entry(self) -> dict[str, Any]: ...


@dataclass(frozen=True, kw_only=True)
class InputDefaults:
    """The deployment's defaults for every execution input field but ``program``."""

    instance_type: str
    instance_count: int
    volume_size_gb: int
    max_runtime_seconds: int
    spot: bool
    #: No warm pool unless a run asks for one (a warm pool is billed while it waits).
    keep_alive_seconds: int = 0
    #: The job queue a run waits in when it names none (the team queue only; None: no queue).
    priority: str | None = None

    def as_input(self) -> dict[str, Any]:
        return {
            **({contract.PRIORITY: self.priority} if self.priority is not None else {}),
            contract.HYPERPARAMETERS: {},
            contract.INSTANCE_TYPE: self.instance_type,
            contract.INSTANCE_COUNT: self.instance_count,
            contract.VOLUME_SIZE: self.volume_size_gb,
            contract.MAX_RUNTIME: self.max_runtime_seconds,
            contract.SPOT: self.spot,
            contract.KEEP_ALIVE: self.keep_alive_seconds,
            contract.INPUTS: {},
            contract.CHANNEL_OPTIONS: {},
        }


@dataclass(frozen=True, kw_only=True)
class Deployment:
    """What the rules read of a deployment (``$deployment``). The state machine knows all of it
    (its settings); the CLI knows what the stack's outputs say, and a rule whose setting is
    unknown is left to the state machine."""

    #: The input fields' defaults: all of :meth:`InputDefaults.as_input` in the state machine.
    defaults: Mapping[str, Any] = field(default_factory=dict)
    allowed_instance_types: Sequence[str] | None = None
    max_instance_count: int | None = None
    #: The longest run (``maxRuntimeInSeconds`` is the default and the ceiling).
    max_runtime_seconds: int | None = None
    max_job_hours: float | None = None
    #: The team queue (:data:`QUEUE_KINDS`): ``off``, ``fifo`` (setting ``queue: batch``) or
    #: ``fair-share`` (with ``queueFairShare``); None: unknown.
    queue: str | None = None
    #: The budget in money (USD per execution) and the on-demand USD/hour of each allowed
    #: instance type it is reckoned with; None: no such budget.
    max_run_cost: float | None = None
    run_prices: Mapping[str, float] | None = None

    def as_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {"defaults": dict(self.defaults)}
        if self.max_run_cost is not None and self.run_prices is not None:
            data["maxRunCost"] = budget.budget_value(self.max_run_cost)
            data["runPrices"] = dict(self.run_prices)
        if self.queue is not None:
            data["queue"] = self.queue
        if self.allowed_instance_types is not None:
            data["allowedInstanceTypes"] = list(self.allowed_instance_types)
        if self.max_instance_count is not None:
            data["maxInstanceCount"] = self.max_instance_count
        if self.max_runtime_seconds is not None:
            data["maxRuntimeInSeconds"] = self.max_runtime_seconds
        if self.max_job_hours is not None:
            data["maxJobHours"] = budget.budget_value(self.max_job_hours)
        return data


#: What :attr:`Deployment.queue` may be.
QUEUE_KINDS: tuple[str, ...] = ("off", "fifo", "fair-share")


def catalog(programs: Mapping[str, CatalogSource]) -> dict[str, Any]:
    """The programs' checkable facts, as JSON data."""
    return {name: program.catalog_entry() for name, program in sorted(programs.items())}


def _list(values: Any) -> str:
    return json.dumps(list(values))


def _written_with_fraction(key: str) -> str:
    """A JSONata regex matching ``"<key>":<number written with a fraction or an exponent>`` in
    compact JSON text (``States.JsonToString`` and ``json.dumps(separators=(",", ":"))``)."""
    return f'"{key}"\\s*:\\s*-?[0-9]+[.eE]'


@lru_cache(maxsize=1)
def rules() -> str:
    """The rules as one JSONata expression over ``$in`` and ``$catalog`` (the programs' facts:
    :func:`catalog`), and ``$text``, ``$deployment``, ``$executionName`` where the caller has them
    (see the module's docstring). The same text for every set of programs: compiled once."""
    fields = _list(contract.INPUT_FIELDS)
    tuning_fields = _list(contract.TUNING_FIELDS)
    range_kinds = json.dumps(contract.RANGE_KINDS)
    invalid = json.dumps(contract.INVALID_INPUT_ERROR)
    unknown_program = json.dumps(contract.UNKNOWN_PROGRAM_ERROR)
    program_field, method_field = contract.PROGRAM, contract.METHOD
    register_fields = _list(contract.REGISTER_FIELDS)
    description_refused = contract.DESCRIPTION_REFUSED
    max_description = contract.MAX_MODEL_DESCRIPTION
    refused = contract.EXECUTION_NAME_CHARACTERS_REFUSED_BY_TAGS
    name_refused = "[" + "".join(re.escape(c) for c in refused) + "]"
    name_refused_text = " ".join(refused)
    strategies = _list(contract.TUNING_STRATEGIES)
    objective_types = _list(contract.OBJECTIVE_TYPES)
    early_stopping_types = _list(contract.EARLY_STOPPING_TYPES)
    max_volume = contract.MAX_VOLUME_SIZE_GB
    max_tuning_jobs = contract.MAX_TUNING_JOBS
    max_parallel_jobs = contract.MAX_PARALLEL_TUNING_JOBS
    max_resource = contract.HYPERBAND_MAX_RESOURCE
    budget_function = budget.FUNCTION
    budget_error = json.dumps(contract.BUDGET_EXCEEDED_ERROR)
    cost_function = budget.COST_FUNCTION
    cost_error = json.dumps(contract.COST_BUDGET_EXCEEDED_ERROR)
    written_instanceCount = _written_with_fraction(contract.INSTANCE_COUNT)
    written_volumeSizeInGB = _written_with_fraction(contract.VOLUME_SIZE)
    written_maxRuntimeInSeconds = _written_with_fraction(contract.MAX_RUNTIME)
    written_keepAliveSeconds = _written_with_fraction(contract.KEEP_ALIVE)
    max_keep_alive = contract.MAX_KEEP_ALIVE_SECONDS
    channel_options = contract.CHANNEL_OPTIONS
    option_fields = _list(contract.CHANNEL_OPTION_FIELDS)
    input_mode, distribution, compression = contract.CHANNEL_OPTION_FIELDS
    input_modes = _list(contract.INPUT_MODES)
    distributions = _list(contract.S3_DATA_DISTRIBUTIONS)
    compressions = _list(contract.COMPRESSION_TYPES)
    default_compression = json.dumps(contract.DEFAULT_COMPRESSION)
    compressed_mode = json.dumps(contract.COMPRESSED_INPUT_MODE)
    compressed_mode_text = contract.COMPRESSED_INPUT_MODE
    priorities = _list(list(contract.QUEUE_PRIORITIES))
    share_pattern = contract.SHARE_IDENTIFIER.pattern
    pipe_mode = json.dumps(contract.PIPE_INPUT_MODE)
    pipe_mode_text = contract.PIPE_INPUT_MODE
    fast_file_text = contract.FAST_FILE_INPUT_MODE
    written_maxJobs = _written_with_fraction("maxJobs")
    written_maxParallelJobs = _written_with_fraction("maxParallelJobs")
    written_minResource = _written_with_fraction("minResource")
    written_maxResource = _written_with_fraction("maxResource")
    # Each $problem is an array of {error, cause}; $append keeps them in order, and the first is
    # the one the execution fails with. One line: a JSONata string in a definition is "{% ... %}"
    # on one line (asl-validator's schema; JSONata itself ignores the line breaks).
    return _one_line(f"""(
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

  /* channelOptions: per channel the program reads, SageMaker's InputMode, S3DataDistributionType
     and CompressionType over the program's; Gzip is read in Pipe mode only (API reference,
     Channel.CompressionType). */
  $options := $in.{channel_options};
  $optionProblems := $not($exists($spec)) or $not($exists($options)) ? [] :
    $isObject($options) = false ? [$bad("field '{channel_options}' must be an object of channel: {{" & $join({option_fields}, ", ") & "}}")] :
    $reduce([$keys($options)], function($acc, $k) {{
      $append($acc, (
        $entry := $lookup($options, $k);
        $where := "{channel_options}." & $k;
        $extra := $isObject($entry) ? [$filter($keys($entry), function($f) {{ $not($f in {option_fields}) }})] : [];
        $merged := $isObject($entry) ? $merge([$lookup($spec.{channel_options}, $k), $entry]);
        $not($k in $channels)
          ? [$bad("channel '" & $k & "' in field '{channel_options}' is not read by program " & $name & "; its channels: " & $join($channels, ", "))]
        : $not($isObject($entry))
          ? [$bad("field '" & $where & "' must be an object of " & $join({option_fields}, ", "))]
        : $count($extra) > 0
          ? [$bad("unknown field(s) " & $join($extra, ", ") & " in '" & $where & "'; allowed: " & $join({option_fields}, ", "))]
        : $k in $spec.optionalChannels and $not($isObject($inputs) and $exists($lookup($inputs, $k)))
          ? [$bad("channel '" & $k & "' in field '{channel_options}' gets no data in this run (program " & $name & " reads it only when given): give inputs." & $k & " or leave its options out")]
        : $exists($entry.{input_mode}) and $not($type($entry.{input_mode}) = "string" and $entry.{input_mode} in {input_modes})
          ? [$bad("field '" & $where & ".{input_mode}' must be one of " & $join({input_modes}, ", "))]
        : $exists($entry.{distribution}) and $not($type($entry.{distribution}) = "string" and $entry.{distribution} in {distributions})
          ? [$bad("field '" & $where & ".{distribution}' must be one of " & $join({distributions}, ", "))]
        : $exists($entry.{compression}) and $not($type($entry.{compression}) = "string" and $entry.{compression} in {compressions})
          ? [$bad("field '" & $where & ".{compression}' must be one of " & $join({compressions}, ", "))]
        : $spec.pipeRefused = true and $merged.{input_mode} = {pipe_mode}
          ? [$bad("channel '" & $k & "': program " & $name & "'s built-in algorithm refuses {pipe_mode_text} mode (its current container: \\"Pipe mode ... is no longer supported. Please use Fast File mode\\"): use {fast_file_text}")]
        : $merged.{compression} != {default_compression} and $merged.{input_mode} != {compressed_mode}
          ? [$bad("channel '" & $k & "': {compression} " & $merged.{compression} & " is read in {compressed_mode_text} mode only (SageMaker's Channel.CompressionType), and its {input_mode} is " & $merged.{input_mode} & ($exists($entry.{input_mode}) ? "" : " (the program's)"))]
        : []
      ))
    }}, []);

  $tuning := $in.tuning;
  $ranges := $tuning.parameterRanges;
  $tuned := $isObject($ranges) ? [$ranges.*.Name] : $isObject($tuning) and $isObject($spec.tuning) ? [$spec.tuning.parameterRanges.*.Name] : [];
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


  /* The run's settings as the state machine merges them (ApplyDefaults): the deployment's
     defaults, the input, then the program's instance type when the input gives none. */
  $dep := $isObject($deployment) ? $deployment : {{}};
  $programInstanceType := $exists($spec.instanceType) and $not($exists($in.instanceType)) ? $spec.instanceType;
  $config := $merge([$isObject($dep.defaults) ? $dep.defaults : {{}}, $isObject($in) ? $in : {{}},
                     $exists($programInstanceType) ? {{"instanceType": $programInstanceType}} : {{}}]);
  $oneOf := function($v, $field, $allowed) {{
    $type($v) = "string" and $v in $allowed ? [] : [$bad("field '" & $field & "' must be one of " & $join($allowed, ", "))]
  }};
  $required := function($v, $field, $allowed) {{
    $exists($v) ? $oneOf($v, $field, $allowed) : [$bad("field '" & $field & "' is required: one of " & $join($allowed, ", "))]
  }};
  $between := function($v, $field, $low, $high) {{
    $not($type($v) = "number") ? [$bad("field '" & $field & "' must be a number from " & $string($low) & " to " & $string($high))]
    : $v < $low or $v > $high ? [$bad("field '" & $field & "' must be from " & $string($low) & " to " & $string($high))]
    : []
  }};
  /* SageMaker's integer fields refuse 1.5 and 2.0 alike; JSONata reads 2.0 as 2, so the number
     as written is read from the input's JSON text ($text) where the caller gives it. */
  $whole := function($v, $field, $written) {{
    $type($v) = "number" and ($v != $floor($v) or $written) ? [$bad("field '" & $field & "' must be a whole number")] : []
  }};
  $keepAlive := $config.keepAliveSeconds;
  $warm := $type($keepAlive) = "number" and $keepAlive > 0;
  $configProblems := $not($exists($spec)) or $not($isObject($deployment)) ? [] : $append($append($append($append($append($append($append($append($append($append($append($append(
    $exists($executionName) and $contains($executionName, /{name_refused}/)
      ? [$bad("the execution name must not contain {name_refused_text}: it becomes a SageMaker tag value, which allows only letters, digits, spaces and _ . : / = + - @")] : [],
    $exists($config.instanceType) and $exists($dep.allowedInstanceTypes) ? $oneOf($config.instanceType, "instanceType", $dep.allowedInstanceTypes) : []),
    $exists($config.instanceCount) and $exists($dep.maxInstanceCount) ? $between($config.instanceCount, "instanceCount", 1, $dep.maxInstanceCount) : []),
    $exists($config.volumeSizeInGB) ? $between($config.volumeSizeInGB, "volumeSizeInGB", 1, {max_volume}) : []),
    $exists($config.maxRuntimeInSeconds) and $exists($dep.maxRuntimeInSeconds) ? $between($config.maxRuntimeInSeconds, "maxRuntimeInSeconds", 1, $dep.maxRuntimeInSeconds) : []),
    $exists($config.spot) and $type($config.spot) != "boolean" ? [$bad("field 'spot' must be true or false")] : []),
    $whole($config.instanceCount, "instanceCount", $contains($text, /{written_instanceCount}/))),
    $whole($config.volumeSizeInGB, "volumeSizeInGB", $contains($text, /{written_volumeSizeInGB}/))),
    $whole($config.maxRuntimeInSeconds, "maxRuntimeInSeconds", $contains($text, /{written_maxRuntimeInSeconds}/))),
    $exists($keepAlive) ? $between($keepAlive, "keepAliveSeconds", 0, {max_keep_alive}) : []),
    $whole($keepAlive, "keepAliveSeconds", $contains($text, /{written_keepAliveSeconds}/))),
    /* "SageMaker AI managed warm pools cannot be used with spot instances" (developer guide,
       "SageMaker AI Managed Warm Pools", Considerations). */
    $warm and $config.spot = true
      ? [$bad("field 'keepAliveSeconds' must be 0 with spot" & ($exists($in.spot) ? "" : " (the deployment's default)") & ": SageMaker managed warm pools cannot be used with spot instances")] : []),
    /* The warm-pool guide documents training jobs only; a tuning job's trials get none here. */
    $warm and $exists($tuning) and $type($tuning) != "null"
      ? [$bad("field 'keepAliveSeconds' applies to training runs only: leave it out of a tuning run")] : []);

  /* A script on more than one instance: its framework's image runs one copy of the script on
     each unless the program says how it uses them (smtrain.core.contract.DISTRIBUTIONS). */
  $distributionProblems := $exists($spec.framework) and $type($spec.distribution) != "string"
      and $type($config.instanceCount) = "number" and $config.instanceCount > 1
    ? [$bad("field 'instanceCount' must be 1 for program " & $name
            & ($exists($in.instanceCount) ? "" : " (the deployment's default is " & $string($config.instanceCount) & ")")
            & ": " & $spec.framework & " runs the script once on each instance, and its program.toml declares no [script] distribution"
            & " (once the script coordinates its instances, declare one of: " & $join($spec.distributions, ", ") & ")")] : [];

  /* A tuning run's settings: the program's default tuning with the input's fields over it (a
     shallow merge, as ApplyTuningDefaults merges them). */
  $tc := $exists($spec) and $isObject($tuning) ? $merge([$isObject($spec.tuning) ? $spec.tuning : {{}}, $tuning]);
  $grid := $tc.strategy = "Grid";
  $objective := $isObject($tc.objective) ? $tc.objective : {{}};
  $configRanges := $tc.parameterRanges;
  $tuningConfigProblems := $not($exists($tc)) ? [] : $append($append($append($append($append($append($append($append($append($append($append($append(
    $required($tc.strategy, "tuning.strategy", {strategies}),
    $between($tc.maxJobs, "tuning.maxJobs", 1, {max_tuning_jobs})),
    $between($tc.maxParallelJobs, "tuning.maxParallelJobs", 1, {max_parallel_jobs})),
    $not($type($objective.metricName) = "string") ? [$bad("field 'tuning.objective.metricName' must be a metric name")] : []),
    $required($objective.type, "tuning.objective.type", {objective_types})),
    $required($tc.earlyStopping, "tuning.earlyStopping", {early_stopping_types})),
    $tc.strategy = "Hyperband" and $tc.earlyStopping = "Auto" ? [$bad("field 'tuning.earlyStopping' must be Off with the Hyperband strategy")] : []),
    $not($exists($configRanges)) or $type($configRanges) = "null" ? [$bad("field 'tuning.parameterRanges' is required (SageMaker's ParameterRanges shape)")] : []),
    /* Grid search "requires categorical hyperparameters" (developer guide, "Understand the
       hyperparameter tuning strategies"). */
    $grid and ($exists($configRanges.ContinuousParameterRanges[0]) or $exists($configRanges.IntegerParameterRanges[0]))
      ? [$bad("field 'tuning.parameterRanges' may hold only CategoricalParameterRanges with the Grid strategy (SageMaker's rule): list the values to try as categorical ranges, or choose Bayesian, Random or Hyperband")] : []),
    $grid and $not($exists($configRanges.CategoricalParameterRanges[0]))
      ? [$bad("field 'tuning.parameterRanges' needs at least one CategoricalParameterRanges entry with the Grid strategy: the grid is made of their values")] : []),
    $not($grid) and $type($tc.maxParallelJobs) = "number" and $type($tc.maxJobs) = "number" and $tc.maxParallelJobs > $tc.maxJobs
      ? [$bad("field 'tuning.maxParallelJobs' must not exceed 'tuning.maxJobs'")] : []),
    $whole($tc.maxJobs, "tuning.maxJobs", $contains($text, /{written_maxJobs}/))),
    $whole($tc.maxParallelJobs, "tuning.maxParallelJobs", $contains($text, /{written_maxParallelJobs}/)));

  /* Hyperband's resources, sent as StrategyConfig.HyperbandStrategyConfig ("The maximum value
     is 20,000 epochs": API reference, HyperbandStrategyConfig.MaxResource). */
  $hb := $isObject($tc.hyperband) ? $tc.hyperband : {{}};
  $resource := function($name) {{(
    $field := "tuning.hyperband." & $name;
    $v := $lookup($hb, $name);
    $exists($v) ? $between($v, $field, 1, {max_resource}) : [$bad("field '" & $field & "' is required with the Hyperband strategy")]
  )}};
  $hyperbandProblems := $not($tc.strategy = "Hyperband") ? [] : $append($append($append($append(
    $resource("maxResource"), $resource("minResource")),
    $type($hb.minResource) = "number" and $type($hb.maxResource) = "number" and $hb.minResource > $hb.maxResource
      ? [$bad("field 'tuning.hyperband.minResource' must not exceed 'tuning.hyperband.maxResource'")] : []),
    $whole($hb.minResource, "tuning.hyperband.minResource", $contains($text, /{written_minResource}/))),
    $whole($hb.maxResource, "tuning.hyperband.maxResource", $contains($text, /{written_maxResource}/)));

  /* The team queue (setting queue: batch): a run names the job queue it waits in and, under
     fair share, its share. Batch service jobs are training jobs only ("ServiceJobType":
     SAGEMAKER_TRAINING, botocore's batch model), and a share identifier is refused by a queue
     without a fair-share policy ("Don't specify this parameter if the job queue doesn't have a
     fair-share scheduling policy": SubmitServiceJob, shareIdentifier). */
  $queue := $dep.queue;
  $queueField := function($field) {{
    $exists($lookup($in, $field)) and $exists($tuning) and $type($tuning) != "null"
      ? [$bad("field '" & $field & "' applies to training runs only: tuning jobs are not queued (AWS Batch service jobs are training jobs only)")]
      : $exists($lookup($in, $field)) and $queue = "off"
      ? [$bad("field '" & $field & "' needs the team queue, and this deployment has none (setting queue: off): leave it out, or deploy with queue: batch")]
      : []
  }};
  $queueProblems := $not($isObject($in)) ? [] : $append($append($append($append(
    /* The run's service job is named after its execution (Batch job names: "letters, numbers,
       hyphens (-), and underscores (_)": SubmitServiceJob, jobName), which must therefore be
       spelt in those alone: then no two executions share a service job's name. */
    $queue in ["fifo", "fair-share"] and $exists($executionName) and $not($contains($executionName, /^[A-Za-z0-9_-]+$/))
      and $not($exists($tuning) and $type($tuning) != "null")
      ? [$bad("the execution name must be letters, digits, - and _ with the team queue: it names the run's AWS Batch service job")] : [],
    $queueField("priority")), $queueField("team")),
    $exists($in.priority) ? $oneOf($in.priority, "priority", {priorities}) : []),
    $not($exists($in.team)) ? []
      : $not($type($in.team) = "string" and $contains($in.team, /^{share_pattern}$/))
      ? [$bad("field 'team' must be 1 to 255 letters and digits (an AWS Batch fair-share identifier)")]
      : $queue = "fifo"
      ? [$bad("field 'team' needs fair share, and this deployment's queue has none (setting queueFairShare: false): leave it out")]
      : []);

  $problems := $append($append($append($append($append($append($append($append($append($append($append($inputProblems, $fieldProblems),
               $resolution.problems), $hpProblems), $channelProblems), $optionProblems), $tuningProblems), $registerProblems),
               $configProblems), $distributionProblems), $tuningConfigProblems), $queueProblems);
  /* The deployment's maxJobHours once every field it reads has been checked (before Hyperband's
     resources, which it does not read). */
  $budget := {budget_function};
  $budgetAnswer := $count($problems) = 0 and $exists($dep.maxJobHours)
    ? $budget($config, $exists($tc) ? $tc : null, $dep.maxJobHours);
  /* The deployment's maxRunCost: the same hours at the on-demand price of the run's type. */
  $costBudget := {cost_function};
  $costAnswer := $count($problems) = 0 and $exists($dep.maxRunCost) and $exists($lookup($dep.runPrices, $config.instanceType))
    ? $costBudget($config, $exists($tc) ? $tc : null, $dep.runPrices, $dep.maxRunCost);

  {{
    "program": $name,
    "instanceType": $programInstanceType,
    "register": $exists($spec) ? $register,
    "problems": $budgetAnswer.exceeded = true
      ? [{{"error": {budget_error}, "cause": $budgetAnswer.cause}}]
      : $costAnswer.exceeded = true
      ? [{{"error": {cost_error}, "cause": $costAnswer.cause}}]
      : $append($problems, $hyperbandProblems)
  }}
)""")


def _one_line(text: str) -> str:
    # JSONata's own /* */ comments stay: they are valid on one line, and the catalog is bound
    # apart (a manifest's text may hold "/*").
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


@dataclass(frozen=True)
class Checked:
    """The rules' answer: the program the input resolves to, and its problems in order."""

    program: str | None
    problems: list[dict[str, str]]
    #: What the run registers (see :func:`expression`); None when no program resolved.
    register: dict[str, Any] | None = None


def expression(programs: Mapping[str, CatalogSource]) -> str:
    """:func:`rules` with ``programs``' catalog bound: a closed expression over ``$in``."""
    return f"($catalog := {json.dumps(catalog(programs), sort_keys=True)}; {rules()})"


#: How a refusal begins where the rules could not be evaluated at all (not an answer of theirs).
NOT_CHECKED = "the execution input could not be checked:"


@lru_cache(maxsize=1)
def jsonata_version() -> str:
    """The version of the JSONata library that :func:`check` evaluates with."""
    from importlib.metadata import version

    return version("jsonata-python")


@lru_cache(maxsize=1)
def _compiled() -> Any:
    import jsonata

    return jsonata.Jsonata("($in := $; " + rules() + ")")


def input_text(execution_input: Any) -> str:
    """The input's JSON text as ``States.JsonToString`` writes it (compact)."""
    return json.dumps(execution_input, separators=(",", ":"))


def check(programs: Mapping[str, CatalogSource], execution_input: Any, *,
          deployment: Deployment | None = None, execution_name: str | None = None) -> Checked:
    """Apply the rules to ``execution_input`` in this process (``jsonata-python``). The rules
    guard every operation that could fail; should one fail anyway, the input is refused with
    the evaluation error rather than a traceback."""
    bindings: dict[str, Any] = {"catalog": catalog(programs), "text": input_text(execution_input)}
    if deployment is not None:
        bindings["deployment"] = deployment.as_data()
    if execution_name is not None:
        bindings["executionName"] = execution_name
    try:
        result = _compiled().evaluate(execution_input, bindings)
    except Exception as error:  # jsonata-python raises its own JException
        return Checked(program=None, problems=[{
            "error": contract.INVALID_INPUT_ERROR,
            "cause": f"{NOT_CHECKED} {error}"}])
    return Checked(program=result.get("program"), problems=list(result.get("problems") or []),
                   register=result.get("register"))


def state_expression(programs: Mapping[str, CatalogSource], deployment: Deployment) -> str:
    """What the state machine's check evaluates: :func:`rules` over the state's ``input``,
    ``text`` and ``executionName`` (``ReadInput`` records them), with the programs' catalog and
    ``deployment`` bound."""
    return ("($in := $states.input.input; $text := $states.input.text; "
            "$executionName := $states.input.executionName; "
            f"$catalog := {json.dumps(catalog(programs), sort_keys=True)}; "
            f"$deployment := {json.dumps(deployment.as_data(), sort_keys=True)}; "
            + rules() + ")")
