"""MLflow's client variables name the server when no target flag does.

Precedence (lifecycle/credentials.py, docs/ci.md): --url/--stack/--local > MLFLOW_TRACKING_URI (+
_USERNAME, _PASSWORD, _SERVER_CERT_PATH) > refuse with exit 2. A flag beats its variable; the password
from the environment is never echoed; MLFLOW_TRACKING_INSECURE_TLS=true is refused.

Servers here are closed ports on 127.0.0.1: exit 3 (API error) proves a command resolved the
variables and contacted the server they name; exit 2 proves it refused before sending anything.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest

from cli.main import main
from lifecycle import credentials
from lifecycle.credentials import TargetError

SENTINEL = "env-Pa55word-sentinel"
MLFLOW_VARIABLES = (
    "MLFLOW_TRACKING_URI",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_SERVER_CERT_PATH",
    "MLFLOW_TRACKING_INSECURE_TLS",
    "MLFLOW_TRACKING_TOKEN",
)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in MLFLOW_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def closed_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"https://127.0.0.1:{port}"


@pytest.fixture
def ca_file(tmp_path: Path) -> Path:
    path = tmp_path / "ca.pem"
    path.write_text("-----BEGIN CERTIFICATE-----\nnot parsed before a request\n-----END CERTIFICATE-----\n")
    return path


def port_of(url: str) -> str:
    return url.rsplit(":", 1)[1]


def env(url: str = "https://mlflow.example.com", **extra: str) -> dict[str, str]:
    return {
        "MLFLOW_TRACKING_URI": url,
        "MLFLOW_TRACKING_USERNAME": "ci-bot",
        "MLFLOW_TRACKING_PASSWORD": SENTINEL,
        **extra,
    }


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any], str]:
    code = main([*argv, "--json"])
    captured = capsys.readouterr()
    return code, json.loads(captured.out), captured.out + captured.err


# -- resolution ------------------------------------------------------------------------------


def test_no_tracking_uri_means_no_environment_target() -> None:
    assert credentials.resolve_env({}) is None
    assert credentials.resolve_env({"MLFLOW_TRACKING_USERNAME": "a", "MLFLOW_TRACKING_PASSWORD": "b"}) is None


def test_the_variables_make_a_target_like_mlflows_client(ca_file: Path) -> None:
    target = credentials.resolve_env(
        env("https://mlflow.example.com/", MLFLOW_TRACKING_SERVER_CERT_PATH=str(ca_file))
    )
    assert target is not None
    assert (target.url, target.username, target.password) == (
        "https://mlflow.example.com",
        "ci-bot",
        SENTINEL,
    )
    assert target.ca_file == str(ca_file)
    assert target.source == "MLFLOW_TRACKING_URI"
    assert SENTINEL not in repr(target)


def test_an_explicit_ca_file_beats_the_cert_path_variable(tmp_path: Path, ca_file: Path) -> None:
    other = tmp_path / "other.pem"
    other.write_text("x")
    target = credentials.resolve_env(env(MLFLOW_TRACKING_SERVER_CERT_PATH=str(ca_file)), ca_file=other)
    assert target is not None and target.ca_file == str(other)


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        (env("file:///tmp/mlruns"), "not an http(s) server URL"),
        (env("databricks"), "not an http(s) server URL"),
        (env(f"https://ci-bot:{SENTINEL}@mlflow.example.com"), "embeds credentials"),
        ({**env(), "MLFLOW_TRACKING_PASSWORD": ""}, "MLFLOW_TRACKING_PASSWORD is not set"),
        (
            {"MLFLOW_TRACKING_URI": "https://mlflow.example.com", "MLFLOW_TRACKING_TOKEN": SENTINEL},
            "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD are not set "
            "(MLFLOW_TRACKING_TOKEN is set, but the server uses basic auth",
        ),
        (env(MLFLOW_TRACKING_INSECURE_TLS="true"), "never turns certificate verification off"),
        (env(MLFLOW_TRACKING_SERVER_CERT_PATH="/nonexistent/ca.pem"), "MLFLOW_TRACKING_SERVER_CERT_PATH"),
    ],
)
def test_unusable_variables_are_refused_with_the_fix_and_no_secret(
    variables: dict[str, str], message: str
) -> None:
    with pytest.raises(TargetError) as refused:
        credentials.resolve_env(variables)
    assert message in str(refused.value)
    assert SENTINEL not in str(refused.value)


def test_insecure_tls_false_is_fine() -> None:
    target = credentials.resolve_env(env(MLFLOW_TRACKING_INSECURE_TLS="false"))
    assert target is not None and target.ca_file is None


def test_with_url_the_missing_settings_come_from_the_variables(ca_file: Path, tmp_path: Path) -> None:
    variables = env("https://ignored.example.com", MLFLOW_TRACKING_SERVER_CERT_PATH=str(ca_file))
    target = credentials.resolve_url("https://explicit.example.com", None, environ=variables)
    # --url names the server; the user, password and CA the flags left out come from the variables.
    assert (target.url, target.username, target.password, target.ca_file) == (
        "https://explicit.example.com",
        "ci-bot",
        SENTINEL,
        str(ca_file),
    )
    password_file = tmp_path / "pw"
    password_file.write_text("from-the-file\n")
    flagged = credentials.resolve_url(
        "https://explicit.example.com", "admin", password_file, tmp_path / "pw", environ=variables
    )
    assert (flagged.username, flagged.password, flagged.ca_file) == (
        "admin",
        "from-the-file",
        str(password_file),
    )
    with pytest.raises(TargetError, match="MLFLOW_TRACKING_INSECURE_TLS"):
        credentials.resolve_url("https://x.example.com", "a", environ=env(MLFLOW_TRACKING_INSECURE_TLS="1"))


# -- the commands ----------------------------------------------------------------------------


def test_no_flag_and_no_variable_is_refused_with_both_ways_named(capsys: pytest.CaptureFixture[str]) -> None:
    code, body, _ = run_json(capsys, "models", "validate", "m", "--metric", "auc", "--threshold", "0.5")
    assert code == 2 and body["error"] == "usage"
    assert "pass --url, --stack or --local, or set MLFLOW_TRACKING_URI" in body["message"]


@pytest.mark.parametrize(
    "argv",
    [
        ["models", "validate", "m", "--metric", "auc", "--threshold", "0.5"],
        ["models", "doctor", "m"],
        ["runs", "reap-stuck", "--older-than", "24h"],
        ["runs", "cleanup", "--experiment", "*", "--older-than", "90d"],
        ["db", "verify-restore"],
    ],
)
def test_with_only_the_variables_set_the_commands_contact_that_server(
    argv: list[str], closed_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in env(closed_url).items():
        monkeypatch.setenv(name, value)
    code, body, printed = run_json(capsys, *argv)
    assert code == 3, body
    assert body["error"] == "api" and f"port={port_of(closed_url)})" in body["message"]
    assert SENTINEL not in printed


def test_a_target_flag_wins_over_the_variables(
    closed_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    for name, value in env("https://127.0.0.1:9").items():
        monkeypatch.setenv(name, value)
    # --local reads its own state dir, never the variables: an empty dir is "not running".
    code, body, printed = run_json(capsys, "models", "doctor", "m", "--local", "--state-dir", str(tmp_path))
    assert code == 2 and "--local" in body["message"] and "127.0.0.1:9" not in printed
    # --url names another server: that one is contacted (the variables give only the credentials).
    code, body, printed = run_json(capsys, "models", "doctor", "m", "--url", closed_url)
    assert code == 3 and f"port={port_of(closed_url)})" in body["message"]
    assert "port=9)" not in body["message"] and SENTINEL not in printed


def test_smoke_uses_the_variables_and_never_prints_the_password(
    closed_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in env(closed_url).items():
        monkeypatch.setenv(name, value)
    code = main(["smoke", "--timeout", "2", "--http-url", closed_url.replace("https", "http")])
    captured = capsys.readouterr()
    assert code == 1  # the checks ran against the named server and failed: nothing listens there
    assert "MLFLOW_TRACKING_URI" in captured.out and closed_url in captured.out
    assert SENTINEL not in captured.out + captured.err


def test_smoke_with_no_flag_and_no_variable_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["smoke"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "set MLFLOW_TRACKING_URI" in captured.err
