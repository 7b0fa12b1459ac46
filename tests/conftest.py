"""Shared fixtures: the app synthesized once per session from the real cdk.json context."""

from __future__ import annotations

import atexit
import gc
import json
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from filelock import FileLock

from infra.node_runtime import use_pinned_node
from smtrain.core import contract

#: Set once an xdist worker's session has ended (its pytest_unconfigure, its last hook).
_worker_done: list[bool] = []


def _end_finished_worker() -> None:
    """An xdist worker whose session has ended leaves without the interpreter's finalization:
    its last garbage collection and the freeing of every module (the CDK's jsii classes, moto,
    botocore, MLflow, torch) took 2.5-5 s of a run's last seconds, after its last test, with
    nothing left to write (measured with faulthandler: no Python frame left to run). Exit
    handlers run last-registered first: this one, registered here, runs after every handler
    registered once this module is imported, jsii's stop of Node among them (``import aws_cdk``
    in ``pytest_configure`` below starts Node). Of those registered before it, logging's is
    called here (its handlers flushed); filelock's releases locks the process's exit releases
    anyway, and execnet's ends gateways a worker does not open. The status is 0, as a worker's
    is: xdist reads its results from the channel, not from the process."""
    if _worker_done:
        import logging

        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


if os.environ.get("PYTEST_XDIST_WORKER"):
    atexit.register(_end_finished_worker)


use_pinned_node()

from infra.settings import CONTEXT_KEY, Settings, settings_from_context  # noqa: E402
from tests.helpers import Synthesized  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
REGION = "us-east-1"


def _runs_tests(config: pytest.Config) -> bool:
    """False in xdist's controller (``-n`` given, no ``workerinput``): it collects and runs no
    test, only hands them to its workers and reports."""
    return hasattr(config, "workerinput") or not getattr(config.option, "numprocesses", None)


def _skip_final_garbage_collections(config: pytest.Config) -> None:
    """An xdist worker skips pytest's garbage collections at the session's end: one as the
    session is unconfigured, one as its unraisable-exception hook is taken down, each over every
    object the worker made (2.8 s together at the end of the last worker's run, measured with
    faulthandler). They are there to report exceptions raised in finalizers of garbage left in
    reference cycles; a worker would only print those to the terminal after it has sent its
    results, and what a test leaves behind is still reported during the run. Without xdist they
    run as ever. pytest reads how many to make from this stash key (5 on PyPy, 1 on CPython),
    set to 0 here; a pytest without the key is left as it is."""
    try:
        from _pytest.unraisableexception import gc_collect_iterations_key
    except ImportError:
        return
    config.stash[gc_collect_iterations_key] = 0


def pytest_configure(config: pytest.Config) -> None:
    """A process that runs tests loads the CDK (``import aws_cdk`` starts Node) and botocore's
    data loader first; xdist's controller loads neither. It used to, on importing this module:
    about 1.5 s of its start, before it starts its workers, and a Node of its own that stayed
    idle until the end."""
    if not _runs_tests(config):
        return
    if hasattr(config, "workerinput"):
        _skip_final_garbage_collections(config)
    import aws_cdk  # noqa: F401

    # One botocore data loader per test process (smtrain/local/botocore_data.py, imported for
    # that): every boto3 session (the CLI, run in-process by ``tests/helpers.run_cli``, makes one
    # per command) reads botocore's service models once, not once per session (measured: 721
    # model files read in tests/test_cli.py, 8 s).
    from smtrain.local import botocore_data  # noqa: F401


def pytest_unconfigure(config: pytest.Config) -> None:
    # An xdist worker's own session only (xdist gives it ``workerinput``): a pytest started
    # inside a worker inherits PYTEST_XDIST_WORKER, and its exit status is its own.
    if hasattr(config, "workerinput"):
        _worker_done.append(True)


@pytest.fixture(scope="session")
def cdk_context() -> dict[str, Any]:
    context: dict[str, Any] = json.loads((ROOT / "cdk.json").read_text())["context"]
    return context


@pytest.fixture(scope="session")
def settings(cdk_context: dict[str, Any]) -> Settings:
    return settings_from_context(cdk_context[CONTEXT_KEY], region=REGION)


#: The test modules that read the session's trained runs (:func:`trained`): with xdist they
#: run on one worker, so the programs train once per session.
TRAINED_READERS = frozenset({"test_offline_local", "test_registry_offline", "test_tracking", "test_serving"})


#: The modules of 2 s or more, longest first (the trained runs' modules as one, since they run
#: together), as measured on 2026-12-07 (``pytest -p`` a plugin timing each test; about the sum
#: of ``--durations``): a worker takes the next module when it is free, so with the long ones
#: started first no worker is left with one of them at the end while the other idles (the last
#: module used to be one of 10 s, after one of 40 s that was not in this list). Modules not
#: named here run after these, in their order; a slow new module belongs here.
LONGEST_FIRST = ("test_bring_your_own", "test_offline_local", "test_registry_offline", "test_tracking",
                 "test_serving", "test_program_commands", "test_training_script_mode", "test_cli",
                 "test_offline_scripted", "test_notebook", "test_app_start", "test_local_isolation",
                 "test_framework_matrix", "test_training_image", "test_program_envs",
                 "test_model_registry_local", "test_preflight", "test_request_matrix", "test_team_queue",
                 "test_network", "test_first_hour", "test_local_failures", "test_assembly_cache", "test_lint",
                 "test_cluster", "test_training_byoc", "test_local_reruns", "test_frameworks", "test_programs",
                 "test_source_bundle", "test_models_cli", "test_builtin_catalogue", "test_job_security",
                 "test_experiment_tracking_stack", "test_input_rules", "test_run_cost", "test_sample_data",
                 "test_structure", "test_registration_offline_scripted")


def pytest_collection_finish(session: pytest.Session) -> None:
    """Python's garbage collector takes less of a worker's time. What collection loaded (the CDK's
    jsii classes, moto, botocore, the engine) lives until the worker ends: after one collection,
    it is frozen out of the collector's passes. And the worker's collector is tuned as a
    command's (:func:`smtrain.core.command_process.tune_garbage_collector`: a full pass, over
    every object not frozen, more than a million in a worker by the end and 0.45 s a pass, after
    1,000 passes of the middle generation instead of 10; the young generations are collected as
    before). Measured: with Python's default, tests/test_cli.py with tests/test_offline_local.py
    alone spent 2.5 s and 3.8 s of their two workers' time in full passes (12-16 %); over the
    whole suite, a full pass every 100 middle passes made 15-17 full passes and 7 s in each
    worker, every 1,000 made 8-9 (most of them code's own ``gc.collect()``) and 1.2-1.4 s. The
    cost is memory: the garbage that full passes would have freed sooner, a worker's peak
    1.5-1.9 GB instead of 1.2-1.5 GB (with 100)."""
    from smtrain.core.command_process import tune_garbage_collector

    gc.collect()
    gc.freeze()
    tune_garbage_collector()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A module that reads the trained runs must be one of :data:`TRAINED_READERS`; the
    :data:`LONGEST_FIRST` modules run first."""
    for item in items:
        if isinstance(item, pytest.Function) and "trained" in item.fixturenames:
            assert item.path.stem in TRAINED_READERS, f"{item.path.name}: add it to TRAINED_READERS"
    rank = {module: index for index, module in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.stem, len(rank)))  # stable: a module's order stays


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Each module's tests run on one xdist worker (its module-scoped fixtures, a synthesized
    configuration or a moto server, are built once), and :data:`TRAINED_READERS` together.
    (xdist's own ``loadgroup`` marks do nothing under pytest 9, which no longer reads the node
    ids xdist rewrites; its ``loadscope`` scheduler is meant to be extended like this.)"""
    from xdist.scheduler import LoadScopeScheduling

    class ModuleScheduling(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return "trained runs" if Path(module).stem in TRAINED_READERS else module

    return ModuleScheduling(config, log)


#: The project's program of each kind: the stack tests synthesize these alone, so that a program a
#: team adds to training_code/ changes no snapshot and no assertion about them. (The framework
#: samples, digits_sklearn and the others, are scaffolds; tests/test_program_commands.py trains
#: them, tests/test_bring_your_own.py synthesizes and runs programs of every framework.)
SHIPPED_PROGRAMS = ("digits_mlp", "digits_lightgbm", "digits_xgboost")
SHARED_CODE = ("common",)


def shipped_training_code(destination: Path) -> Path:
    """A copy of training_code/ holding only the shipped programs and their shared code."""
    import shutil

    source = ROOT / "training_code"
    destination.mkdir(parents=True, exist_ok=True)
    for name in (*SHIPPED_PROGRAMS, *SHARED_CODE):
        shutil.copytree(source / name, destination / name,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"), dirs_exist_ok=True)
    return destination


def code_without_script_requirements(destination: Path) -> Path:
    """The shipped programs with digits_mlp's tracking requirements (only MLflow's client) taken
    out. Where jobs are tracked under ``network`` vpc they would be vendored into its bundle as
    wheels (48 of them, about 34 MB); tests about the network's resources, not the bundle, go
    without them and keep their synth light. ``tests/test_local_isolation.py`` synthesizes them
    vendored."""
    code = shipped_training_code(destination)
    (code / "digits_mlp" / contract.TRACKING_REQUIREMENTS).unlink()
    return code


def synthesize(context: dict[str, Any], settings: Settings, outdir: Path,
               training_code_dir: Path | None = None, *, fresh: bool = False) -> Synthesized:
    """The app of ``context`` and ``settings`` over ``training_code_dir`` (default: a copy of the
    shipped programs beside ``outdir``), synthesized into ``outdir``: copied from an earlier
    run's synth of the same inputs where one is kept (tests/assembly_cache.py), unless ``fresh``
    (a synth whose inputs a test patches in memory, which the cache's key cannot see)."""
    from tests.assembly_cache import synthesize_now, synthesized_through_cache

    code = training_code_dir or shipped_training_code(outdir.parent / f"{outdir.name}-training-code")
    if fresh:
        return synthesize_now(context, settings, outdir, code)
    return synthesized_through_cache(context, settings, outdir, code,
                                     lambda: synthesize_now(context, settings, outdir, code))


def synthesized_once(name: str, tmp_path_factory: pytest.TempPathFactory,
                     build: Callable[[Path], Synthesized]) -> Synthesized:
    """``build(outdir)`` once per test run: under xdist the first worker to get here synthesizes
    into the run's shared temporary folder and records the templates beside it; the others wait
    for it (a file lock) and read them. Tests read a shared assembly and never write to it."""
    worker_tmp = tmp_path_factory.getbasetemp()
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return build(tmp_path_factory.mktemp(name))
    shared = worker_tmp.parent / "shared"
    shared.mkdir(exist_ok=True)
    record = shared / f"{name}.json"
    with FileLock(str(shared / f"{name}.lock")):
        if record.is_file():
            return Synthesized.from_json(record.read_text())
        built = build(shared / name)
        record.write_text(built.to_json())
        return built


@pytest.fixture(scope="session")
def synthesized(cdk_context: dict[str, Any], settings: Settings,
                tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    return synthesized_once("cdk.out", tmp_path_factory,
                            lambda outdir: synthesize(cdk_context, settings, outdir))


@pytest.fixture(scope="session")
def public_app(cdk_context: dict[str, Any], settings: Settings,
               tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    """The shipped app with ``network: public`` (containers reach the internet; the default is
    sealed): the baseline the tracking settings switch from."""
    import dataclasses

    training = {**cdk_context["training"], "network": "public"}
    return synthesized_once("cdk.out-public", tmp_path_factory, lambda outdir: synthesize(
        {**cdk_context, "training": training}, dataclasses.replace(settings, network="public"), outdir))


@pytest.fixture(scope="session")
def vpc_with_tracking_server(cdk_context: dict[str, Any], settings: Settings,
                             tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    """``network: vpc`` in the VPC the stack creates, with the MLflow tracking server: digits_mlp
    without its requirements (no vendored wheels to pack: :func:`code_without_script_requirements`)."""
    import dataclasses

    def build(outdir: Path) -> Synthesized:
        code = code_without_script_requirements(outdir.parent / f"{outdir.name}-code")
        return synthesize(cdk_context, dataclasses.replace(settings, network="vpc",
                                                           experiment_tracking="server"),
                          outdir, training_code_dir=code)

    return synthesized_once("cdk.out-vpc-tracking", tmp_path_factory, build)


@pytest.fixture(scope="session")
def tracking_server_app(cdk_context: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    """``experimentTracking: server`` (a Medium server) with ``network: public`` (jobs reach the
    server only with a network; the default, sealed, gives them none): one synth for the stack's
    checks (tests/test_experiment_tracking_stack.py) and the IAM reference's
    (tests/test_iam_reference.py)."""
    training = {**cdk_context["training"], "experimentTracking": "server",
                "mlflowTrackingServerSize": "Medium", "network": "public"}
    settings = settings_from_context(training, region=REGION)
    return synthesized_once("cdk.out-tracking-server", tmp_path_factory, lambda outdir: synthesize(
        {**cdk_context, "training": training}, settings, outdir))


@pytest.fixture(scope="session")
def team_queue_app(cdk_context: dict[str, Any], settings: Settings,
                   tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    """``queue: batch`` with fair share and 4 instances of capacity (tests/test_team_queue.py)."""
    import dataclasses

    return synthesized_once("cdk.out-team-queue", tmp_path_factory, lambda outdir: synthesize(
        cdk_context, dataclasses.replace(settings, queue="batch", queue_max_instances=4,
                                         queue_fair_share=True), outdir))


#: Programs written the way public examples are (tests/fixtures/programs): with the shipped ones,
#: two BYOC programs and script programs on each framework (PyTorch twice).
BROUGHT_PROGRAMS = ("pytorch_example", "tree_byoc", "sklearn_example", "xgboost_script_example",
                    "tensorflow_example", "huggingface_example")
#: The brought script programs by framework.
BROUGHT_FRAMEWORKS = {"pytorch": "pytorch_example", "sklearn": "sklearn_example",
                      "xgboost": "xgboost_script_example", "tensorflow": "tensorflow_example",
                      "huggingface": "huggingface_example"}


@pytest.fixture(scope="session")
def brought_training_code(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped training_code/ plus the brought programs, each added as a folder only."""
    import shutil

    code = shipped_training_code(tmp_path_factory.mktemp("training_code"))
    for name in BROUGHT_PROGRAMS:
        shutil.copytree(ROOT / "tests" / "fixtures" / "programs" / name, code / name)
    return code


@pytest.fixture(scope="session")
def with_brought_programs(cdk_context: dict[str, Any], settings: Settings, brought_training_code: Path,
                          tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    """The app synthesized with the shipped programs and the brought ones (a script program on
    each framework, another BYOC program)."""
    return synthesized_once("cdk.out-byo", tmp_path_factory, lambda outdir: synthesize(
        cdk_context, settings, outdir, training_code_dir=brought_training_code))


@pytest.fixture(scope="session")
def sample_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample datasets for every method, as ``python -m training_code.sample_data`` writes them."""
    from training_code.sample_data import write_datasets

    out = tmp_path_factory.mktemp("sample-data")
    write_datasets(out)
    return out


@dataclass(frozen=True)
class TrainedRuns:
    """Runs of the shipped programs, each trained once per session for real through the
    synthesized state machine (MLflow tracking on, registration as each program's manifest
    says), read by every test that needs a trained run."""

    #: The engine that ran them (a ``smtrain.local.engine.OfflineEngine``, imported lazily: moto),
    #: not entered: ``with trained.engine:`` to run more on it.
    engine: Any
    #: Per program: one training run (``digits_xgboost`` started by its older ``method`` name).
    training: dict[str, Any]
    #: ``digits_lightgbm`` tuned, 3 jobs, 2 at once (the third waits), its best registered with
    #: a description and no gate. (``digits_mlp`` is tuned by the notebook's test, through the same
    #: state machine: a tuning run's behaviour is the engine's, not the program's.)
    tuning: dict[str, Any]


#: Small enough for the suite's time, large enough that each model clears its gate (measured:
#: validation accuracy ~0.95 and more, XGBoost's merror ~0.05).
TRAINED_INPUTS: dict[str, dict[str, Any]] = {
    # At its defaults: what a user's first run trains (tests/test_offline_local.py checks them).
    "digits_mlp": {"program": "digits_mlp"},
    "digits_lightgbm": {"program": "digits_lightgbm",
                        "hyperparameters": {"num_boost_round": "30", "report_every": "10"}},
    "digits_xgboost": {"method": "builtin", "hyperparameters": {"num_round": "20"}},
}
TUNED_INPUTS: dict[str, dict[str, Any]] = {
    "digits_lightgbm": {"program": "digits_lightgbm",
                        "hyperparameters": {"num_boost_round": "20", "report_every": "5"},
                        "tuning": {"maxJobs": 3, "maxParallelJobs": 2},
                        "register": {"description": "best of a sweep", "minimum": {}}},
}


def trained_name(program: str, *, tuning: bool = False) -> str:
    """The execution name of a shared run (``trained-digits-mlp``, ``tuned-digits-lightgbm``)."""
    return f"{'tuned' if tuning else 'trained'}-{program.replace('_', '-')}"


@pytest.fixture(scope="session")
def trained(synthesized: Synthesized, sample_data: Path,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrainedRuns]:
    from smtrain.local.engine import OfflineEngine

    engine = OfflineEngine(outdir=synthesized.outdir, work_dir=tmp_path_factory.mktemp("trained"))
    # As Python runs on most machines, writing bytecode next to what it imports (this machine's
    # environment turns that off): the jobs must still leave the cloud assembly as synthesized.
    # Entered only while the runs train: one engine serves SageMaker at a time in a process, so a
    # module that runs more executions on it enters it again (its jobs, files, registry and
    # MLflow store stay; moto's executions start afresh).
    with engine, pytest.MonkeyPatch.context() as bytecode:
        bytecode.delenv("PYTHONDONTWRITEBYTECODE", raising=False)
        engine.s3.put_tree(sample_data, f"s3://{engine.deployment.data_bucket}/datasets/")
        # The tuning runs' trials run two at a time; the training runs start meanwhile.
        started = {("tuning", program): engine.start(execution_input, name=trained_name(program, tuning=True))
                   for program, execution_input in TUNED_INPUTS.items()}
        started |= {("training", program): engine.start(execution_input, name=trained_name(program))
                    for program, execution_input in TRAINED_INPUTS.items()}
        results = {key: engine.wait(arn, timeout=900) for key, arn in started.items()}
        for (kind, program), result in results.items():
            assert result.succeeded, (kind, program, result.error, result.cause)
    yield TrainedRuns(
        engine=engine,
        training={program: result for (kind, program), result in results.items() if kind == "training"},
        tuning={program: result for (kind, program), result in results.items() if kind == "tuning"})
