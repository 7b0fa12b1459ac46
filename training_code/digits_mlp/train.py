"""Script-mode entry point: trains the digits classifier on the SageMaker PyTorch image.

The SageMaker training toolkit runs ``python train.py --<hyperparameter> <value> ...`` with the
channels, model directory and cluster in ``SM_*`` variables; every default below comes from
them, so the same script runs on SageMaker, through the toolkit locally, or by hand.

Contract kept here:
- metrics: one line per epoch, ``epoch=N train:loss=X validation:loss=Y validation:accuracy=Z``
  (the stack's metric definitions parse exactly this);
- checkpoints: ``--checkpoint-dir`` (default ``/opt/ml/checkpoints``, which SageMaker syncs to
  S3 for spot jobs) gets the full training state after every epoch; a restarted job resumes
  from it, so an interruption loses at most one epoch and the result is the same;
- deterministic for a seed; CPU or CUDA (mixed precision on CUDA);
- data-parallel when started by ``torchrun``: every process sees a slice of each global batch
  (by global rank) and the gradients are averaged, so N processes compute what one process
  computes; only rank 0 prints metrics and writes checkpoints and the model. With
  ``InstanceCount`` > 1 the job must send the hyperparameter
  ``sagemaker_torch_distributed_enabled=true``: the PyTorch image's toolkit then runs ``torchrun``
  on every instance as one job (without it, each instance trains its own copy);
- MLflow tracking (parameters, per-epoch metrics, the model) when ``MLFLOW_TRACKING_URI`` is
  set, by the main process (``common/tracking.py``);
- deployable as it is: the model directory gets, besides ``model.pth`` and
  ``model_config.json``, the serving handler under ``code/`` (``inference.py`` and the modules it
  imports), where AWS's PyTorch inference image looks for it;
- on a bad hyperparameter or channel: one clear line on stderr and exit status 1 (argparse: 2);
  the toolkit turns that into the job's failure reason.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import shutil
import socket
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import common.prediction_requests
import digits_model
from common.channels import ChannelError, read_channel
from common.tracking import Tracker
from digits_model import DigitsClassifier, save_model

CHECKPOINT_FILE = "checkpoint.pt"
#: Where the PyTorch inference toolkit looks for the handler in the model archive (``code/``).
INFERENCE_CODE_DIR = "code"


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


class HyperparameterError(ValueError):
    """A hyperparameter (command-line flag) is malformed; the message is argparse's."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise HyperparameterError(message)


def parse_args(argv: Sequence[str] | None = None, env: dict[str, str] | None = None) -> argparse.Namespace:
    env = dict(os.environ) if env is None else env
    parser = _Parser(description="Train the digits classifier (SageMaker script mode)")
    parser.add_argument("--epochs", type=positive_int, default=10)
    parser.add_argument("--batch-size", type=positive_int, default=64, help="global batch size")
    parser.add_argument("--learning-rate", type=positive_float, default=0.01)
    parser.add_argument("--hidden-units", type=positive_int, default=64)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--model-dir", default=env.get("SM_MODEL_DIR", "/opt/ml/model"))
    parser.add_argument("--train", default=env.get("SM_CHANNEL_TRAIN", "/opt/ml/input/data/train"))
    parser.add_argument("--validation",
                        default=env.get("SM_CHANNEL_VALIDATION", "/opt/ml/input/data/validation"))
    # SageMaker syncs /opt/ml/checkpoints; SAGEMAKER_BASE_DIR (the toolkit's override of /opt/ml)
    # moves it with the rest of the tree.
    parser.add_argument("--checkpoint-dir",
                        default=os.path.join(env.get("SAGEMAKER_BASE_DIR", "/opt/ml"), "checkpoints"))
    # The toolkit passes every hyperparameter as a flag; ignore the ones meant for it.
    args, _unknown = parser.parse_known_args(argv)
    return args


@dataclass(frozen=True)
class Cluster:
    """Where this process sits: ``rank`` of ``world_size`` processes, on ``device``."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def start_cluster() -> Cluster:
    """Join the process group torchrun describes (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``,
    ``MASTER_ADDR``/``MASTER_PORT``); a single process otherwise. NCCL on CUDA, gloo on CPU.

    On SageMaker, ``sagemaker_torch_distributed_enabled`` makes the PyTorch image's toolkit start
    ``torchrun --nnodes <instances> --nproc_per_node <GPUs, or 1 on CPU> --master_addr algo-1
    --master_port 7777 --node_rank <i>`` on every instance, so this sees one global rank per
    process across all instances."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world_size > 1:
        if device.type == "cpu":
            _bind_gloo_to_the_job_network()
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        if rank == 0:
            print(f"distributed: {world_size} processes, backend {dist.get_backend()}", flush=True)
    return Cluster(rank=rank, world_size=world_size, device=device)


def _bind_gloo_to_the_job_network() -> None:
    """Gloo binds to the address the host name resolves to and falls back to loopback, which other
    instances cannot reach. The toolkit names the job's network interface in
    ``SM_NETWORK_INTERFACE_NAME`` (from ``resourceconfig.json``) and points NCCL and MPI at it;
    point gloo at it too, unless the user chose an interface or the named one is absent."""
    interface = os.environ.get("SM_NETWORK_INTERFACE_NAME")
    if "GLOO_SOCKET_IFNAME" in os.environ or not interface:
        return
    if interface in {name for _index, name in socket.if_nameindex()}:
        os.environ["GLOO_SOCKET_IFNAME"] = interface


def stop_cluster(cluster: Cluster, *, succeeded: bool) -> None:
    """Leave the process group before the interpreter shuts down.

    After a success, every process first waits for the others (a barrier: no process closes its
    connections while a peer is still in a collective), then the group is destroyed, which stops
    the backend's threads while Python is fully alive: a backend thread that touches a Python
    object during interpreter finalisation aborts the process ("terminate called without an
    active exception"). After a failure there is no barrier and no destroy: the peers may be
    stuck in a collective, and a collective teardown would hang this process with them."""
    if cluster.world_size == 1 or not dist.is_initialized():
        return
    if succeeded:
        gc.collect()  # free the DDP reducer (it holds the group) now, not during finalisation
        dist.barrier()
        dist.destroy_process_group()


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    # Deterministic kernels, warning where an operation has none: the switch that
    # torch.use_deterministic_algorithms(True, warn_only=True) turns, without that function's
    # import of torch._inductor (about 2 s of CPU at every start) to set the inductor's own flag,
    # which only torch.compile reads (set torch._inductor.config.deterministic too if you add it).
    torch.set_deterministic_debug_mode("warn")


def global_batches(num_rows: int, *, batch_size: int, seed: int, epoch: int,
                   world_size: int) -> Iterator[torch.Tensor]:
    """The epoch's shuffled global batches (the same on every process); batches with fewer rows
    than processes are dropped so every process has work."""
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(num_rows, generator=generator)
    for start in range(0, num_rows, batch_size):
        batch = order[start:start + batch_size]
        if len(batch) >= world_size:
            yield batch


def load_checkpoint(path: Path, cluster: Cluster) -> dict[str, Any] | None:
    """Rank 0 reads the checkpoint (if any) and shares it, so all processes resume alike.

    ``weights_only=True``: the checkpoint holds only tensors, numbers and containers (the epoch,
    the model's, optimizer's and scaler's state dicts), so nothing in it is unpickled as code. The
    checkpoint prefix is writable by every job of the deployment: a planted file must fail to
    load, not run (PyTorch's "torch.load ... weights_only" documentation)."""
    state = [None]
    if cluster.is_main and path.is_file():
        state[0] = torch.load(path, map_location="cpu", weights_only=True)
    if cluster.world_size > 1:
        dist.broadcast_object_list(state, src=0)
    return state[0]


def checkpoint_file(checkpoint_dir: Path, env: Mapping[str, str]) -> Path:
    """This job's checkpoint: ``<dir>/<TRAINING_JOB_NAME>/checkpoint.pt``.

    SageMaker syncs the whole checkpoint directory with ``CheckpointConfig.S3Uri`` and restores
    the prefix's contents into a job that starts with it (developer guide, "Resume training from
    a checkpoint"). The trials of a tuning job share one URI, so a checkpoint is kept under the
    job's own name (``TRAINING_JOB_NAME``, set by SageMaker in the container, read by the
    training toolkit as ``params.TRAINING_JOB_ENV``): a spot restart keeps its name and resumes,
    another trial never picks it up."""
    job_name = env.get("TRAINING_JOB_NAME", "")
    return (checkpoint_dir / job_name if job_name else checkpoint_dir) / CHECKPOINT_FILE


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write atomically: the state goes to a temporary file in the same directory, which then
    replaces ``path`` (``os.replace``, atomic on POSIX). A job killed or failing mid-write keeps
    the previous checkpoint whole, and a resumed job never reads a half-written one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    try:
        torch.save(state, partial)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


TRACKED_ARGUMENTS = ("epochs", "batch_size", "learning_rate", "hidden_units", "seed")


def train(args: argparse.Namespace, cluster: Cluster) -> dict[str, float]:
    tracking_params = {name: getattr(args, name) for name in TRACKED_ARGUMENTS}
    # Only the main process tracks; the others get a tracker with tracking off.
    with Tracker(params=tracking_params, environ=None if cluster.is_main else {}) as tracker:
        return _train(args, cluster, tracker)


def _train(args: argparse.Namespace, cluster: Cluster, tracker: Tracker) -> dict[str, float]:
    seed_everything(args.seed)
    train_x, train_y = read_channel(args.train, channel="train")
    valid_x, valid_y = read_channel(args.validation, channel="validation")
    if train_x.shape[1] != valid_x.shape[1]:
        raise ChannelError(f"train has {train_x.shape[1]} features, validation {valid_x.shape[1]}")
    num_classes = int(max(train_y.max(), valid_y.max())) + 1
    device = cluster.device
    features = torch.from_numpy(train_x).to(device)
    labels = torch.from_numpy(train_y).to(device)
    valid_features = torch.from_numpy(valid_x).to(device)
    valid_labels = torch.from_numpy(valid_y).to(device)

    model = DigitsClassifier(num_features=features.shape[1], num_classes=num_classes,
                             hidden_units=args.hidden_units).to(device)
    model.fit_normalisation(features)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.learning_rate)
    use_amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    checkpoint_path = checkpoint_file(Path(args.checkpoint_dir), os.environ)
    start_epoch = 1
    state = load_checkpoint(checkpoint_path, cluster)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        start_epoch = int(state["epoch"]) + 1
        if cluster.is_main:
            print(f"resuming from {checkpoint_path} after epoch {state['epoch']}", flush=True)
    network: nn.Module = model
    if cluster.world_size > 1:
        network = DistributedDataParallel(model, device_ids=[device.index] if use_amp else None)
    loss_sum = nn.CrossEntropyLoss(reduction="sum")
    autocast = (torch.autocast(device_type=device.type, dtype=torch.float16) if use_amp
                else contextlib.nullcontext())

    metrics: dict[str, float] = {}
    for epoch in range(start_epoch, args.epochs + 1):
        network.train()
        loss_total = torch.zeros((), device=device)
        rows_seen = 0
        for batch in global_batches(len(features), batch_size=args.batch_size, seed=args.seed,
                                    epoch=epoch, world_size=cluster.world_size):
            mine = batch[cluster.rank::cluster.world_size] if cluster.world_size > 1 else batch
            mine = mine.to(device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            with autocast:
                batch_loss = loss_sum(network(features[mine]), labels[mine])
            # DDP averages gradients over processes: scale so the result is the global mean.
            scaled = batch_loss * (cluster.world_size / len(batch))
            if use_amp:
                scaler.scale(scaled).backward()
                scaler.step(optimizer)
                scaler.update()
            else:
                scaled.backward()
                optimizer.step()
            loss_total += batch_loss.detach()
            rows_seen += len(mine)
        epoch_loss = torch.stack([loss_total.float(), torch.tensor(float(rows_seen), device=device)])
        if cluster.world_size > 1:
            dist.all_reduce(epoch_loss)
        metrics = {"train:loss": float(epoch_loss[0] / epoch_loss[1]),
                   **evaluate(model, valid_features, valid_labels)}
        if cluster.is_main:
            save_checkpoint(checkpoint_path, {"epoch": epoch, "model": model.state_dict(),
                                              "optimizer": optimizer.state_dict(),
                                              "scaler": scaler.state_dict()})
            print(f"epoch={epoch} " + " ".join(f"{k}={v:.6f}" for k, v in metrics.items()), flush=True)
            tracker.log_metrics(metrics, step=epoch)
    if cluster.is_main:
        save_model(model.cpu(), args.model_dir)
        package_inference_code(Path(args.model_dir))
        tracker.log_model(Path(args.model_dir))
    return metrics


def package_inference_code(model_dir: Path) -> None:
    """Copy the serving handler (``inference.py``, beside this script) and the modules it imports
    to ``<model_dir>/code/``: SageMaker packs the model directory as ``model.tar.gz``, and the
    PyTorch inference image serves that archive with no other code."""
    sources = {
        "inference.py": Path(__file__).resolve().parent / "inference.py",
        "digits_model.py": Path(digits_model.__file__),
        "common/__init__.py": Path(common.__file__),
        "common/prediction_requests.py": Path(common.prediction_requests.__file__),
    }
    for name, source in sources.items():
        target = model_dir / INFERENCE_CODE_DIR / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)


def evaluate(model: nn.Module, features: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    model.eval()
    with torch.no_grad():
        logits = model(features).float()
    return {
        "validation:loss": float(nn.functional.cross_entropy(logits, labels)),
        "validation:accuracy": float((logits.argmax(dim=1) == labels).float().mean()),
    }


def write_failure(message: str) -> None:
    """Tell SageMaker why: the toolkit keeps a failure file that already exists, and SageMaker
    shows its first 1024 characters as the job's FailureReason."""
    output_dir = Path(os.environ.get("SM_OUTPUT_DIR")
                      or os.path.join(os.environ.get("SAGEMAKER_BASE_DIR", "/opt/ml"), "output"))
    with contextlib.suppress(OSError):
        output_dir.mkdir(parents=True, exist_ok=True)
        failure = output_dir / "failure"
        if not failure.exists():
            failure.write_text(message)
    print(message, file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = parse_args(argv)
    except HyperparameterError as error:
        write_failure(f"HyperparameterError: {error}")
        return 2
    started = time.monotonic()
    cluster = start_cluster()
    succeeded = False
    try:
        train(args, cluster)
        succeeded = True
    except ChannelError as error:
        write_failure(f"ChannelError: {error}")
        return 1
    finally:
        stop_cluster(cluster, succeeded=succeeded)
    if cluster.is_main:
        print(f"training finished in {time.monotonic() - started:.1f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
