"""smtrain.local.asl_keyword_paths: on moto's interpreter, a ``Parameters`` key spelt like an ASL
keyword and ending in ``.$`` (``"RoleArn.$"``, as the state machine sends each program's role) is
a path, as the Amazon States Language has it for every key; other keys and values are as before."""

from __future__ import annotations

import json
import time
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.stepfunctions.parser.asl.parse.preprocessor import Preprocessor

from smtrain.local import asl_keyword_paths

DEFINITION = {"StartAt": "Build", "States": {"Build": {"Type": "Pass", "End": True, "Parameters": {
    "RoleArn.$": "$.role",                    # a keyword of moto's lexer (ROLEARNPATH)
    "Resource.$": "$.image",                  # lexed as a plain key: a path as before
    "TrainingJobDefinition": {"RoleArn.$": "$.role", "OutputDataConfig": {"S3OutputPath.$": "$.out"},
                              "Resource": "$.image"},  # no .$: a literal, as on AWS
    "Name.$": "States.Format('job-{}', $.n)",  # an intrinsic under a plain key, untouched
}}}}


def _run(definition: dict[str, Any], name: str) -> dict[str, Any]:
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        client = boto3.client("stepfunctions", region_name="us-east-1")
        machine = client.create_state_machine(
            name=name, definition=json.dumps(definition),
            roleArn="arn:aws:iam::123456789012:role/r")["stateMachineArn"]
        execution = client.start_execution(stateMachineArn=machine, name="one", input=json.dumps(
            {"role": "arn:aws:iam::123456789012:role/program", "image": "img", "out": "s3://b/models/p/",
             "n": 7}))["executionArn"]
        deadline = time.monotonic() + 30
        while (described := client.describe_execution(executionArn=execution))["status"] == "RUNNING":
            assert time.monotonic() < deadline
            time.sleep(0.05)
    assert described["status"] == "SUCCEEDED", described
    output: dict[str, Any] = json.loads(described["output"])
    return output


def test_a_keyword_key_ending_in_dollar_reads_its_path() -> None:
    asl_keyword_paths.enable()
    asl_keyword_paths.enable()  # idempotent
    assert _run(DEFINITION, "keyword-paths") == {
        "RoleArn": "arn:aws:iam::123456789012:role/program", "Resource": "img", "Name": "job-7",
        "TrainingJobDefinition": {"RoleArn": "arn:aws:iam::123456789012:role/program",
                                  "OutputDataConfig": {"S3OutputPath": "s3://b/models/p/"},
                                  "Resource": "$.image"}}


def test_moto_needs_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """moto's own reading keeps ``RoleArn.$`` as a key with the path as its text (when a moto
    upgrade reads it as AWS does, this fails: drop the hook then)."""
    asl_keyword_paths.enable()
    monkeypatch.setattr(Preprocessor, "visitPayload_binding_value", asl_keyword_paths._original)
    definition = {"StartAt": "Build", "States": {"Build": {
        "Type": "Pass", "End": True, "Parameters": {"RoleArn.$": "$.role"}}}}
    assert _run(definition, "moto-alone") == {"RoleArn.$": "$.role"}
