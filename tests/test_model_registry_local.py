"""The offline model registry (smtrain.local.model_registry): versions, idempotency, refusals,
the shapes of its answers (botocore's SageMaker model) and concurrent creates."""

from __future__ import annotations

import json
import multiprocessing
import re
import threading
from pathlib import Path
from typing import Any

import pytest

from smtrain.core import contract
from smtrain.local.backend import SageMakerError
from smtrain.local.model_registry import LocalModelRegistry
from smtrain.local.sagemaker_model import request_violations, response_violations

GROUP = "smtrain-digits-mlp"
ARN_PREFIX = "arn:aws:sagemaker:us-east-1:123456789012:model-package/"


def registration(group: str = GROUP, *, job: str = "digits-mlp-job-1", **extra: Any) -> dict[str, Any]:
    """A CreateModelPackage request like the one the workflow sends for a trained model."""
    request: dict[str, Any] = {
        "ModelPackageGroupName": group,
        "ModelPackageDescription": "digits_mlp: validation:accuracy 0.97",
        "InferenceSpecification": {
            "Containers": [{
                "Image": "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.5-cpu-py311",
                "ModelDataUrl": f"s3://smtrain-artifacts/models/{job}/output/model.tar.gz",
            }],
            "SupportedContentTypes": ["application/json"],
            "SupportedResponseMIMETypes": ["application/json"],
        },
        "ModelMetrics": {"ModelQuality": {"Statistics": {
            "ContentType": "application/json",
            "S3Uri": "s3://smtrain-artifacts/model-quality/run-1.json"}}},
        "CustomerMetadataProperties": {
            contract.METADATA_PROGRAM: "digits_mlp", contract.METADATA_TRAINING_JOB: job,
            contract.METADATA_EXECUTION: "run-1", "hp:epochs": "10"},
        "MetadataProperties": {"GeneratedBy": "arn:aws:states:us-east-1:123456789012:execution:sm:run-1"},
        "ModelApprovalStatus": contract.PENDING_APPROVAL,
    }
    request.update(extra)
    assert request_violations("CreateModelPackage", request) == []
    return request


@pytest.fixture
def registry(tmp_path: Path) -> LocalModelRegistry:
    return LocalModelRegistry(tmp_path / "registry", groups=[GROUP, "smtrain-digits-xgboost"])


def test_versions_number_from_one_per_group(registry: LocalModelRegistry) -> None:
    arns = [registry.create_model_package(registration(job=f"job-{i}"))["ModelPackageArn"]
            for i in range(3)]
    other = registry.create_model_package(registration("smtrain-digits-xgboost"))["ModelPackageArn"]
    assert arns == [f"{ARN_PREFIX}{GROUP}/{n}" for n in (1, 2, 3)]
    assert other == f"{ARN_PREFIX}smtrain-digits-xgboost/1"
    files = sorted(p.relative_to(registry.root).as_posix() for p in registry.root.rglob("*.json"))
    assert files == [f"{GROUP}/1.json", f"{GROUP}/2.json", f"{GROUP}/3.json",
                     "smtrain-digits-xgboost/1.json"]
    assert not list(registry.root.rglob("*.tmp"))


def test_arn_spells_the_group_in_lower_case(tmp_path: Path) -> None:
    registry = LocalModelRegistry(tmp_path, region="eu-west-1", account="111122223333")
    arn = registry.create_model_package(registration("Digits-Model"))["ModelPackageArn"]
    assert arn == "arn:aws:sagemaker:eu-west-1:111122223333:model-package/digits-model/1"
    # Names are unique regardless of case: the same group, version 2.
    again = registry.create_model_package(registration("digits-model"))["ModelPackageArn"]
    assert again.endswith("/digits-model/2")
    assert registry.describe_model_package(arn)["ModelPackageGroupName"] == "Digits-Model"


def test_the_same_client_token_creates_one_version(registry: LocalModelRegistry) -> None:
    first = registry.create_model_package(registration(ClientToken="run-1-attempt"))
    repeat = registry.create_model_package(registration(ClientToken="run-1-attempt"))
    other = registry.create_model_package(registration(ClientToken="run-2-attempt"))
    assert first == repeat == {"ModelPackageArn": f"{ARN_PREFIX}{GROUP}/1"}
    assert other == {"ModelPackageArn": f"{ARN_PREFIX}{GROUP}/2"}
    # The token belongs to a group: the same token elsewhere is another version.
    elsewhere = registry.create_model_package(
        registration("smtrain-digits-xgboost", ClientToken="run-1-attempt"))
    assert elsewhere["ModelPackageArn"].endswith("/smtrain-digits-xgboost/1")
    assert len(registry.list_model_packages(GROUP)) == 2


def test_an_unknown_group_is_refused(registry: LocalModelRegistry) -> None:
    with pytest.raises(SageMakerError) as error:
        registry.create_model_package(registration("smtrain-nothing"))
    assert error.value.code == "ValidationException"
    assert "Model Package Group smtrain-nothing does not exist" in error.value.message
    assert not (registry.root / "smtrain-nothing").exists()


def test_a_group_may_be_named_by_its_arn(registry: LocalModelRegistry) -> None:
    group_arn = f"arn:aws:sagemaker:us-east-1:123456789012:model-package-group/{GROUP}"
    arn = registry.create_model_package(registration(group_arn))["ModelPackageArn"]
    assert arn == f"{ARN_PREFIX}{GROUP}/1"
    assert registry.describe_model_package(arn)["ModelPackageGroupName"] == GROUP


@pytest.mark.parametrize(("request_change", "message"), [
    # Refused by smtrain.local.sagemaker_rules (the API reference's prose) or by the registry.
    ({"ModelPackageGroupName": None, "ModelPackageName": "my-model", "ModelApprovalStatus": None},
     "ModelPackageName"),
    ({"ModelPackageName": "my-model"}, "ModelPackageName"),
    ({"ModelPackageGroupName": None}, "ModelPackageGroupName|Missing ARN"),
    ({"ModelApprovalStatus": "Maybe"}, "Member must satisfy enum value set"),
    ({"ModelPackageGroupName": "smtrain_digits_mlp"}, "regular expression pattern"),
    ({"ModelPackageDescription": "x" * 1025}, "length less than or equal to 1024"),
    ({"Bogus": 1}, "Unknown parameter"),
])
def test_requests_aws_refuses_are_refused(registry: LocalModelRegistry, request_change: dict[str, Any],
                                           message: str) -> None:
    request = registration()
    for key, value in request_change.items():
        if value is None:
            request.pop(key)
        else:
            request[key] = value
    with pytest.raises(SageMakerError) as error:
        registry.create_model_package(request)
    assert error.value.code == "ValidationException"
    assert re.search(message, error.value.message), error.value.message
    assert not list(registry.root.rglob("*.json"))


def test_describe_gives_back_the_registration(registry: LocalModelRegistry) -> None:
    request = registration()
    arn = registry.create_model_package(request)["ModelPackageArn"]
    description = registry.describe_model_package(arn)
    assert response_violations("DescribeModelPackage", description) == []
    assert description == registry.describe_model_package(f"{GROUP}/1")
    for member in ("ModelPackageDescription", "InferenceSpecification", "ModelMetrics",
                   "CustomerMetadataProperties", "MetadataProperties"):
        assert description[member] == request[member]
    assert description["ModelPackageName"] == GROUP
    assert description["ModelPackageGroupName"] == GROUP
    assert description["ModelPackageVersion"] == 1
    assert description["ModelPackageArn"] == arn
    assert description["ModelPackageStatus"] == "Completed"
    assert description["ModelApprovalStatus"] == contract.PENDING_APPROVAL
    assert "ClientToken" not in description and "ApprovalDescription" not in description
    # The time is ISO 8601 in UTC, as the local backend answers.
    assert description["CreationTime"].endswith("+00:00")


def test_the_approval_status_defaults_to_pending(registry: LocalModelRegistry) -> None:
    request = registration()
    del request["ModelApprovalStatus"]
    arn = registry.create_model_package(request)["ModelPackageArn"]
    assert registry.describe_model_package(arn)["ModelApprovalStatus"] == contract.PENDING_APPROVAL


@pytest.mark.parametrize("name", [
    f"{ARN_PREFIX}{GROUP}/9",
    f"{ARN_PREFIX}smtrain-nothing/1",
    "arn:aws:sagemaker:eu-west-1:123456789012:model-package/smtrain-digits-mlp/1",
    f"{GROUP}/9",
    GROUP,
])
def test_describing_what_does_not_exist(registry: LocalModelRegistry, name: str) -> None:
    registry.create_model_package(registration())
    with pytest.raises(SageMakerError) as error:
        registry.describe_model_package(name)
    assert error.value.code == "ValidationException"
    assert error.value.message == f"ModelPackage {name} does not exist."


def test_list_newest_first_with_a_status_filter(registry: LocalModelRegistry) -> None:
    for i in range(3):
        registry.create_model_package(registration(job=f"job-{i}"))
    registry.create_model_package(registration("smtrain-digits-xgboost"))
    registry.update_model_package({"ModelPackageArn": f"{ARN_PREFIX}{GROUP}/2",
                                   "ModelApprovalStatus": contract.APPROVED})
    everything = registry.list_model_packages()
    assert [s["ModelPackageArn"].removeprefix(ARN_PREFIX) for s in everything] == [
        "smtrain-digits-xgboost/1", f"{GROUP}/3", f"{GROUP}/2", f"{GROUP}/1"]
    answer = {"ModelPackageSummaryList": everything}
    assert response_violations("ListModelPackages", answer) == []
    assert [s["ModelPackageVersion"] for s in registry.list_model_packages(GROUP)] == [3, 2, 1]
    approved = registry.list_model_packages(GROUP, approval_status=contract.APPROVED)
    assert [s["ModelPackageVersion"] for s in approved] == [2]
    assert registry.list_model_packages(approval_status=contract.REJECTED) == []
    with pytest.raises(SageMakerError, match="Model Package Group smtrain-nothing does not exist"):
        registry.list_model_packages("smtrain-nothing")
    assert LocalModelRegistry(registry.root / "empty").list_model_packages() == []


def test_approval_transitions(registry: LocalModelRegistry) -> None:
    arn = registry.create_model_package(registration())["ModelPackageArn"]
    created = registry.describe_model_package(arn)
    steps = [(contract.APPROVED, "metrics reviewed"), (contract.REJECTED, "drift found"),
             (contract.PENDING_APPROVAL, "re-evaluate"), (contract.APPROVED, "fixed")]
    for status, reason in steps:
        answer = registry.update_model_package({"ModelPackageArn": arn, "ModelApprovalStatus": status,
                                                "ApprovalDescription": reason})
        assert answer == {"ModelPackageArn": arn}
        assert response_violations("UpdateModelPackage", answer) == []
        description = registry.describe_model_package(arn)
        assert (description["ModelApprovalStatus"], description["ApprovalDescription"]) == (status, reason)
        assert response_violations("DescribeModelPackage", description) == []
    assert description["CreationTime"] == created["CreationTime"]
    assert description["LastModifiedTime"] >= created["LastModifiedTime"]
    # Everything else is as registered.
    assert description["CustomerMetadataProperties"] == created["CustomerMetadataProperties"]


@pytest.mark.parametrize(("request_change", "message"), [
    ({"ModelApprovalStatus": "Maybe"}, "enum value set"),
    ({"ApprovalDescription": "x" * 1025}, "length less than or equal to 1024"),
    ({"ModelPackageArn": "not-an-arn"}, "regular expression pattern"),
    ({"ModelPackageArn": f"{ARN_PREFIX}{GROUP}/7"}, "does not exist"),
    ({"CustomerMetadataProperties": {"k": "v"}}, "cannot be updated offline"),
])
def test_updates_aws_or_the_registry_refuses(registry: LocalModelRegistry, request_change: dict[str, Any],
                                             message: str) -> None:
    arn = registry.create_model_package(registration())["ModelPackageArn"]
    before = (registry.root / GROUP / "1.json").read_text()
    request = {"ModelPackageArn": arn, "ModelApprovalStatus": contract.APPROVED, **request_change}
    with pytest.raises(SageMakerError) as error:
        registry.update_model_package(request)
    assert error.value.code == "ValidationException"
    assert message in error.value.message
    assert (registry.root / GROUP / "1.json").read_text() == before


def test_concurrent_creates_in_threads_get_distinct_versions(registry: LocalModelRegistry) -> None:
    arns: list[str] = []
    errors: list[BaseException] = []

    def create(index: int) -> None:
        try:
            arns.append(registry.create_model_package(registration(job=f"job-{index}"))["ModelPackageArn"])
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=create, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(arns) == sorted(f"{ARN_PREFIX}{GROUP}/{n}" for n in range(1, 17))


def _create_in_process(root: str, index: int, token: str | None) -> str:
    registry = LocalModelRegistry(Path(root), groups=[GROUP])
    extra = {"ClientToken": token} if token else {}
    return str(registry.create_model_package(registration(job=f"job-{index}", **extra))["ModelPackageArn"])


def test_concurrent_creates_across_processes(tmp_path: Path) -> None:
    """An engine and a CLI (two processes) share one registry: no version is lost or doubled,
    and one ClientToken sent from several processes at once still makes one version."""
    root = str(tmp_path / "registry")
    context = multiprocessing.get_context("spawn")
    with context.Pool(4) as pool:
        distinct = pool.starmap(_create_in_process, [(root, i, None) for i in range(8)])
        same_token = pool.starmap(_create_in_process, [(root, 100 + i, "one-token") for i in range(4)])
    assert sorted(distinct) == sorted(f"{ARN_PREFIX}{GROUP}/{n}" for n in range(1, 9))
    assert set(same_token) == {f"{ARN_PREFIX}{GROUP}/9"}
    stored = sorted(int(p.stem) for p in (tmp_path / "registry" / GROUP).glob("*.json"))
    assert stored == list(range(1, 10))
    for path in (tmp_path / "registry" / GROUP).glob("*.json"):
        json.loads(path.read_text())  # every file whole


def test_an_approval_outlives_the_next_demo(synthesized: Any, tmp_path: Path) -> None:
    """`make demo` twice keeps what the first left: the work dir is not emptied, and a version
    approved between the two demos is still approved, beside the new one (issue: approvals made
    in .work/demo were gone on the next demo)."""
    import os
    import subprocess
    import sys

    from smtrain.local import demo as make_demo
    from tests.conftest import ROOT
    from tests.helpers import run_cli, run_main

    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SMTRAIN_"))}
    assert synthesized.training_code is not None
    env["SMTRAIN_TRAINING_CODE"] = str(synthesized.training_code)
    work = tmp_path / "demo"

    def demo(*, in_process: bool) -> subprocess.CompletedProcess[str]:
        """`make demo`'s program: as its own process (the first, a smoke test of `python -m
        smtrain.local.demo`), or its ``main`` in this process (the second: the same code)."""
        args = ["--program", "digits_xgboost", "--tuning-jobs", "0", "--outdir", str(synthesized.outdir),
                "--work-dir", str(work)]
        if in_process:
            result = run_main(make_demo.main, ["python", "-m", "smtrain.local.demo"], args, env=env, cwd=ROOT)
        else:
            result = subprocess.run([sys.executable, "-m", "smtrain.local.demo", *args],
                                    capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        return result

    def versions() -> list[dict[str, Any]]:
        listed = run_cli(["models", "list", "--local", "--work-dir", str(work), "--json"], env=env, cwd=ROOT)
        assert listed.returncode == 0, listed.stderr
        found: list[dict[str, Any]] = json.loads(listed.stdout)
        return found

    first_demo = demo(in_process=False).stdout
    assert "kept from earlier demos" not in first_demo
    # Each run's cost as the state machine reckoned it (the shipped table has no price).
    assert re.search(r"\n  cost:        unknown \(\d+ s billable x 1 ml\.m5\.xlarge; no price", first_demo), first_demo
    (first,) = versions()
    approved = run_cli(["models", "approve", "--local", "--work-dir", str(work), "--reason", "good enough",
                        first["arn"]], env=env, cwd=ROOT)
    assert approved.returncode == 0, approved.stderr
    again = demo(in_process=True)
    assert "kept from earlier demos (1 training jobs" in again.stdout
    statuses = {v["arn"]: v["status"] for v in versions()}
    assert len(statuses) == 2 and statuses[first["arn"]] == "Approved"


# -- will the version serve? (issue 19, item 6) -------------------------------------------------
def _model_archive(path: Path, members: dict[str, str]) -> None:
    import io
    import tarfile

    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, text in members.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _serving(job: str, program: str = "inference.py") -> dict[str, Any]:
    request = registration(job=job)
    request["InferenceSpecification"]["Containers"][0]["Environment"] = {
        "SAGEMAKER_PROGRAM": program, "SAGEMAKER_SUBMIT_DIRECTORY": "/opt/ml/model/code"}
    return request


def test_a_version_whose_archive_lacks_its_handler_is_flagged(tmp_path: Path) -> None:
    from smtrain.local.s3_stand_in import LocalS3

    s3 = LocalS3(tmp_path / "s3")
    registry = LocalModelRegistry(tmp_path / "registry", groups=[GROUP], s3=s3)
    uri = "s3://smtrain-artifacts/models/{}/output/model.tar.gz"
    _model_archive(s3.path(uri.format("bad")), {"model.pth": "weights", "code/train.py": ""})
    _model_archive(s3.path(uri.format("good")), {"model.pth": "weights", "./code/inference.py": ""})
    _model_archive(s3.path(uri.format("module")), {"code/serve_me.py": ""})
    s3.path(uri.format("garbage")).parent.mkdir(parents=True)
    s3.path(uri.format("garbage")).write_text("not a tarball")

    # Registered all the same, as SageMaker registers it: flagged with one line.
    bad = registry.create_model_package(_serving("bad"))["ModelPackageArn"]
    assert registry.serving_problems(bad) == [
        f"the model archive {uri.format('bad')} has no code/inference.py: its inference image "
        "imports the handler SAGEMAKER_PROGRAM=inference.py from the archive's code/ folder, so "
        "this model version would never serve (the training script must copy it into "
        "SM_MODEL_DIR/code)"]
    stored = json.loads((registry.root / GROUP / "1.json").read_text())
    assert stored["ServingProblems"] == registry.serving_problems(bad)
    assert "ServingProblems" not in registry.describe_model_package(bad)  # not SageMaker's answer
    # Without the S3 stand-in (another reader of the registry): what was found at registration.
    assert LocalModelRegistry(registry.root).serving_problems(bad) == stored["ServingProblems"]

    good = registry.create_model_package(_serving("good"))["ModelPackageArn"]
    module = registry.create_model_package(_serving("module", "serve_me"))["ModelPackageArn"]
    assert registry.serving_problems(good) == registry.serving_problems(module) == []
    garbage = registry.create_model_package(_serving("garbage"))["ModelPackageArn"]
    (problem,) = registry.serving_problems(garbage)
    assert problem.startswith(f"the model archive {uri.format('garbage')} is not a gzip tar file")
    # Not judged: no archive here (a scripted backend writes none), no SAGEMAKER_PROGRAM (BYOC,
    # built-in images), a registry without the S3 stand-in.
    absent = registry.create_model_package(_serving("absent"))["ModelPackageArn"]
    byoc = registry.create_model_package(registration(job="bad"))["ModelPackageArn"]
    assert registry.serving_problems(absent) == registry.serving_problems(byoc) == []
    unseen = LocalModelRegistry(tmp_path / "other").create_model_package(_serving("bad"))
    assert LocalModelRegistry(tmp_path / "other").serving_problems(unseen["ModelPackageArn"]) == []
