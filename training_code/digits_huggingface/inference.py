"""The model's handler on AWS's Hugging Face (PyTorch) inference image (a skeleton by ``smtrain
new-program``, beside ``train.py``, which copies it into the model as ``code/inference.py``).

The image's toolkit (sagemaker-huggingface-inference-toolkit) imports ``code/inference.py`` from
``model.tar.gz`` (the module ``SAGEMAKER_PROGRAM`` names) and calls ``model_fn`` once, then
``input_fn``, ``predict_fn`` and ``output_fn`` for every request, in place of its own pipeline.

Requests: ``text/csv`` rows of features (no label, no header) or ``application/json``
``{"instances": [[...], ...]}``; answers: ``application/json`` ``{"predictions": [class, ...]}``
(also for ``*/*``) or ``text/csv``, one class a line. A bad request raises ``ValueError`` with
what is wrong, which the toolkit answers with status 400 and that message.

Keep it in step with ``train``: it loads what ``save_model`` wrote and standardizes the features
as training did.
"""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import torch
from transformers import ViTForImageClassification


def model_fn(model_dir: str) -> ViTForImageClassification:
    """The trained model, from ``config.json`` and ``model.safetensors``."""
    model = ViTForImageClassification.from_pretrained(model_dir)
    model.eval()
    return model


def _media_type(value: str | None) -> str:
    return (value or "").split(";")[0].strip().lower()


def input_fn(input_data: str | bytes, content_type: str) -> np.ndarray:
    """The request's rows of features."""
    media = _media_type(content_type)
    if media not in ("text/csv", "application/json"):
        raise ValueError(f"content type {content_type!r} is not served: text/csv or application/json")
    try:  # the toolkit passes both types as text; bytes where it is called otherwise
        text = input_data.decode("utf-8") if isinstance(input_data, (bytes, bytearray)) else input_data
    except UnicodeDecodeError:
        raise ValueError(f"the {media} body is not UTF-8 text") from None
    if media == "text/csv":
        rows: object = [row for row in csv.reader(io.StringIO(text)) if row]
    else:
        try:
            rows = json.loads(text)["instances"]
        except (ValueError, KeyError, TypeError):
            raise ValueError('an application/json request is {"instances": [[...], ...]}') from None
    try:  # as training read its CSV: float64, standardized, then float32 for the model
        features = np.asarray(rows, dtype=np.float64)
    except (ValueError, TypeError, OverflowError):
        raise ValueError("every row must be a list of numbers, all of one length") from None
    if features.ndim != 2:
        raise ValueError("the request must be rows of features: a list of lists of numbers")
    if len(features) == 0:
        raise ValueError("the request holds no rows of features")
    if not np.isfinite(features).all():
        raise ValueError("every feature must be a finite number")
    return features


def predict_fn(features: np.ndarray, model: ViTForImageClassification) -> list[int]:
    """The class of each row, standardized as in training (the mean and deviation in config.json)."""
    mean, std = np.asarray(model.config.feature_mean), np.asarray(model.config.feature_std)
    if features.shape[1] != len(mean):
        raise ValueError(f"each row must have {len(mean)} features, got {features.shape[1]}")
    standardized = ((features - mean) / std).astype(np.float32)
    pixels = torch.from_numpy(standardized).reshape(len(features), 1, 1, len(mean))
    with torch.no_grad():
        logits = model(pixel_values=pixels).logits
    return [int(label) for label in logits.argmax(-1)]


def output_fn(prediction: list[int], accept: str) -> str:
    """The answer in the first type of ``accept`` (a comma-separated list) that is served."""
    for media in map(_media_type, (accept or "*/*").split(",")):
        if media in ("application/json", "*/*", "application/*"):
            return json.dumps({"predictions": prediction})
        if media in ("text/csv", "text/*"):
            return "".join(f"{label}\n" for label in prediction)
    raise ValueError(f"accept type {accept!r} is not served: application/json or text/csv")
