"""What the offline engine asks of "SageMaker": the API subset the state machine uses.

Two implementations: :class:`~smtrain.local.local_backend.LocalBackend` runs every job for real
on this machine; :class:`tests.scripted_sagemaker.ScriptedBackend` (a test double) answers from a script
that a test supplies and records every request.
"""

from __future__ import annotations

from typing import Any, Protocol

Request = dict[str, Any]
Description = dict[str, Any]

#: Training and tuning job statuses after which a job never changes again.
TERMINAL_STATUSES = frozenset({"Completed", "Failed", "Stopped"})


class SageMakerError(Exception):
    """A SageMaker API error; Step Functions names it ``SageMaker.<code>``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class SageMakerBackend(Protocol):
    def create_training_job(self, request: Request) -> Description: ...

    def describe_training_job(self, name: str) -> Description: ...

    def stop_training_job(self, name: str) -> None: ...

    def create_hyper_parameter_tuning_job(self, request: Request) -> Description: ...

    def describe_hyper_parameter_tuning_job(self, name: str) -> Description: ...

    def stop_hyper_parameter_tuning_job(self, name: str) -> None: ...
