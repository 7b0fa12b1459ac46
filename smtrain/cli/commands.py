"""What each ``smtrain`` command does (AWS and the offline engine are imported here, lazily)."""

from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
from pathlib import Path
from typing import Any

from smtrain.cli.deployment_lookup import explicit_resources, find_resources, project_config
from smtrain.cli.execution_request import (
    build_input,
    check_deployed,
    check_execution_name,
    check_instance,
    deterministic_name,
    load_tuning,
    parse_channel_options,
    parse_hyperparameters,
    parse_inputs,
    parse_register,
    resolve_program,
    runnable_programs,
    upload_prefix,
)
from smtrain.cli.outcome import EXIT_OK, EXIT_USAGE, Handler, ResourceNotFound, aws_session, run_handler, say
from smtrain.core import contract
from smtrain.core.errors import InputError
from smtrain.core.programs import ProgramError


def run(args: argparse.Namespace) -> int:
    handlers: dict[str, Handler] = {
        "start": start, "watch": watch, "status": status, "list": list_runs, "logs": logs,
        "stop": stop, "data": data_upload, "compare": compare_runs,
    }
    return run_handler(handlers[args.command], args, usage_errors=(ProgramError,),
                       interrupted="interrupted (the run, if started, goes on: `smtrain stop NAME` stops it)")


def _resources(args: argparse.Namespace, session: Any, *, need_bucket: bool) -> Any:
    stack = args.stack_name or project_config().stack_name
    return find_resources(session, stack_name=stack, state_machine_arn=args.state_machine_arn,
                          data_bucket=args.data_bucket, need_bucket=need_bucket)


def execution_arn(state_machine_arn: str, name_or_arn: str) -> str:
    if name_or_arn.startswith("arn:"):
        return name_or_arn
    check_execution_name(name_or_arn)
    return state_machine_arn.replace(":stateMachine:", ":execution:", 1) + f":{name_or_arn}"


def console_link(arn: str) -> str:
    region = arn.split(":")[3]
    return f"https://{region}.console.aws.amazon.com/states/home?region={region}#/v2/executions/details/{arn}"


# -- start ------------------------------------------------------------------------------
def _directory_digest(directory: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        digest.update(path.relative_to(directory).as_posix().encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:16]


def _checked_request(args: argparse.Namespace, data_bucket: str | None) -> tuple[dict[str, Any], Any, str]:
    """Everything checked and built before any AWS call: (input, channel inputs, name). The
    deployed limits (instance types and count) are checked once the stack is known."""
    if args.program is None and args.method is None:
        raise InputError("name the program to train: --program NAME (`smtrain programs` lists them)")
    if args.program is not None and args.method is not None:
        raise InputError("--program and --method both name the program: give --program only")
    programs = runnable_programs(args.program)
    program = resolve_program(programs, program=args.program, method=args.method)
    hyperparameters = parse_hyperparameters(args.hp)
    check_instance(args.instance_type, args.instance_count, allowed=(),
                   max_count=contract.MAX_INSTANCE_COUNT)
    if args.max_runtime is not None and args.max_runtime < 1:
        raise InputError(f"--max-runtime {args.max_runtime} must be a positive number of seconds")
    if args.logs and not (args.wait or args.local):
        raise InputError("--logs needs --wait")
    tuning = None
    if args.tune is not None:
        tuning = load_tuning(args.tune)
    channel_inputs = parse_inputs(args.input, data_bucket=data_bucket,
                                  channels=[c.name for c in program.channels])
    from smtrain.cli.input_checks import check_local_channels

    check_local_channels(channel_inputs, program)
    if args.name is not None:
        check_execution_name(args.name)
    # The name is derived from the input; a local folder counts by its contents.
    identity = {c.channel: f"local:{_directory_digest(c.local_dir)}" if c.local_dir is not None
                else str(c.s3_uri) for c in channel_inputs}
    register = parse_register(register=args.register, minimum=args.register_min,
                              maximum=args.register_max)
    draft = build_input(program=program, programs=programs, hyperparameters=hyperparameters,
                        instance_type=args.instance_type, instance_count=args.instance_count,
                        spot=args.spot, channels=identity, tuning=tuning, max_runtime=args.max_runtime,
                        register=register, keep_alive=getattr(args, "keep_alive", None),
                        on_demand=getattr(args, "on_demand", False),
                        priority=getattr(args, "priority", None), team=getattr(args, "team", None),
                        channel_options=parse_channel_options(
                            input_modes=getattr(args, "input_mode", ()),
                            distributions=getattr(args, "s3_distribution", ()),
                            compressions=getattr(args, "compression", ())))
    name = args.name or deterministic_name(program.name, draft)
    return draft, channel_inputs, name


def start(args: argparse.Namespace) -> int:
    _, explicit_bucket = explicit_resources(state_machine_arn=args.state_machine_arn,
                                            data_bucket=args.data_bucket)
    draft, channel_inputs, name = _checked_request(args, explicit_bucket)
    if args.local:
        from smtrain.cli.local_runs import start_local

        return start_local(args, draft, channel_inputs, name)
    session = aws_session()
    needs_bucket = any(c.local_dir is not None or c.s3_uri is not None for c in channel_inputs)
    resources = _resources(args, session, need_bucket=needs_bucket)
    if needs_bucket and resources.data_bucket is None:
        raise ResourceNotFound("the data bucket is unknown: pass --data-bucket or set SMTRAIN_DATA_BUCKET")
    if resources.limits is not None:
        check_instance(args.instance_type, args.instance_count,
                       allowed=resources.limits.allowed_instance_types,
                       max_count=resources.limits.max_instance_count)
        check_deployed(draft, resources.limits.deployment())
    parse_inputs(args.input, data_bucket=resources.data_bucket,  # now against the stack's bucket
                 channels=[c.channel for c in channel_inputs])
    channels = {c.channel: c.s3_uri or f"s3://{resources.data_bucket}/{upload_prefix(name, c.channel)}"
                for c in channel_inputs}
    execution_input = {**draft, **({"inputs": channels} if channels else {})}
    sfn = session.client("stepfunctions")
    arn = execution_arn(resources.state_machine_arn, name)
    existing = _existing_execution(sfn, arn)
    if existing is not None:
        if json.loads(existing["input"]) != execution_input:
            raise InputError(f"execution name {name!r} is already taken by a run with a different "
                             "input; choose another --name")
        say(f"Already started (same name, same input): {arn}  [{existing['status']}]")
    else:
        for channel in channel_inputs:
            if channel.local_dir is not None:
                _upload_tree(session, channel.local_dir, resources.data_bucket,
                             upload_prefix(name, channel.channel))
        from botocore.exceptions import ClientError

        try:
            sfn.start_execution(stateMachineArn=resources.state_machine_arn, name=name,
                                input=json.dumps(execution_input))
        except ClientError as error:
            if error.response["Error"]["Code"] != "ExecutionAlreadyExists":
                raise
        say(f"Started {arn}")
    say(f"Console: {console_link(arn)}")
    if not args.wait:
        say(f"Follow it with: smtrain watch {name}")
        return EXIT_OK
    from smtrain.cli.watch import follow

    return follow(session, arn, logs=args.logs, interval=args.interval)


def _existing_execution(sfn: Any, arn: str) -> dict[str, Any] | None:
    from botocore.exceptions import ClientError

    try:
        described: dict[str, Any] = sfn.describe_execution(executionArn=arn)
        return described
    except ClientError as error:
        if error.response["Error"]["Code"] in ("ExecutionDoesNotExist", "ResourceNotFound"):
            return None
        raise


def _upload_tree(session: Any, directory: Path, bucket: str | None, prefix: str) -> int:
    from smtrain.cli.input_checks import data_files

    files = sorted(data_files(directory))
    total = sum(p.stat().st_size for p in files)
    s3 = session.client("s3")
    done = 0
    for index, path in enumerate(files, start=1):
        key = prefix + path.relative_to(directory).as_posix()
        s3.upload_file(str(path), bucket, key)
        done += path.stat().st_size
        say(f"  uploaded {index}/{len(files)} ({done / 1e6:.1f}/{total / 1e6:.1f} MB) s3://{bucket}/{key}")
    return len(files)


# -- following and inspecting ---------------------------------------------------------------
def watch(args: argparse.Namespace) -> int:
    if args.local:
        from smtrain.cli import local_inspect

        return local_inspect.watch(args)
    session = aws_session()
    arn = execution_arn(_resources(args, session, need_bucket=False).state_machine_arn, args.name)
    from smtrain.cli.watch import follow

    return follow(session, arn, logs=args.logs, interval=args.interval)


def status(args: argparse.Namespace) -> int:
    if args.local:
        from smtrain.cli import local_inspect

        return local_inspect.status(args)
    session = aws_session()
    arn = execution_arn(_resources(args, session, need_bucket=False).state_machine_arn, args.name)
    from smtrain.cli.watch import describe_once

    return describe_once(session, arn)


def list_runs(args: argparse.Namespace) -> int:
    if args.local:
        from smtrain.cli import local_inspect

        return local_inspect.list_runs(args)
    if not 1 <= args.max <= 1000:
        raise InputError(f"--max {args.max} must be from 1 to 1000")
    session = aws_session()
    machine = _resources(args, session, need_bucket=False).state_machine_arn
    kwargs: dict[str, Any] = {"stateMachineArn": machine, "maxResults": args.max}
    if args.status:
        kwargs["statusFilter"] = args.status
    executions = session.client("stepfunctions").list_executions(**kwargs)["executions"]
    if not executions:
        say("no runs")
        return EXIT_OK
    say(f"{'NAME':<40} {'STATUS':<10} STARTED")
    for execution in executions:
        say(f"{execution['name']:<40} {execution['status']:<10} {execution['startDate']:%Y-%m-%d %H:%M:%S}")
    return EXIT_OK


def logs(args: argparse.Namespace) -> int:
    if args.local:
        from smtrain.cli import local_inspect

        return local_inspect.logs(args)
    session = aws_session()
    arn = execution_arn(_resources(args, session, need_bucket=False).state_machine_arn, args.name)
    from smtrain.cli.watch import print_job_logs

    return print_job_logs(session, arn)


def stop(args: argparse.Namespace) -> int:
    session = aws_session()
    arn = execution_arn(_resources(args, session, need_bucket=False).state_machine_arn, args.name)
    sfn = session.client("stepfunctions")
    existing = _existing_execution(sfn, arn)
    if existing is None:
        raise ResourceNotFound(f"no run named {args.name}")
    if existing["status"] != "RUNNING":
        say(f"{args.name} already ended: {existing['status']}")
        return EXIT_OK
    sfn.stop_execution(executionArn=arn, error="StoppedBySmtrain", cause=args.reason)
    say(f"Stopped {arn} (Step Functions stops its SageMaker job)")
    return EXIT_OK


def data_upload(args: argparse.Namespace) -> int:
    source = args.source
    if source is not None and not source.is_dir():
        raise InputError(f"--from {source} is not a directory")
    session = aws_session()
    bucket = _resources(args, session, need_bucket=True).data_bucket
    if bucket is None:
        raise ResourceNotFound("the data bucket is unknown: pass --data-bucket or set SMTRAIN_DATA_BUCKET")
    with tempfile.TemporaryDirectory() as scratch:
        if source is None:
            from training_code.sample_data import write_datasets

            source = Path(scratch)
            write_datasets(source)
            say("prepared the sample datasets (scikit-learn digits)")
        count = _upload_tree(session, source, bucket, contract.DATASETS_PREFIX)
    say(f"uploaded {count} files to s3://{bucket}/{contract.DATASETS_PREFIX}")
    return EXIT_OK if count else EXIT_USAGE


def compare_runs(args: argparse.Namespace) -> int:
    import os

    if args.plot is not None and args.plot.suffix.lower() != ".png":
        raise InputError(f"--plot {args.plot} must name a .png file")
    if not 1 <= args.max <= 1000:
        raise InputError(f"--max {args.max} must be from 1 to 1000")
    uri: str | None
    if args.local:
        database = (args.work_dir / "mlflow" / "mlflow.db").resolve()
        if not database.is_file():
            from smtrain.cli.model_commands import demo_hint

            raise InputError(f"no offline runs tracked under {args.work_dir} (run smtrain start --local first)"
                             + demo_hint(args.work_dir, "mlflow/mlflow.db"))
        uri = f"sqlite:///{database}"
    else:
        uri = args.tracking_uri or os.environ.get(contract.ENV_TRACKING_URI)
        if not uri:
            raise InputError("no tracking URI: pass --tracking-uri (the tracking server ARN on AWS), "
                             "set MLFLOW_TRACKING_URI, or use --local")
    from smtrain.cli.compare import compare

    # An unknown --sort metric raises UnknownMetric, an InputError: one line, exit 2 (see run()).
    say(compare(tracking_uri=uri, experiment=args.experiment, metric=args.sort, limit=args.max,
                ascending=args.ascending, plot_path=args.plot, program=args.program))
    return EXIT_OK
