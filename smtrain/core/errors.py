"""The one error a refused input raises, wherever the rule that refused it runs."""

from __future__ import annotations


class InputError(ValueError):
    """Bad input for a run; the message is one line naming the problem (the CLI exits 2)."""
