"""Program manifests: what a bad one is told, and what a good one means."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from infra.settings import Settings, SettingsError
from smtrain.core.programs import ProgramError, discover, load, metric_definition
from tests.conftest import ROOT, shipped_training_code, synthesize

SHIPPED = ROOT / "training_code"


def _program(tmp_path: Path, manifest: str, files: dict[str, str] | None = None,
             name: str = "mine") -> Path:
    folder = tmp_path / name
    folder.mkdir(parents=True)
    (folder / "program.toml").write_text(manifest)
    for file_name, text in (files or {"train.py": "print('epoch=1 loss=0.5')\n"}).items():
        (folder / file_name).write_text(text)
    return folder


GOOD = """
name = "mine"
kind = "script"
[script]
entry_point = "train.py"
[[channels]]
name = "training"
content_type = "text/csv"
[[metrics]]
name = "loss"
[hyperparameters.lr]
type = "float"
default = 0.1
min = 0.001
max = 1
[tuning]
objective = "loss"
type = "Minimize"
[tuning.ranges.lr]
min = 0.01
max = 0.5
"""


def test_a_good_manifest(tmp_path: Path) -> None:
    program = load(_program(tmp_path, GOOD))
    assert (program.name, program.kind, program.entry_point) == ("mine", "script", "train.py")
    assert [c.name for c in program.channels] == ["training"]
    assert program.metric_definitions == (metric_definition("loss"),)
    assert program.training_defaults == {"lr": "0.1"} and program.always_sent == {}
    assert program.tuning is not None
    assert program.tuning.as_input()["parameterRanges"] == {"ContinuousParameterRanges": [
        {"Name": "lr", "MinValue": "0.01", "MaxValue": "0.5", "ScalingType": "Auto"}]}


@pytest.mark.parametrize(("change", "message"), [
    (('name = "mine"', 'name = "other"'), "'name': must be the folder's name 'mine', got 'other'"),
    (('kind = "script"', 'kind = "spark"'), "'kind': 'spark' is not one of"),
    (('[script]', '[scripts]'), "'(top level)': Additional properties are not allowed ('scripts'"),
    (('entry_point = "train.py"', 'entry_point = "main.py"'), "'script.entry_point': "),
    (('type = "float"', 'type = "double"'), "'hyperparameters.lr.type': 'double' is not one of"),
    (('default = 0.1', 'default = 5'), "'hyperparameters.lr.default': must be at most 1, got 5"),
    (('objective = "loss"', 'objective = "acc"'),
     "'tuning.objective': 'acc' is not one of the program's metrics: loss"),
    (('[tuning.ranges.lr]', '[tuning.ranges.momentum]'),
     "'tuning.ranges.momentum': 'momentum' is not a declared hyperparameter"),
    (('max = 0.5', 'max = 2'), "'tuning.ranges.lr.max': must be at most 1, got 2"),
    (('name = "training"', 'name = "train ing"'), "'channels.0.name': 'train ing' does not match"),
])
def test_a_bad_manifest_names_the_file_and_the_field(tmp_path: Path, change: tuple[str, str],
                                                     message: str) -> None:
    folder = _program(tmp_path, GOOD.replace(*change, 1))
    with pytest.raises(ProgramError) as raised:
        load(folder)
    assert str(raised.value).startswith(f"{folder / 'program.toml'}: ")
    assert message in str(raised.value)


def test_builtin_metrics_take_no_regex(tmp_path: Path) -> None:
    manifest = ('name = "mine"\nkind = "builtin"\n[builtin]\nalgorithm = "xgboost"\n'
                '[[channels]]\nname = "train"\ncontent_type = "text/csv"\n'
                '[[metrics]]\nname = "validation:rmse"\nregex = "rmse=([0-9.]+)"\n')
    with pytest.raises(ProgramError, match="SageMaker refuses metric definitions"):
        load(_program(tmp_path, manifest, files={}))


def test_not_tunable_is_sent_on_every_job_and_cannot_be_tuned(tmp_path: Path) -> None:
    manifest = GOOD.replace('max = 1\n', 'max = 1\ntunable = false\n', 1)
    with pytest.raises(ProgramError, match=re.escape("'tuning.ranges.lr': 'lr' is declared tunable = false")):
        load(_program(tmp_path, manifest))
    program = load(_program(tmp_path / "again", manifest.split("[tuning]")[0]))
    assert program.always_sent == {"lr": "0.1"} and program.training_defaults == {}


def test_the_shipped_programs() -> None:
    programs = discover(SHIPPED)
    assert {name: p.kind for name, p in programs.items() if name.startswith("digits_")} == {
        "digits_mlp": "script", "digits_lightgbm": "byoc", "digits_xgboost": "builtin"}


def test_synth_refuses_a_program_instance_type_outside_the_allow_list(
        cdk_context: dict[str, Any], settings: Settings, tmp_path: Path) -> None:
    code = shipped_training_code(tmp_path / "training_code")
    shutil.copytree(SHIPPED / "digits_mlp", code / "big_mlp")
    manifest = (code / "big_mlp" / "program.toml").read_text().replace(
        'name = "digits_mlp"', 'name = "big_mlp"\ninstance_type = "ml.p4d.24xlarge"')
    (code / "big_mlp" / "program.toml").write_text(manifest)
    with pytest.raises(SettingsError, match=re.escape("setting 'allowedInstanceTypes' lacks ml.p4d.24xlarge, "
                                                      "the instance_type of program big_mlp")):
        synthesize(cdk_context, settings, tmp_path / "cdk.out", training_code_dir=code)


def test_a_bad_manifest_fails_cdk_synth_with_its_message(cdk_context: dict[str, Any],
                                                          tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    project = tmp_path / "project"
    shutil.copytree(ROOT, project, ignore=shutil.ignore_patterns(
        ".venv", "node_modules", "cdk.out", ".work", ".git", "__pycache__", ".mypy_cache"))
    (project / "training_code" / "digits_mlp" / "program.toml").write_text('name = "digits_mlp"\n')
    result = subprocess.run([sys.executable, "app.py"], cwd=project, capture_output=True, text=True,
                            timeout=300, env={"PATH": "/usr/bin:/bin", "CDK_DEFAULT_REGION": "us-east-1",
                                              "CDK_OUTDIR": str(tmp_path / "out"),
                                              # What the CDK CLI passes: cdk.json's context.
                                              "CDK_CONTEXT_JSON": json.dumps(cdk_context)})
    assert result.returncode == 2
    assert "digits_mlp/program.toml: '(top level)': 'kind' is a required property" in result.stderr


def test_a_broken_manifest_is_set_aside_only_when_asked(tmp_path: Path) -> None:
    """``cdk synth`` refuses any broken manifest; the CLI, which runs one program, asks for the
    others and the errors (smtrain/cli/execution_request.runnable_programs)."""
    code = shipped_training_code(tmp_path / "code")
    (code / "half_done").mkdir()
    (code / "half_done" / "program.toml").write_text("name = [\n")
    with pytest.raises(ProgramError, match=r"half_done/program\.toml: not valid TOML"):
        discover(code)
    broken: dict[str, ProgramError] = {}
    assert sorted(discover(code, broken=broken)) == ["digits_lightgbm", "digits_mlp",
                                                              "digits_xgboost"]
    assert list(broken) == ["half_done"] and "not valid TOML" in str(broken["half_done"])
    # Nothing left to run: the first error, not "no program found".
    only = tmp_path / "only"
    (only / "half_done").mkdir(parents=True)
    (only / "half_done" / "program.toml").write_text("name = [\n")
    with pytest.raises(ProgramError, match="not valid TOML"):
        discover(only, broken={})


def _channel_name_limits() -> tuple[int, str]:
    """botocore's sagemaker model, shape ChannelName: at most 64 characters of this pattern (API
    reference, ``Channel``: "Maximum length of 64. Pattern: [A-Za-z0-9\\.\\-_]+")."""
    from smtrain.local.sagemaker_model import service_model

    shape = service_model().shape_for("ChannelName")
    return int(shape.metadata["max"]), str(shape.metadata["pattern"])


def test_a_channel_name_longer_than_sagemaker_takes_is_refused(tmp_path: Path) -> None:
    """A 64-character channel name loads; 65 characters fail the manifest, naming the field
    (issue 19, item 11)."""
    longest, pattern = _channel_name_limits()
    assert (longest, pattern) == (64, r"[A-Za-z0-9\.\-_]+")
    at_limit = "c" * longest
    program = load(_program(tmp_path / "ok", GOOD.replace('name = "training"', f'name = "{at_limit}"', 1)))
    assert [c.name for c in program.channels] == [at_limit]
    folder = _program(tmp_path / "long", GOOD.replace('name = "training"', f'name = "{at_limit}d"', 1))
    with pytest.raises(ProgramError) as raised:
        load(folder)
    assert str(raised.value).startswith(f"{folder / 'program.toml'}: 'channels.0.name': '{at_limit}d'")


def test_an_input_channel_of_65_characters_is_refused_by_the_input_rules(tmp_path: Path) -> None:
    """The state machine's input check (and ``smtrain start``, which runs the same rules) refuses
    an ``inputs`` channel the program does not read: one character more than a 64-character
    channel's name is such a channel, never sent to SageMaker."""
    from smtrain.core import input_rules

    at_limit = "c" * 64
    program = load(_program(tmp_path, GOOD.replace('name = "training"', f'name = "{at_limit}"', 1)))
    programs = {"mine": program}
    accepted = input_rules.check(programs, {"program": "mine", "inputs": {at_limit: "s3://data-bucket/d/"}})
    assert accepted.problems == []
    refused = input_rules.check(programs, {"program": "mine", "inputs": {at_limit + "d": "s3://data-bucket/d/"}})
    assert [(p["error"], p["cause"]) for p in refused.problems] == [
        ("InvalidExecutionInput",
         f"input channel '{at_limit}d' is not read by program mine; its channels: {at_limit}")]
