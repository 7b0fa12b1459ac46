"""The states that end a successful run: the quality gate, the model-quality report and the
model package version in the program's group."""

from __future__ import annotations

from aws_cdk import Duration, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from infra.constructs.sdk_call_retry import retry_sagemaker_call
from smtrain.core import contract
from smtrain.core.registration import GATE_VARIABLE, gate_expression

Cond = sfn.Condition

#: Where the states find what they need of the program (``$.method.registry``, set by each
#: program's Prepare state: see :func:`registry_settings`).
REGISTRY_PATH = "$.method.registry"
#: ``$.report``: what the run's output says of the job (the Report states write it).
REPORT_PATH = "$.report"


def registry_settings(*, group_name: str, image: str, environment: dict[str, str],
                      content_types: tuple[str, ...], response_types: tuple[str, ...],
                      code: str) -> dict[str, object]:
    """A program's ``$.method.registry``: its group's name, the inference container and the code
    identity recorded in the version's metadata."""
    return {"group": group_name, "image": image, "environment": environment,
            "contentTypes": list(content_types), "responseTypes": list(response_types),
            "code": code}


class ModelRegistration(Construct):
    """Registers the run's model as a version of its program's model package group, if the
    input asks for it (``config.register.enabled``, resolved by the input check) and the model
    meets the gate (``register.minimum``/``maximum`` over the job's final metrics).

    Guarantees:
    - :attr:`start` decides; every path ends in :attr:`end` with the output: the ``$.report``
      fields plus ``registered`` (bool) and ``registrationReason`` (why, or why not: a metric
      below its minimum, above its maximum or never reported, or registration not asked for),
      and when registered ``modelPackageArn`` and ``modelPackageGroup``;
    - a registered version carries: the program's inference container (image, environment) with
      the job's ``ModelArtifacts`` as ``ModelDataUrl``; the job's final metrics as a model-quality
      report (``s3://<artifacts>/model-quality/<training job>.json``, ``ModelMetrics.ModelQuality``;
      the project's own JSON, not Model Monitor's, so Studio's model-quality view shows nothing);
      customer metadata (execution, program, training job, code identity, hyperparameters
      ``hp:<name>`` without the framework's ``sagemaker_*``, MLflow tracking URI and experiment
      when tracked); ``MetadataProperties.GeneratedBy`` the execution ARN; approval status
      ``PendingManualApproval``; the run's UUID as ``ClientToken``, so a retried call never makes a
      second version (API reference, CreateModelPackage ``ClientToken``);
    - a refused registration ends the execution in ``ModelRegistrationFailed`` with a cause
      naming the model artifact (nothing is lost: the model stays where the job put it);
    - :attr:`policy_statements`: ``sagemaker:CreateModelPackage`` on the versions of these
      groups only, with status ``PendingManualApproval`` only (condition
      ``sagemaker:ModelApprovalStatus``); ``s3:PutObject`` under ``model-quality/`` of the
      artifacts bucket and ``kms:GenerateDataKey`` on its key (the bucket's default encryption);
      and read access to what a version names: ``s3:GetObject`` under ``models/`` (with
      ``kms:Decrypt`` through S3) and ``ecr:BatchGetImage``/``ecr:DescribeImages`` on the
      project's repository (``repository_arn``; none: no ECR statement).

    Whether SageMaker reads a version's model data and image with the caller's credentials
    when it registers one is not documented. The developer guide's cross-account registration
    ("Register a Model Version from a Different Account") has the registry's account granted
    ``s3:GetObject`` on the artifacts, ``ecr:BatchGetImage`` on the image and ``kms:Decrypt`` on
    the key, and a registered version carries an ``ImageDigest`` SageMaker filled in; so the
    caller may read both, read-only, and a registration works either way.
    """

    def __init__(self, scope: Construct, construct_id: str, *, artifacts_bucket: s3.IBucket,
                 key: kms.IKey, version_arns: list[str], tracking_uri: str | None,
                 repository_arn: str | None = None) -> None:
        super().__init__(scope, construct_id)
        bucket = artifacts_bucket.bucket_name
        # Keyed by the training job's name, unique in the account and region for good (execution
        # names come back: a redeployed state machine, a name reused after 90 days).
        report_key = (f"States.Format('{contract.QUALITY_REPORTS_PREFIX}{{}}.json', "
                      f"{REPORT_PATH}.trainingJobName)")

        self.start = sfn.Choice(self, "RegistrationRequested")
        self.end = sfn.Pass(self, "ReportResult", parameters={
            "output.$": "States.JsonMerge($.report, $.registration, false)"}, output_path="$.output")

        not_requested = sfn.Pass(self, "SkipRegistration", result_path="$.registration",
                                 result=sfn.Result.from_object({
                                     "registered": False,
                                     "registrationReason": "not requested (input 'register' is "
                                                           "false, or the program's default)"}))
        gate = sfn.Pass.jsonata(self, "EvaluateQualityGate", assign={
            GATE_VARIABLE: "{% " + gate_expression(tracking_uri=tracking_uri) + " %}"})
        gate_passed = sfn.Choice(self, "QualityGatePassed")
        refused = sfn.Pass(self, "KeepUnregistered", result_path="$.registration", parameters={
            "registered": False, "registrationReason.$": f"${GATE_VARIABLE}.reason"})

        write_report = sfn.CustomState(self, "WriteQualityReport", state_json={
            "Type": "Task",
            "Resource": "arn:aws:states:::aws-sdk:s3:putObject",
            "Parameters": {
                "Bucket": bucket,
                "Key.$": report_key,
                "Body.$": f"${GATE_VARIABLE}.report",
                "ContentType": "application/json",
            },
            "ResultSelector": {"ETag.$": "$.ETag"},
            "ResultPath": "$.qualityReport",
        })
        # A put of the same object is safe to repeat; what S3 names its errors in the AWS SDK
        # integration is not listed, so any task failure is tried twice more.
        write_report.add_retry(errors=["States.TaskFailed"], interval=Duration.seconds(2),
                               backoff_rate=2, max_attempts=2, jitter_strategy=sfn.JitterType.FULL)

        # The model is frozen before it is registered: copied under registry/ (which no job's
        # role may write) with S3's SHA-256 of the copy (CopyObject ChecksumAlgorithm: the result
        # carries ChecksumSHA256) and its version id (the bucket is versioned), and the version
        # names the copy. A job that later writes models/ cannot change what was approved.
        frozen_key = (f"'{contract.REGISTERED_MODELS_PREFIX}' & $states.input.method.registry.group "
                      "& '/' & $states.input.report.trainingJobName & '/model.tar.gz'")
        added = (f"{{'{contract.METADATA_MODEL_SHA256}': $states.result.CopyObjectResult.ChecksumSHA256, "
                 f"'{contract.METADATA_MODEL_VERSION}': $states.result.VersionId}}")
        freeze = sfn.CustomState(self, "FreezeRegisteredModel", state_json={
            "Type": "Task", "QueryLanguage": "JSONata",
            "Resource": "arn:aws:states:::aws-sdk:s3:copyObject",
            "Arguments": {
                "Bucket": bucket,
                "Key": f"{{% {frozen_key} %}}",
                # "bucket/key" of the job's model (its keys are [A-Za-z0-9./-]: nothing to encode).
                "CopySource": "{% $substringAfter($states.input.report.modelArtifacts, 's3://') %}",
                "ChecksumAlgorithm": "SHA256",
            },
            # A JSONata catcher has no ResultPath: the error joins the input as Output (CDK's
            # add_catch renders a CustomState's catcher as JSONPath, without it).
            "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "ExplainRegistrationFailure",
                       "Output": "{% $merge([$states.input, {'failure': $states.errorOutput}]) %}"}],
            "Output": ("{% $merge([$states.input, {'frozen': {"
                       f"'uri': 's3://{bucket}/' & {frozen_key}, "
                       f"'metadata': $merge([${GATE_VARIABLE}.metadata, {added}])}}}}]) %}}"),
        })
        register = sfn.CustomState(self, "RegisterModelVersion", state_json={
            "Type": "Task",
            "Resource": "arn:aws:states:::aws-sdk:sagemaker:createModelPackage",
            "Parameters": {
                "ModelPackageGroupName.$": f"{REGISTRY_PATH}.group",
                "ModelPackageDescription.$": f"${GATE_VARIABLE}.description",
                "ModelApprovalStatus": contract.PENDING_APPROVAL,
                # The run's UUID (ApplyDefaults: States.UUID(), 36 characters of [0-9a-f-]): new for
                # every execution, kept by a redrive. Not the execution ARN: that comes back, and
                # a token SageMaker has seen returns the old version and creates none.
                "ClientToken.$": "$.run.id",
                "InferenceSpecification": {
                    "Containers": [{
                        "Image.$": f"{REGISTRY_PATH}.image",
                        "ModelDataUrl.$": "$.frozen.uri",
                        "Environment.$": f"{REGISTRY_PATH}.environment",
                    }],
                    "SupportedContentTypes.$": f"{REGISTRY_PATH}.contentTypes",
                    "SupportedResponseMIMETypes.$": f"{REGISTRY_PATH}.responseTypes",
                },
                "ModelMetrics": {"ModelQuality": {"Statistics": {
                    "ContentType": "application/json",
                    "S3Uri.$": f"States.Format('s3://{bucket}/{contract.QUALITY_REPORTS_PREFIX}"
                               f"{{}}.json', {REPORT_PATH}.trainingJobName)",
                }}},
                "CustomerMetadataProperties.$": "$.frozen.metadata",
                "MetadataProperties": {"GeneratedBy.$": "$$.Execution.Id"},
            },
            "ResultSelector": {"ModelPackageArn.$": "$.ModelPackageArn"},
            "ResultPath": "$.created",
        })
        # As for describeTrainingJob (tuning_job_task.py): the AWS SDK integration names errors
        # "SageMaker.<Code>Exception", and throttling arrives as ThrottlingException or the
        # SDK's base SageMakerException; the ClientToken makes a repeated call harmless.
        retry_sagemaker_call(register)
        registered = sfn.Pass(self, "RecordRegistration", result_path="$.registration", parameters={
            "registered": True,
            "registrationReason.$": f"${GATE_VARIABLE}.reason",
            "modelPackageArn.$": "$.created.ModelPackageArn",
            "modelPackageGroup.$": f"{REGISTRY_PATH}.group",
            "registeredModelData.$": "$.frozen.uri",
        })

        explain = sfn.Pass(self, "ExplainRegistrationFailure", result_path="$.failureReport",
                           parameters={"cause.$": (
                               "States.Format('the model {} of training job {} was not registered: "
                               "{}: {}', $.report.modelArtifacts, $.report.trainingJobName, "
                               "$.failure.Error, $.failure.Cause)")})
        failed = explain.next(sfn.Fail(self, "RegistrationFailed",
                                       error=contract.REGISTRATION_FAILED_ERROR,
                                       cause_path="$.failureReport.cause"))
        for task in (write_report, register):
            task.add_catch(failed, errors=["States.ALL"], result_path="$.failure")
        # A copy of the same object is safe to repeat (the ClientToken of the version to come
        # keeps that single too).
        freeze.add_retry(errors=["States.TaskFailed"], interval=Duration.seconds(2), backoff_rate=2,
                         max_attempts=2, jitter_strategy=sfn.JitterType.FULL)


        self.start.when(Cond.boolean_equals("$.config.register.enabled", True), gate)
        self.start.otherwise(not_requested)
        gate.next(gate_passed)
        gate_passed.when(Cond.boolean_equals(f"${GATE_VARIABLE}.passed", True),
                         write_report.next(freeze).next(register).next(registered))
        gate_passed.otherwise(refused)
        for state in (not_requested, refused, registered):
            state.next(self.end)

        stack = Stack.of(self)
        self.policy_statements: list[iam.PolicyStatement] = [
            iam.PolicyStatement(
                actions=["sagemaker:CreateModelPackage"], resources=version_arns,
                conditions={"StringEquals": {
                    "sagemaker:ModelApprovalStatus": contract.PENDING_APPROVAL}}),
            iam.PolicyStatement(
                actions=["s3:PutObject"],
                resources=[artifacts_bucket.arn_for_objects(f"{contract.QUALITY_REPORTS_PREFIX}*"),
                           artifacts_bucket.arn_for_objects(f"{contract.REGISTERED_MODELS_PREFIX}*")]),
            iam.PolicyStatement(
                actions=["kms:GenerateDataKey", "kms:Decrypt"], resources=[key.key_arn],
                conditions={"StringEquals": {"kms:ViaService": f"s3.{stack.region}.amazonaws.com"}}),
            iam.PolicyStatement(
                actions=["s3:GetObject"],
                resources=[artifacts_bucket.arn_for_objects(f"{contract.MODELS_PREFIX}*"),
                           artifacts_bucket.arn_for_objects(f"{contract.REGISTERED_MODELS_PREFIX}*")]),
        ]
        if repository_arn is not None:
            self.policy_statements.append(iam.PolicyStatement(
                actions=["ecr:BatchGetImage", "ecr:DescribeImages"], resources=[repository_arn]))

