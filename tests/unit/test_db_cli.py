"""`mlflow-stack db …`: bad options exit 2 before anything is contacted; an unreachable database
exits 3 with a message naming where and as whom — and never the password."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest

from cli.main import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    capsys.readouterr()
    code = main([*argv, "--json"])
    body = json.loads(capsys.readouterr().out)
    assert body["exit_code"] == code
    return code, body


def stopped_local_stack(tmp_path: Path) -> tuple[Path, str]:
    """A local stack's state dir whose PostgreSQL port is closed."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    (tmp_path / "secrets").mkdir()
    password = "pw-" + "z" * 29
    (tmp_path / "secrets" / "db_password").write_text(password, encoding="utf-8")
    (tmp_path / "state.json").write_text(json.dumps({"ports": {"postgres": port}}), encoding="utf-8")
    return tmp_path, password


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["db", "status", "--stack", "dev", "--state-dir", "/tmp"], "--state-dir is only used with --local"),
        (
            ["db", "doctor", "--local", "--db-host", "127.0.0.1"],
            "--db-host/--db-port are only used with --stack",
        ),
        (["db", "doctor", "--local", "--top", "0"], "--top >= 1"),
        (
            [
                "db",
                "verify-restore",
                "--url",
                "https://127.0.0.1:9",
                "--username",
                "admin",
                "--gc-older-than",
                "1y",
            ],
            "--gc-older-than",
        ),
    ],
)
def test_bad_options_exit_2_before_any_connection(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    message: str,
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "not-a-real-password")
    if argv[1] == "doctor":
        state_dir, _ = stopped_local_stack(tmp_path)
        argv = [*argv, "--state-dir", str(state_dir)]
    code, body = run(capsys, *argv)
    assert code == 2 and body["error"] == "usage" and message in body["message"]


def test_restore_drill_is_local_only() -> None:
    with pytest.raises(SystemExit) as caught:
        main(["db", "restore-drill", "--stack", "dev"])
    assert caught.value.code == 2


@pytest.mark.parametrize("command", ["status", "doctor", "restore-drill"])
def test_an_unreachable_database_exits_3_naming_it_without_the_password(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, command: str
) -> None:
    state_dir, password = stopped_local_stack(tmp_path)
    code, body = run(capsys, "db", command, "--local", "--state-dir", str(state_dir))
    port = json.loads((state_dir / "state.json").read_text())["ports"]["postgres"]
    assert code == 3 and body["error"] == "database", body
    assert f"127.0.0.1:{port}" in body["message"] and "mlflow_app" in body["message"]
    assert password not in json.dumps(body)
