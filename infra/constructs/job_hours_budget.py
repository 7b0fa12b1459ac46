"""The state machine's budget check (``maxJobHours``): one JSONata Pass state and its Choice."""

from __future__ import annotations

from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from infra.constructs.variable_check import VariableCheck
from smtrain.core import budget, contract

#: The variable the check assigns (JSONPath states read it as ``$budgetCheck``).
BUDGET_VARIABLE = "budgetCheck"


class JobHoursBudget(Construct):
    """Refuses an execution that could use more than ``max_job_hours`` instance-hours.

    Guarantees: ``Check<id>`` (JSONata) evaluates :func:`smtrain.core.budget.expression` over the
    state (instance count x maximum runtime x training jobs, ``tuning`` selecting the tuning
    run's job count) and only assigns ``$budgetCheck``: the state's numbers stay as they are. An
    execution over the budget ends in ``reject`` with error ``JobHoursBudgetExceeded`` and a
    cause giving the figures and the fields to lower, before any job is created. Two state
    transitions per execution.

    Call :meth:`then` with the state a run within budget goes to.
    """

    def __init__(self, scope: Construct, construct_id: str, *, max_job_hours: float,
                 tuning: bool, reject: sfn.Fail) -> None:
        super().__init__(scope, construct_id)
        if not max_job_hours > 0:
            raise ValueError(f"max_job_hours must be positive, got {max_job_hours!r}")
        self._check = VariableCheck(
            self, check_id=f"Check{construct_id}", choice_id=f"{construct_id}Kept",
            reject_id=f"Reject{construct_id}", variable=BUDGET_VARIABLE,
            expression=budget.expression(max_job_hours, tuning=tuning), flag="exceeded",
            rejection={"error": contract.BUDGET_EXCEEDED_ERROR,
                       "cause.$": f"${BUDGET_VARIABLE}.cause"},
            reject=reject)

    def then(self, next_state: sfn.IChainable) -> sfn.Chain:
        return self._check.then(next_state)
