"""The kit's hot paths (server/hot_paths.py) on the real local stack: same answers, same security.

Through Caddy's round-robin over both replicas, as a non-admin user: a revoked grant is refused at
once even though the run's requirement is cached, an unknown run is refused (not 404), and what a
user reads equals what the admin reads — in compact JSON.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lifecycle.client import Connection
from local.stack import LocalStackInfo

GRANT = "/api/3.0/mlflow/users/permissions/grant"
REVOKE = "/api/3.0/mlflow/users/permissions/revoke"
# Enough requests that round-robin reaches every replica more than once.
PER_REPLICA = 3


@pytest.fixture
def admin(local_stack: LocalStackInfo) -> Iterator[Connection]:
    with Connection(local_stack.url, local_stack.username, local_stack.password, local_stack.ca_file) as conn:
        yield conn


def _log_batch(user: Connection, run_id: str, step: int) -> int:
    body = {
        "run_id": run_id,
        "metrics": [{"key": "loss", "value": 1.0 / (step + 1), "timestamp": 1, "step": step}],
        "params": [{"key": f"p{step}", "value": str(step)}],
    }
    return user.request("POST", "runs/log-batch", json=body).status_code


def test_revoked_grant_is_refused_at_once_on_every_replica(admin: Connection, local_stack) -> None:
    suffix = secrets.token_hex(4)
    created = admin.call("POST", "experiments/create", json={"name": f"hot-paths-{suffix}"})
    experiment = created["experiment_id"]
    username, password = f"hot-paths-{suffix}", secrets.token_urlsafe(18)
    admin.call("POST", "users/create", json={"username": username, "password": password})
    grant = {"username": username, "resource_type": "experiment", "resource_id": experiment}
    admin.call("POST", GRANT, json={**grant, "permission": "EDIT"})
    replicas = 2
    try:
        with admin.as_user(username, password) as user:
            run = user.call("POST", "runs/create", json={"experiment_id": experiment, "start_time": 1})
            run_id = run["run"]["info"]["run_id"]
            # Warm every replica's cache of this run's requirement.
            assert [_log_batch(user, run_id, i) for i in range(replicas * PER_REPLICA)] == [200] * (
                replicas * PER_REPLICA
            )

            admin.call("POST", REVOKE, json=grant)
            started = time.monotonic()
            statuses = [_log_batch(user, run_id, 100 + i) for i in range(replicas * PER_REPLICA)]
            assert statuses == [403] * len(statuses), "a revoked user still wrote to the run"
            assert time.monotonic() - started < 30

            unknown = user.request("POST", "runs/log-batch", json={"run_id": "f" * 32, "params": []})
            assert unknown.status_code == 403  # denied, not 404: no oracle for which runs exist

            # Only the first 6 batches landed.
            params = admin.call("GET", "runs/get", params={"run_id": run_id})["run"]["data"]["params"]
            assert sorted(p["key"] for p in params) == sorted(f"p{i}" for i in range(replicas * PER_REPLICA))
    finally:
        admin.request("DELETE", "users/delete", json={"username": username})


def test_users_read_what_the_admin_reads_in_compact_json(admin: Connection) -> None:
    suffix = secrets.token_hex(4)
    experiment = admin.call("POST", "experiments/create", json={"name": f"hot-paths-read-{suffix}"})[
        "experiment_id"
    ]
    username, password = f"hot-paths-read-{suffix}", secrets.token_urlsafe(18)
    admin.call("POST", "users/create", json={"username": username, "password": password})
    admin.call(
        "POST",
        GRANT,
        json={
            "username": username,
            "resource_type": "experiment",
            "resource_id": experiment,
            "permission": "READ",
        },
    )
    try:
        for n in range(3):
            run = admin.call("POST", "runs/create", json={"experiment_id": experiment, "start_time": n + 1})
            run_id = run["run"]["info"]["run_id"]
            _log_batch(admin, run_id, n)
        search = {"experiment_ids": [experiment], "order_by": ["attributes.start_time DESC"]}
        with admin.as_user(username, password) as user:
            for _ in range(2 * PER_REPLICA):
                as_user = user.request("POST", "runs/search", json=search)
                as_admin = admin.request("POST", "runs/search", json=search)
                assert as_user.status_code == as_admin.status_code == 200
                assert json.loads(as_user.content) == json.loads(as_admin.content)
                assert len(json.loads(as_user.content)["runs"]) == 3
                # Hot path 4 is installed on the replica that answered: no indentation.
                assert b"\n" not in as_user.content
    finally:
        admin.request("DELETE", "users/delete", json={"username": username})


def test_every_replica_runs_the_asgi_fast_paths(local_stack: LocalStackInfo, admin: Connection) -> None:
    # A worker that could not install them (MLflow's middlewares changed) serves without and logs why.
    assert admin.request("GET", "experiments/search", params={"max_results": 1}).status_code == 200
    replicas = [p for p in local_stack.processes if p.name.startswith("replica-")]
    assert len(replicas) >= 2
    for replica in replicas:
        log = Path(replica.log_file).read_text(encoding="utf-8", errors="replace")
        assert "Listening" in log or "Uvicorn running" in log or "Started server process" in log, replica.name
        assert "ASGI fast paths not installed" not in log, replica.name
