"""A directory that stands in for S3: ``s3://bucket/key`` is ``<root>/bucket/key``."""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

_S3_URI = re.compile(r"^s3://(?P<bucket>[a-z0-9][a-z0-9.-]{1,61}[a-z0-9])/?(?P<key>.*)$")


class S3UriError(ValueError):
    """Not an ``s3://bucket/key`` URI."""


@dataclass(frozen=True)
class LocalS3:
    root: Path

    def path(self, uri: str) -> Path:
        """Where ``uri`` lives on disk (a prefix maps to a directory), always inside its
        bucket's folder: a key that would lead out of it (``..``, a leading or doubled ``/``,
        which S3 allows but a path would read as the machine's root, or a link inside the
        folder) is refused, so no input or output names a file of the machine."""
        match = _S3_URI.match(uri)
        if match is None:
            raise S3UriError(f"not an S3 URI: {uri!r}")
        key = match["key"]
        if ".." in key.split("/"):
            raise S3UriError(f"S3 key may not climb out of its bucket: {uri!r}")
        if key.startswith("/") or "//" in key:
            raise S3UriError(f"an S3 key with an empty part ('//') is not supported offline: {uri!r}")
        bucket = self.root / match["bucket"]
        path = bucket / key
        if not path.resolve().is_relative_to(bucket.resolve()):
            raise S3UriError(f"S3 key leads out of its bucket's folder here (a link): {uri!r}")
        return path

    def uri(self, path: Path) -> str:
        relative = path.resolve().relative_to(self.root.resolve()).as_posix()
        return f"s3://{relative}"

    def objects_under(self, uri: str) -> list[Path]:
        """The files under a prefix URI (S3Prefix semantics: the key is a plain prefix)."""
        base = self.path(uri)
        if base.is_file():
            return [base]
        if base.is_dir():
            return sorted(p for p in base.rglob("*") if p.is_file())
        # A prefix that is not a whole directory name, e.g. s3://b/data/tr -> data/train*.
        parent = base.parent
        if not parent.is_dir():
            return []
        return sorted(p for child in parent.iterdir() if child.name.startswith(base.name)
                      for p in ([child] if child.is_file() else child.rglob("*")) if p.is_file())

    def put_file(self, source: Path, uri: str) -> Path:
        target = self.path(uri)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        return target

    def put_tree(self, source: Path, uri: str) -> list[Path]:
        """Copy every file under ``source`` to the prefix ``uri``."""
        written = []
        for path in sorted(p for p in source.rglob("*") if p.is_file()):
            written.append(self.put_file(path, uri.rstrip("/") + "/" + path.relative_to(source).as_posix()))
        return written
