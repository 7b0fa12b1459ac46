"""Serving handler for AWS's PyTorch inference image (its toolkit: sagemaker-pytorch-inference).

``train.py`` puts this file, with the modules it imports, under ``code/`` in the model directory,
so the job's ``model.tar.gz`` deploys as it is. At startup the toolkit puts
``/opt/ml/model/code`` on ``PYTHONPATH`` and imports the module named by ``SAGEMAKER_PROGRAM``
(default ``inference.py``); it calls ``model_fn(model_dir)`` once, then, per request,
``input_fn(body, content_type)``, ``predict_fn(data, model)`` and ``output_fn(prediction,
accept)``. Request and response formats: ``common/prediction_requests.py``. A bad request raises
the toolkit's ``BaseInferenceToolkitError`` with a 4xx status, which the toolkit answers with that
status and the message; any other exception would be a 500.

No ``code/requirements.txt``: torch and numpy come with the image, and the toolkit would
``pip install`` such a file at every start (needing a package index the endpoint may not reach).
"""

from __future__ import annotations

import importlib

import numpy as np
import torch

from common.prediction_requests import RequestError, check_width, decode_features, encode_predictions
from digits_model import DigitsClassifier, load_model


def _toolkit_error_class() -> type[Exception]:
    """The toolkit's error that carries an HTTP status; plain ``Exception`` outside the image."""
    try:
        errors = importlib.import_module("sagemaker_inference.errors")
    except ImportError:
        return Exception
    base: type[Exception] = errors.BaseInferenceToolkitError
    return base


class InvalidRequest(_toolkit_error_class()):  # type: ignore[misc]  # the toolkit's base when present
    """What the toolkit turns into the response: ``status_code``, ``message`` (the body) and
    ``phrase`` (the status line), as ``BaseInferenceToolkitError`` defines them."""

    def __init__(self, error: RequestError) -> None:
        super().__init__(error.status, error.message, error.message)
        self.status_code = error.status
        self.message = error.message
        self.phrase = error.message


def model_fn(model_dir: str) -> DigitsClassifier:
    """The trained classifier, on the CPU in eval mode (``digits_model.load_model``)."""
    return load_model(model_dir)


def input_fn(request_body: bytes | str, content_type: str | None) -> np.ndarray:
    """The request's rows as a float32 array. The number of features is checked in
    ``predict_fn``, which has the model; the toolkit passes the body as ``str`` for exactly
    ``text/csv`` or ``application/json`` and as ``bytes`` otherwise (``; charset=...``)."""
    try:
        return decode_features(request_body, content_type)
    except RequestError as error:
        raise InvalidRequest(error) from None


def predict_fn(data: np.ndarray, model: DigitsClassifier) -> list[int]:
    """The predicted label of each row."""
    try:
        check_width(data, num_features=int(model.config["num_features"]))
    except RequestError as error:
        raise InvalidRequest(error) from None
    with torch.no_grad():
        logits = model(torch.from_numpy(data))
    return [int(label) for label in logits.argmax(dim=1)]


def output_fn(prediction: list[int], accept: str | None) -> tuple[str, str]:
    """``(body, content type)``: the toolkit sends the body with that content type."""
    try:
        return encode_predictions(prediction, accept)
    except RequestError as error:
        raise InvalidRequest(error) from None

