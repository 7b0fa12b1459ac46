"""smtrain's folder in the user's cache: ``$XDG_CACHE_HOME/smtrain``, else ``~/.cache/smtrain``
(the XDG Base Directory convention). The program environments (``envs``), the input rules'
answers (``rule-answers``), the sample data's split (``sample-data``) and moto's parse trees of
the state machine (``asl-trees``) are kept under it, each with its own override where it has one."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def cache_folder(name: str) -> Path:
    """``<cache>/smtrain/<name>``. Raises RuntimeError (or KeyError) where there is no home
    folder to find ``~`` in and ``XDG_CACHE_HOME`` is not set, as ``Path.home`` does."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "smtrain" / name


def write_whole(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """``path`` as ``write`` writes it, whole or not at all, whatever else writes it meanwhile: a
    partial file of its own beside it (``mkstemp``: a new name, readable by this user only),
    renamed over ``path``. The partial file never stays; an error (OSError where the folder
    cannot be written, or whatever ``write`` raises) is raised to the caller."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    try:
        with os.fdopen(handle, "wb") as out:
            write(out)
        os.replace(partial, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)
