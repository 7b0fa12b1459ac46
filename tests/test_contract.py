"""The contract's one copy outside the project: the names the training containers read."""

from __future__ import annotations

from smtrain.core import contract


def test_the_containers_tracking_names_are_the_contracts() -> None:
    # training_code/common/tracking.py runs inside the images and cannot import the project.
    from training_code.common import tracking
    assert tracking.DEFAULT_EXPERIMENT == contract.EXPERIMENT
    assert tracking.TAG_VARIABLES == {
        contract.RUN_TAG_EXECUTION: contract.ENV_EXECUTION,
        contract.RUN_TAG_PROGRAM: contract.ENV_PROGRAM,
        contract.RUN_TAG_TRAINING_JOB: "TRAINING_JOB_NAME",  # SageMaker sets it in every job
        contract.RUN_TAG_TUNING_JOB: contract.ENV_TUNING_JOB,
    }
    # The run record the tracker writes offline is the one the local backend reads.
    from smtrain.local import run_record
    assert tracking.RECORD_VARIABLE == contract.ENV_TRACKING_RECORD == run_record.RECORD_VARIABLE
    assert tracking.RECORD_VERSION == run_record.RECORD_VERSION


def test_output_ids_are_cloudformation_logical_ids() -> None:
    assert contract.output_id("digits_mlp") == "DigitsMlp"
    assert contract.output_id("my-model_v2") == "MyModelV2"
    for name in ("a", "digits_lightgbm", "x-1_y"):
        assert contract.PROGRAM_NAME.fullmatch(name)
        assert contract.output_id(name).isalnum()
