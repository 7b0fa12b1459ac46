"""The per-execution budgets, in instance-hours (``maxJobHours``) and in money (``maxRunCost``),
written once in JSONata.

What an execution may use at most: ``instanceCount x maxRuntimeInSeconds / 3600`` per training
job (SageMaker bills training by the instance-second and stops a job at ``MaxRuntimeInSeconds``:
API reference, ``StoppingCondition``; a spot job is billed for its training time, which the same
limit bounds), times the number of training jobs: 1 for a training run, ``maxJobs`` for a tuning
run, and for grid search the size of the grid (the product of the categorical ranges' value
counts: a grid tuning job "runs a training job for every combination", developer guide,
"Understand the hyperparameter tuning strategies"). SageMaker's own retries of a job that failed
with an internal error (``RetryStrategy``, sent only with the ``sagemakerRetryAttempts`` setting,
up to that many) are not counted: the budget bounds what the execution asks for, not what
SageMaker's retries may add. A training run's warm pool (``keepAliveSeconds``) counts too: its
instances are billed while they wait ("You are billed for the instances in a warm pool", developer
guide, "SageMaker AI Managed Warm Pools"), so a run may use ``instanceCount x (maxRuntimeInSeconds
+ keepAliveSeconds) / 3600``.

:data:`FUNCTION` is one rule of the input rules (:mod:`smtrain.core.input_rules`), evaluated once
every field it reads has been checked: by the state machine's input check and by the CLI alike
(the tests also evaluate it alone: ``tests/test_job_security.py``).
"""

from __future__ import annotations

#: ``function($c, $t, $max)``: ``$c`` the run's settings (``instanceCount``,
#: ``maxRuntimeInSeconds``, ``keepAliveSeconds``), ``$t`` its tuning settings (null for a training run), ``$max`` the
#: budget; yields ``{"exceeded", "cause"}``.
#: The instance-hours a run may use, over ``$c`` and ``$t`` (shared by both budgets).
HOURS = (
    "$tuning := $type($t) = 'object'; "
    "$jobs := $tuning ? ($t.strategy = 'Grid' ? "
    "$reduce([$t.parameterRanges.CategoricalParameterRanges.$count(Values)], "
    "function($a, $b) { $a * $b }, 1) : $t.maxJobs) : 1; "
    "$pool := $not($tuning) and $type($c.keepAliveSeconds) = 'number' ? $c.keepAliveSeconds : 0; "
    "$hours := $c.instanceCount * ($c.maxRuntimeInSeconds * $jobs + $pool) / 3600; "
)
FUNCTION = (
    "function($c, $t, $max) {( " + HOURS +
    "{'exceeded': $hours > $max, "
    "'cause': 'this execution may use up to ' & $formatNumber($hours, '#0.##') & "
    "' instance-hours (instanceCount ' & $string($c.instanceCount) & ' x ' & "
    "($pool > 0 ? '(' : '') & 'maxRuntimeInSeconds ' & $string($c.maxRuntimeInSeconds) & ' s' & "
    "($tuning ? ' x ' & $string($jobs) & ' training jobs' : '') & "
    "($pool > 0 ? ' + keepAliveSeconds ' & $string($pool) & ' s of warm pool)' : '') & "
    "'), over the budget of this deployment, maxJobHours ' & $string($max) & ': lower ' & "
    "($tuning ? 'instanceCount, maxRuntimeInSeconds or tuning.maxJobs' "
    ": $pool > 0 ? 'instanceCount, maxRuntimeInSeconds or keepAliveSeconds' "
    ": 'instanceCount or maxRuntimeInSeconds')} )}"
)

#: ``function($c, $t, $prices, $max)``: the budget in money (``maxRunCost``, USD): the same
#: instance-hours at the on-demand price of the run's instance type (``$prices``: USD per hour by
#: type, from ``smtrain/core/prices.json`` at synth). An upper bound: spot bills less.
COST_FUNCTION = (
    "function($c, $t, $prices, $max) {( " + HOURS +
    "$price := $lookup($prices, $c.instanceType); "
    "$cost := $hours * $price; "
    "{'exceeded': $cost > $max, "
    "'cause': 'this execution may cost up to $' & $formatNumber($cost, '#0.00') & ' (' & "
    "$formatNumber($hours, '#0.##') & ' instance-hours of ' & $c.instanceType & ' at $' & "
    "$string($price) & '/h on demand), over the budget of this deployment, maxRunCost $' & "
    "$string($max) & ': lower ' & ($tuning ? 'instanceCount, maxRuntimeInSeconds or tuning.maxJobs' "
    ": $pool > 0 ? 'instanceCount, maxRuntimeInSeconds or keepAliveSeconds' "
    ": 'instanceCount or maxRuntimeInSeconds') & ', or choose a cheaper instanceType'} )}"
)


def budget_value(max_job_hours: float) -> int | float:
    """The budget as the rules and the stack output write it: ``3`` whether the setting was ``3``
    or ``3.0``, ``2.5`` as it is."""
    value = float(max_job_hours)
    return int(value) if value.is_integer() else value


def budget_text(max_job_hours: float) -> str:
    """The budget as text (``3``, ``2.5``): the stack output's ``MaxJobHours``."""
    return str(budget_value(max_job_hours))
