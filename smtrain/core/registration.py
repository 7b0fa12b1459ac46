"""The quality gate and what a registered model version records, written once in JSONata.

The hyperparameters recorded are those the job ran with: a training job's request
(``$.trainingHyperparameters``), or for a tuning run the best trial's: the tuning job's static
ones (``$.staticHyperparameters``) with the trial's tuned values over them
(``BestTrainingJob.TunedHyperParameters``).

The state machine's ``EvaluateQualityGate`` state (a JSONata Pass, like the input check: see
:mod:`smtrain.core.input_rules`) assigns the variable ``$qualityGate`` from :func:`gate_expression`:

- ``passed``: every ``register.minimum`` metric is at least, and every ``register.maximum``
  metric at most, its limit in the job's final metrics (``FinalMetricDataList``: for a tuning run,
  the best training job's); a metric the job never reported fails the gate;
- ``reason``: why it passed or which limits it missed, in words;
- ``report``: the model-quality report (JSON text) written to ``model-quality/<training job>.json``;
- ``metadata``: the version's ``CustomerMetadataProperties``, within SageMaker's limits (at most
  50 entries; keys of 128 and values of 256 characters of letters, digits, spaces and
  ``_.:/=+-@``: other characters become ``_``; botocore's sagemaker model, CustomerMetadataMap);
- ``description``: the input's ``register.description``, or one naming program, job and run.

The offline engine evaluates the same expression, as moto's interpreter hands it over
(``smtrain/local/jsonata_eval.py``); the tests also evaluate it alone (``tests/test_quality_gate.py``).
"""

from __future__ import annotations

import json

from smtrain.core import contract

#: The variable the gate assigns (JSONPath states read it as ``$qualityGate``).
GATE_VARIABLE = "qualityGate"

#: Hyperparameters that are the framework's plumbing rather than the model's settings.
_PLUMBING_PREFIXES = ("sagemaker_", "_tuning_objective_metric")


def gate_expression(*, tracking_uri: str | None) -> str:
    """The JSONata expression; reads ``$states.input`` and ``$states.context``.

    ``tracking_uri`` (an MLflow tracking server or app ARN; None: not tracked) is recorded in the
    metadata with the experiment, so a version leads to its run (tagged with the training job).
    """
    allowed = r"[^A-Za-z0-9 _.:\/=+\-@]"
    tracking = ({contract.METADATA_MLFLOW_TRACKING_URI: tracking_uri,
                 contract.METADATA_MLFLOW_EXPERIMENT: contract.EXPERIMENT}
                if tracking_uri is not None else {})
    plumbing = json.dumps(list(_PLUMBING_PREFIXES))
    return _one_line(f"""(
  $in := $states.input;
  $gate := $in.config.register;
  $job := $in.report.trainingJobName;
  $values := $merge([{{}}, $in.report.metrics.{{MetricName: Value}}]);
  $limits := function($bound) {{ $isObject($lookup($gate, $bound)) ? [$keys($lookup($gate, $bound))] : [] }};
  $isObject := function($v) {{ $type($v) = "object" }};
  $misses := function($bound) {{ [$filter($map($limits($bound), function($m) {{(
    $v := $lookup($values, $m);
    $limit := $lookup($lookup($gate, $bound), $m);
    $not($exists($v)) ? $m & " was not reported by training job " & $job
    : $bound = "minimum" and $v < $limit ? $m & " " & $string($v) & " is below the minimum " & $string($limit)
    : $bound = "maximum" and $v > $limit ? $m & " " & $string($v) & " is above the maximum " & $string($limit)
    : ""
  )}}), function($text) {{ $text != "" }})] }};
  $met := function($bound, $sign) {{ [$map($limits($bound), function($m) {{
    $m & " " & $string($lookup($values, $m)) & " " & $sign & " " & $string($lookup($lookup($gate, $bound), $m)) }})] }};
  $failures := $append($misses("minimum"), $misses("maximum"));
  $checks := $append($met("minimum", ">="), $met("maximum", "<="));
  $passed := $count($failures) = 0;
  $clean := function($text, $size) {{(
    $t := $substring($replace($string($text), /{allowed}/, "_"), 0, $size);
    $t = "" ? "-" : $t
  )}};
  $hps := $exists($in.tuningResult)
    ? $merge([{{}}, $in.staticHyperparameters, $in.tuningResult.BestTrainingJob.TunedHyperParameters])
    : $in.trainingHyperparameters;
  $hpNames := [$filter($sort([$keys($hps)]), function($k) {{
    $count($filter({plumbing}, function($p) {{ $substring($k, 0, $length($p)) = $p }})) = 0 }})];
  $base := $merge([{{
    "{contract.METADATA_EXECUTION}": $clean($states.context.Execution.Name, {contract.MAX_CUSTOMER_METADATA_VALUE}),
    "{contract.METADATA_PROGRAM}": $in.report.program,
    "{contract.METADATA_TRAINING_JOB}": $job,
    "{contract.METADATA_CODE}": $clean($in.method.registry.code, {contract.MAX_CUSTOMER_METADATA_VALUE})
  }}, {json.dumps(tracking)}]);
  $room := {contract.MAX_CUSTOMER_METADATA} - {contract.METADATA_ADDED_AT_REGISTRATION} - $count($keys($base));
  $hpEntries := [$map($hpNames, function($k) {{
    {{ $clean("{contract.METADATA_HYPERPARAMETER_PREFIX}" & $k, {contract.MAX_CUSTOMER_METADATA_KEY}):
       $clean($lookup($hps, $k), {contract.MAX_CUSTOMER_METADATA_VALUE}) }} }})];
  $kept := $count($hpEntries) > $room ? $hpEntries[[0..($room - 1)]] : $hpEntries;
  {{
    "passed": $passed,
    "reason": $passed
      ? ($count($checks) = 0 ? "registered without a quality gate (register has no minimum or maximum)"
                              : "meets the quality gate: " & $join($checks, ", "))
      : "not registered: " & $join($failures, "; "),
    "metadata": $merge($append([$base], $kept)),
    "description": $type($gate.description) = "string" and $gate.description != ""
      ? $gate.description
      : $in.report.program & " model of training job " & $job & " (execution " & $states.context.Execution.Name & ")",
    "report": $string({{
      "version": 0,
      "smtrain": {{
        "program": $in.report.program,
        "execution": $states.context.Execution.Id,
        "trainingJob": $job,
        "modelArtifacts": $in.report.modelArtifacts,
        "qualityGate": {{"minimum": $isObject($gate.minimum) ? $gate.minimum : {{}},
                         "maximum": $isObject($gate.maximum) ? $gate.maximum : {{}},
                         "passed": $passed}}
      }},
      "training_job_final_metrics": $merge([{{}}, $in.report.metrics.{{MetricName: {{"value": Value}}}}])
    }})
  }}
)""")


def _one_line(text: str) -> str:
    return " ".join(line.strip() for line in text.splitlines() if line.strip())
