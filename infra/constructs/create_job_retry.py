"""Retrying a SageMaker create call that AWS refused for throttling or an account limit.

A ``Retry`` cannot do this: Step Functions' optimized SageMaker integration names a throttling
error and a validation error alike, ``SageMaker.AmazonSageMakerException``, with the real code
only in the cause (``... Error Code: ThrottlingException; ...``: design.md, "Error names of the
optimized SageMaker integration"), and a Retry sees only the name. So the task catches the two
names into a Choice that reads the cause; only an account limit
(``SageMaker.ResourceLimitExceededException``, a modeled exception) or a cause with
``Error Code: ThrottlingException`` goes round again, after a backoff with jitter, under a new job
name. Everything else (a validation error, a job that was created and then failed) goes to
``failure`` with ``$.failure`` holding the ``Error`` and ``Cause``.
"""

from __future__ import annotations

from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

Cond = sfn.Condition

#: The error names a create call's refusal arrives under (design.md, as above).
LIMIT_EXCEEDED_ERROR = "SageMaker.ResourceLimitExceededException"
UNMODELED_SAGEMAKER_ERROR = "SageMaker.AmazonSageMakerException"
#: The part of an unmodeled error's cause that marks throttling.
THROTTLING_CAUSE_PATTERN = "*Error Code: ThrottlingException*"

#: Where the attempt number lives (0 for the first attempt); job names end in it.
ATTEMPT_PATH = "$.attempt.number"
#: Characters the attempt number takes in a job name: at most 9 attempts, numbered from 0.
ATTEMPT_DIGITS = 1


class CreateJobRetry(Construct):
    """Catches ``task``'s errors; retries throttling and limits, sends the rest to ``failure``.

    Attempt ``n`` (counting from 0) waits a random time between half and all of
    ``interval_seconds * backoff_rate ** (n - 1)`` before it starts; there are at most
    ``max_attempts`` attempts (default 3). The state input must hold ``$.attempt.number`` (0 on
    the first attempt); each retry increases it, so a task that puts it in its job name sends a
    new name every time.
    """

    def __init__(self, scope: Construct, construct_id: str, *, task: sfn.CustomState,
                 failure: sfn.IChainable, label: str, max_attempts: int = 3,
                 interval_seconds: int = 30, backoff_rate: float = 2.0) -> None:
        super().__init__(scope, construct_id)
        if not 1 <= max_attempts <= 9:
            raise ValueError(f"max_attempts must be 1..9 (one digit in job names), got {max_attempts}")
        if interval_seconds < 2:
            raise ValueError(f"interval_seconds must be at least 2, got {interval_seconds}")
        retryable = Cond.or_(
            Cond.string_equals("$.failure.Error", LIMIT_EXCEEDED_ERROR),
            Cond.and_(Cond.string_equals("$.failure.Error", UNMODELED_SAGEMAKER_ERROR),
                      Cond.string_matches("$.failure.Cause", THROTTLING_CAUSE_PATTERN)),
        )
        decide = sfn.Choice(self, f"Retry{label}Create")
        wait = sfn.Wait(self, f"Wait{label}Backoff",
                        time=sfn.WaitTime.seconds_path("$.attempt.waitSeconds"))
        wait.next(task)
        for attempt in range(1, max_attempts):
            full = max(2, round(interval_seconds * backoff_rate ** (attempt - 1)))
            schedule = sfn.Pass(self, f"Schedule{label}Attempt{attempt + 1}",
                                result_path="$.attempt", parameters={
                                    "number": attempt,
                                    "waitSeconds.$": f"States.MathRandom({full // 2}, {full})",
                                })
            decide.when(Cond.and_(Cond.number_equals(ATTEMPT_PATH, attempt - 1), retryable),
                        schedule.next(wait))
        decide.otherwise(failure)
        task.add_catch(decide, errors=[LIMIT_EXCEEDED_ERROR, UNMODELED_SAGEMAKER_ERROR],
                       result_path="$.failure")
        task.add_catch(failure, errors=["States.ALL"], result_path="$.failure")
