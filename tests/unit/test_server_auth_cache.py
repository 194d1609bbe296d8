"""server/auth_cache.py: what it remembers, when it stops trusting it, and the MLflow internals it
relies on (an MLflow upgrade that changes them fails here). Revocation across workers and
replicas on the real stack: tests/reliability/test_reliability_revocation.py."""

from __future__ import annotations

import hashlib
import inspect
import secrets
import threading
import time

import pytest
import sqlalchemy

from server import auth_cache, auth_change_signal

# sha256 of the source of each MLflow function the authorization cache depends on, as verified for
# MLflow 3.17.2. If one changes, re-read it against server/auth_cache.py's docstring, then update.
VERIFIED_SOURCES = {
    # With `_USER_AUTH_CACHE` None, authentication is `store.authenticate_user` (+ the legacy check).
    "mlflow.server.auth:authenticate_request_basic_auth": "7103114214146729",
    "mlflow.server.auth:_authenticate_cached": "d09f6f01ada89979",
    # Admin flag and grants come from `store.get_user` and `store.list_grants`, and only from them.
    "mlflow.server.auth:sender_is_admin": "7a9ed36212d57ad6",
    "mlflow.server.auth:resolve_permissions": "89b4cbe233367e84",
    "mlflow.server.auth:_role_grant_for_resource": "933b3fe89ed5da43",
    # The remembered reads: answers depend only on their arguments and the auth tables.
    "mlflow.server.auth.sqlalchemy_store:SqlAlchemyStore.authenticate_user": "c472bd4fddf6b504",
    "mlflow.server.auth.sqlalchemy_store:SqlAlchemyStore.get_user": "d7a5d659abecfc5e",
    "mlflow.server.auth.sqlalchemy_store:SqlAlchemyStore.list_grants": "7da32bf8506919a0",
}


def _source_hash(qualified: str) -> str:
    module_name, name = qualified.split(":")
    target: object = __import__(module_name, fromlist=[name.split(".")[0]])
    for part in name.split("."):
        target = getattr(target, part)
    return hashlib.sha256(inspect.getsource(inspect.unwrap(target)).encode()).hexdigest()[:16]  # type: ignore[arg-type]


@pytest.mark.parametrize("qualified", sorted(VERIFIED_SOURCES))
def test_mlflow_internals_are_the_verified_ones(qualified: str) -> None:
    assert _source_hash(qualified) == VERIFIED_SOURCES[qualified], (
        f"{qualified} changed in this MLflow version: re-verify server/auth_cache.py against it "
        "(or run with MLFLOW_STACK_HOT_PATHS=false), then update VERIFIED_SOURCES"
    )


def test_basic_auth_reaches_the_store_through_its_module_global() -> None:
    import mlflow.server.auth as auth

    # cache_store replaces methods on that one instance; MLflow must call them through it.
    assert isinstance(auth.store, auth.SqlAlchemyStore)
    assert "store.authenticate_user(" in inspect.getsource(auth.authenticate_request_basic_auth)
    assert "store.get_user(" in inspect.getsource(auth.sender_is_admin)
    assert "store.list_grants(" in inspect.getsource(auth.resolve_permissions)
    assert "_USER_AUTH_CACHE is None" in inspect.getsource(auth.authenticate_request_basic_auth)
    # Every remembered read exists with that name.
    assert all(callable(getattr(auth.SqlAlchemyStore, name)) for name in auth_cache._FROZEN_READS)


# --- the cache's own rules ------------------------------------------------------------------------


def _subscribed_cache(**kwargs: float) -> auth_cache.AuthorizationCache:
    cache = auth_cache.AuthorizationCache(**kwargs)  # type: ignore[arg-type]
    cache.subscribed()
    return cache


def test_answers_are_remembered_only_while_subscribed() -> None:
    loads: list[int] = []

    def load() -> int:
        loads.append(1)
        return len(loads)

    cache = auth_cache.AuthorizationCache()
    assert [cache.get_or_load("k", load) for _ in range(2)] == [1, 2]  # never subscribed: always loads
    cache.subscribed()
    assert [cache.get_or_load("k", load) for _ in range(2)] == [3, 3]
    cache.unsubscribed()
    assert cache.get_or_load("k", load) == 4
    cache.subscribed()  # re-subscribing starts empty: what changed meanwhile is unknown
    assert cache.get_or_load("k", load) == 5


def test_a_load_in_flight_during_a_flush_is_not_remembered() -> None:
    cache = _subscribed_cache()
    loading, flushed = threading.Event(), threading.Event()

    def slow_load() -> str:
        loading.set()
        flushed.wait(5)
        return "read before the change"

    reader = threading.Thread(target=lambda: cache.get_or_load("k", slow_load))
    reader.start()
    loading.wait(5)
    cache.flush()  # the change's notification arrives while the old answer is being read
    flushed.set()
    reader.join(5)
    assert cache.get_or_load("k", lambda: "read after the change") == "read after the change"


def test_silence_from_the_database_stops_the_trust() -> None:
    cache = _subscribed_cache(stale_after=0.2)
    cache.get_or_load("k", lambda: "old")
    assert cache.get_or_load("k", lambda: "new") == "old"
    time.sleep(0.3)
    assert not cache.trusted()
    assert cache.get_or_load("k", lambda: "new") == "new"
    cache.heard_from_database()
    assert cache.trusted()


def test_keep_decides_what_is_remembered() -> None:
    cache = _subscribed_cache()
    assert cache.get_or_load("k", lambda: False, keep=bool) is False
    assert cache.get_or_load("k", lambda: True, keep=bool) is True
    assert cache.get_or_load("k", lambda: False, keep=bool) is True


# --- on MLflow's real auth store (SQLite here; PostgreSQL in the reliability tests) --------------


@pytest.fixture
def cached_store(tmp_path):
    from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore

    store = SqlAlchemyStore()
    store.init_db(f"sqlite:///{tmp_path}/auth.db")
    cache = _subscribed_cache()
    auth_cache.cache_store(store, cache)
    yield store, cache
    store.engine.dispose()


_UPDATES = {
    "is_admin": "UPDATE users SET is_admin = :value WHERE username = :username",
    "password_hash": "UPDATE users SET password_hash = :value WHERE username = :username",
}
# Generated, so no password sits in the repository.
FIRST, SECOND, WRONG = (secrets.token_urlsafe(18) for _ in range(3))


def _set_column(store, username: str, column: str, value: object) -> None:  # type: ignore[no-untyped-def]
    """A change behind the store's back (another replica's), which only the signal announces."""
    with store.engine.begin() as conn:
        conn.execute(sqlalchemy.text(_UPDATES[column]), {"value": value, "username": username})


def test_reads_are_remembered_until_the_signal(cached_store) -> None:
    store, cache = cached_store
    store.create_user("alice", FIRST)
    assert store.get_user("alice").is_admin is False
    _set_column(store, "alice", "is_admin", True)
    assert store.get_user("alice").is_admin is False  # remembered
    cache.flush()  # what the listener does on the notification
    assert store.get_user("alice").is_admin is True


def test_callers_get_their_own_copies(cached_store) -> None:
    store, _cache = cached_store
    store.create_user("bob", FIRST)
    store.get_user("bob").is_admin = True  # MLflow's User has a setter
    assert store.get_user("bob").is_admin is False
    grants = store.list_grants(store.get_user("bob").id, "default", {"experiment"})
    grants.append(("experiment", "*", "MANAGE"))
    assert store.list_grants(store.get_user("bob").id, "default", {"experiment"}) == []


def test_a_write_in_this_worker_flushes_at_once(cached_store) -> None:
    store, _cache = cached_store
    store.create_user("carol", FIRST)
    assert store.authenticate_user("carol", FIRST)
    store.update_user("carol", password=SECOND)
    assert not store.authenticate_user("carol", FIRST)
    assert store.authenticate_user("carol", SECOND)
    store.delete_user("carol")
    assert not store.authenticate_user("carol", SECOND)


def test_a_verified_credential_is_bound_to_the_password_hash(cached_store) -> None:
    from werkzeug.security import generate_password_hash

    store, cache = cached_store
    store.create_user("dave", FIRST)
    assert store.authenticate_user("dave", FIRST)
    assert not store.authenticate_user("dave", WRONG)  # failures are not remembered
    _set_column(store, "dave", "password_hash", generate_password_hash(SECOND))
    # Remembered user row, remembered check: still the old state until the signal...
    assert store.authenticate_user("dave", FIRST)
    # ...after it the row is re-read, and the check is keyed by the new hash: the old password fails.
    cache.flush()
    assert not store.authenticate_user("dave", FIRST)
    assert store.authenticate_user("dave", SECOND)


def test_the_change_signal_is_only_for_postgresql() -> None:
    assert auth_change_signal.is_postgresql("postgresql+psycopg://u@h:5432/mlflow_auth?sslmode=require")
    assert not auth_change_signal.is_postgresql("sqlite:///basic_auth.db")
    assert (
        auth_change_signal.libpq_uri("postgresql+psycopg://u@h:5432/mlflow_auth?sslmode=require")
        == "postgresql://u@h:5432/mlflow_auth?sslmode=require"
    )
