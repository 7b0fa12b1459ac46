"""Typed hyperparameters for the LightGBM trainer, from SageMaker's string values."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any


class HyperparameterError(ValueError):
    """A hyperparameter has a value of the wrong type or out of range."""


@dataclass(frozen=True)
class Hyperparameters:
    """Defaults equal the stack's ``training_defaults`` for the byoc method."""

    num_boost_round: int = 100
    learning_rate: float = 0.1
    num_leaves: int = 31
    min_data_in_leaf: int = 20
    seed: int = 42
    report_every: int = 10

    @classmethod
    def from_strings(cls, values: Mapping[str, str]) -> Hyperparameters:
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise HyperparameterError(f"unknown hyperparameter(s) {unknown}; known: {sorted(known)}")
        parsed: dict[str, Any] = {}
        for name, text in values.items():
            kind = int if known[name].type in ("int", int) else float
            parsed[name] = _parse(name, text, kind)
        result = cls(**parsed)
        result._check()
        return result

    def _check(self) -> None:
        checks: list[tuple[str, bool, str]] = [
            ("num_boost_round", self.num_boost_round >= 1, "at least 1"),
            ("learning_rate", 0 < self.learning_rate <= 1, "in (0, 1]"),
            ("num_leaves", 2 <= self.num_leaves <= 131072, "from 2 to 131072"),
            ("min_data_in_leaf", self.min_data_in_leaf >= 1, "at least 1"),
            ("report_every", self.report_every >= 1, "at least 1"),
        ]
        for name, ok, allowed in checks:
            if not ok:
                raise HyperparameterError(
                    f"hyperparameter '{name}' must be {allowed}, got {getattr(self, name)}")


def _parse(name: str, text: str, kind: Callable[[str], Any]) -> Any:
    try:
        return kind(text.strip().strip('"'))
    except ValueError:
        expected = "an integer" if kind is int else "a number"
        raise HyperparameterError(f"hyperparameter '{name}' must be {expected}, got {text!r}") from None
