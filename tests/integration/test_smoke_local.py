"""`mlflow-stack smoke` against the real local stack: Caddy TLS, two MLflow replicas, PostgreSQL and
the S3 emulator. The smoke runs as the real CLI (a subprocess), and afterwards the server, its
auth store and the artifact bucket are inspected directly for anything left behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import certifi
import pytest

from lifecycle.client import Connection, MlflowApiError
from lifecycle.credentials import ServerTarget
from lifecycle.smoke import run_smoke
from lifecycle.smoke_checks import CHECKS, Check, CheckFailed, SmokeContext, check_registry
from local.s3_emulator import DUMMY_CREDENTIALS
from local.stack import BUCKET, LocalStackInfo

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
EXPECTED_CHECKS = [check.name for check in CHECKS]
EXPECTED_CLEANUP = [
    "temporary user",
    "registered model",
    "experiment lookup",
    "traces",
    "logged models",
    "artifacts",
    "runs",
    "experiment",
]


def smoke_cli(*argv: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_PASSWORD"}
    return subprocess.run(
        [sys.executable, "-m", "cli", "smoke", *argv],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="module")
def admin(local_stack: LocalStackInfo) -> Iterator[Connection]:
    with Connection(local_stack.url, local_stack.username, local_stack.password, local_stack.ca_file) as conn:
        yield conn


def _bucket_keys(info: LocalStackInfo, prefix: str) -> list[str]:
    s3 = boto3.client(
        "s3",
        endpoint_url=info.s3_endpoint_url,
        aws_access_key_id=DUMMY_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=DUMMY_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        region_name=DUMMY_CREDENTIALS["AWS_DEFAULT_REGION"],
    )
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    return [obj["Key"] for obj in listed.get("Contents", [])]


def _missing(call: Any) -> bool:
    try:
        call()
    except MlflowApiError as exc:
        return exc.error_code == "RESOURCE_DOES_NOT_EXIST"
    return False


def assert_nothing_left(admin: Connection, info: LocalStackInfo, smoke_id: str) -> None:
    """No active experiment, run, model, user or artifact of this smoke remains."""
    experiment = admin.call(
        "GET", "experiments/get-by-name", params={"experiment_name": f"/smoke/{smoke_id}/run"}
    )
    experiment = experiment["experiment"]
    # REST can only soft-delete; the report says so. Nothing is left *active*.
    assert experiment["lifecycle_stage"] == "deleted"
    active = list(
        admin.paginate(
            "experiments/search",
            {"filter": f"name LIKE '%{smoke_id}%'", "view_type": "ACTIVE_ONLY", "max_results": 100},
            "experiments",
        )
    )
    assert active == []
    runs = list(
        admin.paginate(
            "runs/search",
            {"experiment_ids": [experiment["experiment_id"]], "run_view_type": "ACTIVE_ONLY"},
            "runs",
        )
    )
    assert runs == []
    traces = admin.call(
        "POST",
        "/api/3.0/mlflow/traces/search",
        json={
            "locations": [
                {
                    "type": "MLFLOW_EXPERIMENT",
                    "mlflow_experiment": {"experiment_id": experiment["experiment_id"]},
                }
            ]
        },
    ).get("traces", [])
    assert traces == []
    assert _missing(lambda: admin.call("GET", "registered-models/get", params={"name": smoke_id}))
    assert _missing(lambda: admin.call("GET", "users/get", params={"username": smoke_id}))
    models = list(
        admin.paginate("logged-models/search", {"experiment_ids": [experiment["experiment_id"]]}, "models")
    )
    assert models == []
    # The artifact root is s3://<bucket>/mlflow-artifacts/<experiment id>/...
    assert _bucket_keys(info, f"mlflow-artifacts/{experiment['experiment_id']}/") == []


def test_full_smoke_over_https_passes_and_leaves_nothing_behind(
    local_stack: LocalStackInfo, admin: Connection
) -> None:
    started = time.monotonic()
    result = smoke_cli("--local", "--state-dir", local_stack.state_dir, "--json")
    wall_seconds = time.monotonic() - started
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)

    assert report["url"] == local_stack.url and report["url"].startswith("https://")
    assert [(c["name"], c["status"]) for c in report["checks"]] == [
        (name, "PASS") for name in EXPECTED_CHECKS
    ]
    assert [(c["name"], c["status"]) for c in report["cleanup"]] == [
        (name, "PASS") for name in EXPECTED_CLEANUP
    ]
    details = {c["name"]: c["detail"] for c in report["checks"]}
    assert f"-> 308 {local_stack.url}/health" in details["https redirect"]
    assert details["tls"].startswith(("TLSv1.3", "TLSv1.2"))
    assert "predicted [3.0, 5.0, 7.0]" in details["registry"]
    assert "403 before a grant, 200 after READ" in details["isolation"]
    # OTLP through Caddy with basic-auth; anonymous export refused.
    assert "span exported over OTLP/HTTP (anonymous: 401)" in details["tracing (OTLP)"]
    assert any("mlflow gc" in note for note in report["notes"])
    assert local_stack.password not in result.stdout + result.stderr

    assert_nothing_left(admin, local_stack, report["smoke_id"])
    print(
        f"\nsmoke wall time against the local stack: {wall_seconds:.1f}s (checks {report['total_seconds']}s)"
    )


def test_table_output_is_readable_and_exit_code_zero(local_stack: LocalStackInfo) -> None:
    result = smoke_cli(
        "--url",
        local_stack.url,
        "--http-url",
        local_stack.http_url,
        "--username",
        local_stack.username,
        "--password-file",
        local_stack.password_file,
        "--ca-file",
        local_stack.ca_file,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"mlflow-stack smoke: {local_stack.url} (--url), objects named smoke-")
    assert lines[1].split() == ["CHECK", "RESULT", "SECONDS", "DETAIL"]
    total = next(line for line in lines if line.startswith("TOTAL"))
    assert total.split()[:2] == ["TOTAL", "PASS"]
    assert f"{len(CHECKS)} passed, 0 failed, 0 skipped; cleanup 8/8 ok" in total
    # The mlflow client's own banners ("View run ...") must not leak into the report.
    assert "View run" not in result.stdout
    assert local_stack.password not in result.stdout + result.stderr


def test_wrong_password_fails_the_auth_check_with_a_clear_message(
    local_stack: LocalStackInfo, tmp_path: Path
) -> None:
    wrong = tmp_path / "wrong-password"
    wrong.write_text("not-the-admin-password-at-all")
    result = smoke_cli(
        "--url",
        local_stack.url,
        "--http-url",
        local_stack.http_url,
        "--username",
        local_stack.username,
        "--password-file",
        str(wrong),
        "--ca-file",
        local_stack.ca_file,
        "--json",
    )
    assert result.returncode == 1
    report = json.loads(result.stdout)
    statuses = {c["name"]: c["status"] for c in report["checks"]}
    assert statuses == {
        "health": "PASS",
        "https redirect": "PASS",
        "tls": "PASS",
        "auth: anonymous -> 401": "PASS",
        "auth: wrong password -> 401": "PASS",
        "auth: admin login": "FAIL",
        "tracking": "SKIP",
        "artifacts": "SKIP",
        "artifact access": "SKIP",
        "tracing (OTLP)": "SKIP",
        "registry": "SKIP",
        "isolation": "SKIP",
    }
    login = next(c for c in report["checks"] if c["name"] == "auth: admin login")
    assert "rejected the password for user 'admin' (401)" in login["detail"]
    assert "--password-file" in login["detail"]
    assert report["cleanup"] == []


def test_wrong_ca_fails_the_tls_check(local_stack: LocalStackInfo) -> None:
    # The public CA bundle does not contain the local stack's private CA.
    result = smoke_cli(
        "--url",
        local_stack.url,
        "--http-url",
        local_stack.http_url,
        "--username",
        local_stack.username,
        "--password-file",
        local_stack.password_file,
        "--ca-file",
        certifi.where(),
        "--json",
    )
    assert result.returncode == 1
    report = json.loads(result.stdout)
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["tls"]["status"] == "FAIL"
    assert "not trusted by CA file" in checks["tls"]["detail"]
    assert "--ca-file" in checks["tls"]["detail"]
    assert checks["health"]["status"] == "FAIL"
    assert checks["tracking"]["status"] == "SKIP"


def test_cleanup_still_runs_when_a_check_fails_midway(local_stack: LocalStackInfo, admin: Connection) -> None:
    def registry_then_failure(ctx: SmokeContext) -> str:
        check_registry(ctx)  # really registers the model version, then fails
        raise CheckFailed("injected failure after the model was registered")

    checks = [
        Check("registry", registry_then_failure, c.requires) if c.name == "registry" else c for c in CHECKS
    ]
    target = ServerTarget(
        url=local_stack.url,
        username=local_stack.username,
        password=local_stack.password,
        ca_file=local_stack.ca_file,
        http_url=local_stack.http_url,
        source="local stack",
    )
    report = run_smoke(target, checks=checks)

    statuses = {c.name: c.status for c in report.checks}
    assert statuses["registry"] == "FAIL"
    assert statuses["isolation"] == "PASS"  # later checks still ran
    assert (
        report.checks[EXPECTED_CHECKS.index("registry")].detail
        == "injected failure after the model was registered"
    )
    assert [(c.name, c.status) for c in report.cleanup] == [(name, "PASS") for name in EXPECTED_CLEANUP]
    assert report.exit_code == 1
    assert_nothing_left(admin, local_stack, report.smoke_id)


def test_parallel_smokes_do_not_collide(local_stack: LocalStackInfo, admin: Connection) -> None:
    argv = ["--local", "--state-dir", local_stack.state_dir, "--json"]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_PASSWORD"}
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "cli", "smoke", *argv],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = []
    try:
        for process in processes:
            stdout, stderr = process.communicate(timeout=300)
            outputs.append((process.returncode, stdout, stderr))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    reports = []
    for code, stdout, stderr in outputs:
        assert code == 0, stdout + stderr
        reports.append(json.loads(stdout))
    assert reports[0]["smoke_id"] != reports[1]["smoke_id"]
    for report in reports:
        assert_nothing_left(admin, local_stack, report["smoke_id"])
