"""The offline engine: the synthesized state machine, executed by moto's ASL interpreter.

    with OfflineEngine(outdir=Path("cdk.out"), work_dir=Path(".work/run")) as engine:
        result = engine.run({"method": "script"}, name="first-run")

The definition comes from ``cdk.out`` with every reference resolved to a local stand-in (see
:mod:`smtrain.local.deployment`); SageMaker tasks go to a backend: by default
:class:`~smtrain.local.local_backend.LocalBackend`, which really trains, or any
:class:`~smtrain.local.backend.SageMakerBackend` (tests pass a scripted one).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from smtrain.core import contract
from smtrain.local import execution_records
from smtrain.local.backend import SageMakerBackend
from smtrain.local.batch_queue import JobQueue, LocalBatchQueue
from smtrain.local.deployment import ACCOUNT, LocalDeployment, load_deployment
from smtrain.local.local_backend import Images, LocalBackend
from smtrain.local.model_registry import LocalModelRegistry
from smtrain.local.program_envs import default_cache_dir
from smtrain.local.s3_stand_in import LocalS3
from smtrain.local.sfn_sagemaker import serve_sagemaker

TERMINAL_EXECUTION_STATUSES = frozenset({"SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED"})
#: How often :meth:`OfflineEngine.wait` reads a followed execution's history (progress lines).
FOLLOW_EVERY_SECONDS = 0.5


@dataclass(frozen=True)
class ExecutionResult:
    name: str
    arn: str
    status: str
    output: dict[str, Any] | None
    error: str | None
    cause: str | None
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def succeeded(self) -> bool:
        return self.status == "SUCCEEDED"

    def states_entered(self) -> list[str]:
        return [e["stateEnteredEventDetails"]["name"] for e in self.events
                if "stateEnteredEventDetails" in e]


EventCallback = Callable[[dict[str, Any]], None]
TRACKING_EXPERIMENT = contract.EXPERIMENT


def _empty_store_template() -> Path:
    """An MLflow SQLite store with the installed MLflow's schema and nothing else, made once per
    MLflow version in the program environments' cache (``<cache>/mlflow-stores``; the cache is
    ``~/.cache/smtrain/envs`` or ``SMTRAIN_ENV_CACHE``). Creating a store runs MLflow's schema
    migrations (about 0.7 s); a copy of this one has the same tables at the same revision, which
    MLflow checks when it opens it."""
    import mlflow
    from mlflow.tracking import MlflowClient

    template = default_cache_dir() / "mlflow-stores" / f"empty-{mlflow.__version__}.db"
    if template.is_file():
        return template
    template.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=template.parent) as scratch:
        database = Path(scratch) / "mlflow.db"
        MlflowClient(tracking_uri=f"sqlite:///{database}").search_experiments()
        os.replace(database, template)  # whole or not at all, whoever else makes it meanwhile
    return template


def _new_store(database: Path) -> None:
    """``database`` as a copy of the empty template, appearing whole and only where none is yet
    (a store another process made meanwhile is kept); where the cache cannot be written, MLflow
    creates the store in place, as it did before."""
    try:
        template = _empty_store_template()
    except OSError:
        return
    partial = database.with_name(f".{database.name}.{os.getpid()}.partial")
    shutil.copyfile(template, partial)
    try:
        os.link(partial, database)  # fails where the store exists by now
    except FileExistsError:
        pass
    finally:
        partial.unlink()


def tracking_store_uri(directory: Path) -> str:
    """The tracking URI of the store :func:`prepare_tracking_store` makes in ``directory``."""
    return f"sqlite:///{directory.resolve() / 'mlflow.db'}"


def prepare_tracking_store(directory: Path) -> str:
    """A local MLflow store (SQLite, artifacts beside it) with the ``smtrain`` experiment; its
    tracking URI. Creating the experiment here fixes where every job's artifacts go, whatever
    directory the job runs in. A new store starts as a copy of :func:`_empty_store_template`."""
    from mlflow.tracking import MlflowClient

    directory.mkdir(parents=True, exist_ok=True)
    database = directory.resolve() / "mlflow.db"
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    if not database.exists():
        _new_store(database)
    uri = tracking_store_uri(directory)
    client = MlflowClient(tracking_uri=uri)
    if client.get_experiment_by_name(TRACKING_EXPERIMENT) is None:
        client.create_experiment(TRACKING_EXPERIMENT,
                                 artifact_location=(directory.resolve() / "artifacts").as_uri())
    return uri


class _TrackingStore:
    """The engine's MLflow store (:func:`prepare_tracking_store`), made once: in a thread of its
    own from :meth:`start`, or here at the first :meth:`wait` if nothing started it. :meth:`wait`
    returns once it is made and raises what making it raised."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.uri = tracking_store_uri(directory)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._made = False
        self._error: BaseException | None = None

    def _make(self) -> None:
        try:
            prepare_tracking_store(self.directory)
        except BaseException as error:  # handed to whoever waits
            self._error = error
        else:
            self._made = True

    def start(self) -> None:
        with self._lock:
            if self._thread is None and not self._made:
                self._thread = threading.Thread(target=self._make, name="mlflow-store", daemon=True)
                self._thread.start()

    def wait(self) -> None:
        with self._lock:
            if self._thread is None and not self._made:
                self._make()
            thread = self._thread
        if thread is not None:
            thread.join()
        if self._error is not None:
            raise self._error

    def wait_quietly(self) -> None:
        """Wait for a store being made; what failed is raised to the readers, not here."""
        thread = self._thread
        if thread is not None:
            thread.join()


class OfflineEngine:
    """Runs executions of the synthesized state machine; a context manager (moto's mock and the
    SageMaker service are active inside it).

    ``work_dir`` holds the S3 stand-in (``s3/``), the jobs (``jobs/``), the model registry
    (``registry/``, :attr:`registry`) and a record of each execution (``executions/``,
    :mod:`smtrain.local.execution_records`). ``backend`` defaults
    to a :class:`LocalBackend` over them; ``on_log`` gets each training log line.
    With ``tracking`` (the default) the local backend's jobs log to an MLflow store in ``work_dir/mlflow``
    (:attr:`tracking_uri`), experiment ``smtrain``. The store is made in a thread of its own from
    the first execution's start (:class:`_TrackingStore`): importing MLflow and opening a store
    take a new process about 2 s of Python, which then runs while the first job's process starts
    and trains instead of before it. Whatever reads the store waits for it: the backend before it
    logs a job's run, :attr:`tracking_uri`, and leaving the engine.
    """

    def __init__(self, *, outdir: Path, work_dir: Path, backend: SageMakerBackend | None = None,
                 on_log: Callable[[str, str], None] | None = None, region: str = "us-east-1",
                 tracking: bool = True) -> None:
        # Absolute: training programs run with the job tree as their working directory.
        work_dir = work_dir.resolve()
        self.work_dir = work_dir
        self.s3 = LocalS3(work_dir / contract.LOCAL_S3_DIR)
        self.deployment: LocalDeployment = load_deployment(outdir, s3=self.s3, region=region)
        # The store itself is made on entering (MLflow is imported then): an engine built only to
        # read its deployment and S3 stand-in (the CLI checking a run's input) needs none.
        tracking_dir = work_dir / "mlflow"  # work_dir is resolved: the URI and store agree
        self._store = _TrackingStore(tracking_dir) if tracking and backend is None else None
        self.backend: SageMakerBackend = backend or LocalBackend(
            s3=self.s3, work_dir=work_dir, images=Images(byoc=self.deployment.byoc_programs),
            on_log=on_log, environment={contract.ENV_TRACKING_URI: self._store.uri,
                                        contract.ENV_EXPERIMENT: TRACKING_EXPERIMENT}
            if self._store is not None else None,
            tracking_ready=self._store.wait if self._store is not None else None)
        self.region = region
        #: The offline model registry (``<work_dir>/registry``), with the deployment's groups;
        #: it inspects the model archives in the S3 stand-in (a missing handler is flagged).
        self.registry = LocalModelRegistry(work_dir / contract.LOCAL_REGISTRY_DIR, region=region,
                                           groups=set(self.deployment.model_groups.values()),
                                           s3=self.s3)
        #: The team queue (AWS Batch for SageMaker Training) where the deployment has one.
        self.batch: LocalBatchQueue | None = None
        if self.deployment.queue is not None:
            self.batch = LocalBatchQueue(
                self.backend, capacity=self.deployment.queue.capacity, region=region,
                record=work_dir / contract.LOCAL_QUEUE_FILE,
                queues={name: JobQueue(name=name, priority=priority, fair_share=fair)
                        for name, (priority, fair) in self.deployment.queue.queues.items()})
        self._cleanup_arn: str | None = None
        self._cleaned: set[str] = set()
        self._contexts: list[Any] = []
        self._client: Any = None
        self.state_machine_arn = ""

    def __enter__(self) -> OfflineEngine:
        from moto import mock_aws

        # moto logs every failed Choice lookup and caught task error at ERROR level; the
        # execution's history already carries what matters.
        logging.getLogger("moto.stepfunctions.parser").setLevel(logging.CRITICAL)
        for key, value in {"AWS_ACCESS_KEY_ID": "offline", "AWS_SECRET_ACCESS_KEY": "offline",
                           "AWS_SESSION_TOKEN": "offline"}.items():
            os.environ.setdefault(key, value)
        mock = mock_aws(config={"stepfunctions": {"execute_state_machine": True}})
        mock.start()
        self._contexts.append(mock)
        serving = serve_sagemaker(self.backend, registry=self.registry, s3=self.s3,
                                  batch=self.batch)
        serving.__enter__()
        self._contexts.append(serving)
        import boto3

        self._client = boto3.client("stepfunctions", region_name=self.region)
        created = self._client.create_state_machine(
            name=self.deployment.state_machine_name, type="STANDARD",
            definition=json.dumps(self.deployment.definition),
            roleArn=f"arn:aws:iam::{ACCOUNT}:role/local-state-machine")
        self.state_machine_arn = created["stateMachineArn"]
        if self.deployment.cleanup_definition is not None:
            self._cleanup_arn = self._client.create_state_machine(
                name=f"{self.deployment.state_machine_name}{contract.QUEUE_CLEANUP_SUFFIX}",
                type="STANDARD", definition=json.dumps(self.deployment.cleanup_definition),
                roleArn=f"arn:aws:iam::{ACCOUNT}:role/local-queue-cleanup")["stateMachineArn"]
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if self._store is not None:
            self._store.wait_quietly()  # no thread of it outlives the engine
        while self._contexts:
            context = self._contexts.pop()
            if hasattr(context, "stop"):
                context.stop()
            else:
                context.__exit__(exc_type, exc, traceback)

    @property
    def tracking_uri(self) -> str | None:
        """The MLflow store's tracking URI, once the store is made (None: not tracked)."""
        if self._store is None:
            return None
        self._store.wait()
        return self._store.uri

    @property
    def client(self) -> Any:
        if self._client is None:
            raise RuntimeError("use the engine inside a `with` block")
        return self._client

    def start(self, execution_input: dict[str, Any], *, name: str) -> str:
        response = self.client.start_execution(stateMachineArn=self.state_machine_arn, name=name,
                                               input=json.dumps(execution_input))
        arn = str(response["executionArn"])
        if self._store is not None:
            self._store.start()  # beside the execution, which starts jobs only after this
        # Recorded under the work dir, so that `smtrain status --local` and the other commands
        # can read it after this process (moto forgets it): see execution_records.
        execution_records.write(self.work_dir, self.client.describe_execution(executionArn=arn))
        return arn

    def stop(self, execution_arn: str, *, error: str = "Stopped", cause: str = "stopped offline") -> None:
        self.client.stop_execution(executionArn=execution_arn, error=error, cause=cause)
        self.clean_up_queue(execution_arn)

    def clean_up_queue(self, execution_arn: str) -> None:
        """What the team queue's EventBridge rule does when an execution ends ABORTED, TIMED_OUT
        or FAILED: run the cleanup state machine on the "Step Functions Execution Status Change"
        event, to its end (nothing without the queue, or for an execution that succeeded)."""
        if self._cleanup_arn is None:
            return
        deadline = time.monotonic() + 10  # a stopped execution turns ABORTED in moto's thread
        description = self.client.describe_execution(executionArn=execution_arn)
        while description["status"] == "RUNNING" and time.monotonic() < deadline:
            time.sleep(0.01)
            description = self.client.describe_execution(executionArn=execution_arn)
        if description["status"] not in contract.QUEUE_CLEANUP_STATUSES:
            return
        event = {"source": "aws.states", "detail-type": "Step Functions Execution Status Change",
                 "detail": {"executionArn": execution_arn, "name": description["name"],
                            "status": description["status"],
                            "stateMachineArn": description["stateMachineArn"]}}
        if execution_arn in self._cleaned:
            return
        self._cleaned.add(execution_arn)
        started = self.client.start_execution(stateMachineArn=self._cleanup_arn, input=json.dumps(event),
                                              name=f"cleanup-{description['name']}"[:80])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            status = self.client.describe_execution(executionArn=started["executionArn"])["status"]
            if status != "RUNNING":
                if status != "SUCCEEDED":
                    raise RuntimeError(f"the queue cleanup of {execution_arn} ended {status}")
                return
            time.sleep(0.02)
        raise RuntimeError(f"the queue cleanup of {execution_arn} did not end within 60 s")

    def history(self, execution_arn: str) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"executionArn": execution_arn}
        while True:
            page = self.client.get_execution_history(**kwargs)
            events += page["events"]
            if "nextToken" not in page:
                return events
            kwargs["nextToken"] = page["nextToken"]

    def wait(self, execution_arn: str, *, on_event: EventCallback | None = None,
             timeout: float = 1800.0, poll: float = 0.1,
             follow_every: float = FOLLOW_EVERY_SECONDS) -> ExecutionResult:
        """Follow the execution to its end, handing each new history event to ``on_event``.

        The execution runs in moto's thread; its status is asked about every ``poll`` seconds,
        sooner at first (an input refused by its check ends within milliseconds). The history
        comes whole with each read (moto serializes every event of it, and its paging options
        are ignored), so it is read at most every ``follow_every`` seconds while ``on_event``
        follows it, and once at the end."""
        deadline = time.monotonic() + timeout
        seen = 0
        interval = min(0.01, poll)
        followed = time.monotonic()
        while True:
            description = self.client.describe_execution(executionArn=execution_arn)
            ended = description["status"] in TERMINAL_EXECUTION_STATUSES
            if ended or (on_event is not None and time.monotonic() - followed >= follow_every):
                followed = time.monotonic()
                events = self.history(execution_arn)
                if on_event is not None:
                    for event in events[seen:]:
                        on_event(event)
                seen = len(events)
            if ended:
                execution_records.write(self.work_dir, description, events=events)
                self.clean_up_queue(execution_arn)
                output = description.get("output")
                return ExecutionResult(
                    name=description["name"], arn=execution_arn, status=description["status"],
                    output=json.loads(output) if output else None, error=description.get("error"),
                    cause=description.get("cause"), events=events)
            if time.monotonic() > deadline:
                self.stop(execution_arn, error="LocalTimeout", cause=f"no end within {timeout:.0f} s")
                deadline = time.monotonic() + 30
            time.sleep(interval)
            interval = min(interval * 2, poll)

    def run(self, execution_input: dict[str, Any], *, name: str, on_event: EventCallback | None = None,
            timeout: float = 1800.0) -> ExecutionResult:
        return self.wait(self.start(execution_input, name=name), on_event=on_event, timeout=timeout)

    def local_path(self, uri: str) -> Path:
        """Where an ``s3://`` URI of this engine lives on disk."""
        return self.s3.path(uri)
