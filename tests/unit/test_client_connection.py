"""lifecycle.client.Connection against a scripted HTTP server on 127.0.0.1 (no MLflow needed).

The server answers from a per-test script of (status, body) replies and records every request,
so the tests can count retries and read what was sent.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from lifecycle.client import MLFLOW_CLIENT_ENV_VARS, Connection, MlflowApiError

SENTINEL_PASSWORD = "sentinel-Pa55word-never-printed"  # noqa: S105 - a marker, not a credential


@dataclass
class ScriptedServer:
    url: str
    # path -> list of (status, body) to return in order; the last one repeats.
    replies: dict[str, list[tuple[int, Any]]] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)

    def reply(self, path: str, *answers: tuple[int, Any]) -> None:
        self.replies[path] = list(answers)

    def hits(self, path: str) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["path"] == path]


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    scripted = ScriptedServer(url="")

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            path, _, query = self.path.partition("?")
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            scripted.requests.append(
                {
                    "method": self.command,
                    "path": path,
                    "query": query,
                    "body": json.loads(body) if body else None,
                    "authorization": self.headers.get("Authorization"),
                }
            )
            answers = scripted.replies.get(
                path, [(404, {"error_code": "ENDPOINT_NOT_FOUND", "message": "no"})]
            )
            status, payload = answers.pop(0) if len(answers) > 1 else answers[0]
            data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain" if isinstance(payload, str) else "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _answer

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    scripted.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        yield scripted
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def connect(url: str, **kwargs: Any) -> Connection:
    kwargs.setdefault("backoff", 0.01)
    return Connection(url, "admin", SENTINEL_PASSWORD, **kwargs)


def test_call_sends_basic_auth_and_returns_the_json_body(server: ScriptedServer) -> None:
    server.reply("/api/2.0/mlflow/experiments/create", (200, {"experiment_id": "7"}))
    with connect(server.url) as conn:
        assert conn.call("POST", "experiments/create", json={"name": "x"}) == {"experiment_id": "7"}
    [sent] = server.requests
    assert sent["body"] == {"name": "x"}
    expected = base64.b64encode(f"admin:{SENTINEL_PASSWORD}".encode()).decode()
    assert sent["authorization"] == f"Basic {expected}"


def test_absolute_endpoints_pass_through_unprefixed(server: ScriptedServer) -> None:
    server.reply("/api/3.0/mlflow/users/permissions/grant", (200, {}))
    with connect(server.url) as conn:
        assert conn.call("POST", "/api/3.0/mlflow/users/permissions/grant", json={}) == {}
    assert server.requests[0]["path"] == "/api/3.0/mlflow/users/permissions/grant"


def test_mlflow_error_becomes_one_clear_exception(server: ScriptedServer) -> None:
    server.reply(
        "/api/2.0/mlflow/experiments/get",
        (404, {"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "No Experiment with id=9 exists"}),
    )
    with connect(server.url) as conn, pytest.raises(MlflowApiError) as raised:
        conn.call("GET", "experiments/get", params={"experiment_id": "9"})
    error = raised.value
    assert (error.status, error.error_code, error.endpoint) == (
        404,
        "RESOURCE_DOES_NOT_EXIST",
        "/api/2.0/mlflow/experiments/get",
    )
    assert str(error) == (
        "GET /api/2.0/mlflow/experiments/get: HTTP 404 RESOURCE_DOES_NOT_EXIST: "
        "No Experiment with id=9 exists"
    )


def test_plain_text_error_keeps_the_text(server: ScriptedServer) -> None:
    server.reply("/api/2.0/mlflow/users/current", (401, "You are not authenticated."))
    with connect(server.url) as conn, pytest.raises(MlflowApiError) as raised:
        conn.call("GET", "users/current")
    assert (raised.value.status, raised.value.error_code) == (401, "HTTP_401")
    assert "You are not authenticated." in str(raised.value)
    assert SENTINEL_PASSWORD not in str(raised.value)


def test_idempotent_calls_retry_through_502_503_504(server: ScriptedServer) -> None:
    server.reply(
        "/api/2.0/mlflow/experiments/get",
        (502, "bad gateway"),
        (503, "unavailable"),
        (504, "timeout"),
        (200, {"experiment": {"experiment_id": "1"}}),
    )
    with connect(server.url, retries=3) as conn:
        assert conn.call("GET", "experiments/get")["experiment"]["experiment_id"] == "1"
    assert len(server.hits("/api/2.0/mlflow/experiments/get")) == 4


def test_retries_are_bounded(server: ScriptedServer) -> None:
    server.reply("/api/2.0/mlflow/experiments/get", (503, "unavailable"))
    with connect(server.url, retries=2) as conn, pytest.raises(MlflowApiError) as raised:
        conn.call("GET", "experiments/get")
    assert raised.value.status == 503
    assert len(server.hits("/api/2.0/mlflow/experiments/get")) == 3


def test_a_create_is_never_retried_after_it_reached_the_server(server: ScriptedServer) -> None:
    server.reply("/api/2.0/mlflow/runs/create", (503, "unavailable"), (200, {"run": {}}))
    with connect(server.url, retries=3) as conn, pytest.raises(MlflowApiError):
        conn.call("POST", "runs/create", json={"experiment_id": "1"})
    assert len(server.hits("/api/2.0/mlflow/runs/create")) == 1


def test_read_only_post_may_be_marked_idempotent(server: ScriptedServer) -> None:
    server.reply("/api/2.0/mlflow/runs/search", (503, "unavailable"), (200, {"runs": []}))
    with connect(server.url, retries=3) as conn:
        assert conn.call("POST", "runs/search", json={}, idempotent=True) == {"runs": []}
    assert len(server.hits("/api/2.0/mlflow/runs/search")) == 2


def test_paginate_follows_next_page_token_to_the_end(server: ScriptedServer) -> None:
    server.reply(
        "/api/2.0/mlflow/experiments/search",
        (200, {"experiments": [{"id": 1}, {"id": 2}], "next_page_token": "p2"}),
        (200, {"experiments": [{"id": 3}], "next_page_token": "p3"}),
        (200, {"experiments": []}),
    )
    with connect(server.url) as conn:
        items = list(conn.paginate("experiments/search", {"max_results": 2}, "experiments"))
    assert [i["id"] for i in items] == [1, 2, 3]
    bodies = [r["body"] for r in server.hits("/api/2.0/mlflow/experiments/search")]
    assert bodies == [
        {"max_results": 2},
        {"max_results": 2, "page_token": "p2"},
        {"max_results": 2, "page_token": "p3"},
    ]


def test_paginate_with_get_sends_query_parameters(server: ScriptedServer) -> None:
    server.reply(
        "/api/2.0/mlflow/registered-models/search",
        (200, {"registered_models": [{"name": "a"}], "next_page_token": "t"}),
        (200, {"registered_models": [{"name": "b"}]}),
    )
    with connect(server.url) as conn:
        names = [
            m["name"]
            for m in conn.paginate("registered-models/search", {}, "registered_models", method="GET")
        ]
    assert names == ["a", "b"]
    assert [r["query"] for r in server.hits("/api/2.0/mlflow/registered-models/search")] == [
        "",
        "page_token=t",
    ]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_no_server_gives_a_connection_error_not_a_traceback() -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    with connect(url, retries=1) as conn, pytest.raises(MlflowApiError) as raised:
        conn.call("GET", "experiments/get")
    assert (raised.value.status, raised.value.error_code) == (0, "CONNECTION_FAILED")
    assert SENTINEL_PASSWORD not in str(raised.value)


def test_password_never_appears_in_repr() -> None:
    conn = connect("https://mlflow.example.com/")
    assert SENTINEL_PASSWORD not in repr(conn)
    assert conn.url == "https://mlflow.example.com"


@pytest.mark.parametrize(
    ("url", "username", "password", "message"),
    [
        ("mlflow.example.com", "admin", "pw", "must start with https:// or http://"),
        ("https://mlflow.example.com", "", "pw", "username is required"),
        ("https://mlflow.example.com", "admin", "", "no password given"),
    ],
)
def test_bad_settings_are_refused_up_front(url: str, username: str, password: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Connection(url, username, password)


def test_missing_ca_file_is_refused_up_front(tmp_path: Any) -> None:
    with pytest.raises(ValueError, match="--ca-file"):
        Connection("https://mlflow.example.com", "admin", "pw", ca_file=tmp_path / "nope.pem")


def test_mlflow_client_env_points_the_client_at_the_server_and_restores_everything(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    import mlflow

    ca_file = tmp_path / "ca.pem"
    ca_file.write_text("not parsed here")
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "stray-token")
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "someone-else")
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    before_env = {name: os.environ.get(name) for name in MLFLOW_CLIENT_ENV_VARS}
    before_uri = mlflow.get_tracking_uri()

    conn = Connection("https://mlflow.example.com", "admin", SENTINEL_PASSWORD, ca_file=ca_file, timeout=7.5)
    with conn.mlflow_client_env():
        assert mlflow.get_tracking_uri() == "https://mlflow.example.com"
        assert mlflow.get_registry_uri() == "https://mlflow.example.com"
        assert os.environ["MLFLOW_TRACKING_USERNAME"] == "admin"
        assert os.environ["MLFLOW_TRACKING_PASSWORD"] == SENTINEL_PASSWORD
        assert os.environ["MLFLOW_TRACKING_SERVER_CERT_PATH"] == str(ca_file)
        assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "8"
        assert "MLFLOW_TRACKING_TOKEN" not in os.environ

    assert {name: os.environ.get(name) for name in MLFLOW_CLIENT_ENV_VARS} == before_env
    assert mlflow.get_tracking_uri() == before_uri


def test_mlflow_client_env_ignores_and_restores_another_servers_active_experiment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`mlflow.set_experiment` earlier in the process (another server, a notebook, a test) must not
    steer this block's `start_run(run_id=...)`, which refuses a run outside the active experiment."""
    from mlflow.tracking import fluent

    monkeypatch.setattr(fluent, "_active_experiment_id", "42")
    monkeypatch.setenv("MLFLOW_RUN_ID", "run-of-another-job")
    conn = Connection("https://mlflow.example.com", "admin", SENTINEL_PASSWORD)
    with conn.mlflow_client_env():
        assert fluent._active_experiment_id is None
        assert "MLFLOW_RUN_ID" not in os.environ
    assert fluent._active_experiment_id == "42"
    assert os.environ["MLFLOW_RUN_ID"] == "run-of-another-job"


def test_mlflow_client_env_restores_after_an_error() -> None:
    conn = Connection("https://mlflow.example.com", "admin", SENTINEL_PASSWORD)
    with pytest.raises(RuntimeError), conn.mlflow_client_env():
        raise RuntimeError("boom")
    assert os.environ.get("MLFLOW_TRACKING_PASSWORD") != SENTINEL_PASSWORD
