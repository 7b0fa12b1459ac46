"""What a run cost: SageMaker's billable time x the instance's price (smtrain/core/prices.py), the
price table's refresh from AWS's Price List (smtrain/cli/price_table.py), and the CLI's lines.

The AWS calls go through botocore's Stubber, which checks each request and response against the
service's model; the Price List entries follow the documented GetProducts format."""

from __future__ import annotations

import dataclasses
import datetime
import json
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from infra.settings import Settings, SettingsError
from smtrain.cli.deployment_lookup import limits_from_outputs
from smtrain.cli.price_table import refresh, training_prices
from smtrain.cli.run_costs import reckon_run
from smtrain.core import contract, input_rules, prices, programs
from tests.conftest import synthesize
from tests.helpers import Synthesized
from tests.scripted_sagemaker import ScriptedBackend, scripted_engine

TABLE = {"regions": {"us-east-1": {"ml.m5.xlarge": 0.5, "ml.g5.xlarge": 1.5}}}


def entry(attributes: dict[str, str], usd: str, unit: str = "Hrs") -> str:
    """One GetProducts PriceList entry (AWS Billing user guide, "Using the AWS Price List Query API")."""
    return json.dumps({
        "product": {"productFamily": "ML Instance", "attributes": attributes, "sku": "SKU"},
        "serviceCode": "AmazonSageMaker",
        "terms": {"OnDemand": {"SKU.JRTCKXETXF": {"priceDimensions": {"SKU.JRTCKXETXF.6YS6EN2CT7": {
            "unit": unit, "pricePerUnit": {"USD": usd}, "description": "per hour"}}}}},
    })


def test_the_price_list_is_read_for_training_instances_only() -> None:
    found = training_prices([
        entry({"instanceType": "ml.m5.xlarge-Training", "regionCode": "us-east-1"}, "0.5000000000"),
        entry({"instanceName": "ml.g5.xlarge", "component": "Training"}, "1.5"),
        entry({"instanceType": "ml.c5.xlarge", "usagetype": "USE1-Train:ml.c5.xlarge"}, "0.25"),
        entry({"instanceType": "ml.m5.xlarge-Hosting"}, "0.6"),  # serving, not training
        entry({"instanceType": "ml.t3.medium-Notebook"}, "0.05"),
        entry({"instanceType": "ml.m5.large-Training"}, "0.1", unit="GB-Mo"),  # storage
        entry({"instanceType": "ml.m5.2xlarge-Training"}, "0.0000000000"),  # free tier line
    ])
    assert found == {"ml.m5.xlarge": 0.5, "ml.g5.xlarge": 1.5, "ml.c5.xlarge": 0.25}
    with pytest.raises(ValueError, match=r"two on-demand prices for ml\.m5\.xlarge"):
        training_prices([entry({"instanceType": "ml.m5.xlarge-Training"}, "0.5"),
                         entry({"component": "Training", "instanceName": "ml.m5.xlarge"}, "0.9")])


def test_make_prices_pages_through_get_products_and_keeps_other_regions(tmp_path: Path) -> None:
    table_path = tmp_path / "prices.json"
    table_path.write_text(json.dumps({"source": "s", "fetched": None, "regions": {"eu-west-1": {"ml.m5.xlarge": 0.6}}}))
    pricing = boto3.client("pricing", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    request = {"ServiceCode": "AmazonSageMaker", "FormatVersion": "aws_v1",
               "Filters": [{"Type": "TERM_MATCH", "Field": "regionCode", "Value": "us-east-1"}]}
    with Stubber(pricing) as stub:
        stub.add_response("get_products", {"PriceList": [entry({"instanceType": "ml.m5.xlarge-Training"}, "0.5")],
                                           "NextToken": "page-2", "FormatVersion": "aws_v1"}, request)
        stub.add_response("get_products", {"PriceList": [entry({"component": "Training",
                                                                "instanceName": "ml.g5.xlarge"}, "1.5")],
                                           "FormatVersion": "aws_v1"}, {**request, "NextToken": "page-2"})
        table = refresh(pricing, ["us-east-1"], table_path, now=datetime.datetime(2026, 12, 6))
        stub.assert_no_pending_responses()
    assert json.loads(table_path.read_text()) == table
    assert table["regions"] == {"eu-west-1": {"ml.m5.xlarge": 0.6},
                                "us-east-1": {"ml.g5.xlarge": 1.5, "ml.m5.xlarge": 0.5}}
    assert table["fetched"] == "2026-12-06"


def describe(name: str, *, billable: int | None, training: int | None, count: int = 1,
             instance_type: str = "ml.m5.xlarge", spot: bool = False) -> dict[str, Any]:
    """A DescribeTrainingJob answer with what the cost reads (and what the model requires)."""
    described: dict[str, Any] = {
        "TrainingJobName": name, "TrainingJobArn": f"arn:aws:sagemaker:us-east-1:123456789012:training-job/{name}",
        "ModelArtifacts": {"S3ModelArtifacts": "s3://b/m.tar.gz"}, "TrainingJobStatus": "Completed",
        "SecondaryStatus": "Completed", "AlgorithmSpecification": {"TrainingInputMode": "File"},
        "ResourceConfig": {"InstanceType": instance_type, "InstanceCount": count, "VolumeSizeInGB": 30},
        "StoppingCondition": {"MaxRuntimeInSeconds": 3600}, "CreationTime": datetime.datetime(2026, 12, 6),
        "EnableManagedSpotTraining": spot}
    if billable is not None:
        described["BillableTimeInSeconds"] = billable
    if training is not None:
        described["TrainingTimeInSeconds"] = training
    return described


def test_a_job_costs_its_billable_time_on_every_instance_at_the_hourly_price() -> None:
    cost = prices.job_cost(describe("a", billable=360, training=360, count=2), "us-east-1", TABLE)
    assert cost.usd == pytest.approx(360 * 2 * 0.5 / 3600)
    assert cost.line() == "cost: $0.1000 (360 s billable x 2 ml.m5.xlarge at $0.5/h on-demand)"
    spot = prices.job_cost(describe("b", billable=300, training=1000, spot=True), "us-east-1", TABLE)
    assert spot.spot_savings == pytest.approx(0.7)  # (1 - Billable / Training), the API reference's formula
    assert spot.line().endswith("; managed spot saved 70%)")
    unknown = prices.job_cost(describe("c", billable=60, training=60, instance_type="ml.c5.xlarge"),
                              "us-east-1", TABLE)
    assert unknown.usd is None
    assert unknown.line() == ("cost: unknown (60 s billable x 1 ml.c5.xlarge; no price for ml.c5.xlarge in "
                              "us-east-1: run `make prices`)")
    running = prices.job_cost(describe("d", billable=None, training=None), "us-east-1", TABLE)
    assert running.line() == "cost: unknown (no billable time reported yet at $0.5/h)"


def test_the_cli_totals_a_tuning_job_over_its_training_jobs() -> None:
    sagemaker = boto3.client("sagemaker", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    with Stubber(sagemaker) as stub:
        stub.add_response("describe_training_job", describe("smtrain-run-0", billable=720, training=720),
                          {"TrainingJobName": "smtrain-run-0"})
        stub.add_client_error("describe_training_job", "ValidationException", "Requested resource not found.",
                              expected_params={"TrainingJobName": "smtrain-tune"})
        stub.add_response("list_training_jobs_for_hyper_parameter_tuning_job", {"TrainingJobSummaries": [
            {"TrainingJobName": name, "TrainingJobArn": f"arn:aws:sagemaker:us-east-1:123456789012:training-job/{name}",
             "CreationTime": datetime.datetime(2026, 12, 6), "TrainingJobStatus": "Completed",
             "TunedHyperParameters": {}}
            for name in ("smtrain-tune-001-a", "smtrain-tune-002-b")]},
            {"HyperParameterTuningJobName": "smtrain-tune", "MaxResults": 100})
        stub.add_response("describe_training_job", describe("smtrain-tune-001-a", billable=3600, training=3600),
                          {"TrainingJobName": "smtrain-tune-001-a"})
        stub.add_response("describe_training_job", describe("smtrain-tune-002-b", billable=1800, training=1800,
                                                            instance_type="ml.g5.xlarge"),
                          {"TrainingJobName": "smtrain-tune-002-b"})
        lines = reckon_run(sagemaker, ["smtrain-run-0", "smtrain-tune"], "us-east-1", TABLE).lines
        stub.assert_no_pending_responses()
    assert lines == ["job smtrain-run-0 cost: $0.1000 (720 s billable x 1 ml.m5.xlarge at $0.5/h on-demand)",
                     "tuning job smtrain-tune cost: $1.2500 over 2 training jobs"]


def test_the_shipped_table_says_where_prices_come_from_and_holds_none_entered_by_hand() -> None:
    table = prices.load()
    assert "pricing:GetProducts" in table["source"] and "make prices" in table["source"]
    # Filled only by `make prices` (which sets "fetched"): never a hand-entered number.
    assert (table["fetched"] is None) == (table["regions"] == {})


# -- maxRunCost: the budget in money -------------------------------------------------------

#: Every allowed instance type of cdk.json priced (made-up numbers: a fixture, not AWS's prices).
PRICED = {"regions": {"us-east-1": {"ml.m5.large": 0.1, "ml.m5.xlarge": 0.2, "ml.m5.2xlarge": 0.4,
                                    "ml.c5.xlarge": 0.2, "ml.c5.2xlarge": 0.4, "ml.g5.xlarge": 1.5,
                                    "ml.g5.2xlarge": 1.7}}}


def test_max_run_cost_fails_synth_without_the_prices_it_needs(settings: Settings) -> None:
    with pytest.raises(SettingsError, match=r"'maxRunCost'.*missing: ml\.m5\.large.*make prices"):
        dataclasses.replace(settings, max_run_cost=5)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(prices, "load", lambda path=prices.TABLE: PRICED)
        with pytest.raises(SettingsError, match="'maxRunCost'"):
            dataclasses.replace(settings, max_run_cost=-1)
        assert dataclasses.replace(settings, max_run_cost=5).run_prices == PRICED["regions"]["us-east-1"]


@pytest.fixture(scope="module")
def budgeted_app(cdk_context: dict[str, Any], settings: Settings,
                 tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    """maxRunCost 1 USD with PRICED's prices (an hour of ml.m5.xlarge is 0.2): synthesized fresh,
    as a patched price table is not in the kept assemblies' key (tests/assembly_cache.py)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(prices, "load", lambda path=prices.TABLE: PRICED)
        return synthesize(cdk_context, dataclasses.replace(settings, max_run_cost=1),
                          tmp_path_factory.mktemp("cdk.out-run-cost"), fresh=True)


def test_a_run_over_max_run_cost_is_refused_before_any_job(budgeted_app: Synthesized, tmp_path: Path) -> None:
    outputs = {key: value["Value"] for key, value in budgeted_app.workflow["Outputs"].items()}
    assert outputs[contract.OUTPUT_MAX_RUN_COST] == "1"
    assert json.loads(outputs[contract.OUTPUT_RUN_PRICES]) == PRICED["regions"]["us-east-1"]
    over = {"program": "digits_mlp", "instanceType": "ml.g5.xlarge"}  # 1 h x 1.5 USD
    cause = ("this execution may cost up to $1.50 (1 instance-hours of ml.g5.xlarge at $1.5/h on demand), "
             "over the budget of this deployment, maxRunCost $1: lower instanceCount or "
             "maxRuntimeInSeconds, or choose a cheaper instanceType")
    backend = ScriptedBackend()
    with scripted_engine(outdir=budgeted_app.outdir, work_dir=tmp_path / "work", backend=backend,
                         tracking=False) as engine:
        refused = engine.wait(engine.start(over, name="too-dear"))
        within = engine.wait(engine.start({"program": "digits_mlp", "instanceCount": 4,
                                           "inputs": {"train": "s3://local-data/datasets/x/",
                                                      "validation": "s3://local-data/datasets/y/"}},
                                          name="within"))  # 4 h x 0.2 USD
        assert within.output is not None, (within.error, within.cause)
        job = backend.describe_training_job(within.output["trainingJobName"])
    assert (refused.error, refused.cause) == (contract.COST_BUDGET_EXCEEDED_ERROR, cause)
    assert within.succeeded and within.output is not None, (within.error, within.cause)
    # The run's output says what its job cost: the state machine's reckoning, the same text the
    # CLI evaluates (prices.reckon), with the prices fixed at synth.
    assert job["BillableTimeInSeconds"] > 0
    assert within.output[contract.OUTPUT_COST] == prices.reckon(job, PRICED["regions"]["us-east-1"]) == {
        "instanceType": "ml.m5.xlarge", "instanceCount": 4, "billableTimeInSeconds": job["BillableTimeInSeconds"],
        "usdPerHour": 0.2, "usd": round(job["BillableTimeInSeconds"] * 4 * 0.2 / 3600, 6)}
    assert [r["ResourceConfig"]["InstanceCount"] for r in backend.created("create_training_job")] == [4]
    # The CLI refuses the same run with the same words, from the stack's outputs.
    limits = limits_from_outputs({**outputs, contract.OUTPUT_ALLOWED_INSTANCE_TYPES: ",".join(
        PRICED["regions"]["us-east-1"]), contract.OUTPUT_MAX_INSTANCE_COUNT: "4"})
    assert limits is not None
    checked = input_rules.check(programs.discover(), over, deployment=limits.deployment())
    assert checked.problems == [{"error": contract.COST_BUDGET_EXCEEDED_ERROR, "cause": cause}]
    # With maxJobHours beside it, a run that names no instance type is still reckoned at the
    # default one, as the state machine reckons it (4 h x 0.2 USD over a budget of 0.5).
    both = limits_from_outputs({**outputs, contract.OUTPUT_ALLOWED_INSTANCE_TYPES: ",".join(
        PRICED["regions"]["us-east-1"]), contract.OUTPUT_MAX_INSTANCE_COUNT: "4",
        contract.OUTPUT_MAX_JOB_HOURS: "100", contract.OUTPUT_MAX_RUN_COST: "0.5"})
    assert both is not None and both.budget is not None
    unnamed = {"program": "digits_mlp", "instanceCount": 4}
    assert [p["error"] for p in input_rules.check(programs.discover(), unnamed,
                                                   deployment=both.deployment()).problems] == [
        contract.COST_BUDGET_EXCEEDED_ERROR]


def test_a_job_that_cannot_be_described_again_leaves_its_cost_unknown_and_the_run_going(
        synthesized: Synthesized, tmp_path: Path) -> None:
    """The cost is asked of SageMaker after the job; should that fail, the run still succeeds
    (and registers as it would), its output saying the cost is unknown and why."""
    from smtrain.local.backend import SageMakerError
    from tests.scripted_sagemaker import JobScript

    backend = ScriptedBackend(JobScript(describe_errors_when_done=[
        SageMakerError("ResourceNotFound", "Requested resource not found.")]))
    with scripted_engine(outdir=synthesized.outdir, work_dir=tmp_path / "work", backend=backend,
                         tracking=False) as engine:
        run = engine.wait(engine.start({"program": "digits_mlp", "register": False,
                                        "inputs": {"train": "s3://local-data/datasets/x/",
                                                   "validation": "s3://local-data/datasets/y/"}},
                                       name="undescribed"))
    assert run.succeeded and run.output is not None, (run.error, run.cause)
    assert run.output[contract.OUTPUT_COST] == {"usd": None, "error": "SageMaker.ResourceNotFoundException"}
    from smtrain.core.prices import output_cost_line

    assert output_cost_line(run.output, "us-east-1") == (
        f"job {run.output['trainingJobName']} cost: unknown (SageMaker could not be asked again: "
        "SageMaker.ResourceNotFoundException)")
    assert not backend.script.describe_errors_when_done, "the cost's describe call was made"


def test_a_tuning_run_s_output_totals_its_training_jobs(budgeted_app: Synthesized, tmp_path: Path) -> None:
    """Every training job of the tuning job, listed a page at a time and each described, at the
    prices fixed at synth: the state machine folds them with the CLI's text
    (prices.TUNING_COST_FUNCTION); a job that cannot be described counts as of unknown cost, and
    the CLI's line for the tuning job says the same."""
    from smtrain.local.backend import SageMakerError
    from tests.scripted_sagemaker import JobScript

    class OneTrialUndescribable(ScriptedBackend):
        def describe_training_job(self, name: str) -> dict[str, Any]:
            if name.endswith("-003-00000002"):
                raise SageMakerError("ResourceNotFound", "Requested resource not found.")
            return super().describe_training_job(name)

    backend = OneTrialUndescribable(JobScript(tuning_jobs=150, billable_seconds=900))
    with scripted_engine(outdir=budgeted_app.outdir, work_dir=tmp_path / "work", backend=backend,
                         tracking=False) as engine:
        run = engine.wait(engine.start({"program": "digits_mlp", "tuning": {"maxJobs": 2, "maxParallelJobs": 1},
                                        "inputs": {"train": "s3://local-data/datasets/x/",
                                                   "validation": "s3://local-data/datasets/y/"}},
                                       name="tuned-at-a-price"))
    assert run.succeeded and run.output is not None, (run.error, run.cause)
    price = PRICED["regions"]["us-east-1"]["ml.m5.xlarge"]
    known = [prices.reckon({"ResourceConfig": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1},
                            "BillableTimeInSeconds": 900}, {"ml.m5.xlarge": price})] * 149
    assert run.output[contract.OUTPUT_COST] == prices.tuning_total([*known, {"usd": None}]) == {
        "usd": round(149 * 900 * price / 3600, 6), "trainingJobs": 150, "trainingJobsOfUnknownCost": 1}
    # Two pages of at most 100 (the API's largest; its default would be 10), the second after the
    # first's token: the known costs of both pages add up.
    assert [(page["MaxResults"], page.get("NextToken")) for page in backend.listed] == [(100, None), (100, "100")]
    # The run's jobs, as `smtrain status` lists them from the history the interpreter wrote: the
    # tuning job and its best training job, not the 150 its cost described (inside the Map).
    from smtrain.cli.watch import job_names

    assert job_names(list(run.events or [])) == [run.output["tuningJobName"], run.output["trainingJobName"]]
    # `smtrain status --local` says it from the output.
    from smtrain.core.prices import output_cost_line

    assert output_cost_line(run.output, "us-east-1") == (
        f"tuning job {run.output['tuningJobName']} cost: $7.4500 over 150 training jobs "
        "(1 of unknown cost: no price, or no billable time yet)")


def test_watch_and_status_put_a_job_s_cost_on_its_mlflow_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """On AWS, where MLFLOW_TRACKING_URI names the tracking server, the cost `smtrain watch` and
    `smtrain status` print is put on the job's MLflow run too (here a local store stands in)."""
    from mlflow.tracking import MlflowClient

    from smtrain.cli.watch import report_costs
    from smtrain.local.tracking_store import prepare_tracking_store

    uri = prepare_tracking_store(tmp_path / "mlflow")
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(contract.EXPERIMENT)
    assert experiment is not None
    run = client.create_run(experiment.experiment_id, tags={contract.RUN_TAG_TRAINING_JOB: "smtrain-run-0"})
    monkeypatch.setenv(contract.ENV_TRACKING_URI, uri)
    monkeypatch.setattr(prices, "load", lambda path=prices.TABLE: TABLE)
    sagemaker = boto3.client("sagemaker", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")

    class Session:
        def client(self, service: str) -> Any:
            assert service == "sagemaker"
            return sagemaker

    with Stubber(sagemaker) as stub:
        stub.add_response("describe_training_job", describe("smtrain-run-0", billable=720, training=720),
                          {"TrainingJobName": "smtrain-run-0"})
        report_costs(Session(), ["smtrain-run-0"], "us-east-1")
    assert capsys.readouterr().out.splitlines() == [
        "job smtrain-run-0 cost: $0.1000 (720 s billable x 1 ml.m5.xlarge at $0.5/h on-demand)",
        "cost recorded on 1 MLflow run"]
    recorded = client.get_run(run.info.run_id).data
    assert recorded.metrics == {"cost_usd": 0.1, "billable_seconds": 720.0}
    assert recorded.tags[contract.RUN_TAG_COST] == "cost: $0.1000 (720 s billable x 1 ml.m5.xlarge at $0.5/h on-demand)"
    # A tracking server that cannot be reached is a note; the cost was printed all the same.
    monkeypatch.setenv(contract.ENV_TRACKING_URI, "http://127.0.0.1:9")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with Stubber(sagemaker) as stub:
        stub.add_response("describe_training_job", describe("smtrain-run-0", billable=720, training=720),
                          {"TrainingJobName": "smtrain-run-0"})
        report_costs(Session(), ["smtrain-run-0"], "us-east-1")
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("job smtrain-run-0 cost: $0.1000") and lines[1].startswith(
        "note: the cost was not recorded in MLflow: ")


def test_a_tuning_run_s_jobs_are_its_own_not_the_ones_its_cost_describes() -> None:
    """`smtrain status`/`watch` read a run's jobs from its history: the tasks that create or
    describe them, but not the DescribeTrainingJob of every trial inside the cost's Map (a
    500-trial run would list, tail and price each one twice); every page of the history is read."""
    from smtrain.cli.watch import execution_history, job_names

    def scheduled(**parameters: str) -> dict[str, Any]:
        return {"type": "TaskScheduled", "taskScheduledEventDetails": {"parameters": json.dumps(parameters)}}

    events = [scheduled(HyperParameterTuningJobName="smtrain-tune"), scheduled(TrainingJobName="smtrain-tune-001-a"),
              {"type": "MapStateEntered"}, *(scheduled(TrainingJobName=f"smtrain-tune-00{i}-x") for i in range(1, 4)),
              {"type": "MapStateExited"}, scheduled(TrainingJobName="smtrain-later")]
    assert job_names(events) == ["smtrain-tune", "smtrain-tune-001-a", "smtrain-later"]
    failed = [*events[:3], scheduled(TrainingJobName="smtrain-tune-002-x"), {"type": "MapStateFailed"},
              scheduled(TrainingJobName="smtrain-after")]
    assert job_names(failed)[-1] == "smtrain-after", "a Map that failed ends it too"

    sfn = boto3.client("stepfunctions", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    arn = "arn:aws:states:us-east-1:123456789012:execution:smtrain-training:run"
    stamp = datetime.datetime(2026, 12, 6)
    with Stubber(sfn) as stub:
        for page, token in ((1, "t1"), (2, None)):
            answer: dict[str, Any] = {"events": [{"timestamp": stamp, "type": "PassStateEntered", "id": page}]}
            expected: dict[str, Any] = {"executionArn": arn, "maxResults": 1000}
            if token:
                answer["nextToken"] = token
            if page == 2:
                expected["nextToken"] = "t1"
            stub.add_response("get_execution_history", answer, expected)
        assert [event["id"] for event in execution_history(sfn, arn)] == [1, 2]


def test_watch_reads_only_the_new_events_at_each_poll() -> None:
    """The first read takes every page; later ones ask newest first (reverseOrder) and stop at
    the page that reaches an event already held, so a long history is not read at every poll."""
    from smtrain.cli.watch import HistoryReader

    sfn = boto3.client("stepfunctions", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    arn = "arn:aws:states:us-east-1:123456789012:execution:smtrain-training:run"
    stamp = datetime.datetime(2026, 12, 6)

    def events(*ids: int) -> list[dict[str, Any]]:
        return [{"timestamp": stamp, "type": "PassStateEntered", "id": i} for i in ids]

    reverse = {"executionArn": arn, "maxResults": 1000, "reverseOrder": True}
    with Stubber(sfn) as stub:
        stub.add_response("get_execution_history", {"events": events(1, 2)}, {"executionArn": arn, "maxResults": 1000})
        stub.add_response("get_execution_history", {"events": events(4, 3, 2, 1)}, reverse)
        stub.add_response("get_execution_history", {"events": events(7, 6), "nextToken": "t"}, reverse)
        stub.add_response("get_execution_history", {"events": events(5, 4, 3)}, {**reverse, "nextToken": "t"})
        stub.add_response("get_execution_history", {"events": events(7, 6, 5)}, reverse)
        reader = HistoryReader(sfn, arn)
        assert [e["id"] for e in reader.read()] == [1, 2]
        assert [e["id"] for e in reader.read()] == [1, 2, 3, 4]
        assert [e["id"] for e in reader.read()] == [1, 2, 3, 4, 5, 6, 7]
        assert [e["id"] for e in reader.read()] == [1, 2, 3, 4, 5, 6, 7], "nothing new"
        stub.assert_no_pending_responses()
