"""The ASGI fast paths (server/asgi_fast_paths.py) change no answer of MLflow's basic-auth app.

MLflow's real basic-auth ASGI app (uvicorn flavour: FastAPI in front of Flask, fresh SQLite stores,
one process) answers the same requests twice — with its own middleware stack, then with the three
http middlewares replaced by the fast paths — each time for its own users and experiment. Every
status, response header name and (where no id is generated) body must match; and the fast paths
must actually skip MLflow's middleware functions on the requests Flask serves, or they save nothing.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest

from tests.unit.basic_auth_process import basic_auth_environment, run_script

_SCRIPT = r"""
import asyncio, base64, json, os, sys

import mlflow.server
from mlflow.server import auth
from mlflow.utils import workspace_context

from server import asgi_fast_paths

def _native():
    return {
        "workspace": workspace_context.get_request_workspace(),
        "resolved": workspace_context.is_request_workspace_resolved(),
    }


def _add_native_route(fastapi_app, path):
    fastapi_app.add_api_route(path, _native, methods=["GET"])
    fastapi_app.router.routes.insert(0, fastapi_app.router.routes.pop())  # ahead of the Flask mount


# Native routes without a validator (what fail-closed mode refuses): one MLflow knows of when it
# snapshots the native routes, one added later (the fast path's snapshot is a superset of MLflow's).
_create_fastapi_app = auth.create_fastapi_app


def _with_native_route(flask_app):
    fastapi_app = _create_fastapi_app(flask_app)
    _add_native_route(fastapi_app, "/kit-test/native")
    return fastapi_app


auth.create_fastapi_app = _with_native_route
app = auth.create_app(mlflow.server.app)
_add_native_route(app, "/kit-test/late")
admin_password = sys.argv[1]


async def call(method, path, user=None, password=None, body=None, headers=()):
    raw = json.dumps(body).encode() if body is not None else b""
    header_list = [(b"host", b"localhost"), (b"content-type", b"application/json")]
    header_list.append((b"content-length", str(len(raw)).encode()))
    header_list += [(k.lower().encode(), v.encode()) for k, v in headers]  # ASGI: lower-case names
    if user:
        token = base64.b64encode(f"{user}:{password}".encode())
        header_list.append((b"authorization", b"Basic " + token))
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "headers": header_list, "client": ("127.0.0.1", 40000),
        "server": ("localhost", 80),
    }
    sent = False

    async def receive():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": raw, "more_body": False}
        await asyncio.sleep(3600)

    messages = []

    async def send(message):
        messages.append(message)

    await app(scope, receive, send)
    start = next(m for m in messages if m["type"] == "http.response.start")
    names = sorted({k.decode().lower() for k, _ in start["headers"]} - {"content-length", "date"})
    content = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    return start["status"], names, content.decode("utf-8", "replace")


dispatched = []


def counting(name, dispatch):
    async def counted(request, call_next):
        dispatched.append(name)
        return await dispatch(request, call_next)

    counted.__qualname__ = dispatch.__qualname__
    return counted


async def world(mode):
    alice, bob = f"alice-{mode}", f"bob-{mode}"
    passwords = {"admin": admin_password}
    passwords.update({user: f"pw-{user}-{admin_password}" for user in (alice, bob)})
    rows = []

    async def ask(label, method, path, user=None, body=None, headers=(), compare_body=True):
        before = len(dispatched)
        status, names, content = await call(method, path, user, passwords.get(user), body, headers)
        rows.append([mode, label, status, names, content if compare_body else None, dispatched[before:]])
        return json.loads(content) if content.startswith("{") else {}

    for user in (alice, bob):
        await ask("create user", "POST", "/api/2.0/mlflow/users/create", "admin",
                  {"username": user, "password": passwords[user]}, compare_body=False)
    experiment = (await ask("create experiment", "POST", "/api/2.0/mlflow/experiments/create", alice,
                            {"name": f"exp-{mode}"}, compare_body=False))["experiment_id"]
    run = (await ask("create run", "POST", "/api/2.0/mlflow/runs/create", alice,
                     {"experiment_id": experiment, "start_time": 1}, compare_body=False))
    run = run["run"]["info"]["run_id"]
    batch = {"run_id": run, "metrics": [{"key": "m", "value": 1.0, "timestamp": 1, "step": 0}]}
    await ask("health", "GET", "/health")
    await ask("server-info", "GET", "/api/3.0/mlflow/server-info")
    await ask("log-batch owner", "POST", "/api/2.0/mlflow/runs/log-batch", alice, batch)
    await ask("log-batch anonymous", "POST", "/api/2.0/mlflow/runs/log-batch", None, batch)
    await ask("log-batch stranger", "POST", "/api/2.0/mlflow/runs/log-batch", bob, batch)
    await ask("log-batch admin", "POST", "/api/2.0/mlflow/runs/log-batch", "admin", batch)
    await ask("workspace header", "POST", "/api/2.0/mlflow/runs/log-batch", alice, batch,
              headers=[("X-MLFLOW-WORKSPACE", "team-a")])
    await ask("blank workspace header", "POST", "/api/2.0/mlflow/runs/log-batch", alice, batch,
              headers=[("X-MLFLOW-WORKSPACE", "  ")])
    await ask("artifact download stranger", "GET",
              f"/api/2.0/mlflow-artifacts/artifacts/{experiment}/{run}/artifacts/x.txt", bob)
    await ask("artifact download anonymous", "GET",
              f"/api/2.0/mlflow-artifacts/artifacts/{experiment}/{run}/artifacts/x.txt")
    await ask("gateway anonymous", "POST", "/gateway/endpoint/mlflow/invocations", None, {})
    await ask("gateway stranger", "POST", "/gateway/endpoint/mlflow/invocations", bob, {})
    await ask("gateway admin", "POST", "/gateway/endpoint/mlflow/invocations", "admin", {})
    await ask("native route", "GET", "/kit-test/native", alice)
    await ask("native route anonymous", "GET", "/kit-test/native")
    await ask("late native route", "GET", "/kit-test/late", alice)
    return rows


async def main():
    rows = await world("stock")
    app.middleware_stack = None  # rebuilt on the next request, from the replaced middlewares
    for middleware in app.user_middleware:
        if "dispatch" in middleware.kwargs:
            middleware.kwargs["dispatch"] = counting(
                middleware.kwargs["dispatch"].__qualname__.split(".")[0], middleware.kwargs["dispatch"])
    print(json.dumps(["installed", asgi_fast_paths.install(app)]))
    rows += await world("fast")
    for row in rows:
        print(json.dumps(row))


asyncio.run(main())
"""


def _run(directory: Path, fail_closed: bool) -> tuple[list[str], list[list[object]]]:
    admin_password = secrets.token_hex(16)
    env = {
        **basic_auth_environment(directory, admin_password),
        "_MLFLOW_SGI_NAME": "uvicorn",  # MLflow builds its FastAPI app (and middlewares) under uvicorn
        "MLFLOW_BASIC_AUTH_FAIL_CLOSED": "true" if fail_closed else "false",
        "_MLFLOW_SERVER_SERVE_ARTIFACTS": "true",
    }
    lines = run_script(_SCRIPT, admin_password, env)
    installed = next(line[1] for line in lines if line[0] == "installed")
    return installed, [line for line in lines if line[0] in ("stock", "fast")]


@pytest.mark.parametrize("fail_closed", [False, True], ids=["fail-open", "fail-closed"])
def test_every_answer_matches_mlflows_own_middlewares(tmp_path: Path, fail_closed: bool) -> None:
    installed, rows = _run(tmp_path, fail_closed)
    assert len(installed) == 3
    stock = {row[1]: row[2:5] for row in rows if row[0] == "stock"}
    fast = {row[1]: row[2:5] for row in rows if row[0] == "fast"}
    assert len(stock) == 19
    assert fast == stock
    # The script is not uniform: it holds allows, refusals and denials on both kinds of route.
    assert stock["log-batch owner"][0] == 200
    assert stock["log-batch anonymous"][0] == 401
    assert stock["log-batch stranger"][0] == 403
    assert stock["workspace header"][0] >= 400
    assert stock["blank workspace header"][0] == 200
    assert stock["artifact download anonymous"][0] == 401
    assert stock["artifact download stranger"][0] == 403
    assert stock["gateway anonymous"][0] == 401
    assert stock["server-info"][0] == 200
    if fail_closed:  # a native route without a validator is refused, whoever asks
        assert stock["native route"][0] == stock["native route anonymous"][0] == 403
    else:  # and otherwise served, with the workspace context MLflow's middleware sets
        assert json.loads(stock["native route"][2]) == {"workspace": None, "resolved": True}
    assert json.loads(stock["late native route"][2]) == {"workspace": None, "resolved": True}


def test_requests_flask_serves_skip_mlflows_middleware_functions(tmp_path: Path) -> None:
    _, rows = _run(tmp_path, fail_closed=True)
    ran = {row[1]: row[5] for row in rows if row[0] == "fast"}
    # Flask authorizes these itself; the permission, workspace and gateway functions only pass them on.
    for label in ("log-batch owner", "log-batch stranger", "log-batch anonymous", "server-info", "health"):
        assert ran[label] == [], (label, ran[label])
    # Each function still runs where it acts: native routes (permission), a workspace header, /gateway/.
    assert "add_fastapi_permission_middleware" in ran["artifact download stranger"]
    assert "add_fastapi_permission_middleware" in ran["native route"]
    assert ran["workspace header"] == ["add_fastapi_workspace_middleware"]
    assert "add_gateway_timing_middleware" in ran["gateway admin"]
