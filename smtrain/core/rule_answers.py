"""The input rules' answers that depend on nothing but what they were given, kept between
processes: a synth checks every program's default tuning against the rules
(:func:`smtrain.core.programs.load`), about 70 ms of JSONata a program plus 0.2 s to parse the
rules, in every ``cdk synth``, although the answer changes only when the rules, the program's
manifest or the JSONata library do.

An answer is kept under the SHA-256 of everything it depends on (the caller's ``material``: the
rules' text, the program's catalog entry, the input checked, the JSONata library's version), one
small JSON file each, in ``$SMTRAIN_RULE_CACHE``, else ``$XDG_CACHE_HOME/smtrain/rule-answers``,
else ``~/.cache/smtrain/rule-answers``. A changed input makes a new key, never a stale answer. A
file that cannot be read, or holds something else, is not an answer: the rules are evaluated, as
they are where the folder cannot be written. Deleting the folder only costs time.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from smtrain.core.user_cache import cache_folder, write_whole

#: Part of every key: a change to what an answer file holds changes every key.
_FORMAT = 1


def cache_dir() -> Path:
    """Where answers are kept (see the module's docstring)."""
    explicit = os.environ.get("SMTRAIN_RULE_CACHE")
    if explicit:
        return Path(explicit)
    return cache_folder("rule-answers")


def answer_path(material: Any) -> Path:
    """The file that keeps the answer for ``material`` (JSON data)."""
    text = json.dumps([_FORMAT, material], sort_keys=True, separators=(",", ":"))
    return cache_dir() / f"{hashlib.sha256(text.encode()).hexdigest()}.json"


def kept_answer(material: Any, compute: Callable[[], str | None], *,
                keep: Callable[[str | None], bool] = lambda answer: True) -> str | None:
    """The answer for ``material``: the kept one, else ``compute()``'s, which is then kept where
    ``keep`` says so. An answer is a refusal's cause, or None for no refusal."""
    try:
        path = answer_path(material)
    except (RuntimeError, OSError):  # no home folder to keep answers in (HOME unset, no user)
        return compute()
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError):
        stored = None
    if isinstance(stored, dict) and "cause" in stored and (stored["cause"] is None or isinstance(stored["cause"], str)):
        cause: str | None = stored["cause"]
        return cause
    cause = compute()
    if keep(cause):
        _write(path, cause)
    return cause


def _write(path: Path, cause: str | None) -> None:
    """Keep ``cause`` in ``path``, whole or not at all, whatever runs beside; a folder that cannot
    be written keeps nothing (the rules are evaluated again next time)."""
    with contextlib.suppress(OSError):
        write_whole(path, lambda out: out.write(json.dumps({"cause": cause}).encode()))
