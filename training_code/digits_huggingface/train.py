"""A transformers model trained by transformers' ``Trainer`` on AWS's Hugging Face (PyTorch)
image, run by the PyTorch training toolkit as ``python train.py --epochs N --learning-rate X``
(a skeleton by ``smtrain new-program``).

The SageMaker contract: channels ``train`` and ``validation`` (CSV files, the label, a class
number, in the first column, no header) at ``SM_CHANNEL_TRAIN`` / ``SM_CHANNEL_VALIDATION``; one
metric line per epoch, ``epoch=N train:loss=X validation:accuracy=Y``; the model to
``SM_MODEL_DIR`` as ``save_model`` writes it (``config.json`` and ``model.safetensors``, what
``from_pretrained`` loads), with ``code/inference.py``, the handler AWS's Hugging Face inference
image serves it with (this folder's ``inference.py``); on an error, the reason to
``/opt/ml/output/failure`` and exit status 1.

The model is built from its configuration: a job reaches the Hugging Face hub only where its
network allows it (not with network isolation or in a sealed VPC). To fine-tune a pretrained
model, deliver it as a channel and load it with ``from_pretrained(<the channel's folder>)``.

Replace ``train`` with your own model; keep the contract.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path
from typing import NoReturn

import numpy as np
import torch
from transformers import Trainer, TrainerCallback, TrainingArguments, ViTConfig, ViTForImageClassification, set_seed

BASE_DIR = Path(os.environ.get("SAGEMAKER_BASE_DIR", "/opt/ml"))
FAILURE_FILE = BASE_DIR / "output" / "failure"


class TrainingError(Exception):
    """A bad hyperparameter or channel: the message is the job's failure reason."""


class Arguments(argparse.ArgumentParser):
    """argparse, with its errors the job's failure reason."""

    def error(self, message: str) -> NoReturn:
        # argparse would print its usage and exit 2; SageMaker shows the failure file instead.
        raise TrainingError(message)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = Arguments(allow_abbrev=False)
    # The hyperparameters program.toml declares: the toolkit passes each as --name value.
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--learning-rate", type=float, default=0.1)
    # Where SageMaker puts the data and takes the model from (the toolkit's SM_* variables).
    parser.add_argument("--model-dir", default=os.environ.get("SM_MODEL_DIR", str(BASE_DIR / "model")))
    for channel in ("train", "validation"):
        parser.add_argument(f"--{channel}", default=os.environ.get(
            f"SM_CHANNEL_{channel.upper()}", str(BASE_DIR / "input" / "data" / channel)))
    args, _unknown = parser.parse_known_args(argv)  # e.g. SageMaker's _tuning_objective_metric
    if not 1 <= args.epochs <= 1000:
        raise TrainingError(f"hyperparameter 'epochs' must be in [1, 1000], got {args.epochs}")
    if not 0 < args.learning_rate <= 10:
        raise TrainingError(f"hyperparameter 'learning-rate' must be in (0, 10], got {args.learning_rate}")
    return args


def read_channel(name: str, directory: str) -> tuple[np.ndarray, np.ndarray]:
    """Every .csv file of a channel: the label (a class number) in column 0, no header."""
    files = sorted(Path(directory).rglob("*.csv")) if Path(directory).is_dir() else []
    if not files:
        raise TrainingError(f"channel {name!r}: no .csv file in {directory}")
    try:
        data = np.vstack([np.loadtxt(path, delimiter=",", ndmin=2) for path in files])
    except ValueError as error:
        raise TrainingError(f"channel {name!r}: not numeric CSV (label first, no header): {error}") from None
    if data.shape[1] < 2:
        raise TrainingError(f"channel {name!r}: needs a class number and at least one feature")
    labels = data[:, 0]
    if (labels < 0).any() or (labels != labels.round()).any():
        raise TrainingError(f"channel {name!r}: the labels (column 0) must be class numbers 0, 1, 2, ...")
    return data[:, 1:], labels.astype(int)


def write_failure(message: str) -> None:
    try:
        FAILURE_FILE.parent.mkdir(parents=True, exist_ok=True)
        FAILURE_FILE.write_text(message)
    except OSError:  # run by hand, outside a job: stderr still says why
        pass


class PrintMetrics(TrainerCallback):
    """One metric line per epoch, after Trainer's evaluation (its train loss is logged first), from
    the first process only (torch_distributed starts one a GPU on every instance)."""

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):  # type: ignore[no-untyped-def]
        if not state.is_world_process_zero:
            return
        loss = next((entry["loss"] for entry in reversed(state.log_history) if "loss" in entry),
                    float("nan"))
        print(f"epoch={round(state.epoch)} train:loss={loss:.6f} "
              f"validation:accuracy={metrics['eval_accuracy']:.6f}", flush=True)


class Rows(torch.utils.data.Dataset):
    """Standardized feature rows as one-row, one-channel images (ViT's ``pixel_values``)."""

    def __init__(self, x: np.ndarray, y: np.ndarray, mean: np.ndarray, std: np.ndarray) -> None:
        features = ((x - mean) / std).astype(np.float32)
        self.pixels = torch.from_numpy(features).reshape(len(x), 1, 1, x.shape[1])
        self.labels = torch.from_numpy(y.astype(np.int64))

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"pixel_values": self.pixels[index], "labels": self.labels[index]}


def accuracy(prediction) -> dict[str, float]:  # type: ignore[no-untyped-def]
    return {"accuracy": float((prediction.predictions.argmax(-1) == prediction.label_ids).mean())}


def train(args: argparse.Namespace, x_train: np.ndarray, y_train: np.ndarray,
          x_validation: np.ndarray, y_validation: np.ndarray, model_dir: Path) -> Path:
    """A one-layer vision transformer whose one patch is the whole row (a small classifier to
    replace with your model: for images or text, a ViT or BERT configuration, or
    ``from_pretrained``), by stochastic gradient descent, one pass over the data an epoch."""
    classes = int(max(y_train.max(), y_validation.max())) + 1
    if len(np.unique(y_train)) < 2:
        raise TrainingError("channel 'train': needs at least two classes")
    # The model's inference handler (program.toml's [serving]), checked before training, not after.
    handler_source = Path(__file__).with_name("inference.py")
    if not handler_source.is_file():
        raise TrainingError(f"{handler_source} does not exist: the model would not serve without it")
    set_seed(0)
    mean, std = x_train.mean(axis=0), x_train.std(axis=0) + 1e-6
    features = x_train.shape[1]
    # The standardization travels in config.json, beside the weights.
    config = ViTConfig(image_size=(1, features), patch_size=(1, features), num_channels=1, hidden_size=32,
                       num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                       num_labels=classes, feature_mean=mean.tolist(), feature_std=std.tolist())
    trainer = Trainer(
        model=ViTForImageClassification(config),
        args=TrainingArguments(
            output_dir="/tmp/trainer", num_train_epochs=args.epochs, learning_rate=args.learning_rate,
            optim="sgd", lr_scheduler_type="constant", per_device_train_batch_size=16,
            eval_strategy="epoch", logging_strategy="epoch", save_strategy="no", report_to=[],
            disable_tqdm=True, log_level="warning"),
        train_dataset=Rows(x_train, y_train, mean, std),
        eval_dataset=Rows(x_validation, y_validation, mean, std),
        compute_metrics=accuracy, callbacks=[PrintMetrics()])
    trainer.train()
    trainer.save_model(str(model_dir))
    # The inference image's toolkit imports code/inference.py from model.tar.gz (SAGEMAKER_PROGRAM).
    handler = model_dir / "code" / "inference.py"
    handler.parent.mkdir(exist_ok=True)
    handler.write_bytes(handler_source.read_bytes())
    return model_dir / "model.safetensors"


def main(argv: list[str]) -> int:
    try:
        args = parse_args(argv)
        x_train, y_train = read_channel("train", args.train)
        x_validation, y_validation = read_channel("validation", args.validation)
        if x_train.shape[1] != x_validation.shape[1]:
            raise TrainingError(f"channel 'validation': {x_validation.shape[1]} features, "
                                f"train has {x_train.shape[1]}")
        model_dir = Path(args.model_dir)
        model_dir.mkdir(parents=True, exist_ok=True)
        saved = train(args, x_train, y_train, x_validation, y_validation, model_dir)
    except TrainingError as error:
        message = f"TrainingError: {error}"
        write_failure(message)
        print(message, file=sys.stderr, flush=True)
        return 1
    except Exception as error:  # anything else: still tell SageMaker why
        write_failure(f"Unexpected {type(error).__name__}: {error}\n{traceback.format_exc()}")
        traceback.print_exc()
        return 1
    print(f"model written to {saved}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
