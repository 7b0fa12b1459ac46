"""Registration as the synthesized state machine does it, on moto's interpreter with a scripted
SageMaker (no training): the quality gate's boundary, the retries of ``RegisterModelVersion``
(``aws-sdk:sagemaker:createModelPackage``) and of ``DescribeBestTrainingJob``
(``aws-sdk:sagemaker:describeTrainingJob``), and the ``ClientToken`` that keeps a retried or
repeated registration to one version (issue 19, item 11: these were only checked as template
values).

The error a throttled call gets is SageMaker's ``ThrottlingException`` ("Rate exceeded"): the
code botocore's retry handler treats as throttling for every service (botocore/data/_retry.json,
``general.throttling_exception``: ``service_error_code: ThrottlingException``) and the one the
SageMaker API reference's "Common Errors" lists ("ThrottlingException: The request was denied due
to request throttling", HTTP 400). SageMaker's service model defines no such exception shape, so
the AWS SDK integration names it after the SDK's base class, ``SageMaker.SageMakerException``
(``smtrain/local/strict_sagemaker.py`` says how the engine names it, with its sources).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from smtrain.core import contract
from smtrain.local.backend import Description, Request, SageMakerError
from smtrain.local.engine import ExecutionResult, OfflineEngine
from smtrain.local.model_registry import LocalModelRegistry
from tests.helpers import Synthesized
from tests.scripted_sagemaker import JobScript, ScriptedBackend, scripted_engine, throttling

PROGRAM = "digits_mlp"
#: What the scripted jobs report (FinalMetricDataList).
METRICS = (("validation:accuracy", 0.97), ("validation:loss", 0.2))


def lost_answer() -> SageMakerError:
    """A call SageMaker carried out whose answer never came back (a 503 after the write)."""
    return SageMakerError("ServiceUnavailable", "Service Unavailable")


@dataclass
class FlakyRegistry:
    """The engine's registry, with errors scripted for ``create_model_package``: each of
    :attr:`before` is raised before the call reaches the registry, each of :attr:`after` once
    the registry has made the version (its answer lost). Every request is kept in :attr:`calls`."""

    registry: LocalModelRegistry
    before: list[SageMakerError] = field(default_factory=list)
    after: list[SageMakerError] = field(default_factory=list)
    calls: list[Request] = field(default_factory=list)

    def create_model_package(self, request: Request) -> Description:
        self.calls.append(json.loads(json.dumps(request)))
        if self.before:
            raise self.before.pop(0)
        answer = self.registry.create_model_package(request)
        if self.after:
            raise self.after.pop(0)
        return answer

    def __getattr__(self, name: str) -> Any:
        return getattr(self.registry, name)


class DescribeThrottled(ScriptedBackend):
    """A scripted SageMaker whose describe of a tuning job's trial (what
    ``DescribeBestTrainingJob`` asks for) first raises each of :attr:`describe_errors`."""

    def __init__(self) -> None:
        super().__init__()
        self.describe_errors: list[SageMakerError] = []
        self.trial_describes = 0

    def describe_training_job(self, name: str) -> Description:
        if self._tuning_job_of(name) is not None and name not in self._jobs:
            self.trial_describes += 1
            if self.describe_errors:
                raise self.describe_errors.pop(0)
        return super().describe_training_job(name)


@dataclass
class Registering:
    engine: OfflineEngine
    backend: DescribeThrottled
    registry: FlakyRegistry
    count: int = 0

    def run(self, execution_input: dict[str, Any], *, name: str | None = None) -> ExecutionResult:
        self.backend.script = JobScript(metrics=METRICS)
        self.count += 1
        return self.engine.run(execution_input, name=name or f"registering-{self.count}", timeout=120)

    def versions(self) -> list[str]:
        group = self.engine.deployment.model_groups[contract.output_id(PROGRAM)]
        return [summary["ModelPackageArn"] for summary in self.registry.registry.list_model_packages(group)]


@pytest.fixture(scope="module")
def registering(synthesized: Synthesized, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registering]:
    backend = DescribeThrottled()
    engine = scripted_engine(outdir=synthesized.outdir, work_dir=tmp_path_factory.mktemp("registering"),
                             backend=backend)
    flaky = FlakyRegistry(engine.registry)
    engine.registry = flaky  # type: ignore[assignment]  # served as the registry on entering
    with engine:
        yield Registering(engine, backend, flaky)


@pytest.fixture(autouse=True)
def no_scripted_errors(registering: Registering) -> None:
    registering.registry.before.clear()
    registering.registry.after.clear()
    registering.registry.calls.clear()
    registering.backend.describe_errors.clear()
    registering.backend.trial_describes = 0


def gated(bound: str, limit: float) -> dict[str, Any]:
    return {"program": PROGRAM, "register": {bound: {"validation:loss": limit}}}


# -- the gate, executed -----------------------------------------------------------------------
def test_a_model_exactly_at_its_maximum_is_registered(registering: Registering) -> None:
    output = registering.run(gated("maximum", 0.2)).output
    assert output is not None
    assert (output["registered"], output["registrationReason"]) == (
        True, "meets the quality gate: validation:accuracy 0.97 >= 0.9, validation:loss 0.2 <= 0.2")


def test_a_model_just_above_its_maximum_is_not_registered(registering: Registering) -> None:
    before = registering.versions()
    output = registering.run(gated("maximum", 0.1999)).output
    assert output is not None
    assert (output["registered"], output["registrationReason"]) == (
        False, "not registered: validation:loss 0.2 is above the maximum 0.1999")
    assert registering.versions() == before and registering.registry.calls == []


# -- retries ----------------------------------------------------------------------------------
def test_a_throttled_registration_is_retried_and_registers_once(registering: Registering) -> None:
    before = registering.versions()
    registering.registry.before = [throttling(), throttling()]
    result = registering.run({"program": PROGRAM})
    assert result.succeeded, result.cause
    assert result.output is not None and result.output["registered"] is True
    assert len(registering.registry.calls) == 3
    assert registering.versions() == [result.output["modelPackageArn"], *before]


def test_registration_gives_up_after_three_retries_naming_the_model(registering: Registering) -> None:
    """Retry's MaxAttempts 3: four calls in all, then the execution fails with a cause naming
    the model artifact and the throttling, and no version is made."""
    before = registering.versions()
    registering.registry.before = [throttling() for _ in range(4)]
    result = registering.run({"program": PROGRAM})
    assert (result.status, result.error) == ("FAILED", contract.REGISTRATION_FAILED_ERROR)
    assert len(registering.registry.calls) == 4
    assert "was not registered" in (result.cause or "") and "ThrottlingException" in (result.cause or "")
    assert registering.versions() == before


def test_a_retried_registration_whose_answer_was_lost_makes_one_version(registering: Registering) -> None:
    """The first call made the version but its answer never came back: the retry sends the same
    ClientToken, so SageMaker answers that version and makes no second one (API reference,
    CreateModelPackage ``ClientToken``: "A unique token that guarantees that the call to this
    API is idempotent")."""
    before = registering.versions()
    registering.registry.after = [lost_answer()]
    result = registering.run({"program": PROGRAM})
    assert result.succeeded, result.cause
    assert result.output is not None
    first, retried = registering.registry.calls
    assert first["ClientToken"] == retried["ClientToken"]
    assert registering.versions() == [result.output["modelPackageArn"], *before]


def test_an_execution_name_reused_after_a_redeploy_registers_a_new_version(registering: Registering) -> None:
    """A redeployed state machine (same name, so the same execution ARN for the same execution
    name) runs ``nightly`` again: a new model, so a new version, not the old one handed back."""
    engine = registering.engine
    first = registering.run({"program": PROGRAM}, name="nightly")
    assert first.succeeded, first.cause
    engine.client.delete_state_machine(stateMachineArn=engine.state_machine_arn)
    redeployed = engine.client.create_state_machine(
        name=engine.deployment.state_machine_name, type="STANDARD",
        definition=json.dumps(engine.deployment.definition),
        roleArn="arn:aws:iam::123456789012:role/local-state-machine")["stateMachineArn"]
    assert redeployed == engine.state_machine_arn
    second = registering.run({"program": PROGRAM}, name="nightly")
    assert second.succeeded, second.cause
    assert first.arn == second.arn
    assert first.output is not None and second.output is not None
    assert second.output["registered"] is True
    assert second.output["modelPackageArn"] != first.output["modelPackageArn"]
    assert registering.versions()[:2] == [second.output["modelPackageArn"], first.output["modelPackageArn"]]


def test_a_throttled_describe_of_the_best_trial_is_retried(registering: Registering) -> None:
    registering.backend.describe_errors = [throttling(), throttling()]
    result = registering.run({"program": PROGRAM, "tuning": {"maxJobs": 2, "maxParallelJobs": 1}})
    assert result.succeeded, result.cause
    # Twice throttled, then answered; then once per training job for the run's cost (TuningCost).
    trials = registering.backend.script.tuning_jobs
    assert registering.backend.trial_describes == 3 + trials
    assert result.output is not None and result.output["cost"]["trainingJobs"] == trials
    assert result.output is not None and result.output["registered"] is True
