"""server/hot_paths.py: each saving keeps MLflow's answers, and the MLflow internals it relies on
are the ones it was verified against (an MLflow upgrade that changes them fails here)."""

from __future__ import annotations

import hashlib
import inspect
import json
import threading

import pytest
import sqlalchemy
from flask import Response
from mlflow.protos.service_pb2 import SearchRuns
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker
from sqlalchemy.orm.exc import DetachedInstanceError

from server import hot_paths

# sha256 of the source of each MLflow function whose behaviour a hot path depends on, as verified
# for MLflow 3.17.2. If one changes, re-read it against the reasoning in server/hot_paths.py's
# docstring, then update the hash.
VERIFIED_SOURCES = {
    # 1: commits at the end of the block, then closes the session.
    "mlflow.store.db.utils:_get_managed_session_maker": "1f18307528cb24b6",
    # 2: the answer depends only on the run's experiment id and the action.
    "mlflow.server.auth:_run_requirement": "dd0c00e3e8452138",
    # 3: acts only on model_inputs, model_outputs and metric model_id.
    "mlflow.server.auth:_withhold_denied_run_model_links": "03c3384ba44af821",
    "mlflow.server.auth:_redact_run_response": "c394237f3124c868",
    # 4: `pretty` only switches indentation.
    "mlflow.utils.proto_json_utils:message_to_json": "a9b66a85e21d0f11",
}


def _source_hash(qualified: str) -> str:
    module_name, name = qualified.split(":")
    module = __import__(module_name, fromlist=[name])
    # unwrap: the hash is of MLflow's function even if this process installed the hot paths.
    function = inspect.unwrap(getattr(module, name))
    return hashlib.sha256(inspect.getsource(function).encode()).hexdigest()[:16]


@pytest.mark.parametrize("qualified", sorted(VERIFIED_SOURCES))
def test_mlflow_internals_are_the_verified_ones(qualified: str) -> None:
    assert _source_hash(qualified) == VERIFIED_SOURCES[qualified], (
        f"{qualified} changed in this MLflow version: re-verify server/hot_paths.py against it "
        "(or run with MLFLOW_STACK_HOT_PATHS=false), then update VERIFIED_SOURCES"
    )


def test_the_patched_names_are_the_ones_mlflow_calls() -> None:
    import mlflow.server.auth as auth
    import mlflow.server.auth.sqlalchemy_store as auth_store
    import mlflow.server.handlers as handlers
    import mlflow.store.model_registry.sqlalchemy_store as registry_store
    import mlflow.store.tracking.sqlalchemy_store as tracking_store

    # The stores look the session maker up at construction: tracking through the module, registry
    # and auth through their own imported names (all replaced by install()).
    assert "mlflow.store.db.utils._get_managed_session_maker(" in inspect.getsource(tracking_store)
    assert "_get_managed_session_maker" in vars(registry_store)
    assert "_get_managed_session_maker" in vars(auth_store)
    # The validators and redactors call these through the module's globals.
    assert "_run_requirement(" in inspect.getsource(auth._validate_can_update_run_and_models)
    assert "_redact_run_response(" in inspect.getsource(auth.redact_search_runs_model_links)
    assert "message_to_json(" in inspect.getsource(handlers._wrap_response)


_STORES_AFTER_INSTALL = """
import sys
from server import hot_paths
hot_paths.install()
from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore as AuthStore
from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore as RegistryStore
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
directory = sys.argv[1]
auth = AuthStore()
auth.init_db(f"sqlite:///{directory}/auth.db")
stores = [
    SqlAlchemyStore(f"sqlite:///{directory}/mlflow.db", directory),
    RegistryStore(f"sqlite:///{directory}/mlflow.db"),
    auth,
]
for store in stores:
    print(store.ManagedSessionMaker.__qualname__)
"""


def test_install_reaches_every_store_mlflow_builds_afterwards(tmp_path) -> None:
    # A fresh interpreter, as a uvicorn worker is: install() first, then MLflow builds its stores.
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", _STORES_AFTER_INSTALL, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    makers = result.stdout.split()
    assert len(makers) == 3
    assert all(m.startswith("keep_state_on_read_only_commit.") for m in makers), makers


# --- 1: read-only sessions keep their loaded state ----------------------------------------------


class _Base(DeclarativeBase):
    pass


class _Row(_Base):
    __tablename__ = "rows"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]


@pytest.fixture
def managed_session():
    from mlflow.store.db.utils import _get_managed_session_maker

    engine = sqlalchemy.create_engine("sqlite://")
    _Base.metadata.create_all(engine)
    with sessionmaker(bind=engine)() as session:
        session.add(_Row(id=1, name="run"))
        session.commit()
    statements: list[str] = []
    sqlalchemy.event.listen(engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    wrapped = hot_paths.keep_state_on_read_only_commit(_get_managed_session_maker)
    yield wrapped(sessionmaker(bind=engine), "sqlite"), statements
    engine.dispose()


def test_read_only_session_state_survives_commit_without_reloading(managed_session) -> None:
    make_session, statements = managed_session
    with make_session() as session:
        row = session.get(_Row, 1)
        loaded = len(statements)
    # MLflow's own maker expires `row` at commit; here it keeps what it loaded, with no new query.
    assert row.name == "run"
    assert len(statements) == loaded


def test_write_sessions_keep_mlflows_expiry(managed_session) -> None:
    make_session, _ = managed_session
    with make_session(read_only=False) as session:
        row = session.get(_Row, 1)
        row.name = "renamed"
    with pytest.raises(DetachedInstanceError):
        _ = row.name  # expired at commit, as MLflow's maker does: a write is never read stale
    with make_session() as session:
        assert session.get(_Row, 1).name == "renamed"


def test_errors_still_roll_back(managed_session) -> None:
    from mlflow.exceptions import MlflowException

    make_session, _ = managed_session
    with pytest.raises(MlflowException), make_session(read_only=False) as session:
        session.get(_Row, 1).name = "lost"
        raise MlflowException("boom")
    with make_session() as session:
        assert session.get(_Row, 1).name == "run"


# --- 2: run requirements cached per (run, action) -----------------------------------------------


def test_run_requirement_is_resolved_once_per_run_and_action() -> None:
    calls: list[tuple[str, str]] = []

    def original(run_id: str, action: str):
        calls.append((run_id, action))
        return ("experiment", "7"), [("experiment", "7", "read"), ("run", "*", action)]

    cached = hot_paths.cache_run_requirements(original, hot_paths.LruCache(100))
    first = cached("r1", "update")
    first[1].append(("logged_model", "*", "update"))  # a caller appending its own requirement
    second = cached("r1", "update")
    assert second == (("experiment", "7"), [("experiment", "7", "read"), ("run", "*", "update")])
    assert cached("r1", "read")[1][1] == ("run", "*", "read")
    assert calls == [("r1", "update"), ("r1", "read")]


def test_unknown_runs_are_denied_and_never_cached() -> None:
    calls: list[str] = []

    def original(run_id: str, action: str):
        calls.append(run_id)
        return None

    cached = hot_paths.cache_run_requirements(original, hot_paths.LruCache(100))
    assert cached("missing", "update") is None
    assert cached("missing", "update") is None
    assert calls == ["missing", "missing"]


def test_lru_cache_is_bounded_and_thread_safe() -> None:
    cache = hot_paths.LruCache(50)

    def fill(offset: int) -> None:
        for i in range(1000):
            cache.put((offset, i), i)
            cache.get((offset, i // 2))

    threads = [threading.Thread(target=fill, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(cache) == 50
    cache.put("a", 1)
    cache.get("a")
    for i in range(49):
        cache.put(i, i)
    assert cache.get("a") == 1  # recently used, so kept


# --- 3: redaction skipped only when there is no model link --------------------------------------


def _search_response(**link: str) -> SearchRuns.Response:
    message = SearchRuns.Response()
    run = message.runs.add()
    run.info.run_id = "0" * 32
    run.data.params.add(key="lr", value="0.1")
    metric = run.data.metrics.add(key="loss", value=0.5, timestamp=1, step=0)
    if "metric_model_id" in link:
        metric.model_id = link["metric_model_id"]
    if "model_input" in link:
        run.inputs.model_inputs.add(model_id=link["model_input"])
    if "model_output" in link:
        run.outputs.model_outputs.add(model_id=link["model_output"], step=0)
    return message


@pytest.mark.parametrize("link", ["metric_model_id", "model_input", "model_output"])
@pytest.mark.parametrize("pretty", [True, False])
def test_every_model_link_mlflow_redacts_is_seen_by_the_shortcut(link: str, pretty: bool) -> None:
    from mlflow.utils.proto_json_utils import message_to_json

    body = message_to_json(_search_response(**{link: "m-0123"}), pretty=pretty).encode()
    assert hot_paths.may_carry_model_links(body)


def test_a_response_without_model_links_is_left_alone() -> None:
    from mlflow.utils.proto_json_utils import message_to_json

    body = message_to_json(_search_response(), pretty=False)
    seen: list[object] = []
    redact = hot_paths.skip_redaction_without_model_links(lambda *args: seen.append(args))
    redact(Response(body, mimetype="application/json"), SearchRuns.Response(), lambda m: m.runs)
    assert seen == []
    linked = message_to_json(_search_response(metric_model_id="m-1"), pretty=False)
    redact(Response(linked, mimetype="application/json"), SearchRuns.Response(), lambda m: m.runs)
    assert len(seen) == 1


def test_a_param_that_mentions_a_marker_is_still_checked() -> None:
    # Conservative by construction: a false positive costs MLflow's full check, never a skip.
    assert hot_paths.may_carry_model_links(b'{"params": [{"key": "model_id", "value": "x"}]}')


# --- 4: compact JSON ---------------------------------------------------------------------------


def test_compact_json_is_the_same_value_without_indentation() -> None:
    from mlflow.utils.proto_json_utils import message_to_json

    message = _search_response(metric_model_id="m-1", model_input="m-2")
    compact = hot_paths.compact_json(message_to_json)(message, pretty=True)
    assert json.loads(compact) == json.loads(message_to_json(message, pretty=True))
    assert "\n" not in compact
    assert len(compact) < len(message_to_json(message, pretty=True))
