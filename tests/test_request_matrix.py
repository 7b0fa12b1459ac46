"""Property: whatever the execution input, the state machine either sends SageMaker requests that
AWS's contract accepts, or refuses the input by name before any job exists.

Inputs are generated (Hypothesis, fixed seed) over methods x tuning strategies (with each
method's default ranges and with the user's) x spot x instance types and counts x user
hyperparameters, and run through the synthesized definition with the scripted SageMaker. The
engine's strict front end (botocore's model and the API reference's rules) judges every create
request; a request it refuses fails the execution with ``SageMaker.AmazonSageMakerException``,
which this test treats as a bug of the state machine.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smtrain.local.engine import OfflineEngine
from smtrain.local.sagemaker_model import request_violations
from smtrain.local.sagemaker_rules import rule_violations
from tests.helpers import Synthesized
from tests.scripted_sagemaker import JobScript, ScriptedBackend

#: The state machine's own refusals (its Fail state's error names).
REFUSALS = {"InvalidExecutionInput", "UnknownMethod"}

METHODS = ["script", "byoc", "builtin", "sklearn"]
STRATEGIES = [None, "Bayesian", "Random", "Hyperband", "Grid", "Genetic"]
INSTANCE_TYPES = ["ml.m5.xlarge", "ml.c5.2xlarge", "ml.g5.xlarge", "ml.p3.2xlarge", "ml.t2.medium"]

categorical = st.fixed_dictionaries({
    "CategoricalParameterRanges": st.lists(st.fixed_dictionaries({
        "Name": st.sampled_from(["batch-size", "optimizer", "dropout"]),
        "Values": st.lists(st.sampled_from(["1", "2", "3"]), min_size=1, max_size=3, unique=True),
    }), min_size=1, max_size=1)})
numeric = st.fixed_dictionaries({
    "ContinuousParameterRanges": st.just([{"Name": "momentum", "MinValue": "0.1",
                                           "MaxValue": "0.9", "ScalingType": "Linear"}])})

tuning_input = st.one_of(
    st.none(),
    st.fixed_dictionaries({}, optional={
        "strategy": st.sampled_from([s for s in STRATEGIES if s]),
        "maxJobs": st.one_of(st.integers(0, 600), st.just(2.5)),
        "maxParallelJobs": st.integers(1, 12),
        "parameterRanges": st.one_of(categorical, numeric),
        "earlyStopping": st.sampled_from(["Off", "Auto"]),
        "hyperband": st.fixed_dictionaries({"minResource": st.integers(0, 30),
                                            "maxResource": st.integers(1, 25_000)}),
    }),
)

execution_input = st.fixed_dictionaries(
    {"method": st.sampled_from(METHODS)},
    optional={
        "instanceType": st.sampled_from(INSTANCE_TYPES),
        "instanceCount": st.one_of(st.integers(0, 6), st.just(2.0)),
        "spot": st.booleans(),
        "maxRuntimeInSeconds": st.integers(0, 5000),
        "volumeSizeInGB": st.integers(0, 20_000),
        "hyperparameters": st.dictionaries(
            st.sampled_from(["epochs", "seed", "note", "num_round"]),
            st.text(alphabet="abc0123456789.", min_size=1, max_size=8), max_size=3),
        "tuning": tuning_input,
    },
)


@pytest.fixture(scope="module")
def engine(synthesized: Synthesized,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[OfflineEngine, ScriptedBackend]]:
    backend = ScriptedBackend()
    with OfflineEngine(outdir=synthesized.outdir, work_dir=tmp_path_factory.mktemp("matrix"),
                       backend=backend, retry_interval_seconds=1) as offline:
        yield offline, backend


_runs = iter(range(1_000_000))


@settings(max_examples=15, derandomize=True, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(execution_input)
def test_every_request_is_valid_or_the_input_is_refused_by_name(
        engine: tuple[OfflineEngine, ScriptedBackend], execution_input: dict[str, Any]) -> None:
    offline, backend = engine
    backend.script = JobScript()
    backend.requests.clear()
    result = offline.run(execution_input, name=f"matrix-{next(_runs)}", timeout=120)
    if result.status == "FAILED" and result.error in REFUSALS:
        assert backend.requests == [], "refused input must create no job"
        assert (result.cause or "").startswith(("field '", "the execution name")), result.cause
        return
    assert result.succeeded, (json.dumps(execution_input), result.error, result.cause)
    for action, request in backend.requests:
        operation = {"create_training_job": "CreateTrainingJob",
                     "create_hyper_parameter_tuning_job": "CreateHyperParameterTuningJob"}[action]
        assert request_violations(operation, request) == []
        assert rule_violations(operation, request) == []
        _assert_project_promises(operation, request, execution_input)


def _assert_project_promises(operation: str, request: dict[str, Any],
                             execution_input: dict[str, Any]) -> None:
    """What the README promises beyond AWS's contract."""
    job = request if operation == "CreateTrainingJob" else request["TrainingJobDefinition"]
    if job.get("EnableManagedSpotTraining"):
        assert job["CheckpointConfig"]["S3Uri"].startswith("s3://"), "every spot job checkpoints"
    tags = {tag["Key"] for tag in request["Tags"]}
    assert {"smtrain:execution", "smtrain:method"} <= tags
