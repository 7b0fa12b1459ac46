"""``smtrain queue``: what waits and runs in the team queue, under whose share, and where each
run stands (setting ``queue: batch``; docs/queue.md)."""

from __future__ import annotations

import argparse
import datetime
import json
from collections.abc import Iterable, Mapping
from typing import Any

from smtrain.cli.deployment_lookup import project_config, stack_outputs
from smtrain.cli.outcome import EXIT_OK, ResourceNotFound, aws_session, run_handler, say
from smtrain.core import contract
from smtrain.core.errors import InputError


def run(args: argparse.Namespace) -> int:
    return run_handler(show, args)


def show(args: argparse.Namespace) -> int:
    if args.local:
        path = args.work_dir / contract.LOCAL_QUEUE_FILE
        if not path.is_file():
            raise ResourceNotFound(f"no offline team queue under {args.work_dir} (a deployment with "
                                   "queue: batch records one when `smtrain start --local` runs)")
        jobs = json.loads(path.read_text())
    else:
        session = aws_session()
        stack = args.stack_name or project_config().stack_name
        outputs = stack_outputs(session.client("cloudformation"), stack)
        jobs = list_jobs(session.client("batch"), team_queues(outputs, stack))
    for line in table(jobs):
        say(line)
    return EXIT_OK


def team_queues(outputs: Mapping[str, str], stack: str) -> dict[str, str]:
    """Each priority's job queue name, from the workflow stack's ``TeamQueues`` output."""
    text = outputs.get(contract.OUTPUT_TEAM_QUEUES)
    if text is None:
        raise InputError(f"stack {stack} has no team queue (its setting queue is "
                         f"{outputs.get(contract.OUTPUT_TEAM_QUEUE, 'off')}): deploy with queue: batch")
    return dict(pair.split("=", 1) for pair in text.split(",") if "=" in pair)


def list_jobs(batch: Any, queues: Mapping[str, str]) -> list[dict[str, Any]]:
    """Every service job of ``queues`` that has not ended, with its queue's priority:
    ``ListServiceJobs`` answers one status at a time ("If you don't specify a status, only
    RUNNING jobs are returned"), so each waiting and running status is asked for."""
    jobs = []
    for priority, queue in queues.items():
        for status in contract.SERVICE_JOB_ACTIVE:
            kwargs: dict[str, Any] = {"jobQueue": queue, "jobStatus": status}
            while True:
                page = batch.list_service_jobs(**kwargs)
                jobs += [{**job, "priority": priority} for job in page.get("jobSummaryList", [])]
                if not page.get("nextToken"):
                    break
                kwargs["nextToken"] = page["nextToken"]
    return jobs


def table(jobs: Iterable[Mapping[str, Any]]) -> list[str]:
    """One line per job: high priority first, then the longest waiting."""
    ordered = sorted(jobs, key=lambda job: (list(contract.QUEUE_PRIORITIES).index(job["priority"])
                                            if job.get("priority") in contract.QUEUE_PRIORITIES else 99,
                                            _millis(job.get("createdAt"))))
    if not ordered:
        return ["the team queue is empty: nothing waits or runs"]
    lines = [f"{'PRIORITY':<9} {'STAGE':<10} {'STATUS':<10} {'SHARE':<16} {'SUBMITTED':<20} {'RUN':<40} TRAINING JOB"]
    for job in ordered:
        arn = job.get("latestAttempt", {}).get("serviceResourceId", {}).get("value")
        training_job = contract.batch_training_job_name(arn) if arn else "-"
        submitted = datetime.datetime.fromtimestamp(_millis(job.get("createdAt")) / 1000)
        lines.append(f"{job.get('priority', '?'):<9} "
                     f"{contract.SERVICE_JOB_STAGES.get(job.get('status', ''), '?'):<10} "
                     f"{job.get('status', '?'):<10} {job.get('shareIdentifier') or '-':<16} "
                     f"{submitted:%Y-%m-%d %H:%M:%S}  {job.get('jobName', '?'):<40} {training_job}")
    return lines


def _millis(value: Any) -> float:
    """``createdAt``: milliseconds since the epoch (botocore's model: Long)."""
    if isinstance(value, datetime.datetime):
        return value.timestamp() * 1000
    return float(value or 0)

