"""MLflow's real basic-auth app in a child process, on fresh SQLite stores: the environment and
config that tests/unit/test_server_auth_cache_matrix.py and test_server_asgi_fast_paths.py give
their scripts, and the run that returns the JSON rows the script prints."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path


def basic_auth_environment(directory: Path, admin_password: str) -> dict[str, str]:
    config = directory / "basic_auth.ini"
    config.write_text(
        "[mlflow]\n"
        "default_permission = NO_PERMISSIONS\n"
        f"database_uri = sqlite:///{directory}/auth.db\n"
        "admin_username = admin\n"
        f"admin_password = {admin_password}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        # Stock keeps its own credential cache: in one process MLflow invalidates it exactly (the
        # change is handled by the same worker), and it spares the test a scrypt check per request.
        "auth_cache_ttl_seconds = 60\n",
        encoding="utf-8",
    )
    os.chmod(config, 0o600)
    return {
        **os.environ,
        "MLFLOW_AUTH_CONFIG_PATH": str(config),
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(32),
        "_MLFLOW_SERVER_FILE_STORE": f"sqlite:///{directory}/mlflow.db",
        "_MLFLOW_SERVER_REGISTRY_STORE": f"sqlite:///{directory}/mlflow.db",
        "_MLFLOW_SERVER_ARTIFACT_ROOT": str(directory / "artifacts"),
    }


def run_script(script: str, admin_password: str, env: dict[str, str]) -> list[list[object]]:
    """Run `script` (argv[1] = the admin password); the JSON lists it printed, in order."""
    result = subprocess.run(
        [sys.executable, "-c", script, admin_password],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env=env,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("[")]
