"""Synthesized cloud assemblies kept between test runs, each under a key of everything its
synth reads, so that a warm ``make test`` synthesizes only what changed.

A session synthesized about 34 configurations in-process (the shipped app, each network and
queue mode, the brought programs, the builtin catalogue...): about 17 s of each xdist worker's
time, most of it Node's (``build_app`` and ``App.synth``). With nothing changed, a synth gives
the same templates, messages and files; so each successful :func:`synthesize_now` run through
:func:`synthesized_through_cache` (what :func:`tests.conftest.synthesize` does) is kept under
``<cache>/smtrain/test-assemblies/<key>/`` (``smtrain.core.user_cache``) and copied from there
while its key holds.

The key (:func:`assembly_key`) is a SHA-256 over:

- every file of ``infra/`` and ``smtrain/core/`` (what a synth imports: ``infra`` imports no
  other part of ``smtrain``, tests/test_structure.py), ``smtrain/__init__.py``, and this module
  and ``tests/helpers.py`` (how a synth is run and recorded), with :data:`FORMAT`;
- every file of the training code folder it reads: relative path, bytes and executable bit
  (the source archive's file modes), bytecode too (a BYOC program's image asset is the whole
  folder), and the folder's name (CDK names the staged folder after its suffix:
  ``asset.<hash>.out-training-code`` for ``cdk.out-training-code``; the rest of its path is not
  in an assembly, whose assets are staged under the output folder);
- the CDK context and the settings (a frozen dataclass of plain values, by its ``repr``);
- every installed distribution's name and version (the CDK, cdk-nag, jsii, Node's wheel, the
  SageMaker SDK's image tables, jsonata...), Python's version, the ``CDK_``, ``JSII_`` and
  ``SMTRAIN_`` environment variables (``JSII_NODE`` by the file it resolves to);
- the wheels a vendored bundle packs (``smtrain.core.vendored_requirements``' download cache:
  each complete entry's wheel names and sizes).

Not in it, so not to be used through the cache: a synth whose inputs a test patches in memory
(``synthesize(..., fresh=True)``, as tests/test_run_cost.py's patched price table is). A test
that changes none of these reads the cached copy; one that changes any synthesizes again.
``SMTRAIN_TEST_SYNTH_CACHE=off`` synthesizes every time (``.ci/run`` sets it: CI checks fresh
synths), and tests/test_assembly_cache.py checks each run that the default configuration's kept
assembly is the one a fresh synth writes.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smtrain.core.user_cache import cache_folder
from smtrain.core.vendored_requirements import default_wheel_cache
from tests.helpers import Synthesized

if TYPE_CHECKING:
    from infra.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
#: The entries' layout; a change to it (or to this module) makes new keys.
FORMAT = 1
#: Set to ``off`` to synthesize every time.
CACHE_SETTING = "SMTRAIN_TEST_SYNTH_CACHE"
#: What a synth imports from this repository, and how the tests run and record it.
SOURCE_FOLDERS = ("infra", "smtrain/core")
SOURCE_FILES = ("smtrain/__init__.py", "tests/assembly_cache.py", "tests/helpers.py")
#: Environment variables a synth may read.
ENVIRONMENT_PREFIXES = ("CDK_", "JSII_", "SMTRAIN_")
#: Entries kept; the least recently used go first.
KEPT_ENTRIES = 150
#: A partial entry older than this (its writer died) is removed.
STALE_PARTIAL_SECONDS = 3600
#: The templates and messages of an entry, beside its ``assembly`` folder.
RECORD = "record.json"


def enabled() -> bool:
    """Whether synths go through the cache (``SMTRAIN_TEST_SYNTH_CACHE`` is not ``off``)."""
    return os.environ.get(CACHE_SETTING, "").lower() not in {"off", "0", "false", "no"}


def _files(folder: Path, *, bytecode: bool) -> Iterable[Path]:
    for path in sorted(folder.rglob("*")):
        if path.is_file() and (bytecode or ("__pycache__" not in path.parts and path.suffix != ".pyc")):
            yield path


def _digest_folder(digest: Any, folder: Path, *, bytecode: bool = True) -> None:
    for path in _files(folder, bytecode=bytecode):
        executable = b"x" if path.stat().st_mode & 0o111 else b"-"
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0" + executable)
        digest.update(hashlib.sha256(path.read_bytes()).digest())


@lru_cache(maxsize=1)
def _sources_digest() -> bytes:
    digest = hashlib.sha256(f"format {FORMAT}\0".encode())
    for name in SOURCE_FOLDERS:
        digest.update(f"folder {name}\0".encode())
        _digest_folder(digest, ROOT / name, bytecode=False)
    for name in SOURCE_FILES:
        digest.update(f"file {name}\0".encode() + (ROOT / name).read_bytes())
    return digest.digest()


@lru_cache(maxsize=1)
def _installed_digest() -> bytes:
    distributions = sorted({(dist.metadata["Name"] or "", dist.version)
                            for dist in importlib.metadata.distributions()})
    return hashlib.sha256(json.dumps({"python": sys.version, "distributions": distributions}).encode()).digest()


def _wheels_listing() -> list[tuple[str, int]]:
    wheels = default_wheel_cache()
    return sorted((path.relative_to(wheels).as_posix(), path.stat().st_size)
                  for path in wheels.glob("*/*.whl") if (path.parent / ".complete").exists())


def assembly_key(context: Mapping[str, Any], settings: Settings, training_code: Path) -> str:
    """The key of a synth of ``context`` and ``settings`` over the programs in ``training_code``."""
    digest = hashlib.sha256(_sources_digest() + _installed_digest())
    variables = {name: value for name, value in os.environ.items()
                 if name.startswith(ENVIRONMENT_PREFIXES) and name != CACHE_SETTING}
    if "JSII_NODE" in variables:  # the same Node through another checkout's linked environment
        variables["JSII_NODE"] = os.path.realpath(variables["JSII_NODE"])
    digest.update(json.dumps({"context": context, "settings": repr(settings), "environment": variables,
                              "programs folder": training_code.name, "wheels": _wheels_listing()},
                             sort_keys=True, default=str).encode())
    _digest_folder(digest, training_code)
    return digest.hexdigest()


def synthesize_now(context: Mapping[str, Any], settings: Settings, outdir: Path, code: Path) -> Synthesized:
    """The app of ``context`` and ``settings`` over the programs in ``code``, synthesized into
    ``outdir`` (cdk-nag's packs on), with its two templates and every stack's messages."""
    import aws_cdk as cdk

    from infra.app_builder import build_app

    app = cdk.App(context=dict(context), outdir=str(outdir))
    built = build_app(settings, app=app, training_code_dir=code)
    assembly = app.synth()
    return Synthesized(
        outdir=outdir,
        storage=assembly.get_stack_by_name(built.storage.stack_name).template,
        workflow=assembly.get_stack_by_name(built.workflow.stack_name).template,
        messages=[(str(m.level), m.id, str(m.entry.data)) for stack in assembly.stacks
                  for m in stack.messages],
        training_code=code,
    )


def cached(key: str, outdir: Path, training_code: Path) -> Synthesized | None:
    """Entry ``key``'s assembly copied to ``outdir``, or None where there is no whole entry. A copy
    cut short (the entry pruned meanwhile, a full disk) leaves ``outdir`` empty: CDK would keep
    a half-copied ``asset.<hash>`` folder as it is."""
    entry = cache_folder("test-assemblies") / key
    try:
        record = json.loads((entry / RECORD).read_text())
        found = Synthesized(outdir=outdir, storage=record["storage"], workflow=record["workflow"],
                            messages=[tuple(message) for message in record["messages"]],
                            training_code=training_code)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        shutil.copytree(entry / "assembly", outdir, dirs_exist_ok=True)
    except OSError:
        shutil.rmtree(outdir, ignore_errors=True)
        outdir.mkdir(parents=True, exist_ok=True)
        return None
    with contextlib.suppress(OSError):
        os.utime(entry)  # recently used: kept longer
    return found


def keep(key: str, synthesized: Synthesized) -> None:
    """Store ``synthesized`` (its output folder and its record) as entry ``key``: written beside
    the entry and renamed into place, so that a reader sees a whole entry or none. Where the
    entry exists already (another worker stored the same synth first), that one stays."""
    entries = cache_folder("test-assemblies")
    entries.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(dir=entries, prefix=f".{key}."))
    try:
        shutil.copytree(synthesized.outdir, partial / "assembly")
        (partial / RECORD).write_text(json.dumps({"storage": synthesized.storage,
                                                  "workflow": synthesized.workflow,
                                                  "messages": synthesized.messages}))
        with contextlib.suppress(OSError):  # ENOTEMPTY: the entry is there already
            partial.rename(entries / key)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    _prune(entries)


def _prune(entries: Path) -> None:
    """Keep the :data:`KEPT_ENTRIES` most recently used entries; remove partial entries older
    than :data:`STALE_PARTIAL_SECONDS` (their writer died)."""
    now = time.time()
    found = []
    for path in entries.iterdir():
        with contextlib.suppress(OSError):  # another worker's prune got there first
            found.append((path.stat().st_mtime, path))
    whole = sorted(((mtime, path) for mtime, path in found if not path.name.startswith(".")), reverse=True)
    stale = [path for _, path in whole[KEPT_ENTRIES:]]
    stale += [path for mtime, path in found if path.name.startswith(".") and now - mtime > STALE_PARTIAL_SECONDS]
    for path in stale:
        # Out of readers' sight first (one rename), so that none copies a half-removed entry.
        gone = path if path.name.startswith(".") else path.with_name(f".{path.name}.removed.{os.getpid()}")
        with contextlib.suppress(OSError):
            path.rename(gone)
            shutil.rmtree(gone, ignore_errors=True)


def synthesized_through_cache(context: Mapping[str, Any], settings: Settings, outdir: Path,
                              training_code: Path, synthesize: Callable[[], Synthesized]) -> Synthesized:
    """The kept assembly of this synth (``synthesize()``, into ``outdir``), else what
    ``synthesize()`` returns, kept for the next run. A cache that cannot be read or written
    costs only the synth."""
    if not enabled():
        return synthesize()
    unusable = (OSError, RuntimeError, KeyError, UnicodeError)  # no home folder, an unreadable file
    try:
        found = cached(assembly_key(context, settings, training_code), outdir, training_code)
    except unusable:
        return synthesize()
    if found is not None:
        return found
    built = synthesize()
    # Keyed as the next run will find it: a synth that downloads wheels changes the listing.
    with contextlib.suppress(*unusable):
        keep(assembly_key(context, settings, training_code), built)
    return built
