"""Running the project's training code the way SageMaker runs it, for the tests."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from smtrain.local.job_tree import JobTree, build_job_tree
from tests.conftest import ROOT
from tests.helpers import Synthesized

TRAINING_CODE = ROOT / "training_code"
TOOLKIT_TRAIN = Path(sys.executable).parent / "train"  # sagemaker-training's entry point


def script_bundle(synthesized: Synthesized) -> Path:
    """The sourcedir tarball exactly as the synthesized stack ships it."""
    manifest = json.loads((synthesized.outdir / "Workflow.assets.json").read_text())
    (entry,) = [f for f in manifest["files"].values() if f["source"]["path"].endswith(".gz")]
    return synthesized.outdir / str(entry["source"]["path"])


def prepared_method(synthesized: Synthesized, state: str) -> dict[str, Any]:
    """The ``$.method`` object a Prepare* state of the real definition records."""
    return synthesized.definition()["States"][state]["Result"]  # type: ignore[no-any-return]


def training_hyperparameters(method: Mapping[str, Any], overrides: Mapping[str, str]) -> dict[str, str]:
    """Merged as the state machine merges them: base < training defaults < user < fixed."""
    return {**method["baseHyperparameters"], **method["trainingDefaults"], **overrides,
            **method["fixedHyperparameters"]}


def run_process(command: list[str], *, tree: JobTree | None = None, timeout: int = 300,
                extra_env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONHASHSEED": "0", **(tree.environment() if tree else {}),
           **(extra_env or {})}
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=ROOT)


def run_toolkit(base_dir: Path, *, hyperparameters: Mapping[str, str],
                channels: Mapping[str, Path]) -> tuple[subprocess.CompletedProcess[str], JobTree]:
    """The AWS training toolkit's ``train`` on a fresh tree (script mode)."""
    tree = build_job_tree(base_dir, hyperparameters=hyperparameters, channels=channels)
    return run_process([str(TOOLKIT_TRAIN)], tree=tree), tree


def run_byoc(base_dir: Path, *, hyperparameters: Mapping[str, str],
             channels: Mapping[str, Path]) -> tuple[subprocess.CompletedProcess[str], JobTree]:
    """The BYOC image's ``train`` entry point on the host Python (the image puts ``common`` next
    to it; here PYTHONPATH does)."""
    tree = build_job_tree(base_dir, hyperparameters=hyperparameters, channels=channels)
    result = run_process([sys.executable, str(TRAINING_CODE / "byoc" / "train")], tree=tree,
                         extra_env={"PYTHONPATH": str(TRAINING_CODE)})
    return result, tree


def parse_metrics(log: str, definitions: list[dict[str, str]]) -> dict[str, list[float]]:
    """What SageMaker would extract from ``log`` with the job's metric definitions."""
    return {d["Name"]: [float(m) for m in re.findall(d["Regex"], log)] for d in definitions}
