"""Model approval alerts: the ``ModelApprovalChanged`` rule of :class:`FailureNotifications`.

Asserted on a minimal stack (a one-Pass state machine): the rule's exact event pattern, its
target and message, the topic policy that lets exactly the two alert rules publish, nothing new
without group names, no cdk-nag finding, and that the pattern selects SageMaker's documented
event (through moto's EventBridge: ``PutEvents`` to a queue standing in for the topic).
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import aws_sagemaker as sagemaker
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk.assertions import Annotations, Match, Template

from infra.compliance import apply_rule_packs
from infra.constructs.failure_notifications import FailureNotifications
from tests.helpers import one_logical_id

GROUPS = ["smtrain-digits-mlp-1a2b3c4d", "smtrain-digits-xgboost-1a2b3c4d"]
ENV = cdk.Environment(account="123456789012", region="us-east-2")

#: The "SageMaker model package state change" example of the SageMaker developer guide ("Events
#: that Amazon SageMaker AI sends to Amazon EventBridge"), its group renamed to one of ours. The
#: documented example is a rejection and carries no ApprovalDescription. (The page's example also
#: repeats "source" as a list; PutEvents takes the source as its own field.)
DOCUMENTED_EVENT: dict[str, Any] = {
    "version": "0",
    "id": "844e2571-85d4-695f-b930-0153b71dcb42",
    "detail-type": "SageMaker Model Package State Change",
    "source": "aws.sagemaker",
    "account": "123456789012",
    "time": "2021-02-24T17:00:14Z",
    "region": "us-east-2",
    "resources": [
        "arn:aws:sagemaker:us-east-2:123456789012:model-package/smtrain-digits-mlp-1a2b3c4d/2",
    ],
    "detail": {
        "ModelPackageGroupName": "smtrain-digits-mlp-1a2b3c4d",
        "ModelPackageVersion": 2,
        "ModelPackageArn": "arn:aws:sagemaker:us-east-2:123456789012:model-package/"
                           "smtrain-digits-mlp-1a2b3c4d/2",
        "CreationTime": "2021-02-24T17:00:14Z",
        "InferenceSpecification": {
            "Containers": [{
                "Image": "257758044811.dkr.ecr.us-east-2.amazonaws.com/"
                         "sagemaker-xgboost:1.0-1-cpu-py3",
                "ImageDigest": "sha256:4dc8a7e4a010a19bb9e0a6b063f355393f6e623603361bd8b105f554"
                               "d4f0c004",
                "ModelDataUrl": "s3://example-bucket/model/output/model.tar.gz",
            }],
            "SupportedContentTypes": ["text/csv"],
            "SupportedResponseMIMETypes": ["text/csv"],
        },
        "ModelPackageStatus": "Completed",
        "ModelPackageStatusDetails": {"ValidationStatuses": [], "ImageScanStatuses": []},
        "CertifyForMarketplace": False,
        "ModelApprovalStatus": "Rejected",
        "MetadataProperties": {
            "GeneratedBy": "arn:aws:sagemaker:us-east-2:123456789012:pipeline/example/"
                           "execution/4r83jejmhorv",
        },
        "LastModifiedTime": "2021-02-24T17:00:14Z",
    },
}
ARN = DOCUMENTED_EVENT["detail"]["ModelPackageArn"]


def _event(**detail: Any) -> dict[str, Any]:
    event = copy.deepcopy(DOCUMENTED_EVENT)
    event["detail"].update(detail)
    return event


def _stack(group_names: list[str] | None = None, *, nag: bool = False) -> cdk.Stack:
    app = cdk.App()
    stack = cdk.Stack(app, "Alerts", env=ENV)
    machine = sfn.StateMachine(stack, "Machine", definition_body=sfn.DefinitionBody.from_chainable(
        sfn.Pass(stack, "Nothing")))
    if group_names is None:
        FailureNotifications(stack, "FailureAlerts", state_machine=machine)
    else:
        FailureNotifications(stack, "FailureAlerts", state_machine=machine,
                             model_package_group_names=group_names)
    if nag:
        apply_rule_packs(stack)
    return stack


@pytest.fixture(scope="module")
def template() -> Template:
    return Template.from_stack(_stack(GROUPS))


def _id(template: Template, prefix: str) -> str:
    return one_logical_id(dict(template.to_json()), prefix)


def _approval_rule(template: Template) -> dict[str, Any]:
    rules = template.find_resources("AWS::Events::Rule")
    return dict(rules[_id(template, "FailureAlertsModelApprovalChanged")])


def _deny_statement(template: Template) -> dict[str, Any]:
    (policy,) = template.find_resources("AWS::SNS::TopicPolicy").values()
    denials = [s for s in policy["Properties"]["PolicyDocument"]["Statement"]
               if s["Effect"] == "Deny" and s["Principal"] == {"Service": "events.amazonaws.com"}]
    assert len(denials) == 1, denials
    return dict(denials[0])


def _rule_arn(template: Template, prefix: str) -> dict[str, Any]:
    return {"Fn::GetAtt": [_id(template, prefix), "Arn"]}


def test_event_pattern_is_exactly_the_groups_approval_decisions(template: Template) -> None:
    assert _approval_rule(template)["Properties"]["EventPattern"] == {
        "source": ["aws.sagemaker"],
        "detail-type": ["SageMaker Model Package State Change"],
        "detail": {"ModelPackageGroupName": GROUPS,
                   "ModelApprovalStatus": ["Approved", "Rejected"]},
    }


def test_target_is_the_alert_topic_with_a_one_line_message(template: Template) -> None:
    (target,) = _approval_rule(template)["Properties"]["Targets"]
    assert target["Arn"] == {"Ref": _id(template, "FailureAlertsTopic")}
    assert target["InputTransformer"] == {
        "InputPathsMap": {
            "detail-ModelPackageGroupName": "$.detail.ModelPackageGroupName",
            "detail-ModelPackageVersion": "$.detail.ModelPackageVersion",
            "detail-ModelApprovalStatus": "$.detail.ModelApprovalStatus",
            "detail-ModelPackageArn": "$.detail.ModelPackageArn",
            "detail-ApprovalDescription": "$.detail.ApprovalDescription",
        },
        "InputTemplate": '"Model package group <detail-ModelPackageGroupName> version '
                         '<detail-ModelPackageVersion> is now <detail-ModelApprovalStatus> '
                         '(<detail-ModelPackageArn>). <detail-ApprovalDescription>"',
    }
    # Only the topic, no role: EventBridge publishes under the topic policy.
    assert "RoleArn" not in target


def test_only_the_two_alert_rules_may_publish(template: Template) -> None:
    deny = _deny_statement(template)
    assert deny == {
        "Sid": "OnlyTheAlertRulesMayPublish",
        "Effect": "Deny",
        "Principal": {"Service": "events.amazonaws.com"},
        "Action": "sns:Publish",
        "Resource": {"Ref": _id(template, "FailureAlertsTopic")},
        "Condition": {"ArnNotEquals": {"aws:SourceArn": [
            _rule_arn(template, "FailureAlertsExecutionFailed"),
            _rule_arn(template, "FailureAlertsModelApprovalChanged"),
        ]}},
    }
    # The rules are the stack's only two; both publish to the one topic.
    rules = template.find_resources("AWS::Events::Rule")
    assert len(rules) == 2
    assert all(t["Arn"] == {"Ref": _id(template, "FailureAlertsTopic")}
               for rule in rules.values() for t in rule["Properties"]["Targets"])
    template.resource_count_is("AWS::SNS::Topic", 1)
    template.resource_count_is("AWS::KMS::Key", 1)


def test_without_group_names_there_is_one_rule_and_the_deny_is_as_before() -> None:
    template = Template.from_stack(_stack())
    template.resource_count_is("AWS::Events::Rule", 1)
    assert _deny_statement(template) == {
        "Sid": "OnlyTheFailureRuleMayPublish",
        "Effect": "Deny",
        "Principal": {"Service": "events.amazonaws.com"},
        "Action": "sns:Publish",
        "Resource": {"Ref": _id(template, "FailureAlertsTopic")},
        "Condition": {"ArnNotEquals": {
            "aws:SourceArn": _rule_arn(template, "FailureAlertsExecutionFailed")}},
    }
    template.has_resource_properties("AWS::SNS::Topic",
                                     {"DisplayName": "SageMaker training failures"})
    # An empty sequence is the same as none.
    assert (Template.from_stack(_stack([])).to_json()["Resources"].keys()
            == template.to_json()["Resources"].keys())


def test_only_the_deny_display_name_and_the_rule_change_with_group_names(
        template: Template) -> None:
    """Group names add the rule and touch only the topic's display name and its Deny."""
    before = Template.from_stack(_stack()).to_json()["Resources"]
    after = template.to_json()["Resources"]
    added = set(after) - set(before)
    assert added == {_id(template, "FailureAlertsModelApprovalChanged")}
    assert set(before) <= set(after)
    changed = {logical_id for logical_id in before if before[logical_id] != after[logical_id]}
    assert {before[i]["Type"] for i in changed} == {"AWS::SNS::Topic", "AWS::SNS::TopicPolicy"}


def test_group_names_may_be_tokens_from_another_stack() -> None:
    """The names the registry gives the workflow stack are weak references
    (``Fn::GetStackOutput``) cut out of a group ARN; they reach the pattern unresolved."""
    app = cdk.App()
    storage = cdk.Stack(app, "Storage", env=ENV)
    group = sagemaker.CfnModelPackageGroup(storage, "Group", model_package_group_name="g-1")
    cdk.CrossStackReferences.of(group).produce(cdk.ReferenceStrength.WEAK)
    workflow = cdk.Stack(app, "Workflow", env=ENV)
    machine = sfn.StateMachine(workflow, "Machine",
                               definition_body=sfn.DefinitionBody.from_chainable(
                                   sfn.Pass(workflow, "Nothing")))
    name = cdk.Fn.select(1, cdk.Fn.split("/", group.attr_model_package_group_arn))
    FailureNotifications(workflow, "FailureAlerts", state_machine=machine,
                         model_package_group_names=[name, "literal-group"])
    pattern = _approval_rule(Template.from_stack(workflow))["Properties"]["EventPattern"]
    token, literal = pattern["detail"]["ModelPackageGroupName"]
    assert literal == "literal-group"
    assert "Fn::GetStackOutput" in json.dumps(token)
    assert "Fn::ImportValue" not in json.dumps(token)


@pytest.mark.parametrize("names, message", [
    (["has_underscore"], "'has_underscore' is not a model package group name"),
    (["-leading-hyphen"], "is not a model package group name"),
    (["x" * 64], "is not a model package group name"),
    ([""], "is not a model package group name"),
    (["same", "same"], "'same' is given twice"),
    ("one-string", "a sequence of names, not one string"),
])
def test_bad_group_names_fail_synth_naming_the_parameter(names: Any, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)) as raised:
        _stack(names)
    assert "model_package_group_names" in str(raised.value)


def test_group_name_rule_is_sagemakers() -> None:
    """The literal-name check is the pattern and length of the SageMaker API model."""
    import botocore.session

    from infra.constructs.failure_notifications import MODEL_PACKAGE_GROUP_NAME

    shape = (botocore.session.get_session().get_service_model("sagemaker")
             .operation_model("CreateModelPackageGroup").input_shape
             .members["ModelPackageGroupName"])
    assert shape.metadata["pattern"] == MODEL_PACKAGE_GROUP_NAME.pattern
    assert MODEL_PACKAGE_GROUP_NAME.fullmatch("a" * shape.metadata["max"])
    assert not MODEL_PACKAGE_GROUP_NAME.fullmatch("a" * (shape.metadata["max"] + 1))


@pytest.mark.parametrize("group_names", [None, GROUPS], ids=["without", "with"])
def test_no_cdk_nag_finding_on_the_alerts(group_names: list[str] | None) -> None:
    """The four packs report nothing on the alerts' resources, with or without the new rule (the
    bare test state machine's own findings are not this construct's)."""
    stack = _stack(group_names, nag=True)
    annotations = Annotations.from_stack(stack)
    findings = [m for m in annotations.find_error("*", Match.any_value())
                + annotations.find_warning("*", Match.any_value())
                if m.id.startswith("/Alerts/FailureAlerts/")]
    assert findings == []
    # The packs did run: the bare state machine has findings of its own.
    assert any(m.id.startswith("/Alerts/Machine/")
               for m in annotations.find_error("*", Match.any_value()))


# -- the pattern against SageMaker's documented event ------------------------------------------

def _delivered(template: Template, events: list[dict[str, Any]]) -> list[str]:
    """What the rule would send for each of ``events``, run through moto's EventBridge: the
    synthesized pattern and input transformer, the topic replaced by an SQS queue."""
    import boto3
    from moto import mock_aws

    rule = _approval_rule(template)["Properties"]
    (target,) = rule["Targets"]
    with mock_aws():
        sqs = boto3.client("sqs", region_name=ENV.region)
        queue = sqs.create_queue(QueueName="alerts")["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])[
            "Attributes"]["QueueArn"]
        bus = boto3.client("events", region_name=ENV.region)
        bus.put_rule(Name="approval", EventPattern=json.dumps(rule["EventPattern"]))
        bus.put_targets(Rule="approval", Targets=[{
            "Id": "queue", "Arn": queue_arn, "InputTransformer": target["InputTransformer"]}])
        for event in events:
            answer = bus.put_events(Entries=[{
                "Source": event["source"], "DetailType": event["detail-type"],
                "Resources": event["resources"], "Detail": json.dumps(event["detail"])}])
            assert answer["FailedEntryCount"] == 0
        messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10)
        return [json.loads(m["Body"]) for m in messages.get("Messages", [])]


def test_documented_rejection_alerts(template: Template) -> None:
    assert len(_delivered(template, [DOCUMENTED_EVENT])) == 1


def test_approval_alerts_with_its_description(template: Template) -> None:
    event = _event(ModelApprovalStatus="Approved", ApprovalDescription="Accuracy 0.97 on holdout")
    assert _delivered(template, [event]) == [
        f"Model package group smtrain-digits-mlp-1a2b3c4d version 2 is now Approved ({ARN}). "
        "Accuracy 0.97 on holdout"]


@pytest.mark.parametrize("event", [
    _event(ModelApprovalStatus="PendingManualApproval"),
    _event(ModelApprovalStatus="Approved", ModelPackageGroupName="someone-elses-group"),
    {**_event(ModelApprovalStatus="Approved"), "detail-type": "SageMaker Model State Change"},
], ids=["pending", "other group", "other detail-type"])
def test_no_alert_for_anything_else(template: Template, event: dict[str, Any]) -> None:
    assert _delivered(template, [event]) == []


def _render_as_documented(transformer: dict[str, Any], event: dict[str, Any]) -> str:
    """The input transformer as EventBridge's user guide states it ("Amazon EventBridge input
    transformation", common issues): a variable whose path the event lacks is not created and
    does not appear in the output. (moto leaves such a placeholder in place instead.)"""
    text = transformer["InputTemplate"]
    for name, path in transformer["InputPathsMap"].items():
        value: Any = event
        for key in path.removeprefix("$.").split("."):
            value = value.get(key) if isinstance(value, dict) else None
        text = text.replace(f"<{name}>", "" if value is None else str(value))
    rendered = json.loads(text)
    assert isinstance(rendered, str)
    return rendered


def test_message_without_a_description_still_reads_whole(template: Template) -> None:
    (target,) = _approval_rule(template)["Properties"]["Targets"]
    message = _render_as_documented(target["InputTransformer"], DOCUMENTED_EVENT)
    assert message.rstrip() == (
        f"Model package group smtrain-digits-mlp-1a2b3c4d version 2 is now Rejected ({ARN}).")
    assert "<" not in message and "\n" not in message
