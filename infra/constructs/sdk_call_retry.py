"""How a state that calls SageMaker through Step Functions' AWS SDK integration retries.

Throttling, and the errors SageMaker's model does not name, which an SDK integration reports as
``SageMaker.SageMakerException`` (a validation error among them: "Integrating services with the
AWS SDK", error names), go round again three times, 5 s apart and doubling, with full jitter:
about 35 s at most before the state's Catch.
"""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_stepfunctions as sfn

#: The error names retried.
RETRIED_ERRORS = ("SageMaker.ThrottlingException", "SageMaker.SageMakerException")


def retry_sagemaker_call(state: sfn.TaskStateBase | sfn.CustomState) -> None:
    """Add the retry above to ``state``."""
    state.add_retry(errors=list(RETRIED_ERRORS), interval=Duration.seconds(5), backoff_rate=2,
                    max_attempts=3, jitter_strategy=sfn.JitterType.FULL)
