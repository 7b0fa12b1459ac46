"""``smtrain models``: list the registered model versions, approve or reject one.

On AWS the model package groups are the deployed workflow stack's outputs
(``ModelPackageGroup<Id>``, one per program); with ``--local``, the offline engine's registry
under ``<work dir>/registry`` (:class:`~smtrain.local.model_registry.LocalModelRegistry`). What is
guaranteed:

- a version ARN and a ``--reason`` that SageMaker would refuse (botocore's model for
  UpdateModelPackage: the ModelPackageArn pattern, ApprovalDescription's 1,024 characters on one
  line) are refused before any call, exit 2, naming the argument;
- approve and reject send exactly ``UpdateModelPackage(ModelPackageArn, ModelApprovalStatus,
  ApprovalDescription)`` and print the status SageMaker reports afterwards;
- an AWS error is one line on stderr and exit 4 (as every ``smtrain`` command), never a traceback;
  so is an answer of the offline registry;
- each version listed shows its metrics and quality gate, read from the model-quality report the
  state machine wrote when it registered the version (``ModelMetrics.ModelQuality.Statistics``,
  an S3 object: :mod:`infra.constructs.model_registration`); a report that cannot be read is a
  line saying why under that version, never the listing's failure. On AWS that read is
  ``s3:GetObject`` on ``model-quality/*`` of the artifacts bucket and ``kms:Decrypt`` on its key
  (the bucket's default encryption is SSE-KMS; S3 asks KMS to decrypt with the caller's
  permissions: AWS Knowledge Center, "Do I need to specify the AWS KMS key when I download a
  KMS-encrypted object from Amazon S3?");
- approve and reject print, under the new status, the version's program, training job, metrics
  and gate; without ``--reason`` they show those first, then ask for the reason on the terminal
  (refused, exit 2, when stdin is not one; an empty answer changes nothing).
- offline, a version whose ``model.tar.gz`` lacks the handler its ``SAGEMAKER_PROGRAM`` names
  (``code/<handler>``) is not approved: exit 2, one line saying what is missing
  (:mod:`smtrain.local.model_archive`). On AWS the archive is not inspected.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

from smtrain.cli import outcome
from smtrain.cli.deployment_lookup import project_config, stack_outputs
from smtrain.cli.outcome import EXIT_OK, Handler, ResourceNotFound, run_handler, say
from smtrain.core import contract
from smtrain.core.errors import InputError

#: SageMaker's ApprovalDescription: at most 1,024 characters matching ``.*`` (botocore's model),
#: a Java pattern, whose ``.`` matches no line terminator.
MAX_REASON: Final = 1024
_LINE_TERMINATORS: Final = ("\n", "\r", "\u0085", "\u2028", "\u2029")
#: A model version's ARN ends ``model-package/<group>/<version>`` (the group an EntityName).
_VERSION_ARN_TAIL: Final = r".*:model-package/[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}/[1-9][0-9]{0,8}"
#: What ``--max`` may be.
MAX_LISTED: Final = 1000


def run(args: argparse.Namespace) -> int:
    handlers: dict[str, Handler] = {"list": list_versions, "approve": approve, "reject": reject}
    from smtrain.local.backend import SageMakerError

    return run_handler(handlers[args.models_command], args,
                       environment_errors={SageMakerError: "the offline model registry answered: "})


# -- the two registries ---------------------------------------------------------------------
class Registry(Protocol):
    """What the commands need of a model registry, AWS's or the offline one."""

    def versions(self, group: str, *, status: str | None, limit: int) -> list[dict[str, Any]]:
        """The DescribeModelPackage answers of ``group``'s newest ``limit`` versions (with
        ``status`` only, when given), newest first."""
        ...

    def describe(self, arn: str) -> dict[str, Any]: ...

    def update(self, request: dict[str, Any]) -> None: ...

    def read_report(self, uri: str) -> bytes:
        """The object at ``uri`` (a version's model-quality report); raises on any failure."""
        ...


class AwsRegistry:
    """SageMaker's model registry through a boto3 ``sagemaker`` client."""

    def __init__(self, client: Any, *, page_size: int = 100, s3: Any = None) -> None:
        self.client = client
        #: A boto3 ``s3`` client, for the versions' model-quality reports.
        self.s3 = s3
        #: ListModelPackages' MaxResults (at most 100: botocore's model).
        self.page_size = page_size

    def versions(self, group: str, *, status: str | None, limit: int) -> list[dict[str, Any]]:
        request: dict[str, Any] = {"ModelPackageGroupName": group, "SortBy": "CreationTime",
                                   "SortOrder": "Descending"}
        if status is not None:
            request["ModelApprovalStatus"] = status
        summaries: list[dict[str, Any]] = []
        pages = self.client.get_paginator("list_model_packages").paginate(
            **request, PaginationConfig={"PageSize": self.page_size})
        for page in pages:
            summaries.extend(page["ModelPackageSummaryList"])
            if len(summaries) >= limit:
                break
        return [self.describe(s["ModelPackageArn"]) for s in summaries[:limit]]

    def describe(self, arn: str) -> dict[str, Any]:
        description: dict[str, Any] = self.client.describe_model_package(ModelPackageName=arn)
        return description

    def update(self, request: dict[str, Any]) -> None:
        self.client.update_model_package(**request)

    def read_report(self, uri: str) -> bytes:
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        body: bytes = self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        return body


class OfflineRegistry:
    """The offline engine's registry (:class:`~smtrain.local.model_registry.LocalModelRegistry`)."""

    def __init__(self, registry: Any, s3: Any = None) -> None:
        self.registry = registry
        #: The engine's S3 stand-in (:class:`~smtrain.local.s3_stand_in.LocalS3`) of the work dir.
        self.s3 = s3

    def versions(self, group: str, *, status: str | None, limit: int) -> list[dict[str, Any]]:
        summaries = self.registry.list_model_packages(group, approval_status=status)[:limit]
        return [self.describe(s["ModelPackageArn"]) for s in summaries]

    def describe(self, arn: str) -> dict[str, Any]:
        description: dict[str, Any] = self.registry.describe_model_package(arn)
        return description

    def update(self, request: dict[str, Any]) -> None:
        self.registry.update_model_package(request)

    def read_report(self, uri: str) -> bytes:
        data: bytes = self.s3.path(uri).read_bytes()
        return data


def _local_registry(args: argparse.Namespace) -> OfflineRegistry:
    from smtrain.local.model_registry import LocalModelRegistry
    root = args.work_dir / contract.LOCAL_REGISTRY_DIR
    if not root.is_dir():
        raise InputError(f"no model registry under {args.work_dir} (a run of `smtrain start "
                         "--local` that registers a model creates it)"
                         + demo_hint(args.work_dir, contract.LOCAL_REGISTRY_DIR))
    # With the engine's S3 stand-in, where the model archives and quality reports are.
    registry = LocalModelRegistry.of_work_dir(args.work_dir)
    return OfflineRegistry(registry, registry.s3)


#: Where ``make demo`` keeps its runs and registry, from the repository's root (the ``--local``
#: commands' default is ``.work/local``).
DEMO_WORK_DIR: Final = Path(".work/demo")


def demo_hint(work_dir: Path, marker: str) -> str:
    """For an error about ``work_dir`` that lacks ``marker``: where ``make demo`` left one, if it
    did (run from the repository's root), as the option to pass; else nothing."""
    demo = DEMO_WORK_DIR
    if work_dir.resolve() == demo.resolve() or not (demo / marker).exists():
        return ""
    return f"; `make demo` keeps its under {demo}: pass --work-dir {demo}"


# -- list -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Version:
    """One registered model version, as ``smtrain models list`` shows it."""

    arn: str
    program: str
    group: str
    version: int
    status: str
    created: dt.datetime
    training_job: str | None
    description: str | None
    approval_description: str | None
    metadata: dict[str, str]
    quality: Quality | None = None

    def as_json(self) -> dict[str, Any]:
        quality = self.quality or Quality(report=None, metrics=None, gate=None, problem=None)
        return {"arn": self.arn, "program": self.program, "group": self.group,
                "version": self.version, "status": self.status,
                "created": self.created.isoformat(), "trainingJob": self.training_job,
                "description": self.description, "approvalDescription": self.approval_description,
                "metadata": self.metadata,
                "metrics": quality.metrics, "qualityGate": quality.gate,
                "qualityReport": quality.report, "qualityReportError": quality.problem}


@dataclass(frozen=True)
class Quality:
    """What a version's model-quality report says (the state machine's JSON: the job's final
    metrics and the gate it met), or why it could not be read."""

    #: ``ModelMetrics.ModelQuality.Statistics.S3Uri`` (None: the version names no report).
    report: str | None
    #: Final metric name -> value (None: not read).
    metrics: dict[str, float] | None
    #: ``{"passed", "minimum", "maximum"}`` as recorded (None: not read, or none recorded).
    gate: dict[str, Any] | None
    #: Why the metrics are not shown, in words (None: they are).
    problem: str | None

    def lines(self) -> list[str]:
        """The listing's lines for it: the metrics (the gate's first, then by name), the gate."""
        if self.metrics is None:
            return [f"metrics: {self.problem}"]
        gated = [*(self.gate or {}).get("minimum", {}), *(self.gate or {}).get("maximum", {})]
        names = [n for n in gated if n in self.metrics] + sorted(n for n in self.metrics if n not in gated)
        shown = ", ".join(f"{name} {self.metrics[name]:.6g}" for name in names) or "none reported"
        lines = [f"metrics: {shown}"]
        if self.gate is not None:
            limits = [f"{name} {_value(self.metrics.get(name))} {sign} {limit:.6g}"
                      for bound, sign in (("minimum", ">="), ("maximum", "<="))
                      for name, limit in self.gate.get(bound, {}).items()]
            verdict = "passed" if self.gate.get("passed") else "failed"
            lines.append(f"quality gate: {verdict} ({', '.join(limits)})" if limits
                         else "quality gate: none (registered without a minimum or maximum)")
        return lines


def _value(value: float | None) -> str:
    return "not reported" if value is None else f"{value:.6g}"


def read_quality(registry: Registry, description: dict[str, Any]) -> Quality:
    """The version's model-quality report, read and parsed; never raises."""
    statistics = ((description.get("ModelMetrics") or {}).get("ModelQuality") or {}).get("Statistics") or {}
    uri = statistics.get("S3Uri")
    if not uri:
        return Quality(report=None, metrics=None, gate=None,
                       problem="none recorded (the version has no ModelMetrics.ModelQuality report)")
    try:
        report = json.loads(registry.read_report(uri))
        final = report["training_job_final_metrics"]
        metrics = {str(name): float(entry["value"]) for name, entry in final.items()}
        gate = (report.get("smtrain") or {}).get("qualityGate")
    except Exception as error:  # a listing shows what it can; this version's line says why
        return Quality(report=uri, metrics=None, gate=None, problem=f"not read from {uri}: {_why(error)}")
    return Quality(report=uri, metrics=metrics, gate=gate, problem=None)


def _why(error: Exception) -> str:
    """An S3 or parsing failure in one line, with what to change where it is a permission."""
    code = getattr(error, "response", {}).get("Error", {}).get("Code") if hasattr(error, "response") else None
    if code in ("AccessDenied", "403", "KMS.AccessDeniedException"):
        return (f"{code}: your credentials need s3:GetObject on the report and kms:Decrypt on the "
                "artifacts bucket's key (docs/registry.md, Model versions)")
    if code is not None:
        return f"{code}: {error}"
    if isinstance(error, FileNotFoundError):
        return "no such object"
    if isinstance(error, (KeyError, TypeError, ValueError)):
        return f"not a model-quality report of this project ({type(error).__name__}: {error})"
    return f"{type(error).__name__}: {error}"


def _timestamp(value: Any) -> dt.datetime:
    """botocore's datetime or the offline registry's ISO 8601 text, in UTC."""
    moment = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC)


def _version(description: dict[str, Any], program: str, quality: Quality | None = None) -> Version:
    metadata = dict(description.get("CustomerMetadataProperties") or {})
    return Version(
        arn=description["ModelPackageArn"],
        program=metadata.get(contract.METADATA_PROGRAM, program),
        group=description.get("ModelPackageGroupName", ""),
        version=int(description.get("ModelPackageVersion", 0)),
        status=description.get("ModelApprovalStatus", ""),
        created=_timestamp(description["CreationTime"]),
        training_job=metadata.get(contract.METADATA_TRAINING_JOB),
        description=description.get("ModelPackageDescription"),
        approval_description=description.get("ApprovalDescription"),
        metadata=metadata,
        quality=quality,
    )


def _program_names() -> dict[str, str]:
    """Output id -> program name, for the programs of training_code/ (empty if unreadable)."""
    try:
        from smtrain.core.programs import discover

        return {contract.output_id(name): name for name in discover()}
    except Exception:  # a broken program.toml must not stop a listing; ids are shown instead
        return {}


def _aws_groups(args: argparse.Namespace, session: Any) -> dict[str, str]:
    """Program (or its output id, for a program not in training_code/) -> group name."""
    stack = args.stack_name or project_config().stack_name
    outputs = stack_outputs(session.client("cloudformation"), stack)
    prefix = contract.OUTPUT_MODEL_PACKAGE_GROUP
    by_id = {key[len(prefix):]: value for key, value in outputs.items()
             if key.startswith(prefix) and len(key) > len(prefix)}
    if not by_id:
        raise ResourceNotFound(f"stack {stack} has no {prefix}<Program> outputs: deploy a version "
                               "of the workflow stack with the model registry (`npx cdk deploy --all`)")
    names = _program_names()
    return {names.get(output_id, output_id): group for output_id, group in sorted(by_id.items())}


def _local_groups(registry: OfflineRegistry) -> dict[str, str]:
    """Program -> group of the offline registry, from each group's newest version's metadata
    (the group's name where that does not say)."""
    groups: dict[str, str] = {}
    for group in registry.registry.list_groups():
        newest = registry.registry.list_model_packages(group)[:1]
        program = group
        if newest:
            metadata = registry.describe(newest[0]["ModelPackageArn"]).get(
                "CustomerMetadataProperties") or {}
            program = metadata.get(contract.METADATA_PROGRAM, group)
        groups[program] = group
    return groups


def _chosen(groups: dict[str, str], program: str | None, where: str) -> dict[str, str]:
    if program is None:
        return groups
    if program in groups:
        return {program: groups[program]}
    by_id = {contract.output_id(p): p for p in groups}
    if contract.output_id(program) in by_id:  # e.g. a program named by its output id
        known = by_id[contract.output_id(program)]
        return {known: groups[known]}
    known_programs = ", ".join(sorted(groups)) or "none"
    raise InputError(f"--program {program}: no model package group for it in {where}; "
                     f"programs with one: {known_programs}")


def list_versions(args: argparse.Namespace) -> int:
    if not 1 <= args.max <= MAX_LISTED:
        raise InputError(f"--max {args.max} must be from 1 to {MAX_LISTED}")
    registry: Registry
    if args.local:
        offline = _local_registry(args)
        groups = _chosen(_local_groups(offline), args.program, f"the offline registry of {args.work_dir}")
        registry = offline
    else:
        session = outcome.aws_session()
        groups = _chosen(_aws_groups(args, session), args.program,
                         f"stack {args.stack_name or project_config().stack_name}")
        registry = AwsRegistry(session.client("sagemaker"), s3=session.client("s3"))
    described = sorted(((d, program) for program, group in groups.items()
                        for d in registry.versions(group, status=args.status, limit=args.max)),
                       key=lambda pair: (_timestamp(pair[0]["CreationTime"]),
                                         int(pair[0].get("ModelPackageVersion", 0))),
                       reverse=True)[:args.max]
    versions = [_version(d, program, read_quality(registry, d)) for d, program in described]
    if args.json:
        say(json.dumps([v.as_json() for v in versions], indent=2))
        return EXIT_OK
    if not versions:
        say("no model versions" + (f" with status {args.status}" if args.status else ""))
        return EXIT_OK
    for line in _table(versions):
        say(line)
    return EXIT_OK


def _table(versions: list[Version]) -> Iterator[str]:
    arn_width = max(len("VERSION"), *(len(v.arn) for v in versions))
    program_width = max(len("PROGRAM"), *(len(v.program) for v in versions))
    yield (f"{'VERSION':<{arn_width}}  {'PROGRAM':<{program_width}}  {'STATUS':<21}  "
           f"{'CREATED (UTC)':<19}  TRAINING JOB")
    for v in versions:
        yield (f"{v.arn:<{arn_width}}  {v.program:<{program_width}}  {v.status:<21}  "
               f"{v.created:%Y-%m-%d %H:%M:%S}  {v.training_job or '-'}")
        if v.description:
            yield f"    description: {v.description}"
        if v.approval_description:
            yield f"    reason: {v.approval_description}"
        for line in (v.quality.lines() if v.quality is not None else []):
            yield f"    {line}"


# -- approve / reject ---------------------------------------------------------------------------
def check_version_arn(arn: str) -> None:
    """Refuse (InputError) an ARN that is not a model version's, as SageMaker would."""
    import regex

    from smtrain.local.sagemaker_model import operation_model

    shape = operation_model("UpdateModelPackage").input_shape.members["ModelPackageArn"].metadata
    versioned = regex.fullmatch(_VERSION_ARN_TAIL, arn)
    if len(arn) > shape["max"] or regex.fullmatch(shape["pattern"], arn) is None or not versioned:
        raise InputError(f"VERSION_ARN {arn!r} is not a model version's ARN: expected "
                         "arn:aws:sagemaker:<region>:<account>:model-package/<group>/<version> "
                         "(see `smtrain models list`)")


def check_reason(reason: str) -> None:
    """Refuse (InputError) a reason SageMaker's ApprovalDescription would not take."""
    if not reason.strip():
        raise InputError("--reason must say why (it is the version's approval description)")
    if any(terminator in reason for terminator in _LINE_TERMINATORS):
        raise InputError("--reason must be one line (SageMaker's ApprovalDescription)")
    if len(reason) > MAX_REASON:
        raise InputError(f"--reason is {len(reason)} characters; SageMaker's ApprovalDescription "
                         f"takes at most {MAX_REASON}")


def checked_update(arn: str, status: str, reason: str) -> dict[str, Any]:
    """The UpdateModelPackage request, once SageMaker would accept it (else InputError naming
    the argument)."""
    from smtrain.local.sagemaker_model import request_violations

    check_version_arn(arn)
    check_reason(reason)
    request = {"ModelPackageArn": arn, "ModelApprovalStatus": status, "ApprovalDescription": reason}
    problems = request_violations("UpdateModelPackage", request)
    if problems:  # what the checks above missed, in SageMaker's words
        raise InputError("; ".join(problems))
    return request


def approve(args: argparse.Namespace) -> int:
    return _set_status(args, contract.APPROVED)


def reject(args: argparse.Namespace) -> int:
    return _set_status(args, contract.REJECTED)


def _set_status(args: argparse.Namespace, status: str) -> int:
    check_version_arn(args.arn)
    if args.reason is not None:
        check_reason(args.reason)
    elif not sys.stdin.isatty():
        raise InputError("--reason is required when stdin is not a terminal: pass --reason TEXT "
                         "(one line, the version's approval description)")
    registry: Registry
    if args.local:
        offline = _local_registry(args)
        if status == contract.APPROVED:
            # A version that would never serve is not approved (SageMaker would approve it).
            # On AWS the archive is not read: it may be large, and reading it needs s3:GetObject
            # and kms:Decrypt that an approver need not have.
            problems = offline.registry.serving_problems(args.arn)
            if problems:
                raise InputError(f"{args.arn} not approved: {problems[0]}")
        registry = offline
    else:
        session = outcome.aws_session()
        region = args.arn.split(":")[3]
        if region != session.region_name:
            raise InputError(f"{args.arn} is in {region} but the region configured is "
                             f"{session.region_name}: set AWS_REGION={region}")
        registry = AwsRegistry(session.client("sagemaker"), s3=session.client("s3"))
    description = registry.describe(args.arn)
    before = description.get("ModelApprovalStatus", "none")
    shown = _summary(registry, description)
    if args.reason is None:
        for line in shown:
            say(line)
        reason = _ask_reason(status)
    else:
        reason = args.reason
    request = checked_update(args.arn, status, reason)
    registry.update(request)
    after = registry.describe(args.arn).get("ModelApprovalStatus", "none")
    say(f"{args.arn}: {after} (was {before})")
    if args.reason is not None:  # what was approved or rejected, as the terminal shows it first
        for line in shown[1:]:
            say(line)
    return EXIT_OK


def _summary(registry: Registry, description: dict[str, Any]) -> list[str]:
    """The version in a few lines: its ARN and status, then (indented) its program and training
    job, its metrics and its quality gate."""
    version = _version(description, "-", read_quality(registry, description))
    assert version.quality is not None
    return [f"{version.arn} ({version.status})",
            f"    program {version.program}, training job {version.training_job or '-'}",
            *(f"    {line}" for line in version.quality.lines())]


def _ask_reason(status: str) -> str:
    """The reason typed on the terminal (after the version's summary)."""
    verb = "approve" if status == contract.APPROVED else "reject"
    print(f"reason to {verb} it (one line; empty to cancel): ", end="", flush=True)
    typed = sys.stdin.readline()
    if not typed.strip():
        raise InputError("no reason given: nothing changed (type one, or pass --reason TEXT)")
    return typed.rstrip("\r\n")
