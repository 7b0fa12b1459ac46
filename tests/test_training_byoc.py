"""The BYOC entry point: the /opt/ml contract without the toolkit, and its Dockerfile."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from smtrain.core.programs import load as load_program
from smtrain.local.job_tree import JobTree, build_job_tree
from tests.helpers import Synthesized
from tests.training_support import TRAINING_CODE, parse_metrics, prepared_program, run_byoc

HADOLINT = Path(sys.executable).parent / "hadolint"
#: The shipped BYOC program these tests run (folder training_code/digits_lightgbm; its sample
#: data: ``<dir>/digits_lightgbm/<channel>``).
PROGRAM = "digits_lightgbm"
DOCKERFILE = TRAINING_CODE / PROGRAM / "Dockerfile"
MIN_ACCURACY = 0.93


def _channels(sample_data: Path) -> dict[str, Path]:
    return {c: sample_data / PROGRAM / c for c in ("train", "validation")}


def test_trains_a_loadable_model(synthesized: Synthesized, sample_data: Path, tmp_path: Path) -> None:
    program = prepared_program(synthesized, "PrepareDigitsLightgbm")
    assert program["kind"] == "byoc"
    hyperparameters = {**program["baseHyperparameters"], **program["trainingDefaults"],
                       **program["fixedHyperparameters"]}
    result, tree = run_byoc(tmp_path / "job", hyperparameters=hyperparameters,
                            channels=_channels(sample_data))
    assert result.returncode == 0, result.stderr
    assert tree.failure_reason() is None
    metrics = parse_metrics(result.stdout, program["algorithm"]["MetricDefinitions"])
    assert len(metrics["validation:accuracy"]) == 10  # 100 rounds, a line every 10
    assert metrics["validation:accuracy"][-1] >= MIN_ACCURACY
    assert metrics["train:loss"][-1] < metrics["train:loss"][0]

    import lightgbm

    booster = lightgbm.Booster(model_file=str(tree.model_dir / "model.txt"))
    rows = np.loadtxt(sample_data / PROGRAM / "validation" / "digits.csv", delimiter=",")
    probabilities = np.asarray(booster.predict(rows[:, 1:]))
    accuracy = float((probabilities.argmax(axis=1) == rows[:, 0]).mean())
    assert accuracy == pytest.approx(metrics["validation:accuracy"][-1], abs=1e-6)


def _main_in_process(monkeypatch: pytest.MonkeyPatch, base_dir: Path, *,
                     hyperparameters: dict[str, str], channels: dict[str, Path]) -> tuple[int, JobTree]:
    """``train``'s ``main`` (byoc_training.cli) in this process, on a job's /opt/ml tree
    (``SAGEMAKER_BASE_DIR``): its exit status and the tree. The process itself, as the image
    runs it, is started by :func:`test_missing_channel` and the loadable-model test."""
    for directory in (TRAINING_CODE, TRAINING_CODE / PROGRAM):
        monkeypatch.syspath_prepend(str(directory))
    from byoc_training import cli  # type: ignore[import-not-found]

    tree = build_job_tree(base_dir, hyperparameters=hyperparameters, channels=channels)
    for variable, value in tree.environment().items():
        monkeypatch.setenv(variable, value)
    return cli.main(), tree


@pytest.mark.parametrize(("hyperparameters", "reason"), [
    ({"num_leaves": "many"},
     "HyperparameterError: hyperparameter 'num_leaves' must be an integer, got 'many'"),
    ({"learning_rate": "2"},
     "HyperparameterError: hyperparameter 'learning_rate' must be in (0, 1], got 2.0"),
    ({"num_trees": "5"}, "HyperparameterError: unknown hyperparameter(s) ['num_trees']"),
])
def test_bad_hyperparameter(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                            sample_data: Path, tmp_path: Path, hyperparameters: dict[str, str],
                            reason: str) -> None:
    status, tree = _main_in_process(monkeypatch, tmp_path / "job", hyperparameters=hyperparameters,
                                    channels=_channels(sample_data))
    assert status == 1
    failure = tree.failure_reason()
    assert failure is not None and failure.startswith(reason), failure
    assert reason in capsys.readouterr().err
    assert not (tree.model_dir / "model.txt").exists()


def test_missing_channel(sample_data: Path, tmp_path: Path) -> None:
    """As the image runs it: ``train`` in a process of its own, its exit status SageMaker's."""
    result, tree = run_byoc(tmp_path / "job", hyperparameters={},
                            channels={"train": sample_data / PROGRAM / "train"})
    assert result.returncode == 1
    reason = "ContractError: channel 'validation' is required but the job declares only ['train']"
    assert tree.failure_reason() == reason
    assert reason in result.stderr


def test_malformed_channel(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for channel in ("train", "validation"):
        (tmp_path / channel).mkdir()
        (tmp_path / channel / "data.csv").write_text("label,pixel\n1,2\n")
    status, tree = _main_in_process(monkeypatch, tmp_path / "job", hyperparameters={},
                                    channels={c: tmp_path / c for c in ("train", "validation")})
    assert status == 1
    failure = tree.failure_reason()
    assert failure is not None and "channel 'train': data.csv is not numeric CSV" in failure


def _hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(HADOLINT), "--failure-threshold", "error", str(path)],
                          capture_output=True, text=True, timeout=60)


def test_hadolint_is_clean() -> None:
    result = _hadolint(DOCKERFILE)
    assert result.returncode == 0, result.stdout
    assert result.stdout.strip() == "", "not even warnings or info findings"


def test_hadolint_catches_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nMAINTAINER someone\nRUN apt-get install curl\n")
    result = _hadolint(bad)
    assert "DL3006" in result.stdout and "DL3008" in result.stdout  # untagged base, unpinned apt


def _staged_folders() -> list[str]:
    """What the manifest stages for the image: the build context is training_code/
    (``context = ".."``), of which only the program's folder and its ``shared`` folders."""
    program = load_program(TRAINING_CODE / PROGRAM)
    assert (program.kind, program.build_context, program.shared) == ("byoc", "..", ("common",))
    return [program.name, *program.shared]


def test_image_holds_what_the_entry_point_imports() -> None:
    copies = re.findall(r"^COPY (\S+)", DOCKERFILE.read_text(), flags=re.MULTILINE)
    staged = _staged_folders()
    for source in copies:
        # Relative to the context (training_code/), and inside a folder the build sees.
        assert (TRAINING_CODE / source).exists(), source
        assert source.split("/")[0] in staged, f"COPY {source}: not staged (only {staged})"
    assert {"common/", f"{PROGRAM}/byoc_training/", f"{PROGRAM}/train",
            f"{PROGRAM}/requirements.txt"} <= set(copies)
    # Pinned by digest (a tag can be pushed again with other contents), the skeleton's base too.
    from smtrain.cli.program_commands import BYOC_BASE_IMAGE

    assert re.fullmatch(r"python:3\.12\.8-slim-bookworm@sha256:[0-9a-f]{64}", BYOC_BASE_IMAGE)
    assert DOCKERFILE.read_text().splitlines()[1] == f"FROM {BYOC_BASE_IMAGE}"
    requirements = (TRAINING_CODE / PROGRAM / "requirements.txt").read_text()
    assert all("==" in line for line in requirements.splitlines() if line and not line.startswith("#"))
    assert (TRAINING_CODE / PROGRAM / "train").stat().st_mode & 0o111


def test_stack_stages_only_the_program_and_its_shared_code(synthesized: Synthesized) -> None:
    """The synthesized stack's image asset: the Dockerfile inside training_code/, and only the
    program's folder and ``common`` staged (no other program, no bytecode), which is everything
    the Dockerfile copies."""
    manifest = json.loads((synthesized.outdir / "Workflow.assets.json").read_text())
    (image,) = manifest["dockerImages"].values()
    assert image["source"]["dockerFile"] == f"{PROGRAM}/Dockerfile"
    staged = synthesized.outdir / image["source"]["directory"]
    assert sorted(p.name for p in staged.iterdir()) == sorted(_staged_folders())
    assert not [p for p in staged.rglob("*") if p.name == "__pycache__" or p.suffix == ".pyc"]
    for source in re.findall(r"^COPY (\S+)", (staged / PROGRAM / "Dockerfile").read_text(),
                             flags=re.MULTILINE):
        assert (staged / source).exists(), source


def test_image_hash_follows_only_the_program_and_its_shared_code(tmp_path: Path) -> None:
    """The image's asset hash (its tag in the project's repository; what CDK computes for the
    stack) changes with the program's own files and its shared code, and does not change when
    another program, another file of training_code/ or a new program folder changes."""
    import shutil

    from infra.node_runtime import use_pinned_node

    use_pinned_node()
    import aws_cdk as cdk
    from aws_cdk import aws_ecr as ecr

    from infra.constructs.training_image import TrainingImage

    code = tmp_path / "training_code"
    shutil.copytree(TRAINING_CODE, code, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    staged = _staged_folders()

    def asset_hash() -> str:
        # As the workflow stack builds a program with ``context = ".."``.
        stack = cdk.Stack(cdk.App(), "Probe")
        image = TrainingImage(stack, "Image", directory=code, dockerfile=f"{PROGRAM}/Dockerfile",
                              include=staged, repository=ecr.Repository(stack, "Repository"))
        return str(image.image_tag)

    before = asset_hash()
    assert asset_hash() == before, "the same files, the same hash"
    # Elsewhere in the context: another program, the sample data module, a new program folder.
    (code / "digits_mlp" / "train.py").write_text("# changed\n")
    (code / "digits_xgboost" / "program.toml").write_text("# changed\n")
    (code / "sample_data.py").write_text("# changed\n")
    (code / "another_program").mkdir()
    (code / "another_program" / "train.py").write_text("print('new')\n")
    # Bytecode inside the staged folders is not part of the image either.
    (code / PROGRAM / "__pycache__").mkdir()
    (code / PROGRAM / "__pycache__" / "train.cpython-311.pyc").write_bytes(b"\0")
    assert asset_hash() == before
    # The program's own code, and the shared code its Dockerfile copies.
    trainer = code / PROGRAM / "byoc_training" / "trainer.py"
    trainer.write_text(trainer.read_text() + "# changed\n")
    after_program = asset_hash()
    assert after_program != before
    (code / "common" / "channels.py").write_text("# changed\n")
    assert asset_hash() not in (before, after_program)


def test_a_relative_cdk_out_gives_entry_points_a_job_can_run(
        synthesized: Synthesized, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`smtrain start --local` defaults to the relative `cdk.out`; jobs run in their own job
    tree, so the deployment must name every BYOC entry point and build context absolutely (it
    once looked for `<job>/opt_ml/cdk.out/asset.../train`)."""
    from smtrain.local.deployment import load_deployment
    from smtrain.local.s3_stand_in import LocalS3

    monkeypatch.chdir(synthesized.outdir.parent)
    deployment = load_deployment(Path(synthesized.outdir.name), s3=LocalS3(tmp_path / "s3"))
    programs = list(deployment.byoc_programs.values())
    assert programs, "the shipped app has a BYOC program"
    monkeypatch.chdir(tmp_path)  # where a job runs: elsewhere
    for program in programs:
        assert program.entry_point.is_absolute() and program.entry_point.is_file(), program
        assert program.context_dir.is_absolute() and program.context_dir.is_dir(), program
