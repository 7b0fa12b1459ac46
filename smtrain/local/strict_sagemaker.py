"""The strict SageMaker front end of the offline engine: every request is judged as AWS would.

Both backends (the local one that trains for real and the scripted one the tests use) sit behind
:func:`check_request`, which refuses a request that breaks botocore's service model
(:mod:`smtrain.local.sagemaker_model`) or the API reference's prose rules
(:mod:`smtrain.local.sagemaker_rules`) with the ``ValidationException`` SageMaker answers, and
:func:`step_functions_error`, which names an API error the way Step Functions' optimized SageMaker
integration does.

Kept apart from the project's own input rules (``smtrain/core/input_rules.py``) on purpose: those
are our contract, written once and run by the state machine and the CLI; this is AWS's, read from
AWS's machine-readable models and its API reference, the independent judge of ours. A rule that
both hold (Grid takes categorical ranges only, Hyperband's 20,000) is spelt in each for that
reason: a mistake in ours must not be able to pass theirs.

How Step Functions names SageMaker errors (design.md, "Error names of the optimized SageMaker
integration"; the Step Functions SageMaker sample projects and the Data Science SDK retry on
``SageMaker.AmazonSageMakerException``): a modeled exception keeps its SDK class name
(``SageMaker.ResourceLimitExceededException``, ...); everything else, throttling and validation
included, is ``SageMaker.AmazonSageMakerException`` with the real code only in the cause, as
``<message> (Service: AmazonSageMaker; Status Code: 400; Error Code: <code>; Request ID: <id>)``.
The AWS SDK integration (``aws-sdk:sagemaker:*``) names errors ``SageMaker.<Code>Exception``
(Step Functions developer guide, "AWS SDK service integrations": service name and error name in
PascalCase, always with the ``Exception`` suffix); for an error its model does not define, the
SDK's base class, ``SageMaker.SageMakerException``.
"""

from __future__ import annotations

import uuid
from typing import Final

from smtrain.local.backend import Request, SageMakerError
from smtrain.local.sagemaker_model import request_violations, service_model
from smtrain.local.sagemaker_rules import rule_violations

#: Error codes SageMaker's model defines as exceptions (shapes with ``"exception": true``:
#: ResourceLimitExceeded, ResourceInUse, ResourceNotFound, ...).
MODELED_ERROR_CODES: Final = frozenset(
    name for name in service_model().shape_names
    if service_model().shape_for(name).metadata.get("exception"))

#: The error name Step Functions gives an unmodeled SageMaker error (optimized integration).
OPTIMIZED_UNMODELED_ERROR = "SageMaker.AmazonSageMakerException"
#: The same for the AWS SDK integration.
SDK_UNMODELED_ERROR = "SageMaker.SageMakerException"

#: HTTP status SageMaker answers with, per error code (validation, throttling and the modeled
#: exceptions are client errors; SageMaker's JSON protocol answers 400 for all of them).
_STATUS: Final = {"InternalFailure": 500, "ServiceUnavailable": 503}


def validation_error(problems: list[str]) -> SageMakerError:
    """A ``ValidationException`` in SageMaker's wording for one or more problems."""
    count = len(problems)
    noun = "error" if count == 1 else "errors"
    return SageMakerError("ValidationException",
                          f"{count} validation {noun} detected: " + "; ".join(problems))


def check_request(operation: str, request: Request) -> None:
    """Raise SageMaker's ``ValidationException`` if AWS would refuse ``request``."""
    problems = request_violations(operation, request)
    if not problems:
        problems = rule_violations(operation, request)
    if problems:
        raise validation_error(problems)


def _exception_name(code: str) -> str:
    return code if code.endswith("Exception") else f"{code}Exception"


def step_functions_error(error: SageMakerError, *, sdk_integration: bool) -> tuple[str, str]:
    """``(Error, Cause)`` of a task that got ``error`` from SageMaker."""
    status = _STATUS.get(error.code, 400)
    cause = (f"{error.message} (Service: AmazonSageMaker; Status Code: {status}; "
             f"Error Code: {error.code}; Request ID: {uuid.uuid4()})")
    if error.code in MODELED_ERROR_CODES:
        return f"SageMaker.{_exception_name(error.code)}", cause
    return (SDK_UNMODELED_ERROR if sdk_integration else OPTIMIZED_UNMODELED_ERROR), cause
