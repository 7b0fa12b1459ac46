"""The state machine's program-aware input check: one JSONata Pass state and its Choice."""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from smtrain import input_rules
from smtrain.programs import Program

Cond = sfn.Condition


#: The variable the check assigns (Step Functions variables: developer guide, "Passing data
#: between states with variables"); JSONPath states read it as ``$inputCheck``.
CHECK_VARIABLE = "inputCheck"


class ProgramInputCheck(Construct):
    """Checks the raw execution input against the programs' manifests before anything else.

    Guarantees: the ``CheckProgramInput`` state (JSONata, inside the JSONPath state machine:
    Step Functions lets each state choose its query language) evaluates
    :func:`smtrain.input_rules.expression`, the very rules the CLI applies. It changes nothing in
    the state (JSONata would rewrite its numbers: ``2.0`` would become ``2`` before the integer
    checks read the input's text); it assigns the variable ``$inputCheck`` instead:
    ``resolved`` (``{"program": name}``, also when the older ``method`` picked it, with the
    program's ``instance_type`` as ``instanceType`` when the input gives none), ``rejected`` and
    the first problem as ``rejection``. A rejected input ends in ``reject`` with that error
    (``InvalidExecutionInput`` or ``UnknownProgram``) and a cause naming the field. It costs two
    state transitions per execution (the check and its Choice; Step Functions bills standard
    workflows per transition) and adds the programs' catalog, a few KB, to the definition.

    Call :meth:`then` with the state that valid input goes to; it reads the resolved fields with
    :data:`RESOLVED_PATH`.
    """

    def __init__(self, scope: Construct, construct_id: str, *, programs: Mapping[str, Program],
                 reject: sfn.Fail) -> None:
        super().__init__(scope, construct_id)
        body = input_rules.expression(programs)
        self.check = sfn.Pass.jsonata(self, "CheckProgramInput", assign={CHECK_VARIABLE: (
            "{% ($in := $states.input.input; $result := " + body + "; "
            "$rejected := $count($result.problems) > 0; "
            "{'resolved': {'program': $result.program, 'instanceType': $result.instanceType}, "
            "'rejected': $rejected, 'rejection': $rejected ? $result.problems[0] : {}}) %}")})
        self.choice = sfn.Choice(self, "ProgramInputValid")
        explain = sfn.Pass(self, "RejectProgramInput", result_path="$.rejection", parameters={
            "error.$": f"${CHECK_VARIABLE}.rejection.error",
            "cause.$": f"${CHECK_VARIABLE}.rejection.cause",
        })
        self.choice.when(Cond.boolean_equals(f"${CHECK_VARIABLE}.rejected", True),
                         explain.next(reject))

    def then(self, next_state: sfn.IChainable) -> sfn.Chain:
        self.choice.otherwise(next_state)
        return sfn.Chain.start(self.check).next(self.choice)


#: Where the states after the check find what it resolved.
RESOLVED_PATH = f"${CHECK_VARIABLE}.resolved"
