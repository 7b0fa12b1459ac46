"""The built-in algorithm catalogue (issue 18, item 5): any algorithm the SageMaker SDK's image
look-up knows, its image for the region, its metric names, and its refusal offline.

One synth: the shipped programs plus a linear-learner program, whose state machine runs on moto's
interpreter with SageMaker answering from a script (tests/scripted_sagemaker.py)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from infra.images import (
    BUILTIN_KEY,
    CACHE_PATH,
    NoBuiltinImage,
    builtin_image,
    builtin_image_from_sdk,
    endpoints_read_once,
)
from infra.settings import Settings
from smtrain.core import builtin_algorithms, programs
from smtrain.core.programs import ProgramError
from smtrain.local.local_backend import Images, LocalBackend
from smtrain.local.s3_stand_in import LocalS3
from smtrain.local.sagemaker_model import request_violations
from smtrain.local.sagemaker_rules import rule_violations
from tests.conftest import shipped_training_code, synthesize
from tests.scripted_sagemaker import JobScript, ScriptedBackend, scripted_engine

PROGRAM = "tabular_linear"
#: What the SDK answers for linear-learner version 1 in us-east-1 (the cdk.json defaultRegion).
LINEAR_LEARNER_US_EAST_1 = "382416733822.dkr.ecr.us-east-1.amazonaws.com/linear-learner:1"

LINEAR_MANIFEST = f'''
name = "{PROGRAM}"
kind = "builtin"
description = "SageMaker's linear learner, multiclass, on CSV and RecordIO-protobuf"

[builtin]
algorithm = "linear-learner"

[[channels]]
name = "train"
content_type = "application/x-recordio-protobuf"

[[channels]]
name = "validation"
content_type = "text/csv"

[[metrics]]
name = "validation:multiclass_accuracy"

[[metrics]]
name = "validation:objective_loss"

[hyperparameters.predictor_type]
type = "categorical"
values = ["binary_classifier", "multiclass_classifier", "regressor"]
default = "multiclass_classifier"
tunable = false

[hyperparameters.num_classes]
type = "int"
default = 10
min = 3
tunable = false

[hyperparameters.feature_dim]
type = "int"
default = 64
min = 1
tunable = false

[hyperparameters.epochs]
type = "int"
default = 15
min = 1
tunable = false

[hyperparameters.learning_rate]
type = "float"
min = 0.000001
max = 1

[tuning]
objective = "validation:multiclass_accuracy"
type = "Maximize"

[tuning.ranges.learning_rate]
min = 0.0001
max = 0.1
scaling = "Logarithmic"

[serving]
content_types = ["text/csv", "application/x-recordio-protobuf"]
response_types = ["application/json"]
'''


def write_program(folder: Path, manifest: str) -> Path:
    directory = folder / PROGRAM
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "program.toml").write_text(manifest)
    return directory


# -- the catalogue, against the SDK ---------------------------------------------------------------

def test_the_catalogue_is_what_the_sdks_image_look_up_knows() -> None:
    """Every first-party algorithm file of the SDK (one version, "1"), and XGBoost's, each with the
    repository the catalogue says (sagemaker/core/image_uri_config/<name>.json)."""
    from sagemaker.core import image_uris

    folder = Path(image_uris.__file__).with_name("image_uri_config")
    single_version = set()
    for path in folder.glob("*.json"):
        config = json.loads(path.read_text())
        if isinstance(config, dict) and set(config.get("versions", {})) == {"1"}:
            single_version.add(path.stem)
    assert set(builtin_algorithms.ALGORITHMS) == single_version | {"xgboost"}
    for name in builtin_algorithms.ALGORITHMS:
        config = image_uris.config_for_framework(name)
        versions = config.get("training", config)["versions"]
        repositories = {v.get("repository") for v in versions.values()}
        if name == "xgboost":  # its first-party version "1" has a repository of its own
            repositories -= {"xgboost"}
        assert repositories == {builtin_algorithms.REPOSITORIES[name]}, name


def test_the_cached_built_in_images_are_the_sdks_for_every_region() -> None:
    table = json.loads(CACHE_PATH.read_text())[BUILTIN_KEY]
    assert set(table) == {f"{name}:1" for name in builtin_algorithms.DEFAULT_VERSIONS}
    logging.disable(logging.WARNING)  # the SDK warns on every look-up of a 1P algorithm
    try:
        with endpoints_read_once():
            for key, regions in table.items():
                algorithm, version = key.split(":")
                assert len(regions) >= 10, key
                for region, uri in regions.items():
                    assert uri == builtin_image_from_sdk(region=region, algorithm=algorithm,
                                                         version=version), (key, region)
    finally:
        logging.disable(logging.NOTSET)


def test_an_algorithm_missing_in_a_region_or_a_version_names_why() -> None:
    assert builtin_image(region="us-east-1", algorithm="linear-learner", version="1") == \
        LINEAR_LEARNER_US_EAST_1
    with pytest.raises(NoBuiltinImage, match=r"no lda image \(version 1\) in af-south-1") as error:
        builtin_image(region="af-south-1", algorithm="lda", version="1")
    assert error.value.field == "algorithm"
    # Another XGBoost version than the setting's is asked of the SDK (not in the table).
    assert builtin_image(region="eu-west-1", algorithm="xgboost", version="1.5-1") == \
        "141502667606.dkr.ecr.eu-west-1.amazonaws.com/sagemaker-xgboost:1.5-1"
    with pytest.raises(NoBuiltinImage, match="knows no version '2' of kmeans: 1") as error:
        builtin_image(region="us-east-1", algorithm="kmeans", version="2")
    assert error.value.field == "version"


# -- manifests ---------------------------------------------------------------------------------

def test_a_linear_learner_manifest_loads(tmp_path: Path) -> None:
    program = programs.load(write_program(tmp_path, LINEAR_MANIFEST))
    assert (program.kind, program.algorithm, program.algorithm_version) == (
        "builtin", "linear-learner", None)
    assert [c.content_type for c in program.channels] == ["application/x-recordio-protobuf",
                                                           "text/csv"]
    assert program.metric_definitions == (), "SageMaker refuses them for built-in algorithms"
    from smtrain.cli.program_commands import describe, program_data

    assert describe(program).splitlines()[0] == \
        f"{PROGRAM} (builtin: linear-learner, runs only on SageMaker)"
    assert (program_data(program)["algorithm"], program_data(program)["algorithmVersion"]) == (
        "linear-learner", None)


def test_an_unknown_algorithm_is_one_line_naming_the_file_the_field_and_the_catalogue(
        tmp_path: Path) -> None:
    directory = write_program(tmp_path, LINEAR_MANIFEST.replace('"linear-learner"', '"linear"'))
    with pytest.raises(ProgramError) as error:
        programs.load(directory)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"{directory / 'program.toml'}: 'builtin.algorithm': no SageMaker "
                              "built-in algorithm 'linear'")
    assert "blazingtext, factorization-machines, forecasting-deepar," in message
    assert "linear-learner" in message and message.endswith("seq2seq, xgboost")


def test_a_tuning_objective_the_algorithm_does_not_compute_fails(tmp_path: Path) -> None:
    manifest = LINEAR_MANIFEST.replace('[[metrics]]\nname = "validation:objective_loss"',
                                       '[[metrics]]\nname = "validation:accuracy"')
    manifest = manifest.replace('objective = "validation:multiclass_accuracy"',
                                'objective = "validation:accuracy"')
    with pytest.raises(ProgramError, match=r"'tuning.objective': 'validation:accuracy' is not a "
                                           r"metric linear-learner computes for tuning: "
                                           r"test:absolute_loss, .*linear-learner-tuning"):
        programs.load(write_program(tmp_path, manifest))


def test_an_algorithm_without_a_metric_table_takes_any_objective(tmp_path: Path) -> None:
    manifest = (LINEAR_MANIFEST.replace('"linear-learner"', '"factorization-machines"')
                .replace("validation:multiclass_accuracy", "test:rmse"))
    program = programs.load(write_program(tmp_path, manifest))
    assert program.tuning is not None and program.tuning.objective_metric == "test:rmse"


# -- synthesized, run through the state machine ------------------------------------------------

@pytest.fixture(scope="module")
def linear_app(cdk_context: dict[str, Any], settings: Settings,
               tmp_path_factory: pytest.TempPathFactory) -> Any:
    code = shipped_training_code(tmp_path_factory.mktemp("builtin-training-code"))
    write_program(code, LINEAR_MANIFEST)
    return synthesize(cdk_context, settings, tmp_path_factory.mktemp("cdk.out-builtin"),
                      training_code_dir=code)


@pytest.fixture(scope="module")
def scripted(linear_app: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    backend = ScriptedBackend()
    with scripted_engine(outdir=linear_app.outdir, work_dir=tmp_path_factory.mktemp("scripted"),
                         backend=backend) as engine:
        yield engine, backend


def test_a_linear_learner_run_names_the_regions_image_and_passes_botocore(
        scripted: Any, settings: Settings) -> None:
    engine, backend = scripted
    backend.requests.clear()
    backend.script = JobScript()
    result = engine.run({"program": PROGRAM}, name="linear-1", timeout=120)
    assert result.succeeded, result.cause
    (request,) = backend.created("create_training_job")
    assert settings.region == "us-east-1"
    algorithm = request["AlgorithmSpecification"]
    assert algorithm["TrainingImage"] == LINEAR_LEARNER_US_EAST_1
    assert "MetricDefinitions" not in algorithm
    assert request["HyperParameters"] == {"predictor_type": "multiclass_classifier",
                                          "num_classes": "10", "feature_dim": "64", "epochs": "15"}
    assert [(c["ChannelName"], c["ContentType"]) for c in request["InputDataConfig"]] == [
        ("train", "application/x-recordio-protobuf"), ("validation", "text/csv")]
    assert request_violations("CreateTrainingJob", request) == []
    assert rule_violations("CreateTrainingJob", request) == []
    # The API reference's prose rule, for every built-in: no MetricDefinitions.
    defined = {**request, "AlgorithmSpecification": {
        **algorithm, "MetricDefinitions": [{"Name": "loss", "Regex": "loss=([0-9.]+)"}]}}
    assert rule_violations("CreateTrainingJob", defined) == [
        f"MetricDefinitions are not allowed for built-in algorithm image {LINEAR_LEARNER_US_EAST_1}: "
        "it publishes its own metrics"]


def test_a_linear_learner_tuning_job_passes_botocore(scripted: Any) -> None:
    engine, backend = scripted
    backend.requests.clear()
    backend.script = JobScript()
    result = engine.run({"program": PROGRAM, "tuning": {}}, name="linear-tuning-1", timeout=120)
    assert result.succeeded, result.cause
    (request,) = backend.created("create_hyper_parameter_tuning_job")
    definition = request["TrainingJobDefinition"]
    assert definition["AlgorithmSpecification"] == {"TrainingImage": LINEAR_LEARNER_US_EAST_1,
                                                    "TrainingInputMode": "File"}
    assert request["HyperParameterTuningJobConfig"]["HyperParameterTuningJobObjective"] == {
        "MetricName": "validation:multiclass_accuracy", "Type": "Maximize"}
    assert request_violations("CreateHyperParameterTuningJob", request) == []
    assert rule_violations("CreateHyperParameterTuningJob", request) == []


def test_an_algorithm_the_region_lacks_fails_synth_naming_the_file_and_field(
        cdk_context: dict[str, Any], settings: Settings, tmp_path: Path) -> None:
    """lda has no image in af-south-1 (the SDK's lda.json); the synth stops before any stack is
    built past the images, naming what the region has."""
    import dataclasses

    code = shipped_training_code(tmp_path / "code")
    directory = write_program(code, LINEAR_MANIFEST.replace('"linear-learner"', '"lda"')
                              .replace("validation:multiclass_accuracy", "test:pwll"))
    with pytest.raises(ProgramError) as error:
        synthesize(cdk_context, dataclasses.replace(settings, region="af-south-1"),
                   tmp_path / "out", training_code_dir=code)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"{directory / 'program.toml'}: 'builtin.algorithm': SageMaker has "
                              "no lda image (version 1) in af-south-1")
    assert "built-in algorithms with an image in af-south-1: blazingtext," in message
    assert "lda," not in message.split("af-south-1: ")[-1]


# -- offline ---------------------------------------------------------------------------------

def test_offline_a_built_in_other_than_xgboost_fails_with_one_line(tmp_path: Path) -> None:
    backend = LocalBackend(s3=LocalS3(tmp_path / "s3"), work_dir=tmp_path / "work",
                           images=Images(byoc={}), env_cache=tmp_path / "envs")
    request = {
        "TrainingJobName": "linear-offline",
        "AlgorithmSpecification": {"TrainingImage": LINEAR_LEARNER_US_EAST_1,
                                   "TrainingInputMode": "File"},
        "RoleArn": "arn:aws:iam::123456789012:role/local",
        "HyperParameters": {"predictor_type": "regressor"},
        "InputDataConfig": [{"ChannelName": "train", "DataSource": {"S3DataSource": {
            "S3DataType": "S3Prefix", "S3Uri": "s3://nowhere/train/"}}}],
        "OutputDataConfig": {"S3OutputPath": "s3://local-artifacts/models/"},
        "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 1},
        "StoppingCondition": {"MaxRuntimeInSeconds": 120},
    }
    job = backend.register(request)
    backend.execute(job)
    reason = job.describe()["FailureReason"]
    assert job.status == "Failed"
    assert reason == ("ClientError: the SageMaker built-in algorithm linear-learner runs only on "
                      "SageMaker: AWS ships no local copy of its image, and the offline engine "
                      "never fakes one; run it on AWS (smtrain start without --local), or train "
                      "offline with a script-mode program")
    assert not (tmp_path / "work" / "jobs" / "linear-offline" / "input-cache").exists(), \
        "refused before its channels are downloaded"


def test_smtrain_start_local_refuses_it_before_anything_starts(linear_app: Any, tmp_path: Path) -> None:
    """One line, exit 2; no work folder is made (nothing ran, nothing was copied)."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SMTRAIN_"))}
    env["SMTRAIN_TRAINING_CODE"] = str(linear_app.training_code)
    result = subprocess.run(
        [str(Path(sys.executable).parent / "smtrain"), "start", "--local", "--program", PROGRAM,
         "--cdk-out", str(linear_app.outdir), "--work-dir", str(tmp_path / "work")],
        capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    (line,) = result.stderr.splitlines()
    assert line == (f"smtrain: error: program {PROGRAM}: "
                    f"{builtin_algorithms.offline_refusal('linear-learner')}")
    assert not (tmp_path / "work").exists()
