"""Four CPU savings on MLflow's request hot paths, each keeping MLflow's answers unchanged.

Found by profiling a replica under the load benchmark (py-spy, GIL samples, bench/RESULTS.md):
with 8 clients most of a worker's CPU went to work whose result was never used.

1. Read-only sessions keep their loaded state at commit. MLflow's managed sessions commit at the
   end of every `with` block and SQLAlchemy then *expires* every instance it loaded (one Python call
   per run, param, tag and metric row). A `search_runs` of 100 runs loads thousands of rows, so
   this was ~30 % of a worker's CPU. The session is closed right after, so nothing ever re-reads
   the expired state (reading it after close raises DetachedInstanceError instead); only sessions
   MLflow marks `read_only=True` are changed, so no write's refresh-after-commit is affected.
2. Authorization of a run request learns the run's experiment by loading the whole run (params,
   tags, latest metrics) on every request. A run's experiment never changes (MLflow has no move),
   so the resolved requirement is kept per (run id, action) in a bounded LRU. Only runs that
   exist are cached: an unknown run id still costs a lookup and is still denied.
3. Run responses (get/search runs) for non-admins are parsed back into protobuf to withhold links
   to logged models the caller may not read. A response that carries no model link at all
   (no `model_inputs`, `model_outputs` or metric `model_id`) cannot be changed by that step, so it
   is returned as is; any response that mentions one of those names anywhere is checked as before.
4. REST responses are written as compact JSON. MLflow indents every response (`indent=2`), which
   makes `json.dumps` fall back from its C encoder to the pure-Python one and adds ~30 % whitespace
   to each body; the JSON value is identical, only the whitespace between tokens differs.

`MLFLOW_STACK_HOT_PATHS=false` turns all four off (the escape hatch, and the benchmark's ablation),
together with the authorization cache (server/auth_cache.py), which the same setting governs.
tests/unit/test_server_hot_paths.py pins the MLflow internals these rely on, so an MLflow upgrade
that changes them fails the build instead of silently changing behaviour.
"""

from __future__ import annotations

import functools
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

# ~100 bytes per entry: 10 000 active runs per worker cost ~1 MiB.
RUN_REQUIREMENT_CACHE_SIZE = 10_000
# Field names `_withhold_denied_run_model_links` acts on, as MLflow's JSON writes them
# (snake_case) and as a client may send them (camelCase is accepted by the parser).
MODEL_LINK_MARKERS: tuple[bytes, ...] = (
    b"model_inputs",
    b"model_outputs",
    b"model_id",
    b"modelInputs",
    b"modelOutputs",
    b"modelId",
)

_installed = False
_install_lock = threading.Lock()


class LruCache:
    """A small thread-safe LRU (cachetools' caches are not thread-safe; Flask runs handlers in threads)."""

    def __init__(self, maxsize: int) -> None:
        self._maxsize = maxsize
        self._items: OrderedDict[Any, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any) -> Any | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: Any, value: Any) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self._maxsize:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


def keep_state_on_read_only_commit(original: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap MLflow's `_get_managed_session_maker` so read-only sessions skip the expiry pass."""

    @functools.wraps(original)
    def get_managed_session_maker(session_maker: Any, db_type: str) -> Callable[..., Any]:
        managed = original(session_maker, db_type)

        @contextmanager
        def make_managed_session(read_only: bool = True) -> Iterator[Any]:
            with managed(read_only=read_only) as session:
                if read_only:
                    session.expire_on_commit = False
                yield session

        return make_managed_session

    return get_managed_session_maker


def cache_run_requirements(original: Callable[[str, str], Any], cache: LruCache) -> Callable[[str, str], Any]:
    """Wrap MLflow's `_run_requirement(run_id, action)`: its answer depends only on the run's
    (immutable) experiment, so it is computed once per run and action."""

    @functools.wraps(original)
    def run_requirement(run_id: str, action: str) -> Any:
        key = (run_id, action)
        cached = cache.get(key)
        if cached is None:
            resolved = original(run_id, action)
            if resolved is None:
                return None  # unknown run: denied, and looked up again next time
            cached = (resolved[0], tuple(resolved[1]))
            cache.put(key, cached)
        anchor, requirements = cached
        # Callers append requirements of their own (e.g. logged models), so each gets a new list.
        return anchor, list(requirements)

    return run_requirement


def may_carry_model_links(body: bytes) -> bool:
    return any(marker in body for marker in MODEL_LINK_MARKERS)


def skip_redaction_without_model_links(original: Callable[..., None]) -> Callable[..., None]:
    """Wrap MLflow's `_redact_run_response(resp, message, runs_of)`: a body with no model link
    has nothing to withhold."""

    @functools.wraps(original)
    def redact_run_response(resp: Any, response_message: Any, runs_of: Any) -> None:
        if not resp.is_streamed and not may_carry_model_links(resp.get_data()):
            return
        original(resp, response_message, runs_of)

    return redact_run_response


def compact_json(original: Callable[..., str]) -> Callable[..., str]:
    """Wrap MLflow's `message_to_json` as the REST handlers use it: same value, no indentation."""

    @functools.wraps(original)
    def message_to_json(message: Any, *, pretty: bool = True, convert_int64_to_number: bool = True) -> str:
        return original(message, pretty=False, convert_int64_to_number=convert_int64_to_number)

    return message_to_json


def install() -> None:
    """Install all four in this process (each uvicorn worker), before any store is created."""
    global _installed
    with _install_lock:
        if _installed:
            return
        import mlflow.server.auth as auth
        import mlflow.server.auth.sqlalchemy_store as auth_store
        import mlflow.server.handlers as handlers
        import mlflow.store.db.utils as db_utils
        import mlflow.store.model_registry.sqlalchemy_store as registry_store

        # The tracking store calls it through the module; the registry and auth stores imported
        # the name, so every reference is replaced.
        session_maker = keep_state_on_read_only_commit(db_utils._get_managed_session_maker)
        db_utils._get_managed_session_maker = session_maker
        registry_store._get_managed_session_maker = session_maker
        auth_store._get_managed_session_maker = session_maker
        auth._run_requirement = cache_run_requirements(
            auth._run_requirement, LruCache(RUN_REQUIREMENT_CACHE_SIZE)
        )
        auth._redact_run_response = skip_redaction_without_model_links(auth._redact_run_response)
        handlers.message_to_json = compact_json(handlers.message_to_json)
        _installed = True
