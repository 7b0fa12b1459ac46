"""moto's interpreter parses a definition once, not once per execution.

moto's Step Functions backend (ported from LocalStack) parses the whole definition with its
pure-Python ANTLR parser every time an execution starts (``ExecutionWorker.
_get_evaluation_entrypoint`` calls ``AmazonStateLanguageParser.parse``): about 0.3 s for the
project's definition, most of a refused input's run. :func:`enable` keeps each definition's
parse tree (it is only read afterwards) and builds the evaluation components from it afresh for
every execution (``Preprocessor().visit``, as ``parse`` does), so no execution shares a component
with another, and the SageMaker task service installed by :mod:`smtrain.local.sfn_sagemaker` is
looked up as before. moto is pinned exactly for this hook as for the others.

Building the components reads the text of whole subtrees (moto's ``Preprocessor`` formats the
error message of ``visitProgram_decl`` with ``ctx.getText()`` whether or not it raises, and ANTLR's
``RuleContext.getText`` concatenates its children's texts afresh on every call): about half of
each execution's start. The texts of a kept tree never change (the tree is only read), so each
of its contexts' texts is worked out once, when the tree is kept, and ``getText`` answers from
that table for those contexts only; any other context (another parser's, one being parsed) is
answered by ANTLR's own method.

A new process reads the tree an earlier one kept on disk, where there is one
(:mod:`smtrain.local.asl_tree_store`), instead of parsing the definition again; the
components are built from it as from a kept tree.

Likewise each JSONPath (``InputPath``, ``$.field`` in ``Parameters``) is parsed once per process:
moto's ``extract_json`` calls ``jsonpath_ng.ext.parse`` for every evaluation, and each call builds
a new PLY parser (about 20 ms). A parsed path is only read (``find``), so one is shared. So is
each ``ResultPath``, which moto parses with ``jsonpath_ng.parse`` at every state that has one; a
parsed path writes into the data it is given (``update_or_create``), never into itself.

CreateStateMachine checks a definition by parsing it and building its components, then drops
them (``StepFunctionsParserBackend._validate_definition``); every offline engine creates its state
machines afresh. A definition whose tree is kept was parsed and built without an error, and the
same text gives the same tree and the same components, so checking it again would give the same
answer: it is not built again for nothing. A definition not kept is checked as moto checks it.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Iterator
from typing import Any

from antlr4.RuleContext import RuleContext
from antlr4.tree.Tree import TerminalNode
from moto.stepfunctions.parser.asl.component.common.path import result_path
from moto.stepfunctions.parser.asl.parse.asl_parser import AmazonStateLanguageParser
from moto.stepfunctions.parser.asl.parse.preprocessor import Preprocessor
from moto.stepfunctions.parser.asl.utils import json_path
from moto.stepfunctions.parser.models import StepFunctionsParserBackend

from smtrain.local import asl_tree_store

#: Parse trees by definition text; a few definitions per process (tests load several apps).
_MAX_TREES = 16
_trees: dict[str, Any] = {}
_lock = threading.RLock()
_original: Any = None
_original_get_text: Any = None
_original_validate: Any = None
#: ``id(context) -> text`` for every rule context of the trees in ``_trees`` (they are kept
#: alive there, so an id names one context until its tree is dropped, and its ids with it).
_texts: dict[int, str] = {}
_ids_of_tree: dict[str, list[int]] = {}


def _get_text(context: Any) -> str:
    text = _texts.get(id(context))
    return _original_get_text(context) if text is None else text


def _remember_texts(definition: str, tree: Any) -> None:
    """Work out each rule context's text once, children first (each parent joins its children's
    texts, read back from the table)."""
    ids: list[int] = []
    _ids_of_tree[definition] = ids  # filled as it goes: a walk cut short is still forgotten whole
    pending: list[tuple[Any, bool]] = [(tree, False)]
    while pending:
        node, children_done = pending.pop()
        if isinstance(node, TerminalNode):
            continue
        children = node.children or ()
        if children_done:
            _texts[id(node)] = "".join(child.getText() for child in children)
            ids.append(id(node))
        else:
            pending.append((node, True))
            pending.extend((child, False) for child in children)


def _forget(definition: str) -> None:
    for context_id in _ids_of_tree.pop(definition, ()):
        _texts.pop(context_id, None)


def _parse(definition: str) -> tuple[Any, Any]:
    # One parse or preprocessing at a time: moto's Preprocessor keeps the query language of the
    # scope it visits in a class attribute (``_query_language_per_scope``), so two executions
    # starting at once could build each other's states in the wrong language.
    with _lock, _query_language_scopes_restored():
        return _parse_or_build(definition)


@contextlib.contextmanager
def _query_language_scopes_restored() -> Iterator[None]:
    """A build that raises leaves its scopes on moto's class-wide stack of query languages
    (``Preprocessor._query_language_per_scope``), where every later build would find them: the
    stack is as deep after the block as before it."""
    scopes = Preprocessor._query_language_per_scope
    depth = len(scopes)
    try:
        yield
    finally:
        del scopes[depth:]


def _parse_or_build(definition: str) -> tuple[Any, Any]:
    tree = _trees.get(definition)
    if tree is not None:
        return Preprocessor().visit(tree), tree
    if len(_trees) >= _MAX_TREES:
        oldest = next(iter(_trees))
        _forget(oldest)
        del _trees[oldest]
    kept = asl_tree_store.load(definition)
    if kept is not None:  # parsed by an earlier process
        _trees[definition] = kept
        _remember_texts(definition, kept)
        try:
            with _query_language_scopes_restored():
                return Preprocessor().visit(kept), kept
        except Exception:  # not as parsed: forget it, parse as moto does
            _forget(definition)
            del _trees[definition]
    program, tree = _original(definition)
    _trees[definition] = tree
    _remember_texts(definition, tree)
    asl_tree_store.keep(definition, tree)
    return program, tree


def _validate_definition(definition: str) -> None:
    with _lock:
        if definition in _trees:
            return  # parsed and built once without an error: the same text gives the same answer
    _original_validate(definition)


def enable() -> None:
    """Parse each definition once per process (idempotent)."""
    global _original, _original_get_text, _original_validate
    with _lock:
        if _original is not None:
            return
        _original = AmazonStateLanguageParser.parse
        _original_get_text = RuleContext.getText
        _original_validate = StepFunctionsParserBackend._validate_definition
        AmazonStateLanguageParser.parse = staticmethod(_parse)
        RuleContext.getText = _get_text
        StepFunctionsParserBackend._validate_definition = staticmethod(_validate_definition)
        json_path.parse = functools.lru_cache(maxsize=1024)(json_path.parse)
        result_path.parse = functools.lru_cache(maxsize=1024)(result_path.parse)
