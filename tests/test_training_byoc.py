"""The BYOC entry point: the /opt/ml contract without the toolkit, and its Dockerfile."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import Synthesized
from tests.training_support import TRAINING_CODE, parse_metrics, prepared_method, run_byoc

HADOLINT = Path(sys.executable).parent / "hadolint"
DOCKERFILE = TRAINING_CODE / "byoc" / "Dockerfile"
MIN_ACCURACY = 0.93


def _channels(sample_data: Path) -> dict[str, Path]:
    return {c: sample_data / "byoc" / c for c in ("train", "validation")}


def test_trains_a_loadable_model(synthesized: Synthesized, sample_data: Path, tmp_path: Path) -> None:
    method = prepared_method(synthesized, "PrepareDigitsLightgbm")
    hyperparameters = {**method["trainingDefaults"], **method["fixedHyperparameters"]}
    result, tree = run_byoc(tmp_path / "job", hyperparameters=hyperparameters,
                            channels=_channels(sample_data))
    assert result.returncode == 0, result.stderr
    assert tree.failure_reason() is None
    metrics = parse_metrics(result.stdout, method["algorithm"]["MetricDefinitions"])
    assert len(metrics["validation:accuracy"]) == 10  # 100 rounds, a line every 10
    assert metrics["validation:accuracy"][-1] >= MIN_ACCURACY
    assert metrics["train:loss"][-1] < metrics["train:loss"][0]

    import lightgbm

    booster = lightgbm.Booster(model_file=str(tree.model_dir / "model.txt"))
    rows = np.loadtxt(sample_data / "byoc" / "validation" / "digits.csv", delimiter=",")
    probabilities = np.asarray(booster.predict(rows[:, 1:]))
    accuracy = float((probabilities.argmax(axis=1) == rows[:, 0]).mean())
    assert accuracy == pytest.approx(metrics["validation:accuracy"][-1], abs=1e-6)


@pytest.mark.parametrize(("hyperparameters", "reason"), [
    ({"num_leaves": "many"},
     "HyperparameterError: hyperparameter 'num_leaves' must be an integer, got 'many'"),
    ({"learning_rate": "2"},
     "HyperparameterError: hyperparameter 'learning_rate' must be in (0, 1], got 2.0"),
    ({"num_trees": "5"}, "HyperparameterError: unknown hyperparameter(s) ['num_trees']"),
])
def test_bad_hyperparameter(sample_data: Path, tmp_path: Path, hyperparameters: dict[str, str],
                            reason: str) -> None:
    result, tree = run_byoc(tmp_path / "job", hyperparameters=hyperparameters,
                            channels=_channels(sample_data))
    assert result.returncode == 1
    failure = tree.failure_reason()
    assert failure is not None and failure.startswith(reason), failure
    assert reason in result.stderr
    assert not (tree.model_dir / "model.txt").exists()


def test_missing_channel(sample_data: Path, tmp_path: Path) -> None:
    result, tree = run_byoc(tmp_path / "job", hyperparameters={},
                            channels={"train": sample_data / "byoc" / "train"})
    assert result.returncode == 1
    assert tree.failure_reason() == (
        "ContractError: channel 'validation' is required but the job declares only ['train']")


def test_malformed_channel(tmp_path: Path) -> None:
    for channel in ("train", "validation"):
        (tmp_path / channel).mkdir()
        (tmp_path / channel / "data.csv").write_text("label,pixel\n1,2\n")
    result, tree = run_byoc(tmp_path / "job", hyperparameters={},
                            channels={c: tmp_path / c for c in ("train", "validation")})
    assert result.returncode == 1
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


def test_image_holds_what_the_entry_point_imports() -> None:
    copies = re.findall(r"^COPY (\S+)", DOCKERFILE.read_text(), flags=re.MULTILINE)
    for source in copies:
        assert (TRAINING_CODE / source).exists(), source
    assert {"common/", "byoc/byoc_training/", "byoc/train"} <= set(copies)
    assert DOCKERFILE.read_text().splitlines()[1].startswith("FROM python:3.12.8-slim-bookworm")
    requirements = (TRAINING_CODE / "byoc" / "requirements.txt").read_text()
    assert all("==" in line for line in requirements.splitlines() if line and not line.startswith("#"))
    assert (TRAINING_CODE / "byoc" / "train").stat().st_mode & 0o111


def test_docker_context_ignores_script_mode(tmp_path: Path) -> None:
    """The image's asset hash (what CDK computes for the stack) must not change when only
    script-mode code changes, and must change with the BYOC code."""
    import shutil

    from infra.node_runtime import use_pinned_node

    use_pinned_node()
    import aws_cdk as cdk
    from aws_cdk import aws_ecr_assets as ecr_assets

    def asset_hash(root: Path) -> str:
        stack = cdk.Stack(cdk.App(), "Probe")
        asset = ecr_assets.DockerImageAsset(stack, "Image", directory=str(root), file="digits_lightgbm/Dockerfile")
        return str(asset.asset_hash)

    copy = tmp_path / "training_code"
    shutil.copytree(TRAINING_CODE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    before = asset_hash(copy)
    (copy / "digits_mlp" / "train.py").write_text("# changed\n")
    (copy / "sample_data.py").write_text("# changed\n")
    assert asset_hash(copy) == before
    (copy / "common" / "channels.py").write_text("# changed\n")
    assert asset_hash(copy) != before
