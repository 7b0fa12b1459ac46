"""The app's configuration: one frozen dataclass, validated once, read only by ``app.py``.

Every value comes from the ``training`` object in ``cdk.json`` context (or ``-c training=...``)
plus the region from the CDK environment. A bad value raises :class:`SettingsError` naming the
setting, the value and what is allowed, so ``cdk synth`` fails before anything is built.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from smtrain.core import contract, prices

CONTEXT_KEY = contract.CONTEXT_KEY

#: CloudWatch Logs accepts only these retention periods (days).
LOG_RETENTION_DAYS = (
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557,
    2922, 3288, 3653,
)

#: SageMaker's hard ceiling on MaxRuntimeInSeconds / MaxWaitTimeInSeconds (28 days).
MAX_SAGEMAKER_RUNTIME_SECONDS = 28 * 24 * 3600

_NAME_PREFIX = re.compile(r"^[a-z][a-z0-9-]{0,14}[a-z0-9]$")
_INSTANCE_TYPE = re.compile(r"^ml\.[a-z0-9-]+\.[a-z0-9]+$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d$")
_PYTORCH_VERSION = re.compile(r"^\d+\.\d+(\.\d+)?$")
_PY_VERSION = re.compile(r"^py3\d{1,2}$")
_SKLEARN_VERSION = re.compile(r"^\d+\.\d+(\.\d+)?(-\d+)?(-py3\d{1,2})?$")
_BASE_VERSION = re.compile(r"^(pytorch|tensorflow)\d+\.\d+(\.\d+)?$")

#: Per script-mode framework, the settings that give its default build (one owner: the contract).
FRAMEWORK_SETTINGS = contract.FRAMEWORK_SETTINGS
#: EC2 resource ids (EC2 API reference: vpc-, subnet- and sg- followed by 8 or 17 hex digits).
_VPC_ID = re.compile(r"^vpc-[0-9a-f]{8}([0-9a-f]{9})?$")
_SUBNET_ID = re.compile(r"^subnet-[0-9a-f]{8}([0-9a-f]{9})?$")
_SECURITY_GROUP_ID = re.compile(r"^sg-[0-9a-f]{8}([0-9a-f]{9})?$")

#: ``network``: where training jobs run. ``public``: SageMaker's network, internet access;
#: ``vpc``: private subnets with VPC endpoints only (``VpcConfig``); ``isolated``: ``vpc`` plus
#: ``EnableNetworkIsolation`` (the containers make no network call at all); ``sealed``:
#: ``EnableNetworkIsolation`` without a VPC, so nothing to pay for: "the containers can't make
#: any outbound network calls, even to other AWS services such as Amazon S3. Additionally, no
#: AWS credentials are made available to the container runtime environment ... SageMaker still
#: performs download and upload operations against Amazon S3 using your SageMaker execution role
#: in isolation from the training or inference container" (developer guide, "Training and
#: Inference Containers Run in Internet-Free Mode").
NETWORK_MODES = ("public", "vpc", "isolated", "sealed")
#: The modes whose jobs run in a VPC, and those whose jobs run with network isolation.
VPC_NETWORK_MODES = ("vpc", "isolated")
ISOLATED_NETWORK_MODES = ("isolated", "sealed")
#: botocore's sagemaker model, shape ``VpcConfig``: 1-16 ``Subnets``, 1-5 ``SecurityGroupIds``.
MAX_SUBNETS = 16
#: Our bound on ``queueMaxInstances`` (no AWS document found gives a service environment's
#: largest capacity; the account's SageMaker quotas cap what actually runs).
QUEUE_MAX_INSTANCES = 10_000
MAX_SECURITY_GROUPS = 5
#: SageMaker allows 50 tags per resource (botocore's sagemaker model: ``TagList`` max 50); a job
#: carries the project tag and the three ``smtrain:`` tags (smtrain/core/contract.py) beside ``tags``.
MAX_SAGEMAKER_TAGS = 50
JOB_TAGS_OF_OUR_OWN = 4


#: ``experimentTracking``: ``app`` a SageMaker MLflow App (AWS::SageMaker::MlflowApp), ``server``
#: a SageMaker MLflow tracking server (AWS::SageMaker::MlflowTrackingServer), ``off`` none.
EXPERIMENT_TRACKING = ("app", "server", "off")
#: The deprecated ``mlflowTrackingServer`` (true: ``server``), still read so that existing
#: configurations synthesize as before.
DEPRECATED_TRACKING_KEY = "mlflowTrackingServer"


class SettingsError(ValueError):
    """A configuration value is invalid; the message names the setting."""


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Validated configuration for both stacks.

    Defaults are those of a small CPU setup; see docs/configuration.md.
    """

    region: str
    account: str | None = None
    name_prefix: str = contract.DEFAULT_NAME_PREFIX
    default_instance_type: str = "ml.m5.xlarge"
    allowed_instance_types: tuple[str, ...] = (
        "ml.m5.large", "ml.m5.xlarge", "ml.m5.2xlarge", "ml.c5.xlarge", "ml.c5.2xlarge",
        "ml.g5.xlarge", "ml.g5.2xlarge",
    )
    default_instance_count: int = 1
    max_instance_count: int = 4
    default_volume_size_gb: int = 30
    max_runtime_seconds: int = 3600
    spot_by_default: bool = False
    spot_max_wait_seconds: int = 7200
    notification_email: str | None = None
    log_retention_days: int = 365
    pytorch_version: str = "2.5"
    pytorch_py_version: str = "py311"
    xgboost_version: str = "1.7-1"
    #: Default image builds of the other script-mode frameworks (a manifest's ``[script]
    #: framework_version``/``py_version``/``base_framework_version`` override them). XGBoost
    #: script mode runs on the built-in algorithm's own image, so it takes ``xgboostVersion``.
    tensorflow_version: str = "2.19"
    tensorflow_py_version: str = "py312"
    sklearn_version: str = "1.2-1"
    huggingface_version: str = "4.48.0"
    huggingface_base_version: str = "pytorch2.3.0"
    huggingface_py_version: str = "py311"
    extra_tags: Mapping[str, str] = field(default_factory=dict)
    #: ``app`` (a SageMaker MLflow App), ``server`` (an MLflow tracking server, billed by the hour)
    #: or ``off``; see :data:`EXPERIMENT_TRACKING` and docs/tracking.md ("On AWS").
    experiment_tracking: str = "off"
    #: The tracking server's size (``server`` only).
    mlflow_tracking_server_size: str = "Small"
    network: str = "sealed"
    #: An existing VPC (with its subnets and, optionally, security groups) instead of a new one.
    vpc_id: str | None = None
    subnet_ids: tuple[str, ...] = ()
    security_group_ids: tuple[str, ...] = ()
    inter_container_traffic_encryption: bool = True
    #: Per-execution budget in instance-hours (instances x MaxRuntimeInSeconds x jobs); none: no cap.
    max_job_hours: float | None = None
    #: Per-execution budget in USD: the same instance-hours at the on-demand price of the run's
    #: instance type (smtrain/core/prices.json, which must hold every allowed type of the region:
    #: `make prices`); none: no cap.
    max_run_cost: float | None = None
    #: Retention of SageMaker's shared training log group; none: leave it as it is.
    training_log_retention_days: int | None = None
    #: SageMaker's ``RetryStrategy.MaximumRetryAttempts`` on every job; none: no ``RetryStrategy``
    #: is sent (Step Functions may refuse the field: ``contract.SAGEMAKER_RETRY_SETTING``).
    sagemaker_retry_attempts: int | None = None
    #: The team queue: ``off`` (each run creates its training job at once) or ``batch`` (AWS
    #: Batch for SageMaker Training: runs wait in a job queue for the service environment's
    #: capacity); see docs/queue.md.
    queue: str = "off"
    #: The service environment's capacity in instances (``queue: batch``): Batch starts a queued
    #: job only while the instances of running jobs leave room for it.
    queue_max_instances: int = 4
    #: A fair-share scheduling policy on the job queues: waiting jobs of the share (the input's
    #: ``team``, default the program) that used the least recently go first.
    queue_fair_share: bool = False

    def __post_init__(self) -> None:
        _check(_REGION.match(self.region) is not None, "region", self.region,
               "an AWS region such as us-east-1 (from CDK_DEFAULT_REGION or context 'defaultRegion')")
        if self.account is not None:
            _check(re.fullmatch(r"\d{12}", self.account) is not None, "account", self.account,
                   "a 12-digit AWS account id")
        _check(_NAME_PREFIX.match(self.name_prefix) is not None, "namePrefix", self.name_prefix,
               "2-16 characters of a-z, 0-9 and '-', starting with a letter, not ending in '-' "
               "(it starts every job name, and tuning job names are limited to 32 characters)")
        _check(len(self.allowed_instance_types) > 0, "allowedInstanceTypes",
               self.allowed_instance_types, "a non-empty list")
        for instance_type in self.allowed_instance_types:
            _check(_INSTANCE_TYPE.match(instance_type) is not None, "allowedInstanceTypes",
                   instance_type, "SageMaker instance types such as ml.m5.xlarge")
        _check(self.default_instance_type in self.allowed_instance_types, "defaultInstanceType",
               self.default_instance_type, f"one of allowedInstanceTypes {list(self.allowed_instance_types)}")
        _check_int_range("maxInstanceCount", self.max_instance_count, 1, 100)
        _check_int_range("defaultInstanceCount", self.default_instance_count, 1, self.max_instance_count)
        _check_int_range("defaultVolumeSizeInGB", self.default_volume_size_gb, 1, 16384)
        _check_int_range("maxRuntimeInSeconds", self.max_runtime_seconds, 1,
                         MAX_SAGEMAKER_RUNTIME_SECONDS)
        _check_int_range("spotMaxWaitInSeconds", self.spot_max_wait_seconds, self.max_runtime_seconds,
                         MAX_SAGEMAKER_RUNTIME_SECONDS)
        _check(isinstance(self.spot_by_default, bool), "spotByDefault", self.spot_by_default,
               "true or false")
        if self.notification_email is not None:
            _check(_EMAIL.match(self.notification_email) is not None, "notificationEmail",
                   self.notification_email, "an e-mail address, or null for no subscription")
        _check(self.log_retention_days in LOG_RETENTION_DAYS, "logRetentionDays",
               self.log_retention_days, f"one of {list(LOG_RETENTION_DAYS)}")
        _check(_PYTORCH_VERSION.match(self.pytorch_version) is not None, "pytorchVersion",
               self.pytorch_version, "a framework version such as 2.5")
        _check(_PY_VERSION.match(self.pytorch_py_version) is not None, "pytorchPyVersion",
               self.pytorch_py_version, "a Python tag such as py311")
        _check(isinstance(self.xgboost_version, str) and self.xgboost_version != "", "xgboostVersion",
               self.xgboost_version, "a SageMaker XGBoost version such as 1.7-1")
        _check(_PYTORCH_VERSION.match(self.tensorflow_version) is not None, "tensorflowVersion",
               self.tensorflow_version, "a framework version such as 2.19")
        _check(_PY_VERSION.match(self.tensorflow_py_version) is not None, "tensorflowPyVersion",
               self.tensorflow_py_version, "a Python tag such as py312")
        _check(_SKLEARN_VERSION.match(self.sklearn_version) is not None, "sklearnVersion",
               self.sklearn_version, "a SageMaker scikit-learn version such as 1.2-1")
        _check(_PYTORCH_VERSION.match(self.huggingface_version) is not None, "huggingfaceVersion",
               self.huggingface_version, "a transformers version such as 4.48.0")
        _check(_BASE_VERSION.match(self.huggingface_base_version) is not None,
               "huggingfaceBaseVersion", self.huggingface_base_version,
               "pytorch<version> or tensorflow<version>, such as pytorch2.3.0")
        _check(_PY_VERSION.match(self.huggingface_py_version) is not None, "huggingfacePyVersion",
               self.huggingface_py_version, "a Python tag such as py311")
        self._check_tracking()
        for key, value in self.extra_tags.items():
            _check(isinstance(key, str) and 0 < len(key) <= 128 and not key.startswith("aws:")
                   and _sagemaker_tag_text(key), "tags", key,
                   "tag keys of 1-128 letters, digits, spaces and _.:/=+-@, not starting with 'aws:' "
                   "(every job carries them: SageMaker's Tag.Key pattern)")
            _check(isinstance(value, str) and len(value) <= 256 and _sagemaker_tag_text(value),
                   "tags", value, "tag values of at most 256 letters, digits, spaces and _.:/=+-@ "
                   "(SageMaker's Tag.Value pattern)")
            _check(key != "project" and not key.startswith("smtrain:"), "tags", key,
                   "keys other than 'project' and 'smtrain:*', which the project sets itself")
        _check(len(self.extra_tags) <= MAX_SAGEMAKER_TAGS - JOB_TAGS_OF_OUR_OWN, "tags",
               len(self.extra_tags), f"at most {MAX_SAGEMAKER_TAGS - JOB_TAGS_OF_OUR_OWN} tags "
               f"(SageMaker allows {MAX_SAGEMAKER_TAGS} per job, {JOB_TAGS_OF_OUR_OWN} are the project's)")
        self._check_network()
        _check(isinstance(self.inter_container_traffic_encryption, bool),
               "interContainerTrafficEncryption", self.inter_container_traffic_encryption,
               "true or false")
        if self.training_log_retention_days is not None:
            _check(self.training_log_retention_days in LOG_RETENTION_DAYS,
                   "trainingLogRetentionDays", self.training_log_retention_days,
                   f"null (leave the group as it is) or one of {list(LOG_RETENTION_DAYS)}")
        if self.sagemaker_retry_attempts is not None:
            low, high = contract.SAGEMAKER_RETRY_ATTEMPTS_MIN, contract.SAGEMAKER_RETRY_ATTEMPTS_MAX
            _check(isinstance(self.sagemaker_retry_attempts, int)
                   and not isinstance(self.sagemaker_retry_attempts, bool)
                   and low <= self.sagemaker_retry_attempts <= high,
                   contract.SAGEMAKER_RETRY_SETTING, self.sagemaker_retry_attempts,
                   f"null (send no RetryStrategy) or an integer from {low} to {high} "
                   "(SageMaker's RetryStrategy.MaximumRetryAttempts)")
        self._check_queue()
        self._check_run_cost()
        if self.max_job_hours is not None:
            one_job = self.default_instance_count * self.max_runtime_seconds / 3600
            _check(not isinstance(self.max_job_hours, bool) and math.isfinite(self.max_job_hours)
                   and self.max_job_hours >= one_job,
                   "maxJobHours", self.max_job_hours,
                   f"null (no budget) or at least {one_job:g} instance-hours, what one job of the "
                   f"defaults may use (defaultInstanceCount {self.default_instance_count} x "
                   f"maxRuntimeInSeconds {self.max_runtime_seconds} s)")

    def _check_run_cost(self) -> None:
        if self.max_run_cost is None:
            return
        _check(not isinstance(self.max_run_cost, bool) and math.isfinite(self.max_run_cost)
               and self.max_run_cost > 0, "maxRunCost", self.max_run_cost,
               "null (no budget in money) or a positive amount in USD")
        missing = [t for t in self.allowed_instance_types if prices.hourly(self.region, t) is None]
        _check(not missing, "maxRunCost", self.max_run_cost,
               f"null, or set once smtrain/core/prices.json holds the on-demand price of every "
               f"allowed instance type in {self.region} (missing: {', '.join(missing)}): run "
               "`make prices` with AWS credentials first")

    @property
    def run_prices(self) -> dict[str, float]:
        """The on-demand USD/hour of each allowed instance type in the region (those known)."""
        known = {t: prices.hourly(self.region, t) for t in self.allowed_instance_types}
        return {t: price for t, price in known.items() if price is not None}

    def _check_queue(self) -> None:
        _check(self.queue in contract.QUEUE_MODES, contract.QUEUE_SETTING, self.queue,
               f"one of {list(contract.QUEUE_MODES)}")
        # CapacityLimit.maxCapacity is an integer (botocore's batch model); a queued job larger
        # than the whole environment would wait forever, so the capacity holds the largest job.
        if self.queue == "batch":
            _check_int_range("queueMaxInstances", self.queue_max_instances, self.max_instance_count,
                             QUEUE_MAX_INSTANCES)
        _check(isinstance(self.queue_fair_share, bool), "queueFairShare", self.queue_fair_share,
               "true or false")
        _check(self.queue == "batch" or not self.queue_fair_share, "queueFairShare",
               self.queue_fair_share, f"false while '{contract.QUEUE_SETTING}' is off (fair share "
               "schedules the team queue's jobs)")

    def _check_tracking(self) -> None:
        _check(self.experiment_tracking in EXPERIMENT_TRACKING, "experimentTracking",
               self.experiment_tracking, f"one of {list(EXPERIMENT_TRACKING)}")
        _check(self.mlflow_tracking_server_size in ("Small", "Medium", "Large"), "mlflowTrackingServerSize",
               self.mlflow_tracking_server_size, "Small, Medium or Large")
        # The MLflow client reaches an app at https://mlflow.sagemaker.<region>.app.aws
        # (sagemaker-mlflow 0.5.0); AWS documents an interface endpoint for the tracking server
        # (aws.sagemaker.<region>.experiments) but none for apps, and the VPC the stack
        # creates has no route to the internet.
        _check(not (self.experiment_tracking == "app" and self.network == "vpc" and self.vpc_id is None),
               "experimentTracking", self.experiment_tracking,
               "server or off while 'network' is vpc in the VPC the stack creates (its jobs reach "
               "no MLflow App: AWS documents no VPC endpoint for apps and the VPC has no internet "
               "route), or give 'vpcId' of a VPC that reaches the internet")

    def _check_network(self) -> None:
        _check(self.network in NETWORK_MODES, "network", self.network,
               f"one of {list(NETWORK_MODES)}")
        if self.vpc_id is None:
            _check(not self.subnet_ids, "subnetIds", list(self.subnet_ids),
                   "no subnets without 'vpcId' (the stack creates its own VPC and subnets unless "
                   "'vpcId' names an existing one)")
            _check(not self.security_group_ids, "securityGroupIds", list(self.security_group_ids),
                   "no security groups without 'vpcId' (the stack creates its own)")
            return
        _check(self.in_vpc, "vpcId", self.vpc_id,
               f"null while 'network' is {self.network} (set 'network' to vpc or isolated to run "
               "in a VPC)")
        _check(isinstance(self.vpc_id, str) and _VPC_ID.match(self.vpc_id) is not None, "vpcId",
               self.vpc_id, "a VPC id such as vpc-0123456789abcdef0")
        _check(2 <= len(self.subnet_ids) <= MAX_SUBNETS, "subnetIds", list(self.subnet_ids),
               f"2 to {MAX_SUBNETS} private subnet ids of 'vpcId' in two or more Availability "
               "Zones (one subnet is one AZ: a job fails when that AZ has no capacity)")
        for subnet in self.subnet_ids:
            _check(isinstance(subnet, str) and _SUBNET_ID.match(subnet) is not None, "subnetIds",
                   subnet, "subnet ids such as subnet-0123456789abcdef0")
        _check(len(set(self.subnet_ids)) == len(self.subnet_ids), "subnetIds",
               list(self.subnet_ids), "distinct subnet ids")
        _check(len(self.security_group_ids) <= MAX_SECURITY_GROUPS, "securityGroupIds",
               list(self.security_group_ids),
               f"at most {MAX_SECURITY_GROUPS} security group ids (SageMaker's VpcConfig limit), or "
               "none to have the stack create one")
        for group in self.security_group_ids:
            _check(isinstance(group, str) and _SECURITY_GROUP_ID.match(group) is not None,
                   "securityGroupIds", group, "security group ids such as sg-0123456789abcdef0")

    @property
    def in_vpc(self) -> bool:
        """Jobs run in a VPC (``network`` vpc or isolated)."""
        return self.network in VPC_NETWORK_MODES

    @property
    def network_isolation(self) -> bool:
        """Jobs run with ``EnableNetworkIsolation`` (``network`` isolated or sealed)."""
        return self.network in ISOLATED_NETWORK_MODES

    def framework_build(self, framework: str) -> tuple[str, str | None, str | None]:
        """The default ``(version, py_version, base_framework_version)`` of a script-mode
        framework (see :data:`FRAMEWORK_SETTINGS`)."""
        names = FRAMEWORK_SETTINGS[framework]
        fields = {key: name for key, (name, _) in _CONTEXT_FIELDS.items()}
        version, py_version, base = (None if name is None else getattr(self, fields[name])
                                     for name in names)
        assert version is not None
        return version, py_version, base

    @property
    def storage_stack_name(self) -> str:
        return contract.storage_stack_name(self.name_prefix)

    @property
    def workflow_stack_name(self) -> str:
        return contract.workflow_stack_name(self.name_prefix)


# context key -> (dataclass field, expected python type(s))
_CONTEXT_FIELDS: dict[str, tuple[str, tuple[type, ...]]] = {
    "namePrefix": ("name_prefix", (str,)),
    "defaultInstanceType": ("default_instance_type", (str,)),
    "allowedInstanceTypes": ("allowed_instance_types", (list,)),
    "defaultInstanceCount": ("default_instance_count", (int,)),
    "maxInstanceCount": ("max_instance_count", (int,)),
    "defaultVolumeSizeInGB": ("default_volume_size_gb", (int,)),
    "maxRuntimeInSeconds": ("max_runtime_seconds", (int,)),
    "spotByDefault": ("spot_by_default", (bool,)),
    "spotMaxWaitInSeconds": ("spot_max_wait_seconds", (int,)),
    "notificationEmail": ("notification_email", (str, type(None))),
    "logRetentionDays": ("log_retention_days", (int,)),
    "pytorchVersion": ("pytorch_version", (str,)),
    "pytorchPyVersion": ("pytorch_py_version", (str,)),
    "xgboostVersion": ("xgboost_version", (str,)),
    "tensorflowVersion": ("tensorflow_version", (str,)),
    "tensorflowPyVersion": ("tensorflow_py_version", (str,)),
    "sklearnVersion": ("sklearn_version", (str,)),
    "huggingfaceVersion": ("huggingface_version", (str,)),
    "huggingfaceBaseVersion": ("huggingface_base_version", (str,)),
    "huggingfacePyVersion": ("huggingface_py_version", (str,)),
    "tags": ("extra_tags", (dict,)),
    "experimentTracking": ("experiment_tracking", (str,)),
    DEPRECATED_TRACKING_KEY: ("mlflow_tracking_server", (bool,)),
    "mlflowTrackingServerSize": ("mlflow_tracking_server_size", (str,)),
    "network": ("network", (str,)),
    "vpcId": ("vpc_id", (str, type(None))),
    "subnetIds": ("subnet_ids", (list,)),
    "securityGroupIds": ("security_group_ids", (list,)),
    "interContainerTrafficEncryption": ("inter_container_traffic_encryption", (bool,)),
    "maxJobHours": ("max_job_hours", (int, float, type(None))),
    "maxRunCost": ("max_run_cost", (int, float, type(None))),
    "trainingLogRetentionDays": ("training_log_retention_days", (int, type(None))),
    contract.SAGEMAKER_RETRY_SETTING: ("sagemaker_retry_attempts", (int, type(None))),
    contract.QUEUE_SETTING: ("queue", (str,)),
    "queueMaxInstances": ("queue_max_instances", (int,)),
    "queueFairShare": ("queue_fair_share", (bool,)),
}


def context_object(context: Mapping[str, Any] | str | None) -> dict[str, Any]:
    """The ``training`` context as a dict. ``cdk synth -c training='{...}'`` passes it as a string
    (the CDK CLI gives command-line context values as text), which must hold a JSON object."""
    if isinstance(context, str):
        try:
            context = json.loads(context)
        except json.JSONDecodeError as error:
            raise SettingsError(f"context '{CONTEXT_KEY}' must be a JSON object, got {context!r}: "
                                f"{error.msg}") from None
    if context is None:
        return {}
    if not isinstance(context, Mapping):
        raise SettingsError(f"context '{CONTEXT_KEY}' must be a JSON object, got {context!r}")
    return dict(context)


def settings_from_context(
    context: Mapping[str, Any] | str | None, *, region: str | None, account: str | None = None
) -> Settings:
    """Build :class:`Settings` from the ``training`` context object and the CDK environment.

    Unknown keys are refused (a typo must not silently fall back to a default), and each value's
    JSON type is checked before the dataclass checks its range.
    """
    raw = context_object(context)
    unknown = sorted(set(raw) - set(_CONTEXT_FIELDS))
    if unknown:
        raise SettingsError(
            f"unknown setting(s) {unknown} in context '{CONTEXT_KEY}'; "
            f"allowed: {sorted(_CONTEXT_FIELDS)}"
        )
    kwargs: dict[str, Any] = {}
    for key, raw_value in raw.items():
        value: Any = raw_value
        field_name, types = _CONTEXT_FIELDS[key]
        # bool is an int in Python; a JSON true must not pass for a count.
        wrong_bool = isinstance(value, bool) and bool not in types
        if wrong_bool or not isinstance(value, types):
            allowed = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            raise SettingsError(f"setting '{key}' must be of type {allowed}, got {value!r}")
        if isinstance(value, list):
            value = tuple(value)
        kwargs[field_name] = value
    _translate_deprecated_tracking(kwargs, explicit="experimentTracking" in raw)
    if not region:
        raise SettingsError(
            "setting 'region' is missing: set CDK_DEFAULT_REGION (AWS_REGION for the CDK CLI) "
            "or context 'defaultRegion'"
        )
    return Settings(region=region, account=account, **kwargs)


def _translate_deprecated_tracking(kwargs: dict[str, Any], *, explicit: bool) -> None:
    """``mlflowTrackingServer`` true is ``experimentTracking: server`` and false is no server;
    given together with ``experimentTracking``, the two must say the same."""
    if "mlflow_tracking_server" not in kwargs:
        return
    server = kwargs.pop("mlflow_tracking_server")
    if not explicit:
        kwargs["experiment_tracking"] = "server" if server else "off"
        return
    mode = kwargs["experiment_tracking"]
    if mode not in EXPERIMENT_TRACKING:
        return  # Settings names 'experimentTracking' and what it allows
    if server != (mode == "server"):
        raise SettingsError(
            f"settings '{DEPRECATED_TRACKING_KEY}' (deprecated) and 'experimentTracking' disagree: "
            f"got {json.dumps(server)} and {mode!r}; drop '{DEPRECATED_TRACKING_KEY}' and keep "
            f"'experimentTracking' ({' | '.join(EXPERIMENT_TRACKING)})")


def _check(ok: bool, setting: str, value: object, allowed: str) -> None:
    if not ok:
        raise SettingsError(f"setting '{setting}' is invalid: got {value!r}, expected {allowed}")


def _sagemaker_tag_text(text: str) -> bool:
    """SageMaker's tag pattern ``^([\\p{L}\\p{Z}\\p{N}_.:/=+\\-@]*)$`` (botocore's sagemaker
    model, shapes ``TagKey``/``TagValue``): letters, separators, numbers and ``_.:/=+-@``."""
    return all(c.isalpha() or c.isnumeric() or unicodedata.category(c).startswith("Z")
               or c in "_.:/=+-@" for c in text)


def _check_int_range(setting: str, value: int, low: int, high: int) -> None:
    _check(isinstance(value, int) and not isinstance(value, bool) and low <= value <= high,
           setting, value, f"an integer from {low} to {high}")
