"""A job's MLflow run, recorded by the job and logged by the engine when the job ends.

Offline, the local backend gives every job ``SMTRAIN_TRACKING_RECORD`` (:data:`RECORD_VARIABLE`),
a file in the job's directory. The training programs' tracker (``training_code/common/
tracking.py``) then appends its run to that file, one JSON object a line, instead of importing
MLflow in the job's process (seconds, for a job that may train for one), and the backend, which
has MLflow loaded already, logs the run to the engine's store when the job ends:

- ``start``: ``version``, ``time`` (ms), ``experiment``, ``run_name``, ``tags`` (the tracker's
  and MLflow's own ``mlflow.user``/``mlflow.source.*``), ``params``;
- ``metrics``: ``time``, ``step``, ``metrics`` (name -> value), one per ``log_metrics`` call;
- ``artifacts``: ``time``, ``path`` (a directory), ``artifact_path``: its files, logged as they
  are when the job has ended;
- ``end``: ``time``, ``status`` (``FINISHED`` or ``FAILED``).

A record without ``end`` (the job was killed, or its tracking stopped) is ended with the status
the backend saw. On AWS there is no such variable: the program logs to MLflow itself, live.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smtrain.core import contract

#: The variable the tracker reads (``training_code/common/tracking.py``: ``RECORD_VARIABLE``).
RECORD_VARIABLE = contract.ENV_TRACKING_RECORD
#: The record format this module reads (the tracker's ``RECORD_VERSION``).
RECORD_VERSION = 1
#: The record's file name in the job's directory.
RECORD_FILE = "tracking.jsonl"
#: MLflow's limits per ``log_batch`` call.
_PARAMS_PER_BATCH = 100
_METRICS_PER_BATCH = 1000


class RunRecordError(ValueError):
    """The record cannot be logged as it is (unknown version, malformed start)."""


@dataclass
class RunRecord:
    experiment: str
    run_name: str | None
    start_time: int
    tags: dict[str, str]
    params: dict[str, str]
    #: ``(name, value, time, step)`` in the order logged.
    metrics: list[tuple[str, float, int, int]] = field(default_factory=list)
    #: ``(directory, artifact path)``.
    artifacts: list[tuple[str, str]] = field(default_factory=list)
    status: str | None = None
    end_time: int | None = None


def read_run_record(path: Path) -> RunRecord | None:
    """The run in ``path``; None when there is no file or no ``start`` line (the program did not
    track). A line cut short (the job was killed while writing it) ends the record."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    record: RunRecord | None = None
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            break
        if not isinstance(entry, dict):
            raise RunRecordError(f"{path.name}: not a JSON object: {line[:80]}")
        event = entry.get("event")
        if event == "start":
            if entry.get("version") != RECORD_VERSION:
                raise RunRecordError(f"{path.name}: record version {entry.get('version')!r}, "
                                     f"this engine reads {RECORD_VERSION}")
            record = RunRecord(experiment=str(entry["experiment"]), run_name=entry.get("run_name"),
                               start_time=int(entry["time"]),
                               tags={str(k): str(v) for k, v in entry.get("tags", {}).items()},
                               params={str(k): str(v) for k, v in entry.get("params", {}).items()})
        elif record is None:
            raise RunRecordError(f"{path.name}: {event!r} before the run's start")
        elif event == "metrics":
            record.metrics += [(str(name), float(value), int(entry["time"]), int(entry["step"]))
                               for name, value in entry["metrics"].items()]
        elif event == "artifacts":
            record.artifacts.append((str(entry["path"]), str(entry["artifact_path"])))
        elif event == "end":
            record.status, record.end_time = str(entry["status"]), int(entry["time"])
    return record


def log_run_record(client: Any, record: RunRecord, *, status: str, end_time: int) -> str:
    """Log ``record`` through ``client`` (an ``MlflowClient``) as the program would have: in its
    experiment (created if missing), named and tagged as recorded, its parameters, every metric
    at its step and time, the artifact directories' files; ended with the recorded status, else
    ``status`` at ``end_time``. The run's id."""
    from mlflow.entities import Metric, Param

    found = client.get_experiment_by_name(record.experiment)
    experiment_id = found.experiment_id if found is not None else client.create_experiment(record.experiment)
    run = client.create_run(experiment_id, start_time=record.start_time, tags=record.tags,
                            run_name=record.run_name)
    run_id = str(run.info.run_id)
    params = [Param(key, value) for key, value in record.params.items()]
    for start in range(0, len(params), _PARAMS_PER_BATCH):
        client.log_batch(run_id, params=params[start:start + _PARAMS_PER_BATCH])
    metrics = [Metric(name, value, timestamp, step) for name, value, timestamp, step in record.metrics]
    for start in range(0, len(metrics), _METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=metrics[start:start + _METRICS_PER_BATCH])
    for directory, artifact_path in record.artifacts:
        client.log_artifacts(run_id, directory, artifact_path=artifact_path)
    client.set_terminated(run_id, status=record.status or status,
                          end_time=record.end_time if record.status else end_time)
    return run_id
