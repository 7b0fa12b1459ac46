"""The newcomer's first hour, run the way `smtrain new-program` and the README say (issue 19):
programs scaffolded with `smtrain new-program` (a script and a BYOC one) are synthesized with the
shipped ones, then trained with `smtrain start --local` at the CLI's defaults (no `--cdk-out`, no
`--work-dir`) from the project root, and from another directory with relative paths; the shipped
built-in program likewise. Real jobs: AWS's training toolkit for the script, the entry point on
its `#!` line for the BYOC image, the built-in's stand-in.

One synth for the module, in-process, of a copy of the shipped programs plus the scaffolded ones.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from smtrain.cli import EXIT_OK, main
from tests.conftest import shipped_training_code, synthesize


def _write_csv(path: Path, rows: int, seed: int) -> None:
    """The skeletons' data: two separable classes, label in column 0, no header."""
    rng = random.Random(seed)
    path.mkdir(parents=True)
    lines = []
    for _ in range(rows):
        label = rng.randrange(2)
        centre = 2.0 if label else -2.0
        lines.append(",".join([str(label), *(f"{rng.gauss(centre, 1.0):.4f}" for _ in range(3))]))
    (path / "data.csv").write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, cdk_context: dict[str, Any], settings: Any) -> Path:
    """A project root: training_code/ (shipped + scaffolded), cdk.out/, data/."""
    root = tmp_path_factory.mktemp("first-hour")
    code = shipped_training_code(root / "training_code")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        for name, kind in (("my_script", "script"), ("my_byoc", "byoc")):
            assert main(["new-program", name, "--kind", kind, "--dir", str(code)]) == EXIT_OK
    synthesize(cdk_context, settings, root / "cdk.out", training_code_dir=code)
    _write_csv(root / "data" / "train", 80, seed=1)
    _write_csv(root / "data" / "validation", 40, seed=2)
    return root


def _start(project: Path, cwd: Path, args: list[str], monkeypatch: pytest.MonkeyPatch,
           capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("SMTRAIN_TRAINING_CODE", str(project / "training_code"))
    capsys.readouterr()
    code = main(["start", "--local", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_a_scaffolded_script_program_trains_at_the_clis_defaults_from_the_project_root(
        project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _start(project, project, ["--program", "my_script", "--input", "train=data/train",
                                               "--input", "validation=data/validation"],
                            monkeypatch, capsys)
    assert code == EXIT_OK, out + err
    assert "SUCCEEDED" in out
    assert (project / ".work" / "local" / "jobs").is_dir()  # the default --work-dir, under the root


def test_a_scaffolded_byoc_program_trains_from_another_directory_with_relative_paths(
        project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    elsewhere = project / "notebooks"
    elsewhere.mkdir(exist_ok=True)
    code, out, err = _start(project, elsewhere,
                            ["--program", "my_byoc", "--cdk-out", "../cdk.out",
                             "--input", "train=../data/train", "--input", "validation=../data/validation"],
                            monkeypatch, capsys)
    assert code == EXIT_OK, out + err
    assert "SUCCEEDED" in out
    assert "the BYOC image's entry point runs on this machine" in out
    assert (elsewhere / ".work" / "local" / "jobs").is_dir()


def test_the_shipped_builtin_program_trains_at_the_clis_defaults(
        project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _start(project, project, ["--program", "digits_xgboost"], monkeypatch, capsys)
    assert code == EXIT_OK, out + err
    assert "SUCCEEDED" in out
