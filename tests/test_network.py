"""The training network per ``network`` mode: subnets, endpoints, security groups, the bucket
policies that keep the execution role inside it, weak cross-stack references, and cdk-nag."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest
from aws_cdk import App, Stack
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs

from infra.compliance import nag_spelling
from infra.constructs.endpoint_only_access import (
    BUCKET_ACTIONS,
    BUCKET_SID,
    OBJECT_ACTIONS,
    OBJECTS_SID,
)
from infra.constructs.training_network import JobNetwork, TrainingNetwork
from infra.settings import Settings
from tests.conftest import ROOT, code_without_script_requirements, synthesize
from tests.helpers import (
    Synthesized,
    as_list,
    cfn_lint,
    job_role_ids,
    nag_report_rows,
    only_resource,
    references,
    resources_of_type,
)
from tests.test_compliance import _acknowledgements

VPC_ID = "vpc-0123456789abcdef0"
SUBNETS = ("subnet-0123456789abcdef0", "subnet-0123456789abcdef1")
GROUPS = ("sg-0123456789abcdef0", "sg-0123456789abcdef1")
NETWORK_PREFIX = "/smtrain/network/"

REQUIRED_ENDPOINTS = {f"com.amazonaws.us-east-1.{name}" for name in (
    "sts", "logs", "monitoring", "ecr.api", "ecr.dkr", "kms")}
MLFLOW_ENDPOINT = "aws.sagemaker.us-east-1.experiments"
ROLE_ACTIONS = ["s3:AbortMultipartUpload", "s3:DeleteObject", "s3:GetObject", "s3:ListBucket",
                "s3:PutObject"]
#: Resources only a created VPC has.
CREATED_ONLY = ("AWS::EC2::VPC", "AWS::EC2::Subnet", "AWS::EC2::RouteTable", "AWS::EC2::VPCEndpoint",
                "AWS::EC2::FlowLog", "Custom::S3PrefixListLookup", "Custom::VpcRestrictDefaultSG",
                "AWS::Lambda::Function")
#: Never in any mode: a route out of the VPC.
NO_ROUTE_OUT = ("AWS::EC2::NatGateway", "AWS::EC2::InternetGateway", "AWS::EC2::VPCGatewayAttachment",
                "AWS::EC2::EIP", "AWS::EC2::Route", "AWS::EC2::EgressOnlyInternetGateway")


def _synth(settings: Settings, tmp: pytest.TempPathFactory, name: str, *,
           without_script_requirements: bool = False, **changes: Any) -> Synthesized:
    mode = dataclasses.replace(settings, **changes)
    code = None
    if without_script_requirements:
        # digits_mlp without its requirements: their vendored wheels (vpc, isolated) are the
        # bundle's business (tests/test_source_bundle.py, tests/test_local_isolation.py).
        code = code_without_script_requirements(tmp.mktemp(f"{name}-code"))
    context = json.loads((ROOT / "cdk.json").read_text())["context"]
    return synthesize(context, mode, tmp.mktemp(f"cdk.out-{name}"), training_code_dir=code)


@pytest.fixture(scope="module")
def created_vpc(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    return _synth(settings, tmp_path_factory, "vpc", without_script_requirements=True,
                  network="vpc")


@pytest.fixture(scope="module")
def created_vpc_tracking(vpc_with_tracking_server: Synthesized) -> Synthesized:
    return vpc_with_tracking_server


@pytest.fixture(scope="module")
def isolated_tracking(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    return _synth(settings, tmp_path_factory, "isolated", without_script_requirements=True,
                  network="isolated", experiment_tracking="server")


@pytest.fixture(scope="module")
def existing_vpc(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    return _synth(settings, tmp_path_factory, "existing", network="vpc", vpc_id=VPC_ID,
                  subnet_ids=SUBNETS)


@pytest.fixture(scope="module")
def existing_vpc_groups(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    return _synth(settings, tmp_path_factory, "existing-groups", network="vpc", vpc_id=VPC_ID,
                  subnet_ids=SUBNETS, security_group_ids=GROUPS)


CREATED = ("created_vpc", "created_vpc_tracking", "isolated_tracking")
EXISTING = ("existing_vpc", "existing_vpc_groups")
ALL_MODES = ("synthesized", *CREATED, *EXISTING)
#: The construct path of the AwsCustomResource function (a singleton at the stack's root).
LOOKUP_FUNCTION = "AWS679f53fac002430cb0da5b7982bd2287"


def _mode(request: pytest.FixtureRequest, name: str) -> Synthesized:
    synthesized: Synthesized = request.getfixturevalue(name)
    return synthesized


# -- reading the template -------------------------------------------------------------------------

def _render(value: Any) -> Any:
    """A template value with ``AWS::Region`` and string joins rendered (the stacks are in
    us-east-1), other intrinsics left as they are."""
    if isinstance(value, dict) and value == {"Ref": "AWS::Region"}:
        return "us-east-1"
    if isinstance(value, dict) and set(value) == {"Fn::Join"}:
        separator, parts = value["Fn::Join"]
        rendered = [_render(part) for part in parts]
        if all(isinstance(part, str) for part in rendered):
            return separator.join(rendered)
        return {"Fn::Join": [separator, rendered]}
    if isinstance(value, dict):
        return {key: _render(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_render(item) for item in value]
    return value


def _one_id(template: dict[str, Any], resource_type: str, prefix: str) -> str:
    found = [i for i in resources_of_type(template, resource_type) if i.startswith(prefix)]
    assert len(found) == 1, (resource_type, prefix, found)
    return found[0]


def _group_id(logical_id: str) -> dict[str, Any]:
    return {"Fn::GetAtt": [logical_id, "GroupId"]}


def _rules(template: dict[str, Any], group: str, names: dict[str, str]) -> set[tuple[Any, ...]]:
    """Every rule of security group ``group`` (inline or a resource of its own) as
    ``(direction, protocol, from port, to port, peer)``; peers are named by ``names`` (logical id
    of a group -> name) or spelt as cdk-nag would."""

    def peer(rule: dict[str, Any]) -> str:
        for key in ("SourceSecurityGroupId", "DestinationSecurityGroupId"):
            if key in rule:
                return names[rule[key]["Fn::GetAtt"][0]]
        for key in ("CidrIp", "CidrIpv6", "DestinationPrefixListId", "SourcePrefixListId"):
            if key in rule:
                return nag_spelling(rule[key])
        raise AssertionError(rule)

    def spelt(direction: str, rule: dict[str, Any]) -> tuple[Any, ...]:
        return (direction, rule["IpProtocol"], rule.get("FromPort"), rule.get("ToPort"), peer(rule))

    properties = template["Resources"][group]["Properties"]
    rules = {spelt("ingress", r) for r in properties.get("SecurityGroupIngress", [])}
    rules |= {spelt("egress", r) for r in properties.get("SecurityGroupEgress", [])}
    for kind, direction in (("AWS::EC2::SecurityGroupIngress", "ingress"),
                            ("AWS::EC2::SecurityGroupEgress", "egress")):
        for rule in resources_of_type(template, kind).values():
            if rule["Properties"]["GroupId"] == _group_id(group):
                rules.add(spelt(direction, rule["Properties"]))
    return rules


def _network_statements(template: dict[str, Any], bucket_prefix: str) -> list[dict[str, Any]]:
    policy = next(r for r in resources_of_type(template, "AWS::S3::BucketPolicy").values()
                  if r["Properties"]["Bucket"]["Ref"].startswith(bucket_prefix))
    return [s for s in policy["Properties"]["PolicyDocument"]["Statement"]
            if s.get("Sid") in (OBJECTS_SID, BUCKET_SID)]


def _expected_deny(template: dict[str, Any], bucket_prefix: str,
                   network: dict[str, Any]) -> list[dict[str, Any]]:
    bucket = _one_id(template, "AWS::S3::Bucket", bucket_prefix)
    bucket_arn = {"Fn::GetAtt": [bucket, "Arn"]}
    condition = {"ArnEquals": {"aws:PrincipalArn": [{"Fn::GetAtt": [role, "Arn"]} for role in job_role_ids(template)]},
                 "StringNotEquals": network}
    return [
        {"Sid": OBJECTS_SID, "Effect": "Deny", "Principal": {"AWS": "*"},
         "Action": sorted(OBJECT_ACTIONS), "Resource": {"Fn::Join": ["", [bucket_arn, "/*"]]},
         "Condition": condition},
        {"Sid": BUCKET_SID, "Effect": "Deny", "Principal": {"AWS": "*"},
         "Action": BUCKET_ACTIONS[0], "Resource": bucket_arn, "Condition": condition},
    ]


# -- created VPC ----------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", CREATED)
def test_created_vpc_has_two_isolated_subnets_and_no_way_out(request: pytest.FixtureRequest, mode: str) -> None:
    template = _mode(request, mode).storage
    vpc_id, vpc = only_resource(template, "AWS::EC2::VPC")
    assert vpc["Properties"]["CidrBlock"] == "10.0.0.0/16"
    assert vpc["Properties"]["EnableDnsHostnames"] is True and vpc["Properties"]["EnableDnsSupport"] is True
    subnets = resources_of_type(template, "AWS::EC2::Subnet")
    assert len(subnets) == 2
    zones = [subnet["Properties"]["AvailabilityZone"] for subnet in subnets.values()]
    assert zones == [{"Fn::Select": [index, {"Fn::GetAZs": ""}]} for index in (0, 1)]
    for subnet in subnets.values():
        assert subnet["Properties"]["MapPublicIpOnLaunch"] is False
        assert subnet["Properties"]["VpcId"] == {"Ref": vpc_id}
        assert subnet["Properties"]["CidrBlock"].endswith("/20")
        assert {"Key": "aws-cdk:subnet-type", "Value": "Isolated"} in subnet["Properties"]["Tags"]
    for resource_type in NO_ROUTE_OUT:
        assert not resources_of_type(template, resource_type), resource_type
    # The default security group is emptied (cdk-nag VPCDefaultSecurityGroupClosed).
    _, restrict = only_resource(template, "Custom::VpcRestrictDefaultSG")
    assert restrict["Properties"]["DefaultSecurityGroupId"] == {"Fn::GetAtt": [vpc_id, "DefaultSecurityGroup"]}


@pytest.mark.parametrize("mode", CREATED)
def test_flow_logs_go_to_an_encrypted_log_group_of_their_own(request: pytest.FixtureRequest, mode: str,
                                                             settings: Settings) -> None:
    template = _mode(request, mode).storage
    vpc_id, _ = only_resource(template, "AWS::EC2::VPC")
    key_id, key = only_resource(template, "AWS::KMS::Key")
    _, flow_log = only_resource(template, "AWS::EC2::FlowLog")
    properties = flow_log["Properties"]
    assert (properties["ResourceType"], properties["ResourceId"], properties["TrafficType"]) == \
        ("VPC", {"Ref": vpc_id}, "ALL")
    group_id = properties["LogGroupName"]["Ref"]
    group = template["Resources"][group_id]
    assert group["Properties"]["KmsKeyId"] == {"Fn::GetAtt": [key_id, "Arn"]}
    assert group["Properties"]["RetentionInDays"] == settings.log_retention_days
    assert group["Properties"]["LogGroupName"] == {
        "Fn::Join": ["", [f"{NETWORK_PREFIX}flow-logs-", {"Ref": vpc_id}]]}
    assert group["DeletionPolicy"] == "Retain"
    # The key lets CloudWatch Logs use it for the network's log groups.
    (logs_statement,) = [s for s in key["Properties"]["KeyPolicy"]["Statement"]
                         if s.get("Sid") == "AllowCloudWatchLogsForTrainingLogGroups"]
    assert logs_statement["Condition"]["ArnLike"]["kms:EncryptionContext:aws:logs:arn"] == [
        {"Fn::Join": ["", ["arn:aws:logs:us-east-1:", {"Ref": "AWS::AccountId"}, f":log-group:{prefix}*"]]}
        for prefix in ("/aws/vendedlogs/states/smtrain-", NETWORK_PREFIX)]
    # Its role may write that group only, and only this account's flow logs may use the role.
    role_id = flow_log["Properties"]["DeliverLogsPermissionArn"]["Fn::GetAtt"][0]
    role = template["Resources"][role_id]["Properties"]
    (trust,) = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "vpc-flow-logs.amazonaws.com"}
    assert trust["Condition"]["StringEquals"] == {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}
    assert "Policies" not in role
    (policy,) = [p for p in resources_of_type(template, "AWS::IAM::ManagedPolicy").values()
                 if {"Ref": role_id} in p["Properties"]["Roles"]]
    assert policy["Properties"]["PolicyDocument"]["Statement"] == [{
        "Sid": "WriteFlowLogs", "Effect": "Allow",
        "Action": ["logs:CreateLogStream", "logs:DescribeLogStreams", "logs:PutLogEvents"],
        "Resource": {"Fn::GetAtt": [group_id, "Arn"]}}]
    assert not [p for p in resources_of_type(template, "AWS::IAM::Policy").values()
                if {"Ref": role_id} in p["Properties"]["Roles"]]


@pytest.mark.parametrize(("mode", "interface_endpoints"), [
    ("created_vpc", REQUIRED_ENDPOINTS),
    ("created_vpc_tracking", REQUIRED_ENDPOINTS | {MLFLOW_ENDPOINT}),
    # Isolated containers reach no network: no MLflow endpoint although tracking is on.
    ("isolated_tracking", REQUIRED_ENDPOINTS),
])
def test_endpoints(request: pytest.FixtureRequest, mode: str, interface_endpoints: set[str]) -> None:
    template = _mode(request, mode).storage
    vpc_id, _ = only_resource(template, "AWS::EC2::VPC")
    subnets = [{"Ref": i} for i in resources_of_type(template, "AWS::EC2::Subnet")]
    route_tables = [{"Ref": i} for i in resources_of_type(template, "AWS::EC2::RouteTable")]
    endpoint_group = _one_id(template, "AWS::EC2::SecurityGroup", "TrainingNetworkEndpointSecurityGroup")
    endpoints = [_render(e["Properties"]) for e in resources_of_type(template, "AWS::EC2::VPCEndpoint").values()]
    gateways = [e for e in endpoints if e["VpcEndpointType"] == "Gateway"]
    interfaces = [e for e in endpoints if e["VpcEndpointType"] == "Interface"]
    assert [(g["ServiceName"], g["RouteTableIds"], g["VpcId"]) for g in gateways] == [
        ("com.amazonaws.us-east-1.s3", route_tables, {"Ref": vpc_id})]
    assert {e["ServiceName"] for e in interfaces} == interface_endpoints
    assert len(interfaces) == len(interface_endpoints)
    for endpoint in interfaces:
        assert endpoint["PrivateDnsEnabled"] is True, endpoint["ServiceName"]
        assert endpoint["SubnetIds"] == subnets, endpoint["ServiceName"]
        assert endpoint["SecurityGroupIds"] == [_group_id(endpoint_group)], endpoint["ServiceName"]


@pytest.mark.parametrize("mode", CREATED)
def test_security_groups_allow_only_members_endpoints_and_s3(request: pytest.FixtureRequest, mode: str) -> None:
    template = _mode(request, mode).storage
    training = _one_id(template, "AWS::EC2::SecurityGroup", "TrainingNetworkTrainingSecurityGroup")
    endpoints = _one_id(template, "AWS::EC2::SecurityGroup", "TrainingNetworkEndpointSecurityGroup")
    assert len(resources_of_type(template, "AWS::EC2::SecurityGroup")) == 2
    lookup = _one_id(template, "Custom::S3PrefixListLookup", "TrainingNetworkS3PrefixList")
    names = {training: "training", endpoints: "endpoints"}
    s3 = f"<{lookup}.PrefixLists.0.PrefixListId>"
    assert _rules(template, training, names) == {
        ("ingress", "-1", None, None, "training"),
        ("egress", "-1", None, None, "training"),
        ("egress", "tcp", 443, 443, "endpoints"),
        ("egress", "tcp", 443, 443, s3),
    }
    assert _rules(template, endpoints, names) == {
        ("ingress", "tcp", 443, 443, "training"),
        # CDK's placeholder for "no outbound rule" (allow_all_outbound=False): it matches nothing.
        ("egress", "icmp", 252, 86, "255.255.255.255/32"),
    }


@pytest.mark.parametrize("mode", CREATED)
def test_s3_prefix_list_is_looked_up_with_one_read_permission(request: pytest.FixtureRequest, mode: str) -> None:
    template = _mode(request, mode).storage
    lookup_id = _one_id(template, "Custom::S3PrefixListLookup", "TrainingNetworkS3PrefixList")
    lookup = template["Resources"][lookup_id]
    call = json.loads(lookup["Properties"]["Create"])
    assert (call["service"], call["action"]) == ("EC2", "describeManagedPrefixLists")
    assert call["parameters"] == {"Filters": [{"Name": "prefix-list-name", "Values": ["com.amazonaws.us-east-1.s3"]}]}
    assert json.loads(lookup["Properties"]["Update"]) == call
    assert lookup["Properties"]["InstallLatestAwsSdk"] is False
    function_id = lookup["Properties"]["ServiceToken"]["Fn::GetAtt"][0]
    function = template["Resources"][function_id]["Properties"]
    role_id = function["Role"]["Fn::GetAtt"][0]
    (policy_id,) = [i for i, p in resources_of_type(template, "AWS::IAM::ManagedPolicy").items()
                    if {"Ref": role_id} in p["Properties"]["Roles"]]
    log_group = function["LoggingConfig"]["LogGroup"]["Ref"]
    assert template["Resources"][policy_id]["Properties"]["PolicyDocument"]["Statement"] == [
        {"Sid": "DescribeManagedPrefixLists", "Effect": "Allow", "Action": "ec2:DescribeManagedPrefixLists",
         "Resource": "*"},
        {"Sid": "WriteOwnLogs", "Effect": "Allow", "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
         "Resource": {"Fn::GetAtt": [log_group, "Arn"]}},
    ]
    assert "Policies" not in template["Resources"][role_id]["Properties"]
    assert policy_id in as_list(lookup["DependsOn"]), "the lookup must wait for its permissions"
    assert template["Resources"][log_group]["Properties"]["KmsKeyId"]["Fn::GetAtt"][0].startswith("DataKey")


# -- existing VPC ---------------------------------------------------------------------------------

def test_existing_vpc_creates_one_security_group_and_nothing_else(existing_vpc: Synthesized) -> None:
    template = existing_vpc.storage
    for resource_type in (*CREATED_ONLY, *NO_ROUTE_OUT):
        assert not resources_of_type(template, resource_type), resource_type
    group, resource = only_resource(template, "AWS::EC2::SecurityGroup")
    assert resource["Properties"]["VpcId"] == VPC_ID
    assert _rules(template, group, {group: "training"}) == {
        ("ingress", "-1", None, None, "training"),
        ("egress", "-1", None, None, "training"),
        # The VPC's endpoints are unknown to the stack: HTTPS to any address.
        ("egress", "tcp", 443, 443, "0.0.0.0/0"),
    }
    outputs = template["Outputs"]
    assert outputs["TrainingVpcId"]["Value"] == VPC_ID
    assert outputs["TrainingSubnetIds"]["Value"] == ",".join(SUBNETS)
    assert outputs["TrainingSecurityGroupIds"]["Value"] == _group_id(group)


def test_existing_vpc_with_security_groups_creates_nothing(existing_vpc_groups: Synthesized,
                                                           synthesized: Synthesized) -> None:
    template = existing_vpc_groups.storage
    assert not [r["Type"] for r in template["Resources"].values()
                if r["Type"].startswith(("AWS::EC2::", "Custom::", "AWS::Lambda::"))]
    # Compared with public mode: the execution role's VPC policy, and the two bucket policies.
    public = synthesized.storage["Resources"]
    added = set(template["Resources"]) - set(public)
    assert [re.sub("[0-9A-F]{8}$", "", i) for i in added] == ["VpcJobAccessPolicy"]
    assert set(public) <= set(template["Resources"])
    changed = sorted(i for i in public if public[i] != template["Resources"][i])
    assert [re.sub("[0-9A-F]{8}$", "", i) for i in changed] == ["BucketsArtifactsPolicy", "BucketsDataPolicy"]
    outputs = template["Outputs"]
    assert outputs["TrainingSecurityGroupIds"]["Value"] == ",".join(GROUPS)
    assert outputs["TrainingSubnetIds"]["Value"] == ",".join(SUBNETS)


# -- bucket policies ------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", [*CREATED, *EXISTING])
@pytest.mark.parametrize("bucket", ["BucketsData", "BucketsArtifacts"])
def test_bucket_policy_denies_the_execution_role_outside_the_network(request: pytest.FixtureRequest,
                                                                     mode: str, bucket: str) -> None:
    template = _mode(request, mode).storage
    if mode in CREATED:
        endpoint = next(i for i, e in resources_of_type(template, "AWS::EC2::VPCEndpoint").items()
                        if e["Properties"]["VpcEndpointType"] == "Gateway")
        network: dict[str, Any] = {"aws:SourceVpce": {"Ref": endpoint}}
    else:
        network = {"aws:SourceVpc": VPC_ID}
    assert _network_statements(template, bucket) == _expected_deny(template, bucket, network)


def test_execution_role_has_no_data_action_the_deny_misses(created_vpc_tracking: Synthesized) -> None:
    """Every S3 action the execution role is granted on the buckets (its own policy and the MLflow
    client policy) is one the network Deny covers."""
    template = created_vpc_tracking.storage
    roles = job_role_ids(template)
    buckets = [_one_id(template, "AWS::S3::Bucket", prefix) for prefix in ("BucketsData", "BucketsArtifacts")]
    granted = set()
    for policy in resources_of_type(template, "AWS::IAM::ManagedPolicy").values():
        if not any({"Ref": role} in policy["Properties"].get("Roles", []) for role in roles):
            continue
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            if any(bucket in json.dumps(statement["Resource"]) for bucket in buckets):
                granted |= {a for a in as_list(statement["Action"]) if a.startswith("s3:")}
    assert granted and granted <= set(ROLE_ACTIONS)


# -- public mode and switching ------------------------------------------------------------------

def test_public_mode_has_no_network(synthesized: Synthesized) -> None:
    template = synthesized.storage
    assert not [r["Type"] for r in template["Resources"].values() if r["Type"].startswith("AWS::EC2::")]
    for resource_type in CREATED_ONLY:
        assert not resources_of_type(template, resource_type), resource_type
    for bucket in ("BucketsData", "BucketsArtifacts"):
        assert _network_statements(template, bucket) == []
    assert not {"TrainingVpcId", "TrainingSubnetIds", "TrainingSecurityGroupIds"} & set(template["Outputs"])
    # The key keeps admitting the network's log groups, so flow logs retained from an earlier
    # vpc mode stay readable after switching back.
    (key,) = resources_of_type(template, "AWS::KMS::Key").values()
    assert NETWORK_PREFIX in json.dumps(key["Properties"]["KeyPolicy"])


def test_switching_the_network_on_replaces_nothing(synthesized: Synthesized, created_vpc: Synthesized) -> None:
    """Public to vpc changes only the two bucket policies in place; everything else is added (the
    key already admits the network's log groups)."""
    off, on = synthesized.storage["Resources"], created_vpc.storage["Resources"]
    assert set(off) <= set(on)
    changed = sorted(re.sub("[0-9A-F]{8}$", "", i) for i in off if off[i] != on[i])
    assert changed == ["BucketsArtifactsPolicy", "BucketsDataPolicy"]


@pytest.mark.parametrize("mode", [*CREATED, "existing_vpc"])
def test_network_reaches_other_stacks_only_weakly(request: pytest.FixtureRequest, mode: str) -> None:
    """No export names a network resource: the workflow stack's reads (Fn::GetStackOutput) never
    lock the network in place (design.md, "Cross-stack exports lock")."""
    synthesized = _mode(request, mode)
    storage, workflow = synthesized.storage, synthesized.workflow
    network = {i for i in storage["Resources"] if i.startswith("TrainingNetwork")}
    assert network
    for name, output in storage["Outputs"].items():
        if "Export" in output:
            assert not any(i in json.dumps(output["Value"]) for i in network), name
    for read in references(workflow, "Fn::GetStackOutput"):
        assert "Export" not in storage["Outputs"][read["OutputName"]]


# -- compliance -----------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ALL_MODES)
def test_nag_clean(request: pytest.FixtureRequest, mode: str) -> None:
    synthesized = _mode(request, mode)
    findings = [m for m in synthesized.messages if m[0].rsplit(".", 1)[-1].lower() in ("error", "warning")]
    assert findings == []
    rows = nag_report_rows(synthesized)
    assert [r for r in rows if r["Compliance"] == "Non-Compliant"] == []
    # Each acknowledgement on the network suppresses a finding there, with a real reason.
    suppressed = {(r["Rule ID"], r["Resource ID"]) for r in rows if r["Compliance"] == "Suppressed"}
    network = [(path, rule) for path, rule in _acknowledgements(synthesized)
               if "/TrainingNetwork/" in path or path.startswith(f"Storage/{LOOKUP_FUNCTION}/")]
    for path, rule in network:
        assert len(rule["reason"]) >= 60, path
        assert (rule["id"], path) in suppressed, f"{path}: {rule['id']} suppresses nothing"
    # What the network's acknowledgements cover: the lookup's '*' (IAM5), its function (Lambda
    # rules) and the all-protocol rule among training instances (common ports).
    expected = {"created": 1 + 7 + 3, "existing": 3}.get(_kind(mode), 0)
    assert len(network) == expected, [(path, rule["id"]) for path, rule in network]


def _kind(mode: str) -> str:
    if mode in CREATED:
        return "created"
    return "existing" if mode == "existing_vpc" else "none"


@pytest.mark.parametrize("mode", ["created_vpc_tracking", "existing_vpc"])
def test_cfn_lint_accepts_the_storage_template(request: pytest.FixtureRequest, mode: str) -> None:
    template = _mode(request, mode).outdir / "Storage.template.json"
    assert cfn_lint(template) == []


# -- the construct's contract ---------------------------------------------------------------------

def test_job_network_is_sagemakers_vpc_config() -> None:
    network = JobNetwork(subnet_ids=SUBNETS, security_group_ids=GROUPS[:1])
    assert network.vpc_config() == {"SecurityGroupIds": [GROUPS[0]], "Subnets": list(SUBNETS)}
    with pytest.raises(dataclasses.FrozenInstanceError):
        network.subnet_ids = ()  # type: ignore[misc]


@pytest.mark.parametrize(("arguments", "message"), [
    ({"subnet_ids": SUBNETS}, "need vpc_id"),
    ({"security_group_ids": GROUPS}, "need vpc_id"),
    ({"vpc_id": VPC_ID, "subnet_ids": SUBNETS[:1]}, "two or more Availability Zones"),
    ({"vpc_id": VPC_ID, "subnet_ids": SUBNETS, "mlflow_endpoint": True}, "created VPC only"),
    ({"log_group_prefix": "/smtrain/network"}, "log_group_prefix"),
])
def test_bad_arguments_fail_synth(arguments: dict[str, Any], message: str) -> None:
    stack = Stack(App(), "Test")
    arguments = {"log_group_prefix": NETWORK_PREFIX, "job_actions": ["s3:GetObject"], **arguments}
    with pytest.raises(ValueError, match=message):
        TrainingNetwork(stack, "Network", key=kms.Key(stack, "Key"),
                        log_retention=logs.RetentionDays.ONE_YEAR, **arguments)


def test_execution_role_may_attach_jobs_to_the_given_subnets_only(existing_vpc_groups: Synthesized) -> None:
    """The EC2 actions SageMaker's guide lists for a VpcConfig ("CreateTrainingJob API: Execution
    Role Permissions"), each as narrow as the Service Authorization Reference allows."""
    template = existing_vpc_groups.storage
    (policy,) = [r for i, r in resources_of_type(template, "AWS::IAM::ManagedPolicy").items()
                 if i.startswith("VpcJobAccessPolicy")]
    assert policy["Properties"]["Roles"] == [{"Ref": role} for role in job_role_ids(template)]

    def arn(resource: str) -> dict[str, Any]:
        return {"Fn::Join": ["", ["arn:aws:ec2:us-east-1:", {"Ref": "AWS::AccountId"}, f":{resource}"]]}

    interfaces = arn("network-interface/*")

    def normal(statements: list[dict[str, Any]]) -> list[str]:
        """Each statement with its lists sorted (CDK minimizes and orders policies)."""
        return sorted(json.dumps({k: sorted(v, key=json.dumps) if isinstance(v, list) else v
                                  for k, v in statement.items()}, sort_keys=True)
                      for statement in statements)

    assert normal(policy["Properties"]["PolicyDocument"]["Statement"]) == normal([
        {"Sid": "DescribeJobNetwork", "Effect": "Allow", "Resource": "*",
         "Action": ["ec2:DescribeNetworkInterfaces", "ec2:DescribeVpcs", "ec2:DescribeDhcpOptions",
                    "ec2:DescribeSubnets", "ec2:DescribeSecurityGroups"]},
        {"Sid": "CreateJobNetworkInterfaces", "Effect": "Allow", "Action": "ec2:CreateNetworkInterface",
         "Resource": [interfaces, *(arn(f"subnet/{s}") for s in SUBNETS),
                      *(arn(f"security-group/{g}") for g in GROUPS)]},
        {"Sid": "ManageJobNetworkInterfaces", "Effect": "Allow", "Resource": interfaces,
         "Action": ["ec2:CreateNetworkInterfacePermission", "ec2:DeleteNetworkInterface"],
         "Condition": {"ArnEquals": {"ec2:Vpc": arn(f"vpc/{VPC_ID}")}}},
        {"Sid": "RemoveJobNetworkInterfacePermissions", "Effect": "Allow", "Resource": "*",
         "Action": "ec2:DeleteNetworkInterfacePermission"},
    ])


def test_public_mode_gives_the_role_no_ec2(synthesized: Synthesized) -> None:
    assert "ec2:" not in json.dumps(synthesized.storage)


def test_deploy_time_calls_pass_the_services_models(created_vpc: Synthesized, cdk_context: dict[str, Any],
                                                    settings: Settings, tmp_path: Path) -> None:
    """What the stacks' AwsCustomResources send AWS at deploy time (the S3 prefix-list lookup, the
    training log group's creation and retention) passes botocore's model of each operation."""
    import botocore.session
    from botocore.validate import ParamValidator

    with_retention = synthesize(cdk_context, dataclasses.replace(settings, training_log_retention_days=30),
                                tmp_path / "cdk.out")
    calls = []
    for template in (created_vpc.storage, with_retention.workflow):
        for resource in template["Resources"].values():
            if resource["Type"].startswith("Custom::") and "Create" in resource.get("Properties", {}):
                create = resource["Properties"]["Create"]
                calls.append(json.loads(create if isinstance(create, str) else
                                        "".join(p if isinstance(p, str) else "x" for p in create["Fn::Join"][1])))
    services = {"EC2": "ec2", "CloudWatchLogs": "logs"}
    assert sorted(c["action"] for c in calls) == ["createLogGroup", "describeManagedPrefixLists",
                                                  "putRetentionPolicy"]
    session = botocore.session.get_session()
    for call in calls:
        model = session.get_service_model(services[call["service"]])
        operation = model.operation_model(call["action"][0].upper() + call["action"][1:])
        report = ParamValidator().validate(call["parameters"], operation.input_shape)
        assert not report.has_errors(), (call, report.generate_report())


# -- endpoint policies ---------------------------------------------------------------------------

OTHER_ACCOUNT = "210987654321"
#: Each endpoint's service, by the IAM service prefix of the actions it admits.
ENDPOINT_BY_SERVICE = {"s3": "com.amazonaws.us-east-1.s3", "sts": "com.amazonaws.us-east-1.sts",
                       "logs": "com.amazonaws.us-east-1.logs", "cloudwatch": "com.amazonaws.us-east-1.monitoring",
                       "ecr": "com.amazonaws.us-east-1.ecr.api", "kms": "com.amazonaws.us-east-1.kms",
                       "sagemaker-mlflow": MLFLOW_ENDPOINT}


def _endpoint_decision(account: Any, endpoint: str, *, principal_account: str, action: str, resource: str,
                       resource_account: str | None) -> str:
    """What ``endpoint``'s policy says to ``action`` on ``resource`` by a role of
    ``principal_account`` (the endpoint policy is one more policy that must allow)."""
    from tests.iam_policy_eval import Request, decide

    context = {"aws:PrincipalAccount": principal_account,
               **({"aws:ResourceAccount": resource_account} if resource_account else {})}
    request = Request(principal=f"arn:aws:iam::{principal_account}:role/Caller", action=action,
                      resource=resource, context=context)
    return decide(request, resource=account.endpoint_statements(endpoint))


@pytest.mark.parametrize("mode", ["created_vpc_tracking", "isolated_tracking"])
def test_every_grant_of_the_execution_role_passes_the_endpoints(request: pytest.FixtureRequest,
                                                                mode: str) -> None:
    """Each action the execution role is granted (every policy of both stacks), on each resource it
    is granted on, is admitted by the endpoint of its service when this account's role asks, and
    refused when a role of another account asks the same. Evaluated, not read."""
    from tests.iam_policy_eval import ACCOUNT, Account

    synthesized = _mode(request, mode)
    account = Account(storage=synthesized.storage, workflow=synthesized.workflow)
    # A program's role: its own policy, the MLflow client's and (from the workflow stack) its code's.
    role = account.role_arn(_one_id(synthesized.storage, "AWS::IAM::Role", "ExecutionRoleDigitsMlp"))
    checked = set()
    for statement in account.identity_statements(role):
        for action in as_list(statement["Action"]):
            service = action.split(":", 1)[0]
            if service == "ec2" or (service == "sagemaker-mlflow" and mode == "isolated_tracking"):
                continue  # SageMaker attaches the interfaces outside the VPC; isolated jobs reach no MLflow
            endpoint = ENDPOINT_BY_SERVICE[service]
            for resource in as_list(statement["Resource"]):
                concrete = resource.replace("*", "x")
                own = _endpoint_decision(account, endpoint, principal_account=ACCOUNT, action=action,
                                         resource=concrete, resource_account=ACCOUNT)
                foreign = _endpoint_decision(account, endpoint, principal_account=OTHER_ACCOUNT,
                                             action=action, resource=concrete, resource_account=ACCOUNT)
                assert (own, foreign) == ("Allow", "ImplicitDeny"), (action, resource, own, foreign)
                checked.add(service)
    assert checked == {"s3", "kms", "ecr", "logs", "cloudwatch",
                       *(("sagemaker-mlflow",) if mode == "created_vpc_tracking" else ())}


@pytest.mark.parametrize(("service", "action", "resource", "resource_account", "expected"), [
    # This account's role writing to another account's bucket, log group, key or registry: refused.
    ("s3", "s3:PutObject", "arn:aws:s3:::someone-elses-bucket/loot.csv", OTHER_ACCOUNT, "ImplicitDeny"),
    ("s3", "s3:ListBucket", "arn:aws:s3:::someone-elses-bucket", OTHER_ACCOUNT, "ImplicitDeny"),
    ("logs", "logs:PutLogEvents", f"arn:aws:logs:us-east-1:{OTHER_ACCOUNT}:log-group:g:log-stream:s",
     OTHER_ACCOUNT, "ImplicitDeny"),
    ("kms", "kms:Encrypt", f"arn:aws:kms:us-east-1:{OTHER_ACCOUNT}:key/k", OTHER_ACCOUNT, "ImplicitDeny"),
    ("ecr", "ecr:BatchGetImage", f"arn:aws:ecr:us-east-1:{OTHER_ACCOUNT}:repository/r", OTHER_ACCOUNT,
     "ImplicitDeny"),
    # An action the role does not hold is not admitted either, even on this account's resources.
    ("s3", "s3:PutBucketPolicy", "arn:aws:s3:::bucketsdata", "123456789012", "ImplicitDeny"),
    ("ecr", "ecr:PutImage", "arn:aws:ecr:us-east-1:123456789012:repository/r", "123456789012", "ImplicitDeny"),
    ("sts", "sts:AssumeRole", "arn:aws:iam::123456789012:role/Admin", "123456789012", "ImplicitDeny"),
    # What AWS's documents say a job needs beyond the role's own resources: admitted.
    ("s3", "s3:GetObject", "arn:aws:s3:::prod-us-east-1-starport-layer-bucket/layer", None, "Allow"),
    ("ecr", "ecr:BatchGetImage", "arn:aws:ecr:us-east-1:763104351884:repository/pytorch-training",
     "763104351884", "Allow"),
    ("ecr", "ecr:GetAuthorizationToken", "*", None, "Allow"),
    ("sts", "sts:GetCallerIdentity", "*", None, "Allow"),
    ("cloudwatch", "cloudwatch:PutMetricData", "*", None, "Allow"),
])
def test_endpoints_keep_this_accounts_role_inside_the_account(
        created_vpc_tracking: Synthesized, service: str, action: str, resource: str,
        resource_account: str | None, expected: str) -> None:
    from tests.iam_policy_eval import ACCOUNT, Account

    account = Account(storage=created_vpc_tracking.storage, workflow=created_vpc_tracking.workflow)
    assert _endpoint_decision(account, ENDPOINT_BY_SERVICE[service], principal_account=ACCOUNT,
                              action=action, resource=resource, resource_account=resource_account) == expected


def test_both_ecr_endpoints_have_one_policy(created_vpc: Synthesized) -> None:
    """"We recommend creating a single IAM resource policy and attaching it to both of the Amazon
    ECR VPC endpoints" (Amazon ECR user guide, interface VPC endpoints)."""
    from tests.iam_policy_eval import Account

    account = Account(storage=created_vpc.storage, workflow=created_vpc.workflow)
    api = account.endpoint_statements("com.amazonaws.us-east-1.ecr.api")
    assert api == account.endpoint_statements("com.amazonaws.us-east-1.ecr.dkr")
    pulls = next(s for s in api if s["Sid"] == "ThisAccountsPrincipalsPullAwsImages")
    from infra.images import image_accounts

    assert pulls["Resource"] == [f"arn:aws:ecr:us-east-1:{a}:repository/*" for a in image_accounts("us-east-1")]
    assert "763104351884" in image_accounts("us-east-1"), "the Deep Learning Containers' account"


def test_every_sagemaker_region_has_image_accounts_for_the_ecr_endpoints() -> None:
    """A VPC deployment in any region SageMaker's SDK knows finds AWS's image accounts there
    (else synth fails naming the region, rather than an endpoint policy without them)."""
    from infra.images import image_accounts

    table = json.loads((ROOT / "infra" / "image_uris.json").read_text())
    regions = {region for by_region in table["builtin-algorithms"].values() for region in by_region}
    assert len(regions) > 20
    assert all(image_accounts(region) for region in regions), [r for r in regions if not image_accounts(r)]


def test_a_created_vpc_without_job_actions_fails_instead_of_leaving_endpoints_open() -> None:
    app = App()
    stack = Stack(app, "Stack", env={"account": "123456789012", "region": "us-east-1"})
    with pytest.raises(ValueError, match="endpoint S3Endpoint: job_actions holds none"):
        TrainingNetwork(stack, "Network", key=kms.Key(stack, "Key"), log_group_prefix=NETWORK_PREFIX,
                        log_retention=logs.RetentionDays.ONE_MONTH, job_actions=[])


@pytest.mark.parametrize(("mode", "network"), [("default", "sealed"), ("created_vpc_tracking", "vpc"),
                                              ("isolated_tracking", "isolated")])
def test_every_synth_says_what_training_containers_can_reach(request: pytest.FixtureRequest, mode: str,
                                                             network: str) -> None:
    """The choice is visible where it is made: an info message of the workflow stack, which the
    CDK CLI prints at every synth and deploy; the default one (sealed) says containers reach no
    network (public's, that they reach the internet: tests/test_framework_matrix.py)."""
    from infra.stacks.workflow_stack import NETWORK_NOTICES

    synthesized = request.getfixturevalue("synthesized") if mode == "default" else _mode(request, mode)
    notices = [m for m in synthesized.messages if m[0].rsplit(".", 1)[-1].lower() == "info"
               and str(m[2]).startswith("network: ")]
    assert [m[2] for m in notices] == [NETWORK_NOTICES[network]]
    assert ("reach the internet" in notices[0][2]) == (network == "public")
    # Tracking that the jobs cannot reach is said too (isolated with a tracking server), not
    # where they can (vpc with one) or there is none (the default).
    from infra.stacks.workflow_stack import TRACKING_UNDER_ISOLATION

    tracking = [m[2] for m in synthesized.messages if str(m[2]).startswith("experimentTracking: ")]
    expected = TRACKING_UNDER_ISOLATION.format(tracking="server", network="isolated")
    assert tracking == ([expected] if mode == "isolated_tracking" else [])
