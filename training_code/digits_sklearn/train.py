"""scikit-learn on AWS's scikit-learn image, run by the SageMaker training toolkit as
``python train.py --epochs N --learning-rate X`` (a skeleton by ``smtrain new-program``).

The SageMaker contract: channels ``train`` and ``validation`` (CSV files, the label, a class
number, in the first column, no header) at ``SM_CHANNEL_TRAIN`` / ``SM_CHANNEL_VALIDATION``; one
metric line per epoch, ``epoch=N train:loss=X validation:accuracy=Y`` (the manifest's metric
definitions read ``<name>=<number>``); the model to ``SM_MODEL_DIR`` as ``model.joblib``, as
AWS's scikit-learn examples save it; on an error, the reason to ``/opt/ml/output/failure`` and
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

import joblib
import numpy as np
from sklearn.linear_model import SGDClassifier
from sklearn.metrics import log_loss
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

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


def train(args: argparse.Namespace, x_train: np.ndarray, y_train: np.ndarray,
          x_validation: np.ndarray, y_validation: np.ndarray, model_dir: Path) -> Path:
    """Logistic regression by stochastic gradient descent, one pass over the data an epoch."""
    classes = np.unique(y_train)
    if len(classes) < 2:
        raise TrainingError(f"channel 'train': needs at least two classes, found {classes.tolist()}")
    scaler = StandardScaler().fit(x_train)
    classifier = SGDClassifier(loss="log_loss", learning_rate="constant", eta0=args.learning_rate,
                               random_state=0)
    for epoch in range(1, args.epochs + 1):
        classifier.partial_fit(scaler.transform(x_train), y_train, classes=classes)
        loss = log_loss(y_train, classifier.predict_proba(scaler.transform(x_train)), labels=classes)
        accuracy = classifier.score(scaler.transform(x_validation), y_validation)
        print(f"epoch={epoch} train:loss={loss:.6f} validation:accuracy={accuracy:.6f}", flush=True)
    path = model_dir / "model.joblib"
    joblib.dump(make_pipeline(scaler, classifier), path)
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
