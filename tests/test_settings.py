"""Configuration: defaults are valid and every bad value fails naming its setting."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest

from infra.settings import Settings, SettingsError, settings_from_context
from tests.conftest import ROOT


def test_cdk_json_defaults_are_valid(cdk_context: dict[str, Any]) -> None:
    settings = settings_from_context(cdk_context["training"], region="eu-west-1")
    assert settings.name_prefix == "smtrain"
    assert settings.default_instance_type in settings.allowed_instance_types
    assert settings.storage_stack_name == "smtrain-storage"
    assert settings.workflow_stack_name == "smtrain-workflow"
    # Off unless asked for: Step Functions may refuse the field (see docs/configuration.md).
    assert cdk_context["training"]["sagemakerRetryAttempts"] is None
    assert settings.sagemaker_retry_attempts is None


def test_dataclass_is_frozen() -> None:
    settings = Settings(region="us-east-1")
    with pytest.raises(AttributeError):
        settings.name_prefix = "other"  # type: ignore[misc]


BAD_VALUES: list[tuple[str, Any, str]] = [
    ("namePrefix", "Smtrain", "namePrefix"),
    ("namePrefix", "a", "namePrefix"),
    ("namePrefix", "prefix-that-is-too-long", "namePrefix"),
    ("namePrefix", "ends-", "namePrefix"),
    ("namePrefix", 7, "namePrefix"),
    ("defaultInstanceType", "ml.p4d.24xlarge", "defaultInstanceType"),
    ("allowedInstanceTypes", [], "allowedInstanceTypes"),
    ("allowedInstanceTypes", ["m5.xlarge"], "allowedInstanceTypes"),
    ("allowedInstanceTypes", "ml.m5.xlarge", "allowedInstanceTypes"),
    ("defaultInstanceCount", 0, "defaultInstanceCount"),
    ("defaultInstanceCount", 5, "defaultInstanceCount"),
    ("defaultInstanceCount", True, "defaultInstanceCount"),
    ("maxInstanceCount", 101, "maxInstanceCount"),
    ("defaultVolumeSizeInGB", 0, "defaultVolumeSizeInGB"),
    ("defaultVolumeSizeInGB", "30", "defaultVolumeSizeInGB"),
    ("maxRuntimeInSeconds", 0, "maxRuntimeInSeconds"),
    ("maxRuntimeInSeconds", 30 * 24 * 3600, "maxRuntimeInSeconds"),
    ("spotByDefault", "yes", "spotByDefault"),
    ("spotMaxWaitInSeconds", 60, "spotMaxWaitInSeconds"),
    ("notificationEmail", "not-an-address", "notificationEmail"),
    ("logRetentionDays", 10, "logRetentionDays"),
    ("pytorchVersion", "latest", "pytorchVersion"),
    ("pytorchPyVersion", "3.11", "pytorchPyVersion"),
    ("xgboostVersion", "", "xgboostVersion"),
    ("tags", {"aws:reserved": "x"}, "tags"),
    ("tags", {"team": 5}, "tags"),
    ("mlflowTrackingServer", "yes", "mlflowTrackingServer"),
    ("mlflowTrackingServerSize", "Huge", "mlflowTrackingServerSize"),
    # RetryStrategy.MaximumRetryAttempts: 1 to 30 (API reference; botocore's sagemaker model).
    ("sagemakerRetryAttempts", 0, "sagemakerRetryAttempts"),
    ("sagemakerRetryAttempts", 31, "sagemakerRetryAttempts"),
    ("sagemakerRetryAttempts", True, "sagemakerRetryAttempts"),
    ("sagemakerRetryAttempts", "2", "sagemakerRetryAttempts"),
]


@pytest.mark.parametrize(("key", "value", "named"), BAD_VALUES,
                         ids=[f"{k}={v!r}" for k, v, _ in BAD_VALUES])
def test_bad_value_names_the_setting(cdk_context: dict[str, Any], key: str, value: Any,
                                     named: str) -> None:
    context = {**cdk_context["training"], key: value}
    with pytest.raises(SettingsError, match=f"'{named}'"):
        settings_from_context(context, region="us-east-1")


def test_sagemaker_retry_attempts_is_off_unless_set(cdk_context: dict[str, Any]) -> None:
    without = {k: v for k, v in cdk_context["training"].items() if k != "sagemakerRetryAttempts"}
    assert settings_from_context(without, region="us-east-1").sagemaker_retry_attempts is None
    chosen = settings_from_context({**without, "sagemakerRetryAttempts": 30}, region="us-east-1")
    assert chosen.sagemaker_retry_attempts == 30
    with pytest.raises(SettingsError) as refused:
        settings_from_context({**without, "sagemakerRetryAttempts": 0}, region="us-east-1")
    assert str(refused.value) == (
        "setting 'sagemakerRetryAttempts' is invalid: got 0, expected null (send no RetryStrategy) "
        "or an integer from 1 to 30 (SageMaker's RetryStrategy.MaximumRetryAttempts)")


def test_unknown_setting_is_refused(cdk_context: dict[str, Any]) -> None:
    context = {**cdk_context["training"], "instanceTyp": "ml.m5.xlarge"}
    with pytest.raises(SettingsError, match=r"unknown setting.*instanceTyp"):
        settings_from_context(context, region="us-east-1")


@pytest.mark.parametrize("region", [None, "", "mars-north-1", "us-east-1a"])
def test_missing_or_bad_region(region: str | None) -> None:
    with pytest.raises(SettingsError, match="'region'"):
        settings_from_context({}, region=region)


def test_bad_account() -> None:
    with pytest.raises(SettingsError, match="'account'"):
        settings_from_context({}, region="us-east-1", account="12345")


def test_unknown_framework_version_fails_naming_the_setting() -> None:
    from infra.images import training_images

    with pytest.raises(SettingsError, match="pytorchVersion"):
        training_images(region="us-east-1", pytorch_version="0.1", pytorch_py_version="py311",
                        xgboost_version="1.7-1")
    with pytest.raises(SettingsError, match="xgboostVersion"):
        training_images(region="us-east-1", pytorch_version="2.5", pytorch_py_version="py311",
                        xgboost_version="0.0-0")


def test_app_py_exits_with_the_message(tmp_path: Any) -> None:
    """The real entry point, as the CDK CLI runs it: a bad value stops synth with exit 2."""
    env = {**os.environ, "CDK_DEFAULT_REGION": "us-east-1", "CDK_OUTDIR": str(tmp_path),
           "CDK_CONTEXT_JSON": '{"training": {"maxRuntimeInSeconds": -5}}'}
    result = subprocess.run([sys.executable, "app.py"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "setting 'maxRuntimeInSeconds' is invalid" in result.stderr
    assert not list(tmp_path.glob("*.template.json"))


def test_command_line_context_string_is_parsed(cdk_context: dict[str, Any]) -> None:
    """`cdk synth -c training='{...}'` hands the value over as a string (CDK CLI context)."""
    import json

    text = json.dumps({**cdk_context["training"], "defaultInstanceCount": 2})
    assert settings_from_context(text, region="us-east-1").default_instance_count == 2


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", "3"])
def test_command_line_context_that_is_no_object_names_the_setting(text: str) -> None:
    with pytest.raises(SettingsError, match="context 'training' must be a JSON object"):
        settings_from_context(text, region="us-east-1")


#: SageMaker's name limits (botocore's sagemaker model, shapes ``HyperParameterTuningJobName``
#: and ``TrainingJobName``: max 32 and 63 characters; API reference, CreateHyperParameterTuningJob
#: and CreateTrainingJob).
TUNING_JOB_NAME_MAX = 32
TRAINING_JOB_NAME_MAX = 63
#: What follows the prefix in each job name: ``-<12 hex digits of the run id>-<attempt digit>``
#: and ``-<36-character UUID>-<attempt digit>``.
TUNING_NAME_SUFFIX = len("-0123456789ab-0")
TRAINING_NAME_SUFFIX = len("-01234567-89ab-cdef-0123-456789abcdef-0")


def _accepted(cdk_context: dict[str, Any], prefix: str) -> bool:
    try:
        settings_from_context({**cdk_context["training"], "namePrefix": prefix}, region="us-east-1")
    except SettingsError as error:
        assert "'namePrefix'" in str(error), error
        return False
    return True


def test_longest_name_prefix_keeps_job_names_within_sagemaker_limits(
        cdk_context: dict[str, Any]) -> None:
    """The longest prefix the settings accept makes tuning job names of at most 32 characters and
    training job names of at most 63; one character more is refused, naming ``namePrefix``."""
    accepted = [length for length in range(1, 65) if _accepted(cdk_context, "a" * length)]
    assert accepted, "no prefix of letters is accepted"
    longest = max(accepted)
    assert accepted == list(range(min(accepted), longest + 1)), "accepted lengths have a gap"
    assert longest + TUNING_NAME_SUFFIX <= TUNING_JOB_NAME_MAX, (
        f"a {longest}-character prefix makes {longest + TUNING_NAME_SUFFIX}-character tuning job names")
    assert longest + TRAINING_NAME_SUFFIX <= TRAINING_JOB_NAME_MAX
    with pytest.raises(SettingsError, match="'namePrefix'"):
        settings_from_context({**cdk_context["training"], "namePrefix": "a" * (longest + 1)},
                              region="us-east-1")
    # The same length in a realistic shape (letters, digits and dashes) is accepted too.
    assert _accepted(cdk_context, ("team-" + "x1" * 20)[:longest - 1] + "z")


# `cdk synth` as a user runs it prints nothing about unconfigured feature flags (issue 19, item 10):
# tests/test_app_start.py, test_cdk_synth_as_a_user_runs_it (one synth for that and app.py's start).


def _documented_name_prefix_lengths() -> tuple[int, int]:
    """The lengths docs/configuration.md gives ``namePrefix`` (its row: "2 to 16 of ``a-z0-9-``",
    written with an en dash)."""
    import re

    row = next(line for line in (ROOT / "docs" / "configuration.md").read_text().splitlines()
               if line.startswith("| `namePrefix` |"))
    match = re.search("(\\d+)\u2013(\\d+) of", row)  # an en dash
    assert match is not None, row
    return int(match[1]), int(match[2])


@pytest.mark.parametrize("realistic", [False, True])
def test_name_prefix_lengths_are_the_documented_ones(cdk_context: dict[str, Any], realistic: bool) -> None:
    """Exactly the documented 2 to 16 characters pass (issue 19, item 11: a 17-character prefix
    went through): the shortest and longest pass, one fewer or one more fails synth with a
    message naming ``namePrefix`` and the allowed lengths."""
    shortest, longest = _documented_name_prefix_lengths()
    assert (shortest, longest) == (2, 16)

    def prefix(length: int) -> str:
        return ("team-a1-" * 4)[:length - 1] + "z" if realistic else "a" * length

    for length in (shortest, longest):
        settings = settings_from_context({**cdk_context["training"], "namePrefix": prefix(length)},
                                         region="us-east-1")
        assert settings.storage_stack_name == f"{prefix(length)}-storage"
    for length in (shortest - 1, longest + 1):
        with pytest.raises(SettingsError) as refused:
            settings_from_context({**cdk_context["training"], "namePrefix": prefix(length)},
                                  region="us-east-1")
        message = str(refused.value)
        assert message.startswith(f"setting 'namePrefix' is invalid: got {prefix(length)!r}"), message
        assert "2-16 characters" in message, message
