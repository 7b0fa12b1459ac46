"""cdk-nag packs: no unacknowledged finding, and every acknowledgement is narrow and used."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from infra.compliance import nag_spelling
from tests.helpers import Synthesized, as_list, nag_report_rows


def test_no_unacknowledged_errors_or_warnings(synthesized: Synthesized) -> None:
    findings = [m for m in synthesized.messages
                if m[0].rsplit(".", 1)[-1].lower() in ("error", "warning")]
    assert findings == []
    non_compliant = [r for r in nag_report_rows(synthesized) if r["Compliance"] == "Non-Compliant"]
    assert non_compliant == []


def _suppressions(synthesized: Synthesized) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for stack, template in synthesized.templates.items():
        for logical_id, resource in template["Resources"].items():
            for rule in resource.get("Metadata", {}).get("cdk_nag", {}).get("rules_to_suppress", []):
                yield stack, logical_id, rule


def test_every_acknowledgement_is_reasoned_and_narrow(synthesized: Synthesized) -> None:
    suppressions = list(_suppressions(synthesized))
    assert suppressions, "the packs found something to acknowledge"
    for stack, logical_id, rule in suppressions:
        where = f"{stack}/{logical_id} {rule['id']}"
        assert len(rule["reason"]) >= 60, where
        if rule["id"] in ("AwsSolutions-IAM5", "AwsSolutions-IAM4"):
            assert rule.get("applies_to"), f"{where} must name the exact findings"
            assert all(isinstance(a, str) and a.startswith(("Resource::", "Action::", "Policy::"))
                       for a in rule["applies_to"]), where


def _acknowledgements(synthesized: Synthesized) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(construct path, rule)`` of every acknowledgement on the synthesized app: cdk-nag keeps
    them in each resource's ``cdk_nag`` metadata, and names resources by construct path in its
    reports (the assembly's ``aws:cdk:logicalId`` metadata maps one to the other)."""
    from aws_cdk import cx_api

    for stack in cx_api.CloudAssembly(str(synthesized.outdir)).stacks:
        paths = {entry.data: entry.path.lstrip("/")
                 for entry in stack.find_metadata_by_type("aws:cdk:logicalId")}
        for logical_id, resource in stack.template["Resources"].items():
            rules = resource.get("Metadata", {}).get("cdk_nag", {}).get("rules_to_suppress", [])
            for rule in rules:
                assert logical_id in paths, f"{stack.stack_name}/{logical_id} has no construct path"
                yield paths[logical_id], rule


def test_every_acknowledgement_suppresses_a_finding(synthesized: Synthesized) -> None:
    """An acknowledgement that suppresses no finding of its rule on its own resource (or names an
    exact finding the pack did not report there) is stale or misplaced: remove it."""
    reasons: dict[tuple[str, str], list[str]] = {}
    for row in nag_report_rows(synthesized):
        if row["Compliance"] == "Suppressed":
            reasons.setdefault((row["Rule ID"], row["Resource ID"]), []).append(row["Exception Reason"])
    acknowledgements = list(_acknowledgements(synthesized))
    assert len(acknowledgements) == len(list(_suppressions(synthesized)))
    for path, rule in acknowledgements:
        suppressed = reasons.get((rule["id"], path), [])
        assert suppressed, f"{path}: the acknowledgement of {rule['id']} suppresses no finding"
        for finding in rule.get("applies_to") or []:
            # cdk-nag writes a suppressed exact finding as "[<finding>] <reason>".
            assert any(reason.startswith(f"[{finding}] ") for reason in suppressed), (
                f"{path}: {rule['id']} acknowledges {finding}, which the pack did not report there")


def _as_cdk_nag_saw_it(synthesized: Synthesized, value: Any) -> Any:
    """``value`` with each export of the storage stack it imports (``Fn::ImportValue``) replaced
    by the exported value: cdk-nag checks the app before CDK turns cross-stack references into
    exports and imports (an explicit ``Fn::GetStackOutput`` it sees as it is)."""
    if isinstance(value, dict):
        if set(value) == {"Fn::ImportValue"}:
            exported = [output["Value"] for output in synthesized.storage["Outputs"].values()
                        if output.get("Export", {}).get("Name") == value["Fn::ImportValue"]]
            return exported[0] if exported else value
        return {key: _as_cdk_nag_saw_it(synthesized, item) for key, item in value.items()}
    if isinstance(value, list):
        return [_as_cdk_nag_saw_it(synthesized, item) for item in value]
    return value


def test_wildcard_acknowledgements_match_the_policies_exactly(synthesized: Synthesized) -> None:
    """Each IAM5 acknowledgement lists exactly the wildcard resources of its policy: no more
    (a stale exception) and no fewer (the pack would fail)."""
    checked = 0
    for stack, logical_id, rule in _suppressions(synthesized):
        if rule["id"] != "AwsSolutions-IAM5":
            continue
        statements = synthesized.templates[stack]["Resources"][logical_id]["Properties"][
            "PolicyDocument"]["Statement"]
        wildcards = {f"Resource::{nag_spelling(_as_cdk_nag_saw_it(synthesized, resource))}"
                     for statement in statements for resource in as_list(statement["Resource"])
                     if "*" in nag_spelling(_as_cdk_nag_saw_it(synthesized, resource))}
        assert set(rule["applies_to"]) == wildcards, f"{stack}/{logical_id}"
        checked += 1
    # Each job role's policy (three programs' and the earlier shared one's) and the state
    # machine's; the image copy's policy has no wildcard (its log group is its own), so no IAM5.
    assert checked == 5


# -- checkov ---------------------------------------------------------------------------------------

#: What checkov (``make checkov``, pinned in the Makefile) reported on the synthesized
#: configurations before these were acknowledged, by check: each resource that fails one must
#: carry its acknowledgement with a reason. Checked here without checkov (its pins conflict with
#: the project's): the same conditions, on every resource of the kind.
def _checkov_failures(template: dict[str, Any]) -> set[tuple[str, str]]:
    failing = set()
    for logical_id, resource in template["Resources"].items():
        kind, properties = resource["Type"], resource.get("Properties", {})
        if kind == "AWS::Lambda::Function":
            if "ReservedConcurrentExecutions" not in properties:
                failing.add((logical_id, "CKV_AWS_115"))
            if "DeadLetterConfig" not in properties:
                failing.add((logical_id, "CKV_AWS_116"))
            if "VpcConfig" not in properties:
                failing.add((logical_id, "CKV_AWS_117"))
        if kind == "AWS::Logs::LogGroup" and "KmsKeyId" not in properties:
            failing.add((logical_id, "CKV_AWS_158"))
        if kind == "AWS::S3::Bucket" and "LoggingConfiguration" not in properties:
            failing.add((logical_id, "CKV_AWS_18"))
    return failing


def _checkov_skips(template: dict[str, Any]) -> dict[tuple[str, str], str]:
    return {(logical_id, skip["id"]): skip["comment"]
            for logical_id, resource in template["Resources"].items()
            for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", [])}


def test_checkovs_findings_are_acknowledged_with_a_reason(
        synthesized: Synthesized, vpc_with_tracking_server: Synthesized, team_queue_app: Synthesized) -> None:
    """Every function without a DLQ, concurrency limit or VPC (deploy-time functions), log group
    without the key and bucket without access logging carries checkov's acknowledgement, and no
    acknowledgement is left without its finding or its reason."""
    for app in (synthesized, vpc_with_tracking_server, team_queue_app):
        for template in (app.storage, app.workflow):
            skips = _checkov_skips(template)
            failing = _checkov_failures(template)
            assert failing <= skips.keys(), sorted(failing - skips.keys())
            assert all(len(reason) >= 40 for reason in skips.values())
            unmatched = {key for key in skips if key not in failing and key[1] != "CKV_AWS_109"}
            assert not unmatched, sorted(unmatched)
    # The one checkov finding on a policy: SageMaker's own network interface permissions.
    (policy,) = [key for key in _checkov_skips(vpc_with_tracking_server.storage) if key[1] == "CKV_AWS_109"]
    assert policy[0].startswith("VpcJobAccessPolicy")
