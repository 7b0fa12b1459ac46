"""Script mode on every framework: each brought program's requests name its framework's image for
the region and carry what that framework's SDK estimator sends; a framework or version AWS has no
image for fails synth naming the field.

The requests come from the app synthesized with the brought programs (a session fixture shared
with tests/test_bring_your_own.py) run by the scripted SageMaker, so every request is judged by
botocore's model and the engine's rules and nothing trains.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from infra.images import framework_images
from infra.settings import Settings, SettingsError
from infra.stacks.workflow_stack import script_images
from smtrain.core import contract, programs
from smtrain.core.programs import ProgramError
from smtrain.local.engine import OfflineEngine
from tests.conftest import BROUGHT_FRAMEWORKS, ROOT
from tests.helpers import Synthesized
from tests.scripted_sagemaker import JobScript, ScriptedBackend, scripted_engine

FIXTURES = ROOT / "tests" / "fixtures" / "programs"


@pytest.fixture(scope="module")
def scripted(with_brought_programs: Synthesized, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[tuple[OfflineEngine, ScriptedBackend]]:
    backend = ScriptedBackend()
    with scripted_engine(outdir=with_brought_programs.outdir,
                         work_dir=tmp_path_factory.mktemp("frameworks"), backend=backend) as engine:
        yield engine, backend


def _requests(scripted: tuple[OfflineEngine, ScriptedBackend], execution_input: dict[str, Any],
              name: str, action: str) -> list[dict[str, Any]]:
    engine, backend = scripted
    backend.script = JobScript()
    backend.requests.clear()
    result = engine.run(execution_input, name=name, timeout=120)
    assert result.succeeded, (result.error, result.cause)
    return backend.created(action)


def _expected_images(settings: Settings, program_name: str) -> tuple[str | None, str | None, str]:
    program = programs.load(FIXTURES / program_name)
    images = script_images(settings, program)
    return images.training_cpu, images.training_gpu, images.inference


@pytest.mark.parametrize("framework", sorted(BROUGHT_FRAMEWORKS))
def test_each_frameworks_training_request_names_its_image_and_sagemaker_fields(
        scripted: tuple[OfflineEngine, ScriptedBackend], settings: Settings, framework: str) -> None:
    program = BROUGHT_FRAMEWORKS[framework]
    cpu, gpu, _ = _expected_images(settings, program)
    instance_type = "ml.m5.xlarge" if cpu is not None else "ml.g5.xlarge"
    (request,) = _requests(scripted, {"program": program, "instanceType": instance_type},
                           f"fw-{framework}", "create_training_job")
    image = request["AlgorithmSpecification"]["TrainingImage"]
    assert image == (cpu if cpu is not None else gpu)
    assert f".dkr.ecr.{settings.region}.amazonaws.com/" in image
    hyperparameters = request["HyperParameters"]
    assert hyperparameters["sagemaker_program"] == "train.py"
    # The default network (sealed): the code arrives as the code channel (public sends the S3
    # URI: tests/test_framework_matrix.py).
    assert hyperparameters["sagemaker_submit_directory"].startswith(f"{contract.CODE_CHANNEL_DIR}/")
    assert hyperparameters["sagemaker_region"] == settings.region
    assert hyperparameters["sagemaker_container_log_level"] == "20"
    # TensorFlow.hyperparameters adds model_dir; the stack sends the local model directory.
    assert ("model_dir" in hyperparameters) == (framework == "tensorflow")
    if framework == "tensorflow":
        assert hyperparameters["model_dir"] == "/opt/ml/model"


@pytest.mark.parametrize("framework", sorted(BROUGHT_FRAMEWORKS))
def test_each_framework_tunes_on_its_image(
        scripted: tuple[OfflineEngine, ScriptedBackend], settings: Settings, framework: str) -> None:
    program = BROUGHT_FRAMEWORKS[framework]
    cpu, gpu, _ = _expected_images(settings, program)
    execution_input: dict[str, Any] = {"program": program,
                                       "instanceType": "ml.g5.xlarge" if cpu is None else "ml.m5.xlarge",
                                       "tuning": {"strategy": "Random", "maxJobs": 2,
                                                  "maxParallelJobs": 1}}
    (request,) = _requests(scripted, execution_input, f"fw-tune-{framework}",
                           "create_hyper_parameter_tuning_job")
    definition = request["TrainingJobDefinition"]
    assert definition["AlgorithmSpecification"]["TrainingImage"] == (cpu or gpu)
    assert definition["StaticHyperParameters"]["sagemaker_program"] == "train.py"


def test_gpu_builds_follow_the_instance_type(
        scripted: tuple[OfflineEngine, ScriptedBackend], settings: Settings) -> None:
    _, gpu, _ = _expected_images(settings, "tensorflow_example")
    (request,) = _requests(scripted, {"program": "tensorflow_example", "instanceType": "ml.g5.xlarge"},
                           "fw-tensorflow-gpu", "create_training_job")
    assert request["AlgorithmSpecification"]["TrainingImage"] == gpu
    # XGBoost has one image for both.
    cpu, _, _ = _expected_images(settings, "xgboost_script_example")
    (request,) = _requests(scripted, {"program": "xgboost_script_example",
                                      "instanceType": "ml.g5.xlarge"},
                           "fw-xgboost-gpu", "create_training_job")
    assert request["AlgorithmSpecification"]["TrainingImage"] == cpu


@pytest.mark.parametrize(("execution_input", "cause"), [
    ({"instanceType": "ml.g5.xlarge"},
     "instanceType: program sklearn_example runs on sklearn, which trains on CPU instances only: "
     "choose one of ml.m5.large, ml.m5.xlarge, ml.m5.2xlarge, ml.c5.xlarge, ml.c5.2xlarge"),
    ({"instanceCount": 2},
     "field 'instanceCount' must be 1 for program sklearn_example: sklearn runs the script once "
     "on each instance, and its program.toml declares no [script] distribution (once the script "
     "coordinates its instances, declare one of: sm_hosts)"),
])
def test_sklearn_is_refused_where_its_estimator_refuses(
        scripted: tuple[OfflineEngine, ScriptedBackend], execution_input: dict[str, Any],
        cause: str) -> None:
    """The SDK's SKLearn refuses GPU instance types and more than one instance."""
    engine, backend = scripted
    backend.requests.clear()
    result = engine.run({"program": "sklearn_example", **execution_input},
                        name=f"fw-sklearn-refused-{len(cause)}", timeout=120)
    assert (result.status, result.error, result.cause) == (
        "FAILED", contract.INVALID_INPUT_ERROR, cause)
    assert not backend.requests


def test_a_gpu_only_framework_on_a_cpu_instance_is_refused_by_name(
        scripted: tuple[OfflineEngine, ScriptedBackend]) -> None:
    engine, backend = scripted
    backend.requests.clear()
    result = engine.run({"program": "huggingface_example", "instanceType": "ml.m5.xlarge"},
                        name="fw-hf-cpu", timeout=120)
    assert (result.status, result.error) == ("FAILED", contract.INVALID_INPUT_ERROR)
    assert result.cause == ("instanceType: program huggingface_example runs on huggingface, whose "
                            "training images are GPU builds only: choose one of ml.g5.xlarge, "
                            "ml.g5.2xlarge")
    assert not backend.requests


@pytest.mark.parametrize(("framework", "instance_type", "sent"), [
    ("pytorch", "ml.m5.xlarge", {"sagemaker_torch_distributed_enabled": "true"}),
    ("huggingface", "ml.g5.xlarge", {"sagemaker_torch_distributed_enabled": "true"}),
    ("tensorflow", "ml.m5.xlarge", {"sagemaker_multi_worker_mirrored_strategy_enabled": "true"}),
])
def test_more_than_one_instance_sends_the_programs_distribution(
        scripted: tuple[OfflineEngine, ScriptedBackend], framework: str, instance_type: str,
        sent: dict[str, str]) -> None:
    """PyTorch and Hugging Face distribute with torchrun by default; the TensorFlow example
    declares multi_worker_mirrored. One instance gets no distribution option."""
    options = {name for names in contract.DISTRIBUTION_HYPERPARAMETERS.values() for name in names}
    for count in (2, 1):
        (request,) = _requests(scripted, {"program": BROUGHT_FRAMEWORKS[framework],
                                          "instanceType": instance_type, "instanceCount": count},
                               f"fw-dist-{framework}-{count}", "create_training_job")
        given = {k: v for k, v in request["HyperParameters"].items() if k in options}
        assert given == (sent if count > 1 else {})
        assert request["ResourceConfig"]["InstanceCount"] == count


def test_a_framework_that_runs_one_copy_per_instance_needs_a_declared_distribution(
        scripted: tuple[OfflineEngine, ScriptedBackend]) -> None:
    """The XGBoost example coordinates no hosts (no [script] distribution): on two instances the
    run is refused before any request, naming the field and what to declare."""
    engine, backend = scripted
    backend.requests.clear()
    result = engine.run({"program": "xgboost_script_example", "instanceCount": 2},
                        name="fw-dist-xgboost", timeout=120)
    assert (result.status, result.error, result.cause) == (
        "FAILED", contract.INVALID_INPUT_ERROR,
        "field 'instanceCount' must be 1 for program xgboost_script_example: xgboost runs the "
        "script once on each instance, and its program.toml declares no [script] distribution "
        "(once the script coordinates its instances, declare one of: sm_hosts)")
    assert not backend.requests


def test_registered_models_name_the_frameworks_inference_image(
        with_brought_programs: Synthesized, settings: Settings) -> None:
    definition = with_brought_programs.definition()
    for program in ("sklearn_example", "tensorflow_example", "huggingface_example"):
        _, _, inference = _expected_images(settings, program)
        states = [state for name, state in definition["States"].items()
                  if name.startswith("Prepare") and program.replace("_", "").lower()
                  in name.lower()]
        assert states, program
        for state in states:
            assert state["Result"]["registry"]["image"] == inference, program


# -- Synth failures ------------------------------------------------------------------------------

def _copy(tmp_path: Path, name: str, edit: tuple[str, str]) -> Path:
    folder = tmp_path / name
    shutil.copytree(FIXTURES / name, folder)
    manifest = folder / programs.MANIFEST
    text = manifest.read_text()
    assert edit[0] in text
    manifest.write_text(text.replace(*edit))
    return folder


def test_an_unknown_framework_fails_naming_the_field(tmp_path: Path) -> None:
    folder = _copy(tmp_path, "sklearn_example", ('framework = "sklearn"', 'framework = "jax"'))
    with pytest.raises(ProgramError) as raised:
        programs.load(folder)
    message = str(raised.value)
    assert message.startswith(f"{folder}/program.toml: 'script.framework': 'jax' is not one of")
    assert "'sklearn'" in message and "'huggingface'" in message


@pytest.mark.parametrize(("name", "line", "field", "listed"), [
    ("sklearn_example", 'framework_version = "0.1-0"', "framework_version", "1.2-1"),
    ("tensorflow_example", 'framework_version = "2.19"\npy_version = "py38"', "py_version",
     "py312"),
    ("huggingface_example", 'base_framework_version = "pytorch0.1"', "base_framework_version",
     "pytorch2.3.0"),
])
def test_a_version_aws_has_no_image_for_fails_synth_naming_the_field(
        tmp_path: Path, settings: Settings, name: str, line: str, field: str, listed: str) -> None:
    framework = programs.load(FIXTURES / name).framework
    folder = _copy(tmp_path, name, (f'framework = "{framework}"\n',
                                    f'framework = "{framework}"\n{line}\n'))
    program = programs.load(folder)
    with pytest.raises(ProgramError) as raised:
        script_images(settings, program)
    (message,) = str(raised.value).splitlines()
    assert message.startswith(f"{folder}/program.toml: 'script.{field}': {framework} ")
    assert "has no SageMaker image" in message and listed in message


def test_a_base_framework_is_only_for_hugging_face(tmp_path: Path) -> None:
    folder = _copy(tmp_path, "sklearn_example", ('framework = "sklearn"\n',
                                                 'framework = "sklearn"\n'
                                                 'base_framework_version = "pytorch2.3.0"\n'))
    with pytest.raises(ProgramError, match=r"'script\.base_framework_version': only a huggingface"):
        programs.load(folder)


def test_a_bad_framework_setting_fails_naming_the_setting(settings: Settings) -> None:
    from dataclasses import replace

    program = programs.load(FIXTURES / "sklearn_example")
    with pytest.raises(SettingsError, match=r"^setting 'sklearnVersion' \(sklearn, for .*"
                                            r"Supported sklearn version\(s\): .*1\.2-1"):
        script_images(replace(settings, sklearn_version="0.1-0"), program)
    with pytest.raises(SettingsError, match="setting 'tensorflowPyVersion'"):
        replace(settings, tensorflow_py_version="python3")


def test_a_manifest_version_overrides_the_setting(settings: Settings, tmp_path: Path) -> None:
    folder = _copy(tmp_path, "sklearn_example", ('framework = "sklearn"\n',
                                                 'framework = "sklearn"\n'
                                                 'framework_version = "1.0-1"\n'))
    images = script_images(settings, programs.load(folder))
    assert images == framework_images(region=settings.region, framework="sklearn",
                                      version="1.0-1", py_version=None)
    assert images.training_cpu is not None and ":1.0-1-cpu-py3" in images.training_cpu


def test_a_missing_inference_image_fails_too(settings: Settings, tmp_path: Path) -> None:
    """scikit-learn 1.4-2 has a training image and no inference one (the SDK lists 1.4-2-py312
    there): a registered version would name no image, so synth refuses it, naming the field."""
    folder = _copy(tmp_path, "sklearn_example", ('framework = "sklearn"\n',
                                                 'framework = "sklearn"\n'
                                                 'framework_version = "1.4-2"\n'))
    with pytest.raises(ProgramError, match=r"'script\.framework_version': sklearn 1\.4-2 has no "
                                           r"SageMaker image: inference: .*1\.4-2-py312"):
        script_images(settings, programs.load(folder))


@pytest.mark.parametrize(("name", "instance_type", "message"), [
    ("sklearn_example", "ml.g5.xlarge", "'instance_type': ml.g5.xlarge has a GPU, and sklearn "
                                        "trains on CPU instances only"),
    ("huggingface_example", "ml.m5.xlarge", "'instance_type': ml.m5.xlarge has no GPU, and "
                                            "huggingface's training images are GPU builds only"),
])
def test_a_manifest_instance_type_the_framework_cannot_run_fails_synth(
        tmp_path: Path, settings: Settings, name: str, instance_type: str, message: str) -> None:
    program = programs.load(FIXTURES / name)
    edit = ((f'instance_type = "{program.instance_type}"\n', f'instance_type = "{instance_type}"\n')
            if program.instance_type else
            ('kind = "script"\n', f'kind = "script"\ninstance_type = "{instance_type}"\n'))
    folder = _copy(tmp_path, name, edit)
    with pytest.raises(ProgramError) as raised:
        script_images(settings, programs.load(folder))
    assert str(raised.value) == f"{folder}/program.toml: {message}"


@pytest.mark.parametrize(("name", "distribution", "allowed"), [
    ("sklearn_example", "torch_distributed", "sm_hosts"),
    ("xgboost_script_example", "parameter_server", "sm_hosts"),
    ("pytorch_example", "multi_worker_mirrored", "torch_distributed, sm_hosts"),
])
def test_a_distribution_the_framework_has_not_fails_naming_the_field(
        tmp_path: Path, name: str, distribution: str, allowed: str) -> None:
    framework = programs.load(FIXTURES / name).framework
    folder = _copy(tmp_path, name, ("[script]\n", f'[script]\ndistribution = "{distribution}"\n'))
    with pytest.raises(ProgramError) as raised:
        programs.load(folder)
    assert str(raised.value) == (f"{folder}/program.toml: 'script.distribution': "
                                 f"'{distribution}' is not a distribution of {framework}: one of "
                                 f"{allowed}")


def test_a_declared_distribution_lets_more_than_one_instance_run(tmp_path: Path) -> None:
    """The same rule the state machine runs (smtrain.core.input_rules), evaluated as the CLI
    does: undeclared, two instances are refused; with ``sm_hosts`` they pass, and one instance
    always does."""
    from smtrain.core import input_rules

    plain = programs.load(FIXTURES / "sklearn_example")
    folder = _copy(tmp_path, "sklearn_example", ('framework = "sklearn"\n',
                                                 'framework = "sklearn"\ndistribution = "sm_hosts"\n'))
    declared = programs.load(folder)
    assert (plain.distribution, declared.distribution) == (None, "sm_hosts")
    for program, count, refused in ((plain, 2, True), (plain, 1, False), (declared, 2, False)):
        checked = input_rules.check({program.name: program},
                                    {"program": program.name, "instanceCount": count})
        causes = [problem["cause"] for problem in checked.problems]
        assert any(cause.startswith("field 'instanceCount' must be 1") for cause in causes) == refused
    # PyTorch and Hugging Face distribute by default.
    assert programs.load(FIXTURES / "pytorch_example").distribution == "torch_distributed"
    assert programs.load(FIXTURES / "huggingface_example").distribution == "torch_distributed"


def test_multi_worker_mirrored_before_tensorflow_2_9_fails_synth(
        tmp_path: Path, settings: Settings) -> None:
    """The SDK refuses MultiWorkerMirroredStrategy below TensorFlow 2.9 (_validate_mwms_config):
    from the manifest's version, the field; from cdk.json's, the setting."""
    from dataclasses import replace

    folder = _copy(tmp_path, "tensorflow_example", ('framework = "tensorflow"\n',
                                                    'framework = "tensorflow"\n'
                                                    'framework_version = "2.8"\n'))
    with pytest.raises(ProgramError) as raised:
        script_images(settings, programs.load(folder))
    assert str(raised.value) == (f"{folder}/program.toml: 'script.distribution': "
                                 "multi_worker_mirrored needs TensorFlow 2.9 or later, and "
                                 "'script.framework_version' is 2.8")
    with pytest.raises(SettingsError, match=r"^setting 'tensorflowVersion' is 2\.8, and program "
                                            r"tensorflow_example .* declares distribution "
                                            r"multi_worker_mirrored, which needs TensorFlow 2\.9"):
        script_images(replace(settings, tensorflow_version="2.8"),
                      programs.load(FIXTURES / "tensorflow_example"))


@pytest.mark.parametrize(("name", "line", "distribution"), [
    ("pytorch_example", 'distribution = "sm_hosts"', "sm_hosts"),  # over PyTorch's default
    ("tensorflow_example", 'distribution = "parameter_server"', "parameter_server"),
    ("huggingface_example", 'base_framework_version = "tensorflow2.6.3"', None),
])
def test_a_declared_distribution_or_none(tmp_path: Path, name: str, line: str,
                                         distribution: str | None) -> None:
    """A declaration replaces the framework's default; a Hugging Face image on a TensorFlow base
    runs no PyTorch toolkit, so it has no default (and may declare sm_hosts only)."""
    text = (FIXTURES / name / programs.MANIFEST).read_text()
    text = re.sub(r'^distribution = .*\n', "", text, flags=re.MULTILINE)
    folder = tmp_path / name
    shutil.copytree(FIXTURES / name, folder)
    (folder / programs.MANIFEST).write_text(text.replace("[script]\n", f"[script]\n{line}\n"))
    program = programs.load(folder)
    assert program.distribution == distribution
    assert program.catalog_entry()["distribution"] == distribution
    if name == "huggingface_example":
        assert program.catalog_entry()["distributions"] == ["sm_hosts"]
        (folder / programs.MANIFEST).write_text(text.replace(
            "[script]\n", f'[script]\n{line}\ndistribution = "torch_distributed"\n'))
        with pytest.raises(ProgramError, match=r"'script\.distribution': 'torch_distributed' is not a "
                                               r"distribution of huggingface on tensorflow2\.6\.3: "
                                               r"one of sm_hosts$"):
            programs.load(folder)


def test_an_unknown_distribution_fails_the_schema(tmp_path: Path) -> None:
    folder = _copy(tmp_path, "sklearn_example", ("[script]\n", '[script]\ndistribution = "ring"\n'))
    with pytest.raises(ProgramError, match=r"'script\.distribution': 'ring' is not one of"):
        programs.load(folder)


def test_the_deployments_default_count_is_named_when_the_input_gives_none() -> None:
    from smtrain.core import input_rules

    program = programs.load(FIXTURES / "xgboost_script_example")
    checked = input_rules.check({program.name: program}, {"program": program.name},
                                deployment=input_rules.Deployment(defaults={"instanceCount": 3}))
    assert checked.problems[0]["cause"] == (
        "field 'instanceCount' must be 1 for program xgboost_script_example (the deployment's "
        "default is 3): xgboost runs the script once on each instance, and its program.toml "
        "declares no [script] distribution (once the script coordinates its instances, declare "
        "one of: sm_hosts)")


def test_a_tensorflow_based_hugging_face_setting_refuses_the_pytorch_default(settings: Settings) -> None:
    from dataclasses import replace

    program = programs.load(FIXTURES / "huggingface_example")
    assert program.distribution == "torch_distributed"  # the base comes from cdk.json
    with pytest.raises(SettingsError, match=r"^setting 'huggingfaceBaseVersion' is tensorflow2\.6\.3, "
                                            r"and program huggingface_example .* distributes with "
                                            r"torch_distributed, which a TensorFlow-based"):
        script_images(replace(settings, huggingface_base_version="tensorflow2.6.3"), program)
