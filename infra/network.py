"""Network: a VPC over >= 2 AZs with public and private subnets, NAT, an S3 gateway endpoint and
optional flow logs — or an existing VPC's ids, passed through unchanged."""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra.ordering import ready_when
from infra.settings import NetworkSettings
from infra.tags import child_opts, name_tag

# Subnets are carved from the VPC CIDR 4 bits smaller (a /16 gives /20s): public subnets take the
# first slots, private subnets start half-way, so adding AZs later never renumbers a subnet.
SUBNET_EXTRA_PREFIX_BITS = 4
PRIVATE_SUBNET_OFFSET = 8
FLOW_LOG_RETENTION_DAYS = 90


@dataclass(frozen=True)
class NetworkArgs:
    settings: NetworkSettings
    region: str
    # The partition's reverse DNS prefix (aws.get_partition): "com.amazonaws", or "cn.com.amazonaws"
    # in China, where gateway endpoint service names differ.
    service_name_prefix: pulumi.Input[str] = "com.amazonaws"
    permissions_boundary_arn: str | None = None


def subnet_cidrs(vpc_cidr: str, az_count: int) -> tuple[list[str], list[str]]:
    """(public, private) subnet CIDRs, one of each per AZ."""
    network = ipaddress.ip_network(vpc_cidr)
    slots = list(network.subnets(prefixlen_diff=SUBNET_EXTRA_PREFIX_BITS))
    public = [str(slots[i]) for i in range(az_count)]
    private = [str(slots[PRIVATE_SUBNET_OFFSET + i]) for i in range(az_count)]
    return public, private


class Network(pulumi.ComponentResource):
    vpc_id: pulumi.Output[str]
    public_subnet_ids: pulumi.Output[list[str]]
    private_subnet_ids: pulumi.Output[list[str]]
    # The same ids, resolving only once each private subnet's route table (with its NAT route) is
    # associated: for tasks, which must reach ECR, Secrets Manager and CloudWatch Logs the moment
    # they start. The database keeps the plain ids so it need not wait for the NAT gateways.
    private_subnet_ids_routed: pulumi.Output[list[str]]
    # Public IPs of the NAT gateways this stack creates (empty for an existing VPC): the source
    # address a private task's traffic to an internet-facing load balancer arrives from.
    nat_public_ips: list[pulumi.Output[str]]

    def __init__(self, name: str, args: NetworkArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mlflow-stack:network:Network", name, None, opts)
        settings = args.settings
        self.nat_public_ips = []
        if settings.existing_vpc_id is not None:
            self.vpc_id = pulumi.Output.from_input(settings.existing_vpc_id)
            self.public_subnet_ids = pulumi.Output.from_input(list(settings.existing_public_subnet_ids))
            self.private_subnet_ids = pulumi.Output.from_input(list(settings.existing_private_subnet_ids))
            self.private_subnet_ids_routed = self.private_subnet_ids
        else:
            self._create_vpc(name, args)
        self.register_outputs(
            {
                "vpc_id": self.vpc_id,
                "public_subnet_ids": self.public_subnet_ids,
                "private_subnet_ids": self.private_subnet_ids,
            }
        )

    def _create_vpc(self, name: str, args: NetworkArgs) -> None:
        settings = args.settings
        zones = aws.get_availability_zones_output(
            state="available", opts=pulumi.InvokeOutputOptions(parent=self)
        ).names
        vpc = aws.ec2.Vpc(
            f"{name}-vpc",
            cidr_block=settings.vpc_cidr,
            enable_dns_hostnames=True,
            enable_dns_support=True,
            tags=name_tag(f"{name}-vpc"),
            opts=child_opts(self),
        )
        igw = aws.ec2.InternetGateway(
            f"{name}-igw", vpc_id=vpc.id, tags=name_tag(f"{name}-igw"), opts=child_opts(self)
        )
        public_rt = aws.ec2.RouteTable(
            f"{name}-public-rt",
            vpc_id=vpc.id,
            routes=[aws.ec2.RouteTableRouteArgs(cidr_block="0.0.0.0/0", gateway_id=igw.id)],
            tags=name_tag(f"{name}-public"),
            opts=child_opts(self),
        )
        # What makes a subnet public: the gateway attached and the route to it associated. Anything
        # internet-facing waits for these (see public_subnet_ids below).
        internet_ready: list[pulumi.Output[str]] = [igw.id]

        public_cidrs, private_cidrs = subnet_cidrs(settings.vpc_cidr, settings.az_count)
        public_subnets: list[aws.ec2.Subnet] = []
        private_subnets: list[aws.ec2.Subnet] = []
        for index in range(settings.az_count):
            zone = zones.apply(lambda names, i=index: _zone(names, i))
            public = aws.ec2.Subnet(
                f"{name}-public-{index}",
                vpc_id=vpc.id,
                cidr_block=public_cidrs[index],
                availability_zone=zone,
                # The load balancer gets its addresses explicitly; nothing else lives here.
                map_public_ip_on_launch=False,
                tags={**name_tag(f"{name}-public-{index}"), "tier": "public"},
                opts=child_opts(self),
            )
            public_association = aws.ec2.RouteTableAssociation(
                f"{name}-public-{index}-rta",
                subnet_id=public.id,
                route_table_id=public_rt.id,
                opts=child_opts(self),
            )
            internet_ready.append(public_association.id)
            private = aws.ec2.Subnet(
                f"{name}-private-{index}",
                vpc_id=vpc.id,
                cidr_block=private_cidrs[index],
                availability_zone=zone,
                tags={**name_tag(f"{name}-private-{index}"), "tier": "private"},
                opts=child_opts(self),
            )
            public_subnets.append(public)
            private_subnets.append(private)

        nat_ids = self._nat_gateways(name, settings, public_subnets, igw)
        private_route_tables = []
        private_routed: list[pulumi.Output[str]] = []
        for index, private in enumerate(private_subnets):
            routes = []
            if nat_ids:
                # per_az: each AZ egresses through its own NAT, so losing an AZ never cuts the others off.
                nat_id = nat_ids[index % len(nat_ids)]
                routes.append(aws.ec2.RouteTableRouteArgs(cidr_block="0.0.0.0/0", nat_gateway_id=nat_id))
            route_table = aws.ec2.RouteTable(
                f"{name}-private-{index}-rt",
                vpc_id=vpc.id,
                routes=routes,
                tags=name_tag(f"{name}-private-{index}"),
                opts=child_opts(self),
            )
            private_association = aws.ec2.RouteTableAssociation(
                f"{name}-private-{index}-rta",
                subnet_id=private.id,
                route_table_id=route_table.id,
                opts=child_opts(self),
            )
            private_route_tables.append(route_table)
            private_routed.append(private_association.id)

        # Gateway endpoints are free and keep artifact traffic to S3 off the (metered) NAT gateways.
        self.s3_endpoint = aws.ec2.VpcEndpoint(
            f"{name}-s3-endpoint",
            vpc_id=vpc.id,
            service_name=pulumi.Output.concat(args.service_name_prefix, f".{args.region}.s3"),
            vpc_endpoint_type="Gateway",
            route_table_ids=[table.id for table in private_route_tables],
            tags=name_tag(f"{name}-s3"),
            opts=child_opts(self),
        )
        if settings.flow_logs:
            self._flow_logs(name, vpc, args.permissions_boundary_arn)

        self.vpc_id = vpc.id
        # The public subnet ids resolve only once the internet gateway and the public routes exist,
        # and carry those resources as dependencies: an internet-facing load balancer created in
        # a subnet of a VPC without an attached gateway fails with "InvalidSubnet: VPC ... has no
        # internet gateway" (CreateLoadBalancer, Elastic Load Balancing API reference).
        self.public_subnet_ids = ready_when(
            pulumi.Output.all(*[subnet.id for subnet in public_subnets]), *internet_ready
        )
        self.private_subnet_ids = pulumi.Output.all(*[subnet.id for subnet in private_subnets])
        self.private_subnet_ids_routed = ready_when(
            self.private_subnet_ids, *private_routed, self.s3_endpoint.id
        )

    def _nat_gateways(
        self,
        name: str,
        settings: NetworkSettings,
        public_subnets: list[aws.ec2.Subnet],
        igw: aws.ec2.InternetGateway,
    ) -> list[pulumi.Output[str]]:
        count = {"none": 0, "single": 1, "per_az": len(public_subnets)}[settings.nat_gateways]
        nat_ids = []
        # Nothing in their inputs names the gateway, so without depends_on the engine may create
        # both before it: AWS answers "Gateway.NotAttached" for the address and a public NAT gateway
        # "requires an internet gateway" attached to its VPC (EC2 User Guide, "NAT gateways";
        # the aws_eip docs say the same for Terraform: "EIP may require IGW to exist prior").
        after_igw = {"depends_on": [igw]}
        for index in range(count):
            eip = aws.ec2.Eip(
                f"{name}-nat-{index}-eip",
                domain="vpc",
                tags=name_tag(f"{name}-nat-{index}"),
                opts=child_opts(self, **after_igw),
            )
            nat = aws.ec2.NatGateway(
                f"{name}-nat-{index}",
                allocation_id=eip.id,
                subnet_id=public_subnets[index].id,
                tags=name_tag(f"{name}-nat-{index}"),
                opts=child_opts(self, **after_igw),
            )
            nat_ids.append(nat.id)
            self.nat_public_ips.append(eip.public_ip)
        return nat_ids

    def _flow_logs(self, name: str, vpc: aws.ec2.Vpc, permissions_boundary_arn: str | None) -> None:
        log_group = aws.cloudwatch.LogGroup(
            f"{name}-flow-logs",
            name=f"/vpc/{name}/flow-logs",
            retention_in_days=FLOW_LOG_RETENTION_DAYS,
            opts=child_opts(self),
        )
        account_id = aws.get_caller_identity_output(opts=pulumi.InvokeOutputOptions(parent=self)).account_id
        role = aws.iam.Role(
            f"{name}-flow-logs-role",
            assume_role_policy=account_id.apply(flow_logs_trust_policy),
            permissions_boundary=permissions_boundary_arn,
            opts=child_opts(self),
        )
        aws.iam.RolePolicy(
            f"{name}-flow-logs-policy",
            role=role.id,
            policy=log_group.arn.apply(
                lambda arn: json.dumps(
                    {
                        "Version": "2012-10-17",
                        "Statement": [
                            {
                                "Sid": "WriteFlowLogs",
                                "Effect": "Allow",
                                "Action": [
                                    "logs:CreateLogStream",
                                    "logs:PutLogEvents",
                                    "logs:DescribeLogStreams",
                                ],
                                "Resource": [arn, f"{arn}:log-stream:*"],
                            }
                        ],
                    }
                )
            ),
            opts=child_opts(self),
        )
        aws.ec2.FlowLog(
            f"{name}-flow-log",
            vpc_id=vpc.id,
            traffic_type="ALL",
            log_destination_type="cloud-watch-logs",
            log_destination=log_group.arn,
            iam_role_arn=role.arn,
            max_aggregation_interval=600,
            opts=child_opts(self),
        )


def flow_logs_trust_policy(account_id: str) -> str:
    # aws:SourceAccount: only flow logs of this account may use the role (confused deputy).
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Service": "vpc-flow-logs.amazonaws.com"},
                    "Action": "sts:AssumeRole",
                    "Condition": {"StringEquals": {"aws:SourceAccount": account_id}},
                }
            ],
        }
    )


def _zone(names: list[str], index: int) -> str:
    if index >= len(names):
        raise ValueError(
            f"mlflow-stack:network.azCount asks for {index + 1} availability zones but the region has "
            f"{len(names)} — lower network.azCount"
        )
    return names[index]
