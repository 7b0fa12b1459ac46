"""The rendered state machine definition, state by state."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from smtrain.core import contract
from tests.helpers import Synthesized

Definition = dict[str, Any]


@pytest.fixture(scope="module")
def definition(synthesized: Synthesized) -> Definition:
    return synthesized.definition()


def states(definition: Definition) -> dict[str, Any]:
    return definition["States"]  # type: ignore[no-any-return]


#: SageMaker's training instance types (botocore's sagemaker model, TrainingInstanceType enum).
def _sagemaker_training_instance_types() -> list[str]:
    import botocore.session

    model = botocore.session.get_session().get_service_model("sagemaker")
    return list(model.shape_for("TrainingInstanceType").enum)


def test_starts_by_merging_input_over_defaults(definition: Definition) -> None:
    assert definition["StartAt"] == "ReadInput"
    read = states(definition)["ReadInput"]
    # cdk.json's defaults: a small CPU job of one hour on demand.
    defaults = read["Parameters"]["defaults"]
    assert defaults == {
        "hyperparameters": {}, "instanceType": "ml.m5.xlarge", "instanceCount": 1,
        "volumeSizeInGB": 30, "maxRuntimeInSeconds": 3600, "spot": False, "keepAliveSeconds": 0,
        "inputs": {}, "channelOptions": {},
    }
    # ... each a value SageMaker takes: an instance type of its model, a volume of 1-16384 GiB
    # (gp2), a run time of at most 28 days (API reference, StoppingCondition.MaxRuntimeInSeconds).
    assert defaults["instanceType"] in _sagemaker_training_instance_types()
    assert 1 <= defaults["volumeSizeInGB"] <= 16384
    assert 1 <= defaults["maxRuntimeInSeconds"] <= 28 * 24 * 3600
    # Every rule in one JSONata check, then the merge. The check reads the input's JSON text
    # (JSONata reads 2.0 as 2; SageMaker's integer fields refuse it) and the execution's name.
    assert read["Parameters"]["input.$"] == "$"
    assert read["Parameters"]["text.$"] == "States.JsonToString($)"
    assert read["Parameters"]["executionName.$"] == "$$.Execution.Name"
    assert read["Next"] == "CheckProgramInput"
    check = states(definition)["CheckProgramInput"]
    assert check["QueryLanguage"] == "JSONata" and check["Next"] == "ProgramInputValid"
    assert set(check) == {"Type", "QueryLanguage", "Assign", "Next"}
    assert set(check["Assign"]) == {"inputCheck"}
    (reject_rule,) = states(definition)["ProgramInputValid"]["Choices"]
    assert reject_rule == {"Variable": "$inputCheck.rejected", "BooleanEquals": True,
                           "Next": "RejectProgramInput"}
    assert states(definition)["RejectProgramInput"]["Parameters"] == {
        "error.$": "$inputCheck.rejection.error", "cause.$": "$inputCheck.rejection.cause"}
    assert states(definition)["RejectProgramInput"]["Next"] == "RejectInput"
    assert states(definition)["ProgramInputValid"]["Default"] == "ApplyDefaults"
    merge = states(definition)["ApplyDefaults"]
    assert merge["Parameters"]["config.$"] == ("States.JsonMerge(States.JsonMerge($.defaults, "
                                               "$.input, false), $inputCheck.resolved, false)")
    assert merge["Parameters"]["run"] == {"id.$": "States.UUID()"}
    assert merge["Next"] == "ChooseProgram"


def _check_expression(definition: Definition) -> str:
    assign = states(definition)["CheckProgramInput"]["Assign"]["inputCheck"]
    assert assign.startswith("{% ($result := ") and assign.endswith(" %}")
    return str(assign)


def _deployment(definition: Definition) -> dict[str, Any]:
    """The deployment's settings the check binds (``$deployment := {...};``)."""
    match = re.search(r"\$deployment := (\{.*?\}); \(", _check_expression(definition))
    assert match, "the check binds $deployment"
    return json.loads(match.group(1))  # type: ignore[no-any-return]


def test_input_validation_names_each_field(definition: Definition, synthesized: Synthesized) -> None:
    """One check state evaluates the core's rules, the very text the CLI evaluates; no Choice
    restates a rule of the input."""
    from smtrain.core import input_rules
    from smtrain.core.programs import discover

    expression = _check_expression(definition)
    programs = discover(synthesized.training_code)
    rules = input_rules.rules()
    assert rules in expression
    assert json.dumps(input_rules.catalog(programs), sort_keys=True) in expression
    for field in ("instanceType", "instanceCount", "volumeSizeInGB",
                  "maxRuntimeInSeconds", "spot", "tuning.strategy", "tuning.maxParallelJobs",
                  "tuning.earlyStopping", "tuning.hyperband.maxResource"):
        assert f"field '{field}'" in rules or f'"{field}"' in rules, field
    # Nothing after the check compares an input field: the Choices left route the run.
    rule_states = [name for name, state in states(definition).items()
                   if state["Type"] == "Pass" and state.get("ResultPath") == "$.rejection"]
    assert rule_states == ["RejectProgramInput"]
    assert not [name for name in states(definition) if name.startswith(("Validate", "Invalid"))]
    reject = states(definition)["RejectInput"]
    assert reject == {"Type": "Fail", "ErrorPath": "$.rejection.error",
                      "CausePath": "$.rejection.cause"}


def test_instance_type_allow_list_is_enforced(definition: Definition) -> None:
    deployment = _deployment(definition)
    allowed = deployment["allowedInstanceTypes"]
    assert deployment["maxInstanceCount"] == 4 and deployment["maxRuntimeInSeconds"] == 3600
    assert deployment["defaults"] == states(definition)["ReadInput"]["Parameters"]["defaults"]
    # cdk.json's allowedInstanceTypes, every one a SageMaker training instance type.
    assert allowed == ["ml.m5.large", "ml.m5.xlarge", "ml.m5.2xlarge", "ml.c5.xlarge",
                       "ml.c5.2xlarge", "ml.g5.xlarge", "ml.g5.2xlarge"]
    assert set(allowed) <= set(_sagemaker_training_instance_types())


#: AWS's published images in us-east-1 (SageMaker developer guide, "Docker Registry Paths and
#: Example Code": XGBoost in account 683313688378; AWS Deep Learning Containers, "Available
#: images": PyTorch training in account 763104351884), for cdk.json's versions.
XGBOOST_IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"
PYTORCH_CPU_IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.5-cpu-py311"
PYTORCH_GPU_IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.5-gpu-py311"


def test_programs_pick_their_images(definition: Definition) -> None:
    s = states(definition)
    assert s["PrepareDigitsXgboost"]["Result"]["algorithm"]["TrainingImage"] == XGBOOST_IMAGE
    assert s["PrepareDigitsMlpCpu"]["Result"]["algorithm"]["TrainingImage"] == PYTORCH_CPU_IMAGE
    assert s["PrepareDigitsMlpGpu"]["Result"]["algorithm"]["TrainingImage"] == PYTORCH_GPU_IMAGE
    byoc_image = s["PrepareDigitsLightgbm"]["Result"]["algorithm"]["TrainingImage"]
    assert re.search(r"/import-[a-z0-9]+:[0-9a-f]{64}$", byoc_image), byoc_image
    (gpu_rule,) = s["ChooseDigitsMlpImage"]["Choices"]
    gpu_types = [c["StringEquals"] for c in gpu_rule["Or"]]
    # The allowed types with NVIDIA GPUs (G5: one A10G each; Amazon EC2 instance types).
    assert gpu_types == ["ml.g5.xlarge", "ml.g5.2xlarge"]
    assert gpu_rule["Next"] == "PrepareDigitsMlpGpu"
    assert s["ChooseDigitsMlpImage"]["Default"] == "PrepareDigitsMlpCpu"


def test_script_mode_points_at_the_source_tarball(definition: Definition) -> None:
    fixed = states(definition)["PrepareDigitsMlpCpu"]["Result"]["fixedHyperparameters"]
    assert fixed["sagemaker_program"] == "train.py"
    # The default network (sealed: network isolation) delivers the tarball as the code channel,
    # at its path in the container, as the SageMaker Python SDK does under isolation; a public
    # deployment's jobs read the S3 URI (tests/test_framework_matrix.py).
    assert re.fullmatch(r"/opt/ml/input/data/code/[0-9a-f]{64}\.gz",
                        fixed["sagemaker_submit_directory"]), fixed
    assert fixed["sagemaker_region"] == "us-east-1"


#: What each shipped program sends: hyperparameters the training code reads (training_code/, and
#: SageMaker XGBoost's required objective/num_class/num_round: developer guide, "XGBoost
#: hyperparameters"), and the objective each tuning job optimizes (for XGBoost one of the metrics
#: it publishes: developer guide, "Tune an XGBoost Model", validation:merror among them). The
#: "base" ones (tunable = false in the manifest) go on every job, tuning trials included.
METHOD_DEFAULTS: dict[str, dict[str, Any]] = {
    "digits_mlp": {"base": {"seed": "42"},
                   "training": {"epochs": "10", "batch-size": "64", "learning-rate": "0.01",
                                "hidden-units": "64"},
                   "objective": "validation:accuracy"},
    "digits_lightgbm": {"base": {"seed": "42"},
                        "training": {"num_boost_round": "100", "learning_rate": "0.1",
                                     "num_leaves": "31"},
                        "objective": "validation:accuracy"},
    "digits_xgboost": {"base": {"objective": "multi:softmax", "num_class": "10", "num_round": "100",
                                "eval_metric": "merror"},
                       "training": {"max_depth": "5", "eta": "0.2"},
                       "objective": "validation:merror"},
}


@pytest.mark.parametrize("method", ["digits_mlp", "digits_lightgbm", "digits_xgboost"])
def test_method_defaults(definition: Definition, method: str) -> None:
    state = states(definition)[{"digits_mlp": "PrepareDigitsMlpCpu",
                                "digits_lightgbm": "PrepareDigitsLightgbm",
                                "digits_xgboost": "PrepareDigitsXgboost"}[method]]
    assert state["ResultPath"] == "$.method" and state["Next"] == "ChooseDistribution"
    result = state["Result"]
    expected = METHOD_DEFAULTS[method]
    assert result["trainingDefaults"] == expected["training"]
    assert result["baseHyperparameters"] == expected["base"]
    assert result["inputDefaults"] == {
        "train": f"s3://import-exportsoutputrefbucketsdata941f65f0dc630599/datasets/{method}/train/",
        "validation": f"s3://import-exportsoutputrefbucketsdata941f65f0dc630599/datasets/{method}/validation/",
    }
    # The shipped programs' channels in File mode, every object on every instance, uncompressed:
    # what a run sends unless its channelOptions (or the manifest) say otherwise.
    file_mode = {"inputMode": "File", "s3DataDistributionType": "FullyReplicated", "compressionType": "None"}
    assert result["channels"] == [{"name": "train", "contentType": "text/csv", "options": file_mode},
                                  {"name": "validation", "contentType": "text/csv", "options": file_mode}]
    assert result["tuningDefaults"]["objective"]["metricName"] == expected["objective"]
    metric_names = [m["Name"] for m in result["algorithm"].get("MetricDefinitions", [])]
    if method == "digits_xgboost":
        assert metric_names == [], "SageMaker refuses metric definitions for built-in algorithms"
    else:
        assert metric_names == ["train:loss", "validation:loss", "validation:accuracy"]
        assert expected["objective"] in metric_names, "SageMaker reads the objective from these"


def test_hyperparameters_merge_in_order(definition: Definition) -> None:
    params = states(definition)["ResolveJob"]["Parameters"]
    fixed = ("States.JsonMerge($.method.fixedHyperparameters, $.distribution.hyperparameters, "
             "false)")
    assert params["trainingHyperparameters.$"] == (
        "States.JsonMerge(States.JsonMerge(States.JsonMerge($.method.baseHyperparameters, "
        f"$.method.trainingDefaults, false), $.config.hyperparameters, false), {fixed}, false)")
    assert params["staticHyperparameters.$"] == (
        "States.JsonMerge(States.JsonMerge($.method.baseHyperparameters, "
        f"$.config.hyperparameters, false), {fixed}, false)")
    assert params["inputs.$"] == "States.JsonMerge($.method.inputDefaults, $.config.inputs, false)"


def test_channels_are_built_from_the_program_manifest(definition: Definition) -> None:
    # Every channel the program declares and the input (or its defaults) gives a URI, in the
    # manifest's order, with its content type: SageMaker's InputDataConfig (File mode, S3 prefix).
    describe = states(definition)["DescribeChannels"]
    assert describe["QueryLanguage"] == "JSONata"
    # A variable, not the state: JSONata would rewrite the state's numbers (2.0 -> 2) before the
    # tuning integer checks read their text.
    assert set(describe) == {"Type", "QueryLanguage", "Assign", "Next"}
    assert states(definition)["ResolveJob"]["Next"] == "DescribeChannels"
    assert describe["Next"] == "ChooseVolumeEncryption"
    text = describe["Assign"]["channels"]
    for key in ("'ChannelName': name", "'ContentType': contentType", "'S3DataType': 'S3Prefix'",
                "'S3Uri': $lookup($states.input.inputs, name)",
                # The run's channelOptions over the program's, per channel; File and None are
                # left out of the request (the job's TrainingInputMode, File, applies).
                "$o := $merge([options, $lookup($states.input.config.channelOptions, name)])",
                "'InputMode': $o.inputMode != 'File' ? $o.inputMode",
                "'CompressionType': $o.compressionType != 'None' ? $o.compressionType",
                "'S3DataDistributionType': $o.s3DataDistributionType"):
        assert key in text, key


def test_volume_key_only_where_the_instance_has_no_local_storage(definition: Definition) -> None:
    """cdk.json allows ml.g5 (local NVMe) beside EBS-only types: SageMaker refuses a
    VolumeKmsKeyId on the former (API reference, ResourceConfig.VolumeKmsKeyId)."""
    s = states(definition)
    (rule,) = s["ChooseVolumeEncryption"]["Choices"]
    assert rule == {"Or": [{"Variable": "$.config.instanceType", "StringEquals": t}
                           for t in ("ml.g5.xlarge", "ml.g5.2xlarge")],
                    "Next": "UseEncryptedInstanceStore"}
    assert s["ChooseVolumeEncryption"]["Default"] == "EncryptVolumeWithStackKey"
    resources = {"InstanceType.$": "$.config.instanceType", "InstanceCount.$": "$.config.instanceCount",
                 "VolumeSizeInGB.$": "$.config.volumeSizeInGB"}
    assert s["UseEncryptedInstanceStore"]["Parameters"] == resources
    encrypted = s["EncryptVolumeWithStackKey"]["Parameters"]
    assert {k: v for k, v in encrypted.items() if k != "VolumeKmsKeyId"} == resources
    assert encrypted["VolumeKmsKeyId"].startswith("arn:aws:")
    for state in ("UseEncryptedInstanceStore", "EncryptVolumeWithStackKey"):
        assert s[state]["ResultPath"] == "$.resources" and s[state]["Next"] == "ChooseWarmPool"


def test_a_warm_pool_is_asked_for_only_above_zero(definition: Definition) -> None:
    """keepAliveSeconds > 0 (0 by default) adds ResourceConfig.KeepAlivePeriodInSeconds; the
    capacity is chosen next either way."""
    s = states(definition)
    (rule,) = s["ChooseWarmPool"]["Choices"]
    assert rule == {"Variable": "$.config.keepAliveSeconds", "NumericGreaterThan": 0,
                    "Next": "KeepInstancesWarm"}
    assert s["ChooseWarmPool"]["Default"] == "ChooseCapacity"
    keep = s["KeepInstancesWarm"]
    assert (keep["Type"], keep["InputPath"], keep["ResultPath"], keep["Next"]) == (
        "Pass", "$.config.keepAliveSeconds", "$.resources.KeepAlivePeriodInSeconds", "ChooseCapacity")


def test_spot_adds_max_wait(definition: Definition) -> None:
    s = states(definition)
    (rule,) = s["ChooseCapacity"]["Choices"]
    assert rule == {"Variable": "$.config.spot", "BooleanEquals": True, "Next": "UseSpotCapacity"}
    # cdk.json's spotMaxWaitInSeconds; SageMaker wants MaxWaitTimeInSeconds >= MaxRuntimeInSeconds
    # (at most cdk.json's 3600 here) and at most 28 days (API reference, StoppingCondition).
    assert s["UseSpotCapacity"]["Parameters"] == {
        "MaxRuntimeInSeconds.$": "$.config.maxRuntimeInSeconds", "MaxWaitTimeInSeconds": 7200}
    assert s["UseOnDemandCapacity"]["Parameters"] == {
        "MaxRuntimeInSeconds.$": "$.config.maxRuntimeInSeconds"}
    longest_runtime = _deployment(definition)["maxRuntimeInSeconds"]
    assert longest_runtime == 3600
    assert longest_runtime <= 7200 <= 28 * 24 * 3600


def test_each_program_runs_as_its_own_role(definition: Definition, synthesized: Synthesized) -> None:
    """Each program's Prepare states give its jobs the program's own execution role and its own
    model and checkpoint prefixes, which only that role may write (tests/test_iam_evaluated.py)."""
    import hashlib

    s = states(definition)
    # The rendered definition names a role read from the storage stack by the output's name
    # (smtrain/core/assembly.py, placeholder_resolver): each program's role's output.
    role_outputs = {name: output["Value"]["Fn::GetAtt"][0] for name, output in synthesized.storage["Outputs"].items()
                    if "Fn::GetAtt" in output["Value"] and output["Value"]["Fn::GetAtt"][1] == "Arn"}
    expected = {program: next(f"arn:aws:iam::123456789012:role/import-{hashlib.sha256(name.encode()).hexdigest()[:8]}"
                              for name, role in role_outputs.items()
                              if role.startswith(f"ExecutionRole{contract.output_id(program)}Role")
                              and "Export" not in synthesized.storage["Outputs"][name])
                for program in ("digits_mlp", "digits_lightgbm", "digits_xgboost")}
    artifacts = "s3://import-exportsoutputrefbucketsartifactsb9ee640063e0f2d8"
    roles: dict[str, set[str]] = {}
    for state, program in (("PrepareDigitsMlpCpu", "digits_mlp"), ("PrepareDigitsMlpGpu", "digits_mlp"),
                           ("PrepareDigitsLightgbm", "digits_lightgbm"), ("PrepareDigitsXgboost", "digits_xgboost")):
        result = s[state]["Result"]
        assert result["outputUri"] == f"{artifacts}/models/{program}/"
        assert result["checkpointUri"] == f"{artifacts}/checkpoints/{program}/"
        roles.setdefault(program, set()).add(result["roleArn"])
    # One role per program, whatever the image, and it is that program's own (not the earlier
    # shared role, nor another program's).
    assert roles == {program: {arn} for program, arn in expected.items()}
    assert len(set(expected.values())) == 3


def test_training_request(definition: Definition) -> None:
    task = states(definition)["TrainModel"]
    assert task["Resource"] == "arn:aws:states:::sagemaker:createTrainingJob.sync"
    p = task["Parameters"]
    assert p["TrainingJobName.$"] == "States.Format('smtrain-{}-{}', $.run.id, $.attempt.number)"
    # The program's own role and prefixes (test_each_program_runs_as_its_own_role).
    assert p["RoleArn.$"] == "$.method.roleArn" and "RoleArn" not in p
    assert p["AlgorithmSpecification.$"] == "$.method.algorithm"
    assert p["HyperParameters.$"] == "$.trainingHyperparameters"
    assert p["InputDataConfig.$"] == "$channels"
    assert p["OutputDataConfig"]["S3OutputPath.$"] == "$.method.outputUri"
    assert p["OutputDataConfig"]["KmsKeyId"].startswith("arn:aws:")
    assert p["StoppingCondition.$"] == "$.stopping"
    assert p["EnableManagedSpotTraining.$"] == "$.config.spot"
    assert p["ResourceConfig.$"] == "$.resources"
    assert p["EnableInterContainerTrafficEncryption.$"] == "$.encryptInterContainerTraffic"
    # The default network, sealed: isolation without a VPC.
    assert "VpcConfig" not in p and p["EnableNetworkIsolation"] is True, "network: sealed"
    assert p["CheckpointConfig"]["S3Uri.$"] == "States.Format('{}{}/', $.method.checkpointUri, $.run.id)"
    # Off by default (setting sagemakerRetryAttempts): tests/test_sagemaker_retry_strategy.py.
    assert "RetryStrategy" not in p
    assert p["Tags"] == [
        {"Key": "project", "Value": "smtrain"},  # the stack's tags, for cost attribution
        {"Key": "smtrain:execution", "Value.$": "$$.Execution.Name"},
        {"Key": "smtrain:program", "Value.$": "$.config.program"},
        {"Key": "smtrain:kind", "Value.$": "$.method.kind"}]
    assert task["ResultSelector"] == {
        "TrainingJobName.$": "$.TrainingJobName",
        "ModelArtifacts.$": "$.ModelArtifacts.S3ModelArtifacts",
        "FinalMetricDataList.$": "$.FinalMetricDataList"}


@pytest.mark.parametrize(("task_name", "label"), [("TrainModel", "Training"),
                                                   ("TuneModel", "Tuning")])
def test_create_errors_are_told_apart_by_cause(definition: Definition, task_name: str,
                                               label: str) -> None:
    """Step Functions names throttling and validation alike (SageMaker.AmazonSageMakerException)
    and the account limit SageMaker.ResourceLimitExceededException: only the cause tells
    throttling apart, so no Retry may name them; a Choice on the cause decides."""
    s = states(definition)
    task = s[task_name]
    assert "Retry" not in task
    first, rest = task["Catch"]
    assert first == {"ErrorEquals": ["SageMaker.ResourceLimitExceededException",
                                     "SageMaker.AmazonSageMakerException"],
                     "ResultPath": "$.failure", "Next": f"Retry{label}Create"}
    assert rest["ErrorEquals"] == ["States.ALL"]
    decide = s[f"Retry{label}Create"]
    text = json.dumps(decide["Choices"])
    assert "*Error Code: ThrottlingException*" in text
    assert "SageMaker.ResourceLimitExceededException" in text
    assert "ValidationException" not in text
    assert decide["Default"] == f"Explain{label}Failure"
    # Three attempts: two scheduled retries, 15-30 s then 30-60 s, each waiting a random time.
    schedules = [s[f"Schedule{label}Attempt{n}"]["Parameters"] for n in (2, 3)]
    assert schedules == [{"number": 1, "waitSeconds.$": "States.MathRandom(15, 30)"},
                         {"number": 2, "waitSeconds.$": "States.MathRandom(30, 60)"}]
    assert f"Schedule{label}Attempt4" not in s
    assert s[f"Wait{label}Backoff"] == {"Type": "Wait", "SecondsPath": "$.attempt.waitSeconds",
                                        "Next": task_name}


@pytest.mark.parametrize(("task_name", "explain", "fail", "error"), [
    ("TrainModel", "ExplainTrainingFailure", "TrainingFailed", "TrainingJobFailed"),
    ("TuneModel", "ExplainTuningFailure", "TuningFailed", "TuningJobFailed"),
    ("DescribeBestTrainingJob", "ExplainTuningFailure", "TuningFailed", "TuningJobFailed"),
])
def test_failures_carry_the_reason(definition: Definition, task_name: str, explain: str,
                                   fail: str, error: str) -> None:
    s = states(definition)
    catch = s[task_name]["Catch"][-1]
    assert catch == {"ErrorEquals": ["States.ALL"], "ResultPath": "$.failure", "Next": explain}
    assert s[explain]["Parameters"] == {
        "cause.$": "States.Format('{}: {}', $.failure.Error, $.failure.Cause)"}
    assert s[explain]["Next"] == fail
    assert s[fail] == {"Type": "Fail", "Error": error, "CausePath": "$.failureReport.cause"}


def test_tuning_branch(definition: Definition) -> None:
    s = states(definition)
    (rule,) = s["TrainOrTune"]["Choices"]
    assert rule == {"Variable": "$.config.tuning", "IsPresent": True, "Next": "TuningGiven"}
    assert s["TrainOrTune"]["Default"] == "TrainModel"
    (null_rule,) = s["TuningGiven"]["Choices"]
    assert null_rule == {"Variable": "$.config.tuning", "IsNull": True, "Next": "TrainModel"}
    assert s["TuningGiven"]["Default"] == "ApplyTuningDefaults"
    assert s["ApplyTuningDefaults"]["Parameters"] == {
        "config.$": "States.JsonMerge($.method.tuningDefaults, $.config.tuning, false)"}
    rules = _check_expression(definition)
    assert "must be one of \" & $join($allowed, \", \")" in rules
    assert "field 'tuning.earlyStopping' must be Off with the Hyperband strategy" in rules
    # Each strategy's request goes straight on: its rules were checked before anything ran.
    assert s["ChooseTuningStrategy"]["Choices"][1] == {
        "Variable": "$.tuning.config.strategy", "StringEquals": "Hyperband", "Next": "ConfigureHyperband"}
    assert s["ConfigureGridSearch"]["Parameters"]["ResourceLimits"] == {
        "MaxParallelTrainingJobs.$": "$.tuning.config.maxParallelJobs"}
    assert set(s["ConfigureSearch"]["Parameters"]["ResourceLimits"]) == {
        "MaxNumberOfTrainingJobs.$", "MaxParallelTrainingJobs.$"}
    assert "StrategyConfig" not in s["ConfigureSearch"]["Parameters"]
    assert "StrategyConfig" not in s["ConfigureGridSearch"]["Parameters"]
    assert s["ConfigureHyperband"]["Parameters"]["StrategyConfig"] == {"HyperbandStrategyConfig": {
        "MinResource.$": "$.tuning.config.hyperband.minResource",
        "MaxResource.$": "$.tuning.config.hyperband.maxResource"}}
    task = s["TuneModel"]
    assert task["Resource"] == "arn:aws:states:::sagemaker:createHyperParameterTuningJob.sync"
    p = task["Parameters"]
    assert p["HyperParameterTuningJobName.$"] == (
        "States.Format('smtrain-{}-{}', $.run.shortId, $.attempt.number)")
    assert p["HyperParameterTuningJobConfig.$"] == "$.tuning.job"
    definition_ = p["TrainingJobDefinition"]
    assert definition_["StaticHyperParameters.$"] == "$.staticHyperparameters"
    assert definition_["AlgorithmSpecification.$"] == "$.method.tuningAlgorithm"
    # Spot trials can resume: every trial of the run checkpoints under the run's prefix.
    assert definition_["CheckpointConfig"]["S3Uri.$"] == (
        "States.Format('{}{}/', $.method.checkpointUri, $.run.shortId)")
    assert definition_["RoleArn.$"] == "$.method.roleArn"
    assert definition_["OutputDataConfig"]["S3OutputPath.$"] == "$.method.outputUri"
    # Trimmed: however many training jobs the tuning job ran, only the best is kept.
    assert task["ResultSelector"] == {
        "HyperParameterTuningJobName.$": "$.HyperParameterTuningJobName",
        "HyperParameterTuningJobStatus.$": "$.HyperParameterTuningJobStatus",
        "TrainingJobStatusCounters.$": "$.TrainingJobStatusCounters",
        "BestTrainingJob.$": "$.BestTrainingJob"}
    assert task["Next"] == "DescribeBestTrainingJob"
    describe = s["DescribeBestTrainingJob"]
    assert describe["Resource"] == "arn:aws:states:::aws-sdk:sagemaker:describeTrainingJob"
    assert describe["Parameters"] == {
        "TrainingJobName.$": "$.tuningResult.BestTrainingJob.TrainingJobName"}


def test_outputs_are_small_and_named(definition: Definition) -> None:
    s = states(definition)
    assert set(s["ReportTraining"]["Parameters"]) == {
        "program.$", "trainingJobName.$", "modelArtifacts.$", "metrics.$"}
    assert {"tuningJobName.$", "trainingJobName.$", "objective.$", "modelArtifacts.$",
            "metrics.$"} <= set(s["ReportTuning"]["Parameters"])
    # Both reports go through the registry's decision (a training run's after its cost is
    # reckoned), and every way out of it ends in the one state that makes the output: the report
    # plus what became of the model.
    for report in ("ReportTraining", "ReportTuning"):
        assert s[report]["ResultPath"] == "$.report"
    assert s["ReportTraining"]["Next"] == "ReckonCost"
    assert s["ReportTuning"]["Next"] == "ListTuningTrainingJobs"
    assert s["ReckonCost"]["Next"] == s["ReportTuningCost"]["Next"] == "RegistrationRequested"
    from smtrain.core.prices import JOB_COST_FUNCTION

    # The job's description, asked for again; should that fail, the run goes on to registration.
    reckon = s["ReckonCost"]
    assert reckon["Resource"] == "arn:aws:states:::aws-sdk:sagemaker:describeTrainingJob"
    assert reckon["Arguments"] == {"TrainingJobName": "{% $states.input.training.TrainingJobName %}"}
    assert f"({JOB_COST_FUNCTION})($states.result, " in reckon["Output"]
    assert [(c["ErrorEquals"], c["Next"]) for c in reckon["Catch"]] == [(["States.ALL"], "RegistrationRequested")]
    # A tuning run's: every page of its training jobs (100 a page, the next after the last
    # page's token), each described and reckoned by the same function, folded into one total by
    # the CLI's text too; a failed list or map leaves the cost unknown and the run going.
    from smtrain.core.prices import TUNING_COST_FUNCTION

    first, more = s["ListTuningTrainingJobs"], s["ListMoreTuningTrainingJobs"]
    for page in (first, more):
        assert page["Resource"] == "arn:aws:states:::aws-sdk:sagemaker:listTrainingJobsForHyperParameterTuningJob"
        assert page["Arguments"]["MaxResults"] == 100
        assert page["Next"] == "ReckonTuningTrainingJobs" and page["Output"] == "{% $states.input %}"
        assert [(c["ErrorEquals"], c["Next"]) for c in page["Catch"]] == [(["States.ALL"], "RegistrationRequested")]
    assert "NextToken" not in first["Arguments"]
    assert more["Arguments"]["NextToken"] == "{% $tuningTrialsNextToken %}"
    assert first["Assign"]["tuningCost"] == (
        '{% {"usd": null, "trainingJobs": 0, "trainingJobsOfUnknownCost": 0} %}')
    each = s["ReckonTuningTrainingJobs"]
    assert each["Type"] == "Map" and each["Items"] == "{% $tuningTrialNames %}"
    assert each["Next"] == "MoreTuningTrainingJobs"
    assert f"({TUNING_COST_FUNCTION})($tuningCost, $states.result)" in each["Assign"]["tuningCost"]
    job = each["ItemProcessor"]["States"]["ReckonTuningTrainingJob"]
    assert job["Resource"] == "arn:aws:states:::aws-sdk:sagemaker:describeTrainingJob"
    assert job["QueryLanguage"] == "JSONata", "a state in a Map keeps the machine's language unless it names one"
    assert f"({JOB_COST_FUNCTION})($states.result, " in job["Output"]
    (loop,) = s["MoreTuningTrainingJobs"]["Choices"]
    assert loop == {"Condition": "{% $tuningTrialsNextToken != null %}", "Next": "ListMoreTuningTrainingJobs"}
    assert s["MoreTuningTrainingJobs"]["Default"] == "ReportTuningCost"
    assert s["ReportResult"]["End"] is True
    assert s["ReportResult"]["Parameters"] == {
        "output.$": "States.JsonMerge($.report, $.registration, false)"}
    assert s["ReportResult"]["OutputPath"] == "$.output"
    for way_out in ("SkipRegistration", "KeepUnregistered", "RecordRegistration"):
        assert s[way_out]["ResultPath"] == "$.registration"
        assert s[way_out]["Next"] == "ReportResult"


def test_every_state_is_reachable_and_jsonpath(definition: Definition) -> None:
    s = states(definition)
    assert "QueryLanguage" not in definition or definition["QueryLanguage"] == "JSONPath"
    # JSONPath throughout but for the states that need JSONata (a state may choose its own
    # language inside a JSONPath state machine: developer guide, "Transforming data with JSONata"):
    # the rules, the channels, the gate, the model's frozen copy (its key and metadata) and the cost.
    assert {name for name, state in s.items() if state.get("QueryLanguage") == "JSONata"} == {
        "CheckProgramInput", "DescribeChannels", "EvaluateQualityGate", "FreezeRegisteredModel",
        "ReckonCost", "ListTuningTrainingJobs", "ListMoreTuningTrainingJobs", "ReckonTuningTrainingJobs",
        "MoreTuningTrainingJobs", "ReportTuningCost"}
    reachable, frontier = set(), [definition["StartAt"]]
    while frontier:
        name = frontier.pop()
        if name in reachable:
            continue
        reachable.add(name)
        state = s[name]
        targets = [state.get("Next"), state.get("Default")]
        targets += [c["Next"] for c in state.get("Choices", [])]
        targets += [c["Next"] for c in state.get("Catch", [])]
        frontier += [t for t in targets if t]
    assert reachable == set(s)
