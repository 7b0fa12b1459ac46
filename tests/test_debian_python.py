"""smtrain.local.debian_python: Debian's packages unpacked by their pins, never other bytes."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from pathlib import Path

import pytest

from smtrain.local import debian_python
from smtrain.local.debian_python import DebianPackage, extract_deb, fetch
from smtrain.local.program_envs import ProgramEnvironmentError


def _deb(files: dict[str, bytes]) -> bytes:
    """A .deb as deb(5) lays it out: an ar archive of debian-binary, control and data tarballs."""
    def tarball(entries: dict[str, bytes]) -> bytes:
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w:xz") as archive:
            for name, data in entries.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
        return out.getvalue()

    members = [("debian-binary", b"2.0\n"), ("control.tar.xz", tarball({"./control": b"Package: x\n"})),
               ("data.tar.xz", tarball(files))]
    body = b"!<arch>\n"
    for name, data in members:
        body += f"{name + '/':<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(data):<10}`\n".encode()
        body += data + (b"\n" if len(data) % 2 else b"")
    return body


def test_a_package_s_data_is_unpacked_under_the_folder(tmp_path: Path) -> None:
    extract_deb(_deb({"./usr/bin/tool": b"#!/bin/sh\n", "./usr/lib/x/lib.so.1": b"ELF"}), tmp_path)
    assert (tmp_path / "usr" / "bin" / "tool").read_bytes() == b"#!/bin/sh\n"
    assert (tmp_path / "usr" / "lib" / "x" / "lib.so.1").read_bytes() == b"ELF"
    assert not (tmp_path / "control").exists()


def test_other_bytes_than_the_pin_are_refused_naming_both_hashes(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The first mirror that serves a file is used (SMTRAIN_DEBIAN_MIRROR before Debian's), and
    only where its bytes hash to the pin; a file no mirror serves is named with each refusal."""
    data = _deb({"./usr/bin/tool": b"x"})
    (tmp_path / "debian" / "pool").mkdir(parents=True)
    (tmp_path / "debian" / "pool" / "tool.deb").write_bytes(data)
    monkeypatch.setenv("SMTRAIN_DEBIAN_MIRROR", tmp_path.as_uri())
    monkeypatch.setattr(debian_python, "MIRRORS", (f"{tmp_path.as_uri()}/elsewhere",))
    assert debian_python.mirrors() == [tmp_path.as_uri(), f"{tmp_path.as_uri()}/elsewhere"]
    pinned = DebianPackage("debian", "pool/tool.deb", hashlib.sha256(data).hexdigest())
    assert fetch(pinned) == data
    with pytest.raises(ProgramEnvironmentError, match=rf"has SHA-256 {pinned.sha256}, not the pinned {'0' * 64}"):
        fetch(DebianPackage("debian", "pool/tool.deb", "0" * 64))
    with pytest.raises(ProgramEnvironmentError, match=r"could not download .*/debian/pool/missing\.deb: .*; "
                                                      r".*/elsewhere/debian/pool/missing\.deb: "):
        fetch(DebianPackage("debian", "pool/missing.deb", "0" * 64))
    with pytest.raises(ProgramEnvironmentError, match="not a Debian package"):
        extract_deb(b"PK\x03\x04", tmp_path)


def test_a_package_file_outside_its_folder_is_refused_and_absolute_links_stay_inside(tmp_path: Path) -> None:
    with pytest.raises(ProgramEnvironmentError, match="outside its folder"):
        extract_deb(_deb({"../escape": b"x"}), tmp_path / "root")
    root = tmp_path / "unpacked"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "site.py").write_text("inside")
    (root / "lib").mkdir()
    (root / "lib" / "site.py").symlink_to("/etc/site.py")
    (root / "lib" / "gone.py").symlink_to("/etc/no-such-file.py")
    (root / "lib" / "relative.py").symlink_to("../etc/site.py")
    debian_python.keep_links_inside(root)
    assert os.readlink(root / "lib" / "site.py") == "../etc/site.py"
    assert not (root / "lib" / "gone.py").is_symlink()
    assert os.readlink(root / "lib" / "relative.py") == "../etc/site.py"


def test_only_the_known_version_is_offered() -> None:
    with pytest.raises(ProgramEnvironmentError, match=r"no Debian CPython 3\.8 is known here: 3\.9"):
        debian_python.debian_python("3.8", Path("unused"), print)


def test_a_program_environment_over_the_xgboost_image_s_runs_its_python(tmp_path: Path) -> None:
    """A program's requirements layered over the XGBoost 1.7-1 image's environment (Debian's
    Python 3.9): a venv of that interpreter, which sees the image's packages (here every pin is
    the image's own, so pip is not run), and a job's own venv over it sees them too."""
    import subprocess

    from smtrain.local import framework_envs
    from smtrain.local.program_envs import default_cache_dir, environment_for, job_environment

    reason = debian_python.unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    image = framework_envs.framework_environment("xgboost", "1.7-1", default_cache_dir(), log=lambda line: None)
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("xgboost==1.7.4\npandas==1.2.4\n")
    program = environment_for(requirements, tmp_path / "cache", base=image)
    assert program.parent.parent != image
    assert "pip not run" in (program.parent.parent / "pip.log").read_text()
    job = job_environment(program, tmp_path / "module-env")
    for python in (program, job):
        ran = subprocess.run([str(python), "-c", "import sys, xgboost, pandas; "
                              "print(sys.version.split()[0], xgboost.__version__, pandas.__version__, sys.prefix)"],
                             capture_output=True, text=True, check=True, env={"PATH": "/usr/bin:/bin"})
        assert ran.stdout.split() == ["3.9.2", "1.7.4", "1.2.4", str(python.parent.parent)]
    # What AWS's examples import from the image's own package, which is not on PyPI: refused
    # saying why, not with a bare "No module named".
    refused = subprocess.run([str(job), "-c", "from sagemaker_xgboost_container.data_utils import get_dmatrix"],
                             capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
    assert refused.returncode == 1
    assert ("ImportError: sagemaker_xgboost_container.data_utils is a module of the SageMaker XGBoost "
            "image's own package, which is not on PyPI") in refused.stderr


def test_where_debian_s_python_cannot_run_the_xgboost_environment_is_refused_saying_why(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a machine that is not Linux x86_64 nothing is downloaded; the job fails naming why."""
    from smtrain.local import framework_envs

    monkeypatch.setattr("smtrain.local.debian_python.sys.platform", "darwin")
    with pytest.raises(debian_python.DebianPythonUnavailable,
                       match=r"Debian's CPython 3\.9 runs on Linux x86_64 only"):
        framework_envs.framework_environment("xgboost", "1.7-1", tmp_path, log=lambda line: None)
    assert list(tmp_path.iterdir()) == []


def test_a_machine_without_glibc_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """musl names the glibc setting and refuses it (EINVAL): a refusal, not an error."""
    def refuse(name: str) -> str:
        raise OSError(22, "Invalid argument")

    monkeypatch.setattr("smtrain.local.debian_python.sys.platform", "linux")
    monkeypatch.setattr("smtrain.local.debian_python.platform.machine", lambda: "x86_64")
    monkeypatch.setattr("smtrain.local.debian_python.os.confstr", refuse)
    assert debian_python.unavailable_reason() == "Debian's CPython 3.9 needs glibc (this machine: another C library)"
    monkeypatch.setattr("smtrain.local.debian_python.os.confstr", lambda name: "glibc 2.28")
    assert debian_python.unavailable_reason() == (
        "Debian's CPython 3.9 needs glibc 2.29 or newer (this machine: glibc 2.28)")


def test_the_mirror_setting_may_name_the_host_or_its_debian_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    for value in ("http://mirror.example", "http://mirror.example/", "http://mirror.example/debian"):
        monkeypatch.setenv("SMTRAIN_DEBIAN_MIRROR", value)
        assert debian_python.mirrors() == ["http://mirror.example", *debian_python.MIRRORS]


def test_requirement_markers_are_judged_for_the_environment_s_python(tmp_path: Path) -> None:
    """Over Debian's 3.9, a requirement marked for Python < 3.10 applies (and is missing here);
    one marked for 3.10 and later does not."""
    from smtrain.local.program_envs import satisfied_in

    assert not satisfied_in(['no-such-dist==1; python_version < "3.10"'], [str(tmp_path)], python="3.9.2")
    assert satisfied_in(['no-such-dist==1; python_version >= "3.10"'], [str(tmp_path)], python="3.9.2")
    assert not satisfied_in(['no-such-dist==1; python_full_version >= "3.9.2"'], [str(tmp_path)], python="3.9.2")
