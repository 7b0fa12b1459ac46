"""smtrain.local.asl_parse_cache: a kept parse tree answers its contexts' texts from a table, the
same texts ANTLR works out; a tree dropped from the cache takes its entries with it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from antlr4.tree.Tree import TerminalNode
from moto.stepfunctions.parser.api import InvalidDefinition
from moto.stepfunctions.parser.asl.parse.preprocessor import Preprocessor
from moto.stepfunctions.parser.models import StepFunctionsParserBackend

from smtrain.local import asl_parse_cache

DEFINITION = {
    "StartAt": "Check",
    "States": {
        "Check": {"Type": "Choice", "Choices": [{"Variable": "$.n", "NumericGreaterThan": 1, "Next": "Big"}],
                  "Default": "Small"},
        "Big": {"Type": "Pass", "Parameters": {"size.$": "$.n", "label": "big"}, "End": True},
        "Small": {"Type": "Map", "ItemsPath": "$.items", "ItemProcessor": {
            "StartAt": "Each", "States": {"Each": {"Type": "Pass", "End": True}}}, "End": True},
    },
}


def _contexts(tree: Any) -> Iterator[Any]:
    pending = [tree]
    while pending:
        node = pending.pop()
        if not isinstance(node, TerminalNode):
            yield node
            pending.extend(node.children or ())


def test_a_kept_trees_texts_are_antlrs_and_go_with_the_tree() -> None:
    asl_parse_cache.enable()
    definition = json.dumps(DEFINITION)
    _, tree = asl_parse_cache._parse(definition)
    contexts = list(_contexts(tree))
    assert len(contexts) > 20
    for context in contexts:
        assert id(context) in asl_parse_cache._texts
        assert context.getText() == asl_parse_cache._original_get_text(context)
    # Parsed again: the kept tree, its components built afresh.
    program, again = asl_parse_cache._parse(definition)
    assert again is tree and program is not None

    asl_parse_cache._forget(definition)
    asl_parse_cache._trees.pop(definition)
    assert not any(id(context) in asl_parse_cache._texts for context in contexts)
    assert definition not in asl_parse_cache._ids_of_tree


def test_a_kept_definition_is_not_built_again_to_be_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    """CreateStateMachine's check of a definition already parsed and built gives the same
    answer without building it again; a broken definition is refused every time."""
    asl_parse_cache.enable()
    definition = json.dumps({**DEFINITION, "Comment": "checked once"})
    StepFunctionsParserBackend._validate_definition(definition)  # parsed and kept
    assert definition in asl_parse_cache._trees
    visits: list[Any] = []
    monkeypatch.setattr(Preprocessor, "visit", lambda self, tree: visits.append(tree))
    StepFunctionsParserBackend._validate_definition(definition)
    assert visits == []
    monkeypatch.undo()
    broken = json.dumps({"StartAt": "Only", "States": {"Only": {"Type": "Bogus", "End": True}}})
    for _ in range(2):
        with pytest.raises(InvalidDefinition, match="Bogus"):
            StepFunctionsParserBackend._validate_definition(broken)
    assert broken not in asl_parse_cache._trees


def test_a_result_path_is_parsed_once_and_written_into_the_data_only() -> None:
    """moto's ResultPath parses its path at every state: once per process here, and the shared
    parsed path gives each state's output as a fresh parse would."""
    from jsonpath_ng.parser import parse as fresh_parse
    from moto.stepfunctions.parser.asl.component.common.path import result_path

    asl_parse_cache.enable()
    assert result_path.parse("$.result.job") is result_path.parse("$.result.job")
    for state_input in ({"n": 1}, {"n": 2, "result": {"other": True}}):
        expected = fresh_parse("$.result.job").update_or_create(json.loads(json.dumps(state_input)), {"a": 1})
        shared = result_path.parse("$.result.job").update_or_create(json.loads(json.dumps(state_input)), {"a": 1})
        assert shared == expected
    assert str(result_path.parse("$.result.job")) == str(fresh_parse("$.result.job"))


def _shape(tree: Any) -> str:
    from moto.stepfunctions.parser.asl.antlr.runtime.ASLParser import ASLParser

    return str(tree.toStringTree(ruleNames=ASLParser.ruleNames))


def test_a_new_process_builds_from_the_tree_an_earlier_one_kept(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """A definition parsed once is kept on disk (smtrain.local.asl_tree_store): a process that
    has not parsed it reads the tree back, the same tree in every rule and token, and builds its
    components from it without parsing; a file that does not read back is deleted and the
    definition parsed again; at most KEPT trees stay."""
    from smtrain.local import asl_tree_store

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    asl_parse_cache.enable()
    definition = json.dumps({**DEFINITION, "Comment": "kept on disk"})
    _, parsed = asl_parse_cache._parse(definition)
    (kept_file,) = asl_tree_store.folder().glob("*.tree")
    assert not list(asl_tree_store.folder().glob("*.partial"))

    # As a new process would find it: not parsed in this one.
    asl_parse_cache._forget(definition)
    asl_parse_cache._trees.pop(definition)
    read_back = asl_tree_store.load(definition)
    assert read_back is not None and read_back is not parsed
    assert _shape(read_back) == _shape(parsed)
    asl_parse_cache._forget(definition)
    asl_parse_cache._trees.pop(definition, None)

    def no_parse(text: str) -> Any:
        raise AssertionError("parsed again")

    monkeypatch.setattr(asl_parse_cache, "_original", no_parse)
    program, tree = asl_parse_cache._parse(definition)
    assert program is not None and _shape(tree) == _shape(parsed)
    contexts = list(_contexts(tree))
    assert all(context.getText() == asl_parse_cache._original_get_text(context) for context in contexts)
    monkeypatch.undo()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))

    # A damaged file: deleted, parsed again, kept again whole.
    asl_parse_cache._forget(definition)
    asl_parse_cache._trees.pop(definition)
    kept_file.write_bytes(kept_file.read_bytes()[:1000])
    assert asl_tree_store.load(definition) is None and not kept_file.exists()
    _, again = asl_parse_cache._parse(definition)
    assert _shape(again) == _shape(parsed) and kept_file.is_file()

    # Another moto (or ANTLR, or Python): another name, never this file.
    monkeypatch.setattr(asl_tree_store, "FORMAT", "asl-tree-v0")
    assert asl_tree_store.load(definition) is None and kept_file.is_file()
    monkeypatch.setattr(asl_tree_store, "KEPT", 1)
    asl_tree_store.keep(definition, again)
    assert list(asl_tree_store.folder().glob("*.tree")) != [kept_file]
    assert len(list(asl_tree_store.folder().glob("*.tree"))) == 1


def test_a_tree_file_naming_another_class_is_refused_and_a_failed_build_leaves_no_scope(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """A kept file is read only as ANTLR's and moto's parser's objects: one that names any other
    class (here os.system) is refused, deleted and the definition parsed. A build that raises
    leaves nothing on moto's class-wide stack of query languages for the next build."""
    import os
    import pickle

    from smtrain.local import asl_tree_store

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    definition = json.dumps({**DEFINITION, "Comment": "planted"})
    planted = asl_tree_store.folder() / f"{asl_tree_store._key(definition)}.tree"
    planted.parent.mkdir(parents=True)

    class Planted:
        def __reduce__(self) -> Any:
            return (os.system, ("touch " + str(tmp_path / "ran"),))

    planted.write_bytes(pickle.dumps(Planted()))
    assert asl_tree_store.load(definition) is None
    assert not planted.exists() and not (tmp_path / "ran").exists()

    asl_parse_cache.enable()
    scopes = Preprocessor._query_language_per_scope
    depth = len(scopes)

    def failing_visit(self: Any, tree: Any) -> Any:
        scopes.append(scopes[-1] if scopes else None)  # a scope opened, then an error
        raise ValueError("not built")

    monkeypatch.setattr(Preprocessor, "visit", failing_visit)
    asl_parse_cache._trees.setdefault(definition, object())
    with pytest.raises(ValueError, match="not built"):
        asl_parse_cache._parse(definition)
    assert len(scopes) == depth
    monkeypatch.undo()
    asl_parse_cache._trees.pop(definition, None)
