"""``smtrain start --local``: the same run, on the offline engine (see ``smtrain.local``).

Before it runs, the synthesized app is checked against the program code
(:mod:`smtrain.local.staleness`): a stale ``cdk.out`` is synthesized again (or, with
``--no-synth``, refused), so an offline run never runs old code. A run that succeeded is kept as
``<work-dir>/runs/<name>.json``; the same command with the same code reports it instead of
training again (``--again`` trains again). A failed run prints the end of its job's log.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from smtrain.cli.deployment_lookup import limits_from_outputs
from smtrain.cli.execution_request import check_instance, upload_prefix
from smtrain.cli.input_checks import data_files
from smtrain.cli.outcome import EXIT_ABORTED, EXIT_FAILED, EXIT_OK, ResourceNotFound, warn
from smtrain.core import builtin_algorithms, contract
from smtrain.core.errors import InputError

if TYPE_CHECKING:
    from smtrain.core.programs import Program
    from smtrain.local.engine import OfflineEngine

ROOT = Path(__file__).resolve().parents[2]
#: The project's pinned CDK CLI (``make synth`` runs it with the environment below).
CDK = ROOT / "node_modules" / ".bin" / "cdk"
SYNTH_ENVIRONMENT = {"CDK_DISABLE_CLI_TELEMETRY": "true", "CDK_DISABLE_VERSION_CHECK": "1"}
#: How many of a failed job's last log lines are printed.
LOG_TAIL_LINES = contract.LOG_TAIL_LINES
RECORD_VERSION = 1


# -- stale synthesized code -------------------------------------------------------------------
def synth_command(outdir: Path) -> list[str]:
    return [str(CDK), "synth", "--no-notices", "--quiet", "--output", str(outdir.resolve())]


def resynthesize(outdir: Path) -> str | None:
    """Run ``cdk synth`` into ``outdir`` from the project root; None, or why it did not work."""
    if not (CDK.is_file() and os.access(CDK, os.X_OK)):
        return f"{CDK.relative_to(ROOT) if CDK.is_relative_to(ROOT) else CDK} is missing"
    try:
        done = subprocess.run(synth_command(outdir), cwd=ROOT, capture_output=True, text=True,
                              env={**os.environ, **SYNTH_ENVIRONMENT}, timeout=900, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"cdk synth could not run: {type(error).__name__}"
    if done.returncode != 0:
        last = next((line.strip() for line in reversed(done.stderr.splitlines()) if line.strip()), "")
        return f"cdk synth exited with {done.returncode}" + (f": {last[:200]}" if last else "")
    return None


def ensure_current(outdir: Path, programs: Mapping[str, Any], *, synth: bool) -> None:
    """Make ``outdir`` hold the programs' code as it is now: synthesize again when it does not
    (one line says which program changed), or raise :class:`ResourceNotFound` (exit 4) with the
    command to run when that is not allowed or does not work."""
    from smtrain.local.staleness import describe, stale_programs

    problems = stale_programs(outdir, programs)
    if not problems:
        return
    if not synth:
        raise ResourceNotFound(f"{outdir} is out of date ({describe(problems)}); --no-synth: "
                               "run `make synth` first")
    print(f"{describe(problems)}: re-synthesizing {outdir} (cdk synth)", flush=True)
    failure = resynthesize(outdir)
    if failure is None:
        left = stale_programs(outdir, programs)
        if not left:
            print(f"re-synthesized {outdir}", flush=True)
            return
        failure = f"still out of date after cdk synth ({describe(left)})"
    raise ResourceNotFound(f"{outdir} is out of date and {failure}: run `make synth`")


# -- the record of finished runs ------------------------------------------------------------------
def record_path(work_dir: Path, name: str) -> Path:
    return work_dir / "runs" / f"{name}.json"


def read_record(work_dir: Path, name: str) -> dict[str, Any] | None:
    path = record_path(work_dir, name)
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def write_record(work_dir: Path, name: str, record: dict[str, Any]) -> Path:
    path = record_path(work_dir, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(record, indent=2, sort_keys=True))
    partial.replace(path)
    return path


def reusable(record: dict[str, Any] | None, *, draft: dict[str, Any], digest: str, app: str) -> bool:
    """Whether ``record`` is a successful run of the same code (``digest``), input and
    synthesized app (``app``: an updated state machine is not the one that ran)."""
    return (record is not None and record.get("status") == "SUCCEEDED"
            and record.get("codeDigest") == digest and record.get("appDigest") == app
            and record.get("input") == json.loads(json.dumps(draft))
            and isinstance(record.get("output"), dict))


def fresh_name(name: str) -> str:
    """``name`` with a suffix no earlier run has (at most 80 characters, Step Functions' limit)."""
    suffix = f"-{dt.datetime.now(dt.UTC):%Y%m%d%H%M%S}-{uuid.uuid4().hex[:4]}"
    return name[:80 - len(suffix)] + suffix


def print_result(output: Mapping[str, Any], model_path: Any) -> None:
    print(f"model: {output['modelArtifacts']}\n       = {model_path}")
    print("metrics: " + "  ".join(f"{m['MetricName']}={m['Value']}" for m in output["metrics"]))
    from smtrain.cli.watch import registration_lines

    for line in registration_lines(dict(output)):
        print(line.replace("smtrain models approve", "smtrain models approve --local", 1))
    print(json.dumps(output, indent=2))


def _print_job_notes(engine: Any, output: Mapping[str, Any]) -> None:
    """What the run's jobs cost (a tuning run's: its training jobs' total), put on their MLflow
    runs too (``smtrain.cli.run_costs``), and the training job's warm pool (nothing without one),
    as the jobs' descriptions say."""
    from smtrain.cli.run_costs import BackendClient, reckon_run, record_quietly
    from smtrain.cli.watch import warm_pool_line

    tuning = output.get("tuningJobName")
    costs = reckon_run(BackendClient(engine.backend), [str(tuning or output["trainingJobName"])], engine.region)
    for line in costs.lines:
        print(line)
    record_quietly(engine.tracking_uri, costs.jobs, print)
    if tuning:
        return
    try:
        description = engine.backend.describe_training_job(output["trainingJobName"])
    except Exception:  # a backend that does not keep the job: nothing to say
        return
    pool = warm_pool_line(description, region=engine.region)
    if pool is None:
        return
    if description["WarmPoolStatus"]["Status"] == "Available":
        pool += ("; offline, the next matching run that trains with this --work-dir (a new input, "
                 "or --again) starts on it")
    print(pool)


# -- a failed job's log -----------------------------------------------------------------------
def _failed_job_names(result: Any) -> list[str]:
    """Training jobs of the run, the failed one first (from the cause, else the history)."""
    from smtrain.cli.watch import failed_job_name, job_names

    failed = failed_job_name(result.cause)
    names = [failed] if failed else []
    for name in reversed(job_names(list(result.events or []), kinds=("TrainingJobName",))):
        if name not in names:
            names.append(name)
    return names


def job_log(engine: Any, work_dir: Path, names: list[str]) -> Path | None:
    """The local log of the first of ``names`` that has one: the backend's record of the job
    (``LocalBackend``), else ``<work-dir>/jobs/<name>/log.txt`` where the local backend writes it."""
    jobs = getattr(engine.backend, "jobs", None)
    logs: dict[str, Path] = {}
    if callable(jobs):
        try:
            logs = {job.name: job.log_path for job in jobs() if getattr(job, "log_path", None)}
        except Exception:  # a backend without job records
            logs = {}
    for name in names:
        for path in (logs.get(name), work_dir / "jobs" / name / "log.txt"):
            if path is not None and Path(path).is_file():
                return Path(path)
    return None


def print_log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> None:
    text = path.read_text(errors="replace").splitlines()
    shown = text[-lines:]
    print(f"last {len(shown)} of {len(text)} log lines of {path.parent.name}:")
    for line in shown:
        print(f"    | {line}")
    print(f"whole log: {path}", flush=True)


# -- start --local ------------------------------------------------------------------------------
def start_local(args: argparse.Namespace, draft: dict[str, Any], channel_inputs: Any, name: str) -> int:
    """Run the execution in this process and follow it to its end (there is no service to come
    back to, so ``--local`` implies ``--wait``). Sample data is put in place when the default
    channels are empty."""
    if not (args.cdk_out / "manifest.json").is_file():
        raise ResourceNotFound(f"{args.cdk_out} holds no synthesized app: run `make synth` first")
    from smtrain.cli.execution_request import runnable_programs

    programs = runnable_programs(draft[contract.PROGRAM])
    chosen = programs[draft[contract.PROGRAM]]
    if chosen.kind == "builtin" and chosen.algorithm not in builtin_algorithms.RUNS_OFFLINE:
        # Refused before anything starts; the engine would fail the job with the same line.
        raise InputError(f"program {chosen.name}: "
                         f"{builtin_algorithms.offline_refusal(str(chosen.algorithm))}")
    if chosen.kind == "script" and chosen.framework_version is not None:
        # A version declared in the manifest (the cdk.json default is one the engine runs).
        refusal = contract.offline_version_refusal(
            str(chosen.framework), chosen.framework_version, (sys.version_info[0], sys.version_info[1]))
        if refusal is not None:
            raise InputError(f"program {chosen.name}: {refusal}")
    ensure_current(args.cdk_out, programs, synth=not getattr(args, "no_synth", False))
    from smtrain.local.staleness import app_digest, code_digest

    program = programs[draft[contract.PROGRAM]]
    digest, app = code_digest(program), app_digest(args.cdk_out)
    record = read_record(args.work_dir, name)
    again = getattr(args, "again", False)
    if not again and reusable(record, draft=draft, digest=digest, app=app):
        assert record is not None
        finished = str(record.get("finished", "?"))[:19].replace("T", " ")
        print(f"Already ran {record.get('execution', name)} on {finished} with the same code, input "
              "and synthesized app (--again to train again)", flush=True)
        print_result(record["output"], record.get("modelPath"))
        return EXIT_OK
    # A name that ran before (other code, or --again) gets a suffix: execution names never repeat.
    execution = fresh_name(name) if again or record is not None else name
    from smtrain.local.demo import Progress
    from smtrain.local.engine import OfflineEngine

    progress = Progress()
    on_log = progress.log if not args.logs else (lambda job, line: progress.say(f"[{job[-14:]}] {line}"))
    # The engine's deployment and S3 stand-in first, its moto and MLflow store only on entering
    # it: a refused input (a limit, a channel with no data) is refused before anything starts.
    engine = OfflineEngine(outdir=args.cdk_out, work_dir=args.work_dir, on_log=on_log)
    execution_input = _local_input(args, draft, channel_inputs, name, program=program, engine=engine)
    with engine:
        print(f"Started {execution} locally (state machine from {args.cdk_out}; S3 stand-in "
              f"{engine.s3.root})", flush=True)
        progress.started = time.monotonic()
        result = engine.run(execution_input, name=execution, on_event=progress.event)
        print(f"  {result.status} in {time.monotonic() - progress.started:.1f} s", flush=True)
        if result.succeeded and result.output is not None:
            output = result.output
            model_path = engine.local_path(output["modelArtifacts"])
            write_record(args.work_dir, name, {
                "version": RECORD_VERSION, "name": name, "execution": execution,
                "program": program.name, "status": result.status, "input": draft,
                "executionInput": execution_input, "codeDigest": digest, "appDigest": app, "output": output,
                "modelPath": str(model_path), "finished": dt.datetime.now(dt.UTC).isoformat(),
            })
            _print_job_notes(engine, output)  # before the output's JSON, which ends the report
            print_result(output, model_path)
            if output.get("registered"):
                for problem in engine.registry.serving_problems(output["modelPackageArn"]):
                    warn(problem)
            return EXIT_OK
        from smtrain.cli.watch import failure_reason

        print(f"{result.status}: {result.error}\nreason: {failure_reason(result.cause) or result.cause}")
        names = _failed_job_names(result)
        log = job_log(engine, engine.work_dir, names) if names else None
        if log is not None:
            print_log_tail(log)
        elif names:
            print(f"no local log of {names[0]} under {engine.work_dir / 'jobs'}")
        return EXIT_FAILED if result.status == "FAILED" else EXIT_ABORTED


def _local_input(args: argparse.Namespace, draft: dict[str, Any], channel_inputs: Any, name: str, *,
                 program: Program, engine: OfflineEngine) -> dict[str, Any]:
    """The execution input of a local run, its folders copied into the engine's S3 stand-in; a
    default channel with no data is refused (:class:`InputError`), naming ``--input``."""
    deployment, s3 = engine.deployment, engine.s3
    bucket = deployment.data_bucket
    limits = limits_from_outputs(deployment.outputs)
    if limits is not None:
        check_instance(draft.get(contract.INSTANCE_TYPE), draft.get(contract.INSTANCE_COUNT),
                       allowed=limits.allowed_instance_types,
                       max_count=limits.max_instance_count)
        from smtrain.cli.execution_request import check_deployed

        check_deployed(draft, limits.deployment())
    channels = {}
    for channel in channel_inputs:
        if channel.local_dir is not None:
            uri = f"s3://{bucket}/{upload_prefix(name, channel.channel)}"
            # A rerun under the same --name with another folder must not train on both.
            shutil.rmtree(s3.path(uri), ignore_errors=True)
            files = data_files(channel.local_dir)
            for path in files:
                s3.put_file(path, uri + path.relative_to(channel.local_dir).as_posix())
            count = len(files)
            print(f"copied {count} files from {channel.local_dir} to {uri}", flush=True)
        else:
            uri = channel.s3_uri
        channels[channel.channel] = uri
    execution_input = {**draft, **({"inputs": channels} if channels else {})}
    # The channels left to their default place (datasets/<program>/<channel>/) must hold
    # data before anything starts; the sample datasets fill it for the shipped programs when
    # no --input was given (never beside the user's own data, which they would not match).
    defaults = {c: contract.default_channel_uri(bucket, program.name, c.name)
                for c in program.channels if c.name not in channels}
    from training_code.sample_data import PROGRAMS as SAMPLE_PROGRAMS

    if (defaults and not channels and program.name in SAMPLE_PROGRAMS
            and not any(s3.objects_under(uri) for uri in defaults.values())):
        from training_code.sample_data import write_datasets

        sample = args.work_dir / "sample-data"
        write_datasets(sample)
        s3.put_tree(sample, f"s3://{bucket}/{contract.DATASETS_PREFIX}")
        print(f"put the sample datasets under s3://{bucket}/{contract.DATASETS_PREFIX} "
              "(local stand-in)", flush=True)
    empty = {c.name: uri for c, uri in defaults.items()
             if c.required and not s3.objects_under(uri)}
    if empty:
        raise InputError(
            f"program {program.name!r} has no data for channel{'s' if len(empty) > 1 else ''} "
            + ", ".join(f"'{name}' (nothing under {uri})" for name, uri in empty.items())
            + ": pass " + " ".join(f"--input {name}=<folder or s3:// URI>" for name in empty))
    if channels:  # beside the user's own data, say where the other channels come from
        for channel, uri in defaults.items():
            if s3.objects_under(uri):
                print(f"channel {channel.name}: {uri} (its default place; --input "
                      f"{channel.name}=<folder or s3:// URI> for another)", flush=True)
    return execution_input
