"""`mlflow-stack doctor` against the AWS API emulator (a moto server process on 127.0.0.1).

Each test resets the emulator, builds the account it needs with boto3 (VPC, subnets, NAT gateway,
hosted zones, certificates, service-linked roles, ECR images), writes its own stack file into a
temporary stacks dir and runs the doctor — in-process with a fake DNS resolver, or as the real
command line with AWS_ENDPOINT_URL pointing at the emulator. The emulator's account id is set to a
non-example one, so only what the stack file says can trip the placeholder check.
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from deploy.doctor import CheckResult, CommandResult, DoctorEnvironment, exit_code, run_doctor
from local import s3_emulator

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
ACCOUNT = "307946651234"  # conftest.EMULATOR_ACCOUNT
REGION = "us-east-1"
ZONE = "acme-analytics.io"
DOMAIN = f"mlflow.{ZONE}"
ARM64_DIGEST = "sha256:" + "a" * 64
AMD64_DIGEST = "sha256:" + "b" * 64


@pytest.fixture
def aws(aws_environment: Callable[..., Any]) -> Callable[..., Any]:
    """A boto3 client factory on a freshly reset emulator (the stack's region by default)."""

    def client(service: str, region: str = REGION) -> Any:
        return aws_environment(service, region)

    return client


# -- building the account ------------------------------------------------------------------------


def create_zone(aws: Callable[..., Any], name: str, **kwargs: Any) -> dict[str, Any]:
    """A hosted zone whose id looks like Route 53's (Z...), which the settings model insists on;
    the emulator's ids start with any letter or digit, so draw until one starts with Z."""
    route53 = aws("route53")
    for attempt in range(1000):
        zone = route53.create_hosted_zone(Name=name, CallerReference=f"doctor-{name}-{attempt}", **kwargs)
        zone_id = zone["HostedZone"]["Id"].split("/")[-1]
        if zone_id.startswith("Z"):
            return {**zone, "ZoneId": zone_id}
        route53.delete_hosted_zone(Id=zone_id)
    raise AssertionError("the emulator never produced a Z... hosted zone id")


def public_zone(aws: Callable[..., Any], name: str = ZONE) -> tuple[str, list[str]]:
    zone = create_zone(aws, name)
    return zone["ZoneId"], zone["DelegationSet"]["NameServers"]


def imported_certificate(aws: Callable[..., Any], common_name: str) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=90))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(common_name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return aws("acm").import_certificate(
        Certificate=certificate.public_bytes(serialization.Encoding.PEM),
        PrivateKey=key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    )["CertificateArn"]


def service_linked_roles(aws: Callable[..., Any], roles: dict[str, str]) -> None:
    iam = aws("iam")
    trust = json.dumps({"Version": "2012-10-17", "Statement": []})
    for name, principal in roles.items():
        iam.create_role(RoleName=name, Path=f"/aws-service-role/{principal}/", AssumeRolePolicyDocument=trust)


ALL_ROLES = {
    "AWSServiceRoleForECS": "ecs.amazonaws.com",
    "AWSServiceRoleForElasticLoadBalancing": "elasticloadbalancing.amazonaws.com",
    "AWSServiceRoleForRDS": "rds.amazonaws.com",
    "AWSServiceRoleForApplicationAutoScaling_ECSService": "ecs.application-autoscaling.amazonaws.com",
}


def ecr_image(aws: Callable[..., Any], repository: str, tag: str, architectures: list[str]) -> str:
    ecr = aws("ecr")
    if repository not in {r["repositoryName"] for r in ecr.describe_repositories()["repositories"]}:
        ecr.create_repository(repositoryName=repository)
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": ARM64_DIGEST if arch == "arm64" else AMD64_DIGEST,
                "size": 1234,
                "platform": {"os": "linux", "architecture": arch},
            }
            for arch in architectures
        ],
    }
    ecr.put_image(repositoryName=repository, imageManifest=json.dumps(index), imageTag=tag)
    return f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/{repository}:{tag}"


def existing_vpc(aws: Callable[..., Any], *, private_nat_route: bool = True) -> dict[str, Any]:
    """A VPC with public subnets (to an internet gateway) and private ones (to a NAT) in 2 AZs."""
    ec2 = aws("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.60.0.0/16")["Vpc"]["VpcId"]
    subnet = {
        (role, zone): ec2.create_subnet(VpcId=vpc, CidrBlock=cidr, AvailabilityZone=f"{REGION}{zone}")[
            "Subnet"
        ]["SubnetId"]
        for (role, zone), cidr in {
            ("public", "a"): "10.60.0.0/24",
            ("public", "b"): "10.60.1.0/24",
            ("private", "a"): "10.60.10.0/24",
            ("private", "b"): "10.60.11.0/24",
        }.items()
    }
    igw = ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
    ec2.attach_internet_gateway(InternetGatewayId=igw, VpcId=vpc)
    public_table = ec2.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"]
    ec2.create_route(RouteTableId=public_table, DestinationCidrBlock="0.0.0.0/0", GatewayId=igw)
    for zone in "ab":
        ec2.associate_route_table(RouteTableId=public_table, SubnetId=subnet[("public", zone)])
    allocation = ec2.allocate_address(Domain="vpc")["AllocationId"]
    nat = ec2.create_nat_gateway(SubnetId=subnet[("public", "a")], AllocationId=allocation)["NatGateway"]
    private_table = ec2.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"]
    if private_nat_route:
        ec2.create_route(
            RouteTableId=private_table, DestinationCidrBlock="0.0.0.0/0", NatGatewayId=nat["NatGatewayId"]
        )
    for zone in "ab":
        ec2.associate_route_table(RouteTableId=private_table, SubnetId=subnet[("private", zone)])
    return {
        "existingVpcId": vpc,
        "existingPublicSubnetIds": [subnet[("public", "a")], subnet[("public", "b")]],
        "existingPrivateSubnetIds": [subnet[("private", "a")], subnet[("private", "b")]],
    }


# -- running the doctor --------------------------------------------------------------------------


def write_stack(directory: Path, stack: str, config: dict[str, Any], region: str = REGION) -> Path:
    base = {
        "aws:region": region,
        "mlflow-stack:owner": "ml-platform@acme-analytics.io",
        "mlflow-stack:costCenter": "CC-7",
    }
    document = {"config": {**base, **{f"mlflow-stack:{key}": value for key, value in config.items()}}}
    (directory / f"Pulumi.{stack}.yaml").write_text(yaml.safe_dump(document))
    return directory


def environment(
    aws: Callable[..., Any], name_servers: list[str], *, buildx_ls: str = "default  linux/amd64, linux/arm64"
) -> DoctorEnvironment:
    return DoctorEnvironment(
        client=lambda service, region: aws(service, region),
        resolve_name_servers=lambda zone: name_servers,
        run_command=lambda argv: CommandResult(
            0, buildx_ls if argv[-1] == "ls" else "github.com/docker/buildx v0.17"
        ),
        fetch_url=lambda url: b"",
        default_region=REGION,
    )


def by_check(results: list[CheckResult]) -> dict[str, CheckResult]:
    return {result.check: result for result in results}


def ready_stack(aws: Callable[..., Any], stacks: Path, **overrides: Any) -> tuple[dict[str, Any], list[str]]:
    """An account and stack file on which every check passes; returns the config and the zone's NS."""
    zone_id, name_servers = public_zone(aws)
    certificate = imported_certificate(aws, f"*.{ZONE}")
    service_linked_roles(aws, ALL_ROLES)
    image = ecr_image(aws, "mlflow-server", "3.17.2", ["amd64", "arm64"])
    config = {
        "domain": {"name": DOMAIN, "hostedZoneId": zone_id, "certificateArn": certificate},
        "server": {"image": image},
        "network": existing_vpc(aws),
        **overrides,
    }
    write_stack(stacks, "acme-staging", config)
    return config, name_servers


def test_a_ready_account_passes_every_check(aws: Callable[..., Any], tmp_path: Path) -> None:
    _, name_servers = ready_stack(aws, tmp_path)

    results = by_check(run_doctor("acme-staging", environment(aws, name_servers), stack_dir=tmp_path))

    assert {name: r.detail for name, r in results.items() if r.status not in ("ok", "skip")} == {}
    assert ACCOUNT in results["credentials"].detail
    assert "in use" in results["quota:vpcs"].detail or "creates none" in results["quota:vpcs"].detail
    assert (
        results["image"].detail.startswith(f"{ACCOUNT}.dkr.ecr") and "linux/arm64" in results["image"].detail
    )
    assert "covers mlflow.acme-analytics.io" in results["certificate"].detail
    assert results["image-build"].status == "skip"  # a prebuilt image: nothing to build
    assert exit_code(list(results.values())) == 0


def test_a_broken_account_fails_each_check_with_its_fix(aws: Callable[..., Any], tmp_path: Path) -> None:
    ready_stack(aws, tmp_path)
    # Now break it, one thing per check: a private zone of the right name, a certificate still
    # pending validation, an amd64-only image, no NAT route for the private subnets, and a role
    # squatting a service-linked role's name.
    vpc = aws("ec2").create_vpc(CidrBlock="10.99.0.0/16")["Vpc"]["VpcId"]
    private_zone = create_zone(
        aws, ZONE, HostedZoneConfig={"PrivateZone": True}, VPC={"VPCRegion": REGION, "VPCId": vpc}
    )["ZoneId"]
    pending = aws("acm").request_certificate(DomainName=DOMAIN, ValidationMethod="DNS")["CertificateArn"]
    amd64_only = ecr_image(aws, "mlflow-server", "amd64-only", ["amd64"])
    iam = aws("iam")
    iam.delete_role(RoleName="AWSServiceRoleForRDS")
    iam.create_role(RoleName="AWSServiceRoleForRDS", Path="/", AssumeRolePolicyDocument="{}")
    iam.delete_role(RoleName="AWSServiceRoleForECS")
    write_stack(
        tmp_path,
        "acme-staging",
        {
            "domain": {"name": DOMAIN, "hostedZoneId": private_zone, "certificateArn": pending},
            "server": {"image": amd64_only},
            "network": existing_vpc(aws, private_nat_route=False),
        },
    )

    results = by_check(run_doctor("acme-staging", environment(aws, []), stack_dir=tmp_path))

    assert results["hosted-zone"].status == "fail" and "private" in results["hosted-zone"].detail
    assert results["dns-delegation"].status == "skip"
    assert results["certificate"].status == "fail" and "PENDING_VALIDATION" in results["certificate"].detail
    assert results["image"].status == "fail" and "no linux/arm64 manifest" in results["image"].detail
    assert "--platform linux/arm64" in results["image"].fix
    assert results["existing-vpc"].status == "fail" and "no 0.0.0.0/0 route" in results["existing-vpc"].detail
    assert (
        results["role:AWSServiceRoleForRDS"].status == "fail"
        and "path /" in results["role:AWSServiceRoleForRDS"].detail
    )
    assert results["role:AWSServiceRoleForECS"].status == "warn"
    assert "iam:CreateServiceLinkedRole" in results["role:AWSServiceRoleForECS"].detail
    assert results["role:AWSServiceRoleForElasticLoadBalancing"].status == "ok"
    assert all(r.fix for r in results.values() if r.status in ("warn", "fail"))
    assert exit_code(list(results.values())) == 1


def test_delegation_to_other_name_servers_fails(aws: Callable[..., Any], tmp_path: Path) -> None:
    _, name_servers = ready_stack(aws, tmp_path)
    old = ["ns-1.registrar-dns.net", "ns-2.registrar-dns.net"]

    results = by_check(run_doctor("acme-staging", environment(aws, old), stack_dir=tmp_path))

    delegation = results["dns-delegation"]
    assert delegation.status == "fail"
    assert "ns-1.registrar-dns.net" in delegation.detail
    assert all(server.rstrip(".") in delegation.fix for server in name_servers)


def test_zone_that_does_not_hold_the_domain_fails(aws: Callable[..., Any], tmp_path: Path) -> None:
    config, name_servers = ready_stack(aws, tmp_path)
    other_zone, _ = public_zone(aws, "acme-data.io")
    write_stack(
        tmp_path, "acme-staging", {**config, "domain": {**config["domain"], "hostedZoneId": other_zone}}
    )

    results = by_check(run_doctor("acme-staging", environment(aws, name_servers), stack_dir=tmp_path))

    assert results["hosted-zone"].status == "fail"
    assert "not inside hosted zone" in results["hosted-zone"].detail


def test_certificate_for_another_name_fails(aws: Callable[..., Any], tmp_path: Path) -> None:
    config, name_servers = ready_stack(aws, tmp_path)
    other = imported_certificate(aws, "api.acme-data.io")
    write_stack(tmp_path, "acme-staging", {**config, "domain": {**config["domain"], "certificateArn": other}})

    results = by_check(run_doctor("acme-staging", environment(aws, name_servers), stack_dir=tmp_path))

    assert results["certificate"].status == "fail"
    assert "covers api.acme-data.io, not mlflow.acme-analytics.io" in results["certificate"].detail


def test_a_new_vpc_stack_counts_quotas_and_fails_when_exhausted(
    aws: Callable[..., Any], tmp_path: Path
) -> None:
    zone_id, name_servers = public_zone(aws)
    service_linked_roles(aws, ALL_ROLES)
    config = {
        "domain": {"name": DOMAIN, "hostedZoneId": zone_id},
        "network": {"natGateways": "per_az", "azCount": 2},
    }
    write_stack(tmp_path, "acme-staging", config)
    env = environment(aws, name_servers)

    before = by_check(run_doctor("acme-staging", env, stack_dir=tmp_path))
    assert before["quota:vpcs"].status == "ok", before["quota:vpcs"]
    assert before["quota:nat-gateways"].status == "ok", before["quota:nat-gateways"]
    assert "us-east-1a 0, us-east-1b 0" in before["quota:nat-gateways"].detail

    # The emulator's defaults: 5 VPCs per region, 5 NAT gateways per AZ. Use them all up.
    ec2 = aws("ec2")
    while len(ec2.describe_vpcs()["Vpcs"]) < 5:
        ec2.create_vpc(CidrBlock="10.70.0.0/16")
    subnet = ec2.create_subnet(
        VpcId=ec2.describe_vpcs()["Vpcs"][-1]["VpcId"],
        CidrBlock="10.70.0.0/24",
        AvailabilityZone="us-east-1b",
    )
    for _ in range(5):
        allocation = ec2.allocate_address(Domain="vpc")["AllocationId"]
        ec2.create_nat_gateway(SubnetId=subnet["Subnet"]["SubnetId"], AllocationId=allocation)

    after = by_check(run_doctor("acme-staging", env, stack_dir=tmp_path))
    assert after["quota:vpcs"].status == "fail" and "none left" in after["quota:vpcs"].detail
    assert "--quota-code L-F678F1CE" in after["quota:vpcs"].fix
    assert (
        after["quota:nat-gateways"].status == "fail"
        and "none left in us-east-1b" in after["quota:nat-gateways"].detail
    )
    assert "--quota-code L-FE5A380F" in after["quota:nat-gateways"].fix


# -- the real command line -----------------------------------------------------------------------


def run_cli(emulator: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        **s3_emulator.DUMMY_CREDENTIALS,
        "AWS_ENDPOINT_URL": emulator,
        # A PATH without docker: the real command runner must report it, not crash.
        "PATH": str(Path(sys.executable).parent),
    }
    return subprocess.run(
        [sys.executable, "-m", "cli", "doctor", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO_ROOT,
        timeout=120,
    )


def test_command_line_json_and_exit_code(aws: Callable[..., Any], emulator: str, tmp_path: Path) -> None:
    zone_id, _ = public_zone(aws)
    write_stack(tmp_path, "dev", {"domain": {"name": DOMAIN, "hostedZoneId": zone_id}})

    done = run_cli(emulator, "--stack", "dev", "--stack-dir", str(tmp_path), "--json")

    assert done.returncode == 1, done.stderr
    results = {row["check"]: row for row in json.loads(done.stdout)}
    assert set(next(iter(results.values()))) == {"check", "status", "detail", "fix"}
    assert results["credentials"]["status"] == "ok" and ACCOUNT in results["credentials"]["detail"]
    assert results["placeholders"]["status"] == "ok"
    # No docker on this machine and the stack builds its image: a clean failure with the fix.
    assert results["image-build"]["status"] == "fail"
    assert "tonistiigi/binfmt --install arm64" in results["image-build"]["fix"]


@pytest.mark.parametrize(
    "stack",
    sorted(p.name[len("Pulumi.") : -len(".yaml")] for p in (REPO_ROOT / "stacks").glob("Pulumi.*.yaml")),
)
def test_shipped_stack_files_are_flagged_as_examples(
    aws: Callable[..., Any], emulator: str, stack: str
) -> None:
    done = run_cli(emulator, "--stack", stack)

    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    rows = {
        line.split()[1]: line
        for line in done.stdout.splitlines()
        if line.split()[:1] != [] and line.split()[0] in ("ok", "warn", "fail", "skip")
    }
    assert rows["placeholders"].startswith("fail")
    assert "replace with your own" in rows["placeholders"]
    assert rows["settings"].startswith("ok")
    assert len(rows) == 16
