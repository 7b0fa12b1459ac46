"""What a run's jobs cost, for the CLI's lines and for MLflow.

:func:`reckon_run` asks SageMaker (a boto3 client, or the offline engine's backend through
:class:`BackendClient`) for each job of a run: a training job's description, or a tuning job's
training jobs (ListTrainingJobsForHyperParameterTuningJob, paged) and theirs. Each training job is
reckoned by :mod:`smtrain.core.prices` (``JOB_COST_FUNCTION``), a tuning job's total folded by
``TUNING_COST_FUNCTION``: the texts the state machine evaluates for the run's output.

:func:`record_in_mlflow` then puts each training job's cost on the MLflow runs tagged with its name
(``smtrain.training_job``, set by the programs' tracker and by the offline engine): metrics
:data:`~smtrain.core.contract.RUN_METRIC_COST_USD` (when the price is known) and
:data:`~smtrain.core.contract.RUN_METRIC_BILLABLE_SECONDS`, and the tag
:data:`~smtrain.core.contract.RUN_TAG_COST` (the CLI's line). A job's billable time is known only
once it has ended, after its program stopped logging, so the CLI records it when it reports the
cost (``smtrain watch`` at the end, ``smtrain status``, ``smtrain start --local``); ``smtrain
compare`` shows it. Recording the same cost again changes nothing; a different one (a price added
to the table since) replaces it.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from smtrain.core import contract, prices

#: A training job's name as SageMaker takes it (botocore's model, TrainingJobName's pattern).
TRAINING_JOB_NAME = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}")


@dataclass
class RunCosts:
    """The CLI's lines (one per job of the run) and each training job's cost by name (a tuning
    job's training jobs included)."""

    lines: list[str] = field(default_factory=list)
    jobs: dict[str, prices.JobCost] = field(default_factory=dict)


def tuning_job_names(sagemaker: Any, name: str) -> list[str]:
    """The training jobs of tuning job ``name``, every page."""
    names: list[str] = []
    request: dict[str, Any] = {"HyperParameterTuningJobName": name, "MaxResults": 100}  # the API's most
    while True:
        page = sagemaker.list_training_jobs_for_hyper_parameter_tuning_job(**request)
        names += [summary["TrainingJobName"] for summary in page.get("TrainingJobSummaries", [])]
        if not page.get("NextToken"):
            return names
        request["NextToken"] = page["NextToken"]


def reckon_run(sagemaker: Any, names: list[str], region: str,
               table: Mapping[str, Any] | None = None) -> RunCosts:
    """What each job of a run cost (``names``: its training and tuning jobs); a training job of
    a tuning job that cannot be described counts as one of unknown cost, as in the state
    machine."""
    costs = RunCosts()
    table = table if table is not None else prices.load()
    for name in names:
        try:
            described = sagemaker.describe_training_job(TrainingJobName=name)
        except Exception:  # a tuning job's name, or a job that cannot be read
            described = None
        if described is not None:
            costs.jobs[name] = prices.job_cost(described, region, table)
            costs.lines.append(f"job {name} {costs.jobs[name].line()}")
            continue
        try:
            trials = tuning_job_names(sagemaker, name)
        except Exception as error:
            costs.lines.append(f"job {name} cost: unknown ({type(error).__name__})")
            continue
        reckoned: list[dict[str, Any]] = []
        for trial in trials:
            try:
                described = sagemaker.describe_training_job(TrainingJobName=trial)
            except Exception as error:
                reckoned.append({"usd": None, "error": type(error).__name__})
                continue
            costs.jobs[trial] = prices.job_cost(described, region, table)
            # What TUNING_COST_FUNCTION reads of each job: its usd (JOB_COST_FUNCTION's, via JobCost).
            reckoned.append({"usd": costs.jobs[trial].usd})
        costs.lines.append(prices.tuning_line(name, prices.tuning_total(reckoned)))
    return costs


class BackendClient:
    """The offline engine's SageMaker backend (``smtrain.local.backend.SageMakerBackend``)
    called as a boto3 SageMaker client is, for :func:`reckon_run`."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend

    def describe_training_job(self, *, TrainingJobName: str) -> dict[str, Any]:
        described: dict[str, Any] = self.backend.describe_training_job(TrainingJobName)
        return described

    def list_training_jobs_for_hyper_parameter_tuning_job(self, **request: Any) -> dict[str, Any]:
        page: dict[str, Any] = self.backend.list_training_jobs_for_hyper_parameter_tuning_job(request)
        return page


def record_in_mlflow(tracking_uri: str, jobs: Mapping[str, prices.JobCost]) -> int:
    """Put each job's cost on the MLflow runs tagged with its name, in every experiment of
    ``tracking_uri``; returns how many runs changed (a run that holds the same cost already is
    left as it is)."""
    if not jobs:
        return 0
    from mlflow.entities import Metric, RunTag
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    experiments = [experiment.experiment_id for experiment in client.search_experiments()]
    if not experiments:
        return 0
    changed = 0
    for job, cost in jobs.items():
        # Only a job that has ended has its billable time; a name SageMaker would not take
        # (its pattern, botocore's model: letters, digits and hyphens) is no job's.
        if cost.billable_seconds is None or not TRAINING_JOB_NAME.fullmatch(job):
            continue
        runs = client.search_runs(experiments, filter_string=f"tags.`{contract.RUN_TAG_TRAINING_JOB}` = '{job}'")
        line = cost.line()
        for run in runs:
            if run.data.tags.get(contract.RUN_TAG_COST) == line:
                continue
            # Now, not the run's end: MLflow shows a metric's latest value by step, then time, so
            # a cost recorded again (a price added since) replaces the one before.
            now = int(time.time() * 1000)
            metrics = [Metric(contract.RUN_METRIC_BILLABLE_SECONDS, float(cost.billable_seconds), now, 0)]
            if cost.usd is not None:
                metrics.append(Metric(contract.RUN_METRIC_COST_USD, cost.usd, now, 0))
            client.log_batch(run.info.run_id, metrics=metrics, tags=[RunTag(contract.RUN_TAG_COST, line)])
            changed += 1
    return changed


def record_quietly(tracking_uri: str | None, jobs: Mapping[str, prices.JobCost],
                   say: Callable[[str], None]) -> None:
    """:func:`record_in_mlflow` where a tracking URI is known; a failure is one note, never the
    command's failure (the cost was printed already)."""
    if not tracking_uri or not jobs:
        return
    try:
        with _quick_mlflow_requests():
            changed = record_in_mlflow(tracking_uri, jobs)
    except Exception as error:
        say(f"note: the cost was not recorded in MLflow: {type(error).__name__}: {error}")
        return
    if changed:
        say(f"cost recorded on {changed} MLflow run{'s' if changed != 1 else ''}")


#: How the CLI talks to a tracking server when it records a cost (MLflow's own environment
#: variables; its defaults, 7 retries with backoff and 120 s a request, would hold a `watch` or
#: `status` for minutes when the server cannot be reached). A value the user set is kept.
QUICK_MLFLOW_REQUESTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


@contextlib.contextmanager
def _quick_mlflow_requests() -> Iterator[None]:
    added = {key: value for key, value in QUICK_MLFLOW_REQUESTS.items() if key not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)

