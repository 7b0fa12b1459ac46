"""Keras on AWS's TensorFlow image, run by the TensorFlow training toolkit as
``python train.py --epochs N --learning-rate X --model_dir /opt/ml/model`` (a skeleton by
``smtrain new-program``; the stack sends ``model_dir`` as the SDK's TensorFlow estimator does).

The SageMaker contract: channels ``train`` and ``validation`` (CSV files, the label, a class
number, in the first column, no header) at ``SM_CHANNEL_TRAIN`` / ``SM_CHANNEL_VALIDATION``; one
metric line per epoch, ``epoch=N train:loss=X validation:accuracy=Y``; the model to
``SM_MODEL_DIR`` as a SavedModel in ``1/`` (TensorFlow Serving's version folder, which AWS's
TensorFlow inference image serves); on an error, the reason to ``/opt/ml/output/failure`` and
exit status 1.

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
import tensorflow as tf

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
    # Sent as the TensorFlow estimator sends it; the model goes to --model-dir (SM_MODEL_DIR).
    parser.add_argument("--model_dir", dest="estimator_model_dir")
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


class PrintMetrics(tf.keras.callbacks.Callback):
    """One metric line per epoch."""

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        logs = logs or {}
        print(f"epoch={epoch + 1} train:loss={logs['loss']:.6f} "
              f"validation:accuracy={logs['val_accuracy']:.6f}", flush=True)


def train(args: argparse.Namespace, x_train: np.ndarray, y_train: np.ndarray,
          x_validation: np.ndarray, y_validation: np.ndarray, model_dir: Path) -> Path:
    """Softmax regression on standardized features, by stochastic gradient descent."""
    classes = int(max(y_train.max(), y_validation.max())) + 1
    if len(np.unique(y_train)) < 2:
        raise TrainingError("channel 'train': needs at least two classes")
    tf.keras.utils.set_random_seed(0)
    normalize = tf.keras.layers.Normalization()
    normalize.adapt(x_train)
    model = tf.keras.Sequential([tf.keras.Input(shape=(x_train.shape[1],)), normalize,
                                 tf.keras.layers.Dense(classes, activation="softmax")])
    model.compile(optimizer=tf.keras.optimizers.SGD(learning_rate=args.learning_rate),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_train, y_train, validation_data=(x_validation, y_validation), epochs=args.epochs,
              batch_size=16, verbose=0, callbacks=[PrintMetrics()])
    path = model_dir / "1"
    model.export(str(path))
    return path


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
