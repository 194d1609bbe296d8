"""A local stack of the reliability tests' own: they kill and restart its parts.

The session `local_stack` fixture is shared by the integration tests, so nothing here touches it.
`reliability_stack` (package scope) starts a fresh stack — PostgreSQL, S3 emulator, 2 replicas of
the kit's defaults, Caddy — and stops it by PID at the end, together with every process a test
restarted itself (`restarted.append(record)`). Measured numbers (error rates, recovery times) are
collected in `measurements` and printed in the terminal summary.
"""

from __future__ import annotations

import contextlib
import random
import shutil
import socket
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from local.processes import ProcessRecord, port_in_use, stop
from local.stack import LocalStack, LocalStackInfo, Ports
from server import contract

REPLICAS = 2
MEASUREMENTS: list[str] = []


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _free_ports() -> Ports:
    singles: set[int] = set()
    while len(singles) < 4:
        singles.add(_free_port())
    rng = random.Random()  # noqa: S311 - picking test ports, not secrets
    for _ in range(200):
        base = rng.randrange(30000, 40000)
        if not any(p in singles or port_in_use(p) for p in range(base, base + REPLICAS)):
            https, http, postgres, s3 = sorted(singles)
            return Ports(https=https, http=http, postgres=postgres, s3=s3, replica_base=base)
    raise RuntimeError("no run of free ports found for the replicas")


@dataclass
class ReliabilityStack:
    stack: LocalStack
    info: LocalStackInfo
    restarted: list[ProcessRecord] = field(default_factory=list)

    @property
    def replica_urls(self) -> list[str]:
        return [f"http://127.0.0.1:{p}" for p in self.stack.ports.replica_ports(REPLICAS)]

    def process(self, name: str) -> int:
        """PID of the stack's process `name` as recorded at `up`."""
        return next(p.pid for p in self.info.processes if p.name == name)


@pytest.fixture(scope="package")
def reliability_stack() -> Iterator[ReliabilityStack]:
    # Directly under /tmp: PostgreSQL (unprivileged when we are root) must traverse every parent.
    state_dir = Path(tempfile.mkdtemp(prefix="mlflow-stack-reliability-"))
    # The kit's default workers per replica: the credential cache is per worker, so the
    # password-change test must see more than one worker per replica.
    stack = LocalStack(
        state_dir, replicas=REPLICAS, ports=_free_ports(), workers=int(contract.WORKERS.default or 1)
    )
    info = stack.up()
    handle = ReliabilityStack(stack, info)
    try:
        yield handle
    finally:
        stack.down()
        for record in reversed(handle.restarted):
            with contextlib.suppress(Exception):
                stop(record)
        shutil.rmtree(state_dir, ignore_errors=True)


@pytest.fixture
def measurements() -> list[str]:
    return MEASUREMENTS


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if MEASUREMENTS:
        terminalreporter.section("reliability measurements")
        for line in MEASUREMENTS:
            terminalreporter.write_line(line)
