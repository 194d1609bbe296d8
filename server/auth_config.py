"""The basic-auth config file MLflow reads from MLFLOW_AUTH_CONFIG_PATH.

Keys are those of mlflow/server/auth/config.py (`read_auth_config`) in MLflow 3.17. The file holds
the admin password, so it is created 0600 in the replica's private 0700 directory and never
logged. The auth DB URI in it carries no password (libpq reads it from PGPASSFILE).
"""

from __future__ import annotations

import configparser
import io
import os
import tempfile
from pathlib import Path

from server.database import sqlalchemy_uri
from server.settings import ServerSettings

AUTHORIZATION_FUNCTION = "mlflow.server.auth:authenticate_request_basic_auth"


def render_auth_config(settings: ServerSettings) -> str:
    # MLflow reads this file with configparser's default BasicInterpolation, where '%' starts a
    # reference; a percent-quoted DB password ('%40' for '@') or a '%' in the admin password must
    # therefore be written as '%%'. Writing with interpolation=None keeps our escaping verbatim.
    config = configparser.ConfigParser(interpolation=None)
    values = {
        "default_permission": settings.default_permission,
        "database_uri": sqlalchemy_uri(settings, settings.auth_db_name),
        "admin_username": settings.admin_username,
        # MLflow uses it only to create the admin user; the kit applies it on every start as well
        # (server/admin_password.py), so the stack's secret stays the admin's password.
        "admin_password": settings.admin_password,
        "authorization_function": AUTHORIZATION_FUNCTION,
        # Without it each request spends ~230 ms of CPU on a PBKDF2 check; the cache is per worker.
        "auth_cache_ttl_seconds": str(settings.auth_cache_ttl_seconds),
    }
    config["mlflow"] = {key: value.replace("%", "%%") for key, value in values.items()}
    out = io.StringIO()
    config.write(out)
    return out.getvalue()


def write_auth_config(settings: ServerSettings, directory: str | None = None) -> Path:
    """Write the config into a fresh private directory and return its path. The entrypoint keeps
    the replica's other secret files (libpq's password file, the workers' keys) in that directory
    too, so they all go together when the server stops."""
    private_dir = Path(tempfile.mkdtemp(prefix="mlflow-stack-auth-", dir=directory))  # mkdtemp: mode 0700
    path = private_dir / "basic_auth.ini"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(render_auth_config(settings))
    return path
