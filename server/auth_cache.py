"""Authorization without a database round trip, invalidated everywhere the moment the auth DB changes.

Per request, MLflow's basic-auth asks its auth store the same questions whose answers almost never
change: is this password right (a ~100 ms scrypt check), who is this user and are they an admin,
which grants do they hold. Each worker here remembers those *answers of the store* — never a
decision: MLflow's validators still decide every request from them, so the authorization matrix
is MLflow's by construction.

Invalidation is pushed, not timed: the auth tables' triggers (server/auth_change_signal.py)
NOTIFY on every committed change, each worker's listener thread drops everything it remembers on
any notification, and a worker that changed something itself drops its own at once. Changes are
rare (an admin's action), so flushing everything is both the simplest and the safe choice.

Fail safe. The cache is trusted only while the listener is subscribed and has heard from the
database within `STALE_AFTER_SECONDS` (it polls every `HEARTBEAT_SECONDS`). If its connection
drops — PostgreSQL restarted, the backend terminated, the network gone quiet — every request reads
the store directly until the listener has reconnected, re-subscribed and flushed. A store read
that was in flight when a flush happened is not remembered (generation check), so an answer read
before a change can never be stored after it.

Verified credentials are keyed by (user, the user's current password hash, HMAC of the password
under a per-process key): after a password change the stored hash differs, so an old credential
cannot match even in principle; only successful checks are remembered. With this installed,
MLflow's own per-worker TTL credential cache (which other workers never invalidate) is off.
"""

from __future__ import annotations

import functools
import hmac
import logging
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

from server import auth_change_signal

_logger = logging.getLogger("mlflow_stack.server")

HEARTBEAT_SECONDS = 1.0
STALE_AFTER_SECONDS = 5.0
RECONNECT_SECONDS = 0.25
# Far above any real user/grant population; reaching it only costs a flush.
MAX_ENTRIES = 100_000
LISTENER_APPLICATION_NAME = "mlflow-stack-auth-listener"

# Store reads on basic-auth's request path, each with how its answer is kept and handed back
# (callers get a fresh object, so nothing they do to it reaches the cache).
_FROZEN_READS: dict[str, tuple[Callable[[Any], Any], Callable[[Any], Any]]] = {
    "get_user": (
        lambda user: (user.id, user.username, user.password_hash, user.is_admin),
        lambda row: _user(*row),
    ),
    "has_user": (bool, bool),
    "list_grants": (tuple, list),
    "list_role_grants_for_user_in_workspace": (tuple, list),
    "is_workspace_admin": (bool, bool),
    "list_workspace_admin_workspaces": (frozenset, set),
    "user_has_any_role_in_workspace": (bool, bool),
    "list_user_present_workspaces": (frozenset, set),
}
# Store methods that change the auth tables (MLflow's naming), on top of the triggers' signal.
_WRITE_PREFIXES = (
    "create_",
    "update_",
    "delete_",
    "grant_",
    "revoke_",
    "rename_",
    "add_",
    "remove_",
    "assign_",
    "unassign_",
    "set_",
)

_MISSING = object()


def _user(id_: int, username: str, password_hash: str, is_admin: bool) -> Any:
    from mlflow.server.auth.entities import User

    return User(id_=id_, username=username, password_hash=password_hash, is_admin=is_admin)


def _hashable(value: Any) -> Any:
    if isinstance(value, (set, frozenset)):
        return frozenset(value)
    if isinstance(value, list):
        return tuple(value)
    return value


class AuthorizationCache:
    """Remembered store answers, a generation counter, and whether they may be trusted now."""

    def __init__(self, max_entries: int = MAX_ENTRIES, stale_after: float = STALE_AFTER_SECONDS) -> None:
        self._lock = threading.Lock()
        self._entries: dict[Any, Any] = {}
        self._generation = 0
        self._subscribed = False
        self._last_contact = float("-inf")
        self._max_entries = max_entries
        self._stale_after = stale_after

    def _trusted_locked(self) -> bool:
        return self._subscribed and time.monotonic() - self._last_contact < self._stale_after

    def trusted(self) -> bool:
        with self._lock:
            return self._trusted_locked()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def flush(self) -> None:
        with self._lock:
            self._entries.clear()
            self._generation += 1

    def subscribed(self) -> None:
        """The listener is (again) subscribed: whatever changed while it was not is unknown."""
        with self._lock:
            self._entries.clear()
            self._generation += 1
            self._subscribed = True
            self._last_contact = time.monotonic()

    def unsubscribed(self) -> None:
        with self._lock:
            self._entries.clear()
            self._generation += 1
            self._subscribed = False

    def heard_from_database(self) -> None:
        with self._lock:
            self._last_contact = time.monotonic()

    def get_or_load(
        self, key: Any, load: Callable[[], Any], keep: Callable[[Any], bool] = lambda _value: True
    ) -> Any:
        """The remembered answer for `key`, else `load()`'s — remembered if `keep` says so and
        nothing was flushed meanwhile. Untrusted: always `load()`."""
        with self._lock:
            if not self._trusted_locked():
                generation = None
            else:
                hit = self._entries.get(key, _MISSING)
                if hit is not _MISSING:
                    return hit
                generation = self._generation
        value = load()
        if generation is not None and keep(value):
            with self._lock:
                if generation == self._generation and self._trusted_locked():
                    if len(self._entries) >= self._max_entries:
                        self._entries.clear()
                    self._entries[key] = value
        return value


class ChangeListener(threading.Thread):
    """LISTENs on the auth DB's change channel; flushes on every notification; reconnects forever."""

    def __init__(self, conninfo: str, cache: AuthorizationCache) -> None:
        super().__init__(name="mlflow-stack-auth-listener", daemon=True)
        self._conninfo = conninfo
        self._cache = cache
        self._stopping = threading.Event()

    def stop(self) -> None:
        self._stopping.set()

    def run(self) -> None:
        import psycopg

        while not self._stopping.is_set():
            try:
                with psycopg.connect(
                    self._conninfo,
                    autocommit=True,
                    application_name=LISTENER_APPLICATION_NAME,
                    # A peer that vanished without a FIN is noticed by the heartbeat's timeout too.
                    keepalives=1,
                    keepalives_idle=5,
                    keepalives_interval=2,
                    keepalives_count=2,
                ) as conn:
                    conn.execute(f"LISTEN {auth_change_signal.CHANNEL}")
                    self._cache.subscribed()
                    _logger.info("authorization cache: listening for auth database changes")
                    while not self._stopping.is_set():
                        for _notification in conn.notifies(timeout=HEARTBEAT_SECONDS):
                            self._cache.flush()
                            self._cache.heard_from_database()
                        conn.execute("SELECT 1")
                        self._cache.heard_from_database()
            except Exception as exc:  # any failure means the signal may have been lost
                self._cache.unsubscribed()
                if not self._stopping.is_set():
                    _logger.warning(
                        "authorization cache: change signal lost (%s); reading the auth store directly "
                        "until re-subscribed",
                        type(exc).__name__,
                    )
                    self._stopping.wait(RECONNECT_SECONDS)
        self._cache.unsubscribed()


def _credential_key(process_key: bytes, username: str, password_hash: str, password: str) -> Any:
    digest = hmac.new(process_key, password.encode("utf-8"), "sha256").digest()
    return ("authenticate_user", username, password_hash, digest)


def cache_store(store: Any, cache: AuthorizationCache) -> None:
    """Replace the store instance's reads with remembered ones and its writes with flushing ones."""
    process_key = secrets.token_bytes(32)

    def remembered(name: str) -> Callable[..., Any]:
        original = getattr(store, name)
        freeze, thaw = _FROZEN_READS[name]

        @functools.wraps(original)
        def read(*args: Any, **kwargs: Any) -> Any:
            if kwargs:  # e.g. use_primary=True: the caller asked for the database itself
                return original(*args, **kwargs)
            key = (name, *(_hashable(a) for a in args))
            return thaw(cache.get_or_load(key, lambda: freeze(original(*args))))

        return read

    for name in _FROZEN_READS:
        setattr(store, name, remembered(name))

    original_authenticate = store.authenticate_user
    get_user = store.get_user

    @functools.wraps(original_authenticate)
    def authenticate_user(username: str, password: str, **kwargs: Any) -> bool:
        from mlflow.exceptions import MlflowException

        if kwargs:
            return original_authenticate(username, password, **kwargs)
        try:
            password_hash = get_user(username).password_hash
        except MlflowException:
            return original_authenticate(username, password)  # no such user: MLflow's own answer
        key = _credential_key(process_key, username, password_hash, password)
        # Only a successful check is remembered; a wrong password is checked every time.
        return bool(cache.get_or_load(key, lambda: original_authenticate(username, password), keep=bool))

    store.authenticate_user = authenticate_user

    for name in dir(type(store)):
        if name.startswith(_WRITE_PREFIXES) and callable(getattr(store, name)):
            setattr(store, name, _flushing(getattr(store, name), cache))


def _flushing(original: Callable[..., Any], cache: AuthorizationCache) -> Callable[..., Any]:
    @functools.wraps(original)
    def write(*args: Any, **kwargs: Any) -> Any:
        try:
            return original(*args, **kwargs)
        finally:
            # This worker's next request must not wait for the notification to come back.
            cache.flush()

    return write


def install() -> AuthorizationCache | None:
    """In each worker, after basic-auth's app (and its store) exist: remember the store's answers
    and start the listener. Not PostgreSQL (no change signal): MLflow's behaviour, unchanged."""
    import mlflow.server.auth as auth

    uri = auth.auth_config.database_uri
    if not auth_change_signal.is_postgresql(uri):
        _logger.warning("authorization cache: off, the auth database is not PostgreSQL (no change signal)")
        return None
    cache = AuthorizationCache()
    cache_store(auth.store, cache)
    # MLflow's per-worker TTL credential cache is what other workers never invalidate; the
    # remembered credential checks above replace it.
    auth._USER_AUTH_CACHE = None
    ChangeListener(auth_change_signal.libpq_uri(uri), cache).start()
    return cache
