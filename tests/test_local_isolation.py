"""``EnableNetworkIsolation`` enforced by the local backend, not only declared.

Real CreateTrainingJob-shaped requests run by a real LocalBackend. A TCP server on 127.0.0.1,
started by the test, is what a training program tries to reach: without isolation it does (the
program really uses the network), with isolation the same program fails with a reason naming
the network error and the isolation. Script mode under isolation gets its code as the SageMaker
Python SDK ships it then: an input channel named ``code`` and ``sagemaker_submit_directory`` =
``/opt/ml/input/data/code/sourcedir.tar.gz``, run by AWS's training toolkit.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import socket
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from infra.settings import Settings
from smtrain.core import contract
from smtrain.core.programs import discover
from smtrain.local import isolation as network_isolation
from smtrain.local.deployment import ByocProgram
from smtrain.local.engine import OfflineEngine
from smtrain.local.local_backend import (
    FAILURE_REASON_LIMIT,
    Images,
    LocalBackend,
    TrainingJob,
    algorithm_error,
)
from smtrain.local.s3_stand_in import LocalS3
from smtrain.local.staleness import stale_programs
from tests.conftest import shipped_training_code, synthesize
from tests.helpers import Synthesized, process_gone, wait_idle

FIXTURES = Path(__file__).parent / "fixtures" / "isolation"
REGISTRY = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
PROGRAMS = ("reach_network", "offline", "sleeper")
#: Any image URI with ``/pytorch-training:`` is script mode for the local backend.
PYTORCH_IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.5.1-cpu-py311"
#: What the SageMaker Python SDK sets under network isolation (Framework's
#: CONTAINER_CODE_CHANNEL_SOURCEDIR_PATH) and the channel it adds (code_channel_name).
CODE_PATH = "/opt/ml/input/data/code/sourcedir.tar.gz"
CODE_URI = "s3://local-code/isolated-script/sourcedir.tar.gz"
METRICS = [{"Name": "validation:accuracy", "Regex": r"validation:accuracy=([0-9.]+)"}]

ISOLATION = network_isolation.probe()
needs_isolation = pytest.mark.skipif(not ISOLATION.available,
                                     reason=f"network isolation unavailable here: {ISOLATION.reason}")


def image(program: str) -> str:
    return f"{REGISTRY}/iso-{program.replace('_', '-')}:latest"


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[LocalBackend]:
    """A backend with one BYOC image per fixture program, and AWS's PyTorch image (script)."""
    byoc = {image(name): ByocProgram(name=name, image_uri=image(name), context_dir=FIXTURES,
                                     program_dir=FIXTURES / name, entry_point=FIXTURES / name / "train")
            for name in PROGRAMS}
    s3 = LocalS3(tmp_path / "s3")
    s3.path(CODE_URI).parent.mkdir(parents=True)
    with tarfile.open(s3.path(CODE_URI), "w:gz") as tar:  # the folder's files at the root
        tar.add(FIXTURES / "script" / "train.py", arcname="train.py")
    backend = LocalBackend(s3=s3, work_dir=tmp_path / "work", images=Images(byoc=byoc),
                           env_cache=tmp_path / "envs")
    yield backend
    for job in backend.jobs():
        backend.stop_training_job(job.name)
    wait_idle(backend, 10)


class Server:
    """A TCP server on 127.0.0.1 that answers each connection and records what it was sent."""

    def __init__(self) -> None:
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.socket.getsockname()[1]
        self.received: list[bytes] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.socket.accept()
            except OSError:
                return
            with connection:
                self.received.append(connection.recv(100))
                connection.sendall(b"welcome\n")


@pytest.fixture
def server() -> Iterator[Server]:
    running = Server()
    yield running
    running.socket.close()


def request(name: str, training_image: str, *, isolated: bool, hyperparameters: dict[str, str] | None = None,
            channels: dict[str, str] | None = None, max_runtime: int = 120) -> dict[str, Any]:
    """A CreateTrainingJob request as the state machine sends it."""
    body: dict[str, Any] = {
        "TrainingJobName": name,
        "AlgorithmSpecification": {"TrainingImage": training_image, "TrainingInputMode": "File",
                                   "MetricDefinitions": METRICS},
        "RoleArn": "arn:aws:iam::123456789012:role/local",
        "HyperParameters": hyperparameters or {},
        "InputDataConfig": [{"ChannelName": channel, "DataSource": {"S3DataSource": {
            "S3DataType": "S3Prefix", "S3Uri": uri, "S3DataDistributionType": "FullyReplicated"}}}
            for channel, uri in (channels or {}).items()],
        "OutputDataConfig": {"S3OutputPath": "s3://local-artifacts/models/"},
        "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 1},
        "StoppingCondition": {"MaxRuntimeInSeconds": max_runtime},
    }
    if isolated:
        body["EnableNetworkIsolation"] = True
    return body


def run(backend: LocalBackend, body: dict[str, Any]) -> TrainingJob:
    job = backend.register(body)
    backend.execute(job)
    return job


def log_of(job: TrainingJob) -> str:
    assert job.log_path is not None
    return job.log_path.read_text()


# -- (a), (b): the same program, with and without isolation -------------------------------------
def test_without_isolation_the_program_reaches_the_network(backend: LocalBackend, server: Server) -> None:
    job = run(backend, request("open-network", image("reach_network"), isolated=False,
                               hyperparameters={"host": "127.0.0.1", "port": str(server.port)}))
    assert job.status == "Completed", job.failure_reason
    assert server.received == [b"hello from training\n"]
    assert "server said: welcome" in log_of(job)
    assert "EnableNetworkIsolation" not in job.describe()
    assert not any("network isolation" in note for note in job.notes)


@needs_isolation
def test_with_isolation_the_same_program_fails_naming_the_network_error(
        backend: LocalBackend, server: Server) -> None:
    job = run(backend, request("isolated-network", image("reach_network"), isolated=True,
                               hyperparameters={"host": "127.0.0.1", "port": str(server.port)}))
    assert job.status == "Failed"
    assert server.received == []  # nothing got through
    reason = job.describe()["FailureReason"]
    assert reason.startswith("AlgorithmError: ")
    assert "ConnectionRefusedError" in reason  # the host's 127.0.0.1 is another namespace's
    assert reason.endswith(network_isolation.ISOLATION_HINT)
    assert len(reason) <= FAILURE_REASON_LIMIT
    assert job.describe()["EnableNetworkIsolation"] is True
    log = log_of(job)
    assert "smtrain local: network isolation (EnableNetworkIsolation)" in log
    assert any(note.startswith("network isolation") for note in job.notes)


@needs_isolation
def test_with_isolation_a_name_lookup_fails_and_is_explained(backend: LocalBackend) -> None:
    job = run(backend, request("isolated-dns", image("reach_network"), isolated=True,
                               hyperparameters={"host": "pypi.org", "mode": "dns"}))
    assert job.status == "Failed"
    reason = job.failure_reason or ""
    assert "gaierror" in reason, reason
    assert reason.startswith("AlgorithmError: ") and reason.endswith(network_isolation.ISOLATION_HINT)


# -- (c): no network needed ---------------------------------------------------------------------
@needs_isolation
def test_a_program_without_network_succeeds_under_isolation(backend: LocalBackend) -> None:
    job = run(backend, request("isolated-offline", image("offline"), isolated=True))
    assert job.status == "Completed", job.failure_reason
    log = log_of(job)
    assert "interfaces: lo\n" in log  # nothing but its own loopback...
    assert "loopback: LOOPBACK OK" in log  # ...which is up
    assert job.metrics == {"validation:accuracy": 0.97}
    assert job.model_uri is not None


@needs_isolation
def test_a_failure_that_is_not_the_network_gets_no_isolation_hint(backend: LocalBackend) -> None:
    job = run(backend, request("isolated-bad-input", image("reach_network"), isolated=True,
                               hyperparameters={"port": "1"}))  # no host: a KeyError
    assert job.status == "Failed"
    assert "KeyError: 'host'" in (job.failure_reason or "")
    assert network_isolation.ISOLATION_HINT not in (job.failure_reason or "")


def test_the_hint_always_fits_within_the_failure_reason_limit() -> None:
    hint = network_isolation.ISOLATION_HINT
    reason = algorithm_error("socket.gaierror: Name or service not known " + "x" * 3000, hint=hint)
    assert len(reason) == FAILURE_REASON_LIMIT
    assert reason.startswith("AlgorithmError: socket.gaierror") and reason.endswith("... " + hint)
    assert algorithm_error("short", hint=hint) == f"AlgorithmError: short {hint}"
    assert algorithm_error("y" * 2000) == ("AlgorithmError: " + "y" * 2000)[:FAILURE_REASON_LIMIT]


# -- stop and timeout still end the whole process group -----------------------------------------
@needs_isolation
@pytest.mark.parametrize("how", ["stop", "timeout"])
def test_stopping_an_isolated_job_kills_its_processes(backend: LocalBackend, how: str) -> None:
    job = backend.register(request(f"isolated-{how}", image("sleeper"), isolated=True,
                                   max_runtime=2 if how == "timeout" else 120))
    thread = threading.Thread(target=backend.execute, args=(job,), daemon=True)
    thread.start()
    pids_file = backend.work_dir / "jobs" / job.name / "opt_ml" / "pids"
    deadline = time.monotonic() + 20
    while not pids_file.is_file() and time.monotonic() < deadline:
        time.sleep(0.05)
    program, child = (int(pid) for pid in pids_file.read_text().split())
    assert job.process is not None and job.process.pid == program  # unshare and the helper exec'd
    if how == "stop":
        backend.stop_training_job(job.name)
    thread.join(20)
    assert job.status == "Stopped"
    expected = "MaxRuntimeExceeded" if how == "timeout" else "Stopped by request"
    assert expected in (job.failure_reason or "")
    deadline = time.monotonic() + 10
    while not (process_gone(program) and process_gone(child)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process_gone(program) and process_gone(child)


# -- (d): script mode under isolation ------------------------------------------------------------
@needs_isolation
def test_script_mode_under_isolation_gets_its_code_from_the_code_channel(backend: LocalBackend) -> None:
    body = request("isolated-script", PYTORCH_IMAGE, isolated=True, channels={"code": CODE_URI},
                   hyperparameters={"epochs": "2", "sagemaker_program": "train.py",
                                    # JSON-encoded, as the SDK sends every value
                                    "sagemaker_submit_directory": json.dumps(CODE_PATH)})
    job = run(backend, body)
    assert job.status == "Completed", job.failure_reason
    log = log_of(job)
    assert "interfaces: lo\n" in log  # the toolkit and the script ran isolated
    assert "epoch=2 validation:accuracy=0.70" in log
    assert job.metrics == {"validation:accuracy": 0.7}
    tree = backend.work_dir / "jobs" / job.name / "opt_ml"
    given = json.loads((tree / "input" / "config" / "hyperparameters.json").read_text())
    assert given["sagemaker_submit_directory"] == str(tree / "input" / "data" / "code" / "sourcedir.tar.gz")
    assert (tree / "code" / "train.py").is_file()  # the toolkit unpacked the channel's tarball
    assert job.describe()["HyperParameters"]["sagemaker_submit_directory"] == json.dumps(CODE_PATH)


@needs_isolation
def test_script_mode_under_isolation_without_the_code_channel_fails_clearly(backend: LocalBackend) -> None:
    job = run(backend, request("isolated-no-code", PYTORCH_IMAGE, isolated=True,
                               hyperparameters={"sagemaker_program": "train.py",
                                                "sagemaker_submit_directory": CODE_PATH}))
    assert job.status == "Failed"
    reason = job.failure_reason or ""
    assert reason.startswith(f"ClientError: sagemaker_submit_directory {CODE_PATH} does not exist")
    assert "channel named 'code'" in reason and "channels: none" in reason
    assert job.log_path is None  # nothing ran


def test_a_submit_directory_climbing_out_of_opt_ml_is_refused(backend: LocalBackend) -> None:
    job = run(backend, request("climbing-code", PYTORCH_IMAGE, isolated=False,
                               hyperparameters={"sagemaker_program": "train.py",
                                                "sagemaker_submit_directory": "/opt/ml/../../etc/passwd"}))
    assert job.status == "Failed"
    assert (job.failure_reason or "").startswith("ClientError: sagemaker_submit_directory")
    assert "climbs out of /opt/ml" in (job.failure_reason or "")


def test_script_mode_with_an_s3_submit_directory_still_works(backend: LocalBackend) -> None:
    job = run(backend, request("s3-script", PYTORCH_IMAGE, isolated=False,
                               hyperparameters={"sagemaker_program": "train.py",
                                                "sagemaker_submit_directory": CODE_URI}))
    assert job.status == "Completed", job.failure_reason
    assert job.metrics == {"validation:accuracy": 0.6}


# -- (e): isolation that cannot be enforced -----------------------------------------------------
def test_a_machine_that_cannot_isolate_fails_the_job_without_running_it_when_required(
        backend: LocalBackend, server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(network_isolation, "probe", lambda: network_isolation.Isolation(
        prefix=None, reason="`unshare --net` failed (exit 1: unshare failed: Operation not permitted)"))
    monkeypatch.setenv("SMTRAIN_LOCAL_ISOLATION", "require")
    job = run(backend, request("cannot-isolate", image("reach_network"), isolated=True,
                               hyperparameters={"host": "127.0.0.1", "port": str(server.port)}))
    assert job.status == "Failed"
    reason = job.failure_reason or ""
    assert reason.startswith("ClientError: EnableNetworkIsolation is set, but network isolation "
                             "could not be enforced on this machine (`unshare --net` failed")
    assert "the job was not run (SMTRAIN_LOCAL_ISOLATION=require)" in reason
    assert server.received == [] and job.process is None and job.log_path is None
    assert not (backend.work_dir / "jobs" / job.name / "opt_ml").exists()


def test_a_machine_that_cannot_isolate_runs_the_job_with_the_network_and_says_so(
        backend: LocalBackend, server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without SMTRAIN_LOCAL_ISOLATION=require (macOS, a restricted Linux): the job runs, with
    network access, and its notes say so in words no one can miss."""
    monkeypatch.setattr(network_isolation, "probe", lambda: network_isolation.Isolation(
        prefix=None, reason="`unshare` is not installed"))
    monkeypatch.delenv("SMTRAIN_LOCAL_ISOLATION", raising=False)
    job = run(backend, request("not-isolated", image("reach_network"), isolated=True,
                               hyperparameters={"host": "127.0.0.1", "port": str(server.port)}))
    assert job.status == "Completed", job.failure_reason
    assert server.received, "the job reached the network"
    (note,) = [n for n in job.notes if n.startswith("NOT ISOLATED")]
    assert "which this machine cannot enforce (`unshare` is not installed), so it ran WITH network access" in note
    assert "set SMTRAIN_LOCAL_ISOLATION=require" in note
    assert job.isolation is None


@pytest.mark.parametrize("value", ["1", "required", "REQUIRE"])
def test_an_isolation_setting_that_is_not_understood_refuses_the_job(
        backend: LocalBackend, server: Server, monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    """A typo in SMTRAIN_LOCAL_ISOLATION must not run the job with the network."""
    monkeypatch.setenv("SMTRAIN_LOCAL_ISOLATION", value)
    job = run(backend, request(f"typo-{len(value)}-{value.lower()}", image("reach_network"), isolated=True,
                               hyperparameters={"host": "127.0.0.1", "port": str(server.port)}))
    assert job.status == "Failed" and server.received == []
    assert job.failure_reason == (f"ClientError: SMTRAIN_LOCAL_ISOLATION={value!r} is not understood: set "
                                  "it to 'require' (refuse a job this machine cannot isolate), or unset it")


def test_the_probe_takes_the_first_way_that_really_isolates(monkeypatch: pytest.MonkeyPatch) -> None:
    """A way that fails (or runs but does not isolate) is passed over, and named when none works."""
    not_isolating = ("env",)  # runs the probe with the host's network: it must not count
    monkeypatch.setattr(network_isolation, "UNSHARE_VARIANTS",
                        (("unshare", "--no-such-option"), not_isolating))
    found = network_isolation._probe()
    assert not found.available
    assert found.reason is not None
    assert "`unshare --no-such-option` failed (exit 1" in found.reason
    if sorted(name for _, name in socket.if_nameindex()) != ["lo"]:  # a host with a network
        assert "`env` failed (exit 1: network interfaces" in found.reason, found.reason
    if ISOLATION.available:
        monkeypatch.setattr(network_isolation, "UNSHARE_VARIANTS",
                            (("unshare", "--no-such-option"), ISOLATION.prefix))
        assert network_isolation._probe() == ISOLATION


def test_the_probe_runs_once_per_process() -> None:
    assert network_isolation.probe() is network_isolation.probe() is ISOLATION


# -- tuning: the training job definition's flag reaches every trial ------------------------------
@needs_isolation
def test_a_tuning_jobs_trials_run_isolated(backend: LocalBackend) -> None:
    definition = request("unused", image("offline"), isolated=True)
    del definition["TrainingJobName"], definition["HyperParameters"]
    backend.create_hyper_parameter_tuning_job({
        "HyperParameterTuningJobName": "isolated-tuning",
        "HyperParameterTuningJobConfig": {
            "Strategy": "Random",
            "HyperParameterTuningJobObjective": {"Type": "Maximize", "MetricName": "validation:accuracy"},
            "ResourceLimits": {"MaxNumberOfTrainingJobs": 2, "MaxParallelTrainingJobs": 2},
            "ParameterRanges": {"IntegerParameterRanges": [{"Name": "seed", "MinValue": "1",
                                                            "MaxValue": "9"}]}},
        "TrainingJobDefinition": {**definition, "StaticHyperParameters": {}},
    })
    assert wait_idle(backend, 60)
    description = backend.describe_hyper_parameter_tuning_job("isolated-tuning")
    assert description["HyperParameterTuningJobStatus"] == "Completed", description.get("FailureReason")
    trials = backend.jobs()
    assert len(trials) == 2
    for trial in trials:
        assert trial.describe()["EnableNetworkIsolation"] is True
        assert trial.isolation == ISOLATION
        assert "interfaces: lo\n" in log_of(trial)


# -- End to end: an isolated deployment's state machine, every job run locally, isolated ----------

@pytest.fixture(scope="module")
def isolated_app(cdk_context: dict[str, Any], settings: Settings,
                 tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    """``network: isolated`` (an existing VPC), synthesized: the shipped programs, digits_mlp with
    MLflow's client as a requirements.txt of its own (its tracking requirements, which an isolated
    deployment would not ship) vendored into its bundle as wheels at synth."""
    code = shipped_training_code(tmp_path_factory.mktemp("isolated-e2e-code") / "code")
    shutil.copyfile(code / "digits_mlp" / contract.TRACKING_REQUIREMENTS,
                    code / "digits_mlp" / "requirements.txt")
    isolated = dataclasses.replace(
        settings, network="isolated", vpc_id="vpc-0123456789abcdef0",
        subnet_ids=("subnet-0123456789abcdef0", "subnet-0fedcba987654321f"))
    return synthesize(cdk_context, isolated, tmp_path_factory.mktemp("cdk.out-isolated-e2e"),
                      training_code_dir=code)


@pytest.fixture(scope="module")
def isolated_engine(isolated_app: Synthesized, sample_data: Path,
                    tmp_path_factory: pytest.TempPathFactory) -> Iterator[OfflineEngine]:
    """The isolated deployment run by the offline engine with the local backend."""
    with OfflineEngine(outdir=isolated_app.outdir,
                       work_dir=tmp_path_factory.mktemp("isolated-e2e")) as engine:
        engine.s3.put_tree(sample_data, f"s3://{engine.deployment.data_bucket}/datasets/")
        yield engine


def test_the_shipped_app_synthesizes_isolated_with_digits_mlps_requirements_vendored(
        isolated_app: Synthesized) -> None:
    """Synth no longer refuses a script program's requirements under isolation: digits_mlp's
    bundle in ``cdk.out`` holds its wheels and the rewritten requirements.txt."""
    bundles = sorted(isolated_app.outdir.glob("asset.*.tar.gz"))
    vendored = []
    for bundle in bundles:
        with tarfile.open(bundle, "r:gz") as archive:
            names = archive.getnames()
            if "wheels/requirements.txt" in names:
                vendored.append(names)
                requirements = archive.extractfile("requirements.txt")
                assert requirements is not None and b"--no-index\n" in requirements.read()
    (names,) = vendored
    assert "train.py" in names and any(n.startswith("wheels/mlflow_skinny-") for n in names)


def test_a_vendored_bundle_is_the_programs_code_for_the_staleness_check(
        isolated_app: Synthesized) -> None:
    """``smtrain start --local`` finds the synthesized app current: the bundle's wheels and its
    rewritten requirements.txt are not a change of the program's code."""
    assert stale_programs(isolated_app.outdir, discover(isolated_app.training_code)) == []


@pytest.mark.parametrize(("program", "hyperparameters"), [
    ("digits_mlp", {"epochs": "2"}),
    ("digits_lightgbm", {"num_boost_round": "20", "report_every": "10"}),
])
def test_isolated_deployment_trains_without_network(isolated_engine: OfflineEngine, program: str,
                                                    hyperparameters: dict[str, str]) -> None:
    """The job runs isolated (its log says so), script mode reads its code from the ``code``
    channel the state machine adds, and the model is trained all the same. digits_mlp's
    requirements come from its bundle's wheels: its environment was installed from them alone (no
    index, none of this machine's pip configuration, none of the project's packages), and the
    toolkit's own ``pip install -r requirements.txt`` ran in the job, with no network, and
    succeeded."""
    name = f"isolated-{program.replace('_', '-')}"
    result = isolated_engine.run({"program": program, "hyperparameters": hyperparameters},
                                 name=name, timeout=300)
    assert result.succeeded, result.cause
    backend = isolated_engine.backend
    assert isinstance(backend, LocalBackend)
    (job,) = [j for j in backend.jobs()
              if {"Key": contract.TAG_EXECUTION, "Value": name} in j.request["Tags"]]
    assert job.request["EnableNetworkIsolation"] is True
    assert any("network isolation" in note for note in job.notes)
    if program == "digits_mlp":
        assert job.request["HyperParameters"]["sagemaker_submit_directory"].startswith(
            "/opt/ml/input/data/code/")
        assert job.log_path is not None and job.python is not None
        job_dir = job.log_path.parent  # the bundle's requirements.txt and wheels/ are copied here
        assert "--no-index" in (job_dir / "requirements.txt").read_text()
        assert list((job_dir / "wheels").glob("mlflow_skinny-3.17.2-*.whl"))
        environment = job.python.parent.parent
        assert "--no-index" in (environment / "requirements.txt").read_text()
        installed = (environment / "pip.log").read_text()
        assert "Successfully installed" in installed and "mlflow-skinny-3.17.2" in installed
        assert list(environment.glob("lib/python3.*/site-packages/mlflow_skinny-3.17.2.dist-info"))
        log = log_of(job)
        assert "Installing dependencies from requirements.txt" in log
        assert "InstallRequirementsError" not in log
    assert result.output is not None
    accuracy = next(float(m["Value"]) for m in result.output["metrics"]
                    if m["MetricName"] == "validation:accuracy")
    assert accuracy >= 0.85
