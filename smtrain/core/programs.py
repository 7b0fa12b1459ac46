"""Training programs as data: each folder of ``training_code/`` with a ``program.toml``.

A manifest says what a program is (``kind``: a script on an AWS framework image, an image of its
own, or a SageMaker built-in algorithm), what it reads (channels), what it prints (metric
definitions), what it takes (typed hyperparameters with defaults and bounds) and how it is tuned
by default. The stacks package and route every program found; the CLI and the state machine check
an execution's input against its program's manifest. Pure Python (``tomllib`` and
``jsonschema``), so the CLI reads manifests in milliseconds.

A bad manifest raises :class:`ProgramError` naming the file and the field, which fails
``cdk synth`` and every CLI command.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import jsonschema

from smtrain.core import builtin_algorithms, contract

MANIFEST = "program.toml"
TRAINING_CODE_DIR = Path(__file__).resolve().parents[2] / "training_code"


def programs_folder() -> Path:
    """The programs' folder the CLI reads: ``SMTRAIN_TRAINING_CODE``, else the project's."""
    import os

    return Path(os.environ.get(contract.ENV_TRAINING_CODE) or TRAINING_CODE_DIR)

HyperparameterType = Literal["int", "float", "bool", "str", "categorical"]
_NUMBER = r"([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"

#: What a channel's ``extensions`` entry must look like (``.csv``, ``.libsvm``, ``.tar.gz``).
EXTENSION_PATTERN = r"^\.[A-Za-z0-9.]+$"

_HYPERPARAMETER_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["type"],
    "properties": {
        "type": {"enum": ["int", "float", "bool", "str", "categorical"]},
        "default": {"type": ["string", "number", "boolean"]},
        "min": {"type": "number"},
        "max": {"type": "number"},
        "values": {"type": "array", "minItems": 1, "items": {"type": "string"}},
        "tunable": {"type": "boolean"},
        "description": {"type": "string"},
    },
}
_RANGE_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "min": {"type": "number"},
        "max": {"type": "number"},
        "scaling": {"enum": list(contract.SCALING_TYPES)},
        "values": {"type": "array", "minItems": 1, "items": {"type": "string"}},
    },
}
_THRESHOLDS_SCHEMA = {"type": "object", "additionalProperties": {"type": "number"}}
_MIME_TYPES_SCHEMA = {"type": "array", "minItems": 1, "maxItems": 10,
                      "items": {"type": "string", "pattern": r"^[-\w]+/.+$", "maxLength": 256}}
#: The manifest's JSON schema (TOML parses into the same data model).
MANIFEST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "kind", "channels"],
    "properties": {
        "name": {"type": "string", "pattern": f"^{contract.PROGRAM_NAME.pattern}$"},
        "kind": {"enum": list(contract.KINDS)},
        "description": {"type": "string"},
        "instance_type": {"type": "string", "pattern": r"^ml\.[a-z0-9-]+\.[a-z0-9]+$"},
        "script": {
            "type": "object", "additionalProperties": False, "required": ["entry_point"],
            "properties": {
                "entry_point": {"type": "string", "pattern": r"^[A-Za-z0-9_.-]+\.py$"},
                "framework": {"enum": list(contract.FRAMEWORKS)},
                # The image's version, as the SDK's image_uris names it (2.5, 2.19, 1.2-1, 4.48);
                # default: the framework's setting in cdk.json. Checked against the SDK at synth.
                "framework_version": {"type": "string", "pattern": r"^[0-9][0-9A-Za-z.\-]*$"},
                "py_version": {"type": "string", "pattern": r"^py[0-9]{1,3}$"},
                # Hugging Face only: the PyTorch or TensorFlow build under transformers.
                "base_framework_version": {"type": "string",
                                           "pattern": r"^(pytorch|tensorflow)[0-9][0-9.]*$"},
                "shared": {"type": "array", "items": {"type": "string",
                                                      "pattern": "^[a-z][a-z0-9_]*$"}},
                # How a job on more than one instance uses them (contract.DISTRIBUTIONS; each
                # framework's own are checked after the schema).
                "distribution": {"enum": sorted({d for options in contract.DISTRIBUTIONS.values()
                                                 for d in options})},
            },
        },
        "byoc": {
            "type": "object", "additionalProperties": False,
            "properties": {
                "dockerfile": {"type": "string"},
                "context": {"enum": [".", ".."]},
                "entry_point": {"type": "string"},
                "shared": {"type": "array", "items": {"type": "string",
                                                      "pattern": "^[a-z][a-z0-9_]*$"}},
            },
        },
        "builtin": {
            "type": "object", "additionalProperties": False, "required": ["algorithm"],
            # Which algorithms exist is checked after the schema, naming them all
            # (smtrain.core.builtin_algorithms).
            "properties": {"algorithm": {"type": "string", "minLength": 1},
                           "version": {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9.-]*$"}},
        },
        "channels": {
            "type": "array", "minItems": 1, "maxItems": 20,
            "items": {
                "type": "object", "additionalProperties": False,
                "required": ["name", "content_type"],
                "properties": {
                    "name": {"type": "string", "pattern": f"^{contract.CHANNEL_NAME.pattern}$"},
                    "content_type": {"type": "string", "minLength": 1, "maxLength": 256},
                    "required": {"type": "boolean"},
                    "shares_data": {"type": "boolean"},
                    "extensions": {"type": "array", "items": {"type": "string",
                                                              "pattern": EXTENSION_PATTERN}},
                    "input_mode": {"enum": list(contract.INPUT_MODES)},
                    "s3_data_distribution_type": {"enum": list(contract.S3_DATA_DISTRIBUTIONS)},
                    "compression_type": {"enum": list(contract.COMPRESSION_TYPES)},
                },
            },
        },
        "metrics": {
            "type": "array", "maxItems": 40,
            "items": {
                "type": "object", "additionalProperties": False, "required": ["name"],
                "properties": {
                    "name": {"type": "string", "pattern": r"^.{1,255}$"},
                    "regex": {"type": "string", "minLength": 1, "maxLength": 500},
                },
            },
        },
        "hyperparameters": {"type": "object",
                            "additionalProperties": _HYPERPARAMETER_SCHEMA},
        "register": {
            "type": "object", "additionalProperties": False,
            "properties": {
                "default": {"type": "boolean"},
                "minimum": _THRESHOLDS_SCHEMA,
                "maximum": _THRESHOLDS_SCHEMA,
            },
        },
        "serving": {
            "type": "object", "additionalProperties": False,
            "properties": {"content_types": _MIME_TYPES_SCHEMA,
                           "response_types": _MIME_TYPES_SCHEMA,
                           "entry_point": {"type": "string", "pattern": r"^[A-Za-z0-9_.-]+\.py$"}},
        },
        "tuning": {
            "type": "object", "additionalProperties": False,
            "required": ["objective", "type", "ranges"],
            "properties": {
                "objective": {"type": "string"},
                "type": {"enum": list(contract.OBJECTIVE_TYPES)},
                "strategy": {"enum": list(contract.TUNING_STRATEGIES)},
                "max_jobs": {"type": "integer", "minimum": 1,
                             "maximum": contract.MAX_TUNING_JOBS},
                "max_parallel_jobs": {"type": "integer", "minimum": 1,
                                      "maximum": contract.MAX_PARALLEL_TUNING_JOBS},
                "early_stopping": {"enum": list(contract.EARLY_STOPPING_TYPES)},
                "hyperband_max_resource": {"type": "integer", "minimum": 1,
                                           "maximum": contract.HYPERBAND_MAX_RESOURCE},
                "ranges": {"type": "object", "minProperties": 1,
                           "additionalProperties": _RANGE_SCHEMA},
            },
        },
    },
}

#: Content types and the file extensions a channel of that type should hold.
CONTENT_TYPE_EXTENSIONS: dict[str, tuple[str, ...]] = {
    "text/csv": (".csv",),
    "application/x-parquet": (".parquet",),
    "application/x-recordio-protobuf": (".rec", ".recordio"),
    "application/json": (".json",),
    "application/jsonlines": (".jsonl",),
    "text/libsvm": (".libsvm", ".svm", ".txt"),
}


class ProgramError(ValueError):
    """A program's manifest is invalid, or a program is unknown; the message names which."""


def metric_definition(name: str) -> dict[str, str]:
    """A SageMaker MetricDefinition that reads ``name=<number>`` from a log line."""
    return {"Name": name, "Regex": rf"\b{name}={_NUMBER}"}


@dataclass(frozen=True, kw_only=True)
class Hyperparameter:
    """A declared hyperparameter. ``tunable=False`` ones are never tuned and are sent with their
    default on every job, tuning trials included; a tunable one's default is sent on single
    training jobs only (a tuning job sends no static value for what it may tune, and the
    program's own default must then be the same)."""

    name: str
    type: HyperparameterType
    default: str | None = None
    min: float | None = None
    max: float | None = None
    values: tuple[str, ...] = ()
    tunable: bool = True
    description: str = ""

    def as_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {"type": self.type, "tunable": self.tunable}
        for key in ("default", "min", "max"):
            if getattr(self, key) is not None:
                data[key] = getattr(self, key)
        if self.values:
            data["values"] = list(self.values)
        return data


@dataclass(frozen=True, kw_only=True)
class Channel:
    """A channel the program reads. How SageMaker delivers it (``input_mode``,
    ``s3_data_distribution_type``, ``compression_type``: SageMaker's values, smtrain.core.contract)
    is the default of each run, which ``channelOptions`` may change."""

    name: str
    content_type: str
    required: bool = True
    #: The channel may be given the same local folder, or the same files, as another channel:
    #: the script picks its files from it by name (AWS's MNIST examples give ``training`` and
    #: ``testing`` one S3 prefix). Default false: the CLI refuses that as a held-out split that
    #: is not held out.
    shares_data: bool = False
    extensions: tuple[str, ...] = ()
    input_mode: str = contract.DEFAULT_INPUT_MODE
    s3_data_distribution_type: str = contract.DEFAULT_S3_DATA_DISTRIBUTION
    compression_type: str = contract.DEFAULT_COMPRESSION

    def options(self) -> dict[str, str]:
        """The channel's delivery as an execution input's ``channelOptions`` entry."""
        return {contract.INPUT_MODE: self.input_mode,
                contract.S3_DATA_DISTRIBUTION: self.s3_data_distribution_type,
                contract.COMPRESSION: self.compression_type}

    @property
    def file_extensions(self) -> tuple[str, ...]:
        """What files of this channel should end with (empty: any)."""
        return self.extensions or CONTENT_TYPE_EXTENSIONS.get(self.content_type, ())


@dataclass(frozen=True, kw_only=True)
class TuningDefaults:
    """Defaults for the execution input's ``tuning`` object."""

    objective_metric: str
    objective_type: str
    parameter_ranges: Mapping[str, Sequence[Mapping[str, Any]]]
    #: Hyperband's resource per training job: how many metric reports ("epochs") a full run
    #: prints. SageMaker needs it as ``HyperbandStrategyConfig.MaxResource`` unless a static
    #: ``epochs``-like hyperparameter gives it (API reference, HyperbandStrategyConfig).
    hyperband_max_resource: int = 10
    strategy: str = "Bayesian"
    max_jobs: int = 4
    max_parallel_jobs: int = 2
    early_stopping: str = "Off"

    def as_input(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy,
            "maxJobs": self.max_jobs,
            "maxParallelJobs": self.max_parallel_jobs,
            "objective": {"metricName": self.objective_metric, "type": self.objective_type},
            "parameterRanges": {key: [dict(r) for r in value]
                                for key, value in self.parameter_ranges.items()},
            "earlyStopping": self.early_stopping,
            "hyperband": {"minResource": 1, "maxResource": self.hyperband_max_resource},
        }


@dataclass(frozen=True, kw_only=True)
class Registration:
    """The manifest's ``[register]`` table: whether a run registers its model when its input
    says nothing (``default``, false unless given), and the quality gate it then applies:
    ``minimum``/``maximum`` final metric values (``{metric: number}``)."""

    default: bool = False
    minimum: Mapping[str, float] = field(default_factory=dict)
    maximum: Mapping[str, float] = field(default_factory=dict)

    def as_data(self) -> dict[str, Any]:
        """The input checks' view: whether a run registers by default, and the gate."""
        return {"default": self.default, "minimum": dict(self.minimum),
                "maximum": dict(self.maximum)}


@dataclass(frozen=True, kw_only=True)
class Serving:
    """The manifest's ``[serving]`` table: the request and response MIME types the model's
    inference container accepts (a registered version's ``SupportedContentTypes`` and
    ``SupportedResponseMIMETypes``). Default: CSV both ways."""

    content_types: tuple[str, ...] = ("text/csv",)
    response_types: tuple[str, ...] = ("text/csv",)
    #: A script program's inference handler, shipped in the model archive's ``code/`` folder
    #: (what the framework's serving toolkit imports; the SDK's ``SAGEMAKER_PROGRAM``).
    entry_point: str = "inference.py"


@dataclass(frozen=True, kw_only=True)
class Program:
    """One training program, read from ``<directory>/program.toml``."""

    name: str
    kind: str
    directory: Path
    description: str = ""
    instance_type: str | None = None
    entry_point: str | None = None
    #: Folders of ``training_code/`` shipped beside the code (importable by name): packed into a
    #: script program's tarball; in a BYOC program's build context (with ``context = ".."``).
    shared: tuple[str, ...] = ()
    dockerfile: str = "Dockerfile"
    #: BYOC: the image's build context, ``.`` (the program folder) or ``..`` (``training_code``).
    build_context: str = "."
    #: A built-in program's algorithm (``smtrain.core.builtin_algorithms.ALGORITHMS``) and its
    #: version; None: the default (the ``xgboostVersion`` setting for XGBoost, else ``"1"``).
    algorithm: str | None = None
    algorithm_version: str | None = None
    #: A script program's framework (one of ``contract.FRAMEWORKS``; default ``pytorch``), and
    #: the image versions its manifest names (None: the framework's setting in cdk.json).
    framework: str | None = None
    framework_version: str | None = None
    py_version: str | None = None
    base_framework_version: str | None = None
    #: How a script job on more than one instance uses them (one of
    #: ``contract.DISTRIBUTIONS[framework]``): the manifest's ``distribution``, else the
    #: framework's default (``contract.DEFAULT_DISTRIBUTIONS``); None: such a run is refused.
    distribution: str | None = None
    channels: tuple[Channel, ...] = ()
    metric_names: tuple[str, ...] = ()
    metric_definitions: tuple[Mapping[str, str], ...] = ()
    hyperparameters: Mapping[str, Hyperparameter] = field(default_factory=dict)
    tuning: TuningDefaults | None = None
    registration: Registration = field(default_factory=Registration)
    serving: Serving = field(default_factory=Serving)

    @property
    def requirements(self) -> Path | None:
        """The program's own ``requirements.txt`` (installed before it runs), if any."""
        path = self.directory / "requirements.txt"
        return path if path.is_file() else None

    @property
    def always_sent(self) -> dict[str, str]:
        """Hyperparameters sent on every job: the defaults of those that are not tunable."""
        return {h.name: h.default for h in self.hyperparameters.values()
                if not h.tunable and h.default is not None}

    @property
    def training_defaults(self) -> dict[str, str]:
        """Defaults sent on single training jobs only (those of tunable hyperparameters)."""
        return {h.name: h.default for h in self.hyperparameters.values()
                if h.tunable and h.default is not None}

    def catalog_entry(self) -> dict[str, Any]:
        """What the input checks need to know about this program (JSON data)."""
        entry: dict[str, Any] = {
            "kind": self.kind,
            "hyperparameters": {name: h.as_data() for name, h in self.hyperparameters.items()},
            "channels": [c.name for c in self.channels],  # in the manifest's order
            # Channels without a default URI: they get data only when the input gives one.
            "optionalChannels": [c.name for c in self.channels if not c.required],
            contract.CHANNEL_OPTIONS: {c.name: c.options() for c in self.channels},
            "metrics": list(self.metric_names),
        }
        if self.instance_type is not None:
            entry["instanceType"] = self.instance_type
        if self.algorithm in contract.PIPE_REFUSING_ALGORITHMS:
            entry["pipeRefused"] = True  # its container refuses Pipe mode (smtrain.core.contract)
        if self.framework is not None:
            # A run on more than one instance needs a distribution (smtrain.core.input_rules).
            entry["framework"] = self.framework
            entry["distribution"] = self.distribution
            entry["distributions"] = list(contract.distributions(self.framework,
                                                                 self.base_framework_version))
        # Which manifest the catalog was made from: an offline run compares it with the
        # synthesized one (smtrain.local.staleness), so a manifest edit is never run stale.
        entry["manifest"] = hashlib.sha256((self.directory / MANIFEST).read_bytes()).hexdigest()[:16]
        # What a run registers when its input has no 'register' (smtrain.core.input_rules).
        entry["register"] = self.registration.as_data()
        if self.tuning is not None:
            # A tuning run's defaults: what it tunes when its input gives no parameterRanges of
            # its own, and every other tuning field the input leaves out.
            entry["tuning"] = self.tuning.as_input()
        return entry


def discover(training_code_dir: Path | None = None, *,
             broken: dict[str, ProgramError] | None = None) -> dict[str, Program]:
    """Every program under ``training_code_dir`` (folders with a ``program.toml``), by name;
    default: :func:`programs_folder`. A manifest that fails its checks raises
    :class:`ProgramError` (``cdk synth`` must refuse it), unless ``broken`` is given: then its
    error is put there under the folder's name and the other programs are returned (the CLI runs
    one program, and one team member's bad manifest should not stop the others)."""
    if training_code_dir is None:
        training_code_dir = programs_folder()
    programs: dict[str, Program] = {}
    ids: dict[str, str] = {}
    for manifest in sorted(training_code_dir.glob(f"*/{MANIFEST}")):
        try:
            program = load(manifest.parent)
        except ProgramError as error:
            if broken is None:
                raise
            broken[manifest.parent.name] = error
            continue
        # Construct ids, state names and stack outputs are made from the name without _ and -.
        clash = ids.setdefault(contract.output_id(program.name), program.name)
        if clash != program.name:
            raise ProgramError(f"{manifest}: 'name': {program.name!r} and {clash!r} differ only in "
                               "'_' and '-', which the stack's resource names drop: rename one")
        programs[program.name] = program
    if not programs:
        if broken:
            raise next(iter(broken.values()))
        raise ProgramError(f"no training program found: no {training_code_dir}/*/{MANIFEST}")
    return programs


def load(directory: Path, *, staged: bool = False) -> Program:
    """Read and check ``directory/program.toml``. ``staged``: a copy under another folder name
    (an image's build context in ``cdk.out``), whose name is not checked against the folder's."""
    path = directory / MANIFEST
    where = f"{path}"
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ProgramError(f"{directory} has no {MANIFEST}") from None
    data, problem = _read_manifest(text)
    if problem is not None:
        raise ProgramError(f"{where}: {problem}")
    data = copy.deepcopy(data)

    def fail(setting: str, message: str) -> ProgramError:
        return ProgramError(f"{where}: '{setting}': {message}")

    name, kind = data["name"], data["kind"]
    if name != directory.name and not staged:
        raise fail("name", f"must be the folder's name {directory.name!r}, got {name!r}")
    for other in set(contract.KINDS) - {kind}:
        if other in data:
            raise fail(other, f"a {kind} program has no [{other}] table")
    if kind not in data:
        raise fail(kind, f"a {kind} program needs a [{kind}] table")
    if kind == "builtin" and data["builtin"]["algorithm"] not in builtin_algorithms.ALGORITHMS:
        raise fail("builtin.algorithm", builtin_algorithms.unknown_algorithm(data["builtin"]["algorithm"]))

    channels = tuple(Channel(
        name=c["name"], content_type=c["content_type"], required=c.get("required", True),
        shares_data=c.get("shares_data", False), extensions=tuple(c.get("extensions", ())),
        input_mode=c.get("input_mode", contract.DEFAULT_INPUT_MODE),
        s3_data_distribution_type=c.get("s3_data_distribution_type",
                                        contract.DEFAULT_S3_DATA_DISTRIBUTION),
        compression_type=c.get("compression_type", contract.DEFAULT_COMPRESSION))
        for c in data["channels"])
    for index, channel in enumerate(channels):
        if kind == "builtin" and data["builtin"]["algorithm"] in contract.PIPE_REFUSING_ALGORITHMS \
                and channel.input_mode == contract.PIPE_INPUT_MODE:
            raise fail(f"channels.{index}.input_mode",
                       f"channel '{channel.name}': SageMaker's {data['builtin']['algorithm']} "
                       "container refuses Pipe mode (\"Pipe mode ... is no longer supported. Please "
                       "use Fast File mode\"): use FastFile")
        if channel.compression_type != contract.DEFAULT_COMPRESSION and \
                channel.input_mode != contract.COMPRESSED_INPUT_MODE:
            raise fail(f"channels.{index}.compression_type",
                       f"channel '{channel.name}': compression_type {channel.compression_type} is "
                       f"read in {contract.COMPRESSED_INPUT_MODE} mode only (SageMaker's "
                       f"Channel.CompressionType): set input_mode = \"{contract.COMPRESSED_INPUT_MODE}\" "
                       f"or leave the data uncompressed")
    _unique(fail, "channels", [c.name for c in channels])
    if not any(c.required for c in channels):
        # A run that gives no input must still send one channel (botocore's model:
        # InputDataConfig holds 1 to 20 channels).
        raise fail("channels", "at least one channel must be required (it gets a default URI)")

    metrics = data.get("metrics", [])
    _unique(fail, "metrics", [m["name"] for m in metrics])
    if kind == "builtin":
        if any("regex" in m for m in metrics):
            raise fail("metrics", "a built-in algorithm publishes its own metrics: give names "
                                  "only (SageMaker refuses metric definitions for built-in "
                                  "algorithms)")
        definitions: tuple[Mapping[str, str], ...] = ()
    else:
        definitions = tuple({"Name": m["name"], "Regex": m["regex"]} if "regex" in m
                            else metric_definition(m["name"]) for m in metrics)

    hyperparameters = {key: _hyperparameter(fail, key, spec)
                       for key, spec in data.get("hyperparameters", {}).items()}
    for key in hyperparameters:
        if not 0 < len(key) <= contract.MAX_HYPERPARAMETER_KEY:
            raise fail(f"hyperparameters.{key}", "names are 1-256 characters")
    metric_names = tuple(m["name"] for m in metrics)
    tuning = _tuning(fail, data.get("tuning"), hyperparameters, metric_names)
    if kind == "builtin" and tuning is not None:
        # The algorithm's own metric names, where the developer guide lists them.
        problem = builtin_algorithms.objective_problem(data["builtin"]["algorithm"],
                                                       tuning.objective_metric)
        if problem:
            raise fail("tuning.objective", problem)
    register = data.get("register", {})
    for bound in ("minimum", "maximum"):
        for metric, value in register.get(bound, {}).items():
            if metric not in metric_names:
                raise fail(f"register.{bound}.{metric}",
                           f"not a metric of this program: {', '.join(metric_names) or 'none'}")
            if value != value or value in (float("inf"), float("-inf")):
                raise fail(f"register.{bound}.{metric}", "must be a finite number")
    registration = Registration(default=register.get("default", False),
                                minimum=dict(register.get("minimum", {})),
                                maximum=dict(register.get("maximum", {})))
    serving_data = data.get("serving", {})
    serving = Serving(
        content_types=tuple(serving_data.get("content_types", Serving.content_types)),
        response_types=tuple(serving_data.get("response_types", Serving.response_types)),
        entry_point=serving_data.get("entry_point", Serving.entry_point))

    script, byoc, builtin = data.get("script", {}), data.get("byoc", {}), data.get("builtin", {})
    if "base_framework_version" in script and script.get("framework") != "huggingface":
        raise fail("script.base_framework_version",
                   "only a huggingface program names a base framework (its PyTorch or "
                   "TensorFlow build)")
    framework = script.get("framework", "pytorch") if kind == "script" else None
    distribution = script.get("distribution")
    if framework is not None:
        base = script.get("base_framework_version")
        allowed = contract.distributions(framework, base)
        if distribution is not None and distribution not in allowed:
            on = f" on {base}" if framework == "huggingface" and base else ""
            raise fail("script.distribution", f"{distribution!r} is not a distribution of "
                                              f"{framework}{on}: one of {', '.join(allowed)}")
        distribution = distribution or contract.default_distribution(framework, base)
    program = Program(
        name=name, kind=kind, directory=directory, description=data.get("description", ""),
        instance_type=data.get("instance_type"),
        entry_point=script.get("entry_point") or byoc.get("entry_point"),
        shared=tuple(script.get("shared", ()) or byoc.get("shared", ())),
        dockerfile=byoc.get("dockerfile", "Dockerfile"),
        build_context=byoc.get("context", "."),
        algorithm=builtin.get("algorithm"), algorithm_version=builtin.get("version"),
        framework=framework,
        framework_version=script.get("framework_version"),
        py_version=script.get("py_version"),
        base_framework_version=script.get("base_framework_version"),
        distribution=distribution,
        channels=channels, metric_names=metric_names, metric_definitions=definitions,
        hyperparameters=hyperparameters, tuning=tuning, registration=registration,
        serving=serving,
    )
    _check_files(fail, program, serving_given="entry_point" in serving_data)
    _check_script_options(fail, program)
    _check_default_tuning(fail, program)
    return program


def _check_script_options(fail: Any, program: Program) -> None:
    """A script program's declared hyperparameters must be options its entry point defines,
    by exactly the name the toolkit passes (:mod:`smtrain.core.script_options`; skipped where
    the script reads them another way). The first one missing fails, naming the field."""
    if program.kind != "script" or not program.hyperparameters:
        return
    from smtrain.core import script_options

    assert program.entry_point is not None  # the schema requires it
    packages = {name: program.directory.parent / name for name in program.shared}
    options = script_options.read_options(program.directory / program.entry_point,
                                          packages=packages)
    if options is None:
        return
    problems = script_options.hyperparameter_problems(program.hyperparameters, options,
                                                      program.entry_point)
    for name, problem in problems.items():
        raise fail(f"hyperparameters.{name}", problem)


@functools.lru_cache(maxsize=256)
def _read_manifest(text: str) -> tuple[dict[str, Any], str | None]:
    """A manifest's text parsed and checked against :data:`MANIFEST_SCHEMA`: the data, and the
    first problem (None if none). By text, once per process: the CLI run in-process, or a
    notebook, reads the same manifests again and again (callers copy the data)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        return {}, f"not valid TOML: {error}"
    errors = sorted(jsonschema.Draft202012Validator(MANIFEST_SCHEMA).iter_errors(data),
                    key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        location = ".".join(str(p) for p in first.absolute_path) or "(top level)"
        return data, f"'{location}': {first.message}"
    return data, None


def _check_default_tuning(fail: Any, program: Program) -> None:
    """The ``[tuning]`` defaults must make a tuning job the input rules take (and so SageMaker:
    API reference, HyperParameterTuningJobConfig; developer guide, "Understand the hyperparameter
    tuning strategies"), or every ``"tuning": {}`` run would be refused for the user's input. The
    rules are the state machine's own (:mod:`smtrain.core.input_rules`), given every default as
    if the input had written it."""
    if program.tuning is None:
        return
    cause = _default_tuning_refusal(repr(program), program)
    if cause is not None:
        raise fail("tuning", f"the default tuning would be refused: {cause}")


#: The rules' answer for a program's default tuning, by the program's ``repr`` (every field the
#: rules read, and more): a process that reads the same manifest again (the CLI run in-process,
#: a notebook) evaluates the rules once. A few hundred programs at most.
_DEFAULT_TUNING_ANSWERS: dict[str, str | None] = {}


def _default_tuning_refusal(key: str, program: Program) -> str | None:
    if key in _DEFAULT_TUNING_ANSWERS:
        return _DEFAULT_TUNING_ANSWERS[key]
    from smtrain.core import input_rules, rule_answers

    assert program.tuning is not None
    execution_input = {contract.PROGRAM: program.name, contract.TUNING: program.tuning.as_input()}

    def evaluate() -> str | None:
        checked = input_rules.check({program.name: program}, execution_input)
        return checked.problems[0]["cause"] if checked.problems else None

    # Kept between processes too (smtrain.core.rule_answers): the answer is the rules' for this
    # text, this program's facts and this input, on this JSONata library.
    # An evaluation that failed is no answer of the rules': it is given, not kept.
    cause = rule_answers.kept_answer({
        "rules": input_rules.rules(), "jsonata": input_rules.jsonata_version(),
        "catalog": input_rules.catalog({program.name: program}), "input": execution_input}, evaluate,
        keep=lambda answer: answer is None or not answer.startswith(input_rules.NOT_CHECKED))
    if len(_DEFAULT_TUNING_ANSWERS) >= 512:
        _DEFAULT_TUNING_ANSWERS.clear()
    _DEFAULT_TUNING_ANSWERS[key] = cause
    return cause


def _unique(fail: Any, setting: str, names: Sequence[str]) -> None:
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise fail(setting, f"{', '.join(repeated)} given twice")


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _hyperparameter(fail: Any, key: str, spec: Mapping[str, Any]) -> Hyperparameter:
    setting = f"hyperparameters.{key}"
    kind = spec["type"]
    if kind == "categorical" and "values" not in spec:
        raise fail(setting, "a categorical hyperparameter needs 'values'")
    if kind != "categorical" and "values" in spec:
        raise fail(setting, "only a categorical hyperparameter takes 'values'")
    if kind not in ("int", "float") and ("min" in spec or "max" in spec):
        raise fail(setting, f"a {kind} hyperparameter takes no 'min'/'max'")
    if "min" in spec and "max" in spec and spec["min"] > spec["max"]:
        raise fail(setting, "'min' is above 'max'")
    hyperparameter = Hyperparameter(
        name=key, type=kind, default=_text(spec["default"]) if "default" in spec else None,
        min=spec.get("min"), max=spec.get("max"), values=tuple(spec.get("values", ())),
        tunable=spec.get("tunable", True), description=spec.get("description", ""),
    )
    if hyperparameter.default is not None:
        problem = value_problem(hyperparameter, hyperparameter.default)
        if problem:
            raise fail(f"{setting}.default", problem)
    return hyperparameter


def value_problem(hyperparameter: Hyperparameter, value: str) -> str | None:
    """Why ``value`` (a hyperparameter's text) does not fit its declaration, or None."""
    import re

    kind = hyperparameter.type
    if kind == "int" and not re.fullmatch(contract.INT_TEXT, value):
        return f"must be a whole number, got {value!r}"
    if kind == "float" and not re.fullmatch(contract.FLOAT_TEXT, value):
        return f"must be a number, got {value!r}"
    if kind == "bool" and value not in contract.BOOL_VALUES:
        return f"must be true or false, got {value!r}"
    if kind == "categorical" and value not in hyperparameter.values:
        return f"must be one of {', '.join(hyperparameter.values)}, got {value!r}"
    if kind in ("int", "float"):
        number = float(value)
        if hyperparameter.min is not None and number < hyperparameter.min:
            return f"must be at least {_text(hyperparameter.min)}, got {value}"
        if hyperparameter.max is not None and number > hyperparameter.max:
            return f"must be at most {_text(hyperparameter.max)}, got {value}"
    return None


def _tuning(fail: Any, data: Mapping[str, Any] | None, hyperparameters: Mapping[str, Hyperparameter],
            metric_names: Sequence[str]) -> TuningDefaults | None:
    if data is None:
        return None
    if data["objective"] not in metric_names:
        raise fail("tuning.objective", f"{data['objective']!r} is not one of the program's "
                                       f"metrics: {', '.join(metric_names) or 'none declared'}")
    ranges: dict[str, list[dict[str, Any]]] = {}
    for key, spec in data["ranges"].items():
        setting = f"tuning.ranges.{key}"
        declared = hyperparameters.get(key)
        if declared is None:
            raise fail(setting, f"{key!r} is not a declared hyperparameter")
        if not declared.tunable:
            raise fail(setting, f"{key!r} is declared tunable = false")
        if declared.type in ("int", "float") and "values" not in spec:
            if "min" not in spec or "max" not in spec:
                raise fail(setting, "a numeric range needs 'min' and 'max'")
            for bound in ("min", "max"):
                problem = value_problem(declared, _text(spec[bound]))
                if problem:
                    raise fail(f"{setting}.{bound}", problem)
            member = ("IntegerParameterRanges" if declared.type == "int"
                      else "ContinuousParameterRanges")
            ranges.setdefault(member, []).append({
                "Name": key, "MinValue": _text(spec["min"]), "MaxValue": _text(spec["max"]),
                "ScalingType": spec.get("scaling", "Auto")})
        else:
            values = spec.get("values") or list(declared.values)
            if not values:
                raise fail(setting, "a categorical range needs 'values'")
            for value in values:
                problem = value_problem(declared, value)
                if problem:
                    raise fail(f"{setting}.values", problem)
            ranges.setdefault("CategoricalParameterRanges", []).append(
                {"Name": key, "Values": list(values)})
    defaults = TuningDefaults(
        objective_metric=data["objective"], objective_type=data["type"], parameter_ranges=ranges,
        hyperband_max_resource=data.get("hyperband_max_resource", 10),
        strategy=data.get("strategy", "Bayesian"), max_jobs=data.get("max_jobs", 4),
        max_parallel_jobs=data.get("max_parallel_jobs", 2),
        early_stopping=data.get("early_stopping", "Off"),
    )
    return defaults  # checked against the input rules once the program is built


def _check_files(fail: Any, program: Program, *, serving_given: bool) -> None:
    directory = program.directory
    if program.kind == "script":
        assert program.entry_point is not None  # the schema requires it
        if not (directory / program.entry_point).is_file():
            raise fail("script.entry_point", f"{directory / program.entry_point} does not exist")
        _check_inference_handler(fail, program, given=serving_given)
    for shared in program.shared:
        if not (directory.parent / shared).is_dir():
            raise fail(f"{program.kind}.shared", f"{directory.parent / shared} is not a folder")
    if program.kind == "byoc":
        if program.shared and program.build_context != "..":
            raise fail("byoc.shared", "shared folders need context = \"..\" (training_code/)")
        context = (directory if program.build_context == "." else directory.parent).resolve()
        dockerfile = directory / program.dockerfile
        if not dockerfile.is_file():
            raise fail("byoc.dockerfile", f"{dockerfile} does not exist")
        if context not in dockerfile.resolve().parents:
            raise fail("byoc.dockerfile", "must lie inside the build context")
        entry = directory / (program.entry_point or "train")
        if not entry.is_file():
            raise fail("byoc.entry_point", f"{entry} does not exist: SageMaker runs `train` "
                                           "(the offline engine runs this file)")


def _check_inference_handler(fail: Any, program: Program, *, given: bool) -> None:
    """A script program's model serves on the framework's inference image, whose serving toolkit
    imports ``SAGEMAKER_PROGRAM`` (``serving.entry_point``) from the model archive's ``code/``
    (sagemaker-inference-toolkit, ``environment.py``: ``code_dir = model_dir/code``, module
    ``SAGEMAKER_PROGRAM`` or ``inference.py``); the training script copies it there from the
    program's folder. Checked where the manifest names the handler, or registers every run's
    model (``[register] default = true``): a registered version without it can never serve."""
    if not (given or program.registration.default):
        return
    handler = program.directory / program.serving.entry_point
    if not handler.is_file():
        why = ("names it" if given else
               "registers every run's model ([register] default = true) and this is the default")
        raise fail("serving.entry_point",
                   f"{handler} does not exist: the manifest {why}, and the model's inference image "
                   f"imports code/{program.serving.entry_point} from model.tar.gz (its "
                   "SAGEMAKER_PROGRAM), so a registered model could never serve")
