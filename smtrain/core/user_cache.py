"""smtrain's folder in the user's cache: ``$XDG_CACHE_HOME/smtrain``, else ``~/.cache/smtrain``
(the XDG Base Directory convention). The program environments (``envs``), the input rules'
answers (``rule-answers``), the sample data's split (``sample-data``) and moto's parse trees of
the state machine (``asl-trees``) are kept under it, each with its own override where it has one."""

from __future__ import annotations

import os
from pathlib import Path


def cache_folder(name: str) -> Path:
    """``<cache>/smtrain/<name>``. Raises RuntimeError (or KeyError) where there is no home
    folder to find ``~`` in and ``XDG_CACHE_HOME`` is not set, as ``Path.home`` does."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "smtrain" / name
