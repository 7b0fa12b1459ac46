"""The SageMaker training contract, read and written directly (no training toolkit).

Everything lives under one base directory, ``/opt/ml`` in a training job;
``SAGEMAKER_BASE_DIR`` overrides it (the same variable the AWS toolkit honours), for tests.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_BASE_DIR = "/opt/ml"


class ContractError(ValueError):
    """The job's configuration under /opt/ml is missing or malformed."""


@dataclass(frozen=True)
class TrainingEnvironment:
    base_dir: Path

    @classmethod
    def from_environment(cls, environ: dict[str, str] | None = None) -> TrainingEnvironment:
        env = os.environ if environ is None else environ
        return cls(Path(env.get("SAGEMAKER_BASE_DIR", DEFAULT_BASE_DIR)))

    @property
    def config_dir(self) -> Path:
        return self.base_dir / "input" / "config"

    @property
    def model_dir(self) -> Path:
        return self.base_dir / "model"

    @property
    def failure_file(self) -> Path:
        return self.base_dir / "output" / "failure"

    def channel_dir(self, channel: str) -> Path:
        return self.base_dir / "input" / "data" / channel

    def _read_json(self, name: str, *, required: bool) -> Any:
        path = self.config_dir / name
        if not path.is_file():
            if required:
                raise ContractError(f"{path} is missing")
            return {}
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ContractError(f"{path} is not valid JSON: {error}") from error

    def hyperparameters(self) -> dict[str, str]:
        """``hyperparameters.json``: SageMaker sends every value as a string."""
        values = self._read_json("hyperparameters.json", required=False)
        if not isinstance(values, dict) or not all(isinstance(v, str) for v in values.values()):
            raise ContractError("hyperparameters.json must map names to string values")
        return values

    def channels(self) -> dict[str, Any]:
        """``inputdataconfig.json``: the channels SageMaker mounted, by name."""
        config = self._read_json("inputdataconfig.json", required=False)
        if not isinstance(config, dict):
            raise ContractError("inputdataconfig.json must be an object of channels")
        return config

    def require_channel(self, channel: str) -> Path:
        declared = self.channels()
        if declared and channel not in declared:
            raise ContractError(f"channel '{channel}' is required but the job declares only "
                                f"{sorted(declared)}")
        directory = self.channel_dir(channel)
        if not directory.is_dir():
            raise ContractError(f"channel '{channel}' is required but {directory} does not exist")
        return directory

    def write_failure(self, message: str) -> None:
        """What SageMaker shows as the job's FailureReason (it keeps the first 1024 bytes)."""
        self.failure_file.parent.mkdir(parents=True, exist_ok=True)
        self.failure_file.write_text(message)
