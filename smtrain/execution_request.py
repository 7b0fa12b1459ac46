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

from infra.training_methods import TRAINING_METHODS

METHODS = ("script", "byoc", "builtin")
CHANNELS = ("train", "validation")
#: SageMaker's limits on hyperparameters.
MAX_HYPERPARAMETERS = 100
MAX_HYPERPARAMETER_KEY = 256
MAX_HYPERPARAMETER_VALUE = 2500
#: Hyperparameters the state machine adds to every script-mode job (its PrepareScript* states in
#: infra/constructs/training_state_machine.py; tests compare this with the synthesized definition).
SCRIPT_MODE_HYPERPARAMETERS = ("sagemaker_program", "sagemaker_submit_directory", "sagemaker_region",
                               "sagemaker_container_log_level", "sagemaker_torch_distributed_enabled")
#: Step Functions' limits on execution names (used with ``fullmatch``: ``$`` would let a trailing
#: newline through).
EXECUTION_NAME = re.compile(r"[0-9A-Za-z_-]{1,80}")
_KEY = re.compile(r"[A-Za-z0-9_.:/=+\-@]+")
_S3_URI = re.compile(r"^s3://(?P<bucket>[a-z0-9][a-z0-9.-]{1,61}[a-z0-9])/(?P<key>.*)$")
_INSTANCE_TYPE = re.compile(r"^ml\.[a-z0-9-]+\.[a-z0-9]+$")
#: Local channel uploads land here, inside the prefix the execution role may read.
UPLOAD_PREFIX = "datasets/uploads"


class InputError(ValueError):
    """Bad input for a run; the message is one line naming the problem."""


def parse_hyperparameters(pairs: Sequence[str]) -> dict[str, str]:
    """``["epochs=10", "lr=0.01"]`` -> ``{"epochs": "10", "lr": "0.01"}``.

    Values are typed on the command line and sent as SageMaker wants them, as strings: JSON
    scalars are normalised (``1e-3`` -> ``0.001``, ``true`` -> ``true``), anything else is kept
    as written.
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
        result[key] = _normalise_value(key, value)
    if len(result) > MAX_HYPERPARAMETERS:
        raise InputError(f"{len(result)} hyperparameters given; SageMaker accepts at most {MAX_HYPERPARAMETERS}")
    return result


def _normalise_value(key: str, value: str) -> str:
    if value == "":
        raise InputError(f"hyperparameter {key!r} has an empty value")
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        parsed = value
    if isinstance(parsed, bool):
        text = "true" if parsed else "false"
    elif isinstance(parsed, int | float):
        if isinstance(parsed, float) and not (parsed == parsed and abs(parsed) != float("inf")):
            raise InputError(f"hyperparameter {key!r} is not a finite number: {value}")
        text = value if isinstance(parsed, int) else repr(parsed)
    elif isinstance(parsed, str):
        text = parsed
    else:
        raise InputError(f"hyperparameter {key!r} must be a single value, not {type(parsed).__name__}")
    if len(text) > MAX_HYPERPARAMETER_VALUE:
        raise InputError(f"hyperparameter {key!r} value is {len(text)} characters; SageMaker "
                         f"accepts at most {MAX_HYPERPARAMETER_VALUE}")
    return text


@dataclass(frozen=True)
class ChannelInput:
    channel: str
    s3_uri: str | None
    local_dir: Path | None


def parse_inputs(pairs: Sequence[str], *, data_bucket: str | None) -> list[ChannelInput]:
    """``train=s3://bucket/prefix/`` or ``train=./local/dir``; S3 URIs must be in the data
    bucket (the only bucket the execution role may read)."""
    inputs: dict[str, ChannelInput] = {}
    for pair in pairs:
        if "=" not in pair:
            raise InputError(f"input {pair!r} must be written channel=s3://bucket/prefix/ or channel=DIR")
        channel, location = pair.split("=", 1)
        if channel not in CHANNELS:
            raise InputError(f"input channel {channel!r} is not one of {', '.join(CHANNELS)}")
        if channel in inputs:
            raise InputError(f"input channel {channel!r} is given twice")
        if location.startswith("s3://"):
            match = _S3_URI.match(location)
            if match is None:
                raise InputError(f"input {channel}: {location!r} is not a valid S3 URI (s3://bucket/prefix/)")
            if data_bucket is not None and match["bucket"] != data_bucket:
                raise InputError(f"input {channel}: bucket {match['bucket']!r} is outside the stack's "
                                 f"data bucket {data_bucket!r} (the training role can read only that one)")
            if data_bucket is not None and not match["key"].startswith("datasets/"):
                raise InputError(f"input {channel}: the training role reads only under "
                                 f"s3://{data_bucket}/datasets/")
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


def check_execution_name(name: str) -> str:
    if not EXECUTION_NAME.fullmatch(name):
        raise InputError(f"execution name {name!r} must be 1-80 characters of letters, digits, '-' and '_'")
    return name


def deterministic_name(method: str, execution_input: Mapping[str, Any]) -> str:
    """The same command gives the same name, so a rerun cannot start a second run."""
    digest = hashlib.sha256(json.dumps(execution_input, sort_keys=True).encode()).hexdigest()[:16]
    return f"{method}-{digest}"


def upload_prefix(execution_name: str, channel: str) -> str:
    return f"{UPLOAD_PREFIX}/{execution_name}/{channel}/"


def build_input(*, method: str, hyperparameters: Mapping[str, str], instance_type: str | None,
                instance_count: int | None, spot: bool, channels: Mapping[str, str],
                tuning: Mapping[str, Any] | None, max_runtime: int | None = None) -> dict[str, Any]:
    """The execution input: only what the user set (the state machine fills the defaults)."""
    if method not in METHODS:
        raise InputError(f"method {method!r} is not one of {', '.join(METHODS)}")
    _check_merged_hyperparameters(method, hyperparameters, tuning=tuning is not None)
    execution_input: dict[str, Any] = {"method": method}
    if hyperparameters:
        execution_input["hyperparameters"] = dict(hyperparameters)
    if instance_type is not None:
        execution_input["instanceType"] = instance_type
    if instance_count is not None:
        execution_input["instanceCount"] = instance_count
    if max_runtime is not None:
        execution_input["maxRuntimeInSeconds"] = max_runtime
    if spot:
        execution_input["spot"] = True
    if channels:
        execution_input["inputs"] = dict(channels)
    if tuning is not None:
        execution_input["tuning"] = dict(tuning)
    return execution_input


def method_hyperparameters(method: str, *, tuning: bool) -> frozenset[str]:
    """The names the state machine merges with the user's into the request for ``method``: the
    method's base hyperparameters, its training defaults (single training jobs only: a tuning job
    sends no static value for what it may tune) and, for script mode, the toolkit's settings."""
    spec = next(m for m in TRAINING_METHODS.values() if m.name == method)
    names = set(spec.base_hyperparameters)
    if not tuning:
        names |= set(spec.training_defaults)
    if method == "script":
        names |= set(SCRIPT_MODE_HYPERPARAMETERS)
    return frozenset(names)


def _check_merged_hyperparameters(method: str, hyperparameters: Mapping[str, str], *, tuning: bool) -> None:
    """SageMaker's limit counts the request, not the command line: the user's names merged with
    the method's. Checked here so that a run is not started only to fail at CreateTrainingJob."""
    added = method_hyperparameters(method, tuning=tuning)
    merged = len(set(hyperparameters) | added)
    if merged > MAX_HYPERPARAMETERS:
        extra = len(added - set(hyperparameters))
        raise InputError(f"{len(hyperparameters)} hyperparameters given and {extra} that the {method} method "
                         f"adds make {merged} hyperparameters; SageMaker accepts at most {MAX_HYPERPARAMETERS}")
