"""Amazon ECR for the image-copy tests: moto's ECR, completed where it lacks what the copy needs,
with every request checked against botocore's ecr service model.

moto 5.2.5 implements BatchGetImage, BatchCheckLayerAvailability, InitiateLayerUpload,
UploadLayerPart, CompleteLayerUpload and PutImage, but:

- GetDownloadUrlForLayer raises NotImplementedError;
- CompleteLayerUpload keeps only a layer's size (not its bytes), ignores the digest the client
  claims, and never raises LayerAlreadyExistsException, LayerPartTooSmallException or
  EmptyUploadException;
- PutImage digests an image by its layer digests (ECR: the sha256 of the manifest), and ignores
  layers the repository lacks and a wrong ``imageDigest``;
- under an immutable tag it raises ImageAlreadyExistsException for any image, where the model
  documents ImageTagAlreadyExistsException ("The specified image is tagged with a tag that
  already exists. The repository is configured for tag immutability.").

:class:`EcrDouble` patches those pieces of moto for its lifetime, each after the ECR API
reference as botocore's model carries it (the error shapes each operation lists and their
documentation). What it cannot know is which of the two "tag taken" errors ECR returns for a
re-push of the *same* image under an immutable tag (reported both ways: aws/aws-sdk#750,
aws/containers-roadmap#2179): ``same_image_error`` picks it, and the tests run both.

Every request sent by :meth:`EcrDouble.client` is validated with
``botocore.validate.ParamValidator`` against the operation's input shape before it leaves the
client (an invalid one raises) and recorded in :attr:`EcrDouble.requests`; the response of the
operation implemented here (GetDownloadUrlForLayer) is validated against its output shape.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any
from unittest import mock

import boto3
import botocore.session
from botocore.exceptions import ParamValidationError
from botocore.validate import ParamValidator
from moto import mock_aws
from moto.core.exceptions import ServiceException
from moto.core.responses import ActionResult
from moto.ecr.models import ECRBackend
from moto.ecr.responses import ECRResponse

REGION = "us-east-1"
MIB = 1024 * 1024
#: LayerPartTooSmallException: "Layer parts must be at least 5 MiB in size." (listed by
#: CompleteLayerUpload, so judged there: every part but the last).
MIN_PART = 5 * MIB
DOWNLOAD_HOST = "https://ecr-double.invalid"
ECR_MODEL = botocore.session.get_session().get_service_model("ecr")


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _referenced(manifest: str) -> tuple[set[str], set[str]]:
    """(blob digests, child manifest digests) a manifest or index refers to."""
    parsed = json.loads(manifest)
    blobs = {d["digest"] for d in [parsed.get("config"), *parsed.get("layers", [])] if d}
    children = {d["digest"] for d in parsed.get("manifests", [])}
    return blobs, children


class EcrError(ServiceException):  # type: ignore[misc]
    """An ECR error by its model name (moto serializes it with the ecr model: this module is not
    one of moto's)."""


def _error(code: str, message: str) -> EcrError:
    assert code in ECR_MODEL.shape_names, f"{code} is not an error shape of the ecr model"
    return EcrError(code, message)


class EcrDouble:
    """moto's ECR plus the pieces it lacks. Use as a context manager."""

    def __init__(self, *, part_size: int = 10 * MIB,
                 same_image_error: str = "ImageAlreadyExistsException") -> None:
        self.part_size = part_size
        self.same_image_error = same_image_error
        #: (repository, digest) -> bytes of every completed layer upload.
        self.blobs: dict[tuple[str, str], bytes] = {}
        #: upload id -> sizes of its parts, in order.
        self.parts: dict[str, list[int]] = {}
        #: (operation name, parameters) of every request any client of this double sent.
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self._stack = ExitStack()

    def __enter__(self) -> EcrDouble:
        self._stack.enter_context(mock_aws())
        double = self
        original_initiate = ECRBackend.initiate_layer_upload
        original_upload = ECRBackend.upload_layer_part
        original_complete = ECRBackend.complete_layer_upload
        original_put = ECRBackend.put_image

        def initiate_layer_upload(backend: ECRBackend, repository_name: str,
                                  registry_id: str | None = None) -> dict[str, Any]:
            result = original_initiate(backend, repository_name, registry_id=registry_id)
            double.parts[result["uploadId"]] = []
            return {**result, "partSize": double.part_size}

        def upload_layer_part(backend: ECRBackend, repository_name: str, upload_id: str, part_first_byte: int,
                              part_last_byte: int, layer_part_blob: bytes,
                              registry_id: str | None = None) -> dict[str, Any]:
            # partLastByte is "The position of the last byte of the layer part within the overall
            # image layer": inclusive, so the part holds last - first + 1 bytes.
            if part_last_byte - part_first_byte + 1 != len(layer_part_blob or b""):
                raise _error("InvalidLayerPartException",
                             f"part {part_first_byte}-{part_last_byte} holds {len(layer_part_blob)} bytes")
            result: dict[str, Any] = original_upload(backend, repository_name, upload_id, part_first_byte,
                                                     part_last_byte, layer_part_blob, registry_id=registry_id)
            double.parts[upload_id].append(len(layer_part_blob))
            return result

        def complete_layer_upload(backend: ECRBackend, repository_name: str, upload_id: str,
                                  layer_digests: list[str], registry_id: str | None = None) -> dict[str, Any]:
            repository = backend._get_repository(repository_name, registry_id)
            upload = repository.uploads.get(upload_id)
            sizes = double.parts.get(upload_id, [])
            if upload is not None and not sizes:
                raise _error("EmptyUploadException", "The specified layer upload does not contain any layer parts.")
            if any(size < MIN_PART for size in sizes[:-1]):
                raise _error("LayerPartTooSmallException", "Layer parts must be at least 5 MiB in size.")
            data = bytes(upload.layer_parts) if upload is not None else b""
            digest = sha256_digest(data)
            if upload is not None and layer_digests != [digest]:
                raise _error("InvalidLayerException",
                             f"The layer digest calculation {digest} does not match {layer_digests}")
            if upload is not None and digest in repository.layers:
                del repository.uploads[upload_id]
                raise _error("LayerAlreadyExistsException",
                             "The image layer already exists in the associated repository.")
            result: dict[str, Any] = original_complete(backend, repository_name, upload_id, layer_digests,
                                                       registry_id=registry_id)
            double.blobs[(repository_name, digest)] = data
            return result

        def put_image(backend: ECRBackend, repository_name: str, image_manifest: str, image_tag: str,
                      image_manifest_mediatype: str | None = None, digest: str | None = None) -> Any:
            repository = backend._get_repository(repository_name)
            actual = sha256_digest(image_manifest.encode("utf-8"))
            if digest is not None and digest != actual:
                raise _error("ImageDigestDoesNotMatchException",
                             f"The specified image digest {digest} does not match the digest {actual}")
            blobs, children = _referenced(image_manifest)
            missing = sorted(blobs - set(repository.layers))
            if missing:
                raise _error("LayersNotFoundException", f"The specified layers could not be found: {missing}")
            images = {image.get_image_digest() for image in repository.images}
            if children - images:
                raise _error("ReferencedImagesNotFoundException", f"Missing images {sorted(children - images)}")
            holder = next((image for image in repository.images if image_tag and image_tag in image.image_tags), None)
            if holder is not None and repository.is_tag_immutable():
                if holder.get_image_digest() == actual:
                    raise _error(double.same_image_error,
                                 f"Image with digest '{actual}' and tag '{image_tag}' already exists")
                raise _error("ImageTagAlreadyExistsException",
                             f"The image tag '{image_tag}' already exists in the '{repository_name}' repository "
                             "and cannot be overwritten because the repository is immutable.")
            return original_put(backend, repository_name, image_manifest, image_tag, image_manifest_mediatype,
                                actual)

        def get_download_url_for_layer(response: ECRResponse) -> ActionResult:
            repository_name = response._get_param("repositoryName")
            layer_digest = response._get_param("layerDigest")
            repository = response.ecr_backend._get_repository(repository_name, response._get_param("registryId"))
            # "You can only get URLs for image layers that are referenced in an image."
            referenced = set().union(*(_referenced(image.image_manifest)[0] for image in repository.images))
            if layer_digest not in referenced:
                if layer_digest in repository.layers:
                    raise _error("LayerInaccessibleException", "The specified layer is not associated with an image.")
                raise _error("LayersNotFoundException", "The specified layers could not be found.")
            result = {"downloadUrl": f"{DOWNLOAD_HOST}/{repository_name}/{layer_digest}",
                      "layerDigest": layer_digest}
            _validate("GetDownloadUrlForLayer", result, output=True)
            return ActionResult(result)

        for owner, name, replacement in (
            (ECRBackend, "initiate_layer_upload", initiate_layer_upload),
            (ECRBackend, "upload_layer_part", upload_layer_part),
            (ECRBackend, "complete_layer_upload", complete_layer_upload),
            (ECRBackend, "put_image", put_image),
            (ECRResponse, "get_download_url_for_layer", get_download_url_for_layer),
        ):
            self._stack.enter_context(mock.patch.object(owner, name, replacement))
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stack.close()

    def client(self) -> Any:
        """A boto3 ECR client whose every request is validated against the model and recorded."""
        client = boto3.client("ecr", region_name=REGION)

        def check(params: dict[str, Any], model: Any, **_: Any) -> None:
            _validate(model.name, params)
            self.requests.append((model.name, dict(params)))

        client.meta.events.register("provide-client-params.ecr.*", check)
        return client

    def operations(self) -> list[str]:
        return [name for name, _ in self.requests]

    @contextmanager
    def fetch(self, url: str) -> Iterator[io.BytesIO]:
        """GET a download URL that GetDownloadUrlForLayer returned."""
        assert url.startswith(DOWNLOAD_HOST + "/"), url
        repository, digest = url.removeprefix(DOWNLOAD_HOST + "/").rsplit("/", 1)
        yield io.BytesIO(self.blobs[(repository, digest)])


def _validate(operation: str, params: dict[str, Any], *, output: bool = False) -> None:
    model = ECR_MODEL.operation_model(operation)
    shape = model.output_shape if output else model.input_shape
    report = ParamValidator().validate(params, shape)
    if report.has_errors():
        raise ParamValidationError(report=report.generate_report())


def push_image(client: Any, repository: str, tag: str | None, *, config: bytes, layers: list[bytes],
               media_type: str = "application/vnd.docker.distribution.manifest.v2+json",
               part_size: int = 8 * MIB) -> str:
    """Push an image the way a client does over the ECR API; returns its manifest text."""
    oci = "oci" in media_type
    config_type = "application/vnd.oci.image.config.v1+json" if oci else \
        "application/vnd.docker.container.image.v1+json"
    layer_type = "application/vnd.oci.image.layer.v1.tar+gzip" if oci else \
        "application/vnd.docker.image.rootfs.diff.tar.gzip"
    for blob in [config, *layers]:
        push_blob(client, repository, blob, part_size=part_size)
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": {"mediaType": config_type, "size": len(config), "digest": sha256_digest(config)},
        "layers": [{"mediaType": layer_type, "size": len(layer), "digest": sha256_digest(layer)}
                   for layer in layers],
    }, indent=3)
    put_manifest(client, repository, tag, manifest, media_type)
    return manifest


def put_manifest(client: Any, repository: str, tag: str | None, manifest: str, media_type: str) -> None:
    params: dict[str, Any] = {"repositoryName": repository, "imageManifest": manifest,
                              "imageManifestMediaType": media_type}
    if tag is not None:
        params["imageTag"] = tag
    client.put_image(**params)


def push_blob(client: Any, repository: str, blob: bytes, *, part_size: int = 8 * MIB) -> None:
    digest = sha256_digest(blob)
    available = client.batch_check_layer_availability(repositoryName=repository, layerDigests=[digest])
    if available["layers"]:
        return
    upload_id = client.initiate_layer_upload(repositoryName=repository)["uploadId"]
    for first in range(0, len(blob), part_size):
        part = blob[first:first + part_size]
        client.upload_layer_part(repositoryName=repository, uploadId=upload_id, partFirstByte=first,
                                 partLastByte=first + len(part) - 1, layerPartBlob=part)
    client.complete_layer_upload(repositoryName=repository, uploadId=upload_id, layerDigests=[digest])
