"""Offline BYOC jobs run their entry point as the container would (issue 19, items 2 and 3).

Real CreateTrainingJob-shaped requests run by a real LocalBackend, with the entry points in
tests/fixtures/containers: code that hard-codes ``/opt/ml`` finds its tree there (each job in a
mount namespace of its own, the host's ``/opt`` untouched), and ``train`` is started by its
``#!`` line (a shell script by ``sh``, an R script by ``Rscript``, or a clear failure naming
Rscript where this machine has none), not by Python.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from smtrain.local import opt_ml
from smtrain.local.deployment import ByocProgram
from smtrain.local.entry_point import EntryPointError, command_for
from smtrain.local.local_backend import Images, LocalBackend, TrainingJob
from smtrain.local.s3_stand_in import LocalS3
from tests.helpers import wait_idle

FIXTURES = Path(__file__).parent / "fixtures" / "containers"
REGISTRY = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
PROGRAMS = ("opt_ml_literal", "shell_entry", "r_entry", "dockerfile_env")
DATA_URI = "s3://local-data/rows/"
METRICS = [{"Name": "validation:accuracy", "Regex": r"validation:accuracy=([0-9.]+)"}]

AT_OPT_ML = opt_ml.probe()
needs_opt_ml = pytest.mark.skipif(not AT_OPT_ML.available,
                                  reason=f"no mount namespace here: {AT_OPT_ML.reason}")


def image(program: str) -> str:
    return f"{REGISTRY}/{program.replace('_', '-')}:latest"


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[LocalBackend]:
    byoc = {image(name): ByocProgram(name=name, image_uri=image(name), context_dir=FIXTURES,
                                     program_dir=FIXTURES / name, entry_point=FIXTURES / name / "train",
                                     dockerfile=(FIXTURES / name / "Dockerfile"
                                                 if (FIXTURES / name / "Dockerfile").is_file() else None))
            for name in PROGRAMS}
    s3 = LocalS3(tmp_path / "s3")
    rows = s3.path(DATA_URI + "rows.csv")
    rows.parent.mkdir(parents=True)
    rows.write_text("".join(f"{i % 10},{i},{i * 2}\n" for i in range(40)))
    backend = LocalBackend(s3=s3, work_dir=tmp_path / "work", images=Images(byoc=byoc),
                           env_cache=tmp_path / "envs")
    yield backend
    for job in backend.jobs():
        backend.stop_training_job(job.name)
    wait_idle(backend, 10)


def request(name: str, program: str, **hyperparameters: str) -> dict[str, Any]:
    return {
        "TrainingJobName": name,
        "AlgorithmSpecification": {"TrainingImage": image(program), "TrainingInputMode": "File",
                                   "MetricDefinitions": METRICS},
        "RoleArn": "arn:aws:iam::123456789012:role/local",
        "HyperParameters": hyperparameters,
        "InputDataConfig": [{"ChannelName": "training", "DataSource": {"S3DataSource": {
            "S3DataType": "S3Prefix", "S3Uri": DATA_URI, "S3DataDistributionType": "FullyReplicated"}}}],
        "OutputDataConfig": {"S3OutputPath": "s3://local-artifacts/models/"},
        "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 1},
        "StoppingCondition": {"MaxRuntimeInSeconds": 120},
    }


def run(backend: LocalBackend, body: dict[str, Any]) -> TrainingJob:
    job = backend.register(body)
    backend.execute(job)
    return job


def model_files(backend: LocalBackend, job: TrainingJob) -> dict[str, bytes]:
    import tarfile

    assert job.model_uri is not None
    with tarfile.open(backend.s3.path(job.model_uri)) as archive:
        return {member.name: archive.extractfile(member).read()  # type: ignore[union-attr]
                for member in archive.getmembers() if member.isfile()}


# -- /opt/ml: code that hard-codes it runs unchanged ---------------------------------------------
@needs_opt_ml
def test_a_program_on_literal_opt_ml_paths_trains_and_its_model_reaches_the_artifacts(
        backend: LocalBackend) -> None:
    host_had_opt_ml = os.path.lexists("/opt/ml")
    job = run(backend, request("literal-paths", "opt_ml_literal", depth="5"))
    assert job.status == "Completed", job.failure_reason
    assert model_files(backend, job) == {"model.json": b'{"rows": 40, "depth": 5}'}
    assert job.metrics == {"validation:accuracy": 0.4}
    assert job.log_path is not None
    log = job.log_path.read_text()
    assert "SAGEMAKER_BASE_DIR is set" not in log  # as on SageMaker: no such variable
    assert "/opt/ml is this job's tree" in log and AT_OPT_ML.describe() in log
    assert os.path.lexists("/opt/ml") == host_had_opt_ml  # the host's /opt is as it was


@needs_opt_ml
def test_two_jobs_at_once_each_see_their_own_opt_ml(backend: LocalBackend) -> None:
    jobs = [backend.register(request(f"at-once-{depth}", "opt_ml_literal", depth=str(depth)))
            for depth in (1, 2)]
    threads = [threading.Thread(target=backend.execute, args=(job,)) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for depth, job in zip((1, 2), jobs, strict=True):
        assert job.status == "Completed", job.failure_reason
        assert model_files(backend, job)["model.json"] == f'{{"rows": 40, "depth": {depth}}}'.encode()


def test_without_a_mount_namespace_the_tree_is_named_and_the_log_says_so(
        backend: LocalBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where this machine cannot mount (no unshare, no user namespaces), SAGEMAKER_BASE_DIR
    names the tree, and the job's log says which way it ran and what that means."""
    monkeypatch.setattr(opt_ml, "probe", lambda: opt_ml.OptMl(prefix=None, reason="unshare: denied"))
    job = run(backend, request("no-namespace", "opt_ml_literal"))
    assert job.log_path is not None
    log = job.log_path.read_text()
    assert ("no mount namespace here (unshare: denied): the job's tree is "
            f"{job.log_path.parent / 'opt_ml'}, named by SAGEMAKER_BASE_DIR; code that hard-codes "
            "/opt/ml will not find it") in log
    assert "SAGEMAKER_BASE_DIR is set" in log
    # This program hard-codes /opt/ml, so here it cannot find its configuration.
    assert job.status == "Failed"


# -- the entry point, started by its #! line ----------------------------------------------------
@needs_opt_ml
def test_a_shell_entry_point_runs_under_sh_not_python(backend: LocalBackend) -> None:
    job = run(backend, request("shell", "shell_entry"))
    assert job.status == "Completed", job.failure_reason
    assert model_files(backend, job) == {"model.txt": b"rows=40\n"}
    assert job.metrics == {"validation:accuracy": 0.91}
    assert job.log_path is not None
    assert f"runs on this machine: /bin/sh {FIXTURES / 'shell_entry' / 'train'}" in job.log_path.read_text()


@pytest.mark.skipif(shutil.which("Rscript") is not None, reason="R is installed here")
def test_an_r_entry_point_without_r_here_fails_naming_rscript(backend: LocalBackend) -> None:
    job = run(backend, request("r-missing", "r_entry"))
    assert job.status == "Failed"
    reason = job.failure_reason or ""
    assert reason.startswith("AlgorithmError: train starts with `#!/usr/bin/env Rscript`, and "
                             "`Rscript` is not installed on this machine"), reason
    assert "SyntaxError" not in reason


@needs_opt_ml
def test_an_r_entry_point_runs_with_the_rscript_on_path(
        backend: LocalBackend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The interpreter the #! line names runs the file: a stand-in ``Rscript`` on PATH records
    what it was given and writes the model, as R would."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    rscript = bin_dir / "Rscript"
    rscript.write_text('#!/bin/sh\necho "Rscript ran $1"\necho trained > /opt/ml/model/model.txt\n'
                       'echo "validation:accuracy=0.90"\n')
    rscript.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    job = run(backend, request("r-present", "r_entry"))
    assert job.status == "Completed", job.failure_reason
    assert job.log_path is not None
    assert f"Rscript ran {FIXTURES / 'r_entry' / 'train'}" in job.log_path.read_text()
    assert model_files(backend, job) == {"model.txt": b"trained\n"}


@pytest.mark.parametrize(("first_line", "expected"), [
    ("#!/usr/bin/env python3", ["{python}", "{file}"]),
    ("#!/usr/local/bin/python3.12 -u", ["{python}", "-u", "{file}"]),
    ("#!/usr/bin/env -S python -u", ["{python}", "-u", "{file}"]),
    ("#!/bin/sh -e", ["/bin/sh", "-e", "{file}"]),
    ("import sys", ["{python}", "{file}"]),  # no #! line: Python, as before (and a note)
])
def test_the_interpreter_comes_from_the_first_line(tmp_path: Path, first_line: str,
                                                   expected: list[str]) -> None:
    entry, python = tmp_path / "train", Path("/envs/program/bin/python")
    entry.write_text(f"{first_line}\nprint('hi')\n")
    command = command_for(entry, python)
    assert command.argv == [part.format(python=python, file=entry) for part in expected]
    assert (command.note is not None) == (not first_line.startswith("#!"))


def test_an_empty_env_line_is_refused(tmp_path: Path) -> None:
    entry = tmp_path / "train"
    entry.write_text("#!/usr/bin/env\n")
    with pytest.raises(EntryPointError, match="names no program for env"):
        command_for(entry, Path("/usr/bin/python3"))


# -- the image's Dockerfile: its pip installs and ENV are honoured, the rest is named -------------
def test_the_dockerfile_pip_installs_and_env_are_the_jobs_and_apt_is_named_as_not_reproduced(
        backend: LocalBackend) -> None:
    job = run(backend, request("from-dockerfile", "dockerfile_env"))
    assert job.status == "Completed", job.failure_reason
    assert job.log_path is not None
    installed = (job.log_path.parent / "image-requirements.txt").read_text().splitlines()
    assert installed == ["scikit-learn==1.7.2", "lightgbm==4.7.0"]  # the pins, in the image's order
    log = job.log_path.read_text()
    assert "greeting=from-the-image" in log
    assert "2 requirement(s) from its pip install lines go into the job's environment" in log
    assert "not reproduced here (no Docker): line 6: apt-get install python3-pip nginx" in log
    assert model_files(backend, job) == {"model.json": b'{"greeting": "from-the-image"}'}


def test_the_requests_environment_wins_over_the_images_env(backend: LocalBackend) -> None:
    body = request("env-over-image", "dockerfile_env")
    body["Environment"] = {"GREETING": "from-the-request"}
    job = run(backend, body)
    assert job.status == "Completed", job.failure_reason
    assert job.log_path is not None and "greeting=from-the-request" in job.log_path.read_text()


def test_an_unreadable_dockerfile_fails_the_job_naming_it(backend: LocalBackend, tmp_path: Path) -> None:
    context = tmp_path / "context"
    shutil.copytree(FIXTURES / "dockerfile_env", context / "broken")
    (context / "broken" / "Dockerfile").write_text("RUN pip install lightgbm\n")
    uri = image("broken")
    backend.images = Images(byoc={**backend.images.byoc, uri: ByocProgram(
        name="broken", image_uri=uri, context_dir=context, program_dir=context / "broken",
        entry_point=context / "broken" / "train", dockerfile=context / "broken" / "Dockerfile")})
    job = run(backend, request("broken-dockerfile", "broken"))
    assert job.status == "Failed"
    assert job.failure_reason == (f"AlgorithmError: the image's Dockerfile: {context / 'broken' / 'Dockerfile'} "
                                  "has no FROM instruction")


def test_what_is_not_reproduced_is_said_once_on_the_console_and_in_every_log(backend: LocalBackend) -> None:
    """A tuning run's trials share one image: its warning is one console line, not one a trial."""
    shown: list[str] = []
    backend.on_log = lambda job, line: shown.append(line)
    jobs = [run(backend, request(f"said-once-{n}", "dockerfile_env")) for n in range(2)]
    warnings = [line for line in shown if "not reproduced here (no Docker)" in line]
    assert len(warnings) == 1, shown
    for job in jobs:
        assert job.status == "Completed", job.failure_reason
        assert job.log_path is not None and warnings[0] in job.log_path.read_text()


def test_an_unbalanced_quote_in_the_shebang_is_read_as_words(tmp_path: Path) -> None:
    train = tmp_path / "train"
    train.write_text("#!/bin/sh -c 'echo\necho hi\n")
    train.chmod(0o755)
    command = command_for(train, Path(sys.executable))
    assert command.argv[:2] == ["/bin/sh", "-c"]
