"""The state machine's input check: every input rule, in one JSONata state, before anything else."""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from smtrain.core import input_rules

#: The variable the check assigns (Step Functions variables: developer guide, "Passing data
#: between states with variables"); JSONPath states read it as ``$inputCheck``.
CHECK_VARIABLE = "inputCheck"
#: Where the states after the check find what it resolved.
RESOLVED_PATH = f"${CHECK_VARIABLE}.resolved"


class InputCheck(Construct):
    """Checks the raw execution input against every rule of :mod:`smtrain.core.input_rules`
    (the programs' manifests, the deployment's settings and limits, tuning, ``maxJobHours``)
    before any other state runs.

    Guarantees:

    - ``ReadInput`` (JSONPath) records the input, the deployment's defaults, the input's JSON text
      (``States.JsonToString``: JSONata reads ``2.0`` as ``2``, so the integer rules read the
      number as written there) and the execution's name;
    - ``CheckProgramInput`` (JSONata, inside the JSONPath state machine: Step Functions lets each
      state choose its query language) evaluates :func:`smtrain.core.input_rules.state_expression`,
      the very text the CLI evaluates. It changes nothing in the state (JSONata would rewrite
      its numbers); it assigns ``$inputCheck``: ``resolved`` (``{"program": name}``, also when
      the older ``method`` picked it, the program's ``instance_type`` as ``instanceType`` when the
      input gives none, and what the run registers as ``register``), ``rejected`` and the first
      problem as ``rejection``;
    - a rejected input ends in ``reject`` with that error (``InvalidExecutionInput``,
      ``UnknownProgram`` or ``JobHoursBudgetExceeded``) and a cause naming the field: no job is
      created, nothing is written.

    Cost: three state transitions per execution (Step Functions bills standard workflows per
    transition); the programs' catalog, a few KB, in the definition; and the input's text beside
    the input until the check has passed (an input of more than about 120 KiB would exceed the
    256 KiB a state may hold).

    Call :meth:`then` with the state that valid input goes to; it reads the resolved fields with
    :data:`RESOLVED_PATH` and the defaults at ``$.defaults``.
    """

    def __init__(self, scope: Construct, construct_id: str, *,
                 programs: Mapping[str, input_rules.CatalogSource],
                 deployment: input_rules.Deployment, reject: sfn.Fail) -> None:
        super().__init__(scope, construct_id)
        self.read_input = sfn.Pass(self, "ReadInput", parameters={
            "defaults": dict(deployment.defaults), "input.$": "$",
            "text.$": "States.JsonToString($)", "executionName.$": "$$.Execution.Name",
        })
        body = input_rules.state_expression(programs, deployment)
        self.check = sfn.Pass.jsonata(self, "CheckProgramInput", assign={CHECK_VARIABLE: (
            "{% ($result := " + body + "; $rejected := $count($result.problems) > 0; "
            "{'resolved': {'program': $result.program, 'instanceType': $result.instanceType, "
            "'register': $result.register}, "
            "'rejected': $rejected, 'rejection': $rejected ? $result.problems[0] : {}}) %}")})
        self.choice = sfn.Choice(self, "ProgramInputValid")
        explain = sfn.Pass(self, "RejectProgramInput", result_path="$.rejection", parameters={
            "error.$": f"${CHECK_VARIABLE}.rejection.error",
            "cause.$": f"${CHECK_VARIABLE}.rejection.cause"})
        self.choice.when(sfn.Condition.boolean_equals(f"${CHECK_VARIABLE}.rejected", True),
                         explain.next(reject))

    def then(self, next_state: sfn.IChainable) -> sfn.Chain:
        self.choice.otherwise(next_state)
        return sfn.Chain.start(self.read_input).next(self.check).next(self.choice)
