"""SageMaker on this machine: every training job really runs, each in a fresh fake /opt/ml.

Which program runs is decided by the job's image, as SageMaker decides it by the container:

- the AWS PyTorch image (script mode): AWS's training toolkit (``sagemaker-training``'s
  ``train``) with the ``sourcedir.tar.gz`` named by ``sagemaker_submit_directory``;
- the project's BYOC image: its ``train`` entry point on the host Python (no Docker here);
- the SageMaker XGBoost image: :mod:`smtrain.local.builtin_xgboost`; any other built-in
  algorithm's image fails the job with one line saying it runs only on SageMaker
  (:func:`smtrain.core.builtin_algorithms.offline_refusal`), never faked.

A job on several instances (``InstanceCount``) runs every instance, each a process with its own
tree and channels (its shards), in a network of the job's own (:mod:`smtrain.local.cluster`).
S3 URIs live in a :class:`~smtrain.local.s3_stand_in.LocalS3`. A job's log is kept beside its
tree; metrics are read from it with the request's metric definitions (the built-in algorithm's
own definitions for XGBoost); ``model.tar.gz`` is written where ``OutputDataConfig`` says.
Hyperparameter tuning jobs are run by :mod:`smtrain.local.local_tuning`.

``EnableNetworkIsolation: true`` (on a training job, or in a tuning job's training job
definition, which its trials copy) is enforced, not only echoed: the job's process runs in a
network namespace of its own with only a loopback interface (:mod:`smtrain.local.isolation`),
its log says so, and a job this machine cannot isolate fails before anything of it runs. As the
SageMaker Python SDK does under isolation, script mode may name its code by a path in the
container (``sagemaker_submit_directory`` = ``/opt/ml/input/data/code/sourcedir.tar.gz``, the
tarball delivered by an input channel named ``code``); such a path is mapped into the job's fake
``/opt/ml``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.metadata
import importlib.util
import json
import os
import posixpath
import re
import shlex
import signal
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smtrain.core import builtin_algorithms, contract
from smtrain.local import channel_data, cluster, framework_envs, opt_ml, warm_pools
from smtrain.local import isolation as network_isolation
from smtrain.local.backend import (
    TERMINAL_STATUSES,
    Description,
    Request,
    SageMakerError,
    tuning_job_page,
)
from smtrain.local.builtin_xgboost import BUILTIN_METRIC_DEFINITIONS
from smtrain.local.debian_python import DebianPythonUnavailable
from smtrain.local.deployment import ByocProgram
from smtrain.local.entry_point import EntryPointError, command_for
from smtrain.local.image_recipe import ImageRecipe, ImageRecipeError, read_recipe
from smtrain.local.job_tree import LOCAL_HOST, JobTree, build_job_tree
from smtrain.local.program_envs import (
    ProgramEnvironmentError,
    bundle_requirements,
    byoc_environment,
    default_cache_dir,
    environment_for,
    job_environment,
)
from smtrain.local.run_record import RECORD_FILE, RECORD_VARIABLE, log_run_record, read_run_record
from smtrain.local.s3_stand_in import LocalS3, S3UriError
from smtrain.local.wakeups import JOB_ENDED

TRAINING_JOB_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
TUNING_JOB_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,31}$")
#: SageMaker shows the first 1024 characters of the failure file.
FAILURE_REASON_LIMIT = 1024
#: How much of a failed job's output its reason carries when the program wrote no failure file.
LOG_TAIL_LIMIT = 800
#: Lines the backend itself writes into a job's log start with this.
NOTE_PREFIX = "smtrain local: "
#: The container's SageMaker directory; a ``sagemaker_submit_directory`` under it is a path in the
#: container (network isolation), mapped into the job's fake tree.
CONTAINER_BASE_DIR = contract.CONTAINER_BASE_DIR
ROOT = Path(__file__).resolve().parents[2]


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


@dataclass(frozen=True)
class Images:
    """Which image URI means which program: each BYOC program's image, else AWS's images."""

    byoc: Mapping[str, ByocProgram]

    def kind(self, image: str, hyperparameters: Mapping[str, str] | None = None) -> str:
        """``script``, ``byoc`` or ``builtin``. The XGBoost image is both the built-in algorithm
        and a script-mode framework: it runs a script when the request names one
        (``sagemaker_program``: sagemaker-xgboost-container, training.py)."""
        if image in self.byoc:
            return "byoc"
        if script_framework(image) is not None:
            return "script"
        if "/sagemaker-xgboost:" in image:
            return "script" if "sagemaker_program" in (hyperparameters or {}) else "builtin"
        if builtin_algorithms.algorithm_of_image(image) is not None:
            # XGBoost runs here (its stand-in); any other built-in fails when it starts.
            return "builtin"
        raise SageMakerError("ValidationException", f"no local runner for image {image}")


#: The repository name of each framework's training image (the SDK's image_uri_config), as the
#: AWS framework images are named; XGBoost's is the built-in algorithm's (see Images.kind).
FRAMEWORK_REPOSITORIES: Mapping[str, str] = {
    "/pytorch-training:": "pytorch",
    "/tensorflow-training:": "tensorflow",
    "/sagemaker-scikit-learn:": "sklearn",
    "/huggingface-pytorch-training:": "huggingface",
    "/huggingface-tensorflow-training:": "huggingface",
}


def _module_environment(python: Path, folder: Path, whose: str) -> Path:
    """A venv over ``python``'s environment in ``folder`` (``module-env``), into which an image's
    toolkit installs the job's code (program_envs.job_environment); one that cannot be made
    fails the job naming ``whose`` it is."""
    try:
        return job_environment(python, folder / "module-env")
    except ProgramEnvironmentError as error:
        raise SageMakerError("AlgorithmError", fit_reason(
            f"{whose}'s venv over the image's environment: {error}",
            FAILURE_REASON_LIMIT - len("AlgorithmError: "), keep_end=True)) from None


def script_framework(image: str, hyperparameters: Mapping[str, str] | None = None) -> str | None:
    """The script-mode framework whose image ``image`` is, or None."""
    for repository, framework in FRAMEWORK_REPOSITORIES.items():
        if repository in image:
            return framework
    if "/sagemaker-xgboost:" in image and "sagemaker_program" in (hyperparameters or {}):
        return "xgboost"
    return None


#: The only variables of the engine's environment a job gets (see _execute): what any process
#: needs to run on this machine (where to find programs and libraries, the user's home, locale,
#: temporary files, GPUs) and how this machine reaches the internet (proxies, CA bundles), which
#: a public-mode container reaches directly. Nothing else: a SageMaker container starts with its
#: image's ENV and the request's Environment only, so a secret in the developer's shell (an AWS
#: credential, a token) never reaches a job.
INHERITED_VARIABLES = frozenset({
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TERM",
    "TMPDIR", "TMP", "TEMP", "LD_LIBRARY_PATH", "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES",
    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
    "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
})
#: ... and the locale's variables (``LC_ALL``, ``LC_CTYPE``, ...).
INHERITED_PREFIXES = ("LC_",)


def _torch_stand_in_note(request: Request) -> str | None:
    """A PyTorch script job runs over the project's environment, whose torch stands in for the
    image's (contract.OFFLINE_FRAMEWORKS; the README and docs/offline.md say so): where their
    major versions differ (AWS's public examples declare 1.5 or 1.8), a note says which ran.
    The default, 2.x beside this machine's 2.x, says nothing more in every job."""
    image = request["AlgorithmSpecification"]["TrainingImage"]
    if script_framework(image, request.get("HyperParameters", {})) != "pytorch":
        return None
    wanted = framework_envs.image_version(image)
    try:
        here = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return None
    if here.split(".")[0] == wanted.split(".")[0]:
        return None
    return (f"torch {here} (the project's) stood in for the pytorch {wanted} image's torch; the "
            f"image's torchvision and torchaudio are not here")


def _check_offline_framework(request: Request) -> None:
    """Refuse a script job whose framework the engine cannot run faithfully: its image's own
    environment (a TensorFlow, scikit-learn or Hugging Face version, or Hugging Face's TensorFlow
    base, whose environment is not known here) is not built here, or its image's pins have no
    wheels for this machine's Python, and running it in the generic one would prove nothing."""
    image = request["AlgorithmSpecification"]["TrainingImage"]
    framework = script_framework(image, request.get("HyperParameters", {}))
    if framework is None or framework in contract.OFFLINE_FRAMEWORKS:
        return
    base = framework_envs.unbuilt_base(image)
    if base is not None:
        known = [f"{version} on {framework_envs.BUILDS[(framework, version)].base_framework_version}"
                 for version in framework_envs.built_versions(framework)]
        raise SageMakerError(
            "ClientError",
            f"a {framework} {framework_envs.image_version(image)} script-mode job on the {base} base "
            f"does not run offline: the offline engine builds the {framework} image's environment "
            f"for {', '.join(known)} only (set the program's framework_version and "
            "base_framework_version, or the cdk.json settings, to one of those to run it offline, "
            "or run it on AWS)")
    # A version with no build here, or a build whose pins this Python cannot install: the core's
    # table is the builds' (asserted in framework_envs), so it refuses both, in one line.
    refusal = contract.offline_version_refusal(framework, framework_envs.image_version(image),
                                               (sys.version_info[0], sys.version_info[1]))
    if refusal is not None:
        raise SageMakerError("ClientError", refusal)


@dataclass(frozen=True, kw_only=True)
class Instance:
    """One of a job's instances as it runs here: its name (``algo-1``...), its tree (shown to it
    at ``/opt/ml``), its channels as it receives them, and its log (SageMaker's log stream
    ``<job>/algo-<n>-<epoch>``; the first instance's is the job's log)."""

    host: str
    tree: JobTree
    deliveries: list[channel_data.ChannelDelivery]
    log_path: Path


@dataclass(frozen=True, kw_only=True)
class Ended:
    """How a job's processes ended: the exit code that decides the job (0 when every instance
    exited 0) and the instance whose failure it reports (the first to fail)."""

    returncode: int
    reporting: Instance


@dataclass
class TrainingJob:
    name: str
    request: Request
    kind: str
    status: str = "InProgress"
    secondary_status: str = "Starting"
    transitions: list[dict[str, str]] = field(default_factory=list)
    failure_reason: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    model_uri: str | None = None
    process: subprocess.Popen[str] | None = None
    stop_requested: bool = False
    created: str = field(default_factory=_now)
    ended: str | None = None
    #: The job's log (stdout and stderr of its process, and the backend's notes).
    log_path: Path | None = None
    #: What the backend noticed about the job (also in its log), for the CLI to show.
    notes: list[str] = field(default_factory=list)
    #: The interpreter the job ran with (a program environment's, or the project's).
    python: Path | None = None
    #: The framework image's environment the job ran over (smtrain.local.framework_envs), and
    #: the lines its first build logged; None: the project's environment.
    image_environment: Path | None = None
    image_notes: list[str] = field(default_factory=list)
    #: The package-less Python a BYOC job on the official python image runs over
    #: (:func:`smtrain.local.program_envs.bare_environment`), else None.
    bare_environment: Path | None = None
    #: How the job's channels were delivered (input mode, shard), for its log.
    channel_notes: list[str] = field(default_factory=list)
    #: How the job's process was network-isolated (``EnableNetworkIsolation``); None: it was not.
    isolation: network_isolation.Isolation | None = None
    #: Its SageMaker managed warm pool (``KeepAlivePeriodInSeconds`` above 0); None: none.
    warm_pool: warm_pools.WarmPool | None = None

    @property
    def network_isolated(self) -> bool:
        """Whether the request asks for ``EnableNetworkIsolation``."""
        return self.request.get("EnableNetworkIsolation") is True

    def set_secondary(self, status: str, message: str) -> None:
        now = _now()
        if self.transitions:
            self.transitions[-1]["EndTime"] = now
        self.transitions.append({"Status": status, "StartTime": now, "StatusMessage": message})
        self.secondary_status = status

    def describe(self) -> Description:
        """The job as ``DescribeTrainingJob`` answers (botocore's output shape; the engine checks
        it): the request's settings echoed, ``ModelArtifacts`` the output path the model is (or
        will be) written to. The local log's path is :attr:`log_path`, not part of the answer."""
        request = self.request
        output = request["OutputDataConfig"]["S3OutputPath"]
        description: Description = {
            "TrainingJobName": self.name,
            "TrainingJobArn": f"arn:aws:sagemaker:us-east-1:123456789012:training-job/{self.name.lower()}",
            "ModelArtifacts": {"S3ModelArtifacts": self.model_uri
                               or f"{output.rstrip('/')}/{self.name}/output/model.tar.gz"},
            "TrainingJobStatus": self.status,
            "SecondaryStatus": self.secondary_status,
            "SecondaryStatusTransitions": [dict(t) for t in self.transitions],
            "AlgorithmSpecification": request["AlgorithmSpecification"],
            "RoleArn": request["RoleArn"],
            "HyperParameters": request.get("HyperParameters", {}),
            "InputDataConfig": request.get("InputDataConfig", []),
            "OutputDataConfig": request["OutputDataConfig"],
            "ResourceConfig": request["ResourceConfig"],
            "StoppingCondition": request["StoppingCondition"],
            "CreationTime": self.created,
            "FinalMetricDataList": [{"MetricName": name, "Value": value, "Timestamp": self.ended or _now()}
                                    for name, value in self.metrics.items()],
        }
        for optional in ("EnableManagedSpotTraining", "CheckpointConfig", "Environment",
                         "RetryStrategy", "EnableNetworkIsolation",
                         "EnableInterContainerTrafficEncryption", "VpcConfig"):
            if optional in request:
                description[optional] = request[optional]
        if self.warm_pool is not None:
            description["WarmPoolStatus"] = self.warm_pool.status()
        if self.failure_reason:
            description["FailureReason"] = self.failure_reason
        if self.ended:
            description["TrainingEndTime"] = self.ended
            # Offline every second of the job is billable (no spot interruption to discount):
            # from its launch (the first status) to its end, as whole seconds.
            if self.transitions:
                launched = dt.datetime.fromisoformat(self.transitions[0]["StartTime"])
                seconds = max(1, round((dt.datetime.fromisoformat(self.ended) - launched).total_seconds()))
                description["TrainingTimeInSeconds"] = seconds
                description["BillableTimeInSeconds"] = seconds
        return description


class LocalBackend:
    """Runs training jobs as local processes; see the module docstring.

    ``work_dir`` holds every job's tree and log (``jobs/<name>/``); ``on_log`` receives each log
    line as ``(job name, line)`` while jobs run. Every job's process gets ``environment`` (the
    offline MLflow store, say), the request's own ``Environment``, and the variables that tag its
    MLflow run, taken from the request's tags. A program's requirements are installed into an
    environment of its own (:mod:`smtrain.local.program_envs`) cached in ``env_cache`` (default:
    :func:`~smtrain.local.program_envs.default_cache_dir`). With an MLflow tracking URI in
    ``environment``, every job also gets ``SMTRAIN_TRACKING_RECORD``: a program that tracks with
    ``training_code/common/tracking.py`` records its run in that file rather than importing
    MLflow, and the backend logs the run when the job ends (:mod:`smtrain.local.run_record`); a
    job whose program logged no run of its own gets one logged for it from its metric lines.
    """

    def __init__(self, *, s3: LocalS3, work_dir: Path, images: Images,
                 on_log: Callable[[str, str], None] | None = None,
                 environment: dict[str, str] | None = None,
                 env_cache: Path | None = None,
                 before_tracking: Callable[[], None] | None = None) -> None:
        self.environment = dict(environment or {})
        #: Called before a job's run is logged: the offline engine waits there for its thread
        #: that imports MLflow, so that no two threads import MLflow's modules at once (the
        #: import system's module locks can refuse crossing imports as a deadlock).
        self._before_tracking = before_tracking
        self.env_cache = env_cache or default_cache_dir()
        self.s3 = s3
        self.work_dir = work_dir.resolve()
        self.images = images
        self.on_log = on_log
        self._jobs: dict[str, TrainingJob] = {}
        self._tuning: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._recipes: dict[Path, ImageRecipe] = {}
        self._warm_pools = warm_pools.WarmPools(self.work_dir / "warm-pools.json")
        #: The Dockerfiles whose "not reproduced here" line the console has shown.
        self._warned_images: set[Path] = set()

    # -- training jobs --------------------------------------------------------------------
    def create_training_job(self, request: Request) -> Description:
        job = self.register(request)
        threading.Thread(target=self.execute, args=(job,), name=f"job-{job.name}", daemon=True).start()
        return {"TrainingJobArn": job.describe()["TrainingJobArn"]}

    def register(self, request: Request) -> TrainingJob:
        """Validate ``request`` and record the job (InProgress, Starting); :meth:`execute` runs it."""
        name = request.get("TrainingJobName", "")
        if not TRAINING_JOB_NAME.match(name):
            raise SageMakerError("ValidationException",
                                 f"Value '{name}' at 'trainingJobName' failed to satisfy constraint: "
                                 "Member must satisfy regular expression pattern: "
                                 "^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}")
        for key, value in request.get("HyperParameters", {}).items():
            if not isinstance(value, str):
                raise SageMakerError("ValidationException",
                                     f"Hyperparameter '{key}' must be a string, got {value!r}")
        kind = self.images.kind(request["AlgorithmSpecification"]["TrainingImage"],
                                request.get("HyperParameters", {}))
        with self._lock:
            if name in self._jobs:
                raise SageMakerError("ResourceInUse", f"Training job names must be unique within an "
                                     f"AWS account and region, and a training job with this name "
                                     f"already exists ({name})")
            job = TrainingJob(name=name, request=request, kind=kind)
            job.warm_pool = self._warm_pools.start(name, request)
            job.set_secondary("Starting", "Preparing the instances for training")
            self._jobs[name] = job
        return job

    def _training_job(self, name: str) -> TrainingJob:
        """The job named ``name`` (call with the lock held)."""
        job = self._jobs.get(name)
        if job is None:
            raise SageMakerError("ValidationException", f"Requested resource not found: {name}")
        return job

    def describe_training_job(self, name: str) -> Description:
        with self._lock:
            return self._training_job(name).describe()

    def stop_training_job(self, name: str) -> None:
        with self._lock:
            job = self._training_job(name)
            if job.status in TERMINAL_STATUSES:
                return
            job.stop_requested = True
            job.status = "Stopping"
            process = job.process
        if process is not None:
            _terminate_group(process)

    def jobs(self) -> list[TrainingJob]:
        with self._lock:
            return list(self._jobs.values())

    # -- running --------------------------------------------------------------------------
    def execute(self, job: TrainingJob) -> None:
        """Run a registered job to its end in this thread; never raises. A job with
        ``EnableNetworkIsolation`` that this machine cannot isolate fails before its channels
        are downloaded or any of its code runs. A job on several instances runs each of them
        (:mod:`smtrain.local.cluster`) where this machine can, else its first only, and says so."""
        job_dir = self.work_dir / "jobs" / job.name
        try:
            if job.kind == "script":
                _check_offline_framework(job.request)
            algorithm = (builtin_algorithms.algorithm_of_image(
                job.request["AlgorithmSpecification"]["TrainingImage"])
                if job.kind == "builtin" else None)
            if algorithm is not None and algorithm not in builtin_algorithms.RUNS_OFFLINE:
                # Never faked: only SageMaker runs it (smtrain.core.builtin_algorithms).
                raise SageMakerError("ClientError", builtin_algorithms.offline_refusal(algorithm))
            if job.network_isolated:
                job.isolation = self._isolation(job)
            job.set_secondary("Downloading", "Downloading input data")
            hosts = self._hosts(job)
            instances = [self._instance(job, host, hosts=hosts, base=job_dir if index == 0
                                        else job_dir / "hosts" / host)
                         for index, host in enumerate(hosts)]
            self._prepare_image(job)
            job.set_secondary("Training", "Training image download completed. Training in progress.")
            job.log_path = instances[0].log_path
            ended = self._execute_fed(job, instances)
            self._finish(job, instances, ended)
        except SageMakerError as error:
            self._end(job, "Failed", f"{error.code}: {error.message}")
        except Exception as error:  # the engine must never leave a job InProgress
            self._end(job, "Failed", f"InternalServerError: {type(error).__name__}: {error}")

    def _hosts(self, job: TrainingJob) -> list[str]:
        """The instances that run here: all ``InstanceCount`` of them where this machine can give
        them a network of their own and each its ``/opt/ml`` (:mod:`smtrain.local.cluster`),
        else ``algo-1`` only, with a note saying why."""
        count = job.request.get("ResourceConfig", {}).get("InstanceCount", 1)
        if count == 1:
            return [LOCAL_HOST]
        if job.kind == "builtin":
            # The stand-in is not the algorithm: SageMaker's XGBoost container trains across
            # instances itself (Rabit), which the stand-in does not reproduce.
            job.channel_notes.append(
                f"InstanceCount {count}: only algo-1 ran here (its shards only): the built-in "
                "algorithm's offline stand-in trains on one instance")
            return [LOCAL_HOST]
        network, mounts = network_isolation.probe(), opt_ml.probe()
        if network.available and mounts.available:
            return cluster.host_names(count)
        job.channel_notes.append(
            f"InstanceCount {count}: only algo-1 ran here (its shards only), since this machine "
            f"cannot run the {count} instances as a cluster: {network.reason or mounts.reason}")
        return [LOCAL_HOST]

    def _instance(self, job: TrainingJob, host: str, *, hosts: list[str], base: Path) -> Instance:
        """Instance ``host``'s channels (its shards) downloaded, and its tree laid out under
        ``base``, as SageMaker prepares each instance before the job's code starts."""
        deliveries = self._deliveries(job, host_index=hosts.index(host))
        piped = [d.name for d in deliveries if d.is_pipe]
        if job.kind == "builtin" and piped:
            # The input rules refuse it first (contract.PIPE_REFUSING_ALGORITHMS): a request
            # sent by other means gets the container's own answer.
            raise SageMakerError("ClientError", (
                f"channel(s) {', '.join(piped)} in Pipe mode: the offline engine runs built-in "
                "algorithms on File and FastFile channels only (SageMaker's current XGBoost "
                "container refuses Pipe mode too: \"Please use Fast File mode\"); use FastFile"))
        channels = self._download_channels(deliveries, base / "input-cache")
        hyperparameters = dict(job.request.get("HyperParameters", {}))
        submit, in_container = "", None
        if job.kind == "script":
            submit = _hyperparameter_text(hyperparameters.get("sagemaker_submit_directory", ""))
            in_container = _container_path(submit, base / "opt_ml")
            hyperparameters["sagemaker_submit_directory"] = (
                str(in_container) if in_container is not None
                else self._local_submit_directory(submit))
        tree = build_job_tree(base / "opt_ml", hyperparameters=hyperparameters,
                              channels=channels,
                              channel_configs={d.name: d.config_entry() for d in deliveries},
                              instance_type=job.request.get("ResourceConfig", {}).get(
                                  "InstanceType", "local"), job_name=job.name,
                              hosts=hosts, current_host=host)
        job.channel_notes += [note for delivered in deliveries for note in delivered.notes()]
        if in_container is not None and not in_container.exists():
            raise SageMakerError("ClientError", _missing_code_message(submit, sorted(channels)))
        return Instance(host=host, tree=tree, deliveries=deliveries, log_path=base / "log.txt")

    def _execute_fed(self, job: TrainingJob, instances: list[Instance]) -> Ended:
        """:meth:`_execute`, with a feeder writing each Pipe channel's FIFOs (on every instance)
        while it runs; a channel that could not be fed fails the job (its passes ended early),
        naming it."""
        started: list[channel_data.PipeFeeder] = []
        problems: list[str] = []
        try:
            for instance in instances:
                for delivered in instance.deliveries:
                    if not delivered.is_pipe:
                        continue
                    feeder = channel_data.PipeFeeder(
                        instance.tree.base_dir / "input" / "data" / delivered.name,
                        delivered.objects, gzip_compressed=delivered.gzipped)
                    feeder.start()
                    started.append(feeder)
            ended = self._execute(job, instances)
        finally:
            for feeder in started:  # every one, whatever another raises
                try:
                    feeder.stop()
                except channel_data.PipeFeedError as error:
                    problems.append(str(error))
        if problems:
            raise SageMakerError("ClientError", "; ".join(problems))
        return ended

    def _deliveries(self, job: TrainingJob, *, host_index: int = 0) -> list[channel_data.ChannelDelivery]:
        """Each channel as instance ``host_index`` (from 0) receives it (its objects, its shard)."""
        deliveries = []
        mode = job.request["AlgorithmSpecification"].get("TrainingInputMode", contract.DEFAULT_INPUT_MODE)
        host_count = job.request.get("ResourceConfig", {}).get("InstanceCount", 1)
        for channel in job.request.get("InputDataConfig", []):
            name = channel["ChannelName"]
            uri = channel["DataSource"]["S3DataSource"]["S3Uri"]
            try:
                objects = self.s3.objects_under(uri)
            except S3UriError as error:
                raise SageMakerError("ClientError", f"channel '{name}': {error}") from None
            if not objects:
                raise SageMakerError("ClientError",
                                     f"No S3 objects found under S3 URL \"{uri}\" given in input "
                                     f"data source (channel '{name}'). Please ensure that the "
                                     f"bucket exists in the selected region, that objects exist "
                                     f"under that S3 prefix, and that the role has access.")
            location = self.s3.path(uri)
            prefix_dir = location if location.is_dir() else location.parent
            deliveries.append(channel_data.delivery(
                channel, objects=objects, prefix_dir=prefix_dir, training_input_mode=mode,
                host_index=host_index, host_count=host_count))
        return deliveries

    @staticmethod
    def _download_channels(deliveries: list[channel_data.ChannelDelivery],
                           cache: Path) -> dict[str, Path | None]:
        """File and FastFile channels copied under ``cache`` (the job tree copies them in);
        Pipe channels get no directory."""
        channels: dict[str, Path | None] = {}
        for delivered in deliveries:
            if delivered.is_pipe:
                channels[delivered.name] = None
                continue
            delivered.copy_to(cache / delivered.name)
            channels[delivered.name] = cache / delivered.name
        return channels

    @staticmethod
    def _isolation(job: TrainingJob) -> network_isolation.Isolation | None:
        """This machine's way to isolate a job (probed once per process). Where there is none,
        with ``SMTRAIN_LOCAL_ISOLATION=require`` a ClientError before anything of the job runs;
        else None, and the job runs with network access, its notes saying so (a machine without
        namespaces, such as macOS, still runs the default, isolated, deployment offline)."""
        setting = os.environ.get(contract.ENV_LOCAL_ISOLATION, "")
        if setting not in ("", contract.LOCAL_ISOLATION_REQUIRED):  # a typo must not fail open
            raise SageMakerError("ClientError", f"{contract.ENV_LOCAL_ISOLATION}={setting!r} is not "
                                 f"understood: set it to {contract.LOCAL_ISOLATION_REQUIRED!r} "
                                 "(refuse a job this machine cannot isolate), or unset it")
        found = network_isolation.probe()
        if found.available:
            return found
        how = ("run the offline engine as root, or where unprivileged user namespaces are allowed "
               "(`unshare --map-root-user --net true` must work)")
        if setting == contract.LOCAL_ISOLATION_REQUIRED:
            raise SageMakerError(
                "ClientError", "EnableNetworkIsolation is set, but network isolation could not "
                f"be enforced on this machine ({found.reason}); the job was not run "
                f"({contract.ENV_LOCAL_ISOLATION}={contract.LOCAL_ISOLATION_REQUIRED}): {how}.")
        job.channel_notes.append(
            "NOT ISOLATED: the job asks for EnableNetworkIsolation, which this machine cannot "
            f"enforce ({found.reason}), so it ran WITH network access; on AWS it has none, and a "
            "job that needs the network passes here and fails there. To enforce isolation, "
            f"{how}; to refuse such jobs instead, set {contract.ENV_LOCAL_ISOLATION}="
            f"{contract.LOCAL_ISOLATION_REQUIRED}")
        return None

    def _local_submit_directory(self, uri: str) -> str:
        try:
            path = self.s3.path(uri)
        except S3UriError:
            raise SageMakerError("ClientError", f"sagemaker_submit_directory {uri!r} is not an "
                                 "S3 URI") from None
        if not path.is_file():
            raise SageMakerError("ClientError", f"sagemaker_submit_directory {uri} does not exist")
        return str(path)

    def _requirements(self, job: TrainingJob, tree: JobTree) -> Path | None:
        """The program's ``requirements.txt``: script mode's from its ``sourcedir.tar.gz`` (the
        toolkit installs it; the tarball is the one the tree's ``hyperparameters.json`` names,
        the S3 object's file or, under network isolation, the ``code`` channel's copy in the
        tree), BYOC's whose Dockerfile is not known from the staged program folder (what its
        image installs; a known Dockerfile's installs: :func:`byoc_environment`)."""
        if job.kind == "byoc":
            path = self._byoc_program(job).program_dir / "requirements.txt"
            return path if path.is_file() else None
        if job.kind != "script":
            return None
        bundle = Path(json.loads((tree.base_dir / "input" / "config" / "hyperparameters.json")
                                 .read_text())["sagemaker_submit_directory"])
        return bundle_requirements(bundle, tree.base_dir.parent / "requirements.txt")

    def _first_warning(self, recipe: ImageRecipe) -> bool:
        """True the first time this image's warning is to be shown on the console."""
        with self._lock:
            first = recipe.dockerfile not in self._warned_images
            self._warned_images.add(recipe.dockerfile)
        return first

    def _recipe(self, program: ByocProgram) -> ImageRecipe | None:
        """What the program's Dockerfile installs (read once per Dockerfile), or None where the
        Dockerfile is not known."""
        if program.dockerfile is None:
            return None
        with self._lock:
            recipe = self._recipes.get(program.dockerfile)
        if recipe is None:
            try:
                recipe = read_recipe(program.dockerfile, program.context_dir)
            except ImageRecipeError as error:
                raise SageMakerError("AlgorithmError", f"the image's Dockerfile: {error}") from None
            with self._lock:
                self._recipes[program.dockerfile] = recipe
        return recipe

    def _framework_build(self, job: TrainingJob) -> tuple[str, framework_envs.FrameworkBuild] | None:
        """A script job's framework and its image's build where the image's own environment
        runs it (:mod:`smtrain.local.framework_envs`), else None (the project's environment)."""
        if job.kind != "script":
            return None
        image = job.request["AlgorithmSpecification"]["TrainingImage"]
        framework = script_framework(image, job.request.get("HyperParameters", {}))
        if framework is None or framework in contract.OFFLINE_FRAMEWORKS:
            return None
        build = framework_envs.build_for(framework, image)
        return (framework, build) if build is not None else None

    def _prepare_image(self, job: TrainingJob) -> None:
        """A job on a framework image with an environment of its own
        (:mod:`smtrain.local.framework_envs`): that environment, built on first use, in
        SageMaker's ``DownloadingTrainingImage`` step (after the input data, before training:
        botocore's SecondaryStatus order), at :attr:`TrainingJob.image_environment`."""
        framework_build = self._framework_build(job)
        if framework_build is None:
            return
        framework = framework_build[0]
        version = framework_envs.image_version(job.request["AlgorithmSpecification"]["TrainingImage"])
        job.set_secondary("DownloadingTrainingImage",
                          f"Preparing the {framework} {version} image's environment")

        def log(line: str) -> None:
            self._emit(job, line)
            job.image_notes.append(line)

        try:
            job.image_environment = framework_envs.framework_environment(
                framework, version, self.env_cache, log=log)
        except ProgramEnvironmentError as error:
            needs = "" if isinstance(error, DebianPythonUnavailable) else " (its first use needs a package index)"
            message = f"the {framework} {version} image's environment could not be built here{needs}: {error}"
            raise SageMakerError("ClientError", fit_reason(
                message, FAILURE_REASON_LIMIT - len("ClientError: "))) from None

    def _python(self, job: TrainingJob, tree: JobTree) -> Path:
        recipe: ImageRecipe | None = None
        try:
            recipe = self._recipe(self._byoc_program(job)) if job.kind == "byoc" else None
            if recipe is not None:
                # What the Dockerfile's pip install lines install; on Docker's official python
                # image, that is all there is.
                python, job.bare_environment = byoc_environment(
                    recipe.requirements, self.env_cache, tree.base_dir.parent,
                    python_only=recipe.python_only)
                return python
            return environment_for(self._requirements(job, tree), self.env_cache,
                                   base=job.image_environment)
        except ProgramEnvironmentError as error:
            # What Docker would do that this machine does not (another base image's Python, apt
            # packages) is often why pip failed: said before the failure, not only in the log of
            # a job that got as far as running.
            warning = recipe.warning() if recipe is not None else None
            if warning and recipe is not None and self._first_warning(recipe):
                self._emit(job, f"{NOTE_PREFIX}{warning}")
            room = FAILURE_REASON_LIMIT - len("AlgorithmError: InstallRequirementsError: ")
            # pip's last lines matter most
            raise SageMakerError("AlgorithmError", "InstallRequirementsError: "
                                 + fit_reason(str(error), room, keep_end=True)) from None

    def _pytorch_toolkit(self, job: TrainingJob, python: Path) -> tuple[dict[str, str], str | None]:
        """For a PyTorch script job on several instances, what the PyTorch image's ENV sets (under
        the request's Environment, as on SageMaker): its toolkit as ``SAGEMAKER_TRAINING_MODULE``,
        which alone reads the distribution settings and starts torchrun on each instance (from
        the project's environment, where torch is, on PATH), and a note saying so. On one
        instance the generic toolkit runs the script as that toolkit would, without importing
        torch once more. Nothing, and no note, for any other job."""
        image = job.request["AlgorithmSpecification"]["TrainingImage"]
        if job.kind != "script" or script_framework(image) != "pytorch":
            return {}, None
        module = framework_envs.PYTORCH_TRAINING_MODULE
        if importlib.util.find_spec(module.split(".")[0]) is None:
            return {}, ("the PyTorch image's toolkit (sagemaker-pytorch-training) is not installed "
                        "here: each instance runs the script through the generic toolkit, so a "
                        "torch_distributed job trains once per instance, not as one job "
                        "(`make install` installs it)")
        inherited = os.environ.get("PATH", os.defpath)
        return ({"SAGEMAKER_TRAINING_MODULE": module,
                 "PATH": os.pathsep.join([str(python.parent), str(Path(sys.executable).parent), inherited])},
                f"the PyTorch image's toolkit (SAGEMAKER_TRAINING_MODULE {module}) on each instance")

    def _byoc_program(self, job: TrainingJob) -> ByocProgram:
        return self.images.byoc[job.request["AlgorithmSpecification"]["TrainingImage"]]

    def _command(self, job: TrainingJob, python: Path) -> tuple[list[str], dict[str, str], str | None]:
        """The job's command, what it adds to the environment, and a note on how it starts."""
        framework_build = self._framework_build(job)
        if framework_build is not None:
            # The image's own start: the toolkit's ``train``, running the framework's training
            # module where the image names one that does more than run the script (its
            # SAGEMAKER_TRAINING_MODULE, the environment's python first on PATH: the image's ENV,
            # under the request's Environment: _execute).
            build = framework_build[1]
            interpreter = (f"Debian 11's CPython {build.python}" if build.python is not None else
                           f"this machine's Python {sys.version_info.major}.{sys.version_info.minor}")
            return ([str(python), "-c", f"from {build.train_entry} import main; main()"],
                    {},
                    f"the {framework_build[0]} image's toolkit ({', '.join(build.toolkit)}) "
                    f"in its environment ({job.image_environment or python.parent.parent}), on {interpreter}"
                    + (" (the job's module installed into a venv of its own over it)"
                       if build.installs_module else ""))
        if job.kind == "script":
            # The toolkit's ``train`` console script (smtrain.local.toolkit_train: its own
            # ``pip install -r requirements.txt`` goes into ``python``'s environment, and is not
            # run again where that environment was built from the same file).
            return [str(python), "-m", "smtrain.local.toolkit_train"], {}, None
        if job.kind == "byoc":
            # The staged build context: the program's folder and what its Dockerfile copies. It
            # stands for the image, so the job reads it and never writes there: no bytecode, or
            # the next `cdk deploy` would build the image from a context the synth never saw.
            program = self._byoc_program(job)
            try:
                entry = command_for(program.entry_point, python)
            except EntryPointError as error:
                raise SageMakerError("AlgorithmError", str(error)) from None
            # The program environment's python first on PATH: a shell entry point that runs
            # `python3 ...` gets the packages the image's Dockerfile installs.
            inherited = job.request.get("Environment", {}).get("PATH") or os.environ.get("PATH", os.defpath)
            path = os.pathsep.join([str(python.parent), inherited])
            return (entry.argv,
                    {"PYTHONPATH": str(program.context_dir), "PYTHONDONTWRITEBYTECODE": "1",
                     "PATH": path},
                    entry.note)
        return [str(python), "-m", "smtrain.local.builtin_xgboost"], {"PYTHONPATH": str(ROOT)}, None

    def _execute(self, job: TrainingJob, instances: list[Instance]) -> Ended:
        primary = instances[0]
        tree, log_path = primary.tree, primary.log_path
        several = len(instances) > 1
        job.python = self._python(job, tree)
        framework_build = self._framework_build(job)
        # An image whose toolkit pip-installs the job's code: into a venv of the job's own.
        run_python = job.python
        if framework_build is not None and framework_build[1].installs_module:
            run_python = _module_environment(job.python, tree.base_dir.parent, "the job")
        command, extra_env, start_note = self._command(job, run_python)
        # The engine's own settings (the offline MLflow store) win over the request's, whose
        # tracking URI would name a server in AWS.
        at_opt_ml = opt_ml.probe()
        # The image's ENV, then the request's Environment over it, as `docker run -e` would.
        recipe = self._recipe(self._byoc_program(job)) if job.kind == "byoc" else None
        # A framework image's ENV, where the job runs in that image's environment
        # (framework_envs.FrameworkBuild.image_environment); the request's Environment still wins.
        image_env = (recipe.environment if recipe is not None
                     else framework_build[1].image_environment(run_python) if framework_build is not None
                     else {})
        if several:
            distributed_env, distributed_note = self._pytorch_toolkit(job, job.python)
            image_env = {**image_env, **distributed_env}
            start_note = distributed_note or start_note
        # Of this process's environment only INHERITED_VARIABLES: nothing of its own SageMaker
        # settings (importing the training toolkit here sets SAGEMAKER_BASE_DIR in os.environ,
        # sagemaker_training.environment, which would send a job at /opt/ml to write its model
        # and failure file elsewhere), none of its AWS credentials or settings (a SageMaker
        # container gets the execution role's credentials from the instance, never the caller's,
        # and an offline job calls no AWS service), nor anything else of the developer's shell.
        inherited = {key: value for key, value in os.environ.items()
                     if key in INHERITED_VARIABLES or key.startswith(INHERITED_PREFIXES)}
        env = {**inherited, **image_env, **job.request.get("Environment", {}), **self.environment,
               **_tracking_tags(job.request),
               **tree.environment(at_opt_ml=at_opt_ml.available, resolvable_hosts=several),
               **extra_env,
               "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "TRAINING_JOB_NAME": job.name}
        env.pop(RECORD_VARIABLE, None)
        if self.environment.get(contract.ENV_TRACKING_URI):
            record = self._record_path(job)
            record.unlink(missing_ok=True)
            env[RECORD_VARIABLE] = str(record)
        max_runtime = job.request.get("StoppingCondition", {}).get("MaxRuntimeInSeconds")
        deadline = time.monotonic() + max_runtime if max_runtime else None
        job.log_path = log_path
        program_command = shlex.join(command)
        if several:
            command, codes = self._cluster_command(job, instances, command, env,
                                                   run_python if run_python != job.python else None)
            tree_note = (f"{NOTE_PREFIX}InstanceCount {len(instances)}: the job ran as its "
                         f"{len(instances)} instances ({', '.join(i.host for i in instances)}), each "
                         "a process with its own tree at /opt/ml (this log is algo-1's, whose tree "
                         f"is {tree.base_dir}; algo-n's log is {log_path.parent}/hosts/algo-n/"
                         "log.txt: SageMaker keeps one log stream per instance), all in one network "
                         "namespace of their own where each instance's name resolves to loopback: "
                         "they reach each other by name, and nothing outside the job\n")
        else:
            if job.isolation is not None:
                command = job.isolation.command(command)
            if at_opt_ml.available:
                command = at_opt_ml.command(tree.base_dir, command)
                tree_note = (f"{NOTE_PREFIX}/opt/ml is this job's tree {tree.base_dir}, mounted there "
                             f"in a mount namespace of its own (`{at_opt_ml.describe()}`), as "
                             "SageMaker mounts it\n")
            else:
                tree_note = (f"{NOTE_PREFIX}no mount namespace here ({at_opt_ml.reason}): the job's "
                             f"tree is {tree.base_dir}, named by SAGEMAKER_BASE_DIR; code that "
                             "hard-codes /opt/ml will not find it\n")
        with log_path.open("w") as log:
            def keep_note(message: str) -> None:  # as _note does, into the log being written
                job.notes.append(message)
                log.write(f"{NOTE_PREFIX}{message}\n")
                self._emit(job, f"{NOTE_PREFIX}{message}")

            log.write(tree_note)
            if not at_opt_ml.available or several:
                self._emit(job, tree_note.rstrip())
            if job.isolation is not None and several:
                keep_note("network isolation (EnableNetworkIsolation): the instances' network "
                          "namespace has only a loopback interface "
                          f"(`{job.isolation.describe()}`); they could reach nothing outside it")
            elif job.isolation is not None:
                keep_note("network isolation (EnableNetworkIsolation): the job ran in a network "
                          "namespace of its own with only a loopback interface "
                          f"(`{job.isolation.describe()}`); it could reach nothing outside it")
            for message in job.channel_notes:
                keep_note(message)
            torch_note = _torch_stand_in_note(job.request)
            if torch_note is not None:
                keep_note(torch_note)
            if job.warm_pool is not None and job.warm_pool.started_on is not None:
                keep_note(f"started on the warm pool of {job.warm_pool.started_on} (its "
                          "DescribeTrainingJob says Reused, ReusedByJob this job)")
            if job.kind == "byoc":
                note = (f"{NOTE_PREFIX}no Docker engine here; the BYOC image's entry point runs on "
                        f"this machine: {program_command}\n")
                log.write(note)
                self._emit(job, note.rstrip())
                if recipe is not None:
                    log.write(f"{NOTE_PREFIX}{recipe.summary()}\n")
                    warning = recipe.warning()
                    if warning:
                        log.write(f"{NOTE_PREFIX}{warning}\n")
                        if self._first_warning(recipe):  # on the console once per image
                            self._emit(job, f"{NOTE_PREFIX}{warning}")
            if start_note:
                log.write(f"{NOTE_PREFIX}{start_note}\n")
                self._emit(job, f"{NOTE_PREFIX}{start_note}")
            for line in job.image_notes:  # the image's environment, built for this job
                log.write(f"{line}\n")
            environment = job.python.parent.parent
            environment_note: str | None = None
            if job.bare_environment is not None and environment == job.bare_environment:
                environment_note = (f"{NOTE_PREFIX}it runs on a Python with no package at all ({environment}), "
                        "as its image has none but Python's installers\n")
            elif job.python != Path(sys.executable) and environment != job.image_environment:
                over = (f" (over the image's environment {job.image_environment})"
                        if job.image_environment is not None
                        else f" (over a Python with no other package, {job.bare_environment})"
                        if job.bare_environment is not None else "")
                environment_note = f"{NOTE_PREFIX}the program's requirements are installed in {environment}{over}\n"
            if environment_note is not None:
                log.write(environment_note)
                self._emit(job, environment_note.rstrip())
            process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                       text=True, env=env, cwd=tree.base_dir, start_new_session=True)
            with self._lock:
                job.process = process
                if job.stop_requested:
                    _terminate_group(process)
            assert process.stdout is not None
            timer = None
            if deadline is not None:
                def expire() -> None:
                    if process.poll() is None or _group_is_running(process.pid):
                        job.secondary_status = "MaxRuntimeExceeded"
                        job.stop_requested = True
                        _terminate_group(process)
                timer = threading.Timer(max(0.0, deadline - time.monotonic()), expire)
                timer.daemon = True
                timer.start()
            with contextlib.ExitStack() as logs:
                other_logs = {i.host: logs.enter_context(i.log_path.open("w")) for i in instances[1:]}
                for line in process.stdout:
                    if several:  # the launcher's lines: "<host>\t<line>" (smtrain.local.cluster)
                        host, tab, text = line.partition("\t")
                        if tab and host in other_logs:
                            other_logs[host].write(text)
                            other_logs[host].flush()
                            self._emit(job, f"[{host}] {text.rstrip(chr(10))}")
                            continue
                        if tab and host == primary.host:
                            line = text
                    log.write(line)
                    log.flush()
                    self._emit(job, line.rstrip("\n"))
                returncode = process.wait()
            if timer is not None:
                timer.cancel()
            if job.stop_requested:
                # Stopped (or out of time) only once no process of its group runs: the group's
                # leader can end before a member that ignored SIGTERM is killed, or while a
                # killed one is still exiting. (A process that leaves the group, with setsid,
                # is out of reach here, as it is of the SIGKILL.)
                bound = STOP_GRACE_SECONDS + _STOP_SETTLE_SECONDS
                if not _wait_for_group_end(process.pid, timeout=bound):
                    self._note(job, f"a process of the job (process group {process.pid}) was still running "
                                    f"{bound:.0f} s after its first process ended; the job ends as Stopped")
        if not several:
            return Ended(returncode=returncode, reporting=primary)
        by_host = {instance.host: instance for instance in instances}
        for host, code in cluster.ended_hosts(codes):
            if code != 0 and host in by_host:
                if host != primary.host:
                    self._note(job, f"{host} exited with code {code}, which ended the job (its "
                                    f"log: {by_host[host].log_path})")
                return Ended(returncode=code, reporting=by_host[host])
        return Ended(returncode=returncode, reporting=primary)

    def _cluster_command(self, job: TrainingJob, instances: list[Instance], command: list[str],
                         env: dict[str, str], module_python: Path | None = None) -> tuple[list[str], Path]:
        """The launcher of ``command`` on every instance (:mod:`smtrain.local.cluster`), in a
        network namespace of the job's own, and the file it writes the exit codes to; each
        instance sees its tree at ``/opt/ml`` and the job's hosts file at ``/etc/hosts``. An
        instance other than the first records its MLflow run beside its own log (only the first
        instance's is logged) and, where the toolkit installs the job's code
        (``module_python``, the first instance's venv for it), installs it into a venv of its
        own beside its log, as each instance of SageMaker installs it in its own container."""
        network, mounts = network_isolation.probe(), opt_ml.probe()
        hosts_dir = instances[0].log_path.parent / "hosts"
        hosts_dir.mkdir(parents=True, exist_ok=True)
        hosts_file = hosts_dir / "etc-hosts"
        hosts_file.write_text(cluster.hosts_file_text([i.host for i in instances]))
        host_commands = []
        for index, instance in enumerate(instances):
            own = ({RECORD_VARIABLE: str(instance.log_path.parent / RECORD_FILE)}
                   if index and RECORD_VARIABLE in env else {})
            host_command = command
            if index and module_python is not None and job.python is not None:
                python = _module_environment(job.python, instance.log_path.parent, instance.host)
                host_command = [str(python) if part == str(module_python) else part for part in command]
                own["PATH"] = env.get("PATH", "").replace(str(module_python.parent), str(python.parent), 1)
            host_commands.append(cluster.HostCommand(
                host=instance.host, cwd=instance.tree.base_dir, environment=own,
                command=mounts.command(instance.tree.base_dir, host_command, hosts_file=hosts_file)))
        spec, codes = hosts_dir / "launch.json", hosts_dir / "exit-codes.json"
        codes.unlink(missing_ok=True)
        cluster.write_spec(spec, host_commands, codes)
        # A PID namespace too, the launcher its first process: when it ends, or unshare is
        # killed (--kill-child), every process of every instance ends with it, whatever session
        # a program gave its children (torch elastic starts each rank in a session of its own).
        assert network.prefix is not None
        in_namespaces = network_isolation.Isolation(
            prefix=(*network.prefix, "--pid", "--fork", "--kill-child"))
        return in_namespaces.command(cluster.launcher_command(spec)), codes


    def _emit(self, job: TrainingJob, line: str) -> None:
        if self.on_log is not None:
            self.on_log(job.name, line)

    def _note(self, job: TrainingJob, message: str, *, keep: bool = True) -> None:
        """Append ``message`` to the job's log and emit it; with ``keep``, also record it in
        :attr:`TrainingJob.notes` (what the CLI shows)."""
        line = f"{NOTE_PREFIX}{message}"
        if keep:
            job.notes.append(message)
        if job.log_path is not None:
            with job.log_path.open("a") as log:
                log.write(line + "\n")
        self._emit(job, line)

    def _finish(self, job: TrainingJob, instances: list[Instance], ended: Ended) -> None:
        assert job.log_path is not None
        log_text = job.log_path.read_text()
        returncode = ended.returncode
        definitions = self._metric_definitions(job)
        job.metrics = parse_final_metrics(log_text, definitions)
        if job.stop_requested:
            reason = ("MaxRuntimeExceeded: the job ran past MaxRuntimeInSeconds"
                      if job.secondary_status == "MaxRuntimeExceeded" else "Stopped by request")
            self._track(job, log_text, definitions, "KILLED")
            self._end(job, "Stopped", reason)
            return
        if returncode != 0:
            # SageMaker's guide describes the failure file of one container only; with several
            # instances the first that failed reports (no AWS document says which does).
            written = ended.reporting.tree.failure_reason()
            reporting_log = (log_text if ended.reporting is instances[0]
                             else ended.reporting.log_path.read_text())
            reason = written or log_tail(reporting_log) or (
                f"the training program exited with code {returncode} and printed nothing")
            output = "\n".join(line for line in reporting_log.splitlines()
                                if not line.startswith(NOTE_PREFIX))
            hint = (network_isolation.ISOLATION_HINT if job.isolation is not None
                    and network_isolation.network_error_in(f"{written or ''}\n{output}") else None)
            self._track(job, log_text, definitions, "FAILED")
            self._end(job, "Failed", algorithm_error(reason, hint=hint))
            return
        if definitions and not any(re.search(d["Regex"], log_text) for d in definitions):
            regexes = ", ".join(f"{d['Name']}: {d['Regex']}" for d in definitions)
            self._note(job, f"no line matched any metric definition (Regex {regexes}): tuning on "
                            "this program's metrics cannot work")
        self._track(job, log_text, definitions, "FINISHED")
        job.set_secondary("Uploading", "Uploading generated training model")
        output_uri = job.request["OutputDataConfig"]["S3OutputPath"].rstrip("/")
        model_uri = f"{output_uri}/{job.name}/output/model.tar.gz"
        target = self.s3.path(model_uri)
        target.parent.mkdir(parents=True, exist_ok=True)
        clashes = _archive_models([(i.host, i.tree.model_dir) for i in instances], target)
        if clashes:
            self._note(job, "instances wrote the same name in /opt/ml/model: "
                            f"{', '.join(clashes[:5])}{' ...' if len(clashes) > 5 else ''}; "
                            "model.tar.gz holds the first instance's (SageMaker aggregates every "
                            "instance's files and does not say which wins: write the model on "
                            "one instance, or name each instance's files apart)")
        job.model_uri = model_uri
        self._end(job, "Completed", None)

    def _record_path(self, job: TrainingJob) -> Path:
        """Where the job's program records its MLflow run (:mod:`smtrain.local.run_record`)."""
        return self.work_dir / "jobs" / job.name / RECORD_FILE

    def _track(self, job: TrainingJob, log_text: str, definitions: list[dict[str, str]],
               status: str) -> None:
        """Log the run the job's program recorded, ended with ``status`` if the program did not
        end it; else an MLflow run for the job unless its program logged one (see
        :func:`track_job`). A tracking failure is a note, never the job's failure."""
        uri = self.environment.get(contract.ENV_TRACKING_URI)
        if not uri:
            return
        try:
            if self._before_tracking is not None:
                self._before_tracking()
            record = read_run_record(self._record_path(job))
            if record is not None:
                from mlflow.tracking import MlflowClient

                # Directories the job named at /opt/ml (its tree, mounted there) are read here.
                tree = self.work_dir / "jobs" / job.name / "opt_ml"
                record.artifacts = [(str(_container_path(directory, tree) or directory), path)
                                    for directory, path in record.artifacts]

                log_run_record(MlflowClient(tracking_uri=uri), record, status=status,
                               end_time=int(time.time() * 1000))
                return
            logged = track_job(uri, self.environment.get(contract.ENV_EXPERIMENT, contract.EXPERIMENT),
                               job=job, log_text=log_text, definitions=definitions, status=status,
                               start_time=_training_started(job), end_time=int(time.time() * 1000))
        except Exception as error:
            self._note(job, f"could not log the job's MLflow run: {type(error).__name__}: {error}")
            return
        if logged is None:
            return
        ended = "" if status == "FINISHED" else f" ({status})"
        if logged:
            self._note(job, f"the program logged no MLflow run; logged one{ended} from the {logged} "
                            "metric values in its log", keep=False)
        elif status == "FINISHED":
            self._note(job, "the program logged no MLflow run; logged one with its hyperparameters "
                            "(its log held no metric value)", keep=False)
        # A job that failed or was stopped before it printed a metric value: its run holds only
        # the hyperparameters, and the CLI reports the failure itself; a note would be noise.

    def _metric_definitions(self, job: TrainingJob) -> list[dict[str, str]]:
        if job.kind == "builtin":
            return BUILTIN_METRIC_DEFINITIONS
        return list(job.request["AlgorithmSpecification"].get("MetricDefinitions", []))

    def _end(self, job: TrainingJob, status: str, reason: str | None) -> None:
        with self._lock:
            job.failure_reason = reason
            job.ended = _now()
            secondary = status if job.secondary_status != "MaxRuntimeExceeded" else "MaxRuntimeExceeded"
            # Its warm pool first: whoever sees the status also sees the pool it left.
            self._warm_pools.finish(job.name, completed=status == "Completed")
            job.set_secondary(secondary, reason or "Training job completed")
            job.status = status
        JOB_ENDED.notify()  # a .sync task waiting on this job looks now

    # -- tuning jobs ----------------------------------------------------------------------
    def create_hyper_parameter_tuning_job(self, request: Request) -> Description:
        from smtrain.local.local_tuning import TuningRun

        name = request.get("HyperParameterTuningJobName", "")
        if not TUNING_JOB_NAME.match(name):
            raise SageMakerError("ValidationException",
                                 f"Value '{name}' at 'hyperParameterTuningJobName' failed to "
                                 "satisfy constraint: Member must have length less than or equal to 32")
        with self._lock:
            if name in self._tuning:
                raise SageMakerError("ResourceInUse", f"Tuning job {name} already exists")
            run = TuningRun(name=name, request=request, backend=self)
            self._tuning[name] = run
        run.start()
        return {"HyperParameterTuningJobArn": run.arn}

    def _tuning_run(self, name: str) -> Any:
        with self._lock:
            run = self._tuning.get(name)
        if run is None:
            raise SageMakerError("ResourceNotFound", f"Amazon SageMaker can't find a tuning job named {name}")
        return run

    def describe_hyper_parameter_tuning_job(self, name: str) -> Description:
        description: Description = self._tuning_run(name).describe()
        return description

    def list_training_jobs_for_hyper_parameter_tuning_job(self, request: Request) -> Description:
        """The tuning job's training jobs, a page at a time (:func:`tuning_job_page`)."""
        run = self._tuning_run(request["HyperParameterTuningJobName"])
        return tuning_job_page(run.training_job_summaries(), request)

    def stop_hyper_parameter_tuning_job(self, name: str) -> None:
        self._tuning_run(name).stop()


#: Request tags -> the variables ``training_code/common/tracking.py`` tags MLflow runs with.
_TAG_VARIABLES = {contract.TAG_EXECUTION: contract.ENV_EXECUTION,
                  contract.TAG_PROGRAM: contract.ENV_PROGRAM,
                  contract.TAG_TUNING_JOB: contract.ENV_TUNING_JOB}
#: Request tags -> the MLflow run tags ``training_code/common/tracking.py`` sets.
_RUN_TAGS = {contract.TAG_EXECUTION: contract.RUN_TAG_EXECUTION,
             contract.TAG_PROGRAM: contract.RUN_TAG_PROGRAM,
             contract.TAG_TUNING_JOB: contract.RUN_TAG_TUNING_JOB}
JOB_RUN_TAG = contract.RUN_TAG_TRAINING_JOB


def _archive_models(model_dirs: list[tuple[str, Path]], target: Path) -> list[str]:
    """Every instance's model directory (``(host, directory)``, in host order) into one
    ``model.tar.gz`` at ``target``; the clashes, each ``"<name> (<first host> and <host>)"``.

    "If multiple containers in a single training job write to this directory they should
    ensure no file/directory names clash. SageMaker AI aggregates the result in a TAR file"
    (developer guide, "How Amazon SageMaker Processes Training Output"). Which file wins a clash
    is not documented: here the first instance's. Two directories of one name merge; a file and
    a directory of one name clash, and the later one's whole subtree stays out."""
    added: dict[str, tuple[str, bool]] = {}  # name: (instance, is a directory)
    clashes: list[str] = []
    with tarfile.open(target, "w:gz") as archive:
        for host, model_dir in model_dirs:
            skipped: list[str] = []
            for path in sorted(model_dir.rglob("*")):
                name = path.relative_to(model_dir).as_posix()
                if any(name.startswith(f"{prefix}/") for prefix in skipped):
                    continue
                if name in added:
                    first, first_is_dir = added[name]
                    if not (first_is_dir and path.is_dir()):
                        clashes.append(f"{name} ({first} and {host})")
                        if path.is_dir():
                            skipped.append(name)
                    continue
                added[name] = (host, path.is_dir())
                archive.add(path, arcname=name, recursive=False)
    return clashes


def _training_started(job: TrainingJob) -> int | None:
    """When ``job`` entered its ``Training`` status (ms since the epoch), None if it did not."""
    started = next((t["StartTime"] for t in job.transitions if t["Status"] == "Training"), None)
    return None if started is None else int(dt.datetime.fromisoformat(started).timestamp() * 1000)


def track_job(uri: str, experiment: str, *, job: TrainingJob, log_text: str,
              definitions: list[dict[str, str]], status: str = "FINISHED",
              start_time: int | None = None, end_time: int | None = None) -> int | None:
    """Log an MLflow run for ``job`` unless one exists (tag ``smtrain.training_job`` or run
    name = the job's name): run name = job name, the request's tracking tags, its
    hyperparameters (``sagemaker_*`` ones left out) as params, every metric line the
    definitions parse (step = the n-th report of that metric) and the final metrics; from
    ``start_time`` to ``end_time`` (ms; the backend passes the job's ``Training`` status and its
    process's end, so that the run's wall time is the job's training; None: now). None when a
    run existed; else how many metric values it logged from the log."""
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found is not None else client.create_experiment(experiment)
    quoted = job.name.replace("'", "\\'")
    for query in (f"tags.`{JOB_RUN_TAG}` = '{quoted}'", f"attributes.run_name = '{quoted}'"):
        if client.search_runs([experiment_id], filter_string=query, max_results=1):
            return None
    tags = {_RUN_TAGS[tag["Key"]]: str(tag["Value"]) for tag in job.request.get("Tags", [])
            if tag.get("Key") in _RUN_TAGS}
    tags[JOB_RUN_TAG] = job.name
    tags["smtrain.logged_by"] = "smtrain local backend"
    run = client.create_run(experiment_id, run_name=job.name, tags=tags, start_time=start_time)
    now = int(time.time() * 1000)
    metrics = [Metric(name, value, now, step)
               for name, values in parse_metric_series(log_text, definitions).items()
               for step, value in enumerate(values)]
    from_log = len(metrics)
    for name, value in job.metrics.items():
        if name not in {d["Name"] for d in definitions}:  # final metrics not from the log
            metrics.append(Metric(name, value, now, 0))
    params = [Param(key, str(value)[:6000]) for key, value in job.request.get("HyperParameters", {}).items()
              if not key.startswith("sagemaker_")]
    for start in range(0, len(params), 100):  # MLflow's limits per batch
        client.log_batch(run.info.run_id, params=params[start:start + 100])
    for start in range(0, len(metrics), 1000):
        client.log_batch(run.info.run_id, metrics=metrics[start:start + 1000])
    client.set_terminated(run.info.run_id, status=status, end_time=end_time)
    return from_log


def _tracking_tags(request: Request) -> dict[str, str]:
    return {_TAG_VARIABLES[tag["Key"]]: str(tag["Value"]) for tag in request.get("Tags", [])
            if tag.get("Key") in _TAG_VARIABLES}


#: How long a stopped job's processes get between SIGTERM and SIGKILL (SageMaker's StopTrainingJob:
#: "sends the algorithm the SIGTERM signal, which delays job termination for 120 seconds",
#: https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_StopTrainingJob.html; offline,
#: shorter).
STOP_GRACE_SECONDS = 10.0
#: Beyond the grace period, how long a stopped job waits for its killed processes to be gone (the
#: kernel ends them at once: a bound, not a delay).
_STOP_SETTLE_SECONDS = 5.0


def _group_is_running(pgid: int) -> bool:
    """Whether a process of group ``pgid`` still runs (one that has exited, a zombie, does not);
    False where there is no /proc to tell."""
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # ended meanwhile
        # proc(5), /proc/pid/stat: after "(comm)", the state, the parent's pid, the group.
        state, _parent, group = stat[stat.rindex(")") + 2:].split()[:3]
        if int(group) == pgid and state not in ("Z", "X"):
            return True
    return False


def _wait_for_group_end(pgid: int, *, timeout: float) -> bool:
    """Until no process of group ``pgid`` runs (True), or ``timeout`` seconds (False)."""
    deadline = time.monotonic() + timeout
    while _group_is_running(pgid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


def _terminate_group(process: subprocess.Popen[str], grace_seconds: float = STOP_GRACE_SECONDS) -> None:
    """SIGTERM the job's whole process group (the toolkit starts the script as its child), then
    SIGKILL whatever is left after ``grace_seconds``, as SageMaker does when it stops a job. The
    group is signalled even where its first process has ended: another may run on (a group with
    none left raises ProcessLookupError, which is ignored)."""
    if process.poll() is not None and not _group_is_running(process.pid):
        return  # nothing of it runs: its group id may be another's by now
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)

    def kill_leftovers() -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)

    timer = threading.Timer(grace_seconds, kill_leftovers)
    timer.daemon = True
    timer.start()


def fit_reason(message: str, room: int, *, keep_end: bool = False) -> str:
    """``message`` in at most ``room`` characters: its start kept (with ``keep_end``, its end),
    ``...`` where it was cut."""
    if len(message) <= room:
        return message
    return "..." + message[-(room - 3):] if keep_end else message[:room - 3] + "..."


def algorithm_error(reason: str, *, hint: str | None = None) -> str:
    """``AlgorithmError: <reason>``, at most :data:`FAILURE_REASON_LIMIT` characters; with
    ``hint``, the hint is kept whole at the end and ``reason`` is cut to make room for it."""
    prefix = "AlgorithmError: "
    if hint is None:
        return f"{prefix}{reason}"[:FAILURE_REASON_LIMIT]
    return f"{prefix}{fit_reason(reason, FAILURE_REASON_LIMIT - len(prefix) - len(hint) - 1)} {hint}"


def _hyperparameter_text(value: str) -> str:
    """A hyperparameter as the toolkit reads it: JSON-decoded when it is a JSON string (the
    SageMaker Python SDK JSON-encodes every value), else as it is."""
    if value.startswith('"'):
        with contextlib.suppress(ValueError):
            decoded = json.loads(value)
            if isinstance(decoded, str):
                return decoded
    return value


def _container_path(value: str, base_dir: Path) -> Path | None:
    """Where ``value``, a path under ``/opt/ml`` in the container, is in the job's tree
    ``base_dir``; None when ``value`` is not such a path (an S3 URI, say). A path that climbs
    out of ``/opt/ml`` is a ClientError."""
    if not value.startswith(CONTAINER_BASE_DIR + "/"):
        return None
    normalized = posixpath.normpath(value)
    if not normalized.startswith(CONTAINER_BASE_DIR + "/"):
        raise SageMakerError("ClientError", f"sagemaker_submit_directory {value!r} climbs out of "
                                            f"{CONTAINER_BASE_DIR}")
    return base_dir / posixpath.relpath(normalized, CONTAINER_BASE_DIR)


def _missing_code_message(value: str, channels: list[str]) -> str:
    return (f"sagemaker_submit_directory {value} does not exist in the container after the input "
            f"channels were downloaded (channels: {', '.join(channels) or 'none'}). With "
            "EnableNetworkIsolation the SageMaker Python SDK delivers the code as an input "
            "channel named 'code' whose S3 URI is the sourcedir.tar.gz object, and sets "
            "sagemaker_submit_directory to /opt/ml/input/data/code/sourcedir.tar.gz; add that "
            "channel, or give sagemaker_submit_directory as an S3 URI.")


def log_tail(log: str, limit: int = LOG_TAIL_LIMIT) -> str:
    """The last non-empty lines of ``log`` (the backend's own notes left out), at most
    ``limit`` characters, oldest first."""
    kept: list[str] = []
    size = 0
    for line in reversed(log.splitlines()):
        line = line.rstrip()
        if not line.strip() or line.startswith(NOTE_PREFIX):
            continue
        if size + len(line) + 1 > limit:
            if not kept:
                kept.append("..." + line[-(limit - 3):])
            break
        kept.append(line)
        size += len(line) + 1
    return "\n".join(reversed(kept))


def parse_metric_series(log: str, definitions: list[dict[str, str]]) -> dict[str, list[float]]:
    """Every value each metric definition's regex finds in the log, in order."""
    series: dict[str, list[float]] = {}
    for definition in definitions:
        values = []
        for found in re.findall(definition["Regex"], log):
            with contextlib.suppress(ValueError):
                values.append(float(found[0] if isinstance(found, tuple) else found))
        if values:
            series[definition["Name"]] = values
    return series


def parse_final_metrics(log: str, definitions: list[dict[str, str]]) -> dict[str, float]:
    """The last value each metric definition's regex finds in the log, as SageMaker reports
    ``FinalMetricDataList``."""
    final = {}
    for definition in definitions:
        values = re.findall(definition["Regex"], log)
        if values:
            last = values[-1]
            final[definition["Name"]] = float(last[0] if isinstance(last, tuple) else last)
    return final
