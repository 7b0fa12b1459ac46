"""A SageMaker test double that answers from a script and records every request.

It answers only what AWS answers: the engine checks every describe answer, of either backend,
against botocore's output shape (``sagemaker_model.answer_as_aws``: required members present,
nothing the model does not define); its errors carry SageMaker's error codes
(``ThrottlingException``, ``ResourceLimitExceeded``, ``ValidationException``, ...); a stop passes
through ``Stopping`` to ``Stopped``; stopping or describing an unknown job is the
``ValidationException`` SageMaker answers ("Requested resource not found"). Requests are judged by
the engine's strict front end before they get here.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import io
import tarfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smtrain.local.backend import (
    TERMINAL_STATUSES,
    Description,
    Request,
    SageMakerBackend,
    SageMakerError,
    tuning_job_page,
)
from smtrain.local.engine import OfflineEngine
from smtrain.local.s3_stand_in import LocalS3
from smtrain.local.wakeups import JOB_ENDED

ACCOUNT_PREFIX = "arn:aws:sagemaker:us-east-1:123456789012"
CREATED = "2026-01-01T00:00:00Z"


def throttling() -> SageMakerError:
    """What SageMaker answers a caller over its request rate."""
    return SageMakerError("ThrottlingException", "Rate exceeded")


def limit_exceeded() -> SageMakerError:
    """What SageMaker answers when an account quota (e.g. instances of a type) is used up."""
    return SageMakerError("ResourceLimitExceeded",
                          "The account-level service limit 'ml.m5.xlarge for training job usage' "
                          "is 2 Instances, with current utilization of 2 Instances")


@dataclass
class JobScript:
    """How scripted jobs behave.

    ``create_errors`` are raised by successive create calls before one succeeds (throttling,
    limits). Each job then reports ``statuses`` on successive describe calls, staying on the
    last one. ``failure_reason`` is reported with Failed; ``metrics`` as
    ``FinalMetricDataList``. A tuning job reports ``tuning_jobs`` completed training jobs, the best
    one with ``best_objective``. A completed job reports ``billable_seconds`` as its
    ``BillableTimeInSeconds`` and ``TrainingTimeInSeconds``.
    """

    statuses: Sequence[str] = ("InProgress", "Completed")
    create_errors: list[SageMakerError] = field(default_factory=list)
    failure_reason: str = "AlgorithmError: scripted failure"
    metrics: Sequence[tuple[str, float]] = (("validation:accuracy", 0.97),)
    tuning_jobs: int = 4
    best_objective: float = 0.97
    billable_seconds: int = 612
    #: Errors raised by describe calls of a training job after it has been reported Completed
    #: once (what the run asks of a finished job), one per call, before answers resume.
    describe_errors_when_done: list[SageMakerError] = field(default_factory=list)


@functools.cache
def _scripted_model_archive() -> bytes:
    """The bytes of every scripted job's ``model.tar.gz`` (made once: a 500-job tuning run
    describes, so uploads, 500 of them)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for member, data in (("model.pth", b"scripted weights"), ("code/inference.py", b"# scripted\n")):
            info = tarfile.TarInfo(member)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


class ScriptedBackend:
    """Answers ``create*``/``describe*``/``stop*`` and the list of a tuning job's training jobs
    as :class:`JobScript` says; keeps :attr:`requests` (the creates' ``(action, request)`` in
    order), :attr:`listed` (the list requests) and :attr:`stopped` (job names)."""

    def __init__(self, script: JobScript | None = None) -> None:
        self.script = script or JobScript()
        self.requests: list[tuple[str, Request]] = []
        self.stopped: list[str] = []
        #: The ListTrainingJobsForHyperParameterTuningJob requests, in order.
        self.listed: list[Request] = []
        self._jobs: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        #: Where completed jobs' models are written (the engine's S3 stand-in); none: nowhere.
        self.s3: LocalS3 | None = None

    # -- creation -------------------------------------------------------------------------
    def _create(self, action: str, name_field: str, request: Request) -> Description:
        with self._lock:
            self.requests.append((action, copy.deepcopy(request)))
            if self.script.create_errors:
                raise self.script.create_errors.pop(0)
            name = request[name_field]
            if name in self._jobs:
                raise SageMakerError("ResourceInUse", f"Job {name} already exists")
            self._jobs[name] = {"request": request, "polls": 0, "stop": None}
        return {"TrainingJobArn" if action == "create_training_job"
                else "HyperParameterTuningJobArn": self._arn(action, name)}

    @staticmethod
    def _arn(action: str, name: str) -> str:
        kind = "training-job" if action == "create_training_job" else "hyper-parameter-tuning-job"
        return f"{ACCOUNT_PREFIX}:{kind}/{name.lower()}"

    def create_training_job(self, request: Request) -> Description:
        return self._create("create_training_job", "TrainingJobName", request)

    def create_hyper_parameter_tuning_job(self, request: Request) -> Description:
        return self._create("create_hyper_parameter_tuning_job", "HyperParameterTuningJobName",
                            request)

    # -- progress -------------------------------------------------------------------------
    def _job(self, name: str) -> dict[str, Any]:
        job = self._jobs.get(name)
        if job is None:
            # What SageMaker answers for a job it does not know (not its ResourceNotFound).
            raise SageMakerError("ValidationException", "Requested resource not found.")
        return job

    def _status(self, name: str) -> str:
        with self._lock:
            job = self._job(name)
            if job["stop"] is not None:
                # Stopping is reported once, then Stopped (as SageMaker moves a stopped job).
                job["stop"] += 1
                return "Stopping" if job["stop"] == 1 else "Stopped"
            return self._progress(name, job)

    def _progress(self, name: str, job: dict[str, Any]) -> str:
        """A job's next status while it is not being stopped (with the lock held): the
        script's, one per describe call."""
        status = str(self.script.statuses[min(job["polls"], len(self.script.statuses) - 1)])
        job["polls"] += 1
        if self.script.statuses[min(job["polls"], len(self.script.statuses) - 1)] != status:
            # No time passes in a script: the next status is due at once, so a .sync task's wait
            # before its next describe call ends now, as it does when a local job ends.
            JOB_ENDED.notify()
        return status

    def describe_training_job(self, name: str) -> Description:
        trial_of = self._tuning_job_of(name) if name not in self._jobs else None
        if trial_of is not None:
            request = self._trial_request(trial_of)
            status = "Completed"
        else:
            job = self._job(name)
            request = job["request"]
            if job.get("done") and self.script.describe_errors_when_done:
                raise self.script.describe_errors_when_done.pop(0)
            status = self._status(name)
            job["done"] = status == "Completed"
        output = request["OutputDataConfig"]["S3OutputPath"]
        description: Description = {
            "TrainingJobName": name,
            "TrainingJobArn": self._arn("create_training_job", name),
            "ModelArtifacts": {"S3ModelArtifacts": f"{output}{name}/output/model.tar.gz"},
            "TrainingJobStatus": status,
            "SecondaryStatus": status if status in (*TERMINAL_STATUSES, "Stopping") else "Training",
            "AlgorithmSpecification": request["AlgorithmSpecification"],
            "RoleArn": request["RoleArn"],
            "ResourceConfig": request["ResourceConfig"],
            "StoppingCondition": request["StoppingCondition"],
            "CreationTime": CREATED,
        }
        if trial_of is not None:
            description["TuningJobArn"] = self._arn("create_hyper_parameter_tuning_job", trial_of)
        if status == "Completed":
            self._write_model(description["ModelArtifacts"]["S3ModelArtifacts"])
            description["FinalMetricDataList"] = [
                {"MetricName": metric, "Value": value, "Timestamp": CREATED}
                for metric, value in self.script.metrics]
            # What SageMaker reports of a finished job's time (API reference, DescribeTrainingJob).
            description["TrainingTimeInSeconds"] = description["BillableTimeInSeconds"] = \
                self.script.billable_seconds
        if status == "Failed":
            description["FailureReason"] = self.script.failure_reason
        return description

    def _write_model(self, uri: str) -> None:
        """As SageMaker uploads a completed job's ``model.tar.gz``: a small archive (a weights file
        and ``code/inference.py``, as a script program's model holds) into :attr:`s3`, once."""
        from smtrain.local import sfn_sagemaker

        s3 = self.s3 or sfn_sagemaker._s3  # else the stand-in the engine serving this backend uses
        if s3 is None:
            return
        target = s3.path(uri)
        target.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError), target.open("xb") as archive:
            archive.write(_scripted_model_archive())

    def _tuning_job_of(self, name: str) -> str | None:
        """SageMaker names a tuning job's training jobs ``<tuning job>-<NNN>-<8 hex>``."""
        for tuning, job in self._jobs.items():
            if "HyperParameterTuningJobName" in job["request"] and name.startswith(f"{tuning}-"):
                return tuning
        return None

    def _trial_request(self, tuning_name: str) -> dict[str, Any]:
        definition: dict[str, Any] = self._jobs[tuning_name]["request"]["TrainingJobDefinition"]
        return definition

    def describe_hyper_parameter_tuning_job(self, name: str) -> Description:
        status = self._status(name)
        request = self._jobs[name]["request"]
        count = self.script.tuning_jobs if status == "Completed" else 0
        description: Description = {
            "HyperParameterTuningJobName": name,
            "HyperParameterTuningJobArn": self._arn("create_hyper_parameter_tuning_job", name),
            "HyperParameterTuningJobConfig": request["HyperParameterTuningJobConfig"],
            "TrainingJobDefinition": request["TrainingJobDefinition"],
            "HyperParameterTuningJobStatus": status,
            "CreationTime": CREATED,
            "TrainingJobStatusCounters": {"Completed": count, "InProgress": 0, "RetryableError": 0,
                                          "NonRetryableError": 0, "Stopped": 0},
            "ObjectiveStatusCounters": {"Succeeded": count, "Pending": 0, "Failed": 0},
        }
        if status == "Completed":
            description["BestTrainingJob"] = self._trial(name, 0)
        if status == "Failed":
            description["FailureReason"] = self.script.failure_reason
        return description

    def list_training_jobs_for_hyper_parameter_tuning_job(self, request: Request) -> Description:
        """The completed tuning job's ``tuning_jobs`` training jobs, a page at a time."""
        name = request["HyperParameterTuningJobName"]
        with self._lock:
            self.listed.append(copy.deepcopy(request))
            self._job(name)
        return tuning_job_page([self._trial(name, index) for index in range(self.script.tuning_jobs)],
                               request)

    def _trial(self, tuning_name: str, index: int) -> Description:
        config = self._jobs[tuning_name]["request"]["HyperParameterTuningJobConfig"]
        objective = config["HyperParameterTuningJobObjective"]
        tuned = {item["Name"]: str(item.get("MinValue", item.get("Values", [""])[0]))
                 for ranges in config.get("ParameterRanges", {}).values() for item in ranges}
        name = f"{tuning_name}-{index + 1:03d}-{index:08x}"
        return {
            "TrainingJobName": name,
            "TrainingJobArn": self._arn("create_training_job", name),
            "TuningJobName": tuning_name,
            "CreationTime": CREATED,
            "TrainingJobStatus": "Completed",
            "TunedHyperParameters": tuned,
            "FinalHyperParameterTuningJobObjectiveMetric": {
                "MetricName": objective["MetricName"],
                "Value": self.script.best_objective - 0.001 * index},
            "ObjectiveStatus": "Succeeded",
        }

    # -- stopping -------------------------------------------------------------------------
    def _stop(self, name: str) -> None:
        with self._lock:
            job = self._job(name)
            self.stopped.append(name)
            if job["stop"] is None:
                job["stop"] = 0

    def stop_training_job(self, name: str) -> None:
        self._stop(name)

    def stop_hyper_parameter_tuning_job(self, name: str) -> None:
        self._stop(name)

    def created(self, action: str) -> list[Request]:
        """The requests of successful and failed ``action`` calls, in order."""
        return [request for recorded, request in self.requests if recorded == action]


def shorten_retries(definition: dict[str, Any], interval_seconds: int) -> None:
    """Cap each ``Retry`` rule's ``IntervalSeconds``, each fixed ``Wait``, and each random wait a
    Pass state draws (``States.MathRandom(low, high)``, the backoff before a create call is
    retried, which a Wait then reads through its ``SecondsPath``); everything else, the
    ``SecondsPath`` chain included, stays as synthesized."""
    if interval_seconds < 1:
        raise ValueError("IntervalSeconds must be at least 1")
    for state in definition["States"].values():
        for rule in state.get("Retry", []):
            rule["IntervalSeconds"] = min(rule.get("IntervalSeconds", 1), interval_seconds)
        if state["Type"] == "Wait" and "Seconds" in state:
            state["Seconds"] = min(state["Seconds"], interval_seconds)
        if state["Type"] == "Pass":
            for key, value in state.get("Parameters", {}).items():
                if isinstance(value, str) and value.startswith("States.MathRandom("):
                    state["Parameters"][key] = f"States.MathRandom({interval_seconds}, {interval_seconds})"


def scripted_engine(*, outdir: Path, work_dir: Path, backend: SageMakerBackend,
                    retry_interval_seconds: int = 1, **kwargs: Any) -> OfflineEngine:
    """An engine over ``backend`` whose retries and backoff waits are capped at
    ``retry_interval_seconds`` (:func:`shorten_retries`, applied before the state machine is
    created on entering the engine), so a test of the throttling retry need not wait the real
    15-60 s backoff."""
    engine = OfflineEngine(outdir=outdir, work_dir=work_dir, backend=backend, **kwargs)
    shorten_retries(engine.deployment.definition, retry_interval_seconds)
    if isinstance(backend, ScriptedBackend) and backend.s3 is None:
        # Its completed jobs' models land in the S3 stand-in of the first engine built over it
        # (the one that serves it: a second one is built only to read its deployment).
        backend.s3 = engine.s3
    return engine
