"""`mlflow-stack users sync` against the real local stack (MLflow 3.17 basic-auth, PostgreSQL).

One story, in order: a dry run changes nothing; --apply reaches the declared state with generated
passwords that work and appear in no output; a second run plans nothing; each team's user reads and
writes its own experiments and gets 403 on the other team's (as that user, not the admin); an
experiment created after the sync is covered by the next re-sync (the maintenance task's
`--grants-only --declaration-env` mode); --prune removes what the declaration dropped, and only that.
"""

from __future__ import annotations

import json
import os
import stat
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from cli.main import main
from lifecycle.client import Connection

pytestmark = pytest.mark.integration


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any], str]:
    code = main(["users", "sync", *argv])
    captured = capsys.readouterr()
    out = captured.out + captured.err
    body = json.loads(captured.out) if "--json" in argv else {}
    return code, body, out


def test_users_sync_on_the_local_stack(
    local_stack: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = uuid.uuid4().hex[:8]
    prefix = f"/it-{run_id}"
    search, vision, extra = f"sa-{run_id}", f"va-{run_id}", f"xa-{run_id}"
    admin = Connection.from_local(local_stack.state_dir)
    search_exp = admin.call("POST", "experiments/create", json={"name": f"{prefix}/search/ranking"})
    vision_exp = admin.call("POST", "experiments/create", json={"name": f"{prefix}/vision/detector"})
    model = f"it-{run_id}-search-ranker"
    admin.call("POST", "registered-models/create", json={"name": model})

    declaration: dict[str, Any] = {
        "users": [search, vision, extra],
        "teams": {
            f"s{run_id}": {
                "members": [search, extra],
                "grants": [
                    {"experiments": f"{prefix}/search/", "access": "editor"},
                    {"models": f"it-{run_id}-search-*", "access": "manager"},
                ],
            },
            f"v{run_id}": {
                "members": [vision],
                "grants": [{"experiments": f"{prefix}/vision/", "access": "editor"}],
            },
        },
    }
    file = tmp_path / "users.yaml"
    file.write_text(yaml.safe_dump(declaration), encoding="utf-8")
    target = ["--local", "--state-dir", local_stack.state_dir, "--file", str(file)]

    # A dry run plans, and changes nothing.
    code, body, _ = _run(capsys, *target, "--json", "--exit-code")
    assert code == 6 and not body["in_sync"]
    assert {c["action"] for c in body["changes"]} >= {"create-user", "create-role", "assign", "grant"}
    assert admin.request("GET", "users/get", params={"username": search}).status_code == 404

    # --apply reaches the declared state; the passwords are in 0600 files and in no output.
    code, body, out = _run(capsys, *target, "--apply", "--json")
    assert code == 0, out
    users_dir = Path(local_stack.state_dir) / "users"
    passwords = {
        u: (users_dir / f"{u}.password").read_text(encoding="utf-8") for u in (search, vision, extra)
    }
    for user, password in passwords.items():
        assert stat.S_IMODE(os.stat(users_dir / f"{user}.password").st_mode) == 0o600
        assert len(password) >= 12 and password not in out
        assert body["password_locations"][user] == str(users_dir / f"{user}.password")
    code, _, text_out = _run(capsys, *target)
    assert not any(p in text_out for p in passwords.values())

    # Idempotent: the second run plans nothing.
    code, body, _ = _run(capsys, *target, "--json", "--exit-code")
    assert code == 0 and body["in_sync"] and body["changes"] == [], body

    # Isolation, as the users themselves (default permission NO_PERMISSIONS on the local stack).
    as_search = admin.as_user(search, passwords[search])
    as_vision = admin.as_user(vision, passwords[vision])
    get = {"experiment_id": search_exp["experiment_id"]}
    assert as_search.request("GET", "experiments/get", params=get).status_code == 200
    run = as_search.call("POST", "runs/create", json={"experiment_id": search_exp["experiment_id"]})
    as_search.call(
        "POST",
        "runs/log-metric",
        json={"run_id": run["run"]["info"]["run_id"], "key": "ndcg", "value": 0.5, "timestamp": 0},
    )
    assert as_vision.request("GET", "experiments/get", params=get).status_code == 403
    assert (
        as_search.request(
            "GET", "experiments/get", params={"experiment_id": vision_exp["experiment_id"]}
        ).status_code
        == 403
    )
    assert as_search.request("GET", "registered-models/get", params={"name": model}).status_code == 200
    assert as_vision.request("GET", "registered-models/get", params={"name": model}).status_code == 403

    # A new experiment is covered by the next re-sync, in the maintenance task's mode.
    later = admin.call("POST", "experiments/create", json={"name": f"{prefix}/search/later"})
    later_get = {"experiment_id": later["experiment_id"]}
    assert as_search.request("GET", "experiments/get", params=later_get).status_code == 403
    monkeypatch.setenv("MLFLOW_STACK_USERS_DECLARATION", file.read_text(encoding="utf-8"))
    env_target = [
        "--local",
        "--state-dir",
        local_stack.state_dir,
        "--declaration-env",
        "MLFLOW_STACK_USERS_DECLARATION",
    ]
    code, body, _ = _run(capsys, *env_target, "--grants-only", "--apply", "--json")
    assert code == 0 and [c["action"] for c in body["changes"]] == ["grant"], body
    assert as_search.request("GET", "experiments/get", params=later_get).status_code == 200
    assert as_vision.request("GET", "experiments/get", params=later_get).status_code == 403

    # Prune: drop a user and a grant. Without --prune they stay; with it they go — and a user
    # made by hand (not by this declaration) and the admin are never touched.
    by_hand = f"hand-{run_id}"
    admin.call("POST", "users/create", json={"username": by_hand, "password": uuid.uuid4().hex})
    declaration["users"].remove(extra)
    team = declaration["teams"][f"s{run_id}"]
    team["members"].remove(extra)
    team["grants"] = team["grants"][:1]
    file.write_text(yaml.safe_dump(declaration), encoding="utf-8")
    code, body, _ = _run(capsys, *target, "--apply", "--json")
    assert code == 0 and body["changes"] == []
    assert {c["action"] for c in body["not_pruned"]} == {"delete-user", "revoke"}, body
    assert admin.request("GET", "users/get", params={"username": extra}).status_code == 200
    code, body, _ = _run(capsys, *target, "--apply", "--prune", "--json")
    assert code == 0, body
    assert admin.request("GET", "users/get", params={"username": extra}).status_code == 404
    assert admin.request("GET", "users/get", params={"username": by_hand}).status_code == 200
    assert admin.request("GET", "users/get", params={"username": local_stack.username}).status_code == 200
    assert as_search.request("GET", "registered-models/get", params={"name": model}).status_code == 403
    assert as_search.request("GET", "experiments/get", params=get).status_code == 200
    code, body, _ = _run(capsys, *target, "--prune", "--json", "--exit-code")
    assert code == 0 and body["in_sync"], body


@pytest.fixture(scope="module")
def workspaces_stack(pick_free_ports: Any, make_state_dir: Any) -> Any:
    """A second, one-replica local stack started like `mlflow-stack local up --workspaces`."""
    import shutil

    from local.stack import LocalStack

    state_dir = make_state_dir("mlflow-stack-ws-test-")
    stack = LocalStack(state_dir, replicas=1, ports=pick_free_ports(1), workspaces=True)
    info = stack.up()
    try:
        yield info
    finally:
        stack.down()
        shutil.rmtree(state_dir, ignore_errors=True)


def test_users_sync_puts_each_team_in_its_own_workspace(
    workspaces_stack: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    info = workspaces_stack
    assert info.workspaces
    declaration = {
        "users": ["wa", "wb"],
        "teams": {
            "search": {
                "workspace": "search",
                "members": ["wa"],
                "grants": [{"experiments": "/", "access": "editor"}],
            },
            "vision": {
                "workspace": "vision",
                "members": ["wb"],
                "grants": [{"experiments": "/", "access": "editor"}],
            },
        },
    }
    file = tmp_path / "users.yaml"
    file.write_text(yaml.safe_dump(declaration), encoding="utf-8")
    target = ["--local", "--state-dir", info.state_dir, "--file", str(file)]
    code, body, _ = _run(capsys, *target, "--apply", "--json")
    assert code == 0, body
    assert [c["resource"] for c in body["changes"] if c["action"] == "create-workspace"] == [
        "search",
        "vision",
    ]
    code, body, _ = _run(capsys, *target, "--json", "--exit-code")
    assert code == 0 and body["in_sync"], body

    admin = Connection.from_local(info.state_dir)
    users_dir = Path(info.state_dir) / "users"
    wa = admin.as_user("wa", (users_dir / "wa.password").read_text(encoding="utf-8"))
    wb = admin.as_user("wb", (users_dir / "wb.password").read_text(encoding="utf-8"))
    search, vision = {"X-MLFLOW-WORKSPACE": "search"}, {"X-MLFLOW-WORKSPACE": "vision"}
    # Members create in their own workspace only, and see nothing of the other's.
    created = wa.request("POST", "experiments/create", json={"name": "/ranking"}, headers=search)
    assert created.status_code == 200, created.text
    assert wa.request("POST", "experiments/create", json={"name": "/x"}, headers=vision).status_code == 403
    get = {"experiment_id": created.json()["experiment_id"]}
    assert wa.request("GET", "experiments/get", params=get, headers=search).status_code == 200
    assert wb.request("GET", "experiments/get", params=get, headers=search).status_code == 403
    # Experiments made after the sync (by a member, or the admin) reach their team at the next one.
    later = admin.request("POST", "experiments/create", json={"name": "/detector"}, headers=vision).json()
    later_get = {"experiment_id": later["experiment_id"]}
    assert wb.request("GET", "experiments/get", params=later_get, headers=vision).status_code == 403
    code, body, _ = _run(capsys, *target, "--grants-only", "--apply", "--json")
    assert code == 0, body
    granted = {
        (c["role"]["workspace"], c["resource_name"]) for c in body["changes"] if c["action"] == "grant"
    }
    assert granted == {("search", "/ranking"), ("vision", "/detector")}, body
    assert wb.request("GET", "experiments/get", params=later_get, headers=vision).status_code == 200
