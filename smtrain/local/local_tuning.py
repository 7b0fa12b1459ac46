"""A hyperparameter tuning job run locally: Optuna chooses, the local backend trains.

Strategies: ``Bayesian`` uses Optuna's TPE sampler, ``Random`` its random sampler, ``Grid`` its
grid sampler over every combination (integer and categorical ranges only, as SageMaker
requires), and ``Hyperband`` random sampling without early stopping (trials are whole
processes here, so nothing can be stopped mid-way; said in the job's log). Samplers are
seeded, so a run is repeatable. Up to ``MaxParallelTrainingJobs`` training jobs run at once;
the best job is the one with the best final value of the objective metric.
"""

from __future__ import annotations

import datetime
import math
import threading
import uuid
from collections.abc import Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from smtrain.local.backend import Description, Request, SageMakerError
from smtrain.local.wakeups import JOB_ENDED

if TYPE_CHECKING:
    import optuna


class TrialJob(Protocol):
    """What a tuning run reads of one of its training jobs."""

    @property
    def name(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def metrics(self) -> dict[str, float]: ...
    @property
    def created(self) -> str: ...
    def describe(self) -> Description: ...


class TrialImages(Protocol):
    def kind(self, image: str, hyperparameters: Mapping[str, str] | None = None) -> str: ...


TrialJobT = TypeVar("TrialJobT", bound=TrialJob)


class TrialRunner(Protocol[TrialJobT]):
    """What a tuning run needs of the backend that runs its training jobs (the local backend)."""

    @property
    def images(self) -> TrialImages: ...
    def register(self, request: Request) -> TrialJobT: ...
    def execute(self, job: TrialJobT) -> None: ...
    def stop_training_job(self, name: str) -> None: ...

_SAMPLER_SEED = 0


def _continuous(trial: optuna.trial.Trial, spec: dict[str, Any]) -> str:
    low, high = float(spec["MinValue"]), float(spec["MaxValue"])
    log = spec.get("ScalingType", "Auto") in ("Logarithmic", "ReverseLogarithmic") and low > 0
    return repr(trial.suggest_float(spec["Name"], low, high, log=log))


def _integer(trial: optuna.trial.Trial, spec: dict[str, Any]) -> str:
    low, high = int(spec["MinValue"]), int(spec["MaxValue"])
    log = spec.get("ScalingType", "Auto") == "Logarithmic" and low > 0
    return str(trial.suggest_int(spec["Name"], low, high, log=log))


def _categorical(trial: optuna.trial.Trial, spec: dict[str, Any]) -> str:
    return str(trial.suggest_categorical(spec["Name"], list(spec["Values"])))


class TuningRun(Generic[TrialJobT]):
    """One tuning job: validated on creation, run in a background thread."""

    def __init__(self, *, name: str, request: Request, backend: TrialRunner[TrialJobT]) -> None:
        self.name = name
        self.request = request
        self.backend = backend
        self.arn = f"arn:aws:sagemaker:us-east-1:123456789012:hyper-parameter-tuning-job/{name.lower()}"
        self.created = datetime.datetime.now(datetime.UTC).isoformat()
        config = request["HyperParameterTuningJobConfig"]
        self.strategy = config["Strategy"]
        objective = config["HyperParameterTuningJobObjective"]
        self.metric, self.direction = objective["MetricName"], objective["Type"]
        self.ranges = config.get("ParameterRanges", {})
        limits = config["ResourceLimits"]
        self.parallel = int(limits["MaxParallelTrainingJobs"])
        self.early_stopping = config.get("TrainingJobEarlyStoppingType", "Off")
        self._validate(limits)
        self.max_jobs = (self._grid_size() if self.strategy == "Grid"
                         else int(limits["MaxNumberOfTrainingJobs"]))
        self.status = "InProgress"
        self.failure_reason: str | None = None
        self.trials: list[tuple[dict[str, str], TrialJobT | None]] = []
        self.done = False
        self._stop = threading.Event()
        self._lock = threading.Lock()

    def _validate(self, limits: dict[str, Any]) -> None:
        """What the engine's strict front end (``strict_sagemaker``: the model's enums and
        minimums, the API reference's Grid rules) does not already refuse before a request gets
        here."""
        def invalid(message: str) -> SageMakerError:
            return SageMakerError("ValidationException", message)

        if not any(self.ranges.get(k) for k in ("ContinuousParameterRanges", "IntegerParameterRanges",
                                                 "CategoricalParameterRanges")):
            raise invalid("ParameterRanges must define at least one range")
        if self.strategy != "Grid" and "MaxNumberOfTrainingJobs" not in limits:
            raise invalid("MaxNumberOfTrainingJobs is required")
        algorithm = self.request["TrainingJobDefinition"]["AlgorithmSpecification"]
        names = {d["Name"] for d in algorithm.get("MetricDefinitions", [])}
        kind = self.backend.images.kind(
            algorithm["TrainingImage"],
            self.request["TrainingJobDefinition"].get("StaticHyperParameters", {}))
        if kind != "builtin" and self.metric not in names:
            raise invalid(f"The objective metric {self.metric!r} is not among the metric "
                          f"definitions {sorted(names)}")

    def _grid(self) -> dict[str, list[Any]]:
        grid: dict[str, list[Any]] = {}
        for spec in self.ranges.get("IntegerParameterRanges", []):
            grid[spec["Name"]] = list(range(int(spec["MinValue"]), int(spec["MaxValue"]) + 1))
        for spec in self.ranges.get("CategoricalParameterRanges", []):
            grid[spec["Name"]] = list(spec["Values"])
        return grid

    def _grid_size(self) -> int:
        return math.prod(len(values) for values in self._grid().values())

    def _sampler(self) -> optuna.samplers.BaseSampler:
        import optuna

        if self.strategy == "Bayesian":
            return optuna.samplers.TPESampler(seed=_SAMPLER_SEED, n_startup_trials=min(self.parallel, 4))
        if self.strategy == "Grid":
            return optuna.samplers.GridSampler(self._grid(), seed=_SAMPLER_SEED)
        return optuna.samplers.RandomSampler(seed=_SAMPLER_SEED)

    def start(self) -> None:
        threading.Thread(target=self._run, name=f"tuning-{self.name}", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        for _, job in list(self.trials):
            if job is not None:
                self.backend.stop_training_job(job.name)

    def _suggest(self, trial: optuna.trial.Trial) -> dict[str, str]:
        values = {}
        for spec in self.ranges.get("ContinuousParameterRanges", []):
            values[spec["Name"]] = _continuous(trial, spec)
        for spec in self.ranges.get("IntegerParameterRanges", []):
            values[spec["Name"]] = _integer(trial, spec)
        for spec in self.ranges.get("CategoricalParameterRanges", []):
            values[spec["Name"]] = _categorical(trial, spec)
        return values

    def _training_request(self, index: int, tuned: dict[str, str]) -> Request:
        definition = self.request["TrainingJobDefinition"]
        request: Request = {key: value for key, value in definition.items()
                            if key not in ("StaticHyperParameters",)}
        request["TrainingJobName"] = f"{self.name}-{index:03d}-{uuid.uuid4().hex[:8]}"
        request["HyperParameters"] = {**definition.get("StaticHyperParameters", {}), **tuned}
        request["Tags"] = [*self.request.get("Tags", []),
                           {"Key": "sagemaker:tuning-job", "Value": self.name}]
        return request

    def _objective(self, job: TrialJobT) -> float | None:
        if job.status != "Completed":
            return None
        return job.metrics.get(self.metric)

    def _run(self) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        try:
            direction = "maximize" if self.direction == "Maximize" else "minimize"
            study = optuna.create_study(direction=direction, sampler=self._sampler())
            running: dict[Future[TrialJobT], optuna.trial.Trial] = {}
            started = 0
            with ThreadPoolExecutor(max_workers=self.parallel) as pool:
                while (started < self.max_jobs or running) and not self._stop.is_set():
                    while started < self.max_jobs and len(running) < self.parallel:
                        trial = study.ask()
                        tuned = self._suggest(trial)
                        started += 1
                        with self._lock:
                            self.trials.append((tuned, None))
                        running[pool.submit(self._tracked_trial, started, tuned)] = trial
                    finished, _ = wait(running, return_when=FIRST_COMPLETED)
                    for future in finished:
                        trial = running.pop(future)
                        value = self._objective(future.result())
                        if value is None:
                            study.tell(trial, state=optuna.trial.TrialState.FAIL)
                        else:
                            study.tell(trial, value)
            self._conclude()
        except SageMakerError as error:
            self._end("Failed", f"{error.code}: {error.message}")
        except Exception as error:
            self._end("Failed", f"InternalServerError: {type(error).__name__}: {error}")

    def _tracked_trial(self, index: int, tuned: dict[str, str]) -> TrialJobT:
        request = self._training_request(index, tuned)
        job = self.backend.register(request)
        with self._lock:
            self.trials[index - 1] = (tuned, job)
        self.backend.execute(job)
        return job

    def _conclude(self) -> None:
        if self._stop.is_set():
            self._end("Stopped", "Stopped by request")
        elif self._best() is None:
            # SageMaker's own words, then what the trials did report (offline only): the usual
            # cause is a metric definition whose Regex matches none of the program's log lines.
            completed = [job for _, job in self.trials
                         if job is not None and job.status == "Completed"]
            reported = sorted({name for job in completed for name in job.metrics})
            hint = (f"; the {len(completed)} completed trial(s) reported "
                    f"{', '.join(reported) if reported else 'no metric at all'}: check the "
                    f"objective's metric definition (Regex) against the program's log lines"
                    if completed else "")
            self._end("Failed", "No training job succeeded with a value for the objective metric "
                                f"{self.metric}{hint}")
        else:
            self._end("Completed", None)

    def _end(self, status: str, reason: str | None) -> None:
        with self._lock:
            self.status, self.failure_reason, self.done = status, reason, True
        JOB_ENDED.notify()  # a .sync task waiting on this job looks now

    def _best(self) -> tuple[dict[str, str], TrialJobT, float] | None:
        scored = [(tuned, job, value) for tuned, job in self.trials if job is not None
                  for value in [self._objective(job)] if value is not None]
        if not scored:
            return None
        pick = max if self.direction == "Maximize" else min
        return pick(scored, key=lambda item: item[2])

    def training_job_summaries(self) -> list[Description]:
        """A HyperParameterTrainingJobSummary of each training job started so far, as
        ListTrainingJobsForHyperParameterTuningJob gives them (by name)."""
        with self._lock:
            trials = [(tuned, job) for tuned, job in self.trials if job is not None]
        summaries = []
        for tuned, job in trials:
            described = job.describe()
            summary: Description = {
                "TrainingJobName": job.name,
                "TrainingJobArn": described["TrainingJobArn"],
                "TuningJobName": self.name,
                "CreationTime": job.created,
                "TrainingJobStatus": job.status,
                "TunedHyperParameters": tuned,
            }
            for field_name in ("TrainingStartTime", "TrainingEndTime", "FailureReason"):
                if field_name in described:
                    summary[field_name] = described[field_name]
            value = self._objective(job)
            if value is not None:
                summary["FinalHyperParameterTuningJobObjectiveMetric"] = {
                    "Type": self.direction, "MetricName": self.metric, "Value": value}
                summary["ObjectiveStatus"] = "Succeeded"
            elif job.status in ("Failed", "Stopped", "Completed"):
                summary["ObjectiveStatus"] = "Failed"
            else:
                summary["ObjectiveStatus"] = "Pending"
            summaries.append(summary)
        return sorted(summaries, key=lambda s: s["TrainingJobName"])

    def describe(self) -> Description:
        with self._lock:
            jobs = [job for _, job in self.trials if job is not None]
            counters = {"Completed": 0, "InProgress": 0, "RetryableError": 0, "NonRetryableError": 0,
                        "Stopped": 0}
            for job in jobs:
                key = {"Failed": "NonRetryableError", "Stopping": "InProgress"}.get(job.status, job.status)
                counters[key] = counters.get(key, 0) + 1
            description: Description = {
                "HyperParameterTuningJobName": self.name,
                "HyperParameterTuningJobArn": self.arn,
                "HyperParameterTuningJobStatus": self.status,
                "HyperParameterTuningJobConfig": self.request["HyperParameterTuningJobConfig"],
                "TrainingJobDefinition": self.request["TrainingJobDefinition"],
                "CreationTime": self.created,
                "TrainingJobStatusCounters": counters,
                "ObjectiveStatusCounters": {
                    "Succeeded": sum(1 for j in jobs if self._objective(j) is not None),
                    "Pending": sum(1 for j in jobs if j.status in ("InProgress", "Stopping")),
                    "Failed": sum(1 for j in jobs if j.status in ("Failed", "Stopped")
                                  or (j.status == "Completed" and self._objective(j) is None)),
                },
            }
            if self.failure_reason:
                description["FailureReason"] = self.failure_reason
            best = self._best()
        if best is not None:
            tuned, job, value = best
            description["BestTrainingJob"] = {
                "TrainingJobName": job.name,
                "TrainingJobArn": job.describe()["TrainingJobArn"],
                "CreationTime": job.created,
                "TrainingJobStatus": job.status,
                "TunedHyperParameters": tuned,
                "FinalHyperParameterTuningJobObjectiveMetric": {
                    "Type": self.direction, "MetricName": self.metric, "Value": value},
                "TuningJobName": self.name,
                "ObjectiveStatus": "Succeeded",
            }
        return description

