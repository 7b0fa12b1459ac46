"""A training job on several instances, run on this machine as SageMaker runs it: one process per
instance, all at once.

SageMaker names a job's instances ``algo-1`` to ``algo-<InstanceCount>`` and tells each, in
``/opt/ml/input/config/resourceconfig.json``, which one it is (``current_host``) and which the
others are (``hosts``); the instances reach each other by those names (developer guide, "How
Amazon SageMaker Provides Training Information", "Distributed Training Configuration").
Offline:

- Each instance is a process with a tree of its own at ``/opt/ml`` (:mod:`smtrain.local.opt_ml`:
  its own channels, so a ShardedByS3Key channel holds only that instance's shard; its own model,
  output and checkpoint directories).
- All of them run in one network namespace of their own with only a loopback interface
  (:mod:`smtrain.local.isolation`), where every instance's name resolves to an address of its
  own on loopback (:func:`host_address`; each instance's mount namespace shows a hosts file of
  the job's at ``/etc/hosts``). So they reach each other by name as on SageMaker, two jobs using
  the same fixed port (the PyTorch toolkit's 7777) cannot clash, and nothing outside the job is
  reachable: the network the instances share is the job's own, which is stricter than
  SageMaker's public network and equal to network isolation (whose instances still talk to each
  other). Unlike separate machines, the instances share one set of ports on the wildcard
  address: two that each listen on ``0.0.0.0`` with the same port clash (listening on their own
  name's address does not).
- The namespaces include a PID namespace whose first process is the launcher: when it ends, or
  is killed, every process of every instance ends with it.
- Where this machine cannot give a process both a network and a mount namespace (the probes of
  :mod:`~smtrain.local.isolation` and :mod:`~smtrain.local.opt_ml`), the engine runs the first
  instance only and says so (``LocalBackend._hosts``).

The launcher (``python -I cluster.py SPEC``, run inside the network namespace) imports nothing
outside the standard library. It starts every instance's command, writes each output line to
its own stdout as ``<host>\\t<line>``, and waits. An instance that fails (exits non-zero) ends
the job: the launcher sends SIGTERM to its process group (every instance's processes; it ignores
the signal itself), SIGKILL after :data:`GRACE_SECONDS`, as a stopped job's processes get. Each
instance's exit code is written to the spec's ``codes`` file as it ends, in the order they end,
so the engine knows which instance failed first. SIGTERM sent to the group from outside
(stopping the job) reaches every instance the same way.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

#: After one instance fails, how long the others have to end on SIGTERM before SIGKILL.
GRACE_SECONDS = 10.0
#: This file, run as the launcher inside the job's network namespace.
_ENTRY = str(Path(__file__).resolve())


def host_names(count: int) -> list[str]:
    """``algo-1`` ... ``algo-<count>``: SageMaker's names for a job's instances, in order."""
    return [f"algo-{number}" for number in range(1, count + 1)]


def host_address(number: int) -> str:
    """Instance ``algo-<number>``'s address: one of its own on loopback (``127.1.0.<number>`` and
    on; Linux routes all of 127.0.0.0/8 to ``lo``), so that an instance binding its own name's
    address and port does not take another's, and each resolves its name to an address of its
    own, as each SageMaker instance has one."""
    return str(ipaddress.IPv4Address("127.1.0.0") + number)


def hosts_file_text(hosts: Sequence[str]) -> str:
    """An ``/etc/hosts`` where ``localhost`` and this machine's own name (torchrun binds its store
    to it) resolve to ``127.0.0.1`` and each instance's name to its address
    (:func:`host_address`; ``hosts`` in order, ``algo-1`` first)."""
    lines = [f"127.0.0.1 {name}\n" for name in dict.fromkeys(("localhost", os.uname().nodename))]
    lines += [f"{host_address(number)} {host}\n" for number, host in enumerate(hosts, start=1)]
    return "".join(lines)


@dataclass(frozen=True, kw_only=True)
class HostCommand:
    """One instance's process: its name, its command line (already showing it its tree at
    ``/opt/ml`` and the job's hosts file), its working directory, and what it adds to the
    environment the launcher was given (the one all instances share)."""

    host: str
    command: list[str]
    cwd: Path
    environment: dict[str, str]


def write_spec(path: Path, hosts: Sequence[HostCommand], codes: Path) -> None:
    """The launcher's input: each instance's command, and where to write the exit codes."""
    path.write_text(json.dumps({"codes": str(codes), "grace_seconds": GRACE_SECONDS, "hosts": [
        {"host": h.host, "command": h.command, "cwd": str(h.cwd), "environment": h.environment}
        for h in hosts]}))


def launcher_command(spec: Path) -> list[str]:
    """The launcher of ``spec``; the caller runs it in the job's network namespace
    (:meth:`smtrain.local.isolation.Isolation.command`, which also brings loopback up)."""
    return [sys.executable, "-I", _ENTRY, str(spec)]


def ended_hosts(codes: Path) -> list[tuple[str, int]]:
    """The instances that ended, in the order they ended, with their exit codes, as the
    launcher wrote them (none when it wrote nothing)."""
    try:
        written = json.loads(codes.read_text())
        return [(str(host), int(code)) for host, code in written["ended"]]
    except (OSError, ValueError, KeyError, TypeError):
        return []


# -- the launcher, run inside the job's network namespace ---------------------------------------
class _Launcher:
    def __init__(self, spec: dict[str, object]) -> None:
        self.hosts = spec["hosts"]
        self.codes_path = str(spec["codes"])
        self.grace_seconds = float(spec.get("grace_seconds", GRACE_SECONDS))  # type: ignore[arg-type]
        self.codes: dict[str, int | None] = {}
        self.ended: list[tuple[str, int]] = []
        self.lock = threading.Lock()
        self.ending = False

    def _write_codes(self) -> None:
        with self.lock:  # one writer at a time, the whole file each time
            partial = f"{self.codes_path}.partial"
            with open(partial, "w") as out:
                out.write(json.dumps({"codes": self.codes, "ended": self.ended}))
            os.replace(partial, self.codes_path)

    def _copy(self, host: str, stream: object) -> None:
        """Copy an instance's output to ours, tagged; should ours fail (the engine gone), keep
        draining its pipe so that the instance never blocks writing."""
        writable = True
        for line in stream:  # type: ignore[attr-defined]
            if not writable:
                continue
            with self.lock:
                try:
                    sys.stdout.write(f"{host}\t{line.rstrip(chr(10))}\n")
                    sys.stdout.flush()
                except (OSError, ValueError):
                    writable = False

    def _end_all(self) -> None:
        """SIGTERM to every instance (the launcher ignores it), SIGKILL to the group after the
        grace period if any instance is still running."""
        if self.ending:
            return
        self.ending = True
        os.killpg(0, signal.SIGTERM)

        def kill() -> None:
            time.sleep(self.grace_seconds)
            with self.lock:
                running = any(code is None for code in self.codes.values())
            if running:  # every end so far is in the codes file (written as each happened)
                os.killpg(0, signal.SIGKILL)

        threading.Thread(target=kill, daemon=True).start()

    def run(self) -> int:
        # Stopping the job (SIGTERM to the group) reaches the instances; the launcher stays to
        # record how each ended.
        signal.signal(signal.SIGTERM, lambda *_: None)
        processes = []
        copiers = []
        for entry in self.hosts:  # type: ignore[attr-defined]
            host = entry["host"]
            process = subprocess.Popen(entry["command"], cwd=entry["cwd"], stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT, text=True, errors="replace",
                                       env={**os.environ, **entry["environment"]})
            self.codes[host] = None
            processes.append((host, process))
            copier = threading.Thread(target=self._copy, args=(host, process.stdout), daemon=True)
            copier.start()
            copiers.append(copier)
        self._write_codes()
        waiting = dict(processes)
        while waiting:
            for host, process in list(waiting.items()):
                code = process.poll()
                if code is None:
                    continue
                del waiting[host]
                with self.lock:
                    self.codes[host] = code
                    self.ended.append((host, code))
                self._write_codes()
                if code != 0:
                    self._end_all()
            time.sleep(0.05)
        for copier in copiers:
            copier.join(timeout=5)
        return 0 if all(code == 0 for code in self.codes.values()) else 1


def _main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: cluster.py SPEC", file=sys.stderr)
        return 2
    with open(argv[0]) as spec:
        return _Launcher(json.load(spec)).run()


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
