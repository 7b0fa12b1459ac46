"""The process of a command (``smtrain``, ``python -m smtrain.local.demo``): how it is tuned.

A command's process loads much and frees little. ``smtrain start --local`` imports botocore, moto,
the offline engine and MLflow as it goes (3,000 modules), and Python's garbage collector starts a
full pass over every object each time the heap has grown by a quarter: 8 full passes and 1.1 s of
a 4.7 s run (``--program digits_lightgbm --again``, measured with ``gc.callbacks`` from the
process's start-up to its exit handlers).
"""

from __future__ import annotations

import gc
from typing import Final

#: Passes of the middle generation between two full passes (Python's default: 10).
MIDDLE_PASSES_PER_FULL_PASS: Final = 1000


def tune_garbage_collector() -> None:
    """A full pass after :data:`MIDDLE_PASSES_PER_FULL_PASS` passes of the middle generation
    instead of 10 (measured: none in that ``start --local`` run). The young generations, where
    short-lived garbage goes, are collected as before. For a process of its own (a command, the
    test suite's workers): a library call (``smtrain.cli.main`` from a notebook or a test)
    leaves its host's collector as it is."""
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, MIDDLE_PASSES_PER_FULL_PASS)
