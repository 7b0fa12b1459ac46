"""A command's process is tuned as a command's (smtrain/core/command_process.py); a library call
of the CLI's ``main`` leaves its host's process as it is."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
from importlib.metadata import entry_points

import pytest

from smtrain.core.command_process import MIDDLE_PASSES_PER_FULL_PASS, tune_garbage_collector

#: ``run_as_command`` in a new process, from Python's default thresholds, with ``main`` replaced
#: by one that prints the thresholds it runs under.
PROBE = """
import gc, json, sys
import smtrain.cli as cli
gc.set_threshold(700, 10, 10)
cli.main = lambda argv=None: print(json.dumps(gc.get_threshold())) or 0
sys.exit(cli.run_as_command())
"""


def test_the_smtrain_command_runs_main_with_few_full_passes() -> None:
    (script,) = [e for e in entry_points(group="console_scripts") if e.name == "smtrain"]
    assert script.value == "smtrain.cli:run_as_command"
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                          timeout=60, check=True)
    assert json.loads(done.stdout) == [700, 10, MIDDLE_PASSES_PER_FULL_PASS]


def test_main_called_in_a_process_leaves_its_collector_alone() -> None:
    from smtrain.cli import main

    threshold = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)  # not the tuned value, so that a tuning would show
        with pytest.raises(SystemExit):
            main(["--help"])
        assert gc.get_threshold() == (700, 10, 10)
    finally:
        gc.set_threshold(*threshold)


def test_tuning_keeps_the_young_generations_thresholds() -> None:
    threshold = gc.get_threshold()
    try:
        gc.set_threshold(500, 7, 10)
        tune_garbage_collector()
        assert gc.get_threshold() == (500, 7, MIDDLE_PASSES_PER_FULL_PASS)
    finally:
        gc.set_threshold(*threshold)
