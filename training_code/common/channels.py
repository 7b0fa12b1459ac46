"""Reading a training channel: CSV files, label in the first column, no header.

This is the format all three methods share (SageMaker's built-in XGBoost requires it), so one
prepared dataset serves script mode, BYOC and the built-in algorithm.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


class ChannelError(ValueError):
    """A channel is missing, empty or malformed; the message says which and why."""


def read_channel(directory: str | Path, *, channel: str) -> tuple[np.ndarray, np.ndarray]:
    """All ``*.csv`` files of ``directory`` (sorted by name) as ``(features, labels)``."""
    path = Path(directory)
    if not path.is_dir():
        raise ChannelError(f"channel '{channel}' has no directory at {path}")
    files = sorted(p for p in path.rglob("*.csv") if p.is_file())
    if not files:
        raise ChannelError(f"channel '{channel}' holds no .csv files in {path}")
    parts = []
    for file in files:
        try:
            rows = np.loadtxt(file, delimiter=",", dtype=np.float64, ndmin=2)
        except ValueError as error:
            raise ChannelError(f"channel '{channel}': {file.name} is not numeric CSV: {error}") from error
        if rows.shape[1] < 2:
            raise ChannelError(f"channel '{channel}': {file.name} needs a label and features per row")
        parts.append(rows)
    widths = {p.shape[1] for p in parts}
    if len(widths) != 1:
        raise ChannelError(f"channel '{channel}': files have different column counts {sorted(widths)}")
    data = np.concatenate(parts)
    labels = data[:, 0]
    if not np.all(labels == np.round(labels)) or labels.min() < 0:
        raise ChannelError(f"channel '{channel}': labels (first column) must be non-negative integers")
    return data[:, 1:].astype(np.float32), labels.astype(np.int64)
