"""Bad requests get a 4xx — never a 5xx, never a crash — and no answer names an internal location.

Every body is checked by `assert_leaks_nothing` (no bucket, database host/port, password or file
path). Cases in `EXPECTED` must get exactly that status (measured on stock MLflow 3.17.2: 500, or
400 before authentication). Sent straight to a replica (no proxy in front that could mask an
answer) with `http.client`, so paths reach the server byte for byte: `requests`/urllib3 would
normalise `..` segments away before sending, and a traversal test would then test the client.
"""

from __future__ import annotations

import base64
import http.client
import json
from collections.abc import Iterator
from dataclasses import dataclass

import psutil
import pytest
from leak_check import assert_leaks_nothing, forbidden_strings
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


def _webhook(url: str, entity: str = "MODEL_VERSION") -> str:
    return json.dumps({"name": "hook", "url": url, "events": [{"entity": entity, "action": "CREATED"}]})


ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts/{e}/{r}/artifacts"
# A page token MLflow's decoder cannot read (not base64), and one of the right alphabet whose JSON
# is not a token ({"offset": "x"}).
BAD_TOKENS = ("garbage!", "eyJvZmZzZXQiOiAieCJ9")


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
    # Missing or malformed artifact paths: 404/400 instead of a 500 naming s3://bucket/prefix
    "artifact-missing": _case("GET", ARTIFACTS + "/nope.txt"),
    "artifact-missing-get-artifact": _case("GET", "/get-artifact?run_uuid={r}&path=nope"),
    "artifact-double-slash": _case("GET", ARTIFACTS + "//x"),
    "artifact-nul": _case("GET", ARTIFACTS + "/a%00b"),
    "artifact-backslash-traversal": _case("GET", ARTIFACTS + "/..\\..\\x"),
    "artifact-file-uri": _case("GET", "/api/2.0/mlflow-artifacts/artifacts/file:///etc/passwd"),
    "get-artifact-double-slash": _case("GET", "/get-artifact?run_id={r}&path=a//b"),
    "get-artifact-nul": _case("GET", "/get-artifact?run_id={r}&path=a%00b"),
    "get-artifact-backslash-traversal": _case("GET", "/get-artifact?run_id={r}&path=..%5C..%5Cx"),
    "get-artifact-file-uri": _case("GET", "/get-artifact?run_id={r}&path=file:///etc/passwd"),
    # Where stock MLflow itself answers 5xx
    "graphql-empty-query": _case("GET", "/graphql?query="),
    "graphql-no-query": _case("POST", "/graphql", "{}", JSON),
    "graphql-syntax-error": _case("POST", "/graphql", json.dumps({"query": "{"}), JSON),
    "lone-surrogate": _case(
        "POST", "/api/2.0/mlflow/runs/set-tag", '{"run_id": "{r}", "key": "k", "value": "\\ud800"}', JSON
    ),
    **{
        f"runs-search-page-token-{i}": _case(
            "POST",
            "/api/2.0/mlflow/runs/search",
            json.dumps({"experiment_ids": ["{e}"], "page_token": t}),
            JSON,
        )
        for i, t in enumerate(BAD_TOKENS)
    },
    **{
        f"logged-models-search-page-token-{i}": _case(
            "POST",
            "/api/2.0/mlflow/logged-models/search",
            json.dumps({"experiment_ids": ["{e}"], "page_token": t}),
            JSON,
        )
        for i, t in enumerate(BAD_TOKENS)
    },
    # Webhooks the server must never call (SSRF): refused before MLflow stores them
    "webhook-file-url": _case("POST", "/api/2.0/mlflow/webhooks", _webhook("file:///etc/passwd"), JSON),
    "webhook-metadata": _case(
        "POST", "/api/2.0/mlflow/webhooks", _webhook("https://169.254.169.254/latest/meta-data/"), JSON
    ),
    "webhook-loopback": _case("POST", "/api/2.0/mlflow/webhooks", _webhook("https://127.0.0.1:8080/x"), JSON),
    "webhook-ipv6-loopback": _case("POST", "/api/2.0/mlflow/webhooks", _webhook("https://[::1]/x"), JSON),
    "webhook-private": _case("POST", "/api/2.0/mlflow/webhooks", _webhook("https://10.0.0.5/x"), JSON),
    "webhook-name-resolving-to-loopback": _case(
        "POST", "/api/2.0/mlflow/webhooks", _webhook("https://localhost/x"), JSON
    ),
    "webhook-unknown-event": _case(
        "POST", "/api/2.0/mlflow/webhooks", _webhook("https://127.0.0.1/x", entity="model_version"), JSON
    ),
    # Authentication comes first: an anonymous body is never parsed
    "anonymous-malformed-json": _case("POST", "/api/2.0/mlflow/runs/log-batch", "{not json", JSON, auth=""),
    "anonymous-12mb-body": _case(
        "POST", "/api/2.0/mlflow/runs/log-batch", b"[" + b"1," * (6 * 1024 * 1024) + b"1]", JSON, auth=""
    ),
    "wrong-password-malformed-json": _case(
        "POST",
        "/api/2.0/mlflow/runs/log-batch",
        "{not json",
        JSON,
        auth="Basic " + base64.b64encode(b"admin:not-the-password").decode(),
    ),
}
BAD_REQUEST_PREFIXES = ("artifact-", "get-artifact-", "graphql-", "webhook-")
NOT_FOUND = ("artifact-missing", "artifact-missing-get-artifact")
UNAUTHENTICATED = ("anonymous-malformed-json", "anonymous-12mb-body", "wrong-password-malformed-json")
EXPECTED = {
    **{name: 400 for name in CASES if name.startswith(BAD_REQUEST_PREFIXES) or "page-token" in name},
    "lone-surrogate": 400,
    **{name: 404 for name in NOT_FOUND},
    **{name: 401 for name in UNAUTHENTICATED},
}


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    user_header: str
    experiment: str
    run: str
    replica_pids: list[int]
    forbidden: dict[str, str]


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
    forbidden = forbidden_strings(reliability_stack.stack, info)
    yield Target(host, int(port), f"Basic {token}", experiment, run, pids, forbidden)


def _send(target: Target, case: Case) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection(target.host, target.port, timeout=60)
    try:
        path = case.path.replace("{e}", target.experiment).replace("{r}", target.run)
        body = case.body.replace(b"{r}", target.run.encode()).replace(b"{e}", target.experiment.encode())
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
    if name in EXPECTED:
        assert status == EXPECTED[name], f"{name}: HTTP {status}, expected {EXPECTED[name]}: {body[:300]!r}"
    assert_leaks_nothing(body, target.forbidden)


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


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("array.json", b"[1, 2, 3]"),
        ("lines.jsonl", b'{"a": 1}\n{"a": 2}\n'),
        ("string.json", b'"just a string"'),
        ("broken.json", b"{not json"),
    ],
)
def test_ui_uploads_are_raw_files_not_json_messages(target: Target, reliability_stack, name, content) -> None:  # type: ignore[no-untyped-def]
    """The UI's upload route takes the file as the body, whatever its content type (stock: 200)."""
    upload = Case(
        "POST",
        f"/ajax-api/2.0/mlflow/upload-artifact?run_uuid={{r}}&path={name}",
        content,
        tuple(JSON.items()),
    )
    status, body = _send(target, upload)
    assert status == 200, f"HTTP {status}: {body[:300]!r}"
    status, stored = _send(target, Case("GET", f"/get-artifact?run_id={{r}}&path={name}"))
    assert (status, stored) == (200, content)


def test_valid_requests_still_pass_the_guards(target: Target, reliability_stack) -> None:  # type: ignore[no-untyped-def]
    info = reliability_stack.info
    api = Api(reliability_stack.replica_urls[0], (info.username, info.password))
    # A page token the server issued still pages (runs and logged models).
    for _ in range(2):
        api.create_run(target.experiment)
    first = api.ok(
        "POST", "/api/2.0/mlflow/runs/search", json={"experiment_ids": [target.experiment], "max_results": 1}
    )
    second = api.ok(
        "POST",
        "/api/2.0/mlflow/runs/search",
        json={
            "experiment_ids": [target.experiment],
            "max_results": 1,
            "page_token": first["next_page_token"],
        },
    )
    assert second["runs"][0]["info"]["run_id"] != first["runs"][0]["info"]["run_id"]
    for _ in range(2):
        api.ok("POST", "/api/2.0/mlflow/logged-models", json={"experiment_id": target.experiment})
    search = {"experiment_ids": [target.experiment], "max_results": 1}
    page = api.ok("POST", "/api/2.0/mlflow/logged-models/search", json=search)
    api.ok(
        "POST", "/api/2.0/mlflow/logged-models/search", json={**search, "page_token": page["next_page_token"]}
    )
    # A GraphQL query, a paired surrogate (an emoji as two escapes), a webhook to a public address.
    query = 'query { mlflowGetExperiment(input: {experimentId: "EXP"}) { experiment { name } } }'
    answer = api.ok("POST", "/graphql", json={"query": query.replace("EXP", target.experiment)})
    assert answer["data"]["mlflowGetExperiment"]["experiment"]["name"]
    emoji = json.dumps({"run_id": target.run, "key": "emoji", "value": "\U0001f600"})  # two \u escapes
    api.ok("POST", "/api/2.0/mlflow/runs/set-tag", data=emoji, headers=JSON)
    tags = api.ok("GET", "/api/2.0/mlflow/runs/get", params={"run_id": target.run})["run"]["data"]["tags"]
    assert {"key": "emoji", "value": "\U0001f600"} in tags
    webhook = json.loads(_webhook("https://8.8.8.8/hook"))
    created = api.ok("POST", "/api/2.0/mlflow/webhooks", json=webhook)["webhook"]
    api.ok("DELETE", f"/api/2.0/mlflow/webhooks/{created['webhook_id']}")
