"""What ``cdk deploy`` would create, stood in locally from a synthesized ``cdk.out``.

Every reference in the state machine's definition is resolved to a local value: buckets get
local names (directories of the S3 stand-in), roles, keys and repositories get ARNs in a fake
account, cross-stack imports follow the exporting stack's outputs, and the file assets (the
script-mode tarball) are copied to where the CDK bootstrap bucket would hold them.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smtrain.core import contract
from smtrain.core.assembly import AppStack, References, load_app, render_definition
from smtrain.local.s3_stand_in import LocalS3

ACCOUNT = "123456789012"
#: The offline stacks' id (``AWS::StackId``): names made unique per stack creation use it.
LOCAL_STACK_UUID = "10ca1000-0000-4000-8000-000000000000"
_HASH_SUFFIX = re.compile(r"[0-9A-F]{8}$")


def local_name(logical_id: str) -> str:
    """``BucketsData941F65F0`` -> ``local-buckets-data`` (a valid bucket or repository name)."""
    words = re.findall(r"[A-Z]+(?![a-z])|[A-Z]?[a-z0-9]+", _HASH_SUFFIX.sub("", logical_id))
    return "local-" + "-".join(word.lower() for word in words)[:50]


@dataclass(frozen=True)
class ByocProgram:
    """A BYOC program as synthesized: its image's staged build context in ``cdk.out`` (what
    ``docker build`` would see), so an offline run runs the synthesized code."""

    name: str
    image_uri: str
    #: The staged build context (``cdk.out/asset.<hash>``).
    context_dir: Path
    #: The program's folder inside it (the context itself, or ``<context>/<program>``).
    program_dir: Path
    #: What SageMaker's ``docker run <image> train`` runs.
    entry_point: Path
    #: The staged Dockerfile (None: not known; the program folder's requirements.txt is then
    #: taken as what the image installs).
    dockerfile: Path | None = None


@dataclass(frozen=True)
class LocalDeployment:
    definition: dict[str, Any]
    state_machine_name: str
    data_bucket: str
    artifacts_bucket: str
    #: BYOC programs by image URI.
    byoc_programs: dict[str, ByocProgram]
    region: str
    outputs: dict[str, str]
    #: The model package groups' names by program id (``contract.output_id(program)``), from
    #: the ``ModelPackageGroup<Id>`` outputs.
    model_groups: dict[str, str] = field(default_factory=dict)
    #: The team queue (setting ``queue: batch``): its job queues by name and the service
    #: environment's capacity in instances; none without it.
    queue: TeamQueue | None = None
    #: The state machine that terminates a stopped execution's queued job (with the queue).
    cleanup_definition: dict[str, Any] | None = None


@dataclass(frozen=True)
class TeamQueue:
    """What the templates declare of the team queue: each ``AWS::Batch::JobQueue`` (name,
    ``Priority``, whether it has a ``SchedulingPolicyArn``) and the service environment's
    ``CapacityLimits`` (``NUM_INSTANCES``)."""

    queues: dict[str, tuple[int, bool]]
    capacity: int


def _team_queue(stacks: list[AppStack]) -> TeamQueue | None:
    queues = {str(r["Properties"]["JobQueueName"]): (int(r["Properties"]["Priority"]),
                                                     "SchedulingPolicyArn" in r["Properties"])
              for stack in stacks for r in stack.resources("AWS::Batch::JobQueue").values()}
    limits = [limit for stack in stacks
              for r in stack.resources("AWS::Batch::ServiceEnvironment").values()
              for limit in r["Properties"]["CapacityLimits"]]
    if not queues or not limits:
        return None
    return TeamQueue(queues=queues, capacity=sum(int(limit["MaxCapacity"]) for limit in limits))


class LocalReferences(References):
    """The app's references as the offline deployment names them (the core's resolution, with
    these names): one fake account, every stack named ``local`` with a fixed id, a bucket or
    repository ``local-<words of its logical id>`` (a directory of the S3 stand-in), an EC2
    resource an EC2-shaped id, an ARN of the resource's service where the engine reads one."""

    def __init__(self, stacks: list[AppStack], *, region: str) -> None:
        super().__init__(stacks, account=ACCOUNT, region=region)

    def pseudo(self, stack: AppStack, name: str) -> str | None:
        if name == "AWS::StackName":
            return "local"
        if name == "AWS::StackId":
            return f"arn:aws:cloudformation:{self.region}:{ACCOUNT}:stack/local/{LOCAL_STACK_UUID}"
        return super().pseudo(stack, name)

    def ref(self, stack: AppStack, logical_id: str) -> str:
        resource_type = self.resource(stack, logical_id)["Type"]  # fails for an unknown resource
        return _ec2_id(resource_type, logical_id) or local_name(logical_id)

    def attribute(self, stack: AppStack, logical_id: str, attribute: str) -> str:
        resource_type, name = self.resource(stack, logical_id)["Type"], local_name(logical_id)
        if resource_type == "AWS::EC2::SecurityGroup" and attribute == "GroupId":
            return _ec2_id(resource_type, logical_id) or name
        if attribute != "Arn":
            return f"{name}-{attribute.lower()}"
        service_arns = {
            "AWS::S3::Bucket": f"arn:aws:s3:::{name}",
            "AWS::ECR::Repository": f"arn:aws:ecr:{self.region}:{ACCOUNT}:repository/{name}",
            "AWS::IAM::Role": f"arn:aws:iam::{ACCOUNT}:role/{name}",
            "AWS::KMS::Key": f"arn:aws:kms:{self.region}:{ACCOUNT}:key/{name}",
        }
        return service_arns.get(resource_type, f"arn:aws:local:{self.region}:{ACCOUNT}:{name}")


#: EC2 id prefixes by resource type: a job's VpcConfig must hold ids of EC2's shape (botocore's
#: sagemaker model: SubnetId and SecurityGroupId are at most 32 of [-0-9a-zA-Z]).
_EC2_ID_PREFIXES = {"AWS::EC2::VPC": "vpc", "AWS::EC2::Subnet": "subnet",
                    "AWS::EC2::SecurityGroup": "sg", "AWS::EC2::VPCEndpoint": "vpce"}


def _ec2_id(resource_type: str, logical_id: str) -> str | None:
    """A stable EC2-shaped id (``subnet-`` and 17 hex digits) for an EC2 resource, else none."""
    prefix = _EC2_ID_PREFIXES.get(resource_type)
    if prefix is None:
        return None
    return f"{prefix}-{hashlib.sha256(logical_id.encode()).hexdigest()[:17]}"


def load_deployment(outdir: Path, *, s3: LocalS3, region: str = "us-east-1") -> LocalDeployment:
    """Resolve the synthesized app in ``outdir`` and publish its file assets into ``s3``. Every
    path the deployment holds is absolute: jobs run with their own job tree as the working
    directory, so a BYOC entry point under a relative ``cdk.out`` would be looked for there."""
    outdir = outdir.resolve()
    stacks = load_app(outdir)
    references = LocalReferences(stacks, region=region)
    machines = [(stack, resource["Properties"]) for stack in stacks
                for resource in stack.resources("AWS::StepFunctions::StateMachine").values()]
    # The training state machine, and with the team queue its cleanup (QueueCleanup).
    found = [(stack, m) for stack, m in machines
             if not str(m.get("StateMachineName", "")).endswith(contract.QUEUE_CLEANUP_SUFFIX)]
    if len(found) != 1:
        raise ValueError(f"expected one training state machine in {outdir}, found {len(found)}")
    stack, machine = found[0]
    definition = render_definition(machine["DefinitionString"], references.resolver(stack.artifact_id))
    cleanup = [render_definition(m["DefinitionString"], references.resolver(s.artifact_id))
               for s, m in machines if str(m.get("StateMachineName", "")).endswith(contract.QUEUE_CLEANUP_SUFFIX)]
    _publish_file_assets(outdir, s3, region)
    outputs = references.outputs()
    return LocalDeployment(
        definition=definition,
        state_machine_name=str(machine.get("StateMachineName", "local-training")),
        data_bucket=outputs[contract.OUTPUT_DATA_BUCKET],
        artifacts_bucket=outputs[contract.OUTPUT_ARTIFACTS_BUCKET],
        byoc_programs=_byoc_programs(outdir, outputs),
        region=region,
        outputs=outputs,
        model_groups=_model_groups(outputs),
        queue=_team_queue(stacks),
        cleanup_definition=cleanup[0] if cleanup else None,
    )


def _model_groups(outputs: dict[str, str]) -> dict[str, str]:
    """The model package groups by their output's program id (``contract.output_id``)."""
    prefix = contract.OUTPUT_MODEL_PACKAGE_GROUP
    return {key.removeprefix(prefix): value for key, value in outputs.items()
            if key.startswith(prefix)}


def _byoc_programs(outdir: Path, outputs: dict[str, str]) -> dict[str, ByocProgram]:
    """Each ``ProgramImage<Id>`` output's image, found by its tag (the asset hash) among the
    staged Docker contexts of ``*.assets.json``."""
    from smtrain.core.programs import load as load_program

    staged: dict[str, tuple[Path, str]] = {}
    for manifest_path in sorted(outdir.glob("*.assets.json")):
        for asset_hash, asset in json.loads(manifest_path.read_text()).get("dockerImages", {}).items():
            source = asset["source"]
            staged[asset_hash] = (outdir / source["directory"], source.get("dockerFile", "Dockerfile"))
    programs = {}
    for key, image_uri in outputs.items():
        if not key.startswith(contract.OUTPUT_PROGRAM_IMAGE):
            continue
        tag = image_uri.rsplit(":", 1)[-1]
        if tag not in staged:
            raise ValueError(f"output {key}: no staged image context for tag {tag} in {outdir}")
        context_dir, dockerfile = staged[tag]
        program_dir = (context_dir / dockerfile).parent
        program = load_program(program_dir, staged=True)
        programs[image_uri] = ByocProgram(
            name=program.name, image_uri=image_uri, context_dir=context_dir,
            program_dir=program_dir, entry_point=program_dir / (program.entry_point or "train"),
            dockerfile=context_dir / dockerfile)
    return programs


def _publish_file_assets(outdir: Path, s3: LocalS3, region: str) -> None:
    for manifest_path in sorted(outdir.glob("*.assets.json")):
        manifest = json.loads(manifest_path.read_text())
        for asset in manifest.get("files", {}).values():
            source = outdir / asset["source"]["path"]
            if not source.is_file():
                continue  # directory assets (the image-copy Lambda) are not needed offline
            for destination in asset["destinations"].values():
                bucket = (destination["bucketName"].replace("${AWS::AccountId}", ACCOUNT)
                          .replace("${AWS::Region}", region))
                s3.put_file(source, f"s3://{bucket}/{destination['objectKey']}")
