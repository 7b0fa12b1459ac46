"""The offline engine's record of each execution, so that it can be inspected after its process.

On AWS, Step Functions keeps every execution: ``DescribeExecution`` (status, input, output,
error, cause, start and stop dates) and ``GetExecutionHistory``. Offline the executions live in
moto, in the process that ran them, and are gone when it ends; so the engine writes each one to
``<work_dir>/executions/<name>.json`` (:data:`RECORDS_DIR`): when it starts (status ``RUNNING``,
with the id of the process running it) and again when it ends (the description and the whole
history). ``smtrain watch|status|list|logs --local`` read these files.

Each file is replaced whole (written beside it, then renamed), so a reader never sees half of
one. A ``RUNNING`` record whose process is gone is an execution that will never end: readers
show it as :data:`ORPHANED` instead (:func:`effective_status`).
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

#: The records' folder under the engine's work dir.
RECORDS_DIR = "executions"
RECORD_VERSION = 1
#: How a ``RUNNING`` record whose process has ended reads (an execution stopped from outside
#: reads ``ABORTED`` on AWS too).
ORPHANED = "ABORTED"


def record_path(work_dir: Path, name: str) -> Path:
    return work_dir / RECORDS_DIR / f"{name}.json"


def _text(value: Any) -> Any:
    return value.isoformat() if isinstance(value, dt.datetime) else str(value)


def write(work_dir: Path, description: dict[str, Any], *, events: list[dict[str, Any]] | None = None,
          pid: int | None = None) -> Path:
    """Record ``description`` (as ``DescribeExecution`` answers it) and the history ``events``."""
    record = {"version": RECORD_VERSION, **description, "events": events or [],
              "pid": pid if pid is not None else os.getpid()}
    record.pop("ResponseMetadata", None)
    path = record_path(work_dir, str(description["name"]))
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_text(json.dumps(record, indent=1, default=_text))
    partial.replace(path)
    return path


def read(work_dir: Path, name: str) -> dict[str, Any] | None:
    """The record of execution ``name`` (dates as :class:`datetime.datetime`), or None."""
    try:
        record = json.loads(record_path(work_dir, name).read_text())
    except (OSError, ValueError):
        return None
    return _dated(record) if isinstance(record, dict) and "status" in record else None


def every(work_dir: Path) -> list[dict[str, Any]]:
    """Every recorded execution, the most recently started first."""
    folder = work_dir / RECORDS_DIR
    records = [read(work_dir, path.stem) for path in folder.glob("*.json")] if folder.is_dir() else []
    found = [record for record in records if record is not None]
    return sorted(found, key=lambda r: r["startDate"], reverse=True)


def _dated(record: dict[str, Any]) -> dict[str, Any]:
    for key in ("startDate", "stopDate"):
        if isinstance(record.get(key), str):
            record[key] = dt.datetime.fromisoformat(record[key])
    return record


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


def orphaned(record: dict[str, Any]) -> bool:
    """Whether ``record`` says ``RUNNING`` but the process that ran it has ended (interrupted,
    killed): the execution will never end."""
    return record.get("status") == "RUNNING" and not _alive(record.get("pid"))


def effective_status(record: dict[str, Any]) -> str:
    """The record's status, or :data:`ORPHANED` for a ``RUNNING`` one whose process has ended."""
    return ORPHANED if orphaned(record) else str(record["status"])
