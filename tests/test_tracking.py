"""Experiment tracking offline: local runs land in MLflow, tagged back to their executions;
`smtrain compare` tabulates and plots them."""

from __future__ import annotations

import contextlib
import os
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from mlflow.tracking import MlflowClient

from smtrain.cli.compare import figure, load_rows
from smtrain.local.engine import OfflineEngine
from tests.conftest import ROOT
from tests.helpers import Synthesized

SMTRAIN = str(Path(sys.executable).parent / "smtrain")


@pytest.fixture(scope="module")
def tracked(synthesized: Synthesized, sample_data: Path,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[OfflineEngine, MlflowClient]]:
    with OfflineEngine(outdir=synthesized.outdir, work_dir=tmp_path_factory.mktemp("tracked")) as engine:
        engine.s3.put_tree(sample_data, f"s3://{engine.deployment.data_bucket}/datasets/")
        single = engine.run({"program": "digits_mlp", "hyperparameters": {"epochs": "3"}},
                            name="tracked-single")
        assert single.succeeded, single.cause
        tuned = engine.run({"program": "digits_lightgbm",
                            "hyperparameters": {"num_boost_round": "20", "report_every": "5"},
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
    assert run.data.tags["smtrain.program"] == "digits_mlp"
    assert "smtrain.method" not in run.data.tags
    assert run.data.tags["smtrain.training_job"] == run.info.run_name
    # Logged by the program itself (its parameter names, its model), not for it by the local backend.
    assert "smtrain.logged_by" not in run.data.tags
    assert "smtrain.tuning_job" not in run.data.tags
    assert run.data.params == {"epochs": "3", "batch_size": "64", "learning_rate": "0.01",
                               "hidden_units": "64", "seed": "42"}
    history = client.get_metric_history(run.info.run_id, "validation:accuracy")
    assert [m.step for m in sorted(history, key=lambda m: m.step)] == [1, 2, 3]
    assert {"train:loss", "validation:loss", "validation:accuracy"} <= set(run.data.metrics)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "model")}
    # The model as logged can be served: its inference code is beside the weights.
    assert artifacts == {"model/model.pth", "model/model_config.json", "model/code"}


def test_tuning_trials_are_tracked_with_their_tuning_job(tracked: tuple[OfflineEngine, MlflowClient]) -> None:
    _, client = tracked
    runs = _runs(client, "tracked-tuning")
    assert len(runs) == 3
    tuning_jobs = {run.data.tags["smtrain.tuning_job"] for run in runs}
    assert len(tuning_jobs) == 1
    (tuning_job,) = tuning_jobs
    assert all(run.info.run_name.startswith(f"{tuning_job}-") for run in runs)
    assert all(run.data.tags["smtrain.program"] == "digits_lightgbm" for run in runs)
    assert all("smtrain.logged_by" not in run.data.tags for run in runs), "logged by the program"
    assert len({run.data.params["learning_rate"] for run in runs}) == 3, "each trial its own value"
    assert all(len(client.get_metric_history(r.info.run_id, "validation:accuracy")) == 4 for r in runs)


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_compare_table_and_plot(tracked: tuple[OfflineEngine, MlflowClient], tmp_path: Path) -> None:
    engine, client = tracked
    plot = tmp_path / "curves.png"
    result = subprocess.run([SMTRAIN, "compare", "--tracking-uri", str(engine.tracking_uri),
                             "--sort", "validation:accuracy", "--plot", str(plot)],
                            capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["execution", "program", "run"]
    assert "validation:accuracy" in lines[0] and lines[0].split()[-1] == "seconds"
    rows = [line.split() for line in lines[1:5]]
    assert sorted(row[:2] for row in rows) == [["tracked-single", "digits_mlp"]] + \
        [["tracked-tuning", "digits_lightgbm"]] * 3
    accuracies = [float(row[-2]) for row in rows]
    assert accuracies == sorted(accuracies, reverse=True), "sorted best first"
    assert lines[5:] == [f"plot: {plot}"]

    # The legend sits right of the 1000x600 px axes figure and the PNG is cropped to hold it
    # (bbox_inches="tight"): wider than 1000 px, as high as the axes give, nothing cut off.
    width, height = _png_size(plot)
    assert width > 1000 and 400 <= height <= 600, (width, height)
    drawing = figure(client, load_rows(client, experiment="smtrain", metric="validation:accuracy",
                                       limit=50, ascending=False), "validation:accuracy")
    (axes,) = drawing.axes
    legend = axes.get_legend()
    runs = _runs(client, "tracked-single") + _runs(client, "tracked-tuning")
    assert sorted(text.get_text() for text in legend.get_texts()) == sorted(
        f"{run.data.tags['smtrain.execution']} / {run.info.run_name}" for run in runs), \
        "every run's full name: its execution and its training job"
    renderer = FigureCanvasAgg(drawing).get_renderer()
    assert legend.get_window_extent(renderer).x0 >= axes.get_window_extent(renderer).x1
    saved = drawing.get_tightbbox(renderer).padded(0.1)  # savefig's default pad_inches
    assert abs(width - saved.width * drawing.dpi) <= 2 and abs(height - saved.height * drawing.dpi) <= 2
    assert legend.get_window_extent(renderer).x1 <= saved.x1 * drawing.dpi, "the legend is in the image"
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


#: What MLflow's fluent API writes into os.environ as it runs.
_MLFLOW_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID")


@pytest.fixture
def tracker_class(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """``common.tracking.Tracker``, run in this process, and MLflow's state put back afterwards:
    ``mlflow.set_tracking_uri`` and ``mlflow.set_experiment`` also write ``MLFLOW_TRACKING_URI``
    and ``MLFLOW_EXPERIMENT_ID`` into ``os.environ``, which every later test's training
    subprocess would inherit (its jobs would then log to this test's store, artifacts in the
    working directory's ./mlruns, or fail to start their runs)."""
    import mlflow
    from mlflow.tracking import fluent
    from mlflow.tracking._tracking_service import utils

    saved = {key: os.environ.pop(key, None) for key in _MLFLOW_VARIABLES}
    monkeypatch.setattr(utils, "_tracking_uri", None)
    monkeypatch.setattr(fluent, "_active_experiment_id", None)
    sys.path.insert(0, str(ROOT / "training_code"))
    try:
        from common.tracking import Tracker  # type: ignore[import-not-found]
    finally:
        sys.path.pop(0)
    yield Tracker
    with contextlib.suppress(Exception):
        mlflow.end_run()  # a run the tracker left open when it gave up
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def test_tracking_failure_never_fails_training(tracker_class: Any, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """A store that cannot be opened: one message, tracking off, training goes on. (A database
    under a path whose parent is a file fails even for root. Not a ``file://`` directory: MLflow
    refuses its filesystem backend outright ("in maintenance mode"), which is not this failure.)"""
    (tmp_path / "not-a-directory").write_text("x")
    unreachable = f"sqlite:///{tmp_path / 'not-a-directory' / 'mlflow.db'}"
    with tracker_class(params={"a": 1}, environ={"MLFLOW_TRACKING_URI": unreachable}) as tracker:
        tracker.log_metrics({"x": 1.0}, step=1)
        tracker.log_model(tmp_path)
    assert not tracker.active
    messages = [line for line in capsys.readouterr().err.splitlines() if line.startswith("tracking:")]
    assert len(messages) == 1, messages
    assert messages[0].startswith("tracking: starting the run failed, continuing without MLflow: ")
    assert "maintenance mode" not in messages[0]
    with tracker_class(params={"a": 1}, environ={}) as off:
        assert not off.active


def test_tracking_failure_mid_run_stops_tracking_only(tracker_class: Any, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The store goes away after the run started: reported once, later calls are no-ops."""
    import mlflow

    def unreachable(*args: Any, **kwargs: Any) -> None:
        raise ConnectionError("tracking server unreachable")

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with tracker_class(params={"a": 1}, environ={"MLFLOW_TRACKING_URI": uri}) as tracker:
        assert tracker.active
        monkeypatch.setattr(mlflow, "log_metrics", unreachable)
        tracker.log_metrics({"x": 1.0}, step=1)
        assert not tracker.active
        tracker.log_metrics({"x": 2.0}, step=2)
        tracker.log_model(tmp_path)
    messages = [line for line in capsys.readouterr().err.splitlines() if line.startswith("tracking:")]
    assert messages == ["tracking: logging metrics failed, continuing without MLflow: "
                        "ConnectionError: tracking server unreachable"]

