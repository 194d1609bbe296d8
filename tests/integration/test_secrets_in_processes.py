"""No secret value in any process's environment or command line, on the real local stack.

Every process the stack runs — each replica's entrypoint, its uvicorn supervisor and workers (and
whatever else they start), PostgreSQL, the emulator, Caddy — and the maintenance command
(`python -m cli.runs runs maintenance --local --apply`, which runs `mlflow gc` in-process) while it
runs: /proc/<pid>/environ and /proc/<pid>/cmdline hold none of the values in the stack's secrets
directory, raw or URL-quoted. /proc/<pid>/environ is what the kernel kept from `execve`, so it is
what any process able to read it (a debugger, a crash reporter, `ps e`) sees.

Plus what the per-stack keys buy a user: MLflow does not report its built-in KEK passphrase, and a
webhook secret stored through one worker is readable by every other worker and replica.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from lifecycle.client import Connection

pytestmark = pytest.mark.integration
REPO_ROOT = Path(__file__).resolve().parents[2]


def secret_values(state_dir: str) -> dict[str, set[str]]:
    """Each secret file's value, as written and as it would appear URL-quoted in a URI."""
    values = {}
    for path in sorted((Path(state_dir) / "secrets").iterdir()):
        value = path.read_text(encoding="utf-8").rstrip("\r\n")
        assert len(value) >= 12, f"{path.name} is too short to be searched for"
        values[path.name] = {value, quote(value, safe=""), quote(value)}
    return values


def children_by_parent() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue  # exited meanwhile
        # Fields after the command name, which is in parentheses and may contain spaces.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def process_tree(root: int) -> list[int]:
    tree = children_by_parent()
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += tree.get(pid, [])
    return found


def exposed(pid: int) -> tuple[bytes, bytes] | None:
    """(environ, cmdline) of a process, or None once it has gone."""
    try:
        return Path(f"/proc/{pid}/environ").read_bytes(), Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return None


def leaks(pid: int, secrets: dict[str, set[str]]) -> list[str]:
    """'<pid> <command> <where>: <secret file name>' for each secret seen; never the value."""
    seen = exposed(pid)
    if seen is None:
        return []
    environ, cmdline = seen
    command = cmdline.split(b"\0")[:4]
    found = []
    for where, blob in (("environ", environ), ("cmdline", cmdline)):
        for name, forms in secrets.items():
            if any(form.encode() in blob for form in forms):
                found.append(f"{pid} {b' '.join(command).decode(errors='replace')} {where}: {name}")
    return found


def stack_processes(state_dir: str) -> dict[str, int]:
    state = json.loads((Path(state_dir) / "state.json").read_text(encoding="utf-8"))
    return {p["name"]: int(p["pid"]) for p in state["processes"]}


def test_no_process_of_the_running_stack_holds_a_secret(local_stack: Any) -> None:
    secrets = secret_values(local_stack.state_dir)
    assert {"db_password", "admin_password", "flask_secret_key"} <= set(secrets)
    processes = stack_processes(local_stack.state_dir)
    replicas = {name: pid for name, pid in processes.items() if name.startswith("replica-")}
    assert len(replicas) >= 2
    state = json.loads((Path(local_stack.state_dir) / "state.json").read_text(encoding="utf-8"))
    found: list[str] = []
    for name, root in processes.items():
        tree = process_tree(root)
        if name in replicas:
            # Not vacuous: the entrypoint, the uvicorn supervisor and every worker are looked at.
            commands = [exposed(pid) for pid in tree]
            uvicorn = [c for c in commands if c is not None and b"uvicorn" in c[1]]
            # uvicorn with one worker serves in its own process; with N it supervises N workers.
            workers = state["workers"]
            assert len(tree) >= (2 if workers == 1 else 2 + workers), (name, tree)
            assert uvicorn, f"{name}: no uvicorn process under the entrypoint"
        for pid in tree:
            found += leaks(pid, secrets)
    assert not found, "secret values in process environments/command lines:\n" + "\n".join(found)
    # The per-stack keys were among what was searched for: generated files, not MLflow's defaults.
    assert {"crypto_kek_passphrase", "webhook_encryption_key"} <= set(secrets)


MAINTENANCE_TIMEOUT_SECONDS = 240


def test_maintenance_and_mlflow_gc_hold_no_secret_while_they_run(local_stack: Any) -> None:
    secrets = secret_values(local_stack.state_dir)
    command = [
        sys.executable,
        "-m",
        "cli.runs",
        "runs",
        "maintenance",
        "--local",
        "--state-dir",
        local_stack.state_dir,
        # `mlflow gc` runs in-process either way (it reads the database password, which is what is
        # watched); 1h spares it the thousands of runs other tests on this shared stack deleted
        # seconds ago (the 5 000-run cleanup test): collecting those took 160 s here, over 240 s
        # on CI's loaded cores, and proves nothing more about secrets.
        "--gc-older-than",
        "1h",
        "--apply",
        "--json",
    ]
    env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "TMPDIR") if k in os.environ}
    # Output goes to files, not pipes: the loop below does not read while the command runs, and a
    # report or log larger than a pipe's buffer would block the command forever.
    output_dir = Path(tempfile.mkdtemp(prefix="maintenance-output-"))
    stdout_path, stderr_path = output_dir / "stdout", output_dir / "stderr"
    snapshots, found = 0, []
    deadline = time.monotonic() + MAINTENANCE_TIMEOUT_SECONDS
    with stdout_path.open("w") as stdout_file, stderr_path.open("w") as stderr_file:
        process = subprocess.Popen(
            command, cwd=REPO_ROOT, env=env, stdout=stdout_file, stderr=stderr_file, text=True
        )
        try:
            # Sampled until it exits: it reads the DB password and runs `mlflow gc` in-process midway.
            while process.poll() is None and time.monotonic() < deadline:
                for pid in process_tree(process.pid):
                    if exposed(pid) is not None:
                        snapshots += 1
                    found += leaks(pid, secrets)
                time.sleep(0.01)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=30)
    stdout, stderr = stdout_path.read_text(), stderr_path.read_text()
    shutil.rmtree(output_dir, ignore_errors=True)
    assert process.returncode == 0, f"exit {process.returncode}: {stderr[-2000:]}"
    report = json.loads(stdout)
    assert "gc" in json.dumps(report)  # the gc step ran (mlflow gc against the database)
    assert snapshots >= 10, "the maintenance command was hardly observed while running"
    assert not found, "secret values while maintenance ran:\n" + "\n".join(sorted(set(found)))


def test_mlflow_reports_a_stack_key_not_its_builtin_passphrase(local_stack: Any) -> None:
    with Connection(local_stack.url, local_stack.username, local_stack.password, local_stack.ca_file) as conn:
        for _ in range(8):  # every worker of every replica answers the same
            body = conn.call("GET", "/ajax-api/3.0/mlflow/gateway/secrets/config")
            assert body["using_default_passphrase"] is False, body


def test_a_webhook_secret_stored_by_one_worker_is_readable_by_all(local_stack: Any) -> None:
    """MLflow without a configured key encrypts webhook secrets with a random key per process: a
    webhook created through one worker then breaks listing on every other one (InvalidToken)."""
    with Connection(local_stack.url, local_stack.username, local_stack.password, local_stack.ca_file) as conn:
        name = f"secrets-test-{uuid.uuid4().hex[:8]}"
        created = conn.call(
            "POST",
            "webhooks",
            json={
                "name": name,
                # A public IP literal: MLflow resolves the host and refuses private ones. Never
                # called: no registered model is created while the webhook exists.
                "url": "https://1.1.1.1/mlflow-stack-test-hook",
                "events": [{"entity": "REGISTERED_MODEL", "action": "CREATED"}],
                "secret": uuid.uuid4().hex,
            },
        )
        webhook_id = created["webhook"]["webhook_id"]
        try:
            for _ in range(12):  # 2 replicas x 2 workers behind round-robin: every one is hit
                listed = conn.call("GET", "webhooks", params={"max_results": 1000})
                assert name in {w["name"] for w in listed.get("webhooks", [])}
        finally:
            conn.call("DELETE", f"webhooks/{webhook_id}")
