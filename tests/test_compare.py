"""`smtrain compare`: an unknown sort metric is refused; the plot keeps every run's label whole and
tells more than ten runs apart (against a local MLflow store these tests fill themselves)."""

from __future__ import annotations

import dataclasses
import struct
from pathlib import Path

import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from smtrain.cli import EXIT_OK, EXIT_USAGE, main
from smtrain.cli.compare import MAX_DISTINCT_STYLES, figure, load_rows, run_styles
from smtrain.local.tracking_store import prepare_tracking_store

EXPERIMENT = "smtrain"
EXECUTION = "compare-learning-rate-sweep"
RUNS = 12
METRICS = ["train:loss", "validation:accuracy", "validation:loss"]


def _run_name(index: int) -> str:
    return f"pytorch-training-2024-06-01-12-00-{index:02d}-learning-rate-sweep-with-a-long-name-{index:02d}"


def _store(work_dir: Path, runs: int) -> MlflowClient:
    """The offline store's layout, ``<work-dir>/mlflow/mlflow.db``, with ``runs`` finished runs of
    three epochs each (an empty ``smtrain`` experiment when ``runs`` is 0)."""
    directory = work_dir / "mlflow"
    client = MlflowClient(tracking_uri=prepare_tracking_store(directory))  # the engine's own store
    experiment = client.get_experiment_by_name(EXPERIMENT).experiment_id
    for index in range(runs):
        run = client.create_run(experiment, run_name=_run_name(index),
                                tags={"smtrain.execution": EXECUTION, "smtrain.program": "digits_mlp"})
        accuracy = 0.5 + index / 100
        metrics = [Metric(key, value, 0, step) for step in (1, 2, 3) for key, value in
                   (("train:loss", 1 / step), ("validation:loss", 1 / step + index / 100),
                    ("validation:accuracy", accuracy - (3 - step) / 10))]
        client.log_batch(run.info.run_id, metrics=metrics,
                         params=[Param("learning_rate", str(0.001 * (index + 1))), Param("epochs", "3")])
        client.set_terminated(run.info.run_id)
    return client


@pytest.fixture(scope="module")
def tracked(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, MlflowClient]:
    work_dir = tmp_path_factory.mktemp("compare")
    return work_dir, _store(work_dir, RUNS)


def test_unknown_sort_metric_is_refused(tracked: tuple[Path, MlflowClient], tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    work_dir, _ = tracked
    plot = tmp_path / "curves.png"
    code = main(["compare", "--local", "--work-dir", str(work_dir), "--sort", "validation:f1", "--plot", str(plot)])
    out, err = capsys.readouterr()
    assert code == EXIT_USAGE
    assert out == ""
    (line,) = err.splitlines()
    assert "'validation:f1'" in line
    assert line.endswith(", ".join(METRICS)), line
    assert not plot.exists(), "nothing is drawn for an unknown metric"


def test_known_sort_metric_tabulates_and_plots(tracked: tuple[Path, MlflowClient], tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    work_dir, _ = tracked
    plot = tmp_path / "curves.png"
    code = main(["compare", "--local", "--work-dir", str(work_dir), "--sort", "validation:accuracy",
                 "--plot", str(plot)])
    out, err = capsys.readouterr()
    assert (code, err) == (EXIT_OK, "")
    sorted_by, *lines = out.splitlines()
    assert sorted_by == "sorted by validation:accuracy, largest first (--sort)"
    assert lines[0].split()[:4] == ["execution", "program", "run", "status"]
    assert [line.split()[2] for line in lines[1:-1]] == [_run_name(i) for i in reversed(range(RUNS))]
    assert lines[-1] == f"plot: {plot}"
    width, height = struct.unpack(">II", plot.read_bytes()[16:24])
    assert width > 1000 and height > 0, "the saved image holds the legend beside the axes"


def test_no_runs_says_so_and_draws_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _store(tmp_path, 0)
    capsys.readouterr()  # MLflow's messages as it creates the store
    plot = tmp_path / "curves.png"
    code = main(["compare", "--local", "--work-dir", str(tmp_path), "--sort", "validation:f1", "--plot", str(plot)])
    out, err = capsys.readouterr()
    assert (code, err) == (EXIT_OK, "")
    assert out == f"no runs in experiment {EXPERIMENT!r} at this tracking URI: nothing to compare, no plot drawn\n"
    assert not plot.exists()


@pytest.mark.parametrize("runs", [1, 10, 11, 20, 21, 25, 80, 81, 1000])
def test_run_styles_are_pairwise_distinct(runs: int) -> None:
    styles = run_styles(runs)
    assert len(styles) == runs
    assert len({(s.color, s.linestyle, s.marker) for s in styles}) == runs


def test_run_styles_beyond_ten_runs_use_new_colours() -> None:
    assert len({style.color for style in run_styles(20)}) == 20, "tab20: twenty colours"
    assert run_styles(10) == run_styles(20)[:10] == run_styles(25)[:10], "a run keeps its style"
    assert MAX_DISTINCT_STYLES >= 1000, "the most runs `smtrain compare --max` takes"


def test_plot_legend_keeps_long_labels_whole_and_outside(tracked: tuple[Path, MlflowClient]) -> None:
    _, client = tracked
    rows = load_rows(client, experiment=EXPERIMENT, metric="validation:accuracy", limit=50, ascending=False)
    assert len(rows) == RUNS
    drawing = figure(client, rows, "validation:accuracy")
    (axes,) = drawing.axes
    legend = axes.get_legend()
    texts = [text.get_text() for text in legend.get_texts()]
    expected = [f"{EXECUTION} / {_run_name(i)}" for i in reversed(range(RUNS))]
    assert all(len(label) >= 60 for label in expected)
    assert texts == expected
    assert len({(line.get_color(), line.get_linestyle(), line.get_marker()) for line in axes.lines}) == RUNS
    renderer = FigureCanvasAgg(drawing).get_renderer()
    assert legend.get_window_extent(renderer).x0 >= axes.get_window_extent(renderer).x1, \
        "the legend lies beside the axes, not over the curves"


def test_a_failed_run_says_so_and_comes_last(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """At the defaults (digits_mlp's objective, validation:accuracy, largest first), a run that
    failed before reporting a metric is listed FAILED, not as a run without metrics."""
    client = _store(tmp_path, 2)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert experiment is not None
    failed = client.create_run(experiment.experiment_id, run_name="failed-job",
                               tags={"smtrain.execution": "broken", "smtrain.program": "digits_mlp"})
    client.log_batch(failed.info.run_id, params=[Param("learning_rate", "9"), Param("epochs", "3")])
    client.set_terminated(failed.info.run_id, status="FAILED")
    capsys.readouterr()
    code = main(["compare", "--local", "--work-dir", str(tmp_path)])
    out, err = capsys.readouterr()
    assert (code, err) == (EXIT_OK, "")
    sorted_by, header, *rows = out.splitlines()
    assert sorted_by == ("digits_mlp: sorted by validation:accuracy, largest first "
                         "(its tuning objective in program.toml)")
    assert header.split() == ["execution", "program", "run", "status", "learning_rate", "epochs",
                              "validation:accuracy", "run_seconds", "cost_usd"]
    assert [row.split()[2:4] for row in rows] == [[_run_name(1), "FINISHED"], [_run_name(0), "FINISHED"],
                                                  ["failed-job", "FAILED"]]
    assert rows[-1].split()[-3] == "-"


def test_a_failed_run_comes_last_even_with_the_best_value(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """A run that failed after reporting its metric is still listed after every finished run,
    with --sort as at the defaults."""
    client = _store(tmp_path, 2)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert experiment is not None
    failed = client.create_run(experiment.experiment_id, run_name="failed-late",
                               tags={"smtrain.execution": "broken", "smtrain.program": "digits_mlp"})
    client.log_batch(failed.info.run_id, metrics=[Metric("validation:accuracy", 0.99, 0, 1)])
    client.set_terminated(failed.info.run_id, status="FAILED")
    for args in ([], ["--sort", "validation:accuracy"]):
        capsys.readouterr()
        assert main(["compare", "--local", "--work-dir", str(tmp_path), *args]) == EXIT_OK
        _, _, *rows = capsys.readouterr().out.splitlines()
        assert [row.split()[2:4] for row in rows] == [[_run_name(1), "FINISHED"], [_run_name(0), "FINISHED"],
                                                      ["failed-late", "FAILED"]], args
        assert rows[-1].split()[-3] == "0.9900", "its value is shown all the same"


def test_at_its_default_work_dir_the_error_names_the_demos(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """`make demo` tracks its runs under .work/demo; `--local` alone reads .work/local."""
    _store(tmp_path / ".work" / "demo", 1)
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert main(["compare", "--local"]) == EXIT_USAGE
    assert capsys.readouterr().err.strip() == (
        "smtrain: error: no offline runs tracked under .work/local (run smtrain start --local first); "
        "`make demo` keeps its under .work/demo: pass --work-dir .work/demo")
    assert main(["compare", "--local", "--work-dir", ".work/demo"]) == EXIT_OK
    assert _run_name(0) in capsys.readouterr().out


def test_each_run_s_cost_is_recorded_once_and_compared(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The CLI puts a job's cost on the MLflow runs tagged with the job's name (smtrain.cli.run_costs):
    cost_usd where the price is known, billable_seconds, and the line; recording again changes
    nothing; compare shows a cost_usd column (- without one) and sorts by it smallest first."""
    from smtrain.cli.run_costs import record_in_mlflow
    from smtrain.core import contract, prices

    client = _store(tmp_path, 3)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    jobs = {}
    for index, run in enumerate(sorted(runs, key=lambda r: r.info.run_name)):
        job = f"smtrain-job-{index}"
        client.set_tag(run.info.run_id, contract.RUN_TAG_TRAINING_JOB, job)
        jobs[job] = prices.JobCost(instance_type="ml.m5.xlarge", instance_count=2, billable_seconds=900 * (3 - index),
                                   training_seconds=900 * (3 - index), usd_per_hour=0.2 if index < 2 else None,
                                   region="us-east-1")
    assert record_in_mlflow(client.tracking_uri, jobs) == 3
    assert record_in_mlflow(client.tracking_uri, jobs) == 0, "the same cost is not logged twice"
    recorded = {r.data.tags[contract.RUN_TAG_TRAINING_JOB]: r.data
                for r in client.search_runs([experiment.experiment_id])}
    assert recorded["smtrain-job-0"].metrics == {**recorded["smtrain-job-0"].metrics,
                                                 "cost_usd": 0.3, "billable_seconds": 2700.0}
    assert recorded["smtrain-job-0"].tags[contract.RUN_TAG_COST] == jobs["smtrain-job-0"].line()
    assert "cost_usd" not in recorded["smtrain-job-2"].metrics, "no price, no cost"
    assert recorded["smtrain-job-2"].metrics["billable_seconds"] == 900.0
    capsys.readouterr()
    assert main(["compare", "--local", "--work-dir", str(tmp_path), "--sort", "cost_usd"]) == EXIT_OK
    sorted_by, header, *rows = capsys.readouterr().out.splitlines()
    assert sorted_by == "sorted by cost_usd, smallest first (--sort)"
    assert header.split()[-2:] == ["run_seconds", "cost_usd"] and header.split().count("cost_usd") == 1
    assert [row.split()[-1] for row in rows] == ["0.2000", "0.3000", "-"], "a run without the metric last"
    # A price found since (make prices) replaces what was recorded: MLflow shows a metric's latest.
    repriced = {"smtrain-job-0": dataclasses.replace(jobs["smtrain-job-0"], usd_per_hour=0.4)}
    assert record_in_mlflow(client.tracking_uri, repriced) == 1
    (run,) = client.search_runs([experiment.experiment_id],
                                filter_string="tags.`smtrain.training_job` = 'smtrain-job-0'")
    assert run.data.metrics["cost_usd"] == 0.6, "the later cost, not the first (0.3)"
    assert run.data.tags[contract.RUN_TAG_COST] == repriced["smtrain-job-0"].line()
    # A job that has not ended (no billable time yet) is left for later.
    running = {"smtrain-job-0": dataclasses.replace(jobs["smtrain-job-0"], billable_seconds=None)}
    assert record_in_mlflow(client.tracking_uri, running) == 0
