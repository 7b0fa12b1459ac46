"""Experiment tracking with MLflow, shared by the script-mode and BYOC training programs.

Tracking is on when ``MLFLOW_TRACKING_URI`` is set (a SageMaker managed MLflow tracking server's
ARN on AWS, a local store offline) and off otherwise. A run is named after the training job and
tagged with what traces it back: ``smtrain.execution``, ``smtrain.program``,
``smtrain.training_job`` and, for tuning trials, ``smtrain.tuning_job`` (from
``SMTRAIN_EXECUTION``, ``SMTRAIN_PROGRAM``, ``TRAINING_JOB_NAME``, ``SMTRAIN_TUNING_JOB``).
A tracking failure never fails training: it is reported once and tracking stops.

Where the run goes:

- by default (on AWS, or a program run by hand) the program imports MLflow when the run starts
  and logs as it trains: the run exists from the start and its metrics arrive live;
- when the offline engine sets ``SMTRAIN_TRACKING_RECORD`` (a file path), the program does not
  import MLflow at all: it appends the same run to that file, one JSON object a line, as it
  trains, and the engine, which has MLflow loaded already, logs it to ``MLFLOW_TRACKING_URI``
  when the job ends (``smtrain/local/run_record.py``): the same experiment, run name, tags
  (MLflow's own ``mlflow.user`` and ``mlflow.source.*`` included), parameters, metrics with their
  steps and times, model artifacts and final status. Importing MLflow and opening its store
  would cost a short local job seconds.
"""

from __future__ import annotations

import getpass
import json
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Any

DEFAULT_EXPERIMENT = "smtrain"
TAG_VARIABLES = {
    "smtrain.execution": "SMTRAIN_EXECUTION",
    "smtrain.program": "SMTRAIN_PROGRAM",
    "smtrain.training_job": "TRAINING_JOB_NAME",
    "smtrain.tuning_job": "SMTRAIN_TUNING_JOB",
}
#: Set by the offline engine: append the run to this file instead of logging it to MLflow.
RECORD_VARIABLE = "SMTRAIN_TRACKING_RECORD"
#: The record's format; the engine refuses a record of another version.
RECORD_VERSION = 1


class _Mlflow:
    """Logs straight to MLflow with its fluent API (imported when the run starts)."""

    def __init__(self) -> None:
        import mlflow

        self.mlflow = mlflow

    def start(self, *, uri: str, experiment: str, run_name: str | None, tags: dict[str, str],
              params: dict[str, str]) -> None:
        self.mlflow.set_tracking_uri(uri)
        self.mlflow.set_experiment(experiment)
        self.mlflow.start_run(run_name=run_name, tags=tags)
        self.mlflow.log_params(params)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.mlflow.log_metrics(metrics, step=step)

    def log_model(self, model_dir: Path) -> None:
        self.mlflow.log_artifacts(str(model_dir), artifact_path="model")

    def end(self, status: str) -> None:
        self.mlflow.end_run(status=status)


class _Record:
    """Appends the run to a JSON-lines file for the offline engine to log (see the module
    docstring); every line is flushed as it is written, so a job that is killed leaves what it
    had logged."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.file: IO[str] | None = None

    def _write(self, event: str, **fields: Any) -> None:
        if self.file is None:
            self.file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in end()
        line = json.dumps({"event": event, "time": int(time.time() * 1000), **fields})
        self.file.write(line + "\n")
        self.file.flush()

    def start(self, *, uri: str, experiment: str, run_name: str | None, tags: dict[str, str],
              params: dict[str, str]) -> None:
        del uri  # the engine logs to its own store, whatever the job was told
        # What MLflow's fluent start_run adds from its run contexts in this process (no git
        # context: the code has no repository in the image, and cdk.out is ignored by git).
        system_tags = {"mlflow.user": os.environ.get("MLFLOW_TRACKING_USERNAME") or _user(),
                       "mlflow.source.name": sys.argv[0] if sys.argv and sys.argv[0] else "<console>",
                       "mlflow.source.type": "LOCAL"}
        if os.environ.get("MLFLOW_RUN_CONTEXT"):  # MLflow's SystemEnvironmentContext
            system_tags.update(json.loads(os.environ["MLFLOW_RUN_CONTEXT"]))
        self._write("start", version=RECORD_VERSION, experiment=experiment,
                    run_name=run_name, tags={**system_tags, **tags}, params=params)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self._write("metrics", step=step, metrics=metrics)

    def log_model(self, model_dir: Path) -> None:
        self._write("artifacts", path=str(Path(model_dir).resolve()), artifact_path="model")

    def end(self, status: str) -> None:
        self._write("end", status=status)
        if self.file is not None:
            self.file.close()
            self.file = None


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name to be found (MLflow says "unknown" then too)
        return "unknown"


class Tracker:
    """``with Tracker(params=...) as tracker: tracker.log_metrics(...); tracker.log_model(dir)``."""

    def __init__(self, *, params: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> None:
        self.environ = dict(os.environ if environ is None else environ)
        self.uri = self.environ.get("MLFLOW_TRACKING_URI") or None
        self.record_path = self.environ.get(RECORD_VARIABLE) or None
        self.params = {key: str(value) for key, value in params.items()}
        self._sink: _Mlflow | _Record | None = None

    @property
    def active(self) -> bool:
        return self._sink is not None

    def _disable(self, action: str, error: Exception) -> None:
        print(f"tracking: {action} failed, continuing without MLflow: {type(error).__name__}: {error}",
              file=sys.stderr, flush=True)
        self._sink = None

    def __enter__(self) -> Tracker:
        if self.uri is None:
            return self
        try:
            sink = _Record(self.record_path) if self.record_path else _Mlflow()
            tags = {tag: self.environ[var] for tag, var in TAG_VARIABLES.items() if self.environ.get(var)}
            sink.start(uri=self.uri, experiment=self.environ.get("MLFLOW_EXPERIMENT_NAME", DEFAULT_EXPERIMENT),
                       run_name=self.environ.get("TRAINING_JOB_NAME"), tags=tags, params=self.params)
            self._sink = sink
        except Exception as error:  # tracking must never stop training
            self._disable("starting the run", error)
        return self

    def log_metrics(self, metrics: Mapping[str, float], *, step: int) -> None:
        if self._sink is None:
            return
        try:
            self._sink.log_metrics(dict(metrics), step)
        except Exception as error:
            self._disable("logging metrics", error)

    def log_model(self, model_dir: Path) -> None:
        """The saved model files, as the run's ``model`` artifacts."""
        if self._sink is None:
            return
        try:
            self._sink.log_model(model_dir)
        except Exception as error:
            self._disable("logging the model", error)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if self._sink is None:
            return
        try:
            self._sink.end("FAILED" if exc_type is not None else "FINISHED")
        except Exception as error:
            self._disable("ending the run", error)
