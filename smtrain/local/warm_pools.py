"""SageMaker managed warm pools, offline: which job's instances a new training job starts on, and
the ``WarmPoolStatus`` that ``DescribeTrainingJob`` gives.

What AWS documents (developer guide, "SageMaker AI Managed Warm Pools", and the API reference's
``WarmPoolStatus``), as this module follows it:

- A job whose ``ResourceConfig.KeepAlivePeriodInSeconds`` is above 0 keeps its instances for that
  long after it completes. Its status is ``InUse`` while it runs, ``Available`` while its pool
  waits, ``Reused`` once a matching job took it (``ReusedByJob`` names that job), ``Terminated``
  when the period ran out.
- "The next training job is a match if the following values are identical: RoleArn;
  ResourceConfig values: InstanceCount, InstanceType, VolumeKmsKeyId, VolumeSizeInGB; VpcConfig
  values: SecurityGroupIds, Subnets; EnableInterContainerTrafficEncryption;
  EnableNetworkIsolation", and "each subsequent training job must also specify a
  KeepAlivePeriodInSeconds value" (:func:`match_key`).
- ``ResourceRetainedBillableTimeInSeconds``: "the billable time in seconds used by the warm pool",
  wall-clock time (x ``InstanceCount`` for the instance-seconds billed).

What it does not know, and how it chooses: whether a job that failed or was stopped keeps a pool
(here it does not: its status becomes ``Terminated`` with no retained time); the account's warm
pool quota, which is 0 by default ("then a warm pool is not retained after the completion of the
training job": request an increase first); the 28-day cap on a pool that keeps matching jobs.
Pools are recorded under the engine's work directory (``warm-pools.json``, changed under a file
lock), so the next ``smtrain start --local`` with the same work directory starts on a pool the
last one left, and no two take the same pool; the ``WarmPoolStatus`` of a job is known to the
engine that ran it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smtrain.core import contract
from smtrain.core.file_lock import locked

#: How long an ended pool stays in the record: the longest keep-alive.
RECORD_SECONDS = contract.MAX_KEEP_ALIVE_SECONDS
#: ``WarmPoolResourceStatus`` (botocore's sagemaker model).
IN_USE, AVAILABLE, REUSED, TERMINATED = "InUse", "Available", "Reused", "Terminated"


def keep_alive_seconds(request: dict[str, Any]) -> int:
    """The request's ``ResourceConfig.KeepAlivePeriodInSeconds`` (0 where absent)."""
    return int(request.get("ResourceConfig", {}).get("KeepAlivePeriodInSeconds", 0))


def match_key(request: dict[str, Any]) -> str:
    """The values a job must share with a pool's job to start on it (AWS's matching criteria)."""
    resources = request.get("ResourceConfig", {})
    vpc = request.get("VpcConfig", {})
    return json.dumps({
        "RoleArn": request.get("RoleArn"),
        **{key: resources.get(key) for key in ("InstanceCount", "InstanceType", "VolumeKmsKeyId",
                                               "VolumeSizeInGB")},
        "SecurityGroupIds": sorted(vpc.get("SecurityGroupIds", [])),
        "Subnets": sorted(vpc.get("Subnets", [])),
        "EnableInterContainerTrafficEncryption": bool(request.get("EnableInterContainerTrafficEncryption")),
        "EnableNetworkIsolation": bool(request.get("EnableNetworkIsolation")),
    }, sort_keys=True)


@dataclass
class WarmPool:
    """One job's warm pool."""

    job: str
    key: str
    keep_alive: int
    #: The job this pool's instances came from (another job's pool), or None: provisioned.
    started_on: str | None = None
    #: ``time.time()`` when the job ended; None while it runs.
    ended_at: float | None = None
    kept: bool = False
    reused_by: str | None = None
    reused_at: float | None = None

    def waiting(self, now: float) -> bool:
        return (self.kept and self.reused_by is None and self.ended_at is not None
                and now - self.ended_at <= self.keep_alive)

    def status(self, now: float | None = None) -> dict[str, Any]:
        """``WarmPoolStatus`` as ``DescribeTrainingJob`` answers it."""
        now = time.time() if now is None else now
        if self.ended_at is None:
            return {"Status": IN_USE}
        if not self.kept:
            return {"Status": TERMINATED, "ResourceRetainedBillableTimeInSeconds": 0}
        if self.reused_by is not None and self.reused_at is not None:
            return {"Status": REUSED, "ReusedByJob": self.reused_by,
                    "ResourceRetainedBillableTimeInSeconds": round(self.reused_at - self.ended_at)}
        retained = now - self.ended_at
        if retained > self.keep_alive:
            return {"Status": TERMINATED, "ResourceRetainedBillableTimeInSeconds": self.keep_alive}
        return {"Status": AVAILABLE, "ResourceRetainedBillableTimeInSeconds": round(retained)}


class WarmPools:
    """The pools of one backend's jobs (thread-safe), shared through ``record`` with the other
    engines on the same work directory (one process per ``smtrain start --local``): every change
    reads the record, merges it and writes it back under a file lock, so a pool is taken once."""

    def __init__(self, record: Path | None = None) -> None:
        self._pools: dict[str, WarmPool] = {}
        self._lock = threading.Lock()
        self._record = record

    def _changing(self) -> contextlib.AbstractContextManager[None]:
        if self._record is None:
            return contextlib.nullcontext()
        self._record.parent.mkdir(parents=True, exist_ok=True)
        return locked(self._record.with_name(f"{self._record.name}.lock"))

    def _merge_record(self) -> None:
        """Take in what the record says of ended pools (file lock held): another engine's pools,
        and which pool another engine took."""
        if self._record is None or not self._record.is_file():
            return
        try:
            recorded = [WarmPool(**fields) for fields in json.loads(self._record.read_text())]
        except (ValueError, TypeError):
            return  # a record of another version: no pool from it
        for pool in recorded:
            known = self._pools.get(pool.job)
            if known is None or known.ended_at is None:
                if known is None:
                    self._pools[pool.job] = pool
            elif pool.reused_by is not None and known.reused_by is None:
                known.reused_by, known.reused_at = pool.reused_by, pool.reused_at

    def _write_record(self, now: float) -> None:
        """Record every ended pool of the last :data:`RECORD_SECONDS` (file lock held)."""
        if self._record is None:
            return
        recent = [dataclasses.asdict(p) for p in self._pools.values()
                  if p.ended_at is not None and now - p.ended_at <= RECORD_SECONDS]
        partial = self._record.with_name(f"{self._record.name}.{os.getpid()}.tmp")
        partial.write_text(json.dumps(recent, indent=1))
        partial.replace(self._record)

    def start(self, job: str, request: dict[str, Any]) -> WarmPool | None:
        """The pool of a new job that asks for one (None: it does not), started on the oldest
        waiting pool that matches it, if any (that pool becomes ``Reused``)."""
        keep_alive = keep_alive_seconds(request)
        if keep_alive <= 0:
            return None
        key = match_key(request)
        with self._lock, self._changing():
            self._merge_record()
            now = time.time()
            waiting = sorted((p for p in self._pools.values() if p.key == key and p.waiting(now)),
                             key=lambda p: p.ended_at or 0.0)
            pool = WarmPool(job=job, key=key, keep_alive=keep_alive)
            if waiting:
                waiting[0].reused_by, waiting[0].reused_at = job, now
                pool.started_on = waiting[0].job
                self._write_record(now)
            self._pools[job] = pool
            return pool

    def finish(self, job: str, *, completed: bool) -> None:
        """The job ended: a completed job's pool waits for its period, any other's ends now."""
        with self._lock:
            pool = self._pools.get(job)
            if pool is None:
                return
            with self._changing():
                self._merge_record()
                pool.kept = completed
                pool.ended_at = time.time()
                self._write_record(pool.ended_at)
