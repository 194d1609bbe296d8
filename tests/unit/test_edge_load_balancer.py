"""The load balancer component under Pulumi mocks: TLS, redirect, health check, exposure, logs, DNS."""

from __future__ import annotations

import json

import pytest
from edge_harness import ELB_ACCOUNT_ARN, Run, run_components

from infra.load_balancer import LoadBalancer, LoadBalancerArgs

LISTENER = "aws:lb/listener:Listener"
INGRESS = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
RECORD = "aws:route53/record:Record"
EXISTING_CERT = "arn:aws:acm:us-east-1:123456789012:certificate/0f8f8f8f-1111-2222-3333-444444444444"
ZONE = "Z0123456789ABCDEFGHIJ"


def _args(**overrides: object) -> LoadBalancerArgs:
    fields: dict[str, object] = {
        "name_prefix": "mlflow-search-prod",
        "vpc_id": "vpc-0123456789abcdef0",
        "subnet_ids": ["subnet-0aaaaaaaaaaaaaaa1", "subnet-0aaaaaaaaaaaaaaa2"],
        "domain_name": "mlflow.search.example.com",
        "target_port": 8080,
        "health_path": "/health",
        "hosted_zone_id": ZONE,
    }
    return LoadBalancerArgs(**(fields | overrides))  # type: ignore[arg-type]


def _run(**overrides: object) -> Run:
    def build() -> dict[str, object]:
        lb = LoadBalancer("edge", _args(**overrides))
        return {"url": lb.url, "target_group_arn": lb.target_group_arn, "dns_name": lb.dns_name}

    return run_components(build)


def _listener(run: Run, port: int) -> dict:
    found = [r.inputs for r in run.of_type(LISTENER) if r.inputs["port"] == port]
    assert len(found) == 1, f"expected one listener on {port}"
    return found[0]


@pytest.fixture(scope="module")
def new_cert_run() -> Run:
    return _run(access_logs=True, deletion_protection=True, idle_timeout_seconds=55)


def test_https_listener_uses_tls13_policy_and_the_validated_certificate(new_cert_run: Run) -> None:
    https = _listener(new_cert_run, 443)
    validation = new_cert_run.one("aws:acm/certificateValidation:CertificateValidation").inputs
    certificate = new_cert_run.one("aws:acm/certificate:Certificate").inputs

    assert https["protocol"] == "HTTPS"
    assert https["sslPolicy"] == "ELBSecurityPolicy-TLS13-1-2-2021-06"
    # The listener waits for validation: it uses the validation's ARN, not the raw certificate's.
    assert https["certificateArn"] == validation["certificateArn"]
    assert certificate["domainName"] == "mlflow.search.example.com"
    assert certificate["validationMethod"] == "DNS"
    [action] = https["defaultActions"]
    assert action["type"] == "forward"
    assert action["targetGroupArn"].endswith("targetgroup/mlflow-search-prod-tg")


def test_certificate_is_validated_through_a_record_in_the_zone(new_cert_run: Run) -> None:
    validation = new_cert_run.one("aws:acm/certificateValidation:CertificateValidation").inputs
    [record] = [r.inputs for r in new_cert_run.of_type(RECORD) if r.inputs["type"] == "CNAME"]
    assert record["zoneId"] == ZONE
    assert record["records"] == ["_def.acm-validations.aws."]
    assert validation["validationRecordFqdns"] == [record["name"]]


def test_http_listener_only_redirects_to_https(new_cert_run: Run) -> None:
    http = _listener(new_cert_run, 80)
    assert http["protocol"] == "HTTP"
    [action] = http["defaultActions"]
    assert action["type"] == "redirect"
    # host: the configured domain, not #{host} (the default), which copies the forgeable Host header.
    assert action["redirect"] == {
        "protocol": "HTTPS",
        "host": "mlflow.search.example.com",
        "port": "443",
        "statusCode": "HTTP_301",
    }
    assert "targetGroupArn" not in action and "certificateArn" not in http
    assert len(new_cert_run.of_type(LISTENER)) == 2


def test_target_group_checks_health_on_the_server_health_path(new_cert_run: Run) -> None:
    group = new_cert_run.one("aws:lb/targetGroup:TargetGroup").inputs
    assert group["name"] == "mlflow-search-prod-tg"
    assert group["targetType"] == "ip"
    assert group["port"] == 8080
    assert group["protocol"] == "HTTP"
    assert group["deregistrationDelay"] == 30
    assert group["healthCheck"]["path"] == "/health"
    assert group["healthCheck"]["matcher"] == "200"
    assert group["healthCheck"]["port"] == "traffic-port"


def test_alb_drops_invalid_headers_and_honours_settings(new_cert_run: Run) -> None:
    alb = new_cert_run.one("aws:lb/loadBalancer:LoadBalancer").inputs
    assert alb["name"] == "mlflow-search-prod-alb"
    assert alb["loadBalancerType"] == "application"
    assert alb["internal"] is False
    assert alb["dropInvalidHeaderFields"] is True
    assert alb["enableDeletionProtection"] is True
    assert alb["idleTimeout"] == 55
    assert alb["subnets"] == ["subnet-0aaaaaaaaaaaaaaa1", "subnet-0aaaaaaaaaaaaaaa2"]


def test_internal_alb_and_no_deletion_protection_by_default() -> None:
    run = _run(internet_facing=False)
    alb = run.one("aws:lb/loadBalancer:LoadBalancer").inputs
    assert alb["internal"] is True
    assert alb["enableDeletionProtection"] is False
    assert "accessLogs" not in alb
    assert not run.of_type("aws:s3/bucket:Bucket")


def test_only_the_allowed_cidrs_reach_only_80_and_443() -> None:
    run = _run(allowed_cidrs=["203.0.113.0/24", "2001:db8::/32"])
    rules = [r.inputs for r in run.of_type(INGRESS)]
    opened = {
        (rule.get("cidrIpv4") or rule.get("cidrIpv6"), rule["fromPort"], rule["toPort"]) for rule in rules
    }
    assert opened == {
        ("203.0.113.0/24", 443, 443),
        ("203.0.113.0/24", 80, 80),
        ("2001:db8::/32", 443, 443),
        ("2001:db8::/32", 80, 80),
    }
    assert all(rule["ipProtocol"] == "tcp" for rule in rules)
    assert not any(rule.get("cidrIpv4") == "0.0.0.0/0" for rule in rules)
    # No inline rules: the group itself opens nothing.
    group = run.one("aws:ec2/securityGroup:SecurityGroup").inputs
    assert "ingress" not in group and "egress" not in group


def test_access_logs_go_to_a_locked_down_bucket_elb_may_write_to(new_cert_run: Run) -> None:
    bucket = new_cert_run.one("aws:s3/bucket:Bucket")
    alb = new_cert_run.one("aws:lb/loadBalancer:LoadBalancer").inputs
    assert alb["accessLogs"] == {"enabled": True, "bucket": f"{bucket.name}-1234567", "prefix": "alb"}

    block = new_cert_run.one("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock").inputs
    assert all(
        block[k]
        for k in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")
    )
    encryption = new_cert_run.one(
        "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
    ).inputs
    assert encryption["rules"][0]["applyServerSideEncryptionByDefault"]["sseAlgorithm"] == "AES256"

    policy = json.loads(new_cert_run.one("aws:s3/bucketPolicy:BucketPolicy").inputs["policy"])
    writers = [s for s in policy["Statement"] if s["Effect"] == "Allow"]
    assert {json.dumps(s["Principal"], sort_keys=True) for s in writers} == {
        json.dumps({"AWS": ELB_ACCOUNT_ARN}),
        json.dumps({"Service": "logdelivery.elasticloadbalancing.amazonaws.com"}),
    }
    assert all(s["Action"] == "s3:PutObject" for s in writers)
    assert all(s["Resource"].endswith(f"{bucket.name}-1234567/alb/AWSLogs/*") for s in writers)
    [deny] = [s for s in policy["Statement"] if s["Effect"] == "Deny"]
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}

    rules = new_cert_run.one("aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration").inputs[
        "rules"
    ]
    assert all(rule["status"] == "Enabled" for rule in rules)
    assert {"prefix": "alb/"} in [rule["filter"] for rule in rules if "expiration" in rule]
    assert [rule["expiration"]["days"] for rule in rules if "expiration" in rule] == [90]
    assert [
        r["abortIncompleteMultipartUpload"]["daysAfterInitiation"]
        for r in rules
        if "abortIncompleteMultipartUpload" in r
    ] == [7]
    assert [
        r["noncurrentVersionExpiration"]["noncurrentDays"]
        for r in rules
        if "noncurrentVersionExpiration" in r
    ] == [30]


def test_alias_record_points_the_domain_at_the_alb(new_cert_run: Run) -> None:
    [alias] = [r.inputs for r in new_cert_run.of_type(RECORD) if r.inputs["type"] == "A"]
    assert alias["name"] == "mlflow.search.example.com"
    assert alias["zoneId"] == ZONE
    assert alias["aliases"][0]["name"].startswith("mlflow-search-prod-alb-")


def test_existing_certificate_is_used_as_is_without_dns_records() -> None:
    run = _run(certificate_arn=EXISTING_CERT, hosted_zone_id=None, create_alias_record=False)
    assert _listener(run, 443)["certificateArn"] == EXISTING_CERT
    assert not run.of_type("aws:acm/certificate:Certificate")
    assert not run.of_type(RECORD)


def test_outputs_give_the_https_url_and_wait_for_the_listener() -> None:
    run = _run()
    assert run.outputs["url"] == "https://mlflow.search.example.com"
    assert run.outputs["target_group_arn"].endswith("targetgroup/mlflow-search-prod-tg")
    assert run.outputs["dns_name"].endswith(".elb.amazonaws.com")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"hosted_zone_id": None}, "certificateArn"),
        ({"allowed_cidrs": ["10.0.0.0/33"]}, "10.0.0.0/33"),
        ({"name_prefix": "mlflow-a-very-long-team-name-prod"}, "32-character"),
    ],
)
def test_unusable_arguments_are_refused_before_anything_is_created(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _args(**overrides)
