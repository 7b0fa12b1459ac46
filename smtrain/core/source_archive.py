"""A script program's source directory as a deterministic ``sourcedir.tar.gz``.

Standard library only: the CDK app packages it as an asset (``infra/constructs/source_bundle.py``)
and the offline emulator compares it with what was synthesized (``smtrain/local/staleness.py``),
without starting Node.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import os
import tarfile
import zlib
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from smtrain.core.contract import TRACKING_REQUIREMENTS

#: Never shipped: caches and editor litter change without the code changing.
_EXCLUDED_NAMES = {"__pycache__", ".pytest_cache", ".mypy_cache", ".DS_Store"}
_EXCLUDED_SUFFIXES = (".pyc", ".pyo")


def _files(directory: Path) -> list[Path]:
    return sorted(
        path for path in directory.rglob("*")
        if path.is_file()
        and not any(part in _EXCLUDED_NAMES for part in path.relative_to(directory).parts)
        and not path.name.endswith(_EXCLUDED_SUFFIXES)
    )


def build_source_tarball(source_dir: Path, *,
                         extra_packages: Mapping[str, Path] | None = None,
                         replacements: Mapping[str, Path | bytes] | None = None,
                         gzip_cache: Path | None = None) -> bytes:
    """Pack ``source_dir`` (at the archive's root) and each ``extra_packages`` directory (under
    its name) into gzip'd tar bytes that depend only on file names, contents and the executable
    bit: entries sorted, mtime 0, uid/gid 0, no user names, gzip mtime 0.

    ``replacements`` (archive name -> a file or its bytes) add entries or replace those of the
    same name (vendored requirements: :mod:`smtrain.core.vendored_requirements`); bytes are
    packed as non-executable files. ``gzip_cache`` (default none): a folder where the
    compressed archive is kept under the uncompressed tar's sha256, so the same files are not
    compressed again (gzip takes about 3 s for the 35 MB of a vendored bundle's wheels; the
    output for a given tar is always the same bytes).

    The SageMaker training toolkit opens ``sagemaker_submit_directory`` with
    ``tarfile.open(mode="r:gz")``, so the archive must be a gzip'd tar (CDK's own directory
    assets are zip files).
    """
    entries: dict[str, Path] = {}
    for prefix, directory in [("", source_dir), *sorted((extra_packages or {}).items())]:
        if not directory.is_dir():
            raise ValueError(f"source directory {directory} does not exist")
        files = _files(directory)
        if not files:
            raise ValueError(f"source directory {directory} holds no files")
        for path in files:
            name = (PurePosixPath(prefix) / path.relative_to(directory).as_posix()).as_posix()
            if name in entries:
                raise ValueError(f"{name} would come from both {entries[name]} and {path}")
            entries[name] = path
    packed: dict[str, Path | bytes] = {**entries, **(replacements or {})}
    tar_bytes = io.BytesIO()
    with tarfile.open(fileobj=tar_bytes, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, source in sorted(packed.items()):
            data = source if isinstance(source, bytes) else source.read_bytes()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            executable = not isinstance(source, bytes) and os.access(source, os.X_OK)
            info.mode = 0o755 if executable else 0o644
            tar.addfile(info, io.BytesIO(data))
    cached = None
    if gzip_cache is not None:
        cached = gzip_cache / f"tar-{hashlib.sha256(tar_bytes.getvalue()).hexdigest()}.tar.gz"
        if cached.is_file():
            data = cached.read_bytes()
            # Only what its name says: a planted or damaged file is made again below.
            with contextlib.suppress(OSError, EOFError, zlib.error):
                if gzip.decompress(data) == tar_bytes.getvalue():
                    return data
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0, compresslevel=9, filename="") as gz:
        gz.write(tar_bytes.getvalue())
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        partial = cached.with_name(f"{cached.name}.{os.getpid()}.partial")
        partial.write_bytes(out.getvalue())
        partial.replace(cached)
    return out.getvalue()


def tracked_requirements(source_dir: Path) -> bytes | None:
    """The ``requirements.txt`` a script program's bundle holds where jobs are tracked: its own
    (if any) followed by its ``requirements-tracking.txt``, each ending in a newline; None when
    it has no tracking requirements (the bundle then holds its own file, or none)."""
    tracking = source_dir / TRACKING_REQUIREMENTS
    if not tracking.is_file():
        return None
    return b"".join(path.read_bytes().rstrip(b"\n") + b"\n"
                    for path in (source_dir / "requirements.txt", tracking) if path.is_file())

