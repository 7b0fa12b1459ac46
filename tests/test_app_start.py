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
try:
    runpy.run_path("app.py", run_name="__main__")
finally:
    print(json.dumps({"overlaps": overlaps, "callers": sorted(callers)}))
"""


def _run_probe(tmp_path: Path, cdk_context: dict[str, Any], **extra_env: str) -> dict[str, Any]:
    env = {**os.environ, "CDK_DEFAULT_REGION": "us-east-1", "CDK_OUTDIR": str(tmp_path),
           "CDK_CONTEXT_JSON": json.dumps(cdk_context), **extra_env}
    result = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return report


def test_no_jsii_call_while_the_validation_engine_is_built(tmp_path: Path,
                                                           cdk_context: dict[str, Any]) -> None:
    report = _run_probe(tmp_path, cdk_context)
    assert report["overlaps"] == []
    assert any(name.startswith("validation") for name in report["callers"]), report["callers"]
    assert (tmp_path / "Workflow.template.json").is_file()
    assert (tmp_path / "validation-report.json").is_file()


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
