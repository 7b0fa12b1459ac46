"""Shared fixtures: the app synthesized once per session from the real cdk.json context."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from infra.node_runtime import use_pinned_node

use_pinned_node()

import aws_cdk as cdk  # noqa: E402

from infra.app_builder import build_app  # noqa: E402
from infra.settings import CONTEXT_KEY, Settings, settings_from_context  # noqa: E402
from tests.helpers import Synthesized  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
REGION = "us-east-1"


@pytest.fixture(scope="session")
def cdk_context() -> dict[str, Any]:
    context: dict[str, Any] = json.loads((ROOT / "cdk.json").read_text())["context"]
    return context


@pytest.fixture(scope="session")
def settings(cdk_context: dict[str, Any]) -> Settings:
    return settings_from_context(cdk_context[CONTEXT_KEY], region=REGION)


def synthesize(context: dict[str, Any], settings: Settings, outdir: Path) -> Synthesized:
    app = cdk.App(context=context, outdir=str(outdir))
    built = build_app(settings, app=app)
    assembly = app.synth()
    return Synthesized(
        outdir=outdir,
        storage=assembly.get_stack_by_name(built.storage.stack_name).template,
        workflow=assembly.get_stack_by_name(built.workflow.stack_name).template,
        messages=[(str(m.level), m.id, str(m.entry.data)) for stack in assembly.stacks
                  for m in stack.messages],
    )


@pytest.fixture(scope="session")
def synthesized(cdk_context: dict[str, Any], settings: Settings,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[Synthesized]:
    yield synthesize(cdk_context, settings, tmp_path_factory.mktemp("cdk.out"))


@pytest.fixture(scope="session")
def sample_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample datasets for every method, as ``python -m training_code.sample_data`` writes them."""
    from training_code.sample_data import write_datasets

    out = tmp_path_factory.mktemp("sample-data")
    write_datasets(out)
    return out
