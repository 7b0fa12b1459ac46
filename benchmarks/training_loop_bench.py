"""Script-mode training loop against a bare PyTorch loop: same model, data, batch size, epochs.

The digits sample is tiny (an epoch is ~40 ms), so the per-epoch work weighs more than in any
real job; ``--scale N`` repeats the training rows N times to show longer epochs.

Ours is ``train.train()`` from ``training_code/digits_mlp`` as the job runs it (normalisation,
per-epoch validation, checkpoint and metric line included); the bare loop only does forward,
backward and step. Both run in this process on the CPU, alternating, --repeats times; the
medians of samples per second and their ratio are printed. Goal: ratio >= 0.9.

    .venv/bin/python benchmarks/training_loop_bench.py --epochs 20 --repeats 5
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: The script program measured; its sample data is ``<data>/digits_mlp/<channel>``.
PROGRAM = "digits_mlp"
sys.path[:0] = [str(ROOT), str(ROOT / "training_code"), str(ROOT / "training_code" / PROGRAM)]

import torch  # noqa: E402
import train as script_mode  # type: ignore[import-not-found]  # noqa: E402
from torch import nn  # noqa: E402

from common.channels import read_channel  # type: ignore[import-not-found]  # noqa: E402
from digits_model import DigitsClassifier  # type: ignore[import-not-found]  # noqa: E402
from training_code.sample_data import write_datasets  # noqa: E402


def ours(data: Path, work: Path, *, epochs: int, batch_size: int) -> float:
    args = script_mode.parse_args([
        "--epochs", str(epochs), "--batch-size", str(batch_size),
        "--train", str(data / PROGRAM / "train"), "--validation", str(data / PROGRAM / "validation"),
        "--model-dir", str(work / "model"), "--checkpoint-dir", str(work / "checkpoints")], env={})
    cluster = script_mode.Cluster(rank=0, world_size=1, device=torch.device("cpu"))
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        script_mode.train(args, cluster)
    return time.perf_counter() - start


def bare(data: Path, *, epochs: int, batch_size: int) -> float:
    start = time.perf_counter()
    features_np, labels_np = read_channel(data / PROGRAM / "train", channel="train")
    features, labels = torch.from_numpy(features_np), torch.from_numpy(labels_np)
    torch.manual_seed(42)
    model = DigitsClassifier(num_features=features.shape[1], num_classes=10, hidden_units=64)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(epochs):
        order = torch.randperm(len(features))
        for begin in range(0, len(features), batch_size):
            batch = order[begin:begin + batch_size]
            optimizer.zero_grad()
            loss_fn(model(features[batch]), labels[batch]).backward()
            optimizer.step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--scale", type=int, default=1,
                        help="repeat the training rows this many times (longer epochs)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as scratch:
        data = Path(scratch) / "data"
        write_datasets(data)
        train_csv = data / PROGRAM / "train" / "digits.csv"
        train_csv.write_text(train_csv.read_text() * args.scale)
        rows = len(read_channel(data / PROGRAM / "train", channel="train")[1])
        # One untimed run of each first: the first PyTorch loop in a process pays its warm-up.
        bare(data, epochs=1, batch_size=args.batch_size)
        ours(data, Path(scratch) / "warm-up", epochs=1, batch_size=args.batch_size)
        ours_rates, bare_rates = [], []
        for repeat in range(args.repeats):
            bare_rates.append(rows * args.epochs / bare(data, epochs=args.epochs, batch_size=args.batch_size))
            ours_rates.append(rows * args.epochs / ours(data, Path(scratch) / f"run{repeat}",
                                                        epochs=args.epochs, batch_size=args.batch_size))
    ours_median, bare_median = statistics.median(ours_rates), statistics.median(bare_rates)
    print(f"{rows:,} training rows x {args.epochs} epochs, batch {args.batch_size}, 1 CPU thread")
    print(f"bare PyTorch loop:  {bare_median:,.0f} samples/s  runs {[round(r) for r in bare_rates]}")
    print(f"script-mode loop:   {ours_median:,.0f} samples/s  runs {[round(r) for r in ours_rates]}")
    print(f"ratio:              {ours_median / bare_median:.2f} (goal >= 0.9)")


if __name__ == "__main__":
    main()
