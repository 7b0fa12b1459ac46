"""app.py's start: Node builds CDK's template validation engine (the synth of an empty app, in a
thread of its own) while Python loads the CDK modules (``CDK_MODULES``) and reads the programs.

jsii is one pipe to one Node process, so the two threads must never call it at once. The probe
runs app.py with every jsii call of the validation thread held back for a while, and records any
call that another thread makes meanwhile: loading those modules, reading the programs and anything
else before app.py has waited for that thread must make none. And ``CDK_MODULES`` holds every CDK
module that the project's constructs import, so that they all load while Node works.
"""

from __future__ import annotations

import ast
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import json, runpy, sys, threading, time

import jsii._kernel.providers.process as process

import concurrent.futures

send = process._NodeProcess.send
in_flight = []  # the thread whose call is on the pipe
overlaps = []
callers = set()
pipe = threading.Lock()
# From the validation thread's start until app.py's wait for it returns, no other thread may
# call jsii at all: between two of its calls as much as during one.
window = {"open": False}
submit = concurrent.futures.ThreadPoolExecutor.submit
result = concurrent.futures.Future.result


def submitted(self, *args, **kwargs):
    window["open"] = True
    return submit(self, *args, **kwargs)


def waited(self, *args, **kwargs):
    try:
        return result(self, *args, **kwargs)
    finally:
        window["open"] = False


concurrent.futures.ThreadPoolExecutor.submit = submitted
concurrent.futures.Future.result = waited


def probed(self, request, response_type):
    name = threading.current_thread().name
    callers.add(name)
    if in_flight:
        overlaps.append(f"{type(request).__name__} from {name} during a call from {in_flight[0]}")
    elif window["open"] and not name.startswith("validation"):
        overlaps.append(f"{type(request).__name__} from {name} before app.py waited for validation")
    with pipe:  # the probe itself keeps the pipe whole
        in_flight.append(name)
        try:
            if name != "MainThread":
                time.sleep(0.3)  # a slow engine: the other thread gets every chance to call
            return send(self, request, response_type)
        finally:
            in_flight.pop()


process._NodeProcess.send = probed
sys.argv = ["app.py"]
sys.path[0] = ROOT  # where app.py's own directory is when Python runs it
try:
    runpy.run_path("app.py", run_name="__main__")
finally:
    with open(REPORT, "w") as report:
        json.dump({"overlaps": overlaps, "callers": sorted(callers)}, report)
"""


def _probe_text(report: Path) -> str:
    return f"REPORT = {str(report)!r}\nROOT = {str(ROOT)!r}\n{PROBE}"


def _run_probe(tmp_path: Path, cdk_context: dict[str, Any], **extra_env: str) -> dict[str, Any]:
    env = {**os.environ, "CDK_DEFAULT_REGION": "us-east-1", "CDK_OUTDIR": str(tmp_path),
           "CDK_CONTEXT_JSON": json.dumps(cdk_context), **extra_env}
    report = tmp_path.parent / f"{tmp_path.name}-probe.json"
    result = subprocess.run([sys.executable, "-c", _probe_text(report)], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    found: dict[str, Any] = json.loads(report.read_text())
    return found


def test_cdk_synth_as_a_user_runs_it(tmp_path: Path) -> None:
    """``cdk synth`` as a user runs it, from the project root (the CDK CLI reads cdk.json and
    hands the app its context), with app.py run under the probe:

    - no jsii call while the validation engine is built, which app.py's validation thread did
      build, and the templates and the validation report are written;
    - issue 19, item 10: the CLI says nothing about unconfigured feature flags: cdk.json sets
      each flag the CDK CLI reports to the value the app used while it was unset (``cdk flags
      --unstable=flags --set --unconfigured --default``; CDK v2 guide, "cdk flags",
      https://docs.aws.amazon.com/cdk/v2/guide/ref-cli-cmd-flags.html), so the templates did
      not change (tests/test_snapshots.py). (One synth for both: it was two.)"""
    # cdk.json's app is the project's Python on app.py; the probe takes app.py's place.
    app = json.loads((ROOT / "cdk.json").read_text())["app"].split()
    assert app == [".venv/bin/python", "app.py"], app
    probe = tmp_path / "probe.py"
    report = tmp_path / "probe.json"
    probe.write_text(_probe_text(report))
    outdir = tmp_path / "cdk.out"
    env = {**os.environ, "CDK_DISABLE_CLI_TELEMETRY": "true", "CDK_DISABLE_VERSION_CHECK": "1"}
    done = subprocess.run([str(ROOT / "node_modules" / ".bin" / "cdk"), "synth", "--no-notices",
                           "--quiet", "-o", str(outdir), "--app", shlex.join([app[0], str(probe)])],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "feature flags are not configured" not in done.stdout + done.stderr, done.stderr[-2000:]
    found = json.loads(report.read_text())
    assert found["overlaps"] == []
    assert any(name.startswith("validation") for name in found["callers"]), found["callers"]
    assert (outdir / "Workflow.template.json").is_file()
    assert (outdir / "validation-report.json").is_file()


def test_without_validation_there_is_no_second_thread(tmp_path: Path,
                                                      cdk_context: dict[str, Any]) -> None:
    """``cdk synth --no-validation`` sets CDK_VALIDATION=false: no engine, no empty app."""
    report = _run_probe(tmp_path, cdk_context, CDK_VALIDATION="false")
    assert report["callers"] == ["MainThread"]
    assert (tmp_path / "Workflow.template.json").is_file()
    assert not (tmp_path / "validation-report.json").exists()


def _cdk_modules() -> list[str]:
    tree = ast.parse((ROOT / "app.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
                isinstance(target, ast.Name) and target.id == "CDK_MODULES" for target in node.targets):
            return list(ast.literal_eval(node.value))
    raise AssertionError("app.py defines no CDK_MODULES")


def test_the_cdk_modules_of_the_constructs_load_while_node_works() -> None:
    probe = f"""
import importlib, sys
from infra.node_runtime import use_pinned_node
use_pinned_node()
import aws_cdk, cdk_nag
for module in {_cdk_modules()!r}:
    importlib.import_module(module)
before = set(sys.modules)
import infra.app_builder
print(sorted(m for m in set(sys.modules) - before if m.startswith("aws_cdk.")
             and not m.startswith("aws_cdk.interfaces.") and not m.endswith("._private")))
"""
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"
