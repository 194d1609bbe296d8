"""S3 down: artifact uploads fail with a clear error, tracking metadata keeps working and stays
consistent, and uploads work again as soon as S3 is back — without restarting any replica."""

from __future__ import annotations

import signal
import time

import psutil
import pytest
from reliability_load import Api, ProcessSpec

from local import s3_emulator
from local.processes import wait_until
from local.stack import BUCKET

pytestmark = pytest.mark.integration

# botocore's retries against a refused connection must still end in an answer, not a hang.
MAX_FAILED_UPLOAD_SECONDS = 60.0


def _artifact(experiment: str, run: str, name: str) -> str:
    return f"/api/2.0/mlflow-artifacts/artifacts/{experiment}/{run}/artifacts/{name}"


def _listing(api: Api, run: str) -> set[str]:
    files = api.ok("GET", "/api/2.0/mlflow/artifacts/list", params={"run_id": run}).get("files", [])
    return {f["path"] for f in files}


def test_s3_outage(reliability_stack, measurements) -> None:  # type: ignore[no-untyped-def]
    info = reliability_stack.info
    api = Api(info.url, (info.username, info.password), info.ca_file)
    experiment = api.create_experiment()
    run = api.create_run(experiment)
    octet = {"Content-Type": "application/octet-stream"}
    assert (
        api.request(
            "PUT", _artifact(experiment, run, "before.txt"), data=b"before", headers=octet
        ).status_code
        == 200
    )

    emulator = next(p for p in info.processes if p.name == "s3-emulator")
    spec = ProcessSpec.of("s3-emulator", emulator.pid, emulator.log_file)
    proc = psutil.Process(emulator.pid)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)

    started = time.monotonic()
    failed = api.request("PUT", _artifact(experiment, run, "during.txt"), data=b"during", headers=octet)
    took = time.monotonic() - started
    measurements.append(
        f"S3 down: upload answered HTTP {failed.status_code} after {took:.1f} s: {failed.text[:160]!r}"
    )
    # A server-side dependency failure: a 5xx, fast (its message is checked at the end).
    assert 500 <= failed.status_code < 600
    assert took < MAX_FAILED_UPLOAD_SECONDS

    # Tracking metadata does not depend on S3: writes during the outage are acknowledged and kept.
    metric = {"key": "during_s3_outage", "value": 1.0, "timestamp": int(time.time() * 1000), "step": 0}
    api.ok("POST", "/api/2.0/mlflow/runs/log-batch", json={"run_id": run, "metrics": [metric]})

    # S3 comes back on the same endpoint. (The emulator, unlike S3, keeps nothing across a restart,
    # so the bucket is created again — objects from before the outage are the emulator's loss.)
    record = spec.start()
    reliability_stack.restarted.append(record)
    port = reliability_stack.stack.ports.s3
    wait_until(lambda: s3_emulator.is_ready(port), what="S3 emulator", timeout=60, record=record)
    s3_emulator.ensure_bucket(port, BUCKET)

    uploaded = api.request("PUT", _artifact(experiment, run, "after.txt"), data=b"after", headers=octet)
    assert uploaded.status_code == 200, uploaded.text
    assert api.request("GET", _artifact(experiment, run, "after.txt")).content == b"after"
    assert _listing(api, run) == {"after.txt"}  # the failed upload left nothing behind
    stored = api.ok("GET", "/api/2.0/mlflow/runs/get", params={"run_id": run})["run"]
    assert [m["key"] for m in stored["data"].get("metrics", [])] == ["during_s3_outage"]
    assert stored["info"]["lifecycle_stage"] == "active" and stored["info"]["status"] == "RUNNING"
    # Checked last so that a missing message does not hide the consistency checks above: the
    # error must name the storage problem (a bare "Internal Server Error" tells the user nothing).
    assert any(word in failed.text.lower() for word in ("connect", "endpoint", "s3", "storage")), failed.text
