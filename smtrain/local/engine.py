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
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from smtrain.core import contract
from smtrain.local import botocore_data, execution_records  # noqa: F401  (botocore_data: shared before moto loads)
from smtrain.local.backend import SageMakerBackend
from smtrain.local.batch_queue import JobQueue, LocalBatchQueue
from smtrain.local.deployment import ACCOUNT, LocalDeployment, load_deployment
from smtrain.local.local_backend import Images, LocalBackend
from smtrain.local.model_registry import LocalModelRegistry
from smtrain.local.s3_stand_in import LocalS3
from smtrain.local.sfn_sagemaker import serve_sagemaker
from smtrain.local.tracking_store import prepare_tracking_store, tracking_store_uri, warm_up
from smtrain.local.wakeups import EXECUTION_ENDED

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


class OfflineEngine:
    """Runs executions of the synthesized state machine; a context manager (moto's mock and the
    SageMaker service are active inside it).

    ``work_dir`` holds the S3 stand-in (``s3/``), the jobs (``jobs/``), the model registry
    (``registry/``, :attr:`registry`) and a record of each execution (``executions/``,
    :mod:`smtrain.local.execution_records`). ``backend`` defaults
    to a :class:`LocalBackend` over them; ``on_log`` gets each training log line.
    With ``tracking`` (the default) the local backend's jobs log to an MLflow store in ``work_dir/mlflow``
    (:attr:`tracking_uri`), experiment ``smtrain``, made on entering the engine, without importing
    MLflow (:mod:`smtrain.local.tracking_store`). MLflow is imported, and the store opened, in a
    thread of its own from the first execution's start (about 2 s of a new process), while the
    first job starts and trains; logging a job's run waits for that thread (a first job shorter
    than MLflow's load waits for the rest), and so does leaving the engine.
    """

    def __init__(self, *, outdir: Path, work_dir: Path, backend: SageMakerBackend | None = None,
                 on_log: Callable[[str, str], None] | None = None, region: str = "us-east-1",
                 tracking: bool = True) -> None:
        # Absolute: training programs run with the job tree as their working directory.
        work_dir = work_dir.resolve()
        self.work_dir = work_dir
        self.s3 = LocalS3(work_dir / contract.LOCAL_S3_DIR)
        self.deployment: LocalDeployment = load_deployment(outdir, s3=self.s3, region=region)
        # The store itself is made on entering: an engine built only to read its deployment and
        # S3 stand-in (the CLI checking a run's input) needs none.
        self._tracking_dir = work_dir / "mlflow"  # work_dir is resolved: the URI and store agree
        #: Loads MLflow from the first execution's start (:meth:`start`).
        self._warm_up: threading.Thread | None = None
        self.tracking_uri = tracking_store_uri(self._tracking_dir) if tracking and backend is None else None
        self.backend: SageMakerBackend = backend or LocalBackend(
            s3=self.s3, work_dir=work_dir, images=Images(byoc=self.deployment.byoc_programs),
            on_log=on_log, environment={contract.ENV_TRACKING_URI: self.tracking_uri,
                                        contract.ENV_EXPERIMENT: TRACKING_EXPERIMENT}
            if self.tracking_uri else None,
            before_tracking=self._warmed_up)
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
        self._store_ready = False
        self._client: Any = None
        self.state_machine_arn = ""

    def __enter__(self) -> OfflineEngine:
        from moto import mock_aws

        if self.tracking_uri is not None and not self._store_ready:
            prepare_tracking_store(self._tracking_dir)
            self._store_ready = True  # entered again (a module's runs on a shared engine): kept

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

    def _warmed_up(self) -> None:
        """Wait for the thread that loads MLflow, if one was started (it never raises)."""
        if self._warm_up is not None:
            self._warm_up.join()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self._warmed_up()  # no import outlives the engine
        while self._contexts:
            context = self._contexts.pop()
            if hasattr(context, "stop"):
                context.stop()
            else:
                context.__exit__(exc_type, exc, traceback)

    @property
    def client(self) -> Any:
        if self._client is None:
            raise RuntimeError("use the engine inside a `with` block")
        return self._client

    def start(self, execution_input: dict[str, Any], *, name: str) -> str:
        if self.tracking_uri is not None and self._warm_up is None:
            # MLflow loads while the execution starts its first job (the process that trains);
            # started before the execution, so that every job's end finds it to wait for.
            warm = threading.Thread(target=warm_up, args=(self.tracking_uri,), name="mlflow-warm-up",
                                    daemon=True)
            warm.start()
            self._warm_up = warm
        response = self.client.start_execution(stateMachineArn=self.state_machine_arn, name=name,
                                               input=json.dumps(execution_input))
        arn = str(response["executionArn"])
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
        # A stopped execution turns ABORTED in moto's thread.
        description = self._described_once_ended(execution_arn, within=10)
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
        status = self._described_once_ended(started["executionArn"], within=60)["status"]
        if status == "RUNNING":
            raise RuntimeError(f"the queue cleanup of {execution_arn} did not end within 60 s")
        if status != "SUCCEEDED":
            raise RuntimeError(f"the queue cleanup of {execution_arn} ended {status}")

    def _described_once_ended(self, execution_arn: str, *, within: float) -> dict[str, Any]:
        """The execution's description once it is no longer RUNNING, or once ``within`` seconds
        have passed (then still RUNNING); asked again as soon as an execution ends
        (:data:`smtrain.local.wakeups.EXECUTION_ENDED`), at least every 0.05 s."""
        deadline = time.monotonic() + within
        while True:
            mark = EXECUTION_ENDED.mark()
            description: dict[str, Any] = self.client.describe_execution(executionArn=execution_arn)
            if description["status"] != "RUNNING" or time.monotonic() >= deadline:
                return description
            EXECUTION_ENDED.wait(mark, 0.05)

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
        and at once when an execution ends (:data:`smtrain.local.wakeups.EXECUTION_ENDED`). The history
        comes whole with each read (moto serializes every event of it, and its paging options
        are ignored), so it is read at most every ``follow_every`` seconds while ``on_event``
        follows it, and once at the end."""
        deadline = time.monotonic() + timeout
        seen = 0
        followed = time.monotonic()
        while True:
            mark = EXECUTION_ENDED.mark()
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
            EXECUTION_ENDED.wait(mark, poll)  # an execution's end cuts it short

    def run(self, execution_input: dict[str, Any], *, name: str, on_event: EventCallback | None = None,
            timeout: float = 1800.0) -> ExecutionResult:
        return self.wait(self.start(execution_input, name=name), on_event=on_event, timeout=timeout)

    def local_path(self, uri: str) -> Path:
        """Where an ``s3://`` URI of this engine lives on disk."""
        return self.s3.path(uri)
