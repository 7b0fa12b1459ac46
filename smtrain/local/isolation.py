"""``EnableNetworkIsolation`` enforced on this machine: a job's process in a network namespace of
its own.

What is guaranteed:

- :func:`probe` finds, once per Python process (the answer is cached, and concurrent callers wait
  for the one probe), a way to give a process a network namespace of its own: ``unshare --net``
  (needs root), else ``unshare --map-root-user --net`` (an unprivileged user namespace). A way
  counts only when a process started through it really is isolated: the only network interface
  it sees is ``lo``, and a connection to an address outside the machine fails with "Network is
  unreachable". When neither way works, :attr:`Isolation.prefix` is None and
  :attr:`Isolation.reason` says why; callers must then not run the job at all (an isolated job
  never runs with network access).
- :meth:`Isolation.command` wraps a command so that it runs in that namespace. ``unshare``
  execs (it does not fork for a network namespace) and this module's entry point execs the
  command, so the command keeps the PID the caller started: its process group and session are
  the caller's ``start_new_session`` ones, and signalling the group reaches the program.
- Inside, the loopback interface is up (a program's own ``localhost`` traffic works, as in a
  container whose only interface is loopback) and nothing else exists: no route leaves the
  namespace, DNS cannot be reached, and the host's ``127.0.0.1`` services are another
  namespace's loopback, so connecting to them is refused.

The entry point (``python -I isolation.py -- CMD...``) imports nothing outside the standard
library, so it works whatever ``PYTHONPATH`` the job's environment sets.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

#: Tried in order; the first that really isolates a probe process is used.
UNSHARE_VARIANTS: tuple[tuple[str, ...], ...] = (("unshare", "--net"),
                                                  ("unshare", "--map-root-user", "--net"))
#: This file, run as the in-namespace entry point.
_ENTRY = str(Path(__file__).resolve())
_PROBE_OK = "isolated: only lo, no route out"
#: An address outside the machine (TEST-NET-1, RFC 5737) the probe must not be able to reach.
_OUTSIDE = ("192.0.2.1", 9)

#: What a program prints when the network is out of reach (Python, urllib3/requests, curl, pip).
NETWORK_ERROR = re.compile(
    r"Network is unreachable|Temporary failure in name resolution|Name or service not known|"
    r"nodename nor servname|getaddrinfo failed|ConnectionRefused|Connection refused|URLError|"
    r"No route to host|Failed to establish a new connection|Could not resolve host|"
    r"NewConnectionError|ConnectTimeout")
#: Appended to the failure reason of an isolated job whose output shows a network error.
ISOLATION_HINT = ("(the job ran with EnableNetworkIsolation: containers have no network access; "
                  "bake what it downloads into the image or pass it as an input channel)")


@dataclass(frozen=True)
class Isolation:
    """How this machine isolates a process: ``prefix`` (an ``unshare`` command line), or None
    with ``reason`` saying why it cannot."""

    prefix: tuple[str, ...] | None
    reason: str | None = None

    @property
    def available(self) -> bool:
        return self.prefix is not None

    def command(self, command: Sequence[str]) -> list[str]:
        """``command`` run in a network namespace of its own (same PID; see the module)."""
        if self.prefix is None:
            raise RuntimeError(f"network isolation is not available here: {self.reason}")
        return [*self.prefix, "--", sys.executable, "-I", _ENTRY, "--", *command]

    def describe(self) -> str:
        return " ".join(self.prefix) if self.prefix else "none"


_lock = threading.Lock()
_probed: Isolation | None = None


def probe() -> Isolation:
    """The first of :data:`UNSHARE_VARIANTS` that really isolates a process, found once per
    Python process and cached (see the module docstring)."""
    global _probed
    with _lock:
        if _probed is None:
            _probed = _probe()
        return _probed


def _probe() -> Isolation:
    failures = []
    for variant in UNSHARE_VARIANTS:
        command = [*variant, "--", sys.executable, "-I", _ENTRY, "--probe"]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=30,
                                    check=False, stdin=subprocess.DEVNULL)
        except FileNotFoundError:
            failures.append(f"`{variant[0]}` is not installed")
            break
        except subprocess.TimeoutExpired:
            failures.append(f"`{' '.join(variant)}` did not answer within 30 s")
            continue
        if result.returncode == 0 and result.stdout.strip() == _PROBE_OK:
            return Isolation(prefix=variant)
        said = (result.stderr.strip() or result.stdout.strip()).splitlines()
        failures.append(f"`{' '.join(variant)}` failed (exit {result.returncode}"
                        f"{': ' + said[-1] if said else ''})")
    return Isolation(prefix=None, reason="; ".join(failures))


def network_error_in(text: str) -> bool:
    """Whether ``text`` (a job's output or failure file) shows a network error."""
    return NETWORK_ERROR.search(text) is not None


# -- the entry point, run inside the namespace --------------------------------------------------
_SIOCGIFFLAGS, _SIOCSIFFLAGS, _IFF_UP = 0x8913, 0x8914, 0x1
_IFREQ = "16sh22x"  # struct ifreq: the name, then the flags in a 24-byte union


def _loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack(_IFREQ, b"lo", 0)
        flags = struct.unpack(_IFREQ, fcntl.ioctl(sock, _SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock, _SIOCSIFFLAGS, struct.pack(_IFREQ, b"lo", flags | _IFF_UP))


def _other_interfaces() -> str | None:
    """None when this process sees only ``lo``; else which interfaces it sees."""
    names = sorted(name for _, name in socket.if_nameindex())
    return None if names == ["lo"] else f"network interfaces {names} are visible"


def _no_route_out() -> str | None:
    """None when a connection to an address outside the machine is refused with "Network is
    unreachable"; else what happened."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(_OUTSIDE)
        except OSError as error:
            if error.errno == errno.ENETUNREACH:
                return None
            return f"connecting to {_OUTSIDE[0]} failed with {error}, not 'Network is unreachable'"
    return f"a route to {_OUTSIDE[0]} exists"


def _main(argv: list[str]) -> int:
    if argv == ["--probe"]:
        # Interfaces first: a process that is not isolated never touches the host's loopback.
        problem = _other_interfaces()
        if problem is None:
            try:
                _loopback_up()
            except OSError as error:
                problem = f"cannot bring the loopback interface up: {error}"
        problem = problem or _no_route_out()
        if problem is not None:
            print(problem, file=sys.stderr)
            return 1
        print(_PROBE_OK)
        return 0
    if len(argv) < 2 or argv[0] != "--":
        print("usage: isolation.py --probe | -- COMMAND [ARG...]", file=sys.stderr)
        return 2
    try:
        _loopback_up()
    except OSError as error:  # still isolated, only without loopback
        print(f"smtrain local: the loopback interface could not be brought up: {error}",
              file=sys.stderr)
    sys.stdout.flush()
    os.execvp(argv[1], argv[1:])
    return 127  # not reached


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
