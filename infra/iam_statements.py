"""IAM statements more than one construct grants."""

from __future__ import annotations

from aws_cdk import aws_iam as iam


def ecr_authorization_token() -> iam.PolicyStatement:
    """``ecr:GetAuthorizationToken`` on ``*``: the action supports no resource-level permissions,
    and every ECR pull or push starts with it."""
    return iam.PolicyStatement(sid="AuthenticateToEcr", actions=["ecr:GetAuthorizationToken"],
                               resources=["*"])
