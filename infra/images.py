"""Region-correct SageMaker image URIs, looked up offline from the SageMaker SDK's own tables.

The AWS-owned framework and built-in algorithm images live in per-region accounts; the SDK
(``sagemaker-core``) ships those tables, so synth needs no network and no hand-kept map.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from infra.settings import SettingsError


@dataclass(frozen=True, kw_only=True)
class TrainingImages:
    """The three AWS-owned images the state machine can choose from."""

    pytorch_cpu: str
    pytorch_gpu: str
    xgboost: str


@lru_cache(maxsize=16)
def training_images(
    *, region: str, pytorch_version: str, pytorch_py_version: str, xgboost_version: str
) -> TrainingImages:
    """Look up the PyTorch (CPU and GPU) training images and the built-in XGBoost image.

    Raises :class:`SettingsError` naming the setting when the SDK does not know a version or
    the region has no such image.
    """
    from sagemaker.core import image_uris  # heavy import: only at synth

    def pytorch(instance_type: str) -> str:
        try:
            return str(
                image_uris.retrieve(
                    "pytorch", region, version=pytorch_version, py_version=pytorch_py_version,
                    instance_type=instance_type, image_scope="training",
                )
            )
        except ValueError as error:
            raise SettingsError(
                f"setting 'pytorchVersion'/'pytorchPyVersion' ({pytorch_version}, "
                f"{pytorch_py_version}) has no SageMaker training image in {region}: {error}"
            ) from error

    try:
        xgboost = str(image_uris.retrieve("xgboost", region, version=xgboost_version))
    except ValueError as error:
        raise SettingsError(
            f"setting 'xgboostVersion' ({xgboost_version}) has no SageMaker image in {region}: {error}"
        ) from error
    return TrainingImages(
        pytorch_cpu=pytorch("ml.m5.xlarge"), pytorch_gpu=pytorch("ml.g5.xlarge"), xgboost=xgboost
    )
