"""The authorization matrix with the authorization cache is stock MLflow basic-auth's, change by change.

MLflow's real basic-auth app (Flask test client, fresh SQLite stores, one process) answers the same
script twice, each time for its own set of users and resources: first stock (MLflow's own
credential cache, exact within one process), then with server/auth_cache.py remembering the
store's answers (trusted, as with a live listener). Five users (admin, owner, reader, editor,
stranger) ask for an experiment, a private experiment, a run whose model output the reader is
denied (MLflow withholds that link from them), a search, a write, a registered model and a logged
model — before and after each change an admin makes: grant revoked, user promoted, demoted,
password changed, user deleted. Every status, and every model link shown or withheld, must match.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from tests.unit.basic_auth_process import basic_auth_environment, run_script

_MATRIX = r"""
import base64, json, sys

import mlflow.server
from mlflow.server import auth

app = mlflow.server.app
auth.create_app(app)
client = app.test_client()
admin_password = sys.argv[1]


def world(mode):
    passwords = {"admin": admin_password}
    name = {u: f"{u}-{mode}" for u in ("owner", "reader", "editor", "stranger")}
    name["admin"] = "admin"

    def call(method, path, user="admin", password=None, **kwargs):
        token = base64.b64encode(f"{name[user]}:{password or passwords[user]}".encode()).decode()
        response = client.open(path, method=method, headers={"Authorization": f"Basic {token}"}, **kwargs)
        return response.status_code, (response.get_json(silent=True) or {})

    def ok(method, path, **kwargs):
        status, body = call(method, path, **kwargs)
        assert status == 200, (path, status, body)
        return body

    for user in ("owner", "reader", "editor", "stranger"):
        passwords[user] = f"pw-{name[user]}-{admin_password}"
        ok("POST", "/api/2.0/mlflow/users/create", json={"username": name[user], "password": passwords[user]})
    experiments = "/api/2.0/mlflow/experiments/create"
    shared = ok("POST", experiments, user="owner", json={"name": f"shared-{mode}"})["experiment_id"]
    private = ok("POST", experiments, json={"name": f"private-{mode}"})["experiment_id"]

    def grant(user, resource_type, resource_id, permission):
        ok("POST", "/api/3.0/mlflow/users/permissions/grant", json={
            "username": name[user], "resource_type": resource_type, "resource_id": resource_id,
            "permission": permission})

    grant("reader", "experiment", shared, "READ")
    grant("editor", "experiment", shared, "EDIT")
    run = ok("POST", "/api/2.0/mlflow/runs/create", user="owner",
             json={"experiment_id": shared, "start_time": 1})["run"]["info"]["run_id"]
    model = ok("POST", "/api/2.0/mlflow/logged-models", json={"experiment_id": private})
    model = model["model"]["info"]["model_id"]
    outputs = {"run_id": run, "models": [{"model_id": model, "step": 0}]}
    ok("POST", "/api/2.0/mlflow/runs/outputs", json=outputs)
    registered = f"registered-{mode}"
    ok("POST", "/api/2.0/mlflow/registered-models/create", json={"name": registered})
    grant("reader", "registered_model", registered, "READ")
    # Logged models denied to the reader: MLflow withholds run links to them from the reader's answers.
    grant("reader", "logged_model", "*", "DENY")

    def links(body):
        runs = body.get("runs") or ([body["run"]] if "run" in body else [])
        return sum(len(r.get("outputs", {}).get("model_outputs", [])) for r in runs)

    get_experiment = "/api/2.0/mlflow/experiments/get"
    batch = {"run_id": run, "metrics": [{"key": "m", "value": 1.0, "timestamp": 1, "step": 0}]}
    requests = {
        "get experiment": ("GET", get_experiment, {"query_string": {"experiment_id": shared}}),
        "get private experiment": ("GET", get_experiment, {"query_string": {"experiment_id": private}}),
        "get run": ("GET", "/api/2.0/mlflow/runs/get", {"query_string": {"run_id": run}}),
        "search runs": ("POST", "/api/2.0/mlflow/runs/search", {"json": {"experiment_ids": [shared]}}),
        "log batch": ("POST", "/api/2.0/mlflow/runs/log-batch", {"json": batch}),
        "get registered model": ("GET", "/api/2.0/mlflow/registered-models/get",
                                 {"query_string": {"name": registered}}),
        "get logged model": ("GET", f"/api/2.0/mlflow/logged-models/{model}", {}),
    }

    def matrix(stage, users=("admin", "owner", "reader", "editor", "stranger"), password=None):
        for user in users:
            for request, (method, path, kwargs) in requests.items():
                status, body = call(method, path, user=user, password=password, **kwargs)
                print(json.dumps([mode, stage, user, request, status, links(body)]))

    matrix("initial")
    ok("POST", "/api/3.0/mlflow/users/permissions/revoke",
       json={"username": name["reader"], "resource_type": "experiment", "resource_id": shared})
    matrix("reader's grant revoked", users=("reader",))
    ok("PATCH", "/api/2.0/mlflow/users/update-admin", json={"username": name["editor"], "is_admin": True})
    matrix("editor promoted", users=("editor",))
    ok("PATCH", "/api/2.0/mlflow/users/update-admin", json={"username": name["editor"], "is_admin": False})
    matrix("editor demoted", users=("editor",))
    old = passwords["stranger"]
    passwords["stranger"] = old + "-new"
    ok("PATCH", "/api/2.0/mlflow/users/update-password",
       json={"username": name["stranger"], "password": passwords["stranger"]})
    matrix("stranger's old password", users=("stranger",), password=old)
    matrix("stranger's new password", users=("stranger",))
    ok("DELETE", "/api/2.0/mlflow/users/delete", json={"username": name["owner"]})
    matrix("owner deleted", users=("owner",))


world("stock")
# Now the kit's authorization cache, trusted as with a live listener; MLflow's own cache off.
from server import auth_cache

cache = auth_cache.AuthorizationCache()
auth_cache.cache_store(auth.store, cache)
cache.subscribed()
auth._USER_AUTH_CACHE = None
world("cached")
"""


def _run(directory: Path, admin_password: str) -> list[list[object]]:
    return run_script(_MATRIX, admin_password, basic_auth_environment(directory, admin_password))


def test_every_decision_matches_stock_basic_auth(tmp_path: Path) -> None:
    rows = _run(tmp_path, secrets.token_hex(16))
    stock = [row[1:] for row in rows if row[0] == "stock"]
    cached = [row[1:] for row in rows if row[0] == "cached"]
    assert len(stock) == 7 * (5 + 6)
    assert cached == stock
    # The matrix is not trivially uniform: it holds allows, denials, refusals and a withheld link.
    decided = {(stage, user, name): (status, shown) for stage, user, name, status, shown in stock}
    assert decided[("initial", "reader", "get run")] == (200, 0)  # link to a denied model withheld
    assert decided[("initial", "owner", "get run")] == (200, 1)
    assert decided[("initial", "reader", "get private experiment")][0] == 403
    assert decided[("reader's grant revoked", "reader", "get run")][0] == 403
    assert decided[("editor promoted", "editor", "get private experiment")][0] == 200
    assert decided[("editor demoted", "editor", "get private experiment")][0] == 403
    assert decided[("stranger's old password", "stranger", "get run")][0] == 401
    assert decided[("stranger's new password", "stranger", "get run")][0] == 403
    assert decided[("owner deleted", "owner", "get experiment")][0] == 401
