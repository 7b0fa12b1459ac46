"""Where training jobs run in a VPC: private subnets, security groups, and the VPC endpoints.

Sources for the network SageMaker training needs: SageMaker developer guide, "Give SageMaker AI
Training Jobs Access to Resources in Your Amazon VPC" (train-vpc.html: private subnets without
internet access need an S3 VPC endpoint; at least 2 private IP addresses per instance) and "Connect
to SageMaker AI Within your VPC" (interface endpoints); the re:Post article "How does my
SageMaker container access Amazon S3 data and push logs to CloudWatch when I turn on network
isolation?" (with ``VpcConfig`` the platform reaches S3 and CloudWatch through the job's VPC, also
under network isolation). Endpoint service names: aws-cdk-lib 2.275
``InterfaceVpcEndpointAwsService`` (``com.amazonaws.<region>.<name>``; SageMaker MLflow is
``aws.sagemaker.<region>.experiments``). The S3 gateway endpoint has no security group and no
address of its own: the subnets' routes send S3 traffic to it by the AWS-managed prefix list of the
service, named ``com.amazonaws.<region>.s3`` with an id ``pl-...`` that differs per region (Amazon
VPC user guide, "Gateway endpoints"), so a security group that restricts egress allows that list.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from aws_cdk import (
    CfnResource,
    CrossStackReferences,
    Fn,
    ReferenceStrength,
    RemovalPolicy,
    Stack,
)
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import custom_resources as cr
from constructs import Construct, IConstruct

from infra.compliance import (
    DEPLOY_TIME_FUNCTION_CHECKS,
    DEPLOY_TIME_FUNCTION_RULES,
    acknowledge,
    acknowledge_checkov,
)

HTTPS = ec2.Port.tcp(443)
#: The created VPC's address range and the size of each subnet (/20: 4,091 addresses per AZ;
#: every training instance takes at least 2).
VPC_CIDR = "10.0.0.0/16"
SUBNET_CIDR_MASK = 20
#: Availability Zones of the created VPC: a job's subnets in two AZs survive one AZ's lack of
#: capacity (settings require the same of an existing VPC's subnets).
AVAILABILITY_ZONES = 2

#: Interface endpoints every job needs in a VPC without internet access, by construct id, with the
#: IAM service prefixes of the actions each admits (endpoint_policies.py): STS (SDKs ask it for
#: the account), CloudWatch Logs and metrics (job logs and metrics), ECR API and Docker (image
#: pull; the layers come from S3 through the gateway endpoint) and KMS (the stack key). No
#: SageMaker API endpoint: the execution role may call no SageMaker API action, so through one
#: only other accounts' credentials could do anything.
REQUIRED_INTERFACE_ENDPOINTS: tuple[tuple[str, ec2.InterfaceVpcEndpointAwsService, str], ...] = (
    ("Sts", ec2.InterfaceVpcEndpointAwsService.STS, "sts"),
    ("Logs", ec2.InterfaceVpcEndpointAwsService.CLOUDWATCH_LOGS, "logs"),
    ("Monitoring", ec2.InterfaceVpcEndpointAwsService.CLOUDWATCH_MONITORING, "cloudwatch"),
    ("EcrApi", ec2.InterfaceVpcEndpointAwsService.ECR, "ecr"),
    ("EcrDocker", ec2.InterfaceVpcEndpointAwsService.ECR_DOCKER, "ecr"),
    ("Kms", ec2.InterfaceVpcEndpointAwsService.KMS, "kms"),
)
#: SageMaker MLflow's endpoint supports endpoint policies ("You can attach an Amazon VPC endpoint
#: policy to the interface VPC endpoints that you use to connect to SageMaker AI MLflow",
#: developer guide, mlflow-private-link-policy.html).
MLFLOW_INTERFACE_ENDPOINT = ("Mlflow", ec2.InterfaceVpcEndpointAwsService.SAGEMAKER_EXPERIMENTS,
                             "sagemaker-mlflow")


@dataclass(frozen=True)
class JobNetwork:
    """The subnets and security groups every training job (and tuning trial) runs in."""

    subnet_ids: tuple[str, ...]
    security_group_ids: tuple[str, ...]

    def vpc_config(self) -> dict[str, list[str]]:
        """SageMaker's ``VpcConfig`` (CreateTrainingJob, and a tuning job's
        ``TrainingJobDefinition``)."""
        return {"SecurityGroupIds": list(self.security_group_ids), "Subnets": list(self.subnet_ids)}


class TrainingNetwork(Construct):
    """The network training jobs run in: a VPC of our own, or the subnets of an existing one.

    **Created VPC** (``vpc_id`` None, the default): private isolated subnets only, in
    two Availability Zones (``10.0.0.0/16``, a /20 per AZ), no NAT gateway and no internet
    gateway; the VPC's default security group is stripped of its rules; flow logs of all traffic
    go to a log group encrypted with ``key``, kept ``log_retention`` and retained when the network
    goes (its name, under ``log_group_prefix``, ends in the VPC id, so a new VPC never collides
    with it). Endpoints: S3 gateway on the subnets' route tables, and interface endpoints with
    private DNS for STS, CloudWatch Logs and metrics, ECR API and Docker, KMS, and SageMaker
    MLflow when ``mlflow_endpoint``. Every endpoint has a policy (``endpoint_policies.py``):
    only this account's principals, on this account's resources, with the actions of its
    service among ``job_actions`` (what the jobs' execution role may do), plus ECR's layer
    bucket on S3 and pulls from ``image_accounts`` (AWS's image accounts) on ECR. Security groups:

    - *training*: all traffic from and to itself (the instances of a multi-instance job talk to
      each other), HTTPS to the endpoint group, HTTPS to S3's prefix list (the gateway endpoint's
      addresses, looked up at deploy time); nothing else;
    - *endpoints*: HTTPS from the training group only; no outbound rule.

    The prefix list id is read by a custom resource (``ec2:DescribeManagedPrefixLists``, its
    only permission besides writing its own log group under ``log_group_prefix``).

    **Existing VPC** (``vpc_id`` with ``subnet_ids``, two or more): nothing is created but, when
    ``security_group_ids`` is empty, one training security group in that VPC: all traffic from
    and to itself, and HTTPS to anywhere, because the stack cannot know the addresses of that
    VPC's endpoints (nothing else can be reached when the subnets have no internet route). The
    VPC must already have the endpoints a job needs (S3 gateway or interface; STS, CloudWatch
    Logs and metrics, ECR API and Docker, KMS; SageMaker MLflow for tracking) or a NAT
    route: none are created. S3 must be reached through an endpoint of that VPC: the bucket
    policies deny the execution roles any request without ``aws:SourceVpc`` of that VPC (a request
    through a NAT gateway carries none).

    :attr:`job_network` (what every job's ``VpcConfig`` gets), :attr:`vpc_id`, :attr:`subnet_ids`,
    :attr:`security_group_ids` and :attr:`s3_endpoint_id` (created VPC only) reach other stacks as
    weak references (``Fn::GetStackOutput``), never as exports: an export another stack imports
    cannot be removed, so the network could not be switched off.

    IAM it adds (created VPC): a role for VPC Flow Logs (trusted for this account's flow logs
    only) that may write the flow log group, and the lookup's role; both policies are managed
    policies (no inline policy). **Lifecycle.** The VPC, its endpoints (billed hourly per AZ) and
    groups hold no data and go with the setting or the stack; the flow log group stays. A VPC
    cannot be deleted while a running job's network interfaces are in its subnets: switch the
    network off (or destroy the stack) with no job running.
    """

    def __init__(self, scope: Construct, construct_id: str, *, key: kms.IKey, log_group_prefix: str,
                 log_retention: logs.RetentionDays, vpc_id: str | None = None,
                 subnet_ids: Sequence[str] = (), security_group_ids: Sequence[str] = (),
                 job_actions: Sequence[str], mlflow_endpoint: bool = False,
                 image_accounts: Sequence[str] = ()) -> None:
        super().__init__(scope, construct_id)
        if not log_group_prefix.startswith("/") or not log_group_prefix.endswith("/"):
            raise ValueError(f"log_group_prefix must start and end with '/', got {log_group_prefix!r}")
        if vpc_id is None and (subnet_ids or security_group_ids):
            raise ValueError("subnet_ids and security_group_ids need vpc_id (an existing VPC); "
                             "without it the construct creates its own VPC")
        if vpc_id is not None and len(subnet_ids) < 2:
            raise ValueError(f"an existing VPC needs subnet_ids in two or more Availability Zones, "
                             f"got {list(subnet_ids)}")
        if vpc_id is not None and mlflow_endpoint:
            raise ValueError("mlflow_endpoint applies to a created VPC only: an existing VPC brings "
                             "its own endpoints")
        #: Set by one of the two cases below.
        self.vpc_id: str
        self.subnet_ids: list[str]
        self.security_group_ids: list[str]
        self.s3_endpoint_id: str | None = None
        if vpc_id is None:
            self._create_vpc(key=key, log_group_prefix=log_group_prefix,
                             log_retention=log_retention, mlflow_endpoint=mlflow_endpoint,
                             job_actions=job_actions, image_accounts=image_accounts)
        else:
            self._use_existing_vpc(vpc_id=vpc_id, subnet_ids=subnet_ids,
                                   security_group_ids=security_group_ids)
        self.job_network = JobNetwork(subnet_ids=tuple(self.subnet_ids),
                                      security_group_ids=tuple(self.security_group_ids))

    # -- created VPC ------------------------------------------------------------------------------

    def _create_vpc(self, *, key: kms.IKey, log_group_prefix: str, log_retention: logs.RetentionDays,
                    mlflow_endpoint: bool, job_actions: Sequence[str], image_accounts: Sequence[str]) -> None:
        isolated = ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_ISOLATED)
        self.vpc = ec2.Vpc(
            self, "Vpc",
            ip_addresses=ec2.IpAddresses.cidr(VPC_CIDR),
            max_azs=AVAILABILITY_ZONES,
            nat_gateways=0,
            subnet_configuration=[ec2.SubnetConfiguration(
                name="Training", subnet_type=ec2.SubnetType.PRIVATE_ISOLATED,
                cidr_mask=SUBNET_CIDR_MASK)],
            # Interface endpoints with private DNS need both.
            enable_dns_hostnames=True,
            enable_dns_support=True,
            # Removes the default security group's rules (a custom resource of aws-cdk-lib).
            restrict_default_security_group=True,
        )
        self._flow_logs(key=key, log_group_prefix=log_group_prefix, log_retention=log_retention)
        # aws-cdk-lib's provider of restrict_default_security_group: a CloudFormation-level
        # function (cdk-nag checks only lambda.CfnFunction, checkov every AWS::Lambda::Function).
        provider = Stack.of(self).node.find_child("Custom::VpcRestrictDefaultSGCustomResourceProvider")
        acknowledge_checkov(
            provider.node.find_child("Handler"), DEPLOY_TIME_FUNCTION_CHECKS,
            "aws-cdk-lib's deploy-time function that strips the VPC's default security group of "
            "its rules: CloudFormation invokes it only while the VPC is created or changed and it "
            "answers every event itself, so no concurrency limit or DLQ applies; it calls the EC2 "
            "API, which the training VPC (no internet route, no EC2 endpoint) could not reach.")

        self.s3_endpoint = self.vpc.add_gateway_endpoint(
            "S3Endpoint", service=ec2.GatewayVpcEndpointAwsService.S3, subnets=[isolated])
        self.training_security_group = ec2.SecurityGroup(
            self, "TrainingSecurityGroup", vpc=self.vpc, allow_all_outbound=False,
            description="SageMaker training jobs: own members, VPC endpoints and S3 over HTTPS")
        self.endpoint_security_group = ec2.SecurityGroup(
            self, "EndpointSecurityGroup", vpc=self.vpc, allow_all_outbound=False,
            description="VPC interface endpoints: HTTPS from SageMaker training jobs only")
        self._allow_among_members(self.training_security_group.security_group_id)
        self.training_security_group.add_egress_rule(
            self.endpoint_security_group, HTTPS, "HTTPS to the VPC interface endpoints")
        self.endpoint_security_group.add_ingress_rule(
            self.training_security_group, HTTPS, "HTTPS from SageMaker training jobs")
        s3_prefix_list = self._s3_prefix_list_id(log_group_prefix=log_group_prefix, key=key,
                                                 log_retention=log_retention)
        self.training_security_group.add_egress_rule(
            ec2.Peer.prefix_list(s3_prefix_list), HTTPS,
            "HTTPS to Amazon S3 through the gateway endpoint")

        services = list(REQUIRED_INTERFACE_ENDPOINTS)
        if mlflow_endpoint:
            services.append(MLFLOW_INTERFACE_ENDPOINT)
        self.interface_endpoints = {
            endpoint_id: self.vpc.add_interface_endpoint(
                endpoint_id, service=service, private_dns_enabled=True, subnets=isolated,
                security_groups=[self.endpoint_security_group],
                # Our ingress rule above instead of one from the whole VPC's range.
                open=False)
            for endpoint_id, service, _ in services
        }
        self._endpoint_policies(services, job_actions=job_actions, image_accounts=image_accounts)

        subnets = self.vpc.isolated_subnets
        self.vpc_id = self.vpc.vpc_id
        self.subnet_ids = [subnet.subnet_id for subnet in subnets]
        self.security_group_ids = [self.training_security_group.security_group_id]
        self.s3_endpoint_id = self.s3_endpoint.vpc_endpoint_id
        for resource in (self.vpc, *subnets, self.training_security_group, self.s3_endpoint):
            _weakly_referenced(resource)

    def _endpoint_policies(self, services: Sequence[tuple[str, ec2.InterfaceVpcEndpointAwsService, str]], *,
                           job_actions: Sequence[str], image_accounts: Sequence[str]) -> None:
        """Each endpoint's policy (see ``endpoint_policies.py``); an endpoint none of whose
        actions the jobs' role holds would be left open to everyone, so that fails synth."""
        from infra.constructs import endpoint_policies as policies

        def attach(endpoint: ec2.IVpcEndpoint, endpoint_id: str, statements: list[iam.PolicyStatement],
                   ) -> None:
            if not any(statement.sid != policies.ECR_LAYERS_SID for statement in statements):
                raise ValueError(f"endpoint {endpoint_id}: job_actions holds none of its service's "
                                 f"actions, so its policy would admit nothing of the jobs")
            assert isinstance(endpoint, (ec2.GatewayVpcEndpoint, ec2.InterfaceVpcEndpoint))
            for statement in statements:
                endpoint.add_to_policy(statement)

        attach(self.s3_endpoint, "S3Endpoint", policies.s3_gateway_statements(self, job_actions=job_actions))
        for endpoint_id, _, service_prefix in services:
            if service_prefix == "ecr":
                statements = policies.ecr_statements(self, job_actions=job_actions,
                                                     image_accounts=image_accounts)
            elif service_prefix == "sts":
                statements = policies.account_statements(self, sorted(
                    {*policies.service_actions(job_actions, "sts"), *policies.STS_ACTIONS}))
            else:
                statements = policies.account_statements(
                    self, policies.service_actions(job_actions, service_prefix))
            attach(self.interface_endpoints[endpoint_id], endpoint_id, statements)

    def _flow_logs(self, *, key: kms.IKey, log_group_prefix: str,
                   log_retention: logs.RetentionDays) -> None:
        """VPC flow logs of all traffic, to a KMS-encrypted log group of their own (AwsSolutions-VPC7)."""
        stack = Stack.of(self)
        self.flow_log_group = logs.LogGroup(
            self, "FlowLogs",
            log_group_name=Fn.join("", [log_group_prefix, "flow-logs-", self.vpc.vpc_id]),
            encryption_key=key, retention=log_retention,
            # Network audit records outlive the network; the name is the VPC's, so a VPC created
            # again (the network switched off and on) gets a group of its own.
            removal_policy=RemovalPolicy.RETAIN,
        )
        # The trust policy scopes the service to this account's flow logs (Amazon VPC user guide,
        # "IAM role for publishing flow logs to CloudWatch Logs", confused deputy prevention).
        role = iam.Role(
            self, "FlowLogsRole",
            description="Lets VPC Flow Logs write the training VPC's flow log group",
            assumed_by=iam.ServicePrincipal("vpc-flow-logs.amazonaws.com", conditions={
                "StringEquals": {"aws:SourceAccount": stack.account},
                "ArnLike": {"aws:SourceArn": stack.format_arn(
                    service="ec2", resource="vpc-flow-log", resource_name="*")},
            }),
        )
        policy = iam.ManagedPolicy(self, "FlowLogsPolicy", roles=[role], statements=[
            iam.PolicyStatement(
                sid="WriteFlowLogs",
                actions=["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
                resources=[self.flow_log_group.log_group_arn]),
        ])
        # An immutable view: CDK would otherwise add the same statement as an inline policy.
        flow_log = self.vpc.add_flow_log(
            "FlowLog", traffic_type=ec2.FlowLogTrafficType.ALL,
            destination=ec2.FlowLogDestination.to_cloud_watch_logs(
                self.flow_log_group, role.without_policy_updates()))
        flow_log.node.add_dependency(policy)

    def _s3_prefix_list_id(self, *, log_group_prefix: str, key: kms.IKey,
                           log_retention: logs.RetentionDays) -> str:
        """The id of the AWS-managed prefix list ``com.amazonaws.<region>.s3``, read at deploy
        time (it differs per region and is not available to CloudFormation otherwise)."""
        stack = Stack.of(self)
        log_group = logs.LogGroup(
            self, "PrefixListLookupLogs",
            log_group_name=Fn.join("", [log_group_prefix, "s3-prefix-list-lookup-", self.vpc.vpc_id]),
            encryption_key=key, retention=log_retention, removal_policy=RemovalPolicy.DESTROY)
        role = iam.Role(
            self, "PrefixListLookupRole",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description="Reads the id of the S3 managed prefix list for the training security group",
        )
        policy = iam.ManagedPolicy(self, "PrefixListLookupPolicy", roles=[role], statements=[
            # DescribeManagedPrefixLists supports no resource-level permissions (Service
            # Authorization Reference, Amazon EC2): "*" is the only resource it accepts.
            iam.PolicyStatement(sid="DescribeManagedPrefixLists",
                                actions=["ec2:DescribeManagedPrefixLists"], resources=["*"]),
            iam.PolicyStatement(sid="WriteOwnLogs",
                                actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                                resources=[log_group.log_group_arn]),
        ])
        call = cr.AwsSdkCall(
            service="EC2", action="describeManagedPrefixLists",
            parameters={"Filters": [{"Name": "prefix-list-name",
                                     "Values": [f"com.amazonaws.{stack.region}.s3"]}]},
            output_paths=["PrefixLists.0.PrefixListId"],
            physical_resource_id=cr.PhysicalResourceId.from_response("PrefixLists.0.PrefixListId"),
        )
        lookup = cr.AwsCustomResource(
            self, "S3PrefixList", on_create=call, on_update=call, role=role,
            # The runtime's own SDK has the call; installing the latest would need npm at deploy.
            install_latest_aws_sdk=False, log_group=log_group,
            resource_type="Custom::S3PrefixListLookup")
        # The role's policy is a resource of its own: the lookup must not run before it exists.
        lookup.node.add_dependency(policy)
        self._acknowledge_lookup(lookup, policy)
        return lookup.get_response_field("PrefixLists.0.PrefixListId")

    @staticmethod
    def _acknowledge_lookup(lookup: cr.AwsCustomResource, policy: iam.ManagedPolicy) -> None:
        acknowledge(
            policy, "AwsSolutions-IAM5",
            "ec2:DescribeManagedPrefixLists supports no resource-level permissions, so its only "
            "resource is '*'; the action only reads the ids of AWS-managed prefix lists.",
            applies_to=["Resource::*"])
        function = _singleton_function(lookup)
        acknowledge(
            function, DEPLOY_TIME_FUNCTION_RULES,
            "Deploy-time lookup of aws-cdk-lib's AwsCustomResource: CloudFormation invokes it when "
            "the network is created or changed and the function answers every outcome itself, so "
            "no concurrency limit or DLQ applies; it calls the EC2 API, which the training VPC "
            "(no internet route, no EC2 endpoint) could not reach, and handles no training data.",
        )

    # -- existing VPC -----------------------------------------------------------------------------

    def _use_existing_vpc(self, *, vpc_id: str, subnet_ids: Sequence[str],
                          security_group_ids: Sequence[str]) -> None:
        self.vpc_id = vpc_id
        self.subnet_ids = list(subnet_ids)
        if security_group_ids:
            self.security_group_ids = list(security_group_ids)
            return
        # A CloudFormation security group without SecurityGroupEgress gets EC2's default
        # allow-all egress rule; the inline HTTPS rule replaces it (AWS::EC2::SecurityGroup,
        # property SecurityGroupEgress). The endpoints of an existing VPC are not known to the
        # stack (interface endpoints have addresses in the VPC, a gateway endpoint a prefix list),
        # hence HTTPS to any address: only what the subnets' routes lead to is reachable.
        group = ec2.CfnSecurityGroup(
            self, "TrainingSecurityGroup", vpc_id=vpc_id,
            group_description="SageMaker training jobs: own members, and HTTPS to AWS endpoints",
            security_group_egress=[ec2.CfnSecurityGroup.EgressProperty(
                ip_protocol="tcp", from_port=443, to_port=443, cidr_ip="0.0.0.0/0",
                description="HTTPS to the AWS endpoints of the VPC")],
        )
        self._allow_among_members(group.attr_group_id)
        self.security_group_ids = [group.attr_group_id]
        CrossStackReferences.of(group).produce(ReferenceStrength.WEAK)

    # -- shared -----------------------------------------------------------------------------------

    def _allow_among_members(self, group_id: str) -> None:
        """All traffic between the instances of one job: distributed training (NCCL, MPI, EFA)
        uses ports and protocols of its own choosing. Written as separate rule resources so that
        the ingress rule can be acknowledged alone."""
        ingress = ec2.CfnSecurityGroupIngress(
            self, "TrainingMembersIngress", group_id=group_id,
            source_security_group_id=group_id, ip_protocol="-1",
            description="All traffic among training instances")
        ec2.CfnSecurityGroupEgress(
            self, "TrainingMembersEgress", group_id=group_id,
            destination_security_group_id=group_id, ip_protocol="-1",
            description="All traffic among training instances")
        acknowledge(
            ingress,
            ["HIPAA.Security-EC2RestrictedCommonPorts", "NIST.800.53.R5-EC2RestrictedCommonPorts",
             "PCI.DSS.321-EC2RestrictedCommonPorts"],
            "The source of this all-protocol rule is the training security group itself, not an "
            "address range: only instances of SageMaker training jobs reach each other, as "
            "multi-instance training (NCCL, MPI, EFA) needs on ports it chooses at run time.",
        )

def _weakly_referenced(construct: IConstruct) -> None:
    """References from other stacks to ``construct``'s CloudFormation resource use
    ``Fn::GetStackOutput`` instead of an export (see the class docstring)."""
    resource = construct.node.default_child
    assert isinstance(resource, CfnResource), construct.node.path
    CrossStackReferences.of(resource).produce(ReferenceStrength.WEAK)


def _singleton_function(lookup: cr.AwsCustomResource) -> IConstruct:
    """The Lambda function behind every AwsCustomResource of a stack: a singleton at the stack's
    root, named ``AWS`` + its UUID without dashes (aws-cdk-lib's ``SingletonFunction``)."""
    name = "AWS" + cr.AwsCustomResource.PROVIDER_FUNCTION_UUID.replace("-", "")
    return Stack.of(lookup).node.find_child(name)
