"""The state machine's program-aware input check: one JSONata Pass state and its Choice."""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from smtrain import input_rules
from smtrain.programs import Program

Cond = sfn.Condition


class ProgramInputCheck(Construct):
    """Checks the raw execution input against the programs' manifests before anything else.

    Guarantees: the ``CheckProgramInput`` state (JSONata, inside the JSONPath state machine:
    Step Functions lets each state choose its query language) evaluates
    :func:`smtrain.input_rules.expression`, the very rules the CLI applies, and adds
    ``resolved`` (``{"program": name}``, also when the older ``method`` picked it) and
    its first problem as ``rejection``, with which the execution ends in ``reject``: error
    ``InvalidExecutionInput`` or ``UnknownProgram``, and a cause naming the field. It costs two
    state transitions per execution (the Pass and its Choice; Step Functions bills standard
    workflows per transition) and adds the programs' catalog, a few KB, to the definition.

    Call :meth:`then` with the state that valid input goes to.
    """

    def __init__(self, scope: Construct, construct_id: str, *, programs: Mapping[str, Program],
                 reject: sfn.Fail) -> None:
        super().__init__(scope, construct_id)
        body = input_rules.expression(programs)
        self.check = sfn.Pass.jsonata(self, "CheckProgramInput", outputs=(
            "{% ($in := $states.input.input; $result := " + body + "; "
            "$merge([$states.input, {'resolved': {'program': $result.program}, "
            "'rejection': $result.problems[0]}])) %}"))
        self.choice = sfn.Choice(self, "ProgramInputValid")
        self.choice.when(Cond.is_present("$.rejection"), reject)

    def then(self, next_state: sfn.IChainable) -> sfn.Chain:
        self.choice.otherwise(next_state)
        return sfn.Chain.start(self.check).next(self.choice)
