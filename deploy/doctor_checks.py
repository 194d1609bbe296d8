"""Doctor checks 1, 5 and 9 (credentials, service-linked roles, example values) and the list of
every check in the order the report shows them. The others live in doctor_checks_<topic>.py."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from functools import partial
from typing import Any

from deploy.doctor import Check, CheckResult, DoctorContext, call, fail, ok, warn
from deploy.doctor_checks_dns import check_certificate, check_delegation, check_hosted_zone
from deploy.doctor_checks_image import check_image, check_image_build
from deploy.doctor_checks_network import check_existing_vpc
from deploy.doctor_checks_quotas import check_elastic_ips, check_nat_gateways, check_vpcs

# -- 1. credentials ------------------------------------------------------------------------------


def check_credentials(ctx: DoctorContext) -> CheckResult:
    import boto3
    from botocore.exceptions import NoCredentialsError

    check = "credentials"
    try:
        identity = call(ctx.client("sts"), "get_caller_identity")
    except NoCredentialsError:
        return fail(
            check,
            "no AWS credentials found",
            "configure them: `aws configure`, `aws sso login` with AWS_PROFILE, or AWS_* variables",
        )
    ctx.account_id = identity["Account"]
    who = f"account {identity['Account']} as {identity['Arn']}"
    known = boto3.session.Session().get_available_regions("ec2")
    if ctx.region not in known:
        return fail(
            check, f"{who}; aws:region {ctx.region} is not an AWS region", "fix aws:region in the stack file"
        )
    if ctx.env.default_region and ctx.env.default_region != ctx.region:
        return warn(
            check,
            f"{who}; doctor uses the stack's region {ctx.region}, your AWS configuration says "
            f"{ctx.env.default_region}",
            f"export AWS_REGION={ctx.region} so the aws CLI commands you run next hit the stack's region",
        )
    return ok(check, f"{who}, region {ctx.region}")


# -- 5. service-linked roles ---------------------------------------------------------------------

# Role name -> the service principal that owns it (path /aws-service-role/<principal>/).
SERVICE_LINKED_ROLES: dict[str, str] = {
    "AWSServiceRoleForECS": "ecs.amazonaws.com",
    "AWSServiceRoleForElasticLoadBalancing": "elasticloadbalancing.amazonaws.com",
    "AWSServiceRoleForRDS": "rds.amazonaws.com",
    "AWSServiceRoleForApplicationAutoScaling_ECSService": "ecs.application-autoscaling.amazonaws.com",
}


def check_service_linked_role(role: str, ctx: DoctorContext) -> CheckResult:
    check = f"role:{role}"
    principal = SERVICE_LINKED_ROLES[role]
    iam = ctx.client("iam")
    try:
        found = call(iam, "get_role", RoleName=role)["Role"]
    except iam.exceptions.NoSuchEntityException:
        # Services create their role on first use when the caller may (iam:CreateServiceLinkedRole):
        # https://docs.aws.amazon.com/IAM/latest/UserGuide/using-service-linked-roles.html
        return warn(
            check,
            f"{role} does not exist yet; {principal} creates it on first use if the deployer "
            "is allowed iam:CreateServiceLinkedRole",
            f"allow iam:CreateServiceLinkedRole for {principal}, or create it once: "
            f"aws iam create-service-linked-role --aws-service-name {principal}",
        )
    expected_path = f"/aws-service-role/{principal}/"
    if found.get("Path") != expected_path:
        return fail(
            check,
            f"a role named {role} exists with path {found.get('Path')}, not {expected_path}; "
            "the service cannot create its own",
            "rename or delete that role, then: "
            f"aws iam create-service-linked-role --aws-service-name {principal}",
        )
    return ok(check, f"{role} exists ({expected_path})")


# -- 9. example values ---------------------------------------------------------------------------

EXAMPLE_ACCOUNT = "123456789012"
# Reserved for documentation: RFC 2606 names, RFC 5737 addresses.
EXAMPLE_DOMAIN = re.compile(r"(^|[.@])example\.(com|net|org)$|\.(example|test|invalid)$", re.IGNORECASE)
DOCUMENTATION_NETWORKS = tuple(
    ipaddress.ip_network(cidr) for cidr in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")
)
PLACEHOLDER_ZONE = re.compile(r"Z(EXAMPLE\w*|0+|1234567890\w*|0123456789\w*|X+|(\w)\2{5,})", re.IGNORECASE)


def _strings(value: Any, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings(item, f"{path}[{index}]")
    elif isinstance(value, str):
        yield path, value


def _is_documentation_network(value: str) -> bool:
    try:
        network = ipaddress.ip_network(value, strict=False)
    except ValueError:
        return False
    return any(network.subnet_of(doc) for doc in DOCUMENTATION_NETWORKS if network.version == doc.version)


def example_values(config: dict[str, Any]) -> list[str]:
    """Every value in the stack file that is an example rather than the deployer's own."""
    found = []
    for key, value in config.items():
        for path, text in _strings(value, key):
            if EXAMPLE_ACCOUNT in text:
                found.append(f"{path} uses the example account {EXAMPLE_ACCOUNT}")
            elif EXAMPLE_DOMAIN.search(text):
                found.append(f"{path} = {text} is a documentation domain")
            elif _is_documentation_network(text):
                found.append(f"{path} = {text} is a documentation address range (RFC 5737)")
            elif path.endswith("hostedZoneId") and PLACEHOLDER_ZONE.fullmatch(text):
                found.append(f"{path} = {text} looks like a placeholder")
    return found


def check_placeholders(ctx: DoctorContext) -> CheckResult:
    check = "placeholders"
    found = example_values(ctx.config)
    if found:
        return fail(
            check,
            f"{len(found)} example value(s) in stacks/Pulumi.{ctx.stack}.yaml: " + "; ".join(found),
            "replace with your own (account id, domain, e-mail addresses, CIDRs, hosted zone)",
        )
    return ok(check, "no example account, domain, e-mail, address range or hosted zone id")


# -- every check, in report order ----------------------------------------------------------------

CHECKS: tuple[Check, ...] = (
    Check("placeholders", check_placeholders, needs_settings=False, needs_aws=False),
    Check("credentials", check_credentials, needs_settings=False),
    Check("quota:elastic-ips", check_elastic_ips),
    Check("quota:vpcs", check_vpcs),
    Check("quota:nat-gateways", check_nat_gateways),
    Check("hosted-zone", check_hosted_zone),
    Check("dns-delegation", check_delegation),
    Check("certificate", check_certificate),
    *(Check(f"role:{role}", partial(check_service_linked_role, role)) for role in SERVICE_LINKED_ROLES),
    Check("existing-vpc", check_existing_vpc),
    Check("image-build", check_image_build, needs_aws=False),
    Check("image", check_image),
)
