"""How `mlflow-stack smoke` finds its server and credentials: --url, --stack, --local.

--stack runs the real resolution code against a fake `pulumi` executable on PATH (a shell script
that prints the stack outputs) and moto's in-process Secrets Manager.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from lifecycle import credentials
from lifecycle.credentials import ServerTarget, TargetError

SENTINEL_PASSWORD = "sentinel-Pa55word-from-secrets-manager"  # noqa: S105 - a marker, not a credential
REGION = "eu-west-1"


# --- --url ------------------------------------------------------------------------------------


def test_url_takes_the_password_from_a_file_without_its_newline(tmp_path: Path) -> None:
    password_file = tmp_path / "pw"
    password_file.write_text(SENTINEL_PASSWORD + "\n")
    target = credentials.resolve_url("https://mlflow.example.com/", "admin", password_file, environ={})
    assert (target.url, target.username, target.password) == (
        "https://mlflow.example.com",
        "admin",
        SENTINEL_PASSWORD,
    )
    assert target.redirect_url == "http://mlflow.example.com"
    assert SENTINEL_PASSWORD not in repr(target)


def test_url_falls_back_to_the_environment_variable() -> None:
    target = credentials.resolve_url(
        "https://mlflow.example.com", "admin", environ={"MLFLOW_TRACKING_PASSWORD": SENTINEL_PASSWORD}
    )
    assert target.password == SENTINEL_PASSWORD


def test_url_without_any_password_names_both_ways_to_give_one() -> None:
    with pytest.raises(TargetError, match="--password-file FILE or set MLFLOW_TRACKING_PASSWORD"):
        credentials.resolve_url("https://mlflow.example.com", "admin", environ={})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"url": "mlflow.example.com", "username": "admin"}, "--url: 'mlflow.example.com' is not an http"),
        ({"url": "https://mlflow.example.com", "username": ""}, "--username is required"),
        ({"url": "https://x", "username": "a", "ca_file": "/nonexistent/ca.pem"}, "--ca-file: CA file"),
        ({"url": "https://x", "username": "a", "http_url": "ftp://x"}, "--http-url"),
    ],
)
def test_url_settings_are_checked_before_anything_is_sent(kwargs: dict[str, str], message: str) -> None:
    with pytest.raises(TargetError, match=message):
        credentials.resolve_url(environ={"MLFLOW_TRACKING_PASSWORD": "x"}, **kwargs)


def test_empty_password_file_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "pw"
    empty.write_text("\n")
    with pytest.raises(TargetError, match="is empty"):
        credentials.resolve_url("https://x", "admin", empty, environ={})


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://mlflow.example.com", "http://mlflow.example.com"),
        ("https://mlflow.example.com:8443/", "http://mlflow.example.com"),
        ("https://[::1]:8443", "http://[::1]"),
    ],
)
def test_default_http_url_is_the_same_host_on_port_80(url: str, expected: str) -> None:
    assert credentials.default_http_url(url) == expected


# --- --stack ----------------------------------------------------------------------------------


def _fake_pulumi(directory: Path, outputs: dict[str, str] | None, exit_code: int = 0) -> Path:
    """A `pulumi` that accepts only `stack output --json --stack <name>` and logs its arguments."""
    directory.mkdir(parents=True, exist_ok=True)
    script = directory / "pulumi"
    log = directory / "args.log"
    body = json.dumps(outputs) if outputs is not None else ""
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$@" >> "{log}"\n'
        'if [ "$1 $2 $3 $4" != "stack output --json --stack" ]; then echo "unexpected: $*" >&2; exit 2; fi\n'
        f'if [ {exit_code} -ne 0 ]; then echo "error: no stack named $5 found" >&2; exit {exit_code}; fi\n'
        f"cat <<'JSON'\n{body}\nJSON\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return log


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """moto's Secrets Manager holding the admin password; yields its ARN."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    with mock_aws():
        secret = boto3.client("secretsmanager", region_name=REGION).create_secret(
            Name="mlflow-dev/admin-password", SecretString=SENTINEL_PASSWORD
        )
        yield secret["ARN"]


def _outputs(arn: str) -> dict[str, str]:
    return {
        "tracking_url": "https://mlflow.dev.example.com",
        "admin_username": "admin",
        "admin_password_secret_arn": arn,
        "region": REGION,
        "bucket_name": "ignored-extra-output",
    }


def test_a_platform_stack_is_refused_with_the_way_to_its_teams(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_pulumi(tmp_path / "bin", {"tenancy_mode": "platform", "region": REGION, "vpc_id": "vpc-1"})
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(
        TargetError, match=r"--stack platform-prod: a platform stack runs no MLflow server; name"
    ):
        credentials.resolve_stack("platform-prod")


def test_stack_reads_outputs_then_the_password_from_secrets_manager(
    aws: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = _fake_pulumi(tmp_path / "bin", _outputs(aws))
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    target = credentials.resolve_stack("dev")
    assert target == ServerTarget(
        url="https://mlflow.dev.example.com",
        username="admin",
        password=SENTINEL_PASSWORD,
        ca_file=None,
        http_url=None,
        source="stack dev",
    )
    assert log.read_text().split() == ["stack", "output", "--json", "--stack", "dev"]
    assert SENTINEL_PASSWORD not in repr(target)


def test_stack_secret_may_be_a_json_object_with_a_password_key(
    aws: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    boto3.client("secretsmanager", region_name=REGION).put_secret_value(
        SecretId=aws, SecretString=json.dumps({"username": "admin", "password": SENTINEL_PASSWORD})
    )
    _fake_pulumi(tmp_path / "bin", _outputs(aws))
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    assert credentials.resolve_stack("dev").password == SENTINEL_PASSWORD


def test_stack_missing_outputs_are_named(aws: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    outputs = _outputs(aws)
    del outputs["admin_password_secret_arn"], outputs["region"]
    _fake_pulumi(tmp_path / "bin", outputs)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(TargetError, match="lack admin_password_secret_arn, region; run `pulumi up`"):
        credentials.resolve_stack("dev")


def test_stack_unknown_to_pulumi_reports_pulumis_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_pulumi(tmp_path / "bin", None, exit_code=255)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(TargetError, match=r"\(exit 255\): error: no stack named nope found"):
        credentials.resolve_stack("nope")


def test_stack_without_the_pulumi_cli_says_how_to_proceed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(TargetError, match=r"Pulumi CLI is not on PATH.*--url"):
        credentials.resolve_stack("dev")


def test_stack_secret_that_cannot_be_read_names_the_permission(
    aws: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    outputs = _outputs(aws.replace("admin-password", "no-such-secret"))
    _fake_pulumi(tmp_path / "bin", outputs)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(TargetError, match=r"ResourceNotFoundException.*secretsmanager:GetSecretValue"):
        credentials.resolve_stack("dev")


def test_with_http_url_overrides_only_the_redirect_address() -> None:
    target = ServerTarget("https://mlflow.example.com", "admin", SENTINEL_PASSWORD, source="stack dev")
    changed = credentials.with_http_url(target, "http://mlflow.example.com:8080")
    assert changed.redirect_url == "http://mlflow.example.com:8080"
    assert (changed.url, changed.password, changed.source) == (target.url, target.password, target.source)


# --- --local ----------------------------------------------------------------------------------


def test_local_status_gives_url_http_url_user_password_file_and_ca(tmp_path: Path) -> None:
    password_file = tmp_path / "admin-password"
    password_file.write_text(SENTINEL_PASSWORD)
    ca_file = tmp_path / "ca.pem"
    ca_file.write_text("-----BEGIN CERTIFICATE-----\n")
    target = credentials.local_target_from_status(
        {
            "url": "https://127.0.0.1:8443",
            "http_url": "http://127.0.0.1:8080",
            "username": "admin",
            "password_file": str(password_file),
            "ca_file": str(ca_file),
        }
    )
    assert (target.url, target.redirect_url, target.password, target.ca_file) == (
        "https://127.0.0.1:8443",
        "http://127.0.0.1:8080",
        SENTINEL_PASSWORD,
        str(ca_file),
    )


def test_local_stack_not_running_says_how_to_start_it() -> None:
    with pytest.raises(TargetError, match=r"lacks url.*mlflow-stack local up"):
        credentials.local_target_from_status({"running": False})


def test_local_stack_that_was_never_started_is_reported_with_its_state_dir(tmp_path: Path) -> None:
    with pytest.raises(TargetError, match=r"the local stack in .* is not running; start it with"):
        credentials.resolve_local(tmp_path / "never-started")


STACKS = sorted(
    p.name[len("Pulumi.") : -len(".yaml")]
    for p in (Path(__file__).parents[2] / "stacks").glob("Pulumi.*.yaml")
)


@pytest.mark.parametrize("stack", STACKS)
def test_every_stack_exports_the_outputs_smoke_reads(stack: str, stack_graph: Callable[[str], Any]) -> None:
    # The contract between infra/ (exports) and --stack (reads), checked on the real program.
    outputs = stack_graph(stack).outputs
    if outputs.get("tenancy_mode") == "platform":
        # No server to reach; --stack says so by this output (test_a_platform_stack_is_refused...).
        assert not set(credentials.STACK_OUTPUT_KEYS) - {"region"} & set(outputs)
        return
    missing = [key for key in credentials.STACK_OUTPUT_KEYS if key not in outputs]
    assert not missing, f"stack {stack} does not export {missing}"
    assert str(outputs["tracking_url"]).startswith("https://")
