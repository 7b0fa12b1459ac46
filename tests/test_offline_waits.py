"""Offline, the state machine's waits pass at WAIT_SCALE of their time (smtrain.local.sfn_sagemaker):
a Retry rule's waits as a Wait state's, so a throttled call's backoff costs milliseconds. And the
polls of an execution and of a .sync task's job end as soon as it ends (smtrain.local.wakeups)."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import boto3
from moto import mock_aws
from moto.stepfunctions.parser.asl.component.common.retry import retrier_decl
from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import state_task_service_callback

from smtrain.local.sfn_sagemaker import WAIT_SCALE, serve_sagemaker
from smtrain.local.wakeups import EXECUTION_ENDED, Wakeup
from tests.scripted_sagemaker import ScriptedBackend

#: Describing a job SageMaker does not know fails (ValidationException); the rule retries it
#: twice, after 4 s and 8 s at full time, then the Catch ends the run.
DEFINITION = {"StartAt": "Describe", "States": {
    "Describe": {"Type": "Task", "Resource": "arn:aws:states:::aws-sdk:sagemaker:describeTrainingJob",
                 "Parameters": {"TrainingJobName": "no-such-job"},
                 "Retry": [{"ErrorEquals": ["States.ALL"], "IntervalSeconds": 4, "MaxAttempts": 2,
                            "BackoffRate": 2}],
                 "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "GaveUp"}], "End": True},
    "GaveUp": {"Type": "Pass", "End": True}}}


def _run() -> tuple[float, list[dict[str, Any]]]:
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}), serve_sagemaker(ScriptedBackend()):
        client = boto3.client("stepfunctions", region_name="us-east-1")
        machine = client.create_state_machine(
            name="retries", definition=json.dumps(DEFINITION),
            roleArn="arn:aws:iam::123456789012:role/r")["stateMachineArn"]
        started = time.monotonic()
        execution = client.start_execution(stateMachineArn=machine, name="one", input="{}")["executionArn"]
        while client.describe_execution(executionArn=execution)["status"] == "RUNNING":
            assert time.monotonic() - started < 30
            time.sleep(0.02)
        elapsed = time.monotonic() - started
        events = client.get_execution_history(executionArn=execution)["events"]
    return elapsed, events


def test_a_retried_task_waits_a_fiftieth_of_its_backoff_and_moto_is_left_as_it_was() -> None:
    assert WAIT_SCALE == 1 / 50
    elapsed, events = _run()
    # Three attempts, then the Catch: the rule was applied, its 12 s of waits in about 0.24 s.
    assert [event["type"] for event in events].count("TaskFailed") == 3
    assert any(event.get("stateEnteredEventDetails", {}).get("name") == "GaveUp" for event in events)
    assert elapsed < 6
    assert retrier_decl.time is time  # outside the engine, moto's own clock
    assert state_task_service_callback.time is time  # and the .sync loop's
    # (Its end of an execution stays announced, once installed: smtrain.local.wakeups, below.)


def test_an_execution_s_end_is_announced_whatever_its_status() -> None:
    """moto's interpreter announces each end (this one caught by its Catch, after a failed
    task): a follower waiting on EXECUTION_ENDED looks at once."""
    ends = EXECUTION_ENDED.mark()
    _run()
    assert EXECUTION_ENDED.wait(ends, 0)


def test_a_wakeup_wakes_a_waiter_that_has_not_seen_the_end_yet() -> None:
    wakeup = Wakeup()
    mark = wakeup.mark()
    assert not wakeup.wait(mark, 0.01)  # nothing ended: the whole interval passes
    waiter_saw: list[bool] = []
    waiter = threading.Thread(target=lambda: waiter_saw.append(wakeup.wait(mark, 60)))
    waiter.start()
    wakeup.notify()
    waiter.join(timeout=30)
    assert waiter_saw == [True]  # woken by the end, long before its 60 s
    assert wakeup.wait(mark, 60)  # an end before the wait began: no wait at all
    assert not wakeup.wait(wakeup.mark(), 0)
