"""`smtrain start --local` never runs stale code, reports a run it already made, and shows the end
of a failed job's log; `smtrain watch` shows the end of a failed job's CloudWatch stream.

The app is synthesized once per module, in-process, from a copy of the project's training_code
(which the tests edit and restore); SageMaker is the scripted test double, so nothing trains.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from smtrain.cli import EXIT_ENVIRONMENT, EXIT_FAILED, EXIT_OK, local_runs, main, watch
from smtrain.core.programs import discover
from smtrain.local import engine as engine_module
from smtrain.local.staleness import code_digest, stale_programs
from tests.conftest import ROOT, shipped_training_code, synthesize
from tests.scripted_sagemaker import JobScript, ScriptedBackend, shorten_retries


@dataclass(frozen=True)
class Project:
    code: Path
    outdir: Path


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, cdk_context: dict[str, Any],
            settings: Any) -> Project:
    base = tmp_path_factory.mktemp("project")
    # The shipped programs only: a team's own in training_code/ must not change these tests.
    code = shipped_training_code(base / "training_code")
    outdir = base / "cdk.out"
    synthesize(cdk_context, settings, outdir, training_code_dir=code)
    return Project(code=code, outdir=outdir)


@contextmanager
def edited(path: Path, addition: str = "\n# edited after the synth\n") -> Iterator[bytes]:
    """``path`` with ``addition`` appended; restored afterwards. Yields the original bytes."""
    original = path.read_bytes()
    path.write_bytes(original + addition.encode())
    try:
        yield original
    finally:
        path.write_bytes(original)


def _names(problems: list[str]) -> set[str]:
    return {line.split(":", 1)[0] for line in problems}


# -- staleness ------------------------------------------------------------------------------------
def test_unchanged_code_is_not_stale(project: Project) -> None:
    assert stale_programs(project.outdir, discover(project.code)) == []


def test_an_edited_script_program_is_stale(project: Project) -> None:
    with edited(project.code / "digits_mlp" / "train.py"):
        problems = stale_programs(project.outdir, discover(project.code))
    assert _names(problems) == {"digits_mlp"}, problems
    assert "train.py" in problems[0] and "changed since the last synth" in problems[0]
    assert stale_programs(project.outdir, discover(project.code)) == [], "restored: current again"


def test_an_edited_manifest_is_stale_even_for_a_builtin_program(project: Project) -> None:
    # A built-in program has no code; its manifest is what the state machine checks and routes
    # with (bounds, defaults, channels), so an edited one must not run against the old definition.
    with edited(project.code / "digits_xgboost" / "program.toml"):
        problems = stale_programs(project.outdir, discover(project.code))
    assert problems == [f"digits_xgboost: program.toml changed since {project.outdir} was "
                        "synthesized (the state machine checks and routes with the old one)"]
    assert stale_programs(project.outdir, discover(project.code)) == []


def test_an_edited_byoc_program_is_stale(project: Project) -> None:
    with edited(project.code / "digits_lightgbm" / "train"):
        problems = stale_programs(project.outdir, discover(project.code))
    assert _names(problems) == {"digits_lightgbm"}, problems
    assert "digits_lightgbm/train" in problems[0]


def test_an_edited_shared_folder_makes_every_user_stale(project: Project) -> None:
    with edited(project.code / "common" / "channels.py"):
        problems = stale_programs(project.outdir, discover(project.code))
    assert _names(problems) == {"digits_mlp", "digits_lightgbm"}, problems


def test_interpreter_caches_are_not_code(project: Project) -> None:
    caches = [project.code / "digits_lightgbm" / "byoc_training" / "__pycache__",
              project.code / "common" / "__pycache__"]
    try:
        for cache in caches:
            cache.mkdir()
            (cache / "trainer.cpython-312.pyc").write_bytes(b"\x00compiled")
        assert stale_programs(project.outdir, discover(project.code)) == []
    finally:
        for cache in caches:
            shutil.rmtree(cache, ignore_errors=True)


def test_a_new_program_folder_is_stale(project: Project) -> None:
    new = project.code / "digits_new"
    shutil.copytree(project.code / "digits_xgboost", new)
    try:
        manifest = new / "program.toml"
        manifest.write_text(manifest.read_text().replace('name = "digits_xgboost"', 'name = "digits_new"'))
        problems = stale_programs(project.outdir, discover(project.code))
    finally:
        shutil.rmtree(new)
    assert _names(problems) == {"digits_new"}, problems
    assert "has no builtin program of that name" in problems[0]


def test_a_synthesized_program_whose_folder_is_gone_is_stale(project: Project) -> None:
    programs = discover(project.code)
    for gone in ("digits_mlp", "digits_lightgbm"):
        problems = stale_programs(project.outdir, {k: v for k, v in programs.items() if k != gone})
        assert _names(problems) == {gone}, problems
        assert "folder is gone" in problems[0]


def test_the_code_digest_follows_the_code(project: Project) -> None:
    programs = discover(project.code)
    before = {name: code_digest(program) for name, program in programs.items()}
    assert before == {name: code_digest(program) for name, program in programs.items()}, "deterministic"
    with edited(project.code / "common" / "tracking.py"):
        after = {name: code_digest(program) for name, program in programs.items()}
    changed = {name for name in before if before[name] != after[name]}
    assert changed == {"digits_mlp", "digits_lightgbm"}


# -- start --local --------------------------------------------------------------------------------
class LoggingBackend(ScriptedBackend):
    """Scripted jobs that leave a 30-line log where the local backend writes each job's log."""

    def __init__(self, script: JobScript, work_dir: Path) -> None:
        super().__init__(script)
        self.work_dir = work_dir

    def create_training_job(self, request: dict[str, Any]) -> dict[str, Any]:
        answer = super().create_training_job(request)
        log = self.work_dir.resolve() / "jobs" / request["TrainingJobName"] / "log.txt"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("".join(f"log line {n}\n" for n in range(1, 31)))
        return answer


class Offline:
    """``smtrain start --local`` in this process, on the module's cdk.out and a scripted SageMaker."""

    def __init__(self, project: Project, work_dir: Path, monkeypatch: pytest.MonkeyPatch,
                 capsys: pytest.CaptureFixture[str]) -> None:
        self.project, self.work_dir, self.capsys = project, work_dir, capsys
        self.script = JobScript(statuses=("InProgress", "Completed"))
        self.started: list[str] = []
        real = engine_module.OfflineEngine

        def engine(**kwargs: Any) -> Any:
            self.started.append("engine")
            built = real(**kwargs, backend=LoggingBackend(self.script, kwargs["work_dir"]))
            shorten_retries(built.deployment.definition, 1)
            return built

        monkeypatch.setattr(engine_module, "OfflineEngine", engine)
        # The CLI reads the copy's programs (not training_code/, which may hold more).
        monkeypatch.setenv("SMTRAIN_TRAINING_CODE", str(project.code))

    def start(self, *extra: str) -> tuple[int, str, str]:
        code = main(["start", "--local", "--method", "script", "--hp", "epochs=2",
                     "--cdk-out", str(self.project.outdir), "--work-dir", str(self.work_dir), *extra])
        captured = self.capsys.readouterr()
        return code, captured.out, captured.err


@pytest.fixture
def offline(project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
            capsys: pytest.CaptureFixture[str]) -> Offline:
    return Offline(project, tmp_path / "work", monkeypatch, capsys)


def _record(offline: Offline) -> tuple[Path, dict[str, Any]]:
    (path,) = (offline.work_dir / "runs").glob("*.json")
    record: dict[str, Any] = json.loads(path.read_text())
    return path, record


def test_the_same_command_reports_the_earlier_run(offline: Offline) -> None:
    code, out, err = offline.start()
    assert code == EXIT_OK, out + err
    assert offline.started == ["engine"] and "Already ran" not in out
    path, record = _record(offline)
    name = path.stem
    assert record["status"] == "SUCCEEDED" and record["execution"] == name
    assert record["codeDigest"] == code_digest(discover(offline.project.code)["digits_mlp"])

    code, out, err = offline.start()
    assert code == EXIT_OK, out + err
    assert offline.started == ["engine"], "the engine was not started again"
    assert f"Already ran {name} on " in out
    assert "with the same code, input and synthesized app (--again to train again)" in out
    assert "metrics: validation:accuracy=0.97" in out
    output = json.loads(out[out.index("{"):])
    assert output == record["output"], "the same result summary as the run itself"


def test_again_trains_again_under_a_new_name(offline: Offline) -> None:
    assert offline.start()[0] == EXIT_OK
    path, _ = _record(offline)
    code, out, err = offline.start("--again")
    assert code == EXIT_OK, out + err
    assert offline.started == ["engine", "engine"]
    assert "Already ran" not in out
    _, record = _record(offline)
    assert record["execution"].startswith(f"{path.stem}-") and len(record["execution"]) <= 80
    assert f"Started {record['execution']} locally" in out
    assert offline.start()[1].count(f"Already ran {record['execution']} on ") == 1, "the latest run"


def test_other_code_trains_again(offline: Offline) -> None:
    assert offline.start()[0] == EXIT_OK
    path, record = _record(offline)
    path.write_text(json.dumps({**record, "codeDigest": "sha256:" + "0" * 64}))
    code, out, _ = offline.start()
    assert code == EXIT_OK and "Already ran" not in out
    assert offline.started == ["engine", "engine"]


def test_another_synthesized_app_trains_again(offline: Offline) -> None:
    """The same code and input on an app synthesized otherwise since (another state machine, a
    setting changed): the earlier run is not that app's, so it trains again."""
    assert offline.start()[0] == EXIT_OK
    path, record = _record(offline)
    assert record["appDigest"].startswith("templates:")
    path.write_text(json.dumps({**record, "appDigest": "templates:" + "0" * 64}))
    code, out, _ = offline.start()
    assert code == EXIT_OK and "Already ran" not in out
    assert offline.started == ["engine", "engine"]


def test_a_failed_run_is_not_reused_and_shows_its_log(offline: Offline) -> None:
    offline.script.statuses = ("InProgress", "Failed")
    for attempt in (1, 2):
        code, out, _ = offline.start()
        assert code == EXIT_FAILED, out
        assert len(offline.started) == attempt and "Already ran" not in out
    assert not (offline.work_dir / "runs").exists() or not list((offline.work_dir / "runs").iterdir())
    assert "reason: AlgorithmError: scripted failure" in out
    tail = out[out.index("last 20 of 30 log lines"):]
    assert [line for line in tail.splitlines() if line.startswith("    | ")] == [
        f"    | log line {n}" for n in range(11, 31)]
    (shown,) = [line.removeprefix("whole log: ") for line in tail.splitlines() if line.startswith("whole log: ")]
    assert Path(shown) in {log.resolve() for log in (offline.work_dir / "jobs").glob("*/log.txt")}


def test_stale_code_with_no_synth_is_refused(offline: Offline) -> None:
    with edited(offline.project.code / "digits_mlp" / "digits_model.py"):
        code, out, err = offline.start("--no-synth")
    assert code == EXIT_ENVIRONMENT, out + err
    assert offline.started == []
    assert len(err.strip().splitlines()) == 1, err
    assert "digits_mlp" in err and "run `make synth`" in err


def test_stale_code_is_synthesized_again(offline: Offline, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    edited_file = offline.project.code / "digits_mlp" / "train.py"
    calls = tmp_path / "cdk-calls"
    fake = tmp_path / "cdk"
    with edited(edited_file) as original:
        saved = tmp_path / "train.py.synth"
        saved.write_bytes(original)
        # A stand-in for `cdk synth` that brings cdk.out and the code together again (by undoing
        # the edit: cdk.out was synthesized from the original) and records how it was called.
        fake.write_text("#!/bin/sh\n"
                        f'echo "$PWD|$*|$CDK_DISABLE_CLI_TELEMETRY|$CDK_DISABLE_VERSION_CHECK" >> {calls}\n'
                        f"cp {saved} {edited_file}\n")
        fake.chmod(0o755)
        monkeypatch.setattr(local_runs, "CDK", fake)
        code, out, err = offline.start()
    assert code == EXIT_OK, out + err
    assert calls.read_text().splitlines() == [
        f"{ROOT}|synth --no-notices --quiet --output {offline.project.outdir.resolve()}|true|1"]
    assert "digits_mlp: the code changed since the last synth" in out
    assert f"re-synthesized {offline.project.outdir}" in out
    assert offline.started == ["engine"]


def test_a_missing_or_failing_synth_is_refused(offline: Offline, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    failing = tmp_path / "cdk"
    failing.write_text("#!/bin/sh\necho 'Error: no credentials for the lookup' >&2\nexit 1\n")
    failing.chmod(0o755)
    for cdk, why in ((tmp_path / "no-cdk", "is missing"), (failing, "cdk synth exited with 1")):
        monkeypatch.setattr(local_runs, "CDK", cdk)
        with edited(offline.project.code / "common" / "channels.py"):
            code, out, err = offline.start()
        assert code == EXIT_ENVIRONMENT, out + err
        assert len(err.strip().splitlines()) == 1, err
        assert why in err and "run `make synth`" in err
    assert offline.started == []


# -- the end of a failed job's CloudWatch stream (AWS) ---------------------------------------------
STREAM = "smtrain-run-1/algo-1-1700000000"
STREAM_URL = ("https://us-east-1.console.aws.amazon.com/cloudwatch/home?region=us-east-1#logsV2:"
              "log-groups/log-group/$252Faws$252Fsagemaker$252FTrainingJobs/log-events/"
              "smtrain-run-1$252Falgo-1-1700000000")


@pytest.fixture
def logs() -> Iterator[tuple[Any, Stubber]]:
    client = boto3.client("logs", region_name="us-east-1", aws_access_key_id="testing",
                          aws_secret_access_key="testing")
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


def _stub_stream(stubber: Stubber, messages: list[str]) -> None:
    stubber.add_response("describe_log_streams", {"logStreams": [{"logStreamName": STREAM}]},
                         {"logGroupName": "/aws/sagemaker/TrainingJobs",
                          "logStreamNamePrefix": "smtrain-run-1/"})
    stubber.add_response("get_log_events",
                         {"events": [{"timestamp": n, "message": m} for n, m in enumerate(messages)]},
                         {"logGroupName": "/aws/sagemaker/TrainingJobs", "logStreamName": STREAM,
                          "limit": 20, "startFromHead": False})


def test_the_stream_tail_and_its_url(logs: tuple[Any, Stubber], capsys: pytest.CaptureFixture[str]) -> None:
    client, stubber = logs
    _stub_stream(stubber, [f"message {n}\n" for n in range(11, 31)])
    watch.print_failure_log(client, "smtrain-run-1", "us-east-1")
    out = capsys.readouterr().out
    assert [line for line in out.splitlines() if line.startswith("    | ")] == [
        f"    | message {n}" for n in range(11, 31)]
    assert f"whole log: {STREAM_URL}" in out


@pytest.mark.parametrize(("answer", "expected"), [
    ("AccessDeniedException", "cannot read the CloudWatch log of job smtrain-run-1 (AccessDeniedException)"),
    ("ResourceNotFoundException", "log group /aws/sagemaker/TrainingJobs does not exist"),
    ("empty", "no CloudWatch log stream for job smtrain-run-1"),
])
def test_no_stream_or_no_permission_is_one_line(logs: tuple[Any, Stubber], capsys: pytest.CaptureFixture[str],
                                                answer: str, expected: str) -> None:
    client, stubber = logs
    if answer == "empty":
        stubber.add_response("describe_log_streams", {"logStreams": []})
    else:
        stubber.add_client_error("describe_log_streams", service_error_code=answer, http_status_code=400)
    watch.print_failure_log(client, "smtrain-run-1", "us-east-1")
    out = capsys.readouterr().out
    assert out.strip().splitlines() == [out.strip()] and expected in out


class _Sfn:
    def describe_execution(self, executionArn: str) -> dict[str, Any]:
        cause = json.dumps({"TrainingJobName": "smtrain-run-1", "FailureReason": "AlgorithmError: boom"})
        return {"status": "FAILED", "error": "TrainingJobFailed", "cause": cause}

    def get_execution_history(self, **_: Any) -> dict[str, Any]:
        return {"events": []}


class _Session:
    def __init__(self, logs: Any) -> None:
        self.logs = logs

    def client(self, service: str) -> Any:
        return {"stepfunctions": _Sfn(), "sagemaker": None, "logs": self.logs}[service]


def test_watch_of_a_failed_run_prints_the_stream_tail(logs: tuple[Any, Stubber],
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    client, stubber = logs
    _stub_stream(stubber, ["Traceback (most recent call last):", "ValueError: boom"])
    arn = "arn:aws:states:us-east-1:123456789012:execution:smtrain-training:run-1"
    assert watch.follow(_Session(client), arn, logs=False, interval=0) == EXIT_FAILED
    out = capsys.readouterr().out
    assert "reason: AlgorithmError: boom" in out
    assert out.index("reason:") < out.index("    | ValueError: boom") < out.index(f"whole log: {STREAM_URL}")
