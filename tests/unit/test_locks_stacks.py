"""The lock table and the CI promotion-lock policy in every stack file, through the real program
(preview.offline.run_program) — with scheduled maintenance on and off — and the day-2 CLI finding the
table from the stack outputs, as `mlflow-stack models promote --stack <stack>` does.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

import pytest

from preview.offline import MOCK_ACCOUNT_ID, ResourceGraph, run_program

STACKS = ("dev", "staging", "prod", "search-prod")
TABLE = "aws:dynamodb/table:Table"
POLICY = "aws:iam/policy:Policy"
LOCKS = "mlflow-stack:locks:LockTable"

GraphFor = Callable[[str], ResourceGraph]


@pytest.fixture(scope="module")
def without_maintenance() -> ResourceGraph:
    graph = run_program("prod", config_overrides={"maintenance": {"enabled": False}})
    assert graph.error is None, graph.error
    return graph


def _graphs(stack_graph: GraphFor, without_maintenance: ResourceGraph) -> list[ResourceGraph]:
    return [*(stack_graph(stack) for stack in STACKS), without_maintenance]


def _prefix(graph: ResourceGraph) -> str:
    return graph.one(LOCKS).name.removesuffix("-locks")


def _table_arn(graph: ResourceGraph) -> str:
    region = graph.config.get("aws:region", "us-east-1")
    return f"arn:aws:dynamodb:{region}:{MOCK_ACCOUNT_ID}:table/{graph.outputs['lock_table']}"


def test_every_stack_has_its_lock_table_with_or_without_maintenance(
    stack_graph: GraphFor, without_maintenance: ResourceGraph
) -> None:
    for graph in _graphs(stack_graph, without_maintenance):
        prefix = _prefix(graph)
        table = graph.one(TABLE, parent=f"{prefix}-locks")
        assert graph.of_type(TABLE) == [table]
        name = table.get("name")
        assert name == f"{prefix}-locks" == graph.outputs["lock_table"]
        # DynamoDB CreateTable: 3-255 characters of letters, digits, '_', '.', '-'.
        assert re.fullmatch(r"[A-Za-z0-9_.-]{3,255}", name), name
        assert (table.get("hashKey"), table.get("ttl.attributeName")) == ("lock_id", "expires_at")
        assert table.get("pointInTimeRecovery.enabled") is True


def test_the_ci_policy_is_exported_and_grants_only_the_promotion_leases(
    stack_graph: GraphFor, without_maintenance: ResourceGraph
) -> None:
    for graph in _graphs(stack_graph, without_maintenance):
        prefix = _prefix(graph)
        policy = graph.one(POLICY, parent=f"{prefix}-locks")
        assert graph.of_type(POLICY) == [policy]
        name = f"{prefix}-model-promotion-lock"
        assert policy.get("name") == name
        assert graph.outputs["promotion_lock_policy_arn"] == f"arn:aws:iam::{MOCK_ACCOUNT_ID}:policy/{name}"
        (statement,) = json.loads(policy.get("policy"))["Statement"]
        assert statement["Effect"] == "Allow"
        assert sorted(statement["Action"]) == ["dynamodb:DeleteItem", "dynamodb:GetItem", "dynamodb:PutItem"]
        assert statement["Resource"] == _table_arn(graph)
        assert statement["Condition"] == {
            "ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["model-aliases/*"]}
        }


def test_maintenance_leases_in_the_same_table(stack_graph: GraphFor) -> None:
    for stack in STACKS:
        graph = stack_graph(stack)
        ops = f"{_prefix(graph)}-operations"
        [lease] = [
            r
            for r in graph.of_type("aws:iam/rolePolicy:RolePolicy", parent=ops)
            if r.name.endswith("-task-policy")
        ]
        (statement,) = json.loads(lease.get("policy"))["Statement"]
        assert statement["Resource"] == _table_arn(graph)
        assert statement["Condition"] == {
            "ForAllValues:StringEquals": {"dynamodb:LeadingKeys": ["maintenance/runs"]}
        }


@pytest.mark.parametrize("command", ["promote", "rollback"])
def test_models_cli_takes_its_lock_in_the_stack_table(
    stack_graph: GraphFor, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    """`models promote|rollback --stack search-prod` reads the table and region from the outputs."""
    import argparse

    import cli.models
    from cli.common import make_lock, resolve_target
    from lifecycle import credentials
    from lifecycle.locks import model_lock_id

    graph = stack_graph("search-prod")
    outputs = json.loads(json.dumps(graph.outputs, default=str))  # as `pulumi stack output --json` prints
    # Stand-ins for the Pulumi CLI and Secrets Manager: neither exists on this machine.
    monkeypatch.setattr(credentials.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(credentials, "_run_json", lambda command, what, cwd=None: dict(outputs))
    monkeypatch.setattr(
        credentials, "read_admin_password", lambda arn, region, stack="": "unused-in-this-test"
    )

    parser = argparse.ArgumentParser()
    cli.models.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["models", command, "--stack", "search-prod", "--reason", "test", "churn"])
    target = resolve_target(args)
    lock = make_lock(args, target, model_lock_id(args.name))
    assert lock.table == outputs["lock_table"] == "mlflow-search-prod-locks"
    assert lock.client.meta.region_name == outputs["region"]


def test_models_cli_refuses_a_stack_without_a_lock_table(
    stack_graph: GraphFor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stack deployed before every stack had a lock table: no silent fallback to a guessed name."""
    import argparse

    import cli.models
    from cli.common import UsageError, make_lock, resolve_target
    from lifecycle import credentials
    from lifecycle.locks import model_lock_id

    outputs = json.loads(json.dumps(stack_graph("search-prod").outputs, default=str))
    outputs.pop("lock_table")
    monkeypatch.setattr(credentials.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(credentials, "_run_json", lambda command, what, cwd=None: dict(outputs))
    monkeypatch.setattr(
        credentials, "read_admin_password", lambda arn, region, stack="": "unused-in-this-test"
    )
    parser = argparse.ArgumentParser()
    cli.models.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["models", "promote", "--stack", "search-prod", "--reason", "test", "churn"])
    with pytest.raises(UsageError, match=r"exports no lock_table output.*--lock-table"):
        make_lock(args, resolve_target(args), model_lock_id(args.name))
    named = parser.parse_args(
        ["models", "promote", "--stack", "search-prod", "--lock-table", "t1", "--reason", "x", "churn"]
    )
    assert make_lock(named, resolve_target(named), model_lock_id(named.name)).table == "t1"
