"""``smtrain watch|status|list|logs --local``: offline runs, read as the AWS commands read cloud ones.

The offline engine records each execution under ``<work-dir>/executions/``
(:mod:`smtrain.local.execution_records`: the description ``DescribeExecution`` would answer and
the whole history) and each job's log under ``<work-dir>/jobs/<job>/log.txt``; these commands
print them in the format the AWS commands print. An execution still running in another
``smtrain start --local`` is followed until its record says it ended (its progress shows in
that process: the history is recorded when the execution ends). A run whose process ended
before it did (interrupted, killed) reads ``ABORTED``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from smtrain.cli.execution_request import check_execution_name
from smtrain.cli.outcome import EXIT_ABORTED, EXIT_OK, ResourceNotFound, fail, say
from smtrain.cli.watch import exit_code, failed_job, header_line, job_names, status_lines, summary
from smtrain.core.errors import InputError
from smtrain.local import execution_records


def _no_runs(work_dir: Path) -> ResourceNotFound:
    return ResourceNotFound(f"no offline runs recorded under {work_dir} (`smtrain start --local` "
                            "records them there; --work-dir names another folder)")


def _with_status(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` with its effective status; an orphaned run gets the error and cause that say why."""
    if execution_records.orphaned(record):
        record["error"] = "ProcessEnded"
        record["cause"] = (f"the process that ran it (pid {record.get('pid')}) ended before the "
                           "run did (interrupted or killed)")
    record["status"] = execution_records.effective_status(record)
    return record


def _record(work_dir: Path, name_or_arn: str) -> dict[str, Any]:
    """The record of the run named ``name_or_arn`` (an execution ARN: its last part), or one
    line: an invalid name (exit 2), no runs at all or no such run (exit 4)."""
    name = name_or_arn.rsplit(":", 1)[-1] if name_or_arn.startswith("arn:") else name_or_arn
    check_execution_name(name)
    record = execution_records.read(work_dir, name)
    if record is None:
        if not execution_records.every(work_dir):
            raise _no_runs(work_dir)
        raise ResourceNotFound(f"no offline run named {name} under {work_dir} "
                               "(`smtrain list --local --work-dir DIR` lists them)")
    return _with_status(record)


def status(args: argparse.Namespace) -> int:
    """As ``smtrain status``: state, current or last state, jobs, result."""
    record = _record(args.work_dir, args.name)
    for line in status_lines(record, record.get("events") or []):
        say(line)
    if record.get("status") == "SUCCEEDED":  # what its jobs cost, as the state machine reckoned it
        from smtrain.core.prices import output_cost_line

        region = str(record.get("executionArn", "::::")).split(":")[3]
        cost = output_cost_line(json.loads(record.get("output") or "{}"), region)
        if cost is not None:
            say(cost)
    return EXIT_OK


def list_runs(args: argparse.Namespace) -> int:
    """As ``smtrain list``: the most recently started first, at most ``--max``."""
    if not 1 <= args.max <= 1000:
        raise InputError(f"--max {args.max} must be from 1 to 1000")
    records = [_with_status(record) for record in execution_records.every(args.work_dir)]
    if not records:
        raise _no_runs(args.work_dir)
    shown = [r for r in records if args.status in (None, r["status"])][:args.max]
    if not shown:
        say("no runs")
        return EXIT_OK
    say(f"{'NAME':<40} {'STATUS':<10} STARTED")
    for record in shown:
        say(f"{record['name']:<40} {record['status']:<10} {record['startDate']:%Y-%m-%d %H:%M:%S}")
    return EXIT_OK


def _job_logs(work_dir: Path, name: str) -> list[Path]:
    """The log of training job ``name``, or of each trial of tuning job ``name``."""
    jobs = work_dir / "jobs"
    own = jobs / name / "log.txt"
    if own.is_file():
        return [own]
    return sorted(path / "log.txt" for path in jobs.glob(f"{name}-*") if (path / "log.txt").is_file())


def _print_logs(work_dir: Path, record: dict[str, Any]) -> None:
    names = job_names(record.get("events") or [])
    if not names:
        say("this run has started no SageMaker job" if record["status"] != "RUNNING"
            else "this run has started no SageMaker job yet (its history is recorded when it ends)")
        return
    for name in names:
        found = _job_logs(work_dir, name)
        if not found:
            say(f"== {name}")
            say(f"no local log of {name} under {work_dir / 'jobs'}")
        for path in found:
            say(f"== {path.parent.name}")
            for line in path.read_text(errors="replace").splitlines():
                say(f"    | {line}")


def logs(args: argparse.Namespace) -> int:
    """As ``smtrain logs``: each job's whole log, under ``== JOB``, each line as ``    | ...``."""
    _print_logs(args.work_dir, _record(args.work_dir, args.name))
    return EXIT_OK


def watch(args: argparse.Namespace) -> int:
    """As ``smtrain watch``: waits for a run still running in another process, then its states,
    result and (failed) the end of its job's log; with ``--logs`` every job's log. The exit code
    is the run's, as on AWS."""
    record = _record(args.work_dir, args.name)
    if record["status"] == "RUNNING":
        say(f"Following {record['executionArn']} (running offline in process {record.get('pid')}; "
            "its progress shows there)")
        try:
            while record["status"] == "RUNNING":
                time.sleep(args.interval)
                record = _record(args.work_dir, args.name)
        except KeyboardInterrupt:
            fail(f"interrupted (the run goes on in process {record.get('pid')})")
            return EXIT_ABORTED
    events = record.get("events") or []
    for event in events:
        entered = event.get("stateEnteredEventDetails")
        if entered:
            say(f"  state {entered['name']}")
    if args.logs:
        _print_logs(args.work_dir, record)
    say(f"  {header_line(record)}")
    for line in summary(record):
        say(line)
    if record["status"] == "FAILED":
        from smtrain.cli.local_runs import print_log_tail

        job = failed_job(record.get("cause"), events)
        found = _job_logs(args.work_dir, job) if job else []
        if found:
            print_log_tail(found[-1])
        elif job:
            say(f"no local log of {job} under {args.work_dir / 'jobs'}")
    return exit_code(record["status"])
