"""The keys MLflow's workers need, handed over as files instead of environment values.

MLflow 3.17 reads three secrets only from its process environment:
- `MLFLOW_FLASK_SERVER_SECRET_KEY` (mlflow/server/auth `get_flask_server_secret_key`), which its
  server launcher (mlflow/server/__init__.py `_run_server`) also copies into the environment of
  the uvicorn process it starts;
- `MLFLOW_CRYPTO_KEK_PASSPHRASE` (mlflow/utils/crypto.py `KEKManager`; unset: a built-in default);
- `MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY` (mlflow/store/model_registry/dbmodels/models.py, read
  when the store's models are imported; unset: a random key per process).

A value in an `execve` environment stays readable in /proc/<pid>/environ for the life of the
process (and goes to every child), so none is ever put there. The entrypoint copies each key into
a 0600 file in the replica's private directory and exports only `<NAME>_FILE`. Each uvicorn
worker — the app factory below runs first thing in it — reads the files and sets the values into
its *own* `os.environ`, which is where MLflow looks: memory of that process only, not its
/proc/<pid>/environ, and no worker starts child processes (job execution is off). In the
entrypoint itself MLflow's start-up check of the Flask key is answered from the file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Any

from server import contract
from server.settings import ServerSettings

WORKER_APP = "server.worker_secrets:create_app"


def _values(settings: ServerSettings) -> dict[contract.Setting, str | None]:
    return {
        contract.FLASK_SECRET_KEY: settings.flask_secret_key,
        contract.CRYPTO_KEK_PASSPHRASE: settings.crypto_kek_passphrase,
        contract.WEBHOOK_ENCRYPTION_KEY: settings.webhook_encryption_key,
    }


def write_worker_secrets(settings: ServerSettings, private_dir: Path) -> dict[str, str]:
    """Write each worker secret that is set into `private_dir` (0600, created exclusively);
    return the `<NAME>_FILE` variables that point the workers at them."""
    env: dict[str, str] = {}
    for setting, value in _values(settings).items():
        if value is None:
            continue
        path = private_dir / setting.name.lower()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(value)
        env[setting.name + contract.FILE_SUFFIX] = str(path)
    return env


def install_from_files(
    source: Mapping[str, str] | None = None, target: MutableMapping[str, str] | None = None
) -> list[str]:
    """In a worker: set each secret MLflow reads from its environment from its `<NAME>_FILE`.
    Returns the names set (never the values)."""
    source = os.environ if source is None else source
    target = os.environ if target is None else target
    installed = []
    for setting in contract.WORKER_SECRETS:
        path = source.get(setting.name + contract.FILE_SUFFIX)
        if path:
            target[setting.name] = Path(path).read_text(encoding="utf-8").rstrip("\r\n")
            installed.append(setting.name)
    return installed


def create_app() -> Any:
    """uvicorn's app factory in every worker: the keys first (the webhook key is read when MLflow's
    registry models are imported), then the kit's app (server/app.py)."""
    install_from_files()
    from server.app import create_app as kit_app

    return kit_app()


def use_worker_app(flask_secret_key: str) -> None:
    """In the entrypoint: `--app-name basic-auth` serves `create_app` above, and MLflow's
    pre-flight check of the Flask key (`_bootstrap_basic_auth`) gets it without the environment —
    which is exactly what keeps `_run_server` from copying it into the uvicorn process's."""
    import mlflow.server as mlflow_server
    import mlflow.server.auth as mlflow_auth

    from server.app import BASIC_AUTH, use_kit_app

    use_kit_app()
    kit_find_app = mlflow_server._find_app

    def find_app(app_name: str) -> str:
        return WORKER_APP if app_name == BASIC_AUTH else kit_find_app(app_name)

    mlflow_server._find_app = find_app
    mlflow_auth.get_flask_server_secret_key = lambda: flask_secret_key
