"""Warm pools offline (smtrain/local/warm_pools.py): which job a new one starts on, and the
WarmPoolStatus its DescribeTrainingJob gives, by AWS's documented matching criteria and states."""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import pytest

from smtrain.cli.watch import warm_pool_line
from smtrain.local.sagemaker_model import response_violations
from smtrain.local.warm_pools import WarmPools

ROLE = "arn:aws:iam::123456789012:role/execution"
REQUEST: dict[str, Any] = {
    "RoleArn": ROLE,
    "ResourceConfig": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 2, "VolumeSizeInGB": 30,
                       "VolumeKmsKeyId": "arn:aws:kms:us-east-1:123456789012:key/k",
                       "KeepAlivePeriodInSeconds": 600},
    "VpcConfig": {"SecurityGroupIds": ["sg-1"], "Subnets": ["subnet-1", "subnet-2"]},
    "EnableNetworkIsolation": True,
    "EnableInterContainerTrafficEncryption": True,
}


def _request(**changes: Any) -> dict[str, Any]:
    request = copy.deepcopy(REQUEST)
    for path, value in changes.items():
        *parents, leaf = path.split("__")
        target = request
        for parent in parents:
            target = target[parent]
        target[leaf] = value
    return request


def test_a_completed_jobs_pool_waits_and_the_next_matching_job_starts_on_it(tmp_path: Path) -> None:
    pools = WarmPools(tmp_path / "warm-pools.json")
    first = pools.start("job-a", REQUEST)
    assert first is not None and first.status() == {"Status": "InUse"}
    pools.finish("job-a", completed=True)
    assert first.status()["Status"] == "Available"
    # The subnets in another order are the same VpcConfig.
    second = pools.start("job-b", _request(VpcConfig__Subnets=["subnet-2", "subnet-1"]))
    assert second is not None and second.started_on == "job-a"
    assert first.ended_at is not None and first.reused_at is not None
    assert first.status() == {"Status": "Reused", "ReusedByJob": "job-b",
                              "ResourceRetainedBillableTimeInSeconds": round(first.reused_at - first.ended_at)}
    assert first.status(now=first.ended_at + 5000) == first.status(), "a reused pool's bill stops there"
    third = pools.start("job-c", REQUEST)  # job-a's pool is taken; job-b's still runs
    assert third is not None and third.started_on is None


@pytest.mark.parametrize("change", [
    {"RoleArn": "arn:aws:iam::123456789012:role/other"},
    {"ResourceConfig__InstanceType": "ml.m5.2xlarge"},
    {"ResourceConfig__InstanceCount": 1},
    {"ResourceConfig__VolumeSizeInGB": 31},
    {"ResourceConfig__VolumeKmsKeyId": "arn:aws:kms:us-east-1:123456789012:key/other"},
    {"VpcConfig__SecurityGroupIds": ["sg-2"]},
    {"VpcConfig__Subnets": ["subnet-1"]},
    {"EnableNetworkIsolation": False},
    {"EnableInterContainerTrafficEncryption": False},
])
def test_a_job_that_differs_in_a_matching_criterion_starts_cold(tmp_path: Path, change: dict[str, Any]) -> None:
    pools = WarmPools(tmp_path / "warm-pools.json")
    pools.start("job-a", REQUEST)
    pools.finish("job-a", completed=True)
    other = pools.start("job-b", _request(**change))
    assert other is not None and other.started_on is None


def test_no_pool_without_keep_alive_after_a_failure_or_past_its_period(tmp_path: Path) -> None:
    pools = WarmPools(tmp_path / "warm-pools.json")
    assert pools.start("job-0", _request(ResourceConfig__KeepAlivePeriodInSeconds=0)) is None
    failed = pools.start("job-a", REQUEST)
    assert failed is not None
    pools.finish("job-a", completed=False)
    assert failed.status() == {"Status": "Terminated", "ResourceRetainedBillableTimeInSeconds": 0}
    expired = pools.start("job-b", REQUEST)
    assert expired is not None and expired.started_on is None
    pools.finish("job-b", completed=True)
    assert expired.ended_at is not None
    expired.ended_at -= 601
    assert expired.status() == {"Status": "Terminated", "ResourceRetainedBillableTimeInSeconds": 600}
    late = pools.start("job-c", REQUEST)
    assert late is not None and late.started_on is None


def test_the_next_engine_on_the_work_dir_starts_on_the_pool(tmp_path: Path) -> None:
    """``smtrain start --local`` runs each execution in a process of its own: the pool a run left
    is recorded under the work directory, and the next run with it starts there (once)."""
    record = tmp_path / "warm-pools.json"
    earlier = WarmPools(record)
    earlier.start("job-a", REQUEST)
    earlier.finish("job-a", completed=True)
    later = WarmPools(record)
    reused = later.start("job-b", REQUEST)
    assert reused is not None and reused.started_on == "job-a"
    assert WarmPools(record).start("job-c", REQUEST).started_on is None  # type: ignore[union-attr]


def test_two_engines_on_one_work_dir_never_take_the_same_pool(tmp_path: Path) -> None:
    """An engine that saw a pool in the record and did not take it, then records its own job's
    end, must not bring back the pool another engine took meanwhile; and the engine whose job
    left the pool learns who took it."""
    record = tmp_path / "warm-pools.json"
    first = WarmPools(record)
    first.start("job-x", REQUEST)
    first.finish("job-x", completed=True)
    bystander = WarmPools(record)
    assert bystander.start("job-other", _request(ResourceConfig__InstanceType="ml.c5.xlarge")) is not None
    taker = WarmPools(record)
    assert taker.start("job-b", REQUEST).started_on == "job-x"  # type: ignore[union-attr]
    bystander.finish("job-other", completed=True)
    assert WarmPools(record).start("job-c", REQUEST).started_on is None  # type: ignore[union-attr]
    first.start("job-y", _request(ResourceConfig__InstanceType="ml.c5.2xlarge"))  # reads the record
    assert first._pools["job-x"].status()["ReusedByJob"] == "job-b"


def test_the_status_is_one_aws_gives_and_the_cli_says_what_it_means(tmp_path: Path) -> None:
    pools = WarmPools(tmp_path / "warm-pools.json")
    pool = pools.start("job-a", REQUEST)
    assert pool is not None
    pools.finish("job-a", completed=True)
    pools.start("job-b", REQUEST)
    now = time.time()
    def pool_problems(status: dict[str, Any]) -> list[str]:  # botocore's output shape
        return [p for p in response_violations("DescribeTrainingJob", {"WarmPoolStatus": status})
                if "WarmPoolStatus" in p]

    assert pool_problems({"Status": "Warm"}), "the check can fail"
    for status in (pool.status(now), {"Status": "InUse"}, pools.start("job-c", REQUEST).status(now)):  # type: ignore[union-attr]
        assert pool_problems(status) == []
    line = warm_pool_line({"WarmPoolStatus": pool.status(now), "ResourceConfig": REQUEST["ResourceConfig"]})
    assert line is not None and line.startswith("warm pool: reused by job-b (") and "x 2 instance(s) billed" in line
    assert warm_pool_line({"ResourceConfig": REQUEST["ResourceConfig"]}) is None
    # What the wait cost, where the price table has the instance's price (a fixture's made-up one).
    waited = {"WarmPoolStatus": {"Status": "Available", "ResourceRetainedBillableTimeInSeconds": 1800},
              "ResourceConfig": REQUEST["ResourceConfig"]}
    table = {"regions": {"us-east-1": {REQUEST["ResourceConfig"]["InstanceType"]: 0.5}}}
    priced = warm_pool_line(waited, region="us-east-1", table=table)
    count = REQUEST["ResourceConfig"]["InstanceCount"]
    assert priced is not None and (f"1800 s retained x {count} instance(s) billed, "
                                   f"${1800 * count * 0.5 / 3600:.4f} at $0.5/h so far") in priced
    unpriced = warm_pool_line(waited, region="us-east-1", table={"regions": {}})
    assert unpriced is not None and "billed so far" in unpriced and "$" not in unpriced


# -- the rules a warm pool's run passes -----------------------------------------------------------
def _deployment(*, spot: bool, max_job_hours: float | None = None) -> Any:
    from smtrain.core.input_rules import Deployment, InputDefaults

    defaults = InputDefaults(instance_type="ml.m5.xlarge", instance_count=1, volume_size_gb=30,
                             max_runtime_seconds=3600, spot=spot)
    return Deployment(defaults=defaults.as_input(), allowed_instance_types=["ml.m5.xlarge"],
                      max_instance_count=4, max_runtime_seconds=3600, max_job_hours=max_job_hours)


def test_a_spot_deployment_takes_a_warm_pool_on_demand() -> None:
    """With spotByDefault, a pool needs "spot": false (smtrain start --no-spot), which the rules
    accept; without it the refusal names the deployment's default."""
    from smtrain.cli.execution_request import build_input
    from smtrain.core import input_rules, programs

    shipped = programs.discover()
    spot_default = _deployment(spot=True)
    (problem,) = input_rules.check(shipped, {"program": "digits_mlp", "keepAliveSeconds": 600},
                                   deployment=spot_default).problems
    assert problem["cause"].startswith("field 'keepAliveSeconds' must be 0 with spot (the deployment's default)")
    on_demand = build_input(program=shipped["digits_mlp"], programs=shipped, hyperparameters={},
                            instance_type=None, instance_count=None, spot=False, channels={}, tuning=None,
                            keep_alive=600, on_demand=True)
    assert on_demand == {"program": "digits_mlp", "spot": False, "keepAliveSeconds": 600}
    assert input_rules.check(shipped, on_demand, deployment=spot_default).problems == []


def test_the_hour_budget_counts_the_pool_s_wait() -> None:
    """A waiting pool's instances are billed: maxJobHours counts instanceCount x
    (maxRuntimeInSeconds + keepAliveSeconds), and the cause says so."""
    from smtrain.core import input_rules, programs

    shipped = programs.discover()
    budget = _deployment(spot=False, max_job_hours=2)
    fits = {"program": "digits_mlp", "instanceCount": 1, "keepAliveSeconds": 3600}
    assert input_rules.check(shipped, fits, deployment=budget).problems == []
    (problem,) = input_rules.check(shipped, {**fits, "instanceCount": 2, "keepAliveSeconds": 600},
                                   deployment=budget).problems
    assert problem == {"error": "JobHoursBudgetExceeded", "cause": (
        "this execution may use up to 2.33 instance-hours (instanceCount 2 x (maxRuntimeInSeconds 3600 s "
        "+ keepAliveSeconds 600 s of warm pool)), over the budget of this deployment, maxJobHours 2: "
        "lower instanceCount, maxRuntimeInSeconds or keepAliveSeconds")}
    # Without a pool, the same run's cause is the one it always was.
    (plain,) = input_rules.check(shipped, {"program": "digits_mlp", "instanceCount": 3},
                                 deployment=budget).problems
    assert plain["cause"].endswith("(instanceCount 3 x maxRuntimeInSeconds 3600 s), over the budget of "
                                   "this deployment, maxJobHours 2: lower instanceCount or maxRuntimeInSeconds")
