"""Doctor check 8: an existing VPC (network.existingVpcId) can carry the stack.

Its subnets must exist, belong to it and span at least two Availability Zones (an RDS subnet
group and an Application Load Balancer both need two). Private subnets need a default route to a
NAT gateway (tasks pull from ECR and read Secrets Manager without public IPs); with an
internet-facing load balancer the public subnets need a default route to an internet gateway.
A subnet without an explicit route table association uses the VPC's main route table
(https://docs.aws.amazon.com/vpc/latest/userguide/RouteTables.html#subnet-route-tables).
"""

from __future__ import annotations

from typing import Any

from deploy.doctor import CheckResult, DoctorContext, call, fail, ok, skip, warn

DEFAULT_ROUTE = "0.0.0.0/0"


def _route_tables_by_subnet(route_tables: list[dict[str, Any]], subnet_ids: list[str]) -> dict[str, dict]:
    explicit: dict[str, dict] = {}
    main: dict | None = None
    for table in route_tables:
        for association in table.get("Associations", []):
            if association.get("Main"):
                main = table
            elif association.get("SubnetId"):
                explicit[association["SubnetId"]] = table
    return {subnet: explicit.get(subnet) or main or {} for subnet in subnet_ids}


def _default_route(table: dict[str, Any]) -> dict[str, Any] | None:
    for route in table.get("Routes", []):
        if route.get("DestinationCidrBlock") == DEFAULT_ROUTE and route.get("State", "active") == "active":
            return route
    return None


def _target(route: dict[str, Any]) -> str:
    for key in ("NatGatewayId", "GatewayId", "TransitGatewayId", "NetworkInterfaceId", "InstanceId"):
        if route.get(key):
            return str(route[key])
    return "another target"


def check_existing_vpc(ctx: DoctorContext) -> CheckResult:
    check = "existing-vpc"
    network = ctx.settings.network
    vpc_id = network.existing_vpc_id
    if vpc_id is None:
        return skip(check, "network.existingVpcId is not set; the stack creates its own VPC")
    ec2 = ctx.client("ec2")
    missing_fix = "set mlflow-stack:network.existingVpcId and its subnet ids to ones in the stack's region"
    try:
        call(ec2, "describe_vpcs", VpcIds=[vpc_id])
    except ec2.exceptions.ClientError as exc:
        if "NotFound" in str(exc):
            return fail(check, f"VPC {vpc_id} does not exist in {ctx.region}", missing_fix)
        raise
    private, public = network.existing_private_subnet_ids, network.existing_public_subnet_ids
    needs_public = ctx.settings.load_balancer.internet_facing
    wanted = list(dict.fromkeys([*private, *(public if needs_public else [])]))
    try:
        subnets = {s["SubnetId"]: s for s in call(ec2, "describe_subnets", SubnetIds=wanted)["Subnets"]}
    except ec2.exceptions.ClientError as exc:
        if "NotFound" in str(exc):
            return fail(check, f"a subnet of the stack does not exist: {exc}", missing_fix)
        raise
    foreign = [subnet for subnet in wanted if subnets[subnet]["VpcId"] != vpc_id]
    if foreign:
        return fail(
            check, f"subnets {', '.join(foreign)} are not in {vpc_id}", f"list only subnets of {vpc_id}"
        )
    problems: list[str] = []
    groups = [("private", private)] + ([("public", public)] if needs_public else [])
    for role, ids in groups:
        zones = {subnets[subnet]["AvailabilityZone"] for subnet in ids}
        if len(zones) < 2:
            problems.append(f"the {role} subnets span {len(zones)} Availability Zone(s), need 2")
    tables = call(ec2, "describe_route_tables", Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])
    table_of = _route_tables_by_subnet(tables.get("RouteTables", []), wanted)
    warnings: list[str] = []
    for subnet in private:
        route = _default_route(table_of[subnet])
        if route is None:
            problems.append(f"private subnet {subnet} has no {DEFAULT_ROUTE} route (tasks cannot reach ECR)")
        elif not route.get("NatGatewayId"):
            warnings.append(
                f"private subnet {subnet} sends {DEFAULT_ROUTE} to {_target(route)}, not a NAT gateway"
            )
    if needs_public:
        for subnet in public:
            route = _default_route(table_of[subnet])
            if route is None or not str(route.get("GatewayId", "")).startswith("igw-"):
                where = "nowhere" if route is None else _target(route)
                problems.append(
                    f"public subnet {subnet} routes {DEFAULT_ROUTE} to {where}, not an internet gateway"
                )
    if problems:
        return fail(
            check,
            f"{vpc_id}: " + "; ".join(problems + warnings),
            "pick subnets in two or more zones; give private subnets a default route to a NAT gateway and "
            "public ones to an internet gateway (or set loadBalancer.internetFacing: false)",
        )
    if warnings:
        return warn(
            check,
            f"{vpc_id}: " + "; ".join(warnings),
            "make sure that target reaches the internet, or VPC endpoints for ECR, Secrets Manager "
            "and CloudWatch Logs",
        )
    zones = sorted({subnets[subnet]["AvailabilityZone"] for subnet in private})
    return ok(
        check, f"{vpc_id} and its {len(wanted)} subnets are usable (private subnets in {', '.join(zones)})"
    )
