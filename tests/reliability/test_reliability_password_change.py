"""A password change made through the API is honoured by every replica within the cache TTL.

MLflow's credential cache (auth_cache_ttl_seconds) lives in each worker process and is keyed by
(user, HMAC of the password). A password change drops the user's entries only in the worker that
served it. So, precisely:
- the NEW password works at once on every replica and worker (it is in no cache, so it is checked
  against the database);
- the OLD password keeps working on other workers/replicas that cached it, for at most the TTL
  after they cached it — and is refused everywhere once that has passed.
"""

from __future__ import annotations

import secrets
import time

import pytest
from reliability_load import Api

from server import contract

pytestmark = pytest.mark.integration

TTL_SECONDS = int(contract.AUTH_CACHE_TTL_SECONDS.default or 0)
# Per-connection requests land on a random uvicorn worker: enough of them reach every worker.
REQUESTS_PER_REPLICA = 12
MARGIN_SECONDS = 5.0
SEARCH = "/api/2.0/mlflow/experiments/search"


def _statuses(url: str, auth: tuple[str, str], count: int) -> list[int]:
    api = Api(url, auth)
    return [api.request("GET", SEARCH, params={"max_results": "1"}).status_code for _ in range(count)]


def test_password_change_honoured_by_every_replica(reliability_stack, measurements) -> None:  # type: ignore[no-untyped-def]
    info = reliability_stack.info
    replicas = reliability_stack.replica_urls
    admin = (info.username, info.password)
    user = f"reliability-{secrets.token_hex(4)}"
    old, new = secrets.token_urlsafe(18), secrets.token_urlsafe(18)
    Api(replicas[0], admin).ok(
        "POST", "/api/2.0/mlflow/users/create", json={"username": user, "password": old}
    )

    # Every worker of every replica caches the old credential.
    for url in replicas:
        assert _statuses(url, (user, old), REQUESTS_PER_REPLICA) == [200] * REQUESTS_PER_REPLICA

    Api(replicas[0], admin).ok(
        "PATCH", "/api/2.0/mlflow/users/update-password", json={"username": user, "password": new}
    )
    changed_at = time.monotonic()

    # The new password is honoured at once, everywhere.
    for url in replicas:
        assert _statuses(url, (user, new), REQUESTS_PER_REPLICA) == [200] * REQUESTS_PER_REPLICA

    # The old one is refused everywhere within the TTL.
    last_accepted = {url: changed_at for url in replicas}
    refusals_in_a_row = dict.fromkeys(replicas, 0)
    deadline = changed_at + TTL_SECONDS + MARGIN_SECONDS
    while min(refusals_in_a_row.values()) < 3 and time.monotonic() < deadline:
        for url in replicas:
            if refusals_in_a_row[url] >= 3:
                continue
            codes = _statuses(url, (user, old), 4)
            assert set(codes) <= {200, 401}, codes
            if 200 in codes:
                last_accepted[url] = time.monotonic()
                refusals_in_a_row[url] = 0
            else:
                refusals_in_a_row[url] += 1
        time.sleep(0.5)
    staleness = {url: round(last_accepted[url] - changed_at, 1) for url in replicas}
    measurements.append(
        f"password change (cache TTL {TTL_SECONDS} s): new password accepted at once on every replica; "
        f"old password last accepted {staleness} s after the change"
    )
    for url in replicas:
        assert _statuses(url, (user, old), REQUESTS_PER_REPLICA) == [401] * REQUESTS_PER_REPLICA
        assert staleness[url] <= TTL_SECONDS + MARGIN_SECONDS
