"""The edge, compute and alarms of every real stack file, through the whole program (`run_program`).

Generic rules run for every stacks/Pulumi.*.yaml; the per-preset numbers are spelt out for the
stack files this repository ships, so a preset change is a visible diff here.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from edge_harness import ECS_STACKS, STACKS

from infra.compute.image import image_can_run_read_only
from infra.compute.spec import RUN_AS_USER, SCRATCH_PATH
from infra.settings import Settings, build_settings
from preview.offline import SECRET_SENTINEL, ResourceGraph, iter_plain_strings
from server import contract

LISTENER = "aws:lb/listener:Listener"
INGRESS = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
TASK = "aws:ecs/taskDefinition:TaskDefinition"
SERVICE = "aws:ecs/service:Service"
ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"
WORLD = {"0.0.0.0/0", "::/0"}
SMOKE_OUTPUTS = (
    "tracking_url",
    "alb_dns_name",
    "ecs_cluster_name",
    "ecs_service_name",
    "admin_username",
    "admin_password_secret_arn",
    "region",
)

# What the presets and the shipped stack files set, spelt out: (min, max) tasks, log retention
# days, ALB deletion protection (+ access logs). Any other stack file is checked against its settings.
SHIPPED: dict[str, dict[str, Any]] = {
    "dev": {"tasks": (1, 2), "log_days": 14, "alb_protected": False},
    "staging": {"tasks": (2, 4), "log_days": 30, "alb_protected": False},
    "prod": {"tasks": (2, 6), "log_days": 90, "alb_protected": True},
    "search-prod": {"tasks": (2, 4), "log_days": 90, "alb_protected": True},
}

GraphFor = Callable[[str], ResourceGraph]


def _server_task(graph: ResourceGraph) -> Any:
    # The compute component's task; the stack also defines the scheduled maintenance task.
    return graph.one(TASK, parent=f"{_prefix(graph)}-compute")


def _container(graph: ResourceGraph) -> dict[str, Any]:
    """The server container (the task's other one is the database bootstrap that runs first)."""
    containers = json.loads(_server_task(graph).get("containerDefinitions"))
    assert [c["name"] for c in containers] == ["db-bootstrap", "mlflow"]
    return containers[1]


def _listener(graph: ResourceGraph, port: int) -> dict[str, Any]:
    [listener] = [r.inputs for r in graph.of_type(LISTENER) if r.inputs["port"] == port]
    return listener


def _settings(graph: ResourceGraph) -> Settings:
    raw = {
        key.split(":", 1)[1]: value for key, value in graph.config.items() if key.startswith("mlflow-stack:")
    }
    return build_settings(graph.stack, graph.config["aws:region"], raw)


def _expected(graph: ResourceGraph) -> dict[str, Any]:
    settings = _settings(graph)
    return {
        "tasks": (settings.server.min_replicas, settings.server.max_replicas),
        "log_days": settings.server.log_retention_days,
        "alb_protected": settings.load_balancer.deletion_protection,
    }


@pytest.mark.parametrize("stack", sorted(SHIPPED))
def test_shipped_stacks_get_the_preset_numbers(stack_graph: GraphFor, stack: str) -> None:
    assert _expected(stack_graph(stack)) == SHIPPED[stack]


@pytest.mark.parametrize("stack", STACKS)
def test_https_listener_has_tls13_policy_and_the_stack_certificate(stack_graph: GraphFor, stack: str) -> None:
    graph = stack_graph(stack)
    https = _listener(graph, 443)
    assert https["protocol"] == "HTTPS"
    assert https["sslPolicy"] == "ELBSecurityPolicy-TLS13-1-2-2021-06"
    domain = graph.config["mlflow-stack:domain"]
    if "certificateArn" in domain:
        assert https["certificateArn"] == domain["certificateArn"]
        assert not graph.of_type("aws:acm/certificate:Certificate")
    else:
        validated = graph.one("aws:acm/certificateValidation:CertificateValidation")
        assert https["certificateArn"] == validated.inputs["certificateArn"]
        assert graph.one("aws:acm/certificate:Certificate").inputs["domainName"] == domain["name"]


@pytest.mark.parametrize("stack", STACKS)
def test_http_listener_is_redirect_only(stack_graph: GraphFor, stack: str) -> None:
    graph = stack_graph(stack)
    [action] = _listener(graph, 80)["defaultActions"]
    # To the stack's domain: the default #{host} would copy the client's (forgeable) Host header.
    assert action == {
        "type": "redirect",
        "redirect": {
            "protocol": "HTTPS",
            "host": _settings(graph).domain.name,
            "port": "443",
            "statusCode": "HTTP_301",
        },
    }


@pytest.mark.parametrize("stack", STACKS)
def test_target_group_health_checks_the_server_health_path(stack_graph: GraphFor, stack: str) -> None:
    group = stack_graph(stack).one("aws:lb/targetGroup:TargetGroup")
    assert group.get("healthCheck.path") == contract.HEALTH_PATH == "/health"
    assert group.get("targetType") == "ip"
    assert group.get("port") == contract.CONTAINER_PORT


@pytest.mark.parametrize("stack", ECS_STACKS)
def test_service_has_no_public_ip(stack_graph: GraphFor, stack: str) -> None:
    graph = stack_graph(stack)
    service = graph.one(SERVICE)
    assert service.get("networkConfiguration.assignPublicIp") is False
    assert service.get("networkConfiguration.subnets") == graph.outputs["private_subnet_ids"]


@pytest.mark.parametrize("stack", ECS_STACKS)
def test_autoscaling_per_preset_with_both_tracking_policies(stack_graph: GraphFor, stack: str) -> None:
    graph = stack_graph(stack)
    target = graph.one("aws:appautoscaling/target:Target")
    assert (target.get("minCapacity"), target.get("maxCapacity")) == _expected(graph)["tasks"]
    assert target.get("resourceId") == (
        f"service/{graph.outputs['ecs_cluster_name']}/{graph.outputs['ecs_service_name']}"
    )
    metrics = sorted(
        p.get("targetTrackingScalingPolicyConfiguration.predefinedMetricSpecification.predefinedMetricType")
        for p in graph.of_type("aws:appautoscaling/policy:Policy")
    )
    assert metrics == ["ALBRequestCountPerTarget", "ECSServiceAverageCPUUtilization"]
    assert graph.one(SERVICE).get("desiredCount") == _expected(graph)["tasks"][0]


@pytest.mark.parametrize("stack", ECS_STACKS)
def test_passwords_and_flask_key_reach_the_task_only_as_secret_references(
    stack_graph: GraphFor, stack: str
) -> None:
    graph = stack_graph(stack)
    container = _container(graph)
    by_role = {r.name.rsplit("-secrets-", 1)[1]: r for r in graph.of_type("aws:secretsmanager/secret:Secret")}
    stored_arns = {
        contract.DB_PASSWORD.name: graph.outputs["db_password_secret_arn"],
        contract.ADMIN_PASSWORD.name: graph.outputs["admin_password_secret_arn"],
        contract.FLASK_SECRET_KEY.name: graph.outputs["flask_secret_key_secret_arn"],
        contract.CRYPTO_KEK_PASSPHRASE.name: graph.outputs["crypto_kek_passphrase_secret_arn"],
        contract.WEBHOOK_ENCRYPTION_KEY.name: graph.outputs["webhook_encryption_key_secret_arn"],
    }
    assert {s["name"]: s["valueFrom"] for s in container["secrets"]} == stored_arns
    assert set(by_role) == {
        "db-password",
        "admin-password",
        "flask-secret-key",
        "crypto-kek-passphrase",
        "webhook-encryption-key",
    }
    plain_names = {e["name"] for e in container["environment"]}
    assert plain_names == {s.name for s in contract.PLAIN_SETTINGS}
    assert not plain_names & {s.name for s in contract.SECRET_SETTINGS}
    # The generated values themselves appear nowhere outside a Pulumi secret: not in the task
    # definition, not in any other input, not in the stack outputs.
    assert SECRET_SENTINEL not in _server_task(graph).get("containerDefinitions")
    leaks = [
        r.name for r in graph.resources if any(SECRET_SENTINEL in s for s in iter_plain_strings(r.inputs))
    ]
    assert leaks == []
    assert not any(SECRET_SENTINEL in s for s in iter_plain_strings(graph.outputs))


@pytest.mark.parametrize("stack", STACKS)
def test_only_the_alb_is_open_to_the_internet_and_only_on_80_and_443(
    stack_graph: GraphFor, stack: str
) -> None:
    graph = stack_graph(stack)
    alb_group = graph.named(f"{_prefix(graph)}-edge-sg").id
    world_rules = [
        r.inputs
        for r in graph.of_type(INGRESS)
        if {r.inputs.get("cidrIpv4"), r.inputs.get("cidrIpv6")} & WORLD
    ]
    assert all(rule["securityGroupId"] == alb_group for rule in world_rules)
    assert {(rule["fromPort"], rule["toPort"]) for rule in world_rules} <= {(80, 80), (443, 443)}
    allowed = graph.config.get("mlflow-stack:loadBalancer", {}).get("allowedCidrs", ["0.0.0.0/0"])
    # The clients' allow-list is the edge's; the maintenance task's NAT /32s are its own rules.
    alb_cidrs = {
        r.inputs.get("cidrIpv4") or r.inputs.get("cidrIpv6")
        for r in graph.of_type(INGRESS)
        if r.parent_name != f"{_prefix(graph)}-operations"
    }
    assert alb_cidrs - {None} == set(allowed)
    for group in graph.of_type("aws:ec2/securityGroup:SecurityGroup"):
        for rule in group.get("ingress", []) or []:
            assert not set(rule.get("cidrBlocks", [])) & WORLD, group.name


@pytest.mark.parametrize("stack", ECS_STACKS)
def test_container_is_non_root_and_read_only_when_the_image_allows(stack_graph: GraphFor, stack: str) -> None:
    graph = stack_graph(stack)
    container = _container(graph)
    read_only = image_can_run_read_only(SCRATCH_PATH)
    assert container["readonlyRootFilesystem"] is read_only
    volumes = _server_task(graph).get("volumes") or []
    assert [m["containerPath"] for m in container["mountPoints"]] == ([SCRATCH_PATH] if read_only else [])
    assert len(volumes) == len(container["mountPoints"])
    assert container["user"] == RUN_AS_USER
    assert container["command"][-2:] == ["--app-name", "basic-auth"]
    assert graph.one(SERVICE).get("enableExecuteCommand") is False


@pytest.mark.parametrize("stack", ECS_STACKS)
def test_database_is_reachable_only_from_the_service(stack_graph: GraphFor, stack: str) -> None:
    graph = stack_graph(stack)
    prefix = _prefix(graph)
    db_group = graph.named(f"{prefix}-database-sg").id
    service_group = graph.named(f"{prefix}-compute-sg").id
    rules = [r.inputs for r in graph.of_type(INGRESS) if r.inputs["securityGroupId"] == db_group]
    assert [(r.get("referencedSecurityGroupId"), r["fromPort"], r.get("cidrIpv4")) for r in rules] == [
        (service_group, 5432, None)
    ]
    assert graph.one(SERVICE).get("networkConfiguration.securityGroups") == [service_group]


@pytest.mark.parametrize("stack", ECS_STACKS)
def test_log_group_is_the_one_the_execution_role_may_write(stack_graph: GraphFor, stack: str) -> None:
    graph = stack_graph(stack)
    log_group = graph.named(f"{_prefix(graph)}-compute-logs")
    assert log_group.get("name") == f"/mlflow-stack/{stack}/server" == graph.outputs["log_group_name"]
    assert log_group.get("retentionInDays") == _expected(graph)["log_days"]
    assert _container(graph)["logConfiguration"]["options"]["awslogs-group"] == log_group.get("name")
    execution_policy = next(
        r for r in graph.of_type("aws:iam/rolePolicy:RolePolicy") if r.name.endswith("execution-policy")
    )
    assert f"log-group:{log_group.get('name')}" in execution_policy.get("policy")
    task = _server_task(graph)
    assert task.get("executionRoleArn") == graph.outputs["execution_role_arn"]
    assert task.get("taskRoleArn") == graph.outputs["runtime_role_arn"]


@pytest.mark.parametrize("stack", ECS_STACKS)
def test_image_is_built_into_the_repository_the_execution_role_may_pull(
    stack_graph: GraphFor, stack: str
) -> None:
    graph = stack_graph(stack)
    prebuilt = graph.config.get("mlflow-stack:server", {}).get("image")
    container = _container(graph)
    if prebuilt:
        assert container["image"] == prebuilt
        assert not graph.of_type("aws:ecr/repository:Repository")
        assert not graph.of_type("docker-build:index:Image")
        return
    repository = graph.one("aws:ecr/repository:Repository")
    assert repository.get("name") == f"{_prefix(graph)}-server"
    assert container["image"].startswith(repository.get("name"), container["image"].index("/") + 1)
    execution_policy = next(
        r for r in graph.of_type("aws:iam/rolePolicy:RolePolicy") if r.name.endswith("execution-policy")
    )
    assert f"repository/{repository.get('name')}" in execution_policy.get("policy")


@pytest.mark.parametrize("stack", STACKS)
def test_alb_protection_and_access_logs_follow_the_preset(stack_graph: GraphFor, stack: str) -> None:
    graph = stack_graph(stack)
    alb = graph.one("aws:lb/loadBalancer:LoadBalancer")
    protected = _expected(graph)["alb_protected"]
    assert alb.get("enableDeletionProtection") is protected
    assert alb.get("dropInvalidHeaderFields") is True
    # Access logs come with prod's preset, into the edge's own locked-down bucket.
    log_bucket = [
        r for r in graph.of_type("aws:s3/bucket:Bucket") if r.name == f"{_prefix(graph)}-edge-access-logs"
    ]
    if protected:
        assert alb.get("accessLogs.enabled") is True
        assert alb.get("accessLogs.bucket") == log_bucket[0].id
    else:
        assert alb.get("accessLogs") is None
        assert log_bucket == []


@pytest.mark.parametrize("stack", ECS_STACKS)
def test_alarms_use_the_configured_thresholds(stack_graph: GraphFor, stack: str) -> None:
    graph = stack_graph(stack)
    alarms = {r.name.removeprefix(f"{_prefix(graph)}-monitoring-"): r for r in graph.of_type(ALARM)}
    configured = graph.config.get("mlflow-stack:alarms", {})
    assert alarms["p95-latency"].get("threshold") == configured.get("p95LatencyMs", 500) / 1000
    assert alarms["5xx-rate"].get("threshold") == configured.get("http5xxPercent", 5)
    assert set(alarms) == {
        "p95-latency",
        "5xx-rate",
        "unhealthy-hosts",
        "no-healthy-hosts",
        "rds-cpu",
        "rds-free-storage",
        "rds-connections",
        "ecs-cpu",
        "ecs-memory",
        "artifact-store-size",
    }
    topic_arn = graph.outputs["alarm_topic_arn"]
    assert all(a.get("alarmActions") == [topic_arn] == a.get("okActions") for a in alarms.values())
    database = graph.one("aws:rds/instance:Instance")
    assert alarms["rds-free-storage"].get("threshold") == database.get("allocatedStorage") * 1024**3 * 0.1
    assert alarms["rds-connections"].get("dimensions") == {"DBInstanceIdentifier": database.get("identifier")}
    subscription = graph.one("aws:sns/topicSubscription:TopicSubscription")
    assert subscription.get("endpoint") == configured["email"]


def test_staging_alarm_override_reaches_the_alarm(stack_graph: GraphFor) -> None:
    [latency] = [r for r in stack_graph("staging").of_type(ALARM) if r.name.endswith("p95-latency")]
    assert latency.get("threshold") == 0.8


@pytest.mark.parametrize("stack", ECS_STACKS)
def test_outputs_tell_smoke_where_the_stack_is(stack_graph: GraphFor, stack: str) -> None:
    graph = stack_graph(stack)
    outputs = graph.outputs
    assert set(SMOKE_OUTPUTS) <= set(outputs)
    assert outputs["tracking_url"] == f"https://{graph.config['mlflow-stack:domain']['name']}"
    assert outputs["alb_dns_name"].endswith(".elb.amazonaws.com")
    assert outputs["ecs_cluster_name"] == _prefix(graph)
    assert outputs["ecs_service_name"] == f"{_prefix(graph)}-server"
    assert outputs["admin_username"] == graph.config.get("mlflow-stack:server", {}).get(
        "adminUsername", "admin"
    )
    assert outputs["admin_password_secret_arn"].startswith("arn:aws:secretsmanager:")
    assert outputs["region"] == graph.config["aws:region"]


@pytest.mark.parametrize("stack", STACKS)
def test_edge_resources_use_the_stack_provider(stack_graph: GraphFor, stack: str) -> None:
    """The explicit provider carries the region and the required tags to every edge resource."""
    graph = stack_graph(stack)
    prefix = _prefix(graph)
    mine = [
        r
        for r in graph.resources
        if r.type.startswith("aws:")
        and r.name.startswith(tuple(f"{prefix}-{c}" for c in ("edge", "compute", "image", "monitoring")))
    ]
    assert len(mine) > 30
    providers = {r.provider.split("::")[3] if r.provider else None for r in mine}
    assert providers == {f"{prefix}-aws"}


def _prefix(graph: ResourceGraph) -> str:
    return f"mlflow-{graph.stack}"
