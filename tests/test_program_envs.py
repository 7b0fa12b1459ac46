"""Program environments: a program's requirements go into a cached env of its own, layered over
the project's venv, never into the project's venv itself."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import subprocess
import sys
import sysconfig
import threading
from pathlib import Path

import pytest

from smtrain.local import program_envs
from smtrain.local.program_envs import ProgramEnvironmentError, environment_for
from tests.test_local_failures import run_job, tiny_backend

#: A tiny pure-Python package with no dependencies, on this machine's configured indexes and not
#: in the project's venv.
TINY = "appdirs==1.4.4"
PROJECT_SITE = Path(sysconfig.get_paths()["purelib"])


def _listing(directory: Path) -> dict[str, float]:
    return {path.name: path.stat().st_mtime for path in directory.iterdir()}


def _tree(directory: Path) -> dict[str, float]:
    return {str(path.relative_to(directory)): path.stat().st_mtime for path in directory.rglob("*")}


def _run(python: Path, code: str) -> str:
    result = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.mark.parametrize("text", [None, "", "# only a comment\n\n   # another\n"])
def test_no_requirements_is_the_project_interpreter(tmp_path: Path, text: str | None) -> None:
    requirements = None
    if text is not None:
        requirements = tmp_path / "requirements.txt"
        requirements.write_text(text)
    assert environment_for(requirements, tmp_path / "cache") == Path(sys.executable)
    assert not (tmp_path / "cache").exists()


def test_the_key_ignores_comments_and_order() -> None:
    key = program_envs.environment_key
    assert key("a==1\nb==2\n") == key("# pins\nb == 2  # why\n\na==1")
    assert key("a==1\n") != key("a==2\n")


def test_a_package_is_installed_into_the_env_only_and_the_env_is_reused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert importlib.util.find_spec("appdirs") is None, "the test needs a package the project lacks"
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(f"# a tiny one\n{TINY}\n")
    cache = tmp_path / "cache"
    before = _listing(PROJECT_SITE)
    try:
        python = environment_for(requirements, cache)
    except ProgramEnvironmentError as error:
        if "No matching distribution" in str(error):
            pytest.skip(f"{TINY} cannot be installed here: {error}")
        raise
    assert python.parent.parent.parent == cache.resolve() and python.is_file()
    assert len(python.parent.parent.name) == 16
    # Installed into the env: importable there (with the project's packages), not in the project.
    location = _run(python, "import appdirs, sagemaker_training, smtrain; print(appdirs.__file__)")
    assert Path(location).is_relative_to(python.parent.parent)
    assert _listing(PROJECT_SITE) == before
    assert importlib.util.find_spec("appdirs") is None
    # Reused: the second call builds nothing and changes nothing.
    built = _tree(cache)

    def no_build(*args: object, **kwargs: object) -> None:
        raise AssertionError("the env was built again")

    monkeypatch.setattr(program_envs, "_build", no_build)
    assert environment_for(requirements, cache) == python
    assert _tree(cache) == built


def test_requirements_the_project_satisfies_install_nothing(tmp_path: Path) -> None:
    version = importlib.metadata.version("packaging")
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(f"packaging=={version}\n")
    before = _listing(PROJECT_SITE)
    python = environment_for(requirements, tmp_path / "cache")
    assert python != Path(sys.executable)
    assert "pip not run" in (python.parent.parent / "pip.log").read_text()
    site = python.parent.parent / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    assert sorted(path.name for path in site.iterdir()) == ["_smtrain_project.pth"]
    assert _run(python, "import packaging; print(packaging.__version__)") == version
    # The env is what the toolkit's own ``pip install -r`` runs in: a no-op there too.
    check = subprocess.run([str(python), "-m", "pip", "install", "--no-index", "-r", str(requirements)],
                           capture_output=True, text=True, timeout=120)
    assert check.returncode == 0 and "Requirement already satisfied" in check.stdout, check.stderr
    assert _listing(PROJECT_SITE) == before


def test_concurrent_jobs_build_one_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(f"packaging=={importlib.metadata.version('packaging')}\n")
    builds: list[Path] = []
    real_build = program_envs._build

    def counting_build(env_dir: Path, text: str, vendored: Path | None = None, **over: Path | None) -> None:
        builds.append(env_dir)
        real_build(env_dir, text, vendored, **over)

    monkeypatch.setattr(program_envs, "_build", counting_build)
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(
        environment_for(requirements, tmp_path / "cache"))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(results) == 4 and len(set(results)) == 1
    assert len(builds) == 1


def test_a_failed_install_says_what_pip_said(tmp_path: Path) -> None:
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("smtrain-no-such-package-anywhere==9.9.9\n")
    before = _listing(PROJECT_SITE)
    with pytest.raises(ProgramEnvironmentError) as raised:
        environment_for(requirements, tmp_path / "cache")
    message = str(raised.value)
    assert "smtrain-no-such-package-anywhere" in message and "ERROR" in message
    # Nothing half-built is left to be reused.
    assert [path.suffix for path in (tmp_path / "cache").iterdir()] == [".lock"]
    assert _listing(PROJECT_SITE) == before


def test_a_byoc_job_runs_with_its_image_requirements(tmp_path: Path) -> None:
    program = "import appdirs, sys\nprint('appdirs from', appdirs.__file__, 'python', sys.executable)\n"
    backend = tiny_backend(tmp_path, program, requirements=f"{TINY}\n")
    job = run_job(backend, "with-requirements")
    if job.status == "Failed" and "No matching distribution" in (job.failure_reason or ""):
        pytest.skip(f"{TINY} cannot be installed here")
    assert job.status == "Completed", job.failure_reason
    assert job.python is not None and job.python.is_relative_to((tmp_path / "envs").resolve())
    assert job.log_path is not None
    assert f"appdirs from {job.python.parent.parent}" in job.log_path.read_text()


@pytest.mark.parametrize(("base_image", "sees_the_project"), [
    ("python:3.11-slim-bookworm", False),  # Docker's official python image: Python and pip only
    ("ubuntu:22.04", True),  # another base: what it holds is unknown here, the project stands in
])
def test_a_byoc_job_on_the_python_image_has_only_what_its_dockerfile_installs(
        tmp_path: Path, base_image: str, sees_the_project: bool) -> None:
    """On the official python image the job's environment holds what the Dockerfile pip-installs
    and nothing of the project's (a program importing a package its image lacks fails offline,
    as it would on SageMaker); on any other base the project's packages stand in for the
    image's, which no file here names."""
    from smtrain.local.deployment import ByocProgram
    from smtrain.local.local_backend import Images, LocalBackend
    from smtrain.local.s3_stand_in import LocalS3
    from tests.test_local_failures import IMAGE

    context = tmp_path / "context"
    context.mkdir()
    (context / "Dockerfile").write_text(f"FROM {base_image}\nRUN pip install {TINY}\n"
                                        "COPY train /opt/program/train\n")
    (context / "train").write_text(
        "import importlib.util, appdirs\n"
        "print('project visible', importlib.util.find_spec('pytest') is not None)\n")
    backend = LocalBackend(s3=LocalS3(tmp_path / "s3"), work_dir=tmp_path / "work",
                           images=Images(byoc={IMAGE: ByocProgram(
                               name="tiny", image_uri=IMAGE, context_dir=context, program_dir=context,
                               entry_point=context / "train", dockerfile=context / "Dockerfile")}),
                           env_cache=tmp_path / "envs")
    job = run_job(backend, "on-its-base")
    if job.status == "Failed" and "No matching distribution" in (job.failure_reason or ""):
        pytest.skip(f"{TINY} cannot be installed here")
    assert job.status == "Completed", job.failure_reason
    assert job.log_path is not None
    log = job.log_path.read_text()
    assert f"project visible {sees_the_project}" in log
    assert ("on a Python with no other package" in log) == (not sees_the_project)


def test_a_byoc_job_whose_dockerfile_s_pip_install_fails_says_first_what_docker_would_have_done(
        tmp_path: Path) -> None:
    """AWS's scikit_bring_your_own example (FROM ubuntu, apt-get, then pip-installs pins of its
    day): when its pip install fails here, the console has already said what this machine does
    not reproduce (the apt packages, the other base's Python), often the reason why."""
    from smtrain.local.deployment import ByocProgram
    from smtrain.local.local_backend import NOTE_PREFIX, Images, LocalBackend
    from smtrain.local.s3_stand_in import LocalS3
    from tests.test_local_failures import IMAGE

    context = tmp_path / "context"
    context.mkdir()
    (context / "Dockerfile").write_text(
        "FROM ubuntu:18.04\nRUN apt-get update && apt-get install -y python3 python3-pip nginx\n"
        "RUN pip install smtrain-no-such-package-anywhere==9.9.9\nCOPY train /opt/program/train\n")
    (context / "train").write_text("print('never runs')\n")
    lines: list[tuple[str, str]] = []
    backend = LocalBackend(s3=LocalS3(tmp_path / "s3"), work_dir=tmp_path / "work",
                           images=Images(byoc={IMAGE: ByocProgram(
                               name="tiny", image_uri=IMAGE, context_dir=context, program_dir=context,
                               entry_point=context / "train", dockerfile=context / "Dockerfile")}),
                           env_cache=tmp_path / "envs", on_log=lambda job, line: lines.append((job, line)))
    job = run_job(backend, "apt-then-pip")
    assert job.status == "Failed"
    assert (job.failure_reason or "").startswith("AlgorithmError: InstallRequirementsError: ")
    warnings = [line for _, line in lines if line.startswith(f"{NOTE_PREFIX}not reproduced here (no Docker): ")]
    assert len(warnings) == 1 and "nginx" in warnings[0], lines


def test_a_byoc_job_whose_requirements_fail_says_so(tmp_path: Path) -> None:
    backend = tiny_backend(tmp_path, "print('never runs')\n",
                           requirements="smtrain-no-such-package-anywhere==9.9.9\n")
    job = run_job(backend, "bad-requirements")
    assert job.status == "Failed"
    reason = job.failure_reason or ""
    assert reason.startswith("AlgorithmError: InstallRequirementsError: ")
    assert "smtrain-no-such-package-anywhere" in reason and len(reason) <= 1024


# --- the toolkit's pip install in a program environment ---------------------------------------

def _environment(directory: Path, built_from_text: str | None) -> Path:
    directory.mkdir(parents=True)
    if built_from_text is not None:
        (directory / program_envs.COMPLETE_MARKER).write_text(built_from_text)
    return directory


#: Pins this interpreter meets (the tests' own packages), and one it does not.
MET = f"pytest=={pytest.__version__}\npsutil=={importlib.metadata.version('psutil')}\n"
UNMET = "pytest==0.0.1\n"


@pytest.mark.parametrize(("environment_text", "code_text", "skipped"), [
    (MET, "# pins\n" + "\n".join(reversed(MET.split())) + "\n", True),  # the same, written otherwise
    (MET, UNMET, False),  # another pin: the toolkit installs it, as on SageMaker
    (UNMET, UNMET, False),  # built from this file, but no longer met (the project moved on)
    (None, MET, False),  # no finished environment (the project's own interpreter)
], ids=["same-and-met", "another-file", "same-but-unmet", "no-environment"])
def test_the_toolkit_installs_only_what_the_environment_was_not_built_from(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        environment_text: str | None, code_text: str, skipped: bool) -> None:
    from smtrain.local import toolkit_train

    environment = _environment(tmp_path / "env", environment_text)
    code = tmp_path / "code"
    code.mkdir()
    (code / "requirements.txt").write_text(code_text)
    installs: list[str] = []
    monkeypatch.setattr(toolkit_train, "_install_requirements",
                        lambda path, capture_error=False: installs.append(path))
    monkeypatch.setattr(sys, "prefix", str(environment))
    with caplog.at_level("INFO", logger="sagemaker-training-toolkit"):
        toolkit_train.install_requirements(str(code))
    assert installs == ([] if skipped else [str(code)])
    assert ("the toolkit's pip install is not run again" in caplog.text) is skipped



def test_wheels_for_another_python_are_not_installed_here(tmp_path: Path) -> None:
    """A vendored bundle's wheels are for the image's CPython; where this interpreter differs,
    the offline env installs the program's own requirements.txt as before."""
    here = f"cp{sys.version_info.major}{sys.version_info.minor}"
    (tmp_path / "pure-1.0-py3-none-any.whl").write_bytes(b"")
    (tmp_path / f"fast-1.0-{here}-abi3-manylinux2014_x86_64.whl").write_bytes(b"")
    assert program_envs.wheels_install_here(tmp_path) == (platform.system() == "Linux"
                                                          and platform.machine() == "x86_64")
    (tmp_path / "old-1.0-cp27-cp27mu-manylinux1_x86_64.whl").write_bytes(b"")
    assert not program_envs.wheels_install_here(tmp_path)


def test_a_program_environment_over_an_image_environment_sees_it_and_not_the_project(tmp_path: Path) -> None:
    """A framework image's environment (smtrain.local.framework_envs) is the base a program's
    requirements go over: the program sees the image's packages and its own, never the
    project's; with no requirements it runs with the image's Python itself."""
    base = tmp_path / "image-env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(base)], check=True)
    assert environment_for(None, tmp_path / "cache", base=base) == base / "bin" / "python"
    requirements = tmp_path / "requirements.txt"
    version = importlib.metadata.version("packaging")
    requirements.write_text(f"packaging=={version}\n")
    python = environment_for(requirements, tmp_path / "cache", base=base)
    assert python.parent.parent.parent == (tmp_path / "cache").resolve()
    # Installed (the image has no packaging), where the project's would have satisfied it.
    assert "pip not run" not in (python.parent.parent / "pip.log").read_text()
    probe = subprocess.run([str(python), "-c", "import importlib.util as u, packaging; "
                            "print(packaging.__version__, u.find_spec('torch') is None)"],
                           capture_output=True, text=True, check=True, cwd=tmp_path,
                           env={key: value for key, value in os.environ.items() if key != "PYTHONPATH"})
    assert probe.stdout.split() == [version, "True"]
    # Its cache key is not the one over the project's environment.
    assert python != environment_for(requirements, tmp_path / "cache")
