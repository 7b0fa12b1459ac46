"""``smtrain compare``: the runs of the MLflow experiment side by side, and their curves."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smtrain.core import contract
from smtrain.core.errors import InputError

#: Metrics where smaller is better (everything else is sorted largest first).
_SMALLER_IS_BETTER = ("loss", "error", "merror", "rmse")
#: The axes' figure before the legend is added; the saved PNG grows to hold the legend beside it.
PLOT_SIZE_INCHES = (10, 6)
PLOT_DPI = 100
#: At most this many legend entries a column; more runs get more columns.
LEGEND_ROWS = 28
#: Line styles, then markers, that tell runs apart once the 20 colours are used up.
_LINESTYLES = ("-", "--", "-.", ":")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p", "d")
_PALETTE_SIZE = 20
#: run_styles(n) is pairwise distinct for every n up to this (more than the CLI's --max).
MAX_DISTINCT_STYLES = _PALETTE_SIZE * len(_LINESTYLES) * len(_MARKERS)


class UnknownMetric(InputError):
    """The metric to sort by was logged by none of the runs compared (exit 2, like any bad input)."""

    def __init__(self, metric: str, known: set[str], runs: int) -> None:
        self.metric, self.known = metric, sorted(known)
        have = ", ".join(self.known) if self.known else "no metrics at all"
        super().__init__(f"metric {metric!r} was logged by none of the {runs} runs compared; "
                         f"they have: {have}")


@dataclass(frozen=True)
class RunRow:
    execution: str
    program: str
    run: str
    hyperparameters: dict[str, str]
    objective: float | None
    seconds: float | None
    run_id: str
    metrics: frozenset[str] = field(default_factory=frozenset)

    @property
    def label(self) -> str:
        """The run's name in the plot's legend, whole."""
        return f"{self.execution} / {self.run}"


@dataclass(frozen=True)
class RunStyle:
    color: str
    linestyle: str
    marker: str


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
        rows.append(RunRow(execution=tags.get(contract.RUN_TAG_EXECUTION, "-"),
                           program=tags.get(contract.RUN_TAG_PROGRAM, "-"),
                           run=info.run_name or info.run_id, hyperparameters=dict(run.data.params),
                           objective=run.data.metrics.get(metric), seconds=seconds, run_id=info.run_id,
                           metrics=frozenset(run.data.metrics)))
    # Runs without the metric last, whatever the order.
    return sorted(rows, key=lambda r: r.objective is None)


def check_metric(rows: list[RunRow], metric: str) -> None:
    """Refuse a metric that none of ``rows`` logged, naming the metrics they do have."""
    if rows and all(row.objective is None for row in rows):
        raise UnknownMetric(metric, {name for row in rows for name in row.metrics}, len(rows))


def key_hyperparameters(rows: list[RunRow], most: int = 3) -> list[str]:
    """The hyperparameters whose values differ between runs (the interesting ones) first."""
    names = sorted({name for row in rows for name in row.hyperparameters})
    varying = [n for n in names if len({row.hyperparameters.get(n) for row in rows}) > 1]
    return (varying + [n for n in names if n not in varying])[:most]


def table(rows: list[RunRow], metric: str) -> str:
    keys = key_hyperparameters(rows)
    header = ["execution", "program", "run", *keys, metric, "seconds"]
    body = [[row.execution, row.program, row.run, *(row.hyperparameters.get(k, "-") for k in keys),
             "-" if row.objective is None else f"{row.objective:.4f}",
             "-" if row.seconds is None else f"{row.seconds:.1f}"] for row in rows]
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *body, strict=True)]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
             for line in [header, *body]]
    return "\n".join(lines)


def _palette() -> list[str]:
    """tab20 with its strong colours first (they are tab10, in order), then its light ones."""
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    colours = [to_hex(c) for c in colormaps["tab20"].colors]
    return colours[0::2] + colours[1::2]


def run_styles(n: int) -> list[RunStyle]:
    """A colour, line style and marker for each of ``n`` runs, no two alike for n up to
    :data:`MAX_DISTINCT_STYLES`: up to 10 runs the tab10 colours, up to 20 tab20's, then the 20
    colours again with the next line style (dashed, dash-dot, dotted), then the next marker."""
    palette = _palette()
    styles = []
    for index in range(n):
        turn = index // _PALETTE_SIZE
        styles.append(RunStyle(color=palette[index % _PALETTE_SIZE],
                               linestyle=_LINESTYLES[turn % len(_LINESTYLES)],
                               marker=_MARKERS[(turn // len(_LINESTYLES)) % len(_MARKERS)]))
    return styles


def figure(client: Any, rows: list[RunRow], metric: str) -> Any:
    """The plot: one curve of ``metric`` per run (value per epoch), the legend, with every run's
    label whole, to the right of the axes (a matplotlib ``Figure``)."""
    from matplotlib.figure import Figure

    drawing = Figure(figsize=PLOT_SIZE_INCHES, dpi=PLOT_DPI)
    axes = drawing.add_subplot()
    for row, style in zip(rows, run_styles(len(rows)), strict=True):
        history = sorted(client.get_metric_history(row.run_id, metric), key=lambda m: m.step)
        if history:
            axes.plot([m.step for m in history], [m.value for m in history], color=style.color,
                      linestyle=style.linestyle, marker=style.marker, label=row.label)
    axes.set_xlabel("epoch")
    axes.set_ylabel(metric)
    axes.set_title(f"{metric} per run")
    axes.grid(True, alpha=0.3)
    if axes.lines:
        axes.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize="small",
                    ncols=math.ceil(len(axes.lines) / LEGEND_ROWS))
    return drawing


def plot(client: Any, rows: list[RunRow], metric: str, path: Path) -> None:
    """:func:`figure`, saved as a PNG cropped to what it holds (the legend included)."""
    drawing = figure(client, rows, metric)
    path.parent.mkdir(parents=True, exist_ok=True)
    drawing.savefig(path, dpi=PLOT_DPI, bbox_inches="tight")


def compare(*, tracking_uri: str, experiment: str, metric: str, limit: int, ascending: bool | None,
            plot_path: Path | None) -> str:
    """The table of runs (and, with ``plot_path``, the line naming the plot drawn). Raises
    :class:`UnknownMetric` (drawing nothing) when no run compared logged ``metric``."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    order = smaller_is_better(metric) if ascending is None else ascending
    rows = load_rows(client, experiment=experiment, metric=metric, limit=limit, ascending=order)
    if not rows:
        return (f"no runs in experiment {experiment!r} at this tracking URI: nothing to compare"
                + ("" if plot_path is None else ", no plot drawn"))
    check_metric(rows, metric)
    if plot_path is None:
        return table(rows, metric)
    plot(client, rows, metric, plot_path)
    return f"{table(rows, metric)}\nplot: {plot_path}"
