"""``smtrain programs``, ``smtrain new-program`` and ``smtrain tuning-template``; the skeletons
``new-program`` writes train offline through the SageMaker contract (script mode through AWS's
own training toolkit, BYOC through ``train`` on a fake /opt/ml)."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

from smtrain.cli import EXIT_OK, EXIT_USAGE, main
from smtrain.cli.framework_skeletons import FRAMEWORK_SKELETONS
from smtrain.core import contract, programs
from smtrain.local.job_tree import JobTree, build_job_tree
from tests.conftest import ROOT

TOOLKIT_TRAIN = Path(sys.executable).parent / "train"  # sagemaker-training's entry point


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _write_csv(directory: Path, rows: int, seed: int) -> None:
    """Two separable classes, label in column 0, no header."""
    rng = random.Random(seed)
    directory.mkdir(parents=True)
    lines = []
    for _ in range(rows):
        label = rng.randrange(2)
        centre = 2.0 if label else -2.0
        lines.append(",".join([str(label), *(f"{rng.gauss(centre, 1.0):.4f}" for _ in range(4))]))
    (directory / "data.csv").write_text("\n".join(lines) + "\n")


@pytest.fixture
def channels(tmp_path: Path) -> dict[str, Path]:
    _write_csv(tmp_path / "data" / "train", 60, seed=1)
    _write_csv(tmp_path / "data" / "validation", 30, seed=2)
    return {name: tmp_path / "data" / name for name in ("train", "validation")}


#: The Hugging Face inference image's serving stack, over the training image's environment.
HUGGINGFACE_SERVING = ROOT / "tests" / "fixtures" / "serving" / "huggingface-inference-4.48.txt"


def _assert_served_by_the_huggingface_inference_image(program: programs.Program, tree: JobTree, tmp_path: Path,
                                                      training_environment: Path, *, reported: float) -> None:
    """The model, packed as the job packs ``/opt/ml/model`` and unpacked as SageMaker unpacks it
    for an endpoint, serves as AWS's Hugging Face inference image serves it: multi-model-server's
    own backend worker loads it through the image's toolkit (its handler service, which finds
    the skeleton's ``code/inference.py``), in the image's environment with the registered
    version's container variables, and answers every validation row with the class the
    training's last validation accuracy counted; a bad request gets a 400 and the reason."""
    import numpy as np

    from smtrain.local.program_envs import default_cache_dir, environment_for
    from tests.mms_frontend import MmsWorker

    archive, served = tmp_path / "model.tar.gz", tmp_path / "served-model"
    with tarfile.open(archive, "w:gz") as packing:
        for path in sorted(tree.model_dir.iterdir()):
            packing.add(path, arcname=path.name)
    with tarfile.open(archive) as unpacking:
        unpacking.extractall(served, filter="data")
    assert (served / "code" / "inference.py").read_bytes() == (program.directory / "inference.py").read_bytes()
    python = environment_for(HUGGINGFACE_SERVING, default_cache_dir(), base=training_environment)
    data = np.vstack([np.loadtxt(path, delimiter=",", ndmin=2)
                      for path in sorted((tree.base_dir / "input" / "data" / "validation").rglob("*.csv"))])
    features, labels = data[:, 1:], data[:, 0].astype(int)
    # What the registered version's container sets (infra/constructs/training_state_machine.py).
    environment = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"),
                   "SAGEMAKER_PROGRAM": program.serving.entry_point,
                   "SAGEMAKER_SUBMIT_DIRECTORY": contract.MODEL_CODE_DIR}
    with MmsWorker(python=python, model_dir=served, handler="sagemaker_huggingface_inference_toolkit.handler_service",
                   scratch=tmp_path / "mms", environment=environment) as worker:
        rows = "".join(",".join(repr(float(value)) for value in row) + "\n" for row in features).encode()
        answer = worker.predict(rows, content_type="text/csv", accept="application/json")
        assert (answer.status, answer.content_type) == (200, "application/json"), answer
        predictions = json.loads(answer.body)["predictions"]
        assert round(float((np.asarray(predictions) == labels).mean()), 6) == reported
        instances = json.dumps({"instances": features[:3].tolist()}).encode()
        answer = worker.predict(instances, content_type="application/json", accept="text/csv")
        assert (answer.status, answer.content_type, answer.body) == (
            200, "text/csv", "".join(f"{label}\n" for label in predictions[:3]).encode())
        answer = worker.predict(b"1,2,3\n", content_type="text/csv")
        assert (answer.status, answer.message) == (
            400, f"each row must have {features.shape[1]} features, got 3"), answer
        answer = worker.predict(b"\x89PNG", content_type="image/png")
        assert (answer.status, answer.message) == (
            400, "content type 'image/png' is not served: text/csv or application/json"), answer
    log = worker.output()
    assert "Inference script implementation found at `inference`" in log, log[-3000:]
    assert "`predict_fn` implementation found" in log


# --- programs -------------------------------------------------------------------------------


def test_programs_lists_the_shipped_programs(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, "programs")
    assert code == EXIT_OK and err == ""
    for header in ("digits_mlp (script: train.py)", "digits_lightgbm (byoc: train)",
                   "digits_xgboost (builtin: xgboost)"):
        assert header in out.splitlines()
    lines = [" ".join(line.split()) for line in out.splitlines()]
    assert "epochs int default 10 [1, 1000] tunable" in lines
    assert "learning-rate float default 0.01 [1e-06, 10] tunable" in lines
    assert "seed int default 42 fixed (sent on every job)" in lines
    assert "num_leaves int default 31 [2, 131072] tunable" in lines
    assert ("objective categorical default multi:softmax one of multi:softmax | multi:softprob | "
            "binary:logistic | reg:squarederror fixed (sent on every job)") in lines
    assert "train text/csv required File" in lines  # how SageMaker delivers it (input mode)
    assert "metrics: train:loss, validation:loss, validation:accuracy" in lines
    assert ("tuning: Minimize validation:merror; Bayesian, 4 jobs, 2 in parallel, "
            "early stopping Off") in lines
    assert "batch-size: 32 | 64 | 128" in lines
    assert "learning_rate: 0.02 .. 0.3 (Logarithmic scaling)" in lines


def test_programs_lists_the_good_ones_and_names_every_bad_manifest(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A team's folder with two broken manifests: the good program is listed, then one error
    line for each broken one (not the first alone), exit 2, as ``cdk synth`` refuses each."""
    import shutil

    fixtures = Path(__file__).parent / "fixtures" / "programs"
    shutil.copytree(fixtures / "sklearn_example", tmp_path / "sklearn_example")
    for name, change in (("broken_kind", ('kind = "script"', 'kind = "spark"')),
                         ("broken_channel", ('name = "train"', 'name = "tr ain"'))):
        shutil.copytree(fixtures / "sklearn_example", tmp_path / name)
        manifest = tmp_path / name / programs.MANIFEST
        text = manifest.read_text().replace('name = "sklearn_example"', f'name = "{name}"')
        assert change[0] in text
        manifest.write_text(text.replace(*change, 1))
    monkeypatch.setenv("SMTRAIN_TRAINING_CODE", str(tmp_path))
    code, out, err = _run(capsys, "programs")
    assert code == EXIT_USAGE
    assert "sklearn_example (script: train.py)" in out.splitlines()
    errors = err.splitlines()
    assert len(errors) == 2, err
    assert errors[0].startswith(f"smtrain: error: {tmp_path / 'broken_channel' / programs.MANIFEST}: ")
    assert errors[1].startswith(f"smtrain: error: {tmp_path / 'broken_kind' / programs.MANIFEST}: ")
    assert "'kind': 'spark' is not one of" in errors[1]


def test_programs_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "programs", "--json")
    assert code == EXIT_OK
    data: dict[str, Any] = json.loads(out)
    found = programs.discover()
    # The shipped programs, and any a team has added beside them.
    assert sorted(data) == sorted(found)
    assert {"digits_lightgbm", "digits_mlp", "digits_xgboost"} <= set(data)
    mlp = data["digits_mlp"]
    assert mlp["kind"] == "script" and mlp["entryPoint"] == "train.py"
    delivery = {"inputMode": "File", "s3DataDistributionType": "FullyReplicated", "compressionType": "None"}
    assert mlp["channels"] == [{"name": "train", "contentType": "text/csv", "required": True, **delivery},
                               {"name": "validation", "contentType": "text/csv", "required": True, **delivery}]
    assert mlp["hyperparameters"]["learning-rate"] == {
        "type": "float", "tunable": True, "default": "0.01", "min": 0.000001, "max": 10}
    assert mlp["hyperparameters"]["batch-size"]["description"] == "global batch size"
    assert programs.metric_definition("validation:accuracy") in mlp["metrics"]
    assert mlp["tuning"] == found["digits_mlp"].tuning.as_input()  # type: ignore[union-attr]
    context = json.loads((Path(__file__).parents[1] / "cdk.json").read_text())["context"]["training"]
    assert mlp["framework"] == {
        "name": "pytorch", "version": context["pytorchVersion"],
        "pyVersion": context["pytorchPyVersion"],
        "from": {"version": "cdk.json pytorchVersion", "pyVersion": "cdk.json pytorchPyVersion"}}
    assert data["digits_lightgbm"]["framework"] is None
    xgboost = data["digits_xgboost"]
    assert xgboost["framework"] is None
    assert {"Name": "validation:merror"} in xgboost["metrics"]
    assert xgboost["hyperparameters"]["num_class"] == {"type": "int", "tunable": False,
                                                       "default": "10", "min": 2}
    assert data["digits_lightgbm"]["hyperparameters"]["num_boost_round"]["default"] == "100"


# --- tuning-template ------------------------------------------------------------------------


def test_tuning_template(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, "tuning-template", "--program", "digits_mlp")
    assert code == EXIT_OK and err == ""
    tuning = programs.discover()["digits_mlp"].tuning
    assert tuning is not None
    assert json.loads(out) == tuning.as_input()


def test_tuning_template_unknown_program(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, "tuning-template", "--program", "nope")
    assert code == EXIT_USAGE and out == ""
    known = ", ".join(sorted(programs.discover()))
    assert {"digits_mlp", "digits_lightgbm", "digits_xgboost", *SHIPPED_SAMPLES.values()} <= set(known.split(", "))
    assert err == f"smtrain: error: unknown program 'nope'; known: {known}\n"


def test_tuning_template_without_tuning(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    training_code = tmp_path / "training_code"
    assert _run(capsys, "new-program", "plain", "--kind", "script", "--dir", str(training_code))[0] == 0
    manifest = training_code / "plain" / programs.MANIFEST
    manifest.write_text(manifest.read_text().split("[tuning]")[0])
    discover = programs.discover
    monkeypatch.setattr(programs, "discover", lambda: discover(training_code))
    code, out, err = _run(capsys, "tuning-template", "--program", "plain")
    assert code == EXIT_USAGE and out == ""
    assert len(err.splitlines()) == 1 and "has no [tuning] section" in err


# --- new-program ----------------------------------------------------------------------------


def _new(capsys: pytest.CaptureFixture[str], root: Path, name: str, kind: str,
         framework: str | None = None) -> programs.Program:
    code, out, err = _run(capsys, "new-program", name, "--kind", kind, "--dir", str(root / "training_code"),
                          *(("--framework", framework) if framework else ()))
    assert code == EXIT_OK, err
    assert "make synth" in out
    assert f"smtrain start --local --program {name}" in out
    assert (f"runs it in the {framework} image's environment, built on first use" in out) == (
        framework in contract.OFFLINE_IMAGE_ENVIRONMENTS)
    return programs.load(root / "training_code" / name)


@pytest.mark.parametrize("kind", ["script", "byoc"])
def test_new_program_writes_a_valid_program(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                            kind: str) -> None:
    program = _new(capsys, tmp_path, f"my-{kind}", kind)
    assert program.kind == kind
    assert [c.name for c in program.channels] == ["train", "validation"]
    assert {c.content_type for c in program.channels} == {"text/csv"}
    assert program.metric_names == ("train:loss", "validation:accuracy")
    assert program.training_defaults == {"epochs": "10", "learning-rate": "0.1"}
    assert program.hyperparameters["epochs"].type == "int"
    assert program.hyperparameters["learning-rate"].type == "float"
    assert program.tuning is not None and program.tuning.objective_metric == "validation:accuracy"
    assert program.requirements is not None
    assert all(line.startswith("#") for line in program.requirements.read_text().splitlines())
    assert (tmp_path / "tests" / "programs" / f"test_my_{kind}.py").is_file()
    assert programs.discover(tmp_path / "training_code").keys() == {program.name}
    if kind == "script":
        assert program.entry_point == "train.py"
        assert sorted(p.name for p in program.directory.iterdir()) == [
            "program.toml", "requirements.txt", "train.py"]
    else:
        entry = program.directory / "train"
        assert entry.read_text().startswith("#!/usr/bin/env python3\n")
        assert os.access(entry, os.X_OK)
        dockerfile = (program.directory / "Dockerfile").read_text()
        assert re.search(r"^FROM python:3\.\d+\.\d+-slim-\w+@sha256:[0-9a-f]{64}$", dockerfile, re.MULTILINE)
        assert "COPY train ." in dockerfile and 'PATH="/opt/program:${PATH}"' in dockerfile
        # SageMaker appends `train` (or `serve`) as the command: an ENTRYPOINT would swallow it.
        assert not re.search(r"^ENTRYPOINT", dockerfile, re.MULTILINE)


def _metrics(program: programs.Program, log: str) -> dict[str, list[float]]:
    """What SageMaker extracts from ``log`` with the manifest's metric definitions."""
    return {d["Name"]: [float(m) for m in re.findall(d["Regex"], log)] for d in program.metric_definitions}


def _assert_trained(program: programs.Program, result: subprocess.CompletedProcess[str], tree: JobTree,
                    epochs: int, python: Path | None = None) -> None:
    """The run succeeded, printed one metric line an epoch, reached 0.9 validation accuracy and
    saved a model the framework loads (with ``python``, the image environment's, for
    scikit-learn)."""
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert tree.failure_reason() is None
    metrics = _metrics(program, result.stdout)
    assert len(metrics["train:loss"]) == len(metrics["validation:accuracy"]) == epochs
    assert metrics["validation:accuracy"][-1] >= 0.9
    if program.framework == "sklearn":
        # The saved model loads as the image's scikit-learn loads it (1.2.1's pickle does not
        # load in the project's newer one) and predicts the validation channel.
        assert python is not None
        loaded = subprocess.run([str(python), "-c", (
            "import sys, joblib, numpy as np; from pathlib import Path; "
            "data = np.vstack([np.loadtxt(p, delimiter=',', ndmin=2) "
            "for p in sorted(Path(sys.argv[2]).rglob('*.csv'))]); "
            "print((joblib.load(sys.argv[1]).predict(data[:, 1:]) == data[:, 0]).mean())"),
            str(tree.model_dir / "model.joblib"), str(tree.base_dir / "input" / "data" / "validation")],
            capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": ""})
        assert float(loaded.stdout) >= 0.9
    elif program.framework == "xgboost":
        # The saved model loads as the framework loads it and predicts the validation channel.
        import numpy as np
        import xgboost

        data = np.vstack([np.loadtxt(path, delimiter=",", ndmin=2)
                          for path in sorted((tree.base_dir / "input" / "data" / "validation").rglob("*.csv"))])
        booster = xgboost.Booster(model_file=str(tree.model_dir / "xgboost-model.json"))
        predicted = booster.predict(xgboost.DMatrix(data[:, 1:])).argmax(axis=1)
        assert (predicted == data[:, 0]).mean() >= 0.9
    elif program.framework in ("tensorflow", "huggingface"):
        # What the framework's serving loads (the project has neither framework to load it with):
        # a SavedModel in 1/; what from_pretrained reads.
        assert program.framework is not None
        assert (tree.model_dir / FRAMEWORK_SKELETONS[program.framework].model_file).is_file()
        if program.framework == "huggingface":
            assert (tree.model_dir / "config.json").is_file()
    else:
        model = json.loads((tree.model_dir / "model.json").read_text())
        assert model["classes"] == [0, 1]


def _script_job_tree(program: programs.Program, tmp_path: Path, channels: dict[str, Path],
                     more: dict[str, str] | None = None) -> JobTree:
    """A job's tree for a script skeleton, 3 epochs at learning rate 0.2 (and ``more``
    hyperparameters), its code packed as the stack packs it (the folder's files at the root of
    sourcedir.tar.gz)."""
    bundle = tmp_path / "sourcedir.tar.gz"
    with tarfile.open(bundle, "w:gz") as tar:
        for path in sorted(program.directory.iterdir()):
            tar.add(path, arcname=path.name)
    return build_job_tree(tmp_path / "ml", channels=channels, hyperparameters={
        "epochs": "3", "learning-rate": "0.2", **(more or {}),
        "sagemaker_program": "train.py", "sagemaker_submit_directory": str(bundle)})


@pytest.mark.parametrize("framework", ["pytorch"])
def test_script_skeleton_trains_through_the_toolkit(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                    channels: dict[str, Path], framework: str) -> None:
    """The PyTorch skeleton (the standard-library one), as the toolkit runs it over the project's
    environment, as the offline engine does (the other frameworks': below, in their images'
    environments)."""
    program = _new(capsys, tmp_path, "my_script", "script", framework)
    assert program.framework == framework
    tree = _script_job_tree(program, tmp_path, channels)
    result = subprocess.run([str(TOOLKIT_TRAIN)], capture_output=True, text=True, timeout=300, check=False,
                            env={**os.environ, **tree.environment()})
    _assert_trained(program, result, tree, epochs=3)
    assert "Reporting training SUCCESS" in result.stdout + result.stderr


#: The shipped script program of each framework but PyTorch's (whose is digits_mlp).
SHIPPED_SAMPLES = {"sklearn": "digits_sklearn", "tensorflow": "digits_tensorflow",
                   "xgboost": "digits_xgboost_script", "huggingface": "digits_huggingface"}


@pytest.mark.parametrize("framework", SHIPPED_SAMPLES)
def test_each_shipped_framework_sample_is_the_skeleton_new_program_writes(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, framework: str) -> None:
    """Each framework sample of training_code/ (SHIPPED_SAMPLES) is, file for file, what
    ``smtrain new-program`` writes for that framework under that name: what trains below is what
    a user starts from."""
    shipped = programs.discover()[SHIPPED_SAMPLES[framework]]
    scaffold = _new(capsys, tmp_path, shipped.name, "script", framework)
    files = sorted(path.name for path in scaffold.directory.iterdir())
    assert files == sorted(path.name for path in shipped.directory.iterdir() if path.name != "__pycache__")
    for name in files:
        assert (shipped.directory / name).read_bytes() == (scaffold.directory / name).read_bytes(), name


@pytest.mark.parametrize(("framework", "version"), [("sklearn", "1.2-1"), ("tensorflow", "2.19"),
                                                    ("xgboost", "1.7-1"), ("huggingface", "4.48")])
def test_framework_skeleton_trains_through_its_image_s_toolkit(
        tmp_path: Path, channels: dict[str, Path], framework: str, version: str) -> None:
    """The scikit-learn, TensorFlow, XGBoost and Hugging Face skeletons as their images run them,
    as shipped (SHIPPED_SAMPLES, which are the skeletons: above): the image's
    toolkit (the generic one for scikit-learn, TensorFlow's, sagemaker-containers and
    the image's training module for XGBoost, the PyTorch image's for Hugging Face) in the image's
    environment (smtrain.local.framework_envs, built on first use and shared with the offline
    engine), started as the engine starts it, saving what the framework's serving loads:
    scikit-learn 1.2.1's, not the project's newer one, XGBoost 1.7.4's, and TensorFlow and
    transformers, which the project's environment does not have."""
    from smtrain.local import debian_python, framework_envs
    from smtrain.local.program_envs import default_cache_dir, job_environment

    refusal = contract.offline_python_refusal(framework, version, (sys.version_info[0], sys.version_info[1]))
    if refusal is not None:
        pytest.skip(f"the offline engine refuses it on this Python: {refusal}")
    build = framework_envs.BUILDS[(framework, version)]
    if build.python is not None and debian_python.unavailable_reason() is not None:
        pytest.skip(f"{debian_python.unavailable_reason()}")
    program = programs.discover()[SHIPPED_SAMPLES[framework]]
    assert program.framework == framework
    environment = framework_envs.framework_environment(framework, version, default_cache_dir(),
                                                       log=lambda line: None)
    module = build.training_module
    python = environment / "bin" / "python"
    # XGBoost's toolkit pip-installs the script as a module: into a venv of this job's own.
    run_python = job_environment(python, tmp_path / "module-env") if build.installs_module else python
    # TensorFlow's: the stack sends model_dir as the SDK's TensorFlow estimator does.
    tree = _script_job_tree(program, tmp_path, channels,
                            {"model_dir": "/opt/ml/model"} if framework == "tensorflow" else {})
    # The image's ENV as the offline engine sets it.
    result = subprocess.run(
        [str(run_python), "-c", f"from {build.train_entry} import main; main()"],
        capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, **tree.environment(), **build.image_environment(run_python)})
    _assert_trained(program, result, tree, epochs=3, python=python)
    if module is not None:
        assert f"Imported framework {module.split(':')[0]}" in result.stdout + result.stderr
    if framework == "xgboost":  # the image's module runs it as a module, after installing it
        assert f"{run_python} -m train --epochs 3 " in result.stdout + result.stderr
    if framework == "tensorflow":  # the toolkit passed it on, and the skeleton took it
        assert "--model_dir /opt/ml/model" in result.stdout + result.stderr
    if framework == "huggingface":
        assert program.instance_type == "ml.g5.xlarge"  # its images are GPU builds only
        config = json.loads((tree.model_dir / "config.json").read_text())
        assert config["architectures"] == ["ViTForImageClassification"]
        _assert_served_by_the_huggingface_inference_image(
            program, tree, tmp_path, environment,
            reported=_metrics(program, result.stdout)["validation:accuracy"][-1])
        assert len(config["feature_mean"]) == 4  # the standardization travels with the weights


def test_byoc_skeleton_trains_on_a_fake_opt_ml(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                               channels: dict[str, Path]) -> None:
    program = _new(capsys, tmp_path, "my_byoc", "byoc")
    tree = build_job_tree(tmp_path / "ml", channels=channels, hyperparameters={"epochs": "4"})
    result = subprocess.run([str(program.directory / "train")], capture_output=True, text=True, timeout=300,
                            check=False, env={**os.environ, "SAGEMAKER_BASE_DIR": str(tree.base_dir)})
    _assert_trained(program, result, tree, epochs=4)


def test_byoc_skeleton_reports_a_bad_channel(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                             channels: dict[str, Path]) -> None:
    program = _new(capsys, tmp_path, "my_byoc", "byoc")
    (channels["validation"] / "data.csv").write_text("label,x\n1,2\n")
    tree = build_job_tree(tmp_path / "ml", channels=channels, hyperparameters={})
    result = subprocess.run([str(program.directory / "train")], capture_output=True, text=True, timeout=300,
                            check=False, env={**os.environ, "SAGEMAKER_BASE_DIR": str(tree.base_dir)})
    assert result.returncode == 1
    reason = ("TrainingError: channel 'validation': data.csv line 1 is not numeric CSV "
              "(label first, no header)")
    assert tree.failure_reason() == reason
    assert reason in result.stderr
    assert not (tree.model_dir / "model.json").exists()


def test_generated_tests_pass(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    _new(capsys, tmp_path, "gen_script", "script")
    _new(capsys, tmp_path, "gen-byoc", "byoc")
    _new(capsys, tmp_path, "gen_sklearn", "script", "sklearn")
    # TensorFlow is not in the project's environment: its skeleton's test says so and skips.
    _new(capsys, tmp_path, "gen_tensorflow", "script", "tensorflow")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "--rootdir", str(tmp_path),
         "tests/programs"], cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    import importlib.util

    if importlib.util.find_spec("tensorflow") is None:
        assert "6 passed, 1 skipped" in result.stdout
        assert "could not import 'tensorflow'" in result.stdout
    else:
        assert "8 passed" in result.stdout


@pytest.mark.parametrize("framework", ["sklearn", "xgboost"])
def test_framework_skeletons_refuse_a_bad_hyperparameter_with_a_reason(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        channels: dict[str, Path], framework: str) -> None:
    """The skeleton's ``main`` in this process, as its ``__main__`` block runs it (``sys.exit(main(
    argv))``) in a job's environment: exit status 1 and the reason in the failure file."""
    import importlib.util

    program = _new(capsys, tmp_path, f"my_{framework}", "script", framework)
    tree = build_job_tree(tmp_path / "ml", channels=channels, hyperparameters={})
    monkeypatch.setenv("SAGEMAKER_BASE_DIR", str(tree.base_dir))  # read as the script loads
    for name, path in channels.items():
        monkeypatch.setenv(f"SM_CHANNEL_{name.upper()}", str(path))
    spec = importlib.util.spec_from_file_location(f"skeleton_{framework}_train", program.directory / "train.py")
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.main(["--learning-rate", "0"]) == 1
    assert tree.failure_reason() == "TrainingError: hyperparameter 'learning-rate' must be in (0, 10], got 0.0"
    # A label that is not a class number is refused by name, not truncated.
    (channels["train"] / "data.csv").write_text("1.5,0.1,0.2,0.3\n0,0.2,0.1,0.0\n")
    assert script.main([]) == 1
    assert tree.failure_reason() == ("TrainingError: channel 'train': the labels (column 0) must be "
                                     "class numbers 0, 1, 2, ...")


@pytest.mark.parametrize(("argv", "message"), [
    (("--kind", "byoc", "--framework", "sklearn"), "--framework is for --kind script"),
])
def test_new_program_refuses_a_framework_for_a_byoc_program(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: tuple[str, ...], message: str) -> None:
    code, out, err = _run(capsys, "new-program", "mine", *argv, "--dir", str(tmp_path / "tc"))
    assert code == EXIT_USAGE and out == ""
    assert len(err.splitlines()) == 1 and message in err
    assert not (tmp_path / "tc").exists()


@pytest.mark.parametrize("framework", ["sklearn", "xgboost", "tensorflow"])
def test_a_framework_skeleton_names_its_framework_and_how_to_distribute(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, framework: str) -> None:
    program = _new(capsys, tmp_path, f"my_{framework}", "script", framework)
    assert (program.framework, program.distribution) == (framework, None)
    manifest = (program.directory / programs.MANIFEST).read_text()
    assert f'# distribution = "{contract.DISTRIBUTIONS[framework][0]}"' in manifest
    # The same hyperparameters, metrics and tuning as every skeleton, read from argparse options.
    assert program.training_defaults == {"epochs": "10", "learning-rate": "0.1"}
    assert program.metric_names == ("train:loss", "validation:accuracy")


@pytest.mark.parametrize("name", ["Bad", "1st", "has space", "a" * 33, "x/y"])
def test_new_program_refuses_a_bad_name(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                        name: str) -> None:
    code, out, err = _run(capsys, "new-program", name, "--kind", "script", "--dir", str(tmp_path / "tc"))
    assert code == EXIT_USAGE and out == ""
    assert len(err.splitlines()) == 1 and f"program name {name!r} must match" in err
    assert not any(tmp_path.iterdir())


def test_new_program_refuses_an_existing_folder(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "training_code" / "taken").mkdir(parents=True)
    code, out, err = _run(capsys, "new-program", "taken", "--kind", "byoc", "--dir", str(tmp_path / "training_code"))
    assert code == EXIT_USAGE and out == ""
    assert len(err.splitlines()) == 1 and "taken already exists" in err
    assert not any((tmp_path / "training_code" / "taken").iterdir())
    assert not (tmp_path / "tests").exists()


def test_programs_show_each_framework_and_its_version(tmp_path: Path) -> None:
    """The manifest's version where it names one, else the framework's cdk.json setting."""
    from smtrain.cli.program_commands import describe, framework_data, program_data

    fixtures = Path(__file__).parent / "fixtures" / "programs"
    defaults = {"sklearnVersion": "1.2-1", "huggingfaceVersion": "4.48.0",
                "huggingfacePyVersion": "py311", "huggingfaceBaseVersion": "pytorch2.3.0"}
    sklearn = programs.load(fixtures / "sklearn_example")
    assert framework_data(sklearn, defaults) == {
        "name": "sklearn", "version": "1.2-1", "from": {"version": "cdk.json sklearnVersion"}}
    hugging = framework_data(programs.load(fixtures / "huggingface_example"), defaults)
    assert hugging is not None and hugging["baseFrameworkVersion"] == "pytorch2.3.0"
    own = tmp_path / "sklearn_example"
    own.mkdir()
    for source in (fixtures / "sklearn_example").iterdir():
        (own / source.name).write_bytes(source.read_bytes())
    manifest = own / programs.MANIFEST
    manifest.write_text(manifest.read_text().replace(
        'framework = "sklearn"\n', 'framework = "sklearn"\nframework_version = "1.0-1"\n'))
    assert framework_data(programs.load(own), defaults) == {
        "name": "sklearn", "version": "1.0-1", "from": {"version": "program.toml"}}
    assert "  framework: sklearn 1.2-1 from cdk.json" in describe(sklearn).splitlines()
    # How a run on more than one instance goes: refused without a declared distribution.
    assert ("  on more than one instance: refused (no [script] distribution declared)"
            in describe(sklearn).splitlines())
    assert ("  on more than one instance: multi_worker_mirrored" in
            describe(programs.load(fixtures / "tensorflow_example")).splitlines())
    assert program_data(sklearn)["distribution"] is None
    # Where each runs offline: the image's environment for the versions built here, else refused.
    assert ("  offline: in the sklearn 1.2-1 image's environment (built on first use)"
            in describe(sklearn).splitlines())
    assert program_data(programs.load(own))["offline"] == (
        "refused for this version (the sklearn image's environment is built for 1.2-1)")
    assert ("  offline: in the huggingface 4.48 image's environment (built on first use)" in
            describe(programs.load(fixtures / "huggingface_example")).splitlines())
    assert ("  offline: AWS's training toolkit, over the project's environment (the PyTorch image's "
            "toolkit on more than one instance)" in describe(programs.load(fixtures / "pytorch_example")).splitlines())
    # The version from the app's default, and a Python the image's pins have no wheels for.
    assert contract.offline_run("sklearn", None, (3, 11)) == (
        "in the sklearn image's environment for 1.2-1; other versions refused")
    assert contract.offline_run("sklearn", "1.2-1", (3, 12)) == (
        "refused on this Python (its image's pinned packages have wheels up to Python 3.11, "
        "and this is Python 3.12)")
    assert contract.offline_run("tensorflow", "2.19.0", (3, 12)) == (
        "in the tensorflow 2.19 image's environment (built on first use)")
    assert contract.offline_run("huggingface", "4.36.0", (3, 11)) == (
        "refused for this version (the huggingface image's environment is built for 4.48)")
    for framework, version in (("huggingface", "4.48.0"), ("tensorflow", "2.19")):
        assert contract.offline_run(framework, version, (3, 13)) == (
            "refused on this Python (its image's pinned packages have wheels up to Python 3.12, "
            "and this is Python 3.13)")


def test_every_framework_runs_offline_in_one_known_way() -> None:
    """Each script framework runs offline over the project's environment or in its image's own,
    never neither: a framework added to the contract without either fails here, not silently in
    the wrong environment."""
    assert set(contract.FRAMEWORKS) == (set(contract.OFFLINE_FRAMEWORKS)
                                        | set(contract.OFFLINE_IMAGE_ENVIRONMENTS))
    assert not set(contract.OFFLINE_FRAMEWORKS) & set(contract.OFFLINE_IMAGE_ENVIRONMENTS)


@pytest.mark.parametrize(("version", "key"), [
    ("1.2-1", "1.2-1"), ("1.2-1-cpu-py3", "1.2-1"), ("2.19", "2.19"), ("2.19.0", "2.19"),
    ("2.19-cpu-py312", "2.19"), ("2.19.0-gpu-py312-cu125-ubuntu22.04", "2.19"), ("4.48.0", "4.48"),
    ("2.3.0-transformers4.48.0-gpu-py311-cu121-ubuntu20.04", "4.48")])
def test_one_rule_spells_the_offline_version_of_a_manifest_and_of_an_image_tag(version: str, key: str) -> None:
    """`smtrain programs` and the offline engine read a version through the same core rule."""
    from smtrain.local.framework_envs import image_version

    assert contract.offline_image_version(version) == key
    assert image_version(f"763104351884.dkr.ecr.us-east-1.amazonaws.com/x:{version}") == key
