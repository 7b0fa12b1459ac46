"""``smtrain compare``: the runs of the MLflow experiment side by side, and their curves."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smtrain.execution_request import InputError

#: Metrics where smaller is better (everything else is sorted largest first).
_SMALLER_IS_BETTER = ("loss", "error", "merror", "rmse")
PLOT_SIZE_INCHES = (10, 6)
PLOT_DPI = 100


@dataclass(frozen=True)
class RunRow:
    execution: str
    method: str
    run: str
    hyperparameters: dict[str, str]
    objective: float | None
    seconds: float | None
    run_id: str


def smaller_is_better(metric: str) -> bool:
    return any(word in metric for word in _SMALLER_IS_BETTER)


def load_rows(client: Any, *, experiment: str, metric: str, limit: int, ascending: bool) -> list[RunRow]:
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise InputError(f"no MLflow experiment named {experiment!r} at this tracking URI")
    order = "ASC" if ascending else "DESC"
    runs = client.search_runs([found.experiment_id], max_results=limit,
                              order_by=[f"metrics.`{metric}` {order}"])
    rows = []
    for run in runs:
        tags, info = run.data.tags, run.info
        seconds = (info.end_time - info.start_time) / 1000 if info.end_time and info.start_time else None
        rows.append(RunRow(execution=tags.get("smtrain.execution", "-"), method=tags.get("smtrain.method", "-"),
                           run=info.run_name or info.run_id, hyperparameters=dict(run.data.params),
                           objective=run.data.metrics.get(metric), seconds=seconds, run_id=info.run_id))
    # Runs without the metric last, whatever the order.
    return sorted(rows, key=lambda r: r.objective is None)


def key_hyperparameters(rows: list[RunRow], most: int = 3) -> list[str]:
    """The hyperparameters whose values differ between runs (the interesting ones) first."""
    names = sorted({name for row in rows for name in row.hyperparameters})
    varying = [n for n in names if len({row.hyperparameters.get(n) for row in rows}) > 1]
    return (varying + [n for n in names if n not in varying])[:most]


def table(rows: list[RunRow], metric: str) -> str:
    keys = key_hyperparameters(rows)
    header = ["execution", "method", "run", *keys, metric, "seconds"]
    body = [[row.execution, row.method, row.run, *(row.hyperparameters.get(k, "-") for k in keys),
             "-" if row.objective is None else f"{row.objective:.4f}",
             "-" if row.seconds is None else f"{row.seconds:.1f}"] for row in rows]
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *body, strict=True)]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
             for line in [header, *body]]
    return "\n".join(lines)


def plot(client: Any, rows: list[RunRow], metric: str, path: Path) -> None:
    """One curve of ``metric`` per run (value per epoch), saved as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=PLOT_SIZE_INCHES, dpi=PLOT_DPI)
    for row in rows:
        history = sorted(client.get_metric_history(row.run_id, metric), key=lambda m: m.step)
        if history:
            axes.plot([m.step for m in history], [m.value for m in history], marker="o",
                      label=f"{row.execution} / {row.run}"[-60:])
    axes.set_xlabel("epoch")
    axes.set_ylabel(metric)
    axes.set_title(f"{metric} per run")
    axes.grid(True, alpha=0.3)
    if axes.lines:
        axes.legend(fontsize="small")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=PLOT_DPI)
    plt.close(figure)


def compare(*, tracking_uri: str, experiment: str, metric: str, limit: int, ascending: bool | None,
            plot_path: Path | None) -> str:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    order = smaller_is_better(metric) if ascending is None else ascending
    rows = load_rows(client, experiment=experiment, metric=metric, limit=limit, ascending=order)
    if not rows:
        return f"no runs in experiment {experiment!r}"
    if plot_path is not None:
        plot(client, rows, metric, plot_path)
    return table(rows, metric)
