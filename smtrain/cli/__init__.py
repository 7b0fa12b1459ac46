"""``smtrain``: start, follow and explain SageMaker training runs (argument parsing only).

Only the standard library is imported here, so ``smtrain --help`` and every validation error
answer at once; AWS and the offline engine are imported by the command that needs them.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from smtrain.cli.outcome import EXIT_ABORTED, EXIT_ENVIRONMENT, EXIT_FAILED, EXIT_OK, EXIT_USAGE
from smtrain.core import contract

__all__ = ["EXIT_ABORTED", "EXIT_ENVIRONMENT", "EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "build_parser", "main",
           "run_as_command"]


def _aws_options(parser: argparse.ArgumentParser, *, top_level: bool = False) -> None:
    """``--profile`` and ``--region``, as the AWS CLI has them: before the command or after it.
    A command's own copies have no default (``SUPPRESS``), so they never hide the top level's."""
    default = None if top_level else argparse.SUPPRESS
    group = parser.add_argument_group("AWS") if not top_level else parser
    group.add_argument("--profile", default=default,
                       help="AWS profile of your config and credentials files (default: AWS_PROFILE, "
                            "else the default profile)")
    group.add_argument("--region", default=default,
                       help="AWS Region, e.g. eu-west-1 (default: AWS_REGION or AWS_DEFAULT_REGION, "
                            "else the profile's)")


def _offline_options(parser: argparse.ArgumentParser) -> None:
    """``--local``/``--work-dir`` of the commands that read runs: offline ones, as recorded by
    ``smtrain start --local`` under the work dir."""
    parser.add_argument("--local", action="store_true",
                        help="offline runs (`smtrain start --local`) recorded under --work-dir")
    parser.add_argument("--work-dir", type=Path, default=Path(".work/local"),
                        help="with --local (default .work/local, as for start --local)")


def _resource_options(parser: argparse.ArgumentParser) -> None:
    _aws_options(parser)
    parser.add_argument("--stack-name", help="workflow stack (default: <namePrefix>-workflow from cdk.json)")
    parser.add_argument("--state-machine-arn", help="overrides the stack output (env SMTRAIN_STATE_MACHINE_ARN)")
    parser.add_argument("--data-bucket", help="overrides the stack output (env SMTRAIN_DATA_BUCKET)")


def _models_parser(commands: Any) -> None:
    """``smtrain models list|approve|reject`` (the commands are in ``smtrain.cli.model_commands``)."""
    models = commands.add_parser("models", help="registered model versions: list, approve, reject")
    actions = models.add_subparsers(dest="models_command", required=True, metavar="ACTION")

    def where(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--local", action="store_true",
                            help="the offline engine's registry under --work-dir")
        parser.add_argument("--work-dir", type=Path, default=Path(".work/local"), help="with --local")
        parser.add_argument("--stack-name", help="workflow stack (default: <namePrefix>-workflow "
                                                 "from cdk.json)")
        _aws_options(parser)

    listing = actions.add_parser("list", help="model versions, newest first")
    listing.add_argument("--program", help="only this program's versions")
    listing.add_argument("--status", choices=contract.APPROVAL_STATUSES,
                         help="only versions of this approval status")
    listing.add_argument("--max", type=int, default=20, help="at most this many (default 20)")
    listing.add_argument("--json", action="store_true", help="print JSON instead of text")
    where(listing)
    for action, verb in (("approve", "approve"), ("reject", "reject")):
        parser = actions.add_parser(action, help=f"{verb} a model version (UpdateModelPackage)")
        parser.add_argument("arn", metavar="VERSION_ARN", help="the version's ARN (see `smtrain models list`)")
        parser.add_argument("--reason",
                            help="why (the version's approval description; one line, at most 1024 "
                                 "characters); without it, the version's metrics are shown and the "
                                 "reason asked for on the terminal")
        where(parser)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="smtrain", description="Start, follow and explain SageMaker training runs of this project. "
        "--profile and --region (before or after the command) win over the usual AWS configuration "
        "(AWS_PROFILE, AWS_REGION, ~/.aws/config), which also gives AWS_ENDPOINT_URL.")
    _aws_options(parser, top_level=True)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    start = commands.add_parser("start", help="start a training (or tuning) run")
    # One of --program and --method is required (checked by the command, in one line); --method
    # is listed apart, as the older name it is, not beside --program as an equal.
    start.add_argument("--program", help="the training program to run (required; see `smtrain programs`)")
    older = start.add_argument_group(
        "older options", "kept working for the first release's scripts; use --program instead")
    older.add_argument("--method", metavar="KIND",
                       help="script, byoc or builtin: the one program of that kind")
    start.add_argument("--hp", action="append", default=[], metavar="KEY=VALUE",
                       help="hyperparameter (repeatable); sent as text, exactly as written")
    start.add_argument("--instance-type", help="e.g. ml.m5.xlarge: one of the deployment's "
                       "allowed instance types (default: the program's, else the deployment's)")
    start.add_argument("--instance-count", type=int,
                       help="instances per training job (default 1; at most the deployment's "
                       "MaxInstanceCount)")
    start.add_argument("--max-runtime", type=int, metavar="SECONDS",
                       help="each training job's time limit in seconds (default: the program's, else the deployment's)")
    capacity = start.add_mutually_exclusive_group()
    capacity.add_argument("--spot", action="store_true", help="managed spot training (default: the "
                          "deployment's spotByDefault)")
    capacity.add_argument("--no-spot", dest="on_demand", action="store_true",
                          help="on-demand instances, where the deployment's default is spot "
                               "(spotByDefault); needed for --keep-alive there")
    start.add_argument("--keep-alive", type=int, metavar="SECONDS", dest="keep_alive",
                       help="keep the job's instances in a SageMaker managed warm pool this long after "
                            "it ends, for a matching next run to start on (billed while kept; not "
                            "with --spot or --tune; default: none)")
    start.add_argument("--priority", choices=list(contract.QUEUE_PRIORITIES),
                       help="with the team queue (deployed with queue: batch): the job queue the "
                            "training job waits in (default: normal)")
    start.add_argument("--team", help="with the team queue's fair share (queueFairShare): the "
                                      "share the job is scheduled under, letters and digits "
                                      "(default: the program's name)")
    start.add_argument("--input", action="append", default=[], metavar="CHANNEL=URI|DIR",
                       help="train/validation data: s3://<data bucket>/datasets/... or a local "
                            "directory (uploaded first)")
    start.add_argument("--input-mode", action="append", default=[], metavar="CHANNEL=MODE",
                       help="how the channel reaches the job: File (copied before it starts), FastFile "
                            "(streamed from S3 on read) or Pipe (a FIFO per pass); default: the "
                            "program's channel setting, else File")
    start.add_argument("--s3-distribution", action="append", default=[], metavar="CHANNEL=TYPE",
                       help="FullyReplicated (every instance gets every object) or ShardedByS3Key "
                            "(each of N instances gets about 1/N of the objects)")
    start.add_argument("--compression", action="append", default=[], metavar="CHANNEL=TYPE",
                       help="Gzip: the channel's objects are gzipped (Pipe mode only; whether SageMaker "
                            "gunzips them for the program is not documented for training, the "
                            "offline engine does); default None")
    start.add_argument("--tune", type=Path, metavar="TUNING.json", help="run a tuning job with these settings")
    registering = start.add_mutually_exclusive_group()
    registering.add_argument("--register", dest="register", action="store_true", default=None,
                             help="register the model in the program's model package group "
                                  "(default: the program's [register] setting)")
    registering.add_argument("--no-register", dest="register", action="store_false",
                             help="do not register the model")
    start.add_argument("--min", dest="register_min", action="append", default=[],
                       metavar="METRIC=VALUE", help="quality gate: register only if the final "
                       "METRIC is at least VALUE (implies --register; repeatable)")
    start.add_argument("--max", dest="register_max", action="append", default=[],
                       metavar="METRIC=VALUE", help="quality gate: register only if the final "
                       "METRIC is at most VALUE (implies --register; repeatable)")
    start.add_argument("--name", help="execution name (default: derived from the input, so a rerun "
                                      "of the same command starts nothing new)")
    start.add_argument("--wait", action="store_true", help="follow the run until it ends")
    start.add_argument("--logs", action="store_true", help="with --wait: stream the job's logs")
    start.add_argument("--interval", type=float, default=5.0, help="with --wait: seconds between polls")
    start.add_argument("--local", action="store_true",
                       help="run offline on the synthesized app (cdk.out); implies --wait")
    start.add_argument("--cdk-out", type=Path, default=Path("cdk.out"), help="with --local (default cdk.out)")
    start.add_argument("--work-dir", type=Path, default=Path(".work/local"), help="with --local")
    start.add_argument("--again", action="store_true", help="with --local: train again even if the same "
                                                              "code and input ran before")
    start.add_argument("--no-synth", action="store_true", help="with --local: refuse a cdk.out older than "
                                                                 "the code instead of synthesizing again")
    _resource_options(start)

    watch = commands.add_parser("watch", help="follow a run until it ends")
    watch.add_argument("name", help="execution name or ARN")
    watch.add_argument("--logs", action="store_true", help="stream the training job's logs")
    watch.add_argument("--interval", type=float, default=5.0, help="seconds between polls (default 5)")
    _offline_options(watch)
    _resource_options(watch)

    status = commands.add_parser("status", help="one run's state, job and result")
    status.add_argument("name", help="execution name or ARN")
    _offline_options(status)
    _resource_options(status)

    listing = commands.add_parser("list", help="recent runs")
    listing.add_argument("--status", choices=["RUNNING", "SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED"],
                         help="only runs in this state")
    listing.add_argument("--max", type=int, default=20, help="at most this many (default 20)")
    _offline_options(listing)
    _resource_options(listing)

    logs = commands.add_parser("logs", help="a run's training job logs (CloudWatch; with --local, the "
                                            "job logs under --work-dir)")
    logs.add_argument("name", help="execution name or ARN")
    _offline_options(logs)
    _resource_options(logs)

    stop = commands.add_parser("stop", help="stop a run (and its SageMaker job)")
    stop.add_argument("name", help="execution name or ARN")
    stop.add_argument("--reason", default="stopped with smtrain",
                      help="recorded as the execution's stop cause (default: %(default)s)")
    _resource_options(stop)

    queue = commands.add_parser("queue", help="the team queue: what waits and runs, under whose share, "
                                              "and where each run stands (deployed with queue: batch)")
    _offline_options(queue)
    _aws_options(queue)
    queue.add_argument("--stack-name", help="workflow stack (default: <namePrefix>-workflow from cdk.json)")

    compare = commands.add_parser("compare", help="compare tracked runs (MLflow), optionally plot them")
    compare.add_argument("--tracking-uri", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI; with "
                                                 "--local, the offline store)")
    compare.add_argument("--local", action="store_true", help="the offline engine's store under --work-dir")
    compare.add_argument("--work-dir", type=Path, default=Path(".work/local"), help="with --local")
    compare.add_argument("--experiment", default="smtrain", help="MLflow experiment (default smtrain)")
    compare.add_argument("--program", help="only this program's runs (default: every program's, "
                                           "one table each)")
    compare.add_argument("--sort", metavar="METRIC",
                         help="metric to sort by and to plot (default: each program's objective "
                              "in its program.toml)")
    order = compare.add_mutually_exclusive_group()
    order.add_argument("--ascending", action="store_true", default=None,
                       help="lowest --sort value first (the default for a metric named *loss*, *error* or *rmse*)")
    order.add_argument("--descending", dest="ascending", action="store_false",
                       help="highest --sort value first (default otherwise)")
    compare.add_argument("--max", type=int, default=50, help="at most this many runs (default 50)")
    compare.add_argument("--plot", type=Path, metavar="FILE.png", help="draw the metric's curve per run")

    data = commands.add_parser("data", help="training data")
    data_commands = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    upload = data_commands.add_parser("upload", help="upload sample (or your) data to the default prefixes")
    upload.add_argument("--from", dest="source", type=Path,
                        help="a folder laid out <program>/<channel>/ (default: the sample datasets)")
    _resource_options(upload)

    preflight = commands.add_parser(
        "preflight", help="ask AWS whether the synthesized app would deploy and run (needs credentials)",
        description="Validate the synthesized state machine definition with Step Functions and simulate "
                    "the IAM calls a run makes; exit 0 if nothing would fail, 1 if something would, "
                    "4 if AWS cannot be reached or a check could not run.")
    preflight.add_argument("--cdk-out", type=Path, default=Path("cdk.out"),
                           help="the synthesized app (default cdk.out; `make synth` writes it)")
    _aws_options(preflight)

    programs = commands.add_parser(
        "programs", help="the training programs: channels, metrics, hyperparameters, tuning defaults",
        description="List every program of training_code/ (folders with a program.toml).")
    programs.add_argument("--json", action="store_true", help="print JSON instead of text")

    new_program = commands.add_parser(
        "new-program", help="write a training program skeleton that trains offline at once",
        description="Write <dir>/NAME/ (program.toml, requirements.txt, the entry point; a "
                    "Dockerfile for byoc) and tests/programs/test_NAME.py beside <dir>.")
    new_program.add_argument("name", metavar="NAME", help="the program's name: [a-z][a-z0-9_-]{0,31}")
    new_program.add_argument("--kind", required=True, choices=["script", "byoc"],
                             help="script: train.py on an AWS framework image (--framework); byoc: an image of its own")
    new_program.add_argument(
        "--framework", choices=list(contract.FRAMEWORKS),
        help="a script's framework image (default pytorch: a standard-library skeleton); sklearn, "
             "xgboost, tensorflow and huggingface get a script that trains with the framework and "
             "saves its model as AWS's examples do")
    new_program.add_argument("--dir", type=Path, metavar="DIR",
                             help="the training code folder (default: the project's training_code/)")

    _models_parser(commands)

    tuning_template = commands.add_parser(
        "tuning-template", help="print a program's default tuning object (for `start --tune FILE`)")
    tuning_template.add_argument("--program", required=True, help="a training program (see `smtrain programs`)")
    return parser


def run_as_command() -> int:
    """The ``smtrain`` command (its console script and ``python -m smtrain.cli``): :func:`main`
    in a process of its own, tuned as a command's (:mod:`smtrain.core.command_process`: its
    ``start --local`` runs 0.8x as long, paired runs). ``main`` itself, which tests and
    notebooks call in their own process, leaves the process as it is."""
    from smtrain.core.command_process import tune_garbage_collector

    tune_garbage_collector()
    return main()


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:
        # Its reader went away (`smtrain programs | head`): no traceback, and none at exit when
        # Python flushes stdout again (the Python documentation's "Note on SIGPIPE").
        import os
        import sys

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    from smtrain.cli.outcome import AwsOptions, use_aws_options

    use_aws_options(AwsOptions(profile=args.profile, region=args.region))
    if args.command == "preflight":
        from smtrain.cli import preflight

        return preflight.run(args)
    if args.command == "queue":
        from smtrain.cli import queue_view

        return queue_view.run(args)
    if args.command == "models":
        from smtrain.cli import model_commands

        return model_commands.run(args)
    if args.command in ("programs", "new-program", "tuning-template"):
        from smtrain.cli import program_commands

        return program_commands.run(args)
    from smtrain.cli import commands

    return commands.run(args)
