"""What the offline engine asks of "SageMaker": the API subset the state machine uses.

Two implementations: :class:`~smtrain.local.local_backend.LocalBackend` runs every job for real
on this machine; :class:`tests.scripted_sagemaker.ScriptedBackend` (a test double) answers from a script
that a test supplies and records every request.
"""

from __future__ import annotations

from typing import Any, Protocol

Request = dict[str, Any]
Description = dict[str, Any]

#: Training and tuning job statuses after which a job never changes again.
TERMINAL_STATUSES = frozenset({"Completed", "Failed", "Stopped"})
#: ListTrainingJobsForHyperParameterTuningJob's page size when MaxResults is not given (API
#: reference: "The default value is 10").
DEFAULT_PAGE_SIZE = 10


class SageMakerError(Exception):
    """A SageMaker API error; Step Functions names it ``SageMaker.<code>``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class SageMakerBackend(Protocol):
    def create_training_job(self, request: Request) -> Description: ...

    def describe_training_job(self, name: str) -> Description: ...

    def stop_training_job(self, name: str) -> None: ...

    def create_hyper_parameter_tuning_job(self, request: Request) -> Description: ...

    def describe_hyper_parameter_tuning_job(self, name: str) -> Description: ...

    def stop_hyper_parameter_tuning_job(self, name: str) -> None: ...

    def list_training_jobs_for_hyper_parameter_tuning_job(self, request: Request) -> Description: ...


def tuning_job_page(summaries: list[Description], request: Request) -> Description:
    """ListTrainingJobsForHyperParameterTuningJob's answer from all of a tuning job's
    HyperParameterTrainingJobSummary objects, as the API reference describes the request:
    ``StatusEquals`` filters; ``SortBy`` ``Name`` (the default), ``CreationTime``, ``Status`` or
    ``FinalObjectiveMetricValue`` ("any training jobs that did not return an objective metric
    are not listed"), ``SortOrder`` ``Ascending`` by default; ``MaxResults`` a page (default
    :data:`DEFAULT_PAGE_SIZE`), ``NextToken`` where more remain. Offline a token is the index of
    the page's first job; one that is not such a number is refused as AWS refuses a bad token."""
    status = request.get("StatusEquals")
    listed = [s for s in summaries if status is None or s["TrainingJobStatus"] == status]
    sort_by = request.get("SortBy", "Name")
    keys = {"Name": lambda s: s["TrainingJobName"], "CreationTime": lambda s: str(s["CreationTime"]),
            "Status": lambda s: s["TrainingJobStatus"],
            "FinalObjectiveMetricValue": lambda s: s["FinalHyperParameterTuningJobObjectiveMetric"]["Value"]}
    if sort_by == "FinalObjectiveMetricValue":
        listed = [s for s in listed if "FinalHyperParameterTuningJobObjectiveMetric" in s]
    listed.sort(key=keys[sort_by], reverse=request.get("SortOrder", "Ascending") == "Descending")
    token = request.get("NextToken", "0")
    if not str(token).isdigit():
        raise SageMakerError("ValidationException", f"Invalid pagination token: {token}")
    start, size = int(token), int(request.get("MaxResults", DEFAULT_PAGE_SIZE))
    answer: Description = {"TrainingJobSummaries": listed[start:start + size]}
    if start + size < len(listed):
        answer["NextToken"] = str(start + size)
    return answer
