"""Region-correct SageMaker image URIs, from the SageMaker SDK's own tables.

The AWS-owned framework and built-in algorithm images live in per-region accounts. The SDK
(``sagemaker-core``) ships those tables, so no hand-kept map is needed; but importing it costs
about 3 s, so the answers for the configured versions are kept in ``image_uris.json`` (written by
``python -m infra.images``, and checked against the SDK by the tests). A version or region
missing there is looked up in the SDK at synth time.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

from infra.settings import SettingsError

CACHE_PATH = Path(__file__).with_name("image_uris.json")


@dataclass(frozen=True, kw_only=True)
class TrainingImages:
    """The AWS-owned images the state machine can choose from: PyTorch training (CPU and GPU),
    built-in XGBoost (which also serves its models), and the PyTorch CPU inference image a
    registered script-mode model version names (the framework's serving toolkit loads the
    model archive's ``code/inference.py``, which serves on the CPU on any instance; a GPU image
    would only run on GPU instances)."""

    pytorch_cpu: str
    pytorch_gpu: str
    xgboost: str
    pytorch_inference_cpu: str


def cache_key(*, pytorch_version: str, pytorch_py_version: str, xgboost_version: str) -> str:
    return f"pytorch-{pytorch_version}-{pytorch_py_version}/xgboost-{xgboost_version}"


@lru_cache(maxsize=16)
def training_images(
    *, region: str, pytorch_version: str, pytorch_py_version: str, xgboost_version: str
) -> TrainingImages:
    """The PyTorch (CPU and GPU) training images and the built-in XGBoost image for ``region``.

    Raises :class:`SettingsError` naming the setting when the SDK does not know a version or
    the region has no such image.
    """
    key = cache_key(pytorch_version=pytorch_version, pytorch_py_version=pytorch_py_version,
                    xgboost_version=xgboost_version)
    if CACHE_PATH.is_file():
        cached = json.loads(CACHE_PATH.read_text()).get(key, {}).get(region)
        if cached is not None:
            return TrainingImages(**cached)
    return images_from_sdk(region=region, pytorch_version=pytorch_version,
                           pytorch_py_version=pytorch_py_version, xgboost_version=xgboost_version)


def images_from_sdk(
    *, region: str, pytorch_version: str, pytorch_py_version: str, xgboost_version: str
) -> TrainingImages:
    """Ask the SageMaker SDK (slow to import: about 3 s)."""
    from sagemaker.core import image_uris

    def pytorch(instance_type: str, scope: str = "training") -> str:
        try:
            return str(image_uris.retrieve(
                "pytorch", region, version=pytorch_version, py_version=pytorch_py_version,
                instance_type=instance_type, image_scope=scope,
            ))
        except ValueError as error:
            raise SettingsError(
                f"setting 'pytorchVersion'/'pytorchPyVersion' ({pytorch_version}, "
                f"{pytorch_py_version}) has no SageMaker {scope} image in {region}: {error}"
            ) from error

    try:
        xgboost = str(image_uris.retrieve("xgboost", region, version=xgboost_version))
    except ValueError as error:
        raise SettingsError(
            f"setting 'xgboostVersion' ({xgboost_version}) has no SageMaker image in {region}: {error}"
        ) from error
    return TrainingImages(pytorch_cpu=pytorch("ml.m5.xlarge"), pytorch_gpu=pytorch("ml.g5.xlarge"),
                          xgboost=xgboost,
                          pytorch_inference_cpu=pytorch("ml.m5.xlarge", "inference"))


def sagemaker_regions() -> list[str]:
    """Regions where SageMaker has an endpoint, from botocore's endpoint data (offline)."""
    import boto3

    return sorted(boto3.session.Session().get_available_regions("sagemaker"))


def refresh_cache(*, pytorch_version: str, pytorch_py_version: str, xgboost_version: str) -> int:
    """Write the SDK's answers for every SageMaker region into ``image_uris.json``; returns how
    many regions have all three images."""
    key = cache_key(pytorch_version=pytorch_version, pytorch_py_version=pytorch_py_version,
                    xgboost_version=xgboost_version)
    table = json.loads(CACHE_PATH.read_text()) if CACHE_PATH.is_file() else {}
    by_region = {}
    for region in sagemaker_regions():
        try:
            images = images_from_sdk(region=region, pytorch_version=pytorch_version,
                                     pytorch_py_version=pytorch_py_version,
                                     xgboost_version=xgboost_version)
        except SettingsError:
            continue
        by_region[region] = asdict(images)
    table[key] = by_region
    CACHE_PATH.write_text(json.dumps(table, indent=2, sort_keys=True) + "\n")
    return len(by_region)


def main() -> None:
    parser = argparse.ArgumentParser(description="Refresh infra/image_uris.json from the SageMaker SDK")
    parser.add_argument("--pytorch-version", required=True)
    parser.add_argument("--pytorch-py-version", required=True)
    parser.add_argument("--xgboost-version", required=True)
    args = parser.parse_args()
    count = refresh_cache(pytorch_version=args.pytorch_version,
                          pytorch_py_version=args.pytorch_py_version,
                          xgboost_version=args.xgboost_version)
    print(f"{CACHE_PATH}: {count} regions")


if __name__ == "__main__":
    main()
