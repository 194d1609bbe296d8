"""Restart PostgreSQL under load: the replicas recover by themselves, nothing acknowledged is lost.

PostgreSQL is stopped the hard way (SIGQUIT: immediate shutdown, so the restart replays the WAL like
after a crash or an RDS failover), kept down for a few seconds, and started again on the same data.
Nobody touches the replicas: their connection pools must notice the dead connections and reconnect.
"""

from __future__ import annotations

import signal
import time

import psutil
import pytest
from reliability_load import Api, ProcessSpec, SteadyLoad

from local.processes import wait_until

pytestmark = pytest.mark.integration

CLIENTS = 3
DOWN_SECONDS = 3.0
# The stated guarantee (README): writes succeed again within this long after PostgreSQL is back.
RECOVERY_SECONDS = 30.0
CONSECUTIVE_SUCCESSES = 5


def test_postgres_restart_under_load(reliability_stack, measurements) -> None:  # type: ignore[no-untyped-def]
    info = reliability_stack.info
    api = Api(info.url, (info.username, info.password), info.ca_file)
    experiment = api.create_experiment()
    postgres = next(p for p in info.processes if p.name == "postgres")
    spec = ProcessSpec.of("postgres", postgres.pid, postgres.log_file, signal.SIGINT)

    with SteadyLoad(api, experiment, CLIENTS) as load:
        time.sleep(4)
        stopped_at = time.monotonic()
        postmaster = psutil.Process(postgres.pid)
        postmaster.send_signal(signal.SIGQUIT)  # immediate shutdown: no checkpoint, WAL replay on start
        postmaster.wait(timeout=30)
        time.sleep(DOWN_SECONDS)
        record = spec.start()
        reliability_stack.restarted.append(record)
        wait_until(
            lambda: _accepts_connections(reliability_stack), what="PostgreSQL", timeout=60, record=record
        )
        back_at = time.monotonic()
        recovered_at = load.wait_for_successes(back_at, CONSECUTIVE_SUCCESSES, timeout=RECOVERY_SECONDS + 30)
        time.sleep(2)
    outage = load.events(stopped_at, recovered_at or time.monotonic())
    failed = [e for e in outage if not e.ok]
    recovery = (recovered_at - back_at) if recovered_at else float("inf")
    measurements.append(
        f"PostgreSQL restart: down {back_at - stopped_at:.1f} s (immediate shutdown + restart); "
        f"every client writing again {recovery:.1f} s after PostgreSQL accepted connections; "
        f"{len(failed)} failed requests during the outage ({sorted({e.detail[:60] for e in failed})[:3]}); "
        f"{load.acknowledged()} acknowledged"
    )
    assert recovered_at is not None and recovery <= RECOVERY_SECONDS, (
        f"no recovery within {RECOVERY_SECONDS}s"
    )
    assert load.lost_writes() == {}
    # While the database is down every refusal is the scrubbed 503 the client can retry on, never a
    # 500 (an HTML error page, or an alarm-feeding internal error) — whichever hook met the outage.
    answered = [e.detail for e in failed if e.detail.startswith("HTTP ")]
    assert all(d.startswith('HTTP 503: {"error_code": "TEMPORARILY_UNAVAILABLE"') for d in answered), sorted(
        set(answered)
    )[:5]


def _accepts_connections(handle) -> bool:  # type: ignore[no-untyped-def]
    import psycopg

    from local.stack import DB_NAME, DB_USER

    password = (handle.stack.secrets.db_password).read_text(encoding="utf-8")
    # As the replicas connect: the application role the bootstrap made (server/db_roles.py).
    with psycopg.connect(
        host="127.0.0.1",
        port=handle.stack.ports.postgres,
        user=DB_USER,
        password=password,
        dbname=DB_NAME,
        connect_timeout=2,
    ) as conn:
        conn.execute("SELECT 1")
    return True
