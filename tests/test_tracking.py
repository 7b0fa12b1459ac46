"""Experiment tracking offline: local runs land in MLflow, tagged back to their executions;
`smtrain compare` tabulates and plots them."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import struct
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from mlflow.tracking import MlflowClient

from smtrain.cli.compare import figure, load_rows
from smtrain.local.engine import OfflineEngine
from tests.conftest import ROOT, TRAINED_INPUTS, TUNED_INPUTS, TrainedRuns, trained_name
from tests.helpers import run_cli

SMTRAIN = str(Path(sys.executable).parent / "smtrain")


#: The session's shared runs (tests/conftest.py) these tests read: digits_mlp trained at its
#: defaults (10 epochs), and digits_lightgbm tuned (3 trials, 4 metric reports each).
SINGLE = trained_name("digits_mlp")
TUNING = trained_name("digits_lightgbm", tuning=True)


@pytest.fixture(scope="module")
def tracked(trained: TrainedRuns) -> tuple[OfflineEngine, MlflowClient]:
    engine: OfflineEngine = trained.engine
    assert "hyperparameters" not in TRAINED_INPUTS["digits_mlp"]
    assert TUNED_INPUTS["digits_lightgbm"]["hyperparameters"] == {"num_boost_round": "20", "report_every": "5"}
    assert TUNED_INPUTS["digits_lightgbm"]["tuning"]["maxJobs"] == 3
    assert engine.tracking_uri is not None
    return engine, MlflowClient(tracking_uri=engine.tracking_uri)


def _runs(client: MlflowClient, execution: str) -> list[Any]:
    experiment = client.get_experiment_by_name("smtrain")
    assert experiment is not None
    return list(client.search_runs([experiment.experiment_id],
                                   filter_string=f"tags.`smtrain.execution` = '{execution}'"))


def test_script_run_is_tracked(tracked: tuple[OfflineEngine, MlflowClient]) -> None:
    engine, client = tracked
    (run,) = _runs(client, SINGLE)
    assert run.info.status == "FINISHED"
    assert run.data.tags["smtrain.program"] == "digits_mlp"
    assert "smtrain.method" not in run.data.tags
    assert run.data.tags["smtrain.training_job"] == run.info.run_name
    # Logged by the program itself (its parameter names, its model), not for it by the local backend.
    assert "smtrain.logged_by" not in run.data.tags
    # Recorded by the job (which never imported MLflow) and logged by the backend as it ended.
    assert (engine.work_dir / "jobs" / run.info.run_name / "tracking.jsonl").is_file()
    assert "smtrain.tuning_job" not in run.data.tags
    assert run.data.params == {"epochs": "10", "batch_size": "64", "learning_rate": "0.01",
                               "hidden_units": "64", "seed": "42"}
    history = client.get_metric_history(run.info.run_id, "validation:accuracy")
    assert [m.step for m in sorted(history, key=lambda m: m.step)] == list(range(1, 11))
    assert {"train:loss", "validation:loss", "validation:accuracy"} <= set(run.data.metrics)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "model")}
    # The model as logged can be served: its inference code is beside the weights.
    assert artifacts == {"model/model.pth", "model/model_config.json", "model/code"}


def test_tuning_trials_are_tracked_with_their_tuning_job(tracked: tuple[OfflineEngine, MlflowClient]) -> None:
    _, client = tracked
    runs = _runs(client, TUNING)
    assert len(runs) == 3
    tuning_jobs = {run.data.tags["smtrain.tuning_job"] for run in runs}
    assert len(tuning_jobs) == 1
    (tuning_job,) = tuning_jobs
    assert all(run.info.run_name.startswith(f"{tuning_job}-") for run in runs)
    assert all(run.data.tags["smtrain.program"] == "digits_lightgbm" for run in runs)
    assert all("smtrain.logged_by" not in run.data.tags for run in runs), "logged by the program"
    assert len({run.data.params["learning_rate"] for run in runs}) == 3, "each trial its own value"
    assert all(len(client.get_metric_history(r.info.run_id, "validation:accuracy")) == 4 for r in runs)


def _all_runs(client: MlflowClient) -> list[Any]:
    experiment = client.get_experiment_by_name("smtrain")
    assert experiment is not None
    return list(client.search_runs([experiment.experiment_id], max_results=50))


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_compare_table_and_plot(tracked: tuple[OfflineEngine, MlflowClient], tmp_path: Path) -> None:
    engine, client = tracked
    plot = tmp_path / "curves.png"
    result = run_cli(["compare", "--tracking-uri", str(engine.tracking_uri), "--sort", "validation:accuracy",
                      "--plot", str(plot)], env=dict(os.environ), cwd=ROOT)
    assert result.returncode == 0, result.stderr
    sorted_by, *lines = result.stdout.splitlines()
    assert sorted_by == "sorted by validation:accuracy, largest first (--sort)"
    assert lines[0].split()[:4] == ["execution", "program", "run", "status"]
    assert "validation:accuracy" in lines[0] and lines[0].split()[-2:] == ["run_seconds", "cost_usd"]
    # Every run of the store (the session's shared runs, and what other tests ran on the same
    # engine), those with the metric first, best first.
    stored = _all_runs(client)
    measured = [run for run in stored if "validation:accuracy" in run.data.metrics]
    assert {(SINGLE, "digits_mlp"), (TUNING, "digits_lightgbm")} <= {
        (run.data.tags["smtrain.execution"], run.data.tags["smtrain.program"]) for run in measured}
    rows = [line.split() for line in lines[1:1 + len(measured)]]
    assert sorted(row[:2] for row in rows) == sorted(
        [run.data.tags["smtrain.execution"], run.data.tags["smtrain.program"]] for run in measured)
    accuracies = [float(row[-3]) for row in rows]
    assert accuracies == sorted(accuracies, reverse=True), "sorted best first"
    assert all(line.split()[-3] == "-" for line in lines[1 + len(measured):-1]), "runs without it last"
    assert len(lines) == 1 + len(stored) + 1 and lines[-1] == f"plot: {plot}"

    # The legend sits right of the 1000x600 px axes figure and the PNG is cropped to hold it
    # (bbox_inches="tight"): wider than 1000 px, as high as the axes give, nothing cut off.
    width, height = _png_size(plot)
    assert width > 1000 and 400 <= height <= 600, (width, height)
    drawing = figure(client, load_rows(client, experiment="smtrain", metric="validation:accuracy",
                                       limit=50, ascending=False), "validation:accuracy")
    (axes,) = drawing.axes
    legend = axes.get_legend()
    assert sorted(text.get_text() for text in legend.get_texts()) == sorted(
        f"{run.data.tags['smtrain.execution']} / {run.info.run_name}" for run in measured), \
        "every run's full name: its execution and its training job"
    renderer = FigureCanvasAgg(drawing).get_renderer()
    assert legend.get_window_extent(renderer).x0 >= axes.get_window_extent(renderer).x1
    saved = drawing.get_tightbbox(renderer).padded(0.1)  # savefig's default pad_inches
    assert abs(width - saved.width * drawing.dpi) <= 2 and abs(height - saved.height * drawing.dpi) <= 2
    assert legend.get_window_extent(renderer).x1 <= saved.x1 * drawing.dpi, "the legend is in the image"
    ascending = run_cli(["compare", "--tracking-uri", str(engine.tracking_uri), "--sort", "validation:loss"],
                        env=dict(os.environ), cwd=ROOT)
    with_loss = [run for run in stored if "validation:loss" in run.data.metrics]
    losses = [float(line.split()[-3]) for line in ascending.stdout.splitlines()[2:2 + len(with_loss)]]
    assert len(losses) == len(with_loss) >= 4 and losses == sorted(losses), "losses smallest first"


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



# -- Offline, a job records its run and the local backend logs it (smtrain.local.run_record) ------

def _artifact_tree(client: MlflowClient, run_id: str, path: str | None = None) -> list[str]:
    found = []
    for artifact in client.list_artifacts(run_id, path):
        found.append(artifact.path + ("/" if artifact.is_dir else ""))
        if artifact.is_dir:
            found += _artifact_tree(client, run_id, artifact.path)
    return found


def _run_as_logged(client: MlflowClient, run_id: str) -> dict[str, Any]:
    run = client.get_run(run_id)
    return {"name": run.info.run_name, "status": run.info.status, "tags": run.data.tags,
            "params": run.data.params,
            "metrics": {name: sorted((m.step, m.value) for m in client.get_metric_history(run_id, name))
                        for name in run.data.metrics},
            "artifacts": _artifact_tree(client, run_id)}


@pytest.mark.parametrize("fails", [False, True], ids=["finished", "failed"])
def test_a_recorded_run_is_logged_as_the_program_would_log_it(
        tracker_class: Any, tmp_path: Path, fails: bool) -> None:
    """The same training, tracked straight to MLflow and through a record the backend logs:
    the same run name, tags (MLflow's own included), params, per-step metrics, model files and
    status."""
    from smtrain.local.engine import TRACKING_EXPERIMENT
    from smtrain.local.run_record import RECORD_VARIABLE, log_run_record, read_run_record
    from smtrain.local.tracking_store import prepare_tracking_store

    model = tmp_path / "model"
    (model / "code").mkdir(parents=True)
    (model / "model.pth").write_bytes(b"weights")
    (model / "code" / "inference.py").write_text("# handler\n")
    job = {"MLFLOW_EXPERIMENT_NAME": TRACKING_EXPERIMENT, "TRAINING_JOB_NAME": "job-1",
           "SMTRAIN_EXECUTION": "exec-1", "SMTRAIN_PROGRAM": "prog", "SMTRAIN_TUNING_JOB": "tune-1"}

    def train(environ: dict[str, str]) -> None:
        with contextlib.suppress(RuntimeError), \
                tracker_class(params={"epochs": 3, "learning_rate": 0.1}, environ=environ) as tracker:
            assert tracker.active
            for step in (1, 2, 3):
                tracker.log_metrics({"train:loss": 1.0 / step, "validation:accuracy": 0.5 + step / 10},
                                    step=step)
            tracker.log_model(model)
            if fails:
                raise RuntimeError("the training broke")

    direct_uri = prepare_tracking_store(tmp_path / "direct")
    train({**job, "MLFLOW_TRACKING_URI": direct_uri})
    record_file = tmp_path / "tracking.jsonl"
    train({**job, "MLFLOW_TRACKING_URI": "sqlite:///never-opened.db", RECORD_VARIABLE: str(record_file)})
    assert not (Path.cwd() / "never-opened.db").exists()

    direct = MlflowClient(tracking_uri=direct_uri)
    experiment = direct.get_experiment_by_name(TRACKING_EXPERIMENT)
    assert experiment is not None
    (direct_run,) = direct.search_runs([experiment.experiment_id])
    replayed = MlflowClient(tracking_uri=prepare_tracking_store(tmp_path / "replayed"))
    record = read_run_record(record_file)
    assert record is not None
    run_id = log_run_record(replayed, record, status="KILLED", end_time=0)
    expected = _run_as_logged(direct, direct_run.info.run_id)
    assert _run_as_logged(replayed, run_id) == expected
    assert expected["status"] == ("FAILED" if fails else "FINISHED")
    assert expected["artifacts"] == ["model/", "model/code/", "model/code/inference.py", "model/model.pth"]
    assert {"smtrain.execution", "smtrain.program", "smtrain.training_job", "smtrain.tuning_job",
            "mlflow.user", "mlflow.source.name", "mlflow.runName"} <= set(expected["tags"])
    logged = replayed.get_run(run_id).info
    assert record.start_time == logged.start_time <= logged.end_time == record.end_time


def test_recording_a_run_never_imports_mlflow(tmp_path: Path) -> None:
    """What the record saves a job: MLflow is not even imported in its process."""
    program = textwrap.dedent("""
        import sys
        from common.tracking import Tracker
        with Tracker(params={"a": 1}) as tracker:
            tracker.log_metrics({"x": 1.0}, step=1)
            print(tracker.active)
        print("mlflow" in sys.modules)
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "training_code"), "MLFLOW_TRACKING_URI": "sqlite:///x.db",
           "SMTRAIN_TRACKING_RECORD": str(tmp_path / "tracking.jsonl")}
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, env=env,
                            timeout=60, cwd=tmp_path, check=True)
    assert result.stdout.split() == ["True", "False"]  # tracking, and MLflow never loaded
    assert [json.loads(line)["event"] for line in (tmp_path / "tracking.jsonl").read_text().splitlines()] == [
        "start", "metrics", "end"]


def test_a_record_that_cannot_be_written_never_fails_training(tracker_class: Any, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "not-a-directory").write_text("x")
    environ = {"MLFLOW_TRACKING_URI": "sqlite:///x.db",
               "SMTRAIN_TRACKING_RECORD": str(tmp_path / "not-a-directory" / "tracking.jsonl")}
    with tracker_class(params={"a": 1}, environ=environ) as tracker:
        tracker.log_metrics({"x": 1.0}, step=1)
        tracker.log_model(tmp_path)
    assert not tracker.active
    messages = [line for line in capsys.readouterr().err.splitlines() if line.startswith("tracking:")]
    assert len(messages) == 1 and messages[0].startswith(
        "tracking: starting the run failed, continuing without MLflow: NotADirectoryError"), messages


TRACKS_WITH_THE_TRACKER = """
    import os, sys
    from pathlib import Path
    from common.tracking import Tracker
    model = Path(os.environ.get("SAGEMAKER_BASE_DIR", "/opt/ml")) / "model"
    with Tracker(params={"learning_rate": 0.1}) as tracker:
        for epoch, accuracy in enumerate([0.5, 0.7, 0.8], start=1):
            print(f"epoch={epoch} validation:accuracy={accuracy}", flush=True)
            tracker.log_metrics({"validation:accuracy": accuracy}, step=epoch)
        model.mkdir(parents=True, exist_ok=True)
        (model / "model.txt").write_text("tree")
        tracker.log_model(model)
        print("mlflow imported:", "mlflow" in sys.modules, flush=True)
        if os.environ.get("TINY_EXIT"):  # the job dies without ending its run
            os._exit(int(os.environ["TINY_EXIT"]))
"""


def _tiny_tracked(tmp_path: Path, environment: dict[str, str], name: str,
                  before_tracking: Any = None) -> tuple[Any, Any]:
    """A tiny BYOC program that tracks with ``common/tracking.py``, run by a real backend."""
    from tests.test_local_failures import METRICS, run_job, tiny_backend

    backend = tiny_backend(tmp_path, TRACKS_WITH_THE_TRACKER, environment=environment,
                           before_tracking=before_tracking)
    shutil.copytree(ROOT / "training_code" / "common", tmp_path / "context" / "common")
    job = run_job(backend, name, metric_definitions=METRICS,
                  tags=[{"Key": "smtrain:execution", "Value": "exec-1"},
                        {"Key": "smtrain:program", "Value": "tiny"}])
    return backend, job


@pytest.mark.parametrize(("exit_code", "job_status", "run_status"),
                         [(None, "Completed", "FINISHED"), (3, "Failed", "FAILED")])
def test_the_backend_logs_the_run_the_job_recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   exit_code: int | None, job_status: str,
                                                   run_status: str) -> None:
    from smtrain.local.engine import TRACKING_EXPERIMENT
    from smtrain.local.tracking_store import prepare_tracking_store

    uri = prepare_tracking_store(tmp_path / "mlflow")
    backend, job = _tiny_tracked(tmp_path, {"MLFLOW_TRACKING_URI": uri, "MLFLOW_EXPERIMENT_NAME": TRACKING_EXPERIMENT,
                                            **({} if exit_code is None else {"TINY_EXIT": str(exit_code)})},
                                 "recorded-job")
    assert job.status == job_status, job.failure_reason
    log = job.log_path.read_text()
    assert "mlflow imported: False" in log
    assert "logged no MLflow run" not in log and not job.notes
    assert (backend.work_dir / "jobs" / "recorded-job" / "tracking.jsonl").is_file()
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(TRACKING_EXPERIMENT)
    assert experiment is not None
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "recorded-job" and run.info.status == run_status
    assert {key: run.data.tags.get(key) for key in ("smtrain.execution", "smtrain.program",
                                                    "smtrain.training_job", "smtrain.logged_by")} == {
        "smtrain.execution": "exec-1", "smtrain.program": "tiny", "smtrain.training_job": "recorded-job",
        "smtrain.logged_by": None}
    assert run.data.params == {"learning_rate": "0.1"}
    assert [(m.step, m.value) for m in sorted(client.get_metric_history(run.info.run_id, "validation:accuracy"),
                                              key=lambda m: m.step)] == [(1, 0.5), (2, 0.7), (3, 0.8)]
    assert [a.path for a in client.list_artifacts(run.info.run_id, "model")] == ["model/model.txt"]


def test_the_backend_waits_before_it_logs_a_run(tmp_path: Path) -> None:
    """The backend calls its ``before_tracking`` (the engine: wait for the thread loading MLflow)
    once per job, before the job's run is in the store."""
    from smtrain.local.engine import TRACKING_EXPERIMENT
    from smtrain.local.tracking_store import prepare_tracking_store

    uri = prepare_tracking_store(tmp_path / "mlflow")
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(TRACKING_EXPERIMENT)
    assert experiment is not None
    runs_when_called = []

    def before_tracking() -> None:
        runs_when_called.append(len(client.search_runs([experiment.experiment_id])))

    _, job = _tiny_tracked(tmp_path, {"MLFLOW_TRACKING_URI": uri, "MLFLOW_EXPERIMENT_NAME": TRACKING_EXPERIMENT},
                           "waited-job", before_tracking=before_tracking)
    assert job.status == "Completed", job.failure_reason
    assert runs_when_called == [0]
    assert [r.info.run_name for r in client.search_runs([experiment.experiment_id])] == ["waited-job"]


def test_a_tracking_failure_after_the_job_never_fails_it(tmp_path: Path) -> None:
    """The store cannot be opened when the backend logs the recorded run: one note, the job
    completes."""
    (tmp_path / "not-a-directory").write_text("x")
    unreachable = f"sqlite:///{tmp_path / 'not-a-directory' / 'mlflow.db'}"
    _, job = _tiny_tracked(tmp_path, {"MLFLOW_TRACKING_URI": unreachable,
                                      "MLFLOW_EXPERIMENT_NAME": "smtrain"}, "unlogged-job")
    assert job.status == "Completed", job.failure_reason
    assert len(job.notes) == 1 and job.notes[0].startswith("could not log the job's MLflow run: "), job.notes
    assert job.log_path.read_text().count("could not log the job's MLflow run") == 1


def test_a_new_store_starts_from_the_template(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each work directory's store is a copy of one template per MLflow version (its schema and
    the smtrain experiment made once, by MLflow): in each copy the experiment keeps its artifacts
    in that store's own folder, and stores hold nothing of each other's."""
    import mlflow

    from smtrain.local.engine import TRACKING_EXPERIMENT
    from smtrain.local.tracking_store import prepare_tracking_store

    monkeypatch.setenv("SMTRAIN_ENV_CACHE", str(tmp_path / "cache" / "envs"))
    first, second = (prepare_tracking_store(tmp_path / name) for name in ("first", "second"))
    template = tmp_path / "cache" / "envs" / "mlflow-stores" / f"smtrain-{mlflow.__version__}.db"
    assert template.is_file()
    assert sorted(e.name for e in MlflowClient(f"sqlite:///{template}").search_experiments()) == [
        "Default", TRACKING_EXPERIMENT]
    clients = [MlflowClient(uri) for uri in (first, second)]
    ids = []
    for name, client in zip(("first", "second"), clients, strict=True):
        experiment = client.get_experiment_by_name(TRACKING_EXPERIMENT)
        assert experiment is not None
        assert experiment.artifact_location == (tmp_path / name / "artifacts").resolve().as_uri()
        assert experiment.lifecycle_stage == "active"
        ids.append(experiment.experiment_id)
    run = clients[0].create_run(ids[0])
    assert run.info.artifact_uri.startswith((tmp_path / "first" / "artifacts").resolve().as_uri())
    assert clients[1].search_runs([ids[1]]) == []
    assert [r.info.run_id for r in clients[0].search_runs([ids[0]])] == [run.info.run_id]
    # Copies, not stores MLflow made afresh: the template's Default experiment, to the millisecond.
    assert {_default_created(tmp_path / name / "mlflow.db") for name in ("first", "second")} == {
        _default_created(template)}
    # Opened again, a store keeps what it holds (it is not copied over).
    assert prepare_tracking_store(tmp_path / "first") == first
    assert len(clients[0].search_runs([ids[0]])) == 1
    assert sorted(p.name for p in (tmp_path / "first").iterdir()) == ["mlflow.db"]  # no partial left


def _default_created(database: Path) -> int:
    import sqlite3

    connection = sqlite3.connect(database)
    try:
        (created,) = connection.execute("SELECT creation_time FROM experiments WHERE name = 'Default'").fetchone()
    finally:
        connection.close()
    return int(created)


def test_stores_made_at_once_in_one_folder_are_one_whole_store(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Threads (or processes) making the same new store at once: one copy lands, with the
    experiment set to the store's folder, and no partial file is left."""
    from concurrent.futures import ThreadPoolExecutor

    from smtrain.local.engine import TRACKING_EXPERIMENT
    from smtrain.local.tracking_store import prepare_tracking_store, store_template

    monkeypatch.setenv("SMTRAIN_ENV_CACHE", str(tmp_path / "cache" / "envs"))
    store_template()
    for round_ in range(20):
        folder = tmp_path / f"store-{round_}"
        with ThreadPoolExecutor(max_workers=4) as pool:
            uris = set(pool.map(prepare_tracking_store, [folder] * 4))
        (uri,) = uris
        experiment = MlflowClient(uri).get_experiment_by_name(TRACKING_EXPERIMENT)
        assert experiment is not None
        assert experiment.artifact_location == (folder / "artifacts").resolve().as_uri()
        assert sorted(p.name for p in folder.iterdir()) == ["mlflow.db"]


def test_a_store_is_made_without_importing_mlflow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Once the template exists, a new process makes a store without importing MLflow (about
    2 s of its start): the store MLflow then opens has the experiment, in the store's folder."""
    from smtrain.local.engine import TRACKING_EXPERIMENT
    from smtrain.local.tracking_store import store_template

    monkeypatch.setenv("SMTRAIN_ENV_CACHE", str(tmp_path / "cache" / "envs"))
    store_template()
    made = subprocess.run([sys.executable, "-c", (
        "import sys; from pathlib import Path; from smtrain.local.tracking_store import prepare_tracking_store; "
        f"print(prepare_tracking_store(Path({str(tmp_path / 'store')!r}))); print('mlflow' in sys.modules)")],
        capture_output=True, text=True, check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    uri, imported = made.stdout.split()
    assert imported == "False", made.stdout
    experiment = MlflowClient(uri).get_experiment_by_name(TRACKING_EXPERIMENT)
    assert experiment is not None
    assert experiment.artifact_location == (tmp_path / "store" / "artifacts").resolve().as_uri()


def test_a_store_without_the_experiment_or_a_bad_template_gets_it_from_mlflow(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A store made elsewhere (MLflow's own, no smtrain experiment) gets the experiment; a
    template whose experiment is not as written is not copied, and MLflow makes the store."""
    import mlflow

    from smtrain.local.engine import TRACKING_EXPERIMENT
    from smtrain.local.tracking_store import prepare_tracking_store

    monkeypatch.setenv("SMTRAIN_ENV_CACHE", str(tmp_path / "cache" / "envs"))
    (tmp_path / "theirs").mkdir()
    theirs = f"sqlite:///{tmp_path.resolve() / 'theirs' / 'mlflow.db'}"
    MlflowClient(theirs).search_experiments()  # MLflow's own store: Default only
    assert prepare_tracking_store(tmp_path / "theirs") == theirs
    assert MlflowClient(theirs).get_experiment_by_name(TRACKING_EXPERIMENT) is not None
    template = tmp_path / "cache" / "envs" / "mlflow-stores" / f"smtrain-{mlflow.__version__}.db"
    template.parent.mkdir(parents=True)
    shutil.copyfile(tmp_path / "theirs" / "mlflow.db", template)  # its experiment's location is its own
    uri = prepare_tracking_store(tmp_path / "mine")
    experiment = MlflowClient(uri).get_experiment_by_name(TRACKING_EXPERIMENT)
    assert experiment is not None
    assert experiment.artifact_location == (tmp_path / "mine" / "artifacts").resolve().as_uri()
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["mlflow.db"]  # no partial left
    # The bad template is gone, and the next store has a good one made and copied.
    assert not template.exists()
    later = prepare_tracking_store(tmp_path / "later")
    assert template.is_file()
    assert _default_created(tmp_path / "later" / "mlflow.db") == _default_created(template)
    experiment = MlflowClient(later).get_experiment_by_name(TRACKING_EXPERIMENT)
    assert experiment is not None
    assert experiment.artifact_location == (tmp_path / "later" / "artifacts").resolve().as_uri()


def test_the_engine_loads_mlflow_beside_its_first_execution(synthesized: Any, tmp_path: Path) -> None:
    """Entering the engine makes its store (with the experiment); MLflow is loaded in a thread
    from its first execution's start, which leaving the engine waits for."""
    from smtrain.local.engine import TRACKING_EXPERIMENT
    from smtrain.local.tracking_store import store_template

    with OfflineEngine(outdir=synthesized.outdir, work_dir=tmp_path / "work") as engine:
        assert engine.tracking_uri == f"sqlite:///{tmp_path.resolve() / 'work' / 'mlflow' / 'mlflow.db'}"
        # A copy of the template (MLflow did not make it here).
        assert _default_created(tmp_path / "work" / "mlflow" / "mlflow.db") == _default_created(store_template())
        experiment = MlflowClient(engine.tracking_uri).get_experiment_by_name(TRACKING_EXPERIMENT)
        assert experiment is not None
        assert experiment.artifact_location == (tmp_path / "work" / "mlflow" / "artifacts").resolve().as_uri()
        assert engine._warm_up is None
        result = engine.run({"program": "no_such_program"}, name="refused")  # refused by the input check
        assert result.status == "FAILED"
        warm_up = engine._warm_up
        assert warm_up is not None and warm_up.name == "mlflow-warm-up"
    assert not warm_up.is_alive()


def test_a_store_is_made_in_place_where_the_cache_cannot_be_written(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from smtrain.local.engine import TRACKING_EXPERIMENT
    from smtrain.local.tracking_store import prepare_tracking_store

    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    monkeypatch.setenv("SMTRAIN_ENV_CACHE", str(blocked / "envs"))
    uri = prepare_tracking_store(tmp_path / "store")
    assert MlflowClient(uri).get_experiment_by_name(TRACKING_EXPERIMENT) is not None


# -- `smtrain compare` at its defaults, as a user runs it (issue 19, item 7) --------------------
def _compare(engine: OfflineEngine, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(["compare", "--local", "--work-dir", str(engine.work_dir), *args],
                   env=dict(os.environ), cwd=ROOT)


def _sections(stdout: str) -> dict[str, list[dict[str, str]]]:
    """Per program: the table under its "PROGRAM: sorted by ..." line, a dict per row."""
    sections: dict[str, list[dict[str, str]]] = {}
    lines = iter(stdout.splitlines())
    for line in lines:
        if ": sorted by " not in line:
            continue
        program = line.split(":", 1)[0]
        header = next(lines).split()
        rows = sections.setdefault(program, [])
        for row in lines:
            if not row.strip():
                break
            rows.append(dict(zip(header, row.split(), strict=True)))
    return sections


def test_compare_at_its_defaults_sorts_each_program_by_its_objective(
        tracked: tuple[OfflineEngine, MlflowClient]) -> None:
    engine, _ = tracked
    result = _compare(engine)
    assert result.returncode == 0, result.stderr
    assert "digits_xgboost: sorted by validation:merror, smallest first" in result.stdout
    assert "digits_mlp: sorted by validation:accuracy, largest first" in result.stdout
    assert "digits_lightgbm: sorted by validation:accuracy, largest first" in result.stdout
    sections = _sections(result.stdout)
    merrors = [float(row["validation:merror"]) for row in sections["digits_xgboost"]]
    assert merrors and merrors == sorted(merrors), "XGBoost's error rate, smallest first"
    accuracies = [float(row["validation:accuracy"]) for row in sections["digits_lightgbm"]
                  if row["validation:accuracy"] != "-"]
    assert len(accuracies) >= 4 and accuracies == sorted(accuracies, reverse=True)

    # One program: its objective, and nothing of the others.
    alone = _compare(engine, "--program", "digits_xgboost")
    assert alone.returncode == 0, alone.stderr
    assert alone.stdout.splitlines()[0].startswith(
        "digits_xgboost: sorted by validation:merror, smallest first (its tuning objective")
    assert set(_sections(alone.stdout)) == {"digits_xgboost"}
    unknown = _compare(engine, "--program", "digits_cnn")
    assert unknown.returncode == 2
    assert unknown.stderr.startswith("smtrain: error: --program digits_cnn: no runs of it in experiment "
                                     "'smtrain'; programs with runs: digits_lightgbm, digits_mlp, "
                                     "digits_xgboost"), unknown.stderr


def test_compare_shows_every_varying_hyperparameter_the_status_and_the_run_time(
        tracked: tuple[OfflineEngine, MlflowClient]) -> None:
    engine, client = tracked
    result = _compare(engine, "--program", "digits_lightgbm")
    assert result.returncode == 0, result.stderr
    rows = _sections(result.stdout)["digits_lightgbm"]
    assert len(rows) >= 4
    # Trained once (30 rounds, a report every 10) and tuned (20 rounds, every 5; the tuned ranges).
    for name in ("learning_rate", "num_leaves", "num_boost_round", "report_every"):
        assert all(name in row for row in rows), name
    assert {row["status"] for row in rows} == {"FINISHED"}
    assert all(float(row["run_seconds"]) > 0 for row in rows)

    # A run the engine logs for a job whose program logs none (the built-in XGBoost) spans the
    # job's training: from its Training status to its process's end, as the job's own times say;
    # not the moment it was logged (0.0 s before).
    (xgboost,) = [row for row in _sections(_compare(engine, "--program", "digits_xgboost").stdout)[
        "digits_xgboost"] if row["execution"] == trained_name("digits_xgboost")]
    job = engine.backend.describe_training_job(xgboost["run"])
    training = next(t for t in job["SecondaryStatusTransitions"] if t["Status"] == "Training")
    import datetime as dt

    started, ended = (int(dt.datetime.fromisoformat(training[key]).timestamp() * 1000)
                      for key in ("StartTime", "EndTime"))
    (run,) = _runs(client, trained_name("digits_xgboost"))
    assert run.info.start_time == started
    assert started < run.info.end_time <= ended
    assert float(xgboost["run_seconds"]) == round((run.info.end_time - started) / 1000, 1) >= 1.0
