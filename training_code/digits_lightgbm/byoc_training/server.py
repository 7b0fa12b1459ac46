"""``serve``: SageMaker's inference contract for the BYOC image (``docker run <image> serve``).

What SageMaker hosting expects of the container (developer guide, "Custom Inference Code with
Hosting Services"): the model archive unpacked in ``/opt/ml/model``; a web server on port 8080
answering ``GET /ping`` (200 when ready; SageMaker's check times out after 2 seconds) and
``POST /invocations``; ``SIGTERM`` to stop (``SIGKILL`` follows 30 seconds later).

Here: the model (``model.txt``, what ``train`` writes) is loaded before the port opens, so a
``/ping`` that answers means the model serves; a model that does not load stops the program with
the reason on stderr and exit status 1. ``SM_MODEL_DIR`` overrides the model directory (else
``$SAGEMAKER_BASE_DIR/model``, as for training), ``SAGEMAKER_BIND_TO_PORT`` the port (``0``: any
free port; the program prints the one it listens on). Request and response formats:
``common/prediction_requests.py``. Bad input gets its 4xx status and a plain-text message, never a
5xx; ``SIGTERM`` or ``SIGINT`` closes the port, lets requests in flight finish and exits 0.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import traceback
from collections.abc import Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType

import lightgbm as lgb
import numpy as np

from byoc_training.contract import TrainingEnvironment
from byoc_training.trainer import MODEL_FILE, load_model
from common.prediction_requests import RequestError, decode_features, encode_predictions, response_type

DEFAULT_PORT = 8080
#: SageMaker's own payload limit for real-time endpoints is 6 MB (25 MB for batch transform).
MAX_BODY_BYTES = 100 * 1024 * 1024


def model_dir(environ: Mapping[str, str]) -> Path:
    """``SM_MODEL_DIR``, else ``<SAGEMAKER_BASE_DIR or /opt/ml>/model``."""
    if environ.get("SM_MODEL_DIR"):
        return Path(environ["SM_MODEL_DIR"])
    return TrainingEnvironment.from_environment(dict(environ)).model_dir


def bind_port(environ: Mapping[str, str]) -> int:
    """``SAGEMAKER_BIND_TO_PORT`` (as AWS's inference toolkit reads it), else 8080."""
    text = environ.get("SAGEMAKER_BIND_TO_PORT", "").strip()
    if not text:
        return DEFAULT_PORT
    if not text.isdigit() or int(text) > 65535:
        raise ValueError(f"SAGEMAKER_BIND_TO_PORT must be a port number, got {text!r}")
    return int(text)


class Predictor:
    """The booster and what a request needs to know about it. LightGBM's predict is guarded by
    a lock: the server answers requests on several threads."""

    def __init__(self, booster: lgb.Booster) -> None:
        self.booster = booster
        self.num_features = int(booster.num_feature())
        self._lock = threading.Lock()

    def labels(self, rows: np.ndarray) -> list[int]:
        with self._lock:
            scores = np.asarray(self.booster.predict(rows))
        if scores.ndim == 2:  # multiclass: one probability per class
            return [int(label) for label in scores.argmax(axis=1)]
        return [int(score > 0.5) for score in scores]  # binary: the positive class's probability


def load_predictor(directory: Path) -> Predictor:
    if not (directory / MODEL_FILE).is_file():
        raise FileNotFoundError(f"no {MODEL_FILE} in the model directory {directory}")
    return Predictor(load_model(directory))


class InferenceHandler(BaseHTTPRequestHandler):
    """``GET /ping`` and ``POST /invocations``; anything else is a 404 or a 405."""

    server_version = "digits-lightgbm"
    timeout = 60  # seconds a connection may sit idle; SageMaker gives a request 60 seconds
    predictor: Predictor  # set on the subclass :func:`make_server` builds

    def do_GET(self) -> None:  # the names http.server dispatches to
        if self.path == "/ping":
            self._send(HTTPStatus.OK, b"", "text/plain")
        elif self.path == "/invocations":
            self._error(HTTPStatus.METHOD_NOT_ALLOWED, "use POST for /invocations")
        else:
            self._error(HTTPStatus.NOT_FOUND, f"no {self.path} here: GET /ping, POST /invocations")

    def do_POST(self) -> None:
        if self.path != "/invocations":
            if self.path == "/ping":
                self._error(HTTPStatus.METHOD_NOT_ALLOWED, "use GET for /ping")
            else:
                self._error(HTTPStatus.NOT_FOUND, f"no {self.path} here: GET /ping, POST /invocations")
            return
        try:
            body = self._read_body()
            accept = self.headers.get("Accept")
            response_type(accept)  # an unanswerable Accept fails before the work
            rows = decode_features(body, self.headers.get("Content-Type"),
                                   num_features=self.predictor.num_features)
            payload, content_type = encode_predictions(self.predictor.labels(rows), accept)
        except RequestError as error:
            self._error(HTTPStatus(error.status), error.message)
            return
        except Exception as error:  # a fault of the server, not of the request
            traceback.print_exc()
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, f"prediction failed: {type(error).__name__}")
            return
        self._send(HTTPStatus.OK, payload.encode("utf-8"), content_type)

    def _method_not_allowed(self) -> None:
        self._error(HTTPStatus.METHOD_NOT_ALLOWED, "only GET /ping and POST /invocations")

    do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _method_not_allowed

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            raise RequestError(411, "send the body with a Content-Length, not chunked")
        length_header = self.headers.get("Content-Length")
        if length_header is None:
            raise RequestError(411, "a Content-Length header is required")
        if not length_header.strip().isdigit():
            raise RequestError(400, f"Content-Length {length_header!r} is not a number of bytes")
        length = int(length_header)
        if length > MAX_BODY_BYTES:
            raise RequestError(413, f"the body has {length} bytes; at most {MAX_BODY_BYTES} are read")
        return self.rfile.read(length)

    def _error(self, status: HTTPStatus, message: str) -> None:
        self._send(status, f"{message}\n".encode(), "text/plain; charset=utf-8")

    def _send(self, status: HTTPStatus, payload: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)


class InferenceServer(ThreadingHTTPServer):
    # Request threads are joined on close, so a SIGTERM lets requests in flight finish; each
    # connection serves one request (HTTP/1.0), so no idle connection holds a thread.
    daemon_threads = False
    block_on_close = True


def make_server(predictor: Predictor, port: int, host: str = "0.0.0.0") -> InferenceServer:
    handler = type("BoundInferenceHandler", (InferenceHandler,), {"predictor": predictor})
    return InferenceServer((host, port), handler)


def serve(server: InferenceServer) -> None:
    """Serve until SIGTERM or SIGINT, then close the port and finish the requests in flight."""

    def stop(signum: int, _frame: FrameType | None) -> None:
        print(f"{signal.Signals(signum).name}: stopping", flush=True)
        # shutdown() waits for serve_forever() to return: call it from another thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.serve_forever()
    finally:
        server.server_close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main() -> int:
    environ = dict(os.environ)
    try:
        port = bind_port(environ)
        directory = model_dir(environ)
        predictor = load_predictor(directory)
        server = make_server(predictor, port)
    except Exception as error:  # the endpoint never becomes healthy: say why in the log
        print(f"serve: cannot start: {type(error).__name__}: {error}", file=sys.stderr, flush=True)
        return 1
    host, bound = server.server_address[:2]
    print(f"serving {directory / MODEL_FILE} ({predictor.num_features} features) "
          f"on http://{host!s}:{bound}", flush=True)
    serve(server)
    print("stopped", flush=True)
    return 0
