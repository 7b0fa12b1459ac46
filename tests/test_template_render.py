"""Rendering a CDK DefinitionString: every reference replaced, or a clear error."""

from __future__ import annotations

import pytest

from smtrain.core.assembly import (
    UnresolvedReference,
    render_definition,
    resolve_intrinsics,
)
from tests.helpers import mapping_resolver


def test_join_sub_select_split_and_references() -> None:
    value = {"Fn::Join": ["", [
        '{"A":"', {"Ref": "Bucket"}, '","B":"', {"Fn::GetAtt": ["Role", "Arn"]},
        '","C":"', {"Fn::Sub": "s3://x-${AWS::Region}/${Thing.Name}"},
        '","D":"', {"Fn::Select": [1, {"Fn::Split": [":", {"Fn::ImportValue": "Export"}]}]}, '"}',
    ]]}
    resolver = mapping_resolver({"Bucket": "my-bucket", "Role.Arn": "arn:role", "AWS::Region": "eu-west-1",
                                 "Thing.Name": "thing", "Export": "a:b:c"})
    assert render_definition(value, resolver) == {
        "A": "my-bucket", "B": "arn:role", "C": "s3://x-eu-west-1/thing", "D": "b"}


def test_unknown_reference_is_named() -> None:
    with pytest.raises(UnresolvedReference, match="Ref 'Missing'"):
        resolve_intrinsics({"Fn::Join": ["", [{"Ref": "Missing"}]]}, mapping_resolver({}))


def test_non_json_definition_fails() -> None:
    with pytest.raises(ValueError):
        render_definition("not json", mapping_resolver({}))


def test_weak_cross_stack_references_are_resolved() -> None:
    """Fn::GetStackOutput (the MLflow server's ARN, read from the storage stack without an
    export) renders like an import: ARN-named outputs keep an ARN shape."""
    from smtrain.core.assembly import placeholder_resolver, resolve_intrinsics

    value = {"Fn::GetStackOutput": {"StackName": "smtrain-storage", "OutputName": "TrackingServerArn"}}
    rendered = resolve_intrinsics({"Fn::Join": ["", ["uri=", value]]}, placeholder_resolver())
    assert rendered.startswith("uri=arn:aws:")
