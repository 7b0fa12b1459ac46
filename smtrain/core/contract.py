"""The execution contract: every name and limit the workflow's input and output are made of.

Pure Python with no imports beyond the standard library, read by the CDK constructs (the state
machine's checks and requests), the CLI, the offline engine, the tuning JSON schema and
``make describe``. Adding an input field means adding it here and where it is used; no other
module spells these names. The training containers cannot import this project: the one copy of
the names they read (``training_code/common/tracking.py``) is compared with this module by a test.

Sources of AWS's limits are given beside each; ``smtrain.local.sagemaker_model`` checks every
request against botocore's service model as well.
"""

from __future__ import annotations

import re
from typing import Final

# --- Execution input ------------------------------------------------------------------------

#: The input field that picks the training program (a folder of ``training_code/``).
PROGRAM: Final = "program"
#: The first release's routing field: accepted while exactly one program of that kind exists.
METHOD: Final = "method"
HYPERPARAMETERS: Final = "hyperparameters"
INSTANCE_TYPE: Final = "instanceType"
INSTANCE_COUNT: Final = "instanceCount"
VOLUME_SIZE: Final = "volumeSizeInGB"
MAX_RUNTIME: Final = "maxRuntimeInSeconds"
SPOT: Final = "spot"
#: Seconds to keep a training job's instances in a SageMaker managed warm pool after it ends
#: (``ResourceConfig.KeepAlivePeriodInSeconds``); absent or 0: no warm pool.
KEEP_ALIVE: Final = "keepAliveSeconds"
INPUTS: Final = "inputs"
#: Per channel, how SageMaker delivers its data (an object of channel: :data:`CHANNEL_OPTION_FIELDS`),
#: over the program's ``[[channels]]`` settings.
CHANNEL_OPTIONS: Final = "channelOptions"
TUNING: Final = "tuning"
#: Register the model the run ends with: ``true``, ``false``, or an object of
#: :data:`REGISTER_FIELDS`; absent (or null), the program's ``[register]`` default applies.
REGISTER: Final = "register"
#: With the team queue (setting ``queue: batch``): which of the deployment's job queues a
#: training run waits in (:data:`QUEUE_PRIORITIES`), and the fair-share identifier it is
#: scheduled under (default: the program's name).
PRIORITY: Final = "priority"
TEAM: Final = "team"

#: Every top-level field an execution input may hold; any other is refused by name.
INPUT_FIELDS: Final[tuple[str, ...]] = (PROGRAM, METHOD, HYPERPARAMETERS, INSTANCE_TYPE,
                                        INSTANCE_COUNT, VOLUME_SIZE, MAX_RUNTIME, SPOT, KEEP_ALIVE,
                                        INPUTS, CHANNEL_OPTIONS, TUNING, REGISTER, PRIORITY, TEAM)
#: The integer fields, whose JSON text the state machine checks for a fraction (``2.0``).
INTEGER_FIELDS: Final[tuple[str, ...]] = (INSTANCE_COUNT, VOLUME_SIZE, MAX_RUNTIME, KEEP_ALIVE)

#: Program kinds: a script on an AWS framework image, an image of the project's, a SageMaker
#: built-in algorithm.
KINDS: Final[tuple[str, ...]] = ("script", "byoc", "builtin")
#: The AWS framework images a script program runs on (the SageMaker Python SDK's estimators
#: ``PyTorch``, ``TensorFlow``, ``SKLearn``, ``XGBoost``, ``HuggingFace``; their names in its
#: ``image_uris.retrieve``).
FRAMEWORKS: Final[tuple[str, ...]] = ("pytorch", "tensorflow", "sklearn", "xgboost", "huggingface")
#: Frameworks whose script jobs the offline engine runs in the project's environment (through the
#: generic sagemaker-training toolkit, as that image does). TensorFlow, scikit-learn, XGBoost and
#: Hugging Face run in their images' own environments where one is built offline
#: (smtrain.local.framework_envs); the others not.
OFFLINE_FRAMEWORKS: Final[tuple[str, ...]] = ("pytorch",)
#: Per framework run offline in its image's own environment (not the project's), the image
#: versions (as the SDK spells them) whose environment the offline engine knows how to build
#: (smtrain.local.framework_envs holds what each installs). Hugging Face's version is its
#: transformers version (the SDK's ``transformers_version``), on its PyTorch base.
OFFLINE_IMAGE_ENVIRONMENTS: Final[dict[str, tuple[str, ...]]] = {
    "tensorflow": ("2.19",), "sklearn": ("1.2-1",), "xgboost": ("1.7-1",), "huggingface": ("4.48",)}
#: Per (framework, version) of :data:`OFFLINE_IMAGE_ENVIRONMENTS`, the newest Python (major,
#: minor) every pin of its environment has a wheel for (none listed: no limit known here).
#: scikit-learn 1.2-1's numpy 1.24, scipy 1.9, scikit-learn 1.2 and pandas 1.5 stop at CPython
#: 3.11, Hugging Face 4.48's numpy 1.26.4 and TensorFlow 2.19's tensorflow-cpu 2.19.0 at 3.12
#: (their files on PyPI: tensorflow-cpu 2.19.0 has cp39 to cp312 wheels).
OFFLINE_IMAGE_NEWEST_PYTHON: Final[dict[tuple[str, str], tuple[int, int]]] = {
    ("sklearn", "1.2-1"): (3, 11), ("huggingface", "4.48"): (3, 12), ("tensorflow", "2.19"): (3, 12)}
#: A version spelt with the SDK's build number (scikit-learn's and XGBoost's ``1.2-1``), at the
#: start of an image tag (``1.2-1-cpu-py3``) or alone.
_BUILD_NUMBERED_VERSION = re.compile(r"^(\d+\.\d+-\d+)(?:-|$)")
#: The transformers version in a Hugging Face image's tag (``2.3.0-transformers4.48.0-gpu-...``:
#: the base framework's version first; the SDK's image_uris builds it so).
_TRANSFORMERS_IN_TAG = re.compile(r"-transformers(\d+\.\d+)")


def offline_image_version(version: str) -> str:
    """The key of :data:`OFFLINE_IMAGE_ENVIRONMENTS` for a framework version as a manifest, the
    SDK or an image's tag spells it: the SDK's ``<major>.<minor>-<build>`` where it has a build
    number (``1.2-1``, ``1.2-1-cpu-py3``), the transformers version's major.minor in a Hugging
    Face image's tag (``2.3.0-transformers4.48.0-gpu-py311-cu121-ubuntu20.04``: 4.48), else
    major.minor (``2.19``, ``2.19.0``, ``2.19-cpu-py312``, ``4.48.0``)."""
    transformers = _TRANSFORMERS_IN_TAG.search(version)
    if transformers:
        return transformers.group(1)
    numbered = _BUILD_NUMBERED_VERSION.match(version)
    if numbered:
        return numbered.group(1)
    return ".".join(version.split("-", 1)[0].split(".")[:2])


def offline_python_refusal(framework: str, version: str, python: tuple[int, int]) -> str | None:
    """Why ``framework`` ``version``'s image environment cannot be built on Python ``python``
    (:data:`OFFLINE_IMAGE_NEWEST_PYTHON`), or None where it can."""
    newest = OFFLINE_IMAGE_NEWEST_PYTHON.get((framework, offline_image_version(version)))
    if newest is None or python <= newest:
        return None
    return (f"its image's pinned packages have wheels up to Python {newest[0]}.{newest[1]}, "
            f"and this is Python {python[0]}.{python[1]}")


def offline_version_refusal(framework: str, version: str, python: tuple[int, int]) -> str | None:
    """Why the offline engine refuses a script job of ``framework`` ``version`` (as a manifest,
    the SDK or an image's tag spells it) on Python ``python``, in one line; None where it runs
    it. The engine fails such a job with this line; ``smtrain start --local`` refuses a program
    that declares such a version with it before anything starts."""
    if framework in OFFLINE_FRAMEWORKS:
        return None
    key = offline_image_version(version)
    known = OFFLINE_IMAGE_ENVIRONMENTS.get(framework, ())
    if key not in known:
        return (f"a {framework} {key} script-mode job does not run offline: the offline engine "
                f"knows the {framework} image's environment for {', '.join(known)} only (give the "
                "program's framework_version, or the cdk.json setting, a version it knows to run "
                "it offline; run this one on AWS)")
    refusal = offline_python_refusal(framework, key, python)
    if refusal is not None:
        return (f"a {framework} {key} script-mode job does not run offline here: {refusal} (run "
                "smtrain from an older Python's environment to run it offline, or run it on AWS)")
    return None


def offline_run(framework: str, version: str | None, python: tuple[int, int]) -> str:
    """How the offline engine runs a script program of ``framework`` ``version`` (None: the
    app's default, not known here) on Python ``python``, in a few words for ``smtrain
    programs``."""
    if framework in OFFLINE_FRAMEWORKS:
        more = " (the PyTorch image's toolkit on more than one instance)" if framework == "pytorch" else ""
        return f"AWS's training toolkit, over the project's environment{more}"
    known = OFFLINE_IMAGE_ENVIRONMENTS.get(framework, ())
    if version is None:
        return f"in the {framework} image's environment for {', '.join(known)}; other versions refused"
    key = offline_image_version(version)
    if key not in known:
        return (f"refused for this version (the {framework} image's environment is built for "
                f"{', '.join(known)})")
    refusal = offline_python_refusal(framework, key, python)
    if refusal is not None:
        return f"refused on this Python ({refusal})"
    return f"in the {framework} {key} image's environment (built on first use)"
#: Per framework, the ``training`` settings (cdk.json) that give its default build: version,
#: Python version and (Hugging Face) base framework; None where the image takes none. XGBoost
#: script mode runs on the built-in algorithm's image, so it shares ``xgboostVersion``.
FRAMEWORK_SETTINGS: Final[dict[str, tuple[str, str | None, str | None]]] = {
    "pytorch": ("pytorchVersion", "pytorchPyVersion", None),
    "tensorflow": ("tensorflowVersion", "tensorflowPyVersion", None),
    "sklearn": ("sklearnVersion", None, None),
    "xgboost": ("xgboostVersion", None, None),
    "huggingface": ("huggingfaceVersion", "huggingfacePyVersion", "huggingfaceBaseVersion"),
}

#: How a script program's job uses more than one instance (``[script] distribution``), per
#: framework. With none declared and none by default (:data:`DEFAULT_DISTRIBUTIONS`), a run on
#: more than one instance is refused: the image would run one independent copy of the script
#: per instance, billed each time.
#:
#: - ``torch_distributed``: torchrun over every instance and GPU (the PyTorch toolkit, which the
#:   Hugging Face images run too; the SDK's ``distribution={"torch_distributed": ...}``).
#: - ``multi_worker_mirrored``: TensorFlow's MultiWorkerMirroredStrategy; the toolkit writes
#:   ``TF_CONFIG`` with every host a worker (TensorFlow 2.9 and later, as the SDK requires).
#: - ``parameter_server``: TensorFlow's parameter servers; the toolkit starts one on every host
#:   and writes ``TF_CONFIG`` (host 1 the master, the others workers).
#: - ``sm_hosts``: the script coordinates its instances itself, from ``SM_HOSTS`` and
#:   ``SM_CURRENT_HOST`` (as XGBoost's distributed example does with rabit); every instance
#:   runs it once, and the image starts nothing more.
#:
#: Sources: sagemaker-python-sdk v2.257.6, pytorch/estimator.py (torch_distributed),
#: huggingface/estimator.py (_huggingface_distribution_configuration), estimator.py
#: (Framework._distribution_configuration, _validate_mwms_config: TensorFlow 2.9);
#: sagemaker-tensorflow-training-toolkit, training.py (_build_tf_config_for_ps,
#: _build_tf_config_for_mwms); sklearn/estimator.py refuses ``instance_count`` other than 1
#: (this project lets a program that declares ``sm_hosts`` use more); xgboost/estimator.py
#: sends no distribution option, and its container runs a script once per host.
DISTRIBUTIONS: Final[dict[str, tuple[str, ...]]] = {
    "pytorch": ("torch_distributed", "sm_hosts"),
    "huggingface": ("torch_distributed", "sm_hosts"),
    "tensorflow": ("multi_worker_mirrored", "parameter_server", "sm_hosts"),
    "sklearn": ("sm_hosts",),
    "xgboost": ("sm_hosts",),
}
#: The frameworks whose runs on more than one instance distribute without a declaration.
DEFAULT_DISTRIBUTIONS: Final[dict[str, str]] = {"pytorch": "torch_distributed",
                                                "huggingface": "torch_distributed"}
#: The hyperparameters each distribution adds to a job on more than one instance, as the SDK
#: encodes them (JSON: ``true``); the toolkits read them as additional framework parameters.
DISTRIBUTION_HYPERPARAMETERS: Final[dict[str, dict[str, str]]] = {
    "torch_distributed": {"sagemaker_torch_distributed_enabled": "true"},
    "multi_worker_mirrored": {"sagemaker_multi_worker_mirrored_strategy_enabled": "true"},
    "parameter_server": {"sagemaker_parameter_server_enabled": "true"},
    "sm_hosts": {},
}


def distributions(framework: str, base_framework_version: str | None = None) -> tuple[str, ...]:
    """The distributions a ``framework`` program may declare. A Hugging Face image on a
    TensorFlow base runs no PyTorch toolkit: ``sm_hosts`` only, and no default."""
    if framework == "huggingface" and (base_framework_version or "").startswith("tensorflow"):
        return ("sm_hosts",)
    return DISTRIBUTIONS[framework]


def default_distribution(framework: str, base_framework_version: str | None = None) -> str | None:
    """The distribution a ``framework`` program gets without declaring one (None: refused on
    more than one instance)."""
    default = DEFAULT_DISTRIBUTIONS.get(framework)
    return default if default in distributions(framework, base_framework_version) else None


#: The first TensorFlow with ``multi_worker_mirrored`` (the SDK's _validate_mwms_config).
MULTI_WORKER_MIRRORED_SINCE: Final[tuple[int, int]] = (2, 9)

# --- The ``tuning`` object ------------------------------------------------------------------

TUNING_FIELDS: Final[tuple[str, ...]] = ("strategy", "maxJobs", "maxParallelJobs", "objective",
                                         "parameterRanges", "earlyStopping", "hyperband")
TUNING_INTEGER_FIELDS: Final[tuple[str, ...]] = ("maxJobs", "maxParallelJobs")
#: SageMaker's strategies (API reference, HyperParameterTuningJobConfig.Strategy).
TUNING_STRATEGIES: Final[tuple[str, ...]] = ("Bayesian", "Random", "Hyperband", "Grid")
OBJECTIVE_TYPES: Final[tuple[str, ...]] = ("Maximize", "Minimize")
EARLY_STOPPING_TYPES: Final[tuple[str, ...]] = ("Off", "Auto")
#: SageMaker's ParameterRanges members, by the hyperparameter type each takes.
RANGE_KINDS: Final[dict[str, str]] = {
    "IntegerParameterRanges": "int",
    "ContinuousParameterRanges": "float",
    "CategoricalParameterRanges": "categorical",
}
SCALING_TYPES: Final[tuple[str, ...]] = ("Auto", "Linear", "Logarithmic", "ReverseLogarithmic")
#: ResourceLimits (botocore's sagemaker model: MaxNumberOfTrainingJobs, MaxParallelTrainingJobs).
MAX_TUNING_JOBS: Final = 500
MAX_PARALLEL_TUNING_JOBS: Final = 100
#: "The maximum value is 20,000 epochs." (API reference, HyperbandStrategyConfig.MaxResource)
HYPERBAND_MAX_RESOURCE: Final = 20_000

# --- The ``register`` object: the model registry and its quality gate -----------------------

#: ``minimum``/``maximum``: ``{metric: number}``, each a final metric the model must reach (at
#: least / at most) to be registered; ``description``: the model version's description.
REGISTER_FIELDS: Final[tuple[str, ...]] = ("minimum", "maximum", "description")
#: ModelPackageDescription: at most 1,024 characters (botocore's sagemaker model, EntityDescription).
MAX_MODEL_DESCRIPTION: Final = 1024
#: Characters SageMaker's description pattern (``[\p{L}\p{M}\p{Z}\p{S}\p{N}\p{P}]*``) refuses
#: that occur in text: control (C0, DEL, C1), format (soft hyphen, zero-width and direction marks,
#: BOM) and private-use characters. A JSONata (JavaScript) regex class: it has no ``\p{...}``.
DESCRIPTION_REFUSED: Final = (r"[\u0000-\u001f\u007f-\u009f\u00ad\u061c\u180e\u200b-\u200f"
                              r"\u2028-\u202e\u2060-\u206f\ufeff\ue000-\uf8ff]")
#: The approval status a registered version starts with, and those ``smtrain models`` sets
#: (API reference, CreateModelPackage/UpdateModelPackage ``ModelApprovalStatus``).
PENDING_APPROVAL: Final = "PendingManualApproval"
APPROVED: Final = "Approved"
REJECTED: Final = "Rejected"
APPROVAL_STATUSES: Final[tuple[str, ...]] = (APPROVED, REJECTED, PENDING_APPROVAL)
#: CustomerMetadataProperties (botocore's sagemaker model, CustomerMetadataMap and its key and
#: value shapes): at most 50 entries, keys of 1-128 and values of 1-256 characters matching
#: ``^([\p{L}\p{Z}\p{N}_.:/=+\-@]*)$``.
MAX_CUSTOMER_METADATA: Final = 50
MAX_CUSTOMER_METADATA_KEY: Final = 128
MAX_CUSTOMER_METADATA_VALUE: Final = 256
#: The customer metadata a registered version carries (hyperparameters as ``hp:<name>``).
METADATA_EXECUTION: Final = "smtrain:execution"
METADATA_PROGRAM: Final = "smtrain:program"
METADATA_TRAINING_JOB: Final = "smtrain:trainingJob"
#: The code the model was trained with: the script archive or image tag (each named by its
#: content hash), or the built-in image.
METADATA_CODE: Final = "smtrain:code"
#: The registered model's SHA-256 (base64, as S3 reports a copy's ``ChecksumSHA256``) and the
#: S3 version of its frozen copy (:data:`REGISTERED_MODELS_PREFIX`).
METADATA_MODEL_SHA256: Final = "smtrain:modelSha256"
METADATA_MODEL_VERSION: Final = "smtrain:modelVersionId"
#: Entries of a version's customer metadata the registration adds after the gate (the two above).
METADATA_ADDED_AT_REGISTRATION: Final = 2
METADATA_HYPERPARAMETER_PREFIX: Final = "hp:"
#: The MLflow tracking URI (server or app ARN) and the run's name: the run is tagged
#: ``smtrain.training_job=<training job name>`` (:data:`RUN_TAG_TRAINING_JOB`).
METADATA_MLFLOW_TRACKING_URI: Final = "mlflow:trackingUri"
METADATA_MLFLOW_EXPERIMENT: Final = "mlflow:experiment"
#: Where the offline engine keeps its model registry, under its work directory.
LOCAL_REGISTRY_DIR: Final = "registry"
#: Where the offline engine records its team queue's jobs under the work dir (``smtrain queue
#: --local`` reads it).
LOCAL_QUEUE_FILE: Final = "batch-queue.json"
#: The offline engine's stand-in for S3 under its work directory (``s3://<bucket>/<key>`` is
#: ``<work dir>/s3/<bucket>/<key>``).
LOCAL_S3_DIR: Final = "s3"

# --- Limits ---------------------------------------------------------------------------------

#: SageMaker's HyperParameters map: at most 100 entries, keys of 256 and values of 2,500
#: characters (botocore's sagemaker model, HyperParameters / HyperParameterKey / -Value).
MAX_HYPERPARAMETERS: Final = 100
MAX_HYPERPARAMETER_KEY: Final = 256
MAX_HYPERPARAMETER_VALUE: Final = 2500
#: The most instances a run may ask for (the ``maxInstanceCount`` setting's ceiling).
MAX_INSTANCE_COUNT: Final = 100
#: SageMaker's volume size range in GB (botocore's sagemaker model, VolumeSizeInGB).
MAX_VOLUME_SIZE_GB: Final = 16384
#: The longest warm pool: ``ResourceConfig.KeepAlivePeriodInSeconds`` "Valid Range: Minimum value
#: of 0. Maximum value of 21600." (API reference, ResourceConfig; botocore 1.44's sagemaker model,
#: shape KeepAlivePeriodInSeconds, max 21600). The developer guide's "Considerations" still says
#: 3600; a value above that which SageMaker refuses fails CreateTrainingJob with its reason.
MAX_KEEP_ALIVE_SECONDS: Final = 21600

# -- how a channel's data reaches the container -------------------------------------------------
#: A channel's options in an execution input (``channelOptions.<channel>``), each named after the
#: SageMaker field it sets: ``Channel.InputMode``, ``S3DataSource.S3DataDistributionType``,
#: ``Channel.CompressionType`` (API reference, Channel and S3DataSource). A program.toml channel
#: sets the same as ``input_mode``, ``s3_data_distribution_type`` and ``compression_type``.
INPUT_MODE: Final = "inputMode"
S3_DATA_DISTRIBUTION: Final = "s3DataDistributionType"
COMPRESSION: Final = "compressionType"
CHANNEL_OPTION_FIELDS: Final[tuple[str, ...]] = (INPUT_MODE, S3_DATA_DISTRIBUTION, COMPRESSION)
#: botocore's ``TrainingInputMode`` enum (sagemaker 2017-07-24 service-2.json), the type of
#: ``Channel.InputMode``: File copies the channel to the instance's volume before the program
#: starts; FastFile streams the objects from S3 on read, at the same path; Pipe streams them
#: through a FIFO per pass (``/opt/ml/input/data/<channel>_<epoch>``). A channel without
#: InputMode takes the job's ``AlgorithmSpecification.TrainingInputMode``, which the project
#: sends as File (API reference, Channel.InputMode), so a File channel sends none.
DEFAULT_INPUT_MODE: Final = "File"
FAST_FILE_INPUT_MODE: Final = "FastFile"
PIPE_INPUT_MODE: Final = "Pipe"
INPUT_MODES: Final[tuple[str, ...]] = (DEFAULT_INPUT_MODE, FAST_FILE_INPUT_MODE, PIPE_INPUT_MODE)
#: botocore's ``S3DataDistribution`` enum. ShardedByS3Key: "If there are n ML compute instances
#: launched for a training job, each instance gets approximately 1/n of the number of S3
#: objects" (API reference, S3DataSource.S3DataDistributionType).
DEFAULT_S3_DATA_DISTRIBUTION: Final = "FullyReplicated"
SHARDED_BY_S3_KEY: Final = "ShardedByS3Key"
S3_DATA_DISTRIBUTIONS: Final[tuple[str, ...]] = (DEFAULT_S3_DATA_DISTRIBUTION, SHARDED_BY_S3_KEY)
#: botocore's ``CompressionType`` enum. "CompressionType is used only in Pipe input mode. In
#: File mode, leave this field unset or set it to None" (API reference, Channel.CompressionType):
#: the rules refuse Gzip on a channel not in Pipe mode, and a channel without it sends none.
DEFAULT_COMPRESSION: Final = "None"
GZIP_COMPRESSION: Final = "Gzip"
COMPRESSION_TYPES: Final[tuple[str, ...]] = (DEFAULT_COMPRESSION, GZIP_COMPRESSION)
#: The input mode that reads a compressed channel.
COMPRESSED_INPUT_MODE: Final = PIPE_INPUT_MODE
#: Built-in algorithms whose current container refuses Pipe mode: sagemaker-xgboost-container's
#: data_utils.py (since May 2026) raises "Pipe mode for ... is no longer supported. Please use
#: Fast File mode (default) instead" for every content type (LibSVM never had it). The developer
#: guide's algorithm table still says "File or Pipe"; the container is what runs, so the rules
#: refuse Pipe for these before any job starts.
PIPE_REFUSING_ALGORITHMS: Final[tuple[str, ...]] = ("xgboost",)


def pipe_path(channel_dir: str, epoch: int) -> str:
    """The FIFO a Pipe-mode channel's pass ``epoch`` (from 0) is read from: the channel's
    directory name with ``_<epoch>`` (``/opt/ml/input/data/train_0``)."""
    return f"{channel_dir.rstrip('/')}_{epoch}"
#: Step Functions' execution names (StartExecution ``name``); used with ``fullmatch``.
EXECUTION_NAME: Final = re.compile(r"[0-9A-Za-z_-]{1,80}")
#: Characters Step Functions allows in an execution name that a SageMaker tag value refuses
#: (tag values match ``^([\p{L}\p{Z}\p{N}_.:/=+\-@]*)$``: botocore's sagemaker model, TagValue).
EXECUTION_NAME_CHARACTERS_REFUSED_BY_TAGS: Final[tuple[str, ...]] = ("(", ")", "!", "'")
#: A program's name: a folder of ``training_code/``, an S3 prefix and a tag value.
PROGRAM_NAME: Final = re.compile(r"[a-z][a-z0-9_-]{0,31}")
#: How a hyperparameter's text must look for each declared type: JSON's number grammar, so
#: that JSONata's ``$number`` (the state machine's check) and Python read it alike.
#: Bounded so that every accepted text is a finite double (JSONata's ``$number`` overflows to an
#: error past 1.8e308); ``(?![\s\S])`` ends the text in JavaScript and Python alike (a ``$``
#: would let a trailing newline through in Python).
INT_TEXT: Final = r"^-?(0|[1-9][0-9]{0,14})(?![\s\S])"
FLOAT_TEXT: Final = r"^-?(0|[1-9][0-9]{0,29})(\.[0-9]+)?([eE][-+]?[0-9]{1,2})?(?![\s\S])"
BOOL_VALUES: Final[tuple[str, ...]] = ("true", "false")
#: A categorical range's values (botocore's sagemaker model, ParameterValues: 1 to 30).
MAX_CATEGORICAL_VALUES: Final = 30
#: A channel name (botocore's sagemaker model, ChannelName: ``[A-Za-z0-9\.\-_]+``, 64).
CHANNEL_NAME: Final = re.compile(r"[A-Za-z0-9.\-_]{1,64}")

# --- Errors (the Fail states' ``Error``) ----------------------------------------------------

INVALID_INPUT_ERROR: Final = "InvalidExecutionInput"
UNKNOWN_PROGRAM_ERROR: Final = "UnknownProgram"
TRAINING_FAILED_ERROR: Final = "TrainingJobFailed"
TUNING_FAILED_ERROR: Final = "TuningJobFailed"
#: An execution that could use more instance-hours than the deployment's ``maxJobHours``.
BUDGET_EXCEEDED_ERROR: Final = "JobHoursBudgetExceeded"
#: A run whose instance-hours at the on-demand price exceed the deployment's ``maxRunCost``.
COST_BUDGET_EXCEEDED_ERROR: Final = "RunCostBudgetExceeded"
#: A model that trained (its artifact is named in the cause) but could not be registered.
REGISTRATION_FAILED_ERROR: Final = "ModelRegistrationFailed"

# --- Stacks, the container's paths and log groups -------------------------------------------

#: The cdk.json context key of the project's settings, and the name prefix they default to.
CONTEXT_KEY: Final = "training"
DEFAULT_NAME_PREFIX: Final = "smtrain"

#: The setting that has every training job (and tuning trial) carry SageMaker's ``RetryStrategy``;
#: null, the default, sends none. Off by default because Step Functions checks an optimized
#: integration's static fields against its own list when the state machine is created
#: (``SCHEMA_VALIDATION_FAILED: The field "X" is not supported by Step Functions``:
#: aws/amazon-sagemaker-examples#4492, aws-step-functions-data-science-sdk-python#200) and no AWS
#: document lists ``RetryStrategy`` among the fields ``createTrainingJob.sync`` takes.
SAGEMAKER_RETRY_SETTING: Final = "sagemakerRetryAttempts"
#: ``RetryStrategy.MaximumRetryAttempts``: "Valid Range: Minimum value of 1. Maximum value of 30."
#: (API reference, RetryStrategy; botocore's sagemaker model, shape MaximumRetryAttempts).
SAGEMAKER_RETRY_ATTEMPTS_MIN: Final = 1
SAGEMAKER_RETRY_ATTEMPTS_MAX: Final = 30


#: The team queue (AWS Batch for SageMaker Training, setting ``queue``): ``off`` creates each
#: training job at once; ``batch`` submits it as a Batch service job to a queue of the stack's
#: service environment (Batch user guide, "Service jobs in AWS Batch").
QUEUE_SETTING: Final = "queue"
QUEUE_MODES: Final[tuple[str, ...]] = ("off", "batch")
#: The job queues, by the input's ``priority``, with each queue's Batch ``Priority`` (0-1000;
#: "Job queues with a higher priority ... are evaluated first": CreateJobQueue, priority).
QUEUE_PRIORITIES: Final[dict[str, int]] = {"high": 900, "normal": 100}
DEFAULT_PRIORITY: Final = "normal"
#: ``ServiceJobType`` and ``JobQueueType`` (botocore's batch model: the only value).
SERVICE_JOB_TYPE: Final = "SAGEMAKER_TRAINING"
#: A service job's states until it ends (ServiceJobStatus, botocore's batch model).
SERVICE_JOB_WAITING: Final[tuple[str, ...]] = ("SUBMITTED", "PENDING", "RUNNABLE")
SERVICE_JOB_ACTIVE: Final[tuple[str, ...]] = (*SERVICE_JOB_WAITING, "SCHEDULED", "STARTING", "RUNNING")
SERVICE_JOB_SUCCEEDED: Final = "SUCCEEDED"
SERVICE_JOB_FAILED: Final = "FAILED"
#: What a run's state is while its service job is in each state ("Mapping AWS Batch service
#: job status to SageMaker AI status": SCHEDULED is SageMaker's Pending, STARTING Downloading).
SERVICE_JOB_STAGES: Final[dict[str, str]] = {
    "SUBMITTED": "queued", "PENDING": "queued", "RUNNABLE": "queued", "SCHEDULED": "scheduled",
    "STARTING": "running", "RUNNING": "running", "SUCCEEDED": "done", "FAILED": "done"}
#: Batch names the SageMaker job ``AWSBatch<TrainingJobName of the payload><attempt id>`` (user
#: guide, "Getting started with AWS Batch on SageMaker AI": ``training-job/AWSBatch<my-simple-
#: training-job><your-attempt-id>``), so the payload's name is the stack's prefix alone (at most
#: 16 characters, the ``namePrefix`` setting's limit), which with the 8 of ``AWSBatch`` and the
#: 32 of the attempt id seen in the user guide's event example stays within SageMaker's 63).
BATCH_TRAINING_JOB_PREFIX: Final = "AWSBatch"
BATCH_ATTEMPT_ID_LENGTH: Final = 32
#: A fair-share identifier: "limited to 255 alphanumeric characters" (ShareAttributes and
#: SubmitJob shareIdentifier, botocore's batch model; SubmitServiceJob gives no format). Whether
#: AWS counts ``-`` and ``_`` as alphanumeric is not said, so neither is used: a run's ``team``
#: is letters and digits, and a program's share is its name without them (:func:`program_share`).
SHARE_IDENTIFIER: Final = re.compile(r"[A-Za-z0-9]{1,255}")
#: The state machine's wait between two looks at a queued job: doubling from the first to the
#: longest. Each look adds 9 events to the execution's history, which holds at most 25,000
#: ("Step Functions service quotas": maximum execution history size), so at 20 minutes a run
#: may wait and train for about 38 days, beyond SageMaker's 28-day longest job; a job that ends
#: after a long run is seen at most 20 minutes late.
QUEUE_POLL_FIRST_SECONDS: Final = 15
QUEUE_POLL_MAX_SECONDS: Final = 1200
#: The queued chain's states the CLI reads a run's place in the queue from (their output's
#: ``queue``: ``jobId``, ``status``, ``statusReason``, ``trainingJobArn``).
QUEUE_SUBMIT_STATE: Final = "SubmitQueuedTrainingJob"
QUEUE_DESCRIBE_STATE: Final = "DescribeQueuedJob"
#: The states a queued run goes round while it waits (the CLI follows them as one line).
QUEUE_WAIT_STATE: Final = "WaitInQueue"
QUEUE_CHOICE_STATE: Final = "ChooseQueuedJobState"


#: The state machine that terminates a stopped execution's queued job: ``<prefix>-queue-cleanup``.
QUEUE_CLEANUP_SUFFIX: Final = "-queue-cleanup"
#: Execution ends that may leave a queued job behind, which the cleanup looks for (an execution
#: that failed after its job ended finds nothing to stop).
QUEUE_CLEANUP_STATUSES: Final[tuple[str, ...]] = ("ABORTED", "TIMED_OUT", "FAILED")


def job_queue_name(name_prefix: str, priority: str, *, fair_share: bool = False) -> str:
    """The Batch job queue of one priority. A fair-share queue has a name of its own: a FIFO
    queue "can't have a fair-share scheduling policy added" and a fair-share one's policy "can be
    replaced but can't be removed" (CreateJobQueue and UpdateJobQueue, schedulingPolicyArn), so
    switching ``queueFairShare`` replaces the queues (a new name lets CloudFormation create the
    new one before it deletes the old)."""
    return f"{name_prefix}-{'fair-' if fair_share else ''}{priority}"


def service_environment_name(name_prefix: str) -> str:
    """The Batch service environment every job queue of the stack feeds."""
    return f"{name_prefix}-training"


def program_share(program: str) -> str:
    """The fair-share identifier of a run that names no ``team``: its program's name in letters
    and digits (the state machine's rule says the same in JSONata)."""
    return re.sub(r"[^A-Za-z0-9]", "", program)


def batch_training_job_name(training_job_arn: str) -> str:
    """The SageMaker job a queued run trains in, from the ARN Batch reports: its name rebuilt
    with Batch's prefix as Batch writes it (whether SageMaker lowercases a name in its ARN is
    shown both ways in AWS's documents; the rest is the stack's lowercase prefix and the attempt
    id). The state machine's ``NameQueuedTrainingJob`` says the same in JSONata."""
    name = training_job_arn.rsplit("/", 1)[-1]
    return BATCH_TRAINING_JOB_PREFIX + name[len(BATCH_TRAINING_JOB_PREFIX):]


def batch_training_job_prefix(name_prefix: str) -> str:
    """What every SageMaker job a queued run starts is named with (see
    :data:`BATCH_TRAINING_JOB_PREFIX`)."""
    return f"{BATCH_TRAINING_JOB_PREFIX}{name_prefix}"


def storage_stack_name(name_prefix: str) -> str:
    """The stateful stack's CloudFormation name (key, buckets, repository, execution roles)."""
    return f"{name_prefix}-storage"


def workflow_stack_name(name_prefix: str) -> str:
    """The workflow stack's CloudFormation name: its outputs are what the CLI reads."""
    return f"{name_prefix}-workflow"


#: Where SageMaker mounts a job's tree in the container (developer guide, "How Amazon SageMaker
#: Provides Training Information"); the training toolkit reads ``SAGEMAKER_BASE_DIR`` instead
#: when set (sagemaker_training/environment.py), as the offline engine and the tests use it.
CONTAINER_BASE_DIR: Final = "/opt/ml"
ENV_BASE_DIR: Final = "SAGEMAKER_BASE_DIR"
#: Where the PyTorch inference image finds a model's own serving code (the SDK's
#: ``Model._script_mode_env_vars``: ``SAGEMAKER_SUBMIT_DIRECTORY`` for repacked code).
MODEL_CODE_DIR: Final = f"{CONTAINER_BASE_DIR}/model/code"
#: The account-wide log group and metrics namespace SageMaker training writes to (developer
#: guide, "Log Amazon SageMaker Events with Amazon CloudWatch").
TRAINING_LOG_GROUP: Final = "/aws/sagemaker/TrainingJobs"
TRAINING_METRICS_NAMESPACE: Final = "/aws/sagemaker/TrainingJobs"
#: How many of a failed job's last log lines the CLI shows.
LOG_TAIL_LINES: Final = 20


# --- S3 layout (both buckets) ---------------------------------------------------------------

#: Training data: ``datasets/<program>/<channel>/`` are each program's default channels.
DATASETS_PREFIX: Final = "datasets/"
#: Local channel uploads land here, inside the prefix the execution role may read.
UPLOAD_PREFIX: Final = "datasets/uploads"
#: Trained models: ``models/<program>/<training job>/output/model.tar.gz``. Each program's jobs
#: run as a role of their own that may write only ``models/<program>/`` (:func:`program_models_prefix`).
MODELS_PREFIX: Final = "models/"
#: Model-quality reports of registered versions: ``model-quality/<training job name>.json``.
QUALITY_REPORTS_PREFIX: Final = "model-quality/"
#: Spot checkpoints: ``checkpoints/<program>/<run id>/``, each program's own (as models).
CHECKPOINTS_PREFIX: Final = "checkpoints/"
#: Where a registered version's model is frozen: a copy the state machine makes at registration
#: (``registry/<group>/<training job>/model.tar.gz``), under a prefix no job's role may write, so
#: an approved model cannot be swapped by a later job writing ``models/``.
REGISTERED_MODELS_PREFIX: Final = "registry/"


def program_models_prefix(program: str) -> str:
    """``models/<program>/``: where a program's jobs write their models, and all its role may write."""
    return f"{MODELS_PREFIX}{program}/"


def program_checkpoints_prefix(program: str) -> str:
    """``checkpoints/<program>/``: a program's checkpoints, which only its role may read or write."""
    return f"{CHECKPOINTS_PREFIX}{program}/"


#: Script mode under network isolation: the container cannot fetch ``sourcedir.tar.gz`` from S3,
#: so it arrives as an input channel and ``sagemaker_submit_directory`` names the file in it (as
#: the SageMaker Python SDK does: ``EstimatorBase.code_channel_name`` and
#: ``CONTAINER_CODE_CHANNEL_SOURCEDIR_PATH`` in ``sagemaker/estimator.py``; the training toolkit
#: extracts a local tar.gz path: ``sagemaker_training.files.download_and_extract``).
CODE_CHANNEL: Final = "code"
CODE_CHANNEL_DIR: Final = f"{CONTAINER_BASE_DIR}/input/data/code"


def code_channel_file(file_name: str) -> str:
    """Where the container finds the code archive ``file_name`` (the SDK's archive is named
    ``sourcedir.tar.gz``; the stack's carries its content hash) in the code channel."""
    return f"{CODE_CHANNEL_DIR}/{file_name}"


def default_channel_uri(bucket: str, program: str, channel: str) -> str:
    return f"s3://{bucket}/{DATASETS_PREFIX}{program}/{channel}/"


# --- Tags on every job, and the variables the training code reads ---------------------------

TAG_EXECUTION: Final = "smtrain:execution"
TAG_PROGRAM: Final = "smtrain:program"
TAG_KIND: Final = "smtrain:kind"
#: SageMaker tags a tuning job's trials with it (the local backend does the same).
TAG_TUNING_JOB: Final = "sagemaker:tuning-job"

ENV_EXECUTION: Final = "SMTRAIN_EXECUTION"
ENV_PROGRAM: Final = "SMTRAIN_PROGRAM"
ENV_TUNING_JOB: Final = "SMTRAIN_TUNING_JOB"
ENV_TRACKING_URI: Final = "MLFLOW_TRACKING_URI"
ENV_EXPERIMENT: Final = "MLFLOW_EXPERIMENT_NAME"
#: The MLflow experiment every run is logged to, and the tags that trace a run to its job.
EXPERIMENT: Final = "smtrain"
RUN_TAG_EXECUTION: Final = "smtrain.execution"
RUN_TAG_PROGRAM: Final = "smtrain.program"
RUN_TAG_TRAINING_JOB: Final = "smtrain.training_job"
RUN_TAG_TUNING_JOB: Final = "smtrain.tuning_job"
#: What the CLI puts on a run once its job's cost is known (``smtrain.cli.run_costs``): the job's
#: cost in USD (where the price is known) and billable seconds as metrics, its cost line as a tag.
RUN_METRIC_COST_USD: Final = "cost_usd"
RUN_METRIC_BILLABLE_SECONDS: Final = "billable_seconds"
RUN_TAG_COST: Final = "smtrain.cost"
#: Offline only: the file a job's tracker records its MLflow run in, for the local backend to log
#: when the job ends (``smtrain.local.run_record``); never set on AWS.
ENV_TRACKING_RECORD: Final = "SMTRAIN_TRACKING_RECORD"
#: A script program's requirements for tracking from the container only (the MLflow client):
#: shipped, beside its ``requirements.txt``, only where the deployment gives jobs a tracking URI
#: (``infra.constructs.source_bundle``).
TRACKING_REQUIREMENTS: Final = "requirements-tracking.txt"
#: Where offline runs keep each program's requirements environment (default
#: ``~/.cache/smtrain/envs``).
ENV_PROGRAM_ENV_CACHE: Final = "SMTRAIN_ENV_CACHE"
#: Offline only: ``require`` makes the engine refuse a job with ``EnableNetworkIsolation`` that
#: this machine cannot isolate; unset (or anything else), such a job runs with network access and
#: says so (``smtrain.local.local_backend``).
ENV_LOCAL_ISOLATION: Final = "SMTRAIN_LOCAL_ISOLATION"
LOCAL_ISOLATION_REQUIRED: Final = "require"

#: Where the training programs are, when not the project's own ``training_code/`` (read by
#: ``app.py`` for synth and by the CLI; tests point both at a copy of the shipped programs).
ENV_TRAINING_CODE: Final = "SMTRAIN_TRAINING_CODE"
#: The CLI's own variables (overriding the stack outputs).
ENV_STATE_MACHINE_ARN: Final = "SMTRAIN_STATE_MACHINE_ARN"
ENV_DATA_BUCKET: Final = "SMTRAIN_DATA_BUCKET"

# --- Stack outputs the CLI and the offline engine read --------------------------------------

OUTPUT_STATE_MACHINE_ARN: Final = "StateMachineArn"
OUTPUT_DATA_BUCKET: Final = "DataBucketName"
OUTPUT_ARTIFACTS_BUCKET: Final = "ArtifactsBucketName"
OUTPUT_REPOSITORY_URI: Final = "RepositoryUri"
OUTPUT_ALLOWED_INSTANCE_TYPES: Final = "AllowedInstanceTypes"
OUTPUT_MAX_INSTANCE_COUNT: Final = "MaxInstanceCount"
OUTPUT_TRACKING_SERVER_ARN: Final = "TrackingServerArn"
#: The MLflow App's ARN (``experimentTracking: app``); like the server's, an MLflow tracking URI.
OUTPUT_MLFLOW_APP_ARN: Final = "MlflowAppArn"
OUTPUT_MAX_JOB_HOURS: Final = "MaxJobHours"
#: ``maxRunCost`` (USD) and the on-demand prices it is reckoned with (JSON: type -> USD/hour).
OUTPUT_MAX_RUN_COST: Final = "MaxRunCost"
OUTPUT_RUN_PRICES: Final = "RunPrices"
OUTPUT_DEFAULT_INSTANCE_TYPE: Final = "DefaultInstanceType"
#: The defaults a run's budget is computed with when its input leaves them out.
OUTPUT_DEFAULT_INSTANCE_COUNT: Final = "DefaultInstanceCount"
OUTPUT_DEFAULT_MAX_RUNTIME: Final = "DefaultMaxRuntimeInSeconds"
#: The team queue: ``off``, ``fifo`` or ``fair-share`` (``input_rules.QUEUE_KINDS``), and with
#: one, ``high=<queue name>,normal=<queue name>``.
OUTPUT_TEAM_QUEUE: Final = "TeamQueue"
OUTPUT_TEAM_QUEUES: Final = "TeamQueues"
#: Per program: ``ProgramImage<Id>`` (BYOC image URI) and ``ProgramSource<Id>`` (script tarball).
OUTPUT_PROGRAM_IMAGE: Final = "ProgramImage"
OUTPUT_PROGRAM_SOURCE: Final = "ProgramSource"
#: Per program: ``ModelPackageGroup<Id>``, the name of its model package group.
OUTPUT_MODEL_PACKAGE_GROUP: Final = "ModelPackageGroup"


def output_id(program: str) -> str:
    """``digits_mlp`` -> ``DigitsMlp``: a program's part of a CloudFormation output id."""
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[_-]", program))


# --- Execution output -----------------------------------------------------------------------

OUTPUT_FIELDS: Final[tuple[str, ...]] = ("program", "trainingJobName", "modelArtifacts",
                                         "metrics")
#: A training run's output (not a tuning run's) also says what its job cost: ``cost``, the object
#: ``smtrain.core.prices.JOB_COST_FUNCTION`` returns (``usd`` null when the price or the billable
#: time is unknown). A tuning run's total is ``smtrain status``'s (it lists every trial).
OUTPUT_COST: Final = "cost"
#: Beside those: ``registered`` (bool), ``registrationReason`` (why, or why not) and, when
#: registered, ``modelPackageArn`` (the version), ``modelPackageGroup`` and
#: ``registeredModelData`` (the model's frozen copy the version names).
REGISTRATION_OUTPUT_FIELDS: Final[tuple[str, ...]] = ("registered", "registrationReason",
                                                      "modelPackageArn", "modelPackageGroup",
                                                      "registeredModelData")
TUNING_OUTPUT_FIELDS: Final[tuple[str, ...]] = (*OUTPUT_FIELDS, "tuningJobName",
                                                "tuningJobStatus", "trainingJobCounters",
                                                "objective", "tunedHyperparameters")
