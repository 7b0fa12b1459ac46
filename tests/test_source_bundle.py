"""The script-mode tarball: what the toolkit can open, identical for identical code."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import os
import tarfile
from pathlib import Path

import aws_cdk as cdk
import pytest

from infra.constructs.source_bundle import SourceBundle
from infra.settings import Settings, SettingsError
from infra.stacks.workflow_stack import _wheels_for
from smtrain.core.programs import ProgramError
from smtrain.core.source_archive import build_source_tarball
from smtrain.core.vendored_requirements import (
    VendoringError,
    WheelTarget,
    python_version_of,
    source_view,
    vendored_files,
)
from tests.conftest import ROOT, shipped_training_code


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


def test_a_kept_archive_is_the_same_bytes(tmp_path: Path) -> None:
    """``gzip_cache`` skips compressing the same files again and changes no byte."""
    root = _tree(tmp_path / "src")
    fresh = build_source_tarball(root)
    assert build_source_tarball(root, gzip_cache=tmp_path / "kept") == fresh
    assert len(list((tmp_path / "kept").iterdir())) == 1
    assert build_source_tarball(root, gzip_cache=tmp_path / "kept") == fresh
    (root / "train.py").write_text("print('changed')\n")
    assert build_source_tarball(root, gzip_cache=tmp_path / "kept") == build_source_tarball(root)


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
    # digits_mlp needs nothing but the image's packages, save MLflow's client for tracking.
    assert "train.py" in names and "requirements.txt" not in names
    assert not any("__pycache__" in name for name in names)


def _members(bundle: SourceBundle, build_dir: Path) -> dict[str, bytes]:
    data = (build_dir / f"sourcedir-{bundle.archive_sha256}.tar.gz").read_bytes()
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]


def test_tracking_requirements_ship_only_where_jobs_track(tmp_path: Path) -> None:
    """requirements-tracking.txt joins requirements.txt in the bundle only when asked (the stack
    asks where jobs get a tracking URI: tests/test_experiment_tracking_stack.py); a program's own
    requirements come first, and the bundle changes with the choice."""
    program = tmp_path / "program"
    program.mkdir()
    (program / "train.py").write_text("print('hi')\n")
    (program / "requirements-tracking.txt").write_text("mlflow-skinny==3.17.2\n")
    stack = cdk.Stack(cdk.App(outdir=str(tmp_path / "cdk.out")), "Bundle")
    build = tmp_path / "bundles"
    untracked = SourceBundle(stack, "Untracked", source_dir=program, build_dir=build)
    assert "requirements.txt" not in _members(untracked, build)
    tracked = SourceBundle(stack, "Tracked", source_dir=program, build_dir=build, with_tracking=True)
    assert _members(tracked, build)["requirements.txt"] == b"mlflow-skinny==3.17.2\n"
    (program / "requirements.txt").write_text("numpy==2.4.6")  # no final newline
    both = SourceBundle(stack, "Both", source_dir=program, build_dir=build, with_tracking=True)
    assert _members(both, build)["requirements.txt"] == b"numpy==2.4.6\nmlflow-skinny==3.17.2\n"
    assert len({untracked.archive_sha256, tracked.archive_sha256, both.archive_sha256}) == 3


# -- Vendored requirements (network vpc/isolated): the wheels travel in the bundle ------------------

def _bundle(tmp: Path, source_dir: Path, settings: Settings, *, program: str = "digits_mlp",
            cache_dir: Path | None = None) -> SourceBundle:
    """A SourceBundle with vendored requirements (and tracking's) in a stack of its own, as a
    synth of a tracked vpc deployment makes it."""
    target = WheelTarget(python_version=python_version_of(settings.pytorch_py_version))
    if cache_dir is not None:
        target = dataclasses.replace(target, cache_dir=cache_dir)
    stack = cdk.Stack(cdk.App(outdir=str(tmp / "cdk.out")), "Bundle")
    return SourceBundle(stack, "Source", source_dir=source_dir, build_dir=tmp / "bundles",
                        extra_packages={"common": ROOT / "training_code" / "common"},
                        wheels_for=target, program=program, with_tracking=True)


def test_a_vendored_bundle_holds_the_wheels_and_is_byte_identical_across_synths(
        tmp_path: Path, settings: Settings) -> None:
    """digits_mlp's tracking requirements, vendored for the PyTorch image's Python (the wheel cache,
    ~/.cache/smtrain/wheels, makes the second synth download nothing): the archive holds every
    wheel, the program's own file under wheels/, a requirements.txt the toolkit installs with no
    index, and two synths give the same bytes."""
    first = _bundle(tmp_path / "one", ROOT / "training_code" / "digits_mlp", settings)
    second = _bundle(tmp_path / "two", ROOT / "training_code" / "digits_mlp", settings)
    assert first.archive_sha256 == second.archive_sha256
    data = (tmp_path / "one" / "bundles" / f"sourcedir-{first.archive_sha256}.tar.gz").read_bytes()
    assert data == (tmp_path / "two" / "bundles" / f"sourcedir-{second.archive_sha256}.tar.gz").read_bytes()
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        members = {m.name: m for m in tar.getmembers()}
        wheels = sorted(name.removeprefix("wheels/") for name in members if name.endswith(".whl"))
        original = tar.extractfile("wheels/requirements.txt")
        rewritten = tar.extractfile("requirements.txt")
        assert original is not None and rewritten is not None
        assert original.read() == (ROOT / "training_code" / "digits_mlp" / "requirements-tracking.txt").read_bytes()
        lines = [line for line in rewritten.read().decode().splitlines() if not line.startswith("#")]
    assert all(m.mtime == 0 and m.uid == 0 for m in members.values())
    assert wheels == list(first.wheels) and len(wheels) > 2
    assert any(name.startswith("mlflow_skinny-3.17.2-") for name in wheels)
    assert any(name.startswith("sagemaker_mlflow-0.5.0-") for name in wheels)
    # Compiled dependencies come as CPython 3.11 (or abi3) manylinux x86_64 wheels.
    compiled = [name for name in wheels if not name.endswith("-none-any.whl")]
    assert compiled and all(("cp311" in name or "abi3" in name) and "manylinux" in name
                            and name.endswith("x86_64.whl") for name in compiled)
    assert lines == ["--no-index", "--find-links wheels", "-r wheels/requirements.txt"]
    assert "train.py" in members and "common/tracking.py" in members


def test_a_requirement_without_a_binary_wheel_fails_synth_naming_it(
        tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only an sdist of the package: synth fails with one line naming program, file, package
    (pip is pointed at a local folder holding just the sdist, so no index is asked)."""
    program = tmp_path / "sdist_only"
    (program / "dists").mkdir(parents=True)
    (program / "dists" / "onlysdist-1.0.tar.gz").write_bytes(b"not a wheel")
    (program / "train.py").write_text("print('hi')\n")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(program / "dists"))
    requirements = program / "requirements.txt"
    requirements.write_text("onlysdist==1.0\n")
    with pytest.raises(VendoringError) as error:
        _bundle(tmp_path, program, settings, program="sdist-only", cache_dir=tmp_path / "wheels")
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"script program sdist-only: {requirements}: onlysdist==1.0 has no "
                              "binary wheel for the framework image (CPython 3.11, manylinux x86_64")
    assert not list((tmp_path / "wheels").glob("*/.complete")), "a failure caches nothing"


@pytest.mark.parametrize("line", ["-r base.txt", "--constraint=pins.txt", "--find-links ./dists",
                                  "-e ./mylib", "./wheels/mine.whl"])
def test_a_requirements_file_naming_another_file_or_place_is_refused(tmp_path: Path, line: str) -> None:
    """pip resolves them against the vendored copy's folder (wheels/), not the program's: the job
    would fail on SageMaker after a synth that passed."""
    (tmp_path / "requirements.txt").write_text(f"numpy==2.4.6\n{line}\n")
    with pytest.raises(VendoringError) as error:
        vendored_files(tmp_path / "requirements.txt", program="p",
                       target=WheelTarget("3.11", tmp_path / "wheels"))
    assert str(error.value) == (
        f"script program p: {tmp_path / 'requirements.txt'} line 2: {line!r} names another file "
        "or a local place, which a vendored bundle cannot carry: list the packages themselves in "
        "requirements.txt")
    assert not (tmp_path / "wheels").exists()


def test_a_requirements_file_of_comments_only_vendors_nothing(tmp_path: Path) -> None:
    (tmp_path / "requirements.txt").write_text("# nothing yet\n\n")
    assert vendored_files(tmp_path / "requirements.txt", program="p",
                          target=WheelTarget("3.11", tmp_path / "wheels")) == {}
    assert not (tmp_path / "wheels").exists()


def test_requirements_are_vendored_where_jobs_run_in_a_vpc(settings: Settings) -> None:
    """``public`` jobs pip install from PyPI at start; ``sealed`` (the default), ``vpc`` and
    ``isolated`` ones get wheels for the PyTorch image's Python (py311: 3.11)."""
    assert _wheels_for(dataclasses.replace(settings, network="public")) is None
    for network in ("sealed", "vpc", "isolated"):
        target = _wheels_for(dataclasses.replace(settings, network=network))
        assert target is not None and target.python_version == "3.11" and target.abi == "cp311"


def test_each_framework_s_wheels_are_for_its_own_image(settings: Settings) -> None:
    """Vendored wheels are for the program's framework image: its CPython and its glibc
    (smtrain/core/vendored_requirements.py, IMAGE_RUNTIMES, with the Dockerfiles as sources); an
    image whose Python is not known fails synth naming the setting."""
    from smtrain.core.programs import load

    sealed = dataclasses.replace(settings, network="sealed")
    expected = {"pytorch_example": ("3.11", 35), "tensorflow_example": ("3.12", 35),
                "huggingface_example": ("3.11", 31), "sklearn_example": ("3.9", 31),
                "xgboost_script_example": ("3.9", 31)}
    for name, (python, glibc) in expected.items():
        target = _wheels_for(sealed, load(ROOT / "tests" / "fixtures" / "programs" / name))
        assert target is not None and (target.python_version, target.glibc_minor) == (python, glibc), name
        assert target.platforms[0] == f"manylinux_2_{glibc}_x86_64"
    newer = dataclasses.replace(sealed, sklearn_version="1.4-2")
    with pytest.raises(SettingsError, match=r"^setting 'sklearnVersion' is 1.4-2: the Python of that sklearn "
                                            r"image is not known to the stack \(known: 1.2-1\)"):
        _wheels_for(newer, load(ROOT / "tests" / "fixtures" / "programs" / "sklearn_example"))
    # A PyTorch version not in the table: its py_version, and the oldest base (glibc 2.27).
    older = _wheels_for(dataclasses.replace(sealed, pytorch_version="2.3"))
    assert older is not None and (older.python_version, older.glibc_minor) == ("3.11", 27)
    # The program's own build is named when it is the program's manifest that sets it.
    sklearn = load(ROOT / "tests" / "fixtures" / "programs" / "sklearn_example")
    with pytest.raises(ProgramError, match=r"'script.framework_version' is 1.4-2: the Python of that"):
        _wheels_for(sealed, dataclasses.replace(sklearn, framework_version="1.4-2"))


def test_staleness_reads_a_vendored_bundle_as_the_programs_folder() -> None:
    """``smtrain start --local`` compares the synthesized bundle with the folder: the wheels and
    the rewritten requirements.txt are not a change."""
    files = {"train.py": b"x", "requirements.txt": b"--no-index\n", "wheels/a-1-py3-none-any.whl": b"w",
             "wheels/requirements.txt": b"a==1\n"}
    assert source_view(files) == {"train.py": b"x", "requirements.txt": b"a==1\n"}
    assert source_view({"train.py": b"x"}) == {"train.py": b"x"}


def test_staleness_reads_a_tracked_bundle_as_the_programs_folder(tmp_path: Path) -> None:
    """A bundle synthesized where jobs are tracked (its requirements.txt holds the tracking
    requirements) is the program's folder for ``smtrain start --local``; a real change is not."""
    from smtrain.core.programs import load
    from smtrain.local.staleness import _script_problem

    code = shipped_training_code(tmp_path / "code")
    program = load(code / "digits_mlp")
    stack = cdk.Stack(cdk.App(outdir=str(tmp_path / "cdk.out")), "Bundle")
    bundle = SourceBundle(stack, "Source", source_dir=program.directory, build_dir=tmp_path / "bundles",
                          extra_packages={name: code / name for name in program.shared}, with_tracking=True)
    built = tmp_path / "bundles" / f"sourcedir-{bundle.archive_sha256}.tar.gz"
    assert b"mlflow-skinny" in _members(bundle, tmp_path / "bundles")["requirements.txt"]
    assert _script_problem(program, built) is None
    (program.directory / "train.py").write_text("print('changed')\n")
    problem = _script_problem(program, built)
    assert problem is not None and "train.py" in problem


def test_a_tracking_file_naming_another_file_fails_synth(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text("print('hi')\n")
    (tmp_path / "requirements-tracking.txt").write_text("-r requirements.txt\nmlflow-skinny==3.17.2\n")
    stack = cdk.Stack(cdk.App(outdir=str(tmp_path / "cdk.out")), "Bundle")
    with pytest.raises(ValueError, match=r"requirements-tracking.txt line 1: '-r requirements.txt': list the "
                                         r"packages themselves"):
        SourceBundle(stack, "Source", source_dir=tmp_path, build_dir=tmp_path / "bundles", with_tracking=True)


# -- A build folder no one else can plant an archive in --------------------------------------------

def test_a_planted_archive_at_the_bundle_path_is_not_shipped(tmp_path: Path) -> None:
    """The archive's file is named by its SHA-256; a file already at that path with other bytes
    (planted, or half-written) is replaced, and the asset CDK stages is the real archive."""
    source = _tree(tmp_path / "src")
    expected = build_source_tarball(source)
    digest = hashlib.sha256(expected).hexdigest()
    build_dir = tmp_path / "bundles"
    build_dir.mkdir()
    planted = build_dir / f"sourcedir-{digest}.tar.gz"
    planted.write_bytes(b"import os; os.system('curl evil')")
    app = cdk.App(outdir=str(tmp_path / "cdk.out"))
    bundle = SourceBundle(cdk.Stack(app, "Bundle"), "Source", source_dir=source, build_dir=build_dir)
    assert bundle.archive_sha256 == digest
    assert planted.read_bytes() == expected
    app.synth()
    staged = [path for path in (tmp_path / "cdk.out").glob("asset.*") if path.is_file()]
    assert [path.read_bytes() for path in staged] == [expected]


def test_a_planted_gzip_in_the_compression_cache_is_not_returned(tmp_path: Path) -> None:
    source = _tree(tmp_path / "src")
    first = build_source_tarball(source, gzip_cache=tmp_path / "by-tar")
    (cached,) = (tmp_path / "by-tar").glob("tar-*.tar.gz")
    cached.write_bytes(gzip.compress(b"not the tar"))
    assert build_source_tarball(source, gzip_cache=tmp_path / "by-tar") == first
    assert cached.read_bytes() == first


def test_the_default_build_folder_is_this_users_only(tmp_path: Path) -> None:
    from infra.constructs.source_bundle import _private_dir

    mine = _private_dir(tmp_path / "mine")
    assert mine.stat().st_mode & 0o777 == 0o700
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(ValueError, match="is not a folder of this user's only"):
        _private_dir(shared)
    (tmp_path / "link").symlink_to(mine)
    with pytest.raises(ValueError, match="is not a folder of this user's only"):
        _private_dir(tmp_path / "link")
