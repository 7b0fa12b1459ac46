"""Finding the deployed resources: explicit settings first, then the workflow stack's outputs."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smtrain.cli.outcome import ResourceNotFound
from smtrain.core import contract, input_rules

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class ProjectConfig:
    """What the CLI reads from the project's cdk.json (no AWS call): only which stack to ask.
    The limits a run is checked against come from the deployed stack (:class:`Limits`)."""

    stack_name: str


def project_config(cdk_json: Path = ROOT / "cdk.json") -> ProjectConfig:
    training: Mapping[str, Any] = {}
    if cdk_json.is_file():
        training = json.loads(cdk_json.read_text()).get("context", {}).get(contract.CONTEXT_KEY, {})
    prefix = training.get("namePrefix", contract.DEFAULT_NAME_PREFIX)
    return ProjectConfig(stack_name=contract.workflow_stack_name(prefix))


def framework_defaults(cdk_json: Path = ROOT / "cdk.json") -> dict[str, str]:
    """The framework settings of the project's cdk.json (``pytorchVersion`` ...), for showing
    which build a program without its own ``framework_version`` gets; empty where unreadable."""
    try:
        training = json.loads(cdk_json.read_text()).get("context", {}).get(contract.CONTEXT_KEY, {})
    except (OSError, ValueError):
        return {}
    names = {name for names in contract.FRAMEWORK_SETTINGS.values() for name in names if name}
    return {name: str(training[name]) for name in sorted(names)
            if isinstance(training, Mapping) and isinstance(training.get(name), str)}


@dataclass(frozen=True)
class BudgetLimits:
    """The deployment's ``maxJobHours`` and the defaults a run's hours are computed with."""

    max_job_hours: float
    default_instance_count: int
    default_max_runtime: int


@dataclass(frozen=True)
class RunCostLimits:
    """The deployment's ``maxRunCost``, its prices and the defaults a run's cost is reckoned with."""

    max_run_cost: float
    prices: Mapping[str, float]
    default_instance_type: str
    default_instance_count: int
    default_max_runtime: int


@dataclass(frozen=True)
class Limits:
    """The deployed stack's limits on a run, from its outputs."""

    allowed_instance_types: tuple[str, ...]
    max_instance_count: int
    #: None when the deployment sets no budget.
    budget: BudgetLimits | None = None
    #: The team queue (``input_rules.QUEUE_KINDS``); None where the stack predates the output.
    queue: str | None = None
    #: ``maxRunCost`` with its prices, and the default instance type it reads.
    run_cost: RunCostLimits | None = None

    def deployment(self) -> input_rules.Deployment:
        """What the input rules may check of this deployment: with either budget, the defaults
        its figures are reckoned with (the state machine checks with all of them), and the
        budget itself."""
        defaults: dict[str, Any] = {}
        checks: dict[str, Any] = {}
        if self.run_cost is not None:
            defaults |= {contract.INSTANCE_TYPE: self.run_cost.default_instance_type,
                         contract.INSTANCE_COUNT: self.run_cost.default_instance_count,
                         contract.MAX_RUNTIME: self.run_cost.default_max_runtime}
            checks |= {"max_run_cost": self.run_cost.max_run_cost, "run_prices": self.run_cost.prices}
        if self.budget is not None:
            defaults |= {contract.INSTANCE_COUNT: self.budget.default_instance_count,
                         contract.MAX_RUNTIME: self.budget.default_max_runtime}
            # maxRuntimeInSeconds is the deployment's default and its ceiling alike.
            checks |= {"max_runtime_seconds": self.budget.default_max_runtime,
                       "max_job_hours": self.budget.max_job_hours}
        return input_rules.Deployment(defaults=defaults, allowed_instance_types=self.allowed_instance_types,
                                      max_instance_count=self.max_instance_count, queue=self.queue,
                                      **checks)


def limits_from_outputs(outputs: Mapping[str, str]) -> Limits | None:
    """None when the stack predates these outputs (the state machine still checks)."""
    allowed = outputs.get(contract.OUTPUT_ALLOWED_INSTANCE_TYPES)
    count = outputs.get(contract.OUTPUT_MAX_INSTANCE_COUNT)
    if allowed is None or count is None:
        return None
    budget = None
    hours = outputs.get(contract.OUTPUT_MAX_JOB_HOURS)
    default_count = outputs.get(contract.OUTPUT_DEFAULT_INSTANCE_COUNT)
    default_runtime = outputs.get(contract.OUTPUT_DEFAULT_MAX_RUNTIME)
    if hours is not None and default_count is not None and default_runtime is not None:
        budget = BudgetLimits(max_job_hours=float(hours), default_instance_count=int(default_count),
                                default_max_runtime=int(default_runtime))
    queue = outputs.get(contract.OUTPUT_TEAM_QUEUE)
    run_cost = None
    cost, run_prices = outputs.get(contract.OUTPUT_MAX_RUN_COST), outputs.get(contract.OUTPUT_RUN_PRICES)
    default_type = outputs.get(contract.OUTPUT_DEFAULT_INSTANCE_TYPE)
    if None not in (cost, run_prices, default_type, default_count, default_runtime):
        run_cost = RunCostLimits(max_run_cost=float(str(cost)), prices=json.loads(str(run_prices)),
                                 default_instance_type=str(default_type),
                                 default_instance_count=int(str(default_count)),
                                 default_max_runtime=int(str(default_runtime)))
    return Limits(allowed_instance_types=tuple(t for t in allowed.split(",") if t),
                  max_instance_count=int(count), budget=budget,
                  queue=queue if queue in input_rules.QUEUE_KINDS else None, run_cost=run_cost)


@dataclass(frozen=True)
class Resources:
    state_machine_arn: str
    data_bucket: str | None
    #: Known when the stack's outputs were read (not with an explicit ARN and bucket).
    limits: Limits | None = None


def explicit_resources(*, state_machine_arn: str | None, data_bucket: str | None,
                       environ: Mapping[str, str] = os.environ) -> tuple[str | None, str | None]:
    return (state_machine_arn or environ.get(contract.ENV_STATE_MACHINE_ARN) or None,
            data_bucket or environ.get(contract.ENV_DATA_BUCKET) or None)


def stack_outputs(cloudformation: Any, stack_name: str) -> dict[str, str]:
    from botocore.exceptions import ClientError

    try:
        stacks = cloudformation.describe_stacks(StackName=stack_name)["Stacks"]
    except ClientError as error:
        if "does not exist" in str(error):
            raise ResourceNotFound(f"stack {stack_name} is not deployed in this account and region: run "
                               "`npx cdk deploy --all`, pass --stack-name, or set "
                               "--state-machine-arn / SMTRAIN_STATE_MACHINE_ARN") from None
        raise
    return {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])}


def find_resources(session: Any, *, stack_name: str, state_machine_arn: str | None,
                   data_bucket: str | None, need_bucket: bool) -> Resources:
    """Explicit values win; what is missing comes from the stack's outputs."""
    arn, bucket = explicit_resources(state_machine_arn=state_machine_arn, data_bucket=data_bucket)
    limits = None
    if arn is None or (need_bucket and bucket is None):
        outputs = stack_outputs(session.client("cloudformation"), stack_name)
        arn = arn or outputs.get(contract.OUTPUT_STATE_MACHINE_ARN)
        bucket = bucket or outputs.get(contract.OUTPUT_DATA_BUCKET)
        limits = limits_from_outputs(outputs)
        if arn is None:
            raise ResourceNotFound(f"stack {stack_name} has no {contract.OUTPUT_STATE_MACHINE_ARN} output")
    return Resources(state_machine_arn=arn, data_bucket=bucket, limits=limits)
