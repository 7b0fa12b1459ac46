"""Data mistakes in local ``--input`` folders, caught before anything is uploaded or started.

:func:`check_local_channels` refuses, with one line naming the channel, the folder, what is
wrong and the fix:

1. a channel folder that looks like a dataset root (it holds sub-folders named like the
   program's channels), unless it is a Hugging Face ``DatasetDict`` saved whole;
2. a channel folder with no file of the channel's declared content type;
3. the same data in two channels (the same folder given twice, or files with the same SHA-256),
   unless one of them is declared ``shares_data = true`` (its script picks its files by name);
   a Hugging Face dataset's ``dataset_info.json`` is not data.

Fast on large folders: one directory walk per channel; only files whose sizes collide across
channels are hashed. Hidden files and folders (``.DS_Store``, ``.ipynb_checkpoints/``) are ignored.
Standard library only.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from smtrain.cli.execution_request import ChannelInput
from smtrain.core.errors import InputError
from smtrain.core.programs import EXTENSION_PATTERN, Channel, Program

#: How many of the files found a "wrong content type" message lists.
LISTED_FILES = 3


@dataclass(frozen=True)
class _File:
    path: Path
    size: int


def check_local_channels(inputs: Sequence[ChannelInput], program: Program) -> None:
    """Raise :class:`InputError` for the first data mistake among ``inputs``' local folders.

    S3 inputs and channels the program does not declare are left to the other checks."""
    declared = {channel.name: channel for channel in program.channels}
    local = [(declared[i.channel], i.local_dir) for i in inputs
             if i.local_dir is not None and i.channel in declared]
    files: dict[str, list[_File]] = {}
    for channel, folder in local:
        _check_not_dataset_root(channel, folder, program)
        files[channel.name] = _check_content_type(channel, folder)
    _check_same_folder(local)
    _check_same_files(files, sharing={channel.name for channel, _ in local if channel.shares_data})


def _show(folder: Path) -> str:
    return shlex.quote(str(folder))


def _sharing_hint(name: str) -> str:
    return (f", or, if the script picks each channel's files by name from one folder, declare "
            f"shares_data = true on channel {name} in program.toml")


def _check_same_folder(local: Sequence[tuple[Channel, Path]]) -> None:
    """Two channels, neither declared ``shares_data``, that read one folder."""
    seen: dict[Path, list[tuple[Channel, Path]]] = defaultdict(list)
    for channel, folder in local:
        resolved = folder.resolve()
        others = [] if channel.shares_data else [(c, f) for c, f in seen[resolved] if not c.shares_data]
        if others:
            first, first_folder = others[0]
            raise InputError(
                f"input {first.name} and {channel.name}: both read the folder {_show(first_folder)}"
                + (f" (as {_show(folder)})" if folder != first_folder else "")
                + f"; validation must hold data the model does not train on: give {channel.name} "
                  f"a folder of its own (a held-out split){_sharing_hint(channel.name)}")
        seen[resolved].append((channel, folder))


#: What ``DatasetDict.save_to_disk`` of Hugging Face ``datasets`` writes at the top of the folder
#: that holds its splits (``datasets.config.DATASETDICT_JSON_FILENAME``): one dataset, which the
#: script loads whole (``load_from_disk``), not a root of channel folders given by mistake.
HUGGING_FACE_DATASET_DICT = "dataset_dict.json"


def _check_not_dataset_root(channel: Channel, folder: Path, program: Program) -> None:
    if (folder / HUGGING_FACE_DATASET_DICT).is_file():
        return
    subfolders = [c.name for c in program.channels if (folder / c.name).is_dir()]
    if not subfolders:
        _check_no_nested_channels(channel, folder, program)
        return
    fix = " ".join(f"--input {shlex.quote(f'{name}={folder / name}')}" for name in subfolders)
    raise InputError(
        f"input {channel.name}: folder {_show(folder)} looks like a dataset root (it holds the "
        f"channel sub-folder{'s' if len(subfolders) > 1 else ''} {', '.join(subfolders)}); "
        f"give each channel its own folder: {fix}")


def _check_no_nested_channels(channel: Channel, folder: Path, program: Program) -> None:
    """Deeper down, a folder named like another channel (``data/<program>/validation/`` under
    ``--input train=data``) would put that channel's files into this one."""
    others = {c.name for c in program.channels} - {channel.name}
    nested = sorted(Path(root, name).relative_to(folder).as_posix()
                    for root, dirs, _ in os.walk(folder) for name in dirs
                    if name in others and not name.startswith("."))
    if nested:
        shown = ", ".join(nested[:3]) + (f" and {len(nested) - 3} more" if len(nested) > 3 else "")
        raise InputError(
            f"input {channel.name}: folder {_show(folder)} holds folders named like other channels "
            f"({shown}), whose files would all be read as {channel.name} data; point "
            f"--input {channel.name}= at the folder of that channel's files alone")


def data_files(folder: Path) -> list[Path]:
    """The files of a channel folder that are uploaded and read: hidden files and folders
    (``.DS_Store``, ``.ipynb_checkpoints/``) are neither checked nor uploaded."""
    return [file.path for file in _walk(folder)]


def _walk(folder: Path) -> Iterator[_File]:
    """Every non-hidden file under ``folder`` (hidden folders skipped), with its size."""
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            if name.startswith("."):
                continue
            path = Path(root, name)
            try:
                stat = path.stat()
            except OSError:  # a dangling link: not data
                continue
            yield _File(path, stat.st_size)


def _check_content_type(channel: Channel, folder: Path) -> list[_File]:
    """The channel's data files; raises when there is none of its content type."""
    extensions = channel.file_extensions
    found: list[_File] = []
    matching: list[_File] = []
    for file in _walk(folder):
        found.append(file)
        if not extensions or file.path.name.lower().endswith(tuple(e.lower() for e in extensions)):
            matching.append(file)
    if matching:
        return matching
    expected = ", ".join(extensions) if extensions else "any"
    if found:
        shown = ", ".join(str(f.path.relative_to(folder)) for f in found[:LISTED_FILES])
        more = f" and {len(found) - LISTED_FILES} more" if len(found) > LISTED_FILES else ""
        holds = f"holds no {channel.content_type} file ({expected}), only {shown}{more}"
    else:
        holds = "holds no files (hidden files are ignored)"
    named = ""
    if found:  # files under other names: the manifest's setting (with an ending it accepts)
        suffix = found[0].path.suffix
        example = f' (e.g. extensions = ["{suffix}"])' if re.fullmatch(EXTENSION_PATTERN, suffix) else ""
        named = ("; or, if these are its files under other names, list their endings in the "
                 f"channel's extensions in program.toml{example}")
    raise InputError(
        f"input {channel.name}: folder {_show(folder)} {holds}; put the channel's "
        f"{channel.content_type} files ({expected}) there, or point --input {channel.name}= at "
        f"the folder that holds them{named}")


def _sha256(path: Path) -> str:
    with path.open("rb") as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()


#: Files that describe a dataset rather than hold it: Hugging Face ``datasets`` writes
#: ``dataset_info.json`` (the features, the same in every split of one dataset) beside each
#: split's ``data-*.arrow`` files in ``Dataset.save_to_disk`` (``datasets.config.DATASET_INFO_FILENAME``).
METADATA_FILES = frozenset({"dataset_info.json"})


def _check_same_files(files: dict[str, list[_File]], *, sharing: set[str]) -> None:
    """Files of the same content in two channels, neither of them in ``sharing``; hashes only
    sizes that collide across channels."""
    by_size: dict[int, list[tuple[str, _File]]] = defaultdict(list)
    for name, channel_files in files.items():
        if name in sharing:
            continue
        for file in channel_files:
            # Empty files carry no data to leak, and a dataset's description is not its data.
            if file.size > 0 and file.path.name not in METADATA_FILES:
                by_size[file.size].append((name, file))
    for size in sorted(by_size):
        candidates = by_size[size]
        if len({name for name, _ in candidates}) < 2:
            continue
        by_hash: dict[str, tuple[str, _File]] = {}
        for name, file in candidates:
            digest = _sha256(file.path)
            other = by_hash.get(digest)
            if other is not None and other[0] != name:
                first_name, first = other
                raise InputError(
                    f"input {first_name} and {name}: {_show(first.path)} and {_show(file.path)} "
                    f"are the same file (same SHA-256); validation must hold data the model does "
                    f"not train on: keep each file in one channel only (a held-out split)"
                    f"{_sharing_hint(name)}")
            by_hash.setdefault(digest, (name, file))
