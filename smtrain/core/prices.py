"""What a training job cost: SageMaker's billable time times the instance's hourly price.

The price table (``prices.json`` beside this module) holds, per region, the on-demand USD price
per hour of each ``ml.*`` training instance type, with where it came from and when. It is
refreshed from AWS's Price List (``make prices``: ``smtrain/cli/price_table.py``) and ships
empty: no price is entered by hand, and none could be fetched where the project is built. A job
whose price is not in the table has an unknown cost, said as such.

The arithmetic is SageMaker's own (API reference, DescribeTrainingJob): "Multiply
``BillableTimeInSeconds`` by the number of instances (``InstanceCount``) ... to get the total
compute time SageMaker bills you", and the savings of managed spot training are
``(1 - BillableTimeInSeconds / TrainingTimeInSeconds) * 100``. Storage, data transfer and a warm
pool's wait are billed apart and not counted here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

from smtrain.core import contract

TABLE = Path(__file__).with_name("prices.json")

#: ``function($job, $prices)``: what a training job cost, from its DescribeTrainingJob ``$job``
#: and ``$prices`` (USD per instance-hour by instance type, of the job's region). The state
#: machine evaluates this text for a run's output (``cost``), and :func:`job_cost` for the CLI.
#: ``usd`` is null when the billable time or the price is unknown (``usdPerHour`` null: no price).
#: Compute only, as ``BillableTimeInSeconds`` counts it: a warm pool's wait after the job, storage
#: and data transfer are billed apart (``maxRunCost``'s bound counts the pool's wait too).
JOB_COST_FUNCTION = (
    "function($job, $prices) {( "
    "$instanceType := $job.ResourceConfig.InstanceType; "
    "$instances := $exists($job.ResourceConfig.InstanceCount) ? $job.ResourceConfig.InstanceCount : 1; "
    "$billable := $job.BillableTimeInSeconds; "
    "$price := $lookup($prices, $instanceType); "
    "{'instanceType': $instanceType, 'instanceCount': $instances, "
    "'billableTimeInSeconds': $exists($billable) ? $billable : null, "
    "'usdPerHour': $exists($price) ? $price : null, "
    "'usd': ($exists($billable) and $exists($price)) ? $round($billable * $instances * $price / 3600, 6) : null} )}"
)


#: What a tuning run's training jobs cost in all: ``$total`` is the total so far
#: (:data:`NO_TUNING_COST` before any job) and ``$costs`` more jobs' costs, each what
#: :data:`JOB_COST_FUNCTION` gives; the answer is the new total. The state machine folds it over
#: each page of a tuning job's training jobs (ListTrainingJobsForHyperParameterTuningJob) for
#: the run's output, and :func:`tuning_total` over all of them for the CLI. ``usd`` sums the
#: jobs of known cost and is null while no job's cost is known; ``trainingJobsOfUnknownCost``
#: counts the others (no price for the type, or no billable time).
TUNING_COST_FUNCTION = (
    "function($total, $costs) {( "
    "$known := $costs[usd != null]; "
    "$jobs := $total.trainingJobs + $count($costs); "
    "$unknown := $total.trainingJobsOfUnknownCost + $count($costs) - $count($known); "
    "{'usd': ($jobs - $unknown) > 0 ? $round(($total.usd != null ? $total.usd : 0) + $sum([$known.usd]), 6) : null, "
    "'trainingJobs': $jobs, 'trainingJobsOfUnknownCost': $unknown} )}"
)
#: The tuning total before any training job is counted.
NO_TUNING_COST: dict[str, Any] = {"usd": None, "trainingJobs": 0, "trainingJobsOfUnknownCost": 0}


@lru_cache(maxsize=1)
def _tuning_cost_expression() -> Any:
    import jsonata

    return jsonata.Jsonata(f"({TUNING_COST_FUNCTION})($total, $costs)")


def tuning_total(costs: Sequence[Mapping[str, Any]], total: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """:data:`TUNING_COST_FUNCTION` of ``costs`` (each :func:`reckon`'s answer) added to
    ``total`` (default :data:`NO_TUNING_COST`), in this process."""
    result: dict[str, Any] = _tuning_cost_expression().evaluate(
        None, {"total": dict(total if total is not None else NO_TUNING_COST),
               "costs": [dict(cost) for cost in costs]})
    return result


def tuning_line(name: str, total: Mapping[str, Any]) -> str:
    """One line for the CLI: a tuning job's total (:func:`tuning_total`'s answer, or the run
    output's ``cost`` of a tuning run)."""
    jobs, unknown = int(total.get("trainingJobs", 0)), int(total.get("trainingJobsOfUnknownCost", 0))
    unknown_note = (f" ({unknown} of unknown cost: no price, or no billable time yet)" if unknown else "")
    if total.get("usd") is None:
        return f"tuning job {name} cost: unknown over {jobs} training jobs{unknown_note}"
    return f"tuning job {name} cost: ${float(total['usd']):.4f} over {jobs} training jobs{unknown_note}"


@lru_cache(maxsize=1)
def _job_cost_expression() -> Any:
    import jsonata

    return jsonata.Jsonata(f"({JOB_COST_FUNCTION})($job, $prices)")


def reckon(description: Mapping[str, Any], prices: Mapping[str, float]) -> dict[str, Any]:
    """:data:`JOB_COST_FUNCTION` of a job's description and its region's prices, in this process."""
    result: dict[str, Any] = _job_cost_expression().evaluate(None, {"job": dict(description),
                                                                     "prices": dict(prices)})
    return result


@lru_cache(maxsize=4)
def load(path: Path = TABLE) -> dict[str, Any]:
    """The price table: ``{"source", "fetched", "regions": {region: {instance type: USD/hour}}}``."""
    table: dict[str, Any] = json.loads(path.read_text())
    return table


def hourly(region: str, instance_type: str, table: Mapping[str, Any] | None = None) -> float | None:
    """The on-demand USD price per instance-hour, or None when the table has none."""
    price = (table if table is not None else load()).get("regions", {}).get(region, {}).get(instance_type)
    return float(price) if isinstance(price, (int, float)) else None


@dataclass(frozen=True)
class JobCost:
    """A finished (or running) training job's billed compute."""

    instance_type: str
    instance_count: int
    billable_seconds: int | None
    training_seconds: int | None
    usd_per_hour: float | None
    region: str
    spot: bool = False

    @cached_property
    def usd(self) -> float | None:
        """The compute cost, or None when the billable time or the price is unknown: reckoned
        by :data:`JOB_COST_FUNCTION`, the text the state machine evaluates too (once per cost)."""
        description: dict[str, Any] = {"ResourceConfig": {"InstanceType": self.instance_type,
                                                          "InstanceCount": self.instance_count}}
        if self.billable_seconds is not None:
            description["BillableTimeInSeconds"] = self.billable_seconds
        prices = {self.instance_type: self.usd_per_hour} if self.usd_per_hour is not None else {}
        usd = reckon(description, prices)["usd"]
        return None if usd is None else float(usd)

    @property
    def spot_savings(self) -> float | None:
        """Managed spot's saving as a fraction (0.7 for 70 %); None on demand or unknown."""
        if not self.spot or not self.billable_seconds or not self.training_seconds:
            return None
        return 1 - self.billable_seconds / self.training_seconds

    def line(self) -> str:
        """One line for the CLI: the cost and how it was reckoned, or why it is unknown."""
        billed = (f"{self.billable_seconds} s billable x {self.instance_count} {self.instance_type}"
                  if self.billable_seconds is not None else "no billable time reported yet")
        savings = (f"; managed spot saved {self.spot_savings:.0%}" if self.spot_savings is not None else "")
        if self.usd_per_hour is None:
            return (f"cost: unknown ({billed}; no price for {self.instance_type} in {self.region}: "
                    f"run `make prices`){savings}")
        if self.usd is None:
            return f"cost: unknown ({billed} at ${self.usd_per_hour:g}/h){savings}"
        return f"cost: ${self.usd:.4f} ({billed} at ${self.usd_per_hour:g}/h on-demand{savings})"


def job_cost(description: Mapping[str, Any], region: str, table: Mapping[str, Any] | None = None) -> JobCost:
    """The cost of the training job SageMaker ``description`` (DescribeTrainingJob) describes.
    Under managed spot the billable time is already the discounted one (that is what the spot
    saving formula compares), so the on-demand price applies to it."""
    resources = description.get("ResourceConfig", {})
    instance_type = str(resources.get("InstanceType", "?"))
    billable = description.get("BillableTimeInSeconds")
    training = description.get("TrainingTimeInSeconds")
    return JobCost(instance_type=instance_type, instance_count=int(resources.get("InstanceCount", 1)),
                   billable_seconds=int(billable) if isinstance(billable, int) else None,
                   training_seconds=int(training) if isinstance(training, int) else None,
                   usd_per_hour=hourly(region, instance_type, table), region=region,
                   spot=bool(description.get("EnableManagedSpotTraining")))


def output_cost_line(output: Mapping[str, Any], region: str) -> str | None:
    """The cost line of a finished run from its output's ``cost`` (the state machine's
    reckoning: a training job's, or a tuning job's total), as ``smtrain status --local`` and the
    demo print it without asking SageMaker again; None when the output has none."""
    cost = output.get(contract.OUTPUT_COST)
    if not isinstance(cost, Mapping):
        return None
    if "error" in cost:
        kind, name = (("tuning job", output["tuningJobName"]) if "tuningJobName" in output
                      else ("job", output.get("trainingJobName")))
        return f"{kind} {name} cost: unknown (SageMaker could not be asked again: {cost['error']})"
    if "tuningJobName" in output:
        return tuning_line(str(output["tuningJobName"]), cost)
    name = output.get("trainingJobName")
    billable, price = cost.get("billableTimeInSeconds"), cost.get("usdPerHour")
    job = JobCost(instance_type=str(cost.get("instanceType")), instance_count=int(cost.get("instanceCount", 1)),
                         billable_seconds=int(billable) if isinstance(billable, (int, float)) else None,
                         training_seconds=None, usd_per_hour=float(price) if isinstance(price, (int, float)) else None,
                         region=region)
    return f"job {name} {job.line()}"
