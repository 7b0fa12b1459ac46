"""A script program's ``requirements.txt`` as wheels inside its ``sourcedir.tar.gz``.

A job in a VPC with no route to a package index, or under ``EnableNetworkIsolation``, cannot run
what the framework image runs at start: the SageMaker training toolkit's
``modules.install_requirements`` is ``python -m pip install -r requirements.txt`` in the unpacked
code directory (sagemaker-training 5.1.4, ``sagemaker_training/modules.py``; called by
``entry_point.install`` for a Python program whose directory has a ``requirements.txt``). So the
packages travel with the code: at synth, ``pip download --only-binary=:all:`` fetches every
requirement and its dependencies as wheels for the framework image (CPython of the image's
``py_version``, glibc Linux on x86_64), and the bundle holds

- ``wheels/*.whl``: those wheels;
- ``wheels/requirements.txt``: the program's own file, byte for byte;
- ``requirements.txt``: what the toolkit installs, rewritten to ``--no-index``,
  ``--find-links wheels`` and ``-r wheels/requirements.txt``. pip reads option lines in a
  requirements file and resolves a relative ``--find-links`` directory and a nested ``-r`` against
  the file's own folder (pip's ``req_file.py``; the toolkit also runs pip with that folder as its
  working directory), so the toolkit's unchanged command installs from the bundle with no index.

Packages the image already holds at a version the requirements accept are kept, as before; what
it lacks comes from ``wheels/``. Downloads are cached by the requirements' text, the target Python
and the platform tags (``~/.cache/smtrain/wheels/<key>``), so a repeated synth runs no pip.

Standard library only (pip runs as a subprocess of this interpreter).
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from smtrain.core.file_lock import locked

#: The folder of the bundle that holds the wheels, and the program's own requirements in it.
WHEELS_DIR = "wheels"
ORIGINAL_REQUIREMENTS = f"{WHEELS_DIR}/requirements.txt"
REQUIREMENTS = "requirements.txt"

#: glibc of the framework images: AWS's PyTorch 2.5 training images are built on Ubuntu 22.04
#: with CPython 3.11 and pip >= 25.1.1 (aws/deep-learning-containers,
#: ``pytorch/training/docker/2.5/py3/Dockerfile.cpu``: ``FROM ubuntu:22.04``, Python 3.11.9;
#: ``cu124/Dockerfile.gpu``: ``FROM nvidia/cuda:12.4.1-base-ubuntu22.04``, Python 3.11.10), and
#: Ubuntu 22.04's glibc is 2.35; the instance types are x86_64 (ml.m5/c5/g5). A wheel for an
#: older glibc runs there; one for a newer does not.
IMAGE_GLIBC_MINOR = 35


def platforms(glibc_minor: int) -> tuple[str, ...]:
    """pip's ``--platform`` tags for an x86_64 image whose glibc is 2.<glibc_minor>: every
    manylinux tag it runs, newest first."""
    return (*(f"manylinux_2_{minor}_x86_64" for minor in range(glibc_minor, 16, -1)),
            "manylinux2014_x86_64", "manylinux_2_12_x86_64", "manylinux2010_x86_64",
            "manylinux_2_5_x86_64", "manylinux1_x86_64")


PLATFORMS: tuple[str, ...] = platforms(IMAGE_GLIBC_MINOR)

#: The CPython (major.minor) and glibc minor of each framework's training image, per
#: (framework, version) as the settings name it; the Python of pytorch, tensorflow and
#: huggingface is their ``py_version`` setting. Sources (each image's Dockerfile):
#: - pytorch 2.5: aws/deep-learning-containers 50236abf, pytorch/training/docker/2.5/py3/
#:   Dockerfile.cpu, ``FROM ubuntu:22.04``, Python 3.11.9 (glibc 2.35);
#: - tensorflow 2.19: aws/deep-learning-containers 9ce8911c, tensorflow/training/docker/2.19/py3/
#:   Dockerfile.cpu, ``FROM ubuntu:22.04``, Python 3.12.11;
#: - huggingface 4.48.0 on pytorch2.3.0: aws/deep-learning-containers 93ae58bb,
#:   huggingface/pytorch/training/buildspec-2-3-0.yml ``os_version: ubuntu20.04`` (glibc 2.31),
#:   its base pytorch-training:2.3.0-gpu-py311-cu121-ubuntu20.04, Python 3.11.9;
#: - sklearn 1.2-1: aws/sagemaker-scikit-learn-container branch 1.2-1 b440c40d,
#:   docker/1.2-1/base/Dockerfile.cpu ``UBUNTU_VERSION=20.04``, ``PYTHON_VERSION=3.9`` (the tag was
#:   rebuilt: Ubuntu 18.04 and Python 3.8 until 2024);
#: - xgboost 1.7-1: aws/sagemaker-xgboost-container branch 1.7-1 f7a93a21,
#:   docker/1.7-1/base/Dockerfile.cpu ``UBUNTU_VERSION=20.04``, ``PYTHON_VERSION=3.9`` (rebuilt
#:   likewise).
#: A version not listed gets the oldest base these images have used, Ubuntu 18.04 (glibc 2.27),
#: so its wheels run on any of them; sklearn and xgboost then have no known Python.
IMAGE_RUNTIMES: dict[tuple[str, str], tuple[str | None, int]] = {
    ("pytorch", "2.5"): (None, 35),
    ("tensorflow", "2.19"): (None, 35),
    ("huggingface", "4.48.0:pytorch2.3.0"): (None, 31),  # transformers version : base
    ("sklearn", "1.2-1"): ("3.9", 31),
    ("xgboost", "1.7-1"): ("3.9", 31),
}
OLDEST_IMAGE_GLIBC_MINOR = 27
#: The file a finished cache entry holds (the wheels' names, one a line).
_COMPLETE = ".complete"
_PIP_NOT_FOUND = re.compile(r"(?:Could not find a version that satisfies the requirement|"
                            r"No matching distribution found for) (\S+)")


class VendoringError(ValueError):
    """A requirement could not be vendored; the message is one line naming program, file and
    package."""


def default_wheel_cache() -> Path:
    """Where downloads are cached unless a :class:`WheelTarget` says otherwise:
    ``~/.cache/smtrain/wheels``."""
    return Path.home() / ".cache" / "smtrain" / "wheels"


@dataclass(frozen=True)
class WheelTarget:
    """The image the wheels are for, and where downloads are cached.

    ``python_version``: ``major.minor`` of the framework image's CPython (``3.11`` for the
    ``py311`` images: :func:`python_version_of`). ``cache_dir``: default
    :func:`default_wheel_cache`.
    """

    python_version: str
    cache_dir: Path = field(default_factory=default_wheel_cache)
    #: The image's glibc is 2.<glibc_minor> (default: the PyTorch 2.5 images', 2.35).
    glibc_minor: int = IMAGE_GLIBC_MINOR

    def __post_init__(self) -> None:
        if re.fullmatch(r"3\.\d{1,2}", self.python_version) is None:
            raise ValueError(f"python_version must be like 3.11, got {self.python_version!r}")

    @property
    def platforms(self) -> tuple[str, ...]:
        return platforms(self.glibc_minor)

    @property
    def abi(self) -> str:
        return "cp" + self.python_version.replace(".", "")


def python_version_of(py_version: str) -> str:
    """``3.11`` for a SageMaker ``py_version`` such as ``py311`` (the SDK's image table,
    ``sagemaker/core/image_uri_config/pytorch.json``, lists ``py311`` for PyTorch 2.5)."""
    match = re.fullmatch(r"py3(\d{1,2})", py_version)
    if match is None:
        raise ValueError(f"expected a py_version such as py311, got {py_version!r}")
    return f"3.{match.group(1)}"


def _key(requirements_text: str, target: WheelTarget) -> str:
    identity = "\n".join([requirements_text, target.python_version, "cp", *target.platforms, "v1"])
    return hashlib.sha256(identity.encode()).hexdigest()[:20]


def download_wheels(requirements: Path, *, program: str, target: WheelTarget) -> list[Path]:
    """The wheels of ``requirements`` and their dependencies for ``target``, sorted by name:
    from the cache, else downloaded by pip into it. Raises :class:`VendoringError` naming the
    program, the file and the package when one has no binary wheel for the image."""
    text = requirements.read_text()
    cache_dir = target.cache_dir.expanduser().resolve()
    entry = cache_dir / _key(text, target)
    complete = entry / _COMPLETE
    if not complete.is_file():
        with locked(cache_dir / f"{entry.name}.lock"):
            if not complete.is_file():
                _download(requirements, entry, program=program, target=target)
    return [entry / name for name in complete.read_text().split()]


def _download(requirements: Path, entry: Path, *, program: str, target: WheelTarget) -> None:
    partial = entry.with_name(entry.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    command = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check",
               "--no-input", "--only-binary=:all:", "--implementation", "cp",
               "--python-version", target.python_version, "--abi", target.abi,
               *(arg for platform in target.platforms for arg in ("--platform", platform)),
               "--dest", str(partial), "-r", str(requirements.resolve())]
    done = subprocess.run(command, capture_output=True, text=True, cwd=requirements.parent)
    if done.returncode != 0:
        shutil.rmtree(partial, ignore_errors=True)
        output = done.stdout + done.stderr
        missing = _PIP_NOT_FOUND.search(output)
        where = f"script program {program}: {requirements}"
        if missing is not None:
            raise VendoringError(
                f"{where}: {missing.group(1)} has no binary wheel for the framework image "
                f"(CPython {target.python_version}, manylinux x86_64, glibc <= 2."
                f"{target.glibc_minor}); requirements are vendored into the source bundle as wheels "
                f"when 'network' is sealed, vpc or isolated: pin a version that has one, or build a BYOC "
                f"image")
        last = next((line for line in reversed(output.splitlines()) if line.strip()), "")
        raise VendoringError(f"{where}: pip download failed (exit code {done.returncode}): "
                             f"{last.strip()}")
    names = sorted(path.name for path in partial.iterdir() if path.name.endswith(".whl"))
    (partial / _COMPLETE).write_text("".join(f"{name}\n" for name in names))
    if entry.exists():  # a half-written entry of a killed synth
        shutil.rmtree(entry)
    partial.replace(entry)


#: requirements.txt options that name another file or a local place (pip's "Requirements File
#: Format"), refused in a file that is vendored (an index is fine: it is used at synth only).
NESTED_OPTIONS: Final = ("-r", "--requirement", "-c", "--constraint", "-e", "--editable", "-f",
                         "--find-links")


def rewritten_requirements(wheels: list[Path], target: WheelTarget) -> bytes:
    """The ``requirements.txt`` the toolkit sees: install the program's own file from ``wheels/``
    with no index."""
    return (
        "# Written by smtrain at synth. The program's requirements.txt is wheels/requirements.txt;\n"
        f"# its {len(wheels)} wheel(s), dependencies included, for CPython "
        f"{target.python_version} on manylinux x86_64, are in\n"
        "# wheels/, so the training toolkit's `pip install -r requirements.txt` needs no "
        "package index.\n"
        "--no-index\n"
        f"--find-links {WHEELS_DIR}\n"
        f"-r {ORIGINAL_REQUIREMENTS}\n"
    ).encode()


def vendored_files(requirements: Path, *, program: str,
                   target: WheelTarget) -> dict[str, Path | bytes]:
    """The bundle entries that vendor ``requirements``: the rewritten ``requirements.txt``, the
    original under ``wheels/`` and every wheel (archive name -> file or content). None for a
    file of comments and blank lines only (there is nothing to install)."""
    if not has_packages(requirements.read_text()):
        return {}
    for number, line in enumerate(requirements.read_text().splitlines(), start=1):
        # The original is installed from wheels/: pip would resolve a nested file or a local path
        # against that folder, not the program's (pip's requirements-file format), so the job
        # would fail on SageMaker after a synth that passed.
        stripped = line.split(" #", 1)[0].strip()
        if stripped.startswith(NESTED_OPTIONS) or stripped.startswith((".", "/")):
            raise VendoringError(
                f"script program {program}: {requirements} line {number}: {stripped!r} names "
                "another file or a local place, which a vendored bundle cannot carry: list the "
                "packages themselves in requirements.txt")
    wheels = download_wheels(requirements, program=program, target=target)
    files: dict[str, Path | bytes] = {f"{WHEELS_DIR}/{wheel.name}": wheel for wheel in wheels}
    files[ORIGINAL_REQUIREMENTS] = requirements.read_bytes()
    files[REQUIREMENTS] = rewritten_requirements(wheels, target)
    return files


def has_packages(requirements_text: str) -> bool:
    """Whether a requirements file names anything (comments and blank lines are nothing)."""
    return any(line.strip() and not line.lstrip().startswith("#")
               for line in requirements_text.splitlines())


def is_vendored(files: Mapping[str, object]) -> bool:
    """Whether a bundle's files (archive name -> anything) are a vendored bundle."""
    return ORIGINAL_REQUIREMENTS in files


def source_view(files: Mapping[str, bytes]) -> dict[str, bytes]:
    """A vendored bundle's files as the program's folder has them: ``wheels/`` dropped and the
    original ``requirements.txt`` back in place (a bundle that is not vendored, unchanged)."""
    if not is_vendored(files):
        return dict(files)
    view = {name: data for name, data in files.items() if not name.startswith(f"{WHEELS_DIR}/")}
    view[REQUIREMENTS] = files[ORIGINAL_REQUIREMENTS]
    return view
