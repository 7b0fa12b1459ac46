"""The per-execution budget in instance-hours (``maxJobHours``), written once in JSONata.

What an execution may use at most: ``instanceCount x maxRuntimeInSeconds / 3600`` per training
job (SageMaker bills training by the instance-second and stops a job at ``MaxRuntimeInSeconds``:
API reference, ``StoppingCondition``; a spot job is billed for its training time, which the same
limit bounds), times the number of training jobs: 1 for a training run, ``maxJobs`` for a tuning
run, and for grid search the size of the grid (the product of the categorical ranges' value
counts: a grid tuning job "runs a training job for every combination", developer guide,
"Understand the hyperparameter tuning strategies"). SageMaker's own retries of a job that failed
with an internal error (``RetryStrategy``, up to 2 here) are not counted: the budget bounds what
the execution asks for, not what SageMaker's retries may add.

The state machine evaluates :func:`expression` in a JSONata Pass state just before the job is
created, after every field it reads has been checked; :func:`check` evaluates the same expression
with ``jsonata-python`` (the tests compare it with the state machine's answers).
"""

from __future__ import annotations

from typing import Any

from smtrain.core import contract

#: Fields of the state the expression reads (after defaults were applied and checked).
CONFIG_PATH = "config"
TUNING_CONFIG_PATH = "tuning.config"


def budget_text(max_job_hours: float) -> str:
    """The budget as the expression and the stack output write it (``3``, ``2.5``): the same
    text whether the setting was ``3`` or ``3.0``."""
    value = float(max_job_hours)
    return str(int(value)) if value.is_integer() else repr(value)


def expression(max_job_hours: float, *, tuning: bool) -> str:
    """A JSONata expression over ``$states.input`` that yields ``{"exceeded", "cause"}``.

    With ``tuning`` the job count is the tuning run's (``$states.input.tuning.config``)."""
    if tuning:
        jobs = ("($t := $states.input.tuning.config; $t.strategy = 'Grid' ? "
                "$reduce([$t.parameterRanges.CategoricalParameterRanges.$count(Values)], "
                "function($a, $b) { $a * $b }, 1) : $t.maxJobs)")
        jobs_text = "' x ' & $string($jobs) & ' training jobs'"
        lower = "instanceCount, maxRuntimeInSeconds or tuning.maxJobs"
    else:
        jobs = "1"
        jobs_text = "''"
        lower = "instanceCount or maxRuntimeInSeconds"
    budget = budget_text(max_job_hours)
    return (
        "($c := $states.input.config; $jobs := " + jobs + "; "
        "$hours := $c.instanceCount * $c.maxRuntimeInSeconds * $jobs / 3600; "
        "{'exceeded': $hours > " + budget + ", "
        "'cause': 'this execution may use up to ' & $formatNumber($hours, '#0.##') & "
        "' instance-hours (instanceCount ' & $string($c.instanceCount) & ' x "
        "maxRuntimeInSeconds ' & $string($c.maxRuntimeInSeconds) & ' s' & " + jobs_text + " & "
        "'), over the budget of this deployment, maxJobHours " + budget + ": lower "
        + lower + "'})"
    )


def check(state: dict[str, Any], max_job_hours: float, *, tuning: bool) -> dict[str, Any]:
    """What the state machine's budget check answers for ``state`` (``{"exceeded", "cause"}``).

    ``state`` holds ``config`` (and, with ``tuning``, ``tuning.config``) as the state machine has
    them."""
    import jsonata  # jsonata-python (pinned in requirements.txt)

    body = expression(max_job_hours, tuning=tuning).replace("$states.input", "$$")
    result: dict[str, Any] = jsonata.Jsonata(body).evaluate(state)
    return result


#: The error an over-budget execution fails with.
ERROR = contract.BUDGET_EXCEEDED_ERROR
