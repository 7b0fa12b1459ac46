"""Copy one container image between two ECR repositories of this account, as a CloudFormation
custom resource run by AWS Lambda (Python runtime; the standard library and the runtime's boto3).

Create/Update make ``DestinationRepositoryName:DestinationImageTag`` hold the image that
``SourceRepositoryName:SourceImageTag`` holds, and are idempotent:

- the tag already holds the source's manifest digest: success, nothing is written (a re-deploy
  after ``cdk destroy``, a rollback, a re-run);
- the tag holds another digest: failure that says so (the repository's tags are immutable);
- the tag is absent: the blobs (config and layers) the destination lacks are copied through the
  ECR API alone, then the manifest is put under the tag. A concurrent writer that put the same
  digest first counts as success.

Delete does nothing: the destination repository is retained and its lifecycle policy expires
old images; deleting an image on Delete would break a rollback and every job that names it.

An image index (what BuildKit pushes when it adds provenance attestations, even for one
platform) is resolved to its one child manifest for ``Platform`` (default ``linux/amd64``), and
that image manifest is copied: the destination holds a plain single-platform image, and digests
are compared on that child. No untagged children land in the destination, where its "expire
untagged images" lifecycle rule would have to know about index references.

Sources (every behaviour relied on below cites one of these):

- [API] Amazon ECR API Reference, as machine-readable in botocore's service model
  ``botocore/data/ecr/2015-09-21/service-2.json`` (operation docs, input/output shapes and the
  error shapes each operation lists).
- [FORMATS] Amazon ECR User Guide, "Container image manifest format support": when pulling by
  tag, ECR returns the stored manifest format only if the client accepts it, otherwise it
  converts it (to Docker schema 1); no conversion when pulling by digest.
- [RESOLVER] awslabs/amazon-ecr-containerd-resolver (AWS's ECR-API-only puller and pusher):
  ``ecr/base.go`` passes index and manifest types in ``acceptedMediaTypes``; ``ecr/fetcher.go``
  fetches config blobs and layers alike with ``GetDownloadUrlForLayer``; ``ecr/layer_writer.go``
  uploads in parts of InitiateLayerUpload's ``partSize`` and treats
  ``LayerAlreadyExistsException`` as success; ``ecr/manifest_writer.go`` checks PutImage's digest.
- [CFN] CloudFormation User Guide, "Custom resource response objects" (fields; body at most
  4096 bytes; a changed PhysicalResourceId is a replacement, and the old one gets a Delete) and
  the ``cfn-response`` module (an empty content-type on the PUT to the pre-signed URL).
- [IAM] IAM User Guide, "Troubleshoot IAM": changes are not always immediately visible.
- [BOTO3] boto3 guide, "Multithreading": low-level clients are thread safe.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

LOG = logging.getLogger("image_copy")
LOG.setLevel(logging.INFO)

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
IMAGE_MANIFEST_TYPES = (DOCKER_MANIFEST, OCI_MANIFEST)
INDEX_TYPES = (DOCKER_MANIFEST_LIST, OCI_INDEX)
#: Asked for on every BatchGetImage so that ECR returns the stored manifest unchanged [FORMATS]
#: (the model documents three values; [RESOLVER] sends the index types as well). Schema 1 is
#: left out on purpose: a conversion to it would show as a digest mismatch, and is refused.
ACCEPTED_MEDIA_TYPES = (*IMAGE_MANIFEST_TYPES, *INDEX_TYPES)

MIB = 1024 * 1024
#: [API] UploadLayerPart: "The maximum size of each image layer part can be 20971520 bytes";
#: shape LayerPartBlob has max 20971520.
MAX_PART_SIZE = 20 * MIB
#: [API] LayerPartTooSmallException (listed by CompleteLayerUpload): "Layer parts must be at
#: least 5 MiB in size". It is raised at completion, so (as every push of a small layer needs)
#: the last part may be smaller; every other part is at least this.
MIN_PART_SIZE = 5 * MIB
#: Used when InitiateLayerUpload returns no ``partSize`` ([API]: "The size, in bytes, that Amazon
#: ECR expects future layer part uploads to be"); a returned size is clamped to the rules above.
DEFAULT_PART_SIZE = 10 * MIB
#: [API] BatchCheckLayerAvailability: BatchedOperationLayerDigestList has max 100.
LAYER_CHECK_BATCH = 100
#: Blobs copied at once (one shared client [BOTO3]).
BLOB_WORKERS = 4
#: Attempts per blob when the download from the pre-signed URL breaks off.
BLOB_ATTEMPTS = 3
#: How long AccessDenied is retried after the function starts: the role's policy may be
#: attached but not yet visible [IAM]. The custom resource also depends on the policy.
IAM_GRACE_SECONDS = 90.0
ACCESS_DENIED = frozenset({"AccessDeniedException", "AccessDenied"})
#: [API] PutImage lists both; the model's docs give ImageTagAlreadyExistsException for a tag
#: taken in an immutable repository and ImageAlreadyExistsException for a push "with no changes
#: to the manifest or image tag". Which one a re-push of the same image under an immutable tag
#: gets is reported both ways (aws/aws-sdk#750, aws/containers-roadmap#2179), so both are read
#: the same way: look at what the tag holds now.
TAG_TAKEN = frozenset({"ImageAlreadyExistsException", "ImageTagAlreadyExistsException"})
#: [API] CompleteLayerUpload: "The image layer already exists in the associated repository"
#: (a concurrent copy finished it first) [RESOLVER].
LAYER_EXISTS = "LayerAlreadyExistsException"
#: [CFN] the response body's limit.
RESPONSE_LIMIT = 4096
#: Seconds before the function's timeout at which a still-running copy reports FAILED itself, so
#: that CloudFormation is not left waiting for a response that never comes.
TIMEOUT_MARGIN_SECONDS = 15.0
#: The custom resource's properties and the CopyRequest fields they fill.
PROPERTY_NAMES: Mapping[str, str] = {
    "SourceRepositoryName": "source_repository",
    "SourceImageTag": "source_tag",
    "DestinationRepositoryName": "destination_repository",
    "DestinationImageTag": "destination_tag",
}
NETWORK_ERRORS = (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError)


class CopyError(Exception):
    """A failure whose message is meant for the CloudFormation console."""


class Readable(Protocol):
    def read(self, amount: int, /) -> bytes: ...


Fetch = Callable[[str], AbstractContextManager[Readable]]


def open_url(url: str) -> AbstractContextManager[Readable]:
    """GET a pre-signed URL (no credentials: the signature is in the URL)."""
    response: AbstractContextManager[Readable] = urllib.request.urlopen(url, timeout=120)
    return response


@dataclass(frozen=True)
class CopyRequest:
    """What the custom resource's properties ask for (CloudFormation passes them as strings)."""

    source_repository: str
    source_tag: str
    destination_repository: str
    destination_tag: str
    platform: str = "linux/amd64"

    @classmethod
    def from_properties(cls, properties: Mapping[str, Any]) -> CopyRequest:
        missing = [name for name in PROPERTY_NAMES
                   if not isinstance(properties.get(name), str) or not properties[name]]
        if missing:
            raise CopyError(f"The custom resource needs the properties {', '.join(missing)}")
        platform = properties.get("Platform") or "linux/amd64"
        if not isinstance(platform, str) or len(platform.split("/")) not in (2, 3):
            raise CopyError(f"Platform must read os/architecture[/variant], got {platform!r}")
        values = {field: properties[name] for name, field in PROPERTY_NAMES.items()}
        return cls(platform=platform, **values)

    @property
    def source(self) -> str:
        return f"{self.source_repository}:{self.source_tag}"

    @property
    def destination(self) -> str:
        return f"{self.destination_repository}:{self.destination_tag}"

    @property
    def physical_id(self) -> str:
        """The destination reference: a new tag is a replacement [CFN], whose Delete is a no-op."""
        return self.destination


@dataclass(frozen=True)
class Manifest:
    body: str
    media_type: str
    digest: str


@dataclass(frozen=True)
class Blob:
    digest: str
    size: int


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


class Ecr:
    """The ECR calls the copy makes, through one boto3 client; AccessDenied is retried until
    ``iam_grace_seconds`` after construction (IAM propagation [IAM]), everything else is not."""

    def __init__(self, client: Any, *, iam_grace_seconds: float = IAM_GRACE_SECONDS,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.client = client
        self._sleep = sleep
        self._clock = clock
        self._grace_until = clock() + iam_grace_seconds

    def call(self, operation: str, **params: Any) -> dict[str, Any]:
        delay = 1.0
        while True:
            try:
                response: dict[str, Any] = getattr(self.client, operation)(**params)
                return response
            except ClientError as error:
                if error_code(error) not in ACCESS_DENIED or self._clock() + delay > self._grace_until:
                    raise
                LOG.warning("%s: access denied, retrying in %.0f s (IAM changes propagate)", operation, delay)
                self._sleep(delay)
                delay = min(delay * 2, 10.0)


def default_ecr() -> Ecr:
    config = Config(retries={"mode": "standard", "max_attempts": 10}, connect_timeout=10,
                    read_timeout=120, max_pool_connections=2 * BLOB_WORKERS)
    return Ecr(boto3.client("ecr", config=config))


def get_manifest(ecr: Ecr, repository: str, image_id: Mapping[str, str]) -> Manifest | None:
    """The manifest ``image_id`` names in ``repository``, exactly as stored; None if absent."""
    response = ecr.call("batch_get_image", repositoryName=repository, imageIds=[dict(image_id)],
                        acceptedMediaTypes=list(ACCEPTED_MEDIA_TYPES))
    for image in response.get("images", []):
        body: str = image["imageManifest"]
        digest: str = image["imageId"]["imageDigest"]
        # [API] ImageIdentifier.imageDigest is "The sha256 digest of the image manifest": if the
        # text differs, ECR converted the manifest [FORMATS] and a copy would not be the image.
        if sha256_digest(body.encode("utf-8")) != digest:
            raise CopyError(f"ECR returned a manifest for {repository} {image_id} whose sha256 is not its "
                            f"digest {digest}: it was converted (unsupported manifest format?)")
        media_type = image.get("imageManifestMediaType") or json.loads(body).get("mediaType")
        if not media_type:
            raise CopyError(f"The manifest of {repository} {image_id} declares no media type")
        return Manifest(body=body, media_type=str(media_type), digest=digest)
    failures = response.get("failures", [])
    # [API] ImageFailureCode "ImageNotFound": the tag or digest is not in the repository.
    if all(failure.get("failureCode") == "ImageNotFound" for failure in failures):
        return None
    details = "; ".join(f"{f.get('failureCode')}: {f.get('failureReason')}" for f in failures)
    raise CopyError(f"Cannot read {repository} {image_id}: {details}")


def _platform_child(index: Manifest, platform: str, where: str) -> str:
    os_name, architecture, *variant = platform.split("/")
    children = json.loads(index.body).get("manifests", [])

    def matches(child: Mapping[str, Any]) -> bool:
        child_platform = child.get("platform") or {}
        return (child.get("mediaType") in IMAGE_MANIFEST_TYPES
                and child_platform.get("os") == os_name
                and child_platform.get("architecture") == architecture
                and (not variant or child_platform.get("variant") == variant[0]))

    # Attestation manifests carry platform unknown/unknown, so they never match.
    found = [str(child["digest"]) for child in children if matches(child)]
    if len(found) != 1:
        listed = sorted({"/".join(str(v) for v in (c.get("platform") or {}).values()) for c in children})
        raise CopyError(f"The image index {where} has {len(found)} image manifests for {platform} "
                        f"(platforms: {', '.join(listed) or 'none'}); exactly one is needed")
    return found[0]


def resolve_source(ecr: Ecr, request: CopyRequest) -> Manifest | None:
    """The source's image manifest (an index resolved to the platform's child); None if the
    source tag is absent."""
    found = get_manifest(ecr, request.source_repository, {"imageTag": request.source_tag})
    if found is None:
        return None
    if found.media_type in INDEX_TYPES:
        child_digest = _platform_child(found, request.platform, request.source)
        child = get_manifest(ecr, request.source_repository, {"imageDigest": child_digest})
        if child is None:
            raise CopyError(f"The image index {request.source} names {child_digest}, which the "
                            "repository does not hold")
        LOG.info("%s is an image index; copying its %s manifest %s", request.source, request.platform,
                 child_digest)
        found = child
    if found.media_type not in IMAGE_MANIFEST_TYPES:
        raise CopyError(f"{request.source} is a {found.media_type}; only {', '.join(IMAGE_MANIFEST_TYPES)} "
                        "(or an index of them) can be copied")
    return found


def blobs_of(manifest: Manifest) -> list[Blob]:
    """The config and layer blobs of an image manifest, each once, in manifest order."""
    parsed = json.loads(manifest.body)
    blobs: dict[str, Blob] = {}
    for descriptor in [parsed["config"], *parsed.get("layers", [])]:
        digest = str(descriptor["digest"])
        if descriptor.get("urls"):
            raise CopyError(f"Layer {digest} is a foreign layer (stored outside the registry); not supported")
        if not digest.startswith("sha256:"):
            raise CopyError(f"Blob {digest} is not a sha256 digest; not supported")
        blobs.setdefault(digest, Blob(digest=digest, size=int(descriptor["size"])))
    return list(blobs.values())


def missing_blobs(ecr: Ecr, repository: str, blobs: Sequence[Blob]) -> list[Blob]:
    """The blobs ``repository`` does not hold (BatchCheckLayerAvailability)."""
    available: set[str] = set()
    for start in range(0, len(blobs), LAYER_CHECK_BATCH):
        batch = blobs[start:start + LAYER_CHECK_BATCH]
        response = ecr.call("batch_check_layer_availability", repositoryName=repository,
                            layerDigests=[blob.digest for blob in batch])
        # [API] LayerAvailability: AVAILABLE | UNAVAILABLE | ARCHIVED; only AVAILABLE is usable.
        available |= {layer["layerDigest"] for layer in response.get("layers", [])
                      if layer.get("layerAvailability") == "AVAILABLE"}
        # [API] LayerFailureCode: InvalidLayerDigest | MissingLayerDigest (absent: copy it).
        bad = [f for f in response.get("failures", []) if f.get("failureCode") != "MissingLayerDigest"]
        if bad:
            raise CopyError("Cannot check layers in " + repository + ": " + "; ".join(
                f"{f.get('layerDigest')} {f.get('failureCode')}: {f.get('failureReason')}" for f in bad))
    return [blob for blob in blobs if blob.digest not in available]


def part_size(reported: int | None) -> int:
    return max(MIN_PART_SIZE, min(MAX_PART_SIZE, reported or DEFAULT_PART_SIZE))


def _read_up_to(stream: Readable, amount: int) -> bytes:
    chunks: list[bytes] = []
    remaining = amount
    while remaining > 0:
        chunk = stream.read(remaining)
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _upload_blob(ecr: Ecr, request: CopyRequest, blob: Blob, fetch: Fetch) -> None:
    source = ecr.call("get_download_url_for_layer", repositoryName=request.source_repository,
                      layerDigest=blob.digest)
    upload = ecr.call("initiate_layer_upload", repositoryName=request.destination_repository)
    upload_id: str = upload["uploadId"]
    size = part_size(upload.get("partSize"))
    hasher = hashlib.sha256()
    offset = 0
    with fetch(source["downloadUrl"]) as stream:
        while part := _read_up_to(stream, size):
            hasher.update(part)
            # [API] UploadLayerPart: partFirstByte/partLastByte are positions within the layer
            # (inclusive); InvalidLayerPartException if "the first byte specified is not
            # consecutive to the last byte of a previous layer part upload".
            ecr.call("upload_layer_part", repositoryName=request.destination_repository, uploadId=upload_id,
                     partFirstByte=offset, partLastByte=offset + len(part) - 1, layerPartBlob=part)
            offset += len(part)
    if offset == 0:
        # [API] EmptyUploadException: "The specified layer upload does not contain any layer parts."
        raise CopyError(f"Blob {blob.digest} is empty; ECR accepts no empty layer upload")
    received = "sha256:" + hasher.hexdigest()
    if offset != blob.size or received != blob.digest:
        raise CopyError(f"Downloaded {offset} bytes with digest {received} for blob {blob.digest} "
                        f"of {blob.size} bytes")
    try:
        done = ecr.call("complete_layer_upload", repositoryName=request.destination_repository,
                        uploadId=upload_id, layerDigests=[blob.digest])
    except ClientError as error:
        if error_code(error) != LAYER_EXISTS:
            raise
        LOG.info("blob %s: already completed by another upload", blob.digest)
        return
    # [API] InvalidLayerException: ECR computes the digest itself; it must be the one we claimed.
    if done.get("layerDigest") != blob.digest:
        raise CopyError(f"ECR stored blob {blob.digest} as {done.get('layerDigest')}")


def copy_blob(ecr: Ecr, request: CopyRequest, blob: Blob, fetch: Fetch) -> None:
    """Stream one blob from the source's pre-signed URL into a layer upload in the destination,
    in parts of at most ``MAX_PART_SIZE`` (memory stays at one part per worker)."""
    for attempt in range(1, BLOB_ATTEMPTS + 1):
        try:
            _upload_blob(ecr, request, blob, fetch)
            LOG.info("blob %s: copied (%d bytes)", blob.digest, blob.size)
            return
        except NETWORK_ERRORS as error:
            if attempt == BLOB_ATTEMPTS:
                raise CopyError(f"Downloading blob {blob.digest} failed {attempt} times: {error}") from error
            LOG.warning("blob %s: download failed (%s), attempt %d of %d", blob.digest, error, attempt,
                        BLOB_ATTEMPTS)


def _copy_blobs(ecr: Ecr, request: CopyRequest, blobs: Sequence[Blob], fetch: Fetch, workers: int) -> None:
    if not blobs:
        return
    pool = ThreadPoolExecutor(max_workers=max(1, min(workers, len(blobs))))
    futures: list[Future[None]] = [pool.submit(copy_blob, ecr, request, blob, fetch) for blob in blobs]
    try:
        for future in futures:
            future.result()
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def _tag_holds_other_image(request: CopyRequest, source_digest: str, existing_digest: str) -> CopyError:
    return CopyError(
        f"{request.destination} already holds image {existing_digest}, but the source {request.source} is "
        f"{source_digest}. The repository's tags are immutable, so the copy cannot replace it. The tag is the "
        "asset hash of the build context: the same sources were built again (after `cdk gc` or a new bootstrap "
        "emptied the asset repository) or the tag was pushed by hand. Delete that image "
        f"(aws ecr batch-delete-image --repository-name {request.destination_repository} "
        f"--image-ids imageTag={request.destination_tag}) and deploy again.")


def put_manifest(ecr: Ecr, request: CopyRequest, source: Manifest) -> None:
    try:
        # [API] PutImage: imageManifestMediaType is needed when the manifest has no mediaType;
        # imageDigest makes ECR check the manifest against it (ImageDigestDoesNotMatchException).
        response = ecr.call("put_image", repositoryName=request.destination_repository,
                            imageManifest=source.body, imageManifestMediaType=source.media_type,
                            imageTag=request.destination_tag, imageDigest=source.digest)
    except ClientError as error:
        if error_code(error) not in TAG_TAKEN:
            raise
        existing = get_manifest(ecr, request.destination_repository, {"imageTag": request.destination_tag})
        if existing is not None and existing.digest == source.digest:
            LOG.info("%s: another writer put the same image first (%s)", request.destination, error_code(error))
            return
        raise _tag_holds_other_image(request, source.digest, existing.digest if existing else "unknown") from error
    stored = response["image"]["imageId"]["imageDigest"]
    if stored != source.digest:
        raise CopyError(f"ECR stored {request.destination} as {stored}, expected {source.digest}")


def copy_image(ecr: Ecr, request: CopyRequest, *, fetch: Fetch = open_url, workers: int = BLOB_WORKERS) -> str:
    """Make the destination tag hold the source image; returns its manifest digest."""
    source = resolve_source(ecr, request)
    existing = get_manifest(ecr, request.destination_repository, {"imageTag": request.destination_tag})
    if source is None:
        if existing is not None:
            # A rollback re-sends the old properties; its asset may have been cleaned from the
            # asset repository since. The tag (an asset hash) is already here: keep it.
            LOG.warning("%s is gone from the asset repository, but %s already holds %s: keeping it",
                        request.source, request.destination, existing.digest)
            return existing.digest
        raise CopyError(
            f"The source image {request.source} does not exist. `cdk deploy` publishes it to the CDK asset "
            "repository before it updates the stack: deploy again with Docker available, and check that "
            "nothing (cdk gc, a lifecycle rule) deleted it in between.")
    if existing is not None:
        if existing.digest == source.digest:
            LOG.info("%s already holds %s: nothing to copy", request.destination, source.digest)
            return source.digest
        raise _tag_holds_other_image(request, source.digest, existing.digest)
    missing = missing_blobs(ecr, request.destination_repository, blobs_of(source))
    LOG.info("copying %s (%s) to %s: %d blobs missing there", request.source, source.digest,
             request.destination, len(missing))
    _copy_blobs(ecr, request, missing, fetch, workers)
    put_manifest(ecr, request, source)
    LOG.info("%s now holds %s", request.destination, source.digest)
    return source.digest


def on_event(event: Mapping[str, Any], *, ecr_factory: Callable[[], Ecr] | None = None,
             fetch: Fetch | None = None) -> tuple[str, dict[str, str]]:
    """Handle one CloudFormation request; returns (PhysicalResourceId, Data). Delete makes no
    AWS call at all."""
    request_type = event.get("RequestType")
    if request_type == "Delete":
        LOG.info("Delete of %s: nothing to do. The image stays in the retained repository, whose "
                 "lifecycle policy expires old images.", event.get("PhysicalResourceId"))
        return str(event["PhysicalResourceId"]), {}
    if request_type not in ("Create", "Update"):
        raise CopyError(f"Unknown RequestType {request_type!r}")
    request = CopyRequest.from_properties(event.get("ResourceProperties") or {})
    digest = copy_image((ecr_factory or default_ecr)(), request, fetch=fetch or open_url)
    return request.physical_id, {"ImageDigest": digest}


def _http_put(url: str, body: bytes) -> None:
    # [CFN] cfn-response PUTs the JSON with an empty content-type to the pre-signed URL.
    put = urllib.request.Request(url, data=body, method="PUT",
                                 headers={"Content-Type": "", "Content-Length": str(len(body))})
    with urllib.request.urlopen(put, timeout=30) as response:
        response.read()


class Responder:
    """Sends the one response CloudFormation waits for, at most once."""

    def __init__(self, event: Mapping[str, Any], context: Any) -> None:
        self._event = event
        self._context = context
        self._lock = threading.Lock()
        self.sent: dict[str, Any] | None = None

    def send(self, status: str, physical_id: str, *, reason: str = "", data: Mapping[str, str] | None = None) -> None:
        with self._lock:
            if self.sent is not None:
                return
            body = self.body(status, physical_id, reason=reason, data=data)
            for attempt in range(1, 4):
                try:
                    _http_put(str(self._event["ResponseURL"]), json.dumps(body).encode("utf-8"))
                    break
                except NETWORK_ERRORS as error:
                    LOG.warning("sending the response failed (%s), attempt %d", error, attempt)
                    time.sleep(attempt)
            self.sent = body

    def body(self, status: str, physical_id: str, *, reason: str,
             data: Mapping[str, str] | None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "Status": status,
            "Reason": reason or f"See CloudWatch log stream {getattr(self._context, 'log_stream_name', '?')}",
            "PhysicalResourceId": physical_id,
            "StackId": self._event["StackId"],
            "RequestId": self._event["RequestId"],
            "LogicalResourceId": self._event["LogicalResourceId"],
            "NoEcho": False,
            "Data": dict(data or {}),
        }
        excess = len(json.dumps(body).encode("utf-8")) - RESPONSE_LIMIT
        if excess > 0:
            body["Reason"] = body["Reason"][: max(0, len(body["Reason"]) - excess - 16)] + " [truncated]"
        return body


def _failure_physical_id(event: Mapping[str, Any], context: Any) -> str:
    if event.get("PhysicalResourceId"):
        return str(event["PhysicalResourceId"])
    try:
        return CopyRequest.from_properties(event.get("ResourceProperties") or {}).physical_id
    except CopyError:
        return str(getattr(context, "log_stream_name", "image-copy"))


def handler(event: Mapping[str, Any], context: Any) -> None:
    """Lambda entry point. CloudFormation invokes it asynchronously and waits for the response
    at ``ResponseURL``; every outcome, a timeout included, sends one."""
    LOG.info("%s %s %s", event.get("RequestType"), event.get("LogicalResourceId"),
             json.dumps(event.get("ResourceProperties", {}), sort_keys=True))
    responder = Responder(event, context)
    remaining = context.get_remaining_time_in_millis() / 1000.0 - TIMEOUT_MARGIN_SECONDS
    guard = threading.Timer(max(remaining, 0.0), lambda: responder.send(
        "FAILED", _failure_physical_id(event, context),
        reason="The image copy did not finish within the function's timeout; deploy again to resume it "
               "(blobs already copied are skipped)."))
    guard.daemon = True
    guard.start()
    try:
        physical_id, data = on_event(event)
    except Exception as error:
        LOG.exception("%s failed", event.get("RequestType"))
        responder.send("FAILED", _failure_physical_id(event, context), reason=f"{type(error).__name__}: {error}")
    else:
        responder.send("SUCCESS", physical_id, data=data)
    finally:
        guard.cancel()
