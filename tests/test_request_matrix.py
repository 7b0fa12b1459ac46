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


#: Inputs the state machine must accept: allowed instance types (cdk.json), counts and sizes
#: within AWS's and the stack's limits, whole numbers, ranges each strategy takes.
ALLOWED_TYPES = ["ml.m5.xlarge", "ml.m5.2xlarge", "ml.c5.2xlarge", "ml.g5.xlarge"]
valid_tuning = st.one_of(
    st.fixed_dictionaries({"strategy": st.sampled_from(["Bayesian", "Random"])},
                          optional={"maxJobs": st.integers(4, 20), "maxParallelJobs": st.integers(1, 4),
                                    "earlyStopping": st.sampled_from(["Off", "Auto"])}),
    st.fixed_dictionaries({"strategy": st.just("Grid"), "parameterRanges": categorical},
                          optional={"maxParallelJobs": st.integers(1, 4)}),
    st.fixed_dictionaries({"strategy": st.just("Hyperband")}, optional={
        "hyperband": st.integers(1, 20_000).flatmap(lambda high: st.fixed_dictionaries({
            "minResource": st.integers(1, high), "maxResource": st.just(high)}))}),
)
valid_input = st.fixed_dictionaries(
    {"method": st.sampled_from(["script", "byoc", "builtin"])},
    optional={
        "instanceType": st.sampled_from(ALLOWED_TYPES),
        "instanceCount": st.integers(1, 4),
        "spot": st.booleans(),
        "maxRuntimeInSeconds": st.integers(1, 3600),
        "volumeSizeInGB": st.integers(1, 16384),
        "hyperparameters": st.dictionaries(st.sampled_from(["seed", "note"]),
                                           st.text(alphabet="abc0123456789.", min_size=1, max_size=8),
                                           max_size=2),
        "tuning": st.one_of(st.none(), valid_tuning),
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
MATRIX_SETTINGS = settings(max_examples=10, derandomize=True, deadline=None, database=None,
                           suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                  HealthCheck.too_slow])


def _run(engine: tuple[OfflineEngine, ScriptedBackend], execution_input: dict[str, Any]) -> Any:
    offline, backend = engine
    backend.script = JobScript()
    backend.requests.clear()
    return offline.run(execution_input, name=f"matrix-{next(_runs)}", timeout=120)


@MATRIX_SETTINGS
@given(execution_input)
def test_every_request_is_valid_or_the_input_is_refused_by_name(
        engine: tuple[OfflineEngine, ScriptedBackend], execution_input: dict[str, Any]) -> None:
    """Any input: the engine's strict front end judges every create request (a refused one fails
    the execution with SageMaker.AmazonSageMakerException), so the run either succeeds or the
    state machine refused the input by name before any job existed."""
    result = _run(engine, execution_input)
    if result.status == "FAILED" and result.error in REFUSALS:
        assert engine[1].requests == [], "refused input must create no job"
        assert (result.cause or "").startswith(("field '", "the execution name")), result.cause
        return
    assert result.succeeded, (json.dumps(execution_input), result.error, result.cause)
    _assert_project_promises(engine[1].requests)


@MATRIX_SETTINGS
@given(valid_input)
def test_valid_inputs_always_reach_sagemaker(
        engine: tuple[OfflineEngine, ScriptedBackend], execution_input: dict[str, Any]) -> None:
    result = _run(engine, execution_input)
    assert result.succeeded, (json.dumps(execution_input), result.error, result.cause)
    assert engine[1].requests, "a valid input creates a job"
    _assert_project_promises(engine[1].requests)


@pytest.mark.parametrize("method", ["script", "byoc", "builtin"])
@pytest.mark.parametrize("strategy", ["Bayesian", "Random", "Hyperband", "Grid"])
def test_every_method_tunes_with_every_strategy(engine: tuple[OfflineEngine, ScriptedBackend],
                                                method: str, strategy: str) -> None:
    """Each method's defaults with each strategy (Grid with the user's categorical ranges, since
    SageMaker takes no other kind for it), spot on for half of them."""
    tuning: dict[str, Any] = {"strategy": strategy}
    if strategy == "Grid":
        tuning["parameterRanges"] = {"CategoricalParameterRanges": [{"Name": "seed",
                                                                     "Values": ["1", "2"]}]}
    spot = strategy in ("Random", "Grid")
    result = _run(engine, {"method": method, "spot": spot, "tuning": tuning})
    assert result.succeeded, (method, strategy, result.error, result.cause)
    (action, request), = engine[1].requests
    assert action == "create_hyper_parameter_tuning_job"
    assert request["HyperParameterTuningJobConfig"]["Strategy"] == strategy
    _assert_project_promises(engine[1].requests)


def _assert_project_promises(requests: list[tuple[str, dict[str, Any]]]) -> None:
    """What the README promises beyond AWS's contract (which the engine enforces)."""
    for action, request in requests:
        job = request if action == "create_training_job" else request["TrainingJobDefinition"]
        builtin = "sagemaker-xgboost" in job["AlgorithmSpecification"]["TrainingImage"]
        if job.get("EnableManagedSpotTraining") and not (builtin and action != "create_training_job"):
            assert job["CheckpointConfig"]["S3Uri"].startswith("s3://"), "spot jobs checkpoint"
        assert {"smtrain:execution", "smtrain:method"} <= {tag["Key"] for tag in request["Tags"]}
        hyperparameters = job.get("HyperParameters", job.get("StaticHyperParameters", {}))
        if job["ResourceConfig"]["InstanceCount"] > 1 and "pytorch" in job["AlgorithmSpecification"][
                "TrainingImage"]:
            assert hyperparameters["sagemaker_torch_distributed_enabled"] == "true"
