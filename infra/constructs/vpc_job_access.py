"""What the SageMaker execution role needs to run jobs in a VPC: network interfaces, no more."""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from constructs import Construct

from infra.compliance import acknowledge, acknowledge_checkov, nag_arn

#: "If you specify a VpcConfig ... the role needs the following additional permissions"
#: (SageMaker developer guide, "CreateTrainingJob API: Execution Role Permissions"): these nine
#: EC2 actions, which SageMaker uses to attach the job's network interfaces to the subnets.
DESCRIBE_ACTIONS = ("ec2:DescribeNetworkInterfaces", "ec2:DescribeVpcs", "ec2:DescribeDhcpOptions",
                    "ec2:DescribeSubnets", "ec2:DescribeSecurityGroups")
INTERFACE_ACTIONS = ("ec2:CreateNetworkInterfacePermission", "ec2:DeleteNetworkInterface")


class VpcJobAccess(Construct):
    """A managed policy on ``roles`` that lets SageMaker place training jobs in ``subnet_ids``
    with ``security_group_ids`` of ``vpc_id``.

    Guarantees (each action's resource types and condition keys from the Service Authorization
    Reference, checked by tests/test_iam_reference.py):

    - ``ec2:Describe*`` of the guide's list on ``*`` (they have no resource types);
    - ``ec2:CreateNetworkInterface`` only in those subnets, with those security groups;
    - ``ec2:CreateNetworkInterfacePermission`` and ``ec2:DeleteNetworkInterface`` only on network
      interfaces of that VPC (``ec2:Vpc``);
    - ``ec2:DeleteNetworkInterfacePermission`` on ``*``: its network-interface resource is
      optional in the reference (a permission is named by its own id), so scoping it could refuse
      SageMaker's clean-up; it only removes permissions from interfaces.

    Removed with the setting (``network: public``); retained like the role otherwise.
    """

    def __init__(self, scope: Construct, construct_id: str, *, roles: Sequence[iam.IRole], vpc_id: str,
                 subnet_ids: Sequence[str], security_group_ids: Sequence[str]) -> None:
        super().__init__(scope, construct_id)
        if not subnet_ids or not security_group_ids:
            raise ValueError("a VPC job needs at least one subnet and one security group")
        stack = Stack.of(self)

        def ec2_arn(resource: str, name: str) -> str:
            return stack.format_arn(service="ec2", resource=resource, resource_name=name)

        interfaces = ec2_arn("network-interface", "*")
        vpc_arn = ec2_arn("vpc", vpc_id)
        self.policy = iam.ManagedPolicy(self, "Policy", roles=list(roles), statements=[
            iam.PolicyStatement(sid="DescribeJobNetwork", actions=list(DESCRIBE_ACTIONS),
                                resources=["*"]),
            iam.PolicyStatement(
                sid="CreateJobNetworkInterfaces", actions=["ec2:CreateNetworkInterface"],
                resources=[interfaces, *(ec2_arn("subnet", s) for s in subnet_ids),
                           *(ec2_arn("security-group", g) for g in security_group_ids)]),
            iam.PolicyStatement(sid="ManageJobNetworkInterfaces", actions=list(INTERFACE_ACTIONS),
                                resources=[interfaces],
                                conditions={"ArnEquals": {"ec2:Vpc": vpc_arn}}),
            iam.PolicyStatement(sid="RemoveJobNetworkInterfacePermissions",
                                actions=["ec2:DeleteNetworkInterfacePermission"], resources=["*"]),
        ], description="Lets SageMaker attach training jobs to the project's private subnets")
        self.policy.apply_removal_policy(RemovalPolicy.DESTROY)
        acknowledge(
            self.policy, "AwsSolutions-IAM5",
            "EC2 Describe actions have no resource types; a job's network interfaces are created "
            "by SageMaker at run time (any id, limited to this VPC by the ec2:Vpc condition and "
            "to the project's subnets and security groups); DeleteNetworkInterfacePermission's "
            "interface resource is optional in the Service Authorization Reference.",
            applies_to=["Resource::*", f"Resource::{nag_arn(stack, interfaces)}"])
        acknowledge_checkov(
            self.policy, ["CKV_AWS_109"],
            "The 'permissions management' checkov sees is on network interfaces only: "
            "CreateNetworkInterfacePermission on interfaces of this VPC (ec2:Vpc), and "
            "DeleteNetworkInterfacePermission on *, as the SageMaker developer guide grants it for "
            "VpcConfig jobs (its interface resource is optional in the Service Authorization "
            "Reference, so a narrower grant could refuse SageMaker's clean-up). No IAM action.")
