"""During a database outage nobody learns where the database is: the 503 says only that the
tracking store is unavailable (stock MLflow: `psycopg.OperationalError … "<host>", port <port>`,
even to a caller whose credentials it could not check). The replica's log keeps the detail.
PostgreSQL is stopped for the checks and started again on the same data before the test ends.
"""

from __future__ import annotations

import base64
import signal
import time
import uuid
from pathlib import Path

import psutil
import pytest
import requests
from leak_check import assert_leaks_nothing, forbidden_strings
from reliability_load import ProcessSpec
from test_reliability_postgres_restart import _accepts_connections

from local.processes import wait_until

pytestmark = pytest.mark.integration


def test_a_database_outage_is_answered_without_its_address(reliability_stack) -> None:  # type: ignore[no-untyped-def]
    info = reliability_stack.info
    forbidden = forbidden_strings(reliability_stack.stack, info)
    url = reliability_stack.replica_urls[0]
    callers = {
        "unknown user": {"Authorization": _basic(f"nobody-{uuid.uuid4().hex[:6]}", "wrong-password")},
        "the admin": {"Authorization": _basic(info.username, info.password)},
    }
    # The stack's PostgreSQL, or the one another test of this package restarted.
    candidates = [*reversed(reliability_stack.restarted), *info.processes]
    postgres = next(p for p in candidates if p.name == "postgres" and _running(p.pid))
    spec = ProcessSpec.of("postgres", postgres.pid, postgres.log_file, signal.SIGINT)
    postmaster = psutil.Process(postgres.pid)
    postmaster.send_signal(signal.SIGINT)
    wait_until(lambda: not _running(postgres.pid), what="PostgreSQL to stop", timeout=30)
    try:
        answers = {}
        for caller, headers in callers.items():
            # The admin's credentials may sit in the credential cache: then the handler's query fails.
            response = requests.get(
                url + "/api/2.0/mlflow/experiments/search?max_results=1", headers=headers, timeout=30
            )
            answers[caller] = (response.status_code, response.content)
    finally:
        record = spec.start()
        reliability_stack.restarted.append(record)
        wait_until(
            lambda: _accepts_connections(reliability_stack), what="PostgreSQL", timeout=60, record=record
        )
    for caller, (status, body) in answers.items():
        assert status == 503, f"{caller}: HTTP {status}"
        assert b"the tracking store is unavailable" in body, f"{caller}: {body[:200]!r}"
        assert_leaks_nothing(body, forbidden)
    log = next(p for p in info.processes if p.name == "replica-1").log_file
    time.sleep(0.5)
    assert "OperationalError" in Path(log).read_text(encoding="utf-8", errors="replace")


def _basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
