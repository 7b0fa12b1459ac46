"""cfn-lint on every template and on the rendered definition; asl-validator on the definition."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT
from tests.helpers import Synthesized, cfn_lint

CFN_LINT = [str(Path(sys.executable).parent / "cfn-lint"),
            "--config-file", str(ROOT / ".cfnlintrc.yaml"), "--"]
ASL_VALIDATOR = ROOT / "node_modules" / ".bin" / "asl-validator"


def _run(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)


def _definition_template(definition: dict[str, Any], path: Path) -> Path:
    """cfn-lint skips a DefinitionString built with Fn::Join, so lint the rendered definition
    as the Definition of a one-resource template."""
    path.write_text(json.dumps({
        "AWSTemplateFormatVersion": "2010-09-09",
        "Resources": {"Machine": {"Type": "AWS::StepFunctions::StateMachine", "Properties": {
            "RoleArn": "arn:aws:iam::123456789012:role/state-machine", "Definition": definition}}},
    }))
    return path


@pytest.mark.parametrize("stack", ["Storage", "Workflow"])
def test_cfn_lint_template(synthesized: Synthesized, stack: str) -> None:
    assert cfn_lint(synthesized.outdir / f"{stack}.template.json") == []


def test_cfn_lint_definition(synthesized: Synthesized, tmp_path: Path) -> None:
    template = _definition_template(synthesized.definition(), tmp_path / "definition.json")
    assert cfn_lint(template) == []


def test_asl_validator(synthesized: Synthesized, tmp_path: Path) -> None:
    path = tmp_path / "definition.asl.json"
    path.write_text(json.dumps(synthesized.definition()))
    result = _run([str(ASL_VALIDATOR), "--json-path", str(path)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "is valid" in result.stdout


def test_linters_catch_a_broken_definition(synthesized: Synthesized, tmp_path: Path) -> None:
    """The two checks above can fail: a state pointing nowhere is reported by both."""
    broken = synthesized.definition()
    broken["States"]["ReadInput"]["Next"] = "NoSuchState"
    asl = tmp_path / "broken.asl.json"
    asl.write_text(json.dumps(broken))
    asl_result = _run([str(ASL_VALIDATOR), "--json-path", str(asl)])
    assert asl_result.returncode != 0 and "NoSuchState" in asl_result.stdout + asl_result.stderr
    broken["States"]["ReadInput"]["Type"] = "Passs"
    template = _definition_template(broken, tmp_path / "broken.json")
    lint_result = _run([*CFN_LINT, str(template)])
    assert lint_result.returncode != 0 and "Passs" in lint_result.stdout
    assert any("Passs" in finding for finding in cfn_lint(template)), "the in-process run finds it too"
