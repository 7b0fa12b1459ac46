"""The team queue (setting ``queue: batch``): AWS Batch for SageMaker Training.

One synthesized app (fair share on) serves every test: its templates are asserted, and its state
machine runs offline against the engine's Batch queue over a gated SageMaker double, so the order
in which queued jobs start is decided by the queue, not by timing."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from infra.settings import Settings, SettingsError
from smtrain.cli import main
from smtrain.core import contract, input_rules, programs
from smtrain.core.errors import InputError
from tests.helpers import Synthesized, cfn_lint, nag_report_rows
from tests.scripted_sagemaker import JobScript, ScriptedBackend, scripted_engine

PREFIX = "smtrain"
CAPACITY = 4


@pytest.fixture(scope="module")
def queued_app(team_queue_app: Synthesized) -> Synthesized:
    """The session's queued app (conftest): fair share on, CAPACITY instances."""
    return team_queue_app


def resources(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == kind}


def statements_of(template: dict[str, Any], role_fragment: str) -> list[dict[str, Any]]:
    return [statement for logical_id, policy in resources(template, "AWS::IAM::Policy").items()
            if role_fragment in logical_id
            for statement in policy["Properties"]["PolicyDocument"]["Statement"]]


def actions(statement: dict[str, Any]) -> list[str]:
    value = statement["Action"]
    return [value] if isinstance(value, str) else list(value)


# -- the stacks ---------------------------------------------------------------------------

def test_the_storage_stack_holds_the_service_environment_and_a_queue_per_priority(queued_app: Synthesized) -> None:
    (environment,) = resources(queued_app.storage, "AWS::Batch::ServiceEnvironment").values()
    assert environment["Properties"]["ServiceEnvironmentType"] == "SAGEMAKER_TRAINING"
    assert environment["Properties"]["CapacityLimits"] == [{"CapacityUnit": "NUM_INSTANCES",
                                                            "MaxCapacity": CAPACITY}]
    (policy_id,) = resources(queued_app.storage, "AWS::Batch::SchedulingPolicy")
    queues = {q["Properties"]["JobQueueName"]: q["Properties"]
              for q in resources(queued_app.storage, "AWS::Batch::JobQueue").values()}
    assert {name: q["Priority"] for name, q in queues.items()} == {"smtrain-fair-high": 900, "smtrain-fair-normal": 100}
    for queue in queues.values():
        assert queue["JobQueueType"] == "SAGEMAKER_TRAINING"
        assert queue["SchedulingPolicyArn"] == {"Fn::GetAtt": [policy_id, "Arn"]}
        (order,) = queue["ServiceEnvironmentOrder"]
        assert order["ServiceEnvironment"]["Fn::GetAtt"][1] == "ServiceEnvironmentArn"
    assert not [m for m in queued_app.messages if "Error" in m[0] or "Warning" in m[0]]


def test_the_queued_app_passes_cfn_lint_and_cdk_nag(queued_app: Synthesized) -> None:
    """The Batch resources and the queued chain against CloudFormation's resource schemas
    (cfn-lint) and the four cdk-nag packs, as the default app is (tests/test_lint.py,
    tests/test_compliance.py); the IAM is checked against AWS's action list in
    tests/test_iam_reference.py (its team-queue variant)."""
    assert cfn_lint(queued_app.outdir / "Storage.template.json", queued_app.outdir / "Workflow.template.json") == []
    assert [row for row in nag_report_rows(queued_app) if row["Compliance"] == "Non-Compliant"] == []


def test_the_execution_role_trusts_the_jobs_batch_starts(queued_app: Synthesized) -> None:
    roles = [r for r in resources(queued_app.storage, "AWS::IAM::Role").values()
             if "sagemaker.amazonaws.com" in json.dumps(r["Properties"]["AssumeRolePolicyDocument"])]
    assert len(roles) == 4  # each program's, and the earlier shared one
    for role in roles:
        trust = json.dumps(role["Properties"]["AssumeRolePolicyDocument"])
        assert ":training-job/AWSBatchsmtrain*" in trust
        assert ":training-job/smtrain-*" in trust


def test_the_state_machine_submits_training_to_the_queue_and_creates_no_training_job(queued_app: Synthesized) -> None:
    statements = statements_of(queued_app.workflow, "TrainingStateMachineRole")
    granted = {action for statement in statements for action in actions(statement)}
    assert "sagemaker:CreateTrainingJob" not in granted  # Batch's service-linked role creates it
    assert "sagemaker:CreateHyperParameterTuningJob" in granted  # tuning is never queued
    (submit,) = [s for s in statements if actions(s) == ["batch:SubmitServiceJob"]]
    rendered = json.dumps(submit["Resource"])
    assert "job-queue/smtrain-fair-high" in rendered and "job-queue/smtrain-fair-normal" in rendered
    assert "service-job/*" in rendered
    (describe,) = [s for s in statements if "batch:DescribeServiceJob" in actions(s)]
    assert describe["Resource"] == "*"  # the action takes no resource
    (read_job,) = [s for s in statements if "sagemaker:DescribeTrainingJob" in actions(s)
                   and "AWSBatch" in json.dumps(s["Resource"])]
    assert "training-job/AWSBatchsmtrain*" in json.dumps(read_job["Resource"])
    assert any(actions(s) == ["iam:PassRole"] for s in statements)


def test_a_stopped_execution_is_cleaned_up_by_a_rule_and_a_narrow_role(queued_app: Synthesized) -> None:
    (rule,) = [r for r in resources(queued_app.workflow, "AWS::Events::Rule").values()
               if r["Properties"].get("Description", "").startswith("Stops the queued training job")]
    assert rule["Properties"]["EventPattern"]["detail"]["status"] == ["ABORTED", "TIMED_OUT", "FAILED"]
    statements = statements_of(queued_app.workflow, "QueueCleanup")
    (listing,) = [s for s in statements if "batch:ListServiceJobs" in actions(s)]
    assert listing["Resource"] == "*"
    (terminate,) = [s for s in statements if "batch:TerminateServiceJob" in actions(s)]
    assert actions(terminate) == ["batch:TerminateServiceJob"]
    assert terminate["Condition"] == {"StringEquals": {"aws:ResourceTag/project": PREFIX}}
    assert "service-job/*" in json.dumps(terminate["Resource"])
    started = [s for s in statements if actions(s) == ["states:StartExecution"]]
    assert len(started) == 1  # the rule's role starts the cleanup state machine only


def test_queue_settings_fail_synth_with_the_setting_named(settings: Settings) -> None:
    with pytest.raises(SettingsError, match="'queue'"):
        dataclasses.replace(settings, queue="sqs")
    with pytest.raises(SettingsError, match="'queueMaxInstances'"):
        dataclasses.replace(settings, queue="batch", queue_max_instances=settings.max_instance_count - 1)
    with pytest.raises(SettingsError, match="'queueFairShare'"):
        dataclasses.replace(settings, queue_fair_share=True)


# -- the rules ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def shipped() -> dict[str, programs.Program]:
    return programs.discover()


@pytest.mark.parametrize(("queue", "fields", "cause"), [
    ("off", {"priority": "high"}, "field 'priority' needs the team queue"),
    ("off", {"team": "vision"}, "field 'team' needs the team queue"),
    ("fifo", {"team": "vision"}, "field 'team' needs fair share"),
    ("fair-share", {"team": "vision-team"}, "field 'team' must be 1 to 255 letters and digits"),
    ("fair-share", {"priority": "urgent"}, "field 'priority' must be one of high, normal"),
    ("fair-share", {"priority": "high", "tuning": {"maxJobs": 2}},
     "field 'priority' applies to training runs only"),
])
def test_queue_fields_are_refused_by_name(shipped: dict[str, programs.Program], queue: str,
                                          fields: dict[str, Any], cause: str) -> None:
    checked = input_rules.check(shipped, {"program": "digits_mlp", **fields},
                                deployment=input_rules.Deployment(queue=queue))
    assert checked.problems and cause in checked.problems[0]["cause"], checked.problems


def test_a_queued_run_s_execution_name_must_be_a_batch_job_name(shipped: dict[str, programs.Program]) -> None:
    """Its service job is named after it, so no two executions (run.1, run_1) share one."""
    for queue, name, refused in (("fifo", "run.1", True), ("fair-share", "run+1", True),
                                 ("fifo", "run_1-A", False), ("off", "run.1", False)):
        checked = input_rules.check(shipped, {"program": "digits_mlp"}, execution_name=name,
                                    deployment=input_rules.Deployment(queue=queue))
        assert bool(checked.problems) == refused, (queue, name, checked.problems)
        if refused:
            assert "the execution name must be letters, digits, - and _" in checked.problems[0]["cause"]


def test_queue_fields_pass_where_the_deployment_has_them(shipped: dict[str, programs.Program]) -> None:
    checked = input_rules.check(shipped, {"program": "digits_mlp", "priority": "high", "team": "vision"},
                                deployment=input_rules.Deployment(queue="fair-share"))
    assert checked.problems == []


# -- offline, through the state machine ----------------------------------------------------

class GatedBackend(ScriptedBackend):
    """Jobs stay InProgress until :meth:`release` (Completed) or :attr:`fail` names them."""

    def __init__(self) -> None:
        super().__init__(JobScript())
        self.released: set[str] = set()
        self.failing: dict[str, str] = {}

    def started_jobs(self) -> list[str]:
        return [request["TrainingJobName"] for request in self.created("create_training_job")]

    def release(self, name: str) -> None:
        self.released.add(name)

    def _progress(self, name: str, job: dict[str, Any]) -> str:
        return "Completed" if name in self.released else "InProgress"


@pytest.fixture
def queued_engine(queued_app: Synthesized, tmp_path: Path) -> Iterator[tuple[Any, GatedBackend]]:
    backend = GatedBackend()
    engine = scripted_engine(outdir=queued_app.outdir, work_dir=tmp_path / "work", backend=backend,
                             tracking=False)
    with engine:
        yield engine, backend


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def run(program: str, instances: int, **fields: Any) -> dict[str, Any]:
    return {"program": program, "instanceCount": instances,
            "inputs": {"train": "s3://local-data/datasets/x/", "validation": "s3://local-data/datasets/y/"},
            **fields}


def by_execution(engine: Any) -> dict[str, Any]:
    return {job.name: job for job in engine.batch.jobs()}


def test_a_burst_beyond_capacity_drains_in_priority_then_fair_share_order(
        queued_engine: tuple[Any, GatedBackend], capsys: pytest.CaptureFixture[str]) -> None:
    engine, backend = queued_engine
    arns = {}
    # Each run is submitted before the next starts (executions run in threads of their own), so
    # the queue's ages follow this order: a and b fill the capacity; queued behind them a normal
    # job of digits_mlp, then one of digits_lightgbm, then a high one.
    for name, program, priority in [("a", "digits_mlp", "normal"), ("b", "digits_mlp", "normal"),
                                    ("c", "digits_mlp", "normal"), ("d", "digits_lightgbm", "normal"),
                                    ("e", "digits_mlp", "high")]:
        arns[name] = engine.start(run(program, 2, priority=priority), name=name)

        def submitted(name: str = name) -> bool:
            return f"smtrain-{name}" in by_execution(engine)

        wait_for(submitted, f"run {name} to be submitted")
        time.sleep(0.002)  # a later millisecond for the next submission
    time.sleep(0.3)
    assert len(backend.started_jobs()) == 2  # the capacity (4 instances) is used up
    jobs = by_execution(engine)
    assert {jobs[f"smtrain-{n}"].status for n in "cde"} == {"RUNNABLE"}
    assert jobs["smtrain-e"].queue.name == "smtrain-fair-high" and jobs["smtrain-c"].share == "digitsmlp"
    # What `smtrain queue --local` shows meanwhile: the high job first, then the running ones and
    # the waiting ones by age, each with its share.
    assert main(["queue", "--local", "--work-dir", str(engine.work_dir)]) == 0
    shown = [line.split() for line in capsys.readouterr().out.splitlines()[1:]]
    assert [(row[0], row[1], row[2], row[3], row[6]) for row in shown] == [
        ("high", "queued", "RUNNABLE", "digitsmlp", "smtrain-e"),
        ("normal", "running", "RUNNING", "digitsmlp", "smtrain-a"),
        ("normal", "running", "RUNNING", "digitsmlp", "smtrain-b"),
        ("normal", "queued", "RUNNABLE", "digitsmlp", "smtrain-c"),
        ("normal", "queued", "RUNNABLE", "digitslightgbm", "smtrain-d")]
    assert shown[1][7].startswith("AWSBatchsmtrain") and shown[0][7] == "-"
    order = []
    for finished in ("smtrain-a", "smtrain-e", "smtrain-b"):
        backend.release(by_execution(engine)[finished].training_job_name)
        count = len(backend.started_jobs())

        def one_more(count: int = count) -> bool:
            return len(backend.started_jobs()) == count + 1

        wait_for(one_more, "the next job to start")
        started = backend.started_jobs()[-1]
        order.append(next(n for n, j in by_execution(engine).items() if j.training_job_name == started))
    # The high queue first; then, within the normal queue (fair share is per queue),
    # digits_lightgbm's share (no instances in use) before digits_mlp's (b still runs), though
    # digits_mlp's job waited longer; then digits_mlp's.
    assert order == ["smtrain-e", "smtrain-d", "smtrain-c"]
    for job in by_execution(engine).values():
        backend.release(job.training_job_name)
    for name, arn in arns.items():
        result = engine.wait(arn, timeout=60)
        assert result.succeeded, (name, result.cause)
        assert result.output["trainingJobName"].startswith("AWSBatchsmtrain")
    for _, request in backend.requests:
        assert request["TrainingJobName"].startswith("AWSBatchsmtrain") and len(request["TrainingJobName"]) <= 63
    # Each queued job runs as its program's own role, writing under its program's prefix.
    assert {(request["RoleArn"], request["OutputDataConfig"]["S3OutputPath"],
             request["CheckpointConfig"]["S3Uri"].rsplit("/", 2)[0]) for _, request in backend.requests} == {
        (f"arn:aws:iam::123456789012:role/local-execution-role-{program.replace('_', '-')}-role",
         f"s3://local-buckets-artifacts/models/{program}/", f"s3://local-buckets-artifacts/checkpoints/{program}")
        for program in ("digits_mlp", "digits_lightgbm")}
    # `smtrain status --local` of a queued run: where it stood last in the queue, and its job.
    capsys.readouterr()
    assert main(["status", "--local", "--work-dir", str(engine.work_dir), "d"]) == 0
    status = capsys.readouterr().out
    assert "queue: done (SUCCEEDED: Received status from SageMaker: Training job completed)" in status
    assert f"job: {by_execution(engine)['smtrain-d'].training_job_name}" in status
    assert main(["queue", "--local", "--work-dir", str(engine.work_dir)]) == 0
    assert "the team queue is empty" in capsys.readouterr().out


def test_smtrain_queue_asks_batch_for_every_waiting_and_running_status() -> None:
    import boto3
    from botocore.stub import Stubber

    from smtrain.cli.queue_view import list_jobs, table, team_queues

    batch = boto3.client("batch", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    queues = team_queues({contract.OUTPUT_TEAM_QUEUES: "high=smtrain-high,normal=smtrain-normal"}, "smtrain-workflow")
    running = {"jobArn": "arn:aws:batch:us-east-1:123456789012:service-job/1", "jobId": "1",
               "jobName": "smtrain-run-1", "status": "RUNNING", "createdAt": 1_700_000_000_000,
               "serviceJobType": "SAGEMAKER_TRAINING",
               "latestAttempt": {"serviceResourceId": {
                   "name": "TrainingJobArn",
                   "value": "arn:aws:sagemaker:us-east-1:123456789012:training-job/awsbatchsmtrain0123"}}}
    with Stubber(batch) as stub:  # each call checked against botocore's batch model
        for queue in ("smtrain-high", "smtrain-normal"):
            for status in contract.SERVICE_JOB_ACTIVE:
                page = [running] if (queue, status) == ("smtrain-normal", "RUNNING") else []
                stub.add_response("list_service_jobs", {"jobSummaryList": page},
                                  {"jobQueue": queue, "jobStatus": status})
        jobs = list_jobs(batch, queues)
        stub.assert_no_pending_responses()
    (line,) = table(jobs)[1:]
    assert line.split()[:3] == ["normal", "running", "RUNNING"]
    assert line.split()[-2:] == ["smtrain-run-1", "AWSBatchsmtrain0123"]  # the name as Batch writes it
    with pytest.raises(InputError, match="has no team queue"):
        team_queues({contract.OUTPUT_TEAM_QUEUE: "off"}, "smtrain-workflow")


def test_stopping_an_execution_terminates_its_service_job(queued_engine: tuple[Any, GatedBackend]) -> None:
    engine, backend = queued_engine
    running = engine.start(run("digits_mlp", 4), name="running")
    wait_for(lambda: len(backend.started_jobs()) == 1, "the first job to start")
    waiting = engine.start(run("digits_mlp", 4), name="waiting")
    wait_for(lambda: "smtrain-waiting" in by_execution(engine), "the second run to be queued")
    engine.stop(waiting)
    queued = by_execution(engine)["smtrain-waiting"]
    assert queued.status == "FAILED" and queued.terminated and queued.training_job_name is None
    assert "execution waiting ended ABORTED" in (queued.status_reason or "")
    engine.stop(running)
    started = by_execution(engine)["smtrain-running"]
    assert started.terminated and backend.stopped == [started.training_job_name]
    wait_for(lambda: by_execution(engine)["smtrain-running"].status == "FAILED", "the stopped job to end")
    assert len(backend.started_jobs()) == 1  # the terminated job never started


def test_a_failed_job_s_reason_reaches_the_execution(queued_app: Synthesized, tmp_path: Path) -> None:
    backend = ScriptedBackend(JobScript(statuses=("InProgress", "Failed"),
                                        failure_reason="AlgorithmError: loss is NaN"))
    with scripted_engine(outdir=queued_app.outdir, work_dir=tmp_path / "work", backend=backend,
                         tracking=False) as engine:
        result = engine.wait(engine.start(run("digits_mlp", 1), name="nan"), timeout=60)
    assert result.status == "FAILED" and result.error == contract.TRAINING_FAILED_ERROR
    assert "Received status from SageMaker: AlgorithmError: loss is NaN" in (result.cause or "")


def test_a_refused_submission_ends_the_run_in_training_failed(
        queued_engine: tuple[Any, GatedBackend], monkeypatch: pytest.MonkeyPatch) -> None:
    from smtrain.local.batch_queue import BatchError

    engine, backend = queued_engine

    def refuse(request: dict[str, Any]) -> dict[str, Any]:
        raise BatchError("ClientException", "serviceRequestPayload is larger than 10 KiB")

    monkeypatch.setattr(engine.batch, "submit_service_job", refuse)
    result = engine.wait(engine.start(run("digits_mlp", 1), name="too-big"), timeout=60)
    assert result.error == contract.TRAINING_FAILED_ERROR
    assert result.cause == "Batch.ClientException: serviceRequestPayload is larger than 10 KiB"
    assert backend.requests == []


def test_a_queued_run_is_refused_before_anything_is_submitted(queued_engine: tuple[Any, GatedBackend]) -> None:
    engine, backend = queued_engine
    result = engine.wait(engine.start(run("digits_mlp", 1, team="vision_team"), name="bad-team"))
    assert result.error == contract.INVALID_INPUT_ERROR and "field 'team'" in (result.cause or "")
    assert engine.batch.jobs() == [] and backend.requests == []
    # A run named run_1 is queued; one named run.1 is refused, and its end (FAILED) starts the
    # cleanup, which must not stop run_1's job: names are never rewritten into each other.
    engine.start(run("digits_mlp", 1), name="run_1")
    wait_for(lambda: len(backend.started_jobs()) == 1, "run_1's job to start")
    dotted = engine.wait(engine.start(run("digits_mlp", 1), name="run.1"))
    assert dotted.error == contract.INVALID_INPUT_ERROR and "execution name" in (dotted.cause or "")
    (job,) = engine.batch.jobs()
    assert job.name == "smtrain-run_1" and not job.terminated and backend.stopped == []


def test_the_queue_is_not_threaded_through_runs_of_other_deployments(synthesized: Synthesized) -> None:
    assert not resources(synthesized.storage, "AWS::Batch::JobQueue")
    assert "batch:" not in json.dumps(synthesized.workflow)



def _create_only(resource_type: str) -> set[str]:
    """The properties CloudFormation replaces a resource to change (its registry schema's
    ``createOnlyProperties``, as cfn-lint ships the schemas); any other is updated in place."""
    import cfnlint

    schemas = Path(cfnlint.__file__).parent / "data" / "schemas"
    digest = json.loads((schemas / "providers" / "us-east-1.json").read_text())[resource_type]
    schema = json.loads((schemas / "resources" / f"{digest}.json").read_text())
    return {path.removeprefix("/properties/") for path in schema["createOnlyProperties"]}


def test_the_queue_s_lifecycle(queued_app: Synthesized, cdk_context: dict[str, Any], settings: Settings,
                               tmp_path: Path) -> None:
    """What a deploy does to the queue, from the templates and CloudFormation's own schemas:

    - more capacity: the service environment is updated in place (CapacityLimits is not a
      create-only property; its name and type are), so jobs waiting in the queues stay queued;
    - fair share switched: the queues get new names (Batch cannot add a fair-share policy to a
      first-in-first-out queue), so they are replaced: the new ones are created, then the old
      ones deleted, and "all jobs in the queue are eventually terminated when you delete a job
      queue" (Batch API reference, DeleteJobQueue): those runs end in TrainingFailed;
    - queue switched off, or the stacks destroyed: nothing of it is retained, and no stack
      exports it to the other (the workflow stack names the queues by ARN), so neither deploy
      order nor a retained name stands in the way of deploying it again."""
    from tests.conftest import synthesize

    other = synthesize(cdk_context, dataclasses.replace(settings, queue="batch", queue_max_instances=CAPACITY * 2,
                                                        queue_fair_share=False), tmp_path / "cdk.out")
    before, after = queued_app.storage["Resources"], other.storage["Resources"]
    batch_ids = {logical_id for logical_id, r in {**before, **after}.items() if r["Type"].startswith("AWS::Batch::")}
    (environment_id,) = [i for i in batch_ids
                         if before.get(i, after.get(i))["Type"] == "AWS::Batch::ServiceEnvironment"]
    changed = {name for name in {**before[environment_id]["Properties"], **after[environment_id]["Properties"]}
               if before[environment_id]["Properties"].get(name) != after[environment_id]["Properties"].get(name)}
    assert changed == {"CapacityLimits"} and not changed & _create_only("AWS::Batch::ServiceEnvironment")
    queues_before = {r["Properties"]["JobQueueName"] for r in before.values() if r["Type"] == "AWS::Batch::JobQueue"}
    queues_after = {r["Properties"]["JobQueueName"] for r in after.values() if r["Type"] == "AWS::Batch::JobQueue"}
    assert not queues_before & queues_after, "switching fair share replaces the queues under new names"
    assert "JobQueueName" in _create_only("AWS::Batch::JobQueue")
    for template in (queued_app.storage, other.storage):
        for logical_id in batch_ids & set(template["Resources"]):
            resource = template["Resources"][logical_id]
            assert resource.get("DeletionPolicy", "Delete") == "Delete", logical_id
            assert resource.get("UpdateReplacePolicy", "Delete") == "Delete", logical_id
        exported = json.dumps(template.get("Outputs", {}))
        assert all(logical_id not in exported for logical_id in batch_ids), "no cross-stack export of the queue"
