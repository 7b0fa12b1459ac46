"""SageMaker's ``RetryStrategy`` is sent only when the ``sagemakerRetryAttempts`` setting asks for it.

Why off by default: Step Functions checks the fields of an optimized integration's ``Parameters``
against its own list when the state machine is created (``SCHEMA_VALIDATION_FAILED: The field
"X" is not supported by Step Functions``: aws/amazon-sagemaker-examples#4492,
aws-step-functions-data-science-sdk-python#200), and no AWS document lists ``RetryStrategy`` as
supported by ``createTrainingJob.sync`` or ``createHyperParameterTuningJob.sync``. Where it is off,
no task sends it; where on, every training job and every tuning trial gets it, and the engine's
strict front end (botocore's sagemaker model) accepts the requests both ways.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import aws_cdk as cdk
import pytest

from infra.constructs.training_job_task import TrainingJobTask
from infra.constructs.tuning_job_task import TuningJobTask
from infra.settings import Settings
from smtrain.local.engine import OfflineEngine
from tests.conftest import synthesize
from tests.helpers import Synthesized
from tests.scripted_sagemaker import JobScript, ScriptedBackend, scripted_engine

#: The definition's three SageMaker create tasks, and where each puts a job's request fields.
TASKS = {"TrainModel": (), "TuneModel": ("TrainingJobDefinition",),
         "TuneBuiltinModel": ("TrainingJobDefinition",)}


def _job_fields(definition: dict[str, Any], task: str) -> dict[str, Any]:
    fields: dict[str, Any] = definition["States"][task]["Parameters"]
    for key in TASKS[task]:
        fields = fields[key]
    return fields


# -- the tasks alone -----------------------------------------------------------------------------
def _task_kwargs() -> dict[str, Any]:
    return {"name_prefix": "smtrain", "role_arns": ["arn:aws:iam::123456789012:role/r"],
            "kms_key_arn": "arn:aws:kms:us-east-1:123456789012:key/k"}


def _render(retries: int | None) -> tuple[dict[str, Any], dict[str, Any]]:
    stack = cdk.Stack(cdk.App(), "Tasks")
    training = TrainingJobTask(stack, "Train", sagemaker_retries=retries, **_task_kwargs())
    tuning = TuningJobTask(stack, "Tune", checkpoints=False, sagemaker_retries=retries, **_task_kwargs())
    return (training.to_state_json()["Parameters"],
            tuning.to_state_json()["Parameters"]["TrainingJobDefinition"])


def test_the_tasks_send_no_retry_strategy_unless_asked() -> None:
    training, trials = _render(None)
    assert "RetryStrategy" not in training and "RetryStrategy" not in trials
    training, trials = _render(30)
    assert training["RetryStrategy"] == trials["RetryStrategy"] == {"MaximumRetryAttempts": 30}


@pytest.mark.parametrize("retries", [0, 31, True, 2.0])
def test_a_retry_count_sagemaker_refuses_fails_naming_it(retries: Any) -> None:
    """1 to 30 (API reference, RetryStrategy.MaximumRetryAttempts; botocore's sagemaker model)."""
    with pytest.raises(ValueError, match=r"^sagemaker_retries must be None \(no RetryStrategy\) or an "
                                         r"integer from 1 to 30, got "):
        _render(retries)


# -- the synthesized app, both ways --------------------------------------------------------------
@pytest.fixture(scope="module")
def with_retries(cdk_context: dict[str, Any], settings: Settings,
                 tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    return synthesize(cdk_context, dataclasses.replace(settings, sagemaker_retry_attempts=3),
                      tmp_path_factory.mktemp("cdk.out-retries"))


def test_by_default_no_task_sends_retry_strategy(synthesized: Synthesized) -> None:
    definition = synthesized.definition()
    for task in TASKS:
        fields = _job_fields(definition, task)
        assert "RetryStrategy" not in fields and "RetryStrategy.$" not in fields, task
    assert "RetryStrategy" not in str(synthesized.workflow)


def test_the_setting_puts_retry_strategy_on_every_job(with_retries: Synthesized) -> None:
    definition = with_retries.definition()
    for task in TASKS:
        assert _job_fields(definition, task)["RetryStrategy"] == {"MaximumRetryAttempts": 3}, task


def _run_both(synthesized: Synthesized, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScriptedBackend]:
    backend = ScriptedBackend()
    with scripted_engine(outdir=synthesized.outdir, work_dir=tmp_path_factory.mktemp("retry-runs"),
                         backend=backend) as engine:
        yield _train_and_tune(engine, backend)


def _train_and_tune(engine: OfflineEngine, backend: ScriptedBackend) -> ScriptedBackend:
    """A training run and a tuning run through the definition on moto's interpreter; the engine's
    strict front end judges each create request against botocore's sagemaker model."""
    backend.script = JobScript()
    for name, execution_input in (("train", {"program": "digits_mlp"}),
                                  ("tune", {"program": "digits_mlp", "tuning": {"maxJobs": 2}})):
        result = engine.run(execution_input, name=name, timeout=120)
        assert result.succeeded, (name, result.error, result.cause)
    return backend


@pytest.mark.parametrize("configured", [False, True], ids=["off", "on"])
def test_the_requests_pass_the_strict_front_end_both_ways(
        configured: bool, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> None:
    synthesized: Synthesized = request.getfixturevalue("with_retries" if configured else "synthesized")
    for backend in _run_both(synthesized, tmp_path_factory):
        (training,) = backend.created("create_training_job")
        (tuning,) = backend.created("create_hyper_parameter_tuning_job")
        expected = {"MaximumRetryAttempts": 3} if configured else None
        assert training.get("RetryStrategy") == expected
        assert tuning["TrainingJobDefinition"].get("RetryStrategy") == expected
        assert "RetryStrategy" not in tuning, "CreateHyperParameterTuningJob takes it per trial only"
