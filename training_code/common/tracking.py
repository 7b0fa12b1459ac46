"""Experiment tracking with MLflow, shared by the script-mode and BYOC training programs.

Tracking is on when ``MLFLOW_TRACKING_URI`` is set (a SageMaker managed MLflow tracking server's
ARN on AWS, a local store offline) and off otherwise. A run is named after the training job and
tagged with what traces it back: ``smtrain.execution``, ``smtrain.program``,
``smtrain.training_job`` and, for tuning trials, ``smtrain.tuning_job`` (from
``SMTRAIN_EXECUTION``, ``SMTRAIN_PROGRAM``, ``TRAINING_JOB_NAME``, ``SMTRAIN_TUNING_JOB``).
A tracking failure never fails training: it is reported once and tracking stops.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

DEFAULT_EXPERIMENT = "smtrain"
TAG_VARIABLES = {
    "smtrain.execution": "SMTRAIN_EXECUTION",
    "smtrain.program": "SMTRAIN_PROGRAM",
    "smtrain.training_job": "TRAINING_JOB_NAME",
    "smtrain.tuning_job": "SMTRAIN_TUNING_JOB",
}


class Tracker:
    """``with Tracker(params=...) as tracker: tracker.log_metrics(...); tracker.log_model(dir)``."""

    def __init__(self, *, params: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> None:
        self.environ = dict(os.environ if environ is None else environ)
        self.uri = self.environ.get("MLFLOW_TRACKING_URI") or None
        self.params = {key: str(value) for key, value in params.items()}
        self._mlflow: Any = None

    @property
    def active(self) -> bool:
        return self._mlflow is not None

    def _disable(self, action: str, error: Exception) -> None:
        print(f"tracking: {action} failed, continuing without MLflow: {type(error).__name__}: {error}",
              file=sys.stderr, flush=True)
        self._mlflow = None

    def __enter__(self) -> Tracker:
        if self.uri is None:
            return self
        try:
            import mlflow

            mlflow.set_tracking_uri(self.uri)
            mlflow.set_experiment(self.environ.get("MLFLOW_EXPERIMENT_NAME", DEFAULT_EXPERIMENT))
            tags = {tag: self.environ[var] for tag, var in TAG_VARIABLES.items() if self.environ.get(var)}
            mlflow.start_run(run_name=self.environ.get("TRAINING_JOB_NAME"), tags=tags)
            mlflow.log_params(self.params)
            self._mlflow = mlflow
        except Exception as error:  # tracking must never stop training
            self._disable("starting the run", error)
        return self

    def log_metrics(self, metrics: Mapping[str, float], *, step: int) -> None:
        if self._mlflow is None:
            return
        try:
            self._mlflow.log_metrics(dict(metrics), step=step)
        except Exception as error:
            self._disable("logging metrics", error)

    def log_model(self, model_dir: Path) -> None:
        """The saved model files, as the run's ``model`` artifacts."""
        if self._mlflow is None:
            return
        try:
            self._mlflow.log_artifacts(str(model_dir), artifact_path="model")
        except Exception as error:
            self._disable("logging the model", error)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if self._mlflow is None:
            return
        try:
            self._mlflow.end_run(status="FAILED" if exc_type is not None else "FINISHED")
        except Exception as error:
            self._disable("ending the run", error)
