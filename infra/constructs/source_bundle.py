"""The script-mode source directory as a deterministic ``sourcedir.tar.gz`` S3 asset."""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

from aws_cdk import Token
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3_assets as s3_assets
from constructs import Construct

from smtrain.core.contract import TRACKING_REQUIREMENTS
from smtrain.core.source_archive import build_source_tarball, tracked_requirements
from smtrain.core.user_cache import write_whole
from smtrain.core.vendored_requirements import REQUIREMENTS, WheelTarget, has_packages, vendored_files


def _private_dir(path: Path) -> Path:
    """``path``, a folder of this user's only (made so where missing): the default build folder
    lies in the shared temporary directory, where another user could otherwise place files."""
    path.mkdir(mode=0o700, exist_ok=True)
    status = path.lstat()
    if stat.S_ISLNK(status.st_mode) or status.st_uid != os.getuid() or status.st_mode & 0o022:
        raise ValueError(f"{path} is not a folder of this user's only (a link, another owner, or "
                         "writable by others): remove it, or synthesize with TMPDIR set elsewhere")
    return path


class SourceBundle(Construct):
    """A directory shipped as a gzip'd tarball asset for SageMaker script mode.

    Guarantees: the same files give byte-identical archives and so the same asset hash (a
    redeploy without code changes uploads nothing and changes no job request); the archive is
    built in-process without Docker. ``extra_packages`` (default none) ship directories shared
    with other training code under their own names. ``s3_uri`` is what
    ``sagemaker_submit_directory`` takes.

    ``wheels_for`` (default None: the toolkit pip installs ``requirements.txt`` from an index at
    job start, as on SageMaker by default) vendors the directory's ``requirements.txt``: its
    wheels for that image go into the archive under ``wheels/`` and the toolkit installs them
    with no index (:mod:`smtrain.core.vendored_requirements`). Given as a function, it is called
    only when the bundle's ``requirements.txt`` names a package (it may then raise, or answer
    None: nothing vendored); ``program`` names the program in
    the error when a requirement has no such wheel. Nothing is added to IAM either way.

    ``with_tracking`` (default False): the directory's ``requirements-tracking.txt`` (what the
    program needs only to log to MLflow from the container) joins ``requirements.txt`` in the
    archive. The stack asks for it only where jobs get a tracking URI, so a deployment whose jobs
    cannot reach MLflow (tracking off, or no network) ships and installs none of it.
    """

    def __init__(self, scope: Construct, construct_id: str, *, source_dir: Path,
                 extra_packages: Mapping[str, Path] | None = None,
                 build_dir: Path | None = None,
                 wheels_for: WheelTarget | Callable[[], WheelTarget | None] | None = None,
                 program: str | None = None, with_tracking: bool = False) -> None:
        super().__init__(scope, construct_id)
        out_dir = build_dir or _private_dir(Path(tempfile.gettempdir())
                                            / f"smtrain-source-bundles-{os.getuid()}")
        out_dir.mkdir(parents=True, exist_ok=True)
        requirements = source_dir / REQUIREMENTS
        replacements: dict[str, Path | bytes] = {}
        merged = tracked_requirements(source_dir) if with_tracking else None
        if merged is not None:
            tracking = source_dir / TRACKING_REQUIREMENTS
            for number, line in enumerate(tracking.read_text().splitlines(), start=1):
                if line.split(" #", 1)[0].strip().startswith(("-r", "--requirement")):
                    raise ValueError(f"script program {program or source_dir.name}: {tracking} line "
                                     f"{number}: {line.strip()!r}: list the packages themselves (the "
                                     "stack appends this file to requirements.txt)")
            # A file for the vendoring to read, named by its content, written whole (a new file
            # renamed into place: a concurrent synth never reads half of it).
            requirements = out_dir / f"requirements-{hashlib.sha256(merged).hexdigest()}.txt"
            write_whole(requirements, lambda file: file.write(merged))
            replacements[REQUIREMENTS] = merged
        vendored: dict[str, Path | bytes] = {}
        if (wheels_for is not None and requirements.is_file()
                and has_packages(requirements.read_text())):
            # Asked for only now: a target is needed only where there is something to vendor.
            target = wheels_for() if callable(wheels_for) else wheels_for
            if target is not None:
                vendored = vendored_files(requirements, program=program or source_dir.name,
                                          target=target)
        #: The wheels the archive holds (file names; empty when nothing is vendored).
        self.wheels = tuple(sorted(name.split("/", 1)[1] for name in vendored
                                   if name.endswith(".whl")))
        replacements.update(vendored)
        # A vendored archive is kept compressed by content, so a repeated synth skips the gzip.
        archive = build_source_tarball(source_dir, extra_packages=extra_packages,
                                       replacements=replacements,
                                       gzip_cache=out_dir / "by-tar" if vendored else None)
        digest = hashlib.sha256(archive).hexdigest()
        archive_path = out_dir / f"sourcedir-{digest}.tar.gz"
        # Reused only when its bytes are the archive's (the name is their SHA-256): a file
        # planted or damaged at that path is replaced, never shipped.
        if not (archive_path.is_file() and not archive_path.is_symlink()
                and hashlib.sha256(archive_path.read_bytes()).hexdigest() == digest):
            # A new file of a name no one could have planted (mkstemp: O_EXCL), then renamed.
            handle, partial = tempfile.mkstemp(dir=out_dir, prefix=".sourcedir-", suffix=".partial")
            with os.fdopen(handle, "wb") as file:
                file.write(archive)
            os.chmod(partial, 0o644)
            os.replace(partial, archive_path)
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
