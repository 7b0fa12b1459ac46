"""SageMaker for moto's Step Functions interpreter (which lists ``sagemaker`` as unsupported).

:func:`serve_sagemaker` installs, for as long as its context lasts, a task service for
``arn:aws:states:::sagemaker:create*Job.sync`` (create, then poll describe until the job ends;
stop the job if the execution stops) and for ``arn:aws:states:::aws-sdk:sagemaker:*`` calls,
both answered by a :class:`~smtrain.local.backend.SageMakerBackend`, except the model registry's
calls (``*ModelPackage*``), answered by a :class:`~smtrain.local.model_registry.LocalModelRegistry`,
and ``aws-sdk:s3:putObject``, which writes into the engine's :class:`~smtrain.local.s3_stand_in.LocalS3`
(both checked against botocore's models first). It patches the one factory
function moto's parser uses to pick a task service; moto is pinned exactly for this reason.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, Final

from moto.stepfunctions.parser.api import HistoryEventType, TaskFailedEventDetails
from moto.stepfunctions.parser.asl.component.common.error_name.custom_error_name import (
    CustomErrorName,
)
from moto.stepfunctions.parser.asl.component.common.error_name.failure_event import (
    FailureEvent,
    FailureEventException,
)
from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name import (
    StatesErrorName,
)
from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name_type import (
    StatesErrorNameType,
)
from moto.stepfunctions.parser.asl.component.common.retry import retrier_decl
from moto.stepfunctions.parser.asl.component.state.exec.state_task import state_task_factory
from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import (
    state_task_service_aws_sdk,
    state_task_service_callback,
)
from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.resource import (
    ResourceCondition,
)
from moto.stepfunctions.parser.asl.component.state.wait.wait_function.wait_function import (
    WaitFunction,
)
from moto.stepfunctions.parser.asl.eval.event.event_detail import EventDetails
from moto.stepfunctions.parser.backend.execution import BaseExecutionWorkerCommunication

from smtrain.local.backend import TERMINAL_STATUSES, SageMakerBackend, SageMakerError
from smtrain.local.batch_queue import BatchError, LocalBatchQueue
from smtrain.local.s3_stand_in import LocalS3
from smtrain.local.sagemaker_model import answer_as_aws, operation_model, request_violations
from smtrain.local.strict_sagemaker import check_request, step_functions_error
from smtrain.local.wakeups import EXECUTION_ENDED, JOB_ENDED

#: The .sync actions and how to follow each: (create, describe, stop, name field, status field).
_SYNC_ACTIONS: Final[dict[str, tuple[str, str, str, str, str]]] = {
    "createtrainingjob": ("create_training_job", "describe_training_job", "stop_training_job",
                          "TrainingJobName", "TrainingJobStatus"),
    "createhyperparametertuningjob": (
        "create_hyper_parameter_tuning_job", "describe_hyper_parameter_tuning_job",
        "stop_hyper_parameter_tuning_job", "HyperParameterTuningJobName",
        "HyperParameterTuningJobStatus"),
}

#: The model's operation name of each describe call.
_DESCRIBE_OPERATIONS: Final[dict[str, str]] = {
    "describe_training_job": "DescribeTrainingJob",
    "describe_hyper_parameter_tuning_job": "DescribeHyperParameterTuningJob",
}


#: The model's operation name of each .sync action.
_OPERATIONS: Final[dict[str, str]] = {
    "createtrainingjob": "CreateTrainingJob",
    "createhyperparametertuningjob": "CreateHyperParameterTuningJob",
}

_lock = threading.Lock()
#: How often a .sync task asks the local backend whether its job has ended (seconds).
SYNC_POLL_SECONDS = 0.05
_backend: SageMakerBackend | None = None
_registry: Any = None
_s3: LocalS3 | None = None
_batch: LocalBatchQueue | None = None
#: How long a Wait state, or a Retry rule's wait before its next attempt, lasts offline, as a
#: share of its time: the team queue's polls (15 s doubling to 300 s), the create retries'
#: backoffs and a throttled call's Retry (2 s doubling) pass fifty times faster, as a queued job
#: or a registration starts and ends in seconds here.
WAIT_SCALE = 1 / 50

#: The registry's calls a state may make (the model's names), answered by the registry, which
#: judges each request and answer against botocore's model itself.
REGISTRY_OPERATIONS: Final = frozenset({"CreateModelPackage", "UpdateModelPackage"})


def _current_backend() -> SageMakerBackend:
    if _backend is None:
        raise RuntimeError("no SageMaker backend is being served (use serve_sagemaker)")
    return _backend


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _task_failed(env: Any, service: Any, error: str, cause: str,
                 error_name: Any | None = None) -> FailureEventException:
    return FailureEventException(FailureEvent(
        env=env,
        error_name=error_name or CustomErrorName(error),
        event_type=HistoryEventType.TaskFailed,
        event_details=EventDetails(taskFailedEventDetails=TaskFailedEventDetails(
            error=error, cause=cause, resource=service._get_sfn_resource(),
            resourceType=service._get_sfn_resource_type())),
    ))


class SageMakerSyncTask(state_task_service_callback.StateTaskServiceCallback):  # type: ignore[misc]
    """``sagemaker:createTrainingJob.sync`` and ``createHyperParameterTuningJob.sync``."""

    def __init__(self) -> None:
        # WaitForTaskToken is listed only because moto's callback plumbing expects an endpoint.
        super().__init__(supported_integration_patterns={ResourceCondition.Sync,
                                                         ResourceCondition.WaitForTaskToken})

    def _get_supported_parameters(self) -> set[str] | None:
        return set() if self.resource.api_action.lower() in _SYNC_ACTIONS else None

    def _from_error(self, env: Any, ex: Exception) -> FailureEvent:
        if isinstance(ex, SageMakerError):
            error, cause = step_functions_error(ex, sdk_integration=False)
            return _task_failed(env, self, error, cause).failure_event
        return super()._from_error(env=env, ex=ex)

    def _eval_service_task(self, env: Any, resource_runtime_part: Any,
                           normalised_parameters: dict[str, Any], state_credentials: Any) -> None:
        action = self.resource.api_action.lower()
        create, *_ = _SYNC_ACTIONS[action]
        request = json.loads(json.dumps(normalised_parameters))
        # SageMaker's front end judges the request before any backend sees it.
        check_request(_OPERATIONS[action], request)
        response = getattr(_current_backend(), create)(request)
        env.stack.append(response)

    def _build_sync_resolver(self, env: Any, resource_runtime_part: Any,
                             normalised_parameters: dict[str, Any],
                             state_credentials: Any) -> Callable[[], Any] | None:
        _, describe, _, name_field, status_field = _SYNC_ACTIONS[self.resource.api_action.lower()]
        env.stack.pop()  # the create answer
        name = normalised_parameters[name_field]
        backend = _current_backend()

        def resolve() -> dict[str, Any] | None:
            _sync_marks.job_ended = JOB_ENDED.mark()  # before the status is read: see _SyncPollClock
            description: dict[str, Any] = answer_as_aws(_DESCRIBE_OPERATIONS[describe],
                                                        getattr(backend, describe)(name))
            status = description[status_field]
            if status not in TERMINAL_STATUSES:
                return None
            if status == "Completed":
                return description
            # As Step Functions does: the job's whole description is the cause.
            raise _task_failed(env, self, StatesErrorNameType.StatesTaskFailed.to_name(),
                               json.dumps(description, default=str),
                               StatesErrorName(typ=StatesErrorNameType.StatesTaskFailed))

        return resolve

    def _eval_sync(self, env: Any, sync_resolver: Any, timeout_seconds: Any, callback_endpoint: Any,
                   heartbeat_endpoint: Any) -> Any:
        try:
            return super()._eval_sync(env=env, sync_resolver=sync_resolver,
                                      timeout_seconds=timeout_seconds,
                                      callback_endpoint=None, heartbeat_endpoint=heartbeat_endpoint)
        finally:
            # This task's mark ends with it: another .sync task of this thread sleeps its full
            # interval until it has read its job's status (_SyncPollClock).
            _sync_marks.__dict__.pop("job_ended", None)
            if not env.is_running():
                # The execution was stopped (or timed out): Step Functions stops the job.
                _, _, stop, _, _ = _SYNC_ACTIONS[self.resource.api_action.lower()]
                if self._current_job_name is not None:
                    with contextlib.suppress(SageMakerError):
                        getattr(_current_backend(), stop)(self._current_job_name)

    def _eval_execution(self, env: Any) -> None:
        self._current_job_name: str | None = None
        super()._eval_execution(env)

    def _normalise_parameters(self, parameters: dict[str, Any], boto_service_name: str | None = None,
                              service_action_name: str | None = None) -> None:
        _, _, _, name_field, _ = _SYNC_ACTIONS[self.resource.api_action.lower()]
        self._current_job_name = parameters.get(name_field)


class SageMakerAwsSdkTask(state_task_service_aws_sdk.StateTaskServiceAwsSdk):  # type: ignore[misc]
    """``aws-sdk:sagemaker:<action>`` answered by the backend; other services as moto does."""

    def _eval_service_task(self, env: Any, resource_runtime_part: Any,
                           normalised_parameters: dict[str, Any], state_credentials: Any) -> None:
        operation = self.resource.api_action[0].upper() + self.resource.api_action[1:]
        if self.resource.api_name == "s3" and operation == "PutObject" and _s3 is not None:
            env.stack.append(_put_object(json.loads(json.dumps(normalised_parameters))))
            return
        if self.resource.api_name == "s3" and operation == "CopyObject" and _s3 is not None:
            env.stack.append(_copy_object(json.loads(json.dumps(normalised_parameters))))
            return
        if self.resource.api_name == "batch" and _batch is not None:
            handler = getattr(_batch, _snake(operation), None)
            if handler is None:
                raise BatchError("ClientException", f"{operation} is not served offline")
            # The SDK integration takes PascalCase parameters and answers PascalCase fields
            # (see infra/constructs/queued_training_job.py); Batch's API is camelCase.
            model = operation_model(operation, "batch")
            request = json.loads(json.dumps(normalised_parameters))
            self._to_boto_request(request, model.input_shape)
            response = handler(request)
            self._from_boto_response(response, model.output_shape)
            env.stack.append(response)
            return
        if self.resource.api_name != "sagemaker":
            super()._eval_service_task(env, resource_runtime_part, normalised_parameters,
                                       state_credentials)
            return
        action = _snake(operation)
        if operation in REGISTRY_OPERATIONS:
            if _registry is None:
                raise SageMakerError("UnknownOperationException", f"{action}: no model registry is served")
            env.stack.append(getattr(_registry, action)(json.loads(json.dumps(normalised_parameters))))
            return
        handler = getattr(_current_backend(), action, None)
        if handler is None:
            raise SageMakerError("UnknownOperationException", f"{action} is not served offline")
        request = json.loads(json.dumps(normalised_parameters))
        check_request(operation, request)
        if action.startswith("describe_"):
            (name,) = request.values()
            env.stack.append(answer_as_aws(operation, handler(name)))
        elif action.startswith("list_"):
            env.stack.append(answer_as_aws(operation, handler(request)))
        else:
            env.stack.append(handler(request))

    def _from_error(self, env: Any, ex: Exception) -> FailureEvent:
        if isinstance(ex, SageMakerError):
            error, cause = step_functions_error(ex, sdk_integration=True)
            return _task_failed(env, self, error, cause).failure_event
        if isinstance(ex, S3Error):
            return _task_failed(env, self, "S3.S3Exception", str(ex)).failure_event
        if isinstance(ex, BatchError):
            return _task_failed(env, self, f"Batch.{ex.code}", ex.message).failure_event
        return super()._from_error(env=env, ex=ex)


def _scaled_wait(self: Any, env: Any, wait_seconds: float) -> None:
    """A Wait state's wait, :data:`WAIT_SCALE` of it; a stopped execution ends it early."""
    if wait_seconds > 0:
        env.program_state_event.wait(wait_seconds * WAIT_SCALE)


class _ScaledRetryClock:
    """What moto's Retry rule sees as its ``time`` module: the rule's wait, computed by moto from
    ``IntervalSeconds``, ``BackoffRate``, ``MaxDelaySeconds`` and ``JitterStrategy``, passes in
    :data:`WAIT_SCALE` of its time (moto's ``RetrierDecl`` calls ``time.sleep`` once an attempt,
    and nothing else of that module)."""

    @staticmethod
    def sleep(seconds: float) -> None:
        time.sleep(seconds * WAIT_SCALE)


#: Per .sync task thread: :data:`JOB_ENDED`'s mark taken just before its last describe call.
_sync_marks = threading.local()


class _SyncPollClock:
    """What moto's .sync loop sees as its ``time`` module (it calls ``time.sleep`` between two
    describe calls of the job, and nothing else of that module): the sleep ends as soon as a
    local job ends (:data:`smtrain.local.wakeups.JOB_ENDED`), any job, since the describe call
    before it; at the latest after the poll interval, as before. Anything else is ``time``'s."""

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    @staticmethod
    def sleep(seconds: float) -> None:
        mark = getattr(_sync_marks, "job_ended", None)
        if mark is None:
            time.sleep(seconds)
        else:
            JOB_ENDED.wait(mark, seconds)


def _announce_execution_end() -> None:
    """moto's interpreter ends every execution (succeeded, failed, stopped, timed out) through
    ``BaseExecutionWorkerCommunication.terminated``, which sets the status an engine reads: once
    it has, :data:`smtrain.local.wakeups.EXECUTION_ENDED` wakes whoever follows the execution.
    Installed once per process."""
    original = BaseExecutionWorkerCommunication.terminated
    if getattr(original, "announces_end", False):
        return

    def terminated(self: Any) -> None:
        try:
            original(self)
        finally:
            EXECUTION_ENDED.notify()

    terminated.announces_end = True  # type: ignore[attr-defined]
    BaseExecutionWorkerCommunication.terminated = terminated


class S3Error(Exception):
    """An S3 refusal; Step Functions names it ``S3.<code>``."""


def _put_object(request: dict[str, Any]) -> dict[str, Any]:
    """``s3:PutObject`` into the engine's S3 stand-in, once botocore's model accepts the request."""
    assert _s3 is not None
    problems = request_violations("PutObject", request, service="s3")
    if problems:
        raise S3Error("; ".join(problems))
    body = request.get("Body", b"")
    target = _s3.path(f"s3://{request['Bucket']}/{request['Key']}")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(body.encode() if isinstance(body, str) else bytes(body))
    return {"ETag": '"local"'}


def _copy_object(request: dict[str, Any]) -> dict[str, Any]:
    """``s3:CopyObject`` within the engine's S3 stand-in (``CopySource`` is ``bucket/key``), once
    botocore's model accepts the request; with ``ChecksumAlgorithm`` SHA256 the answer carries the
    copy's ``ChecksumSHA256`` (base64 of the digest, as S3 gives it), and a version id (the
    project's buckets are versioned)."""
    assert _s3 is not None
    problems = request_violations("CopyObject", request, service="s3")
    if problems:
        raise S3Error("; ".join(problems))
    source = _s3.path(f"s3://{request['CopySource'].lstrip('/')}")
    if not source.is_file():
        raise S3Error(f"NoSuchKey: The specified key does not exist ({request['CopySource']})")
    body = source.read_bytes()
    target = _s3.path(f"s3://{request['Bucket']}/{request['Key']}")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(body)
    result: dict[str, Any] = {"ETag": f'"{hashlib.md5(body).hexdigest()}"'}  # S3's ETag of a single-part object
    if request.get("ChecksumAlgorithm") == "SHA256":
        result["ChecksumSHA256"] = base64.b64encode(hashlib.sha256(body).digest()).decode()
    return {"CopyObjectResult": result, "VersionId": uuid.uuid4().hex}


@contextlib.contextmanager
def serve_sagemaker(backend: SageMakerBackend, *, registry: Any = None,
                    s3: LocalS3 | None = None, batch: LocalBatchQueue | None = None) -> Iterator[None]:
    """Within the block, moto's interpreter sends SageMaker tasks to ``backend``, the model
    registry's calls to ``registry`` (a ``LocalModelRegistry``; none: they fail), and
    ``aws-sdk:s3:putObject`` into ``s3`` (none: moto's own S3), ``aws-sdk:batch:*`` to
    ``batch`` (the team queue, :mod:`smtrain.local.batch_queue`), runs Wait states and Retry
    rules' waits at :data:`WAIT_SCALE` of their time, evaluates JSONata states
    (:mod:`smtrain.local.jsonata_eval`), parses each definition once
    (:mod:`smtrain.local.asl_parse_cache`), reads keyword keys such as ``"RoleArn.$"`` as paths,
    as AWS does (:mod:`smtrain.local.asl_keyword_paths`), and writes execution histories without moto's
    per-member lookups (:mod:`smtrain.local.history_answer`)."""
    global _backend, _registry, _s3, _batch
    from smtrain.local import asl_keyword_paths, asl_parse_cache, history_answer, jsonata_eval

    _announce_execution_end()
    jsonata_eval.enable()
    asl_parse_cache.enable()
    asl_keyword_paths.enable()
    history_answer.enable()

    def service_for(service_name: str) -> Any:
        if service_name == "sagemaker":
            return SageMakerSyncTask()
        if service_name == "aws-sdk":
            return SageMakerAwsSdkTask()
        return original(service_name)

    with _lock:
        if _backend is not None:
            raise RuntimeError("a SageMaker backend is already being served")
        _backend, _registry, _s3, _batch = backend, registry, s3, batch
        original = state_task_factory.state_task_service_for
        original_poll = state_task_service_callback._DELAY_SECONDS_SYNC_CONDITION_CHECK
        original_sync_clock = state_task_service_callback.time
        original_wait = WaitFunction._wait_interval
        WaitFunction._wait_interval = _scaled_wait
        original_clock = retrier_decl.time
        retrier_decl.time = _ScaledRetryClock
        state_task_factory.state_task_service_for = service_for
        # moto asks a .sync task's describe call every 0.5 s; a local job's describe is a
        # lookup in this process, so the engine asks every SYNC_POLL_SECONDS instead.
        state_task_service_callback._DELAY_SECONDS_SYNC_CONDITION_CHECK = SYNC_POLL_SECONDS
        # ... and sooner when the job ends (smtrain.local.wakeups).
        state_task_service_callback.time = _SyncPollClock()
    try:
        yield
    finally:
        with _lock:
            state_task_factory.state_task_service_for = original
            state_task_service_callback._DELAY_SECONDS_SYNC_CONDITION_CHECK = original_poll
            state_task_service_callback.time = original_sync_clock
            WaitFunction._wait_interval = original_wait
            retrier_decl.time = original_clock
            _backend, _registry, _s3, _batch = None, None, None, None
