"""`mlflow-stack smoke` option handling: wrong combinations and unresolvable targets exit 2 with one
clear message, before anything is sent to a server; a password is never accepted as an argument."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

import cli.smoke

SENTINEL_PASSWORD = "sentinel-Pa55word-cli"  # noqa: S105 - a marker, not a credential


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="mlflow-stack")
    cli.smoke.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["smoke", *argv])
    return args.func(args)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--url", "https://x", "--stack", "dev"], "not allowed with argument"),
        (["--local", "--username", "admin"], "--username is only used with --url"),
        (["--stack", "dev", "--password-file", "pw"], "--password-file is only used with --url"),
        (["--local", "--ca-file", "ca.pem"], "--ca-file is not used with --local"),
        (["--url", "https://x", "--state-dir", "d"], "--state-dir is only used with --local"),
        (["--url", "https://x"], "--url needs --username"),
        (["--local", "--timeout", "0"], "--timeout must be a positive number"),
        (
            ["--url", "https://x", "--username", "a", "--password", SENTINEL_PASSWORD],
            "a password is never accepted on the command line",
        ),
        # No abbreviations: a prefix of --password-file is not taken for it.
        (["--url", "https://x", "--username", "a", "--password-f", "pw"], "unrecognized arguments"),
    ],
)
def test_bad_option_combinations_exit_2_with_the_reason(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # --url's user may also come from MLflow's variable (tests/unit/test_tracking_env_target.py).
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    with pytest.raises(SystemExit) as exited:
        run_cli(*argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert SENTINEL_PASSWORD not in err


def test_missing_password_exits_2_before_contacting_anything(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    # Port 9 (discard) is never contacted: resolution fails first.
    assert run_cli("--url", "https://127.0.0.1:9", "--username", "admin") == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "no password: pass --password-file FILE or set MLFLOW_TRACKING_PASSWORD" in captured.err


def test_unreachable_server_is_a_failed_smoke_not_a_crash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    password_file = tmp_path / "pw"
    password_file.write_text(SENTINEL_PASSWORD)
    code = run_cli(
        "--url",
        "https://127.0.0.1:9",
        "--http-url",
        "http://127.0.0.1:9",
        "--username",
        "admin",
        "--password-file",
        str(password_file),
        "--timeout",
        "2",
        "--json",
    )
    out = capsys.readouterr().out
    report = json.loads(out)
    assert code == 1
    assert report["ok"] is False
    statuses = {row["name"]: row["status"] for row in report["checks"]}
    assert statuses["health"] == "FAIL"
    assert statuses["tracking"] == "SKIP"
    assert "127.0.0.1:9" in report["checks"][0]["detail"]
    # Nothing was created, so nothing is cleaned up; the password appears nowhere.
    assert report["cleanup"] == []
    assert SENTINEL_PASSWORD not in out
