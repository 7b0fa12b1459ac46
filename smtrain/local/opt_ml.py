"""A training job's tree at ``/opt/ml``, where SageMaker puts it: the job's process in a mount
namespace of its own.

SageMaker mounts a job's configuration, channels, model and output directories under
``/opt/ml`` in the container (developer guide, "How Amazon SageMaker Provides Training
Information"; the paths are in :mod:`smtrain.core.contract`), and most public BYOC code reads and
writes those literal paths. Offline, each job has its own tree on the host; this module shows it
to the job's process at ``/opt/ml`` and nowhere else, so such code runs unchanged, and two jobs
running at once each see their own.

What is guaranteed:

- :func:`probe` finds, once per Python process (cached; concurrent callers wait for the one
  probe), a way to give a process a mount namespace of its own: ``unshare --mount`` (needs
  root), else ``unshare --map-root-user --mount`` (an unprivileged user namespace). A way counts
  only when a process started through it really sees a given directory at ``/opt/ml`` while the
  host's ``/opt/ml`` stays as it was. When neither works, :attr:`OptMl.prefix` is None and
  :attr:`OptMl.reason` says why; the caller then runs the job with ``SAGEMAKER_BASE_DIR``
  pointing at the tree (the training toolkit and code that honours the variable still work) and
  says so.
- :meth:`OptMl.command` wraps a command so that it runs with the tree at ``/opt/ml`` (and, for
  an instance of a multi-instance job, the job's hosts file at ``/etc/hosts``).
  ``unshare`` execs (it does not fork for a mount namespace) and this module's entry point execs
  the command, so the command keeps the PID the caller started (its process group and session
  are the caller's). It composes with :mod:`smtrain.local.isolation` (wrap the isolated command).
- Nothing on the host changes. Where the host has no ``/opt/ml``, the namespace gets an ``/opt``
  of its own (a tmpfs) holding the host's ``/opt`` entries, bound back in place, beside the new
  ``ml``; where ``/opt`` itself is missing there is no way, and the probe says so. Mounts made in
  the namespace are private to it and end with its last process.

The entry point (``python -I opt_ml.py ...``) imports nothing outside the standard library, so it
works whatever ``PYTHONPATH`` the job's environment sets.
"""

from __future__ import annotations

import ctypes
import functools
import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

#: Where SageMaker mounts the job's tree (kept literal here: the entry point imports nothing of
#: the project; :data:`smtrain.core.contract.CONTAINER_BASE_DIR` is the same path).
CONTAINER_BASE_DIR = "/opt/ml"
#: Tried in order; the first that really mounts a probe tree at /opt/ml is used.
UNSHARE_VARIANTS: tuple[tuple[str, ...], ...] = (("unshare", "--mount"),
                                                  ("unshare", "--map-root-user", "--mount"))
_ENTRY = str(Path(__file__).resolve())
_PROBE_FILE = "smtrain-probe"
_PROBE_OK = "mounted: the tree is at /opt/ml"


@dataclass(frozen=True)
class OptMl:
    """How this machine shows a job its tree at ``/opt/ml``: ``prefix`` (an ``unshare`` command
    line), or None with ``reason`` saying why it cannot."""

    prefix: tuple[str, ...] | None
    reason: str | None = None

    @property
    def available(self) -> bool:
        return self.prefix is not None

    def command(self, tree: Path, command: Sequence[str], *,
                hosts_file: Path | None = None) -> list[str]:
        """``command`` run with ``tree`` mounted at ``/opt/ml`` (same PID; see the module), and
        with ``hosts_file`` at ``/etc/hosts`` when given (a multi-instance job's names:
        :mod:`smtrain.local.cluster`)."""
        if self.prefix is None:
            raise RuntimeError(f"no mount namespace here: {self.reason}")
        hosts = ["--hosts", str(hosts_file)] if hosts_file is not None else []
        return [*self.prefix, "--", sys.executable, "-I", _ENTRY, "--tree", str(tree), *hosts,
                "--", *command]

    def describe(self) -> str:
        return " ".join(self.prefix) if self.prefix else "none"


_lock = threading.Lock()
_probed: OptMl | None = None


def probe() -> OptMl:
    """The first of :data:`UNSHARE_VARIANTS` that really shows a process a tree at ``/opt/ml``,
    found once per Python process and cached (see the module docstring)."""
    global _probed
    with _lock:
        if _probed is None:
            _probed = _probe()
        return _probed


def _probe() -> OptMl:
    if not os.path.isdir("/opt"):
        return OptMl(prefix=None, reason="this machine has no /opt to mount /opt/ml under")
    failures = []
    with tempfile.TemporaryDirectory(prefix="smtrain-opt-ml-probe-") as scratch:
        # The tree one level down: the host-/opt stash made beside it stays in the scratch dir.
        tree = str(Path(scratch) / "tree")
        os.mkdir(tree)
        (Path(tree) / _PROBE_FILE).write_text(tree)
        host_had_opt_ml = os.path.lexists(CONTAINER_BASE_DIR)
        for variant in UNSHARE_VARIANTS:
            command = [*variant, "--", sys.executable, "-I", _ENTRY, "--tree", tree, "--probe"]
            try:
                result = subprocess.run(command, capture_output=True, text=True, timeout=30,
                                        check=False, stdin=subprocess.DEVNULL)
            except FileNotFoundError:
                failures.append(f"`{variant[0]}` is not installed")
                break
            except subprocess.TimeoutExpired:
                failures.append(f"`{' '.join(variant)}` did not answer within 30 s")
                continue
            if os.path.lexists(CONTAINER_BASE_DIR) != host_had_opt_ml:  # never expected
                failures.append(f"`{' '.join(variant)}` changed the host's {CONTAINER_BASE_DIR}")
                continue
            if result.returncode == 0 and result.stdout.strip() == _PROBE_OK:
                return OptMl(prefix=variant)
            said = (result.stderr.strip() or result.stdout.strip()).splitlines()
            failures.append(f"`{' '.join(variant)}` failed (exit {result.returncode}"
                            f"{': ' + said[-1] if said else ''})")
    return OptMl(prefix=None, reason="; ".join(failures))


# -- the entry point, run inside the namespace --------------------------------------------------
_MS_NOSUID, _MS_NODEV = 0x2, 0x4
_MS_BIND, _MS_REC, _MS_PRIVATE = 0x1000, 0x4000, 0x40000


@functools.cache
def _libc() -> ctypes.CDLL:
    """The C library's functions, from the symbols this process already has (Python is linked
    against libc): ``ctypes.util.find_library("c")`` ran ``ldconfig -p`` in a new process at
    every mount, a job's tree making several (one for each entry of the host's ``/opt``; ten
    here)."""
    return ctypes.CDLL(None, use_errno=True)


def _mount(source: str | None, target: str, fstype: str | None, flags: int,
           data: str | None = None) -> None:
    libc = _libc()
    if libc.mount(source.encode() if source else None, target.encode(),
                  fstype.encode() if fstype else None, ctypes.c_ulong(flags),
                  data.encode() if data else None) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"mount {source or ''} on {target}: {os.strerror(error)}")


def _bind(source: str, target: str) -> None:
    _mount(source, target, None, _MS_BIND | _MS_REC)


def _opt_with_ml(stash: str) -> None:
    """Give this namespace an ``/opt`` with an empty ``ml`` in it and the host's entries bound
    back in place (the host's ``/opt`` is first bound at ``stash``, which must exist)."""
    _bind("/opt", stash)
    _mount("tmpfs", "/opt", "tmpfs", _MS_NOSUID | _MS_NODEV, "mode=0755")
    for name in sorted(os.listdir(stash)):
        original, placeholder = os.path.join(stash, name), os.path.join("/opt", name)
        if os.path.islink(original):
            os.symlink(os.readlink(original), placeholder)
            continue
        if os.path.isdir(original):
            os.mkdir(placeholder)
        else:
            Path(placeholder).touch()  # a mount point for the file
        _bind(original, placeholder)
    os.mkdir(CONTAINER_BASE_DIR)


def _mount_tree(tree: str) -> None:
    # Nothing mounted here may reach the host's namespace (util-linux unshare already makes the
    # new namespace's mounts private; said again so it holds whatever unshare did).
    _mount(None, "/", None, _MS_REC | _MS_PRIVATE)
    if not os.path.isdir(CONTAINER_BASE_DIR):
        # The stash: a directory beside the tree (the job's own folder), empty on the host.
        stash = os.path.join(os.path.dirname(os.path.abspath(tree)), ".host-opt")
        os.makedirs(stash, exist_ok=True)
        _opt_with_ml(stash)
    _bind(tree, CONTAINER_BASE_DIR)


_USAGE = "usage: opt_ml.py --tree DIR [--hosts FILE] (--probe | -- COMMAND [ARG...])"


def _main(argv: list[str]) -> int:
    hosts_file = None
    if len(argv) >= 4 and argv[2] == "--hosts":
        hosts_file = argv[3]
        argv = argv[:2] + argv[4:]
    if len(argv) < 3 or argv[0] != "--tree" or argv[2] not in ("--probe", "--"):
        print(_USAGE, file=sys.stderr)
        return 2
    tree = argv[1]
    try:
        _mount_tree(tree)
        if hosts_file is not None:
            _bind(hosts_file, "/etc/hosts")
    except OSError as error:
        print(f"smtrain local: could not mount the job's tree at {CONTAINER_BASE_DIR}: {error}",
              file=sys.stderr)
        return 1 if argv[2] == "--probe" else 126
    if argv[2] == "--probe":
        probe_file = os.path.join(CONTAINER_BASE_DIR, _PROBE_FILE)
        if not os.path.isfile(probe_file) or Path(probe_file).read_text() != tree:
            print(f"{CONTAINER_BASE_DIR} does not show the probe tree", file=sys.stderr)
            return 1
        print(_PROBE_OK)
        return 0
    if len(argv) < 4:
        print(_USAGE, file=sys.stderr)
        return 2
    sys.stdout.flush()
    os.execvp(argv[3], argv[3:])
    return 127  # not reached


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
