"""Process records: a process is identified by PID *and* start time, so a recycled PID is never
signalled; stopping takes the whole process tree down."""

from __future__ import annotations

import dataclasses
import socket
import sys
from pathlib import Path

import psutil

from local.processes import ProcessRecord, is_running, port_in_use, spawn, stop

# A parent that ignores nothing but does not pass SIGTERM on: its child must still be stopped.
SLEEPER = [
    sys.executable,
    "-c",
    "import subprocess, sys, time\n"
    "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
    "time.sleep(60)",
]


def _children(record: ProcessRecord) -> list[psutil.Process]:
    proc = psutil.Process(record.pid)
    children: list[psutil.Process] = []
    while not children:
        children = proc.children(recursive=True)
    return children


def test_a_recycled_pid_is_not_ours_and_is_never_killed(tmp_path: Path) -> None:
    record = spawn("sleeper", SLEEPER, tmp_path / "sleeper.log", {"PATH": "/usr/bin:/bin"})
    _children(record)
    try:
        impostor = dataclasses.replace(record, start_time=record.start_time - 3600)
        assert is_running(record) and not is_running(impostor)
        assert stop(impostor) is False
        assert psutil.Process(record.pid).is_running()
    finally:
        stop(record, timeout=2)


def test_stop_takes_down_the_process_and_its_children(tmp_path: Path) -> None:
    record = spawn("sleeper", SLEEPER, tmp_path / "sleeper.log", {"PATH": "/usr/bin:/bin"})
    children = _children(record)
    assert stop(record, timeout=2) is True
    assert not is_running(record)
    for child in children:
        assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE
    assert stop(record) is False  # already stopped: nothing to do


def test_record_round_trips_through_json(tmp_path: Path) -> None:
    record = ProcessRecord("x", 123, 1700000000.5, str(tmp_path / "x.log"), 2)
    assert ProcessRecord.from_json(record.to_json()) == record


def test_port_in_use_detects_a_listener() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        assert port_in_use(sock.getsockname()[1])
