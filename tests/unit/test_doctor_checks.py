"""Doctor checks the AWS API emulator cannot play, against botocore's Stubber: refused calls name
their IAM action, the Elastic IP quota (and its default-quota fallback), single-platform ECR images
and manifest lists without arm64, an existing VPC's main route table, the credentials check."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from deploy.doctor import Check, CommandResult, DoctorContext, DoctorEnvironment, run_check
from deploy.doctor_checks import check_credentials
from deploy.doctor_checks_dns import check_certificate
from deploy.doctor_checks_image import check_image
from deploy.doctor_checks_network import check_existing_vpc
from deploy.doctor_checks_quotas import check_elastic_ips, check_vpcs
from infra.settings import build_settings

ACCOUNT = "307946651234"
REGION = "eu-west-1"
DOMAIN = {"name": "mlflow.acme-analytics.io", "hostedZoneId": "Z04517273RN5WZ0CTKS7E"}


class StubbedAws:
    """One stubbed boto3 client per service; every queued response must be consumed."""

    def __init__(self) -> None:
        self.clients: dict[str, Any] = {}
        self.stubbers: dict[str, Stubber] = {}

    def __call__(self, service: str, region: str = REGION) -> Any:
        if service not in self.clients:
            client = boto3.client(
                service,
                region_name=region,
                aws_access_key_id="unit",
                aws_secret_access_key="unit",  # noqa: S106 - stubbed, never sent
            )
            self.clients[service] = client
            self.stubbers[service] = Stubber(client)
            self.stubbers[service].activate()
        return self.clients[service]

    def stub(self, service: str) -> Stubber:
        self(service)
        return self.stubbers[service]

    def verify(self) -> None:
        for stubber in self.stubbers.values():
            stubber.assert_no_pending_responses()


@pytest.fixture
def aws() -> Iterator[StubbedAws]:
    stubbed = StubbedAws()
    yield stubbed
    stubbed.verify()


def context(aws: StubbedAws, stack: str = "acme-staging", **config: Any) -> DoctorContext:
    raw = {"owner": "ml@acme-analytics.io", "costCenter": "CC-7", "domain": DOMAIN, **config}
    env = DoctorEnvironment(
        client=aws,
        resolve_name_servers=lambda zone: [],
        run_command=lambda argv: CommandResult(127, "not used"),
        fetch_url=lambda url: b"",
        default_region=REGION,
    )
    ctx = DoctorContext(stack, REGION, {}, build_settings(stack, REGION, raw), env)
    ctx.account_id = ACCOUNT
    return ctx


def checked(function: Any, ctx: DoctorContext) -> Any:
    return run_check(Check("under-test", function), ctx)


# -- refused calls -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("function", "service", "operation", "code", "action"),
    [
        (
            check_vpcs,
            "service-quotas",
            "get_service_quota",
            "AccessDeniedException",
            "servicequotas:GetServiceQuota",
        ),
        (check_credentials, "sts", "get_caller_identity", "AccessDenied", "sts:GetCallerIdentity"),
    ],
)
def test_a_refused_call_fails_naming_the_iam_action(
    aws: StubbedAws, function: Any, service: str, operation: str, code: str, action: str
) -> None:
    aws.stub(service).add_client_error(operation, service_error_code=code, http_status_code=403)

    result = checked(function, context(aws))

    assert result.status == "fail"
    assert result.detail == f"AWS refused {action}"
    assert action in result.fix


def test_ec2_unauthorized_operation_names_describe_vpcs(aws: StubbedAws) -> None:
    vpc = {
        "existingVpcId": "vpc-0123456789abcdef0",
        "existingPrivateSubnetIds": ["subnet-0aaaaaaaa", "subnet-0bbbbbbbb"],
    }
    aws.stub("ec2").add_client_error(
        "describe_vpcs", service_error_code="UnauthorizedOperation", http_status_code=403
    )

    result = checked(check_existing_vpc, context(aws, network=vpc, loadBalancer={"internetFacing": False}))

    assert (result.status, result.detail) == ("fail", "AWS refused ec2:DescribeVpcs")


def test_certificate_refused_names_acm_describe_certificate(aws: StubbedAws) -> None:
    arn = f"arn:aws:acm:{REGION}:{ACCOUNT}:certificate/5f1c2a9e-7b3d-4c8e-9a61-2e4f8d0b7c35"
    aws.stub("acm").add_client_error("describe_certificate", service_error_code="AccessDeniedException")

    result = checked(check_certificate, context(aws, domain={**DOMAIN, "certificateArn": arn}))

    assert (result.status, result.detail) == ("fail", "AWS refused acm:DescribeCertificate")


# -- credentials ---------------------------------------------------------------------------------


def _identity(aws: StubbedAws) -> None:
    arn = f"arn:aws:sts::{ACCOUNT}:assumed-role/deployer/me"
    aws.stub("sts").add_response(
        "get_caller_identity", {"Account": ACCOUNT, "Arn": arn, "UserId": "AROAX:me"}
    )


def test_credentials_report_the_account_and_warn_on_another_default_region(aws: StubbedAws) -> None:
    _identity(aws)
    ctx = context(aws)
    ctx.account_id = None
    ctx.env.default_region = "us-east-1"

    result = checked(check_credentials, ctx)

    assert result.status == "warn"
    assert ctx.account_id == ACCOUNT and f"account {ACCOUNT}" in result.detail
    assert result.fix.startswith(f"export AWS_REGION={REGION}")


def test_credentials_ok_in_the_stacks_region(aws: StubbedAws) -> None:
    _identity(aws)

    result = checked(check_credentials, context(aws))

    assert result.status == "ok" and result.detail.endswith(f"region {REGION}")


# -- Elastic IP quota ----------------------------------------------------------------------------


def _quota(value: float) -> dict[str, Any]:
    return {"Quota": {"ServiceCode": "ec2", "QuotaCode": "L-0263D0A3", "Value": value}}


def _addresses(count: int) -> dict[str, Any]:
    return {"Addresses": [{"AllocationId": f"eipalloc-{i:08x}", "Domain": "vpc"} for i in range(count)]}


def test_elastic_ips_exhausted_fail_with_the_increase_command(aws: StubbedAws) -> None:
    # Never changed in this account: GetServiceQuota has no value, the AWS default applies.
    aws.stub("service-quotas").add_client_error(
        "get_service_quota", service_error_code="NoSuchResourceException"
    )
    aws.stub("service-quotas").add_response(
        "get_aws_default_service_quota", _quota(5), {"ServiceCode": "ec2", "QuotaCode": "L-0263D0A3"}
    )
    aws.stub("ec2").add_response("describe_addresses", _addresses(4))

    result = checked(check_elastic_ips, context(aws, network={"natGateways": "per_az", "azCount": 3}))

    assert result.status == "fail"
    assert "quota 5, 4 allocated, the stack needs 3" in result.detail
    assert "--quota-code L-0263D0A3 --desired-value 7" in result.fix


def test_elastic_ips_with_room_pass(aws: StubbedAws) -> None:
    aws.stub("service-quotas").add_response("get_service_quota", _quota(10))
    aws.stub("ec2").add_response("describe_addresses", _addresses(2))

    result = checked(check_elastic_ips, context(aws))

    assert result.status == "ok" and "quota 10, 2 allocated, the stack needs 1" in result.detail


# -- the prebuilt image --------------------------------------------------------------------------

IMAGE = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/mlflow-server:3.17.2"
CONFIG_DIGEST = "sha256:" + "c" * 64


def _image_answer(manifest: dict[str, Any], media_type: str) -> dict[str, Any]:
    image_id = {"imageTag": "3.17.2", "imageDigest": "sha256:" + "d" * 64}
    return {
        "images": [
            {
                "registryId": ACCOUNT,
                "repositoryName": "mlflow-server",
                "imageId": image_id,
                "imageManifest": json.dumps(manifest),
                "imageManifestMediaType": media_type,
            }
        ],
        "failures": [],
    }


def test_manifest_list_without_arm64_fails(aws: StubbedAws) -> None:
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
        "manifests": [{"digest": "sha256:" + "e" * 64, "platform": {"os": "linux", "architecture": "amd64"}}],
    }
    aws.stub("ecr").add_response(
        "batch_get_image",
        _image_answer(index, index["mediaType"]),
        {
            "registryId": ACCOUNT,
            "repositoryName": "mlflow-server",
            "imageIds": [{"imageTag": "3.17.2"}],
            "acceptedMediaTypes": [
                "application/vnd.docker.distribution.manifest.list.v2+json",
                "application/vnd.oci.image.index.v1+json",
                "application/vnd.docker.distribution.manifest.v2+json",
                "application/vnd.oci.image.manifest.v1+json",
            ],
        },
    )

    result = checked(check_image, context(aws, server={"image": IMAGE}))

    assert result.status == "fail"
    assert "no linux/arm64 manifest (only linux/amd64)" in result.detail


@pytest.mark.parametrize(("architecture", "status"), [("arm64", "ok"), ("amd64", "fail")])
def test_single_platform_image_is_judged_by_its_config(
    aws: StubbedAws, architecture: str, status: str
) -> None:
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": CONFIG_DIGEST,
            "size": 9,
        },
        "layers": [],
    }
    aws.stub("ecr").add_response("batch_get_image", _image_answer(manifest, manifest["mediaType"]))
    url = "https://prod-eu-west-1-starport-layer-bucket.s3.eu-west-1.amazonaws.com/blob"
    aws.stub("ecr").add_response(
        "get_download_url_for_layer",
        {"downloadUrl": url, "layerDigest": CONFIG_DIGEST},
        {"registryId": ACCOUNT, "repositoryName": "mlflow-server", "layerDigest": CONFIG_DIGEST},
    )
    ctx = context(aws, server={"image": IMAGE})
    fetched: list[str] = []
    ctx.env.fetch_url = lambda address: (
        fetched.append(address) or json.dumps({"os": "linux", "architecture": architecture}).encode()
    )

    result = checked(check_image, ctx)

    assert fetched == [url]
    assert result.status == status
    assert f"single-platform linux/{architecture}" in result.detail


def test_image_by_digest_asks_for_the_digest(aws: StubbedAws) -> None:
    digest = "sha256:" + "f" * 64
    aws.stub("ecr").add_client_error("batch_get_image", service_error_code="RepositoryNotFoundException")

    result = checked(
        check_image, context(aws, server={"image": f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/gone@{digest}"})
    )

    assert result.status == "fail" and "repository gone does not exist" in result.detail


def test_image_outside_ecr_is_skipped_with_the_reason(aws: StubbedAws) -> None:
    result = checked(check_image, context(aws, server={"image": "ghcr.io/acme/mlflow:3.17.2"}))

    assert result.status == "skip"
    assert (
        "not in Amazon ECR" in result.detail
        and "imagetools inspect ghcr.io/acme/mlflow:3.17.2" in result.detail
    )


# -- existing VPC: the main route table ----------------------------------------------------------

PRIVATE = ["subnet-0aaaaaaaa", "subnet-0bbbbbbbb"]
VPC = "vpc-0123456789abcdef0"


def _vpc_world(aws: StubbedAws, zones: tuple[str, str], main_route: dict[str, Any]) -> None:
    ec2 = aws.stub("ec2")
    ec2.add_response("describe_vpcs", {"Vpcs": [{"VpcId": VPC}]})
    ec2.add_response(
        "describe_subnets",
        {
            "Subnets": [
                {"SubnetId": s, "VpcId": VPC, "AvailabilityZone": z}
                for s, z in zip(PRIVATE, zones, strict=True)
            ]
        },
    )
    # No subnet is associated explicitly: both use the VPC's main route table.
    ec2.add_response(
        "describe_route_tables",
        {
            "RouteTables": [
                {
                    "RouteTableId": "rtb-0main0000",
                    "VpcId": VPC,
                    "Associations": [{"Main": True}],
                    "Routes": [main_route],
                }
            ]
        },
    )


def test_unassociated_private_subnets_use_the_main_route_table(aws: StubbedAws) -> None:
    _vpc_world(
        aws,
        ("eu-west-1a", "eu-west-1b"),
        {"DestinationCidrBlock": "0.0.0.0/0", "NatGatewayId": "nat-0123456789", "State": "active"},
    )
    network = {"existingVpcId": VPC, "existingPrivateSubnetIds": PRIVATE}

    result = checked(
        check_existing_vpc, context(aws, network=network, loadBalancer={"internetFacing": False})
    )

    assert result.status == "ok" and "eu-west-1a, eu-west-1b" in result.detail


def test_private_subnets_in_one_zone_behind_a_transit_gateway(aws: StubbedAws) -> None:
    _vpc_world(
        aws,
        ("eu-west-1a", "eu-west-1a"),
        {"DestinationCidrBlock": "0.0.0.0/0", "TransitGatewayId": "tgw-0123456789", "State": "active"},
    )
    network = {"existingVpcId": VPC, "existingPrivateSubnetIds": PRIVATE}

    result = checked(
        check_existing_vpc, context(aws, network=network, loadBalancer={"internetFacing": False})
    )

    assert result.status == "fail"
    assert "the private subnets span 1 Availability Zone(s), need 2" in result.detail
    assert "sends 0.0.0.0/0 to tgw-0123456789, not a NAT gateway" in result.detail


def test_certificate_in_another_account_fails_without_asking_acm(aws: StubbedAws) -> None:
    arn = f"arn:aws:acm:{REGION}:999988887777:certificate/5f1c2a9e-7b3d-4c8e-9a61-2e4f8d0b7c35"

    result = checked(check_certificate, context(aws, domain={**DOMAIN, "certificateArn": arn}))

    assert result.status == "fail" and f"the credentials to {ACCOUNT}" in result.detail
