"""``smtrain programs``, ``smtrain new-program`` and ``smtrain tuning-template``: the training
programs of ``training_code/`` (their ``program.toml`` manifests), read and written offline.

Nothing here touches AWS; ``smtrain.core.programs`` reads the manifests in milliseconds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from smtrain.cli.framework_skeletons import FRAMEWORK_SKELETONS, inference_handler
from smtrain.cli.framework_skeletons import entry_point as skeleton_entry_point
from smtrain.cli.outcome import EXIT_OK, EXIT_USAGE, Handler, fail, run_handler
from smtrain.core import builtin_algorithms, contract, programs


def run(args: argparse.Namespace) -> int:
    handlers: dict[str, Handler] = {"programs": list_programs, "new-program": new_program,
                                    "tuning-template": tuning_template}
    return run_handler(handlers[args.command], args, usage_errors=(programs.ProgramError,))


# --- smtrain programs -----------------------------------------------------------------------


def program_data(program: programs.Program) -> dict[str, Any]:
    """What ``smtrain programs --json`` says about one program (JSON data)."""
    framework = framework_data(program)
    return {
        "name": program.name,
        "kind": program.kind,
        "description": program.description,
        "directory": str(program.directory),
        "entryPoint": program.entry_point,
        "algorithm": program.algorithm,
        "algorithmVersion": program.algorithm_version,
        "instanceType": program.instance_type,
        "channels": [{"name": c.name, "contentType": c.content_type, "required": c.required,
                      **c.options()} for c in program.channels],
        "metrics": [dict(d) for d in program.metric_definitions]
        or [{"Name": name} for name in program.metric_names],
        "hyperparameters": {name: {**h.as_data(), **({"description": h.description}
                                                     if h.description else {})}
                            for name, h in program.hyperparameters.items()},
        "tuning": program.tuning.as_input() if program.tuning else None,
        "framework": framework,
        # How the offline engine runs it (script programs), in words.
        "offline": (contract.offline_run(framework["name"], framework.get("version"), _python())
                    if framework is not None else None),
        # How a script job on more than one instance uses them (None: such a run is refused).
        "distribution": program.distribution,
    }


def framework_data(program: programs.Program,
                   defaults: Mapping[str, str] | None = None) -> dict[str, Any] | None:
    """A script program's framework build: what its manifest names, each part it leaves out
    from the framework's setting in cdk.json (``from`` names where each came from)."""
    if program.framework is None:
        return None
    if defaults is None:
        from smtrain.cli.deployment_lookup import framework_defaults

        defaults = framework_defaults()
    data: dict[str, Any] = {"name": program.framework}
    sources: dict[str, str] = {}
    settings = contract.FRAMEWORK_SETTINGS[program.framework]
    for key, given, setting in (("version", program.framework_version, settings[0]),
                                ("pyVersion", program.py_version, settings[1]),
                                ("baseFrameworkVersion", program.base_framework_version,
                                 settings[2])):
        if given is not None:
            data[key], sources[key] = given, "program.toml"
        elif setting is not None and setting in defaults:
            data[key], sources[key] = defaults[setting], f"cdk.json {setting}"
    data["from"] = sources
    return data


def _python() -> tuple[int, int]:
    """This interpreter's (major, minor): the one offline jobs' environments are built on."""
    return sys.version_info[0], sys.version_info[1]


def _framework_text(data: Mapping[str, Any]) -> str:
    parts = [data["name"], data.get("version", "(version from cdk.json)")]
    extras = [data[key] for key in ("pyVersion", "baseFrameworkVersion") if key in data]
    text = " ".join(parts) + (f" ({', '.join(extras)})" if extras else "")
    where = sorted({source.split()[0] for source in data["from"].values()}, reverse=True)
    return text + (f" from {' and '.join(where)}" if where else "")


def _delivery_text(channel: programs.Channel) -> str:
    """``File``, or e.g. ``Pipe, ShardedByS3Key, Gzip``: what differs from SageMaker's defaults."""
    parts = [channel.input_mode]
    if channel.s3_data_distribution_type != contract.DEFAULT_S3_DATA_DISTRIBUTION:
        parts.append(channel.s3_data_distribution_type)
    if channel.compression_type != contract.DEFAULT_COMPRESSION:
        parts.append(channel.compression_type)
    return ", ".join(parts)


def list_programs(args: argparse.Namespace) -> int:
    """Every program that passes its checks, then one error line per manifest that does not
    (all of them, not the first alone: ``cdk synth`` refuses each), exit 2 if there is any."""
    broken: dict[str, programs.ProgramError] = {}
    found = programs.discover(broken=broken)
    if args.json:
        print(json.dumps({name: program_data(p) for name, p in found.items()}, indent=2))
    else:
        print("\n\n".join(describe(p) for p in found.values()))
    for error in broken.values():
        fail(str(error))
    return EXIT_USAGE if broken else EXIT_OK


def _hyperparameter_line(h: programs.Hyperparameter, width: int) -> str:
    parts = [f"{h.name:<{width}}", f"{h.type:<11}",
             f"default {h.default}" if h.default is not None else "no default"]
    if h.min is not None or h.max is not None:
        low = str(h.min) if h.min is not None else "-inf"
        high = str(h.max) if h.max is not None else "inf"
        parts.append(f"[{low}, {high}]")
    if h.values:
        parts.append("one of " + " | ".join(h.values))
    parts.append("tunable" if h.tunable else "fixed (sent on every job)" if h.default is not None
                 else "not tunable (sent only when given)")
    line = "  ".join(parts)
    return f"{line}  - {h.description}" if h.description else line


def _range_text(kind: str, spec: Mapping[str, Any]) -> str:
    if kind == "CategoricalParameterRanges":
        return " | ".join(spec["Values"])
    return f"{spec['MinValue']} .. {spec['MaxValue']} ({spec['ScalingType']} scaling)"


def describe(program: programs.Program) -> str:
    """One program as readable text."""
    where = program.entry_point or program.algorithm or ""
    if program.algorithm is not None:
        if program.algorithm_version is not None:
            where += f" {program.algorithm_version}"
        if program.algorithm not in builtin_algorithms.RUNS_OFFLINE:
            where += ", runs only on SageMaker"
    lines = [f"{program.name} ({program.kind}{': ' + where if where else ''})"]
    if program.description:
        lines.append(f"  {program.description}")
    framework = framework_data(program)
    if framework is not None:
        lines.append(f"  framework: {_framework_text(framework)}")
        lines.append(f"  offline: {contract.offline_run(framework['name'], framework.get('version'), _python())}")
        lines.append("  on more than one instance: " + (
            program.distribution or "refused (no [script] distribution declared)"))
    lines.append("  channels:")
    width = max(len(c.name) for c in program.channels)
    lines += [f"    {c.name:<{width}}  {c.content_type}  {'required' if c.required else 'optional'}  "
              f"{_delivery_text(c)}" for c in program.channels]
    lines.append("  metrics: " + (", ".join(program.metric_names) or "none"))
    if program.hyperparameters:
        lines.append("  hyperparameters:")
        width = max(len(name) for name in program.hyperparameters)
        lines += ["    " + _hyperparameter_line(h, width) for h in program.hyperparameters.values()]
    else:
        lines.append("  hyperparameters: none")
    tuning = program.tuning
    if tuning is None:
        lines.append("  tuning: no defaults ([tuning] absent)")
    else:
        lines.append(f"  tuning: {tuning.objective_type} {tuning.objective_metric}; "
                     f"{tuning.strategy}, {tuning.max_jobs} jobs, {tuning.max_parallel_jobs} "
                     f"in parallel, early stopping {tuning.early_stopping}")
        for kind, ranges in tuning.parameter_ranges.items():
            lines += [f"    {r['Name']}: {_range_text(kind, r)}" for r in ranges]
    return "\n".join(lines)


# --- smtrain tuning-template ----------------------------------------------------------------


def tuning_template(args: argparse.Namespace) -> int:
    found = programs.discover()
    program = found.get(args.program)
    if program is None:
        fail(f"unknown program {args.program!r}; known: {', '.join(sorted(found))}")
        return EXIT_USAGE
    if program.tuning is None:
        fail(f"program {program.name!r} has no [tuning] section in "
             f"{program.directory / programs.MANIFEST}: no default tuning to print")
        return EXIT_USAGE
    print(json.dumps(program.tuning.as_input(), indent=2))
    return EXIT_OK


# --- smtrain new-program --------------------------------------------------------------------


def test_file_name(name: str) -> str:
    """The skeleton's test, ``tests/programs/test_<name>.py`` (``-`` becomes ``_``)."""
    return f"test_{name.replace('-', '_')}.py"


def skeleton_files(name: str, kind: str, training_code_dir: Path,
                   framework: str = "pytorch") -> dict[Path, str]:
    """Every file ``new-program`` writes, by path (the test lies in the project's
    ``tests/programs/``, beside ``training_code_dir``). ``framework``: a script's (one of
    ``contract.FRAMEWORKS``); scikit-learn, XGBoost, TensorFlow and Hugging Face get an entry
    point of their own (:mod:`smtrain.cli.framework_skeletons`), PyTorch the plain one."""
    folder = training_code_dir / name
    entry = "train.py" if kind == "script" else "train"
    own = framework in FRAMEWORK_SKELETONS
    files = {
        folder / programs.MANIFEST: _manifest(name, kind, framework),
        folder / "requirements.txt": _requirements(framework if own else None),
        folder / entry: skeleton_entry_point(framework) if own else _entry_point(kind),
    }
    handler = inference_handler(framework) if kind == "script" else None
    if handler is not None:
        files[folder / "inference.py"] = handler
    if kind == "byoc":
        files[folder / "Dockerfile"] = _DOCKERFILE.replace("__BASE_IMAGE__", BYOC_BASE_IMAGE)
    test = training_code_dir.parent / "tests" / "programs" / test_file_name(name)
    files[test] = _test_file(name, kind, training_code_dir.name, framework if own else None)
    return files


def _shown(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)


def new_program(args: argparse.Namespace) -> int:
    name: str = args.name
    training_code_dir: Path = args.dir if args.dir is not None else programs.programs_folder()
    if not contract.PROGRAM_NAME.fullmatch(name):
        fail(f"program name {name!r} must match {contract.PROGRAM_NAME.pattern} (a folder, an S3 "
             "prefix and a tag value)")
        return EXIT_USAGE
    folder = training_code_dir / name
    if folder.exists():
        fail(f"{_shown(folder)} already exists: pick another name or remove it")
        return EXIT_USAGE
    framework: str | None = args.framework
    if framework is not None and args.kind != "script":
        fail(f"--framework is for --kind script (a {args.kind} program brings its own image)")
        return EXIT_USAGE
    framework = framework or "pytorch"
    files = skeleton_files(name, args.kind, training_code_dir, framework)
    taken = [path for path in files if path.exists()]
    if taken:
        fail(f"{_shown(taken[0])} already exists: pick another name or remove it")
        return EXIT_USAGE
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        if path.name == "train":
            path.chmod(0o755)
    program = programs.load(folder)  # what `cdk synth` and every command will read
    test = next(path for path in files if path.name.startswith("test_"))
    what = ("a softmax regression on CSV (label in column 0, no header)" if framework == "pytorch"
            else f"{FRAMEWORK_SKELETONS[framework].model} on CSV (label in column 0, no header)")
    on = f", {framework}" if program.kind == "script" else ""
    print(f"Wrote training program {program.name} ({program.kind}{on}):")
    for path in files:
        print(f"  {_shown(path)}")
    print("\nNext steps:")
    print(f"  edit {_shown(folder / (program.entry_point or 'train'))}: it trains {what}")
    print(f"  .venv/bin/pytest -q {_shown(test)}   (trains it offline on generated data)")
    print("  make synth   (packages it with the other programs)")
    if program.kind == "script" and framework not in contract.OFFLINE_FRAMEWORKS:
        versions = ", ".join(contract.OFFLINE_IMAGE_ENVIRONMENTS.get(framework, ())) or "none"
        print(f"  (its test runs it on this project's packages, and skips where "
              f"{FRAMEWORK_SKELETONS[framework].module} is not installed; "
              f"`smtrain start --local` runs it in the {framework} image's environment, built on "
              f"first use, for {framework} {versions}: docs/programs.md)")
    print(f"  smtrain start --local --program {name} --input train=DIR --input validation=DIR")
    print(f"  smtrain start --local --program {name} --tune <(smtrain tuning-template --program {name})")
    return EXIT_OK


_REQUIREMENTS = """\
# This program's Python packages, one pinned requirement a line (e.g. `numpy==2.4.6`).
# Installed before the program runs: by the SageMaker training toolkit for a script program
# (`pip install -r requirements.txt` in the job), by the Dockerfile for a BYOC image.
# __USES__, so nothing is listed yet.
"""


def _requirements(framework: str | None) -> str:
    uses = (f"The skeleton uses what the {framework} image has ({FRAMEWORK_SKELETONS[framework].uses})"
            if framework else "The skeleton uses the standard library only")
    return _REQUIREMENTS.replace("__USES__", uses)

#: The base image of the BYOC skeleton and of the shipped digits_lightgbm, pinned by digest: a tag
#: can be pushed again with other contents, a digest cannot. The digest is the image index Docker
#: Hub serves for the tag (every platform), as pinned by astral-sh/uv-docker-example's
#: multistage.Dockerfile and other public Dockerfiles; not pulled here (no registry is reachable).
#: Check it with docker buildx imagetools inspect python:3.12.8-slim-bookworm.
BYOC_BASE_IMAGE = "python:3.12.8-slim-bookworm@sha256:2199a62885a12290dc9c5be3ca0681d367576ab7bf037da120e564723292a2f0"

_DOCKERFILE = """\
# BYOC training image on a slim Python pinned by digest. Build context: this folder.
FROM __BASE_IMAGE__

ENV PYTHONDONTWRITEBYTECODE=1 \\
    PYTHONUNBUFFERED=1 \\
    PATH="/opt/program:${PATH}"

WORKDIR /opt/program
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY train .

# SageMaker runs `docker run <image> train` to train and `docker run <image> serve` to host the
# model, so there is no ENTRYPOINT: each is an executable on PATH (add a `serve` beside `train`
# that answers /ping and /invocations on port 8080 to make the model deployable; see
# digits_lightgbm). Nothing here holds secrets.
"""


_FRAMEWORK_NAMES = {"pytorch": "PyTorch", "sklearn": "scikit-learn", "xgboost": "XGBoost",
                    "tensorflow": "TensorFlow", "huggingface": "Hugging Face (PyTorch)"}
#: A Hugging Face training image is a GPU build only (the SDK's image_uris has no CPU one): its
#: skeleton names a GPU type of the default allowedInstanceTypes (cdk.json), or synth refuses it.
_HUGGINGFACE_INSTANCE_TYPE = "ml.g5.xlarge"


def _manifest(name: str, kind: str, framework: str = "pytorch") -> str:
    if kind == "script":
        what = (f"A script on AWS's {_FRAMEWORK_NAMES[framework]} image, run by the SageMaker "
                "training toolkit")
        table = f'[script]\nentry_point = "train.py"\nframework = "{framework}"\n'
        if framework not in contract.DEFAULT_DISTRIBUTIONS:
            # Without it a run on more than one instance is refused (docs/programs.md).
            table += ("# On more than one instance: once train.py coordinates them (SM_HOSTS, or a "
                      "tf.distribute strategy for TensorFlow),\n"
                      f"# declare how: {', '.join(contract.DISTRIBUTIONS[framework])}.\n"
                      f'# distribution = "{contract.DISTRIBUTIONS[framework][0]}"\n')
        printer = "train.py"
    else:
        what = "An image of its own (BYOC): Dockerfile and `train` in this folder"
        table = ('[byoc]\ndockerfile = "Dockerfile"\ncontext = "."\nentry_point = "train"\n')
        printer = "train"
    model = ("softmax regression" if framework == "pytorch" or kind != "script"
             else FRAMEWORK_SKELETONS[framework].model)
    instance = ("# Its images are GPU builds only: a GPU type of allowedInstanceTypes (cdk.json).\n"
                f'instance_type = "{_HUGGINGFACE_INSTANCE_TYPE}"\n'
                if kind == "script" and framework == "huggingface" else "")
    serving = ("\n# What the model's handler (inference.py, which train.py puts in the model's code/) takes\n"
               "# and answers.\n[serving]\n"
               'content_types = ["text/csv", "application/json"]\n'
               'response_types = ["application/json", "text/csv"]\n'
               if kind == "script" and inference_handler(framework) is not None else "")
    return f"""\
# A training program: what it is, what it reads, prints and takes (every field: docs/programs.md).
# `smtrain programs` lists it; `make synth` packages it.
name = "{name}"
kind = "{kind}"
description = "{what}: {model} on CSV (label in column 0)"
{instance}
{table}
[[channels]]
name = "train"
content_type = "text/csv"

[[channels]]
name = "validation"
content_type = "text/csv"

# Printed by {printer} as `epoch=N train:loss=X validation:accuracy=Y`; with no regex, a metric
# is read from `<name>=<number>`.
[[metrics]]
name = "train:loss"

[[metrics]]
name = "validation:accuracy"

# Keep each default equal to the code's own (a tuning job sends none for what it tunes).
[hyperparameters.epochs]
type = "int"
default = 10
min = 1
max = 1000

[hyperparameters.learning-rate]
type = "float"
default = 0.1
min = 0.000001
max = 10

[tuning]
objective = "validation:accuracy"
type = "Maximize"
hyperband_max_resource = 10  # the default epochs: one metric line per epoch

[tuning.ranges.learning-rate]
min = 0.01
max = 1
scaling = "Logarithmic"
{serving}"""


_SCRIPT_HYPERPARAMETERS = '''\
def given_hyperparameters(argv: list[str]) -> dict[str, str]:
    """The toolkit passes each hyperparameter as ``--name value``."""
    given: dict[str, str] = {}
    rest = list(argv)
    while rest:
        flag = rest.pop(0)
        if not flag.startswith("--"):
            raise TrainingError(f"unexpected argument {flag!r} (hyperparameters are --name value)")
        name, equals, value = flag[2:].partition("=")
        if not equals:
            if not rest:
                raise TrainingError(f"hyperparameter --{name} has no value")
            value = rest.pop(0)
        given[name] = value
    return given
'''

_BYOC_HYPERPARAMETERS = '''\
def given_hyperparameters(argv: list[str]) -> dict[str, str]:
    """SageMaker writes the job's hyperparameters to ``input/config/hyperparameters.json``
    (every value a string); ``train`` is started without arguments."""
    path = BASE_DIR / "input" / "config" / "hyperparameters.json"
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise TrainingError(f"{path} is not JSON: {error}") from None
    return {str(name): str(value) for name, value in data.items()}
'''

_ENTRY_POINT = '''\
"""__SUMMARY__

The SageMaker contract, read here with the standard library only:
- paths from ``SM_*`` variables, defaulting to SageMaker's ``/opt/ml`` layout
  (``SAGEMAKER_BASE_DIR`` moves ``/opt/ml``, as the offline runs and tests do);
- __HYPERPARAMETERS__;
- the channels ``train`` and ``validation``: CSV files, label (a class number) in the first
  column, no header;
- one metric line per epoch, ``epoch=N train:loss=X validation:accuracy=Y`` (the manifest's
  metric definitions read ``<name>=<number>``);
- the model to ``SM_MODEL_DIR`` (``model.json``); on an error, the reason to
  ``/opt/ml/output/failure`` and exit status 1.

Replace ``train`` with your own model; keep the contract.
"""

from __future__ import annotations

import json
import math
import os
import random
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

BASE_DIR = Path(os.environ.get("SAGEMAKER_BASE_DIR", "/opt/ml"))
MODEL_DIR = Path(os.environ.get("SM_MODEL_DIR", str(BASE_DIR / "model")))
FAILURE_FILE = BASE_DIR / "output" / "failure"
CHANNELS = ("train", "validation")
#: Declared in program.toml: name -> (type, default, min, max).
HYPERPARAMETERS: dict[str, tuple[Callable[[str], float], float, float, float]] = {
    "epochs": (int, 10, 1, 1000),
    "learning-rate": (float, 0.1, 0.000001, 10),
}

Rows = list[tuple[int, list[float]]]


class TrainingError(Exception):
    """A bad hyperparameter or channel: the message is the job's failure reason."""


__GIVEN_HYPERPARAMETERS__

def read_hyperparameters(given: dict[str, str]) -> dict[str, float]:
    values: dict[str, float] = {}
    for name, (kind, default, low, high) in HYPERPARAMETERS.items():
        text = given.get(name)
        if text is None:
            values[name] = default
            continue
        try:
            value = kind(text)
        except ValueError:
            raise TrainingError(f"hyperparameter {name!r} must be {'an integer' if kind is int else 'a number'}, "
                                f"got {text!r}") from None
        if not low <= value <= high:
            raise TrainingError(f"hyperparameter {name!r} must be in [{low}, {high}], got {text}")
        values[name] = value
    ignored = sorted(set(given) - set(HYPERPARAMETERS))
    if ignored:  # e.g. SageMaker's own _tuning_objective_metric
        print(f"ignoring hyperparameters not declared here: {', '.join(ignored)}", file=sys.stderr)
    return values


def channel_dir(name: str) -> Path:
    return Path(os.environ.get(f"SM_CHANNEL_{name.upper()}", str(BASE_DIR / "input" / "data" / name)))


def read_channel(name: str) -> Rows:
    directory = channel_dir(name)
    files = sorted(p for p in directory.rglob("*.csv") if p.is_file()) if directory.is_dir() else []
    if not files:
        raise TrainingError(f"channel {name!r}: no .csv file in {directory}")
    rows: Rows = []
    for path in files:
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                values = [float(cell) for cell in line.split(",")]
            except ValueError:
                raise TrainingError(f"channel {name!r}: {path.name} line {number} is not numeric CSV "
                                    "(label first, no header)") from None
            if len(values) < 2 or not values[0].is_integer():
                raise TrainingError(f"channel {name!r}: {path.name} line {number} needs a class "
                                    "number and at least one feature")
            rows.append((int(values[0]), values[1:]))
    if len({len(features) for _label, features in rows}) != 1:
        raise TrainingError(f"channel {name!r}: rows have different numbers of columns")
    return rows


def probabilities(model: dict[str, Any], features: list[float]) -> list[float]:
    scaled = [(x - m) / s for x, m, s in zip(features, model["mean"], model["scale"], strict=True)]
    scores = [b + sum(w * x for w, x in zip(weights, scaled, strict=True))
              for weights, b in zip(model["weights"], model["bias"], strict=True)]
    top = max(scores)
    exps = [math.exp(s - top) for s in scores]
    total = sum(exps)
    return [e / total for e in exps]


def evaluate(model: dict[str, Any], rows: Rows) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``rows``."""
    index = {label: i for i, label in enumerate(model["classes"])}
    loss = correct = 0.0
    for label, features in rows:
        p = probabilities(model, features)
        i = index.get(label)
        loss -= math.log(max(p[i], 1e-12)) if i is not None else math.log(1e-12)
        correct += model["classes"][p.index(max(p))] == label
    return loss / len(rows), correct / len(rows)


def train(hp: dict[str, float], train_rows: Rows, validation_rows: Rows) -> dict[str, Any]:
    """Softmax regression by stochastic gradient descent on standardized features."""
    classes = sorted({label for label, _features in train_rows})
    if len(classes) < 2:
        raise TrainingError(f"channel 'train': needs at least two classes, found {classes}")
    width = len(train_rows[0][1])
    if len(validation_rows[0][1]) != width:
        raise TrainingError(f"channel 'validation': {len(validation_rows[0][1])} features, train has {width}")
    columns = list(zip(*(features for _label, features in train_rows), strict=True))
    mean = [sum(c) / len(c) for c in columns]
    scale = [math.sqrt(sum((x - m) ** 2 for x in c) / len(c)) or 1.0 for c, m in zip(columns, mean, strict=True)]
    model: dict[str, Any] = {"classes": classes, "mean": mean, "scale": scale,
                              "weights": [[0.0] * width for _ in classes], "bias": [0.0] * len(classes)}
    index = {label: i for i, label in enumerate(classes)}
    rate = hp["learning-rate"]
    order = list(train_rows)
    shuffle = random.Random(0)  # deterministic: the same data and hyperparameters, the same model
    for epoch in range(1, int(hp["epochs"]) + 1):
        shuffle.shuffle(order)
        for label, features in order:
            p = probabilities(model, features)
            scaled = [(x - m) / s for x, m, s in zip(features, mean, scale, strict=True)]
            for k, weights in enumerate(model["weights"]):
                error = p[k] - (k == index[label])
                model["bias"][k] -= rate * error
                for j, x in enumerate(scaled):
                    weights[j] -= rate * error * x
        train_loss, _ = evaluate(model, train_rows)
        _, accuracy = evaluate(model, validation_rows)
        print(f"epoch={epoch} train:loss={train_loss:.6f} validation:accuracy={accuracy:.6f}", flush=True)
    return model


def write_failure(message: str) -> None:
    try:
        FAILURE_FILE.parent.mkdir(parents=True, exist_ok=True)
        FAILURE_FILE.write_text(message)
    except OSError:  # run by hand, outside a job: stderr still says why
        pass


def main(argv: list[str]) -> int:
    try:
        hp = read_hyperparameters(given_hyperparameters(argv))
        data = {name: read_channel(name) for name in CHANNELS}
        model = train(hp, data["train"], data["validation"])
        MODEL_DIR.mkdir(parents=True, exist_ok=True)
        (MODEL_DIR / "model.json").write_text(json.dumps({**model, "hyperparameters": hp}, indent=2))
    except TrainingError as error:
        message = f"TrainingError: {error}"
        write_failure(message)
        print(message, file=sys.stderr, flush=True)
        return 1
    except Exception as error:  # anything else: still tell SageMaker why
        write_failure(f"Unexpected {type(error).__name__}: {error}\\n{traceback.format_exc()}")
        traceback.print_exc()
        return 1
    print(f"model written to {MODEL_DIR / 'model.json'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
'''


def _entry_point(kind: str) -> str:
    if kind == "script":
        summary = ("Script-mode entry point: the SageMaker training toolkit runs "
                   "``python train.py --<hyperparameter> <value> ...``.")
        hyperparameters = "hyperparameters as ``--name value`` flags (the toolkit passes them)"
        given = _SCRIPT_HYPERPARAMETERS
        text = ""
    else:
        summary = "SageMaker runs this as ``train`` in the BYOC image (``docker run <image> train``)."
        hyperparameters = "hyperparameters from ``/opt/ml/input/config/hyperparameters.json``"
        given = _BYOC_HYPERPARAMETERS
        text = "#!/usr/bin/env python3\n"
    return text + (_ENTRY_POINT.replace("__SUMMARY__", summary)
                   .replace("__HYPERPARAMETERS__", hyperparameters)
                   .replace("__GIVEN_HYPERPARAMETERS__", given))


_TEST_SCRIPT_RUN = '''\
def run_program(base_dir: Path, channels: dict[str, Path], hyperparameters: dict[str, str]) -> Result:
    """As the SageMaker training toolkit runs a script: ``SM_*`` variables, ``--name value`` flags."""
    env = {**os.environ, "SAGEMAKER_BASE_DIR": str(base_dir), "SM_MODEL_DIR": str(base_dir / "model"),
           **{f"SM_CHANNEL_{name.upper()}": str(path) for name, path in channels.items()}}
    flags = [part for name, value in hyperparameters.items() for part in (f"--{name}", value)]
    return subprocess.run([sys.executable, str(PROGRAM / "train.py"), *flags], capture_output=True,
                          text=True, env=env, timeout=300, check=False)
'''

_TEST_BYOC_RUN = '''\
def run_program(base_dir: Path, channels: dict[str, Path], hyperparameters: dict[str, str]) -> Result:
    """As SageMaker runs a BYOC image's ``train``: a fake /opt/ml (``SAGEMAKER_BASE_DIR``)."""
    config = base_dir / "input" / "config"
    config.mkdir(parents=True)
    (config / "hyperparameters.json").write_text(json.dumps(hyperparameters))
    for name, path in channels.items():
        shutil.copytree(path, base_dir / "input" / "data" / name)
    env = {**os.environ, "SAGEMAKER_BASE_DIR": str(base_dir)}
    return subprocess.run([str(PROGRAM / "train")], capture_output=True, text=True, env=env,
                          timeout=300, check=False)
'''

_TEST_FILE = '''\
"""The __NAME__ training program trains offline through the SageMaker contract (written by
``smtrain new-program``; extend it as the program grows)."""

from __future__ import annotations

__IMPORTS__
from pathlib import Path

import pytest
__SKIP__
PROGRAM = Path(__file__).resolve().parents[2] / "__DIR__" / "__NAME__"
#: The metric definitions SageMaker gets from program.toml (``<name>=<number>``).
METRIC = re.compile(r"\\bvalidation:accuracy=([-+]?[0-9]*\\.?[0-9]+(?:[eE][-+]?[0-9]+)?)")
Result = subprocess.CompletedProcess[str]


def write_csv(path: Path, rows: int, seed: int) -> None:
    """Two separable classes, label in column 0, no header."""
    rng = random.Random(seed)
    path.mkdir(parents=True)
    lines = []
    for _ in range(rows):
        label = rng.randrange(2)
        centre = 2.0 if label else -2.0
        lines.append(",".join([str(label), *(f"{rng.gauss(centre, 1.0):.4f}" for _ in range(3))]))
    (path / "data.csv").write_text("\\n".join(lines) + "\\n")


__RUN_PROGRAM__

@pytest.fixture
def channels(tmp_path: Path) -> dict[str, Path]:
    write_csv(tmp_path / "data" / "train", 80, seed=1)
    write_csv(tmp_path / "data" / "validation", 40, seed=2)
    return {name: tmp_path / "data" / name for name in ("train", "validation")}


def test_trains_and_prints_metrics(tmp_path: Path, channels: dict[str, Path]) -> None:
    result = run_program(tmp_path / "ml", channels, {"epochs": "3", "learning-rate": "0.1"})
    assert result.returncode == 0, result.stderr
    accuracies = [float(value) for value in METRIC.findall(result.stdout)]
    assert len(accuracies) == 3
    assert accuracies[-1] >= 0.9
__MODEL_CHECK__

def test_bad_hyperparameter_fails_with_a_reason(tmp_path: Path, channels: dict[str, Path]) -> None:
    result = run_program(tmp_path / "ml", channels, {"epochs": "many"})
    assert result.returncode == 1
    reason = (tmp_path / "ml" / "output" / "failure").read_text()
    assert reason == __BAD_REASON__
    assert not (tmp_path / "ml" / "model" / "__MODEL_FILE__").exists()
'''

_STDLIB_MODEL_CHECK = """\
    model = json.loads((tmp_path / "ml" / "model" / "model.json").read_text())
    assert model["classes"] == [0, 1]
"""


def _test_file(name: str, kind: str, directory: str, framework: str | None = None) -> str:
    """The skeleton's test; ``framework``: a framework skeleton's (it skips where the framework
    is not installed: the image has it, the project's environment may not)."""
    run_program = _TEST_SCRIPT_RUN if kind == "script" else _TEST_BYOC_RUN
    imports = {"os", "random", "re", "subprocess", "sys" if kind == "script" else "shutil"}
    skip = ""
    if framework is None:
        imports.add("json")
        model_file, model_check = "model.json", _STDLIB_MODEL_CHECK
        bad_reason = '"TrainingError: hyperparameter \'epochs\' must be an integer, got \'many\'"'
    else:
        model_file, module = FRAMEWORK_SKELETONS[framework].model_file, FRAMEWORK_SKELETONS[framework].module
        model_check = f'    assert (tmp_path / "ml" / "model" / "{model_file}").is_file()\n'
        bad_reason = '"TrainingError: argument --epochs: invalid int value: \'many\'"'
        skip = f'\n# The {framework} image has it; here the tests need it installed.\npytest.importorskip("{module}")\n'
    return (_TEST_FILE.replace("__SKIP__\n", skip).replace("__RUN_PROGRAM__", run_program).replace("__NAME__", name)
            .replace("__DIR__", directory).replace("__MODEL_CHECK__", model_check)
            .replace("__BAD_REASON__", bad_reason).replace("__MODEL_FILE__", model_file)
            .replace("__IMPORTS__", "\n".join(f"import {module}" for module in sorted(imports))))
