"""End to end offline: the synthesized state machine, every training job really run locally."""

from __future__ import annotations

import os
import re
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from smtrain.local.engine import OfflineEngine
from smtrain.local.local_backend import LocalBackend
from smtrain.local.wakeups import JOB_ENDED
from tests.conftest import ROOT, TRAINED_INPUTS, TUNED_INPUTS, TrainedRuns, trained_name
from tests.helpers import run_cli, wait_idle


@pytest.fixture(scope="module")
def engine(trained: TrainedRuns) -> Iterator[OfflineEngine]:
    """The session's engine of trained runs (tests/conftest.py), the sample data in its bucket."""
    engine: OfflineEngine = trained.engine
    with engine:
        yield engine


def _model_files(engine: OfflineEngine, uri: str) -> list[str]:
    with tarfile.open(engine.local_path(uri), "r:gz") as archive:
        return sorted(archive.getnames())


def _metric(output: dict[str, Any], name: str) -> float:
    return next(float(m["Value"]) for m in output["metrics"] if m["MetricName"] == name)


def _no_training_processes_left(engine: OfflineEngine) -> bool:
    """No job process is alive, nor any process working in this engine's job trees."""
    backend = engine.backend
    assert isinstance(backend, LocalBackend)
    if any(j.process is not None and j.process.poll() is None for j in backend.jobs()):
        return False
    # Every training process (the toolkit and the script it starts, orphaned or not) carries
    # the job tree in its environment.
    work_dir = str(engine.work_dir)
    for process in psutil.process_iter():
        try:
            if process.status() != psutil.STATUS_ZOMBIE and process.environ().get(
                    "SAGEMAKER_BASE_DIR", "").startswith(work_dir):
                return False
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return True


#: A digits_mlp model archive: the weights, and the inference code the PyTorch serving toolkit
#: loads from code/ (tests/test_serving.py serves it).
MLP_MODEL_FILES = ["code", "code/common", "code/common/__init__.py",
                   "code/common/prediction_requests.py", "code/digits_model.py", "code/inference.py",
                   "model.pth", "model_config.json"]


@pytest.mark.parametrize(("program", "files", "min_accuracy"), [
    ("digits_mlp", MLP_MODEL_FILES, 0.9),
    ("digits_lightgbm", ["model.txt"], 0.9),
])
def test_program_trains_a_real_model(trained: TrainedRuns, program: str, files: list[str],
                                     min_accuracy: float) -> None:
    engine, result = trained.engine, trained.training[program]
    assert result.succeeded, result.cause
    output = result.output
    assert output is not None and output["program"] == program
    assert "method" not in output
    assert _model_files(engine, output["modelArtifacts"]) == files
    assert _metric(output, "validation:accuracy") >= min_accuracy


def test_jobs_leave_the_cloud_assembly_as_synthesized(trained: TrainedRuns) -> None:
    """The BYOC job ran its entry point from the staged image context in cdk.out (with Python
    free to write bytecode, as on most machines) and wrote nothing there: `cdk deploy` builds
    the image from that folder."""
    assert [job for job in trained.engine.backend.jobs() if job.kind == "byoc"]
    for program in trained.engine.deployment.byoc_programs.values():
        written = [p for p in program.context_dir.rglob("*")
                   if p.name == "__pycache__" or p.suffix == ".pyc"]
        assert not written, written[:3]


def _trained_job(trained: TrainedRuns, program: str) -> Any:
    backend = trained.engine.backend
    assert isinstance(backend, LocalBackend)
    output = trained.training[program].output
    assert output is not None
    (job,) = [job for job in backend.jobs() if job.name == output["trainingJobName"]]
    return job


def test_a_job_without_requirements_installs_nothing(trained: TrainedRuns) -> None:
    """By default (sealed, tracking off) digits_mlp's bundle holds no requirements.txt (its
    MLflow client is a tracking requirement, not shipped): its job runs the toolkit in the
    project's own environment and no pip at all (a program environment whose requirements match
    the bundle's skips the toolkit's pip install: tests/test_program_envs.py)."""
    import sys

    job = _trained_job(trained, "digits_mlp")
    assert job.log_path is not None and job.python == Path(sys.executable)
    log = job.log_path.read_text()
    assert "Installing dependencies from requirements.txt" not in log
    assert "Requirement already satisfied" not in log and "pip install" not in log
    assert "Reporting training SUCCESS" in log


def test_the_script_job_s_log_and_model_are_what_sagemaker_would_read(
        trained: TrainedRuns, sample_data: Path, tmp_path: Path) -> None:
    """digits_mlp at its defaults through AWS's training toolkit with the stack's bundle and
    request: the request's metric definitions turn the log into one value per epoch, the loss
    falls, the default hyperparameters reach what the program promises (measured: about 0.97),
    and the archived model loads without the training arguments and is as good as reported."""
    import numpy as np
    import torch

    from tests.training_support import TRAINING_CODE, parse_metrics

    job = _trained_job(trained, "digits_mlp")
    assert "hyperparameters" not in TRAINED_INPUTS["digits_mlp"]
    epochs = int(job.request["HyperParameters"]["epochs"])
    assert epochs == 10, "the manifest's default"
    definitions = job.request["AlgorithmSpecification"]["MetricDefinitions"]
    metrics = parse_metrics(job.log_path.read_text(), definitions)
    assert {name: len(values) for name, values in metrics.items()} == {
        "train:loss": epochs, "validation:loss": epochs, "validation:accuracy": epochs}
    assert metrics["train:loss"][-1] < metrics["train:loss"][0]
    assert metrics["validation:accuracy"][-1] >= 0.95

    output = trained.training["digits_mlp"].output
    assert output is not None
    with tarfile.open(trained.engine.local_path(output["modelArtifacts"]), "r:gz") as archive:
        archive.extractall(tmp_path / "model", filter="data")
    sys.path.insert(0, str(TRAINING_CODE / "digits_mlp"))
    try:
        from digits_model import load_model  # type: ignore[import-not-found]
    finally:
        sys.path.pop(0)
    model = load_model(tmp_path / "model")
    rows = np.loadtxt(sample_data / "digits_mlp" / "validation" / "digits.csv", delimiter=",")
    with torch.no_grad():
        predictions = model(torch.tensor(rows[:, 1:], dtype=torch.float32)).argmax(dim=1).numpy()
    accuracy = float((predictions == rows[:, 0]).mean())
    assert accuracy == pytest.approx(metrics["validation:accuracy"][-1], abs=1e-6)


def test_builtin_xgboost_by_its_older_method_name(trained: TrainedRuns) -> None:
    """The older ``method`` input names the one program of that kind: builtin is digits_xgboost."""
    engine, result = trained.engine, trained.training["digits_xgboost"]
    assert TRAINED_INPUTS["digits_xgboost"]["method"] == "builtin"
    assert result.succeeded, result.cause
    assert result.output is not None and result.output["program"] == "digits_xgboost"
    assert _model_files(engine, result.output["modelArtifacts"]) == ["xgboost-model"]
    assert _metric(result.output, "validation:merror") <= 0.1


def test_tuning_picks_the_best_job(trained: TrainedRuns) -> None:
    engine, result = trained.engine, trained.tuning["digits_lightgbm"]
    assert TUNED_INPUTS["digits_lightgbm"]["hyperparameters"] == {"num_boost_round": "20", "report_every": "5"}
    assert TUNED_INPUTS["digits_lightgbm"]["tuning"] == {"maxJobs": 3, "maxParallelJobs": 2}
    assert result.succeeded, result.cause
    output = result.output
    assert output is not None and output["program"] == "digits_lightgbm"
    assert output["trainingJobCounters"]["Completed"] == 3
    backend = engine.backend
    assert isinstance(backend, LocalBackend)
    trials = [job for job in backend.jobs() if job.name.startswith(output["tuningJobName"] + "-")]
    assert len(trials) == 3
    # The user's static values and the program's `tunable = false` seed reach every trial.
    assert all(job.request["HyperParameters"]["num_boost_round"] == "20" and
               job.request["HyperParameters"]["report_every"] == "5" and
               job.request["HyperParameters"]["seed"] == "42" for job in trials)
    best = max(trials, key=lambda job: job.metrics["validation:accuracy"])
    assert output["trainingJobName"] == best.name
    assert output["objective"]["Value"] == pytest.approx(best.metrics["validation:accuracy"])
    assert set(output["tunedHyperparameters"]) == {"learning_rate", "num_leaves"}
    assert _model_files(engine, output["modelArtifacts"]) == ["model.txt"]
    # What the three trials cost, from the offline SageMaker's list of the tuning job's training
    # jobs and their billable time; the shipped price table holds no price, so unknown.
    assert output["cost"] == {"usd": None, "trainingJobs": 3, "trainingJobsOfUnknownCost": 3}
    listed = backend.list_training_jobs_for_hyper_parameter_tuning_job(
        {"HyperParameterTuningJobName": output["tuningJobName"], "MaxResults": 2})
    assert [s["TrainingJobName"] for s in listed["TrainingJobSummaries"]] == sorted(j.name for j in trials)[:2]
    assert listed["NextToken"] == "2" and all(s["TrainingJobStatus"] == "Completed" and s["TunedHyperParameters"]
                                              for s in listed["TrainingJobSummaries"])


def test_missing_data_fails_with_the_reason(engine: OfflineEngine) -> None:
    result = engine.run({"program": "digits_lightgbm", "inputs": {"train": "s3://nowhere-bucket/none/"}},
                        name="e2e-missing-data", timeout=120)
    assert result.status == "FAILED" and result.error == "TrainingJobFailed"
    assert 'No S3 objects found under S3 URL \\"s3://nowhere-bucket/none/\\"' in (result.cause or "")
    assert _no_training_processes_left(engine)


def test_crashing_script_fails_with_its_message(engine: OfflineEngine, tmp_path: Path) -> None:
    """Input the rules accept but the script cannot read (a channel of text, not numbers): the
    job fails and the execution reports the script's own message."""
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "digits.csv").write_text("label,pixel\n1,2\n")
    bad = f"s3://{engine.deployment.data_bucket}/datasets/e2e-crash/train/"
    engine.s3.put_tree(tmp_path / "train", bad)
    job_ends = JOB_ENDED.mark()
    result = engine.run({"program": "digits_mlp", "hyperparameters": {"epochs": "1"},
                         "inputs": {"train": bad}}, name="e2e-crash", timeout=120)
    assert result.status == "FAILED" and result.error == "TrainingJobFailed"
    # The job's end was announced: its .sync task looked at once, not at its next poll.
    assert JOB_ENDED.wait(job_ends, 0)
    assert "ChannelError: channel 'train': digits.csv is not numeric CSV" in (result.cause or "")
    assert "AlgorithmError" in (result.cause or "")
    assert _no_training_processes_left(engine)


def test_out_of_range_hyperparameter_is_refused_before_any_job(engine: OfflineEngine) -> None:
    """What used to crash the script (``--epochs -1``) is refused by the input rules in the
    state machine's first states, naming the bound, and no training job starts."""
    backend = engine.backend
    assert isinstance(backend, LocalBackend)
    jobs_before = len(backend.jobs())
    result = engine.run({"program": "digits_mlp", "hyperparameters": {"epochs": "-1"}},
                        name="e2e-refused", timeout=120)
    assert result.status == "FAILED" and result.error == "InvalidExecutionInput"
    assert result.cause == "hyperparameter 'epochs' must be at least 1, got -1"
    assert len(backend.jobs()) == jobs_before


def test_stopping_kills_the_training_process(engine: OfflineEngine) -> None:
    import time

    arn = engine.start({"program": "digits_mlp", "hyperparameters": {"epochs": "200"}}, name="e2e-stop")
    backend = engine.backend
    assert isinstance(backend, LocalBackend)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(
            j.process is not None and j.status == "InProgress" for j in backend.jobs()
            if {"Key": "smtrain:execution", "Value": "e2e-stop"} in j.request.get("Tags", [])):
        time.sleep(0.1)
    engine.stop(arn)
    result = engine.wait(arn, timeout=60)
    assert result.status == "ABORTED"
    assert wait_idle(backend, timeout=30)
    job = next(j for j in backend.jobs()
               if {"Key": "smtrain:execution", "Value": "e2e-stop"} in j.request.get("Tags", []))
    assert job.status == "Stopped"
    deadline = time.monotonic() + 15  # SIGTERM first, SIGKILL after the grace period
    while not _no_training_processes_left(engine) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _no_training_processes_left(engine)


def test_offline_runs_are_inspected_like_cloud_ones(engine: OfflineEngine, tmp_path: Path) -> None:
    """Issue 19, item 8: ``watch``, ``status``, ``list`` and ``logs`` take ``--local`` and read
    the runs the offline engine recorded, in a later process: from a folder whose ``.work/local``
    holds them (the default ``--work-dir``), and from the project root with ``--work-dir``. The
    session's trained digits_mlp run succeeded; one more run here fails (its data is missing)."""
    failed = engine.run({"program": "digits_lightgbm", "inputs": {"train": "s3://nowhere-bucket/none/"}},
                        name="inspected-failure", timeout=120)
    assert failed.status == "FAILED"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SMTRAIN_"))}
    (tmp_path / ".work").mkdir()
    (tmp_path / ".work" / "local").symlink_to(engine.work_dir)  # where `start --local` keeps runs
    succeeded = trained_name("digits_mlp")
    for cwd, where in ((tmp_path, []), (ROOT, ["--work-dir", str(engine.work_dir)])):
        listing = run_cli(["list", "--local", "--max", "1000", *where], env=env, cwd=cwd)
        assert listing.returncode == 0, listing.stderr
        rows = {line.split()[0]: line.split()[1] for line in listing.stdout.splitlines()[1:]}
        assert rows[succeeded] == "SUCCEEDED" and rows["inspected-failure"] == "FAILED", listing.stdout
        failed_only = run_cli(["list", "--local", "--status", "FAILED", *where], env=env, cwd=cwd)
        assert "inspected-failure" in failed_only.stdout and succeeded not in failed_only.stdout

        status = run_cli(["status", succeeded, "--local", *where], env=env, cwd=cwd)
        assert status.returncode == 0, status.stderr
        assert status.stdout.startswith(f"{succeeded}: SUCCEEDED (started ")
        job = next(line.split(": ", 1)[1] for line in status.stdout.splitlines() if line.startswith("job: "))
        assert "model: s3://" in status.stdout and "validation:accuracy=" in status.stdout
        # What the job cost, as the state machine reckoned it (no price shipped: unknown).
        assert re.search(rf"job {job} cost: unknown \(\d+ s billable x 1 ml\.m5\.xlarge; no price for "
                         r"ml\.m5\.xlarge in us-east-1: run `make prices`\)", status.stdout), status.stdout

        logs = run_cli(["logs", succeeded, "--local", *where], env=env, cwd=cwd)
        assert logs.returncode == 0 and f"== {job}" in logs.stdout
        assert "    | epoch=" in logs.stdout, logs.stdout[-2000:]

        status = run_cli(["status", "inspected-failure", "--local", *where], env=env, cwd=cwd)
        assert status.returncode == 0 and "inspected-failure: FAILED" in status.stdout
        assert "No S3 objects found under S3 URL" in status.stdout, status.stdout

        watched = run_cli(["watch", "inspected-failure", "--local", *where], env=env, cwd=cwd)
        assert watched.returncode == 1, watched.stdout + watched.stderr
        assert "No S3 objects found under S3 URL" in watched.stdout, watched.stdout
        assert run_cli(["watch", succeeded, "--local", *where], env=env, cwd=cwd).returncode == 0

    unknown = run_cli(["status", "never-ran", "--local"], env=env, cwd=tmp_path)
    assert (unknown.returncode, unknown.stderr.strip()) == (
        4, "smtrain: error: no offline run named never-ran under .work/local "
           "(`smtrain list --local --work-dir DIR` lists them)")
