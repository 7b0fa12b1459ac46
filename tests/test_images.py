"""Image URIs: the committed table is exactly what the SageMaker SDK answers."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest

from infra.images import BUILTIN_KEY, CACHE_PATH, cache_key, images_from_sdk, training_images
from infra.settings import Settings


def test_table_covers_the_configured_versions(settings: Settings) -> None:
    table = json.loads(CACHE_PATH.read_text())
    key = cache_key(pytorch_version=settings.pytorch_version,
                    pytorch_py_version=settings.pytorch_py_version,
                    xgboost_version=settings.xgboost_version)
    assert key in table, "run: python -m infra.images with the versions in cdk.json"
    assert {"us-east-1", "eu-west-1", "ap-northeast-1"} <= set(table[key])


def test_table_matches_the_sdk_for_every_region() -> None:
    table = json.loads(CACHE_PATH.read_text())
    table.pop(BUILTIN_KEY)  # the other built-ins: tests/test_builtin_catalogue.py
    for key, regions in table.items():
        pytorch, xgboost = key.split("/")
        _, version, py_version = pytorch.split("-")
        for region, images in regions.items():
            answer = images_from_sdk(region=region, pytorch_version=version,
                                     pytorch_py_version=py_version,
                                     xgboost_version=xgboost.removeprefix("xgboost-"))
            assert images == asdict(answer), (key, region)


@pytest.mark.parametrize(("region", "account"), [("us-east-1", "683313688378"),
                                                 ("eu-west-1", "141502667606")])
def test_xgboost_lives_in_the_regions_account(region: str, account: str) -> None:
    images = training_images(region=region, pytorch_version="2.5", pytorch_py_version="py311",
                             xgboost_version="1.7-1")
    assert images.xgboost == f"{account}.dkr.ecr.{region}.amazonaws.com/sagemaker-xgboost:1.7-1"
    assert f".dkr.ecr.{region}.amazonaws.com/pytorch-training:2.5-cpu-py311" in images.pytorch_cpu


def test_registered_script_models_name_the_regions_inference_image() -> None:
    """The SDK's answer for image_scope="inference" (what PyTorchModel deploys), per region."""
    images = training_images(region="eu-west-1", pytorch_version="2.5", pytorch_py_version="py311",
                             xgboost_version="1.7-1")
    assert images.pytorch_inference_cpu == \
        "763104351884.dkr.ecr.eu-west-1.amazonaws.com/pytorch-inference:2.5-cpu-py311"
