"""A SageMaker stand-in that answers from a script and records every request (for tests)."""

from __future__ import annotations

import copy
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from smtrain.local.backend import TERMINAL_STATUSES, Description, Request, SageMakerError


@dataclass
class JobScript:
    """How scripted jobs behave.

    ``create_errors`` are raised by successive create calls before one succeeds (throttling,
    limits). Each job then reports ``statuses`` on successive describe calls, staying on the
    last one. ``failure_reason`` is reported with Failed/Stopped; ``metrics`` as
    ``FinalMetricDataList``. A tuning job reports ``tuning_jobs`` training jobs, the best one
    with ``best_objective``.
    """

    statuses: Sequence[str] = ("InProgress", "Completed")
    create_errors: list[SageMakerError] = field(default_factory=list)
    failure_reason: str = "AlgorithmError: scripted failure"
    metrics: Sequence[tuple[str, float]] = (("validation:accuracy", 0.97),)
    tuning_jobs: int = 4
    best_objective: float = 0.97


class ScriptedBackend:
    """Answers ``create*``/``describe*``/``stop*`` as :class:`JobScript` says; keeps
    :attr:`requests` (``(action, request)`` in order) and :attr:`stopped` (job names)."""

    def __init__(self, script: JobScript | None = None) -> None:
        self.script = script or JobScript()
        self.requests: list[tuple[str, Request]] = []
        self.stopped: list[str] = []
        self._jobs: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    # -- creation -------------------------------------------------------------------------
    def _create(self, action: str, name_field: str, request: Request) -> Description:
        with self._lock:
            self.requests.append((action, copy.deepcopy(request)))
            if self.script.create_errors:
                raise self.script.create_errors.pop(0)
            name = request[name_field]
            if name in self._jobs:
                raise SageMakerError("ResourceInUse", f"Job {name} already exists")
            self._jobs[name] = {"request": request, "polls": 0, "stopped": False}
        kind = "training-job" if action == "create_training_job" else "hyper-parameter-tuning-job"
        arn_field = "TrainingJobArn" if kind == "training-job" else "HyperParameterTuningJobArn"
        return {arn_field: f"arn:aws:sagemaker:us-east-1:123456789012:{kind}/{name.lower()}"}

    def create_training_job(self, request: Request) -> Description:
        return self._create("create_training_job", "TrainingJobName", request)

    def create_hyper_parameter_tuning_job(self, request: Request) -> Description:
        return self._create("create_hyper_parameter_tuning_job", "HyperParameterTuningJobName",
                            request)

    # -- progress -------------------------------------------------------------------------
    def _status(self, name: str) -> str:
        with self._lock:
            job = self._jobs.get(name)
            if job is None:
                raise SageMakerError("ValidationException", f"Requested resource not found: {name}")
            if job["stopped"]:
                return "Stopped"
            status = str(self.script.statuses[min(job["polls"], len(self.script.statuses) - 1)])
            job["polls"] += 1
            return status

    def describe_training_job(self, name: str) -> Description:
        if name not in self._jobs and "-" in name and self._is_tuning_trial(name):
            status = "Completed"
        else:
            status = self._status(name)
        description: Description = {
            "TrainingJobName": name, "TrainingJobStatus": status,
            "SecondaryStatus": status if status in TERMINAL_STATUSES else "Training",
        }
        if status == "Completed":
            description["ModelArtifacts"] = {"S3ModelArtifacts": f"s3://artifacts/models/{name}/output/model.tar.gz"}
            description["FinalMetricDataList"] = [
                {"MetricName": metric, "Value": value, "Timestamp": "2026-01-01T00:00:00Z"}
                for metric, value in self.script.metrics]
        if status in ("Failed", "Stopped"):
            description["FailureReason"] = self.script.failure_reason
        return description

    def _is_tuning_trial(self, name: str) -> bool:
        return any(name.startswith(f"{tuning}-") for tuning, job in self._jobs.items()
                   if "HyperParameterTuningJobName" in job["request"])

    def describe_hyper_parameter_tuning_job(self, name: str) -> Description:
        status = self._status(name)
        count = self.script.tuning_jobs
        description: Description = {
            "HyperParameterTuningJobName": name, "HyperParameterTuningJobStatus": status,
            "TrainingJobStatusCounters": {"Completed": count if status == "Completed" else 0,
                                          "InProgress": 0, "RetryableError": 0,
                                          "NonRetryableError": 0, "Stopped": 0},
            # As SageMaker does: every trial's summary (the state machine must trim this).
            "TrainingJobSummaries": [self._trial(name, index) for index in range(count)],
        }
        if status == "Completed":
            description["BestTrainingJob"] = self._trial(name, 0)
        if status in ("Failed", "Stopped"):
            description["FailureReason"] = self.script.failure_reason
        return description

    def _trial(self, tuning_name: str, index: int) -> Description:
        request = self._jobs[tuning_name]["request"]
        objective = request["HyperParameterTuningJobConfig"]["HyperParameterTuningJobObjective"]
        return {
            "TrainingJobName": f"{tuning_name}-{index + 1:03d}-{index:08x}",
            "TrainingJobArn": ("arn:aws:sagemaker:us-east-1:123456789012:training-job/"
                               f"{tuning_name}-{index + 1:03d}"),
            "TrainingJobStatus": "Completed",
            "TunedHyperParameters": {"learning-rate": f"{0.01 * (index + 1):.4f}"},
            "FinalHyperParameterTuningJobObjectiveMetric": {
                "MetricName": objective["MetricName"],
                "Value": self.script.best_objective - 0.001 * index},
            "ObjectiveStatus": "Succeeded",
            "CreationTime": "2026-01-01T00:00:00Z",
        }

    # -- stopping -------------------------------------------------------------------------
    def _stop(self, name: str) -> None:
        with self._lock:
            self.stopped.append(name)
            if name in self._jobs:
                self._jobs[name]["stopped"] = True

    def stop_training_job(self, name: str) -> None:
        self._stop(name)

    def stop_hyper_parameter_tuning_job(self, name: str) -> None:
        self._stop(name)

    def created(self, action: str) -> list[Request]:
        """The requests of successful and failed ``action`` calls, in order."""
        return [request for recorded, request in self.requests if recorded == action]
