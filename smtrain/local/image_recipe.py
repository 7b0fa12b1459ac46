"""What a BYOC image's Dockerfile puts in the image, read so that an offline job runs on the same
Python packages and says plainly what it could not reproduce.

There is no Docker engine offline, so a BYOC job runs its entry point on this machine
(:mod:`smtrain.local.entry_point`). What the image would hold is read from its Dockerfile, parsed
by ``dockerfile-parse`` (line continuations, comments, ``ARG``/``ENV`` substitution):

- every ``pip install`` in a ``RUN`` (``pip``, ``pip3``, ``pip3.12``, ``python -m pip``; shell or
  exec form; any stage): its requirement specifiers, and the lines of each ``-r`` file, found in
  the build context through the ``COPY``/``ADD`` instructions before it (relative paths against
  ``WORKDIR``), in order. :attr:`ImageRecipe.requirements` is what the job's environment is built
  from (:mod:`smtrain.local.program_envs`), so the Dockerfile's pins are the ones that run;
- the final stage's ``ENV`` (the container's environment), less the variables that name paths
  inside the image (``PATH``, ``PYTHONPATH``, ``PYTHONHOME``, ``LD_LIBRARY_PATH``, ``HOME``);
- what is **not** reproduced, one entry each in :attr:`ImageRecipe.not_run`: system packages
  (``apt-get``/``apt``/``apk``/``yum``/``dnf``/``microdnf``/``conda``/``mamba`` installs: this
  machine's libraries are used), a ``-r`` file or local path the context does not provide,
  ``COPY --from`` of another stage or image, and the base image's Python where it is a
  ``python:X.Y`` image of another version than this machine's.

Nothing here runs a command or reads outside the build context.
"""

from __future__ import annotations

import json
import posixpath
import re
import shlex
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["ImageRecipe", "ImageRecipeError", "read_recipe"]

#: ENV variables that name places inside the image: applying them here would point the job at
#: paths this machine does not have.
IMAGE_PATH_VARIABLES = frozenset({"PATH", "PYTHONPATH", "PYTHONHOME", "LD_LIBRARY_PATH", "HOME"})
SYSTEM_INSTALLERS = {"apt-get": "install", "apt": "install", "apk": "add", "yum": "install",
                     "dnf": "install", "microdnf": "install", "conda": "install", "mamba": "install",
                     "micromamba": "install"}
_SHELL_SEPARATORS = frozenset({"&&", "||", ";", "|", "&", "(", ")", ";;"})
#: pip install options that take a value (pip 24's ``pip install --help``).
_PIP_OPTIONS_WITH_VALUE = frozenset({
    "-r", "--requirement", "-c", "--constraint", "-e", "--editable", "-t", "--target",
    "--platform", "--python-version", "--implementation", "--abi", "--root", "--prefix", "--src",
    "--upgrade-strategy", "-C", "--config-settings", "--global-option", "--no-binary",
    "--only-binary", "--progress-bar", "--root-user-action", "--report", "-i", "--index-url",
    "--extra-index-url", "-f", "--find-links", "--log", "--proxy", "--retries", "--timeout",
    "--exists-action", "--trusted-host", "--cert", "--client-cert", "--cache-dir", "--python",
    "--keyring-provider", "--use-feature", "--use-deprecated", "--resume-retries",
    "--group",
})
#: pip install options that say where packages come from: another index, links or none.
_INDEX_OPTIONS = frozenset({"-i", "--index-url", "--extra-index-url", "-f", "--find-links", "--no-index"})
_PIP = re.compile(r"^pip(\d+(\.\d+)?)?$")
_PYTHON = re.compile(r"^python(\d+(\.\d+)?)?$")
_PYTHON_IMAGE = re.compile(r"^(?:[\w.-]+(?::\d+)?/)?(?:library/)?python:(\d+)\.(\d+)")


class ImageRecipeError(Exception):
    """The Dockerfile cannot be read; the message names it."""


@dataclass(frozen=True)
class ImageRecipe:
    """What the image holds, as far as this machine can reproduce it."""

    dockerfile: Path
    #: The final stage's ``FROM`` image, ARGs substituted.
    base_image: str
    #: Requirement lines for the job's environment, in the order the Dockerfile installs them.
    requirements: tuple[str, ...] = ()
    #: The final stage's ENV, less :data:`IMAGE_PATH_VARIABLES`.
    environment: dict[str, str] = field(default_factory=dict)
    #: What the image has that this machine's run does not, one line each (Dockerfile line first).
    not_run: tuple[str, ...] = ()

    @property
    def python_only(self) -> bool:
        """Whether the final stage is built on Docker's official ``python`` image (directly, or
        through an earlier stage), which holds Python and its installers (pip; before Python 3.12
        also setuptools and wheel) and no other Python package: the job's environment then holds
        only what the Dockerfile installs, never the project's packages."""
        return official_python_image(self.base_image)

    def summary(self) -> str:
        """One line for the job's log: what is installed from the Dockerfile."""
        installed = (f"{len(self.requirements)} requirement(s) from its pip install lines go into the "
                     "job's environment" if self.requirements else "it pip-installs nothing")
        over = ("; on a Python with no other package (the base is the official python image)"
                if self.python_only else "; over the project's packages (the base image's own are unknown here)")
        return f"the image's Dockerfile ({self.dockerfile.name}, FROM {self.base_image}): {installed}{over}"

    def warning(self) -> str | None:
        """One line naming what the image has and this run does not, or None."""
        if not self.not_run:
            return None
        return "not reproduced here (no Docker): " + "; ".join(self.not_run)


#: Registries that serve Docker Hub's official images under ``library/`` (Docker Hub itself,
#: and AWS's public mirror of it: gallery.ecr.aws/docker/library/python).
_DOCKER_HUB_HOSTS = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
_OFFICIAL_PYTHON_PATHS = frozenset({"python", "library/python"})


def official_python_image(reference: str) -> bool:
    """Whether an image reference names Docker's official ``python`` image: ``python`` or
    ``library/python`` on Docker Hub (no registry, or one of its hosts), or any registry's
    mirror of it under ``.../library/python`` (``public.ecr.aws/docker/library/python``, an ECR
    pull-through cache's ``docker-hub/library/python``), with any tag or digest. Another
    account's ``python`` repository (``myorg/python``, ``registry.example.com/python``) is not.
    A registry is the first part where it has a ``.`` or ``:`` or is ``localhost``, as Docker
    reads a reference."""
    name = reference.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    if ":" in last:  # a tag (a port would be before a slash)
        name = name[: len(name) - len(last)] + last.split(":", 1)[0]
    parts = name.split("/")
    registry = None
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        registry, parts = parts[0], parts[1:]
    path = "/".join(parts)
    if registry is None or registry in _DOCKER_HUB_HOSTS:
        return path in _OFFICIAL_PYTHON_PATHS
    return path.endswith("library/python") and len(parts) >= 2


def read_recipe(dockerfile: Path, context: Path, *, python_version: Sequence[int] | None = None
                ) -> ImageRecipe:
    """The recipe of the image built from ``dockerfile`` with build context ``context``.
    ``python_version`` is this machine's (default: the running interpreter's)."""
    from dockerfile_parse import DockerfileParser

    try:
        parser = DockerfileParser(path=str(dockerfile), env_replace=True)
        structure = parser.structure
        contexts = parser.context_structure
    except OSError as error:
        raise ImageRecipeError(f"cannot read {dockerfile}: {error.strerror or error}") from None
    if not any(item["instruction"] == "FROM" for item in structure):
        raise ImageRecipeError(f"{dockerfile} has no FROM instruction")
    here = tuple(python_version or sys.version_info[:2])
    requirements: list[str] = []
    not_run: list[str] = []
    copies: list[_Copy] = []
    workdir = "/"
    base_image = ""
    stages: dict[str, str] = {}
    top_args: dict[str, str] = {}
    in_stage = False
    environment: dict[str, str] = {}
    for item, context_here in zip(structure, contexts, strict=True):
        instruction = item["instruction"]
        line = f"line {item['startline'] + 1}"
        variables = {**context_here.get_values("ARG"), **context_here.get_values("ENV")}
        value = _substitute(item["value"], variables)
        if instruction == "FROM":
            in_stage = True
            value = _substitute(item["value"], top_args)
            # FROM [--platform=<platform>] <image> [AS <name>]: flags first, a stage's name last.
            words = [word for word in value.split() if not word.startswith("--")]
            image = words[0] if words else value
            # A stage named by a later FROM stands for the image it was built from.
            base_image = stages.get(image.lower(), image)
            if len(words) >= 3 and words[1].lower() == "as":
                stages[words[2].lower()] = base_image
            workdir, copies = "/", []
            environment = {}
        elif instruction == "ARG" and not in_stage:
            top_args.update(context_here.get_values("ARG"))
        elif instruction == "WORKDIR":
            workdir = posixpath.normpath(posixpath.join(workdir, value.strip()))
        elif instruction == "ENV":
            environment = {key: val for key, val in context_here.get_values("ENV").items()
                           if key not in IMAGE_PATH_VARIABLES}
        elif instruction in {"COPY", "ADD"}:
            copy = _parse_copy(value, workdir)
            if copy is None:
                continue
            if copy.from_stage:
                not_run.append(f"{line}: COPY --from={copy.from_stage} (files of another stage or "
                               "image; what that stage installs with pip is installed here)")
            else:
                copies.append(copy)
        elif instruction == "RUN":
            # BuildKit's RUN flags (--mount=..., --network=..., --security=...) come first.
            value = re.sub(r"^(\s*--(?:mount|network|security)=\S+)+\s*", "", value)
            for command in _commands(value):
                installer = _system_install(command)
                if installer:
                    not_run.append(f"{line}: {installer}")
                    continue
                pip_args = _pip_install_args(command)
                if pip_args is None:
                    continue
                found, missing = _pip_requirements(pip_args, copies=copies, workdir=workdir,
                                                   context=context)
                requirements.extend(found)
                not_run.extend(f"{line}: {entry}" for entry in missing)
    match = _PYTHON_IMAGE.match(base_image)
    if match and (int(match.group(1)), int(match.group(2))) != here:
        not_run.insert(0, f"the base image's Python {match.group(1)}.{match.group(2)} "
                          f"(FROM {base_image}; this machine runs {here[0]}.{here[1]})")
    return ImageRecipe(dockerfile=dockerfile, base_image=base_image, requirements=tuple(requirements),
                       environment=environment, not_run=tuple(not_run))


def _substitute(value: str, variables: dict[str, str]) -> str:
    """``$NAME`` and ``${NAME}`` replaced by the ARG/ENV values in force (unknown ones left)."""
    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return variables.get(name, match.group(0))

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", replace, value)


@dataclass(frozen=True)
class _Copy:
    sources: tuple[str, ...]
    destination: str
    from_stage: str | None = None

    def context_path(self, image_path: str, context: Path) -> Path | None:
        """Where ``image_path`` (absolute, in the image) came from in the context, if this copy
        put it there."""
        directory_destination = self.destination.endswith("/") or len(self.sources) > 1
        destination = posixpath.normpath(self.destination)
        for source in self.sources:
            origin = context / source
            if not origin.resolve().is_relative_to(context.resolve()):
                continue  # outside the build context: docker build refuses it
            if origin.is_dir() or directory_destination:
                if image_path == destination and not origin.is_dir():
                    continue
                prefix = destination.rstrip("/") + "/"
                if not image_path.startswith(prefix):
                    continue
                relative = image_path[len(prefix):]
                candidate = origin / relative if origin.is_dir() else (
                    origin if posixpath.basename(source) == relative else None)
                if candidate is not None and candidate.is_file():
                    return candidate
            elif image_path == destination and origin.is_file():
                return origin
        return None


def _parse_copy(value: str, workdir: str) -> _Copy | None:
    value = value.strip()
    try:
        parts = json.loads(value) if value.startswith("[") else shlex.split(value)
    except (ValueError, json.JSONDecodeError):
        return None
    from_stage = None
    while parts and str(parts[0]).startswith("--"):
        option = str(parts.pop(0))
        if option.startswith("--from="):
            from_stage = option.split("=", 1)[1]
    if len(parts) < 2:
        return None
    *sources, destination = [str(part) for part in parts]
    absolute = posixpath.join(workdir, destination)
    if destination.endswith("/") and not absolute.endswith("/"):
        absolute += "/"
    return _Copy(tuple(source.removeprefix("./") or "." for source in sources),
                 absolute if destination not in {".", "./"} else workdir.rstrip("/") + "/",
                 from_stage)


def _commands(value: str) -> Iterator[list[str]]:
    """The simple commands of a RUN's shell form (split at ``&&``, ``;``, ``|``...), or its exec
    form's one argv."""
    value = value.strip()
    if value.startswith("["):
        try:
            argv = json.loads(value)
        except json.JSONDecodeError:
            argv = None
        if isinstance(argv, list):
            yield [str(part) for part in argv]
            return
    lexer = shlex.shlex(value, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    command: list[str] = []
    try:
        tokens = list(lexer)
    except ValueError:
        return
    for token in tokens:
        if token in _SHELL_SEPARATORS:
            if command:
                yield command
            command = []
        else:
            command.append(token)
    if command:
        yield command


def _program(command: list[str]) -> list[str]:
    """The command without leading ``NAME=value`` assignments and ``sudo``/``env``."""
    index = 0
    while index < len(command) and (re.match(r"^\w+=", command[index])
                                    or command[index] in {"sudo", "env", "exec"}):
        index += 1
    return command[index:]


def _system_install(command: list[str]) -> str | None:
    argv = _program(command)
    if not argv:
        return None
    name = posixpath.basename(argv[0])
    verb = SYSTEM_INSTALLERS.get(name)
    if verb is None or verb not in argv[1:]:
        return None
    packages = [arg for arg in argv[argv.index(verb, 1) + 1:] if not arg.startswith("-")]
    return f"{name} {verb} {' '.join(packages)}".rstrip()


def _pip_install_args(command: list[str]) -> list[str] | None:
    argv = _program(command)
    if not argv:
        return None
    name = posixpath.basename(argv[0])
    if _PYTHON.match(name) and argv[1:3] == ["-m", "pip"]:
        rest = argv[3:]
    elif _PIP.match(name):
        rest = argv[1:]
    else:
        return None
    # Global options may come before the subcommand (``pip --no-cache-dir install ...``).
    while rest and rest[0].startswith("-"):
        option = rest.pop(0)
        if option in _PIP_OPTIONS_WITH_VALUE and "=" not in option and rest:
            rest.pop(0)
    if not rest or rest[0] != "install":
        return None
    return rest[1:]


def _pip_requirements(args: list[str], *, copies: list[_Copy], workdir: str, context: Path
                      ) -> tuple[list[str], list[str]]:
    """The requirement lines a ``pip install`` installs, and what of it cannot be reproduced."""
    found: list[str] = []
    missing: list[str] = []
    other_index = next((arg for arg in args if arg.partition("=")[0] in _INDEX_OPTIONS
                        or (arg[:2] in {"-i", "-f"} and arg[1:2] != "-")), None)
    if other_index is not None:
        # Installing these names from the default index instead could install someone else's
        # package of that name (dependency confusion): left out, and said.
        packages, skip = [], False
        for arg in args:
            if skip:
                skip = False
            elif arg.startswith("-"):
                skip = arg in _PIP_OPTIONS_WITH_VALUE  # its value is the next word
            else:
                packages.append(arg)
        return [], [f"pip install {' '.join(packages) or '...'} from another index or place "
                    f"({other_index.partition('=')[0]}): not installed here"]
    index = 0
    while index < len(args):
        arg = args[index]
        index += 1
        if arg.startswith("-"):
            option, _, inline = arg.partition("=")
            takes_value = option in _PIP_OPTIONS_WITH_VALUE or (
                len(option) > 2 and option[:2] in {"-r", "-c", "-e", "-i", "-f"} and option[1] != "-")
            if not takes_value:
                continue
            if option[:2] in {"-r", "-c", "-e", "-i", "-f"} and len(option) > 2 and option[1] != "-":
                value = option[2:]
            elif inline:
                value = inline
            elif index < len(args):
                value = args[index]
                index += 1
            else:
                continue
            if option.startswith(("-r", "--requirement")):
                lines, problem = _requirements_file(value, copies=copies, workdir=workdir,
                                                    context=context)
                found.extend(lines)
                if problem:
                    missing.append(problem)
            elif option.startswith(("-e", "--editable")):
                missing.append(f"pip install -e {value} (an editable install from the image's files)")
            continue
        if arg.startswith((".", "/")) or (arg.endswith((".whl", ".tar.gz", ".zip")) and "://" not in arg):
            missing.append(f"pip install {arg} (a local path in the image)")
            continue
        found.append(arg)
    return found, missing


def _requirements_file(path: str, *, copies: list[_Copy], workdir: str, context: Path
                       ) -> tuple[list[str], str | None]:
    image_path = posixpath.normpath(posixpath.join(workdir, path))
    for copy in reversed(copies):
        origin = copy.context_path(image_path, context)
        if origin is not None and origin.resolve().is_relative_to(context.resolve()):
            lines, options = _file_requirements(origin.read_text())
            problem = (f"pip install -r {path}: its {', '.join(options)} (another file, index or "
                       "place; not reproduced here)") if options else None
            return lines, problem
    return [], (f"pip install -r {path} ({image_path} is not copied into the image from the build "
                "context before this line)")


def _file_requirements(text: str) -> tuple[list[str], list[str]]:
    """A requirements file's requirement lines as written (comments and ``--hash`` options left
    out, ``\\`` continuations joined), and the options it names that are not requirements."""
    requirements: list[str] = []
    options: list[str] = []
    for line in re.sub(r"\\\n", " ", text).splitlines():
        line = re.sub(r"(^|\s)#.*$", "", line).strip()
        line = re.sub(r"\s--hash[= ]\S+", "", line).strip()
        if not line:
            continue
        if line.startswith("-"):
            options.append(line.split()[0].split("=")[0])
        else:
            requirements.append(line)
    return requirements, options
