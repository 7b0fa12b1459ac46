"""``smtrain compare``: the runs of the MLflow experiment side by side, and their curves.

What it sorts by, and says so above each table:

- ``--sort METRIC``: that metric, smallest first for losses and error rates, else largest first
  (``--ascending``/``--descending`` override); the best ``--max`` runs by it, in one table. A
  metric none of them logged is refused (exit 2), naming the metrics they have;
- else each program's objective (:func:`objective`: its ``program.toml``'s tuning objective and
  direction, else its quality gate's metric), one table per program, programs by name: the
  newest ``--max`` runs (of ``--program`` alone, when given, then its best ``--max`` by its
  objective). A program without either is listed newest first. Never exit 2 for a metric
  that is absent: runs without it come last, shown ``-``.

Whatever the order, the runs that failed or were killed (the ``status`` column) come after all
the others.

``cost_usd`` is what the run's training job cost (its billable time x instances x the on-demand
price), which the CLI puts on the run when it reports the job's cost (``smtrain watch`` at the
end, ``smtrain status``, ``smtrain start --local``: ``smtrain.cli.run_costs``); ``-`` until then,
or where the price table has no price.

``run_seconds`` is the MLflow run's wall time, its end minus its start: for a program that tracks
(``training_code/common/tracking.py``) from its ``start_run`` to its ``end_run``, that is the
training itself, without the job's start-up or data download; for a run the offline engine logs
for a job whose program logs none (the built-in XGBoost), the job's training, from its
``Training`` status to the end of its process.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

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


#: The column of each run's wall time (see the module's docstring).
SECONDS_COLUMN = "run_seconds"
#: The column of what each run's training job cost: the metric the CLI puts on the run once the
#: job has ended (``smtrain.cli.run_costs``); ``-`` where it has not (yet), or the price is unknown.
COST_COLUMN = contract.RUN_METRIC_COST_USD
#: At least this many hyperparameter columns: every one that varies, then constant ones by name.
MIN_HYPERPARAMETER_COLUMNS = 3


@dataclass(frozen=True)
class SortOrder:
    """What a table is sorted by, and why (``source``), as the line above it says."""

    metric: str | None
    ascending: bool
    source: str

    def describe(self) -> str:
        if self.metric is None:
            return f"newest first ({self.source})"
        return f"sorted by {self.metric}, {'smallest' if self.ascending else 'largest'} first ({self.source})"


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
    #: MLflow's run status: FINISHED, FAILED, KILLED, RUNNING or SCHEDULED.
    status: str = "-"
    #: Every metric's latest value.
    values: dict[str, float] = field(default_factory=dict)

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
    return metric == COST_COLUMN or any(word in metric for word in _SMALLER_IS_BETTER)


def objective(program: str, *, ascending: bool | None = None) -> SortOrder:
    """How ``program``'s runs are sorted by default: its manifest's tuning objective and type,
    else its quality gate's metric (a minimum: largest first; a maximum: smallest first), else
    newest first. ``ascending`` (``--ascending``/``--descending``) overrides the direction."""
    from smtrain.core.programs import ProgramError, discover

    try:
        manifest = discover(broken={}).get(program)
    except ProgramError:  # no program.toml readable at all: the runs are still worth listing
        manifest = None
    if manifest is None:
        return SortOrder(None, False, f"no program.toml for {program} here; --sort METRIC sorts")
    if manifest.tuning is not None:
        metric, smaller = manifest.tuning.objective_metric, manifest.tuning.objective_type == "Minimize"
        source = "its tuning objective in program.toml"
    elif manifest.registration.minimum or manifest.registration.maximum:
        gate = manifest.registration
        metric, smaller = next(iter(gate.minimum), None) or next(iter(gate.maximum)), not gate.minimum
        source = "its quality gate's metric in program.toml"
    else:
        return SortOrder(None, False, f"program.toml of {program} names no objective; --sort METRIC sorts")
    if ascending is not None:
        smaller, source = ascending, f"{source}, {'--ascending' if ascending else '--descending'}"
    return SortOrder(metric, smaller, source)


def _run_filter(program: str | None) -> str:
    if program is None:
        return ""
    quoted = program.replace("'", "\\'")
    return f"tags.`{contract.RUN_TAG_PROGRAM}` = '{quoted}'"


def load_rows(client: Any, *, experiment: str, metric: str | None, limit: int, ascending: bool,
              program: str | None = None) -> list[RunRow]:
    """The best ``limit`` runs by ``metric`` (None: the newest ``limit``), of ``program`` alone
    when given, with the runs without the metric last."""
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise InputError(f"no MLflow experiment named {experiment!r} at this tracking URI")
    order = ("attributes.start_time DESC" if metric is None
             else f"metrics.`{metric}` {'ASC' if ascending else 'DESC'}")
    runs = client.search_runs([found.experiment_id], filter_string=_run_filter(program),
                              max_results=limit, order_by=[order])
    rows = []
    for run in runs:
        tags, info = run.data.tags, run.info
        seconds = (info.end_time - info.start_time) / 1000 if info.end_time and info.start_time else None
        rows.append(RunRow(execution=tags.get(contract.RUN_TAG_EXECUTION, "-"),
                           program=tags.get(contract.RUN_TAG_PROGRAM, "-"),
                           run=info.run_name or info.run_id, hyperparameters=dict(run.data.params),
                           objective=None if metric is None else run.data.metrics.get(metric),
                           seconds=seconds, run_id=info.run_id,
                           metrics=frozenset(run.data.metrics), status=info.status or "-",
                           values=dict(run.data.metrics)))
    # Runs without the metric, then failed ones, last, whatever the order.
    return sorted(rows, key=lambda r: _rank(r, metric))


#: MLflow's statuses of a run that ended without finishing.
UNFINISHED: Final = frozenset({"FAILED", "KILLED"})


def _rank(row: RunRow, metric: str | None) -> int:
    """0: a run with the metric (or any run, without one); 1: without it; 2: failed or killed."""
    if row.status in UNFINISHED:
        return 2
    return int(metric is not None and row.objective is None)


def sorted_rows(rows: list[RunRow], order: SortOrder) -> list[RunRow]:
    """``rows`` (read newest first) sorted by ``order``'s metric; those without it, then the
    failed or killed ones, last."""
    if order.metric is None:
        return sorted(rows, key=lambda r: _rank(r, None))
    with_value = [dataclasses.replace(row, objective=row.values.get(order.metric)) for row in rows]
    by_value = sorted(with_value, key=lambda r: 0.0 if r.objective is None
                      else r.objective if order.ascending else -r.objective)
    return sorted(by_value, key=lambda r: _rank(r, order.metric))


def _programs_with_runs(client: Any, experiment: str) -> list[str]:
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id], max_results=1000) if found is not None else []
    return sorted({run.data.tags[contract.RUN_TAG_PROGRAM] for run in runs
                   if contract.RUN_TAG_PROGRAM in run.data.tags})


def check_metric(rows: list[RunRow], metric: str) -> None:
    """Refuse a metric that none of ``rows`` logged, naming the metrics they do have."""
    if rows and all(row.objective is None for row in rows):
        raise UnknownMetric(metric, {name for row in rows for name in row.metrics}, len(rows))


def key_hyperparameters(rows: list[RunRow], least: int = MIN_HYPERPARAMETER_COLUMNS) -> list[str]:
    """Every hyperparameter whose value differs between ``rows`` (the tuned ones among them), by
    name; then, up to ``least`` columns in all, the constant ones by name."""
    names = sorted({name for row in rows for name in row.hyperparameters})
    varying = [n for n in names if len({row.hyperparameters.get(n) for row in rows}) > 1]
    constant = [n for n in names if n not in varying]
    return varying + constant[:max(0, least - len(varying))]


def table(rows: list[RunRow], metric: str | None) -> str:
    keys = key_hyperparameters(rows)
    measured = [] if metric in (None, COST_COLUMN) else [metric]  # the cost has its own column
    header = ["execution", "program", "run", "status", *keys, *measured, SECONDS_COLUMN, COST_COLUMN]
    body = [[row.execution, row.program, row.run, row.status,
             *(row.hyperparameters.get(k, "-") for k in keys),
             *([] if not measured else ["-" if row.objective is None else f"{row.objective:.4f}"]),
             "-" if row.seconds is None else f"{row.seconds:.1f}",
             "-" if COST_COLUMN not in row.values else f"{row.values[COST_COLUMN]:.4f}"] for row in rows]
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


def compare(*, tracking_uri: str, experiment: str, metric: str | None, limit: int,
            ascending: bool | None, plot_path: Path | None, program: str | None = None) -> str:
    """The tables of runs, each under the line saying what it is sorted by (and, with
    ``plot_path``, the line naming the plot drawn); see the module's docstring. Raises
    :class:`UnknownMetric` (drawing nothing) when no run compared logged the ``--sort`` metric,
    and InputError for a ``--program`` without runs or a plot of several programs' objectives."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    sections: list[tuple[str | None, SortOrder, list[RunRow]]]
    if metric is not None:
        order = SortOrder(metric, smaller_is_better(metric) if ascending is None else ascending, "--sort")
        rows = load_rows(client, experiment=experiment, metric=metric, limit=limit,
                         ascending=order.ascending, program=program)
        sections = [(program, order, rows)]
    elif program is not None:
        order = objective(program, ascending=ascending)
        rows = load_rows(client, experiment=experiment, metric=order.metric, limit=limit,
                         ascending=order.ascending, program=program)
        sections = [(program, order, rows)]
    else:
        newest = load_rows(client, experiment=experiment, metric=None, limit=limit, ascending=False)
        sections = []
        for name in sorted({row.program for row in newest}):
            order = objective(name, ascending=ascending)
            sections.append((name, order, sorted_rows([r for r in newest if r.program == name], order)))
    if not any(rows for _, _, rows in sections):
        if program is not None:
            known = ", ".join(_programs_with_runs(client, experiment)) or "none"
            raise InputError(f"--program {program}: no runs of it in experiment {experiment!r}; "
                             f"programs with runs: {known}")
        return (f"no runs in experiment {experiment!r} at this tracking URI: nothing to compare"
                + ("" if plot_path is None else ", no plot drawn"))
    if metric is not None:
        check_metric(sections[0][2], metric)
    tables = [f"{name + ': ' if name is not None else ''}{order.describe()}\n{table(rows, order.metric)}"
              for name, order, rows in sections]
    text = "\n\n".join(tables)
    if plot_path is None:
        return text
    plotted = [(order.metric, rows) for _, order, rows in sections if order.metric is not None]
    if len(sections) > 1 or not plotted:
        programs = ", ".join(str(name) for name, _, _ in sections)
        raise InputError(f"--plot draws one metric and these runs have no single one to draw "
                         f"(programs {programs}): add --program NAME or --sort METRIC")
    ((plot_metric, rows),) = plotted
    assert plot_metric is not None
    plot(client, rows, plot_metric, plot_path)
    return f"{text}\nplot: {plot_path}"
