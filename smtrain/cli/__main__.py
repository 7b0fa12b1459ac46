"""``python -m smtrain.cli``: the ``smtrain`` command."""

import sys

from smtrain.cli import main

sys.exit(main())
