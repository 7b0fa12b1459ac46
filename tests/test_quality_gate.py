"""The quality gate and the version's metadata (smtrain/core/registration.py): the JSONata the
state machine's EvaluateQualityGate state runs, evaluated here with jsonata-python."""

from __future__ import annotations

import json
from typing import Any

import pytest
import regex

from smtrain.core import contract
from smtrain.core.registration import gate_expression
from smtrain.local.sagemaker_model import service_model

EXECUTION = "nightly-1"
EXECUTION_ARN = f"arn:aws:states:us-east-1:123456789012:execution:smtrain-training:{EXECUTION}"
APP = "arn:aws:sagemaker:us-east-1:123456789012:mlflow-app/app-ABC123"


def evaluate(state_input: dict[str, Any], *, execution_name: str, execution_arn: str,
             tracking_uri: str | None = None) -> dict[str, Any]:
    """The gate's answer for ``state_input`` (what ``EvaluateQualityGate`` receives), evaluated
    alone with jsonata-python, ``$states`` bound as Step Functions binds it."""
    import jsonata

    bindings = {"states": {"input": state_input,
                           "context": {"Execution": {"Name": execution_name, "Id": execution_arn}}}}
    result: dict[str, Any] = jsonata.Jsonata(gate_expression(tracking_uri=tracking_uri)).evaluate(None, bindings)
    return result


def state(register: dict[str, Any], metrics: dict[str, float], *,
          hyperparameters: dict[str, str] | None = None, tuned: dict[str, str] | None = None) -> dict[str, Any]:
    """What EvaluateQualityGate receives after a training run (or, with ``tuned``, a tuning run)."""
    report = {"program": "digits_mlp", "trainingJobName": "smtrain-abc-0",
              "modelArtifacts": "s3://artifacts/models/smtrain-abc-0/output/model.tar.gz",
              "metrics": [{"MetricName": k, "Value": v, "Timestamp": "2026-11-29T00:00:00Z"}
                          for k, v in metrics.items()]}
    value: dict[str, Any] = {"config": {"register": {"enabled": True, **register}}, "report": report,
                             "method": {"registry": {"code": "0123abcd.tar.gz"}}}
    if tuned is None:
        value["trainingHyperparameters"] = hyperparameters or {"epochs": "5"}
    else:
        value["staticHyperparameters"] = hyperparameters or {}
        value["tuningResult"] = {"BestTrainingJob": {"TunedHyperParameters": tuned}}
    return value


def gate(value: dict[str, Any], tracking_uri: str | None = None) -> dict[str, Any]:
    return evaluate(value, execution_name=EXECUTION, execution_arn=EXECUTION_ARN,
                    tracking_uri=tracking_uri)


@pytest.mark.parametrize(("register", "metrics", "passed", "reason"), [
    ({"minimum": {"validation:accuracy": 0.95}}, {"validation:accuracy": 0.97}, True,
     "meets the quality gate: validation:accuracy 0.97 >= 0.95"),
    ({"minimum": {"validation:accuracy": 0.95}}, {"validation:accuracy": 0.95}, True,
     "meets the quality gate: validation:accuracy 0.95 >= 0.95"),
    ({"minimum": {"validation:accuracy": 0.95}}, {"validation:accuracy": 0.94}, False,
     "not registered: validation:accuracy 0.94 is below the minimum 0.95"),
    ({"maximum": {"validation:loss": 0.2}}, {"validation:loss": 0.25}, False,
     "not registered: validation:loss 0.25 is above the maximum 0.2"),
    # The maximum is inclusive, as the minimum is: a metric exactly at it passes (issue 19,
    # item 11: a ">=" for ">" here went unnoticed), and the least step above it fails.
    ({"maximum": {"validation:loss": 0.2}}, {"validation:loss": 0.2}, True,
     "meets the quality gate: validation:loss 0.2 <= 0.2"),
    ({"maximum": {"validation:loss": 0.2}}, {"validation:loss": 0.19999999}, True,
     "meets the quality gate: validation:loss 0.19999999 <= 0.2"),
    ({"maximum": {"validation:loss": 0.2}}, {"validation:loss": 0.20000001}, False,
     "not registered: validation:loss 0.20000001 is above the maximum 0.2"),
    ({"maximum": {"validation:merror": 0}}, {"validation:merror": 0}, True,
     "meets the quality gate: validation:merror 0 <= 0"),
    ({"minimum": {"validation:accuracy": 0.95}}, {"validation:accuracy": 0.94999999}, False,
     "not registered: validation:accuracy 0.94999999 is below the minimum 0.95"),
    ({"minimum": {"validation:accuracy": 0.9}, "maximum": {"validation:loss": 0.2}},
     {"validation:accuracy": 0.97, "validation:loss": 0.1}, True,
     "meets the quality gate: validation:accuracy 0.97 >= 0.9, validation:loss 0.1 <= 0.2"),
    ({"minimum": {"validation:accuracy": 0.9}}, {"train:loss": 0.1}, False,
     "not registered: validation:accuracy was not reported by training job smtrain-abc-0"),
    ({"minimum": {}, "maximum": {}}, {}, True,
     "registered without a quality gate (register has no minimum or maximum)"),
    ({"minimum": {"a": 1, "b": 1}}, {"a": 0.5, "b": 0.5}, False,
     "not registered: a 0.5 is below the minimum 1; b 0.5 is below the minimum 1"),
])
def test_the_gate(register: dict[str, Any], metrics: dict[str, float], passed: bool, reason: str) -> None:
    answer = gate(state(register, metrics))
    assert (answer["passed"], answer["reason"]) == (passed, reason)


def _satisfies(shape_name: str, text: str) -> bool:
    shape = service_model().shape_for(shape_name)
    return (shape.metadata["min"] <= len(text) <= shape.metadata["max"]
            and regex.fullmatch(shape.metadata["pattern"], text) is not None)


def test_metadata_fits_what_sagemaker_accepts() -> None:
    """Characters SageMaker refuses become _, values are cut to 256, an empty value is '-', the
    framework's sagemaker_* values are left out, and 48 entries at most leave the gate (the
    first hyperparameters by name: z00..z40 of the 60 here), so the two the frozen copy adds
    (its SHA-256 and S3 version) make the 50 SageMaker accepts."""
    hyperparameters = {"layers": "[64, 32]", "note": "x" * 300, "empty": "", "sagemaker_program": "train.py",
                       "_tuning_objective_metric": "validation:accuracy",
                       **{f"z{i:02d}": str(i) for i in range(60)}}
    metadata = gate(state({}, {}, hyperparameters=hyperparameters))["metadata"]
    assert len(metadata) == contract.MAX_CUSTOMER_METADATA - contract.METADATA_ADDED_AT_REGISTRATION
    assert metadata["hp:layers"] == "_64_ 32_"
    assert metadata["hp:note"] == "x" * 256
    assert metadata["hp:empty"] == "-"
    assert "hp:z40" in metadata and "hp:z41" not in metadata
    assert not [k for k in metadata if "sagemaker_" in k or "tuning_objective" in k]
    assert {k: metadata[k] for k in (contract.METADATA_EXECUTION, contract.METADATA_PROGRAM,
                                     contract.METADATA_TRAINING_JOB, contract.METADATA_CODE)} == {
        contract.METADATA_EXECUTION: EXECUTION, contract.METADATA_PROGRAM: "digits_mlp",
        contract.METADATA_TRAINING_JOB: "smtrain-abc-0", contract.METADATA_CODE: "0123abcd.tar.gz"}
    for key, value in metadata.items():
        assert _satisfies("CustomerMetadataKey", key), key
        assert _satisfies("CustomerMetadataValue", value), (key, value)


def test_a_tuning_run_records_the_best_trials_values() -> None:
    metadata = gate(state({}, {}, hyperparameters={"epochs": "10", "seed": "42"},
                          tuned={"learning-rate": "0.013"}))["metadata"]
    assert {k: v for k, v in metadata.items() if k.startswith("hp:")} == {
        "hp:epochs": "10", "hp:learning-rate": "0.013", "hp:seed": "42"}


def test_a_tracked_version_leads_to_its_mlflow_run() -> None:
    metadata = gate(state({}, {}), tracking_uri=APP)["metadata"]
    assert metadata[contract.METADATA_MLFLOW_TRACKING_URI] == APP
    assert metadata[contract.METADATA_MLFLOW_EXPERIMENT] == contract.EXPERIMENT
    assert _satisfies("CustomerMetadataValue", APP)
    untracked = gate(state({}, {}))["metadata"]
    assert not [k for k in untracked if k.startswith("mlflow:")]


def test_description_and_report() -> None:
    answer = gate(state({"minimum": {"validation:accuracy": 0.9}, "description": "nightly retrain"},
                        {"validation:accuracy": 0.97, "train:loss": 0.1}))
    assert answer["description"] == "nightly retrain"
    report = json.loads(answer["report"])
    assert report["training_job_final_metrics"] == {"validation:accuracy": {"value": 0.97},
                                                    "train:loss": {"value": 0.1}}
    assert report["smtrain"] == {
        "program": "digits_mlp", "execution": EXECUTION_ARN, "trainingJob": "smtrain-abc-0",
        "modelArtifacts": "s3://artifacts/models/smtrain-abc-0/output/model.tar.gz",
        "qualityGate": {"minimum": {"validation:accuracy": 0.9}, "maximum": {}, "passed": True}}
    default = gate(state({}, {}))["description"]
    assert default == f"digits_mlp model of training job smtrain-abc-0 (execution {EXECUTION})"
    assert regex.fullmatch(service_model().shape_for("EntityDescription").metadata["pattern"], default)
