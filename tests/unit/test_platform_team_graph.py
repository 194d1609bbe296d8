"""The platform/team split on the real program's graph (offline, under mocks), for the shipped stacks.

A platform stack owns the shared network, cluster and ALB and nothing of a team; a team stack owns
its data plane and service and attaches to the platform's listener, cluster and subnets by reference;
and no IAM policy of one team names a resource of another.
"""

from __future__ import annotations

import itertools
import json
import re
from typing import Any

import pytest

from infra.settings.tenancy import (
    ALB_CONDITION_VALUES_PER_RULE,
    ALB_RULES_PER_LOAD_BALANCER,
    ALB_TARGET_GROUPS_PER_LOAD_BALANCER,
    MAX_RULE_PRIORITY,
    MIN_RULE_PRIORITY,
    platform_stack_name,
)
from infra.shared_database import SHARED_DATABASE_OUTPUTS
from infra.shared_platform import PLATFORM_OUTPUTS
from preview.offline import (
    ResourceGraph,
    list_stacks,
    load_stack_config,
    stack_backend,
    stack_database_placement,
    unwrap,
)
from preview.team_scaffold import listener_priorities, priority_collisions


def _mode(stack: str) -> str:
    tenancy = load_stack_config(stack).get("mlflow-stack:tenancy") or {}
    return str(tenancy.get("mode", "standalone"))


PLATFORM_STACKS = [s for s in list_stacks() if _mode(s) == "platform"]
TEAM_STACKS = [s for s in list_stacks() if _mode(s) == "team"]
STANDALONE_STACKS = [s for s in list_stacks() if _mode(s) == "standalone"]
TEAM_PAIRS = list(itertools.permutations(TEAM_STACKS, 2))

# What a team stack owns and a platform stack must not; and the reverse.
TEAM_TYPES = {
    "aws:rds/instance:Instance",
    "aws:s3/bucket:Bucket",
    "aws:secretsmanager/secret:Secret",
    "aws:iam/role:Role",
    "aws:ecs/service:Service",
    "aws:ecs/taskDefinition:TaskDefinition",
    "aws:lb/targetGroup:TargetGroup",
    "aws:lb/listenerRule:ListenerRule",
    "aws:dynamodb/table:Table",
}
PLATFORM_TYPES = {
    "aws:ec2/vpc:Vpc",
    "aws:ec2/natGateway:NatGateway",
    "aws:ec2/vpcEndpoint:VpcEndpoint",
    "aws:ecs/cluster:Cluster",
    "aws:lb/loadBalancer:LoadBalancer",
    "aws:lb/listener:Listener",
    "aws:acm/certificate:Certificate",
    "aws:wafv2/webAcl:WebAcl",
}
LISTENER_RULE = "aws:lb/listenerRule:ListenerRule"
RDS = "aws:rds/instance:Instance"


def _shares_a_database(stack: str) -> bool:
    """A team stack with database.placement shared, or a platform with sharedDatabase.enabled."""
    shared = load_stack_config(stack).get("mlflow-stack:sharedDatabase") or {}
    return stack_database_placement(stack) == "shared" or bool(shared.get("enabled"))


def _platform_of(stack: str) -> str:
    return platform_stack_name(load_stack_config(stack)["mlflow-stack:tenancy"]["platformStack"])


def test_the_shipped_example_has_a_platform_and_two_teams_on_it() -> None:
    assert PLATFORM_STACKS == ["platform-prod"]
    assert len(TEAM_STACKS) >= 2
    assert {_platform_of(stack) for stack in TEAM_STACKS} == {"platform-prod"}


@pytest.mark.parametrize("stack", PLATFORM_STACKS)
def test_platform_stack_has_no_team_resources(stack: str, stack_graph: Any) -> None:
    graph = stack_graph(stack)
    # Its own roles and buckets only: the flow-log role and the ALB's access-log bucket; and the
    # instance teams share (sharedDatabase.enabled), none of a team's.
    team_types = TEAM_TYPES - {"aws:iam/role:Role", "aws:s3/bucket:Bucket", RDS}
    assert not graph.types & team_types, sorted(graph.types & team_types)
    instances = [r.get("identifier") for r in graph.of_type(RDS)]
    assert instances == ([f"mlflow-{stack}-shared-db"] if _shares_a_database(stack) else [])
    trusted = {
        principal
        for role in graph.of_type("aws:iam/role:Role")
        for statement in json.loads(role.get("assumeRolePolicy"))["Statement"]
        for principal in [statement["Principal"].get("Service")]
    }
    assert trusted == {"vpc-flow-logs.amazonaws.com"}
    buckets = graph.of_type("aws:s3/bucket:Bucket")
    assert [b.parent_name for b in buckets] == [f"mlflow-{stack}-edge"]
    assert graph.types >= PLATFORM_TYPES, sorted(PLATFORM_TYPES - graph.types)
    teams = [s.rsplit("-", 1)[0] for s in TEAM_STACKS]
    assert not [r.name for r in graph.resources if any(f"mlflow-{t}-" in r.name for t in teams)]


@pytest.mark.parametrize("stack", PLATFORM_STACKS)
def test_platform_exports_what_teams_read_and_no_secret(stack: str, stack_graph: Any) -> None:
    outputs = stack_graph(stack).outputs
    expected = set(PLATFORM_OUTPUTS) | (set(SHARED_DATABASE_OUTPUTS) if _shares_a_database(stack) else set())
    assert expected <= set(outputs), expected - set(outputs)
    assert all(unwrap(value) == value for value in outputs.values()), "a platform output is secret"
    # The shared instance's master secret and its key by ARN only (what db-bootstrap reads): no value.
    assert not any("password" in name or ("secret" in name and not name.endswith("_arn")) for name in outputs)


@pytest.mark.parametrize("stack", PLATFORM_STACKS)
def test_shared_alb_has_a_wildcard_certificate_and_answers_unknown_hosts_404(
    stack: str, stack_graph: Any
) -> None:
    graph = stack_graph(stack)
    domain = load_stack_config(stack)["mlflow-stack:domain"]["name"]
    certificates = graph.of_type("aws:acm/certificate:Certificate")
    # One certificate on the listener: far inside "Certificates per Application Load Balancer
    # (excluding default certificates): 25" (Quotas for your Application Load Balancers).
    assert [c.get("domainName") for c in certificates] == [f"*.{domain}"]
    https = next(r for r in graph.of_type("aws:lb/listener:Listener") if r.get("protocol") == "HTTPS")
    (default,) = https.get("defaultActions")
    assert default["type"] == "fixed-response"
    assert default["fixedResponse"]["statusCode"] == "404"
    http = next(r for r in graph.of_type("aws:lb/listener:Listener") if r.get("protocol") == "HTTP")
    # Never to the request's Host header: a fixed host, the platform's own name.
    assert http.get("defaultActions")[0]["redirect"]["host"] == domain
    records = [r.get("name") for r in graph.of_type("aws:route53/record:Record") if r.get("type") == "A"]
    assert records == [f"*.{domain}"]


@pytest.mark.parametrize("stack", TEAM_STACKS)
def test_team_stack_has_no_platform_resources(stack: str, stack_graph: Any) -> None:
    graph = stack_graph(stack)
    assert not graph.types & PLATFORM_TYPES, sorted(graph.types & PLATFORM_TYPES)
    # A team on the platform's shared instance has no instance of its own.
    own = TEAM_TYPES - {RDS} if _shares_a_database(stack) else TEAM_TYPES
    assert graph.types >= own, sorted(own - graph.types)
    assert (RDS in graph.types) != _shares_a_database(stack)


@pytest.mark.parametrize("stack", TEAM_STACKS)
def test_team_attaches_to_the_platforms_listeners_cluster_and_subnets(stack: str, stack_graph: Any) -> None:
    team = stack_graph(stack)
    platform = stack_graph(_platform_of(stack)).outputs
    listeners = {r.get("listenerArn") for r in team.of_type(LISTENER_RULE)}
    assert listeners == {platform["https_listener_arn"], platform["http_listener_arn"]}
    service = team.one("aws:ecs/service:Service")
    assert service.get("cluster") == platform["ecs_cluster_arn"]
    assert service.get("networkConfiguration.subnets") == platform["private_subnet_ids"]
    if _shares_a_database(stack):  # the platform's instance, in the platform's subnets
        assert team.outputs["db_endpoint"] == platform["shared_db_endpoint"]
    else:
        assert team.one("aws:rds/subnetGroup:SubnetGroup").get("subnetIds") == platform["private_subnet_ids"]
    assert team.one("aws:lb/targetGroup:TargetGroup").get("vpcId") == platform["vpc_id"]
    # The ALB reaches the team's tasks through the platform ALB's security group.
    egress = [
        r
        for r in team.of_type("aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule")
        if r.get("securityGroupId") == platform["alb_security_group_id"]
    ]
    assert len(egress) == 1


@pytest.mark.parametrize("stack", TEAM_STACKS)
def test_team_host_routes_to_its_own_target_group(stack: str, stack_graph: Any) -> None:
    team = stack_graph(stack)
    name = load_stack_config(stack)["mlflow-stack:domain"]["name"]
    target_group = team.one("aws:lb/targetGroup:TargetGroup")
    for rule in team.of_type(LISTENER_RULE):
        (condition,) = rule.get("conditions")
        assert condition["hostHeader"]["values"] == [name]
        (action,) = rule.get("actions")
        if action["type"] == "forward":
            assert action["targetGroupArn"] == target_group.arn
        else:  # on the HTTP listener: to HTTPS on the same fixed host, never #{host}
            assert action["redirect"] == {
                "protocol": "HTTPS",
                "host": name,
                "port": "443",
                "statusCode": "HTTP_301",
            }
    assert team.outputs["tracking_url"] == f"https://{name}"


@pytest.mark.parametrize("stack", TEAM_STACKS)
def test_listener_rules_fit_aws_rule_limits(stack: str, stack_graph: Any) -> None:
    """CreateRule: Priority 1-50000 (Elastic Load Balancing API Reference, API_CreateRule);
    "up to three comparison strings per condition and up to five per rule" (ELB User Guide,
    listener-update-rules.html) and "Condition values per rule: 5" (load-balancer-limits.html)."""
    for rule in stack_graph(stack).of_type(LISTENER_RULE):
        assert MIN_RULE_PRIORITY <= rule.get("priority") <= MAX_RULE_PRIORITY
        conditions = rule.get("conditions")
        values = [v for c in conditions for block in c.values() for v in (block or {}).get("values", [])]
        assert 1 <= len(values) <= ALB_CONDITION_VALUES_PER_RULE
        assert all(len((block or {}).get("values", [])) <= 3 for c in conditions for block in c.values())


@pytest.mark.parametrize("platform", PLATFORM_STACKS)
def test_team_priorities_are_unique_per_platform_listener(platform: str, stack_graph: Any) -> None:
    """A listener can't have two rules with the same priority (CreateRule: PriorityInUse)."""
    reference = load_stack_config(TEAM_STACKS[0])["mlflow-stack:tenancy"]["platformStack"]
    assert priority_collisions(reference) == {}
    by_listener: dict[str, list[int]] = {}
    rules = 0
    for stack in TEAM_STACKS:
        for rule in stack_graph(stack).of_type(LISTENER_RULE):
            by_listener.setdefault(rule.get("listenerArn"), []).append(rule.get("priority"))
            rules += 1
    assert all(len(p) == len(set(p)) for p in by_listener.values()), by_listener
    # The graph's priorities are the ones `team new` reasons about.
    assert sorted({p for ps in by_listener.values() for p in ps}) == sorted(
        set(listener_priorities(reference).values())
    )
    # Rules per ALB (not counting default rules) 100; target groups per ALB 100.
    assert rules <= ALB_RULES_PER_LOAD_BALANCER
    assert len(TEAM_STACKS) <= ALB_TARGET_GROUPS_PER_LOAD_BALANCER


# --- cross-team isolation ----------------------------------------------------------------------

POLICY_INPUTS = {
    "aws:iam/rolePolicy:RolePolicy": "policy",
    "aws:iam/policy:Policy": "policy",
    "aws:iam/role:Role": "assumeRolePolicy",
    "aws:kms/key:Key": "policy",
    "aws:s3/bucketPolicy:BucketPolicy": "policy",
    "aws:secretsmanager/secretPolicy:SecretPolicy": "policy",
}


def _policies(graph: ResourceGraph) -> list[tuple[str, str]]:
    found = []
    for resource in graph.resources:
        key = POLICY_INPUTS.get(resource.type)
        document = resource.get(key) if key else None
        if isinstance(document, str) and document:
            found.append((resource.name, document))
    return found


def _owned_names(graph: ResourceGraph) -> set[str]:
    """Identifiers of the team's isolated resources: bucket, keys, secrets, database, lock table,
    log groups (ARNs and physical names)."""
    owned: set[str] = set()
    for resource in graph.resources:
        if resource.type == "aws:s3/bucket:Bucket":
            owned |= {resource.arn or "", str(resource.id)}
        elif resource.type in {"aws:kms/key:Key", "aws:secretsmanager/secret:Secret"}:
            owned.add(resource.arn or "")
        elif resource.type == "aws:rds/instance:Instance":
            owned |= {resource.arn or "", str(resource.get("identifier"))}
        elif (
            resource.type == "aws:dynamodb/table:Table" or resource.type == "aws:cloudwatch/logGroup:LogGroup"
        ):
            owned |= {resource.arn or "", str(resource.get("name"))}
    outputs = ["log_group_name", "lock_table"]
    # A team on the shared instance names the platform's instance and master secret: the documented
    # exception (docs/teams.md), checked in tests/unit/test_shared_database_graph.py.
    if graph.outputs.get("db_placement") != "shared":
        outputs += ["db_master_secret_arn", "db_instance_identifier"]
    for output in outputs:
        owned.add(str(unwrap(graph.outputs.get(output, ""))))
    return {name for name in owned if name and name != "None"}


def test_isolation_check_sees_a_team_naming_itself(stack_graph: Any) -> None:
    """The check below is not vacuous: each team's own policies do name its own resources."""
    for stack in TEAM_STACKS:
        graph = stack_graph(stack)
        own = _owned_names(graph)
        text = " ".join(document for _, document in _policies(graph))
        assert sum(name in text for name in own) >= 5, stack


@pytest.mark.parametrize(("stack", "other"), TEAM_PAIRS)
def test_no_policy_of_one_team_names_a_resource_of_another(stack: str, other: str, stack_graph: Any) -> None:
    mine, theirs = stack_graph(stack), stack_graph(other)
    foreign = _owned_names(theirs)
    leaks = [
        (name, resource) for name, document in _policies(mine) for resource in foreign if resource in document
    ]
    assert not leaks, f"{stack} policies name {other}'s resources: {leaks}"


@pytest.mark.parametrize(("stack", "other"), TEAM_PAIRS)
def test_no_policy_wildcard_reaches_across_teams(stack: str, other: str, stack_graph: Any) -> None:
    """A wildcard in a Resource of one team's policy never matches the other team's resources."""
    mine, theirs = stack_graph(stack), stack_graph(other)
    foreign = [name for name in _owned_names(theirs) if name.startswith("arn:")]
    for name, document in _policies(mine):
        for statement in json.loads(document).get("Statement", []):
            if statement.get("Effect") != "Allow":
                continue
            resources = statement.get("Resource", [])
            for pattern in [resources] if isinstance(resources, str) else resources:
                if pattern == "*" or "*" not in pattern:
                    continue
                regex = re.compile("^" + re.escape(pattern).replace(r"\*", ".*") + "$")
                matched = [arn for arn in foreign if regex.match(arn)]
                assert not matched, f"{stack}:{name} {pattern} matches {other}'s {matched}"


@pytest.mark.parametrize("stack", STANDALONE_STACKS)
def test_standalone_stacks_stay_self_contained(stack: str, stack_graph: Any) -> None:
    graph = stack_graph(stack)
    if stack_backend(stack) == "ecs":
        assert {
            "aws:lb/loadBalancer:LoadBalancer",
            "aws:ecs/cluster:Cluster",
            "aws:rds/instance:Instance",
        } <= (graph.types)
        assert "pulumi:pulumi:StackReference" not in graph.types
    assert not graph.of_type(LISTENER_RULE)
    assert "tenancy_mode" not in graph.outputs


@pytest.mark.parametrize("stack", TEAM_STACKS)
def test_team_service_waits_for_its_rule_on_the_shared_listener(stack: str, stack_graph: Any) -> None:
    """ECS refuses a target group no listener (rule) forwards to: the service is created after it."""
    graph = stack_graph(stack)
    service = graph.one("aws:ecs/service:Service")
    forward = next(r for r in graph.of_type(LISTENER_RULE) if r.get("actions")[0]["type"] == "forward")
    assert graph.depends_on(service, forward)
