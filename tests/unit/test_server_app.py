"""The kit's app factory: what it rejects before MLflow's handlers, and that `basic-auth` means it.

The end-to-end proof (real server, real requests, 4xx instead of 5xx) is tests/reliability/; these
pin the decisions without starting a server.
"""

from __future__ import annotations

import json

import pytest

from server import app


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b'"text"', "must be a JSON object"),
        (b'{"k": "\xff"}', "not valid UTF-8"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    ],
)
def test_json_bodies_a_rest_call_cannot_have_are_named(body: bytes, problem: str) -> None:
    assert problem in (app.json_body_problem("POST", "application/json", body) or "")


@pytest.mark.parametrize(
    ("method", "mimetype", "body"),
    [
        ("POST", "application/json", json.dumps({"run_id": "r", "metrics": []}).encode()),
        ("POST", "application/json", b""),  # no body: MLflow answers the missing fields itself
        ("PUT", "application/octet-stream", b"\xff\xfe binary artifact"),  # uploads are not JSON
        ("GET", "application/json", b"{not json"),  # GET bodies are ignored by MLflow
    ],
)
def test_valid_or_non_json_requests_pass_through(method: str, mimetype: str, body: bytes) -> None:
    assert app.json_body_problem(method, mimetype, body) is None


def test_basic_auth_app_name_serves_the_kit_app_and_other_names_are_untouched(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import mlflow.server as mlflow_server

    monkeypatch.setattr(mlflow_server, "_find_app", mlflow_server._find_app)  # restored after the test
    app.use_kit_app()
    assert mlflow_server._find_app("basic-auth") == app.KIT_APP
    # MLflow's server treats the resolved string as a factory (uvicorn --factory) only if it is one.
    assert mlflow_server._is_factory(mlflow_server._find_app("basic-auth"))
    with pytest.raises(Exception, match="Failed to find app 'no-such-app'"):
        mlflow_server._find_app("no-such-app")
