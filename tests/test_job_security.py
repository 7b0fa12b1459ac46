"""Issue 11's per-job controls, as SageMaker receives them: the real synthesized state machine
runs on the offline interpreter and every request passes AWS's contract (botocore's model and the
API reference's rules, judged by the engine before the scripted SageMaker answers).

- ``VpcConfig`` and ``EnableNetworkIsolation`` on every training job and tuning trial;
- ``EnableInterContainerTrafficEncryption`` on every job with more than one instance;
- ``VolumeKmsKeyId`` with the stack key on instance types without local NVMe storage, never on
  those with it;
- the stack's tags beside the execution, program and kind on every job and tuning job;
- script mode under isolation receives its code as the ``code`` channel;
- the ``maxJobHours`` budget refuses an execution before any job is created.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from infra.settings import Settings, SettingsError
from smtrain.core import budget, contract
from smtrain.core.instance_storage import NVME_BY_FAMILY, UnknownInstanceStorage, has_local_nvme
from smtrain.local.engine import OfflineEngine
from smtrain.local.sagemaker_rules import rule_violations
from tests.conftest import code_without_script_requirements, synthesize
from tests.helpers import Synthesized
from tests.scripted_sagemaker import ScriptedBackend, scripted_engine

VPC = "vpc-0123456789abcdef0"
SUBNETS = ("subnet-0123456789abcdef0", "subnet-0fedcba987654321f")
GROUP = "sg-0123456789abcdef0"
COST_TAGS = {"cost-center": "ml-42", "team": "vision"}
#: An EBS-only type and one with local NVMe storage (smtrain/core/instance_storage.py).
EBS_TYPE, NVME_TYPE = "ml.m5.xlarge", "ml.g5.xlarge"
#: Instance-hours per execution: one default job (1 x 3600 s) is 1.
BUDGET_HOURS = 3


def isolated_settings(settings: Settings, **changes: Any) -> Settings:
    return dataclasses.replace(
        settings, network="isolated", vpc_id=VPC, subnet_ids=SUBNETS, security_group_ids=(GROUP,),
        max_job_hours=BUDGET_HOURS, extra_tags=COST_TAGS, experiment_tracking="server",
        allowed_instance_types=(EBS_TYPE, NVME_TYPE), default_instance_type=EBS_TYPE, **changes)


class Runs:
    def __init__(self, engine: OfflineEngine, backend: ScriptedBackend,
                 code: Path | None = None, app: Synthesized | None = None) -> None:
        self.engine, self.backend, self.count = engine, backend, 0
        #: The programs the app was synthesized from.
        self.code = code
        #: The synthesized app the engine runs.
        self.app = app

    def run(self, execution_input: dict[str, Any]) -> tuple[Any, list[tuple[str, dict[str, Any]]]]:
        self.backend.requests.clear()
        self.count += 1
        result = self.engine.run(execution_input, name=f"run-{self.count}", timeout=120)
        return result, list(self.backend.requests)


@pytest.fixture(scope="module")
def isolated(cdk_context: dict[str, Any], settings: Settings,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runs]:
    code = code_without_script_requirements(tmp_path_factory.mktemp("isolated-code") / "code")
    app = synthesize(cdk_context, isolated_settings(settings),
                     tmp_path_factory.mktemp("cdk.out-isolated"), training_code_dir=code)
    backend = ScriptedBackend()
    with scripted_engine(outdir=app.outdir, work_dir=tmp_path_factory.mktemp("isolated-work"),
                       backend=backend) as engine:
        yield Runs(engine, backend, code, app)


def isolated_code(runs: Runs) -> Path:
    assert runs.code is not None
    return runs.code


def _tags(request: dict[str, Any]) -> dict[str, str]:
    return {tag["Key"]: tag["Value"] for tag in request["Tags"]}


def test_isolated_script_job_on_two_ebs_instances(isolated: Runs) -> None:
    result, requests = isolated.run({"program": "digits_mlp", "instanceCount": 2,
                                     "maxRuntimeInSeconds": 1800})
    assert result.succeeded, result.cause
    ((action, request),) = requests
    assert action == "create_training_job"
    assert request["VpcConfig"] == {"SecurityGroupIds": [GROUP], "Subnets": list(SUBNETS)}
    assert request["EnableNetworkIsolation"] is True
    assert request["EnableInterContainerTrafficEncryption"] is True
    assert request["ResourceConfig"]["VolumeKmsKeyId"] == request["OutputDataConfig"]["KmsKeyId"], \
        "the EBS volume is encrypted with the stack key, as the model is"
    assert _tags(request) == {"project": "smtrain", **COST_TAGS, "smtrain:execution": result.name,
                              "smtrain:program": "digits_mlp", "smtrain:kind": "script"}
    # The code arrives as a channel: an isolated container cannot download it.
    hyperparameters = request["HyperParameters"]
    channels = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"]
                for c in request["InputDataConfig"]}
    assert set(channels) == {"train", "validation", contract.CODE_CHANNEL}
    code_uri = channels[contract.CODE_CHANNEL]
    assert code_uri.startswith("s3://cdk-hnb659fds-assets-") and code_uri.endswith(".gz")
    # A channel whose S3Prefix is one object holds that object under its file name.
    assert hyperparameters["sagemaker_submit_directory"] == \
        f"/opt/ml/input/data/code/{code_uri.rsplit('/', 1)[-1]}"
    assert contract.ENV_TRACKING_URI not in request.get("Environment", {}), \
        "an isolated container cannot reach MLflow: no tracking variables"


def test_one_instance_with_local_nvme(isolated: Runs) -> None:
    result, ((_, request),) = isolated.run({"program": "digits_lightgbm",
                                            "instanceType": NVME_TYPE})
    assert result.succeeded, result.cause
    assert "VolumeKmsKeyId" not in request["ResourceConfig"], \
        "SageMaker refuses a volume key on an instance type with local storage"
    assert request["EnableInterContainerTrafficEncryption"] is False
    assert request["EnableNetworkIsolation"] is True and request["VpcConfig"]["Subnets"] == list(SUBNETS)
    assert "sagemaker_submit_directory" not in request["HyperParameters"]
    assert [c["ChannelName"] for c in request["InputDataConfig"]] == ["train", "validation"]


def test_isolated_tuning_trials_carry_every_control(isolated: Runs) -> None:
    result, requests = isolated.run({"program": "digits_xgboost", "instanceCount": 2,
                                     "maxRuntimeInSeconds": 1800,
                                     "tuning": {"maxJobs": 2, "maxParallelJobs": 2}})
    assert result.succeeded, result.cause
    ((action, request), *_) = requests
    assert action == "create_hyper_parameter_tuning_job"
    definition = request["TrainingJobDefinition"]
    assert definition["VpcConfig"] == {"SecurityGroupIds": [GROUP], "Subnets": list(SUBNETS)}
    assert definition["EnableNetworkIsolation"] is True
    assert definition["EnableInterContainerTrafficEncryption"] is True
    assert "VolumeKmsKeyId" in definition["ResourceConfig"]
    # SageMaker copies a tuning job's tags to the training jobs it launches (API reference,
    # CreateHyperParameterTuningJob, Tags).
    assert _tags(request) == {"project": "smtrain", **COST_TAGS, "smtrain:execution": result.name,
                              "smtrain:program": "digits_xgboost", "smtrain:kind": "builtin"}


def test_over_budget_tuning_is_refused_before_any_job(isolated: Runs) -> None:
    # 1 instance x 3600 s x 4 jobs = 4 instance-hours, over 3; 3 jobs are exactly 3.
    result, requests = isolated.run({"program": "digits_mlp",
                                     "tuning": {"maxJobs": 4, "maxParallelJobs": 1}})
    assert result.error == contract.BUDGET_EXCEEDED_ERROR
    assert result.cause == (
        "this execution may use up to 4 instance-hours (instanceCount 1 x maxRuntimeInSeconds "
        "3600 s x 4 training jobs), over the budget of this deployment, maxJobHours 3: lower "
        "instanceCount, maxRuntimeInSeconds or tuning.maxJobs")
    assert requests == []
    result, requests = isolated.run({"program": "digits_mlp",
                                     "tuning": {"maxJobs": 3, "maxParallelJobs": 1}})
    assert result.succeeded, result.cause
    assert [action for action, _ in requests][:1] == ["create_hyper_parameter_tuning_job"]


def test_over_budget_training_is_refused_before_any_job(isolated: Runs) -> None:
    result, requests = isolated.run({"program": "digits_lightgbm", "instanceCount": 4})
    assert result.error == contract.BUDGET_EXCEEDED_ERROR
    assert result.cause == (
        "this execution may use up to 4 instance-hours (instanceCount 4 x maxRuntimeInSeconds "
        "3600 s), over the budget of this deployment, maxJobHours 3: lower instanceCount or "
        "maxRuntimeInSeconds")
    assert requests == []


def test_budget_of_a_grid_is_the_grid_size() -> None:
    state = {"config": {"instanceCount": 1, "maxRuntimeInSeconds": 3600},
             "tuning": {"config": {"strategy": "Grid", "maxJobs": 1, "parameterRanges": {
                 "CategoricalParameterRanges": [{"Name": "a", "Values": ["1", "2", "3"]},
                                                {"Name": "b", "Values": ["x", "y"]}]}}}}
    assert budget_check(state, 6, tuning=True)["exceeded"] is False
    answer = budget_check(state, 5.5, tuning=True)
    assert answer["exceeded"] is True
    assert "x 6 training jobs" in answer["cause"]


# -- Settings that must fail synth, naming the setting ---------------------------------------

def _synth_error(cdk_context: dict[str, Any], settings: Settings, tmp: Path,
                 code: Path | None = None) -> str:
    with pytest.raises(SettingsError) as error:
        synthesize(cdk_context, settings, tmp / "cdk.out", training_code_dir=code)
    return str(error.value)


def test_an_instance_type_missing_from_the_nvme_table_fails_synth(
        cdk_context: dict[str, Any], settings: Settings, tmp_path: Path) -> None:
    changed = dataclasses.replace(settings, allowed_instance_types=(
        *settings.allowed_instance_types, "ml.x9z.large"))
    message = _synth_error(cdk_context, changed, tmp_path)
    assert message.startswith("setting 'allowedInstanceTypes' has ml.x9z.large, whose local "
                              "storage is unknown")


@pytest.mark.parametrize(("changes", "setting"), [
    ({"subnet_ids": SUBNETS}, "subnetIds"),
    ({"network": "vpc", "vpc_id": VPC, "subnet_ids": SUBNETS[:1]}, "subnetIds"),
    ({"network": "vpc", "vpc_id": VPC}, "subnetIds"),
    ({"vpc_id": VPC, "subnet_ids": SUBNETS}, "vpcId"),
    ({"network": "vpc", "vpc_id": "vpc-1", "subnet_ids": SUBNETS}, "vpcId"),
    ({"network": "vpc", "vpc_id": VPC, "subnet_ids": (SUBNETS[0], SUBNETS[0])}, "subnetIds"),
    ({"network": "vpc", "vpc_id": VPC, "subnet_ids": SUBNETS,
      "security_group_ids": tuple(f"sg-0123456789abcdef{i}" for i in range(6))}, "securityGroupIds"),
    ({"security_group_ids": (GROUP,)}, "securityGroupIds"),
    ({"network": "private"}, "network"),
    ({"max_job_hours": 0.5}, "maxJobHours"),
    ({"max_job_hours": 3, "default_instance_count": 4}, "maxJobHours"),
    ({"training_log_retention_days": 2}, "trainingLogRetentionDays"),
    ({"inter_container_traffic_encryption": "yes"}, "interContainerTrafficEncryption"),
    ({"extra_tags": {"cost center (eu)": "x"}}, "tags"),
    ({"extra_tags": {f"k{i}": "v" for i in range(47)}}, "tags"),
    ({"extra_tags": {"smtrain:execution": "x"}}, "tags"),
    ({"extra_tags": {"project": "other"}}, "tags"),
    ({"max_job_hours": float("inf")}, "maxJobHours"),
    ({"max_job_hours": float("nan")}, "maxJobHours"),
])
def test_bad_settings_name_the_setting(settings: Settings, changes: dict[str, Any],
                                       setting: str) -> None:
    with pytest.raises(SettingsError, match=f"^setting '{setting}' is invalid"):
        dataclasses.replace(settings, **changes)


def test_budget_of_exactly_one_default_job_is_allowed(settings: Settings) -> None:
    one_job = settings.default_instance_count * settings.max_runtime_seconds / 3600
    assert dataclasses.replace(settings, max_job_hours=one_job).max_job_hours == one_job


def budget_check(state: dict[str, Any], max_job_hours: float, *, tuning: bool) -> dict[str, Any]:
    """The budget rule alone (smtrain/core/budget.py), evaluated with jsonata-python on ``state``:
    ``config`` (and, with ``tuning``, ``tuning.config``) as the state machine merges them."""
    import jsonata

    body = f"($budget := {budget.FUNCTION}; $budget($$.config, {'$$.tuning.config' if tuning else 'null'}, $max))"
    answer: dict[str, Any] = jsonata.Jsonata(body).evaluate(state, {"max": budget.budget_value(max_job_hours)})
    return answer


# -- The instance storage table and the rule SageMaker applies ----------------------------------

def test_nvme_table() -> None:
    # The API reference names these (ResourceConfig.VolumeSizeInGB).
    assert all(has_local_nvme(f"ml.{family}.xlarge") for family in ("p4d", "g4dn", "g5"))
    assert not any(has_local_nvme(f"ml.{family}.xlarge") for family in ("c5", "p2"))
    assert all(NVME_BY_FAMILY[f"{base}d"] and not NVME_BY_FAMILY[base] for base in ("m5", "c5", "r5"))
    with pytest.raises(UnknownInstanceStorage, match=r"not in smtrain/core/instance_storage\.py"):
        has_local_nvme("ml.x9z.large")


def test_the_engine_refuses_a_volume_key_on_local_storage() -> None:
    request = {"ResourceConfig": {"InstanceType": NVME_TYPE, "InstanceCount": 1,
                                  "VolumeSizeInGB": 30, "VolumeKmsKeyId": "arn:aws:kms:k"}}
    assert rule_violations("CreateTrainingJob", request) == [
        f"VolumeKmsKeyId is not supported for instance type {NVME_TYPE}: its local NVMe storage "
        "is encrypted by the instance"]
    request["ResourceConfig"]["InstanceType"] = EBS_TYPE
    assert rule_violations("CreateTrainingJob", request) == []
    tuning = {"TrainingJobDefinition": {"ResourceConfig": {
        "InstanceType": "ml.p4d.24xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30,
        "VolumeKmsKeyId": "k"}}}
    assert any("VolumeKmsKeyId" in v for v in rule_violations("CreateHyperParameterTuningJob", tuning))


# -- The IAM the controls need --------------------------------------------------------------------

def _statements(template: dict[str, Any], logical_prefix: str) -> list[dict[str, Any]]:
    return [statement for logical_id, resource in template["Resources"].items()
            if logical_id.startswith(logical_prefix)
            and resource["Type"] == "AWS::IAM::ManagedPolicy"
            for statement in resource["Properties"]["PolicyDocument"]["Statement"]]


def test_execution_role_may_give_the_volume_key_to_aws_resources_only(synthesized: Any) -> None:
    """A job that names a VolumeKmsKeyId needs kms:CreateGrant (developer guide, "CreateTrainingJob
    API: Execution Role Permissions"); only for AWS resources."""
    # digits_mlp's role (tests/test_storage_stack.py checks every job role's policy alike).
    (grant,) = [s for s in _statements(synthesized.storage, "ExecutionRoleDigitsMlpPolicy")
                if s.get("Sid") == "EncryptTrainingVolumes"]
    assert grant["Action"] == "kms:CreateGrant"
    assert "DataKey" in str(grant["Resource"])
    assert grant["Condition"] == {"Bool": {"kms:GrantIsForAWSResource": "true"}}


def test_isolated_code_channel_may_be_listed(isolated: Runs) -> None:
    """SageMaker lists an S3Prefix channel before downloading it: under isolation the role may
    list the asset bucket at each script archive's own key, and nothing else there."""
    assert isolated.app is not None
    statements = _statements(isolated.app.workflow, "ReadSourceDigitsMlp")
    (listing,) = [s for s in statements if s["Action"] == "s3:ListBucket"]
    (key,) = listing["Condition"]["StringEquals"]["s3:prefix"] if isinstance(
        listing["Condition"]["StringEquals"]["s3:prefix"], list) else [
        listing["Condition"]["StringEquals"]["s3:prefix"]]
    assert key.endswith(".gz") and "/" not in key
    assert "cdk-hnb659fds-assets" in str(listing["Resource"])
    assert [s["Action"] for s in statements] == ["s3:GetObject", "s3:ListBucket"]


def test_the_cli_refuses_an_over_budget_run_with_the_state_machines_words(isolated: Runs) -> None:
    """``smtrain start`` reads the budget and the defaults from the stack's outputs and refuses
    the run before it creates an execution, with the very cause the state machine gives."""
    from smtrain.cli.deployment_lookup import limits_from_outputs
    from smtrain.cli.execution_request import check_deployed
    from smtrain.core.errors import InputError
    from smtrain.core.programs import discover

    limits = limits_from_outputs(isolated.engine.deployment.outputs)
    assert limits is not None and limits.budget is not None
    assert (limits.budget.max_job_hours, limits.budget.default_instance_count,
            limits.budget.default_max_runtime) == (BUDGET_HOURS, 1, 3600)
    programs = discover(isolated_code(isolated))
    over = {"program": "digits_mlp", "tuning": {"maxJobs": 4, "maxParallelJobs": 1}}
    with pytest.raises(InputError) as refused:
        check_deployed(over, limits.deployment(), programs=programs)
    result, requests = isolated.run(over)
    assert requests == [] and result.error == contract.BUDGET_EXCEEDED_ERROR
    assert str(refused.value) == result.cause
    within = {"program": "digits_mlp", "instanceCount": 3}
    check_deployed(within, limits.deployment(), programs=programs)


def test_no_budget_no_budget_outputs(synthesized: Any) -> None:
    outputs = synthesized.workflow["Outputs"]
    assert contract.OUTPUT_MAX_JOB_HOURS not in outputs
    assert contract.OUTPUT_DEFAULT_INSTANCE_COUNT not in outputs


def test_start_checks_the_deployed_budget_of_the_programs_it_knows() -> None:
    """What ``smtrain start`` (and ``--local``) call once the stack's outputs are read."""
    from smtrain.cli.deployment_lookup import BudgetLimits, Limits
    from smtrain.cli.execution_request import check_deployed
    from smtrain.core.errors import InputError

    limits = Limits(allowed_instance_types=(EBS_TYPE,), max_instance_count=4,
                    budget=BudgetLimits(max_job_hours=2, default_instance_count=1,
                                          default_max_runtime=3600))
    check_deployed({"program": "digits_lightgbm", "instanceCount": 2}, limits.deployment())
    with pytest.raises(InputError, match=r"^this execution may use up to 3 instance-hours"):
        check_deployed({"program": "digits_lightgbm", "instanceCount": 3}, limits.deployment())
    unlimited = dataclasses.replace(limits, budget=None)
    check_deployed({"program": "digits_lightgbm", "instanceCount": 4}, unlimited.deployment())
    # The rest of the rules too, with the deployment's limits: the state machine's words.
    with pytest.raises(InputError, match=r"^field 'instanceCount' must be from 1 to 4$"):
        check_deployed({"program": "digits_lightgbm", "instanceCount": 5}, unlimited.deployment())


# -- the role holds itself to the settings (IAM conditions, evaluated) ---------------------------
def _create_context(request: dict[str, Any]) -> dict[str, Any]:
    """A create request's SageMaker condition keys, as the Service Authorization Reference names
    them ("the ... associated with the resource in the request"); a tuning job's come from its
    TrainingJobDefinition."""
    body = request.get("TrainingJobDefinition", request)
    resources = body["ResourceConfig"]
    context: dict[str, Any] = {"sagemaker:OutputKmsKeyArn": body["OutputDataConfig"]["KmsKeyId"],
                               "sagemaker:InstanceTypes": [resources["InstanceType"]]}
    if "VolumeKmsKeyId" in resources:
        context["sagemaker:VolumeKmsKeyArn"] = resources["VolumeKmsKeyId"]
    if "EnableNetworkIsolation" in body:
        context["sagemaker:NetworkIsolation"] = str(body["EnableNetworkIsolation"]).lower()
    if "VpcConfig" in body:
        context["sagemaker:VpcSubnets"] = list(body["VpcConfig"]["Subnets"])
        context["sagemaker:VpcSecurityGroupIds"] = list(body["VpcConfig"]["SecurityGroupIds"])
    return context


def test_the_role_allows_only_jobs_that_keep_the_settings(isolated: Runs) -> None:
    """The state machine role's own IAM enforces what its definition sends: the requests the
    state machine really made (training on EBS and on NVMe instances, tuning) are allowed; the
    same requests with another key, without isolation, in another subnet or security group,
    without the VPC, or on an instance type outside the allow-list are denied. Describe and stop
    carry none of these keys and stay allowed. (Policies evaluated, not their text.)"""
    from tests.iam_policy_eval import Account, Request

    assert isolated.app is not None
    account = Account(storage=isolated.app.storage, workflow=isolated.app.workflow)
    (machine,) = [arn for arn, lid in account.roles().items() if lid.startswith("TrainingStateMachineRole")]
    (key,) = {statement["Condition"]["ArnEquals"]["sagemaker:OutputKmsKeyArn"]
              for statement in account.identity_statements(machine)
              if "ArnEquals" in statement.get("Condition", {})}
    made = []
    for execution_input in ({"program": "digits_mlp", "instanceType": EBS_TYPE},
                            {"program": "digits_mlp", "instanceType": NVME_TYPE},
                            {"program": "digits_lightgbm", "tuning": {"maxJobs": 2, "maxParallelJobs": 1}}):
        result, requests = isolated.run(execution_input)
        assert result.succeeded, result.cause
        made += requests
    assert {action for action, _ in made} == {"create_training_job", "create_hyper_parameter_tuning_job"}
    for action, request in made:
        operation = {"create_training_job": ("CreateTrainingJob", "training-job", "TrainingJobName"),
                     "create_hyper_parameter_tuning_job": ("CreateHyperParameterTuningJob",
                                                           "hyper-parameter-tuning-job",
                                                           "HyperParameterTuningJobName")}[action]
        arn = f"arn:aws:sagemaker:us-east-1:123456789012:{operation[1]}/{request[operation[2]]}"
        context = _create_context(request)
        # The engine's key ARN is the deployment's; the evaluator names the key by its logical id.
        context["sagemaker:OutputKmsKeyArn"] = key
        if "sagemaker:VolumeKmsKeyArn" in context:
            context["sagemaker:VolumeKmsKeyArn"] = key

        def decision(changes: dict[str, Any], drop: tuple[str, ...] = (), *, context: dict[str, Any] = context,
                     action_name: str = f"sagemaker:{operation[0]}", arn: str = arn) -> str:
            changed = {k: v for k, v in {**context, **changes}.items() if k not in drop}
            return account.decide(Request(machine, action_name, arn, changed))

        assert decision({}) == "Allow", (action, context)
        other_key = "arn:aws:kms:us-east-1:123456789012:key/another"
        assert decision({"sagemaker:OutputKmsKeyArn": other_key}) != "Allow"
        assert decision({"sagemaker:VolumeKmsKeyArn": other_key}) != "Allow"
        assert decision({"sagemaker:NetworkIsolation": "false"}) != "Allow"
        assert decision({}, drop=("sagemaker:NetworkIsolation",)) != "Allow"
        assert decision({"sagemaker:VpcSubnets": [*SUBNETS, "subnet-elsewhere"]}) != "Allow"
        assert decision({"sagemaker:VpcSecurityGroupIds": ["sg-elsewhere"]}) != "Allow"
        assert decision({}, drop=("sagemaker:VpcSubnets", "sagemaker:VpcSecurityGroupIds")) != "Allow"
        assert decision({"sagemaker:InstanceTypes": ["ml.p4d.24xlarge"]}) != "Allow"
        if "sagemaker:VolumeKmsKeyArn" in context:  # an EBS volume: the stack key, not AWS's default key
            assert decision({}, drop=("sagemaker:VolumeKmsKeyArn",)) != "Allow"
        else:  # local NVMe storage: no volume key (SageMaker refuses one there)
            assert decision({"sagemaker:VolumeKmsKeyArn": key}) != "Allow"
        describe = "DescribeTrainingJob" if action == "create_training_job" else "DescribeHyperParameterTuningJob"
        assert account.decide(Request(machine, f"sagemaker:{describe}", arn)) == "Allow"
    # The NVMe instance's job has no volume key, and is allowed without one.
    assert any("VolumeKmsKeyId" not in r["ResourceConfig"] for a, r in made if a == "create_training_job")
