"""The one reader of a synthesized app (``cdk.out``): its stacks (:func:`load_app`), the values of
their references (:class:`References`), and a state machine's ``DefinitionString`` as plain ASL.

The offline engine, ``smtrain preflight`` and ``make describe`` read the app through this module
only (none of them imports the CDK, which starts Node).

CDK emits the definition as ``Fn::Join`` over literal text and references (``Ref``,
``Fn::GetAtt``, ``Fn::ImportValue``, pseudo parameters). Linters skip such a definition and an
interpreter cannot run it; :func:`render_definition` replaces every reference with a value that
the caller supplies, and fails naming any reference it was not told about.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Resolver = Callable[[str, Any], str]


class UnresolvedReference(KeyError):
    """A reference in the template has no substitute."""


def load_templates(outdir: Path) -> dict[str, dict[str, Any]]:
    """``{stack artifact id: template}`` of a synthesized cloud assembly (``cdk.out``)."""
    return {stack.artifact_id: stack.template for stack in load_app(outdir)}


def state_machine_definitions(template: Mapping[str, Any]) -> dict[str, Any]:
    """``{logical id: DefinitionString}`` of every state machine in a template."""
    return {
        logical_id: resource["Properties"]["DefinitionString"]
        for logical_id, resource in template.get("Resources", {}).items()
        if resource.get("Type") == "AWS::StepFunctions::StateMachine"
    }


def resolve_intrinsics(value: Any, resolver: Resolver) -> Any:
    """Resolve ``Fn::Join``/``Fn::Select``/``Fn::Split`` structurally and hand every ``Ref``,
    ``Fn::GetAtt`` and ``Fn::ImportValue`` to ``resolver(kind, argument)``."""
    if isinstance(value, list):
        return [resolve_intrinsics(item, resolver) for item in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        ((key, argument),) = value.items()
        if key == "Fn::Join":
            separator, parts = argument
            return separator.join(str(resolve_intrinsics(part, resolver)) for part in parts)
        if key == "Fn::Select":
            index, items = argument
            return resolve_intrinsics(items, resolver)[int(index)]
        if key == "Fn::Split":
            separator, source = argument
            return str(resolve_intrinsics(source, resolver)).split(separator)
        if key == "Fn::Sub":
            return _substitute(argument, resolver)
        if key in ("Ref", "Fn::GetAtt", "Fn::ImportValue", "Fn::GetStackOutput"):
            return resolver(key, resolve_intrinsics(argument, resolver))
    return {key: resolve_intrinsics(item, resolver) for key, item in value.items()}


_SUB_VARIABLE = re.compile(r"\$\{([^}!][^}]*)\}")


def _substitute(argument: Any, resolver: Resolver) -> str:
    """``Fn::Sub`` with no variable map: ``${Name}`` is a Ref, ``${Id.Attr}`` a GetAtt."""
    if not isinstance(argument, str):
        raise ValueError(f"Fn::Sub with a variable map is not supported: {argument!r}")

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if "." in name and not name.startswith("AWS::"):
            return resolver("Fn::GetAtt", name.split(".", 1))
        return resolver("Ref", name)

    return _SUB_VARIABLE.sub(replace, argument).replace("${!", "${")


def render_definition(definition_string: Any, resolver: Resolver) -> dict[str, Any]:
    """The definition as a parsed ASL document."""
    text = resolve_intrinsics(definition_string, resolver)
    if not isinstance(text, str):
        raise TypeError(f"definition did not resolve to text: {type(text).__name__}")
    document = json.loads(text)
    if not isinstance(document, dict):
        raise TypeError("definition is not a JSON object")
    return document


def placeholder_resolver(account: str = "123456789012", region: str = "us-east-1") -> Resolver:
    """A resolver for linting: pseudo parameters get real-looking values, every other reference
    a deterministic placeholder that names it (``ref-<id>``, ``<id>-<attr>``, ``import-...``).
    ARN-shaped attributes get an ARN so that ARN-typed fields stay valid."""

    pseudo = {"AWS::Region": region, "AWS::AccountId": account, "AWS::Partition": "aws",
              "AWS::URLSuffix": "amazonaws.com"}

    def resolve(kind: str, argument: Any) -> str:
        if kind == "Ref":
            return pseudo.get(str(argument), f"ref-{str(argument).lower()}")
        if kind == "Fn::GetAtt":
            logical_id, attribute = argument if isinstance(argument, list) else argument.split(".", 1)
            if attribute.lower().endswith("arn"):
                return f"arn:aws:iam::{account}:role/{logical_id.lower()}"
            return f"{logical_id.lower()}-{attribute.lower()}"
        # Fn::ImportValue (an export name) or Fn::GetStackOutput (another stack's plain output,
        # {"StackName", "OutputName"}): ARN-named values keep an ARN shape.
        name = str(argument["OutputName"]) if kind == "Fn::GetStackOutput" else str(argument)
        if name.lower().endswith("arn") or "arn" in name.lower().rsplit(":", 1)[-1]:
            return f"arn:aws:iam::{account}:role/import-{hashlib.sha256(name.encode()).hexdigest()[:8]}"
        return f"import-{name.rsplit(':', 1)[-1].lower()}"

    return resolve


# -- the app's stacks and the values of their references ------------------------------------------

@dataclass
class AppStack:
    """One stack of a synthesized app: its artifact id, CloudFormation name, target region (None:
    environment-agnostic), template, and the physical ids of its deployed resources (by logical
    id; filled by whoever asked AWS, empty otherwise)."""

    artifact_id: str
    stack_name: str
    region: str | None
    template: dict[str, Any]
    physical: dict[str, str] = field(default_factory=dict)

    def resources(self, resource_type: str) -> dict[str, dict[str, Any]]:
        return {logical_id: resource for logical_id, resource in self.template.get("Resources", {}).items()
                if resource.get("Type") == resource_type}


def load_app(outdir: Path) -> list[AppStack]:
    """The stacks of a synthesized cloud assembly (``cdk.out``), in the manifest's order."""
    manifest_path = outdir / "manifest.json"
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{outdir} holds no synthesized app (run `make synth` first)")
    manifest = json.loads(manifest_path.read_text())
    stacks = []
    for artifact_id, artifact in manifest.get("artifacts", {}).items():
        if artifact.get("type") != "aws:cloudformation:stack":
            continue
        properties = artifact["properties"]
        region: str | None = str(artifact.get("environment", "")).rsplit("/", 1)[-1]
        if not region or region.startswith("unknown"):
            region = None
        stacks.append(AppStack(artifact_id, properties.get("stackName", artifact_id), region,
                               json.loads((outdir / properties["templateFile"]).read_text())))
    return stacks


#: The property that names a resource, where its template may declare the name.
NAME_PROPERTY = {
    "AWS::S3::Bucket": "BucketName", "AWS::IAM::Role": "RoleName", "AWS::ECR::Repository": "RepositoryName",
    "AWS::Logs::LogGroup": "LogGroupName", "AWS::StepFunctions::StateMachine": "StateMachineName",
    "AWS::SNS::Topic": "TopicName", "AWS::Lambda::Function": "FunctionName",
    "AWS::IAM::ManagedPolicy": "ManagedPolicyName",
}


class References:
    """Values for every reference in an app's templates, resolved in the context of the stack
    that holds it: pseudo parameters from the account, region and partition given and the
    stack's name; parameters by their defaults; ``Fn::ImportValue`` through the exporting
    stack's output; ``Fn::GetStackOutput`` (a weak cross-stack reference) by stack and output
    name; ``Ref`` and ``Fn::GetAtt`` of a resource from its physical name: deployed, declared in
    the template, or a placeholder shaped like the real thing (the same in a policy and in the
    definition, so they can be compared). The one owner of template resolution: ``smtrain
    preflight`` uses it as it is; the offline engine (``smtrain/local/deployment.py``) names
    resources its own way by overriding :meth:`pseudo`, :meth:`ref` and :meth:`attribute`."""

    def __init__(self, stacks: Sequence[AppStack], *, account: str, region: str,
                 partition: str = "aws") -> None:
        self.stacks = {stack.artifact_id: stack for stack in stacks}
        self.account, self.region, self.partition = account, region, partition
        self.exports = {output["Export"]["Name"]: (stack.artifact_id, output["Value"])
                        for stack in stacks for output in stack.template.get("Outputs", {}).values()
                        if isinstance(output.get("Export", {}).get("Name"), str)}

    def resolver(self, artifact_id: str) -> Resolver:
        stack = self.stacks[artifact_id]

        def resolve(kind: str, argument: Any) -> str:
            if kind == "Fn::ImportValue":
                if argument not in self.exports:
                    raise UnresolvedReference(f"no stack of the app exports {argument!r}")
                exporter, value = self.exports[argument]
                return str(resolve_intrinsics(value, self.resolver(exporter)))
            if kind == "Ref":
                return self.pseudo(stack, str(argument)) or self.ref(stack, str(argument))
            if kind == "Fn::GetStackOutput":
                for other in self.stacks.values():
                    output = other.template.get("Outputs", {}).get(argument["OutputName"])
                    if other.stack_name == argument["StackName"] and output is not None:
                        return str(resolve_intrinsics(output["Value"], self.resolver(other.artifact_id)))
                raise UnresolvedReference(f"no stack of the app has an output {argument['OutputName']!r}")
            logical_id, attribute = argument if isinstance(argument, list) else str(argument).split(".", 1)
            return self.attribute(stack, logical_id, attribute)

        return resolve

    def render(self, artifact_id: str, value: Any) -> Any:
        """``value`` of the stack ``artifact_id``, every reference in it resolved."""
        return resolve_intrinsics(value, self.resolver(artifact_id))

    def outputs(self) -> dict[str, str]:
        """Every stack's outputs, by output name, resolved."""
        return {name: str(self.render(stack.artifact_id, output["Value"]))
                for stack in self.stacks.values()
                for name, output in stack.template.get("Outputs", {}).items()}

    def pseudo(self, stack: AppStack, name: str) -> str | None:
        return {
            "AWS::AccountId": self.account, "AWS::Region": self.region, "AWS::Partition": self.partition,
            "AWS::URLSuffix": "amazonaws.com.cn" if self.partition == "aws-cn" else "amazonaws.com",
            "AWS::StackName": stack.stack_name,
            "AWS::StackId": f"arn:{self.partition}:cloudformation:{self.region}:{self.account}:stack/"
                            f"{stack.stack_name}/{uuid.uuid5(uuid.NAMESPACE_URL, stack.stack_name)}",
        }.get(name)

    def resource(self, stack: AppStack, logical_id: str) -> dict[str, Any]:
        resource = stack.template.get("Resources", {}).get(logical_id)
        if resource is None:
            raise UnresolvedReference(f"no resource {logical_id!r} in stack {stack.stack_name}")
        return dict(resource)

    def physical_name(self, stack: AppStack, logical_id: str) -> str:
        """The physical name: deployed, declared, or a placeholder."""
        if logical_id in stack.physical:
            return stack.physical[logical_id]
        resource = self.resource(stack, logical_id)
        declared = resource.get("Properties", {}).get(NAME_PROPERTY.get(resource["Type"], ""))
        if declared is not None:
            return str(self.render(stack.artifact_id, declared))
        if resource["Type"] == "AWS::KMS::Key":
            return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{stack.stack_name}/{logical_id}"))
        digest = hashlib.sha256(f"{stack.stack_name}/{logical_id}".encode()).hexdigest()[:8]
        return f"{stack.stack_name}-{logical_id[:30]}-{digest}".lower()

    def ref(self, stack: AppStack, name: str) -> str:
        parameter = stack.template.get("Parameters", {}).get(name)
        if parameter is not None and "Default" in parameter:
            return str(parameter["Default"])
        resource_type = self.resource(stack, name)["Type"]
        value = self.physical_name(stack, name)
        if name in stack.physical:
            return value
        p, r, a = self.partition, self.region, self.account
        if resource_type == "AWS::IAM::ManagedPolicy":
            return f"arn:{p}:iam::{a}:policy{self._path(stack, name)}{value}"
        if resource_type == "AWS::StepFunctions::StateMachine":
            return f"arn:{p}:states:{r}:{a}:stateMachine:{value}"
        if resource_type == "AWS::SNS::Topic":
            return f"arn:{p}:sns:{r}:{a}:{value}"
        return value

    def _path(self, stack: AppStack, logical_id: str) -> str:
        return str(self.resource(stack, logical_id).get("Properties", {}).get("Path", "/"))

    def attribute(self, stack: AppStack, logical_id: str, attribute: str) -> str:
        resource_type = self.resource(stack, logical_id)["Type"]
        name = self.physical_name(stack, logical_id)
        p, r, a = self.partition, self.region, self.account
        if attribute == "Arn":
            arns = {
                "AWS::S3::Bucket": f"arn:{p}:s3:::{name}",
                "AWS::IAM::Role": f"arn:{p}:iam::{a}:role{self._path(stack, logical_id)}{name}",
                "AWS::KMS::Key": f"arn:{p}:kms:{r}:{a}:key/{name}",
                "AWS::ECR::Repository": f"arn:{p}:ecr:{r}:{a}:repository/{name}",
                "AWS::Logs::LogGroup": f"arn:{p}:logs:{r}:{a}:log-group:{name}:*",
                "AWS::Lambda::Function": f"arn:{p}:lambda:{r}:{a}:function:{name}",
            }
            if resource_type in arns:
                return arns[resource_type]
            if resource_type in ("AWS::IAM::ManagedPolicy", "AWS::StepFunctions::StateMachine", "AWS::SNS::Topic"):
                return self.ref(stack, logical_id)
            service = resource_type.split("::")[1].lower()
            return f"arn:{p}:{service}:{r}:{a}:{name}"
        if resource_type == "AWS::ECR::Repository" and attribute == "RepositoryUri":
            return f"{a}.dkr.ecr.{r}.{self.pseudo(stack, 'AWS::URLSuffix')}/{name}"
        return f"{name}-{attribute.lower()}"


def every_state(definition: Mapping[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every state of an ASL definition with its name, those inside Parallel branches and Map
    processors (``ItemProcessor``, or the older ``Iterator``) included."""
    for name, state in definition.get("States", {}).items():
        yield name, state
        for branch in state.get("Branches", []):
            yield from every_state(branch)
        for key in ("ItemProcessor", "Iterator"):
            if key in state:
                yield from every_state(state[key])
