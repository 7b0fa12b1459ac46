"""Image URIs: the committed table is exactly what the SageMaker SDK answers."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import pytest

from infra.images import (
    BUILTIN_KEY,
    CACHE_PATH,
    FRAMEWORKS_KEY,
    ImageVersionError,
    cache_key,
    framework_images,
    framework_images_from_sdk,
    framework_key,
    images_from_sdk,
    training_images,
)
from infra.settings import FRAMEWORK_SETTINGS, Settings
from smtrain.core import contract


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
        if key == FRAMEWORKS_KEY:
            continue
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


def test_table_covers_every_frameworks_configured_build(settings: Settings) -> None:
    section = json.loads(CACHE_PATH.read_text())[FRAMEWORKS_KEY]
    assert set(FRAMEWORK_SETTINGS) == set(contract.FRAMEWORKS)
    for framework in contract.FRAMEWORKS:
        version, py_version, base = settings.framework_build(framework)
        key = framework_key(framework=framework, version=version, py_version=py_version,
                            base_framework_version=base)
        assert key in section, "run: make image-uris"
        assert {"us-east-1", "eu-west-1"} <= set(section[key])


def test_framework_table_matches_the_sdk(settings: Settings) -> None:
    section = json.loads(CACHE_PATH.read_text())[FRAMEWORKS_KEY]
    for framework in contract.FRAMEWORKS:
        version, py_version, base = settings.framework_build(framework)
        key = framework_key(framework=framework, version=version, py_version=py_version,
                            base_framework_version=base)
        for region in ("us-east-1", "eu-west-1", "ap-southeast-2"):
            answer = framework_images_from_sdk(region=region, framework=framework, version=version,
                                               py_version=py_version, base_framework_version=base)
            assert section[key][region] == asdict(answer), (key, region)


@pytest.mark.parametrize(("framework", "cpu", "gpu", "inference"), [
    ("sklearn", "sagemaker-scikit-learn:1.2-1-cpu-py3", None,
     "sagemaker-scikit-learn:1.2-1-cpu-py3"),
    ("xgboost", "sagemaker-xgboost:1.7-1", "sagemaker-xgboost:1.7-1", "sagemaker-xgboost:1.7-1"),
    ("tensorflow", "tensorflow-training:2.19-cpu-py312", "tensorflow-training:2.19-gpu-py312",
     "tensorflow-inference:2.19-cpu"),
    ("huggingface", None,
     "huggingface-pytorch-training:2.3.0-transformers4.48.0-gpu-py311-cu121-ubuntu20.04",
     "huggingface-pytorch-inference:2.3.0-transformers4.48.0-cpu-py311-ubuntu22.04"),
])
def test_each_framework_has_its_builds(settings: Settings, framework: str, cpu: str | None,
                                       gpu: str | None, inference: str) -> None:
    version, py_version, base = settings.framework_build(framework)
    images = framework_images(region="eu-west-1", framework=framework, version=version,
                              py_version=py_version, base_framework_version=base)
    for uri, tag in ((images.training_cpu, cpu), (images.training_gpu, gpu),
                     (images.inference, inference)):
        assert (uri is None) == (tag is None)
        if uri is not None:
            assert uri.startswith(tuple(f"{a}.dkr.ecr.eu-west-1.amazonaws.com/"
                                        for a in ("763104351884", "141502667606")))
            assert uri.endswith(f"/{tag}")


@pytest.mark.parametrize(("framework", "kwargs", "field", "listed"), [
    ("sklearn", {"version": "9.9", "py_version": None}, "framework_version", "1.2-1"),
    ("tensorflow", {"version": "2.19", "py_version": "py39"}, "py_version", "py312"),
    ("huggingface", {"version": "4.48.0", "py_version": "py311",
                     "base_framework_version": "pytorch9.9"}, "base_framework_version",
     "pytorch2.3.0"),
])
def test_an_unknown_build_names_the_field_and_what_exists(
        framework: str, kwargs: dict[str, Any], field: str, listed: str) -> None:
    with pytest.raises(ImageVersionError) as raised:
        framework_images_from_sdk(region="us-east-1", framework=framework, **kwargs)
    assert raised.value.field == field
    assert listed in raised.value.message and "\n" not in raised.value.message
    assert "upgrade your SDK" not in raised.value.message
