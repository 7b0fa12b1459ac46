"""multi-model-server's frontend, reduced to what a test needs from it.

AWS's Hugging Face inference image serves with multi-model-server (MMS): a Java frontend takes
the HTTP requests and hands them to MMS's Python backend worker (``mms.model_service_worker``)
over a socket, which loads the model through the handler the toolkit names
(``sagemaker_huggingface_inference_toolkit.handler_service``) and runs each request through MMS's
``Service.predict``. Here the backend is MMS's own, started in the image's environment as the
frontend starts it; this module stands in for the frontend: it sends the load and predict
messages and reads the answers in MMS's wire format (multi-model-server 1.1.11,
``mms/protocol/otf_message_handler.py``: what ``retrieve_msg`` reads, ``create_load_model_
response`` and ``create_predict_response`` write), and reads the worker's stdout and stderr
from the two FIFOs the worker writes them to after loading (``_create_io_files``, ``_remap_io``).

An ``/invocations`` request reaches the worker as one batch entry: its headers, and its body as
the parameter ``body`` with the request's content type. The image's configuration has
``decode_input_request=false`` (sagemaker-inference's ``etc/default-mms.properties``, which the
toolkit's ``mms_model_server`` writes for MMS), which the frontend passes to the worker as
``MMS_DECODE_INPUT_REQUEST``: the body arrives as bytes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

_LOAD, _PREDICT = b"L", b"I"
#: The worker writes its stdout and stderr to ``<tmp dir>/<this>-stdout`` and ``-stderr``.
_IO_NAME = "model-io"
_START_TIMEOUT = 120.0  # seconds for the worker to listen (it imports torch and transformers)
_ANSWER_TIMEOUT = 120.0  # seconds for any one answer (loading the model, a prediction)


@dataclass(frozen=True)
class Answer:
    """One request's answer as the frontend would send it."""

    status: int
    content_type: str | None
    body: bytes
    #: The worker's message for the whole batch ("Prediction success", or the error's message).
    message: str


def _int(value: int) -> bytes:
    return struct.pack("!i", value)


def _text(value: bytes) -> bytes:
    return _int(len(value)) + value


class _Reader:
    def __init__(self, connection: socket.socket) -> None:
        self._connection = connection

    def exactly(self, length: int) -> bytes:
        data = b""
        while len(data) < length:
            chunk = self._connection.recv(length - len(data))
            if not chunk:
                raise ConnectionError("the MMS worker closed the connection")
            data += chunk
        return data

    def number(self) -> int:
        return int(struct.unpack("!i", self.exactly(4))[0])

    def field(self) -> bytes:
        return self.exactly(self.number())


class MmsWorker:
    """MMS's backend worker for one model (``model_dir``, unpacked as SageMaker unpacks
    ``model.tar.gz``), run by ``python``, loaded with ``handler``; a context manager."""

    def __init__(self, *, python: Path, model_dir: Path, handler: str, scratch: Path,
                 environment: Mapping[str, str]) -> None:
        self._python, self._model_dir, self._handler = python, model_dir, handler
        self._scratch, self._environment = scratch, dict(environment)
        self._process: subprocess.Popen[bytes] | None = None
        self._connection: socket.socket | None = None
        self._output: dict[str, list[str]] = {"stdout": [], "stderr": []}
        self._readers: list[threading.Thread] = []
        self._request = 0

    def output(self) -> str:
        """What the worker printed: while loading, then after (its stdout, then its stderr)."""
        loading = (self._scratch / "worker.log").read_text(errors="replace")
        return loading + "".join(self._output["stdout"] + self._output["stderr"])

    def __enter__(self) -> MmsWorker:
        self._scratch.mkdir(parents=True, exist_ok=True)
        sock = self._scratch / "worker.sock"
        log = self._scratch / "worker.log"
        with log.open("wb") as handle:
            self._process = subprocess.Popen(
                [str(self._python), "-m", "mms.model_service_worker", "--sock-type", "unix",
                 "--sock-name", str(sock), "--handler", self._handler, "--model-path",
                 str(self._model_dir), "--model-name", "model", "--preload-model", "false",
                 "--tmp-dir", str(self._scratch)],
                stdout=handle, stderr=subprocess.STDOUT, start_new_session=True,
                env={**self._environment, "MMS_DECODE_INPUT_REQUEST": "false"})
        try:
            code, message = self._load(sock)
        except (OSError, ConnectionError) as error:
            self._stop()
            raise RuntimeError(f"the MMS worker did not load the model ({error}): "
                               f"{log.read_text(errors='replace')[-3000:]}") from None
        if code != 200:
            self._stop()
            raise RuntimeError(f"the MMS worker did not load the model ({code}): {message}\n"
                               f"{log.read_text(errors='replace')[-3000:]}")
        for stream in ("stdout", "stderr"):  # the worker blocks until both are open for reading
            fifo = self._scratch / f"{_IO_NAME}-{stream}"
            thread = threading.Thread(target=self._drain, args=(fifo, self._output[stream]), daemon=True)
            thread.start()
            self._readers.append(thread)
        return self

    def _load(self, sock: Path) -> tuple[int, str]:
        """Connect once the worker listens (it binds the socket file just before it listens),
        send the load message, and read its answer."""
        assert self._process is not None
        deadline = time.monotonic() + _START_TIMEOUT
        while True:
            if self._process.poll() is not None:
                raise ConnectionError(f"the worker exited with status {self._process.returncode}")
            if sock.exists():
                connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    connection.connect(str(sock))
                    break
                except OSError:
                    connection.close()
            if time.monotonic() > deadline:
                raise ConnectionError(f"the worker did not listen in {_START_TIMEOUT:.0f} s")
            time.sleep(0.05)
        connection.settimeout(_ANSWER_TIMEOUT)  # a hung worker fails the test, not the suite
        self._connection = connection
        connection.sendall(_LOAD + _text(b"model") + _text(str(self._model_dir).encode())
                           + _int(1) + _text(self._handler.encode()) + _int(-1)  # GPU id: none
                           + _text(_IO_NAME.encode()))
        reader = _Reader(connection)
        code, message = reader.number(), reader.field().decode()
        reader.number()  # -1: no predictions
        return code, message

    @staticmethod
    def _drain(fifo: Path, lines: list[str]) -> None:
        with fifo.open("r", errors="replace") as handle:
            lines.extend(handle)

    def predict(self, body: bytes, *, content_type: str, accept: str | None = None) -> Answer:
        """One ``/invocations`` request as MMS's frontend hands it to the worker."""
        assert self._connection is not None, "use the worker as a context manager"
        self._request += 1
        headers = [(b"Content-Type", content_type.encode())]
        if accept is not None:
            headers.append((b"Accept", accept.encode()))
        message = _PREDICT + _text(str(self._request).encode())
        for name, value in headers:
            message += _text(name) + _text(value)
        message += _int(-1)  # end of headers
        message += _text(b"body") + _text(content_type.encode()) + _text(body)
        message += _int(-1) + _int(-1)  # end of parameters, end of the batch
        self._connection.sendall(message)
        reader = _Reader(self._connection)
        reader.number()  # the batch's code (each request has its own below)
        batch_message = reader.field().decode()
        reader.field()  # the request id
        response_type = reader.field().decode() or None
        status = reader.number()
        reader.field()  # the reason phrase
        response_headers = {reader.field().decode(): reader.field().decode() for _ in range(reader.number())}
        answer_body = reader.field()
        if reader.number() != -1:
            raise AssertionError("one request, one answer")
        return Answer(status=status, content_type=response_type or response_headers.get("content-type"),
                      body=answer_body, message=batch_message)

    def _stop(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
        if self._process is not None:
            # The worker forks a process per connection into its session: end them all (the
            # forked one's SIGTERM handler deletes its files and does not exit).
            for sent in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(self._process.pid, sent)
                except ProcessLookupError:
                    break
                if sent == signal.SIGTERM:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        self._process.wait(timeout=10)
            self._process.wait()
            self._process = None
        for thread in self._readers:
            thread.join(timeout=10)

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._stop()
