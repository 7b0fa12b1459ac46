"""The script-mode source directory as a deterministic ``sourcedir.tar.gz`` S3 asset."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
import tempfile
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from aws_cdk import Token
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3_assets as s3_assets
from constructs import Construct

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
                         extra_packages: Mapping[str, Path] | None = None) -> bytes:
    """Pack ``source_dir`` (at the archive's root) and each ``extra_packages`` directory (under
    its name) into gzip'd tar bytes that depend only on file names, contents and the executable
    bit: entries sorted, mtime 0, uid/gid 0, no user names, gzip mtime 0.

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
    tar_bytes = io.BytesIO()
    with tarfile.open(fileobj=tar_bytes, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, path in sorted(entries.items()):
            data = path.read_bytes()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mode = 0o755 if os.access(path, os.X_OK) else 0o644
            tar.addfile(info, io.BytesIO(data))
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0, compresslevel=9, filename="") as gz:
        gz.write(tar_bytes.getvalue())
    return out.getvalue()


class SourceBundle(Construct):
    """A directory shipped as a gzip'd tarball asset for SageMaker script mode.

    Guarantees: the same files give byte-identical archives and so the same asset hash (a
    redeploy without code changes uploads nothing and changes no job request); the archive is
    built in-process without Docker. ``extra_packages`` (default none) ship directories shared
    with other training code under their own names. ``s3_uri`` is what
    ``sagemaker_submit_directory`` takes.
    """

    def __init__(self, scope: Construct, construct_id: str, *, source_dir: Path,
                 extra_packages: Mapping[str, Path] | None = None,
                 build_dir: Path | None = None) -> None:
        super().__init__(scope, construct_id)
        archive = build_source_tarball(source_dir, extra_packages=extra_packages)
        digest = hashlib.sha256(archive).hexdigest()
        out_dir = build_dir or Path(tempfile.gettempdir()) / "smtrain-source-bundles"
        out_dir.mkdir(parents=True, exist_ok=True)
        archive_path = out_dir / f"sourcedir-{digest}.tar.gz"
        if not archive_path.exists():
            partial = archive_path.with_suffix(".partial")
            partial.write_bytes(archive)
            partial.replace(archive_path)
        self.archive_sha256 = digest
        self.asset = s3_assets.Asset(self, "Asset", path=str(archive_path))
        self.s3_uri = self.asset.s3_object_url
        #: The archive's object key, and so its file name in a channel that holds it (the asset's
        #: content hash plus its extension, known at synth).
        self.object_key = self.asset.s3_object_key
        if Token.is_unresolved(self.object_key) or "/" in self.object_key:
            raise ValueError(f"expected a plain asset object key, got {self.object_key!r}")

    def grant_read(self, grantee: iam.IGrantable) -> None:
        """Let ``grantee`` read this archive (and only it) from the asset bucket."""
        self.asset.grant_read(grantee)
