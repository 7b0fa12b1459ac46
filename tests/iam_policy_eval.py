"""A small evaluator of IAM policy statements, for asking the synthesized templates what a
principal may do rather than what their JSON looks like.

It follows AWS's policy evaluation logic for one account (IAM User Guide, "Policy evaluation
logic"): an explicit ``Deny`` in any applicable policy wins; otherwise an ``Allow`` in an identity
policy or in the resource's policy allows; otherwise the request is implicitly denied. A statement
applies when its ``Action``/``NotAction``, ``Resource``/``NotResource`` (and, in a resource
policy, ``Principal``) match and every condition holds ("IAM JSON policy elements": operators
are ANDed, keys within an operator are ANDed, values of one key are ORed).

Wildcards: ``*`` matches any run of characters and ``?`` one (action names are matched without
regard to case, resources and ARN conditions with it). Condition operators: those the templates
use (``StringEquals``, ``StringNotEquals``, ``StringLike``, ``ArnEquals``, ``ArnLike``,
``ArnNotEquals``, ``ArnNotLike``, ``Bool``, ``Null``, each with ``IfExists``, and ``ForAllValues:``
before them); any other fails loudly, so a new operator in
a template cannot be silently ignored. A key the request lacks makes a condition false, except for
the negated operators, where it is true ("IAM JSON policy elements: Condition operators": "If the
policy condition requires that the key is not matched, such as StringNotLike or ArnNotLike, and
the right key is not present, the condition is true").

CloudFormation values are resolved to concrete names first (:class:`Resolver`): the account is
:data:`ACCOUNT`, a bucket is named after its logical id in lower case, a role, key or repository
ARN carries its logical id, and the workflow stack's imports and ``Fn::GetStackOutput`` values
are the storage stack's outputs.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

ACCOUNT = "123456789012"
REGION = "us-east-1"

Template = Mapping[str, Any]
Context = Mapping[str, str | Sequence[str]]


# -- CloudFormation values ----------------------------------------------------------------------
class Resolver:
    """Turns a template's intrinsic functions into plain strings (see the module's docstring)."""

    PSEUDO: ClassVar[dict[str, str]] = {"AWS::AccountId": ACCOUNT, "AWS::Region": REGION, "AWS::Partition": "aws",
              "AWS::URLSuffix": "amazonaws.com", "AWS::StackName": "stack",
              "AWS::StackId": f"arn:aws:cloudformation:{REGION}:{ACCOUNT}:stack/stack/0"}

    def __init__(self, template: Template, *, imported_from: Template | None = None) -> None:
        self.template = template
        self.imported_from = imported_from

    def resource_arn(self, logical_id: str) -> str:
        kind = self.template["Resources"][logical_id]["Type"]
        arns = {
            "AWS::S3::Bucket": f"arn:aws:s3:::{self.name(logical_id)}",
            "AWS::IAM::Role": f"arn:aws:iam::{ACCOUNT}:role/{logical_id}",
            "AWS::KMS::Key": f"arn:aws:kms:{REGION}:{ACCOUNT}:key/{logical_id}",
            "AWS::ECR::Repository": f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/{self.name(logical_id)}",
            "AWS::SNS::Topic": f"arn:aws:sns:{REGION}:{ACCOUNT}:{logical_id}",
            "AWS::SageMaker::MlflowTrackingServer":
                f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:mlflow-tracking-server/{logical_id}",
        }
        return arns.get(kind, f"arn:aws:{kind}:{REGION}:{ACCOUNT}:{logical_id}")

    def name(self, logical_id: str) -> str:
        kind = self.template["Resources"][logical_id]["Type"]
        if kind in ("AWS::S3::Bucket", "AWS::ECR::Repository"):
            return logical_id.lower()
        if kind == "AWS::SNS::Topic":
            return self.resource_arn(logical_id)  # Ref of a topic is its ARN
        return logical_id

    def __call__(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self(item) for item in value]
        if not isinstance(value, dict):
            return value
        if len(value) != 1:
            return {key: self(item) for key, item in value.items()}
        (function, argument), = value.items()
        if function == "Ref":
            return self.PSEUDO.get(argument) or self.name(argument)
        if function == "Fn::GetAtt":
            logical_id, attribute = argument
            if attribute == "GroupId":  # a security group's id: a name of its own
                return f"{logical_id}.{attribute}"
            assert attribute.endswith("Arn"), value
            return self.resource_arn(logical_id)
        if function == "Fn::Join":
            separator, parts = argument
            return separator.join(str(self(part)) for part in parts)
        if function == "Fn::Sub":
            return re.sub(r"\$\{([^}]+)\}", lambda m: str(self({"Ref": m[1]})), argument)
        if function == "Fn::Split":
            separator, text = argument
            return str(self(text)).split(separator)
        if function == "Fn::Select":
            index, items = argument
            return self(items)[int(index)]
        if function == "Fn::ImportValue":
            return self._storage_output(export=argument)
        if function == "Fn::GetStackOutput":
            return self._storage_output(output=argument["OutputName"])
        return {function: self(argument)}

    def _storage_output(self, *, export: str | None = None, output: str | None = None) -> Any:
        assert self.imported_from is not None, "an import outside the workflow stack"
        outputs = self.imported_from["Outputs"]
        for name, spec in outputs.items():
            if name == output or (export is not None and spec.get("Export", {}).get("Name") == export):
                return Resolver(self.imported_from)(spec["Value"])
        raise KeyError(export or output)


# -- statements ---------------------------------------------------------------------------------
def _wildcard(pattern: str, text: str, *, ignore_case: bool = False) -> bool:
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, text, re.IGNORECASE if ignore_case else 0) is not None


def _arn_like(pattern: str, arn: str) -> bool:
    """ArnLike: each of the six colon-separated parts matched on its own."""
    patterns, parts = pattern.split(":", 5), arn.split(":", 5)
    return len(patterns) == len(parts) == 6 and all(map(_wildcard, patterns, parts))


def _listed(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else [value]


def _equal(want: str, got: str) -> bool:
    return want == got


def _same_bool(want: str, got: str) -> bool:
    return str(want).lower() == str(got).lower()


_MATCHERS: dict[str, Callable[[str, str], bool]] = {
    "StringEquals": _equal,
    "StringLike": _wildcard,
    "ArnEquals": _equal,
    "ArnLike": _arn_like,
    "Bool": _same_bool,
}
_NEGATED = {"StringNotEquals": "StringEquals", "StringNotLike": "StringLike",
            "ArnNotEquals": "ArnEquals", "ArnNotLike": "ArnLike"}


def condition_holds(operator: str, key: str, wanted: Any, context: Context) -> bool:
    """Whether one condition (``operator``: {``key``: ``wanted``}) holds for ``context``."""
    present = key in context
    if operator.endswith("IfExists"):
        # "If the policy key is present in the context of the request, process the key as
        # specified in the policy. If the key is not present, evaluate the condition element as
        # true" ("IAM JSON policy elements: Condition operators", ...IfExists).
        return not present or condition_holds(operator[:-len("IfExists")], key, wanted, context)
    if operator.startswith("ForAllValues:"):
        # "Tests whether the value of every member of the request set is a subset of the
        # condition key set": true for a key the request lacks ("Multivalued context keys").
        single = operator.split(":", 1)[1]
        return not present or all(condition_holds(single, key, wanted, {key: value})
                                  for value in _listed(context[key]))
    if operator == "Null":
        return all((str(want).lower() == "true") != present for want in _listed(wanted))
    negated = operator in _NEGATED
    matcher = _MATCHERS.get(_NEGATED.get(operator, operator))
    if matcher is None:
        raise NotImplementedError(f"condition operator {operator} is not evaluated here")
    if not present:
        return negated
    matched = any(matcher(want, got) for want in _listed(wanted) for got in _listed(context[key]))
    return not matched if negated else matched


@dataclass(frozen=True)
class Request:
    """One API call: who makes it (a role ARN or ``service:<name>.amazonaws.com``), the action,
    the resource ARN and the request context's condition keys."""

    principal: str
    action: str
    resource: str
    context: Context = field(default_factory=dict)


def _principal_matches(principal: Any, who: str) -> bool:
    """``who`` is named by a resource policy's ``Principal``: everyone (``*``), its ARN, its
    account's root (which hands the decision to the account's identity policies), or its service."""
    if principal == "*":
        return True
    account = who.split(":")[4] if who.startswith("arn:") else None
    for kind, values in principal.items():
        for value in _listed(values):
            if kind == "AWS" and value in ("*", who, f"arn:aws:iam::{account}:root"):
                return True
            if kind == "Service" and who == f"service:{value}":
                return True
    return False


def statement_applies(statement: Mapping[str, Any], request: Request, *, resource_policy: bool) -> bool:
    if resource_policy and not _principal_matches(statement["Principal"], request.principal):
        return False
    if "Action" in statement:
        if not any(_wildcard(a, request.action, ignore_case=True) for a in _listed(statement["Action"])):
            return False
    elif any(_wildcard(a, request.action, ignore_case=True) for a in _listed(statement["NotAction"])):
        return False
    if "Resource" in statement:
        if not any(_wildcard(r, request.resource) for r in _listed(statement["Resource"])):
            return False
    elif "NotResource" in statement and any(_wildcard(r, request.resource)
                                            for r in _listed(statement["NotResource"])):
        return False
    return all(condition_holds(operator, key, wanted, request.context)
               for operator, keys in statement.get("Condition", {}).items()
               for key, wanted in keys.items())


def decide(request: Request, *, identity: Iterable[Mapping[str, Any]] = (),
           resource: Iterable[Mapping[str, Any]] = ()) -> str:
    """``"Deny"`` (explicit), ``"Allow"`` or ``"ImplicitDeny"`` for ``request`` under the
    identity policies' and the resource policy's statements (all resolved)."""
    applying = [(s, False) for s in identity] + [(s, True) for s in resource]
    effects = {s["Effect"] for s, is_resource in applying
               if statement_applies(s, request, resource_policy=is_resource)}
    if "Deny" in effects:
        return "Deny"
    return "Allow" if "Allow" in effects else "ImplicitDeny"


# -- reading the templates ----------------------------------------------------------------------
@dataclass(frozen=True)
class Account:
    """The policies of both synthesized stacks, resolved: each role's identity statements, each
    role's trust statements and each bucket's policy statements, by logical id."""

    storage: Template
    workflow: Template

    def _resolvers(self) -> list[tuple[Template, Resolver]]:
        return [(self.storage, Resolver(self.storage)),
                (self.workflow, Resolver(self.workflow, imported_from=self.storage))]

    def role_arn(self, logical_id: str) -> str:
        for template, resolve in self._resolvers():
            if logical_id in template["Resources"]:
                return resolve.resource_arn(logical_id)
        raise KeyError(logical_id)

    def bucket_arn(self, logical_id: str) -> str:
        return Resolver(self.storage).resource_arn(logical_id)

    def roles(self) -> dict[str, str]:
        """Every role of both stacks: its ARN -> its logical id."""
        return {resolve.resource_arn(lid): lid for template, resolve in self._resolvers()
                for lid, r in template["Resources"].items() if r["Type"] == "AWS::IAM::Role"}

    def identity_statements(self, role_arn: str) -> list[dict[str, Any]]:
        """Inline policies, attached ``AWS::IAM::Policy`` and customer managed policies of the role."""
        statements: list[dict[str, Any]] = []
        for template, resolve in self._resolvers():
            resources = template["Resources"]
            role_ids = [lid for lid, r in resources.items() if r["Type"] == "AWS::IAM::Role"
                        and resolve.resource_arn(lid) == role_arn]
            for lid, r in resources.items():
                properties = r.get("Properties", {})
                if r["Type"] == "AWS::IAM::Role" and lid in role_ids:
                    for inline in properties.get("Policies", []):
                        statements += resolve(inline["PolicyDocument"]["Statement"])
                    assert all(isinstance(arn, dict) and "Ref" in arn
                               for arn in properties.get("ManagedPolicyArns", [])), \
                        f"{lid}: an AWS managed policy is not evaluated here"
                if r["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
                    # Role names: a Ref in its own stack, the name cut from an imported ARN in the other.
                    attached = {resolve(ref) for ref in properties.get("Roles", [])}
                    if role_arn.rsplit("/", 1)[-1] in attached:
                        statements += resolve(properties["PolicyDocument"]["Statement"])
        return statements

    def _policy_statements(self, kind: str, arn: str, policy: str) -> list[dict[str, Any]]:
        """The resolved statements of the ``policy`` property of the resource of type ``kind``
        whose ARN is ``arn``, in either stack."""
        for template, resolve in self._resolvers():
            for lid, r in template["Resources"].items():
                if r["Type"] == kind and resolve.resource_arn(lid) == arn:
                    return list(resolve(r["Properties"][policy]["Statement"]))
        raise KeyError(arn)

    def trust_statements(self, role_arn: str) -> list[dict[str, Any]]:
        return self._policy_statements("AWS::IAM::Role", role_arn, "AssumeRolePolicyDocument")

    def bucket_statements(self, bucket_arn: str) -> list[dict[str, Any]]:
        resolve = Resolver(self.storage)
        return [s for r in self.storage["Resources"].values() if r["Type"] == "AWS::S3::BucketPolicy"
                and f"arn:aws:s3:::{resolve(r['Properties']['Bucket'])}" == bucket_arn
                for s in resolve(r["Properties"]["PolicyDocument"]["Statement"])]

    def buckets(self) -> list[str]:
        resolve = Resolver(self.storage)
        return [resolve.resource_arn(lid) for lid, r in self.storage["Resources"].items()
                if r["Type"] == "AWS::S3::Bucket"]

    def endpoint_statements(self, service_name: str) -> list[dict[str, Any]]:
        """The policy of the storage stack's VPC endpoint for ``service_name``
        (``com.amazonaws.<region>.s3``); fails when there is no such endpoint or it has no policy."""
        resolve = Resolver(self.storage)
        found = [r["Properties"] for r in self.storage["Resources"].values()
                 if r["Type"] == "AWS::EC2::VPCEndpoint" and resolve(r["Properties"]["ServiceName"]) == service_name]
        assert len(found) == 1, f"{len(found)} endpoints for {service_name}"
        assert "PolicyDocument" in found[0], f"the {service_name} endpoint has no policy (full access)"
        return list(resolve(found[0]["PolicyDocument"]["Statement"]))

    def kms_keys(self) -> list[str]:
        """The ARN of every KMS key of both stacks."""
        return [resolve.resource_arn(lid) for template, resolve in self._resolvers()
                for lid, r in template["Resources"].items() if r["Type"] == "AWS::KMS::Key"]

    def key_statements(self, key_arn: str) -> list[dict[str, Any]]:
        return self._policy_statements("AWS::KMS::Key", key_arn, "KeyPolicy")

    def decide(self, request: Request) -> str:
        """As AWS decides a call of one of the stacks' roles on a bucket, a key or anything else."""
        identity = self.identity_statements(request.principal) if request.principal.startswith("arn:") else []
        if request.resource.startswith("arn:aws:kms:"):
            return decide_kms(request, identity=identity, key_policy=self.key_statements(request.resource))
        bucket = request.resource.split("/", 1)[0] if request.resource.startswith("arn:aws:s3:::") else None
        return decide(request, identity=identity,
                      resource=self.bucket_statements(bucket) if bucket else ())


def decide_kms(request: Request, *, identity: Iterable[Mapping[str, Any]],
               key_policy: Iterable[Mapping[str, Any]]) -> str:
    """A call on a KMS key: "Unless the key policy explicitly allows it, you cannot use IAM
    policies to allow access to a KMS key" (KMS developer guide, "Key policies in AWS KMS"). A
    key-policy Allow that names the caller itself (``*``, its ARN or its service) decides for a
    caller of the key's account; one that names it only through its account (``<account>:root``:
    "Allows access to the AWS account and enables IAM policies", "Default key policy") hands the
    decision to the account's IAM policies, which must allow too; a caller of another account
    always needs its own account's IAM Allow as well. An explicit Deny in either wins. Grants,
    SCPs and permission boundaries are not evaluated here (the stacks use none)."""
    identity, key_policy = list(identity), list(key_policy)
    applying = [s for s in identity if statement_applies(s, request, resource_policy=False)]
    in_key = [s for s in key_policy if statement_applies(s, request, resource_policy=True)]
    if any(s["Effect"] == "Deny" for s in applying + in_key):
        return "Deny"
    iam_allows = any(s["Effect"] == "Allow" for s in applying)
    caller_account = request.principal.split(":")[4] if request.principal.startswith("arn:") else None
    key_account = request.resource.split(":")[4]

    def names_itself(statement: Mapping[str, Any]) -> bool:
        principal = statement["Principal"]
        if principal == "*":
            return True
        accounts = _listed(principal.get("AWS", []))
        services = _listed(principal.get("Service", []))
        return ("*" in accounts or request.principal in accounts
                or any(request.principal == f"service:{service}" for service in services))

    allows = [s for s in in_key if s["Effect"] == "Allow"]
    if not allows:
        return "ImplicitDeny"
    if caller_account is not None and caller_account != key_account:
        return "Allow" if iam_allows else "ImplicitDeny"
    if any(names_itself(s) for s in allows):
        return "Allow"
    return "Allow" if iam_allows else "ImplicitDeny"
