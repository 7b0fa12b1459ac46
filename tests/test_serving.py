"""Deployable means it serves: each shipped program's trained model, packed and unpacked as
SageMaker does, answers prediction requests the way its inference image serves it, with the
accuracy its training reported.

- script mode (``digits_mlp``): the job's ``model.tar.gz`` carries ``code/inference.py``; a
  TorchServe-shaped worker loads it through the PyTorch inference toolkit's own handler service
  (``tests/fixtures/serving/torchserve_worker.py``), and without the toolkit by calling the
  handler's four functions in the toolkit's order;
- BYOC (``digits_lightgbm``): the image's ``serve`` program, started as SageMaker starts it, over
  real HTTP on ``/ping`` and ``/invocations``.

The Hugging Face skeleton's model (``digits_huggingface``) is served where it is trained, in
``tests/test_program_commands.py`` (multi-model-server's own backend worker and the Hugging Face
inference toolkit, ``tests/mms_frontend.py``): training it again here would cost a second
transformers job.
"""

from __future__ import annotations

import functools
import http.client
import importlib
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from tests.conftest import ROOT, TrainedRuns
from tests.training_support import TRAINING_CODE

WORKER = ROOT / "tests" / "fixtures" / "serving" / "torchserve_worker.py"
DOCKERFILE = TRAINING_CODE / "digits_lightgbm" / "Dockerfile"
#: The PyTorch inference image's toolkit (PyPI ``sagemaker-pytorch-inference``, which ships the
#: ``sagemaker_inference`` package it runs on).
TOOLKIT = "sagemaker_pytorch_serving_container"
NUM_FEATURES = 64
START_TIMEOUT = 90  # seconds for ``serve`` to load the model and open its port (a busy machine)


@dataclass(frozen=True)
class Trained:
    """A trained model as an endpoint receives it, and what its training reported."""

    archive: Path  # model.tar.gz, packed as SageMaker packs /opt/ml/model
    served: Path  # the archive unpacked, as SageMaker unpacks it into /opt/ml/model
    validation_accuracy: float  # the final validation:accuracy the job reported
    features: np.ndarray  # the validation rows, without their labels
    labels: np.ndarray


def _accuracy(trained: Trained, predictions: list[int]) -> float:
    assert len(predictions) == len(trained.labels)
    return float((np.asarray(predictions) == trained.labels).mean())


def _csv(features: np.ndarray) -> str:
    return "".join(",".join(f"{value:g}" for value in row) + "\n" for row in features)


def _json(features: np.ndarray) -> str:
    return json.dumps({"instances": features.tolist()})


# ---------------------------------------------------------------------------------------------
# Script mode: digits_mlp's model.tar.gz through the PyTorch inference toolkit.


@pytest.fixture(scope="module")
def mlp(trained: TrainedRuns, sample_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """The session's digits_mlp run (tests/conftest.py): its model.tar.gz as the offline engine
    packed /opt/ml/model, unpacked as SageMaker unpacks it for an endpoint, and the final
    validation accuracy the job reported."""
    return _shared_run(trained, "digits_mlp", sample_data, tmp_path_factory)


def _shared_run(trained: TrainedRuns, program: str, sample_data: Path,
                tmp_path_factory: pytest.TempPathFactory) -> Trained:
    result = trained.training[program]
    archive = trained.engine.local_path(result.output["modelArtifacts"])
    served = tmp_path_factory.mktemp(program.replace("_", "-")) / "served-model"
    served.mkdir()
    with tarfile.open(archive, "r:gz") as packed:
        packed.extractall(served, filter="data")
    (accuracy,) = [m["Value"] for m in result.output["metrics"] if m["MetricName"] == "validation:accuracy"]
    rows = np.loadtxt(sample_data / program / "validation" / "digits.csv", delimiter=",", ndmin=2)
    return Trained(archive, served, float(accuracy), rows[:, 1:], rows[:, 0].astype(int))


def test_script_model_archive_carries_its_handler(mlp: Trained) -> None:
    """What the PyTorch inference image needs, at the archive's root: the weights, and the
    handler with the modules it imports under ``code/``; no ``code/requirements.txt`` (the
    toolkit would pip-install it at every start)."""
    with tarfile.open(mlp.archive, "r:gz") as archive:
        files = sorted(member.name for member in archive.getmembers() if member.isfile())
    assert files == ["code/common/__init__.py", "code/common/prediction_requests.py",
                     "code/digits_model.py", "code/inference.py", "model.pth", "model_config.json"]
    for name in ("inference.py", "digits_model.py"):
        assert (mlp.served / "code" / name).read_bytes() == (TRAINING_CODE / "digits_mlp" / name).read_bytes()
    assert ((mlp.served / "code" / "common" / "prediction_requests.py").read_bytes()
            == (TRAINING_CODE / "common" / "prediction_requests.py").read_bytes())


def _serve_with_worker(mode: str, model_dir: Path, requests: list[dict[str, Any]]) -> dict[str, Any]:
    """The worker on the unpacked model, with ``PYTHONPATH`` = its ``code/`` only (as the
    toolkit sets it for TorchServe), from a directory that holds no project code."""
    if mode == "toolkit" and importlib.util.find_spec(TOOLKIT) is None:
        pytest.skip("the PyTorch inference toolkit is not installed (sagemaker-pytorch-inference)")
    env = {key: value for key, value in os.environ.items()
           if key not in ("PYTHONPATH", "SAGEMAKER_PROGRAM", "SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT")}
    env["PYTHONPATH"] = str(model_dir / "code")
    result = subprocess.run([sys.executable, str(WORKER), mode, str(model_dir)], input=json.dumps(requests),
                            capture_output=True, text=True, timeout=120, env=env, cwd=model_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    served: dict[str, Any] = json.loads(result.stdout)
    # The handler and everything it imports came from the archive.
    for name, file in served["modules"].items():
        assert file is not None and Path(file).is_relative_to(model_dir / "code"), (name, file)
    return served


@pytest.mark.parametrize("mode", ["toolkit", "direct"])
def test_script_handler_serves_the_training_accuracy(mlp: Trained, mode: str) -> None:
    requests: list[dict[str, Any]] = [
        {"body": _csv(mlp.features), "content_type": "text/csv", "accept": None},
        {"body": _json(mlp.features), "content_type": "application/json", "accept": "application/json"},
        {"body": _csv(mlp.features), "content_type": "text/csv; charset=utf-8", "accept": "text/csv"},
    ]
    csv_json, json_json, csv_csv = _serve_with_worker(mode, mlp.served, requests)["responses"]
    for response, content_type in ((csv_json, "application/json"), (json_json, "application/json"),
                                   (csv_csv, "text/csv")):
        assert (response["status"], response["content_type"]) == (200, content_type), response["body"][:2000]
    predictions = json.loads(csv_json["body"])["predictions"]
    assert json.loads(json_json["body"])["predictions"] == predictions
    assert [int(line) for line in csv_csv["body"].splitlines()] == predictions
    assert _accuracy(mlp, predictions) == pytest.approx(mlp.validation_accuracy, abs=1e-6)


#: (request, status, what the message says): bad input, each answered with a 4xx and a reason.
_ROW = ",".join(["0"] * NUM_FEATURES)
BAD_REQUESTS: list[tuple[dict[str, Any], int, str]] = [
    ({"body": _ROW, "content_type": "text/plain"}, 415,
     "Content-Type 'text/plain' is not supported; send text/csv or application/json"),
    ({"body": ",".join(["0"] * 63), "content_type": "text/csv"}, 400,
     "63 values; the model takes 64 features per row (no label column)"),
    ({"body": "3," + _ROW, "content_type": "text/csv"}, 400, "65 values; the model takes 64 features"),
    ({"body": "0,0,abc" + ",0" * 61, "content_type": "text/csv"}, 400, "line 1, column 3: 'abc' is not a number"),
    ({"body": "nan" + ",0" * 63, "content_type": "text/csv"}, 400, "line 1, column 1: nan is not a finite number"),
    ({"body": "", "content_type": "text/csv"}, 400, "the request holds no rows"),
    ({"body": "{not json", "content_type": "application/json"}, 400, "the body is not valid JSON"),
    ({"body": '{"rows": []}', "content_type": "application/json"}, 400, 'a list of rows under "instances"'),
    ({"body": json.dumps({"instances": [["1"] * NUM_FEATURES]}), "content_type": "application/json"}, 400,
     'instance 1, value 1: "1" is not a number'),
    # Bytes that are not UTF-8, under a content type with parameters (which the toolkit leaves
    # undecoded): a 400, not a 500.
    ({"body": "", "body_hex": "ff fe 31 2c 32", "content_type": "text/csv; charset=utf-8"}, 400,
     "the body is not UTF-8 text"),
    ({"body": _ROW, "content_type": "text/csv", "accept": "image/png"}, 406,
     "Accept 'image/png' names no type this model answers in; ask for text/csv or application/json"),
]


@pytest.mark.parametrize("mode", ["toolkit", "direct"])
def test_script_handler_answers_bad_input_with_4xx(mlp: Trained, mode: str) -> None:
    requests: list[dict[str, Any]] = [{"accept": None, **request} for request, _status, _message in BAD_REQUESTS]
    responses = _serve_with_worker(mode, mlp.served, requests)["responses"]
    for (request, status, message), response in zip(BAD_REQUESTS, responses, strict=True):
        assert response["status"] == status, (request, response["body"][:2000])
        assert message in response["body"], (request, response["body"][:2000])


# ---------------------------------------------------------------------------------------------
# BYOC: digits_lightgbm's `serve`, over HTTP.


@pytest.fixture(scope="module")
def lgbm(trained: TrainedRuns, sample_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """The session's digits_lightgbm run (tests/conftest.py), unpacked as for an endpoint."""
    return _shared_run(trained, "digits_lightgbm", sample_data, tmp_path_factory)


@dataclass
class Serving:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    def request(self, method: str, path: str, body: str | bytes | None = None,
                headers: Mapping[str, str] | None = None) -> tuple[int, dict[str, str], str]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            connection.request(method, path, body=body, headers=dict(headers or {}))
            response = connection.getresponse()
            return response.status, dict(response.getheaders()), response.read().decode("utf-8")
        finally:
            connection.close()


@functools.cache
def _image_python() -> Path:
    """The Python of the BYOC image's packages, as offline training jobs run: what its
    Dockerfile installs over a Python with no other package (it is built on the official python
    image), the environment the training jobs of the shared runs used."""
    from smtrain.local.image_recipe import read_recipe
    from smtrain.local.program_envs import byoc_environment, default_cache_dir

    recipe = read_recipe(TRAINING_CODE / "digits_lightgbm" / "Dockerfile", TRAINING_CODE)
    assert recipe.python_only and recipe.requirements
    with tempfile.TemporaryDirectory() as scratch:
        python, bare = byoc_environment(recipe.requirements, default_cache_dir(), Path(scratch),
                                        python_only=recipe.python_only)
    assert bare is not None
    return python


def _start_serve(model_dir: Path, log: Path, **env: str) -> Serving:
    """``serve`` as the image runs it (its packages only, the program's folder and ``common``
    importable), on a port of the system's choosing; returns once it says where it listens."""
    environ = {**os.environ, "PYTHONPATH": str(TRAINING_CODE), "SM_MODEL_DIR": str(model_dir),
               "SAGEMAKER_BIND_TO_PORT": "0", **env}
    with log.open("wb") as output:
        process = subprocess.Popen([str(_image_python()), str(TRAINING_CODE / "digits_lightgbm" / "serve")],
                                   stdout=output, stderr=subprocess.STDOUT, env=environ, cwd=log.parent)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        found = re.search(r"^serving .* on http://[^:]+:(\d+)$", log.read_text(), flags=re.MULTILINE)
        if found:
            return Serving(process, int(found.group(1)), log)
        if process.poll() is not None:
            break
        time.sleep(0.1)
    process.kill()
    process.wait()
    raise AssertionError(f"serve did not start:\n{log.read_text()}")


def _stop(serving: Serving) -> int:
    serving.process.send_signal(signal.SIGTERM)
    return serving.process.wait(timeout=30)


@pytest.fixture(scope="module")
def serving(lgbm: Trained, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serving]:
    started = _start_serve(lgbm.served, tmp_path_factory.mktemp("serve") / "serve.log")
    yield started
    if started.process.poll() is None:
        _stop(started)


def test_byoc_ping_says_healthy(serving: Serving) -> None:
    assert serving.request("GET", "/ping")[::2] == (200, "")


def test_byoc_invocations_serve_the_training_accuracy(serving: Serving, lgbm: Trained) -> None:
    status, headers, body = serving.request("POST", "/invocations", _csv(lgbm.features), {"Content-Type": "text/csv"})
    assert (status, headers["Content-Type"]) == (200, "application/json"), body
    predictions = json.loads(body)["predictions"]
    assert _accuracy(lgbm, predictions) == pytest.approx(lgbm.validation_accuracy, abs=1e-6)

    status, headers, body = serving.request("POST", "/invocations", _json(lgbm.features),
                                            {"Content-Type": "application/json", "Accept": "text/csv"})
    assert (status, headers["Content-Type"]) == (200, "text/csv"), body
    assert [int(line) for line in body.splitlines()] == predictions


def test_byoc_serves_concurrent_requests_alike(serving: Serving, lgbm: Trained) -> None:
    rows = _csv(lgbm.features[:50])

    def predict(_: int) -> tuple[int, str]:
        status, _headers, body = serving.request("POST", "/invocations", rows, {"Content-Type": "text/csv"})
        return status, body

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(predict, range(16)))
    assert {status for status, _ in answers} == {200}
    assert len({body for _, body in answers}) == 1


@pytest.mark.parametrize(("request_", "status", "message"), BAD_REQUESTS,
                         ids=[f"{status}-{i}" for i, (_, status, _) in enumerate(BAD_REQUESTS)])
def test_byoc_answers_bad_input_with_4xx(serving: Serving, request_: dict[str, Any], status: int,
                                         message: str) -> None:
    headers = {"Content-Type": request_["content_type"]}
    if request_.get("accept"):
        headers["Accept"] = request_["accept"]
    payload = bytes.fromhex(request_["body_hex"]) if "body_hex" in request_ else request_["body"]
    code, response_headers, body = serving.request("POST", "/invocations", payload, headers)
    assert code == status, body
    assert message in body
    assert response_headers["Content-Type"].startswith("text/plain")
    assert serving.request("GET", "/ping")[0] == 200, "still serving"


@pytest.mark.parametrize(("method", "path", "status", "message"), [
    ("GET", "/invocations", 405, "use POST for /invocations"),
    ("POST", "/ping", 405, "use GET for /ping"),
    ("PUT", "/invocations", 405, "only GET /ping and POST /invocations"),
    ("GET", "/predict", 404, "no /predict here: GET /ping, POST /invocations"),
])
def test_byoc_answers_other_routes_with_4xx(serving: Serving, method: str, path: str, status: int,
                                            message: str) -> None:
    code, _headers, body = serving.request(method, path, b"" if method in ("POST", "PUT") else None)
    assert (code, body.strip()) == (status, message)


def test_byoc_request_without_content_type(serving: Serving) -> None:
    code, _headers, body = serving.request("POST", "/invocations", _ROW)
    assert (code, body.strip()) == (415, "Content-Type none is not supported; send text/csv or application/json")


def test_byoc_stops_cleanly_on_sigterm(lgbm: Trained, tmp_path: Path) -> None:
    started = _start_serve(lgbm.served, tmp_path / "serve.log")
    assert started.request("GET", "/ping")[0] == 200
    assert _stop(started) == 0
    log = started.log.read_text()
    assert "SIGTERM: stopping" in log and log.rstrip().endswith("stopped"), log
    with pytest.raises(ConnectionRefusedError):
        started.request("GET", "/ping")


def test_byoc_without_a_model_does_not_start(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    log = tmp_path / "serve.log"
    with pytest.raises(AssertionError, match="serve did not start"):
        _start_serve(tmp_path / "empty", log)
    assert f"serve: cannot start: FileNotFoundError: no model.txt in the model directory {tmp_path / 'empty'}" \
        in log.read_text()


def _server_module() -> ModuleType:
    """``byoc_training.server`` imported as the image runs it (its folder and ``common``'s parent
    on the path)."""
    for directory in (TRAINING_CODE, TRAINING_CODE / "digits_lightgbm"):
        if str(directory) not in sys.path:
            sys.path.insert(0, str(directory))
    return importlib.import_module("byoc_training.server")


def test_byoc_port_and_model_directory_come_from_the_environment() -> None:
    server = _server_module()
    assert server.bind_port({}) == 8080
    assert server.bind_port({"SAGEMAKER_BIND_TO_PORT": "9000"}) == 9000
    with pytest.raises(ValueError, match="SAGEMAKER_BIND_TO_PORT must be a port number, got 'http'"):
        server.bind_port({"SAGEMAKER_BIND_TO_PORT": "http"})
    assert server.model_dir({}) == Path("/opt/ml/model")
    assert server.model_dir({"SAGEMAKER_BASE_DIR": "/tmp/ml"}) == Path("/tmp/ml/model")
    assert server.model_dir({"SAGEMAKER_BASE_DIR": "/tmp/ml", "SM_MODEL_DIR": "/m"}) == Path("/m")


def test_byoc_image_runs_train_and_serve() -> None:
    """SageMaker runs ``docker run <image> train`` and ``docker run <image> serve``: with no
    ENTRYPOINT the argument is the command, so both programs are executables on PATH."""
    dockerfile = DOCKERFILE.read_text()
    assert not re.search(r"^ENTRYPOINT", dockerfile, flags=re.MULTILINE)
    assert re.search(r'PATH="/opt/program:\$\{PATH\}"', dockerfile)
    assert re.search(r"^WORKDIR /opt/program$", dockerfile, flags=re.MULTILINE)
    copies = re.findall(r"^COPY (\S+) (\S+)$", dockerfile, flags=re.MULTILINE)
    assert ("digits_lightgbm/train", ".") in copies and ("digits_lightgbm/serve", ".") in copies
    assert re.search(r"^EXPOSE 8080$", dockerfile, flags=re.MULTILINE)
    for program in ("train", "serve"):
        path = TRAINING_CODE / "digits_lightgbm" / program
        assert path.stat().st_mode & 0o111, f"{program} must be executable"
        assert path.read_text().startswith("#!/usr/bin/env python3\n")
