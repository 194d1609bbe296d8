"""Kill one replica under steady load: Caddy routes around it and no acknowledged write is lost."""

from __future__ import annotations

import signal
import time

import pytest
from reliability_load import Api, ProcessSpec, SteadyLoad, kill_tree

pytestmark = pytest.mark.integration

CLIENTS = 4
BEFORE_SECONDS = 5.0
AFTER_SECONDS = 12.0
# Caddy's active health check runs every 2 s; after that the dead replica is out of the pool.
ROUTED_AROUND_SECONDS = 5.0
# Requests that were already on the killed replica's connections can fail (a POST is not retried
# once it was sent); everything else is retried on the other replica by Caddy.
MAX_ERROR_RATE = 0.05


def test_kill_one_replica_under_load(reliability_stack, measurements) -> None:  # type: ignore[no-untyped-def]
    info = reliability_stack.info
    api = Api(info.url, (info.username, info.password), info.ca_file)
    experiment = api.create_experiment()
    victim_pid = reliability_stack.process("replica-1")
    victim = next(p for p in info.processes if p.name == "replica-1")
    spec = ProcessSpec.of("replica-1", victim_pid, victim.log_file)

    with SteadyLoad(api, experiment, CLIENTS) as load:
        time.sleep(BEFORE_SECONDS)
        killed_at = time.monotonic()
        kill_tree(victim_pid, signal.SIGKILL)  # the entrypoint and its uvicorn workers, at once
        time.sleep(AFTER_SECONDS)
    end = time.monotonic()

    before = load.events(end=killed_at)
    during = load.events(killed_at, killed_at + ROUTED_AROUND_SECONDS)
    after = load.events(killed_at + ROUTED_AROUND_SECONDS, end)
    failed = [e for e in during + after if not e.ok]
    error_rate = len(failed) / max(1, len(during) + len(after))
    measurements.append(
        f"replica kill: {len(before)} writes before, {len(during) + len(after)} in the "
        f"{end - killed_at:.0f} s after the kill, {len(failed)} failed "
        f"({error_rate:.1%}: {sorted({e.detail for e in failed})[:3]}); "
        f"{load.acknowledged()} acknowledged"
    )
    assert before and all(e.ok for e in before), "the stack was not healthy before the kill"
    # The balancer routes around the dead replica: after the health check has run, nothing fails.
    assert after and all(e.ok for e in after), [e.detail for e in after if not e.ok][:5]
    assert error_rate <= MAX_ERROR_RATE
    assert load.lost_writes() == {}

    # The replica comes back (as ECS would restart the task) and takes traffic again.
    record = spec.start()
    reliability_stack.restarted.append(record)
    direct = Api(reliability_stack.replica_urls[0], api.auth)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if direct.request("GET", "/health").status_code == 200:
                break
        except Exception:  # noqa: S110 - not listening yet; the deadline bounds the wait
            pass
        time.sleep(0.5)
    assert direct.create_run(experiment)
