"""What the local backend says about a job beyond its status: the reason of a failure whose
failure file is empty, a program whose output matches no metric definition, an MLflow run for a
program that logs none itself, and a stopped job that ends only with its last process. Each job
is a tiny BYOC program run by a real LocalBackend."""

from __future__ import annotations

import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from smtrain.local import local_backend
from smtrain.local.deployment import ByocProgram
from smtrain.local.local_backend import (
    FAILURE_REASON_LIMIT,
    Images,
    LocalBackend,
    TrainingJob,
    log_tail,
)
from smtrain.local.s3_stand_in import LocalS3
from tests.helpers import process_gone

IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/local-tiny:latest"
METRICS = [{"Name": "validation:accuracy", "Regex": r"validation:accuracy=([0-9.]+)"},
           {"Name": "train:loss", "Regex": r"train:loss=([0-9.]+)"}]


def tiny_backend(tmp_path: Path, program: str, *, requirements: str | None = None,
                 environment: dict[str, str] | None = None,
                 lines: list[tuple[str, str]] | None = None,
                 before_tracking: Callable[[], None] | None = None) -> LocalBackend:
    """A backend whose one BYOC image runs ``program`` (Python source) as its ``train``."""
    context = tmp_path / "context"
    program_dir = context / "tiny"
    program_dir.mkdir(parents=True)
    (program_dir / "train").write_text(textwrap.dedent(program))
    if requirements is not None:
        (program_dir / "requirements.txt").write_text(requirements)
    byoc = ByocProgram(name="tiny", image_uri=IMAGE, context_dir=context, program_dir=program_dir,
                       entry_point=program_dir / "train")
    return LocalBackend(s3=LocalS3(tmp_path / "s3"), work_dir=tmp_path / "work",
                        images=Images(byoc={IMAGE: byoc}), environment=environment,
                        env_cache=tmp_path / "envs", before_tracking=before_tracking,
                        on_log=(lambda job, line: lines.append((job, line))) if lines is not None else None)


def job_request(name: str, *, metric_definitions: list[dict[str, str]] | None = None,
                hyperparameters: dict[str, str] | None = None,
                tags: list[dict[str, str]] | None = None) -> dict[str, Any]:
    """A CreateTrainingJob request for the tiny BYOC image: one instance, no channels."""
    return {
        "TrainingJobName": name,
        "AlgorithmSpecification": {"TrainingImage": IMAGE, "TrainingInputMode": "File",
                                   "MetricDefinitions": metric_definitions or []},
        "RoleArn": "arn:aws:iam::123456789012:role/local",
        "HyperParameters": hyperparameters or {},
        "InputDataConfig": [],
        "OutputDataConfig": {"S3OutputPath": "s3://local-artifacts/models/"},
        "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 1},
        "StoppingCondition": {"MaxRuntimeInSeconds": 120},
        "Tags": tags or [],
    }


def run_job(backend: LocalBackend, name: str, *, metric_definitions: list[dict[str, str]] | None = None,
            hyperparameters: dict[str, str] | None = None,
            tags: list[dict[str, str]] | None = None) -> TrainingJob:
    job = backend.register(job_request(name, metric_definitions=metric_definitions,
                                       hyperparameters=hyperparameters, tags=tags))
    backend.execute(job)
    return job


FAILS_WITH_EMPTY_FAILURE_FILE = """
    import os, sys
    base = os.environ.get("SAGEMAKER_BASE_DIR", "/opt/ml")
    open(os.path.join(base, "output", "failure"), "w").close()
    print("loading the data", flush=True)
    print("Traceback (most recent call last):", file=sys.stderr)
    print("ValueError: the label column holds 'cat', expected an integer", file=sys.stderr)
    sys.exit(3)
"""


def test_an_empty_failure_file_gives_the_tail_of_stderr(tmp_path: Path) -> None:
    job = run_job(tiny_backend(tmp_path, FAILS_WITH_EMPTY_FAILURE_FILE), "empty-failure")
    assert job.status == "Failed"
    reason = job.describe()["FailureReason"]
    assert reason.startswith("AlgorithmError: ")
    assert "ValueError: the label column holds 'cat', expected an integer" in reason
    assert "loading the data" in reason
    assert "no Docker engine" not in reason  # the backend's own notes are not the program's output
    assert job.log_path is not None and job.log_path.is_file()


def test_a_failure_file_with_text_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    program = FAILS_WITH_EMPTY_FAILURE_FILE.replace(
        '"w").close()', '"w").write("the data is bad")')
    # What importing the training toolkit in the engine's process leaves in os.environ
    # (sagemaker_training.environment): the job must not inherit it.
    monkeypatch.setenv("SAGEMAKER_BASE_DIR", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("SM_MODEL_DIR", str(tmp_path / "elsewhere" / "model"))
    job = run_job(tiny_backend(tmp_path, program), "written-failure")
    assert job.failure_reason == "AlgorithmError: the data is bad"


def test_a_job_gets_none_of_the_callers_aws_credentials(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A SageMaker container gets the execution role's credentials from the instance, never the
    caller's: an offline job gets no AWS_* variable of the engine's (and calls no AWS service)."""
    for name, value in (("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE"), ("AWS_SECRET_ACCESS_KEY", "secret"),
                        ("AWS_SESSION_TOKEN", "token"), ("AWS_PROFILE", "admin")):
        monkeypatch.setenv(name, value)
    program = """
        import os, sys
        leaked = sorted(k for k in os.environ if k.startswith("AWS_"))
        base = os.environ.get("SAGEMAKER_BASE_DIR", "/opt/ml")
        open(os.path.join(base, "output", "failure"), "w").write(f"leaked: {leaked}")
        sys.exit(1)
    """
    job = run_job(tiny_backend(tmp_path, program), "no-credentials")
    assert job.failure_reason == "AlgorithmError: leaked: []"


def test_a_job_gets_only_the_machines_basics_of_the_callers_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A SageMaker container starts with its image's ENV and the request's Environment: offline,
    a job gets of the caller's shell only what a process needs to run here (PATH, HOME, locale,
    temporary files, proxies: local_backend.INHERITED_VARIABLES), never a token it holds."""
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_example")
    monkeypatch.setenv("MY_DATABASE_PASSWORD", "hunter2")
    monkeypatch.setenv("LC_ALL", "C.UTF-8")
    program = """
        import os, sys
        seen = sorted(k for k in ("GITHUB_TOKEN", "MY_DATABASE_PASSWORD", "HOME", "PATH", "LC_ALL")
                      if k in os.environ)
        base = os.environ.get("SAGEMAKER_BASE_DIR", "/opt/ml")
        open(os.path.join(base, "output", "failure"), "w").write(f"seen: {seen}")
        sys.exit(1)
    """
    job = run_job(tiny_backend(tmp_path, program), "only-basics")
    assert job.failure_reason == "AlgorithmError: seen: ['HOME', 'LC_ALL', 'PATH']"


def test_a_silent_crash_still_has_a_reason(tmp_path: Path) -> None:
    job = run_job(tiny_backend(tmp_path, "import sys; sys.exit(5)\n"), "silent-crash")
    assert job.failure_reason == ("AlgorithmError: the training program exited with code 5 "
                                  "and printed nothing")


def test_the_log_tail_is_bounded_and_keeps_the_last_lines() -> None:
    log = "\n".join(f"line {i} " + "x" * 50 for i in range(100)) + "\n\n"
    tail = log_tail(log)
    assert len(tail) <= 800
    assert tail.endswith("line 99 " + "x" * 50) and "line 80 " not in tail
    huge = log_tail("y" * 5000)
    assert len(huge) == 800 and huge.startswith("...")
    assert len(f"AlgorithmError: {huge}") < FAILURE_REASON_LIMIT


@pytest.mark.parametrize(("printed", "noted"), [("epoch=1 accuracy 0.9", True),
                                                ("epoch=1 validation:accuracy=0.9", False)])
def test_a_program_printing_no_metric_line_is_called_out(tmp_path: Path, printed: str,
                                                         noted: bool) -> None:
    lines: list[tuple[str, str]] = []
    backend = tiny_backend(tmp_path, f"print({printed!r})\n", lines=lines)
    job = run_job(backend, "no-metrics", metric_definitions=METRICS)
    assert job.status == "Completed"
    assert job.log_path is not None
    log = job.log_path.read_text()
    matching = [note for note in job.notes if "no line matched any metric definition" in note]
    if noted:
        (note,) = matching
        assert r"validation:accuracy=([0-9.]+)" in note and "tuning" in note
        assert f"smtrain local: {note}" in log
        assert ("no-metrics", f"smtrain local: {note}") in lines
    else:
        assert not matching and "no line matched" not in log
        assert job.metrics == {"validation:accuracy": 0.9}


SILENT_ABOUT_MLFLOW = """
    for epoch, (loss, accuracy) in enumerate([(0.9, 0.5), (0.5, 0.7), (0.2, 0.8)]):
        print(f"epoch={epoch} train:loss={loss} validation:accuracy={accuracy}", flush=True)
"""

LOGS_ITS_OWN_RUN = """
    import os
    import mlflow
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    mlflow.set_experiment(os.environ["MLFLOW_EXPERIMENT_NAME"])
    with mlflow.start_run(run_name="custom-name",
                          tags={"smtrain.training_job": os.environ["TRAINING_JOB_NAME"]}):
        mlflow.log_metric("validation:accuracy", 0.75)
    print("validation:accuracy=0.75")
"""


def _tracking(tmp_path: Path) -> dict[str, str]:
    from smtrain.local.engine import TRACKING_EXPERIMENT
    from smtrain.local.tracking_store import prepare_tracking_store

    return {"MLFLOW_TRACKING_URI": prepare_tracking_store(tmp_path / "mlflow"),
            "MLFLOW_EXPERIMENT_NAME": TRACKING_EXPERIMENT}


def _runs(environment: dict[str, str]) -> list[Any]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=environment["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name(environment["MLFLOW_EXPERIMENT_NAME"])
    assert experiment is not None
    return list(client.search_runs([experiment.experiment_id]))


def test_a_program_that_does_not_track_gets_a_run(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    environment = _tracking(tmp_path)
    backend = tiny_backend(tmp_path, SILENT_ABOUT_MLFLOW, environment=environment)
    job = run_job(backend, "untracked-job", metric_definitions=METRICS,
                  hyperparameters={"learning_rate": "0.1", "sagemaker_region": '"us-east-1"'},
                  tags=[{"Key": "smtrain:execution", "Value": "exec-1"},
                        {"Key": "smtrain:program", "Value": "tiny"},
                        {"Key": "sagemaker:tuning-job", "Value": "tune-1"}])
    assert job.status == "Completed", job.failure_reason
    assert job.log_path is not None and "logged no MLflow run" in job.log_path.read_text()
    (run,) = _runs(environment)
    assert run.info.run_name == "untracked-job" and run.info.status == "FINISHED"
    assert {key: run.data.tags[key] for key in ("smtrain.execution", "smtrain.program",
                                                "smtrain.training_job", "smtrain.tuning_job")} == {
        "smtrain.execution": "exec-1", "smtrain.program": "tiny",
        "smtrain.training_job": "untracked-job", "smtrain.tuning_job": "tune-1"}
    assert run.data.params == {"learning_rate": "0.1"}
    assert run.data.metrics == {"validation:accuracy": 0.8, "train:loss": 0.2}
    history = MlflowClient(tracking_uri=environment["MLFLOW_TRACKING_URI"]).get_metric_history(
        run.info.run_id, "validation:accuracy")
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == [
        (0, 0.5), (1, 0.7), (2, 0.8)]


def test_a_program_that_tracks_itself_is_not_logged_twice(tmp_path: Path) -> None:
    environment = _tracking(tmp_path)
    backend = tiny_backend(tmp_path, LOGS_ITS_OWN_RUN, environment=environment)
    job = run_job(backend, "tracked-job", metric_definitions=METRICS)
    assert job.status == "Completed", job.failure_reason
    (run,) = _runs(environment)
    assert run.info.run_name == "custom-name"
    assert job.log_path is not None and "MLflow" not in job.log_path.read_text()
    assert not job.notes


def test_a_tuning_objective_no_trial_reported_is_called_out(tmp_path: Path) -> None:
    import time

    prints_loss_only = """
        print("epoch=1 train:loss=0.5", flush=True)
    """
    backend = tiny_backend(tmp_path, prints_loss_only)
    backend.create_hyper_parameter_tuning_job({
        "HyperParameterTuningJobName": "no-objective",
        "HyperParameterTuningJobConfig": {
            "Strategy": "Random",
            "HyperParameterTuningJobObjective": {"Type": "Maximize",
                                                 "MetricName": "validation:accuracy"},
            "ResourceLimits": {"MaxNumberOfTrainingJobs": 2, "MaxParallelTrainingJobs": 1},
            "ParameterRanges": {"IntegerParameterRanges": [
                {"Name": "depth", "MinValue": "1", "MaxValue": "3"}]},
        },
        "TrainingJobDefinition": {
            "AlgorithmSpecification": {"TrainingImage": IMAGE, "TrainingInputMode": "File",
                                       "MetricDefinitions": METRICS},
            "RoleArn": "arn:aws:iam::123456789012:role/local",
            "StaticHyperParameters": {},
            "OutputDataConfig": {"S3OutputPath": "s3://local-artifacts/models/"},
            "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1,
                               "VolumeSizeInGB": 1},
            "StoppingCondition": {"MaxRuntimeInSeconds": 120},
        },
    })
    deadline = time.monotonic() + 120
    while (description := backend.describe_hyper_parameter_tuning_job("no-objective"))[
            "HyperParameterTuningJobStatus"] == "InProgress":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert description["HyperParameterTuningJobStatus"] == "Failed"
    # SageMaker's words, then what the trials did report.
    assert description["FailureReason"] == (
        "No training job succeeded with a value for the objective metric validation:accuracy; "
        "the 2 completed trial(s) reported train:loss: check the objective's metric definition "
        "(Regex) against the program's log lines")


def test_a_job_that_failed_before_training_gets_no_mlflow_note(tmp_path: Path) -> None:
    """Issue 19, item 10: the note that the backend logged a run "from its metric lines" is not
    printed for a job that failed before printing any metric line (there were none)."""
    environment = _tracking(tmp_path)
    lines: list[tuple[str, str]] = []
    backend = tiny_backend(tmp_path, FAILS_WITH_EMPTY_FAILURE_FILE, environment=environment, lines=lines)
    job = run_job(backend, "failed-early", metric_definitions=METRICS)
    assert job.status == "Failed"
    assert job.log_path is not None and "MLflow" not in job.log_path.read_text()
    assert not any("MLflow" in line for _, line in lines)


def test_a_job_that_failed_while_training_says_what_was_logged(tmp_path: Path) -> None:
    environment = _tracking(tmp_path)
    program = SILENT_ABOUT_MLFLOW + "    import sys\n    sys.exit('diverged')\n"
    job = run_job(tiny_backend(tmp_path, program, environment=environment), "failed-late",
                  metric_definitions=METRICS)
    assert job.status == "Failed"
    assert job.log_path is not None
    assert ("the program logged no MLflow run; logged one (FAILED) from the 6 metric values in its log"
            in job.log_path.read_text())
    (run,) = _runs(environment)
    assert run.info.status == "FAILED" and run.data.metrics == {"validation:accuracy": 0.8, "train:loss": 0.2}


#: Its first process ends on SIGTERM; the process it starts ignores SIGTERM and writes to a file
#: of its own (nothing of it holds the job's output pipe), and says its pid once it ignores it.
OUTLIVES_ITS_LEADER = """
    import os, subprocess, sys, time
    base = os.environ.get("SAGEMAKER_BASE_DIR", "/opt/ml")
    said = os.path.join(base, "output", "data", "stubborn.log")
    os.makedirs(os.path.dirname(said), exist_ok=True)
    stubborn = subprocess.Popen(
        [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                               "print('ignoring', flush=True); time.sleep(120)"],
        stdin=subprocess.DEVNULL, stdout=open(said, "w"), stderr=subprocess.STDOUT)
    while "ignoring" not in open(said).read():
        time.sleep(0.02)
    print(f"stubborn {stubborn.pid}", flush=True)
    time.sleep(120)
"""


def test_a_stopped_job_is_stopped_only_once_its_last_process_has_ended(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """StopTrainingJob: the job says Stopped only after the grace period's SIGKILL has ended the
    process that ignored SIGTERM too, never while it still runs."""
    terminate = local_backend._terminate_group
    monkeypatch.setattr(local_backend, "_terminate_group",
                        lambda process, grace_seconds=1.0: terminate(process, grace_seconds))
    backend = tiny_backend(tmp_path, OUTLIVES_ITS_LEADER)
    job = backend.register(job_request("stubborn"))
    runner = threading.Thread(target=backend.execute, args=(job,))
    runner.start()
    log = backend.work_dir / "jobs" / "stubborn" / "log.txt"
    deadline = time.monotonic() + 60
    while not (log.is_file() and "stubborn " in log.read_text()):
        assert time.monotonic() < deadline, "the program did not start"
        time.sleep(0.05)
    stubborn = int(log.read_text().split("stubborn ")[1].split()[0])
    backend.stop_training_job("stubborn")
    runner.join(timeout=40)
    assert not runner.is_alive() and job.status == "Stopped"
    assert process_gone(stubborn), "the job said Stopped while one of its processes still ran"
    assert not any("was still running" in note for note in job.notes)
