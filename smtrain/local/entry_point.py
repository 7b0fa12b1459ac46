"""How an offline run starts a BYOC image's entry point: as the container would, by its ``#!`` line.

SageMaker runs a training image as ``docker run <image> train`` (developer guide, "How Amazon
SageMaker Runs Your Training Image"): ``train`` is executed, so the kernel runs the interpreter its
``#!`` line names. Offline there is no image, so:

- a Python entry point (``#!/usr/bin/env python3``, ``#!/usr/local/bin/python3.12``, ...) runs
  on the program's offline environment's Python, which has the program's requirements installed
  (what the image's ``pip install`` would have given it);
- any other interpreter (``Rscript``, ``bash``, ``perl``, ...) runs as the line says, found on
  this machine's ``PATH`` (for ``/usr/bin/env NAME``) or at its path; where this machine lacks it,
  :class:`EntryPointError` says which interpreter and which line, instead of a Python
  ``SyntaxError``;
- a native executable (ELF) runs as it is;
- a file with no ``#!`` line runs on Python, as offline runs always did (in a container it would
  fail to start: ``exec format error``), and :func:`command_for` says so in its note.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

_PYTHON = re.compile(r"^python(\d+(\.\d+)?)?$")


class EntryPointError(Exception):
    """The entry point cannot start here; the message names the interpreter and its line."""


@dataclass(frozen=True)
class EntryCommand:
    """The command that runs the entry point, and a note for the job's log (None: nothing to
    say)."""

    argv: list[str]
    note: str | None = None


def command_for(entry_point: Path, python: Path) -> EntryCommand:
    """How to run ``entry_point`` as its container would (see the module)."""
    with entry_point.open("rb") as handle:
        head = handle.read(256)
    if head.startswith(b"\x7fELF"):
        return EntryCommand([str(entry_point)])
    if not head.startswith(b"#!"):
        return EntryCommand([str(python), str(entry_point)],
                            note=f"{entry_point.name} has no #! line; run with Python (a container "
                                 "would refuse to start it: exec format error)")
    line = head[2:].split(b"\n", 1)[0].decode(errors="replace").strip()
    try:
        words = line.split() if line.count('"') % 2 or line.count("'") % 2 else shlex.split(line)
    except ValueError:
        words = line.split()
    if not words:
        raise EntryPointError(f"{entry_point.name}: its #! line names no interpreter")
    interpreter, arguments = words[0], words[1:]
    if Path(interpreter).name == "env":  # /usr/bin/env [-S] NAME [ARG...]
        arguments = [word for word in arguments if word not in ("-S", "--split-string")]
        if not arguments:
            raise EntryPointError(f"{entry_point.name}: `#!{line}` names no program for env")
        interpreter, arguments = arguments[0], arguments[1:]
    if _PYTHON.match(Path(interpreter).name):
        return EntryCommand([str(python), *arguments, str(entry_point)])
    # At the path the line gives, else by its name on PATH (an image's /usr/local/bin/Rscript
    # may be /usr/bin/Rscript here).
    found = (interpreter if os.path.isabs(interpreter) and os.access(interpreter, os.X_OK)
             else shutil.which(Path(interpreter).name))
    if found is None:
        raise EntryPointError(
            f"{entry_point.name} starts with `#!{line}`, and `{Path(interpreter).name}` is not "
            "installed on this machine: offline runs use this machine's programs (no Docker). "
            f"Install {Path(interpreter).name} here to run it offline; its image is built with "
            "its own Dockerfile on deploy")
    return EntryCommand([found, *arguments, str(entry_point)])
