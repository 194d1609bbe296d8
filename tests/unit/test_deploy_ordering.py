"""Creation order on the resource graph: what the Pulumi engine will do first, per shipped stack file.

Mocks create everything at once and in any order; AWS does not. The offline runner records each
resource's dependencies exactly as the engine's RegisterResource request carries them (explicit
`depends_on` plus every resource whose Output fed an input), so these rules hold for a real
`pulumi up`: the engine never starts a resource before the ones it depends on have been created.
"""

from __future__ import annotations

import json

import pytest

from preview.offline import (
    RegisteredResource,
    ResourceGraph,
    iter_plain_strings,
    list_stacks,
    stack_backend,
    stack_mode,
)

STACK_FILES = list_stacks()
# A team stack's listeners and certificate are its platform stack's (test_platform_team_graph.py).
OWN_EDGE_STACKS = [s for s in STACK_FILES if stack_mode(s) != "team"]
STANDALONE_STACKS = [s for s in STACK_FILES if stack_mode(s) == "standalone"]
IGW = "aws:ec2/internetGateway:InternetGateway"
EIP = "aws:ec2/eip:Eip"
NAT = "aws:ec2/natGateway:NatGateway"
ALB = "aws:lb/loadBalancer:LoadBalancer"
LISTENER = "aws:lb/listener:Listener"
TASK_DEFINITION = "aws:ecs/taskDefinition:TaskDefinition"
SERVICE = "aws:ecs/service:Service"
SECRET = "aws:secretsmanager/secret:Secret"  # noqa: S105 - a type token
SECRET_VERSION = "aws:secretsmanager/secretVersion:SecretVersion"  # noqa: S105 - a type token
ROLE = "aws:iam/role:Role"
ROLE_POLICIES = ("aws:iam/rolePolicy:RolePolicy", "aws:iam/rolePolicyAttachment:RolePolicyAttachment")
LOG_GROUP = "aws:cloudwatch/logGroup:LogGroup"
SCHEDULE = "aws:scheduler/schedule:Schedule"
CERT_VALIDATION = "aws:acm/certificateValidation:CertificateValidation"
# Inputs that are IAM/KMS policy documents: AWS accepts a policy naming a resource that does not
# exist yet ("IAM JSON policy elements: Resource", IAM User Guide), so these need no ordering.
POLICY_DOCUMENT_INPUTS = {"policy", "assumeRolePolicy"}


def _violations(graph: ResourceGraph, resource: RegisteredResource, required: list[RegisteredResource]):
    missing = sorted(r.name for r in required if not graph.depends_on(resource, r))
    return [f"{resource.name} is not ordered after {name}" for name in missing]


@pytest.mark.parametrize("stack", OWN_EDGE_STACKS)
def test_internet_facing_resources_wait_for_the_internet_gateway(stack_graph, stack):
    """EC2: an Elastic IP for a NAT gateway and a public NAT gateway need the VPC's internet
    gateway attached ("NAT gateways", Amazon VPC User Guide: "you must ... attach an internet
    gateway"; otherwise `Gateway.NotAttached`); an internet-facing load balancer in a VPC without
    one fails CreateLoadBalancer with `InvalidSubnet: VPC ... has no internet gateway`."""
    graph = stack_graph(stack)
    gateways = graph.of_type(IGW)
    internet_facing = [alb for alb in graph.of_type(ALB) if not alb.get("internal")]
    if not gateways:
        # An existing VPC: its gateway is not this stack's to order against.
        assert graph.config["mlflow-stack:network"].get("existingVpcId"), f"{stack} creates no gateway"
        return
    problems = []
    for resource in [*graph.of_type(EIP), *graph.of_type(NAT), *internet_facing]:
        problems += _violations(graph, resource, gateways)
    # The public route tables' associations too: the subnet is public only once its route exists.
    associations = graph.of_type("aws:ec2/routeTableAssociation:RouteTableAssociation")
    public_associations = [r for r in associations if "-public-" in r.name]
    for alb in internet_facing:
        problems += _violations(graph, alb, public_associations)
    assert graph.of_type(NAT) and internet_facing
    assert not problems, problems


def _secret_arns(container_definitions: str) -> set[str]:
    return {
        secret["valueFrom"]
        for container in json.loads(container_definitions)
        for secret in container.get("secrets", [])
    }


def _log_groups(container_definitions: str) -> set[str]:
    return {
        container["logConfiguration"]["options"]["awslogs-group"]
        for container in json.loads(container_definitions)
        if container.get("logConfiguration", {}).get("logDriver") == "awslogs"
    }


def _role_with_arn(graph: ResourceGraph, arn: str | None) -> RegisteredResource | None:
    return next((role for role in graph.of_type(ROLE) if role.arn == arn), None)


def _policies_of(graph: ResourceGraph, role: RegisteredResource) -> list[RegisteredResource]:
    return [
        policy
        for policy in graph.resources
        if policy.type in ROLE_POLICIES and policy.get("role") in (role.id, role.get("name"))
    ]


@pytest.mark.parametrize(
    "stack", [s for s in STACK_FILES if stack_backend(s) == "ecs" and stack_mode(s) != "platform"]
)
def test_task_definitions_wait_for_secret_values_role_policies_and_log_groups(stack_graph, stack):
    """ECS resolves `secrets` and pulls the image with the execution role when a task starts: a
    secret without a value fails the task with ResourceInitializationError, a role whose policy is
    not attached yet with AccessDenied, and an awslogs group that does not exist stops the
    container ("Specifying sensitive data using Secrets Manager secrets", "Amazon ECS task
    execution IAM role", "Using the awslogs log driver", Amazon ECS Developer Guide)."""
    graph = stack_graph(stack)
    secrets_by_arn = {secret.arn: secret for secret in graph.of_type(SECRET)}
    log_groups = {group.get("name"): group for group in graph.of_type(LOG_GROUP)}
    problems = []
    definitions = graph.of_type(TASK_DEFINITION)
    assert definitions
    for task in definitions:
        containers = task.get("containerDefinitions")
        required: list[RegisteredResource] = []
        referenced = _secret_arns(containers)
        assert referenced, f"{task.name} references no secret"
        for value_from in referenced:
            # `<arn>:<json-key>:<stage>:<version>` picks one key of a JSON secret: the ARN is the
            # first seven fields.
            arn = ":".join(value_from.split(":")[:7])
            if arn not in secrets_by_arn:
                # RDS' own master secret: it exists once the instance does.
                required += [
                    r for r in graph.of_type("aws:rds/instance:Instance") if r.get("manageMasterUserPassword")
                ]
                assert ":secret:rds!" in arn, value_from
                continue
            secret = secrets_by_arn[arn]
            versions = [v for v in graph.of_type(SECRET_VERSION) if v.get("secretId") == secret.id]
            assert versions, f"{secret.name} has no version"
            required += versions
        for role_input in ("executionRoleArn", "taskRoleArn"):
            role = _role_with_arn(graph, task.get(role_input))
            assert role is not None, f"{task.name}.{role_input} names no role of the stack"
            policies = _policies_of(graph, role)
            assert policies, f"{role.name} has no policy"
            required += policies
        required += [log_groups[name] for name in _log_groups(containers) if name in log_groups]
        problems += _violations(graph, task, required)
    assert not problems, problems


@pytest.mark.parametrize("stack", STANDALONE_STACKS)
def test_the_service_waits_for_its_listener(stack_graph, stack):
    """ECS CreateService with a load balancer fails while the target group is not attached to a
    load balancer: "The target group ... does not have an associated load balancer" (the listener
    is what associates it)."""
    graph = stack_graph(stack)
    for service in graph.of_type(SERVICE):
        listeners = [
            listener
            for listener in graph.of_type(LISTENER)
            if listener.get("defaultActions.0.type") == "forward"
        ]
        assert listeners
        assert not _violations(graph, service, listeners)


@pytest.mark.parametrize("stack", OWN_EDGE_STACKS)
def test_https_listener_waits_for_the_issued_certificate(stack_graph, stack):
    """ELB refuses a certificate ACM has not issued yet (UnsupportedCertificate); a certificate the
    stack requests is usable only after its DNS validation completes."""
    graph = stack_graph(stack)
    validations = graph.of_type(CERT_VALIDATION)
    https = [listener for listener in graph.of_type(LISTENER) if listener.get("protocol") == "HTTPS"]
    assert https
    for listener in https:
        assert not _violations(graph, listener, validations)


@pytest.mark.parametrize("stack", STACK_FILES)
def test_schedules_wait_for_their_role_policy(stack_graph, stack):
    graph = stack_graph(stack)
    for schedule in graph.of_type(SCHEDULE):
        role = _role_with_arn(graph, schedule.get("target.roleArn"))
        assert role is not None
        assert not _violations(graph, schedule, _policies_of(graph, role))


@pytest.mark.parametrize("stack", STACK_FILES)
def test_every_arn_an_input_names_comes_with_a_dependency(stack_graph, stack):
    """The general rule behind the ones above: when an input names another resource of the stack by
    ARN, the engine must create that resource first. A plain string built from settings instead of
    the resource's Output would let the engine create the two in any order. IAM and KMS policy
    documents are exempt (see POLICY_DOCUMENT_INPUTS)."""
    graph = stack_graph(stack)
    by_arn = {r.arn: r for r in graph.resources if r.custom and r.arn and not r.type.startswith("pulumi:")}
    problems = []
    for resource in graph.resources:
        dependencies = graph.dependencies_of(resource)
        for key, value in resource.inputs.items():
            if key in POLICY_DOCUMENT_INPUTS:
                continue
            for text in iter_plain_strings(value):
                for arn, other in by_arn.items():
                    if other is not resource and other.name not in dependencies and arn in text:
                        problems.append(f"{resource.name}.{key} names {other.name} without depending on it")
    assert not problems, problems


def test_the_rules_see_a_missing_dependency(stack_graph):
    """The checks above can fail: a graph whose NAT gateway lost its dependencies is reported."""
    graph = stack_graph("dev")
    nat = graph.one(NAT)
    detached = RegisteredResource(**{**nat.__dict__, "dependencies": frozenset()})
    assert _violations(graph, detached, graph.of_type(IGW)) == [
        f"{nat.name} is not ordered after {graph.one(IGW).name}"
    ]
