"""Region-correct SageMaker image URIs, from the SageMaker SDK's own tables.

The AWS-owned framework and built-in algorithm images live in per-region accounts. The SDK
(``sagemaker-core``) ships those tables, so no hand-kept map is needed; but importing it costs
about 3 s, so the answers for the configured versions are kept in ``image_uris.json`` (written by
``python -m infra.images``, and checked against the SDK by the tests), with every built-in
algorithm's image at its default version (:func:`builtin_image`). A version or region missing
there is looked up in the SDK at synth time.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

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


#: The table's key for the built-in algorithms' images: ``{"<algorithm>:<version>": {region: uri}}``
#: for every algorithm of the catalogue at its default version but XGBoost (whose image is
#: :attr:`TrainingImages.xgboost`, at the ``xgboostVersion`` setting).
BUILTIN_KEY = "builtin-algorithms"


class NoBuiltinImage(SettingsError):
    """The SDK has no image of a built-in algorithm (at that version) in the region; the message
    says which versions it has, or why. ``field``: ``version`` (no such version) or
    ``algorithm`` (none in the region)."""

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.field = field


def builtin_algorithms_in(region: str) -> list[str]:
    """The built-in algorithms with an image in ``region`` at their default version (from
    ``image_uris.json``; XGBoost's is the ``xgboostVersion`` setting's, checked at synth)."""
    table = json.loads(CACHE_PATH.read_text()).get(BUILTIN_KEY, {}) if CACHE_PATH.is_file() else {}
    return sorted({"xgboost", *(key.split(":", 1)[0] for key, regions in table.items()
                                if region in regions)})


def builtin_image(*, region: str, algorithm: str, version: str) -> str:
    """The training image of the built-in ``algorithm`` at ``version`` in ``region`` (which
    also serves the models it trains): from ``image_uris.json``, else from the SDK.

    Raises :class:`NoBuiltinImage` when the SDK has none there."""
    if CACHE_PATH.is_file():
        cached = json.loads(CACHE_PATH.read_text()).get(BUILTIN_KEY, {}) \
            .get(f"{algorithm}:{version}", {}).get(region)
        if cached is not None:
            return str(cached)
    return builtin_image_from_sdk(region=region, algorithm=algorithm, version=version)


def _builtin_versions(algorithm: str) -> list[str]:
    """The versions the SDK's ``image_uri_config/<algorithm>.json`` lists for training (its
    single-version files ignore the version asked for, so it is checked here)."""
    from sagemaker.core import image_uris

    config = image_uris.config_for_framework(algorithm)
    config = config.get("training", config)
    return sorted({*config.get("versions", {}), *config.get("version_aliases", {})})


@lru_cache(maxsize=256)
def builtin_image_from_sdk(*, region: str, algorithm: str, version: str) -> str:
    """Ask the SageMaker SDK (``image_uris.retrieve``, the look-up its estimators use)."""
    from sagemaker.core import image_uris

    versions = _builtin_versions(algorithm)
    if version not in versions:
        raise NoBuiltinImage(f"the SageMaker SDK knows no version {version!r} of {algorithm}: "
                             f"{', '.join(versions)}", field="version")
    try:
        return str(image_uris.retrieve(algorithm, region, version=version))
    except ValueError as error:
        raise NoBuiltinImage(f"SageMaker has no {algorithm} image (version {version}) in "
                             f"{region} (the SageMaker SDK: {error})", field="algorithm") from None


#: The table's section for the script-mode framework images (:func:`framework_images`).
FRAMEWORKS_KEY = "frameworks"
#: An instance type of each processor, to ask the SDK for that build (it picks the build from the
#: instance type: ``image_uris._processor``).
_CPU_INSTANCE, _GPU_INSTANCE = "ml.m5.xlarge", "ml.g5.xlarge"


@dataclass(frozen=True, kw_only=True)
class FrameworkImages:
    """One script-mode framework build in one region: its training images (None where AWS builds
    none for that processor: scikit-learn is CPU only, Hugging Face training GPU only; XGBoost's
    one image serves both) and the CPU inference image a registered model version names (as for
    PyTorch: the program's handler serves on the CPU on any instance)."""

    training_cpu: str | None
    training_gpu: str | None
    inference: str


class ImageVersionError(SettingsError):
    """The SDK knows no image for a framework version, Python version, base framework or region.

    ``field`` is which of ``framework_version``, ``py_version``, ``base_framework_version`` or
    ``region`` it refused; ``message`` is the SDK's own, which lists the values that exist."""

    def __init__(self, *, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def framework_key(*, framework: str, version: str, py_version: str | None,
                  base_framework_version: str | None) -> str:
    return "-".join(part for part in (framework, version, py_version, base_framework_version) if part)


@lru_cache(maxsize=64)
def framework_images(*, region: str, framework: str, version: str, py_version: str | None,
                     base_framework_version: str | None = None) -> FrameworkImages:
    """The images of one framework build in ``region``, from the table or else the SDK.

    Raises :class:`ImageVersionError` when the SDK has no such build."""
    key = framework_key(framework=framework, version=version, py_version=py_version,
                        base_framework_version=base_framework_version)
    if CACHE_PATH.is_file():
        cached = json.loads(CACHE_PATH.read_text()).get(FRAMEWORKS_KEY, {}).get(key, {}).get(region)
        if cached is not None:
            return FrameworkImages(**cached)
    return framework_images_from_sdk(region=region, framework=framework, version=version,
                                     py_version=py_version,
                                     base_framework_version=base_framework_version)


def _refused_field(message: str) -> str:
    """Which argument the SDK's ``ValueError`` refused (``image_uris._validate_arg`` writes
    ``Unsupported <argument name>: ...``)."""
    match = re.match(r"Unsupported ([A-Za-z ]+?):", message)
    name = match.group(1) if match else ""
    if name == "Python version":
        return "py_version"
    if name == "base framework":
        return "base_framework_version"
    if name == "region":
        return "region"
    return "framework_version"


def _supported(message: str) -> str:
    """The SDK's message without its advice to upgrade the SDK."""
    return re.sub(r" You may need to upgrade your SDK version \(pip install -U sagemaker\) for "
                  r"newer [a-zA-Z ]+s\.", "", message)


def framework_images_from_sdk(*, region: str, framework: str, version: str,
                              py_version: str | None,
                              base_framework_version: str | None = None) -> FrameworkImages:
    """Ask the SageMaker SDK (``image_uris.retrieve``, as its estimators do: e.g.
    ``HuggingFace.training_image_uri`` passes ``base_framework_version`` =
    ``pytorch<version>``/``tensorflow<version>``). Slow to import: about 3 s."""
    from sagemaker.core import image_uris

    def retrieve(instance_type: str, scope: str) -> str | None:
        extra = ({"base_framework_version": base_framework_version}
                 if base_framework_version is not None else {})
        try:
            return str(image_uris.retrieve(framework, region, version=version,
                                           py_version=py_version, instance_type=instance_type,
                                           image_scope=scope, **extra))
        except ValueError as error:
            message = str(error)
            if message.startswith("Unsupported processor"):
                return None  # no build for this processor (checked below: one must exist)
            raise ImageVersionError(field=_refused_field(message),
                                    message=f"{scope}: {_supported(message)}") from None

    cpu, gpu = retrieve(_CPU_INSTANCE, "training"), retrieve(_GPU_INSTANCE, "training")
    if cpu is None and gpu is None:
        raise ImageVersionError(field="framework_version",
                                message=f"training: no CPU or GPU image of {framework} {version}")
    inference = retrieve(_CPU_INSTANCE, "inference") or retrieve(_GPU_INSTANCE, "inference")
    assert inference is not None
    return FrameworkImages(training_cpu=cpu, training_gpu=gpu, inference=inference)


def sagemaker_regions() -> list[str]:
    """Regions where SageMaker has an endpoint, from botocore's endpoint data (offline)."""
    import boto3

    return sorted(boto3.session.Session().get_available_regions("sagemaker"))


@contextmanager
def endpoints_read_once() -> Iterator[None]:
    """Within it, the SDK reads botocore's endpoint data once, not on every look-up: its
    ``common_utils._botocore_resolver`` builds a new loader per call (about 70 ms, nearly all of
    a look-up). The data is botocore's static file, so the answers are the same."""
    from unittest import mock

    from sagemaker.core import common_utils

    cached = lru_cache(maxsize=1)(common_utils._botocore_resolver)
    with mock.patch.object(common_utils, "_botocore_resolver", cached):
        yield


def refresh_cache(*, pytorch_version: str, pytorch_py_version: str, xgboost_version: str) -> int:
    """Write the SDK's answers for every SageMaker region into ``image_uris.json``; returns how
    many regions have all three images."""
    key = cache_key(pytorch_version=pytorch_version, pytorch_py_version=pytorch_py_version,
                    xgboost_version=xgboost_version)
    table = json.loads(CACHE_PATH.read_text()) if CACHE_PATH.is_file() else {}
    with endpoints_read_once():
        return _refresh_cache(key=key, table=table, pytorch_version=pytorch_version,
                              pytorch_py_version=pytorch_py_version,
                              xgboost_version=xgboost_version)


def _refresh_cache(*, key: str, table: dict[str, Any], pytorch_version: str,
                   pytorch_py_version: str, xgboost_version: str) -> int:
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
    table[BUILTIN_KEY] = builtin_table()
    CACHE_PATH.write_text(json.dumps(table, indent=2, sort_keys=True) + "\n")
    return len(by_region)


@lru_cache(maxsize=16)
def image_accounts(region: str) -> tuple[str, ...]:
    """The AWS accounts whose registries hold the SageMaker images of ``region`` in the cached
    table (every framework build and built-in algorithm kept there), sorted: a fixed set per
    region, whichever programs a deployment has. Empty when the table has none for the region."""
    if not CACHE_PATH.is_file():
        return ()
    pattern = re.compile(rf"(\d{{12}})\.dkr\.ecr\.{re.escape(region)}\.amazonaws\.com")
    return tuple(sorted(set(pattern.findall(CACHE_PATH.read_text()))))


def builtin_table() -> dict[str, dict[str, str]]:
    """Every built-in algorithm but XGBoost at its default version, in every SageMaker region
    where the SDK has its image (reading the SDK's files: about a second for all)."""
    from smtrain.core import builtin_algorithms

    table: dict[str, dict[str, str]] = {}
    regions = sagemaker_regions()
    for algorithm, version in builtin_algorithms.DEFAULT_VERSIONS.items():
        by_region = {}
        for region in regions:
            try:
                by_region[region] = builtin_image_from_sdk(region=region, algorithm=algorithm,
                                                           version=version)
            except NoBuiltinImage:
                continue
        table[f"{algorithm}:{version}"] = by_region
    return table


def refresh_framework_cache(builds: list[tuple[str, str, str | None, str | None]]) -> int:
    """Write the SDK's answers for each ``(framework, version, py_version, base)`` build and
    every SageMaker region into the table's ``frameworks`` section; returns how many builds."""
    table = json.loads(CACHE_PATH.read_text()) if CACHE_PATH.is_file() else {}
    section = table.setdefault(FRAMEWORKS_KEY, {})
    for framework, version, py_version, base in builds:
        by_region = {}
        for region in sagemaker_regions():
            try:
                images = framework_images_from_sdk(region=region, framework=framework,
                                                   version=version, py_version=py_version,
                                                   base_framework_version=base)
            except ImageVersionError:
                continue
            by_region[region] = asdict(images)
        section[framework_key(framework=framework, version=version, py_version=py_version,
                              base_framework_version=base)] = by_region
    CACHE_PATH.write_text(json.dumps(table, indent=2, sort_keys=True) + "\n")
    return len(builds)


def main() -> None:
    parser = argparse.ArgumentParser(description="Refresh infra/image_uris.json from the SageMaker SDK")
    parser.add_argument("--pytorch-version", required=True)
    parser.add_argument("--pytorch-py-version", required=True)
    parser.add_argument("--xgboost-version", required=True)
    parser.add_argument("--framework", action="append", default=[], metavar="NAME:VERSION[:PY[:BASE]]",
                        help="a script-mode framework build to table too (repeatable)")
    args = parser.parse_args()
    count = refresh_cache(pytorch_version=args.pytorch_version,
                          pytorch_py_version=args.pytorch_py_version,
                          xgboost_version=args.xgboost_version)
    print(f"{CACHE_PATH}: {count} regions")
    builds = []
    for text in args.framework:
        parts = [*text.split(":"), None, None, None]
        builds.append((parts[0], parts[1], parts[2] or None, parts[3] or None))
    if builds:
        print(f"{CACHE_PATH}: {refresh_framework_cache(builds)} framework builds")


if __name__ == "__main__":
    main()
