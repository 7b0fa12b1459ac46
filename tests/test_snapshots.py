"""One snapshot per stack: the last line of defence against an unnoticed change.

The assertions that matter live in the other test modules; a snapshot only shows *that*
something changed. Asset hashes are replaced, so editing training code does not churn it.
Update with ``make snapshot-update`` after reviewing the diff.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from syrupy.assertion import SnapshotAssertion
from syrupy.extensions.json import JSONSnapshotExtension

from tests.helpers import Synthesized

_ASSET_HASH = re.compile(r"[0-9a-f]{64}")


def stabilised(template: dict[str, Any]) -> Any:
    return json.loads(_ASSET_HASH.sub("<asset-hash>", json.dumps(template)))


@pytest.fixture
def snapshot_json(snapshot: SnapshotAssertion) -> SnapshotAssertion:
    return snapshot.use_extension(JSONSnapshotExtension)


@pytest.mark.parametrize("stack", ["storage", "workflow"])
def test_stack_snapshot(synthesized: Synthesized, snapshot_json: SnapshotAssertion, stack: str) -> None:
    assert stabilised(synthesized.templates[stack]) == snapshot_json


def test_workflow_snapshot_with_brought_programs_on_every_framework(
        with_brought_programs: Synthesized, snapshot_json: SnapshotAssertion) -> None:
    assert stabilised(with_brought_programs.workflow) == snapshot_json


def test_stabilising_replaces_only_hashes() -> None:
    template = {"Key": "a" * 64 + ".gz", "Other": "b" * 63}
    assert stabilised(template) == {"Key": "<asset-hash>.gz", "Other": "b" * 63}
