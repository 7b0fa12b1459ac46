"""moto's interpreter parses a definition once, not once per execution.

moto's Step Functions backend (ported from LocalStack) parses the whole definition with its
pure-Python ANTLR parser every time an execution starts (``ExecutionWorker.
_get_evaluation_entrypoint`` calls ``AmazonStateLanguageParser.parse``): about 0.3 s for the
project's definition, most of a refused input's run. :func:`enable` keeps each definition's
parse tree (it is only read afterwards) and builds the evaluation components from it afresh for
every execution (``Preprocessor().visit``, as ``parse`` does), so no execution shares a component
with another, and the SageMaker task service installed by :mod:`smtrain.local.sfn_sagemaker` is
looked up as before. moto is pinned exactly for this hook as for the others.
"""

from __future__ import annotations

import threading
from typing import Any

from moto.stepfunctions.parser.asl.parse.asl_parser import AmazonStateLanguageParser
from moto.stepfunctions.parser.asl.parse.preprocessor import Preprocessor

#: Parse trees by definition text; a few definitions per process (tests load several apps).
_MAX_TREES = 16
_trees: dict[str, Any] = {}
_lock = threading.RLock()
_original: Any = None


def _parse(definition: str) -> tuple[Any, Any]:
    # One parse or preprocessing at a time: moto's Preprocessor keeps the query language of the
    # scope it visits in a class attribute (``_query_language_per_scope``), so two executions
    # starting at once could build each other's states in the wrong language.
    with _lock:
        tree = _trees.get(definition)
        if tree is None:
            program, tree = _original(definition)
            if len(_trees) >= _MAX_TREES:
                _trees.pop(next(iter(_trees)))
            _trees[definition] = tree
            return program, tree
        return Preprocessor().visit(tree), tree


def enable() -> None:
    """Parse each definition once per process (idempotent)."""
    global _original
    with _lock:
        if _original is not None:
            return
        _original = AmazonStateLanguageParser.parse
        AmazonStateLanguageParser.parse = staticmethod(_parse)
