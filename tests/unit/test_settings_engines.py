"""The connection budget's ENGINES_PER_WORKER is what MLflow really opens, counted on real stores."""

from __future__ import annotations

from infra.settings import ENGINES_PER_WORKER


def test_one_server_worker_opens_exactly_engines_per_worker(tmp_path, monkeypatch):
    import sqlalchemy
    from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore as AuthStore
    from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore as RegistryStore
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore as TrackingStore

    created: list[str] = []
    real_create_engine = sqlalchemy.create_engine

    def counting_create_engine(url, *args, **kwargs):
        created.append(str(url))
        return real_create_engine(url, *args, **kwargs)

    monkeypatch.setattr(sqlalchemy, "create_engine", counting_create_engine)
    backend = f"sqlite:///{tmp_path / 'mlflow.db'}"
    auth = f"sqlite:///{tmp_path / 'auth.db'}"
    artifacts = str(tmp_path / "artifacts")

    # What one worker builds: tracking + registry stores on the backend DB, basic-auth on its own DB.
    TrackingStore(backend, artifacts)
    RegistryStore(backend)
    AuthStore().init_db(auth)
    # Later requests build new store objects; each kind reuses its cached engine (and pool).
    TrackingStore(backend, artifacts)
    RegistryStore(backend)

    assert len(created) == ENGINES_PER_WORKER, created
    assert created.count(backend) == 2  # tracking and registry do NOT share a pool
