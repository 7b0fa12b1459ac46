"""Script mode through AWS's own training toolkit, with the stack's real tarball and requests."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers import Synthesized
from tests.training_support import (
    TRAINING_CODE,
    parse_metrics,
    prepared_method,
    run_process,
    run_toolkit,
    script_bundle,
    training_hyperparameters,
)

SCRIPT = TRAINING_CODE / "script_mode" / "train.py"
#: What the default hyperparameters reach on the digits sample (measured: about 0.97).
MIN_ACCURACY = 0.95


def _channels(sample_data: Path) -> dict[str, Path]:
    return {c: sample_data / "script" / c for c in ("train", "validation")}


def _hyperparameters(synthesized: Synthesized, bundle: Path, **overrides: str) -> dict[str, str]:
    method = prepared_method(synthesized, "PrepareScriptCpu")
    hyperparameters = training_hyperparameters(method, overrides)
    asset_hash = bundle.name.split(".")[1]
    assert hyperparameters["sagemaker_submit_directory"].endswith(f"/{asset_hash}.gz")
    # The S3 URI becomes the same file on disk (the toolkit accepts a local tarball).
    hyperparameters["sagemaker_submit_directory"] = str(bundle)
    return hyperparameters


def test_toolkit_trains_from_the_stack_bundle(synthesized: Synthesized, sample_data: Path,
                                              tmp_path: Path) -> None:
    bundle = script_bundle(synthesized)
    result, tree = run_toolkit(tmp_path / "job", channels=_channels(sample_data),
                               hyperparameters=_hyperparameters(synthesized, bundle))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Reporting training SUCCESS" in result.stderr + result.stdout
    assert tree.failure_reason() is None

    # The metric definitions the stack sends turn the job's log into numbers.
    definitions = prepared_method(synthesized, "PrepareScriptCpu")["algorithm"]["MetricDefinitions"]
    metrics = parse_metrics(result.stdout + result.stderr, definitions)
    assert {name: len(values) for name, values in metrics.items()} == {
        "train:loss": 10, "validation:loss": 10, "validation:accuracy": 10}
    assert metrics["validation:accuracy"][-1] >= MIN_ACCURACY
    assert metrics["train:loss"][-1] < metrics["train:loss"][0]

    # The saved model loads without the training arguments and is as good as reported.
    sys.path.insert(0, str(TRAINING_CODE / "script_mode"))
    try:
        from digits_model import load_model  # type: ignore[import-not-found]
    finally:
        sys.path.pop(0)
    model = load_model(tree.model_dir)
    rows = np.loadtxt(sample_data / "script" / "validation" / "digits.csv", delimiter=",")
    with torch.no_grad():
        predictions = model(torch.tensor(rows[:, 1:], dtype=torch.float32)).argmax(dim=1).numpy()
    accuracy = float((predictions == rows[:, 0]).mean())
    assert accuracy == pytest.approx(metrics["validation:accuracy"][-1], abs=1e-6)


@pytest.mark.parametrize(("name", "value", "message"), [
    ("epochs", "-3", "argument --epochs: must be a positive integer, got -3"),
    ("learning-rate", "fast", "argument --learning-rate: invalid positive_float value: 'fast'"),
])
def test_bad_hyperparameter_fails_the_job_with_the_reason(
        synthesized: Synthesized, sample_data: Path, tmp_path: Path, name: str, value: str,
        message: str) -> None:
    bundle = script_bundle(synthesized)
    result, tree = run_toolkit(tmp_path / "job", channels=_channels(sample_data),
                               hyperparameters=_hyperparameters(synthesized, bundle, **{name: value}))
    assert result.returncode != 0
    reason = tree.failure_reason()
    assert reason is not None and message in reason, reason
    assert not (tree.model_dir / "model.pth").exists()


def test_missing_channel_fails_with_the_reason(synthesized: Synthesized, sample_data: Path,
                                               tmp_path: Path) -> None:
    bundle = script_bundle(synthesized)
    result, tree = run_toolkit(tmp_path / "job", channels={"train": sample_data / "script" / "train"},
                               hyperparameters=_hyperparameters(synthesized, bundle))
    assert result.returncode != 0
    reason = tree.failure_reason()
    assert reason is not None and "channel 'validation' has no directory" in reason, reason


def _script_command(sample_data: Path, model_dir: Path, checkpoint_dir: Path, epochs: int) -> list[str]:
    return [sys.executable, str(SCRIPT), "--epochs", str(epochs), "--seed", "7",
            "--train", str(sample_data / "script" / "train"),
            "--validation", str(sample_data / "script" / "validation"),
            "--model-dir", str(model_dir), "--checkpoint-dir", str(checkpoint_dir)]


def _final_line(stdout: str) -> str:
    return [line for line in stdout.splitlines() if line.startswith("epoch=")][-1]


def _same_weights(left: Path, right: Path) -> bool:
    a = torch.load(left / "model.pth", weights_only=True)
    b = torch.load(right / "model.pth", weights_only=True)
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_interrupted_run_resumes_to_the_same_result(sample_data: Path, tmp_path: Path) -> None:
    epochs = 6
    whole = run_process(_script_command(sample_data, tmp_path / "m1", tmp_path / "c1", epochs),
                        extra_env={"PYTHONPATH": str(TRAINING_CODE)})
    assert whole.returncode == 0, whole.stderr

    # Kill the second run (SIGKILL, as a spot interruption would) once it reports epoch 3.
    command = _script_command(sample_data, tmp_path / "m2", tmp_path / "c2", epochs)
    env_path = {"PYTHONPATH": str(TRAINING_CODE)}
    import os

    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True,
                          env={**os.environ, **env_path}) as process:
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith("epoch=3 "):
                process.send_signal(signal.SIGKILL)
                break
        process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    assert not (tmp_path / "m2" / "model.pth").exists()

    resumed = run_process(command, extra_env=env_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from" in resumed.stdout
    assert "epoch=1 " not in resumed.stdout, "resumed runs skip finished epochs"
    assert _final_line(resumed.stdout) == _final_line(whole.stdout)
    assert _same_weights(tmp_path / "m1", tmp_path / "m2")


def test_two_processes_match_one(sample_data: Path, tmp_path: Path) -> None:
    """Data-parallel with torchrun and gloo: the same global batches, averaged gradients."""
    env = {"PYTHONPATH": str(TRAINING_CODE), "OMP_NUM_THREADS": "1"}
    single = run_process(_script_command(sample_data, tmp_path / "m1", tmp_path / "c1", 4), extra_env=env)
    assert single.returncode == 0, single.stderr
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    double = run_process([*torchrun, *_script_command(sample_data, tmp_path / "m2", tmp_path / "c2", 4)[1:]],
                         extra_env=env)
    assert double.returncode == 0, double.stderr[-3000:]
    one = dict(kv.split("=") for kv in _final_line(single.stdout).split())
    two = dict(kv.split("=") for kv in _final_line(double.stdout).split())
    # Float sums in another order: equal to 1e-4, the same predictions.
    for metric in ("train:loss", "validation:loss"):
        assert float(two[metric]) == pytest.approx(float(one[metric]), abs=1e-4), metric
    assert two["validation:accuracy"] == one["validation:accuracy"]
