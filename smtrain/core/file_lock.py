"""An exclusive lock on a file, held for a ``with`` block: how concurrent processes (xdist
workers, two ``smtrain`` commands) build one cache entry once.

``fcntl.flock`` on ``lock_path`` (created, with its folder, when missing); released when the block
ends, and by the operating system if the process dies holding it. POSIX only, as the project is.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def locked(lock_path: Path) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
