"""`local up | down | status` on a stack of its own: idempotent up, failover, clean down, data kept.

Separate from the shared `local_stack` fixture because it kills a replica and stops the stack.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import requests

from local.stack import LocalStack, LocalStackError, LocalStackInfo

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def stack(pick_free_ports, make_state_dir) -> Iterator[LocalStack]:  # type: ignore[no-untyped-def]
    state_dir = make_state_dir("mlflow-stack-lifecycle-")
    s = LocalStack(state_dir, replicas=2, ports=pick_free_ports(2))
    try:
        yield s
    finally:
        s.down(purge=True)


def _api(info: LocalStackInfo, method: str, path: str, **kwargs) -> requests.Response:  # type: ignore[no-untyped-def]
    return requests.request(
        method,
        f"{info.url}/api/2.0/mlflow/{path}",
        auth=(info.username, info.password),
        verify=info.ca_file,
        timeout=30,
        **kwargs,
    )


def _all_pids(info: LocalStackInfo) -> list[tuple[int, float]]:
    """Every process of the stack, descendants included, as (pid, start time)."""
    found = []
    for p in info.processes:
        if not p.running:
            continue
        proc = psutil.Process(p.pid)
        for member in [proc, *proc.children(recursive=True)]:
            found.append((member.pid, member.create_time()))
    return found


def _alive(pid: int, start_time: float) -> bool:
    try:
        proc = psutil.Process(pid)
        return abs(proc.create_time() - start_time) < 1 and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_lifecycle(stack: LocalStack) -> None:
    # A taken port fails `up` clearly, naming the port and the flag, before anything starts.
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", stack.ports.https))
        blocker.listen()
        with pytest.raises(LocalStackError, match=rf"https port {stack.ports.https} is in use.*--https-port"):
            stack.up()
    assert not stack.status().processes

    info = stack.up()
    assert info.running and not info.already_running
    experiment = _api(info, "POST", "experiments/create", json={"name": "kept-across-restarts"})
    assert experiment.status_code == 200, experiment.text
    artifact_url = (
        f"{info.url}/api/2.0/mlflow-artifacts/artifacts/{experiment.json()['experiment_id']}/kept.bin"
    )
    payload = os.urandom(64 * 1024)
    uploaded = requests.put(
        artifact_url, data=payload, auth=(info.username, info.password), verify=info.ca_file, timeout=30
    )
    assert uploaded.status_code == 200, uploaded.text

    # `up` again: says so, starts nothing, changes nothing.
    again = stack.up()
    assert again.already_running
    assert [p.pid for p in again.processes] == [p.pid for p in info.processes]
    cli = subprocess.run(
        [sys.executable, "-m", "cli", "local", "up", "--state-dir", info.state_dir],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    assert cli.returncode == 0 and "already running" in cli.stdout

    # Kill one replica outright (its whole process group): Caddy routes every request around it.
    victim = next(p for p in info.processes if p.name == "replica-1")
    os.killpg(victim.pid, signal.SIGKILL)
    with contextlib.suppress(psutil.NoSuchProcess):
        psutil.Process(victim.pid).wait(timeout=10)  # reap it: it is a child of this test process
    statuses = [
        requests.get(
            f"{info.url}/version", auth=(info.username, info.password), verify=info.ca_file, timeout=30
        )
        for _ in range(12)
    ]
    assert [r.status_code for r in statuses] == [200] * 12
    status = {p.name: p.running for p in stack.status().processes}
    assert status["replica-1"] is False and status["replica-2"] is True
    with pytest.raises(LocalStackError, match=r"partly running.*replica-1"):
        stack.up()

    # `down` stops every process it started, workers included, by PID (+ start time).
    before = _all_pids(stack.status())
    assert len(before) > len(info.processes)  # uvicorn workers are children of the replicas
    stopped = stack.down()
    assert set(stopped) == {"postgres", "s3-emulator", "replica-2", "caddy"}  # replica-1 was already dead
    assert [pid for pid, started in before if _alive(pid, started)] == []
    assert not stack.status().running
    # A replica removes its auth config (admin password, auth DB URI) when it stops; only the one
    # killed outright above (SIGKILL runs no cleanup) left its config, inside the state dir.
    leftover = list(stack.replica_tmp_dir.glob("mlflow-stack-auth-*"))
    assert len(leftover) == 1, leftover

    # Data is kept: the experiment (PostgreSQL) and its artifact (S3 emulator) survive down + up.
    restarted = stack.up()
    found = _api(
        restarted, "GET", "experiments/get-by-name", params={"experiment_name": "kept-across-restarts"}
    )
    assert found.status_code == 200, found.text
    downloaded = requests.get(
        artifact_url, auth=(info.username, info.password), verify=info.ca_file, timeout=30
    )
    assert downloaded.status_code == 200 and downloaded.content == payload

    # --purge removes the state dir after stopping everything.
    pids = _all_pids(restarted)
    stack.down(purge=True)
    assert not Path(restarted.state_dir).exists()
    assert [pid for pid, started in pids if _alive(pid, started)] == []
