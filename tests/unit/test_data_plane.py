"""The data plane each stack file produces: network, database, artifacts bucket, secrets, tags."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from botocore.validate import ParamValidator

from preview.offline import ResourceGraph, list_stacks, run_program, stack_backend, stack_mode

STACK_FILES = list_stacks()
# The whole data plane (network included) is a standalone stack's; a team stack's network and a
# platform stack's everything-but-network are checked in tests/unit/test_platform_team_*.py.
STANDALONE_STACKS = [s for s in STACK_FILES if stack_mode(s) == "standalone"]
DATA_STACKS = [s for s in STACK_FILES if stack_mode(s) != "platform"]  # with a bucket and a database

VPC = "aws:ec2/vpc:Vpc"
SUBNET = "aws:ec2/subnet:Subnet"
NAT = "aws:ec2/natGateway:NatGateway"
RDS = "aws:rds/instance:Instance"
BUCKET = "aws:s3/bucket:Bucket"
LIFECYCLE = "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration"
PROVIDER = "pulumi:providers:aws"
COMPONENT_TYPES = {
    "mlflow-stack:network:Network",
    "mlflow-stack:database:Database",
    "mlflow-stack:artifacts:Artifacts",
    "mlflow-stack:identity:Identity",
    "mlflow-stack:secrets:Secrets",
}
DATA_PLANE_TYPES = {
    RDS,
    "aws:rds/subnetGroup:SubnetGroup",
    "aws:rds/parameterGroup:ParameterGroup",
    "aws:ec2/securityGroup:SecurityGroup",
    BUCKET,
    "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock",
    "aws:s3/bucketOwnershipControls:BucketOwnershipControls",
    "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
    "aws:s3/bucketVersioning:BucketVersioning",
    LIFECYCLE,
    "aws:s3/bucketPolicy:BucketPolicy",
    "aws:kms/key:Key",
    "aws:iam/role:Role",
    "aws:iam/rolePolicy:RolePolicy",
    "aws:secretsmanager/secret:Secret",
    "aws:secretsmanager/secretVersion:SecretVersion",
    "random:index/randomPassword:RandomPassword",
    PROVIDER,
}
NEW_VPC_TYPES = {
    VPC,
    SUBNET,
    NAT,
    "aws:ec2/internetGateway:InternetGateway",
    "aws:ec2/vpcEndpoint:VpcEndpoint",
}


def component(graph: ResourceGraph, role: str) -> str:
    """A data-plane component's name: component(graph, "database") -> "mlflow-dev-database"."""
    (resource,) = [r for r in graph.resources if r.type in COMPONENT_TYPES and r.name.endswith(f"-{role}")]
    return resource.name


def test_every_stack_file_is_checked():
    assert {"dev", "staging", "prod", "search-prod"} <= set(STACK_FILES)


@pytest.mark.parametrize("stack", STANDALONE_STACKS)
def test_stack_produces_the_data_plane(stack_graph, stack):
    graph = stack_graph(stack)
    assert graph.types >= DATA_PLANE_TYPES
    # On Kubernetes each service account has its own role (the compute component makes them).
    components = (
        COMPONENT_TYPES
        if stack_backend(stack) == "ecs"
        else COMPONENT_TYPES - {"mlflow-stack:identity:Identity"} | {"mlflow-stack:compute:KubernetesService"}
    )
    assert graph.types >= components
    assert len(graph.of_type(RDS)) == 1
    assert len(graph.of_type(BUCKET, parent=component(graph, "artifacts"))) == 1
    assert len(graph.of_type("aws:secretsmanager/secret:Secret", parent=component(graph, "secrets"))) == 5
    for key in (
        "bucket_name",
        "db_endpoint",
        "db_password_secret_arn",
        "admin_password_secret_arn",
        "flask_secret_key_secret_arn",
        "crypto_kek_passphrase_secret_arn",
        "webhook_encryption_key_secret_arn",
    ):
        assert graph.outputs[key], key


@pytest.mark.parametrize("stack", DATA_STACKS)
def test_children_are_parented_and_named_after_their_component(stack_graph, stack):
    graph = stack_graph(stack)
    components = {r.name for r in graph.resources if r.type in COMPONENT_TYPES}
    children = [r for r in graph.resources if r.parent_name in components]
    assert len(children) >= 30
    for resource in children:
        assert resource.name.startswith(f"{resource.parent_name}-"), resource.name
        parent_type = resource.parent_urn.split("::")[2].split("$")[-1]
        assert f"{parent_type}${resource.type}::{resource.name}" in resource.urn
    # Every resource of these kinds belongs to one of the components (none floats at the top level).
    for type_token in DATA_PLANE_TYPES - {PROVIDER}:
        for resource in graph.of_type(type_token):
            assert resource.parent_name is not None, resource.name


@pytest.mark.parametrize("stack", STACK_FILES)
def test_every_aws_resource_uses_the_tagged_provider(stack_graph, stack):
    graph = stack_graph(stack)
    provider = graph.one(PROVIDER)
    tags = json.loads(provider.inputs["defaultTags"])["tags"]
    settings_owner = graph.config["mlflow-stack:owner"]
    assert tags["owner"] == settings_owner
    assert tags["cost-center"] == graph.config["mlflow-stack:costCenter"]
    assert tags["environment"] == stack.rsplit("-", 1)[-1]
    assert tags["team"] == (stack.rsplit("-", 1)[0] if "-" in stack else "platform")
    assert provider.inputs["region"] == graph.config["aws:region"]
    for resource in graph.resources:
        if resource.type.startswith("aws:"):
            assert resource.provider and resource.provider.startswith(provider.urn + "::"), resource.name


def test_dev_is_cheap(stack_graph):
    graph = stack_graph("dev")
    assert len(graph.of_type(NAT)) == 1
    db = graph.one(RDS)
    assert db.get("multiAz") is False
    assert db.get("instanceClass") == "db.t4g.micro"
    assert db.get("deletionProtection") is False and db.get("skipFinalSnapshot") is True
    bucket = graph.one(BUCKET, parent=component(graph, "artifacts"))
    assert not db.protect and not bucket.protect
    assert bucket.get("forceDestroy") is True
    private = [s for s in graph.of_type(SUBNET) if s.get("tags.tier") == "private"]
    # Two AZs of subnets (RDS needs them for a subnet group) but one NAT: both private route tables use it.
    assert len({s.get("availabilityZone") for s in private}) == 2
    tables = graph.of_type("aws:ec2/routeTable:RouteTable", parent=component(graph, "network"))
    routes = [r.get("routes.0.natGatewayId") for r in tables]
    assert len({route for route in routes if route}) == 1
    assert "aws:ec2/flowLog:FlowLog" not in graph.types


def test_prod_is_protected(stack_graph):
    graph = stack_graph("prod")
    db = graph.one(RDS)
    assert db.get("multiAz") is True
    assert db.get("deletionProtection") is True
    assert db.protect is True
    assert db.get("skipFinalSnapshot") is False
    # A suffix per instance (a RandomId), so a second stack's delete never hits DBSnapshotAlreadyExists.
    assert re.fullmatch(r"mlflow-prod-db-final-[0-9a-f]{8}", db.get("finalSnapshotIdentifier"))
    suffix = graph.one("random:index/randomId:RandomId", parent=db.parent_name)
    assert suffix.urn in db.property_dependencies["finalSnapshotIdentifier"]
    assert db.get("backupRetentionPeriod") >= 7
    assert db.get("applyImmediately") is False
    bucket = graph.one(BUCKET, parent=component(graph, "artifacts"))
    assert bucket.protect is True and bucket.get("forceDestroy") is False
    # One NAT per AZ (azCount: 3 in the stack file), each private route table through its own.
    assert len(graph.of_type(NAT)) == 3
    tables = graph.of_type("aws:ec2/routeTable:RouteTable", parent=component(graph, "network"))
    routes = [r.get("routes.0.natGatewayId") for r in tables]
    assert len({route for route in routes if route}) == 3
    assert graph.one("aws:ec2/flowLog:FlowLog").get("trafficType") == "ALL"
    for role in graph.of_type("aws:iam/role:Role"):
        assert (
            role.get("permissionsBoundary") == "arn:aws:iam::123456789012:policy/platform-workload-boundary"
        )


def test_per_team_stack_uses_the_existing_vpc(stack_graph):
    graph = stack_graph("search-prod")
    assert not NEW_VPC_TYPES & graph.types
    subnet_group = graph.one("aws:rds/subnetGroup:SubnetGroup")
    assert subnet_group.get("subnetIds") == ["subnet-01a2b3c4d5e6f7081", "subnet-02b3c4d5e6f708192"]
    assert graph.outputs["vpc_id"] == "vpc-0a1b2c3d4e5f67890"
    assert graph.one(RDS).get("identifier") == "mlflow-search-prod-db"
    assert graph.outputs["bucket_name"] == "mlflow-search-prod-artifacts-123456789012"
    # Waived by an explicit override, everything else of prod still applies.
    assert graph.one(RDS).get("multiAz") is False and graph.one(RDS).get("deletionProtection") is True
    assert ":eu-west-1:" in graph.outputs["db_password_secret_arn"]


def test_network_spans_two_zones_with_public_and_private_subnets(stack_graph):
    graph = stack_graph("dev")
    subnets = graph.of_type(SUBNET)
    tiers = {tier: [s for s in subnets if s.get("tags.tier") == tier] for tier in ("public", "private")}
    assert len(tiers["public"]) == len(tiers["private"]) == 2
    assert all(s.get("mapPublicIpOnLaunch") is False for s in tiers["public"])
    assert all(s.get("mapPublicIpOnLaunch") in (None, False) for s in tiers["private"])
    endpoint = graph.one("aws:ec2/vpcEndpoint:VpcEndpoint")
    assert endpoint.get("serviceName") == "com.amazonaws.us-east-1.s3"
    assert endpoint.get("vpcEndpointType") == "Gateway"
    private_tables = [r.id for r in graph.of_type("aws:ec2/routeTable:RouteTable") if "private" in r.name]
    assert sorted(endpoint.get("routeTableIds")) == sorted(private_tables)


def test_database_is_private_encrypted_and_tls_only(stack_graph):
    graph = stack_graph("staging")
    db = graph.one(RDS)
    assert db.get("engine") == "postgres" and db.get("engineVersion") == "17"
    assert db.get("publiclyAccessible") is False
    assert db.get("storageEncrypted") is True and db.get("storageType") == "gp3"
    assert db.get("maxAllocatedStorage") > db.get("allocatedStorage")
    db_key = graph.named("mlflow-staging-database-kms")
    assert db.get("kmsKeyId") == db_key.inputs.get("arn") or db.get("kmsKeyId").endswith(db_key.id)
    assert db.get("performanceInsightsEnabled") is True
    assert db.get("dbName") == "mlflow" and db.get("username") == "mlflow"
    private_subnets = [s.id for s in graph.of_type(SUBNET) if s.get("tags.tier") == "private"]
    assert sorted(graph.one("aws:rds/subnetGroup:SubnetGroup").get("subnetIds")) == sorted(private_subnets)
    params = {
        p["name"]: p["value"] for p in graph.one("aws:rds/parameterGroup:ParameterGroup").get("parameters")
    }
    assert params["rds.force_ssl"] == "1"
    assert params["log_min_duration_statement"] == "500"
    assert graph.one("aws:rds/parameterGroup:ParameterGroup").get("family") == "postgres17"
    security_group = graph.one("aws:ec2/securityGroup:SecurityGroup", parent=component(graph, "database"))
    assert db.get("vpcSecurityGroupIds") == [security_group.id]
    assert not security_group.get("ingress")
    # Whatever reaches the database comes from another security group, never a CIDR.
    rules = [
        rule
        for rule in graph.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
        if rule.get("securityGroupId") == security_group.id
    ]
    for rule in rules:
        assert rule.get("referencedSecurityGroupId") and not rule.get("cidrIpv4") and not rule.get("cidrIpv6")
        assert (rule.get("fromPort"), rule.get("toPort")) == (5432, 5432)


def test_database_ingress_only_from_a_security_group(tmp_path: Path):
    program = tmp_path / "program.py"
    program.write_text(
        "from infra.platform import build_platform\n"
        "from infra.settings import load_settings\n"
        "platform = build_platform(load_settings())\n"
        "platform.database.allow_from('server', 'sg-0123456789abcdef0')\n"
    )
    graph = run_program("dev", program=program)
    rule = graph.named("mlflow-dev-database-ingress-server")
    assert rule.parent_name == "mlflow-dev-database"
    db_sg = graph.one("aws:ec2/securityGroup:SecurityGroup", parent="mlflow-dev-database")
    assert rule.get("securityGroupId") == db_sg.id
    assert rule.get("referencedSecurityGroupId") == "sg-0123456789abcdef0"
    assert (rule.get("fromPort"), rule.get("toPort"), rule.get("ipProtocol")) == (5432, 5432, "tcp")
    assert rule.get("cidrIpv4") is None and rule.get("cidrIpv6") is None


def _rules(graph: ResourceGraph) -> dict[str, dict[str, Any]]:
    return {
        rule["id"]: rule for rule in graph.one(LIFECYCLE, parent=component(graph, "artifacts")).get("rules")
    }


def test_lifecycle_rules_and_day_counts(stack_graph):
    rules = _rules(stack_graph("dev"))
    tiering = rules["artifacts-tiering"]
    assert tiering["filter"]["prefix"] == "mlflow-artifacts/"
    assert [(t["storageClass"], t["days"]) for t in tiering["transitions"]] == [
        ("STANDARD_IA", 90),
        ("GLACIER_IR", 365),
    ]
    assert rules["tmp-expiry"]["filter"]["prefix"] == "tmp/"
    assert rules["tmp-expiry"]["expiration"]["days"] == 7
    assert (
        rules["abort-incomplete-multipart-uploads"]["abortIncompleteMultipartUpload"]["daysAfterInitiation"]
        == 7
    )
    assert rules["noncurrent-version-expiry"]["noncurrentVersionExpiration"]["noncurrentDays"] == 7
    assert all(rule["status"] == "Enabled" for rule in rules.values())
    # The stack file's own noncurrent age is honoured.
    assert (
        _rules(stack_graph("prod"))["noncurrent-version-expiry"]["noncurrentVersionExpiration"][
            "noncurrentDays"
        ]
        == 90
    )


def test_every_lifecycle_age_is_configurable_per_stack():
    ages = {
        "prefix": "models",
        "iaAfterDays": 45,
        "archiveAfterDays": 200,
        "tmpExpireDays": 2,
        "abortMultipartDays": 3,
        "noncurrentExpireDays": 11,
    }
    graph = run_program("dev", config_overrides={"artifacts": ages})
    rules = _rules(graph)
    tiering = rules["artifacts-tiering"]
    assert tiering["filter"]["prefix"] == "models/"
    assert [t["days"] for t in tiering["transitions"]] == [45, 200]
    assert rules["tmp-expiry"]["expiration"]["days"] == 2
    assert (
        rules["abort-incomplete-multipart-uploads"]["abortIncompleteMultipartUpload"]["daysAfterInitiation"]
        == 3
    )
    assert rules["noncurrent-version-expiry"]["noncurrentVersionExpiration"]["noncurrentDays"] == 11
    assert graph.outputs["artifacts_destination"].endswith("/models")


def test_bucket_is_locked_down(stack_graph):
    graph = stack_graph("prod")
    artifacts = component(graph, "artifacts")
    public_access = graph.one("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock", parent=artifacts)
    for flag in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets"):
        assert public_access.get(flag) is True, flag
    ownership = graph.one("aws:s3/bucketOwnershipControls:BucketOwnershipControls", parent=artifacts)
    assert ownership.get("rule.objectOwnership") == "BucketOwnerEnforced"
    encryption = graph.one(
        "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
        parent=artifacts,
    )
    rule = encryption.get("rules.0")
    assert rule["applyServerSideEncryptionByDefault"]["sseAlgorithm"] == "aws:kms"
    assert rule["bucketKeyEnabled"] is True
    artifacts_key = graph.named("mlflow-prod-artifacts-kms")
    assert rule["applyServerSideEncryptionByDefault"]["kmsMasterKeyId"].endswith(artifacts_key.id)
    versioning = graph.one("aws:s3/bucketVersioning:BucketVersioning", parent=artifacts)
    assert versioning.get("versioningConfiguration.status") == "Enabled"
    policy = json.loads(graph.one("aws:s3/bucketPolicy:BucketPolicy", parent=artifacts).get("policy"))
    (statement,) = policy["Statement"]
    assert statement["Effect"] == "Deny"
    assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    bucket_arn = f"arn:aws:s3:::{graph.outputs['bucket_name']}"
    assert statement["Resource"] == [bucket_arn, f"{bucket_arn}/*"]


# --- enum values checked against botocore's own service models ----------------------------------

S3 = botocore.session.get_session().get_service_model("s3")
EC2 = botocore.session.get_session().get_service_model("ec2")


def _enum(model: Any, shape: str) -> list[str]:
    values = model.shape_for(shape).enum
    assert values, f"{shape} has no enum in botocore's model"
    return values


@pytest.mark.parametrize("stack", STACK_FILES)
def test_enum_values_are_valid_for_aws(stack_graph, stack):
    """Every bucket, subnet endpoint, EIP and flow log in the stack, not only the data plane's."""
    graph = stack_graph(stack)
    for lifecycle in graph.of_type(LIFECYCLE):
        for rule in lifecycle.get("rules"):
            assert rule["status"] in _enum(S3, "ExpirationStatus")
            for transition in rule.get("transitions", []):
                assert transition["storageClass"] in _enum(S3, "TransitionStorageClass")
    for ownership in graph.of_type("aws:s3/bucketOwnershipControls:BucketOwnershipControls"):
        assert ownership.get("rule.objectOwnership") in _enum(S3, "ObjectOwnership")
    sse = "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
    for encryption in graph.of_type(sse):
        for rule in encryption.get("rules"):
            assert rule["applyServerSideEncryptionByDefault"]["sseAlgorithm"] in _enum(
                S3, "ServerSideEncryption"
            )
    for versioning in graph.of_type("aws:s3/bucketVersioning:BucketVersioning"):
        assert versioning.get("versioningConfiguration.status") in _enum(S3, "BucketVersioningStatus")
    for endpoint in graph.of_type("aws:ec2/vpcEndpoint:VpcEndpoint"):
        assert endpoint.get("vpcEndpointType") in _enum(EC2, "VpcEndpointType")
    for eip in graph.of_type("aws:ec2/eip:Eip"):
        assert eip.get("domain") in _enum(EC2, "DomainType")
    for flow_log in graph.of_type("aws:ec2/flowLog:FlowLog"):
        assert flow_log.get("trafficType") in _enum(EC2, "TrafficType")
        assert flow_log.get("logDestinationType") in _enum(EC2, "LogDestinationType")
    assert graph.of_type(LIFECYCLE) and graph.of_type(sse)


def _lifecycle_request(graph: ResourceGraph) -> dict[str, Any]:
    """The PutBucketLifecycleConfiguration request the provider sends for these rules."""
    rules = []
    for rule in graph.one(LIFECYCLE, parent=component(graph, "artifacts")).get("rules"):
        api_rule: dict[str, Any] = {"ID": rule["id"], "Status": rule["status"]}
        api_rule["Filter"] = {"Prefix": rule["filter"]["prefix"]} if rule["filter"].get("prefix") else {}
        if "transitions" in rule:
            api_rule["Transitions"] = [
                {"Days": t["days"], "StorageClass": t["storageClass"]} for t in rule["transitions"]
            ]
        if "expiration" in rule:
            expiration = rule["expiration"]
            api_rule["Expiration"] = (
                {"Days": expiration["days"]}
                if "days" in expiration
                else {"ExpiredObjectDeleteMarker": expiration["expiredObjectDeleteMarker"]}
            )
        if "abortIncompleteMultipartUpload" in rule:
            days = rule["abortIncompleteMultipartUpload"]["daysAfterInitiation"]
            api_rule["AbortIncompleteMultipartUpload"] = {"DaysAfterInitiation": days}
        if "noncurrentVersionExpiration" in rule:
            days = rule["noncurrentVersionExpiration"]["noncurrentDays"]
            api_rule["NoncurrentVersionExpiration"] = {"NoncurrentDays": days}
        rules.append(api_rule)
    return {"Bucket": graph.outputs["bucket_name"], "LifecycleConfiguration": {"Rules": rules}}


@pytest.mark.parametrize("stack", DATA_STACKS)
def test_lifecycle_configuration_passes_botocore_validation(stack_graph, stack):
    request = _lifecycle_request(stack_graph(stack))
    operation = S3.operation_model("PutBucketLifecycleConfiguration")
    report = ParamValidator().validate(request, operation.input_shape)
    assert not report.has_errors(), report.generate_report()
    assert len(request["LifecycleConfiguration"]["Rules"]) == 4


def test_longest_team_name_fits_every_aws_name(tmp_path: Path):
    """The settings' name check is enough: with the longest team name allowed, every physical name fits."""
    stack = "abcdefghijklm-staging"  # 13 characters: the most settings accept for staging
    (tmp_path / f"Pulumi.{stack}.yaml").write_text(
        "config:\n"
        "  aws:region: ap-southeast-2\n"
        "  mlflow-stack:owner: team@example.com\n"
        "  mlflow-stack:costCenter: CC-1\n"
        "  mlflow-stack:domain:\n"
        "    name: mlflow.team.example.com\n"
        "    hostedZoneId: Z08234151D8Y5QF9XJ3TL\n"
    )
    graph = run_program(stack, stack_dir=tmp_path)
    assert graph.error is None, graph.error
    limits = {  # type -> (input, max length, pattern)
        BUCKET: ("bucket", 63, r"[a-z0-9][a-z0-9.-]*[a-z0-9]"),
        RDS: ("identifier", 63, r"[a-z][a-z0-9]*(-[a-z0-9]+)*"),
        "aws:iam/role:Role": ("name", 64, r"[\w+=,.@-]+"),
        "aws:lb/loadBalancer:LoadBalancer": ("name", 32, r"[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?"),
        "aws:lb/targetGroup:TargetGroup": ("name", 32, r"[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?"),
        "aws:rds/subnetGroup:SubnetGroup": ("name", 255, r"[a-z0-9 ._-]+"),
        "aws:rds/parameterGroup:ParameterGroup": ("name", 255, r"[a-z][a-z0-9]*(-[a-z0-9]+)*"),
    }
    checked = 0
    for type_token, (key, limit, pattern) in limits.items():
        for resource in graph.of_type(type_token):
            value = resource.get(key)
            if value is None:
                continue
            assert len(value) <= limit and re.fullmatch(pattern, value), (type_token, value)
            checked += 1
    assert checked >= 7
