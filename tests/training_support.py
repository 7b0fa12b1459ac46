"""Running the project's training code the way SageMaker runs it, for the tests."""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from smtrain.local.job_tree import JobTree, build_job_tree
from smtrain.local.program_envs import bundle_requirements, default_cache_dir, environment_for
from tests.conftest import ROOT
from tests.helpers import Synthesized

TRAINING_CODE = ROOT / "training_code"

#: What the SageMaker Python SDK sends for ``PyTorch(distribution={"torch_distributed":
#: {"enabled": True}})``: ``sagemaker_torch_distributed_enabled`` = ``json.dumps(True)``
#: (sagemaker-python-sdk v2.257.6, src/sagemaker/pytorch/estimator.py lines 341 and 670-718;
#: src/sagemaker/estimator.py lines 924-937). The PyTorch image's toolkit reads it
#: (sagemaker-pytorch-training-toolkit v3.0.0, src/sagemaker_pytorch_container/training.py
#: lines 27, 75-89) and starts sagemaker-training's TorchDistributedRunner: ``torchrun`` on every
#: instance, one node each (sagemaker_training/torch_distributed.py).
TORCH_DISTRIBUTED = {"sagemaker_torch_distributed_enabled": "true"}
#: ``SAGEMAKER_TRAINING_MODULE`` of the SageMaker PyTorch training images (the DLC Dockerfiles).
PYTORCH_TOOLKIT_MODULE = "sagemaker_pytorch_container.training:main"


def script_bundle(synthesized: Synthesized) -> Path:
    """The sourcedir tarball exactly as the synthesized stack ships it."""
    manifest = json.loads((synthesized.outdir / "Workflow.assets.json").read_text())
    (entry,) = [f for f in manifest["files"].values() if f["source"]["path"].endswith(".gz")]
    return synthesized.outdir / str(entry["source"]["path"])


def prepared_program(synthesized: Synthesized, state: str) -> dict[str, Any]:
    """What a program's Prepare* state of the real definition records (``PrepareDigitsMlpCpu``,
    ``PrepareDigitsLightgbm``, ...): its kind, algorithm, channels and hyperparameters."""
    states = synthesized.definition()["States"]
    assert state in states, f"no state {state}; Prepare states: {sorted(s for s in states if s.startswith('Prepare'))}"
    return states[state]["Result"]  # type: ignore[no-any-return]


def training_hyperparameters(program: Mapping[str, Any], overrides: Mapping[str, str]) -> dict[str, str]:
    """Merged as the state machine merges them: base < training defaults < user < fixed."""
    return {**program["baseHyperparameters"], **program["trainingDefaults"], **overrides,
            **program["fixedHyperparameters"]}


def run_process(command: list[str], *, tree: JobTree | None = None, timeout: int = 300,
                extra_env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONHASHSEED": "0", **(tree.environment() if tree else {}),
           **(extra_env or {})}
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=ROOT)


def run_toolkit(base_dir: Path, *, hyperparameters: Mapping[str, str],
                channels: Mapping[str, Path]) -> tuple[subprocess.CompletedProcess[str], JobTree]:
    """The AWS training toolkit on a fresh tree (script mode), as the offline engine runs it:
    ``smtrain.local.toolkit_train`` in the program environment built from the bundle's
    ``requirements.txt`` (``sagemaker_submit_directory``), where the toolkit's pip install of
    that same file is left out."""
    tree = build_job_tree(base_dir, hyperparameters=hyperparameters, channels=channels)
    python = program_python(hyperparameters, base_dir.parent / "requirements.txt")
    return run_process([str(python), "-m", "smtrain.local.toolkit_train"], tree=tree), tree


def program_python(hyperparameters: Mapping[str, str], requirements_copy: Path) -> Path:
    """The python of the program environment built from the ``requirements.txt`` of the bundle
    that ``sagemaker_submit_directory`` names (copied to ``requirements_copy``), as the offline
    engine picks it for a script job."""
    requirements = bundle_requirements(Path(hyperparameters["sagemaker_submit_directory"]),
                                       requirements_copy)
    assert requirements is not None, "the bundle has no requirements.txt"
    return environment_for(requirements, default_cache_dir())


def run_byoc(base_dir: Path, *, hyperparameters: Mapping[str, str],
             channels: Mapping[str, Path], program: str = "digits_lightgbm",
             ) -> tuple[subprocess.CompletedProcess[str], JobTree]:
    """A BYOC program's ``train`` entry point (``digits_lightgbm``'s by default) on the host
    Python (the image puts ``common`` next to it; here PYTHONPATH does)."""
    tree = build_job_tree(base_dir, hyperparameters=hyperparameters, channels=channels)
    result = run_process([sys.executable, str(TRAINING_CODE / program / "train")], tree=tree,
                         extra_env={"PYTHONPATH": str(TRAINING_CODE)})
    return result, tree


def parse_metrics(log: str, definitions: list[dict[str, str]]) -> dict[str, list[float]]:
    """What SageMaker would extract from ``log`` with the job's metric definitions."""
    return {d["Name"]: [float(m) for m in re.findall(d["Regex"], log)] for d in definitions}


@functools.cache
def script_module() -> ModuleType:
    """``training_code/digits_mlp/train.py`` imported as the toolkit runs it (its directory and
    ``common``'s parent on the path), to test its functions directly."""
    for directory in (TRAINING_CODE, TRAINING_CODE / "digits_mlp"):
        if str(directory) not in sys.path:
            sys.path.insert(0, str(directory))
    spec = importlib.util.spec_from_file_location("script_mode_train",
                                                  TRAINING_CODE / "digits_mlp" / "train.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    return module


def cluster_unavailable_reason() -> str | None:
    """Why :func:`run_toolkit_cluster` cannot run here, or None."""
    if importlib.util.find_spec("sagemaker_pytorch_container") is None:
        return "the PyTorch image's toolkit (sagemaker-pytorch-training) is not installed"
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"):
        return "a private network and /etc/hosts for the instances needs root, unshare and ip"
    return None


@dataclass(frozen=True)
class HostRun:
    """One instance of a multi-instance job: its tree, exit status and whole log."""

    host: str
    tree: JobTree
    returncode: int
    log: str


# Runs inside the namespaces: starts every host's toolkit at once and records their exit codes.
_LAUNCHER = """
import json, subprocess, sys
jobs = json.load(open(sys.argv[1]))
procs = [subprocess.Popen(j["command"], env=j["env"], stdout=open(j["log"], "w"),
                          stderr=subprocess.STDOUT) for j in jobs]
json.dump([p.wait() for p in procs], open(sys.argv[2], "w"))
"""


def run_toolkit_cluster(base_dir: Path, *, hosts: Sequence[str], hyperparameters: Mapping[str, str],
                        channels: Mapping[str, Path], instance_type: str = "ml.m5.xlarge",
                        timeout: int = 300) -> list[HostRun]:
    """A multi-instance job as SageMaker runs it: one fresh tree per host (``resourceconfig.json``
    lists all hosts, sorted, and names this one), the PyTorch image's toolkit started on each at
    once. They run in private network, mount and process namespaces: the host names resolve to
    loopback through a private ``/etc/hosts`` (the toolkit looks them up by DNS, as on
    SageMaker; ``SM_STUDIO_LOCAL_MODE`` is not set), the toolkit's fixed port 7777 cannot clash
    with another run, nothing outside is reachable, and a timeout kills every process."""
    reason = cluster_unavailable_reason()
    if reason is not None:
        raise RuntimeError(reason)
    base_dir.mkdir(parents=True)
    # This machine's own name too: torchrun on a single node binds its store to it.
    names = ("localhost", socket.gethostname(), *hosts)
    (base_dir / "hosts").write_text("".join(f"127.0.0.1 {name}\n" for name in names))
    base_env = {key: value for key, value in os.environ.items() if key != "SM_STUDIO_LOCAL_MODE"}
    # The toolkit as the offline engine runs it (``run_toolkit``): in the program environment
    # built from the bundle's requirements.txt, where its pip install of that file is left out.
    python = program_python(hyperparameters, base_dir / "requirements.txt")
    jobs, trees = [], []
    for host in hosts:
        tree = build_job_tree(base_dir / host, hyperparameters=hyperparameters, channels=channels,
                              instance_type=instance_type)
        config_file = tree.base_dir / "input" / "config" / "resourceconfig.json"
        config = json.loads(config_file.read_text())
        config.update(current_host=host, hosts=list(hosts), network_interface_name="lo")
        config["instance_groups"][0]["hosts"] = list(hosts)
        config_file.write_text(json.dumps(config, indent=2))
        trees.append(tree)
        jobs.append({"command": [str(python), "-m", "smtrain.local.toolkit_train"],
                     "log": str(base_dir / f"{host}.log"), "env": {
            **base_env, "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1",
            "SAGEMAKER_BASE_DIR": str(tree.base_dir),
            "SAGEMAKER_TRAINING_MODULE": PYTORCH_TOOLKIT_MODULE,
            # torchrun, which the toolkit starts by name, from this environment.
            "PATH": os.pathsep.join((str(python.parent), str(Path(sys.executable).parent),
                                     base_env.get("PATH", ""))),
        }})
    (base_dir / "jobs.json").write_text(json.dumps(jobs))
    in_namespaces = 'ip link set lo up && mount --bind "$0" /etc/hosts && exec "$@"'
    command = ["unshare", "--net", "--mount", "--pid", "--fork", "--kill-child", "sh", "-c",
               in_namespaces, str(base_dir / "hosts"), sys.executable, "-c", _LAUNCHER,
               str(base_dir / "jobs.json"), str(base_dir / "codes.json")]
    with subprocess.Popen(command, cwd=ROOT) as launcher:
        try:
            launcher.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            launcher.kill()  # --kill-child: the namespace's first process dies, and all with it
            raise
    codes = json.loads((base_dir / "codes.json").read_text())
    return [HostRun(host, tree, code, (base_dir / f"{host}.log").read_text())
            for host, tree, code in zip(hosts, trees, codes, strict=True)]
