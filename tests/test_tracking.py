"""Experiment tracking offline: local runs land in MLflow, tagged back to their executions;
`smtrain compare` tabulates and plots them."""

from __future__ import annotations

import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from smtrain.local.engine import OfflineEngine
from tests.conftest import ROOT
from tests.helpers import Synthesized

SMTRAIN = str(Path(sys.executable).parent / "smtrain")


@pytest.fixture(scope="module")
def tracked(synthesized: Synthesized, sample_data: Path,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[OfflineEngine, MlflowClient]]:
    with OfflineEngine(outdir=synthesized.outdir, work_dir=tmp_path_factory.mktemp("tracked")) as engine:
        engine.s3.put_tree(sample_data, f"s3://{engine.deployment.data_bucket}/datasets/")
        single = engine.run({"method": "script", "hyperparameters": {"epochs": "3"}}, name="tracked-single")
        assert single.succeeded, single.cause
        tuned = engine.run({"method": "byoc", "hyperparameters": {"num_boost_round": "20", "report_every": "5"},
                            "tuning": {"maxJobs": 3, "maxParallelJobs": 2}}, name="tracked-tuning")
        assert tuned.succeeded, tuned.cause
        assert engine.tracking_uri is not None
        yield engine, MlflowClient(tracking_uri=engine.tracking_uri)


def _runs(client: MlflowClient, execution: str) -> list[Any]:
    experiment = client.get_experiment_by_name("smtrain")
    assert experiment is not None
    return list(client.search_runs([experiment.experiment_id],
                                   filter_string=f"tags.`smtrain.execution` = '{execution}'"))


def test_script_run_is_tracked(tracked: tuple[OfflineEngine, MlflowClient]) -> None:
    _, client = tracked
    (run,) = _runs(client, "tracked-single")
    assert run.info.status == "FINISHED"
    assert run.data.tags["smtrain.method"] == "script"
    assert run.data.tags["smtrain.training_job"] == run.info.run_name
    assert "smtrain.tuning_job" not in run.data.tags
    assert run.data.params == {"epochs": "3", "batch_size": "64", "learning_rate": "0.01",
                               "hidden_units": "64", "seed": "42"}
    history = client.get_metric_history(run.info.run_id, "validation:accuracy")
    assert [m.step for m in sorted(history, key=lambda m: m.step)] == [1, 2, 3]
    assert {"train:loss", "validation:loss", "validation:accuracy"} <= set(run.data.metrics)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "model")}
    assert artifacts == {"model/model.pth", "model/model_config.json"}


def test_tuning_trials_are_tracked_with_their_tuning_job(tracked: tuple[OfflineEngine, MlflowClient]) -> None:
    _, client = tracked
    runs = _runs(client, "tracked-tuning")
    assert len(runs) == 3
    tuning_jobs = {run.data.tags["smtrain.tuning_job"] for run in runs}
    assert len(tuning_jobs) == 1
    (tuning_job,) = tuning_jobs
    assert all(run.info.run_name.startswith(f"{tuning_job}-") for run in runs)
    assert all(run.data.tags["smtrain.method"] == "byoc" for run in runs)
    assert len({run.data.params["learning_rate"] for run in runs}) == 3, "each trial its own value"
    assert all(len(client.get_metric_history(r.info.run_id, "validation:accuracy")) == 4 for r in runs)


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_compare_table_and_plot(tracked: tuple[OfflineEngine, MlflowClient], tmp_path: Path) -> None:
    engine, _ = tracked
    plot = tmp_path / "curves.png"
    result = subprocess.run([SMTRAIN, "compare", "--tracking-uri", str(engine.tracking_uri),
                             "--sort", "validation:accuracy", "--plot", str(plot)],
                            capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["execution", "method", "run"]
    assert "validation:accuracy" in lines[0] and lines[0].split()[-1] == "seconds"
    rows = [line.split() for line in lines[1:5]]
    assert sorted(row[0] for row in rows) == ["tracked-single", "tracked-tuning", "tracked-tuning",
                                              "tracked-tuning"]
    accuracies = [float(row[-2]) for row in rows]
    assert accuracies == sorted(accuracies, reverse=True), "sorted best first"
    assert _png_size(plot) == (1000, 600)
    ascending = subprocess.run([SMTRAIN, "compare", "--tracking-uri", str(engine.tracking_uri),
                                "--sort", "validation:loss"], capture_output=True, text=True, timeout=120)
    losses = [float(line.split()[-2]) for line in ascending.stdout.splitlines()[1:5]]
    assert losses == sorted(losses), "losses smallest first"


@pytest.mark.parametrize(("args", "message"), [
    (["compare"], "no tracking URI: pass --tracking-uri"),
    (["compare", "--local", "--work-dir", "/nonexistent"], "no offline runs tracked under /nonexistent"),
    (["compare", "--tracking-uri", "sqlite:////tmp/x.db", "--plot", "out.jpg"], "must name a .png file"),
])
def test_compare_bad_input(args: list[str], message: str) -> None:
    env = {"PATH": "/usr/bin:/bin"}
    result = subprocess.run([SMTRAIN, *args], capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 2 and message in result.stderr


def test_tracking_failure_never_fails_training(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "training_code"))
    try:
        from common.tracking import Tracker  # type: ignore[import-not-found]
    finally:
        sys.path.pop(0)
    with Tracker(params={"a": 1}, environ={"MLFLOW_TRACKING_URI": "file:///nonexistent/denied"}) as tracker:
        tracker.log_metrics({"x": 1.0}, step=1)
        tracker.log_model(tmp_path)
    assert not tracker.active
    with Tracker(params={"a": 1}, environ={}) as off:
        assert not off.active
