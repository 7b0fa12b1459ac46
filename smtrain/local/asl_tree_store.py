"""moto's parse tree of a state machine definition, kept on disk between processes.

:mod:`smtrain.local.asl_parse_cache` parses each definition once per process, but every
``smtrain start --local``, the demo and the notebook is a new process, and moto's ANTLR parser
takes about 0.5 s for the project's definition (about 100 KB of JSON, 14,000 parse-tree nodes)
in a new process. Reading the same tree back from a file takes about 0.15 s.

A tree is kept under ``<cache>/smtrain/asl-trees`` (:func:`smtrain.core.user_cache.cache_folder`)
by the SHA-256 of the definition's text and of what the tree's shape depends on: this format,
moto's and ANTLR's runtime versions and Python's. It is written with :mod:`pickle`, without the
parser and lexer objects it refers to (they are stood in for by ``None``: nothing reads them
after parsing), with each token's text read out first, since a token otherwise reads its text
from the lexer's input. A file is written whole (a partial file of its own, then renamed over);
one that cannot be read back is deleted and the definition parsed as before; any error keeping
one leaves the definition parsed and nothing kept. At most :data:`KEPT` trees are kept, those
written longest ago deleted first.

The files are this user's own, written by this code, in the user's cache folder, as Python's
own bytecode caches of the project are (files only this user can write: ``mkstemp`` makes them
readable and writable by their owner alone). Reading one makes only objects of ANTLR's runtime
and of moto's generated parser (:data:`_TREE_MODULES`); a file that names any other class is
refused, deleted and the definition parsed.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.metadata
import pickle
import sys
import time
from pathlib import Path
from typing import Any

from antlr4 import InputStream, Lexer, Parser
from antlr4.tree.Tree import TerminalNode

from smtrain.core.user_cache import cache_folder, write_whole

#: The format of a kept tree; a change here keeps trees under new names.
FORMAT = "asl-tree-v1"
#: Trees kept at most (a few definitions per deployment and configuration).
KEPT = 64
_STANDS_IN = "none"


def folder() -> Path:
    """Where the trees are kept."""
    return cache_folder("asl-trees")


@functools.cache
def _versions() -> str:
    return "\n".join((importlib.metadata.version("moto"),
                      importlib.metadata.version("antlr4-python3-runtime"), sys.version))


def _key(definition: str) -> str:
    return hashlib.sha256(f"{FORMAT}\n{_versions()}\n{definition}".encode()).hexdigest()


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj: Any) -> str | None:
        # The parser, the lexer and its input: only parsing reads them.
        return _STANDS_IN if isinstance(obj, (Parser, Lexer, InputStream)) else None


#: The modules whose classes a tree is made of (ANTLR's runtime and moto's generated parser):
#: a file naming any other class is not read (it is not one this module wrote).
_TREE_MODULES = ("antlr4.", "moto.stepfunctions.parser.asl.antlr.runtime.")


class _Unpickler(pickle.Unpickler):
    def persistent_load(self, pid: Any) -> None:
        if pid != _STANDS_IN:
            raise pickle.UnpicklingError(f"unknown persistent id {pid!r}")
        return None

    def find_class(self, module: str, name: str) -> Any:
        if not module.startswith(_TREE_MODULES):
            raise pickle.UnpicklingError(f"{module}.{name} is not part of a parse tree")
        return super().find_class(module, name)


def load(definition: str) -> Any | None:
    """The tree kept for ``definition``, or None (none kept, or one that does not read back,
    which is deleted)."""
    try:
        path = folder() / f"{_key(definition)}.tree"
        with path.open("rb") as handle:
            tree = _Unpickler(handle).load()
    except FileNotFoundError:
        return None
    except Exception:  # damaged, truncated, or of another version: parse again
        with contextlib.suppress(Exception):
            path.unlink()
        return None
    return tree


def keep(definition: str, tree: Any) -> None:
    """Keep ``tree``, the parse of ``definition``, for the next process (never raises)."""
    with contextlib.suppress(Exception):
        _read_token_texts(tree)
        path = folder() / f"{_key(definition)}.tree"
        write_whole(path, lambda handle: _Pickler(handle, protocol=pickle.HIGHEST_PROTOCOL).dump(tree))
        _prune(path.parent)


def _read_token_texts(tree: Any) -> None:
    """Set each token's text, which a token otherwise reads from the lexer's input on demand
    (ANTLR's ``CommonToken.text``); the same text either way."""
    pending = [tree]
    while pending:
        node = pending.pop()
        if isinstance(node, TerminalNode):
            node.symbol.text = node.symbol.text
            continue
        for token in (node.start, node.stop):
            if token is not None:
                token.text = token.text
        pending.extend(node.children or ())


def _prune(directory: Path) -> None:
    """The :data:`KEPT` trees written last stay; so do partial files younger than an hour (a
    process writing one), older ones were left by a process that was killed."""
    trees = sorted(directory.glob("*.tree"), key=lambda path: path.stat().st_mtime, reverse=True)
    for old in trees[KEPT:]:
        with contextlib.suppress(FileNotFoundError):
            old.unlink()
    for partial in directory.glob(".*.partial"):
        with contextlib.suppress(FileNotFoundError):
            if time.time() - partial.stat().st_mtime > 3600:
                partial.unlink()
