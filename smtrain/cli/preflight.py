"""``smtrain preflight``: ask AWS, before deploying, whether the synthesized app would deploy and run.

With the caller's credentials it

1. renders every state machine definition of the synthesized app (``cdk.out``) with the caller's
   account, region and partition (and the real resources of stacks that are already deployed)
   and sends it to Step Functions' ``ValidateStateMachineDefinition``, printing each diagnostic;
   then sends it again with SageMaker's ``RetryStrategy`` on every job (or without it, where the
   ``sagemakerRetryAttempts`` setting sends it) and says what the two answers mean for that field
   (:mod:`smtrain.cli.retry_strategy_check`);
2. derives the calls a run makes from the definition (each Task state's integration, the job
   names, S3 locations, KMS key, images, logging and tracing) and asks IAM's policy simulator
   whether the state machine role and each program's SageMaker execution role may make them:
   ``SimulateCustomPolicy`` with the synthesized policies, and, for roles that are deployed,
   ``SimulatePrincipalPolicy`` too (which adds SCPs and permission boundaries);
3. prints what it checked, what it did not, and exits 0 (nothing would fail), 1 (something would),
   2 (bad usage: no ``cdk.out``) or 4 (AWS unreachable, no credentials, or a check could not run).

Sources for the permissions a run needs: Step Functions developer guide, "IAM policies for
Amazon SageMaker AI" (``.sync`` creates, describes, stops and tags jobs, lists tags and manages the
EventBridge rule named below), "IAM policies for logging to CloudWatch Logs" and "X-Ray"; the
SageMaker API reference (``OutputDataConfig.KmsKeyId`` needs ``kms:Encrypt`` on the execution
role) and "CreateTrainingJob API: execution role permissions"; the S3 user guide (SSE-KMS: reads
need ``kms:Decrypt``, writes ``kms:GenerateDataKey`` and, for multipart uploads, ``kms:Decrypt``);
the CloudWatch Logs guide (log-group actions are authorized on ``log-group:NAME:*``).

boto3 is imported only by the functions that call AWS (``smtrain --help`` stays fast).
"""

from __future__ import annotations

import argparse
import functools
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smtrain.cli import retry_strategy_check
from smtrain.cli.outcome import EXIT_ENVIRONMENT, EXIT_FAILED, EXIT_OK, aws_session, run_handler, say
from smtrain.core import contract
from smtrain.core.assembly import AppStack, References, UnresolvedReference, every_state
from smtrain.core.assembly import load_app as load_assembly
from smtrain.core.errors import InputError
from smtrain.core.instance_storage import UnknownInstanceStorage, has_local_nvme

#: Where SageMaker writes training logs and publishes training metrics.
TRAINING_LOG_GROUP = contract.TRAINING_LOG_GROUP
TRAINING_METRICS_NAMESPACE = contract.TRAINING_METRICS_NAMESPACE
#: Condition keys of type Bool (IAM's SimulateCustomPolicy needs each key's type).
_BOOLEAN_KEYS = {"kms:GrantIsForAWSResource": "boolean", "sagemaker:NetworkIsolation": "boolean"}
#: Stand-ins for what a run decides at run time (a ``{}`` of ``States.Format``, an instance id).
SAMPLE = "0a1b2c3d"

_INTEGRATION = re.compile(r"arn:[\w-]+:states:::(?P<sdk>aws-sdk:)?(?P<service>[\w-]+):(?P<api>\w+)"
                          r"(?:\.(?P<pattern>sync|waitForTaskToken))?(?::\d+)?")
_FORMAT = re.compile(r"States\.Format\('((?:[^'\\]|\\.)*)'")
#: ``States.Format('<template>', <path>, ...)`` whose arguments are plain paths.
_FORMAT_CALL = re.compile(r"States\.Format\('(?P<template>[^'\\{}]*(?:\{\}[^'\\{}]*)*)',"
                          r"\s*(?P<arguments>\$[\w.]+(?:\s*,\s*\$[\w.]+)*)\)")
_S3_URI = re.compile(r"s3://(?P<bucket>[^/]+)/(?P<key>.*)")
_ECR_IMAGE = re.compile(r"(?P<account>\d{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?:\.cn)?/"
                        r"(?P<repository>[^:@]+)")


@dataclass(frozen=True)
class _JobKind:
    arn_type: str
    name_field: str
    noun: str
    events_rule: str


#: SageMaker's optimized integrations that create jobs (Step Functions developer guide).
_JOB_KINDS = {
    "createTrainingJob": _JobKind("training-job", "TrainingJobName", "TrainingJob",
                                  "StepFunctionsGetEventsForSageMakerTrainingJobsRule"),
    "createHyperParameterTuningJob": _JobKind("hyper-parameter-tuning-job", "HyperParameterTuningJobName",
                                              "HyperParameterTuningJob",
                                              "StepFunctionsGetEventsForSageMakerTuningJobsRule"),
}
#: What ``logs`` delivery and X-Ray need on the state machine role (Step Functions developer guide).
_LOG_DELIVERY_ACTIONS = ("logs:CreateLogDelivery", "logs:GetLogDelivery", "logs:UpdateLogDelivery",
                         "logs:DeleteLogDelivery", "logs:ListLogDeliveries", "logs:PutResourcePolicy",
                         "logs:DescribeResourcePolicies", "logs:DescribeLogGroups")
_XRAY_ACTIONS = ("xray:PutTraceSegments", "xray:PutTelemetryRecords", "xray:GetSamplingRules",
                 "xray:GetSamplingTargets")

NOT_COVERED = (
    "service quotas: training instances per type (new accounts often have 0 for GPU types), concurrent "
    "training and tuning jobs, Step Functions and CloudFormation limits",
    "resource policies: the KMS key policy, the bucket policies, ECR repository and registry policies",
    "pulling images from registries of other accounts (the AWS framework and built-in images), and "
    "whether the BYOC image is in the repository (it is copied there during the deploy)",
    "the CDK bootstrap (`cdk bootstrap`) and the permissions of whoever runs `cdk deploy`",
    "VPC, subnets, security groups and network access of the jobs",
    "what only shows at run time: fields that arrive through '.$' paths (States.Runtime), spot capacity, "
    "name collisions, the training code itself",
)


@dataclass(frozen=True)
class Check:
    """One call a run makes: ``action`` on ``resource`` (with condition ``context``), and why."""

    action: str
    resource: str
    why: str
    #: Condition keys and their values: a text, or a tuple for a multivalued key.
    context: tuple[tuple[str, str | tuple[str, ...]], ...] = ()

    def describe(self) -> str:
        context = "".join(f" [{key}={value if isinstance(value, str) else ','.join(value)}]"
                          for key, value in self.context)
        return f"{self.action} on {self.resource}{context}"


@dataclass(frozen=True)
class _Role:
    label: str
    logical_id: str
    arn: str
    policies: tuple[str, ...]
    deployed: bool


@dataclass(frozen=True)
class _Verdict:
    check: Check
    decision: str
    detail: str = ""
    by_guardrail: bool = False  # denied by an SCP or the permissions boundary


@dataclass
class _Outcome:
    failures: list[str] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# -- the synthesized app ----------------------------------------------------------------------
def load_app(outdir: Path) -> list[AppStack]:
    """The stacks of a cloud assembly with their names and target regions."""
    try:
        stacks = load_assembly(outdir)
    except FileNotFoundError:
        raise InputError(f"{outdir} holds no synthesized app: run `make synth` first (or pass --cdk-out)") from None
    if not any(_state_machines(stack) for stack in stacks):
        raise InputError(f"{outdir} holds no state machine: run `make synth` in this project")
    return stacks


def _state_machines(stack: AppStack) -> dict[str, dict[str, Any]]:
    return stack.resources("AWS::StepFunctions::StateMachine")


# -- what a run calls ---------------------------------------------------------------------------
def _strings(value: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], str]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, (*path, str(key)))
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item, path)
    elif isinstance(value, str):
        yield path, value


def _data(definition: Mapping[str, Any]) -> Iterator[tuple[tuple[str, ...], str]]:
    """The strings a run sends or carries: Pass results and state parameters (not Choice rules)."""
    for name, state in every_state(definition):
        for key in ("Result", "Parameters", "Arguments"):
            if key in state:
                yield from _strings(state[key], (name, key))


def _sample(value: str | None) -> str | None:
    """A value a ``States.Format`` template produces, with ``{}`` filled in."""
    if value is None:
        return None
    match = _FORMAT.match(value)
    return match.group(1).replace("{}", SAMPLE) if match else None


@dataclass
class _Derivation:
    """The calls a state machine's runs make, per role ARN."""

    account: str
    region: str
    partition: str
    bucket_keys: Mapping[str, str]
    data_bucket: str | None
    definition: Mapping[str, Any] = field(default_factory=dict)
    checks: dict[str, list[Check]] = field(default_factory=dict)
    foreign_images: set[str] = field(default_factory=set)
    not_derived: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, role_arn: str, check: Check) -> None:
        checks = self.checks.setdefault(role_arn, [])
        if all((c.action, c.resource, c.context) != (check.action, check.resource, check.context)
               for c in checks):
            checks.append(check)

    def arn(self, service: str, resource: str) -> str:
        return f"arn:{self.partition}:{service}:{self.region}:{self.account}:{resource}"

    def object_arn(self, bucket: str, key: str) -> str:
        return f"arn:{self.partition}:s3:::{bucket}/{key}"

    def bucket_arn(self, bucket: str) -> str:
        return f"arn:{self.partition}:s3:::{bucket}"


def derive_checks(definition: Mapping[str, Any], machine: Mapping[str, Any], derivation: _Derivation) -> None:
    """Add to ``derivation`` what the state machine role (``machine['RoleArn']``) and each role
    the jobs run as need for the runs of ``definition``."""
    machine_role = str(machine["RoleArn"])
    d = derivation
    d.definition = definition
    if machine.get("LoggingConfiguration", {}).get("Destinations"):
        for action in _LOG_DELIVERY_ACTIONS:
            d.add(machine_role, Check(action, "*", "state machine logging to CloudWatch Logs"))
    if machine.get("TracingConfiguration", {}).get("Enabled"):
        for action in _XRAY_ACTIONS:
            d.add(machine_role, Check(action, "*", "state machine tracing (X-Ray)"))
    samples: dict[str, str | None] = {"tuning": None, "training": None}
    tasks = [(name, state) for name, state in every_state(definition) if state.get("Type") == "Task"]
    # The states a Map runs once per item (a tuning run's cost describes each of its trials).
    in_maps = {inner for _, state in every_state(definition) if state.get("Type") == "Map"
               for inner in state.get("ItemProcessor", state.get("Iterator", {})).get("States", {})}
    # Creates first, so that a describe of "the best training job" knows the tuning job's name.
    tasks.sort(key=lambda task: 0 if re.search(r"create|submitServiceJob", str(task[1].get("Resource", ""))) else 1)
    for name, state in tasks:
        resource = str(state.get("Resource", ""))
        match = _INTEGRATION.fullmatch(resource)
        parameters = state.get("Parameters", {})
        if match and match["service"] == "sagemaker" and not match["sdk"] and match["api"] in _JOB_KINDS:
            job = _job_checks(name, match["api"], match["pattern"], parameters, machine_role, d)
            samples["tuning" if match["api"] == "createHyperParameterTuningJob" else "training"] = job
        elif match and match["sdk"] and match["service"] == "sagemaker" and \
                match["api"] == "createModelPackage":
            _registration_checks(name, parameters, definition, machine_role, d)
        elif match and match["sdk"] and match["service"] == "sagemaker":
            _sdk_sagemaker_checks(name, match["api"], parameters, machine_role, samples, d,
                                  per_item=name in in_maps)
        elif match and match["sdk"] and match["service"] == "s3" and match["api"] == "putObject":
            _put_object_checks(name, parameters, machine_role, d)
        elif match and match["sdk"] and match["service"] == "s3" and match["api"] == "copyObject":
            _copy_object_checks(name, state.get("Arguments", parameters), machine_role, d)
        elif match and match["sdk"] and match["service"] == "batch" and match["api"] in _BATCH_APIS:
            queued = _batch_checks(name, match["api"], state, machine, machine_role, d)
            samples["training"] = queued or samples["training"]
        else:
            d.not_derived.append(f"{name}: {resource}")
    if definition.get("QueryLanguage") == "JSONata":
        d.notes.append("the definition uses JSONata: job names and locations were not derived from it")


def _job_name(state: str, parameters: Mapping[str, Any], field_name: str, d: _Derivation) -> str:
    if field_name in parameters:
        return str(parameters[field_name])
    sample = _sample(parameters.get(f"{field_name}.$"))
    if sample is None:
        d.notes.append(f"{state}: the job name comes from a path at run time; checked with the sample "
                       f"name preflight-{SAMPLE}")
        return f"preflight-{SAMPLE}"
    return sample


def _job_checks(state: str, api: str, pattern: str | None, parameters: Mapping[str, Any],
                machine_role: str, d: _Derivation) -> str:
    kind = _JOB_KINDS[api]
    job = _job_name(state, parameters, kind.name_field, d)
    job_arn = d.arn("sagemaker", f"{kind.arn_type}/{job.lower()}")
    why = f"{state} ({api}{'.' + pattern if pattern else ''})"
    d.add(machine_role, Check(f"sagemaker:Create{kind.noun}", job_arn, why,
                              _create_context(parameters.get("TrainingJobDefinition", parameters),
                                              d.definition)))
    if "Tags" in parameters or "Tags.$" in parameters:
        d.add(machine_role, Check("sagemaker:AddTags", job_arn, f"{why}: tags on create"))
    if pattern == "sync":
        d.add(machine_role, Check(f"sagemaker:Describe{kind.noun}", job_arn, f"{why}: waits for the job"))
        d.add(machine_role, Check(f"sagemaker:Stop{kind.noun}", job_arn, f"{why}: stops the job when the "
                                                                          "execution stops"))
        d.add(machine_role, Check("sagemaker:ListTags", job_arn, f"{why}: .sync"))
        rule = d.arn("events", f"rule/{kind.events_rule}")
        for action in ("events:PutTargets", "events:PutRule", "events:DescribeRule"):
            d.add(machine_role, Check(action, rule, f"{why}: .sync learns of the job's end from EventBridge"))
    definitions = [parameters.get("TrainingJobDefinition"), *parameters.get("TrainingJobDefinitions", [])]
    training_job = job if api == "createTrainingJob" else f"{job}-001-{SAMPLE}"
    for job_request in [parameters, *[x for x in definitions if isinstance(x, dict)]]:
        _passed_role_checks(state, why, job_request, training_job, machine_role, d)
    return job


def _passed_role_checks(state: str, why: str, job_request: Mapping[str, Any], training_job: str,
                        machine_role: str, d: _Derivation) -> None:
    """The role a job request passes, and what a job running as it does. A request that reads its
    role from the program's settings (``RoleArn.$`` ``$.method.roleArn``: each program's jobs run
    as a role of their own) is checked once per program, with that program's role, locations and
    code (the Pass states that set ``$.method``)."""
    if isinstance(job_request.get("RoleArn"), str):
        programs = [(why, job_request, list(_data(d.definition)))]
    elif str(job_request.get("RoleArn.$", "")).startswith(_METHOD):
        programs = [(f"{why} ({prepare})", _with_method(job_request, method),
                     list(_strings(method, (prepare, "Result"))))
                    for prepare, method in _methods(d.definition)]
        for label, request, _ in programs:
            unresolved = sorted(set(re.findall(r"\$\.method\.[\w.]+", json.dumps(request))))
            if unresolved:
                d.notes.append(f"{label}: the job reads {', '.join(unresolved)}, which that state does "
                               "not set: what it names was not simulated")
        if not programs:
            d.notes.append(f"{state}: no Pass state sets the job's role at {job_request['RoleArn.$']}: "
                           "not simulated")
    else:
        if "RoleArn.$" in job_request:
            d.notes.append(f"{state}: the job's role comes from a path at run time: not simulated")
        return
    for label, request, data in programs:
        role = str(request["RoleArn"])
        d.add(machine_role, Check("iam:PassRole", role, f"{label}: passes the execution role",
                                  (("iam:PassedToService", "sagemaker.amazonaws.com"),)))
        _execution_role_checks(label, request, role, training_job, d, data=data)


#: Where a job request reads its program's settings (the Pass states that prepare a program).
_METHOD = "$.method."


def _methods(definition: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    """Each Pass state that sets a program's settings (``ResultPath`` ``$.method``, a ``Result``
    with ``roleArn``), with that result."""
    return [(name, st["Result"]) for name, st in every_state(definition)
            if st.get("Type") == "Pass" and st.get("ResultPath") == _METHOD[:-1]
            and isinstance(st.get("Result"), Mapping) and isinstance(st["Result"].get("roleArn"), str)]


def _with_method(value: Any, method: Mapping[str, Any]) -> Any:
    """``value`` (a request's JSONPath parameters) with the paths into ``$.method`` filled in from
    ``method``: ``"X.$": "$.method.y"`` becomes ``"X": method["y"]``, and a ``States.Format`` whose
    arguments name such paths, all of them set, becomes the formatted string (its other arguments:
    :data:`SAMPLE`). A path ``method`` does not set is left as it is."""
    if isinstance(value, list):
        return [_with_method(item, method) for item in value]
    if not isinstance(value, Mapping):
        return value
    out: dict[str, Any] = {}
    for key, item in value.items():
        if key.endswith(".$") and isinstance(item, str):
            if item.startswith(_METHOD) and item[len(_METHOD):] in method:
                out[key[:-2]] = method[item[len(_METHOD):]]
                continue
            call = _FORMAT_CALL.fullmatch(item)
            if call is not None:
                arguments = [a.strip() for a in call["arguments"].split(",")]
                ours = [a[len(_METHOD):] for a in arguments if a.startswith(_METHOD)]
                if ours and all(name in method for name in ours):
                    out[key[:-2]] = call["template"].format(*(
                        str(method[a[len(_METHOD):]]) if a.startswith(_METHOD) else SAMPLE for a in arguments))
                    continue
        out[key] = _with_method(item, method)
    return out


def _instance_sample(definition: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """What a run sends through paths at run time, from the definition: the default instance type
    (a Pass state's ``defaults.instanceType``) and a volume key it sets (``VolumeKmsKeyId``)."""
    instance_type = volume_key = None
    for _, state in every_state(definition):
        parameters = state.get("Parameters")
        if not isinstance(parameters, Mapping):
            continue
        defaults = parameters.get("defaults")
        if isinstance(defaults, Mapping) and isinstance(defaults.get("instanceType"), str):
            instance_type = defaults["instanceType"]
        if isinstance(parameters.get("VolumeKmsKeyId"), str):
            volume_key = parameters["VolumeKmsKeyId"]
    return instance_type, volume_key


def _create_context(job_request: Any,
                    definition: Mapping[str, Any]) -> tuple[tuple[str, str | tuple[str, ...]], ...]:
    """The SageMaker condition keys of a create request (Service Authorization Reference: "the
    ... associated with the resource in the request"): the output key, the VPC's subnets and
    security groups and network isolation as the definition fixes them; the instance type a run
    gets by default and, where that type has no local NVMe storage, the volume key the definition
    sets for it (smtrain.core.instance_storage), as the run would send them."""
    if not isinstance(job_request, Mapping):
        return ()
    context: list[tuple[str, str | tuple[str, ...]]] = []
    key = job_request.get("OutputDataConfig", {}).get("KmsKeyId")
    if isinstance(key, str):
        context.append(("sagemaker:OutputKmsKeyArn", key))
    instance_type, volume_key = _instance_sample(definition)
    if instance_type is not None:
        context.append(("sagemaker:InstanceTypes", (instance_type,)))
        try:
            nvme = has_local_nvme(instance_type)
        except UnknownInstanceStorage:
            nvme = False
        if volume_key is not None and not nvme:
            context.append(("sagemaker:VolumeKmsKeyArn", volume_key))
    vpc = job_request.get("VpcConfig")
    if isinstance(vpc, Mapping):
        for field_name, condition_key in (("Subnets", "sagemaker:VpcSubnets"),
                                          ("SecurityGroupIds", "sagemaker:VpcSecurityGroupIds")):
            values = vpc.get(field_name)
            if isinstance(values, list) and all(isinstance(v, str) for v in values):
                context.append((condition_key, tuple(values)))
    if job_request.get("EnableNetworkIsolation") is True:
        context.append(("sagemaker:NetworkIsolation", "true"))
    return tuple(context)


def _sdk_sagemaker_checks(state: str, api: str, parameters: Mapping[str, Any], machine_role: str,
                          samples: Mapping[str, str | None], d: _Derivation, *,
                          per_item: bool = False) -> None:
    action = "sagemaker:" + api[0].upper() + api[1:]
    if api == "describeTrainingJob" and per_item and samples["tuning"]:
        # Inside a Map: each training job of the tuning job (the tuning run's cost describes
        # every one of them; SageMaker names them after the tuning job).
        job = f"{samples['tuning']}-001-{SAMPLE}"
        d.add(machine_role, Check(action, d.arn("sagemaker", f"training-job/{job.lower()}"),
                                  f"{state} (aws-sdk:sagemaker:{api})"))
        return
    if api in ("describeTrainingJob", "stopTrainingJob"):
        path = str(parameters.get("TrainingJobName.$", ""))
        if "TrainingJobName" in parameters:
            job = str(parameters["TrainingJobName"])
        elif "BestTrainingJob" in path and samples["tuning"]:
            job = f"{samples['tuning']}-001-{SAMPLE}"  # a tuning job names its training jobs so
        else:
            job = samples["training"] or f"preflight-{SAMPLE}"
        resource = d.arn("sagemaker", f"training-job/{job.lower()}")
    elif api in ("describeHyperParameterTuningJob", "stopHyperParameterTuningJob",
                 "listTrainingJobsForHyperParameterTuningJob"):
        resource = d.arn("sagemaker", f"hyper-parameter-tuning-job/{(samples['tuning'] or 'preflight').lower()}")
    else:
        d.not_derived.append(f"{state}: arn:aws:states:::aws-sdk:sagemaker:{api}")
        return
    d.add(machine_role, Check(action, resource, f"{state} (aws-sdk:sagemaker:{api})"))


#: The team queue's Batch calls (infra/constructs/queued_training_job.py, queue_cleanup.py).
_BATCH_APIS = ("submitServiceJob", "describeServiceJob", "listServiceJobs", "terminateServiceJob")
_JOB_QUEUE_ARN = re.compile(r"arn:[\w-]+:batch:[\w-]+:\d{12}:job-queue/[A-Za-z0-9_-]+")


def _batch_checks(state: str, api: str, task: Mapping[str, Any], machine: Mapping[str, Any],
                  machine_role: str, d: _Derivation) -> str | None:
    """The team queue's calls (Service Authorization Reference, AWS Batch): a submit on the job
    queues and the new service job, its tags, and the execution role passed to SageMaker with the
    payload (the request a Pass state builds: ``request`` with ``RoleArn``, or ``RoleArn.$`` read
    from each program's settings), whose job runs as that role under Batch's name
    ``AWSBatch<name><attempt id>`` (returned); a describe and a list take no resource; a
    terminate acts on a service job carrying the project's tag."""
    why = f"{state} (aws-sdk:batch:{api})"
    service_job = d.arn("batch", f"service-job/{SAMPLE}")
    if api in ("describeServiceJob", "listServiceJobs"):
        d.add(machine_role, Check("batch:" + api[0].upper() + api[1:], "*", why))
        return None
    if api == "terminateServiceJob":
        name = str(machine.get("StateMachineName", ""))
        prefix = name[: -len(contract.QUEUE_CLEANUP_SUFFIX)] if name.endswith(contract.QUEUE_CLEANUP_SUFFIX) else None
        context = (("aws:ResourceTag/project", prefix),) if prefix else ()
        d.add(machine_role, Check("batch:TerminateServiceJob", service_job, why, context))
        return None
    arguments = task.get("Arguments", {})
    queues = sorted(set(_JOB_QUEUE_ARN.findall(json.dumps(arguments.get("JobQueue", "")))))
    if not queues:
        d.not_derived.append(f"{why}: the job queues (no job-queue ARN in JobQueue)")
    for queue in queues:
        d.add(machine_role, Check("batch:SubmitServiceJob", queue, f"{why}: the job queue"))
    d.add(machine_role, Check("batch:SubmitServiceJob", service_job, f"{why}: the new service job"))
    if "Tags" in arguments:
        d.add(machine_role, Check("batch:TagResource", service_job, f"{why}: tags on submit"))
    requests = [value["request"] for _, st in every_state(d.definition)
                if isinstance(value := st.get("Parameters"), Mapping)
                and isinstance(value.get("request"), Mapping)
                and {"RoleArn", "RoleArn.$"} & set(value["request"])]
    if not requests:
        d.not_derived.append(f"{why}: the payload (no Pass state builds a request with RoleArn or RoleArn.$)")
        return None
    request = requests[0]
    job = f"{contract.BATCH_TRAINING_JOB_PREFIX}{request.get('TrainingJobName', 'preflight')}{SAMPLE * 4}"
    _passed_role_checks(state, why, request, job, machine_role, d)
    return job


def _registration_checks(state: str, parameters: Mapping[str, Any], definition: Mapping[str, Any],
                         machine_role: str, d: _Derivation) -> None:
    """``aws-sdk:sagemaker:createModelPackage``: a version in each group a program's state
    names (``registry.group`` of the Pass results), with the approval status it sends."""
    why = f"{state} (aws-sdk:sagemaker:createModelPackage)"
    groups = sorted({value.rsplit("model-package-group/", 1)[-1] for path, value in _data(definition)
                     if path[-2:] == ("registry", "group")})
    status = parameters.get("ModelApprovalStatus")
    context = (("sagemaker:ModelApprovalStatus", str(status)),) if isinstance(status, str) else ()
    if not groups:
        d.not_derived.append(f"{state}: the model package groups (no registry.group in the definition)")
    for group in groups:
        d.add(machine_role, Check("sagemaker:CreateModelPackage",
                                  d.arn("sagemaker", f"model-package/{group.lower()}/1"),
                                  f"{why}: a version in {group}", context))


def _put_object_checks(state: str, parameters: Mapping[str, Any], machine_role: str,
                       d: _Derivation) -> None:
    """``aws-sdk:s3:putObject`` by the state machine (the model-quality report)."""
    why = f"{state} (aws-sdk:s3:putObject)"
    bucket = parameters.get("Bucket")
    key = parameters.get("Key") or _sample(parameters.get("Key.$"))
    if not isinstance(bucket, str) or not isinstance(key, str):
        d.not_derived.append(f"{why}: the bucket or key comes from a path at run time")
        return
    d.add(machine_role, Check("s3:PutObject", d.object_arn(bucket, key), why))
    if bucket in d.bucket_keys:
        d.add(machine_role, Check("kms:GenerateDataKey", d.bucket_keys[bucket],
                                  f"{why} (the bucket's SSE-KMS key, through S3)",
                                  (("kms:ViaService", f"s3.{d.region}.amazonaws.com"),)))


def _copy_object_checks(state: str, arguments: Mapping[str, Any], machine_role: str,
                        d: _Derivation) -> None:
    """``aws-sdk:s3:copyObject`` by the state machine (a registered model frozen under
    ``registry/``): read the job's model under ``models/``, write the copy, the bucket's key
    through S3 both ways."""
    why = f"{state} (aws-sdk:s3:copyObject)"
    bucket = arguments.get("Bucket")
    if not isinstance(bucket, str) or contract.REGISTERED_MODELS_PREFIX not in json.dumps(arguments.get("Key")):
        d.not_derived.append(f"{why}: the bucket or key is not the registry's")
        return
    source = f"{contract.MODELS_PREFIX}preflight-{SAMPLE}/output/model.tar.gz"
    target = f"{contract.REGISTERED_MODELS_PREFIX}preflight-{SAMPLE}/model.tar.gz"
    d.add(machine_role, Check("s3:GetObject", d.object_arn(bucket, source), f"{why}: the job's model"))
    d.add(machine_role, Check("s3:PutObject", d.object_arn(bucket, target), f"{why}: the frozen copy"))
    if bucket in d.bucket_keys:
        for action in ("kms:Decrypt", "kms:GenerateDataKey"):
            d.add(machine_role, Check(action, d.bucket_keys[bucket], f"{why} (the bucket's SSE-KMS key, through S3)",
                                      (("kms:ViaService", f"s3.{d.region}.amazonaws.com"),)))


def _execution_role_checks(state: str, request: Mapping[str, Any], role: str, job: str, d: _Derivation,
                           *, data: list[tuple[tuple[str, ...], str]]) -> None:
    """What a job running as ``role`` does: read its inputs and code, write its model and
    checkpoints, use the key, pull its image, log and publish metrics. ``data``: the strings of
    the definition that are the job's (its program's settings, or the whole definition)."""
    why = f"{state}: the job"
    output = request.get("OutputDataConfig", {})
    written: set[str] = set()
    if isinstance(output.get("S3OutputPath"), str):
        written.add(output["S3OutputPath"])
        _write_checks(role, output["S3OutputPath"], f"{job}/output/model.tar.gz", f"{why} writes its model", d)
    if isinstance(output.get("KmsKeyId"), str):
        key = output["KmsKeyId"]
        if key.startswith("arn:"):
            for action in ("kms:Encrypt", "kms:GenerateDataKey"):
                d.add(role, Check(action, key, f"{why}'s model is encrypted with OutputDataConfig.KmsKeyId "
                                               "(API reference: kms:Encrypt)"))
        else:
            d.notes.append(f"{state}: OutputDataConfig.KmsKeyId is not an ARN: its key was not simulated")
    checkpoint = request.get("CheckpointConfig", {})
    checkpoint_uri = checkpoint.get("S3Uri") or _sample(checkpoint.get("S3Uri.$"))
    if isinstance(checkpoint_uri, str):
        written.add(checkpoint_uri)
        _write_checks(role, checkpoint_uri, "checkpoint-1.pt", f"{why} saves checkpoints", d)
        _read_checks(role, checkpoint_uri, "checkpoint-1.pt", f"{why} resumes from checkpoints", d)
    # Every other S3 location the definition names is something the jobs read: channel
    # defaults (prefixes) and the script-mode code (an object).
    readable = {uri for path, uri in data if uri.startswith("s3://") and "*" not in uri
                and not {"OutputDataConfig", "CheckpointConfig", "outputUri", "checkpointUri"} & set(path)}
    readable -= written
    if d.data_bucket is not None:
        readable.add(f"s3://{d.data_bucket}/{contract.UPLOAD_PREFIX}/run-{SAMPLE}/train/")
    for uri in sorted(readable):
        if uri.endswith("/"):
            _read_checks(role, uri, "part-0.csv", f"{why} reads its input channel", d)
        else:
            _read_checks(role, uri, None, f"{why} reads its code", d)
    images = {value for path, value in data if path[-1] == "TrainingImage"}
    for image in sorted(images):
        match = _ECR_IMAGE.match(image)
        if match and match["account"] == d.account:
            repository = f"arn:{d.partition}:ecr:{match['region']}:{d.account}:repository/{match['repository']}"
            for action in ("ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"):
                d.add(role, Check(action, repository, f"{why} pulls {image}"))
            d.add(role, Check("ecr:GetAuthorizationToken", "*", f"{why} pulls {image}"))
        else:
            d.foreign_images.add(image)
    log_group = d.arn("logs", f"log-group:{TRAINING_LOG_GROUP}")
    for action in ("logs:CreateLogGroup", "logs:DescribeLogStreams"):
        d.add(role, Check(action, f"{log_group}:*", f"{why} logs to {TRAINING_LOG_GROUP}"))
    for action in ("logs:CreateLogStream", "logs:PutLogEvents"):
        d.add(role, Check(action, f"{log_group}:log-stream:{job}/algo-1-1700000000",
                          f"{why} logs to {TRAINING_LOG_GROUP}"))
    d.add(role, Check("cloudwatch:PutMetricData", "*", f"{why} publishes its metrics",
                      (("cloudwatch:namespace", TRAINING_METRICS_NAMESPACE),)))
    # A volume key (ResourceConfig.VolumeKmsKeyId, set by a Pass state of the definition) needs
    # kms:CreateGrant for the volume (developer guide, "CreateTrainingJob API: Execution Role
    # Permissions").
    for key in sorted({value for path, value in _data(d.definition) if path[-1] == "VolumeKmsKeyId"}):
        d.add(role, Check("kms:CreateGrant", key, f"{why}'s volume is encrypted with "
                          "ResourceConfig.VolumeKmsKeyId (developer guide: kms:CreateGrant)",
                          (("kms:GrantIsForAWSResource", "true"),)))
    # Under network isolation a script program's code is an S3Prefix channel naming one object:
    # SageMaker lists it before downloading it.
    for uri in sorted({value for path, value in data
                       if "codeChannels" in path and value.startswith("s3://")}):
        match = _S3_URI.fullmatch(uri)
        if match is not None:
            d.add(role, Check("s3:ListBucket", d.bucket_arn(match["bucket"]),
                              f"{why} lists its code channel", (("s3:prefix", match["key"]),)))
    _vpc_checks(request.get("VpcConfig"), role, why, d)
    environment = request.get("Environment", {})
    if isinstance(environment, dict) and contract.ENV_TRACKING_URI in environment:
        d.notes.append(f"{state}: the jobs log to MLflow ({environment[contract.ENV_TRACKING_URI]}): "
                       "its permissions were not simulated")


def _vpc_checks(vpc_config: Any, role: str, why: str, d: _Derivation) -> None:
    """A job with ``VpcConfig``: SageMaker attaches its network interfaces as the execution role
    (developer guide, "CreateTrainingJob API: Execution Role Permissions")."""
    if not isinstance(vpc_config, dict):
        return
    subnets = [s for s in vpc_config.get("Subnets", []) if isinstance(s, str)]
    groups = [g for g in vpc_config.get("SecurityGroupIds", []) if isinstance(g, str)]
    for action in ("ec2:DescribeNetworkInterfaces", "ec2:DescribeVpcs", "ec2:DescribeDhcpOptions",
                   "ec2:DescribeSubnets", "ec2:DescribeSecurityGroups"):
        d.add(role, Check(action, "*", f"{why} runs in the VPC (VpcConfig)"))
    interface = d.arn("ec2", f"network-interface/eni-{SAMPLE}")
    for resource in (interface, *(d.arn("ec2", f"subnet/{s}") for s in subnets),
                     *(d.arn("ec2", f"security-group/{g}") for g in groups)):
        d.add(role, Check("ec2:CreateNetworkInterface", resource, f"{why} runs in the VPC (VpcConfig)"))
    d.add(role, Check("ec2:DeleteNetworkInterfacePermission", "*", f"{why} runs in the VPC (VpcConfig)"))
    d.notes.append("VpcConfig: ec2:CreateNetworkInterfacePermission and ec2:DeleteNetworkInterface "
                   "were not simulated (the policy conditions them on the VPC, which the job's "
                   "request does not name)")


def _read_checks(role: str, uri: str, sample_object: str | None, why: str, d: _Derivation) -> None:
    """Read an object (``sample_object`` None) or list and read under a prefix."""
    match = _S3_URI.fullmatch(uri)
    if match is None:
        return
    bucket, key = match["bucket"], match["key"]
    if sample_object is None:
        d.add(role, Check("s3:GetObject", d.object_arn(bucket, key), why))
    else:
        d.add(role, Check("s3:ListBucket", d.bucket_arn(bucket), why, (("s3:prefix", key),)))
        d.add(role, Check("s3:GetObject", d.object_arn(bucket, key + sample_object), why))
    if bucket in d.bucket_keys:
        d.add(role, Check("kms:Decrypt", d.bucket_keys[bucket], f"{why} (the bucket's SSE-KMS key)"))


def _write_checks(role: str, uri: str, object_name: str, why: str, d: _Derivation) -> None:
    match = _S3_URI.fullmatch(uri)
    if match is None:
        return
    d.add(role, Check("s3:PutObject", d.object_arn(match["bucket"], match["key"] + object_name), why))
    if match["bucket"] in d.bucket_keys:
        for action in ("kms:GenerateDataKey", "kms:Decrypt"):  # Decrypt: multipart uploads
            d.add(role, Check(action, d.bucket_keys[match["bucket"]], f"{why} (the bucket's SSE-KMS key)"))


# -- the roles and their policies -------------------------------------------------------------------
def _bucket_keys(stacks: list[AppStack], refs: References) -> dict[str, str]:
    """``{bucket name: KMS key ARN}`` of the app's buckets with SSE-KMS by default."""
    keys = {}
    for stack in stacks:
        for logical_id, resource in stack.template.get("Resources", {}).items():
            if resource.get("Type") != "AWS::S3::Bucket":
                continue
            rules = resource.get("Properties", {}).get("BucketEncryption", {}).get(
                "ServerSideEncryptionConfiguration", [])
            for rule in rules:
                key = rule.get("ServerSideEncryptionByDefault", {}).get("KMSMasterKeyID")
                if key is not None:
                    keys[str(refs.render(stack.artifact_id, {"Ref": logical_id}))] = str(
                        refs.render(stack.artifact_id, key))
    return keys


def _roles(stacks: list[AppStack], refs: References) -> dict[str, _Role]:
    """``{role ARN: role}`` for every IAM role of the app, with every policy document that the
    app attaches to it (inline, its own managed policies, and policies naming it in ``Roles``)."""
    roles: dict[str, tuple[AppStack, str, str]] = {}
    documents: dict[str, list[Any]] = {}
    for stack in stacks:
        for logical_id, resource in stack.template.get("Resources", {}).items():
            if resource.get("Type") == "AWS::IAM::Role":
                arn = str(refs.render(stack.artifact_id, {"Fn::GetAtt": [logical_id, "Arn"]}))
                name = str(refs.render(stack.artifact_id, {"Ref": logical_id}))
                roles[name] = (stack, logical_id, arn)
                properties = resource.get("Properties", {})
                documents.setdefault(name, []).extend(
                    refs.render(stack.artifact_id, policy["PolicyDocument"])
                    for policy in properties.get("Policies", []))
    managed: dict[str, Any] = {}
    for stack in stacks:
        for logical_id, resource in stack.template.get("Resources", {}).items():
            if resource.get("Type") not in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
                continue
            properties = resource.get("Properties", {})
            document = refs.render(stack.artifact_id, properties["PolicyDocument"])
            if resource["Type"] == "AWS::IAM::ManagedPolicy":
                managed[str(refs.render(stack.artifact_id, {"Ref": logical_id}))] = document
            for role in properties.get("Roles", []):
                documents.setdefault(str(refs.render(stack.artifact_id, role)), []).append(document)
    result = {}
    for name, (stack, logical_id, arn) in roles.items():
        properties = stack.template["Resources"][logical_id].get("Properties", {})
        for policy_arn in properties.get("ManagedPolicyArns", []):
            rendered = str(refs.render(stack.artifact_id, policy_arn))
            if rendered in managed:
                documents[name].append(managed[rendered])
        result[arn] = _Role(label=f"{stack.stack_name}/{logical_id}", logical_id=logical_id, arn=arn,
                            policies=tuple(json.dumps(document) for document in documents.get(name, [])),
                            deployed=logical_id in stack.physical)
    return result


def _foreign_managed_policies(stacks: list[AppStack], refs: References) -> list[str]:
    own = {str(refs.render(stack.artifact_id, {"Ref": logical_id}))
           for stack in stacks for logical_id, resource in stack.template.get("Resources", {}).items()
           if resource.get("Type") == "AWS::IAM::ManagedPolicy"}
    return sorted({str(refs.render(stack.artifact_id, arn))
                   for stack in stacks for resource in stack.template.get("Resources", {}).values()
                   if resource.get("Type") == "AWS::IAM::Role"
                   for arn in resource.get("Properties", {}).get("ManagedPolicyArns", [])} - own)


# -- asking AWS --------------------------------------------------------------------------------
def _deployed(session: Any, region: str, stack: AppStack, outcome: _Outcome) -> None:
    """Fill ``stack.physical`` if the stack is deployed (its resources that exist)."""
    from botocore.exceptions import ClientError

    cloudformation = session.client("cloudformation", region_name=region)
    try:
        for page in cloudformation.get_paginator("list_stack_resources").paginate(StackName=stack.stack_name):
            for summary in page["StackResourceSummaries"]:
                if summary.get("PhysicalResourceId") and summary["ResourceStatus"] not in (
                        "DELETE_COMPLETE", "CREATE_FAILED", "CREATE_IN_PROGRESS"):
                    stack.physical[summary["LogicalResourceId"]] = summary["PhysicalResourceId"]
    except ClientError as error:
        if "does not exist" not in str(error):
            outcome.notes.append(f"could not look up stack {stack.stack_name} ({_code(error)}): "
                                 "its resources get placeholder names")
        stack.physical.clear()


def _code(error: Exception) -> str:
    response = getattr(error, "response", {})
    return str(response.get("Error", {}).get("Code", type(error).__name__))


_CANNOT_CALL = ("AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "UnknownOperationException",
                "UnrecognizedClientException", "NotAuthorized")


def validate_definition(session: Any, region: str, label: str, definition: str, machine_type: str,
                        outcome: _Outcome, *, probe: bool = False) -> dict[str, Any] | None:
    """Step Functions' answer on ``definition``, printed one line per diagnostic; none where it could
    not be asked. A ``FAIL`` fails the preflight unless ``probe`` (a variant that is not deployed)."""
    from botocore.exceptions import ClientError

    sfn = session.client("stepfunctions", region_name=region)
    try:
        response: dict[str, Any] = sfn.validate_state_machine_definition(
            definition=definition, type=machine_type, maxResults=100)
    except ClientError as error:
        if _code(error) in _CANNOT_CALL:
            outcome.unchecked.append(f"ValidateStateMachineDefinition for {label}: {error}")
            say(f"  not checked: {error}")
            return None
        if _code(error) == "ValidationException":  # e.g. larger than Step Functions accepts
            if not probe:
                outcome.failures.append(f"definition of {label}: {error}")
            say(f"  {'answer' if probe else 'FAIL'}: {error}")
            return None
        raise
    diagnostics = response.get("diagnostics", [])
    errors = sum(1 for diagnostic in diagnostics if diagnostic["severity"] == "ERROR")
    say(f"  result {response['result']}: {errors} errors, {len(diagnostics) - errors} warnings"
        + (" (more not shown: truncated)" if response.get("truncated") else ""))
    for diagnostic in diagnostics:
        location = f" at {diagnostic['location']}" if diagnostic.get("location") else ""
        say(f"  {diagnostic['severity']:<7} {diagnostic['code']}{location}: {diagnostic['message']}")
    if response["result"] != "OK" and not probe:
        outcome.failures.append(f"definition of {label}: {errors} errors")
    return response


def _validate_probe(session: Any, region: str, label: str, machine_type: str, outcome: _Outcome,
                    definition: str) -> dict[str, Any] | None:
    return validate_definition(session, region, label, definition, machine_type, outcome, probe=True)


def simulate(session: Any, role: _Role, checks: list[Check], *, principal: bool) -> list[_Verdict]:
    """The simulator's verdict on each check: ``SimulateCustomPolicy`` with the app's policy
    documents, or ``SimulatePrincipalPolicy`` on the deployed role."""
    iam = session.client("iam")
    groups: dict[tuple[str, tuple[tuple[str, str | tuple[str, ...]], ...]], list[Check]] = {}
    for check in checks:
        groups.setdefault((check.resource, check.context), []).append(check)
    verdicts = []
    for (resource, context), group in groups.items():
        request: dict[str, Any] = {"ActionNames": sorted({c.action for c in group}), "ResourceArns": [resource]}
        if context:
            request["ContextEntries"] = [
                {"ContextKeyName": key, "ContextKeyValues": [value] if isinstance(value, str) else list(value),
                 "ContextKeyType": _BOOLEAN_KEYS.get(key, "string") if isinstance(value, str) else "stringList"}
                for key, value in context]
        if principal:
            pages = iam.get_paginator("simulate_principal_policy").paginate(PolicySourceArn=role.arn, **request)
        else:
            pages = iam.get_paginator("simulate_custom_policy").paginate(PolicyInputList=list(role.policies),
                                                                          **request)
        results = {result["EvalActionName"].lower(): result for page in pages
                   for result in page["EvaluationResults"]}
        for check in group:
            result = results.get(check.action.lower())
            if result is None:
                verdicts.append(_Verdict(check, "missing", "the simulator returned no result"))
                continue
            verdicts.append(_verdict(check, result))
    return verdicts


def _verdict(check: Check, result: Mapping[str, Any]) -> _Verdict:
    decision = str(result["EvalDecision"])
    for specific in result.get("ResourceSpecificResults", []):
        if specific.get("EvalResourceDecision", "allowed") != "allowed":
            decision = str(specific["EvalResourceDecision"])
    details = []
    by_guardrail = False
    if result.get("OrganizationsDecisionDetail", {}).get("AllowedByOrganizations") is False:
        details.append("denied by an SCP")
        by_guardrail = True
    if result.get("PermissionsBoundaryDecisionDetail", {}).get("AllowedByPermissionsBoundary") is False:
        details.append("denied by the permissions boundary")
        by_guardrail = True
    if result.get("MissingContextValues"):
        details.append("missing context: " + ", ".join(result["MissingContextValues"]))
    return _Verdict(check, decision, "; ".join(details), by_guardrail)


# -- the command ----------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> int:
    return run_handler(lambda parsed: preflight(parsed.cdk_out), args, usage_errors=(UnresolvedReference,))


def preflight(outdir: Path) -> int:
    stacks = load_app(outdir)
    app_regions = {stack.region for stack in stacks if stack.region}
    if len(app_regions) > 1:
        raise InputError(f"the app targets several regions ({', '.join(sorted(app_regions))}); "
                         "preflight checks one")
    app_region = next(iter(app_regions), None)
    session = aws_session(app_region)
    region = app_region or session.region_name
    identity = session.client("sts", region_name=region).get_caller_identity()
    account, partition = identity["Account"], identity["Arn"].split(":")[1]
    outcome = _Outcome()
    say(f"Preflight of {outdir} as {identity['Arn']}: account {account}, region {region}")
    if app_region and session.region_name and session.region_name != app_region:
        outcome.notes.append(f"your configured region is {session.region_name}, the app deploys to {app_region}: "
                             f"checked in {app_region}")
    for stack in stacks:
        _deployed(session, region, stack, outcome)
    say("Stacks: " + ", ".join(f"{s.stack_name} ({'deployed' if s.physical else 'not deployed'})" for s in stacks)
        + ("" if all(s.physical for s in stacks) else "; undeployed resources get placeholder names"))

    refs = References(stacks, account=account, region=region, partition=partition)
    outputs = {key: str(refs.render(stack.artifact_id, output["Value"]))
               for stack in stacks for key, output in stack.template.get("Outputs", {}).items()}
    derivation = _Derivation(account=account, region=region, partition=partition,
                             bucket_keys=_bucket_keys(stacks, refs),
                             data_bucket=outputs.get(contract.OUTPUT_DATA_BUCKET))
    for stack in stacks:
        for logical_id, resource in _state_machines(stack).items():
            properties = refs.render(stack.artifact_id, resource["Properties"])
            label = f"{stack.stack_name}/{logical_id}"
            definition_text = properties.get("DefinitionString")
            if not isinstance(definition_text, str):
                raise InputError(f"{label} has no DefinitionString (a definition in S3 is not supported)")
            for key, value in properties.get("DefinitionSubstitutions", {}).items():
                definition_text = definition_text.replace("${" + key + "}", str(value))
            machine_type = str(properties.get("StateMachineType", "STANDARD"))
            say("")
            say(f"1. State machine definition of {label} (Step Functions ValidateStateMachineDefinition, "
                f"{machine_type})")
            answer = validate_definition(session, region, label, definition_text, machine_type, outcome)
            retry_strategy_check.report(definition_text, answer, say=say, ask=functools.partial(
                _validate_probe, session, region, label, machine_type, outcome))
            try:
                definition = json.loads(definition_text)
            except json.JSONDecodeError:
                derivation.notes.append(f"{label}: the definition is not JSON, so no calls were derived from it")
                continue
            derive_checks(definition, properties, derivation)

    roles = _roles(stacks, refs)
    say("")
    say("2. IAM: may each role make the calls a run makes? (IAM policy simulator)")
    verdict_of: dict[tuple[str, Check], _Verdict] = {}
    checked = 0
    for role_arn, checks in derivation.checks.items():
        role = roles.get(role_arn)
        if role is None:
            outcome.unchecked.append(f"role {role_arn} is not defined in the app: its {len(checks)} calls were "
                                     "not simulated")
            say(f"  {role_arn}: not defined in the app, not simulated")
            continue
        checked += len(checks)
        _report(session, role, checks, outcome, verdict_of, principal=False)
        if role.deployed:
            _report(session, role, checks, outcome, verdict_of, principal=True)

    say("")
    say("Not covered (check these yourself):")
    for line in (*NOT_COVERED, *_dynamic_gaps(stacks, refs, derivation, roles)):
        say(f"  - {line}")
    for note in (*derivation.notes, *outcome.notes):
        say(f"  note: {note}")
    say("")
    definition_state = "FAIL" if any(f.startswith("definition") for f in outcome.failures) else "OK"
    denied = sum(1 for f in outcome.failures if not f.startswith("definition"))
    say(f"Summary: definition {definition_state}; {checked} calls simulated, {denied} denied"
        + (f"; {len(outcome.unchecked)} checks could not run" if outcome.unchecked else ""))
    for line in outcome.unchecked:
        say(f"  could not check: {line}")
    if outcome.failures:
        say("Something would fail: fix it before `cdk deploy` (or before the first run).")
        return EXIT_FAILED
    if outcome.unchecked:
        say("Nothing failed, but not everything could be checked.")
        return EXIT_ENVIRONMENT
    say("Nothing that preflight checks would fail.")
    return EXIT_OK


def _report(session: Any, role: _Role, checks: list[Check], outcome: _Outcome,
            verdict_of: dict[tuple[str, Check], _Verdict], *, principal: bool) -> None:
    from botocore.exceptions import ClientError

    source = f"SimulatePrincipalPolicy on the deployed {role.arn}" if principal else \
        "SimulateCustomPolicy with the synthesized policies"
    try:
        verdicts = simulate(session, role, checks, principal=principal) if role.policies or principal else \
            [_Verdict(check, "implicitDeny", "no policy of the app is attached to the role") for check in checks]
    except ClientError as error:
        if _code(error) in _CANNOT_CALL:
            outcome.unchecked.append(f"{source.split()[0]} for {role.label}: {error}")
            say(f"  {role.label}: not checked ({error})")
            return
        raise
    denied = [v for v in verdicts if v.decision != "allowed"]
    say(f"  {role.label} ({source}): {len(verdicts)} calls, "
        + (f"{len(denied)} denied" if denied else "all allowed"))
    for verdict in denied:
        synthesized = verdict_of.get((role.arn, verdict.check))
        fixed_by_deploy = (principal and not verdict.by_guardrail and synthesized is not None
                           and synthesized.decision == "allowed")
        detail = f"; {verdict.detail}" if verdict.detail else ""
        if fixed_by_deploy:
            say(f"    denied now, allowed once deployed: {verdict.check.describe()} ({verdict.decision}{detail})")
            continue
        if principal and synthesized is not None and synthesized.decision != "allowed" and not verdict.by_guardrail:
            continue  # already reported from the synthesized policies
        say(f"    DENIED {verdict.check.describe()} ({verdict.decision}{detail})")
        say(f"           needed: {verdict.check.why}")
        outcome.failures.append(f"{role.label}: {verdict.check.describe()}")
    if not principal:
        verdict_of.update({(role.arn, v.check): v for v in verdicts})


def _dynamic_gaps(stacks: list[AppStack], refs: References, derivation: _Derivation,
                  roles: Mapping[str, _Role]) -> list[str]:
    gaps = []
    if not any(role.deployed for role in roles.values()):
        gaps.append("SCPs, permission boundaries and session policies (simulated only for deployed roles, "
                    "with SimulatePrincipalPolicy)")
    for image in sorted(derivation.foreign_images):
        gaps.append(f"pulling {image}")
    for task in derivation.not_derived:
        gaps.append(f"the calls of Task state {task} (not derived)")
    for policy in _foreign_managed_policies(stacks, refs):
        gaps.append(f"managed policy {policy} (not in the app: left out of SimulateCustomPolicy)")
    return gaps
