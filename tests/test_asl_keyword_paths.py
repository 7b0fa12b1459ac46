"""smtrain.local.asl_keyword_paths: on moto's interpreter, a ``Parameters`` key spelt like an ASL
keyword and ending in ``.$`` (``"RoleArn.$"``, as the state machine sends each program's role) is
a path, as the Amazon States Language has it for every key; other keys and values are as before."""

from __future__ import annotations

import json
import time

import boto3
from moto import mock_aws

from smtrain.local import asl_keyword_paths

DEFINITION = {"StartAt": "Build", "States": {"Build": {"Type": "Pass", "End": True, "Parameters": {
    "RoleArn.$": "$.role",                    # a keyword of moto's lexer (ROLEARNPATH)
    "Resource.$": "$.image",                  # another
    "TrainingJobDefinition": {"RoleArn.$": "$.role", "OutputDataConfig": {"S3OutputPath.$": "$.out"},
                              "Resource": "$.image"},  # no .$: a literal, as on AWS
    "Name.$": "States.Format('job-{}', $.n)",  # an intrinsic under a plain key, untouched
}}}}


def test_a_keyword_key_ending_in_dollar_reads_its_path() -> None:
    asl_keyword_paths.enable()
    asl_keyword_paths.enable()  # idempotent
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        client = boto3.client("stepfunctions", region_name="us-east-1")
        machine = client.create_state_machine(
            name="keyword-paths", definition=json.dumps(DEFINITION),
            roleArn="arn:aws:iam::123456789012:role/r")["stateMachineArn"]
        execution = client.start_execution(stateMachineArn=machine, name="one", input=json.dumps(
            {"role": "arn:aws:iam::123456789012:role/program", "image": "img", "out": "s3://b/models/p/",
             "n": 7}))["executionArn"]
        deadline = time.monotonic() + 30
        while (described := client.describe_execution(executionArn=execution))["status"] == "RUNNING":
            assert time.monotonic() < deadline
            time.sleep(0.05)
    assert described["status"] == "SUCCEEDED", described
    assert json.loads(described["output"]) == {
        "RoleArn": "arn:aws:iam::123456789012:role/program", "Resource": "img", "Name": "job-7",
        "TrainingJobDefinition": {"RoleArn": "arn:aws:iam::123456789012:role/program",
                                  "OutputDataConfig": {"S3OutputPath": "s3://b/models/p/"},
                                  "Resource": "$.image"}}
