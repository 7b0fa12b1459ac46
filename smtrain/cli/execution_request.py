"""Building and checking a state machine execution input before anything is called.

Pure Python with no AWS imports, so every validation error comes back in milliseconds. Each
check raises :class:`InputError` with one line naming the problem.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smtrain.core import contract, input_rules
from smtrain.core.errors import InputError
from smtrain.core.programs import Program

#: SageMaker's limits on hyperparameters.
MAX_HYPERPARAMETERS = contract.MAX_HYPERPARAMETERS
MAX_HYPERPARAMETER_KEY = contract.MAX_HYPERPARAMETER_KEY
MAX_HYPERPARAMETER_VALUE = contract.MAX_HYPERPARAMETER_VALUE
#: Hyperparameters the state machine adds to every script-mode job (its Prepare* states in
#: infra/constructs/training_state_machine.py; tests compare this with the synthesized definition).
SCRIPT_MODE_HYPERPARAMETERS = ("sagemaker_program", "sagemaker_submit_directory", "sagemaker_region",
                               "sagemaker_container_log_level", "sagemaker_torch_distributed_enabled")
EXECUTION_NAME = contract.EXECUTION_NAME
_KEY = re.compile(r"[A-Za-z0-9_.:/=+\-@]+")
_S3_URI = re.compile(r"^s3://(?P<bucket>[a-z0-9][a-z0-9.-]{1,61}[a-z0-9])/(?P<key>.*)$")
_INSTANCE_TYPE = re.compile(r"^ml\.[a-z0-9-]+\.[a-z0-9]+$")
UPLOAD_PREFIX = contract.UPLOAD_PREFIX


def parse_hyperparameters(pairs: Sequence[str]) -> dict[str, str]:
    """``["epochs=10", "lr=0.01"]`` -> ``{"epochs": "10", "lr": "0.01"}``.

    Values are sent as SageMaker wants them, as text, exactly as typed (``2.10`` stays ``2.10``,
    ``1e-3`` stays ``1e-3``); the program's manifest says what each must look like.
    """
    result: dict[str, str] = {}
    for pair in pairs:
        if "=" not in pair:
            raise InputError(f"hyperparameter {pair!r} must be written key=value")
        key, value = pair.split("=", 1)
        if not key or not _KEY.fullmatch(key):
            raise InputError(f"hyperparameter name {key!r} is empty or has characters SageMaker refuses")
        if len(key) > MAX_HYPERPARAMETER_KEY:
            raise InputError(f"hyperparameter name {key[:40]}... is longer than {MAX_HYPERPARAMETER_KEY} characters")
        if key in result:
            raise InputError(f"hyperparameter {key!r} is given twice")
        if value == "":
            raise InputError(f"hyperparameter {key!r} has an empty value")
        if len(value) > MAX_HYPERPARAMETER_VALUE:
            raise InputError(f"hyperparameter {key!r} value is {len(value)} characters; SageMaker "
                             f"accepts at most {MAX_HYPERPARAMETER_VALUE}")
        result[key] = value
    if len(result) > MAX_HYPERPARAMETERS:
        raise InputError(f"{len(result)} hyperparameters given; SageMaker accepts at most {MAX_HYPERPARAMETERS}")
    return result


def parse_register(*, register: bool | None, minimum: Sequence[str] = (),
                   maximum: Sequence[str] = ()) -> bool | dict[str, Any] | None:
    """The input's ``register`` from ``--register``/``--no-register`` (``register``: True/False,
    None for neither) and ``--min``/``--max METRIC=VALUE`` (a quality gate, which implies
    ``--register``); None when nothing was given (the program's default applies)."""
    gate: dict[str, dict[str, float]] = {}
    for flag, pairs in (("--min", minimum), ("--max", maximum)):
        limits: dict[str, float] = {}
        for pair in pairs:
            metric, separator, text = pair.rpartition("=")
            if not separator or not metric:
                raise InputError(f"{flag} {pair!r} must be written METRIC=NUMBER")
            try:
                value = float(text)
            except ValueError:
                raise InputError(f"{flag} {pair!r}: {text!r} is not a number") from None
            if value != value or value in (float("inf"), float("-inf")):
                raise InputError(f"{flag} {pair!r}: the limit must be a finite number")
            if metric in limits:
                raise InputError(f"{flag} gives metric {metric!r} twice")
            limits[metric] = value
        if limits:
            gate["minimum" if flag == "--min" else "maximum"] = limits
    if gate and register is False:
        raise InputError("--no-register with --min/--max: a quality gate applies only to a run "
                         "that registers")
    if gate:
        return dict(gate)
    return register


@dataclass(frozen=True)
class ChannelInput:
    channel: str
    s3_uri: str | None
    local_dir: Path | None


def parse_channel_options(*, input_modes: Sequence[str] = (), distributions: Sequence[str] = (),
                          compressions: Sequence[str] = ()) -> dict[str, dict[str, str]]:
    """``--input-mode train=Pipe``, ``--s3-distribution train=ShardedByS3Key`` and ``--compression
    train=Gzip`` as the execution input's ``channelOptions``. Only the shape is checked here;
    the channel names and values are judged by the input rules (:mod:`smtrain.core.input_rules`)."""
    options: dict[str, dict[str, str]] = {}
    for flag, field, pairs in (("--input-mode", contract.INPUT_MODE, input_modes),
                               ("--s3-distribution", contract.S3_DATA_DISTRIBUTION, distributions),
                               ("--compression", contract.COMPRESSION, compressions)):
        for pair in pairs:
            channel, separator, value = pair.partition("=")
            if not separator or not channel or not value:
                raise InputError(f"{flag} {pair!r} must be written CHANNEL=VALUE")
            if field in options.get(channel, {}):
                raise InputError(f"{flag} is given twice for channel {channel!r}")
            options.setdefault(channel, {})[field] = value
    return options


def parse_inputs(pairs: Sequence[str], *, data_bucket: str | None,
                 channels: Sequence[str] = ("train", "validation")) -> list[ChannelInput]:
    """``train=s3://bucket/prefix/`` or ``train=./local/dir`` for each of the program's
    ``channels``; S3 URIs must be in the data bucket (the only bucket the execution role may
    read)."""
    inputs: dict[str, ChannelInput] = {}
    for pair in pairs:
        if "=" not in pair:
            raise InputError(f"input {pair!r} must be written channel=s3://bucket/prefix/ or channel=DIR")
        channel, location = pair.split("=", 1)
        if channel not in channels:
            raise InputError(f"input channel {channel!r} is not one of the program's channels: "
                             f"{', '.join(channels)}")
        if channel in inputs:
            raise InputError(f"input channel {channel!r} is given twice")
        if location.startswith("s3://"):
            match = _S3_URI.match(location)
            if match is None:
                raise InputError(f"input {channel}: {location!r} is not a valid S3 URI (s3://bucket/prefix/)")
            if data_bucket is not None and match["bucket"] != data_bucket:
                raise InputError(f"input {channel}: bucket {match['bucket']!r} is outside the stack's "
                                 f"data bucket {data_bucket!r} (the training role can read only that one)")
            if data_bucket is not None and not match["key"].startswith(contract.DATASETS_PREFIX):
                raise InputError(f"input {channel}: the training role reads only under "
                                 f"s3://{data_bucket}/{contract.DATASETS_PREFIX}")
            inputs[channel] = ChannelInput(channel, location, None)
        elif "://" in location:
            raise InputError(f"input {channel}: {location!r} is neither an s3:// URI nor a local directory")
        else:
            directory = Path(location).expanduser()
            if not directory.is_dir():
                raise InputError(f"input {channel}: local directory {location!r} does not exist")
            if not any(p.is_file() for p in directory.rglob("*")):
                raise InputError(f"input {channel}: local directory {location!r} holds no files")
            inputs[channel] = ChannelInput(channel, None, directory)
    return list(inputs.values())


def check_instance(instance_type: str | None, instance_count: int | None, *,
                   allowed: Sequence[str], max_count: int) -> None:
    if instance_type is not None:
        if not _INSTANCE_TYPE.match(instance_type):
            raise InputError(f"instance type {instance_type!r} is not a SageMaker instance type like ml.m5.xlarge")
        if allowed and instance_type not in allowed:
            raise InputError(f"instance type {instance_type} is not on the stack's allow-list: "
                             f"{', '.join(allowed)}")
    if instance_count is not None and not 1 <= instance_count <= max_count:
        raise InputError(f"instance count {instance_count} must be from 1 to {max_count}")


def check_deployed(draft: Mapping[str, Any], deployment: input_rules.Deployment, *,
                   programs: Mapping[str, Program] | None = None) -> None:
    """The input rules again, now with what the deployment says (its allow-list, counts,
    runtime, defaults and ``maxJobHours``): the state machine's own words, before anything is
    started or uploaded. The programs are this checkout's: if a manifest changed since the
    deploy, the state machine's answer (from the deployed manifest) is the one that counts."""
    from smtrain.core.programs import discover

    # The channels were checked by build_input (local folders stand in for their upload there).
    run = {k: v for k, v in draft.items() if k != contract.INPUTS}
    checked = input_rules.check(programs if programs is not None else discover(), run, deployment=deployment)
    if checked.problems:
        raise InputError(checked.problems[0]["cause"])


def load_tuning(path: Path) -> dict[str, Any]:
    """A ``--tune`` file: a JSON object of the execution input's ``tuning`` fields. Its content
    is checked with the rest of the input, by the input rules (build_input)."""
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"tuning file {path} does not exist") from None
    except json.JSONDecodeError as error:
        raise InputError(f"tuning file {path} is not valid JSON: {error}") from None
    if not isinstance(document, dict):
        raise InputError(f"tuning file {path} must hold a JSON object of tuning fields "
                         "(see `smtrain tuning-template`)")
    return document


def check_execution_name(name: str) -> str:
    if not EXECUTION_NAME.fullmatch(name):
        raise InputError(f"execution name {name!r} must be 1-80 characters of letters, digits, '-' and '_'")
    return name


def deterministic_name(program: str, execution_input: Mapping[str, Any]) -> str:
    """The same command gives the same name, so a rerun cannot start a second run."""
    digest = hashlib.sha256(json.dumps(execution_input, sort_keys=True).encode()).hexdigest()[:16]
    return f"{program.replace('_', '-')[:60]}-{digest}"


def upload_prefix(execution_name: str, channel: str) -> str:
    return f"{UPLOAD_PREFIX}/{execution_name}/{channel}/"


def runnable_programs(program: str | None) -> dict[str, Program]:
    """The programs under training_code/ that pass their checks. A broken manifest of another
    program is named in one warning line and left out; the requested program's own is the
    error (:class:`~smtrain.core.programs.ProgramError`, exit 2)."""
    from smtrain.cli.outcome import warn
    from smtrain.core.programs import ProgramError, discover

    broken: dict[str, ProgramError] = {}
    programs = discover(broken=broken)
    if program is not None and program in broken:
        raise broken[program]
    for name, error in broken.items():
        warn(f"program {name!r} left out: {error} (fix it before `cdk synth`)")
    return programs


def resolve_program(programs: Mapping[str, Program], *, program: str | None,
                    method: str | None) -> Program:
    """The program an execution runs: ``program``, or the one program of kind ``method``."""
    checked = input_rules.check(programs, {k: v for k, v in (("program", program),
                                                               ("method", method)) if v})
    if checked.problems:
        raise InputError(checked.problems[0]["cause"])
    assert checked.program is not None
    return programs[checked.program]


def build_input(*, program: Program, programs: Mapping[str, Program],
                hyperparameters: Mapping[str, str], instance_type: str | None,
                instance_count: int | None, spot: bool, channels: Mapping[str, str],
                tuning: Mapping[str, Any] | None, max_runtime: int | None = None,
                register: bool | Mapping[str, Any] | None = None,
                keep_alive: int | None = None,
                channel_options: Mapping[str, Mapping[str, str]] | None = None,
                on_demand: bool = False, priority: str | None = None,
                team: str | None = None) -> dict[str, Any]:
    """The execution input: only what the user set (the state machine fills the defaults),
    checked by the same rules the state machine applies (:mod:`smtrain.core.input_rules`).
    ``spot`` sends ``"spot": true``; ``on_demand`` sends ``"spot": false`` (over a deployment whose
    default is spot); neither sends nothing (the deployment's default)."""
    execution_input: dict[str, Any] = {contract.PROGRAM: program.name}
    if hyperparameters:
        execution_input[contract.HYPERPARAMETERS] = dict(hyperparameters)
    if instance_type is not None:
        execution_input[contract.INSTANCE_TYPE] = instance_type
    if instance_count is not None:
        execution_input[contract.INSTANCE_COUNT] = instance_count
    if max_runtime is not None:
        execution_input[contract.MAX_RUNTIME] = max_runtime
    if spot and on_demand:
        raise InputError("spot and on-demand both asked: give one")
    if spot or on_demand:
        execution_input[contract.SPOT] = spot  # on demand: false over a spotByDefault deployment
    if keep_alive is not None:
        execution_input[contract.KEEP_ALIVE] = keep_alive
    if channels:
        # The rules see URIs; a local folder is uploaded under the data bucket later.
        execution_input[contract.INPUTS] = {
            name: uri if uri.startswith("s3://") else f"s3://local-upload/{name}/"
            for name, uri in channels.items()}
    if channel_options:
        execution_input[contract.CHANNEL_OPTIONS] = {name: dict(options)
                                                     for name, options in channel_options.items()}
    if tuning is not None:
        execution_input[contract.TUNING] = dict(tuning)
    if priority is not None:
        execution_input[contract.PRIORITY] = priority
    if team is not None:
        execution_input[contract.TEAM] = team
    if register is not None:
        execution_input[contract.REGISTER] = register if isinstance(register, bool) else dict(register)
    checked = input_rules.check(programs, execution_input)
    if checked.problems:
        raise InputError(checked.problems[0]["cause"])
    _check_merged_hyperparameters(program, hyperparameters, tuning=tuning is not None)
    if channels:
        execution_input[contract.INPUTS] = dict(channels)
    return execution_input


def program_hyperparameters(program: Program, *, tuning: bool) -> frozenset[str]:
    """The names the state machine merges with the user's into the request: the program's
    always-sent ones, its training defaults (single training jobs only: a tuning job sends no
    static value for what it may tune) and, for script mode, the toolkit's settings."""
    names = set(program.always_sent)
    if not tuning:
        names |= set(program.training_defaults)
    if program.kind == "script":
        names |= set(SCRIPT_MODE_HYPERPARAMETERS)
    return frozenset(names)


def _check_merged_hyperparameters(program: Program, hyperparameters: Mapping[str, str], *,
                                  tuning: bool) -> None:
    """SageMaker's limit counts the request, not the command line: the user's names merged with
    the program's. Checked here so that a run is not started only to fail at CreateTrainingJob."""
    added = program_hyperparameters(program, tuning=tuning)
    merged = len(set(hyperparameters) | added)
    if merged > MAX_HYPERPARAMETERS:
        extra = len(added - set(hyperparameters))
        raise InputError(f"{len(hyperparameters)} hyperparameters given and {extra} that program "
                         f"{program.name} adds make {merged} hyperparameters; SageMaker accepts "
                         f"at most {MAX_HYPERPARAMETERS}")
