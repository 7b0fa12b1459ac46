"""How a state that calls SageMaker through Step Functions' AWS SDK integration retries.

Throttling, and the errors SageMaker's model does not name, which an SDK integration reports as
``SageMaker.SageMakerException`` (a validation error among them: "Integrating services with the
AWS SDK", error names), go round again three times, 5 s apart and doubling, with full jitter:
about 35 s at most before the state's Catch.
"""

from __future__ import annotations

from typing import Any

from aws_cdk import Duration
from aws_cdk import aws_stepfunctions as sfn

#: The error names retried.
RETRIED_ERRORS = ("SageMaker.ThrottlingException", "SageMaker.SageMakerException")
INTERVAL_SECONDS = 5
BACKOFF_RATE = 2
MAX_ATTEMPTS = 3


def retry_sagemaker_call(state: sfn.TaskStateBase | sfn.CustomState) -> None:
    """Add the retry above to ``state``."""
    state.add_retry(errors=list(RETRIED_ERRORS), interval=Duration.seconds(INTERVAL_SECONDS),
                    backoff_rate=BACKOFF_RATE, max_attempts=MAX_ATTEMPTS,
                    jitter_strategy=sfn.JitterType.FULL)


def sagemaker_call_retrier() -> dict[str, Any]:
    """The same retry as a Retrier of a state written as JSON (a state nested in a Map's
    ItemProcessor, which CDK does not render for a CustomState)."""
    return {"ErrorEquals": list(RETRIED_ERRORS), "IntervalSeconds": INTERVAL_SECONDS,
            "MaxAttempts": MAX_ATTEMPTS, "BackoffRate": BACKOFF_RATE, "JitterStrategy": "FULL"}
