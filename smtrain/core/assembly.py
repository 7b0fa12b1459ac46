"""Turn a synthesized state machine's ``DefinitionString`` into plain ASL JSON.

CDK emits the definition as ``Fn::Join`` over literal text and references (``Ref``,
``Fn::GetAtt``, ``Fn::ImportValue``, pseudo parameters). Linters skip such a definition and an
interpreter cannot run it; :func:`render_definition` replaces every reference with a value that
the caller supplies, and fails naming any reference it was not told about.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

Resolver = Callable[[str, Any], str]


class UnresolvedReference(KeyError):
    """A reference in the template has no substitute."""


def load_templates(outdir: Path) -> dict[str, dict[str, Any]]:
    """``{stack artifact id: template}`` of a synthesized cloud assembly (``cdk.out``)."""
    manifest_path = outdir / "manifest.json"
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{outdir} holds no synthesized app (run `make synth` first)")
    manifest = json.loads(manifest_path.read_text())
    templates = {}
    for artifact_id, artifact in manifest["artifacts"].items():
        if artifact.get("type") == "aws:cloudformation:stack":
            template_file = artifact["properties"]["templateFile"]
            templates[artifact_id] = json.loads((outdir / template_file).read_text())
    return templates


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


def mapping_resolver(substitutes: Mapping[str, str]) -> Resolver:
    """A resolver that looks a reference up in ``substitutes``, keyed by:
    ``Ref``: the logical id or pseudo parameter (``AWS::Region``); ``Fn::GetAtt``:
    ``"LogicalId.Attribute"``; ``Fn::ImportValue``: the export name."""

    def resolve(kind: str, argument: Any) -> str:
        key = ".".join(argument) if isinstance(argument, list) else str(argument)
        try:
            return substitutes[key]
        except KeyError:
            raise UnresolvedReference(f"no substitute for {kind} {key!r}") from None

    return resolve


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
