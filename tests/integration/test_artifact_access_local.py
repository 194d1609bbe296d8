"""`artifacts.clientAccess` on the real local stack: what the server offers MLflow clients, and
which path artifact bytes actually take.

- The session stack runs the default, `proxied`: server-info offers no multipart transfers, every
  route that would hand out a presigned S3 URL answers 404 (after authentication), and an MLflow
  client that *forces* multipart transfers still uploads and downloads — through the server.
- One extra replica on the same PostgreSQL and S3 emulator runs `presigned`: an MLflow client's
  large file goes to S3 by presigned URL (the replica never sees the bytes), and the smoke check
  for that mode passes against it.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import pytest
import requests
from mlflow.exceptions import _UnsupportedMultipartUploadException
from mlflow.tracking import MlflowClient

from lifecycle.client import Connection
from lifecycle.credentials import ServerTarget
from lifecycle.smoke_artifact_access import check_artifact_access
from lifecycle.smoke_context import SmokeContext
from local.processes import spawn, stop, wait_until
from local.stack import BUCKET, LocalStack, LocalStackInfo
from server import contract

pytestmark = pytest.mark.integration
REPO_ROOT = Path(__file__).resolve().parents[2]
SERVER_INFO = "/api/3.0/mlflow/server-info"
MIB = 1024 * 1024
# S3's smallest part is 5 MiB (all but the last); one 6 MiB file in 5 MiB chunks is two parts.
LARGE_FILE_BYTES = 6 * MIB
CLIENT_MULTIPART = {
    "MLFLOW_MULTIPART_UPLOAD_MINIMUM_FILE_SIZE": str(5 * MIB),
    "MLFLOW_MULTIPART_UPLOAD_CHUNK_SIZE": str(5 * MIB),
    "MLFLOW_MULTIPART_DOWNLOAD_MINIMUM_FILE_SIZE": str(5 * MIB),
    "MLFLOW_MULTIPART_DOWNLOAD_CHUNK_SIZE": str(5 * MIB),
}


@pytest.fixture(scope="module")
def admin(local_stack: LocalStackInfo) -> Iterator[Connection]:
    with Connection(local_stack.url, local_stack.username, local_stack.password, local_stack.ca_file) as conn:
        yield conn


@pytest.fixture
def mlflow_client(local_stack: LocalStackInfo, monkeypatch: pytest.MonkeyPatch) -> Any:
    """An MLflow client of the stack, as the admin, with small multipart thresholds."""

    def make(url: str, ca_file: str | None) -> MlflowClient:
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", local_stack.username)
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", local_stack.password)
        if ca_file:
            monkeypatch.setenv("MLFLOW_TRACKING_SERVER_CERT_PATH", ca_file)
        for name, value in CLIENT_MULTIPART.items():
            monkeypatch.setenv(name, value)
        mlflow.set_tracking_uri(url)
        return MlflowClient(url)

    yield make
    mlflow.set_tracking_uri(None)


def _large_file(directory: Path) -> tuple[Path, str]:
    path = directory / "weights.bin"
    data = os.urandom(LARGE_FILE_BYTES)
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


def _new_run(client: MlflowClient) -> Any:
    experiment_id = client.create_experiment(f"/artifact-access/{uuid.uuid4().hex[:10]}")
    return client.create_run(experiment_id)


def test_proxied_stack_offers_no_presigned_urls(local_stack: LocalStackInfo, admin: Connection) -> None:
    assert local_stack.artifact_client_access == "proxied"
    info = admin.request("GET", SERVER_INFO)
    assert info.status_code == 200
    assert info.json()["multipart_uploads_enabled"] is False
    assert info.json()["multipart_downloads_enabled"] is False

    run = _new_run_via(admin)
    path = f"{run['experiment_id']}/{run['run_id']}/artifacts/model.bin"
    routes = [
        ("POST", f"/api/2.0/mlflow-artifacts/mpu/create/{path}", {"path": "model.bin", "num_parts": 1}),
        (
            "POST",
            f"/api/2.0/mlflow-artifacts/mpu/complete/{path}",
            {"path": "m", "upload_id": "x", "parts": []},
        ),
        ("POST", f"/api/2.0/mlflow-artifacts/mpu/abort/{path}", {"path": "m", "upload_id": "x"}),
        ("GET", f"/api/2.0/mlflow-artifacts/presigned/{path}", None),
        ("POST", "/api/2.0/mlflow/artifacts/presigned-upload-url", {"run_id": run["run_id"], "path": "m"}),
        ("POST", "/api/2.0/mlflow/artifacts/presigned-download-url", {"run_id": run["run_id"], "path": "m"}),
    ]
    for method, route, body in routes:
        anonymous = requests.request(
            method, local_stack.url + route, json=body, verify=local_stack.ca_file, timeout=30
        )
        assert anonymous.status_code == 401, (route, anonymous.status_code)
        refused = admin.request(method, route, json=body)
        assert refused.status_code == 404, (route, refused.status_code, refused.text[:200])
        message = refused.json()["message"]
        # The client's own fallback rule keys on this prefix; no internal location is named.
        assert message.startswith(_UnsupportedMultipartUploadException.MESSAGE)
        assert "artifacts.clientAccess" in message
        assert BUCKET not in refused.text and "s3://" not in refused.text


def _new_run_via(conn: Connection) -> dict[str, str]:
    experiment = conn.call(
        "POST", "experiments/create", json={"name": f"/artifact-access/{uuid.uuid4().hex}"}
    )
    run = conn.call("POST", "runs/create", json={"experiment_id": experiment["experiment_id"]})
    return {"experiment_id": experiment["experiment_id"], "run_id": run["run"]["info"]["run_id"]}


def test_client_forcing_multipart_still_goes_through_the_proxied_server(
    local_stack: LocalStackInfo, mlflow_client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD", "true")
    monkeypatch.setenv("MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD", "true")
    client = mlflow_client(local_stack.url, local_stack.ca_file)
    run = _new_run(client)
    path, digest = _large_file(tmp_path)
    client.log_artifact(run.info.run_id, str(path))
    out = Path(client.download_artifacts(run.info.run_id, path.name, str(tmp_path / "down")))
    assert hashlib.sha256(out.read_bytes()).hexdigest() == digest


@pytest.fixture(scope="module")
def presigned_replica(local_stack: LocalStackInfo) -> Iterator[str]:
    """One more replica of the session stack, configured `presigned`, reached directly."""
    port = _free_port()
    env = LocalStack(local_stack.state_dir).replica_environment(port)
    env[contract.ARTIFACT_CLIENT_ACCESS.name] = "presigned"
    log = Path(local_stack.state_dir) / "logs" / "replica-presigned.log"
    record = spawn(
        "replica-presigned",
        [sys.executable, "-m", "server.entrypoint", *contract.COMMAND],
        log,
        env,
        cwd=REPO_ROOT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _healthy(url), what="the presigned replica", timeout=120, record=record)
        yield url
    finally:
        stop(record)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _healthy(url: str) -> bool:
    try:
        return requests.get(url + contract.HEALTH_PATH, timeout=2).status_code == 200
    except requests.RequestException:
        return False


def _access_log(local_stack: LocalStackInfo) -> str:
    return (Path(local_stack.state_dir) / "logs" / "replica-presigned.log").read_text(errors="replace")


def test_presigned_replica_sends_large_files_straight_to_s3(
    local_stack: LocalStackInfo, presigned_replica: str, mlflow_client: Any, tmp_path: Path
) -> None:
    info = requests.get(
        presigned_replica + SERVER_INFO, auth=(local_stack.username, local_stack.password), timeout=10
    ).json()
    assert info["multipart_uploads_enabled"] is True and info["multipart_downloads_enabled"] is True

    client = mlflow_client(presigned_replica, None)
    run = _new_run(client)
    path, digest = _large_file(tmp_path)
    client.log_artifact(run.info.run_id, str(path))
    out = Path(client.download_artifacts(run.info.run_id, path.name, str(tmp_path / "down")))
    assert hashlib.sha256(out.read_bytes()).hexdigest() == digest

    # The replica handed out URLs and completed the upload, but never carried the file itself:
    # no artifact PUT or GET of weights.bin reached it.
    log = _access_log(local_stack)
    assert "mpu/create/" in log and "mpu/complete/" in log and "/presigned/" in log
    carried = [
        line for line in log.splitlines() if "weights.bin" in line and "/mlflow-artifacts/artifacts/" in line
    ]
    assert carried == []


def test_smoke_check_exercises_the_configured_path(
    local_stack: LocalStackInfo, presigned_replica: str, admin: Connection
) -> None:
    run = _new_run_via(admin)
    artifact_uri = f"mlflow-artifacts:/{run['experiment_id']}/{run['run_id']}/artifacts"

    def outcome(url: str, ca_file: str | None, expected: str | None) -> str:
        target = ServerTarget(
            url, local_stack.username, local_stack.password, ca_file, artifact_client_access=expected
        )
        with Connection(url, target.username, target.password, ca_file) as conn:
            ctx = SmokeContext(target=target, conn=conn, smoke_id="smoke-access", timeout=30)
            ctx.experiment_id, ctx.run_id, ctx.run_artifact_uri = (
                run["experiment_id"],
                run["run_id"],
                artifact_uri,
            )
            return check_artifact_access(ctx)

    assert outcome(local_stack.url, local_stack.ca_file, "proxied").startswith("proxied:")
    detail = outcome(presigned_replica, None, "presigned")
    assert detail.startswith("presigned:") and "straight to S3" in detail
    # The check catches a deployment that does not do what its stack file says.
    with pytest.raises(Exception, match=re.escape("configured with artifacts.clientAccess: presigned")):
        outcome(local_stack.url, local_stack.ca_file, "presigned")
