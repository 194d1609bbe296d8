"""Bad requests get a 4xx — never a 5xx, never a crash.

Sent straight to a replica (no proxy in front that could mask an answer) with `http.client`, so
paths reach the server byte for byte: `requests`/urllib3 would normalise `..` segments away before
sending, and a traversal test would then test the client instead of the server.
"""

from __future__ import annotations

import base64
import http.client
import json
from collections.abc import Iterator
from dataclasses import dataclass

import psutil
import pytest
from reliability_load import Api

pytestmark = pytest.mark.integration

JSON = {"Content-Type": "application/json"}
OCTET = {"Content-Type": "application/octet-stream"}


@dataclass(frozen=True)
class Case:
    method: str
    path: str  # {e} and {r}: an experiment and a run the caller may write to
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    auth: str | None = "user"  # "user": valid basic-auth; None: no header; else the raw header


def _case(method: str, path: str, body: bytes | str = b"", headers: dict[str, str] | None = None, auth=None):  # type: ignore[no-untyped-def]
    raw = body.encode() if isinstance(body, str) else body
    return Case(method, path, raw, tuple((headers or {}).items()), "user" if auth is None else auth)


def _batch(**fields: object) -> str:
    return json.dumps({"run_id": "{r}", **fields})


CASES = {
    # Malformed bodies
    "malformed-json": _case("POST", "/api/2.0/mlflow/runs/log-batch", "{not json", JSON),
    "json-array-not-object": _case("POST", "/api/2.0/mlflow/runs/log-batch", "[1, 2]", JSON),
    "invalid-utf8": _case("POST", "/api/2.0/mlflow/runs/log-batch", b'{"run_id": "\xff\xfe"}', JSON),
    "deeply-nested-json": _case("POST", "/api/2.0/mlflow/runs/log-batch", "[" * 50000 + "]" * 50000, JSON),
    "wrong-field-types": _case("POST", "/api/2.0/mlflow/runs/log-batch", _batch(metrics="x"), JSON),
    "empty-body": _case("POST", "/api/2.0/mlflow/experiments/create", "", JSON),
    # Oversized values (MLflow's limits: param value 6000, tag value 8000, log-batch request 1 MB)
    "oversized-param-value": _case(
        "POST", "/api/2.0/mlflow/runs/log-batch", _batch(params=[{"key": "big", "value": "v" * 10000}]), JSON
    ),
    "oversized-param-log-parameter": _case(
        "POST",
        "/api/2.0/mlflow/runs/log-parameter",
        json.dumps({"run_id": "{r}", "key": "big2", "value": "v" * 100000}),
        JSON,
    ),
    "oversized-tag-value": _case(
        "POST",
        "/api/2.0/mlflow/runs/set-tag",
        json.dumps({"run_id": "{r}", "key": "big", "value": "v" * 10000}),
        JSON,
    ),
    "oversized-batch-request": _case(
        "POST",
        "/api/2.0/mlflow/runs/log-batch",
        _batch(tags=[{"key": f"t{i}", "value": "v" * 7000} for i in range(200)]),
        JSON,
    ),
    # Path traversal in artifact paths
    "traversal-dotdot-put": _case(
        "PUT", "/api/2.0/mlflow-artifacts/artifacts/{e}/{r}/artifacts/../../../../etc/passwd", "x", OCTET
    ),
    "traversal-dotdot-get": _case(
        "GET", "/api/2.0/mlflow-artifacts/artifacts/{e}/{r}/artifacts/../../../../etc/passwd"
    ),
    "traversal-inner-dotdot-put": _case(
        "PUT", "/api/2.0/mlflow-artifacts/artifacts/{e}/{r}/artifacts/a/../../b", "x", OCTET
    ),
    "traversal-encoded-put": _case(
        "PUT", "/api/2.0/mlflow-artifacts/artifacts/{e}/{r}/artifacts/%2e%2e/%2e%2e/x", "x", OCTET
    ),
    "traversal-encoded-slash-get": _case(
        "GET", "/api/2.0/mlflow-artifacts/artifacts/{e}/{r}/artifacts/..%2f..%2fx"
    ),
    "traversal-absolute-put": _case("PUT", "/api/2.0/mlflow-artifacts/artifacts//etc/passwd", "x", OCTET),
    "traversal-list": _case("GET", "/api/2.0/mlflow-artifacts/artifacts?path=../../etc"),
    "traversal-get-artifact": _case("GET", "/get-artifact?path=../../etc/passwd&run_id={r}"),
    # Wrong content types
    "content-type-text-plain": _case(
        "POST", "/api/2.0/mlflow/runs/log-batch", _batch(), {"Content-Type": "text/plain"}
    ),
    "content-type-form": _case(
        "POST",
        "/api/2.0/mlflow/experiments/create",
        "name=x",
        {"Content-Type": "application/x-www-form-urlencoded"},
    ),
    "content-type-xml": _case(
        "POST", "/api/2.0/mlflow/experiments/create", "<name>x</name>", {"Content-Type": "application/xml"}
    ),
    "content-type-missing": _case("POST", "/api/2.0/mlflow/experiments/create", '{"name": "x"}'),
    # Bad credentials and methods
    "auth-missing": _case("GET", "/api/2.0/mlflow/experiments/search?max_results=1", auth=""),
    "auth-bearer-scheme": _case("GET", "/api/2.0/mlflow/experiments/search?max_results=1", auth="Bearer abc"),
    "auth-basic-garbage": _case("GET", "/api/2.0/mlflow/experiments/search?max_results=1", auth="Basic !!!"),
    "auth-basic-no-colon": _case(
        "GET",
        "/api/2.0/mlflow/experiments/search?max_results=1",
        auth="Basic " + base64.b64encode(b"nocolon").decode(),
    ),
    "unknown-endpoint": _case("POST", "/api/2.0/mlflow/runs/explode", "{}", JSON),
    "wrong-method": _case("DELETE", "/api/2.0/mlflow/runs/log-batch"),
}


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    user_header: str
    experiment: str
    run: str
    replica_pids: list[int]


@pytest.fixture(scope="module")
def target(reliability_stack) -> Iterator[Target]:  # type: ignore[no-untyped-def]
    info = reliability_stack.info
    url = reliability_stack.replica_urls[0]
    api = Api(url, (info.username, info.password))
    experiment = api.create_experiment()
    run = api.create_run(experiment)
    token = base64.b64encode(f"{info.username}:{info.password}".encode()).decode()
    host, port = url.removeprefix("http://").split(":")
    # The replicas alive now (another module of this package may have killed and restarted one).
    pids = [p.pid for p in info.processes if p.name.startswith("replica-") and psutil.pid_exists(p.pid)]
    yield Target(host, int(port), f"Basic {token}", experiment, run, pids)


def _send(target: Target, case: Case) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection(target.host, target.port, timeout=60)
    try:
        path = case.path.replace("{e}", target.experiment).replace("{r}", target.run)
        body = case.body.replace(b"{r}", target.run.encode())
        headers = dict(case.headers)
        if case.auth == "user":
            headers["Authorization"] = target.user_header
        elif case.auth:
            headers["Authorization"] = case.auth
        connection.request(case.method, path, body=body or None, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


@pytest.mark.parametrize("name", list(CASES))
def test_bad_request_gets_a_4xx(target: Target, name: str) -> None:
    status, body = _send(target, CASES[name])
    assert 400 <= status < 500, f"{name}: HTTP {status}: {body[:300]!r}"


def test_nothing_crashed_and_nothing_oversized_was_stored(target: Target, reliability_stack) -> None:  # type: ignore[no-untyped-def]
    # Runs after the parametrized cases (pytest keeps definition order within a module).
    for name in CASES:
        _send(target, CASES[name])
    for pid in target.replica_pids:
        assert psutil.pid_exists(pid)
    info = reliability_stack.info
    api = Api(reliability_stack.replica_urls[0], (info.username, info.password))
    assert api.request("GET", "/health").status_code == 200
    data = api.ok("GET", "/api/2.0/mlflow/runs/get", params={"run_id": target.run})["run"]["data"]
    # Nothing was silently truncated and stored in place of the rejected values.
    assert {p["key"] for p in data.get("params", [])}.isdisjoint({"big", "big2"})
    assert "big" not in {t["key"] for t in data.get("tags", [])}
