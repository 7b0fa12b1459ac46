"""The BYOC image copy: its template (role, dependencies, properties) and its handler, run for real
against moto's ECR completed by tests/ecr_double.py."""

from __future__ import annotations

import json
import random
import urllib.error
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from infra.constructs.image_copy import handler as copy_handler
from tests.ecr_double import MIB, EcrDouble, push_blob, push_image, put_manifest, sha256_digest
from tests.helpers import (
    Synthesized,
    actions_by_resource,
    policies_attached_to,
    resources_of_type,
    statements_of,
)

SOURCE = "cdk-hnb659fds-container-assets-123456789012-us-east-1"
DESTINATION = "smtrain-training-images"
TAG = "0f" * 32
ASSET_REPOSITORY_ARN = json.dumps({"Fn::Join": ["", [
    "arn:aws:ecr:us-east-1:", {"Ref": "AWS::AccountId"}, ":repository/",
    {"Fn::Sub": "cdk-hnb659fds-container-assets-${AWS::AccountId}-us-east-1"}]]}, sort_keys=True)


# --- the template -----------------------------------------------------------------------------

def _one(template: dict[str, Any], resource_type: str, prefix: str) -> tuple[str, dict[str, Any]]:
    found = {i: r for i, r in resources_of_type(template, resource_type).items() if i.startswith(prefix)}
    assert len(found) == 1, found
    return next(iter(found.items()))


def _asset_hash(synthesized: Synthesized) -> str:
    manifest = json.loads((synthesized.outdir / "Workflow.assets.json").read_text())
    (image_hash,) = manifest["dockerImages"]
    return str(image_hash)


def _image_tag(directory: Path, include: list[str] | None = None) -> str:
    """The tag :class:`TrainingImage` gives an image built from ``directory`` (its asset hash)."""
    import aws_cdk as cdk
    from aws_cdk import aws_ecr as ecr

    from infra.constructs.training_image import TrainingImage

    stack = cdk.Stack(cdk.App(), "Images", env=cdk.Environment(account="123456789012", region="us-east-1"))
    repository = ecr.Repository(stack, "Repository")
    return TrainingImage(stack, "Image", directory=directory, repository=repository, include=include).image_tag


@pytest.mark.parametrize("include", [None, ["program"]])
def test_the_bytecode_cache_never_changes_the_image(tmp_path: Path, include: list[str] | None) -> None:
    """A BYOC context's ``__pycache__`` (its tests write one beside the code) is neither staged
    nor hashed, whether the context is the program's folder (``context = "."``) or a folder
    above it with ``include``: the image is not rebuilt or re-tagged for it. A real change is."""
    context = tmp_path / "context"
    program = context / "program"
    program.mkdir(parents=True)
    (context / "Dockerfile").write_text("FROM scratch\nCOPY program/ /opt/program/\n")
    (program / "train").write_text("#!/usr/bin/env python3\nprint('training')\n")
    before = _image_tag(context, include)
    for cache in (context / "__pycache__", program / "__pycache__"):
        cache.mkdir()
        (cache / "train.cpython-311.pyc").write_bytes(b"\x00" * 16)
    (program / "stale.pyc").write_bytes(b"\x01" * 16)
    assert _image_tag(context, include) == before
    (program / "train").write_text("#!/usr/bin/env python3\nprint('training again')\n")
    assert _image_tag(context, include) != before


def test_copy_role_may_do_exactly_this(synthesized: Synthesized) -> None:
    template = synthesized.workflow
    role_id, _ = _one(template, "AWS::IAM::Role", "ImageDigitsLightgbmCopyRole")
    log_group_id, _ = _one(template, "AWS::Logs::LogGroup", "ImageDigitsLightgbmCopyLogs")
    (policy_id,) = policies_attached_to(template, role_id)
    repository_arn = json.dumps(template["Resources"][policy_id]["Properties"]["PolicyDocument"]["Statement"][1][
        "Resource"], sort_keys=True)
    assert "TrainingImagesRepository" in repository_arn and "Fn::ImportValue" in repository_arn
    log_group_arn = json.dumps({"Fn::GetAtt": [log_group_id, "Arn"]}, sort_keys=True)
    assert actions_by_resource(statements_of(template, policy_id)) == {
        ("ecr:BatchGetImage", ASSET_REPOSITORY_ARN),
        ("ecr:GetDownloadUrlForLayer", ASSET_REPOSITORY_ARN),
        *((action, repository_arn) for action in (
            "ecr:BatchGetImage", "ecr:BatchCheckLayerAvailability", "ecr:InitiateLayerUpload",
            "ecr:UploadLayerPart", "ecr:CompleteLayerUpload", "ecr:PutImage")),
        ("logs:CreateLogStream", log_group_arn),
        ("logs:PutLogEvents", log_group_arn),
    }, "no ecr:GetAuthorizationToken, no logs:CreateLogGroup, nothing on '*'"


def test_copy_waits_for_its_policy(synthesized: Synthesized) -> None:
    """Finding 12: the policy is its own resource; the copy (and its function) depend on it."""
    template = synthesized.workflow
    policy_id, _ = _one(template, "AWS::IAM::ManagedPolicy", "ImageDigitsLightgbmCopyPolicy")
    _, copy = _one(template, "Custom::EcrImageCopy", "ImageDigitsLightgbmCopyToRepository")
    _, function = _one(template, "AWS::Lambda::Function", "ImageDigitsLightgbmCopyFunction")
    assert policy_id in copy["DependsOn"]
    assert policy_id in function["DependsOn"]


def test_copy_gets_the_asset_and_the_destination(synthesized: Synthesized) -> None:
    template = synthesized.workflow
    function_id, _ = _one(template, "AWS::Lambda::Function", "ImageDigitsLightgbmCopyFunction")
    _, copy = _one(template, "Custom::EcrImageCopy", "ImageDigitsLightgbmCopyToRepository")
    image_hash = _asset_hash(synthesized)
    properties = dict(copy["Properties"])
    destination = properties.pop("DestinationRepositoryName")
    assert "TrainingImagesRepository" in json.dumps(destination) and "Fn::ImportValue" in destination
    assert properties == {
        "ServiceToken": {"Fn::GetAtt": [function_id, "Arn"]},
        "ServiceTimeout": "960",
        "SourceRepositoryName": {"Fn::Sub": "cdk-hnb659fds-container-assets-${AWS::AccountId}-us-east-1"},
        "SourceImageTag": image_hash,
        "DestinationImageTag": image_hash,
        "Platform": "linux/amd64",
    }
    # CloudFormation sends Delete (on destroy, replacement, rollback); the handler ignores it.
    assert copy["DeletionPolicy"] == "Delete"
    # The properties are exactly what the handler reads.
    request = copy_handler.CopyRequest.from_properties(
        {**properties, "SourceRepositoryName": SOURCE, "DestinationRepositoryName": DESTINATION})
    assert request.platform == "linux/amd64" and request.destination_tag == image_hash


def test_copy_function(synthesized: Synthesized) -> None:
    template = synthesized.workflow
    function_id, function = _one(template, "AWS::Lambda::Function", "ImageDigitsLightgbmCopyFunction")
    log_group_id, log_group = _one(template, "AWS::Logs::LogGroup", "ImageDigitsLightgbmCopyLogs")
    role_id, _ = _one(template, "AWS::IAM::Role", "ImageDigitsLightgbmCopyRole")
    props = function["Properties"]
    assert props["Runtime"].startswith("python3.") and props["Handler"] == "handler.handler"
    assert props["Timeout"] == 900 and props["Role"] == {"Fn::GetAtt": [role_id, "Arn"]}
    assert props["LoggingConfig"] == {"LogGroup": {"Ref": log_group_id}}
    assert log_group["Properties"]["RetentionInDays"] > 0
    assert log_group["DeletionPolicy"] == "Delete"
    _, invoke_config = _one(template, "AWS::Lambda::EventInvokeConfig", "ImageDigitsLightgbmCopyFunction")
    assert invoke_config["Properties"]["FunctionName"] == {"Ref": function_id}
    assert invoke_config["Properties"]["MaximumRetryAttempts"] == 0
    # The code asset is the handler alone (no __pycache__ from the tests that import it).
    asset_dir = synthesized.outdir / f"asset.{props['Code']['S3Key'].removesuffix('.zip')}"
    assert sorted(p.name for p in asset_dir.iterdir()) == ["handler.py"]


def test_state_machine_waits_for_the_copy(synthesized: Synthesized) -> None:
    template = synthesized.workflow
    copy_id, _ = _one(template, "Custom::EcrImageCopy", "ImageDigitsLightgbmCopyToRepository")
    (machine,) = resources_of_type(template, "AWS::StepFunctions::StateMachine").values()
    assert copy_id in machine["DependsOn"]
    assert not [i for i, r in template["Resources"].items() if "CDKECRDeployment" in i + r["Type"]]


# --- the handler against ECR ------------------------------------------------------------------

@pytest.fixture
def ecr() -> Iterator[EcrDouble]:
    with EcrDouble(part_size=5 * MIB) as double:
        client = double.client()
        client.create_repository(repositoryName=SOURCE, imageTagMutability="IMMUTABLE")
        client.create_repository(repositoryName=DESTINATION, imageTagMutability="IMMUTABLE")
        double.requests.clear()
        yield double


def _bytes(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


IMAGE_LAYERS = [_bytes(12 * MIB + 123, 1), _bytes(300_000, 2), _bytes(1_000, 3)]
IMAGE_CONFIG = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Entrypoint": ["train"]}}).encode()


def _push_source(ecr: EcrDouble, *, tag: str = TAG, layers: list[bytes] | None = None) -> str:
    manifest = push_image(ecr.client(), SOURCE, tag, config=IMAGE_CONFIG, layers=layers or IMAGE_LAYERS)
    ecr.requests.clear()
    return sha256_digest(manifest.encode())


def _request(**overrides: str) -> copy_handler.CopyRequest:
    properties = {"SourceRepositoryName": SOURCE, "SourceImageTag": TAG, "DestinationRepositoryName": DESTINATION,
                  "DestinationImageTag": TAG, "Platform": "linux/amd64", **overrides}
    return copy_handler.CopyRequest.from_properties(properties)


def _copy(ecr: EcrDouble, request: copy_handler.CopyRequest | None = None, **kwargs: Any) -> str:
    return copy_handler.copy_image(copy_handler.Ecr(ecr.client(), iam_grace_seconds=0), request or _request(),
                                   fetch=ecr.fetch, **kwargs)


def _destination_manifest(ecr: EcrDouble) -> dict[str, Any]:
    (image,) = ecr.client().batch_get_image(repositoryName=DESTINATION, imageIds=[{"imageTag": TAG}])["images"]
    return dict(image)


def test_first_copy(ecr: EcrDouble) -> None:
    digest = _push_source(ecr)
    assert _copy(ecr) == digest
    image = _destination_manifest(ecr)
    assert image["imageId"]["imageDigest"] == digest
    source_manifest = ecr.client().batch_get_image(repositoryName=SOURCE, imageIds=[{"imageTag": TAG}])[
        "images"][0]["imageManifest"]
    assert image["imageManifest"] == source_manifest, "the manifest is copied byte for byte"
    for blob in [IMAGE_CONFIG, *IMAGE_LAYERS]:
        assert ecr.blobs[(DESTINATION, sha256_digest(blob))] == blob
    # Streamed in parts of InitiateLayerUpload's partSize (5 MiB here); only the last is smaller.
    assert sorted(ecr.parts.values(), key=len)[-1] == [5 * MIB, 5 * MIB, 2 * MIB + 123]
    assert ecr.operations().count("PutImage") == 1
    assert "GetAuthorizationToken" not in ecr.operations()


def test_rerun_with_the_same_tag_is_a_no_op(ecr: EcrDouble) -> None:
    """The destroy-then-deploy and rollback case: the tag already holds the same image."""
    digest = _push_source(ecr)
    _copy(ecr)
    ecr.requests.clear()
    assert _copy(ecr) == digest
    assert ecr.operations() == ["BatchGetImage", "BatchGetImage"], "looked up, nothing written"


def test_tag_holding_another_image_fails_with_a_message(ecr: EcrDouble) -> None:
    digest = _push_source(ecr)
    other = push_image(ecr.client(), DESTINATION, TAG, config=b'{"other": true}', layers=[b"other layer"])
    ecr.requests.clear()
    with pytest.raises(copy_handler.CopyError) as failure:
        _copy(ecr)
    message = str(failure.value)
    assert f"{DESTINATION}:{TAG} already holds image {sha256_digest(other.encode())}" in message
    assert digest in message and "immutable" in message and "batch-delete-image" in message
    assert not {"PutImage", "InitiateLayerUpload"} & set(ecr.operations())


def test_missing_source_fails_with_a_message(ecr: EcrDouble) -> None:
    with pytest.raises(copy_handler.CopyError, match=f"The source image {SOURCE}:{TAG} does not exist"):
        _copy(ecr)


def test_missing_source_with_the_tag_already_copied_succeeds(ecr: EcrDouble) -> None:
    """A rollback re-sends old properties whose asset may since have been cleaned up."""
    digest = _push_source(ecr)
    _copy(ecr)
    ecr.client().batch_delete_image(repositoryName=SOURCE, imageIds=[{"imageTag": TAG}])
    assert _copy(ecr) == digest


def test_layers_the_destination_holds_are_not_copied(ecr: EcrDouble) -> None:
    shared_base = IMAGE_LAYERS[0]
    push_image(ecr.client(), DESTINATION, "older", config=b'{"older": 1}', layers=[shared_base])
    _push_source(ecr)
    _copy(ecr)
    assert ecr.operations().count("InitiateLayerUpload") == 3, "config and two layers; the base is there"


def test_delete_makes_no_call(ecr: EcrDouble) -> None:
    def no_ecr() -> copy_handler.Ecr:
        raise AssertionError("Delete must not touch ECR")

    event = {"RequestType": "Delete", "PhysicalResourceId": f"{DESTINATION}:{TAG}",
             "ResourceProperties": {"garbage": "ignored"}}
    assert copy_handler.on_event(event, ecr_factory=no_ecr) == (f"{DESTINATION}:{TAG}", {})
    assert ecr.requests == []


def test_lifecycle_through_events(ecr: EcrDouble) -> None:
    """First deploy, update with new code, rollback to the old tag, destroy, deploy again."""
    properties = {"SourceRepositoryName": SOURCE, "SourceImageTag": TAG, "DestinationRepositoryName": DESTINATION,
                  "DestinationImageTag": TAG, "Platform": "linux/amd64"}
    new_tag = "1a" * 32
    old_digest = _push_source(ecr)
    new_digest = _push_source(ecr, tag=new_tag, layers=[*IMAGE_LAYERS[:2], b"new code"])
    new_properties = {**properties, "SourceImageTag": new_tag, "DestinationImageTag": new_tag}

    def run(request_type: str, props: dict[str, str], physical_id: str | None = None) -> tuple[str, dict[str, str]]:
        event: dict[str, Any] = {"RequestType": request_type, "ResourceProperties": props}
        if physical_id:
            event["PhysicalResourceId"] = physical_id
        return copy_handler.on_event(event, ecr_factory=lambda: copy_handler.Ecr(ecr.client()), fetch=ecr.fetch)

    assert run("Create", properties) == (f"{DESTINATION}:{TAG}", {"ImageDigest": old_digest})
    # Update with new code: a new tag, so a new physical id (a replacement; the old one's Delete
    # is a no-op and the old image stays for a rollback).
    assert run("Update", new_properties, f"{DESTINATION}:{TAG}") == (
        f"{DESTINATION}:{new_tag}", {"ImageDigest": new_digest})
    assert run("Delete", properties, f"{DESTINATION}:{TAG}") == (f"{DESTINATION}:{TAG}", {})
    # Rollback of that update: CloudFormation sends the old properties again.
    assert run("Update", properties, f"{DESTINATION}:{new_tag}") == (
        f"{DESTINATION}:{TAG}", {"ImageDigest": old_digest})
    # cdk destroy, then deploy: Delete does nothing; Create finds the tag and writes nothing.
    run("Delete", properties, f"{DESTINATION}:{TAG}")
    ecr.requests.clear()
    assert run("Create", properties) == (f"{DESTINATION}:{TAG}", {"ImageDigest": old_digest})
    assert "PutImage" not in ecr.operations()
    assert ecr.client().describe_images(repositoryName=DESTINATION)["imageDetails"].__len__() == 2


@pytest.mark.parametrize("same_image_error", ["ImageAlreadyExistsException", "ImageTagAlreadyExistsException"])
def test_a_concurrent_copy_of_the_same_image_counts_as_success(same_image_error: str) -> None:
    with EcrDouble(same_image_error=same_image_error) as ecr:
        for name in (SOURCE, DESTINATION):
            ecr.client().create_repository(repositoryName=name, imageTagMutability="IMMUTABLE")
        digest = _push_source(ecr)
        client = ecr.client()
        _before_put_image(client, lambda: push_image(ecr.client(), DESTINATION, TAG, config=IMAGE_CONFIG,
                                                     layers=IMAGE_LAYERS))
        refusals: list[str] = []
        client.meta.events.register("after-call.ecr.PutImage", lambda parsed, **_: refusals.append(
            parsed.get("Error", {}).get("Code")))
        assert copy_handler.copy_image(copy_handler.Ecr(client), _request(), fetch=ecr.fetch) == digest
        assert refusals == [same_image_error], "ours was refused, the other writer's kept"


def test_a_concurrent_push_of_another_image_fails(ecr: EcrDouble) -> None:
    _push_source(ecr)
    client = ecr.client()
    _before_put_image(client, lambda: push_image(ecr.client(), DESTINATION, TAG, config=b"{}", layers=[b"x"]))
    with pytest.raises(copy_handler.CopyError, match="already holds image"):
        copy_handler.copy_image(copy_handler.Ecr(client), _request(), fetch=ecr.fetch)


def _before_put_image(client: Any, action: Callable[[], object]) -> None:
    """Run ``action`` once, just before ``client`` sends its first PutImage (another writer)."""
    done: list[bool] = []

    def hook(**_: Any) -> None:
        if not done:
            done.append(True)
            action()

    client.meta.events.register("before-call.ecr.PutImage", hook)


def test_a_concurrently_completed_layer_counts_as_uploaded(ecr: EcrDouble) -> None:
    digest = _push_source(ecr)
    client = ecr.client()
    done: list[bool] = []

    def other_writer(**_: Any) -> None:
        if not done:
            done.append(True)
            push_blob(ecr.client(), DESTINATION, IMAGE_CONFIG)

    client.meta.events.register("before-call.ecr.CompleteLayerUpload", other_writer)
    assert copy_handler.copy_image(copy_handler.Ecr(client), _request(), fetch=ecr.fetch, workers=1) == digest


def test_an_image_index_is_resolved_to_the_platform_manifest(ecr: EcrDouble) -> None:
    """BuildKit's default output for one platform: an index with the image and an attestation."""
    client = ecr.client()
    image = push_image(client, SOURCE, None, config=IMAGE_CONFIG, layers=IMAGE_LAYERS[1:],
                       media_type="application/vnd.oci.image.manifest.v1+json")
    attestation = push_image(client, SOURCE, None, config=b'{"attestation": 1}', layers=[b'{"in-toto": 1}'],
                             media_type="application/vnd.oci.image.manifest.v1+json")
    index = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sha256_digest(image.encode()),
         "size": len(image), "platform": {"architecture": "amd64", "os": "linux"}},
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sha256_digest(attestation.encode()),
         "size": len(attestation), "platform": {"architecture": "unknown", "os": "unknown"},
         "annotations": {"vnd.docker.reference.type": "attestation-manifest"}},
    ]})
    put_manifest(client, SOURCE, TAG, index, "application/vnd.oci.image.index.v1+json")
    assert _copy(ecr) == sha256_digest(image.encode())
    copied = _destination_manifest(ecr)
    assert copied["imageManifest"] == image
    assert copied["imageManifestMediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert (DESTINATION, sha256_digest(b'{"in-toto": 1}')) not in ecr.blobs, "the attestation is left behind"
    with pytest.raises(copy_handler.CopyError, match="0 image manifests for linux/arm64"):
        _copy(ecr, _request(Platform="linux/arm64"))


def test_a_broken_download_is_retried(ecr: EcrDouble) -> None:
    digest = _push_source(ecr)
    failures: list[str] = []

    def flaky(url: str) -> AbstractContextManager[copy_handler.Readable]:
        if not failures:
            failures.append(url)
            raise urllib.error.URLError("connection reset")
        return ecr.fetch(url)

    assert copy_handler.copy_image(copy_handler.Ecr(ecr.client()), _request(), fetch=flaky, workers=1) == digest
    assert len(failures) == 1


def test_access_denied_is_retried_while_iam_propagates() -> None:
    denied = ClientError({"Error": {"Code": "AccessDeniedException", "Message": "not yet"}}, "BatchGetImage")
    clock = [0.0]
    calls: list[str] = []

    class Client:
        def batch_get_image(self, **_: Any) -> dict[str, Any]:
            calls.append("call")
            if len(calls) < 3:
                raise denied
            return {"images": []}

    def sleep(seconds: float) -> None:
        clock[0] += seconds

    ecr = copy_handler.Ecr(Client(), iam_grace_seconds=90, sleep=sleep, clock=lambda: clock[0])
    assert ecr.call("batch_get_image") == {"images": []}
    assert len(calls) == 3 and clock[0] == 3.0
    late = copy_handler.Ecr(Client(), iam_grace_seconds=0, sleep=sleep, clock=lambda: clock[0])
    calls.clear()
    with pytest.raises(ClientError):
        late.call("batch_get_image")


@pytest.mark.parametrize(("reported", "used"), [(None, 10 * MIB), (0, 10 * MIB), (MIB, 5 * MIB),
                                                (8 * MIB, 8 * MIB), (64 * MIB, 20 * MIB)])
def test_part_size_keeps_to_the_api_limits(reported: int | None, used: int) -> None:
    assert copy_handler.part_size(reported) == used


def test_properties_are_checked() -> None:
    with pytest.raises(copy_handler.CopyError, match="SourceImageTag"):
        copy_handler.CopyRequest.from_properties({"SourceRepositoryName": SOURCE})
    with pytest.raises(copy_handler.CopyError, match="Platform"):
        _request(Platform="amd64")


# --- the CloudFormation response --------------------------------------------------------------

class _Context:
    log_stream_name = "2026/01/01/[$LATEST]abc"

    def get_remaining_time_in_millis(self) -> int:
        return 900_000


@pytest.fixture
def responses(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    def put(url: str, body: bytes) -> None:
        assert url == "https://cloudformation-custom-resource-response.example/presigned"
        assert len(body) <= 4096
        sent.append(json.loads(body))

    monkeypatch.setattr(copy_handler, "_http_put", put)
    return sent


def _event(request_type: str, **properties: str) -> dict[str, Any]:
    return {"RequestType": request_type, "ResponseURL": "https://cloudformation-custom-resource-response.example/presigned",
            "StackId": "arn:aws:cloudformation:us-east-1:123456789012:stack/smtrain-workflow/guid",
            "RequestId": "request-1", "LogicalResourceId": "ImageDigitsLightgbmCopyToRepository51C2566F",
            "ResourceType": "Custom::EcrImageCopy",
            "ResourceProperties": {"ServiceToken": "arn:aws:lambda:...", "SourceRepositoryName": SOURCE,
                                   "SourceImageTag": TAG, "DestinationRepositoryName": DESTINATION,
                                   "DestinationImageTag": TAG, "Platform": "linux/amd64", **properties}}


def test_handler_answers_success_once(ecr: EcrDouble, responses: list[dict[str, Any]],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    digest = _push_source(ecr)
    monkeypatch.setattr(copy_handler, "default_ecr", lambda: copy_handler.Ecr(ecr.client()))
    monkeypatch.setattr(copy_handler, "open_url", ecr.fetch)
    copy_handler.handler(_event("Create"), _Context())
    (response,) = responses
    assert response == {"Status": "SUCCESS", "Reason": f"See CloudWatch log stream {_Context.log_stream_name}",
                        "PhysicalResourceId": f"{DESTINATION}:{TAG}", "StackId": _event("Create")["StackId"],
                        "RequestId": "request-1", "LogicalResourceId": "ImageDigitsLightgbmCopyToRepository51C2566F",
                        "NoEcho": False, "Data": {"ImageDigest": digest}}


def test_handler_answers_failure_with_the_reason(ecr: EcrDouble, responses: list[dict[str, Any]],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(copy_handler, "default_ecr", lambda: copy_handler.Ecr(ecr.client()))
    copy_handler.handler(_event("Create"), _Context())
    (response,) = responses
    assert response["Status"] == "FAILED"
    assert response["PhysicalResourceId"] == f"{DESTINATION}:{TAG}"
    assert response["Reason"].startswith(f"CopyError: The source image {SOURCE}:{TAG} does not exist")


def test_handler_keeps_the_response_within_4096_bytes(responses: list[dict[str, Any]]) -> None:
    copy_handler.handler(_event("Create", SourceImageTag=""), _Context())
    copy_handler.Responder(_event("Create"), _Context()).send("FAILED", "id", reason="x" * 10_000)
    assert [r["Status"] for r in responses] == ["FAILED", "FAILED"]
    assert "SourceImageTag" in responses[0]["Reason"]
    assert responses[1]["Reason"].endswith("[truncated]")


def test_handler_answers_delete_without_aws(responses: list[dict[str, Any]]) -> None:
    copy_handler.handler({**_event("Delete"), "PhysicalResourceId": f"{DESTINATION}:{TAG}"}, _Context())
    assert [(r["Status"], r["PhysicalResourceId"], r["Data"]) for r in responses] == [
        ("SUCCESS", f"{DESTINATION}:{TAG}", {})]
