"""A Python environment per set of program requirements, so no job installs into the project's venv.

A training program's ``requirements.txt`` (script mode: the one in its ``sourcedir.tar.gz``;
BYOC: what its image installs) is installed into a venv of its own, cached under
``<cache>/<hash>`` where the hash is that of the normalised requirements (plus the project's
interpreter, which the env is layered over). The env is created ``--without-pip`` and layered over
the project's venv by a ``.pth`` file that appends the project's site-packages (processed as a
site dir, so its own ``.pth`` files work too): torch, the training toolkit, pip etc. come from the
project, and the program's own pins win because the env's site-packages comes first on
``sys.path``. The install runs the env's own ``python -m pip`` (pip itself from the project), so
it goes into the env's prefix, and a requirement the project already satisfies at the pinned
version installs nothing.

A BYOC program on Docker's official ``python`` image layers over :func:`bare_environment`
instead (a venv with no package), since that image holds nothing the project could stand in for.

The cache is ``$SMTRAIN_ENV_CACHE``, else ``$XDG_CACHE_HOME/smtrain/envs``, else
``~/.cache/smtrain/envs``. A lock file per env makes concurrent jobs safe: the first builds it,
the others wait and reuse it; a ``.complete`` marker says the env is whole (a half-built one,
left by a killed build, is rebuilt).
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
import tarfile
from collections.abc import Callable, Sequence
from pathlib import Path

from smtrain.core import contract
from smtrain.core.file_lock import locked
from smtrain.core.user_cache import cache_folder
from smtrain.core.vendored_requirements import ORIGINAL_REQUIREMENTS, WHEELS_DIR

#: Overrides where the program environments are cached (not in :mod:`smtrain.core.contract`).
ENV_CACHE_VARIABLE = contract.ENV_PROGRAM_ENV_CACHE
COMPLETE_MARKER = ".complete"
_PTH_NAME = "_smtrain_project.pth"
#: How many of pip's last output lines an install error carries.
_PIP_TAIL_LINES = 15


class ProgramEnvironmentError(RuntimeError):
    """A program's requirements could not be installed; the message carries pip's last lines."""


def default_cache_dir() -> Path:
    override = os.environ.get(ENV_CACHE_VARIABLE)
    if override:
        return Path(override).expanduser()
    return cache_folder("envs")


def package_lines(text: str) -> list[str]:
    """The requirement lines of a requirements file: comments, blank lines and surrounding
    whitespace dropped, inner whitespace removed, in order."""
    lines = []
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        if line:
            lines.append("".join(line.split()))
    return lines


def environment_key(requirements_text: str, *, interpreter: str = sys.executable,
                    python_version: str = sys.version) -> str:
    """The cache key of an env: the normalised requirements and the interpreter it is built on
    (by default the project's: a program environment layers over the project's packages), and
    that interpreter's version (by default this one's)."""
    normalised = "\n".join(sorted(package_lines(requirements_text)))
    identity = f"{interpreter}\n{python_version}\n{normalised}\n"
    return hashlib.sha256(identity.encode()).hexdigest()[:16]


def _project_site_packages() -> Path:
    return Path(sysconfig.get_paths()["purelib"])


def satisfied_in(lines: list[str], path: list[str], *, python: str | None = None) -> bool:
    """Whether the first distribution of each requirement's name on ``path`` (as the import
    system finds it there) satisfies that requirement line (plain ``name[ specifier]`` lines
    only: options, URLs and extras say no). Markers are evaluated for this interpreter or, with
    ``python``, for that CPython's version (``3.9.2``)."""
    from importlib.metadata import Distribution

    from packaging.requirements import InvalidRequirement, Requirement

    for line in lines:
        if line.startswith("-"):
            return False
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            return False
        versions = ({"python_version": ".".join(python.split(".")[:2]), "python_full_version": python}
                    if python else None)
        if requirement.marker is not None and not requirement.marker.evaluate(versions):
            continue
        if requirement.url or requirement.extras:
            return False
        found = next(iter(Distribution.discover(name=requirement.name, path=path)), None)
        if found is None or not requirement.specifier.contains(found.version, prereleases=True):
            return False
    return True


def _env_python(env_dir: Path) -> Path:
    return env_dir / "bin" / "python"


def env_site_packages(env_dir: Path) -> Path:
    """The env's site-packages: of its own Python's version (an image's environment may be of
    another Python than this one), else of this one's."""
    made = sorted((env_dir / "lib").glob("python3.*/site-packages"))
    if len(made) == 1:
        return made[0]
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    return env_dir / "lib" / version / "site-packages"


def tail(output: str, lines: int = _PIP_TAIL_LINES) -> str:
    kept = [line for line in output.splitlines() if line.strip()]
    return "\n".join(kept[-lines:])


def bundle_requirements(bundle: Path, destination: Path) -> Path | None:
    """A script program's ``requirements.txt`` from its ``sourcedir.tar.gz``, written to
    ``destination`` (which is returned), or None when the tarball has none. A bundle with
    vendored requirements (:mod:`smtrain.core.vendored_requirements`) has its ``wheels/`` folder
    written beside it too, where the file's ``--find-links`` and ``-r`` lines look."""
    with tarfile.open(bundle, "r:gz") as archive:
        members = {m.name.removeprefix("./"): m for m in archive.getmembers() if m.isfile()}
        member = members.get("requirements.txt")
        extracted = archive.extractfile(member) if member is not None else None
        if extracted is None:
            return None
        destination.write_bytes(extracted.read())
        wheels = destination.parent / WHEELS_DIR
        shutil.rmtree(wheels, ignore_errors=True)
        for name, wheel in sorted(members.items()):
            if name.startswith(f"{WHEELS_DIR}/") and "/" not in name[len(WHEELS_DIR) + 1:]:
                data = archive.extractfile(wheel)
                if data is not None:
                    wheels.mkdir(exist_ok=True)
                    (wheels / name[len(WHEELS_DIR) + 1:]).write_bytes(data.read())
    return destination


def _venv_config(env_dir: Path) -> dict[str, str]:
    config = env_dir / "pyvenv.cfg"
    lines = config.read_text().splitlines() if config.is_file() else []
    return {key.strip(): value.strip() for key, _, value in (line.partition("=") for line in lines)}


def venv_full_version(env_dir: Path) -> str:
    """The version of the Python a venv runs (its ``pyvenv.cfg``: ``3.9.2``), this one's where
    it does not say."""
    config = _venv_config(env_dir)
    return config.get("version") or config.get("version_info") or platform.python_version()


def venv_python_version(env_dir: Path) -> tuple[int, int]:
    """The (major, minor) of the Python a venv runs (:func:`venv_full_version`)."""
    major, minor = venv_full_version(env_dir).split(".")[:2]
    return int(major), int(minor)


def compile_environment(interpreter_bin: Path) -> dict[str, str]:
    """What a package compiled from source against the Debian CPython in ``interpreter_bin``
    (``<root>/usr/bin``, its headers in ``<root>/usr/include``) needs: the flag that finds
    Debian's multiarch ``pyconfig.h`` (``Python.h`` includes it as
    ``<x86_64-linux-gnu/python3.9/pyconfig.h>``) and, where Debian's compiler name (its
    sysconfig's ``CC``, ``x86_64-linux-gnu-gcc``) is not on this machine, plain ``gcc``."""
    flags = {"CFLAGS": f"{os.environ.get('CFLAGS', '')} -I{interpreter_bin.parent / 'include'}".strip()}
    if shutil.which("x86_64-linux-gnu-gcc") is None:
        flags.update({"CC": "gcc -pthread", "LDSHARED": "gcc -pthread -shared"})
    return flags


def wheels_install_here(wheels: Path, python: tuple[int, int] | None = None) -> bool:
    """Whether ``python`` (a CPython's major and minor; this interpreter's by default) can
    install the compiled wheels among ``wheels`` (their ABI tag names that CPython, and this is
    Linux on x86_64); pure-Python wheels install anywhere."""
    major, minor = python or (sys.version_info.major, sys.version_info.minor)
    here = f"cp{major}{minor}"
    for wheel in wheels.glob("*.whl"):
        abi = wheel.name.removesuffix(".whl").split("-")[-2]
        if abi == "none":
            continue
        if not (sys.platform == "linux" and platform.machine() == "x86_64"):
            return False
        if abi.startswith("cp") and here not in abi.split("."):
            return False
    return True


def vendored_original(requirements: Path) -> Path | None:
    """The program's own requirements file where ``requirements`` is a vendored bundle's
    rewritten one (``--no-index`` with ``wheels/`` beside it), else None."""
    original = requirements.parent / ORIGINAL_REQUIREMENTS
    if original.is_file() and "--no-index" in package_lines(requirements.read_text()):
        return original
    return None


def environment_for(requirements: Path | None, cache_dir: Path, *, base: Path | None = None) -> Path:
    """The Python executable to run a program with ``requirements`` (a ``requirements.txt``).

    No requirements (or none but comments): the project's own interpreter (``base``'s, where
    given), nothing created. Otherwise the cached env's ``bin/python``, built on first use (see
    the module docstring), layered over the project's environment or, with ``base``, over that
    environment instead (a framework image's: :mod:`smtrain.local.framework_envs`).
    Raises :class:`ProgramEnvironmentError` when pip fails.
    """
    base_python = _env_python(base) if base is not None else Path(sys.executable)
    if requirements is None or not requirements.is_file():
        return base_python
    text = requirements.read_text()
    if not package_lines(text):
        return base_python
    cache_dir = cache_dir.expanduser().resolve()
    original = vendored_original(requirements)
    target = venv_python_version(base) if base is not None else None
    if original is not None and not wheels_install_here(requirements.parent / WHEELS_DIR, target):
        # Wheels built for the image's CPython and Linux, not this interpreter: the program's
        # own file is installed from the index, as without vendoring (the toolkit's install in
        # the job then finds it all there).
        requirements, text, original = original, original.read_text(), None
    # A vendored file names the program's own by path: the key holds that file's text too (and
    # says the env is installed from the wheels alone).
    vendored_key = f"\n--vendored-wheels\n{original.read_text()}" if original else ""
    base_key = f"\n--over\n{base}" if base is not None else ""
    # Over another environment nothing of the project's is used, so another clone of the
    # project (a CI run) shares it: keyed by the base interpreter, as that environment is.
    env_dir = cache_dir / environment_key(text + vendored_key + base_key,
                                          interpreter=sys.base_prefix if base is not None else sys.executable)
    build_once(env_dir, lambda path: _build(
        path, text, requirements if original is not None else None,
        base_site=env_site_packages(base) if base is not None else None,
        base_python=_env_python(base) if base is not None else None), marker=text)
    return _env_python(env_dir)


def job_environment(python: Path, env_dir: Path) -> Path:
    """A venv of ``python``'s interpreter at ``env_dir`` (a job's own folder) that sees all of
    ``python``'s environment and installs into itself: for a toolkit that pip-installs the
    job's code as a module at start (sagemaker-containers' ``run_module``), so concurrent jobs
    never install into, or read each other's module from, the shared cached environment. Its
    ``bin/python``."""
    create_venv(env_dir, python=python)
    try:
        _layer_over(env_dir, env_site_packages(python.parent.parent))
    except OSError as error:
        raise ProgramEnvironmentError(f"could not write into {env_dir}: {error}") from None
    return _env_python(env_dir)


def bare_environment(cache_dir: Path) -> Path:
    """A venv of this interpreter with no package at all (not even pip), built once under
    ``cache_dir``: what a program on Docker's official ``python`` image runs over (that image
    holds Python and pip only, and pip is not the program's). Its directory, for
    :func:`environment_for`'s ``base``."""
    env_dir = (cache_dir.expanduser().resolve()
               / f"python-bare-{environment_key('', interpreter=sys.base_prefix)}")
    build_once(env_dir, create_venv, marker="")
    return env_dir


def byoc_environment(requirements: Sequence[str], cache_dir: Path, scratch: Path, *,
                     python_only: bool) -> tuple[Path, Path | None]:
    """The Python a BYOC image's program runs on offline, and the package-less Python it is
    layered over (None: over the project's packages, which stand in for a base image's unknown
    ones): what its Dockerfile pip-installs (``requirements``, pins as written, kept in
    ``scratch/image-requirements.txt``), over :func:`bare_environment` where the image is built
    on Docker's official python image (``python_only``). Raises
    :class:`ProgramEnvironmentError` when pip fails."""
    base = bare_environment(cache_dir) if python_only else None
    written = None
    if requirements:
        written = scratch / "image-requirements.txt"
        written.write_text("".join(f"{line}\n" for line in requirements))
    return environment_for(written, cache_dir, base=base), base


def build_once(env_dir: Path, build: Callable[[Path], None], *, marker: str) -> bool:
    """``build(env_dir)`` unless a finished environment is there (its :data:`COMPLETE_MARKER`,
    which holds ``marker``), under a lock beside it, so concurrent jobs build it once: the others
    wait and reuse it. A half-built one (a killed build) is removed first; a failed build leaves
    nothing. True where this call built it."""
    if (env_dir / COMPLETE_MARKER).is_file():
        return False
    with locked(env_dir.parent / f"{env_dir.name}.lock"):
        if (env_dir / COMPLETE_MARKER).is_file():  # built by another job meanwhile
            return False
        if env_dir.exists():  # a build that was killed half-way
            shutil.rmtree(env_dir)
        try:
            build(env_dir)
        except BaseException:
            shutil.rmtree(env_dir, ignore_errors=True)
            raise
        (env_dir / COMPLETE_MARKER).write_text(marker)
    return True


def _layer_over(env_dir: Path, under: Path) -> None:
    """Make the venv at ``env_dir`` see the site-packages ``under`` after its own: ``import``
    lines of a .pth run at startup, and addsitedir appends ``under`` and processes its .pth files
    (editable installs)."""
    (env_site_packages(env_dir) / _PTH_NAME).write_text(f"import site; site.addsitedir({str(under)!r})\n")


def create_venv(env_dir: Path, *, python: Path | None = None) -> None:
    """An empty venv at ``env_dir`` (no pip: the project's installs into it) made by ``python``
    (by default this interpreter): of its interpreter, reached through ``python``'s folder
    where that is a venv's (its ``pyvenv.cfg`` says so: another venv's ``bin``, which runs the
    same interpreter)."""
    created = subprocess.run([str(python or sys.executable), "-m", "venv", "--without-pip", str(env_dir)],
                             capture_output=True, text=True, env=pip_environment())
    if created.returncode != 0:
        raise ProgramEnvironmentError(f"could not create the environment {env_dir}:\n"
                                      f"{tail(created.stdout + created.stderr)}")
    if not env_site_packages(env_dir).is_dir():
        raise ProgramEnvironmentError(f"the new environment has no {env_site_packages(env_dir)}")


def pip_environment() -> dict[str, str]:
    """This process's environment for a pip that installs into another environment: none of the
    variables that would send it elsewhere (a target, prefix, user site, another venv or path)."""
    return {key: value for key, value in os.environ.items()
            if not key.startswith(("PIP_TARGET", "PIP_PREFIX", "PIP_USER", "PYTHONPATH",
                                   "VIRTUAL_ENV", "PYTHONHOME"))}


def _build(env_dir: Path, requirements_text: str, vendored: Path | None = None, *,
           base_site: Path | None = None, base_python: Path | None = None) -> None:
    """Create the env and install ``requirements_text`` into it, over the project's
    site-packages or ``base_site``.

    ``vendored``: the bundle's rewritten requirements file, installed where it lies (its wheels
    beside it) with no index, none of this machine's pip configuration (its extra indexes and
    wheel folders) and ``--ignore-installed``: every package the requirements need, dependencies
    included, comes from the bundle's wheels into the env (the project's own versions of them
    are not used), as in an image that has none of them. A wheel missing from the bundle, or one
    that does not install here, fails the job as it would on SageMaker.

    ``base_python``: the python of the environment ``base_site`` belongs to; the env is a venv of
    its interpreter (an image's environment may run another Python than the project's)."""
    # Over another environment, a venv of its interpreter (an image's may be another Python).
    create_venv(env_dir, python=base_python)
    under = base_site or _project_site_packages()
    _layer_over(env_dir, under)
    # Kept beside the env: the exact text the env was built from, and pip's output.
    requirements_copy = env_dir / "requirements.txt"
    requirements_copy.write_text(requirements_text)
    # An image's environment may run another Python (Debian's 3.9) than this one.
    other_python = venv_python_version(env_dir) != sys.version_info[:2]
    if satisfied_in(package_lines(requirements_text), [str(under)],
                    python=venv_full_version(env_dir) if other_python else None):
        # pip would find every pin satisfied through the .pth and install nothing (in ~10 s).
        below = "the project's environment" if base_site is None else str(base_site)
        (env_dir / "pip.log").write_text(f"smtrain: every requirement is satisfied by {below}; "
                                         "pip not run\n")
        return
    env = pip_environment()
    if vendored is not None:
        env = {key: value for key, value in env.items() if not key.startswith("PIP_")}
        env["PIP_CONFIG_FILE"] = os.devnull  # pip: "will not load any configuration files"
    # The env's own ``python -m pip`` (pip from the project, through the .pth); over another
    # environment, which may have no pip, the project's pip installing into the env (--python);
    # over one of another Python (Debian's 3.9, which today's pip no longer runs on), that
    # environment's own pip, through the .pth.
    pip = ([str(_env_python(env_dir)), "-m", "pip"] if base_site is None or other_python
           else [sys.executable, "-m", "pip", "--python", str(_env_python(env_dir))])
    # The base environment's interpreter (its pyvenv.cfg's home: a venv made from a venv on 3.9
    # names that venv's bin instead), whose headers a requirement built from source needs.
    home = _venv_config(base_python.parent.parent).get("home") if base_python is not None else None
    if other_python and home:
        env.update(compile_environment(Path(home)))
    installed = subprocess.run(
        [*pip, "install", "--disable-pip-version-check",
         "--no-input", "--no-warn-script-location",
         # Over the project, every package from the bundle's wheels; over an image's
         # environment, pip keeps what the image has where it satisfies them, as on SageMaker.
         *(["--ignore-installed"] if vendored is not None and base_site is None else []),
         "-r", str(vendored or requirements_copy)],
        capture_output=True, text=True, env=env, cwd=vendored.parent if vendored else env_dir)
    (env_dir / "pip.log").write_text(installed.stdout + installed.stderr)
    if installed.returncode != 0:
        raise ProgramEnvironmentError(
            f"pip could not install the program's requirements (exit code {installed.returncode}):"
            f"\n{tail(installed.stdout + installed.stderr)}")
