"""The engine's strict SageMaker front end refuses what AWS refuses, one problem or many."""

from __future__ import annotations

import pytest

from smtrain.local.backend import SageMakerError
from smtrain.local.sagemaker_model import request_violations
from smtrain.local.strict_sagemaker import check_request

VALID_VERSION = {
    "ModelPackageGroupName": "smtrain-digits-mlp-10ca1000",
    "InferenceSpecification": {"Containers": [{
        "Image": "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.5-cpu-py311",
        "ModelDataUrl": "s3://bucket/models/job/output/model.tar.gz"}]},
}


def test_a_valid_request_has_no_violation() -> None:
    assert request_violations("CreateModelPackage", VALID_VERSION) == []
    check_request("CreateModelPackage", VALID_VERSION)


@pytest.mark.parametrize(("change", "words"), [
    # Exactly one problem botocore's own validator finds (its report has no header line: a
    # validator that skipped the first line accepted these).
    ({"Bogus": 1}, "Unknown parameter in input: \"Bogus\""),
    ({"ModelApprovalStatus": 1}, "Invalid type for parameter ModelApprovalStatus"),
    ({"InferenceSpecification": {"Containers": []}}, "Invalid length for parameter "
                                                      "InferenceSpecification.Containers"),
    # What the service checks beyond botocore: enums, patterns, maxima.
    ({"ModelApprovalStatus": "Pending"}, "enum value set"),
    ({"CustomerMetadataProperties": {"hp:lr": "[1,2]"}}, "regular expression pattern"),
    ({"CustomerMetadataProperties": {f"k{i}": "v" for i in range(51)}}, "less than or equal to 50"),
    ({"ClientToken": "x" * 37}, "less than or equal to 36"),
    # The API reference's prose: versioned or unversioned, not both.
    ({"ModelPackageName": "other"}, "not applicable to versioned models"),
])
def test_a_request_with_one_problem_is_refused(change: dict[str, object], words: str) -> None:
    request = {**VALID_VERSION, **change}
    with pytest.raises(SageMakerError) as refused:
        check_request("CreateModelPackage", request)
    assert refused.value.code == "ValidationException"
    assert words in refused.value.message
