"""Program manifests: what a bad one is told, and what a good one means."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from infra.settings import Settings, SettingsError
from smtrain.core import input_rules
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
    assert not program.channels[0].shares_data
    sharing = load(_program(tmp_path / "sharing", GOOD.replace('name = "training"',
                                                               'name = "training"\nshares_data = true', 1)))
    assert sharing.channels[0].shares_data


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
    (('name = "training"', 'name = "training"\nshares_data = "yes"'),
     "'channels.0.shares_data': 'yes' is not of type 'boolean'"),
    (('name = "training"', 'name = "training"\ninput_mode = "Stream"'),
     "'channels.0.input_mode': 'Stream' is not one of ['File', 'FastFile', 'Pipe']"),
    (('name = "training"', 'name = "training"\ns3_data_distribution_type = "Sharded"'),
     "'channels.0.s3_data_distribution_type': 'Sharded' is not one of ['FullyReplicated', 'ShardedByS3Key']"),
    (('name = "training"', 'name = "training"\ncompression_type = "Gzip"'),
     "'channels.0.compression_type': channel 'training': compression_type Gzip is read in Pipe mode "
     "only (SageMaker's Channel.CompressionType): set input_mode = \"Pipe\""),
    (('name = "training"', 'name = "training"\ncompression_type = "Gzip"\ninput_mode = "FastFile"'),
     "'channels.0.compression_type': channel 'training': compression_type Gzip is read in Pipe mode only"),
])
def test_a_bad_manifest_names_the_file_and_the_field(tmp_path: Path, change: tuple[str, str],
                                                     message: str) -> None:
    folder = _program(tmp_path, GOOD.replace(*change, 1))
    with pytest.raises(ProgramError) as raised:
        load(folder)
    assert str(raised.value).startswith(f"{folder / 'program.toml'}: ")
    assert message in str(raised.value)


def test_a_channel_s_delivery_is_each_run_s_default(tmp_path: Path) -> None:
    """A channel's input_mode, s3_data_distribution_type and compression_type (SageMaker's values)
    are what the input rules merge a run's channelOptions over; unset, File, FullyReplicated,
    None."""
    plain = load(_program(tmp_path / "plain", GOOD))
    assert plain.catalog_entry()["channelOptions"] == {"training": {
        "inputMode": "File", "s3DataDistributionType": "FullyReplicated", "compressionType": "None"}}
    piped = load(_program(tmp_path / "piped", GOOD.replace(
        'name = "training"', 'name = "training"\ninput_mode = "Pipe"\ncompression_type = "Gzip"\n'
        's3_data_distribution_type = "ShardedByS3Key"', 1)))
    (channel,) = piped.channels
    assert channel.options() == {"inputMode": "Pipe", "s3DataDistributionType": "ShardedByS3Key",
                                 "compressionType": "Gzip"}
    programs = {"mine": piped}
    assert input_rules.check(programs, {"program": "mine"}).problems == []
    # The run turns Pipe off: the program's Gzip no longer fits, and the cause says whose it is.
    (problem,) = input_rules.check(programs, {"program": "mine", "channelOptions": {
        "training": {"inputMode": "FastFile"}}}).problems
    assert problem["cause"] == ("channel 'training': compressionType Gzip is read in Pipe mode only "
                                "(SageMaker's Channel.CompressionType), and its inputMode is FastFile")
    assert input_rules.check(programs, {"program": "mine", "channelOptions": {
        "training": {"inputMode": "FastFile", "compressionType": "None"}}}).problems == []


def test_options_of_an_optional_channel_need_its_data(tmp_path: Path) -> None:
    """An optional channel (no default URI) gets data only when the input gives it: options for it
    alone would be silently dropped, so they are refused, naming the field to give."""
    manifest = GOOD.replace('[[metrics]]', '[[channels]]\nname = "extra"\ncontent_type = "text/csv"\n'
                                           'required = false\n[[metrics]]', 1)
    programs = {"mine": load(_program(tmp_path, manifest))}
    options = {"extra": {"inputMode": "Pipe"}}
    (problem,) = input_rules.check(programs, {"program": "mine", "channelOptions": options}).problems
    assert problem["cause"] == ("channel 'extra' in field 'channelOptions' gets no data in this run (program "
                                "mine reads it only when given): give inputs.extra or leave its options out")
    assert input_rules.check(programs, {"program": "mine", "channelOptions": options,
                                        "inputs": {"extra": "s3://bucket/extra/"}}).problems == []


def test_builtin_xgboost_is_refused_pipe_mode(tmp_path: Path) -> None:
    """SageMaker's current XGBoost container refuses Pipe mode (contract.PIPE_REFUSING_ALGORITHMS):
    in program.toml, naming the field, and per run, by the input rules."""
    manifest = ('name = "mine"\nkind = "builtin"\n[builtin]\nalgorithm = "xgboost"\n'
                '[[channels]]\nname = "train"\ncontent_type = "text/csv"\n')
    with pytest.raises(ProgramError, match=re.escape(
            "'channels.0.input_mode': channel 'train': SageMaker's xgboost container refuses Pipe mode")):
        load(_program(tmp_path / "piped", manifest + 'input_mode = "Pipe"\n', files={}))
    programs = {"mine": load(_program(tmp_path / "plain", manifest, files={}))}
    (problem,) = input_rules.check(programs, {"program": "mine", "channelOptions": {
        "train": {"inputMode": "Pipe"}}}).problems
    assert problem["cause"].startswith("channel 'train': program mine's built-in algorithm refuses Pipe mode")
    assert input_rules.check(programs, {"program": "mine", "channelOptions": {
        "train": {"inputMode": "FastFile"}}}).problems == []


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


#: The shipped script program of each framework but PyTorch's (digits_mlp).
SAMPLES = {"sklearn": "digits_sklearn", "tensorflow": "digits_tensorflow", "xgboost": "digits_xgboost_script",
           "huggingface": "digits_huggingface"}


def test_the_shipped_programs() -> None:
    programs = discover(SHIPPED)
    assert {name: p.kind for name, p in programs.items() if name.startswith("digits_")} == {
        "digits_mlp": "script", "digits_lightgbm": "byoc", "digits_xgboost": "builtin",
        **dict.fromkeys(SAMPLES.values(), "script")}
    # One script program per other framework the SDK runs scripts on, on cdk.json's version of it.
    assert {programs[name].framework: name for name in SAMPLES.values()} == SAMPLES
    assert all(programs[name].framework_version is None for name in SAMPLES.values())


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
    # The project as a clone has it: no environments, caches or outputs (.tools holds checkov's
    # own venv after `make checkov`, some 300 MB).
    shutil.copytree(ROOT, project, ignore=shutil.ignore_patterns(
        ".venv", "node_modules", "cdk.out", ".work", ".git", "__pycache__", ".mypy_cache", ".tools",
        ".pytest_cache", ".ruff_cache", ".hypothesis"))
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


# -- the manifest against the script's options (issue 19, item 6) -------------------------------
#: A script that reads its hyperparameters with argparse, spelt with '_' where GOOD says 'lr'.
ARGPARSE_SCRIPT = """\
import argparse

parser = argparse.ArgumentParser()
parser.add_argument("--learning_rate", type=float, default=0.1)
parser.add_argument("--epochs", type=int, default=3)
args, _unknown = parser.parse_known_args()
print(f"loss={1 / args.epochs}")
"""
MISTYPED = GOOD.replace("[hyperparameters.lr]", "[hyperparameters.learning-rate]").replace(
    "[tuning.ranges.lr]", "[tuning.ranges.learning-rate]")


def test_a_hyperparameter_the_script_has_no_option_for_is_refused(tmp_path: Path) -> None:
    folder = _program(tmp_path, MISTYPED, files={"train.py": ARGPARSE_SCRIPT})
    with pytest.raises(ProgramError) as raised:
        load(folder)
    assert str(raised.value) == (
        f"{folder / 'program.toml'}: 'hyperparameters.learning-rate': the script train.py has no "
        "option --learning-rate (did you mean --learning_rate? it reads --epochs, --learning_rate); "
        "SageMaker's training toolkit passes each hyperparameter as --<name>, exactly as "
        "declared, so the script would never get this one")
    assert "\n" not in str(raised.value)
    # Spelt as the script spells it, the manifest loads.
    fixed = MISTYPED.replace("learning-rate", "learning_rate")
    assert list(load(_program(tmp_path / "fixed", fixed, files={"train.py": ARGPARSE_SCRIPT}))
                .hyperparameters) == ["learning_rate"]


def test_options_are_read_from_the_modules_the_script_imports(tmp_path: Path) -> None:
    """The options may be defined in a module of the program's folder or a shared folder; a
    one-letter hyperparameter arrives as -x (sagemaker_training.mapping.to_cmd_args)."""
    manifest = (MISTYPED
                .replace("[script]\n", '[script]\nshared = ["helpers"]\n')
                + '[hyperparameters.C]\ntype = "float"\ntunable = false\n')
    files = {"train.py": "import options\nfrom helpers.cli import more\nprint(options, more)\n",
             "options.py": ('import argparse\np = argparse.ArgumentParser()\n'
                            'p.add_argument("--learning-rate")\n')}
    (tmp_path / "helpers").mkdir()
    (tmp_path / "helpers" / "__init__.py").write_text("")
    (tmp_path / "helpers" / "cli.py").write_text('def more(p):\n    p.add_argument("-C", type=float)\n')
    assert sorted(load(_program(tmp_path, manifest, files=files)).hyperparameters) == [
        "C", "learning-rate"]
    (tmp_path / "helpers" / "cli.py").write_text('def more(p):\n    p.add_argument("--C", type=float)\n')
    with pytest.raises(ProgramError, match=re.escape("'hyperparameters.C': the script train.py has "
                                                     "no option -C (did you mean --C?")):
        load(tmp_path / "mine")


@pytest.mark.parametrize("script", [
    # Parses sys.argv itself (smtrain new-program's skeleton does): no argparse options.
    "import sys\nprint(sys.argv[1:])\n",
    # Reads the toolkit's SM_HPS, or SageMaker's hyperparameters.json, beside argparse.
    'import argparse, json, os\nhps = json.loads(os.environ["SM_HPS"])\n'
    'argparse.ArgumentParser().add_argument("--epochs")\n',
    'import argparse, json\nhps = json.load(open("/opt/ml/input/config/hyperparameters.json"))\n'
    'argparse.ArgumentParser().add_argument("--epochs")\n',
    # The toolkit's SM_HP_<NAME> variables, or its whole SM_TRAINING_ENV.
    'import argparse, os\nlr = os.environ["SM_HP_LEARNING-RATE"]\n'
    'argparse.ArgumentParser().add_argument("--epochs")\n',
    'import argparse, json, os\nenv = json.loads(os.environ["SM_TRAINING_ENV"])\n'
    'argparse.ArgumentParser().add_argument("--epochs")\n',
    # Option names the text does not spell out.
    'import argparse\nNAMES = ["--learning_rate"]\nargparse.ArgumentParser().add_argument(*NAMES)\n',
    # Not Python this interpreter parses: nothing to judge.
    "def broken(:\n",
])
def test_a_script_that_reads_its_hyperparameters_another_way_is_not_judged(
        tmp_path: Path, script: str) -> None:
    assert "learning-rate" in load(_program(tmp_path, MISTYPED, files={"train.py": script})).hyperparameters


def test_a_docstring_naming_sm_hps_does_not_skip_the_check(tmp_path: Path) -> None:
    script = '"""Reads SM_HPS? No: argparse."""\n' + ARGPARSE_SCRIPT
    with pytest.raises(ProgramError, match=re.escape("'hyperparameters.learning-rate': the script train.py")):
        load(_program(tmp_path, MISTYPED, files={"train.py": script}))


def test_the_shipped_and_fixture_script_programs_define_every_hyperparameter() -> None:
    from smtrain.core import script_options

    fixtures = discover(ROOT / "tests" / "fixtures" / "programs")
    for program in (discover(SHIPPED)["digits_mlp"], fixtures["pytorch_example"]):
        assert program.entry_point is not None
        options = script_options.read_options(
            program.directory / program.entry_point,
            packages={name: program.directory.parent / name for name in program.shared})
        assert options is not None, program.name  # checked, not skipped
        assert {script_options.toolkit_flag(name) for name in program.hyperparameters} <= options.options


def test_a_hyperparameter_the_script_lacks_fails_synth_and_smtrain_start(
        cdk_context: dict[str, Any], settings: Settings, tmp_path: Path) -> None:
    from tests.helpers import run_cli

    code = shipped_training_code(tmp_path / "training_code")
    manifest = code / "digits_mlp" / "program.toml"
    manifest.write_text(manifest.read_text().replace("[hyperparameters.hidden-units]",
                                                     "[hyperparameters.hidden_units]"))
    expected = (f"{manifest}: 'hyperparameters.hidden_units': the script train.py has no option "
                "--hidden_units (did you mean --hidden-units? it reads ")
    with pytest.raises(ProgramError, match=re.escape(expected)):
        synthesize(cdk_context, settings, tmp_path / "cdk.out", training_code_dir=code)
    # smtrain start refuses that program in one line, exit 2, before AWS is asked anything.
    env = {"PATH": "/usr/bin:/bin", "SMTRAIN_TRAINING_CODE": str(code), "AWS_REGION": "us-east-1",
           "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"}
    result = run_cli(["start", "--program", "digits_mlp"], env=env, cwd=ROOT)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith("smtrain: error: ") and len(result.stderr.splitlines()) == 1
    assert expected in result.stderr


# -- the inference handler a registered script model serves with (issue 19, item 6) -------------
def test_a_serving_handler_the_folder_lacks_is_refused(tmp_path: Path) -> None:
    named = GOOD + '[serving]\nentry_point = "serve_me.py"\n'
    with pytest.raises(ProgramError) as raised:
        load(_program(tmp_path, named))
    folder = tmp_path / "mine"
    assert str(raised.value) == (
        f"{folder / 'program.toml'}: 'serving.entry_point': {folder / 'serve_me.py'} does not "
        "exist: the manifest names it, and the model's inference image imports code/serve_me.py "
        "from model.tar.gz (its SAGEMAKER_PROGRAM), so a registered model could never serve")
    files = {"train.py": "print('loss=1')\n", "serve_me.py": "def model_fn(d): ...\n"}
    assert load(_program(tmp_path / "with", named, files=files)).serving.entry_point == "serve_me.py"


def test_registering_by_default_needs_the_default_handler(tmp_path: Path) -> None:
    registering = GOOD + "[register]\ndefault = true\n"
    with pytest.raises(ProgramError, match=re.escape(
            "'serving.entry_point': ") + ".*inference.py does not exist: the manifest registers "
            r"every run's model \(\[register\] default = true\)"):
        load(_program(tmp_path, registering))
    files = {"train.py": "print('loss=1')\n", "inference.py": "def model_fn(d): ...\n"}
    assert load(_program(tmp_path / "with", registering, files=files)).registration.default
    # A program that registers only when a run asks is not held to it (the fixtures' pytorch_example).
    assert load(_program(tmp_path / "asked", GOOD)).serving.entry_point == "inference.py"


def test_a_serving_handler_the_folder_lacks_fails_synth(
        cdk_context: dict[str, Any], settings: Settings, tmp_path: Path) -> None:
    code = shipped_training_code(tmp_path / "training_code")
    (code / "digits_mlp" / "inference.py").rename(code / "digits_mlp" / "handler.py")
    with pytest.raises(ProgramError, match=re.escape(
            f"{code / 'digits_mlp' / 'program.toml'}: 'serving.entry_point': "
            f"{code / 'digits_mlp' / 'inference.py'} does not exist")):
        synthesize(cdk_context, settings, tmp_path / "cdk.out", training_code_dir=code)


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
