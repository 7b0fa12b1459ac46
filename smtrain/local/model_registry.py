"""The offline engine's SageMaker Model Registry: model package versions kept on disk.

:class:`LocalModelRegistry` answers the four model-package calls the workflow and
``smtrain models`` make (CreateModelPackage, DescribeModelPackage, ListModelPackages,
UpdateModelPackage) in the request and answer shapes of botocore's SageMaker service model, so
that the state machine's ``aws-sdk:sagemaker:createModelPackage`` task and the CLI read the same
thing offline as on AWS. What it guarantees:

- every request is judged first as SageMaker's front end would
  (:func:`smtrain.local.strict_sagemaker.check_request`), and every answer passes
  :func:`smtrain.local.sagemaker_model.answer_as_aws`;
- versions of a group are numbered 1, 2, 3... in the order they were created; a version's ARN is
  ``arn:aws:sagemaker:<region>:<account>:model-package/<group, lower case>/<version>`` (SageMaker
  spells resource names in ARNs in lower case, as moto does for model packages);
- a CreateModelPackage repeated with the same ``ClientToken`` in the same group answers the first
  version's ARN and creates nothing;
- each version is one JSON file, ``<root>/<group>/<version>.json``, replaced atomically
  (temporary file + ``os.replace``); creating and updating hold a thread lock and an exclusive
  ``fcntl`` lock on ``<root>/.lock``, so an engine and a CLI can share one registry;
- times are ISO 8601 text in UTC, as :class:`~smtrain.local.local_backend.LocalBackend` answers;
- given the S3 stand-in (``s3``), a version whose ``model.tar.gz`` lacks the handler its
  ``SAGEMAKER_PROGRAM`` names is registered all the same (SageMaker does not look inside), but
  flagged: :meth:`LocalModelRegistry.serving_problems` says what is missing
  (:mod:`smtrain.local.model_archive`), and ``smtrain models approve --local`` refuses it.

Error wording: a CreateModelPackage naming both or neither of ``ModelPackageName`` and
``ModelPackageGroupName`` is answered as moto answers it (the author of moto's versioned-model
support took "Missing ARN." from AWS: getmoto/moto#7165). AWS's wording for a model package or
group that does not exist was not found in AWS's documentation: the messages here are ours, with
AWS's code (``ValidationException``, which is what moto answers for both).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import re
import tempfile
import threading
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any, Final

from smtrain.core import contract
from smtrain.local.backend import Description, Request, SageMakerError
from smtrain.local.deployment import ACCOUNT
from smtrain.local.model_archive import serving_problems
from smtrain.local.s3_stand_in import LocalS3
from smtrain.local.sagemaker_model import answer_as_aws, operation_model
from smtrain.local.strict_sagemaker import check_request

#: Members of a CreateModelPackage request that a DescribeModelPackage answer gives back as sent
#: (both shapes define them; botocore's service model).
CARRIED_MEMBERS: Final = frozenset(
    set(operation_model("CreateModelPackage").input_shape.members)
    & set(operation_model("DescribeModelPackage").output_shape.members)
) - {"ModelPackageName", "ModelPackageGroupName", "ModelApprovalStatus"}
#: The members of a ModelPackageSummary (ListModelPackages).
SUMMARY_MEMBERS: Final = frozenset(
    operation_model("ListModelPackages").output_shape.members["ModelPackageSummaryList"]
    .member.members)

#: A model package's ARN (or the part of it after ``model-package/``): ``<group>/<version>``.
_ARN: Final = re.compile(r"arn:aws[a-z\-]*:sagemaker:[a-z0-9\-]*:[0-9]{12}:model-package/(.+)")
_GROUP_ARN: Final = re.compile(r"arn:aws[a-z\-]*:sagemaker:[a-z0-9\-]*:[0-9]{12}:[a-z\-]*/(.+)")
_VERSIONED: Final = re.compile(r"([a-zA-Z0-9](?:-*[a-zA-Z0-9]){0,62})/([1-9][0-9]{0,8})")
_LOCK_FILE: Final = ".lock"
#: A version record's list of reasons it would not serve (smtrain.local.model_archive).
_SERVING_PROBLEMS: Final = "ServingProblems"


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


def _validation(message: str) -> SageMakerError:
    return SageMakerError("ValidationException", message)


def _missing(name_or_arn: str) -> SageMakerError:
    return _validation(f"ModelPackage {name_or_arn} does not exist.")


class LocalModelRegistry:
    """Model package groups and their versions under ``root`` (see the module's docstring).

    ``groups``: the model package groups that exist (the deployment's); a version for any other
    group is refused as SageMaker refuses it. None (the default): every group name is accepted,
    and a group exists once it holds a version. ``region`` and ``account`` name the ARNs
    (defaults: ``us-east-1`` and the offline deployment's account). ``s3``: the S3 stand-in
    holding the versions' model archives (none: archives are not inspected).
    """

    def __init__(self, root: Path, *, region: str = "us-east-1", account: str = ACCOUNT,
                 groups: Collection[str] | None = None, s3: LocalS3 | None = None) -> None:
        self.root = Path(root)
        self.s3 = s3
        self.region = region
        self.account = account
        self.groups: tuple[str, ...] | None = tuple(groups) if groups is not None else None
        self._lock = threading.Lock()

    @classmethod
    def of_work_dir(cls, work_dir: Path) -> LocalModelRegistry:
        """The registry an :class:`~smtrain.local.engine.OfflineEngine` of ``work_dir`` keeps,
        reading the model archives of its S3 stand-in."""
        return cls(work_dir / contract.LOCAL_REGISTRY_DIR, s3=LocalS3(work_dir / contract.LOCAL_S3_DIR))

    # -- the API ---------------------------------------------------------------------------
    def create_model_package(self, request: Request) -> Description:
        """A new version in ``request["ModelPackageGroupName"]`` (or the one its
        ``ClientToken`` already made): ``{"ModelPackageArn": ...}``."""
        # The front end's rules (sagemaker_rules.model_package_rules) allow one of the two names.
        check_request("CreateModelPackage", request)
        group_name = request.get("ModelPackageGroupName")
        if not group_name:
            raise _validation(f"ModelPackageName {request['ModelPackageName']}: unversioned model "
                              "packages are not supported offline; pass ModelPackageGroupName")
        with self._locked():
            group = self._existing_group(self._group_of(group_name), creating=True)
            token = request.get("ClientToken")
            records = self._records(group)
            if token is not None:
                for record in records:
                    if record["Request"].get("ClientToken") == token:
                        return self._answer("CreateModelPackage",
                                            {"ModelPackageArn": record["ModelPackageArn"]})
            version = max((r["ModelPackageVersion"] for r in records), default=0) + 1
            arn = self._arn(group, version)
            now = _now()
            record = {
                "Request": request,
                "ModelPackageGroupName": group,
                "ModelPackageVersion": version,
                "ModelPackageArn": arn,
                "CreationTime": now,
                "LastModifiedTime": now,
                "ModelPackageStatus": "Completed",
                "ModelApprovalStatus": request.get("ModelApprovalStatus", contract.PENDING_APPROVAL),
            }
            if self.s3 is not None:
                # Not SageMaker's: the project's flag, kept beside what the API answers.
                problems = serving_problems(request, self.s3)
                if problems:
                    record[_SERVING_PROBLEMS] = problems
            self._write(group, version, record)
        return self._answer("CreateModelPackage", {"ModelPackageArn": arn})

    def describe_model_package(self, name_or_arn: str) -> Description:
        """The DescribeModelPackage answer for a version's ARN or ``<group>/<version>``."""
        check_request("DescribeModelPackage", {"ModelPackageName": name_or_arn})
        return self._answer("DescribeModelPackage", self._description(self._record(name_or_arn)))

    def list_model_packages(self, group: str | None = None, *,
                            approval_status: str | None = None) -> list[Description]:
        """ModelPackageSummary entries, newest first: of ``group`` (every group when None),
        only those with ``approval_status`` when given."""
        request: dict[str, Any] = {}
        if group is not None:
            request["ModelPackageGroupName"] = group
        if approval_status is not None:
            request["ModelApprovalStatus"] = approval_status
        check_request("ListModelPackages", request)
        if group is not None:
            groups = [self._existing_group(self._group_of(group), creating=False)]
        else:
            groups = self.list_groups()
        records = [r for g in groups for r in self._records(g)
                   if approval_status is None or r["ModelApprovalStatus"] == approval_status]
        records.sort(key=lambda r: (r["CreationTime"], r["ModelPackageVersion"]), reverse=True)
        summaries = [{k: v for k, v in self._description(r).items() if k in SUMMARY_MEMBERS}
                     for r in records]
        self._answer("ListModelPackages", {"ModelPackageSummaryList": summaries})
        return summaries

    def list_groups(self) -> list[str]:
        """The groups: those given, else those holding a version (not a SageMaker call)."""
        return list(self.groups) if self.groups is not None else self._stored_groups()

    def serving_problems(self, name_or_arn: str) -> list[str]:
        """Why the version would not serve, one line each (none: nothing found): its archives
        checked now where the S3 stand-in is known, else what was found when it was registered.
        Not a SageMaker call."""
        record = self._record(name_or_arn)
        if self.s3 is not None:
            return serving_problems(record["Request"], self.s3)
        return list(record.get(_SERVING_PROBLEMS, []))

    def update_model_package(self, request: Request) -> Description:
        """Sets ``ModelApprovalStatus`` and ``ApprovalDescription`` (the members offline
        supports; any other is refused): ``{"ModelPackageArn": ...}``."""
        check_request("UpdateModelPackage", request)
        unsupported = sorted(set(request) - {"ModelPackageArn", "ModelApprovalStatus",
                                             "ApprovalDescription"})
        if unsupported:
            raise _validation(f"{', '.join(unsupported)} cannot be updated offline")
        status = request.get("ModelApprovalStatus")  # its enum checked with the request
        with self._locked():
            record = self._record(request["ModelPackageArn"])
            if status is not None:
                record["ModelApprovalStatus"] = status
            if "ApprovalDescription" in request:
                record["ApprovalDescription"] = request["ApprovalDescription"]
            record["LastModifiedTime"] = _now()
            self._write(record["ModelPackageGroupName"], record["ModelPackageVersion"], record)
        return self._answer("UpdateModelPackage", {"ModelPackageArn": record["ModelPackageArn"]})

    # -- storage -----------------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with self._lock, open(self.root / _LOCK_FILE, "a") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def _write(self, group: str, version: int, record: dict[str, Any]) -> None:
        folder = self.root / group
        folder.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=folder, prefix=f".{version}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump(record, handle, indent=2, sort_keys=True)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, folder / f"{version}.json")
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise

    def _records(self, group: str) -> list[dict[str, Any]]:
        folder = self.root / group
        if not folder.is_dir():
            return []
        records = [json.loads(path.read_text()) for path in folder.glob("*.json")
                   if path.stem.isdigit()]
        return sorted(records, key=lambda r: int(r["ModelPackageVersion"]))

    def _stored_groups(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))

    def _record(self, name_or_arn: str) -> dict[str, Any]:
        """The stored version that ``name_or_arn`` names; an ARN must be the one it was given
        (whichever region and account the registry that made it was set up with)."""
        group, version = self._versioned_name(name_or_arn)
        path = self.root / group / f"{version}.json"
        if not path.is_file():
            raise _missing(name_or_arn)
        record: dict[str, Any] = json.loads(path.read_text())
        if name_or_arn.startswith("arn:") and name_or_arn.lower() != record["ModelPackageArn"]:
            raise _missing(name_or_arn)
        return record

    # -- names -------------------------------------------------------------------------------
    @staticmethod
    def _group_of(name_or_arn: str) -> str:
        match = _GROUP_ARN.fullmatch(name_or_arn)
        return match.group(1) if match else name_or_arn

    def _existing_group(self, group: str, *, creating: bool) -> str:
        """The group's stored spelling (SageMaker's names are unique regardless of case)."""
        known = self.groups if self.groups is not None else self._stored_groups()
        for candidate in known:
            if candidate.lower() == group.lower():
                return candidate
        if self.groups is None and creating:
            return group
        raise _validation(f"Model Package Group {group} does not exist.")

    def _versioned_name(self, name_or_arn: str) -> tuple[str, int]:
        """``(stored group, version)`` of an ARN or ``<group>/<version>``."""
        match = _ARN.fullmatch(name_or_arn)
        versioned = _VERSIONED.fullmatch(match.group(1) if match else name_or_arn)
        if versioned is None:
            raise _missing(name_or_arn)
        try:
            group = self._existing_group(versioned.group(1), creating=False)
        except SageMakerError:
            raise _missing(name_or_arn) from None
        return group, int(versioned.group(2))

    def _arn(self, group: str, version: int) -> str:
        return (f"arn:aws:sagemaker:{self.region}:{self.account}:model-package/"
                f"{group.lower()}/{version}")

    # -- answers -----------------------------------------------------------------------------
    def _description(self, record: dict[str, Any]) -> Description:
        request = record["Request"]
        description: dict[str, Any] = {
            "ModelPackageName": record["ModelPackageGroupName"],
            "ModelPackageGroupName": record["ModelPackageGroupName"],
            "ModelPackageVersion": record["ModelPackageVersion"],
            "ModelPackageArn": record["ModelPackageArn"],
            "CreationTime": record["CreationTime"],
            "ModelPackageStatus": record["ModelPackageStatus"],
            "ModelPackageStatusDetails": {"ValidationStatuses": []},
            "ModelApprovalStatus": record["ModelApprovalStatus"],
            "LastModifiedTime": record["LastModifiedTime"],
        }
        description.update({k: v for k, v in request.items() if k in CARRIED_MEMBERS})
        if "ApprovalDescription" in record:
            description["ApprovalDescription"] = record["ApprovalDescription"]
        return description

    @staticmethod
    def _answer(operation: str, answer: dict[str, Any]) -> dict[str, Any]:
        return answer_as_aws(operation, answer, answered_by="the offline model registry")
