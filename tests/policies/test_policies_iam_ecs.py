"""IAM, ECS and MLflow rules on crafted resources."""

from __future__ import annotations

import json

import pytest
from policy_helpers import res, violations

TASK = "aws:ecs/taskDefinition:TaskDefinition"
SERVICE = "aws:ecs/service:Service"


def policy(*statements) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


SCOPED = {
    "Effect": "Allow",
    "Action": ["s3:GetObject", "s3:PutObject"],
    "Resource": "arn:aws:s3:::artifacts/*",
}


def test_scoped_policies_pass():
    role_policy = res("aws:iam/rolePolicy:RolePolicy", "p", policy=policy(SCOPED))
    for rule in ("iam-no-wildcard-actions", "iam-no-wildcard-resource-on-data"):
        assert violations(rule, role_policy) == [], rule
    # Logs and ECR auth legitimately need Resource "*"; they are not data actions.
    ecr = {"Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"}
    assert (
        violations("iam-no-wildcard-resource-on-data", res("aws:iam/policy:Policy", "p", policy=policy(ecr)))
        == []
    )


def test_wildcard_actions_fail_in_every_policy_shape():
    star = {"Effect": "Allow", "Action": "*", "Resource": "*"}
    assert violations("iam-no-wildcard-actions", res("aws:iam/policy:Policy", "p", policy=policy(star)))
    s3_all = {"Effect": "Allow", "Action": ["s3:*"], "Resource": "arn:aws:s3:::artifacts/*"}
    inline = res("aws:iam/role:Role", "r", inlinePolicies=[{"name": "inline", "policy": policy(s3_all)}])
    assert violations("iam-no-wildcard-actions", inline) == [
        'inline policy inline: Allow of every s3 action ("s3:*")'
    ]
    not_action = {"Effect": "Allow", "NotAction": "iam:*", "Resource": "*"}
    assert violations(
        "iam-no-wildcard-actions", res("aws:iam/rolePolicy:RolePolicy", "p", policy=policy(not_action))
    )
    # A Deny with a wildcard is how a guardrail is written; it is not a grant.
    deny = {"Effect": "Deny", "Action": "s3:*", "Resource": "*"}
    assert violations("iam-no-wildcard-actions", res("aws:iam/policy:Policy", "p", policy=policy(deny))) == []


def test_data_actions_on_any_resource_fail():
    wide = {
        "Effect": "Allow",
        "Action": ["secretsmanager:GetSecretValue", "logs:PutLogEvents"],
        "Resource": "*",
    }
    found = violations(
        "iam-no-wildcard-resource-on-data", res("aws:iam/rolePolicy:RolePolicy", "p", policy=policy(wide))
    )
    assert found == ['policy: data actions secretsmanager:GetSecretValue allowed on Resource "*"']
    everything = {"Effect": "Allow", "Action": ["*", "kms:Decrypt*"], "Resource": "*"}
    found = violations(
        "iam-no-wildcard-resource-on-data", res("aws:iam/policy:Policy", "p", policy=policy(everything))
    )
    assert found == ['policy: data actions *, kms:Decrypt* allowed on Resource "*"']


def test_managed_full_access_attachments_fail():
    attach = "aws:iam/rolePolicyAttachment:RolePolicyAttachment"
    assert violations(
        "iam-no-managed-full-access", res(attach, "a", policyArn="arn:aws:iam::aws:policy/AmazonS3FullAccess")
    )
    assert violations(
        "iam-no-managed-full-access",
        res("aws:iam/role:Role", "r", managedPolicyArns=["arn:aws:iam::aws:policy/AdministratorAccess"]),
    )
    read_only = "arn:aws:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"
    assert violations("iam-no-managed-full-access", res(attach, "a", policyArn=read_only)) == []
    # A customer-managed policy that happens to be called *FullAccess is the customer's own.
    own = "arn:aws:iam::123456789012:policy/TeamFullAccess"
    assert violations("iam-no-managed-full-access", res(attach, "a", policyArn=own)) == []


def container(**overrides):
    base = {
        "name": "mlflow",
        "image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/mlflow-stack-server@sha256:abc",
        "entryPoint": ["python", "-m", "server.entrypoint"],
        "command": ["serve", "--app-name", "basic-auth"],
        "environment": [{"name": "MLFLOW_STACK_DB_HOST", "value": "db.internal"}],
        "secrets": [
            {"name": "MLFLOW_STACK_DB_PASSWORD", "valueFrom": "arn:aws:secretsmanager:...:secret:db"}
        ],
        "logConfiguration": {"logDriver": "awslogs", "options": {"awslogs-group": "g"}},
    }
    return {**base, **overrides}


def task(*containers):
    return res(TASK, "task", containerDefinitions=json.dumps(list(containers)))


def test_the_kits_container_shape_passes_every_task_rule():
    for rule in (
        "ecs-no-privileged-containers",
        "ecs-no-plaintext-secrets",
        "ecs-logging",
        "mlflow-basic-auth",
    ):
        assert violations(rule, task(container())) == [], rule


def test_privileged_container_fails():
    assert violations("ecs-no-privileged-containers", task(container(privileged=True))) == [
        "container mlflow runs privileged"
    ]


def test_secrets_in_plain_environment_fail_without_printing_the_value():
    leaked = container(
        environment=[
            {"name": "MLFLOW_STACK_DB_PASSWORD", "value": "hunter2-hunter2"},
            {"name": "MLFLOW_BACKEND_STORE_URI", "value": "postgresql+psycopg://mlflow:pw@db:5432/mlflow"},
        ]
    )
    found = violations("ecs-no-plaintext-secrets", task(leaked))
    assert len(found) == 2
    assert "MLFLOW_STACK_DB_PASSWORD looks like a secret" in found[0]
    assert "MLFLOW_BACKEND_STORE_URI holds a database/credential URI" in found[1]
    assert not any("hunter2" in m or ":pw@" in m for m in found)


def test_container_without_logging_fails():
    assert violations("ecs-logging", task(container(logConfiguration=None))) == [
        "container mlflow has no logConfiguration.logDriver"
    ]


def test_mlflow_without_basic_auth_fails():
    plain = container(entryPoint=None, command=["mlflow", "server", "--port", "5000"])
    assert violations("mlflow-basic-auth", task(plain)) == [
        "container mlflow starts MLflow without --app-name basic-auth"
    ]
    sidecar = {
        "name": "xray",
        "image": "amazon/aws-xray-daemon",
        "logConfiguration": {"logDriver": "awslogs"},
    }
    assert violations("mlflow-basic-auth", task(container(), sidecar)) == []


@pytest.mark.parametrize(
    "overrides",
    [
        {"entryPoint": ["sh", "-c"], "command": ["exec mlflow server --host 0.0.0.0"]},
        {"entryPoint": ["/usr/local/bin/mlflow"], "command": ["server", "--port", "5000"]},
        {"entryPoint": ["python", "-m", "mlflow"], "command": ["server"]},
        {"entryPoint": ["python", "-m", "server.entrypoint"], "command": ["serve"]},
        # An MLflow image left to its default command starts the server.
        {"image": "ghcr.io/mlflow/mlflow:v3.17.2", "entryPoint": None, "command": None},
    ],
)
def test_every_way_of_starting_the_server_without_basic_auth_fails(overrides):
    assert violations("mlflow-basic-auth", task(container(**overrides))) == [
        "container mlflow starts MLflow without --app-name basic-auth"
    ]


def test_a_client_of_the_server_in_the_server_image_is_not_a_server():
    # The scheduled maintenance task: the server image, the day-2 CLI, the tracking URL in its args.
    maintenance = container(
        name="maintenance",
        entryPoint=["python", "-m", "cli.runs"],
        command=["runs", "maintenance", "--url", "https://mlflow.example.com", "--apply", "--json"],
    )
    assert violations("mlflow-basic-auth", task(maintenance)) == []


def test_public_ip_fails_in_prod_only():
    public = res(SERVICE, "svc", networkConfiguration={"assignPublicIp": True, "securityGroups": ["sg"]})
    assert violations("ecs-no-public-ip-in-prod", public, environment="prod")
    assert violations("ecs-no-public-ip-in-prod", public, environment="dev") == []


def _scaled(desired=2, low=2, high=6, with_policy=True):
    resources = [
        res(SERVICE, "svc", desiredCount=desired),
        res(
            "aws:appautoscaling/target:Target",
            "target",
            resourceId="service/cluster/svc",
            scalableDimension="ecs:service:DesiredCount",
            serviceNamespace="ecs",
            minCapacity=low,
            maxCapacity=high,
        ),
    ]
    if with_policy:
        resources.append(
            res(
                "aws:appautoscaling/policy:Policy",
                "cpu",
                resourceId="service/cluster/svc",
                policyType="TargetTrackingScaling",
            )
        )
    return resources


def test_prod_needs_two_autoscaled_replicas():
    assert violations("mlflow-prod-replicas-autoscaled", _scaled(), environment="prod") == []
    assert (
        violations("mlflow-prod-replicas-autoscaled", _scaled(desired=1, low=1, high=1), environment="dev")
        == []
    )
    single = violations(
        "mlflow-prod-replicas-autoscaled", _scaled(desired=1, low=1, high=1), environment="prod"
    )
    assert single == [
        "prod service svc starts 1 task(s), minimum 2",
        "prod service svc may scale in to 1 task(s), minimum 2",
        "prod service svc cannot scale out (maxCapacity 1)",
    ]
    no_policy = violations("mlflow-prod-replicas-autoscaled", _scaled(with_policy=False), environment="prod")
    assert no_policy == ["prod service svc has a scaling target but no scaling policy"]
    assert violations("mlflow-prod-replicas-autoscaled", _scaled()[:1], environment="prod") == [
        "prod service svc has no autoscaling target"
    ]


def test_the_database_bootstrap_before_the_server_is_not_a_server():
    # The task's first container: same image and entrypoint, `bootstrap-db`, then it exits.
    bootstrap = container(
        name="db-bootstrap", entryPoint=["python", "-m", "server.entrypoint"], command=["bootstrap-db"]
    )
    assert violations("mlflow-basic-auth", task(bootstrap, container())) == []
    # ...but the entrypoint's server command without basic-auth is still caught next to it.
    unauthenticated = container(entryPoint=["python", "-m", "server.entrypoint"], command=["serve"])
    assert violations("mlflow-basic-auth", task(bootstrap, unauthenticated)) == [
        "container mlflow starts MLflow without --app-name basic-auth"
    ]
