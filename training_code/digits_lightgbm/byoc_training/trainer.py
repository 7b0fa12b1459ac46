"""LightGBM multi-class training with the project's metric lines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np

from byoc_training.hyperparameters import Hyperparameters
from common.tracking import Tracker

MODEL_FILE = "model.txt"


def metric_line(epoch: int, metrics: dict[str, float]) -> str:
    """``epoch=N train:loss=X validation:loss=Y validation:accuracy=Z`` (the stack parses it)."""
    return f"epoch={epoch} " + " ".join(f"{name}={value:.6f}" for name, value in metrics.items())


def train(hp: Hyperparameters, *, train: tuple[np.ndarray, np.ndarray],
          validation: tuple[np.ndarray, np.ndarray], model_dir: Path,
          tracker: Tracker | None = None) -> dict[str, float]:
    """Train, print a metric line every ``report_every`` rounds (one "epoch"), save
    ``model.txt`` to ``model_dir``; returns the last metrics. ``tracker`` (default none) gets
    each epoch's metrics and the model."""
    (train_x, train_y), (valid_x, valid_y) = train, validation
    num_classes = int(max(train_y.max(), valid_y.max())) + 1
    params: dict[str, Any] = {
        "objective": "multiclass", "num_class": num_classes,
        "metric": ["multi_logloss", "multi_error"],
        "learning_rate": hp.learning_rate, "num_leaves": hp.num_leaves,
        "min_data_in_leaf": hp.min_data_in_leaf, "seed": hp.seed, "deterministic": True,
        "force_row_wise": True, "num_threads": 1, "verbosity": -1,
    }
    train_set = lgb.Dataset(train_x, label=train_y)
    valid_set = lgb.Dataset(valid_x, label=valid_y, reference=train_set)
    last: dict[str, float] = {}

    def report(env: lgb.callback.CallbackEnv) -> None:
        done = env.iteration + 1
        if done % hp.report_every and done != hp.num_boost_round:
            return
        results = {(item[0], item[1]): float(item[2]) for item in env.evaluation_result_list or []}
        last.update({
            "train:loss": results[("train", "multi_logloss")],
            "validation:loss": results[("validation", "multi_logloss")],
            "validation:accuracy": 1.0 - results[("validation", "multi_error")],
        })
        epoch = -(-done // hp.report_every)
        print(metric_line(epoch, last), flush=True)
        if tracker is not None:
            tracker.log_metrics(last, step=epoch)

    booster = lgb.train(params, train_set, num_boost_round=hp.num_boost_round,
                        valid_sets=[train_set, valid_set], valid_names=["train", "validation"],
                        callbacks=[report])
    model_dir.mkdir(parents=True, exist_ok=True)
    booster.save_model(str(model_dir / MODEL_FILE))
    if tracker is not None:
        tracker.log_model(model_dir)
    return last


def load_model(model_dir: Path) -> lgb.Booster:
    return lgb.Booster(model_file=str(model_dir / MODEL_FILE))
