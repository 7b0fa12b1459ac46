"""A fresh fake ``/opt/ml`` for one training job, laid out exactly as SageMaker lays it out.

The AWS training toolkit and the BYOC entry point read their whole configuration from it: the
offline engine shows it to the job at ``/opt/ml`` (:mod:`smtrain.local.opt_ml`), or, where this
machine cannot, ``SAGEMAKER_BASE_DIR`` points them here instead.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from smtrain.core import contract

#: Our hostname inside the job: the toolkit resolves its hosts by DNS unless told it runs
#: locally (``SM_STUDIO_LOCAL_MODE=true``), so the tree is paired with that variable.
LOCAL_HOST = "algo-1"


@dataclass(frozen=True)
class JobTree:
    base_dir: Path

    @property
    def model_dir(self) -> Path:
        return self.base_dir / "model"

    @property
    def output_dir(self) -> Path:
        return self.base_dir / "output"

    @property
    def failure_file(self) -> Path:
        return self.output_dir / "failure"

    @property
    def checkpoint_dir(self) -> Path:
        return self.base_dir / "checkpoints"

    def environment(self, *, at_opt_ml: bool = False, resolvable_hosts: bool = False) -> dict[str, str]:
        """Variables that point a training program at this tree: ``SAGEMAKER_BASE_DIR`` names it,
        unless the job sees it at ``/opt/ml`` (``at_opt_ml``: :mod:`smtrain.local.opt_ml`), where
        the program finds it as on SageMaker, with no such variable. ``SM_STUDIO_LOCAL_MODE``
        stops the toolkit waiting for its hosts' names to resolve, unless they do
        (``resolvable_hosts``: an instance of a multi-instance job, :mod:`smtrain.local.cluster`)."""
        base = {} if at_opt_ml else {contract.ENV_BASE_DIR: str(self.base_dir)}
        return {**base} if resolvable_hosts else {**base, "SM_STUDIO_LOCAL_MODE": "true"}

    def failure_reason(self) -> str | None:
        """What the program wrote to ``output/failure``; None when it wrote nothing there."""
        if not self.failure_file.is_file():
            return None
        text = self.failure_file.read_text(errors="replace").strip()
        return text or None


def build_job_tree(base_dir: Path, *, hyperparameters: Mapping[str, str],
                   channels: Mapping[str, Path | None], content_type: str = "text/csv",
                   instance_type: str = "local", job_name: str = "local-job",
                   channel_configs: Mapping[str, Mapping[str, str]] | None = None,
                   hosts: Sequence[str] = (LOCAL_HOST,), current_host: str = LOCAL_HOST) -> JobTree:
    """Lay out ``base_dir`` (which must not exist yet: a reused tree makes the toolkit keep old
    code) with the config files and a copy of each channel's files. A channel given None has no
    directory (Pipe mode: :mod:`smtrain.local.channel_data` feeds its FIFOs). Each channel's
    ``inputdataconfig.json`` entry is ``channel_configs``' (default: File, FullyReplicated,
    ``content_type``). ``resourceconfig.json`` names ``current_host`` among ``hosts`` (default:
    the one instance ``algo-1``); with several, the network interface is ``lo``, the only one the
    instances' shared namespace has (:mod:`smtrain.local.cluster`)."""
    if current_host not in hosts:
        raise ValueError(f"{current_host} is not one of the hosts {list(hosts)}")
    if base_dir.exists():
        raise FileExistsError(f"{base_dir} exists; every job needs a fresh tree")
    bad = {name: value for name, value in hyperparameters.items() if not isinstance(value, str)}
    if bad:
        raise TypeError(f"hyperparameter values must be strings (as SageMaker sends them): {bad}")
    config = base_dir / "input" / "config"
    config.mkdir(parents=True)
    (config / "hyperparameters.json").write_text(json.dumps(dict(hyperparameters), indent=2))
    configs = channel_configs or {}
    (config / "inputdataconfig.json").write_text(json.dumps({
        name: dict(configs[name]) if name in configs else {
            "ContentType": content_type, "TrainingInputMode": contract.DEFAULT_INPUT_MODE,
            "S3DistributionType": "FullyReplicated", "RecordWrapperType": "None"}
        for name in channels
    }, indent=2))
    (config / "resourceconfig.json").write_text(json.dumps({
        "current_host": current_host, "hosts": list(hosts), "current_instance_type": instance_type,
        "current_group_name": "homogeneousCluster",
        "instance_groups": [{"instance_group_name": "homogeneousCluster",
                             "instance_type": instance_type, "hosts": list(hosts)}],
        "network_interface_name": "eth0" if len(hosts) == 1 else "lo",
    }, indent=2))
    (config / "trainingjobconfig.json").write_text(json.dumps({"TrainingJobName": job_name}))
    for name, source in channels.items():
        if source is None:
            continue
        if not source.is_dir():
            raise FileNotFoundError(f"channel '{name}': {source} is not a directory")
        shutil.copytree(source, base_dir / "input" / "data" / name)
    for directory in ("model", "output/data", "checkpoints", "code"):
        (base_dir / directory).mkdir(parents=True, exist_ok=True)
    return JobTree(base_dir)
