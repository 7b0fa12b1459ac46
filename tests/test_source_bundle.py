"""The script-mode tarball: what the toolkit can open, identical for identical code."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from pathlib import Path

import pytest

from smtrain.core.source_archive import build_source_tarball
from tests.conftest import ROOT


def _tree(root: Path) -> Path:
    (root / "pkg").mkdir(parents=True)
    (root / "train.py").write_text("print('hi')\n")
    (root / "pkg" / "model.py").write_text("X = 1\n")
    (root / "run.sh").write_text("#!/bin/sh\n")
    (root / "run.sh").chmod(0o755)
    (root / "pkg" / "__pycache__").mkdir()
    (root / "pkg" / "__pycache__" / "model.cpython-311.pyc").write_bytes(b"junk")
    (root / "stale.pyc").write_bytes(b"junk")
    return root


def test_toolkit_can_open_it(tmp_path: Path) -> None:
    archive = build_source_tarball(_tree(tmp_path / "src"))
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert sorted(members) == ["pkg/model.py", "run.sh", "train.py"]
        assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 and m.uname == "" for m in members.values())
        assert members["run.sh"].mode == 0o755 and members["train.py"].mode == 0o644
        extracted = tar.extractfile("train.py")
        assert extracted is not None and extracted.read() == b"print('hi')\n"


def test_same_code_same_bytes(tmp_path: Path) -> None:
    first = build_source_tarball(_tree(tmp_path / "a"))
    second_root = _tree(tmp_path / "b")
    os.utime(second_root / "train.py", (1_000_000, 1_000_000))
    (second_root / "pkg" / "__pycache__" / "other.pyc").write_bytes(b"more junk")
    assert build_source_tarball(second_root) == first
    with gzip.GzipFile(fileobj=io.BytesIO(first)) as gz:
        gz.read()
        assert gz.mtime == 0


def test_code_change_changes_bytes(tmp_path: Path) -> None:
    root = _tree(tmp_path / "src")
    before = build_source_tarball(root)
    (root / "train.py").write_text("print('changed')\n")
    assert build_source_tarball(root) != before
    (root / "train.py").write_text("print('hi')\n")
    (root / "run.sh").chmod(0o644)
    assert build_source_tarball(root) != before, "the executable bit is part of the code"


@pytest.mark.parametrize("problem", ["missing", "empty"])
def test_bad_directories_fail(tmp_path: Path, problem: str) -> None:
    root = tmp_path / "src"
    if problem == "empty":
        root.mkdir()
    with pytest.raises(ValueError, match="does not exist" if problem == "missing" else "holds no files"):
        build_source_tarball(root)


def test_project_script_mode_bundle_holds_the_entry_point() -> None:
    archive = build_source_tarball(ROOT / "training_code" / "digits_mlp")
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        names = tar.getnames()
    assert "train.py" in names and "requirements.txt" in names
    assert not any("__pycache__" in name for name in names)
