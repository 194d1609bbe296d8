"""`mlflow-stack runs` / `models`: bad input is refused with exit 2 before anything is sent.

The target URL is a closed port on 127.0.0.1: had any command contacted it, it would exit 3 (API
error), not 2. So an exit code of 2 proves the refusal happened first.
"""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest

from cli.main import build_parser, main


@pytest.fixture
def closed_url(monkeypatch: pytest.MonkeyPatch) -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "not-a-real-password")
    for name in ("MLFLOW_STACK_DB_HOST", "MLFLOW_STACK_DB_PASSWORD", "MLFLOW_STACK_DB_PASSWORD_FILE"):
        monkeypatch.delenv(name, raising=False)
    return f"https://127.0.0.1:{port}"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    code = main([*argv, "--json"])
    out = capsys.readouterr().out
    return code, json.loads(out)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["runs", "cleanup", "--experiment", "x", "--older-than", "90 days"], "--older-than"),
        (["runs", "cleanup", "--experiment", "x", "--older-than", "90d", "--status", "RUNNING"], "--status"),
        (
            ["runs", "cleanup", "--experiment", "x", "--older-than", "90d", "--concurrency", "0"],
            "--concurrency",
        ),
        (
            ["runs", "cleanup", "--experiment", "x", "--older-than", "90d", "--page-size", "60000"],
            "--page-size",
        ),
        (["runs", "reap-stuck", "--older-than", "soon"], "--older-than"),
        (["runs", "gc", "--older-than", "30d", "--apply"], "MLFLOW_STACK_DB_HOST"),
        (["runs", "maintenance", "--gc-older-than", "0d"], "--gc-older-than"),
        (["runs", "maintenance", "--apply"], "MLFLOW_STACK_DB_HOST"),
        (["models", "validate", "m", "--metric", "auc"], "--threshold, --max-regression"),
        (["models", "validate", "m", "--metric", "auc", "--max-regression", "lots"], "--max-regression"),
        (["models", "promote", "m", "--lock-ttl", "0"], "--lock-ttl"),
        (["models", "rollback", "m", "--reason", "x", "--wait", "-1"], "--wait"),
    ],
)
def test_bad_input_exits_2_before_contacting_the_server(
    capsys: pytest.CaptureFixture[str], closed_url: str, argv: list[str], message: str
) -> None:
    code, body = run(capsys, *argv, "--url", closed_url, "--username", "admin")
    assert code == 2, body
    assert body["ok"] is False and body["error"] == "usage" and message in body["message"]
    assert "not-a-real-password" not in json.dumps(body)


def test_an_unreachable_server_exits_3(capsys: pytest.CaptureFixture[str], closed_url: str) -> None:
    code, body = run(
        capsys, "runs", "reap-stuck", "--older-than", "24h", "--url", closed_url, "--username", "admin"
    )
    assert code == 3 and body["error"] == "api" and "CONNECTION_FAILED" in body["message"]


def test_connection_options_are_checked(capsys: pytest.CaptureFixture[str], closed_url: str) -> None:
    code, body = run(capsys, "runs", "gc", "--older-than", "30d", "--url", closed_url)
    assert code == 2 and "--username" in body["message"]
    code, body = run(capsys, "runs", "gc", "--older-than", "30d", "--stack", "dev", "--username", "x")
    assert code == 2 and "only used with --url" in body["message"]


def test_every_day2_command_is_registered() -> None:
    parser = build_parser()
    for argv in (
        ["runs", "cleanup", "--local", "--experiment", "*", "--older-than", "90d"],
        ["runs", "reap-stuck", "--local", "--older-than", "24h"],
        ["runs", "gc", "--local", "--older-than", "30d"],
        ["runs", "maintenance", "--local"],
        ["models", "validate", "m", "--local", "--metric", "val_auc", "--threshold", "0.8"],
        ["models", "promote", "m", "--local"],
        ["models", "rollback", "m", "--local", "--reason", "r"],
        ["models", "doctor", "m", "--local"],
    ):
        assert callable(parser.parse_args(argv).func)
