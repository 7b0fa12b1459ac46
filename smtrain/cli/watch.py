"""Following an execution: states, the SageMaker job's progress, metrics, logs, the result."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from smtrain.cli.outcome import EXIT_ABORTED, EXIT_FAILED, EXIT_OK
from smtrain.cli.run_costs import reckon_run, record_quietly
from smtrain.core import contract, prices

TRAINING_LOG_GROUP = contract.TRAINING_LOG_GROUP
#: How many of a failed job's last log lines are printed.
LOG_TAIL_LINES = contract.LOG_TAIL_LINES


#: The states a queued run goes round while it waits: followed as one line per change of the
#: queue's state rather than one per state.
QUEUE_LOOP_STATES = frozenset({contract.QUEUE_WAIT_STATE, contract.QUEUE_DESCRIBE_STATE,
                               contract.QUEUE_CHOICE_STATE})


def _say(text: str) -> None:
    print(text, flush=True)


def _elapsed(started: float) -> str:
    seconds = int(time.monotonic() - started)
    return f"{seconds // 60:02d}:{seconds % 60:02d}"


def queue_state(events: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Where a run of the team queue stands: the ``queue`` object the last submit or look at its
    service job left (``jobId``, Batch's ``status`` and ``statusReason``, ``trainingJobArn``),
    with ``stage`` (queued, scheduled, running, done: ``contract.SERVICE_JOB_STAGES``); None for
    a run that was never queued."""
    for event in reversed(events):
        exited = event.get("stateExitedEventDetails")
        if not exited or exited.get("name") not in (contract.QUEUE_SUBMIT_STATE, contract.QUEUE_DESCRIBE_STATE):
            continue
        try:
            queue = json.loads(exited.get("output") or "{}").get("queue")
        except (json.JSONDecodeError, AttributeError):
            return None
        if not isinstance(queue, dict):
            return None
        return {**queue, "stage": contract.SERVICE_JOB_STAGES.get(str(queue.get("status")), "queued")}
    return None


def queue_line(queue: dict[str, Any]) -> str:
    """One line for a queued run: its stage, Batch's state and reason."""
    reason = f": {queue['statusReason']}" if queue.get("statusReason") else ""
    return f"queue: {queue['stage']} ({queue.get('status')}{reason}), service job {queue.get('jobId')}"


def job_names(events: list[dict[str, Any]],
              kinds: tuple[str, ...] = ("TrainingJobName", "HyperParameterTuningJobName")) -> list[str]:
    """SageMaker job names the execution scheduled, in order (from TaskScheduled parameters, and
    the job Batch started for a queued run); ``kinds`` picks the name fields read (default:
    training and tuning jobs)."""
    names = []
    queue = queue_state(events)
    if queue is not None and queue.get("trainingJobArn") and "TrainingJobName" in kinds:
        names.append(contract.batch_training_job_name(str(queue["trainingJobArn"])))
    in_map = False  # the tasks inside a Map state (a tuning run's cost describes each of its trials)
    for event in events:
        if event.get("type") == "MapStateEntered":
            in_map = True
        elif event.get("type") in ("MapStateExited", "MapStateFailed", "MapStateAborted"):
            in_map = False
        details = event.get("taskScheduledEventDetails")
        if not details or in_map:
            continue
        try:
            parameters = json.loads(details.get("parameters", "{}"))
        except json.JSONDecodeError:
            continue
        name = next((parameters[kind] for kind in kinds if parameters.get(kind)), None)
        if name and name not in names:
            names.append(name)
    return names


def _described(cause: str | None) -> dict[str, Any] | None:
    """The job description SageMaker answered, when a failure's cause carries one."""
    if not cause:
        return None
    text = cause.split(": ", 1)[1] if cause.startswith("States.") else cause
    try:
        described = json.loads(text)
    except json.JSONDecodeError:
        return None
    return described if isinstance(described, dict) else None


def failure_reason(cause: str | None) -> str | None:
    """The job's FailureReason when the cause carries a job description."""
    described = _described(cause)
    return described.get("FailureReason") if described is not None else None


def failed_job(cause: str | None, events: list[dict[str, Any]]) -> str | None:
    """The job whose log explains a failed run: the one its cause names, else its last
    training job (a failure outside any job's description)."""
    training = job_names(events, kinds=("TrainingJobName",))
    return failed_job_name(cause) or (training[-1] if training else None)


def failed_job_name(cause: str | None) -> str | None:
    """The training job named in a failure's cause (the job description SageMaker answered)."""
    described = _described(cause)
    name = described.get("TrainingJobName") if isinstance(described, dict) else None
    return name if isinstance(name, str) else None


def log_stream_url(region: str, stream: str, group: str = TRAINING_LOG_GROUP) -> str:
    """The CloudWatch console's page of one log stream (the console escapes ``%`` as ``$25``)."""
    def escape(text: str) -> str:
        return quote(quote(text, safe=""), safe="").replace("%", "$")

    return (f"https://{region}.console.aws.amazon.com/cloudwatch/home?region={region}"
            f"#logsV2:log-groups/log-group/{escape(group)}/log-events/{escape(stream)}")


def _error_code(error: Exception) -> str:
    response = getattr(error, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code") or type(error).__name__)
    return type(error).__name__


def print_failure_log(logs: Any, job: str, region: str, lines: int = LOG_TAIL_LINES) -> None:
    """The last ``lines`` lines of the job's CloudWatch stream and the console URL of the whole
    stream; one line instead when there is no stream or no permission to read it. Never raises."""
    try:
        streams = logs.describe_log_streams(logGroupName=TRAINING_LOG_GROUP,
                                            logStreamNamePrefix=f"{job}/")["logStreams"]
    except Exception as error:
        code = _error_code(error)
        if code == "ResourceNotFoundException":
            _say(f"no CloudWatch log for job {job}: log group {TRAINING_LOG_GROUP} does not exist")
        else:
            _say(f"cannot read the CloudWatch log of job {job} ({code}): "
                 f"needs logs:DescribeLogStreams and logs:GetLogEvents on {TRAINING_LOG_GROUP}")
        return
    if not streams:
        _say(f"no CloudWatch log stream for job {job} in {TRAINING_LOG_GROUP} (the job wrote no log)")
        return
    stream = sorted(s["logStreamName"] for s in streams)[0]
    try:
        events = logs.get_log_events(logGroupName=TRAINING_LOG_GROUP, logStreamName=stream,
                                     limit=lines, startFromHead=False)["events"]
    except Exception as error:
        _say(f"cannot read the CloudWatch log stream {stream} ({_error_code(error)})")
        events = None
    if events is not None:
        more = f" (of {len(streams)} streams)" if len(streams) > 1 else ""
        _say(f"last {len(events[-lines:])} log lines of {stream}{more}:")
        for event in events[-lines:]:
            _say(f"    | {event['message'].rstrip()}")
    _say(f"whole log: {log_stream_url(region, stream)}")


def summary(description: dict[str, Any]) -> list[str]:
    lines = []
    state = description["status"]
    if state == "SUCCEEDED":
        output = json.loads(description.get("output") or "{}")
        if "tuningJobName" in output:
            objective = output.get("objective", {})
            lines.append(f"tuning job {output['tuningJobName']}: best {output.get('trainingJobName')} "
                         f"{objective.get('MetricName')}={objective.get('Value')}")
        else:
            lines.append(f"training job {output.get('trainingJobName')}")
        lines.append(f"model: {output.get('modelArtifacts')}")
        metrics = "  ".join(f"{m['MetricName']}={m['Value']}" for m in output.get("metrics", []))
        lines.append(f"metrics: {metrics or '(none reported)'}")
        lines.extend(registration_lines(output))
    elif state in ("FAILED", "TIMED_OUT", "ABORTED"):
        lines.append(f"{state}: {description.get('error') or ''}")
        reason = failure_reason(description.get("cause"))
        lines.append(f"reason: {reason or description.get('cause') or '(none given)'}")
    return lines


def registration_lines(output: dict[str, Any]) -> list[str]:
    """What became of the model: its registered version (and how to approve it) or why not."""
    if "registered" not in output:
        return []
    if output["registered"]:
        return [f"registered: {output.get('modelPackageArn')} (PendingManualApproval)",
                f"  {output.get('registrationReason')}",
                f"  approve: smtrain models approve {output.get('modelPackageArn')} --reason '...'"]
    return [f"registry: {output.get('registrationReason')}"]


def warm_pool_line(description: dict[str, Any], *, region: str | None = None,
                   table: Mapping[str, Any] | None = None) -> str | None:
    """What a training job's ``WarmPoolStatus`` says (None: it asked for no warm pool). The
    retained time is wall-clock seconds, billed once per instance (API reference, WarmPoolStatus),
    at the instance's price (``smtrain.core.prices``, with ``region``) where the table has it."""
    pool = description.get("WarmPoolStatus")
    if not pool:
        return None
    status = pool["Status"]
    retained = pool.get("ResourceRetainedBillableTimeInSeconds")
    resources = description.get("ResourceConfig", {})
    count = int(resources.get("InstanceCount", 1))
    instance_type = str(resources.get("InstanceType"))
    price = prices.hourly(region, instance_type, table) if region is not None else None
    worth = ""
    if retained is not None and price is not None:
        # The pool's retained time is billed as a job's billable time is: the one cost function.
        usd = prices.reckon({"ResourceConfig": resources, "BillableTimeInSeconds": retained},
                            {instance_type: price})["usd"]
        worth = f", ${usd:.4f} at ${price:g}/h"
    billed = (f"{retained} s retained x {count} instance(s) billed{worth}"
              if retained is not None else None)
    keep = resources.get("KeepAlivePeriodInSeconds")
    if status == "InUse":
        return "warm pool: in use by this job"
    if status == "Available":
        details = [f"up to {keep} s after the job" if keep is not None else None,
                   f"{billed} so far" if billed else None,
                   "a run with the same role, instance type and count, volume, VPC and isolation matches"]
        return "warm pool: waiting for a matching run (" + "; ".join(d for d in details if d) + ")"
    if status == "Reused":
        return f"warm pool: reused by {pool.get('ReusedByJob')}" + (f" ({billed})" if billed else "")
    return f"warm pool: {status}" + (f" ({billed})" if billed else "")


def report_costs(session: Any, names: list[str], region: str) -> None:
    """Each job's cost line, and the costs put on the jobs' MLflow runs where
    ``MLFLOW_TRACKING_URI`` names the tracking server (``smtrain compare`` shows them)."""
    costs = reckon_run(session.client("sagemaker"), names, region)
    for line in costs.lines:
        _say(line)
    record_quietly(os.environ.get(contract.ENV_TRACKING_URI), costs.jobs, _say)


def exit_code(state: str) -> int:
    return {"SUCCEEDED": EXIT_OK, "FAILED": EXIT_FAILED}.get(state, EXIT_ABORTED)


class JobView:
    """Prints a job's status and secondary-status changes and new final metrics, once each."""

    def __init__(self, sagemaker: Any) -> None:
        self.sagemaker = sagemaker
        self.seen: set[str] = set()
        self.unavailable: set[str] = set()

    def update(self, name: str, started: float) -> None:
        if name in self.unavailable:
            return
        try:
            description = self.sagemaker.describe_training_job(TrainingJobName=name)
        except Exception as error:  # tuning jobs, or an endpoint that does not serve SageMaker
            try:
                tuning = self.sagemaker.describe_hyper_parameter_tuning_job(
                    HyperParameterTuningJobName=name)
            except Exception:
                self.unavailable.add(name)
                _say(f"  {_elapsed(started)}  job {name}: details unavailable ({type(error).__name__})")
                return
            counters = tuning.get("TrainingJobStatusCounters", {})
            line = f"tuning {name}: {tuning['HyperParameterTuningJobStatus']} {counters}"
            if line not in self.seen:
                self.seen.add(line)
                _say(f"  {_elapsed(started)}  {line}")
            return
        for transition in description.get("SecondaryStatusTransitions", []):
            line = f"job {name}: {transition['Status']} - {transition.get('StatusMessage', '')}"
            if line not in self.seen:
                self.seen.add(line)
                _say(f"  {_elapsed(started)}  {line}")
        pool = warm_pool_line(description, region=self.sagemaker.meta.region_name)
        pool_seen = f"{name} warm pool {description.get('WarmPoolStatus', {}).get('Status')}"
        if pool is not None and pool_seen not in self.seen:  # once per status
            self.seen.add(pool_seen)
            _say(f"  {_elapsed(started)}  job {name}: {pool}")
        metrics = "  ".join(f"{m['MetricName']}={m['Value']:.4g}"
                            for m in description.get("FinalMetricDataList", []))
        if metrics and f"metrics {metrics}" not in self.seen:
            self.seen.add(f"metrics {metrics}")
            _say(f"  {_elapsed(started)}  latest metrics: {metrics}")


class LogTail:
    """Streams a training job's CloudWatch log events, each once."""

    def __init__(self, logs: Any) -> None:
        self.logs = logs
        self.seen: set[tuple[str, int, str]] = set()

    def update(self, job: str) -> None:
        try:
            streams = self.logs.describe_log_streams(logGroupName=TRAINING_LOG_GROUP,
                                                     logStreamNamePrefix=f"{job}/")["logStreams"]
        except Exception:
            return  # the log group appears once the job starts
        for stream in streams:
            name = stream["logStreamName"]
            events = self.logs.get_log_events(logGroupName=TRAINING_LOG_GROUP, logStreamName=name,
                                              startFromHead=True)["events"]
            for event in events:
                key = (name, event["timestamp"], event["message"])
                if key not in self.seen:
                    self.seen.add(key)
                    _say(f"    | {event['message'].rstrip()}")


def execution_history(sfn: Any, arn: str) -> list[dict[str, Any]]:
    """Every event of the execution's history, page after page (a tuning run's cost alone adds
    a few events per training job)."""
    events: list[dict[str, Any]] = []
    request: dict[str, Any] = {"executionArn": arn, "maxResults": 1000}
    while True:
        page = sfn.get_execution_history(**request)
        events += page["events"]
        if not page.get("nextToken"):
            return events
        request["nextToken"] = page["nextToken"]


class HistoryReader:
    """An execution's history as ``follow`` polls it: every page the first time, then only the
    events since the last read, newest first (``reverseOrder``) down to the last one already
    held. A history event's ``id`` grows with each event (Step Functions API reference,
    HistoryEvent), so a page that reaches a known id ends the read; a service that ignores
    ``reverseOrder`` gives the same events, which are kept in id order either way. A
    10,000-event history (a large tuning run's cost) is not read again at every poll."""

    def __init__(self, sfn: Any, arn: str) -> None:
        self.sfn, self.arn = sfn, arn
        self.events: list[dict[str, Any]] = []

    def read(self) -> list[dict[str, Any]]:
        if not self.events:
            self.events = execution_history(self.sfn, self.arn)
            return self.events
        last = max(event["id"] for event in self.events)
        new: list[dict[str, Any]] = []
        request: dict[str, Any] = {"executionArn": self.arn, "maxResults": 1000, "reverseOrder": True}
        while True:
            page = self.sfn.get_execution_history(**request)
            fresh = [event for event in page["events"] if event["id"] > last]
            new += fresh
            if len(fresh) < len(page["events"]) or not page.get("nextToken"):
                break
            request["nextToken"] = page["nextToken"]
        self.events += sorted(new, key=lambda event: event["id"])
        return self.events


def follow(session: Any, arn: str, *, logs: bool, interval: float) -> int:
    """The live view: new state transitions, the job's progress and metrics, elapsed time; the
    result at the end. Returns the exit code for the final status."""
    sfn = session.client("stepfunctions")
    jobs = JobView(session.client("sagemaker"))
    tail = LogTail(session.client("logs")) if logs else None
    started = time.monotonic()
    seen_events = 0
    last_queue_line = ""
    history = HistoryReader(sfn, arn)
    _say(f"Following {arn}")
    while True:
        description = sfn.describe_execution(executionArn=arn)
        events = history.read()
        for event in events[seen_events:]:
            entered = event.get("stateEnteredEventDetails")
            if entered and entered["name"] not in QUEUE_LOOP_STATES:
                _say(f"  {_elapsed(started)}  state {entered['name']}")
        seen_events = len(events)
        queue = queue_state(events)
        if queue is not None and queue_line(queue) != last_queue_line:
            last_queue_line = queue_line(queue)
            _say(f"  {_elapsed(started)}  {last_queue_line}")
        for name in job_names(events):
            jobs.update(name, started)
            if tail is not None:
                tail.update(name)
        if description["status"] != "RUNNING":
            _say(f"  {_elapsed(started)}  {description['status']}")
            for line in summary(description):
                _say(line)
            report_costs(session, job_names(events), arn.split(":")[3])
            if description["status"] == "FAILED":
                job = failed_job(description.get("cause"), events)
                if job is not None:
                    print_failure_log(session.client("logs"), job, arn.split(":")[3])
            return exit_code(description["status"])
        time.sleep(interval)


def header_line(description: Mapping[str, Any]) -> str:
    """A run's name, state and start, as ``status`` and ``list --local`` begin."""
    return (f"{description['name']}: {description['status']} "
            f"(started {description['startDate']:%Y-%m-%d %H:%M:%S})")


def status_lines(description: dict[str, Any], events: list[dict[str, Any]]) -> list[str]:
    """What ``smtrain status`` says of a run (on AWS and offline alike): its state, the current
    or last state of the state machine, where it stands in the team queue, its jobs, its result."""
    lines = [header_line(description)]
    entered = [e["stateEnteredEventDetails"]["name"] for e in events if "stateEnteredEventDetails" in e]
    if entered:
        lines.append(f"current or last state: {entered[-1]}")
    queue = queue_state(events)
    if queue is not None:
        lines.append(queue_line(queue))
    lines += [f"job: {name}" for name in job_names(events)]
    return lines + summary(description)


def describe_once(session: Any, arn: str) -> int:
    sfn = session.client("stepfunctions")
    description = sfn.describe_execution(executionArn=arn)
    events = execution_history(sfn, arn)
    for line in status_lines(description, events):
        _say(line)
    report_costs(session, job_names(events), arn.split(":")[3])
    return EXIT_OK


def print_job_logs(session: Any, arn: str) -> int:
    events = execution_history(session.client("stepfunctions"), arn)
    names = job_names(events)
    if not names:
        _say("this run has started no SageMaker job")
        return EXIT_OK
    tail = LogTail(session.client("logs"))
    for name in names:
        _say(f"== {name}")
        tail.update(name)
    return EXIT_OK
