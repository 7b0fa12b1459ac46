"""The model registry end to end offline: each shipped program trains for real, is registered
through the synthesized state machine, listed and approved; the quality gate keeps a model out and
says why; a tuning run registers its best job.

Every CreateModelPackage the state machine sends is judged by the engine's strict front end
(botocore's sagemaker model and the API reference's rules) before the local registry stores it;
the tests re-check the stored request against the model as well.
"""

from __future__ import annotations

import base64
import hashlib
import io
import itertools
import json
import os
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from infra.images import training_images
from infra.settings import Settings
from smtrain.core import contract
from smtrain.local.demo import QUICK_HYPERPARAMETERS
from smtrain.local.engine import ExecutionResult, OfflineEngine
from smtrain.local.sagemaker_model import request_violations
from tests.conftest import ROOT, TRAINED_INPUTS, TUNED_INPUTS, TrainedRuns
from tests.helpers import run_cli

REQUEST_FIELDS = ("ModelPackageGroupName", "ModelPackageDescription", "InferenceSpecification",
                  "ModelApprovalStatus", "ModelMetrics", "CustomerMetadataProperties",
                  "MetadataProperties")


@pytest.fixture(scope="module")
def engine(trained: TrainedRuns) -> Iterator[OfflineEngine]:
    """The session's engine of trained runs (tests/conftest.py), the sample data in its bucket."""
    engine: OfflineEngine = trained.engine
    with engine:
        yield engine


_runs = 0


def run(engine: OfflineEngine, execution_input: dict[str, Any]) -> ExecutionResult:
    global _runs
    _runs += 1
    result = engine.run(execution_input, name=f"registry-{_runs}", timeout=600)
    assert result.succeeded, (result.error, result.cause)
    assert result.output is not None
    return result


def quick(program: str, **fields: Any) -> dict[str, Any]:
    return {contract.PROGRAM: program,
            contract.HYPERPARAMETERS: dict(QUICK_HYPERPARAMETERS.get(program, {})), **fields}


def stored_request(engine: OfflineEngine, arn: str) -> dict[str, Any]:
    """The version as CreateModelPackage described it (the fields the request set)."""
    description = engine.registry.describe_model_package(arn)
    request = {key: description[key] for key in REQUEST_FIELDS if key in description}
    request["ModelPackageGroupName"] = description["ModelPackageGroupName"]
    return request


@pytest.mark.parametrize("program", ["digits_mlp", "digits_lightgbm", "digits_xgboost"])
def test_each_program_trains_registers_lists_and_is_approved(
        trained: TrainedRuns, settings: Settings, program: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    from smtrain.cli import main as cli_main

    engine, result = trained.engine, trained.training[program]
    output = result.output
    assert output is not None
    assert output["registered"] is True, output["registrationReason"]
    assert output["registrationReason"].startswith("meets the quality gate: ")
    group = engine.deployment.model_groups[contract.output_id(program)]
    assert output["modelPackageGroup"] == group
    arn = output["modelPackageArn"]
    assert arn.startswith(f"arn:aws:sagemaker:us-east-1:123456789012:model-package/{group}/")

    request = stored_request(engine, arn)
    assert request_violations("CreateModelPackage", request) == []
    (container,) = request["InferenceSpecification"]["Containers"]
    # The version names a frozen copy under registry/ (no job's role may write there), byte for
    # byte the job's model, with S3's SHA-256 of it and its version in the metadata.
    assert container["ModelDataUrl"] == output["registeredModelData"] == (
        f"s3://{engine.deployment.artifacts_bucket}/{contract.REGISTERED_MODELS_PREFIX}{group}/"
        f"{output['trainingJobName']}/model.tar.gz")
    frozen = engine.s3.path(container["ModelDataUrl"]).read_bytes()
    assert frozen == engine.s3.path(output["modelArtifacts"]).read_bytes()
    metadata = request["CustomerMetadataProperties"]
    assert metadata[contract.METADATA_MODEL_SHA256] == base64.b64encode(hashlib.sha256(frozen).digest()).decode()
    assert metadata[contract.METADATA_MODEL_VERSION]
    images = training_images(region="us-east-1", pytorch_version=settings.pytorch_version,
                             pytorch_py_version=settings.pytorch_py_version,
                             xgboost_version=settings.xgboost_version)
    if program == "digits_mlp":
        # The region's PyTorch inference image of the training's version, serving code/inference.py.
        assert container["Image"] == images.pytorch_inference_cpu
        assert container["Environment"]["SAGEMAKER_PROGRAM"] == "inference.py"
        assert container["Environment"]["SAGEMAKER_SUBMIT_DIRECTORY"] == "/opt/ml/model/code"
    elif program == "digits_xgboost":
        assert container["Image"] == images.xgboost
        assert container["Environment"] == {}
    else:  # BYOC: the project's image, which serves with `serve`
        assert container["Image"] in engine.deployment.byoc_programs
        assert container["Environment"] == {}
    assert request["ModelApprovalStatus"] == contract.PENDING_APPROVAL
    metadata = request["CustomerMetadataProperties"]
    assert metadata[contract.METADATA_EXECUTION] == result.name
    assert metadata[contract.METADATA_PROGRAM] == program
    assert metadata[contract.METADATA_TRAINING_JOB] == output["trainingJobName"]
    for name, value in TRAINED_INPUTS[program].get("hyperparameters", {}).items():
        assert metadata[f"{contract.METADATA_HYPERPARAMETER_PREFIX}{name}"] == value
    if program == "digits_mlp":  # trained at its defaults: they are recorded all the same
        assert metadata[f"{contract.METADATA_HYPERPARAMETER_PREFIX}epochs"] == "10"
    assert not any(key.startswith("hp:sagemaker_") for key in metadata)
    assert request["MetadataProperties"] == {"GeneratedBy": result.arn}

    # The model-quality report is in the artifacts bucket and holds the job's final metrics.
    statistics = request["ModelMetrics"]["ModelQuality"]["Statistics"]
    assert statistics["ContentType"] == "application/json"
    assert statistics["S3Uri"] == (f"s3://{engine.deployment.artifacts_bucket}/"
                                   f"{contract.QUALITY_REPORTS_PREFIX}{output['trainingJobName']}.json")
    report = json.loads(engine.local_path(statistics["S3Uri"]).read_text())
    assert report["training_job_final_metrics"] == {
        m["MetricName"]: {"value": m["Value"]} for m in output["metrics"]}
    assert report["smtrain"]["trainingJob"] == output["trainingJobName"]

    # Listed by `smtrain models list --local`, then approved with a reason.
    work_dir = str(engine.work_dir)
    capsys.readouterr()
    assert cli_main(["models", "list", "--local", "--work-dir", work_dir, "--program", program]) == 0
    listing = capsys.readouterr().out
    assert arn in listing and contract.PENDING_APPROVAL in listing
    # Beside the versions other runs of the session registered (newest first: tests/test_models_cli.py).
    assert arn in [version["ModelPackageArn"] for version in engine.registry.list_model_packages(group)]
    assert cli_main(["models", "approve", arn, "--reason", "accuracy checked", "--local",
                     "--work-dir", work_dir]) == 0
    approved = engine.registry.describe_model_package(arn)
    assert approved["ModelApprovalStatus"] == contract.APPROVED
    assert approved["ApprovalDescription"] == "accuracy checked"
    capsys.readouterr()
    assert cli_main(["models", "list", "--local", "--work-dir", work_dir, "--program", program,
                     "--status", contract.APPROVED]) == 0
    assert arn in capsys.readouterr().out


def test_a_model_below_the_gate_is_not_registered_and_the_output_says_why(
        engine: OfflineEngine) -> None:
    group = engine.deployment.model_groups[contract.output_id("digits_lightgbm")]
    before = engine.registry.list_model_packages(group)
    output = run(engine, quick("digits_lightgbm", register={"minimum": {"validation:accuracy": 0.9999},
                                                       "maximum": {"validation:loss": 0.0001}})).output
    assert output is not None
    assert output["registered"] is False
    accuracy = next(m["Value"] for m in output["metrics"] if m["MetricName"] == "validation:accuracy")
    loss = next(m["Value"] for m in output["metrics"] if m["MetricName"] == "validation:loss")
    # JSONata's $string writes a number as JSON does.
    assert output["registrationReason"] == (
        f"not registered: validation:accuracy {json.dumps(accuracy)} is below the minimum 0.9999; "
        f"validation:loss {json.dumps(loss)} is above the maximum 0.0001")
    assert "modelPackageArn" not in output
    assert engine.registry.list_model_packages(group) == before


def test_register_false_skips_the_registry(engine: OfflineEngine) -> None:
    group = engine.deployment.model_groups[contract.output_id("digits_lightgbm")]
    before = engine.registry.list_model_packages(group)
    output = run(engine, quick("digits_lightgbm", register=False)).output
    assert output is not None
    assert output["registered"] is False
    assert output["registrationReason"].startswith("not requested")
    assert engine.registry.list_model_packages(group) == before


def test_a_tuning_run_registers_its_best_job(engine: OfflineEngine, trained: TrainedRuns) -> None:
    assert TUNED_INPUTS["digits_lightgbm"]["register"] == {"description": "best of a sweep", "minimum": {}}
    output = trained.tuning["digits_lightgbm"].output
    assert output is not None
    assert output["registered"] is True
    assert output["registrationReason"] == \
        "registered without a quality gate (register has no minimum or maximum)"
    request = stored_request(engine, output["modelPackageArn"])
    assert request["ModelPackageDescription"] == "best of a sweep"
    best = engine.backend.describe_training_job(output["trainingJobName"])
    (container,) = request["InferenceSpecification"]["Containers"]
    assert engine.s3.path(container["ModelDataUrl"]).read_bytes() == \
        engine.s3.path(best["ModelArtifacts"]["S3ModelArtifacts"]).read_bytes()
    assert f"/{output['trainingJobName']}/model.tar.gz" in container["ModelDataUrl"]
    metadata = request["CustomerMetadataProperties"]
    assert metadata[contract.METADATA_TRAINING_JOB] == output["trainingJobName"]
    # The best job's tuned values, not the program's defaults.
    for name, value in output["tunedHyperparameters"].items():
        assert metadata[f"hp:{name}"] == value
    assert request_violations("CreateModelPackage", request) == []


# -- what a reviewer sees before approving (issue 19, item 9) ----------------------------------
class _Terminal(io.StringIO):
    """A person at a terminal, who types ``text``."""

    def isatty(self) -> bool:
        return True


def test_models_list_shows_each_versions_metrics_and_its_gate(trained: TrainedRuns) -> None:
    output = trained.training["digits_xgboost"].output
    assert output is not None
    arn, work_dir = output["modelPackageArn"], str(trained.engine.work_dir)
    final = {m["MetricName"]: m["Value"] for m in output["metrics"]}
    assert set(final) == {"train:merror", "validation:merror"}

    result = run_cli(["models", "list", "--local", "--work-dir", work_dir, "--program", "digits_xgboost"],
                     env=dict(os.environ), cwd=ROOT)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    (row,) = [i for i, line in enumerate(lines) if line.startswith(arn + " ")]
    details = list(itertools.takewhile(lambda line: line.startswith("    "), lines[row + 1:]))
    assert (f"    metrics: validation:merror {final['validation:merror']:.6g}, "
            f"train:merror {final['train:merror']:.6g}") in details, details
    assert (f"    quality gate: passed (validation:merror {final['validation:merror']:.6g} <= 0.1)"
            in details), details

    listed = run_cli(["models", "list", "--local", "--work-dir", work_dir, "--program", "digits_xgboost",
                      "--json"], env=dict(os.environ), cwd=ROOT)
    (version,) = [v for v in json.loads(listed.stdout) if v["arn"] == arn]
    assert version["metrics"] == final
    assert version["qualityGate"] == {"passed": True, "minimum": {}, "maximum": {"validation:merror": 0.1}}


def test_approving_without_a_reason_shows_the_metrics_then_asks(
        trained: TrainedRuns, monkeypatch: pytest.MonkeyPatch) -> None:
    output = trained.training["digits_xgboost"].output
    assert output is not None
    arn, work_dir = output["modelPackageArn"], str(trained.engine.work_dir)
    monkeypatch.setattr(sys, "stdin", _Terminal("merror checked on the holdout\n"))
    result = run_cli(["models", "approve", arn, "--local", "--work-dir", work_dir],
                     env=dict(os.environ), cwd=ROOT)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "validation:merror" in out, out
    assert (out.index("validation:merror") < out.index("quality gate: passed")
            < out.index("reason to approve it (one line; empty to cancel): "))
    assert out.rstrip().endswith(f"{arn}: Approved (was {contract.PENDING_APPROVAL})") or \
        out.rstrip().endswith(f"{arn}: Approved (was Approved)")
    approved = trained.engine.registry.describe_model_package(arn)
    assert (approved["ModelApprovalStatus"], approved["ApprovalDescription"]) == (
        contract.APPROVED, "merror checked on the holdout")
