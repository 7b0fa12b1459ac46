"""Is ``cdk.out`` still the program code of ``training_code/``? (``smtrain start --local``)

An offline run executes what was synthesized: a script program's ``sourcedir.tar.gz`` file asset,
a BYOC program's staged Docker build context. Both are copies taken at ``cdk synth`` time, so an
edit made since is invisible offline until the app is synthesized again. :func:`stale_programs`
compares them with the files as they are now; :func:`code_digest` names a program's code by
content (the tarball's sha256, the build context's digest), the identity of a local run's code.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from smtrain.core import contract
from smtrain.core.assembly import load_templates, placeholder_resolver, render_definition, state_machine_definitions
from smtrain.core.programs import MANIFEST, Program
from smtrain.core.source_archive import build_source_tarball, tracked_requirements
from smtrain.core.vendored_requirements import REQUIREMENTS, source_view

#: Never part of a build context's comparison: caches the interpreter writes.
_IGNORED_DIRS = frozenset({"__pycache__"})
_IGNORED_SUFFIXES = (".pyc", ".pyo")


@dataclass(frozen=True)
class _Synthesized:
    """What ``cdk.out`` holds per program output id."""

    #: ``<Id>`` of ``ProgramSource<Id>`` -> the tarball file in ``cdk.out`` (None: not found).
    sources: dict[str, Path | None]
    #: ``<Id>`` of ``ProgramImage<Id>`` -> (staged context, the program's folder in it) or None.
    images: dict[str, tuple[Path, Path] | None]
    #: The state machine definition's text (every program name appears in it).
    definition: str


def training_code_dir(program: Program) -> Path:
    """The folder holding the program's folder and its shared folders."""
    return program.directory.parent


def _tarball(program: Program) -> bytes:
    """What the workflow stack ships for a script program (the same builder, without CDK)."""
    root = training_code_dir(program)
    return build_source_tarball(program.directory,
                                extra_packages={name: root / name for name in program.shared})


def _context_files(directory: Path) -> Iterator[Path]:
    for path in sorted(directory.rglob("*")):
        relative = path.relative_to(directory)
        if (path.is_file() and not _IGNORED_DIRS.intersection(relative.parts)
                and not path.name.endswith(_IGNORED_SUFFIXES)):
            yield path


def _context_tree(program: Program) -> dict[str, bytes]:
    """The files a BYOC program's build context holds now (relative path -> content)."""
    if program.build_context == "..":
        root = training_code_dir(program)
        folders = [program.name, *program.shared]
    else:
        root, folders = program.directory, ["."]
    return _tree(root, folders)


def _tree(root: Path, folders: list[str]) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for folder in folders:
        base = root / folder
        if not base.is_dir():
            continue
        for path in _context_files(base):
            files[path.relative_to(root).as_posix()] = path.read_bytes()
    return files


def _tree_digest(files: Mapping[str, bytes]) -> str:
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0")
        digest.update(hashlib.sha256(files[name]).digest())
    return digest.hexdigest()


def code_digest(program: Program) -> str:
    """The program's code, by content: a script program's tarball sha256, a BYOC program's build
    context digest, a built-in program's folder digest (its manifest)."""
    if program.kind == "script":
        return "sha256:" + hashlib.sha256(_tarball(program)).hexdigest()
    if program.kind == "byoc":
        return "context:" + _tree_digest(_context_tree(program))
    return "folder:" + _tree_digest(_tree(program.directory, ["."]))


def app_digest(outdir: Path) -> str:
    """The synthesized app, by content: the sha256 of its stacks' templates (``*.template.json``,
    by name). Another state machine, role or setting is another app, so a run of it is another
    run, even with the same code and input."""
    digest = hashlib.sha256()
    for template in sorted(outdir.glob("*.template.json")):
        digest.update(template.name.encode() + b"\0" + template.read_bytes() + b"\0")
    return "templates:" + digest.hexdigest()


def _load(outdir: Path) -> _Synthesized:
    templates = load_templates(outdir)
    files: dict[str, Path] = {}  # S3 object key -> the file in cdk.out
    staged: dict[str, tuple[Path, str]] = {}  # image tag -> (context, Dockerfile)
    for manifest_path in sorted(outdir.glob("*.assets.json")):
        manifest = json.loads(manifest_path.read_text())
        for asset in manifest.get("files", {}).values():
            for destination in asset.get("destinations", {}).values():
                files[destination["objectKey"]] = outdir / asset["source"]["path"]
        for asset_hash, asset in manifest.get("dockerImages", {}).items():
            source = asset["source"]
            staged[asset_hash] = (outdir / source["directory"], source.get("dockerFile", "Dockerfile"))
    sources: dict[str, Path | None] = {}
    images: dict[str, tuple[Path, Path] | None] = {}
    for template in templates.values():
        for key, output in template.get("Outputs", {}).items():
            text = json.dumps(output.get("Value"))
            if key.startswith(contract.OUTPUT_PROGRAM_SOURCE):
                found = [path for object_key, path in files.items() if f"/{object_key}" in text]
                sources[key.removeprefix(contract.OUTPUT_PROGRAM_SOURCE)] = found[0] if found else None
            elif key.startswith(contract.OUTPUT_PROGRAM_IMAGE):
                tags = [tag for tag in staged if f":{tag}" in text]
                if tags:
                    context, dockerfile = staged[tags[0]]
                    images[key.removeprefix(contract.OUTPUT_PROGRAM_IMAGE)] = (
                        context, (context / dockerfile).parent)
                else:
                    images[key.removeprefix(contract.OUTPUT_PROGRAM_IMAGE)] = None
    definitions = [json.dumps(render_definition(definition, placeholder_resolver()))
                   for template in templates.values()
                   for definition in state_machine_definitions(template).values()]
    return _Synthesized(sources=sources, images=images, definition="\n".join(definitions))


def _toml_name(data: bytes) -> str | None:
    try:
        name = tomllib.loads(data.decode()).get("name")
    except (UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None
    return name if isinstance(name, str) else None


def _tarball_program_name(path: Path) -> str | None:
    try:
        with tarfile.open(path, "r:gz") as archive:
            member = archive.extractfile(MANIFEST)
            return _toml_name(member.read()) if member is not None else None
    except (OSError, KeyError, tarfile.TarError):
        return None


def _changed_files(old: Mapping[str, bytes], new: Mapping[str, bytes], limit: int = 3) -> str:
    changed = sorted(name for name in old.keys() | new.keys() if old.get(name) != new.get(name))
    shown = ", ".join(changed[:limit]) + (f" and {len(changed) - limit} more" if len(changed) > limit else "")
    return shown


def _tar_files(data: bytes) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        for member in archive.getmembers():
            handle = archive.extractfile(member)
            if handle is not None:
                files[member.name] = handle.read()
    return files


def _script_problem(program: Program, synthesized: Path | None) -> str | None:
    where = f"training_code/{program.name}" + "".join(f" + {name}" for name in program.shared)
    if synthesized is None or not synthesized.is_file():
        return f"{program.name}: its synthesized sourcedir.tar.gz is missing from cdk.out"
    fresh = _tarball(program)
    old = synthesized.read_bytes()
    if fresh == old:
        return None
    try:
        # A bundle synthesized with vendored requirements (network vpc/isolated) is compared as
        # the program's folder has it: wheels/ aside, its own requirements.txt back in place.
        old_files, fresh_files = source_view(_tar_files(old)), _tar_files(fresh)
        # A bundle synthesized where jobs are tracked holds the program's tracking requirements
        # in its requirements.txt (infra/constructs/source_bundle.py): the same folder.
        merged = tracked_requirements(program.directory)
        if merged is not None and old_files.get(REQUIREMENTS) == merged:
            fresh_files = {**fresh_files, REQUIREMENTS: merged}
        if old_files == fresh_files:
            return None
        detail = _changed_files(old_files, fresh_files)
    except (OSError, tarfile.TarError, EOFError):
        detail = "the archive differs"
    return f"{program.name}: the code changed since the last synth ({where}: {detail})"


def _byoc_problem(program: Program, staged: tuple[Path, Path] | None) -> str | None:
    if staged is None or not staged[0].is_dir():
        return f"{program.name}: its staged image build context is missing from cdk.out"
    context, _ = staged
    now = _context_tree(program)
    folders = [program.name, *program.shared] if program.build_context == ".." else ["."]
    before = _tree(context, folders)
    if now == before:
        return None
    return (f"{program.name}: the code changed since the last synth (image build context: "
            f"{_changed_files(before, now)})")


def stale_programs(outdir: Path, programs: Mapping[str, Program]) -> list[str]:
    """One line per program whose synthesized code in ``outdir`` is not its code now: a script
    program's tarball or a BYOC program's staged build context that differs, a program that the
    synthesized app lacks, a synthesized program whose folder is gone. Empty: all is current."""
    synthesized = _load(outdir)
    problems: list[str] = []
    known_ids = set()
    for program in programs.values():
        output = contract.output_id(program.name)
        known_ids.add(output)
        if program.kind == "script":
            if output not in synthesized.sources:
                problems.append(_missing(program))
                continue
            problem = _script_problem(program, synthesized.sources[output])
        elif program.kind == "byoc":
            if output not in synthesized.images:
                problems.append(_missing(program))
                continue
            problem = _byoc_problem(program, synthesized.images[output])
        else:
            problem = None if json.dumps(program.name) in synthesized.definition else _missing(program)
        if problem is None and not _manifest_current(program, synthesized.definition):
            problem = (f"{program.name}: {MANIFEST} changed since {outdir} was synthesized (the "
                       "state machine checks and routes with the old one)")
        if problem is not None:
            problems.append(problem)
    for output, source in sorted(synthesized.sources.items()):
        if output not in known_ids:
            name = (_tarball_program_name(source) if source is not None else None) or output
            problems.append(_gone(name, f"{contract.OUTPUT_PROGRAM_SOURCE}{output}"))
    for output, image in sorted(synthesized.images.items()):
        if output not in known_ids:
            manifest = image[1] / MANIFEST if image is not None else None
            name = (_toml_name(manifest.read_bytes()) if manifest is not None and manifest.is_file()
                    else None) or output
            problems.append(_gone(name, f"{contract.OUTPUT_PROGRAM_IMAGE}{output}"))
    return problems


def _manifest_current(program: Program, definition: str) -> bool:
    """The program's catalog entry (with its manifest's digest) is the one the synthesized
    state machine's input check carries."""
    entry = f'"{program.name}": {json.dumps(program.catalog_entry(), sort_keys=True)}'
    return json.dumps(entry)[1:-1] in definition


def _missing(program: Program) -> str:
    return (f"{program.name}: training_code/{program.name} has a {MANIFEST} but the synthesized "
            f"app has no {program.kind} program of that name")


def _gone(name: str, output: str) -> str:
    return f"{name}: synthesized (output {output}) but its folder is gone from training_code/"


def describe(problems: list[str]) -> str:
    """The problems on one line."""
    return "; ".join(problems)


__all__ = ["code_digest", "describe", "stale_programs", "training_code_dir"]
