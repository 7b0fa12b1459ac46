"""A local stand-in for SageMaker's built-in XGBoost algorithm container.

Reads the same ``/opt/ml`` contract (``SAGEMAKER_BASE_DIR`` overrides it): CSV channels with the
label first and no header, the algorithm's hyperparameters as strings; trains with the xgboost
library, prints the evaluation lines the built-in algorithm prints (``[3]#011train-merror:0.01
#011validation-merror:0.03``), saves ``xgboost-model``, and on error writes ``output/failure``.

    SAGEMAKER_BASE_DIR=/tmp/job python -m smtrain.local.builtin_xgboost
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from smtrain.core import contract

#: Hyperparameters passed through to xgboost, with their types (a subset of the built-in's).
_TYPED: dict[str, type] = {
    "num_round": int, "num_class": int, "max_depth": int, "eta": float, "gamma": float,
    "min_child_weight": float, "subsample": float, "colsample_bytree": float, "alpha": float,
    "lambda": float, "seed": int, "objective": str, "eval_metric": str,
}

#: What SageMaker publishes for the built-in algorithm (its own metric definitions).
BUILTIN_METRIC_DEFINITIONS = [
    {"Name": f"{channel}:{metric}",
     "Regex": rf".*\[[0-9]+\].*#011{channel}-{metric}:([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?).*"}
    for channel in ("train", "validation") for metric in ("merror", "mlogloss", "rmse", "error", "logloss")
]


class AlgorithmError(ValueError):
    pass


def _read_csv(directory: Path, channel: str) -> tuple[np.ndarray, np.ndarray]:
    files = sorted(p for p in directory.rglob("*") if p.is_file()) if directory.is_dir() else []
    if not files:
        raise AlgorithmError(f"ClientError: channel '{channel}' has no data files")
    try:
        data = np.concatenate([np.loadtxt(f, delimiter=",", ndmin=2) for f in files])
    except ValueError as error:
        raise AlgorithmError(f"ClientError: channel '{channel}' is not CSV with the label first "
                             f"and no header: {error}") from error
    return data[:, 1:], data[:, 0]


def _hyperparameters(raw: dict[str, str]) -> tuple[dict[str, Any], int]:
    params: dict[str, Any] = {}
    for name, text in raw.items():
        kind = _TYPED.get(name)
        if kind is None:
            raise AlgorithmError(f"ClientError: Hyperparameter '{name}' is not supported")
        try:
            params[name] = kind(text)
        except ValueError:
            raise AlgorithmError(f"ClientError: Hyperparameter '{name}' must be {kind.__name__}, "
                                 f"got {text!r}") from None
    if "num_round" not in params:
        raise AlgorithmError("ClientError: Missing required hyperparameter: num_round")
    return params, int(params.pop("num_round"))


def main() -> int:
    base = Path(os.environ.get(contract.ENV_BASE_DIR, contract.CONTAINER_BASE_DIR))
    failure = base / "output" / "failure"
    try:
        import xgboost

        raw = json.loads((base / "input" / "config" / "hyperparameters.json").read_text())
        params, num_round = _hyperparameters(raw)
        train_x, train_y = _read_csv(base / "input" / "data" / "train", "train")
        sets = [(xgboost.DMatrix(train_x, label=train_y), "train")]
        validation_dir = base / "input" / "data" / "validation"
        if validation_dir.is_dir():
            valid_x, valid_y = _read_csv(validation_dir, "validation")
            sets.append((xgboost.DMatrix(valid_x, label=valid_y), "validation"))
        params.setdefault("seed", 0)
        params["nthread"] = 1

        class Report(xgboost.callback.TrainingCallback):  # type: ignore[misc]
            def after_iteration(self, model: Any, epoch: int, evals_log: dict[str, Any]) -> bool:
                parts = [f"{data}-{metric}:{values[-1]:.5f}" for data, metrics in evals_log.items()
                         for metric, values in metrics.items()]
                print(f"[{epoch}]#011" + "#011".join(parts), flush=True)
                return False

        booster = xgboost.train(params, sets[0][0], num_boost_round=num_round, evals=sets,
                                verbose_eval=False, callbacks=[Report()])
        (base / "model").mkdir(parents=True, exist_ok=True)
        booster.save_model(str(base / "model" / "xgboost-model"))
    except (AlgorithmError, OSError, json.JSONDecodeError) as error:
        failure.parent.mkdir(parents=True, exist_ok=True)
        failure.write_text(str(error))
        print(error, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
