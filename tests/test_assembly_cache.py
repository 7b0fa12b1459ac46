"""The test runs' cache of synthesized assemblies (tests/assembly_cache.py): an entry is read only
while everything its synth read is unchanged, and what it holds is what a synth writes."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from infra.settings import Settings
from tests import assembly_cache
from tests.conftest import shipped_training_code, synthesize
from tests.helpers import Synthesized


def test_the_cached_default_app_is_what_a_fresh_synth_writes(
        synthesized: Synthesized, cdk_context: dict[str, Any], settings: Settings, tmp_path: Path) -> None:
    """The session's default app (from the cache where an earlier run kept it; with the cache
    off, as in CI, a synth of its own: two synths of the same inputs, the premise of the cache)
    against a synth of the same inputs now: the same templates and messages, and the same files
    with the same bytes, but for the stack traces in the metadata files (Node's temporary module
    paths)."""
    assert synthesized.training_code is not None
    # The programs as the session's synth read them: a copy of the shipped ones under the same
    # folder name (jobs have run from the session's copy since, leaving bytecode in it).
    code = shipped_training_code(tmp_path / "copy" / synthesized.training_code.name)
    fresh = synthesize(cdk_context, settings, tmp_path / "cdk.out", code, fresh=True)
    assert fresh.storage == synthesized.storage
    assert fresh.workflow == synthesized.workflow
    assert fresh.messages == synthesized.messages

    def without_traces(value: Any) -> Any:
        if isinstance(value, dict):
            return {key: without_traces(item) for key, item in value.items() if key != "trace"}
        return [without_traces(item) for item in value] if isinstance(value, list) else value

    def files(outdir: Path) -> dict[str, Any]:
        return {path.relative_to(outdir).as_posix(): without_traces(json.loads(path.read_text()))
                if path.name.endswith(".metadata.json") else path.read_bytes()
                for path in outdir.rglob("*") if path.is_file()}

    kept, now = files(synthesized.outdir), files(fresh.outdir)
    assert any(name.endswith(".metadata.json") for name in kept)
    assert kept == now


@pytest.fixture
def code(tmp_path: Path) -> Path:
    folder = tmp_path / "code" / "prog"
    folder.mkdir(parents=True)
    (folder / "train.py").write_text("print('loss=1')\n")
    return folder.parent


def test_the_key_changes_with_each_input(code: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """Context, settings, an SMTRAIN_ variable, a program file's bytes, name, executable bit and
    bytecode, and the programs folder's name each change the key; the folder's parents do not."""
    context = {"training": {"network": "sealed"}}
    key = assembly_cache.assembly_key(context, settings, code)
    assert assembly_cache.assembly_key(context, settings, code) == key  # stable
    assert assembly_cache.assembly_key({"training": {"network": "public"}}, settings, code) != key
    assert assembly_cache.assembly_key(context, dataclasses.replace(settings, network="public"), code) != key
    monkeypatch.setenv("SMTRAIN_SOMETHING", "1")
    assert assembly_cache.assembly_key(context, settings, code) != key
    monkeypatch.delenv("SMTRAIN_SOMETHING")
    monkeypatch.setenv(assembly_cache.CACHE_SETTING, "on")  # the switch itself is not an input
    assert assembly_cache.assembly_key(context, settings, code) == key
    # Node by the file it is: another checkout's link to the same environment keys alike.
    node = code.parent / "node"
    node.write_text("")
    (code.parent / "linked").symlink_to(node)
    monkeypatch.setenv("JSII_NODE", str(node))
    with_node = assembly_cache.assembly_key(context, settings, code)
    monkeypatch.setenv("JSII_NODE", str(code.parent / "linked"))
    assert assembly_cache.assembly_key(context, settings, code) == with_node != key
    monkeypatch.undo()  # the environment as it was (the pinned Node's JSII_NODE)
    assert assembly_cache.assembly_key(context, settings, code) == key
    # A complete entry of the wheel download cache (what a vendored bundle packs).
    wheels = code.parent / "wheels"
    monkeypatch.setattr(assembly_cache, "default_wheel_cache", lambda: wheels)
    (wheels / "entry").mkdir(parents=True)
    no_wheels = assembly_cache.assembly_key(context, settings, code)
    (wheels / "entry" / "mlflow_skinny-3.17.2-py3-none-any.whl").write_bytes(b"wheel")
    assert assembly_cache.assembly_key(context, settings, code) == no_wheels  # not complete yet
    (wheels / "entry" / ".complete").write_text("")
    assert assembly_cache.assembly_key(context, settings, code) != no_wheels
    monkeypatch.undo()
    (code / "prog" / "train.py").write_text("print('loss=2')\n")  # a byte of the programs
    changed = assembly_cache.assembly_key(context, settings, code)
    assert changed != key
    (code / "prog" / "train.py").rename(code / "prog" / "main.py")  # a name
    assert assembly_cache.assembly_key(context, settings, code) not in {key, changed}
    before = assembly_cache.assembly_key(context, settings, code)
    (code / "prog" / "main.py").chmod(0o755)  # the source archive keeps the executable bit
    assert assembly_cache.assembly_key(context, settings, code) != before
    # Bytecode beside a program is in its image asset (the whole folder), so in the key too.
    renamed = assembly_cache.assembly_key(context, settings, code)
    (code / "prog" / "__pycache__").mkdir()
    (code / "prog" / "__pycache__" / "main.cpython-311.pyc").write_bytes(b"\0")
    assert assembly_cache.assembly_key(context, settings, code) != renamed
    # The folder's name: CDK names the staged folder after its suffix.
    here = assembly_cache.assembly_key(context, settings, code)
    renamed_folder = code.rename(code.parent / "cdk.out0-training-code")
    assert assembly_cache.assembly_key(context, settings, renamed_folder) != here
    # The rest of its path is not in an assembly, nor in the key.
    (code.parent / "elsewhere").mkdir()
    moved = renamed_folder.rename(code.parent / "elsewhere" / code.name)
    assert assembly_cache.assembly_key(context, settings, moved) == here


def test_the_sources_a_synth_imports_are_in_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A change to a file of infra/, smtrain/core/ or the tests' synth and record changes the
    digest the key starts from; their bytecode does not."""
    assert {"infra", "smtrain/core"} <= set(assembly_cache.SOURCE_FOLDERS)
    assert {"tests/assembly_cache.py", "tests/helpers.py", "smtrain/__init__.py"} <= set(assembly_cache.SOURCE_FILES)
    for name in (*assembly_cache.SOURCE_FOLDERS, *assembly_cache.SOURCE_FILES):
        source = assembly_cache.ROOT / name
        assert source.exists(), name
    root = tmp_path / "repo"
    (root / "infra").mkdir(parents=True)
    (root / "smtrain" / "core").mkdir(parents=True)
    (root / "tests").mkdir()
    for name in assembly_cache.SOURCE_FILES:
        (root / name).write_text("")
    (root / "infra" / "stack.py").write_text("A = 1\n")
    monkeypatch.setattr(assembly_cache, "ROOT", root)

    def digest() -> bytes:
        assembly_cache._sources_digest.cache_clear()
        return assembly_cache._sources_digest()

    try:
        before = digest()
        (root / "infra" / "stack.py").write_text("A = 2\n")
        after = digest()
        (root / "smtrain" / "core" / "rules.py").write_text("")
        added = digest()
        (root / "tests" / "helpers.py").write_text("# how a synth is recorded\n")
        helpers = digest()
        assert len({before, after, added, helpers}) == 4
        (root / "infra" / "__pycache__").mkdir()
        (root / "infra" / "__pycache__" / "stack.cpython-311.pyc").write_bytes(b"\0")
        assert digest() == helpers  # the sources' bytecode is derived from them
    finally:
        assembly_cache._sources_digest.cache_clear()


def test_an_entry_is_kept_whole_and_read_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An entry holds the output folder's files and the record; the first of two stores of one
    key stays; an entry without its record, or with a record short of a field, is no entry."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    outdir = tmp_path / "out"
    (outdir / "asset.1").mkdir(parents=True)
    (outdir / "asset.1" / "train.py").write_text("x")
    (outdir / "Workflow.template.json").write_text("{}")
    built = Synthesized(outdir=outdir, storage={"Resources": {}}, workflow={"Resources": {"A": {}}},
                        messages=[("error", "/Workflow/A", "AwsSolutions-IAM5: ...")], training_code=tmp_path)
    assert assembly_cache.cached("k", tmp_path / "copy", tmp_path) is None
    assembly_cache.keep("k", built)
    again = tmp_path / "again"
    again.mkdir()  # as tmp_path_factory.mktemp leaves it
    found = assembly_cache.cached("k", again, tmp_path / "code")
    assert found is not None
    assert (found.storage, found.workflow, found.messages) == (built.storage, built.workflow, built.messages)
    assert found.outdir == again and found.training_code == tmp_path / "code"
    assert (again / "asset.1" / "train.py").read_text() == "x"
    # Stored a second time (another worker at once): the first entry stays, no partial is left.
    entries = tmp_path / "cache" / "smtrain" / "test-assemblies"
    (entries / "k" / "first").write_text("")
    assembly_cache.keep("k", built)
    assert sorted(path.name for path in entries.iterdir()) == ["k"]
    assert (entries / "k" / "first").is_file()
    # A record short of a field, or none, is no entry.
    record = json.loads((entries / "k" / assembly_cache.RECORD).read_text())
    del record["messages"]
    (entries / "k" / assembly_cache.RECORD).write_text(json.dumps(record))
    assert assembly_cache.cached("k", tmp_path / "third", tmp_path) is None
    (entries / "k" / assembly_cache.RECORD).unlink()
    assert assembly_cache.cached("k", tmp_path / "fourth", tmp_path) is None
    # A copy that fails midway leaves the output folder empty (CDK would keep a half-copied
    # asset folder): here the entry's assembly is a file where a folder should be.
    (entries / "k" / assembly_cache.RECORD).write_text(json.dumps(
        {"storage": {}, "workflow": {}, "messages": []}))
    shutil.rmtree(entries / "k" / "assembly")
    (entries / "k" / "assembly").write_text("not a folder")
    fifth = tmp_path / "fifth"
    fifth.mkdir()
    (fifth / "left").write_text("")
    assert assembly_cache.cached("k", fifth, tmp_path) is None
    assert fifth.is_dir() and not any(fifth.iterdir())


def test_pruning_keeps_the_most_recently_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Beyond KEPT_ENTRIES the least recently used entries go, and a dead writer's partial
    entry once it is old; a young partial entry (a writer at work) stays."""
    monkeypatch.setattr(assembly_cache, "KEPT_ENTRIES", 2)
    entries = tmp_path / "entries"
    for age, name in ((30, "old"), (20, "middle"), (10, "new"), (7200, ".dead.partial"), (5, ".young.partial")):
        (entries / name).mkdir(parents=True)
        os.utime(entries / name, (time.time() - age, time.time() - age))
    assembly_cache._prune(entries)
    assert sorted(path.name for path in entries.iterdir()) == [".young.partial", "middle", "new"]


def test_switched_off_it_synthesizes_every_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                code: Path, settings: Settings) -> None:
    """Off: every call synthesizes and nothing is kept. On: the second call of the same inputs
    reads what the first kept, messages and files."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv(assembly_cache.CACHE_SETTING, "off")
    made: list[Path] = []
    message = ("warning", "/Workflow/Role", "AwsSolutions-IAM5: a wildcard")

    def synthesize_now() -> Synthesized:
        outdir = tmp_path / f"out{len(made)}"
        outdir.mkdir()
        (outdir / "Workflow.template.json").write_text(f"{len(made)}")
        made.append(outdir)
        return Synthesized(outdir=outdir, storage={}, workflow={}, messages=[message])

    for _ in range(2):
        assembly_cache.synthesized_through_cache({}, settings, tmp_path / "o", code, synthesize_now)
    assert len(made) == 2
    assert not (tmp_path / "cache").exists()
    monkeypatch.delenv(assembly_cache.CACHE_SETTING)
    first = assembly_cache.synthesized_through_cache({}, settings, tmp_path / "o2", code, synthesize_now)
    second = assembly_cache.synthesized_through_cache({}, settings, tmp_path / "o3", code, synthesize_now)
    assert len(made) == 3 and first.outdir == made[-1] and second.outdir == tmp_path / "o3"
    assert second.messages == [message]
    assert (tmp_path / "o3" / "Workflow.template.json").read_text() == "2"
