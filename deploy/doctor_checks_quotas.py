"""Doctor check 2: the regional quotas a new stack consumes, against what the account has left.

The quota values come from the Service Quotas API: the account's applied value
(GetServiceQuota), or AWS's default when the quota was never changed (GetAWSDefaultServiceQuota).
Quota codes, checked against the Service Quotas console and
https://docs.aws.amazon.com/general/latest/gr/vpc-service.html (VPC quotas) and
https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/elastic-ip-addresses-eip.html (Elastic IPs):
  ec2 L-0263D0A3  EC2-VPC Elastic IPs (per Region; each NAT gateway the stack creates uses one)
  vpc L-F678F1CE  VPCs per Region
  vpc L-FE5A380F  NAT gateways per Availability Zone
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from deploy.doctor import CheckResult, DoctorContext, call, fail, ok, warn


@dataclass(frozen=True)
class Quota:
    service: str
    code: str
    name: str


ELASTIC_IPS = Quota("ec2", "L-0263D0A3", "EC2-VPC Elastic IPs")
VPCS = Quota("vpc", "L-F678F1CE", "VPCs per Region")
NAT_GATEWAYS_PER_AZ = Quota("vpc", "L-FE5A380F", "NAT gateways per Availability Zone")

# NAT gateways that hold an Elastic IP and count against the per-AZ quota.
LIVE_NAT_STATES = ["available", "pending"]


def quota_value(ctx: DoctorContext, quota: Quota) -> float | None:
    """The account's value of `quota`, its AWS default if never changed, or None if unreadable."""
    client = ctx.client("service-quotas")
    try:
        answer = call(client, "get_service_quota", ServiceCode=quota.service, QuotaCode=quota.code)
    except client.exceptions.NoSuchResourceException:
        try:
            answer = call(
                client, "get_aws_default_service_quota", ServiceCode=quota.service, QuotaCode=quota.code
            )
        except client.exceptions.ClientError:
            # No default either (or an API that does not know the code): say so, do not guess.
            return None
    return float(answer["Quota"]["Value"])


def nat_gateways_created(ctx: DoctorContext) -> int:
    network = ctx.settings.network
    if network.existing_vpc_id is not None:
        return 0
    return {"single": 1, "per_az": network.az_count, "none": 0}[network.nat_gateways]


def _unreadable(check: str, quota: Quota, region: str) -> CheckResult:
    return warn(
        check,
        f"could not read the quota {quota.name} ({quota.service} {quota.code}) from Service Quotas",
        f"look it up by hand: aws service-quotas get-service-quota --service-code {quota.service} "
        f"--quota-code {quota.code} --region {region}",
    )


def _increase(quota: Quota, desired: float, region: str) -> str:
    return (
        "free some up, or request an increase: aws service-quotas request-service-quota-increase "
        f"--service-code {quota.service} --quota-code {quota.code} --desired-value {desired:g} "
        f"--region {region}"
    )


def _paginate(client: Any, operation: str, key: str, **kwargs: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    token: str | None = None
    while True:
        page = call(client, operation, **kwargs, **({"NextToken": token} if token else {}))
        items.extend(page.get(key, []))
        token = page.get("NextToken")
        if not token:
            return items


def check_elastic_ips(ctx: DoctorContext) -> CheckResult:
    check, region = "quota:elastic-ips", str(ctx.region)
    needed = nat_gateways_created(ctx)
    if needed == 0:
        return ok(check, "the stack allocates no Elastic IP (no NAT gateway of its own)")
    limit = quota_value(ctx, ELASTIC_IPS)
    if limit is None:
        return _unreadable(check, ELASTIC_IPS, region)
    addresses = call(ctx.client("ec2"), "describe_addresses", Filters=[{"Name": "domain", "Values": ["vpc"]}])
    used = len(addresses.get("Addresses", []))
    detail = f"{ELASTIC_IPS.name}: quota {limit:g}, {used} allocated, the stack needs {needed} (one per NAT)"
    if used + needed > limit:
        return fail(check, detail + " — not enough left", _increase(ELASTIC_IPS, used + needed, region))
    return ok(check, detail)


def check_vpcs(ctx: DoctorContext) -> CheckResult:
    check, region = "quota:vpcs", str(ctx.region)
    if ctx.settings.network.existing_vpc_id is not None:
        return ok(check, "the stack uses an existing VPC and creates none")
    limit = quota_value(ctx, VPCS)
    if limit is None:
        return _unreadable(check, VPCS, region)
    used = len(_paginate(ctx.client("ec2"), "describe_vpcs", "Vpcs"))
    detail = f"{VPCS.name}: quota {limit:g}, {used} in use, the stack needs 1"
    if used + 1 > limit:
        return fail(check, detail + " — none left", _increase(VPCS, used + 1, region))
    return ok(check, detail)


def check_nat_gateways(ctx: DoctorContext) -> CheckResult:
    check, region = "quota:nat-gateways", str(ctx.region)
    network = ctx.settings.network
    needed = nat_gateways_created(ctx)
    if needed == 0:
        return ok(check, "the stack creates no NAT gateway")
    ec2 = ctx.client("ec2")
    zones = call(ec2, "describe_availability_zones", Filters=[{"Name": "state", "Values": ["available"]}])
    # The network component takes the region's available zones in the order AWS lists them.
    zone_names = [zone["ZoneName"] for zone in zones.get("AvailabilityZones", [])]
    if len(zone_names) < network.az_count:
        return fail(
            check,
            f"network.azCount is {network.az_count} but {region} has {len(zone_names)} available zones",
            f"set mlflow-stack:network.azCount to at most {len(zone_names)}",
        )
    # `single` puts its NAT gateway in the first public subnet's zone.
    target_zones = zone_names[: network.az_count] if network.nat_gateways == "per_az" else zone_names[:1]
    limit = quota_value(ctx, NAT_GATEWAYS_PER_AZ)
    if limit is None:
        return _unreadable(check, NAT_GATEWAYS_PER_AZ, region)
    gateways = _paginate(
        ec2, "describe_nat_gateways", "NatGateways", Filter=[{"Name": "state", "Values": LIVE_NAT_STATES}]
    )
    used = dict.fromkeys(target_zones, 0)
    subnet_ids = sorted({gateway["SubnetId"] for gateway in gateways if gateway.get("SubnetId")})
    if subnet_ids:
        subnets = call(ec2, "describe_subnets", SubnetIds=subnet_ids).get("Subnets", [])
        zone_of = {subnet["SubnetId"]: subnet["AvailabilityZone"] for subnet in subnets}
        for gateway in gateways:
            zone = zone_of.get(gateway.get("SubnetId", ""))
            if zone in used:
                used[zone] += 1
    full = [zone for zone, count in used.items() if count + 1 > limit]
    usage = ", ".join(f"{zone} {count}" for zone, count in used.items())
    detail = f"{NAT_GATEWAYS_PER_AZ.name}: quota {limit:g}, in use {usage}; the stack adds 1 in each"
    if full:
        return fail(
            check,
            f"{detail} — none left in {', '.join(full)}",
            _increase(NAT_GATEWAYS_PER_AZ, max(used.values()) + 1, region),
        )
    return ok(check, detail)
