"""A check that a JSONata state computes into a variable, and a Choice that rejects on it."""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct


class VariableCheck:
    """Three states in ``scope``: ``check_id``, a JSONata Pass that only assigns ``variable`` from
    ``expression`` (the state itself stays as it is: JSONata would rewrite its numbers, ``2.0``
    becoming ``2``); ``choice_id``, a Choice that goes on when ``$<variable>.<flag>`` is not true;
    and ``reject_id``, a Pass that writes ``rejection`` (``{"error"|"error.$", "cause"|"cause.$"}``,
    paths may read the variable) to ``$.rejection`` before ``reject``.

    Call :meth:`then` with the state that a passed check goes to.
    """

    def __init__(self, scope: Construct, *, check_id: str, choice_id: str, reject_id: str,
                 variable: str, expression: str, flag: str, rejection: Mapping[str, str],
                 reject: sfn.Fail) -> None:
        self.check = sfn.Pass.jsonata(scope, check_id, assign={variable: "{% " + expression + " %}"})
        self.choice = sfn.Choice(scope, choice_id)
        explain = sfn.Pass(scope, reject_id, result_path="$.rejection", parameters=dict(rejection))
        self.choice.when(sfn.Condition.boolean_equals(f"${variable}.{flag}", True),
                         explain.next(reject))

    def then(self, next_state: sfn.IChainable) -> sfn.Chain:
        self.choice.otherwise(next_state)
        return sfn.Chain.start(self.check).next(self.choice)
