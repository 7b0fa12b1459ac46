"""Running the project's training code the way SageMaker runs it, for the tests."""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from smtrain.local import isolation, opt_ml
from smtrain.local.job_tree import JobTree, build_job_tree
from smtrain.local.local_backend import Images, LocalBackend, TrainingJob
from smtrain.local.program_envs import bundle_requirements, default_cache_dir, environment_for
from smtrain.local.s3_stand_in import LocalS3
from smtrain.local.sagemaker_rules import rule_violations
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
    engine picks it for a script job (the project's own where the bundle has none)."""
    requirements = bundle_requirements(Path(hyperparameters["sagemaker_submit_directory"]),
                                       requirements_copy)
    return environment_for(requirements, default_cache_dir())  # None: the project's own


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
    """Why the offline engine cannot run a PyTorch job across instances here, or None."""
    if importlib.util.find_spec("sagemaker_pytorch_container") is None:
        return "the PyTorch image's toolkit (sagemaker-pytorch-training) is not installed"
    for probed in (isolation.probe(), opt_ml.probe()):
        if not probed.available:
            return f"no namespaces for the instances: {probed.reason}"
    return None


def run_script_job(tmp_path: Path, *, program: Mapping[str, Any], bundle: Path,
                   hyperparameters: Mapping[str, str], channels: Mapping[str, Path],
                   instance_count: int = 1) -> tuple[TrainingJob, LocalBackend]:
    """A script-mode training job run to its end by the offline engine: the stack's tarball and
    channels put in a fresh S3 stand-in, the request the program's Prepare state describes
    (its image and metric definitions), ``instance_count`` instances."""
    s3 = LocalS3(tmp_path / "s3")
    code_uri = f"s3://local-assets/{bundle.name}"
    s3.path(code_uri).parent.mkdir(parents=True)
    shutil.copyfile(bundle, s3.path(code_uri))
    input_config = []
    for name, directory in channels.items():
        target = s3.path(f"s3://local-data/{name}")
        shutil.copytree(directory, target)
        input_config.append({"ChannelName": name, "DataSource": {"S3DataSource": {
            "S3DataType": "S3Prefix", "S3Uri": f"s3://local-data/{name}/",
            "S3DataDistributionType": "FullyReplicated"}}})
    algorithm = program["algorithm"]
    request: dict[str, Any] = {
        "TrainingJobName": "script-job",
        "AlgorithmSpecification": {"TrainingImage": algorithm["TrainingImage"], "TrainingInputMode": "File",
                                   "MetricDefinitions": algorithm["MetricDefinitions"]},
        "RoleArn": "arn:aws:iam::123456789012:role/local",
        "HyperParameters": {**hyperparameters, "sagemaker_submit_directory": code_uri},
        "InputDataConfig": input_config,
        "OutputDataConfig": {"S3OutputPath": "s3://local-artifacts/models/"},
        "ResourceConfig": {"InstanceType": "ml.m5.xlarge", "InstanceCount": instance_count,
                           "VolumeSizeInGB": 30},
        "StoppingCondition": {"MaxRuntimeInSeconds": 600},
    }
    assert rule_violations("CreateTrainingJob", request) == []
    backend = LocalBackend(s3=s3, work_dir=tmp_path / "work", images=Images(byoc={}))
    job = backend.register(request)
    backend.execute(job)
    return job, backend
