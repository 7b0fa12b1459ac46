"""AWS Batch for SageMaker Training, offline: the team queue the state machine submits to.

What it reproduces, with its sources (AWS Batch user guide unless said):

- ``SubmitServiceJob``, ``DescribeServiceJob``, ``ListServiceJobs`` and ``TerminateServiceJob``,
  each request checked against botocore's batch model first; the payload is the
  ``CreateTrainingJob`` request, judged by the engine's strict SageMaker front end when Batch
  hands it to SageMaker ("The serviceRequestPayload is passed through without validation":
  "Submit a service job"), with ``TrainingJobName`` ``AWSBatch<name><attempt id>``;
- scheduling: the service environment's capacity in instances (``NUM_INSTANCES``); queues of a
  higher ``Priority`` first ("A Job queue with a higher priority is given preference for service
  environments": "Create a SageMaker Training job queue"); within a queue the job at the front
  goes first and waits while it does not fit ("AWS Batch evaluates if there is available capacity
  in the service environment for RUNNABLE jobs at the front of the queue"); under fair share the
  waiting job whose share has the fewest instances in use goes first (Batch's own fair-share
  arithmetic, with decay and weights, is not documented in detail: this is the simple reading);
- states from the SageMaker job ("Mapping AWS Batch service job status to SageMaker AI status"):
  SCHEDULED while it is Pending (Starting), STARTING while Downloading, RUNNING while Training or
  Uploading, SUCCEEDED when Completed, FAILED when Failed or Stopped, the reason prefixed
  "Received status from SageMaker: " ("Service job retry strategies");
- a required share identifier on a fair-share queue and none on another (SubmitServiceJob,
  shareIdentifier), refused as Batch's ``ClientException``.

Not reproduced: Batch's own retries of capacity errors, preemption, quota shares and timeouts.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smtrain.core import contract
from smtrain.local.backend import SageMakerBackend, SageMakerError
from smtrain.local.deployment import ACCOUNT
from smtrain.local.sagemaker_model import request_violations
from smtrain.local.strict_sagemaker import check_request

SAGEMAKER_REASON = "Received status from SageMaker: "
#: The SageMaker job's state -> the service job's (see the module's docstring).
_SECONDARY_STATES = {"Starting": "SCHEDULED", "Pending": "SCHEDULED", "Downloading": "STARTING",
                     "Training": "RUNNING", "Uploading": "RUNNING"}


class BatchError(Exception):
    """A Batch refusal; Step Functions names it ``Batch.<code>``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message = code, message


@dataclass(frozen=True, kw_only=True)
class JobQueue:
    name: str
    priority: int
    fair_share: bool = False


@dataclass(kw_only=True)
class ServiceJob:
    job_id: str
    name: str
    queue: JobQueue
    payload: dict[str, Any]
    share: str | None
    tags: dict[str, str]
    created_at: int
    status: str = "RUNNABLE"
    status_reason: str | None = None
    training_job_name: str | None = None
    training_job_arn: str | None = None
    terminated: bool = False
    scheduled_at: int | None = None
    history: list[str] = field(default_factory=list)

    @property
    def instances(self) -> int:
        return int(self.payload.get("ResourceConfig", {}).get("InstanceCount", 1))


def _now_ms() -> int:
    return int(time.time() * 1000)


class LocalBatchQueue:
    """The queues (by name) of one service environment of ``capacity`` instances, starting jobs
    on ``backend``. Thread-safe; it schedules whenever it is asked anything."""

    def __init__(self, backend: SageMakerBackend, *, queues: Mapping[str, JobQueue], capacity: int,
                 region: str = "us-east-1", record: Path | None = None) -> None:
        self.backend, self.capacity, self.region = backend, capacity, region
        self.queues = dict(queues)
        #: Where every job's summary is written after each change (``smtrain queue --local``
        #: reads it: the CLI and the engine run in different processes).
        self.record = record
        self._recorded: str | None = None
        self._jobs: dict[str, ServiceJob] = {}
        self._lock = threading.Lock()

    # -- the API ----------------------------------------------------------------------------
    def submit_service_job(self, request: dict[str, Any]) -> dict[str, Any]:
        self._check("SubmitServiceJob", request)
        queue = self._queue(request["jobQueue"])
        share = request.get("shareIdentifier")
        if queue.fair_share and share is None:
            raise BatchError("ClientException", "shareIdentifier is required for a job queue with a "
                             "fair-share scheduling policy")
        if not queue.fair_share and share is not None:
            raise BatchError("ClientException", "shareIdentifier must not be given for a job queue "
                             "without a fair-share scheduling policy")
        try:
            payload = json.loads(request["serviceRequestPayload"])
        except ValueError as error:
            raise BatchError("ClientException", f"serviceRequestPayload is not JSON: {error}") from error
        job = ServiceJob(job_id=str(uuid.uuid4()), name=request["jobName"], queue=queue,
                         payload=payload, share=share, tags=dict(request.get("tags", {})),
                         created_at=_now_ms())
        with self._lock:
            self._jobs[job.job_id] = job
            self._schedule()
        return {"jobArn": self._arn(job), "jobName": job.name, "jobId": job.job_id}

    def describe_service_job(self, request: dict[str, Any]) -> dict[str, Any]:
        self._check("DescribeServiceJob", request)
        with self._lock:
            self._schedule()
            job = self._job(request["jobId"])
            described: dict[str, Any] = {
                **self._summary(job), "jobQueue": self._queue_arn(job.queue),
                "serviceRequestPayload": json.dumps(job.payload), "tags": dict(job.tags),
                "attempts": [], "schedulingPriority": 0}
            if job.share is not None:
                described["shareIdentifier"] = job.share
            return described

    def list_service_jobs(self, request: dict[str, Any]) -> dict[str, Any]:
        self._check("ListServiceJobs", request)
        queue = self._queue(request.get("jobQueue", ""))
        filters = request.get("filters", [])
        with self._lock:
            self._schedule()
            jobs = [job for job in self._jobs.values() if job.queue == queue]
        names = [value.lower() for item in filters if item.get("name") == "JOB_NAME"
                 for value in item.get("values", [])]
        if names:  # "a case-insensitive match for the job name"; with a filter, any status
            jobs = [job for job in jobs if job.name.lower() in names]
        else:  # "If you don't specify a status, only RUNNING jobs are returned."
            status = request.get("jobStatus", "RUNNING")
            jobs = [job for job in jobs if job.status == status]
        jobs.sort(key=lambda job: job.created_at, reverse=True)  # "the most recent jobs being first"
        return {"jobSummaryList": [self._summary(job) for job in jobs]}

    def terminate_service_job(self, request: dict[str, Any]) -> dict[str, Any]:
        self._check("TerminateServiceJob", request)
        with self._lock:
            job = self._job(request["jobId"])
            job.terminated = True
            if job.status in contract.SERVICE_JOB_WAITING:
                job.status, job.status_reason = contract.SERVICE_JOB_FAILED, request["reason"]
                self._schedule()
            elif job.training_job_name is not None and job.status not in (
                    contract.SERVICE_JOB_SUCCEEDED, contract.SERVICE_JOB_FAILED):
                self.backend.stop_training_job(job.training_job_name)
                job.status_reason = request["reason"]
        return {}

    def jobs(self) -> list[ServiceJob]:
        """Every service job, in the order they were submitted (for the CLI and tests)."""
        with self._lock:
            self._schedule()
            return sorted(self._jobs.values(), key=lambda job: job.created_at)

    # -- scheduling -------------------------------------------------------------------------
    def _schedule(self) -> None:
        """Bring started jobs up to date, then start what fits (call with the lock held)."""
        for job in self._jobs.values():
            if job.training_job_name is not None and job.status not in (
                    contract.SERVICE_JOB_SUCCEEDED, contract.SERVICE_JOB_FAILED):
                self._follow(job)
        in_use = sum(job.instances for job in self._jobs.values() if job.status in
                     ("SCHEDULED", "STARTING", "RUNNING"))
        for queue in sorted(self.queues.values(), key=lambda q: -q.priority):
            while True:
                waiting = [job for job in self._jobs.values()
                           if job.queue == queue and job.status in contract.SERVICE_JOB_WAITING]
                if not waiting:
                    break
                front = min(waiting, key=lambda job: (self._share_use(job), job.created_at)
                            if queue.fair_share else (0, job.created_at))
                if in_use + front.instances > self.capacity:
                    break  # the front of the queue waits for capacity
                self._start(front)
                in_use += front.instances if front.status != contract.SERVICE_JOB_FAILED else 0

        self._write_record()

    def _write_record(self) -> None:
        if self.record is None:
            return
        # A queue's name ends in its priority (contract.job_queue_name).
        jobs = [{**self._summary(job), "priority": job.queue.name.rsplit("-", 1)[-1]}
                for job in sorted(self._jobs.values(), key=lambda job: job.created_at)
                if job.status in contract.SERVICE_JOB_ACTIVE]
        text = json.dumps(jobs, indent=1)
        if text == self._recorded:  # the state machine asks every few seconds; most looks change nothing
            return
        scratch = self.record.with_suffix(".tmp")
        scratch.write_text(text)
        scratch.replace(self.record)  # whole, so a reader never sees half a file
        self._recorded = text

    def _share_use(self, job: ServiceJob) -> int:
        return sum(other.instances for other in self._jobs.values() if other.share == job.share
                   and other.queue == job.queue and other.status in ("SCHEDULED", "STARTING", "RUNNING"))

    def _start(self, job: ServiceJob) -> None:
        attempt = uuid.uuid4().hex  # 32 characters, as in the user guide's event example
        request = {**job.payload, "TrainingJobName": f"{contract.BATCH_TRAINING_JOB_PREFIX}"
                                                     f"{job.payload.get('TrainingJobName', '')}{attempt}"}
        job.scheduled_at = _now_ms()
        try:
            check_request("CreateTrainingJob", request)
            created = self.backend.create_training_job(request)
        except SageMakerError as error:
            job.status, job.status_reason = contract.SERVICE_JOB_FAILED, f"{SAGEMAKER_REASON}{error.message}"
            return
        job.training_job_name = request["TrainingJobName"]
        job.training_job_arn = str(created["TrainingJobArn"])
        job.status = "SCHEDULED"

    def _follow(self, job: ServiceJob) -> None:
        assert job.training_job_name is not None
        described = self.backend.describe_training_job(job.training_job_name)
        status = described["TrainingJobStatus"]
        if status == "Completed":
            job.status, job.status_reason = contract.SERVICE_JOB_SUCCEEDED, f"{SAGEMAKER_REASON}Training job completed"
        elif status in ("Failed", "Stopped"):
            job.status = contract.SERVICE_JOB_FAILED
            if not (job.terminated and job.status_reason):
                job.status_reason = f"{SAGEMAKER_REASON}{described.get('FailureReason', status)}"
        else:
            job.status = _SECONDARY_STATES.get(described.get("SecondaryStatus", ""), "RUNNING")

    # -- helpers ----------------------------------------------------------------------------
    def _check(self, operation: str, request: dict[str, Any]) -> None:
        problems = request_violations(operation, request, service="batch")
        if problems:
            raise BatchError("ClientException", "; ".join(problems))

    def _queue(self, name_or_arn: str) -> JobQueue:
        name = name_or_arn.rsplit("job-queue/", 1)[-1]
        if name not in self.queues:
            raise BatchError("ClientException", f"job queue {name_or_arn!r} does not exist")
        return self.queues[name]

    def _job(self, job_id: str) -> ServiceJob:
        if job_id not in self._jobs:
            raise BatchError("ClientException", f"service job {job_id} not found")
        return self._jobs[job_id]

    def _arn(self, job: ServiceJob) -> str:
        return f"arn:aws:batch:{self.region}:{ACCOUNT}:service-job/{job.job_id}"

    def _queue_arn(self, queue: JobQueue) -> str:
        return f"arn:aws:batch:{self.region}:{ACCOUNT}:job-queue/{queue.name}"

    def _summary(self, job: ServiceJob) -> dict[str, Any]:
        summary: dict[str, Any] = {"jobArn": self._arn(job), "jobId": job.job_id, "jobName": job.name,
                                   "serviceJobType": contract.SERVICE_JOB_TYPE, "status": job.status,
                                   "createdAt": job.created_at, "isTerminated": job.terminated}
        if job.status_reason is not None:
            summary["statusReason"] = job.status_reason
        if job.share is not None:
            summary["shareIdentifier"] = job.share
        if job.scheduled_at is not None:
            summary["scheduledAt"] = job.scheduled_at
        if job.training_job_arn is not None:
            summary["latestAttempt"] = {"serviceResourceId": {"name": "TrainingJobArn",
                                                              "value": job.training_job_arn}}
        return summary
