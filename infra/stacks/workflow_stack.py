"""The stateless stack: code assets, the state machine, its logs and its alerts."""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aws_cdk import Annotations, CfnOutput, Stack
from aws_cdk import aws_iam as iam
from constructs import Construct

from infra.constructs.failure_notifications import FailureNotifications
from infra.constructs.queued_training_job import QueueTarget
from infra.constructs.source_bundle import SourceBundle
from infra.constructs.training_image import TrainingImage
from infra.constructs.training_job_task import JobSecurity
from infra.constructs.training_state_machine import (
    GPU_INSTANCE_FAMILIES,
    DeployedProgram,
    TrainingStateMachine,
    TrainingStateMachineProps,
)
from infra.images import (
    FrameworkImages,
    ImageVersionError,
    NoBuiltinImage,
    TrainingImages,
    builtin_algorithms_in,
    builtin_image,
    framework_images,
    training_images,
)
from infra.log_retention import retention_for_days
from infra.settings import FRAMEWORK_SETTINGS, Settings, SettingsError
from infra.stacks.storage_stack import StorageStack
from smtrain.core import builtin_algorithms, contract
from smtrain.core.budget import budget_text
from smtrain.core.input_rules import InputDefaults
from smtrain.core.instance_storage import UnknownInstanceStorage, has_local_nvme
from smtrain.core.programs import MANIFEST, Program, ProgramError
from smtrain.core.programs import discover as discover_programs
from smtrain.core.vendored_requirements import (
    IMAGE_RUNTIMES,
    OLDEST_IMAGE_GLIBC_MINOR,
    WheelTarget,
    python_version_of,
)

TRAINING_CODE_DIR = Path(__file__).resolve().parents[2] / "training_code"


def script_images(settings: Settings, program: Program) -> FrameworkImages:
    """A script program's framework images in the stack's region: the build its manifest names
    (``[script] framework_version``, ``py_version``, ``base_framework_version``), each part it
    leaves out from the framework's settings. A build AWS has no image for fails synth with one
    line naming the manifest's field (or the setting) and the versions that exist; so does a
    GPU-only framework (Hugging Face) where no GPU instance type may run it."""
    framework = program.framework or "pytorch"
    version, py_version, base = settings.framework_build(framework)
    given = {"framework_version": program.framework_version, "py_version": program.py_version,
             "base_framework_version": program.base_framework_version}
    version = given["framework_version"] or version
    py_version = given["py_version"] or py_version
    base = given["base_framework_version"] or base
    if program.distribution == "multi_worker_mirrored" and version is not None \
            and _release(version) < contract.MULTI_WORKER_MIRRORED_SINCE:
        # The SDK refuses it below TensorFlow 2.9 (estimator.py, _validate_mwms_config).
        since = ".".join(map(str, contract.MULTI_WORKER_MIRRORED_SINCE))
        if given["framework_version"] is not None:
            raise ProgramError(f"{where_of(program)}: 'script.distribution': multi_worker_mirrored "
                               f"needs TensorFlow {since} or later, and 'script.framework_version' "
                               f"is {version}")
        raise SettingsError(f"setting '{FRAMEWORK_SETTINGS[framework][0]}' is {version}, and program "
                            f"{program.name} ({where_of(program)}) declares distribution "
                            f"multi_worker_mirrored, which needs TensorFlow {since} or later")
    if framework == "huggingface" and base is not None and base.startswith("tensorflow") \
            and program.distribution not in contract.distributions(framework, base):
        # Its default, torch_distributed, is the PyTorch toolkit's: a TensorFlow base has none.
        raise SettingsError(f"setting '{FRAMEWORK_SETTINGS[framework][2]}' is {base}, and program "
                            f"{program.name} ({where_of(program)}) distributes with "
                            f"{program.distribution}, which a TensorFlow-based Hugging Face image "
                            "does not run: declare [script] distribution = \"sm_hosts\" or a "
                            "pytorch base_framework_version")
    try:
        images = framework_images(region=settings.region, framework=framework, version=version,
                                  py_version=py_version, base_framework_version=base)
    except ImageVersionError as error:
        where = where_of(program)
        if error.field == "region":
            raise SettingsError(f"region {settings.region}: {framework} ({where}) has no SageMaker "
                                f"image there: {error.message}") from None
        if given.get(error.field) is not None:
            raise ProgramError(f"{where}: 'script.{error.field}': {framework} "
                               f"{given[error.field]} has no SageMaker image: {error.message}"
                               ) from None
        names = dict(zip(("framework_version", "py_version", "base_framework_version"),
                         FRAMEWORK_SETTINGS[framework], strict=True))
        raise SettingsError(f"setting '{names[error.field]}' ({framework}, for {where}) has no "
                            f"SageMaker image: {error.message}") from None
    gpu_types = [t for t in settings.allowed_instance_types if t.startswith(GPU_INSTANCE_FAMILIES)]
    if framework == "sklearn" and (len(gpu_types) == len(settings.allowed_instance_types) or
                                   program.instance_type in gpu_types):
        # The SDK's SKLearn refuses GPU instance types (sklearn/estimator.py), as the state
        # machine does for this program.
        raise (ProgramError(f"{where_of(program)}: 'instance_type': {program.instance_type} has a "
                            "GPU, and sklearn trains on CPU instances only")
               if program.instance_type in gpu_types else
               SettingsError(f"setting 'allowedInstanceTypes' has no CPU instance type, and "
                             f"program {program.name} ({where_of(program)}) runs on sklearn, "
                             "which trains on CPU instances only"))
    if images.training_cpu is None:
        if not gpu_types:
            raise SettingsError(f"setting 'allowedInstanceTypes' has no GPU instance type, and "
                                f"program {program.name} ({where_of(program)}) runs on "
                                f"{framework}, whose training images are GPU builds only")
        if program.instance_type is not None and program.instance_type not in gpu_types:
            raise ProgramError(f"{where_of(program)}: 'instance_type': {program.instance_type} has "
                               f"no GPU, and {framework}'s training images are GPU builds only")
    return images


def _release(version: str) -> tuple[int, ...]:
    """``2.19`` as (2, 19): the leading numbers of an image version."""
    numbers = []
    for part in version.replace("-", ".").split("."):
        if not part.isdigit():
            break
        numbers.append(int(part))
    return tuple(numbers)


def where_of(program: Program) -> str:
    return f"{program.directory}/{MANIFEST}"


#: What a training container may reach in each ``network`` mode, said at every synth and deploy
#: (an info message of the workflow stack, which the CDK CLI prints): the choice is visible where
#: it is made. The same as the README's table and docs/security.md.
NETWORK_NOTICES = {
    "public": "network: public - training containers can reach the internet with the job's AWS "
              "credentials, so a program can send data outside the account; set network to sealed "
              "(no network, no fixed cost), vpc or isolated to keep it in (docs/security.md)",
    "sealed": "network: sealed - training containers reach no network and hold no AWS credentials "
              "(EnableNetworkIsolation); SageMaker moves the data and the model",
    "vpc": "network: vpc - training containers reach only the VPC's endpoints, which admit this "
           "account's principals on this account's resources (docs/security.md)",
    "isolated": "network: isolated - training containers reach no network (the VPC plus "
                "EnableNetworkIsolation); SageMaker moves the data and the model through the VPC",
}


#: Said at every synth where jobs run isolated while the stack tracks experiments: the containers
#: cannot reach MLflow, so the state machine gives them no tracking URI and their programs log
#: nothing there (SageMaker still keeps their metrics).
TRACKING_UNDER_ISOLATION = (
    "experimentTracking: {tracking} while network is {network} - training containers cannot reach "
    "MLflow, so jobs log no runs there (SageMaker keeps their metrics, and the run's output its "
    "metrics and cost); for runs in MLflow set network to public, or to vpc with experimentTracking "
    "server (through its endpoint; an MLflow App has none) (docs/tracking.md)")


class WorkflowStack(Stack):
    """Everything that can be destroyed and redeployed freely; reads data resources from
    ``storage``."""

    def __init__(self, scope: Construct, construct_id: str, *, settings: Settings,
                 storage: StorageStack, training_code_dir: Path = TRAINING_CODE_DIR,
                 programs: Mapping[str, Program] | None = None, **kwargs: Any) -> None:
        super().__init__(scope, construct_id, **kwargs)
        images = training_images(
            region=settings.region, pytorch_version=settings.pytorch_version,
            pytorch_py_version=settings.pytorch_py_version, xgboost_version=settings.xgboost_version,
        )
        # Every program of training_code/: a deterministic tarball per script program, an image
        # per BYOC program (copied into the project's repository), nothing for built-ins.
        if programs is None:
            programs = discover_programs(training_code_dir)
        unregistered = sorted(set(programs) - set(storage.registry.groups))
        if unregistered:
            raise ValueError(f"the storage stack has no model package group for {unregistered}")
        for program in programs.values():
            if program.instance_type is not None and \
                    program.instance_type not in settings.allowed_instance_types:
                raise SettingsError(
                    f"setting 'allowedInstanceTypes' lacks {program.instance_type}, the "
                    f"instance_type of program {program.name} ({program.directory}/program.toml)")
            _check_isolation(settings, program)
        for instance_type in settings.allowed_instance_types:
            try:
                has_local_nvme(instance_type)
            except UnknownInstanceStorage as error:
                raise SettingsError(
                    f"setting 'allowedInstanceTypes' has {instance_type}, whose local storage is "
                    f"unknown, so whether a job may name a volume key (VolumeKmsKeyId) is too: "
                    f"{error}") from None
        deployed: list[DeployedProgram] = []
        images_copied: list[Construct] = []
        # Jobs get a tracking URI only where the deployment tracks and their containers have a
        # network (the state machine's tracking_uri below).
        jobs_track = storage.tracking is not None and not settings.network_isolation
        for program in programs.values():
            construct_id = contract.output_id(program.name)
            role = storage.program_roles[program.name]
            role_arn = role.role_arn
            if program.kind == "script":
                source = SourceBundle(
                    self, f"Source{construct_id}", source_dir=program.directory,
                    extra_packages={name: training_code_dir / name for name in program.shared},
                    wheels_for=functools.partial(_wheels_for, settings, program),
                    program=program.name, with_tracking=jobs_track)
                deployed.append(DeployedProgram(
                    program=program, source_uri=source.s3_uri, source_file_name=source.object_key,
                    framework_images=script_images(settings, program), role_arn=role_arn))
                _read_source(self, construct_id, role=role,
                             source=source, network_isolation=settings.network_isolation)
                CfnOutput(self, f"{contract.OUTPUT_PROGRAM_SOURCE}{construct_id}",
                          value=source.s3_uri)
            elif program.kind == "byoc":
                in_parent = program.build_context == ".."
                image = TrainingImage(
                    self, f"Image{construct_id}",
                    directory=training_code_dir if in_parent else program.directory,
                    dockerfile=f"{program.name}/{program.dockerfile}" if in_parent
                    else program.dockerfile,
                    include=[program.name, *program.shared] if in_parent else None,
                    repository=storage.repository)
                images_copied.append(image.copy)
                deployed.append(DeployedProgram(program=program, image_uri=image.image_uri,
                                                role_arn=role_arn))
                CfnOutput(self, f"{contract.OUTPUT_PROGRAM_IMAGE}{construct_id}",
                          value=image.image_uri)
            else:
                deployed.append(DeployedProgram(
                    program=program, builtin_image_uri=_builtin_image(settings, images, program),
                    role_arn=role_arn))

        queue = None if storage.queue is None else QueueTarget(
            queue_arns=storage.queue.queue_arns, fair_share=settings.queue_fair_share)
        Annotations.of(self).add_info(NETWORK_NOTICES[settings.network])
        if settings.network_isolation and settings.experiment_tracking != "off":
            Annotations.of(self).add_info(TRACKING_UNDER_ISOLATION.format(
                tracking=settings.experiment_tracking, network=settings.network))
        workflow = TrainingStateMachine(self, "Training", props=TrainingStateMachineProps(
            name_prefix=settings.name_prefix,
            region=settings.region,
            data_bucket=storage.data_bucket,
            artifacts_bucket=storage.artifacts_bucket,
            key=storage.key,
            images=images,
            programs=deployed,
            input_defaults=InputDefaults(
                instance_type=settings.default_instance_type,
                instance_count=settings.default_instance_count,
                volume_size_gb=settings.default_volume_size_gb,
                max_runtime_seconds=settings.max_runtime_seconds,
                spot=settings.spot_by_default,
                priority=contract.DEFAULT_PRIORITY if storage.queue is not None else None,
            ),
            allowed_instance_types=settings.allowed_instance_types,
            max_instance_count=settings.max_instance_count,
            spot_max_wait_seconds=settings.spot_max_wait_seconds,
            log_retention=retention_for_days(settings.log_retention_days),
            # An isolated container reaches no network, MLflow included: its runs are not tracked
            # from inside (SageMaker keeps the metrics: FinalMetricDataList, CloudWatch).
            tracking_uri=storage.tracking.arn if jobs_track and storage.tracking else None,
            security=JobSecurity(
                vpc_config=storage.job_network.vpc_config() if storage.job_network else None,
                network_isolation=settings.network_isolation,
                tags=stack_tags(settings),
                instance_types=settings.allowed_instance_types,
            ),
            inter_container_encryption=settings.inter_container_traffic_encryption,
            max_job_hours=settings.max_job_hours,
            sagemaker_retry_attempts=settings.sagemaker_retry_attempts,
            model_groups=storage.registry.groups,
            repository_arn=storage.repository.repository_arn if any(
                program.kind == "byoc" for program in programs.values()) else None,
            max_run_cost=settings.max_run_cost,
            run_prices=settings.run_prices,
            queue=queue,
        ))
        # The training jobs must run only after the images are in the project's repository.
        for copy in images_copied:
            workflow.state_machine.node.add_dependency(copy)
        self.state_machine = workflow.state_machine
        if settings.training_log_retention_days is not None:
            from infra.constructs.training_log_retention import TrainingLogRetention

            TrainingLogRetention(self, "TrainingLogRetention",
                                 retention_days=settings.training_log_retention_days)
        # Failed executions, and approval decisions on the registered model versions.
        FailureNotifications(self, "FailureAlerts", state_machine=workflow.state_machine,
                             email=settings.notification_email,
                             model_package_group_names=[
                                 group.name() for group in storage.registry.groups.values()])

        if storage.queue is not None:
            from infra.constructs.queue_cleanup import QueueCleanup

            QueueCleanup(self, "QueueCleanup", training_state_machine=workflow.state_machine,
                         name_prefix=settings.name_prefix, queue_arns=storage.queue.queue_arns,
                         key=storage.key, log_retention=retention_for_days(settings.log_retention_days))
            CfnOutput(self, contract.OUTPUT_TEAM_QUEUES, value=",".join(
                f"{priority}="
                f"{contract.job_queue_name(settings.name_prefix, priority, fair_share=settings.queue_fair_share)}"
                for priority in contract.QUEUE_PRIORITIES))
        CfnOutput(self, contract.OUTPUT_TEAM_QUEUE, value="off" if queue is None else queue.kind)
        CfnOutput(self, contract.OUTPUT_STATE_MACHINE_ARN,
                  value=workflow.state_machine.state_machine_arn)
        CfnOutput(self, contract.OUTPUT_DATA_BUCKET, value=storage.data_bucket.bucket_name)
        CfnOutput(self, contract.OUTPUT_ARTIFACTS_BUCKET, value=storage.artifacts_bucket.bucket_name)
        CfnOutput(self, contract.OUTPUT_REPOSITORY_URI, value=storage.repository.repository_uri)
        # The limits the CLI checks a run against before it starts one.
        CfnOutput(self, contract.OUTPUT_ALLOWED_INSTANCE_TYPES,
                  value=",".join(settings.allowed_instance_types))
        CfnOutput(self, contract.OUTPUT_MAX_INSTANCE_COUNT, value=str(settings.max_instance_count))
        if settings.max_job_hours is not None:
            # What the CLI needs to refuse an over-budget run before it starts one.
            CfnOutput(self, contract.OUTPUT_MAX_JOB_HOURS, value=budget_text(settings.max_job_hours))
        if settings.max_run_cost is not None:
            CfnOutput(self, contract.OUTPUT_MAX_RUN_COST, value=budget_text(settings.max_run_cost))
            CfnOutput(self, contract.OUTPUT_RUN_PRICES, value=json.dumps(settings.run_prices, sort_keys=True))
            CfnOutput(self, contract.OUTPUT_DEFAULT_INSTANCE_TYPE, value=settings.default_instance_type)
        if settings.max_job_hours is not None or settings.max_run_cost is not None:
            CfnOutput(self, contract.OUTPUT_DEFAULT_INSTANCE_COUNT,
                      value=str(settings.default_instance_count))
            CfnOutput(self, contract.OUTPUT_DEFAULT_MAX_RUNTIME,
                      value=str(settings.max_runtime_seconds))
        for name, group in storage.registry.groups.items():
            # Read with Fn::GetStackOutput (a weak reference): `smtrain models` lists them.
            CfnOutput(self, f"{contract.OUTPUT_MODEL_PACKAGE_GROUP}{contract.output_id(name)}",
                      value=group.name())
        if storage.tracking is not None:
            # The storage stack's ARN, read with Fn::GetStackOutput (a weak reference).
            CfnOutput(self, storage.tracking.output_name, value=storage.tracking.arn)


def _read_source(scope: Construct, construct_id: str, *, role: iam.IRole, source: SourceBundle,
                 network_isolation: bool) -> None:
    """Let the program's role (and no other) read its script-mode code: a policy in this stack
    (``ReadSource<Program>``), so that a code change never touches the storage stack."""
    # The role is the storage stack's, read by name (a weak reference: Fn::GetStackOutput); a
    # policy attached from here keeps the storage stack from depending on this one.
    program_role = iam.Role.from_role_name(scope, f"ExecutionRole{construct_id}", role.role_name,
                                           mutable=True)
    statements = [iam.PolicyStatement(
        actions=["s3:GetObject"],
        resources=[source.asset.bucket.arn_for_objects(source.asset.s3_object_key)])]
    if network_isolation:
        # Under isolation the code is an S3Prefix input channel, which SageMaker lists before it
        # downloads (the developer guide's execution role for CreateTrainingJob grants
        # s3:ListBucket on every InputDataConfig bucket): the archive's own key.
        statements.append(iam.PolicyStatement(
            actions=["s3:ListBucket"], resources=[source.asset.bucket.bucket_arn],
            conditions={"StringEquals": {"s3:prefix": [source.object_key]}}))
    iam.ManagedPolicy(scope, f"ReadSource{construct_id}", roles=[program_role], statements=statements)


def stack_tags(settings: Settings) -> dict[str, str]:
    """The tags of both stacks (``app_builder``), which every job carries too."""
    return {"project": settings.name_prefix, **settings.extra_tags}


def _wheels_for(settings: Settings, program: Program | None = None) -> WheelTarget | None:
    """Where jobs run in a VPC or isolated (``vpc``, ``isolated``, ``sealed``), a script
    program's ``requirements.txt`` is vendored into its bundle as wheels for its framework image's
    Python and glibc (:data:`~smtrain.core.vendored_requirements.IMAGE_RUNTIMES`; no program:
    the PyTorch image's), since the stack's VPC has no route to a package index and an isolated
    container no network at all; ``public`` jobs pip install from PyPI at start, as SageMaker does
    by default. Raises :class:`SettingsError` (or :class:`ProgramError`, where the program's
    manifest names the build) when the image's Python is not known."""
    if settings.network == "public":
        return None
    framework = (program.framework if program else None) or "pytorch"
    version, py_version, base = settings.framework_build(framework)
    version_field = f"setting '{FRAMEWORK_SETTINGS[framework][0]}'"
    if program is not None and program.framework_version:
        version, version_field = program.framework_version, f"{where_of(program)}: 'script.framework_version'"
    if program is not None:
        py_version = program.py_version or py_version
        base = program.base_framework_version or base
    key = f"{version}:{base}" if framework == "huggingface" else str(version)
    python, glibc_minor = IMAGE_RUNTIMES.get((framework, key), (None, OLDEST_IMAGE_GLIBC_MINOR))
    if python is None and py_version is not None and py_version != "py3":
        python = python_version_of(py_version)
    if python is None:
        known = ", ".join(v for f, v in IMAGE_RUNTIMES if f == framework)
        message = (f"{version_field} is {version}: the Python of that {framework} image is not known "
                   f"to the stack (known: {known}), so program {program.name if program else '?'}'s "
                   "requirements cannot be vendored for it: use a known version, set 'network' to "
                   "public, or move the program to a BYOC image")
        raise ProgramError(message) if version_field.endswith("'script.framework_version'") \
            else SettingsError(message)
    return WheelTarget(python_version=python, glibc_minor=glibc_minor)


def _check_isolation(settings: Settings, program: Program) -> None:
    """Under ``network: isolated`` or ``sealed`` a script program's code arrives as the ``code`` channel, so
    the program may not read a channel of that name. (Its ``requirements.txt`` travels in its
    source bundle as wheels: :func:`_wheels_for`.)"""
    if settings.network_isolation and program.kind == "script" and any(
            channel.name == contract.CODE_CHANNEL for channel in program.channels):
        raise SettingsError(
            f"setting 'network' is {settings.network}, and script program {program.name} reads a channel "
            f"named '{contract.CODE_CHANNEL}', the channel its code arrives in under isolation: "
            f"rename that channel in {program.directory}/program.toml")


def _builtin_image(settings: Settings, images: TrainingImages, program: Program) -> str:
    """A built-in program's training image for the region: the configured XGBoost image for an
    ``xgboost`` program at the ``xgboostVersion`` setting, else the SDK's answer for the
    algorithm and its version (default: ``xgboostVersion``, or the algorithm's only one).

    Raises :class:`ProgramError` naming the manifest, the field and the algorithms the region
    has, where there is no such image."""
    algorithm = program.algorithm
    assert algorithm is not None  # the manifest's schema requires it
    version = program.algorithm_version or builtin_algorithms.DEFAULT_VERSIONS.get(
        algorithm, settings.xgboost_version)
    if algorithm == "xgboost" and version == settings.xgboost_version:
        return images.xgboost
    try:
        return builtin_image(region=settings.region, algorithm=algorithm, version=version)
    except NoBuiltinImage as error:
        raise ProgramError(
            f"{program.directory / MANIFEST}: 'builtin.{error.field}': {error}; built-in "
            f"algorithms with an image in {settings.region}: "
            f"{', '.join(builtin_algorithms_in(settings.region))}") from None
