"""cdk-nag rule packs and the one way this project acknowledges a finding.

Every acknowledgement names one rule on one resource, with the exact finding (``applies_to``)
where the rule reports several, and a reason. :func:`nag_arn` spells a CloudFormation ARN the way
cdk-nag prints it in a finding, so an acknowledgement matches only that resource.

checkov (``make checkov``) reads acknowledgements from a resource's ``Metadata.checkov.skip``
(checkov's documentation, "Suppressing and Skipping Policies", CloudFormation): a cdk-nag rule
with a checkov equivalent (:data:`CHECKOV_EQUIVALENTS`) is acknowledged for checkov too, with the
same reason, and :func:`acknowledge_checkov` acknowledges a check only checkov makes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

import aws_cdk as cdk
from cdk_nag import (
    AwsSolutionsChecks,
    HIPAASecurityChecks,
    NagPackSuppression,
    NagSuppressions,
    NIST80053R5Checks,
    PCIDSS321Checks,
)
from constructs import IConstruct

RULE_PACKS = (AwsSolutionsChecks, HIPAASecurityChecks, NIST80053R5Checks, PCIDSS321Checks)

#: Rules that report S3 cross-region replication; one reason covers every bucket here.
REPLICATION_RULES = (
    "HIPAA.Security-S3BucketReplicationEnabled",
    "NIST.800.53.R5-S3BucketReplicationEnabled",
    "PCI.DSS.321-S3BucketReplicationEnabled",
)
#: Rules that report an inline (non-managed) IAM policy.
INLINE_POLICY_RULES = (
    "HIPAA.Security-IAMNoInlinePolicy",
    "NIST.800.53.R5-IAMNoInlinePolicy",
    "PCI.DSS.321-IAMNoInlinePolicy",
)


#: Rules that report a Lambda function's concurrency limit, dead-letter queue and VPC placement;
#: a deploy-time custom resource's function answers CloudFormation itself, so none applies.
DEPLOY_TIME_FUNCTION_RULES = (
    "HIPAA.Security-LambdaConcurrency", "NIST.800.53.R5-LambdaConcurrency",
    "HIPAA.Security-LambdaDLQ", "NIST.800.53.R5-LambdaDLQ",
    "HIPAA.Security-LambdaInsideVPC", "NIST.800.53.R5-LambdaInsideVPC",
    "PCI.DSS.321-LambdaInsideVPC",
)


def apply_rule_packs(scope: IConstruct, *, verbose: bool = True) -> None:
    """Check everything under ``scope`` with the AwsSolutions, HIPAA Security, NIST 800-53 R5 and
    PCI DSS 3.2.1 packs; unacknowledged findings become synth errors and warnings."""
    for pack in RULE_PACKS:
        cdk.Aspects.of(scope).add(pack(verbose=verbose))


#: checkov's check for the same thing as a cdk-nag rule (by the rule's name after its pack).
CHECKOV_EQUIVALENTS = {
    "LambdaConcurrency": "CKV_AWS_115",  # function-level concurrent execution limit
    "LambdaDLQ": "CKV_AWS_116",  # dead-letter queue
    "LambdaInsideVPC": "CKV_AWS_117",  # inside a VPC
    "CloudWatchLogGroupEncrypted": "CKV_AWS_158",  # log group encrypted by KMS
}

#: checkov's checks of a Lambda function's concurrency limit, DLQ and VPC placement (the
#: equivalents of :data:`DEPLOY_TIME_FUNCTION_RULES`), for functions cdk-nag does not check.
DEPLOY_TIME_FUNCTION_CHECKS = ("CKV_AWS_115", "CKV_AWS_116", "CKV_AWS_117")


def acknowledge(construct: IConstruct, rule_ids: str | Sequence[str], reason: str, *,
                applies_to: Sequence[str] | None = None) -> None:
    """Acknowledge ``rule_ids`` on ``construct`` alone (not its children) with ``reason``, and
    their checkov equivalents on its CloudFormation resource."""
    if len(reason) < 20:
        raise ValueError(f"a suppression needs a real reason, got {reason!r}")
    ids = [rule_ids] if isinstance(rule_ids, str) else list(rule_ids)
    NagSuppressions.add_resource_suppressions(
        construct,
        [NagPackSuppression(id=rule_id, reason=reason,
                            applies_to=list(applies_to) if applies_to else None)
         for rule_id in ids],
        apply_to_children=False,
    )
    checks = sorted({CHECKOV_EQUIVALENTS[name] for rule_id in ids
                     if (name := rule_id.split("-", 1)[-1]) in CHECKOV_EQUIVALENTS})
    if checks:
        acknowledge_checkov(construct, checks, reason)


def acknowledge_checkov(construct: IConstruct, check_ids: Sequence[str], reason: str) -> None:
    """Acknowledge checkov's ``check_ids`` on ``construct``'s CloudFormation resource with
    ``reason`` (``Metadata.checkov.skip``, kept beside any earlier ones)."""
    if len(reason) < 20:
        raise ValueError(f"a suppression needs a real reason, got {reason!r}")
    resource = construct if isinstance(construct, cdk.CfnResource) else construct.node.default_child
    if not isinstance(resource, cdk.CfnResource):
        raise ValueError(f"{construct.node.path} has no CloudFormation resource to acknowledge on")
    skips = list((resource.get_metadata("checkov") or {}).get("skip", []))
    known = {skip["id"] for skip in skips}
    skips += [{"id": check_id, "comment": reason} for check_id in check_ids if check_id not in known]
    resource.add_metadata("checkov", {"skip": skips})


def nag_arn(stack: cdk.Stack, value: Any) -> str:
    """A (possibly tokenized) ARN string as cdk-nag prints it: ``<LogicalId.Arn>`` for
    ``Fn::GetAtt``, ``<AWS::AccountId>`` for a ``Ref``, literal text otherwise."""
    return nag_spelling(stack.resolve(value))


def nag_spelling(value: Any) -> str:
    """A resolved CloudFormation value (as in a template) spelt as cdk-nag spells it."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and len(value) == 1:
        ((key, argument),) = value.items()
        if key == "Fn::Join":
            separator, parts = argument
            return str(separator).join(nag_spelling(part) for part in parts)
        if key == "Ref":
            return f"<{argument}>"
        if key == "Fn::ImportValue" and isinstance(argument, str):
            # An export name never holds a wildcard; spelt so that it cannot match one.
            return f"<ImportValue:{argument}>"
        if key == "Fn::Sub" and isinstance(argument, str):
            return re.sub(r"\$\{([^}]+)\}", r"<\1>", argument)
        if key == "Fn::GetAtt":
            return f"<{argument[0]}.{argument[1]}>"
        if key in ("Fn::Select", "Fn::Split", "Fn::GetStackOutput"):
            # cdk-nag prints what it cannot spell as compact JSON.
            return json.dumps(value, separators=(",", ":"))
    raise ValueError(f"cannot spell {value!r} as a cdk-nag finding")


#: The construct id of the one function CDK's ``AwsCustomResource`` shares per stack.
AWS_CUSTOM_RESOURCE_PROVIDER_ID = "AWS679f53fac002430cb0da5b7982bd2287"


def acknowledge_aws_custom_resource_provider(stack: cdk.Stack) -> None:
    """Acknowledge, narrowly, what the packs report on the function that CDK's
    ``AwsCustomResource`` shares within ``stack`` (call once its first custom resource exists;
    calling again does nothing new)."""
    provider = stack.node.try_find_child(AWS_CUSTOM_RESOURCE_PROVIDER_ID)
    if provider is None:
        raise ValueError(f"{stack.stack_name} has no AwsCustomResource provider function yet")
    function = provider.node.find_child("Resource")
    role = provider.node.find_child("ServiceRole").node.find_child("Resource")
    if getattr(provider, "_smtrain_acknowledged", False):
        return
    provider._smtrain_acknowledged = True  # type: ignore[attr-defined]
    acknowledge(
        function, DEPLOY_TIME_FUNCTION_RULES,
        "CDK's AwsCustomResource function: CloudFormation invokes it only during a deploy, once "
        "per custom resource event, and it reports every outcome back to CloudFormation, so no "
        "concurrency limit or DLQ applies; it calls one AWS API per event and reaches no "
        "resource inside a VPC.",
    )
    acknowledge(
        role, "AwsSolutions-IAM4",
        "AWSLambdaBasicExecutionRole lets the role create log groups and streams and put log "
        "events in any log group of the account (Resource *), not only the function's own: CDK's "
        "AwsCustomResource attaches it to the one provider function it shares per stack. The role "
        "can write log events but not read, delete or change a log group's retention or key; the "
        "function runs only during deploys; the calls it makes are granted by a separate policy "
        "naming exact resources. Trade-off accepted and listed in docs/security.md.",
        applies_to=["Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
                    "AWSLambdaBasicExecutionRole"],
    )
