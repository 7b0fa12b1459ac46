"""Property: whatever the execution input, the state machine either sends SageMaker requests that
AWS's contract accepts, or refuses the input by name before any job exists.

Inputs are generated (Hypothesis, fixed seed) over the shipped programs, reached by ``program``
or by the older ``method`` (and an unknown routing value) x tuning strategies (with each
program's default ranges and with the user's, over its declared tunable hyperparameters) x spot x
instance types and counts x user hyperparameters and channels x each channel's input mode,
S3 distribution and compression (``channelOptions``), and run through the synthesized
definition with the scripted SageMaker. Each program's names, types and bounds are read from its
manifest (``smtrain.core.programs.discover()``). The engine's strict front end (botocore's model and
the API reference's rules) judges every create request; a request it refuses fails the execution
with ``SageMaker.AmazonSageMakerException``, which this test treats as a bug of the state machine.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smtrain.core import contract, input_rules, programs
from smtrain.core.programs import Hyperparameter, Program
from smtrain.local.engine import OfflineEngine
from tests.conftest import SHIPPED_PROGRAMS
from tests.helpers import Synthesized
from tests.scripted_sagemaker import JobScript, ScriptedBackend, scripted_engine

#: The state machine's own refusals (its Fail state's error names).
REFUSALS = {contract.INVALID_INPUT_ERROR, contract.UNKNOWN_PROGRAM_ERROR}
#: How a refusal's cause begins: each names the field, hyperparameter, channel or range at fault
#: (the JSONata rules of smtrain.core.input_rules, then the state machine's JSONPath checks).
REFUSAL_CAUSES = ("field '", "the execution name", "unknown field(s) ", "give field '",
                  "hyperparameter '", "hyperparameter(s) ", "input channel '", "tuning range ",
                  "tuning.parameterRanges.", "tuning objective '", "unknown tuning field(s) ", "channel '")

#: The programs the synthesized app deploys, as their manifests declare them.
PROGRAMS: dict[str, Program] = {name: program for name, program in programs.discover().items()
                                if name in SHIPPED_PROGRAMS}
assert sorted(PROGRAMS) == sorted(SHIPPED_PROGRAMS)
#: The older routing: each kind the shipped programs have exactly one program of.
METHODS = {program.kind: name for name, program in PROGRAMS.items()}
assert len(METHODS) == len(PROGRAMS)

STRATEGIES = ["Bayesian", "Random", "Hyperband", "Grid"]
INSTANCE_TYPES = ["ml.m5.xlarge", "ml.c5.2xlarge", "ml.g5.xlarge", "ml.p3.2xlarge", "ml.t2.medium"]
#: cdk.json's allowed instance types.
ALLOWED_TYPES = ["ml.m5.xlarge", "ml.m5.2xlarge", "ml.c5.2xlarge", "ml.g5.xlarge"]
#: Bounds of undeclared ones, for generating values.
UNBOUNDED = 1_000_000


# -- Values and ranges each program's manifest allows --------------------------------------------

def _bounds(hyperparameter: Hyperparameter) -> tuple[float, float]:
    low = hyperparameter.min if hyperparameter.min is not None else -UNBOUNDED
    high = hyperparameter.max if hyperparameter.max is not None else max(low, 0) + UNBOUNDED
    return low, high


def valid_value(hyperparameter: Hyperparameter) -> st.SearchStrategy[str]:
    """Text the manifest's declaration accepts (its type, within its bounds)."""
    low, high = _bounds(hyperparameter)
    if hyperparameter.type == "int":
        return st.integers(int(low), int(high)).map(str)
    if hyperparameter.type == "float":
        # Python's shortest round-trip text (1e-06, 0.05, 2.5) and a fixed-point text with a
        # trailing zero (2.10), which must reach SageMaker as typed.
        return st.one_of(
            st.floats(low, high, allow_nan=False, allow_infinity=False).map(repr),
            st.integers(int(low * 100) + 1, int(high * 100)).map(lambda n: f"{n / 100:.2f}")
            if int(high * 100) > int(low * 100) else st.just(repr(float(low))))
    if hyperparameter.type == "bool":
        return st.sampled_from(contract.BOOL_VALUES)
    if hyperparameter.type == "categorical":
        return st.sampled_from(hyperparameter.values)
    return st.text(alphabet="abcxyz:_-0123456789", min_size=1, max_size=12)


def _range_text(hyperparameter: Hyperparameter, value: float) -> str:
    return str(int(value)) if hyperparameter.type == "int" else repr(float(value))


def numeric_range(hyperparameter: Hyperparameter) -> st.SearchStrategy[tuple[str, dict[str, Any]]]:
    """An Integer- or ContinuousParameterRanges entry within the declared bounds, MinValue below
    MaxValue, with a scaling SageMaker takes for those values."""
    low, high = _bounds(hyperparameter)
    kind = "IntegerParameterRanges" if hyperparameter.type == "int" else "ContinuousParameterRanges"
    numbers = (st.integers(int(low), int(high)) if hyperparameter.type == "int"
               else st.floats(low, high, allow_nan=False, allow_infinity=False))

    def entry(pair: list[float]) -> st.SearchStrategy[tuple[str, dict[str, Any]]]:
        first, second = sorted(pair)
        scalings = ["Auto", "Linear"] + (["Logarithmic"] if first > 0 else [])
        return st.sampled_from(scalings).map(lambda scaling: (kind, {
            "Name": hyperparameter.name, "MinValue": _range_text(hyperparameter, first),
            "MaxValue": _range_text(hyperparameter, second), "ScalingType": scaling}))

    return st.lists(numbers, min_size=2, max_size=2, unique=True).flatmap(entry)


def categorical_range(hyperparameter: Hyperparameter) -> st.SearchStrategy[tuple[str, dict[str, Any]]]:
    """A CategoricalParameterRanges entry whose values the declaration accepts."""
    return st.lists(valid_value(hyperparameter), min_size=1, max_size=3, unique=True).map(
        lambda values: ("CategoricalParameterRanges", {"Name": hyperparameter.name, "Values": values}))


def _grouped(entries: Sequence[tuple[str, dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    ranges: dict[str, list[dict[str, Any]]] = {}
    for kind, entry in entries:
        ranges.setdefault(kind, []).append(entry)
    return ranges


def tunable(program: Program) -> list[Hyperparameter]:
    return [h for h in program.hyperparameters.values() if h.tunable]


def valid_ranges(program: Program, *, grid: bool) -> st.SearchStrategy[dict[str, Any]]:
    """ParameterRanges over 1-3 of the program's declared tunable hyperparameters, each once: of
    the kind its type takes (only categorical ones for Grid, SageMaker's rule)."""
    def entry(hyperparameter: Hyperparameter) -> st.SearchStrategy[tuple[str, dict[str, Any]]]:
        if grid or hyperparameter.type not in ("int", "float"):
            return categorical_range(hyperparameter)
        return st.one_of(numeric_range(hyperparameter), categorical_range(hyperparameter))

    return st.lists(st.sampled_from(tunable(program)), min_size=1, max_size=3,
                    unique_by=lambda h: h.name).flatmap(
        lambda chosen: st.tuples(*[entry(h) for h in chosen])).map(_grouped)


def tuned_names(program: Program, tuning: dict[str, Any] | None) -> set[str]:
    """What a tuning job would tune: the user's ranges, or else the program's default ones."""
    if tuning is None:
        return set()
    assert program.tuning is not None
    ranges = tuning.get("parameterRanges", program.tuning.parameter_ranges)
    return {entry["Name"] for entries in ranges.values() for entry in entries}


def grid_ranges(program: Program) -> dict[str, Any]:
    """Two valid values of the program's first tunable hyperparameter with a default."""
    hyperparameter = next(h for h in tunable(program) if h.default is not None)
    assert hyperparameter.default is not None
    default = hyperparameter.default
    if hyperparameter.type == "int":
        above = int(default) + 1
        other = str(above if hyperparameter.max is None or above <= hyperparameter.max
                    else int(default) - 1)
    else:
        other = repr(float(default) / 2)
    values = [default, other]
    assert all(programs.value_problem(hyperparameter, value) is None for value in values), values
    return {"CategoricalParameterRanges": [{"Name": hyperparameter.name, "Values": values}]}


# -- Any input -----------------------------------------------------------------------------------

#: The routing fields: each shipped program by name or by its kind ...
VALID_ROUTES: list[dict[str, Any]] = [*({"program": name} for name in PROGRAMS),
                                      *({"method": kind} for kind in METHODS)]
#: ... and values that name none, or two at once.
ROUTES: list[dict[str, Any]] = [*VALID_ROUTES, {"method": "sklearn"}, {"program": "sklearn"},
                                {"method": 3}, {}, {"program": "digits_mlp", "method": "script"}]


def _program_of(route: dict[str, Any]) -> Program:
    """The program whose names an input is generated over (digits_mlp's for a routing value
    that names none: the input is refused for its routing first)."""
    name = route.get("program") if "method" not in route else METHODS.get(route["method"])
    return PROGRAMS[name] if isinstance(name, str) and name in PROGRAMS else PROGRAMS["digits_mlp"]


def _any_hyperparameters(program: Program) -> st.SearchStrategy[dict[str, Any]]:
    declared = sorted(program.hyperparameters)
    value = st.one_of(st.text(alphabet="abc0123456789.-e", min_size=1, max_size=8),
                      st.integers(-3, 3))
    valid = st.sampled_from(declared).flatmap(
        lambda name: st.tuples(st.just(name), valid_value(program.hyperparameters[name])))
    invalid = st.tuples(st.sampled_from([*declared, "note", "sagemaker_program"]), value)
    return st.lists(st.one_of(valid, valid, invalid), max_size=3).map(dict)


def _any_ranges(program: Program) -> st.SearchStrategy[dict[str, Any]]:
    """Valid ranges (of each kind), and ranges the rules refuse: on an untunable or undeclared
    name, of a kind that does not fit, outside the declared bounds."""
    return st.one_of(
        valid_ranges(program, grid=False),
        valid_ranges(program, grid=True),
        st.sampled_from([
            {"CategoricalParameterRanges": [{"Name": "seed", "Values": ["1", "2"]}]},
            {"CategoricalParameterRanges": [{"Name": "dropout", "Values": ["0.1", "0.2"]}]},
            {"ContinuousParameterRanges": [{"Name": "momentum", "MinValue": "0.1",
                                            "MaxValue": "0.9", "ScalingType": "Linear"}]},
            {"CategoricalParameterRanges": []},
        ]),
        st.sampled_from(tunable(program)).map(lambda h: {
            "ContinuousParameterRanges" if h.type == "int" else "IntegerParameterRanges": [
                {"Name": h.name, "MinValue": "1", "MaxValue": "2"}]}),
        st.sampled_from(tunable(program)).map(lambda h: {"CategoricalParameterRanges": [
            {"Name": h.name, "Values": ["-5", "not-a-value"]}]}),
    )


def _any_tuning(program: Program) -> st.SearchStrategy[dict[str, Any] | None]:
    fields = {
        "strategy": st.sampled_from([*STRATEGIES, "Genetic"]),
        "maxJobs": st.one_of(st.integers(0, 600), st.just(2.5)),
        "maxParallelJobs": st.integers(1, 12),
        "earlyStopping": st.sampled_from(["Off", "Auto"]),
        "objective": st.fixed_dictionaries({
            "metricName": st.sampled_from([*program.metric_names, "bogus:metric"]),
            "type": st.sampled_from(["Maximize", "Minimize"])}),
        "hyperband": st.fixed_dictionaries({"minResource": st.integers(0, 30),
                                            "maxResource": st.integers(1, 25_000)}),
    }
    return st.one_of(
        st.none(),
        st.fixed_dictionaries({}, optional=fields),
        st.fixed_dictionaries({"parameterRanges": _any_ranges(program)}, optional=fields),
    )


def _any_inputs(program: Program) -> st.SearchStrategy[dict[str, Any]]:
    channels = [c.name for c in program.channels]
    return st.dictionaries(
        st.sampled_from([*channels, "test"]),
        st.sampled_from(["s3://elsewhere/train/", "s3://bucket", "/local/dir", "s3://b/k"]),
        max_size=2)


def _channel_options(channels: Sequence[str], *, valid: bool) -> st.SearchStrategy[dict[str, Any]]:
    """channelOptions over the program's channels: every input mode, distribution and compression
    SageMaker names (valid: Gzip only with Pipe), or anything near them."""
    if valid:
        option = st.one_of(
            st.fixed_dictionaries({}, optional={
                "inputMode": st.sampled_from(contract.INPUT_MODES),
                "s3DataDistributionType": st.sampled_from(contract.S3_DATA_DISTRIBUTIONS),
                "compressionType": st.just("None")}),
            st.fixed_dictionaries({"inputMode": st.just("Pipe"), "compressionType": st.just("Gzip")},
                                  optional={"s3DataDistributionType": st.sampled_from(
                                      contract.S3_DATA_DISTRIBUTIONS)}))
        return st.dictionaries(st.sampled_from(list(channels)), option, max_size=2)
    option = st.fixed_dictionaries({}, optional={
        "inputMode": st.sampled_from([*contract.INPUT_MODES, "Stream", 1]),
        "s3DataDistributionType": st.sampled_from([*contract.S3_DATA_DISTRIBUTIONS, "Sharded"]),
        "compressionType": st.sampled_from([*contract.COMPRESSION_TYPES, "Zip"]),
        "mode": st.just("Pipe")})
    return st.dictionaries(st.sampled_from([*channels, "test"]), option, max_size=2)


def any_input_for(route: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    program = _program_of(route)
    body = st.fixed_dictionaries({}, optional={
        "instanceType": st.sampled_from(INSTANCE_TYPES),
        "instanceCount": st.one_of(st.integers(0, 6), st.just(2.0)),
        "spot": st.booleans(),
        "maxRuntimeInSeconds": st.integers(0, 5000),
        "volumeSizeInGB": st.integers(0, 20_000),
        "hyperparameters": _any_hyperparameters(program),
        "inputs": _any_inputs(program),
        "channelOptions": _channel_options([c.name for c in program.channels], valid=False),
        "tuning": _any_tuning(program),
    })
    # Now and then a field the input does not have (a typo of one it has, a feature it lacks).
    unknown = st.sampled_from([*[{}] * 6, {"hyperparameter": {"epochs": "3"}}, {"registry": {}}])
    return st.tuples(body, unknown).map(lambda parts: {**route, **parts[0], **parts[1]})


execution_input = st.sampled_from(ROUTES).flatmap(any_input_for)


# -- Valid input ---------------------------------------------------------------------------------

def _valid_tuning(program: Program) -> st.SearchStrategy[dict[str, Any]]:
    return st.one_of(
        st.fixed_dictionaries({"strategy": st.sampled_from(["Bayesian", "Random"])}, optional={
            "maxJobs": st.integers(4, 20), "maxParallelJobs": st.integers(1, 4),
            "earlyStopping": st.sampled_from(["Off", "Auto"]),
            "parameterRanges": valid_ranges(program, grid=False)}),
        st.fixed_dictionaries({"strategy": st.just("Grid"),
                               "parameterRanges": valid_ranges(program, grid=True)},
                              optional={"maxParallelJobs": st.integers(1, 4)}),
        st.fixed_dictionaries({"strategy": st.just("Hyperband")}, optional={
            "parameterRanges": valid_ranges(program, grid=False),
            "hyperband": st.integers(1, 20_000).flatmap(lambda high: st.fixed_dictionaries({
                "minResource": st.integers(1, high), "maxResource": st.just(high)}))}),
    )


def _valid_hyperparameters(program: Program, tuned: set[str]) -> st.SearchStrategy[dict[str, str]]:
    """Declared hyperparameters with values their declarations accept; none that is tuned (the
    docs/execution-input.md: a tuned hyperparameter must not also be given)."""
    names = sorted(set(program.hyperparameters) - tuned)
    return st.lists(st.sampled_from(names), max_size=3, unique=True).flatmap(
        lambda chosen: st.fixed_dictionaries(
            {name: valid_value(program.hyperparameters[name]) for name in chosen}))


def valid_input_for(route: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    program = _program_of(route)
    channels = [c.name for c in program.channels]
    body = st.fixed_dictionaries({}, optional={
        "instanceType": st.sampled_from(ALLOWED_TYPES),
        "instanceCount": st.integers(1, 4),
        "spot": st.booleans(),
        "maxRuntimeInSeconds": st.integers(1, 3600),
        "volumeSizeInGB": st.integers(1, 16384),
        "inputs": st.dictionaries(st.sampled_from(channels),
                                  st.sampled_from(["s3://elsewhere/train/", "s3://b/k"]), max_size=2),
        "channelOptions": _channel_options(channels, valid=True),
        "tuning": st.one_of(st.none(), _valid_tuning(program)),
    })

    def with_hyperparameters(fields: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
        tuned = tuned_names(program, fields.get("tuning"))
        none: st.SearchStrategy[dict[str, Any]] = st.just({})
        return st.one_of(none, _valid_hyperparameters(program, tuned).map(
            lambda hyperparameters: {"hyperparameters": hyperparameters})).map(
            lambda extra: {**route, **fields, **extra})

    return body.flatmap(with_hyperparameters)


valid_input = st.sampled_from(VALID_ROUTES).flatmap(valid_input_for)


# -- Running them ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def engine(synthesized: Synthesized,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[OfflineEngine, ScriptedBackend]]:
    backend = ScriptedBackend()
    with scripted_engine(outdir=synthesized.outdir, work_dir=tmp_path_factory.mktemp("matrix"),
                       backend=backend) as offline:
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
    state machine refused the input by name before any job existed. Where the manifests' rules
    (the CLI's check) find a problem, the execution fails with that very problem."""
    result = _run(engine, execution_input)
    checked = input_rules.check(PROGRAMS, execution_input)
    if checked.problems:
        assert (result.status, result.error, result.cause) == (
            "FAILED", checked.problems[0]["error"], checked.problems[0]["cause"]), json.dumps(
            execution_input)
    if result.status == "FAILED" and result.error in REFUSALS:
        assert engine[1].requests == [], "refused input must create no job"
        assert (result.cause or "").startswith(REFUSAL_CAUSES), result.cause
        return
    assert result.succeeded, (json.dumps(execution_input), result.error, result.cause)
    assert checked.program is not None
    _assert_project_promises(engine, execution_input, checked.program, result.name)


@MATRIX_SETTINGS
@given(valid_input)
def test_valid_inputs_always_reach_sagemaker(
        engine: tuple[OfflineEngine, ScriptedBackend], execution_input: dict[str, Any]) -> None:
    assert input_rules.check(PROGRAMS, execution_input).problems == [], json.dumps(execution_input)
    result = _run(engine, execution_input)
    assert result.succeeded, (json.dumps(execution_input), result.error, result.cause)
    assert engine[1].requests, "a valid input creates a job"
    _assert_project_promises(engine, execution_input, _program_of(execution_input).name,
                             result.name)


@pytest.mark.parametrize("program", sorted(PROGRAMS))
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_program_tunes_with_every_strategy(engine: tuple[OfflineEngine, ScriptedBackend],
                                                 program: str, strategy: str) -> None:
    """Each program's defaults with each strategy (Grid with the user's categorical range over a
    declared tunable hyperparameter, since SageMaker takes no other kind for it), spot on for
    half of them."""
    tuning: dict[str, Any] = {"strategy": strategy}
    if strategy == "Grid":
        tuning["parameterRanges"] = grid_ranges(PROGRAMS[program])
    spot = strategy in ("Random", "Grid")
    execution_input = {"program": program, "spot": spot, "tuning": tuning}
    result = _run(engine, execution_input)
    assert result.succeeded, (program, strategy, result.error, result.cause)
    (action, request), = engine[1].requests
    assert action == "create_hyper_parameter_tuning_job"
    config = request["HyperParameterTuningJobConfig"]
    assert config["Strategy"] == strategy
    if strategy == "Grid":
        assert config["ParameterRanges"] == tuning["parameterRanges"]
    _assert_project_promises(engine, execution_input, program, result.name)


def _assert_project_promises(engine: tuple[OfflineEngine, ScriptedBackend],
                             execution_input: dict[str, Any], program_name: str,
                             execution: str) -> None:
    """What docs/execution-input.md promises beyond AWS's contract (which the engine enforces)."""
    program = PROGRAMS[program_name]
    given_hyperparameters: dict[str, str] = execution_input.get("hyperparameters", {})
    inputs: dict[str, str] = execution_input.get("inputs", {})
    data_bucket = engine[0].deployment.data_bucket
    for action, request in engine[1].requests:
        job: dict[str, Any] = (request if action == "create_training_job"
                               else request["TrainingJobDefinition"])
        builtin = program.kind == "builtin"
        assert builtin == ("sagemaker-xgboost" in job["AlgorithmSpecification"]["TrainingImage"])
        if job.get("EnableManagedSpotTraining") and not (builtin and action != "create_training_job"):
            assert job["CheckpointConfig"]["S3Uri"].startswith("s3://"), "spot jobs checkpoint"
        assert {tag["Key"]: tag["Value"] for tag in request["Tags"]} == {
            "project": "smtrain", contract.TAG_EXECUTION: execution,
            contract.TAG_PROGRAM: program.name, contract.TAG_KIND: program.kind}
        hyperparameters: dict[str, str] = dict(job.get("HyperParameters",
                                                       job.get("StaticHyperParameters", {})))
        # The user's values exactly as typed; the untunable defaults on every job; nothing
        # undeclared but the fixed sagemaker_* ones.
        for name, value in given_hyperparameters.items():
            assert hyperparameters[name] == value, name
        for name, value in program.always_sent.items():
            assert hyperparameters[name] == given_hyperparameters.get(name, value), name
        assert {name for name in hyperparameters if not name.startswith("sagemaker_")} <= set(
            program.hyperparameters)
        tuned = {entry["Name"] for entries in request.get("HyperParameterTuningJobConfig", {}).get(
            "ParameterRanges", {}).values() for entry in entries}
        assert not tuned & set(hyperparameters), "a tuned hyperparameter is not also static"
        if job["ResourceConfig"]["InstanceCount"] > 1 and "pytorch" in job["AlgorithmSpecification"][
                "TrainingImage"]:
            assert hyperparameters["sagemaker_torch_distributed_enabled"] == "true"
        channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"]
                    for c in job["InputDataConfig"]}
        # Under the default network (sealed) a script program's code is one more channel: the
        # tarball that sagemaker_submit_directory names in the container.
        if program.kind == "script":
            code_uri = channels.pop(contract.CODE_CHANNEL)
            assert job["EnableNetworkIsolation"] is True
            assert hyperparameters["sagemaker_submit_directory"] == (
                f"{contract.CODE_CHANNEL_DIR}/{code_uri.rsplit('/', 1)[1]}")
        assert channels == {c.name: inputs.get(c.name, contract.default_channel_uri(
            data_bucket, program.name, c.name)) for c in program.channels}
