"""``python -m smtrain.cli``: the ``smtrain`` command."""

import sys

from smtrain.cli import run_as_command

sys.exit(run_as_command())
