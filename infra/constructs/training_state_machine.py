"""The Step Functions state machine that turns an execution input into a SageMaker job."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aws_cdk import ArnFormat, Fn, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from infra.compliance import INLINE_POLICY_RULES, acknowledge, nag_arn
from infra.constructs.create_job_retry import CreateJobRetry
from infra.constructs.input_check import RESOLVED_PATH, InputCheck
from infra.constructs.model_registration import ModelRegistration, registry_settings
from infra.constructs.model_registry import ModelPackageGroup
from infra.constructs.queued_training_job import QueuedTrainingJob, QueueTarget
from infra.constructs.sagemaker_task_policy import pass_role_statement
from infra.constructs.sdk_call_retry import retry_sagemaker_call
from infra.constructs.training_job_task import JobSecurity, TrainingJobTask
from infra.constructs.tuning_cost import TuningCost, prices_literal, report_with_cost
from infra.constructs.tuning_job_task import DescribeTrainingJobTask, TuningJobTask
from infra.images import FrameworkImages, TrainingImages
from smtrain.core import contract, prices
from smtrain.core.input_rules import Deployment, InputDefaults
from smtrain.core.instance_storage import has_local_nvme
from smtrain.core.programs import Program

Cond = sfn.Condition

#: Instance families with NVIDIA GPUs: script mode picks the framework's GPU image for them.
GPU_INSTANCE_FAMILIES = ("ml.p", "ml.g")

#: The variable that holds a job's InputDataConfig (see ``DescribeChannels``).
CHANNELS_VARIABLE = "channels"

#: Error names of the Fail states a failed job ends in.
TRAINING_FAILED_ERROR = contract.TRAINING_FAILED_ERROR
TUNING_FAILED_ERROR = contract.TUNING_FAILED_ERROR


@dataclass(frozen=True, kw_only=True)
class DeployedProgram:
    """A training program, where its packaged code lives and the role its jobs run as."""

    program: Program
    #: The execution role the program's jobs run as (its own: it may write only the program's
    #: models and checkpoints).
    role_arn: str
    #: A BYOC program's image in the project's repository.
    image_uri: str | None = None
    #: A script program's ``sourcedir.tar.gz`` (what ``sagemaker_submit_directory`` takes).
    source_uri: str | None = None
    #: The file name of that object (the last part of its key): its name in the ``code``
    #: channel under network isolation.
    source_file_name: str | None = None
    #: A built-in program's training image (which also serves its models): the algorithm's,
    #: for the region and version (``infra.images.builtin_image``). None: SageMaker XGBoost of
    #: the ``xgboostVersion`` setting (``TrainingImages.xgboost``), for an ``xgboost`` program only.
    builtin_image_uri: str | None = None
    #: A script program's framework images for the stack's region (its manifest's build, else
    #: the framework's settings); None: the stack's PyTorch images (``props.images``).
    framework_images: FrameworkImages | None = None

    def __post_init__(self) -> None:
        kind = self.program.kind
        if (kind == "byoc") != (self.image_uri is not None):
            raise ValueError(f"program {self.program.name}: an image URI goes with a byoc program")
        if (kind == "script") != (self.source_uri is not None):
            raise ValueError(f"program {self.program.name}: a source URI goes with a script program")
        if self.builtin_image_uri is not None and kind != "builtin":
            raise ValueError(f"program {self.program.name}: a built-in image goes with a builtin program")
        if kind == "builtin" and self.builtin_image_uri is None and self.program.algorithm != "xgboost":
            raise ValueError(f"program {self.program.name}: the {self.program.algorithm} image is needed")


@dataclass(frozen=True, kw_only=True)
class TrainingStateMachineProps:
    """Everything the state machine needs; see :class:`TrainingStateMachine`."""

    name_prefix: str
    region: str
    data_bucket: s3.IBucket
    artifacts_bucket: s3.IBucket
    key: kms.IKey
    images: TrainingImages
    programs: Sequence[DeployedProgram]
    input_defaults: InputDefaults
    allowed_instance_types: Sequence[str]
    max_instance_count: int
    spot_max_wait_seconds: int
    log_retention: logs.RetentionDays
    #: An MLflow tracking URI (a tracking server ARN) passed to every job; none by default.
    tracking_uri: str | None = None
    #: VPC, network isolation and the stack's tags on every job; none of them by default.
    security: JobSecurity = field(default_factory=JobSecurity)
    #: ``EnableInterContainerTrafficEncryption`` on every job with more than one instance.
    inter_container_encryption: bool = True
    #: The most instance-hours one execution may use (see ``smtrain/core/budget.py``); none: no cap.
    max_job_hours: float | None = None
    #: SageMaker's ``RetryStrategy.MaximumRetryAttempts`` (1-30) on every training job and tuning
    #: trial; none (the default): the tasks send no ``RetryStrategy`` (setting
    #: ``sagemakerRetryAttempts``; why off: ``contract.SAGEMAKER_RETRY_SETTING``).
    sagemaker_retry_attempts: int | None = None
    #: Seconds Step Functions reuses a data key of ``key`` for the execution data it encrypts
    #: (60-900; the CloudFormation default is 300).
    kms_data_key_reuse_seconds: int = 300
    #: Each program's model package group (every program needs one): where a run's model is
    #: registered (see ``ModelRegistration``).
    model_groups: Mapping[str, ModelPackageGroup] = field(default_factory=dict)
    #: The project's ECR repository (BYOC images), which a registered version may name.
    repository_arn: str | None = None
    #: The budget in money per execution (USD, setting ``maxRunCost``) and the on-demand USD/hour
    #: of each allowed instance type it is reckoned with; none (the default): no such budget.
    max_run_cost: float | None = None
    run_prices: Mapping[str, float] = field(default_factory=dict)
    #: The team queue training jobs wait in (setting ``queue: batch``); none (the default): each
    #: training run creates its job at once. Tuning jobs are never queued.
    queue: QueueTarget | None = None


class TrainingStateMachine(Construct):
    """A STANDARD, JSONPath state machine that trains (or tunes) with SageMaker.

    Guarantees:
    - the execution input is merged over defaults and checked before any job is created; a bad
      field ends the execution in the ``RejectInput`` Fail state with an error
      (``InvalidExecutionInput`` or ``UnknownMethod``) and a cause naming the field;
    - ``method`` picks the image (script: the program's framework image, GPU build on
      ``ml.p*``/``ml.g*`` where the framework has one, and a CPU instance type refused by name
      where it has only GPU builds; byoc: the project's image; builtin: the algorithm's image),
      hyperparameter defaults, and the program's own execution role (``DeployedProgram.role_arn``,
      the only roles the state machine may pass) with its model and checkpoint prefixes
      (``models/<program>/``, ``checkpoints/<program>/``);
    - a ``tuning`` object turns the run into a hyperparameter tuning job;
    - a job that fails ends the execution in ``TrainingFailed``/``TuningFailed`` with error
      ``TrainingJobFailed``/``TuningJobFailed`` and the job's failure in the cause;
    - the output names the (best) training job, its model artifact and its final metrics, and
      whether the model was registered (``ModelRegistration``: the quality gate, the version in
      the program's model package group, or why not);
    - logs (level ALL, execution data included) go to a KMS-encrypted log group named
      ``/aws/vendedlogs/states/<prefix>-training-<stack uuid>`` (retained) and traces to X-Ray;
    - the role holds exactly what the tasks render (see ``sagemaker_task_policy``), plus what
      CDK adds for logging and tracing.
    """

    def __init__(self, scope: Construct, construct_id: str, *,
                 props: TrainingStateMachineProps) -> None:
        super().__init__(scope, construct_id)
        if props.input_defaults.instance_type not in props.allowed_instance_types:
            raise ValueError("the default instance type must be in allowed_instance_types")
        if not props.programs:
            raise ValueError("the state machine needs at least one training program")
        if props.max_job_hours is not None and not props.max_job_hours > 0:
            raise ValueError(f"max_job_hours must be positive, got {props.max_job_hours!r}")
        missing = sorted({p.program.name for p in props.programs} - set(props.model_groups))
        if missing:
            raise ValueError(f"model_groups lacks a model package group for {missing}")
        self.props = props
        prefix = props.name_prefix

        reject = sfn.Fail(self, "RejectInput", error_path="$.rejection.error",
                          cause_path="$.rejection.cause")

        check_input = InputCheck(
            self, "InputChecks", programs={p.program.name: p.program for p in props.programs},
            deployment=Deployment(
                defaults=props.input_defaults.as_input(),
                allowed_instance_types=props.allowed_instance_types,
                max_instance_count=props.max_instance_count,
                max_runtime_seconds=props.input_defaults.max_runtime_seconds,
                max_job_hours=props.max_job_hours,
                queue="off" if props.queue is None else props.queue.kind,
                max_run_cost=props.max_run_cost,
                run_prices=props.run_prices if props.max_run_cost is not None else None),
            reject=reject)
        apply_defaults = sfn.Pass(self, "ApplyDefaults", parameters={
            "config.$": "States.JsonMerge(States.JsonMerge($.defaults, $.input, false), "
                        f"{RESOLVED_PATH}, false)",
            "run": {"id.$": "States.UUID()"},
        })

        resolve_job = sfn.Pass(self, "ResolveJob", parameters=_resolve_job_parameters())
        choose_distribution = sfn.Choice(self, "ChooseDistribution")
        # Traffic between a job's instances is encrypted when there is any (setting
        # interContainerTrafficEncryption, default on): "Enabling inter-container traffic
        # encryption ... can increase training time" (API reference,
        # EnableInterContainerTrafficEncryption), so a single instance goes without it.
        choose_distribution.when(
            Cond.number_greater_than("$.config.instanceCount", 1),
            sfn.Pass(self, "DistributeAcrossInstances", result_path="$.distribution",
                     parameters={"hyperparameters.$": "$.method.distributedHyperparameters",
                                 "encryptInterContainerTraffic": props.inter_container_encryption})
            .next(resolve_job))
        choose_distribution.otherwise(
            sfn.Pass(self, "RunOnOneInstance", result_path="$.distribution",
                     result=sfn.Result.from_object({"hyperparameters": {},
                                                    "encryptInterContainerTraffic": False}))
            .next(resolve_job))
        choose_program = sfn.Choice(self, "ChooseProgram")
        for deployed in props.programs:
            program = deployed.program
            prepares = self._prepare_states(deployed)
            for prepare in prepares.values():
                prepare.next(choose_distribution)
            condition = Cond.string_equals("$.config.program", program.name)
            gpu_types = [t for t in props.allowed_instance_types
                         if t.startswith(GPU_INSTANCE_FAMILIES)]
            on_gpu = (Cond.or_(*[Cond.string_equals("$.config.instanceType", t) for t in gpu_types])
                      if len(gpu_types) > 1 else
                      Cond.string_equals("$.config.instanceType", gpu_types[0]) if gpu_types
                      else None)

            def refuse(suffix: str, cause: str, program: Program = program) -> sfn.Pass:
                return sfn.Pass(self, f"Refuse{_state_id(program.name)}{suffix}",
                                result_path="$.rejection", result=sfn.Result.from_object({
                                    "error": contract.INVALID_INPUT_ERROR, "cause": cause}))

            if program.kind == "script" and program.framework == "sklearn" and on_gpu is not None:
                # The SDK's SKLearn estimator refuses GPU instance types
                # (sklearn/estimator.py, SKLearn.__init__: _validate_not_gpu_instance_type): AWS
                # builds its image for the CPU only. (More than one instance is the input rules'
                # to refuse: smtrain.core.input_rules, a script's distribution.)
                choose_image = sfn.Choice(self, f"Choose{_state_id(program.name)}Image")
                cpu_types = [t for t in props.allowed_instance_types if t not in gpu_types]
                choose_image.when(on_gpu, refuse("OnGpu", (
                    f"instanceType: program {program.name} runs on sklearn, which trains on "
                    f"CPU instances only: choose one of {', '.join(cpu_types)}")).next(reject))
                choose_image.otherwise(prepares["default"])
                choose_program.when(condition, choose_image)
            elif program.kind == "script" and "default" not in prepares:
                choose_image = sfn.Choice(self, f"Choose{_state_id(program.name)}Image")
                if on_gpu is not None:
                    choose_image.when(on_gpu, prepares["gpu"])
                if "cpu" in prepares:
                    choose_image.otherwise(prepares["cpu"])
                else:
                    # A framework with GPU training images only (Hugging Face): a CPU instance
                    # type has no image to run, as the SDK's estimator refuses it
                    # (image_uris.retrieve: "Unsupported processor: cpu").
                    choose_image.otherwise(refuse("OnCpu", (
                        f"instanceType: program {program.name} runs on {program.framework}, "
                        f"whose training images are GPU builds only: choose one of "
                        f"{', '.join(gpu_types)}")).next(reject))
                choose_program.when(condition, choose_image)
            else:
                choose_program.when(condition, prepares["default"])
        # Unreachable after validation; kept so the Choice never fails with States.NoChoiceMatched.
        choose_program.otherwise(reject)

        # InputDataConfig from the program's channels: each channel the input or the program's
        # defaults give a URI, in the manifest's order, with its declared content type. Assigned
        # to a variable (the tasks read $channels), so JSONata never rewrites the state's numbers.
        # Under network isolation a script program's code is one more channel (method.codeChannels;
        # see _prepare_states).
        # Each channel's delivery is the program's (options) with the run's channelOptions over
        # it; a File channel sends no InputMode (the job's TrainingInputMode, File, applies:
        # API reference, Channel.InputMode) and an uncompressed one no CompressionType ("In
        # File mode, leave this field unset": Channel.CompressionType), so that a run that
        # changes nothing sends the request it always sent. JSONata leaves out a key whose
        # value is undefined.
        describe_channels = sfn.Pass.jsonata(self, "DescribeChannels", assign={CHANNELS_VARIABLE: (
            "{% $append([$states.input.method.channels[$exists($lookup($states.input.inputs, name))].("
            f"$o := $merge([options, $lookup($states.input.config.{contract.CHANNEL_OPTIONS}, name)]); "
            "{'ChannelName': name, 'ContentType': contentType, "
            f"'InputMode': $o.{contract.INPUT_MODE} != '{contract.DEFAULT_INPUT_MODE}' "
            f"? $o.{contract.INPUT_MODE}, "
            f"'CompressionType': $o.{contract.COMPRESSION} != '{contract.DEFAULT_COMPRESSION}' "
            f"? $o.{contract.COMPRESSION}, "
            "'DataSource': {'S3DataSource': {"
            "'S3DataType': 'S3Prefix', 'S3Uri': $lookup($states.input.inputs, name), "
            f"'S3DataDistributionType': $o.{contract.S3_DATA_DISTRIBUTION}}}}}}})], "
            "$states.input.method.codeChannels) %}")})
        choose_volume_key = self._volume_encryption()
        choose_capacity = sfn.Choice(self, "ChooseCapacity")
        use_spot = sfn.Pass(self, "UseSpotCapacity", result_path="$.stopping", parameters={
            "MaxRuntimeInSeconds.$": "$.config.maxRuntimeInSeconds",
            "MaxWaitTimeInSeconds": props.spot_max_wait_seconds,
        })
        use_on_demand = sfn.Pass(self, "UseOnDemandCapacity", result_path="$.stopping", parameters={
            "MaxRuntimeInSeconds.$": "$.config.maxRuntimeInSeconds",
        })
        choose_capacity.when(Cond.boolean_equals("$.config.spot", True), use_spot)
        choose_capacity.otherwise(use_on_demand)
        train_or_tune = sfn.Choice(self, "TrainOrTune")
        use_spot.next(train_or_tune)
        use_on_demand.next(train_or_tune)

        # Each program's jobs run as its own role and write under its own prefixes, which the
        # program's Prepare state sets ($.method: roleArn, outputUri, checkpointUri).
        role_arns = [p.role_arn for p in props.programs]
        self.training_task = TrainingJobTask(
            self, "TrainModel", name_prefix=prefix, role_arns=role_arns, kms_key_arn=props.key.key_arn,
            tracking_uri=props.tracking_uri, security=props.security,
            sagemaker_retries=props.sagemaker_retry_attempts,
        )
        self.tuning_task = TuningJobTask(
            self, "TuneModel", name_prefix=prefix, role_arns=role_arns, checkpoints=True,
            kms_key_arn=props.key.key_arn,
            tracking_uri=props.tracking_uri, security=props.security,
            sagemaker_retries=props.sagemaker_retry_attempts,
        )
        # Built-in XGBoost resumes from whatever its checkpoint directory holds, and a tuning
        # job's trials share one checkpoint URI: its trials get none (a trial interrupted on spot
        # starts again from the beginning).
        self.builtin_tuning_task = TuningJobTask(
            self, "TuneBuiltinModel", name_prefix=prefix, role_arns=role_arns, checkpoints=False,
            kms_key_arn=props.key.key_arn, tracking_uri=props.tracking_uri,
            security=props.security, sagemaker_retries=props.sagemaker_retry_attempts,
        )
        self.describe_best = DescribeTrainingJobTask(
            self, "DescribeBestTrainingJob", name_prefix=prefix,
            job_name_path="$.tuningResult.BestTrainingJob.TrainingJobName", result_path="$.best",
        )

        training_failed = self._failure("Training", TRAINING_FAILED_ERROR)
        tuning_failed = self._failure("Tuning", TUNING_FAILED_ERROR)
        # With the team queue a training run's job waits in AWS Batch instead (the request is
        # the same); the TrainModel task stays the request's one owner but is not in the graph.
        self.queued_training: QueuedTrainingJob | None = None
        if props.queue is not None:
            self.queued_training = QueuedTrainingJob(
                self, "TeamQueue", name_prefix=prefix, request=self.training_task.request,
                queue_arns=props.queue.queue_arns, fair_share=props.queue.fair_share,
                failure=training_failed, tags=props.security.tags)
        else:
            CreateJobRetry(self, "TrainingRetry", task=self.training_task, failure=training_failed,
                           label="Training")
        CreateJobRetry(self, "TuningRetry", task=self.tuning_task, failure=tuning_failed,
                       label="Tuning")
        CreateJobRetry(self, "BuiltinTuningRetry", task=self.builtin_tuning_task,
                       failure=tuning_failed, label="BuiltinTuning")
        self.describe_best.add_catch(tuning_failed, errors=["States.ALL"], result_path="$.failure")

        self.registration = ModelRegistration(
            self, "Registration", artifacts_bucket=props.artifacts_bucket, key=props.key,
            version_arns=[props.model_groups[p.program.name].versions_arn() for p in props.programs],
            tracking_uri=None if props.security.network_isolation else props.tracking_uri,
            repository_arn=props.repository_arn)
        report_training = sfn.Pass(self, "ReportTraining", result_path="$.report", parameters={
            "program.$": "$.config.program",
            "trainingJobName.$": "$.training.TrainingJobName",
            "modelArtifacts.$": "$.training.ModelArtifacts",
            "metrics.$": "$.training.FinalMetricDataList",
        })
        report_tuning = sfn.Pass(self, "ReportTuning", result_path="$.report", parameters={
            "program.$": "$.config.program",
            "tuningJobName.$": "$.tuningResult.HyperParameterTuningJobName",
            "tuningJobStatus.$": "$.tuningResult.HyperParameterTuningJobStatus",
            "trainingJobCounters.$": "$.tuningResult.TrainingJobStatusCounters",
            "trainingJobName.$": "$.tuningResult.BestTrainingJob.TrainingJobName",
            "objective.$": "$.tuningResult.BestTrainingJob.FinalHyperParameterTuningJobObjectiveMetric",
            "tunedHyperparameters.$": "$.tuningResult.BestTrainingJob.TunedHyperParameters",
            "modelArtifacts.$": "$.best.ModelArtifacts",
            "metrics.$": "$.best.FinalMetricDataList",
        })

        apply_tuning_defaults = sfn.Pass(self, "ApplyTuningDefaults", result_path="$.tuning",
                                         parameters={"config.$": "States.JsonMerge("
                                                     "$.method.tuningDefaults, $.config.tuning, false)"})
        choose_strategy = self._tuning_job_configs()
        # What the tuning job's training jobs cost in all (infra/constructs/tuning_cost.py).
        self.tuning_cost = TuningCost(self, "TuningCost", name_prefix=prefix,
                                      run_prices=props.run_prices, after=self.registration.start)
        self.tuning_task.next(self.describe_best).next(report_tuning).next(self.tuning_cost.start)
        self.builtin_tuning_task.next(self.describe_best)

        # Two Choices, not And(IsPresent, IsNotNull): a rule on a missing path is a runtime
        # error, and nothing promises the And is evaluated lazily.
        tuning_given = sfn.Choice(self, "TuningGiven")
        train: sfn.State = self.training_task
        if self.queued_training is not None:
            train = self.queued_training.start
            self.queued_training.next(report_training)
        else:
            self.training_task.next(report_training)
        # What the job cost, in the run's output (``cost``): one JSONata function of the job's
        # description and the prices fixed at synth, the text smtrain's CLI evaluates too. The
        # description is asked for again here (DescribeTrainingJob, which the role may call on
        # the project's jobs for .sync already): the training task keeps only a few of its fields,
        # and its billable time and ResourceConfig are not required members of the answer
        # (botocore's model), which a JSONPath selector would fail on where they are missing.
        # Should the call fail, the run goes on, its cost unknown (and why).
        with_cost = report_with_cost(f"({prices.JOB_COST_FUNCTION})($states.result, "
                                     f"{prices_literal(props.run_prices)})")
        without_cost = report_with_cost("{'usd': null, 'error': $states.errorOutput.Error}")
        reckon_cost = sfn.CustomState(self, "ReckonCost", state_json={
            "Type": "Task", "QueryLanguage": "JSONata",
            "Comment": "What the training job cost: its billable time x instances x the on-demand "
                       "price of its type (smtrain/core/prices.py; usd null when unknown)",
            "Resource": "arn:aws:states:::aws-sdk:sagemaker:describeTrainingJob",
            "Arguments": {"TrainingJobName": "{% $states.input.training.TrainingJobName %}"},
            "Output": with_cost,
            # Written here, with its Output: CDK renders a CustomState's catcher as JSONPath.
            "Catch": [{"ErrorEquals": ["States.ALL"], "Output": without_cost,
                       "Next": self.registration.start.state_id}],
        })
        retry_sagemaker_call(reckon_cost)
        report_training.next(reckon_cost).next(self.registration.start)
        tuning_given.when(Cond.is_null("$.config.tuning"), train)
        tuning_given.otherwise(apply_tuning_defaults.next(choose_strategy))
        train_or_tune.when(Cond.is_present("$.config.tuning"), tuning_given)
        train_or_tune.otherwise(train)

        resolve_job.next(describe_channels).next(choose_volume_key)
        # A warm pool (input keepAliveSeconds > 0; the deployment's default is 0): SageMaker
        # keeps the job's instances for a matching next job (ResourceConfig.KeepAlivePeriodInSeconds;
        # the input rules refuse it with spot and with tuning).
        keep_warm = sfn.Pass(self, "KeepInstancesWarm", input_path=f"$.config.{contract.KEEP_ALIVE}",
                             result_path="$.resources.KeepAlivePeriodInSeconds")
        choose_warm_pool = sfn.Choice(self, "ChooseWarmPool")
        choose_warm_pool.when(Cond.number_greater_than(f"$.config.{contract.KEEP_ALIVE}", 0),
                              keep_warm.next(choose_capacity))
        choose_warm_pool.otherwise(choose_capacity)
        for state in self._volume_states:
            state.next(choose_warm_pool)
        definition = check_input.then(apply_defaults.next(choose_program))

        # The execution history outlives the stack (an audit trail of every run's input and
        # output): the group is retained on delete. Its name ends in the stack's own id, so a
        # stack deployed again after a destroy makes a new group instead of colliding with the
        # retained one (a fixed name would block that deploy), and it stays under the key policy's
        # log group prefix (/aws/vendedlogs/states/<prefix>-).
        stack_uuid = Fn.select(2, Fn.split("/", Stack.of(self).stack_id))
        self.log_group = logs.LogGroup(
            self, "Logs",
            log_group_name=Fn.join("", [f"/aws/vendedlogs/states/{prefix}-training-", stack_uuid]),
            encryption_key=props.key,
            retention=props.log_retention,
            removal_policy=RemovalPolicy.RETAIN,
        )
        self.state_machine_name = f"{prefix}-training"
        self.state_machine = sfn.StateMachine(
            self, "StateMachine",
            state_machine_name=self.state_machine_name,
            state_machine_type=sfn.StateMachineType.STANDARD,
            definition_body=sfn.DefinitionBody.from_chainable(definition),
            logs=sfn.LogOptions(destination=self.log_group, level=sfn.LogLevel.ALL,
                                include_execution_data=True),
            tracing_enabled=True,
            comment="Creates SageMaker training and tuning jobs from an execution input",
        )
        self._encrypt_execution_data()
        self._trust_only_this_state_machine()
        self._acknowledge_role_findings()
        for statement in _unique_statements(
            Stack.of(self),
            [*(self.queued_training.policy_statements if self.queued_training is not None
               else self.training_task.policy_statements),
             pass_role_statement(role_arns), *self.tuning_task.policy_statements,
             *self.builtin_tuning_task.policy_statements,
             *self.describe_best.policy_statements, *self.tuning_cost.policy_statements,
             *self.registration.policy_statements],
        ):
            self.state_machine.add_to_role_policy(statement)

    def _encrypt_execution_data(self) -> None:
        """Execution data (inputs, outputs, history) encrypted with the stack key instead of an
        AWS-owned key (Step Functions developer guide, "Data at rest encryption").

        Not CDK's ``CustomerManagedEncryptionConfiguration``: it also puts ``kms:Decrypt*``, a
        wildcard action, for ``delivery.logs.amazonaws.com`` into the key's policy. The key
        policy's statement for log delivery is the storage stack's (``TrainingDataKey``); here
        the role gets what the guide lists: ``kms:Decrypt`` and ``kms:GenerateDataKey`` under
        the encryption context of this state machine's ARN, and ``kms:GenerateDataKey`` for
        the log delivery of its encrypted execution data (encryption context ``SourceArn``:
        CloudWatch Logs of this account and region)."""
        props = self.props
        stack = Stack.of(self)
        cfn = self.state_machine.node.default_child
        assert isinstance(cfn, sfn.CfnStateMachine)
        cfn.encryption_configuration = sfn.CfnStateMachine.EncryptionConfigurationProperty(
            type="CUSTOMER_MANAGED_KMS_KEY", kms_key_id=props.key.key_arn,
            kms_data_key_reuse_period_seconds=props.kms_data_key_reuse_seconds)
        state_machine_arn = self._own_arn()
        self.state_machine.add_to_role_policy(iam.PolicyStatement(
            actions=["kms:Decrypt", "kms:GenerateDataKey"], resources=[props.key.key_arn],
            conditions={"StringEquals": {
                "kms:EncryptionContext:aws:states:stateMachineArn": state_machine_arn}}))
        self.state_machine.add_to_role_policy(iam.PolicyStatement(
            actions=["kms:GenerateDataKey"], resources=[props.key.key_arn],
            conditions={"StringEquals": {"kms:EncryptionContext:SourceArn": stack.format_arn(
                service="logs", resource="*", arn_format=ArnFormat.NO_RESOURCE_NAME)}}))

    def _own_arn(self) -> str:
        """The state machine's ARN from its name (fixed), not the resource: a policy of the role
        that read the state machine's own ARN would make the state machine depend on its role's
        policy twice."""
        return Stack.of(self).format_arn(service="states", resource="stateMachine",
                                         resource_name=self.state_machine_name,
                                         arn_format=ArnFormat.COLON_RESOURCE_NAME)

    def _trust_only_this_state_machine(self) -> None:
        """The role CDK makes trusts ``states.amazonaws.com`` for any state machine of the
        account and region (``aws:SourceArn`` ``stateMachine:*``); this one is assumed for this
        state machine only (the confused deputy: IAM User Guide, "The confused deputy problem";
        Step Functions names its state machine as ``aws:SourceArn``)."""
        cfn_role = self.state_machine.role.node.default_child
        assert isinstance(cfn_role, iam.CfnRole)
        trust = Stack.of(self).resolve(cfn_role.assume_role_policy_document)
        (statement,) = trust["Statement"]
        assert "aws:SourceArn" in statement.get("Condition", {}).get("ArnLike", {}), statement
        cfn_role.add_property_override(
            "AssumeRolePolicyDocument.Statement.0.Condition.ArnLike.aws:SourceArn", self._own_arn())

    def _acknowledge_role_findings(self) -> None:
        stack = Stack.of(self)
        default_policy = self.state_machine.role.node.find_child("DefaultPolicy")
        acknowledge(
            default_policy, INLINE_POLICY_RULES,
            "CDK's StateMachine puts the logging and tracing grants it derives into the role's "
            "default policy; the policy belongs to this one role, and tests assert its exact "
            "action set.",
        )
        acknowledge(
            default_policy, "AwsSolutions-IAM5",
            "'*' only where the services allow no resource: CloudWatch Logs delivery and X-Ray "
            "actions added by CDK for logging and tracing, and sagemaker:ListTags as the Step "
            "Functions guide grants it for .sync. Job ARNs end in <prefix>-* because every job "
            "name is generated per execution under the project's prefix. Model package ARNs end "
            "in <group>/* because SageMaker numbers a group's versions itself; quality reports "
            "are one object per execution under model-quality/, and a version's model is one "
            "object under models/ (read only)." + (
                " With the team queue: batch:DescribeServiceJob takes no resource, a service "
                "job's ARN ends in the id Batch gives it (service-job/*), and Batch names the "
                "SageMaker job it starts AWSBatch<prefix><attempt id> (describe only)."
                if self.queued_training is not None else ""),
            applies_to=[
                "Resource::*",
                *(f"Resource::{nag_arn(stack, resource)}"
                  for statement in (*self.training_task.policy_statements[:1],
                                    *self.tuning_task.policy_statements[:1],
                                    *(self.queued_training.policy_statements
                                      if self.queued_training is not None else []))
                  for resource in statement.resources if "*" in json.dumps(stack.resolve(resource))),
                *(f"Resource::{nag_arn(stack, resource)}"
                  for statement in self.registration.policy_statements
                  for resource in statement.resources if "*" in json.dumps(stack.resolve(resource))),
            ],
        )

    def _prepare_states(self, deployed: DeployedProgram) -> dict[str, sfn.Pass]:
        """One Pass per image variant that records the program's static settings at ``$.method``."""
        props = self.props
        program = deployed.program
        data = props.data_bucket.bucket_name
        artifacts = props.artifacts_bucket.bucket_name
        fixed: dict[str, str] = {}
        distributed: dict[str, str] = {}
        images: dict[str, str]
        code_channels: list[dict[str, Any]] = []
        inference_images: dict[str, str]
        inference_environment: dict[str, str] = {}
        code: str
        if program.kind == "script":
            assert deployed.source_uri is not None and program.entry_point is not None
            framework = program.framework or "pytorch"
            # What every SDK framework estimator sends (sagemaker-python-sdk v2,
            # src/sagemaker/estimator.py, Framework._prepare_for_training and
            # Framework.hyperparameters: sagemaker_program, sagemaker_submit_directory,
            # sagemaker_container_log_level, sagemaker_region), read by the training toolkit every
            # framework image runs (sagemaker-training-toolkit, params.py). The SKLearn, XGBoost
            # and HuggingFace estimators add nothing to them (sklearn/estimator.py,
            # xgboost/estimator.py, huggingface/estimator.py: only distribution settings, which
            # the stack sends from the program's distribution, below). The XGBoost image runs the script instead of
            # the built-in algorithm because sagemaker_program is set (sagemaker-xgboost-container,
            # training.py: user_entry_point).
            fixed = {
                "sagemaker_program": program.entry_point,
                "sagemaker_submit_directory": deployed.source_uri,
                "sagemaker_region": props.region,
                "sagemaker_container_log_level": "20",
            }
            if framework == "tensorflow":
                # TensorFlow.hyperparameters (tensorflow/estimator.py) always adds model_dir,
                # which the TensorFlow toolkit passes to the script as --model_dir: by default
                # s3://<output path>/<job name>/model (_default_s3_path), "/opt/ml/model" under
                # MPI. The stack sends the local directory, whose contents SageMaker uploads as
                # model.tar.gz (SM_MODEL_DIR): a job name is not known at synth, and a tuning
                # job would share one S3 prefix across all its trials.
                fixed["model_dir"] = f"{contract.CONTAINER_BASE_DIR}/model"
            if props.security.network_isolation:
                # An isolated container cannot download its code: it arrives as the "code"
                # channel and the toolkit extracts it from there (what the SageMaker Python SDK
                # does; smtrain/core/contract.py, CODE_CHANNEL). An S3Prefix channel whose URI is one
                # object's key holds that one object, under its file name.
                assert deployed.source_file_name is not None
                fixed["sagemaker_submit_directory"] = contract.code_channel_file(
                    deployed.source_file_name)
                code_channels = [{
                    "ChannelName": contract.CODE_CHANNEL,
                    "DataSource": {"S3DataSource": {
                        "S3DataType": "S3Prefix", "S3Uri": deployed.source_uri,
                        "S3DataDistributionType": "FullyReplicated"}},
                }]
            # With more than one instance, the program's distribution (the manifest's, else
            # its framework's default; smtrain.core.contract.DISTRIBUTIONS, with the SDK
            # sources). PyTorch's and Hugging Face's default, torch_distributed: one distributed
            # job over all instances (and all GPUs of each); the PyTorch toolkit reads the
            # additional framework parameter (JSON-decoded) and starts torchrun --nnodes
            # <instances> --nproc_per_node <GPUs, 1 on CPU> on every host, master algo-1
            # (PyTorch.LAUNCH_TORCH_DISTRIBUTED_ENV_NAME; sagemaker_training/torch_distributed.py).
            # A single instance keeps the plain launcher (the SDK accepts torch_distributed on
            # GPU and Trainium only). A program with no distribution never gets here with more
            # than one instance: the input rules refuse the run.
            distributed = dict(contract.DISTRIBUTION_HYPERPARAMETERS[program.distribution]
                               if program.distribution else {})
            built = deployed.framework_images or FrameworkImages(
                training_cpu=props.images.pytorch_cpu, training_gpu=props.images.pytorch_gpu,
                inference=props.images.pytorch_inference_cpu)
            if built.training_gpu is None or built.training_gpu == built.training_cpu:
                # One image for every instance type (scikit-learn: CPU only; XGBoost: one image).
                assert built.training_cpu is not None
                images = {"default": built.training_cpu}
            elif built.training_cpu is None:
                images = {"gpu": built.training_gpu}
            else:
                images = {"cpu": built.training_cpu, "gpu": built.training_gpu}
            # The model serves on the framework's inference image of the same build, which
            # imports code/<entry point> from the model archive: what the SageMaker Python SDK's
            # PyTorchModel sets for code repacked into the model (Model._script_mode_env_vars:
            # SAGEMAKER_PROGRAM, SAGEMAKER_SUBMIT_DIRECTORY /opt/ml/model/code, log level, region).
            # The CPU image for both variants: the handler serves on the CPU on any instance.
            inference_images = {variant: built.inference for variant in images}
            inference_environment = {
                "SAGEMAKER_PROGRAM": program.serving.entry_point,
                "SAGEMAKER_SUBMIT_DIRECTORY": contract.MODEL_CODE_DIR,
                "SAGEMAKER_CONTAINER_LOG_LEVEL": "20",
                "SAGEMAKER_REGION": props.region,
            }
            assert deployed.source_file_name is not None
            code = deployed.source_file_name
        elif program.kind == "byoc":
            assert deployed.image_uri is not None
            images = {"default": deployed.image_uri}
            # The same image serves: SageMaker runs it with the argument "serve".
            inference_images = images
            code = deployed.image_uri
        else:
            image = deployed.builtin_image_uri or props.images.xgboost
            images = {"default": image}
            # A built-in algorithm's image also serves the models it trains.
            inference_images = images
            code = image
        states = {}
        for variant, image in images.items():
            # A tuning job's HyperParameterAlgorithmSpecification takes only TrainingImage,
            # TrainingInputMode, AlgorithmName and MetricDefinitions (botocore's model).
            tuning_algorithm: dict[str, Any] = {"TrainingImage": image,
                                                "TrainingInputMode": contract.DEFAULT_INPUT_MODE}
            if program.metric_definitions:
                tuning_algorithm["MetricDefinitions"] = [dict(m) for m in program.metric_definitions]
            algorithm = dict(tuning_algorithm)
            if program.metric_definitions:
                algorithm["EnableSageMakerMetricsTimeSeries"] = True
            suffix = "" if variant == "default" else variant.capitalize()
            states[variant] = sfn.Pass(
                self, f"Prepare{_state_id(program.name)}{suffix}",
                result_path="$.method",
                result=sfn.Result.from_object({
                    "kind": program.kind,
                    "roleArn": deployed.role_arn,
                    "outputUri": f"s3://{artifacts}/{contract.program_models_prefix(program.name)}",
                    "checkpointUri": f"s3://{artifacts}/{contract.program_checkpoints_prefix(program.name)}",
                    "algorithm": algorithm,
                    "tuningAlgorithm": tuning_algorithm,
                    "channels": [{"name": c.name, "contentType": c.content_type,
                                  "options": c.options()} for c in program.channels],
                    "codeChannels": code_channels,
                    "baseHyperparameters": program.always_sent,
                    "trainingDefaults": program.training_defaults,
                    "fixedHyperparameters": fixed,
                    "distributedHyperparameters": distributed,
                    "inputDefaults": {
                        c.name: contract.default_channel_uri(data, program.name, c.name)
                        for c in program.channels if c.required
                    },
                    "tuningDefaults": program.tuning.as_input() if program.tuning else {},
                    "registry": registry_settings(
                        group_name=props.model_groups[program.name].name(),
                        image=inference_images[variant], environment=inference_environment,
                        content_types=program.serving.content_types,
                        response_types=program.serving.response_types, code=code),
                }),
            )
        return states

    def _volume_encryption(self) -> sfn.State:
        """``$.resources``: SageMaker's ``ResourceConfig``, with ``VolumeKmsKeyId`` (the stack key)
        on instance types without local storage and never on those with it, which SageMaker
        refuses (smtrain/core/instance_storage.py). The states are kept in :attr:`_volume_states`."""
        props = self.props
        resources = {
            "InstanceType.$": "$.config.instanceType",
            "InstanceCount.$": "$.config.instanceCount",
            "VolumeSizeInGB.$": "$.config.volumeSizeInGB",
        }
        local = [t for t in props.allowed_instance_types if has_local_nvme(t)]
        states: list[sfn.Pass] = []
        if len(local) < len(props.allowed_instance_types):
            states.append(sfn.Pass(self, "EncryptVolumeWithStackKey", result_path="$.resources",
                                   parameters={**resources, "VolumeKmsKeyId": props.key.key_arn}))
        if local:
            states.append(sfn.Pass(self, "UseEncryptedInstanceStore", result_path="$.resources",
                                   parameters=resources))
        self._volume_states = states
        if len(states) == 1:
            return states[0]
        encrypt, instance_store = states
        conditions = [Cond.string_equals("$.config.instanceType", t) for t in local]
        choose = sfn.Choice(self, "ChooseVolumeEncryption")
        choose.when(conditions[0] if len(conditions) == 1 else Cond.or_(*conditions),
                    instance_store)
        choose.otherwise(encrypt)
        return choose

    def _tuning_job_configs(self) -> sfn.Choice:
        """A Choice on the strategy that builds SageMaker's ``HyperParameterTuningJobConfig`` at
        ``$.tuning.job`` and goes on to the tuning task.

        Grid search sends no ``MaxNumberOfTrainingJobs`` (the grid decides it); Hyperband sends
        ``StrategyConfig.HyperbandStrategyConfig`` with the input's ``tuning.hyperband`` resources
        (checked by the input rules), which SageMaker allows only with Hyperband (API reference,
        ``HyperParameterTuningJobConfig.StrategyConfig``).
        """
        config = "$.tuning.config"
        common = {
            "Strategy.$": f"{config}.strategy",
            "HyperParameterTuningJobObjective": {
                "MetricName.$": f"{config}.objective.metricName",
                "Type.$": f"{config}.objective.type",
            },
            "ParameterRanges.$": f"{config}.parameterRanges",
            "TrainingJobEarlyStoppingType.$": f"{config}.earlyStopping",
        }
        limits = {"MaxNumberOfTrainingJobs.$": f"{config}.maxJobs",
                  "MaxParallelTrainingJobs.$": f"{config}.maxParallelJobs"}
        grid = sfn.Pass(self, "ConfigureGridSearch", result_path="$.tuning.job", parameters={
            **common, "ResourceLimits": {"MaxParallelTrainingJobs.$": f"{config}.maxParallelJobs"},
        })
        search = sfn.Pass(self, "ConfigureSearch", result_path="$.tuning.job",
                          parameters={**common, "ResourceLimits": limits})
        hyperband = sfn.Pass(self, "ConfigureHyperband", result_path="$.tuning.job", parameters={
            **common, "ResourceLimits": limits,
            "StrategyConfig": {"HyperbandStrategyConfig": {
                "MinResource.$": f"{config}.hyperband.minResource",
                "MaxResource.$": f"{config}.hyperband.maxResource",
            }},
        })
        choose_task = sfn.Choice(self, "ChooseTuningTask")
        choose_task.when(Cond.string_equals("$.method.kind", "builtin"), self.builtin_tuning_task)
        choose_task.otherwise(self.tuning_task)
        choose = sfn.Choice(self, "ChooseTuningStrategy")
        choose.when(Cond.string_equals(f"{config}.strategy", "Grid"), grid)
        choose.when(Cond.string_equals(f"{config}.strategy", "Hyperband"), hyperband)
        choose.otherwise(search)
        for state in (grid, search, hyperband):
            state.next(choose_task)
        return choose

    def _failure(self, kind: str, error: str) -> sfn.Chain:
        """A Pass that formats ``$.failure`` into one cause line, then a Fail state."""
        explain = sfn.Pass(self, f"Explain{kind}Failure", result_path="$.failureReport", parameters={
            "cause.$": "States.Format('{}: {}', $.failure.Error, $.failure.Cause)",
        })
        return explain.next(sfn.Fail(self, f"{kind}Failed", error=error,
                                     cause_path="$.failureReport.cause"))


def _state_id(program: str) -> str:
    """``digits_mlp`` -> ``DigitsMlp``, for state and construct names."""
    return contract.output_id(program)


def _resolve_job_parameters() -> dict[str, Any]:
    """Hyperparameters merged in order: base < training defaults < user input < fixed (with the
    distribution's, when there is more than one instance)."""
    fixed = ("States.JsonMerge($.method.fixedHyperparameters, $.distribution.hyperparameters, "
             "false)")
    base_and_user = ("States.JsonMerge($.method.baseHyperparameters, $.config.hyperparameters, "
                     "false)")
    with_training_defaults = (
        "States.JsonMerge(States.JsonMerge($.method.baseHyperparameters, "
        "$.method.trainingDefaults, false), $.config.hyperparameters, false)"
    )
    split = "States.StringSplit($.run.id, '-')"
    return {
        "config.$": "$.config",
        "method.$": "$.method",
        "encryptInterContainerTraffic.$": "$.distribution.encryptInterContainerTraffic",
        "attempt": {"number": 0},
        "run": {
            "id.$": "$.run.id",
            "shortId.$": f"States.Format('{{}}{{}}', States.ArrayGetItem({split}, 0), "
                         f"States.ArrayGetItem({split}, 1))",
        },
        "inputs.$": "States.JsonMerge($.method.inputDefaults, $.config.inputs, false)",
        "trainingHyperparameters.$": f"States.JsonMerge({with_training_defaults}, {fixed}, false)",
        "staticHyperparameters.$": f"States.JsonMerge({base_and_user}, {fixed}, false)",
    }


def _unique_statements(stack: Stack,
                       statements: Sequence[iam.PolicyStatement]) -> list[iam.PolicyStatement]:
    seen: dict[str, iam.PolicyStatement] = {}
    for statement in statements:
        key = json.dumps(stack.resolve(statement.to_statement_json()), sort_keys=True)
        seen.setdefault(key, statement)
    return list(seen.values())

