"""The state machine's budget check (``maxJobHours``): one JSONata Pass state and its Choice."""

from __future__ import annotations

from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from smtrain import budget, contract

Cond = sfn.Condition

#: The variable the check assigns (JSONPath states read it as ``$budgetCheck``).
BUDGET_VARIABLE = "budgetCheck"


class JobHoursBudget(Construct):
    """Refuses an execution that could use more than ``max_job_hours`` instance-hours.

    Guarantees: ``Check<id>`` (JSONata) evaluates :func:`smtrain.budget.expression` over the
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
        self.check = sfn.Pass.jsonata(self, f"Check{construct_id}", assign={
            BUDGET_VARIABLE: "{% " + budget.expression(max_job_hours, tuning=tuning) + " %}"})
        self.choice = sfn.Choice(self, f"{construct_id}Kept")
        explain = sfn.Pass(self, f"Reject{construct_id}", result_path="$.rejection", parameters={
            "error": contract.BUDGET_EXCEEDED_ERROR,
            "cause.$": f"${BUDGET_VARIABLE}.cause",
        })
        self.choice.when(Cond.boolean_equals(f"${BUDGET_VARIABLE}.exceeded", True),
                         explain.next(reject))

    def then(self, next_state: sfn.IChainable) -> sfn.Chain:
        self.choice.otherwise(next_state)
        return sfn.Chain.start(self.check).next(self.choice)
