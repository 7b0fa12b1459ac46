"""The state machine's program-aware input check: one JSONata Pass state and its Choice."""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from infra.constructs.variable_check import VariableCheck
from smtrain.core import input_rules
from smtrain.core.programs import Program

#: The variable the check assigns (Step Functions variables: developer guide, "Passing data
#: between states with variables"); JSONPath states read it as ``$inputCheck``.
CHECK_VARIABLE = "inputCheck"


class ProgramInputCheck(Construct):
    """Checks the raw execution input against the programs' manifests before anything else.

    Guarantees: the ``CheckProgramInput`` state (JSONata, inside the JSONPath state machine:
    Step Functions lets each state choose its query language) evaluates
    :func:`smtrain.core.input_rules.expression`, the very rules the CLI applies. It changes nothing in
    the state (JSONata would rewrite its numbers: ``2.0`` would become ``2`` before the integer
    checks read the input's text); it assigns the variable ``$inputCheck`` instead:
    ``resolved`` (``{"program": name}``, also when the older ``method`` picked it, with the
    program's ``instance_type`` as ``instanceType`` when the input gives none, and what the run
    registers as ``register``, see :func:`smtrain.core.input_rules.expression`), ``rejected`` and
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
        self._check = VariableCheck(
            self, check_id="CheckProgramInput", choice_id="ProgramInputValid",
            reject_id="RejectProgramInput", variable=CHECK_VARIABLE,
            expression=("($in := $states.input.input; $result := " + body + "; "
                        "$rejected := $count($result.problems) > 0; "
                        "{'resolved': {'program': $result.program, 'instanceType': $result.instanceType, "
                        "'register': $result.register}, "
                        "'rejected': $rejected, 'rejection': $rejected ? $result.problems[0] : {}})"),
            flag="rejected",
            rejection={"error.$": f"${CHECK_VARIABLE}.rejection.error",
                       "cause.$": f"${CHECK_VARIABLE}.rejection.cause"},
            reject=reject)

    def then(self, next_state: sfn.IChainable) -> sfn.Chain:
        return self._check.then(next_state)


#: Where the states after the check find what it resolved.
RESOLVED_PATH = f"${CHECK_VARIABLE}.resolved"
