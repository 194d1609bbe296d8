"""The `mlflow server` arguments and environment, derived from validated settings.

Pure functions (no MLflow import), so unit tests can check exactly what a replica will run.
"""

from __future__ import annotations

import contextlib
import shlex
import socket

from server import contract
from server.database import sqlalchemy_uri
from server.settings import ServerSettings

_WILDCARD_BINDS = ("0.0.0.0", "::", "")  # noqa: S104 - names of "all interfaces", compared, never bound here
_LOOPBACK = ("localhost", "127.0.0.1")


def own_addresses() -> list[str]:
    """This replica's host name and IP: what a load balancer's health check sends as Host."""
    names: list[str] = []
    hostname = socket.gethostname()
    if hostname:
        names.append(hostname.lower())
        with contextlib.suppress(OSError):
            names.append(socket.gethostbyname(hostname))
    return names


def allowed_hosts(settings: ServerSettings, own: list[str] | None = None) -> list[str]:
    """Host-header patterns for MLflow's host validation (DNS-rebinding protection).

    MLflow 3.17 compares the whole Host header, port included, exactly or with fnmatch when the
    pattern contains '*' (mlflow/server/security_utils.py `is_allowed_host_header`). Behind the ALB
    on 443 the header is the bare domain; on a non-standard port (the local stack) it is
    `host:port`, hence both forms. Loopback and the replica's own address keep the container
    HEALTHCHECK and direct checks working; /health itself is exempt from host validation.
    """
    hosts: list[str] = []
    for host in [*settings.public_hosts, *_LOOPBACK]:
        hosts += [host, f"{host}:*"]
    if settings.host not in _WILDCARD_BINDS:
        hosts.append(f"{settings.host}:{settings.port}")
    for address in own_addresses() if own is None else own:
        hosts += [address, f"{address}:{settings.port}"]
    return list(dict.fromkeys(hosts))


def cors_origins(settings: ServerSettings) -> list[str]:
    """Browser origins allowed to call the API: the public domain over HTTPS, any port."""
    origins: list[str] = []
    for host in settings.public_hosts:
        origins += [f"https://{host}", f"https://{host}:*"]
    return origins


def uvicorn_options(settings: ServerSettings) -> str:
    """MLflow 3.17 serves with uvicorn by default (`--gunicorn-opts` is deprecated and disables the
    security middleware). Keep-alive must outlast the load balancer's idle timeout, or the
    balancer reuses a connection the server just closed and the client gets a 502.
    Proxy headers: X-Forwarded-For/Proto are believed only from the load balancer's addresses
    (`MLFLOW_STACK_FORWARDED_ALLOW_IPS`), so a client that reaches a replica directly cannot put
    someone else's address into the access log."""
    return shlex.join(
        [
            "--timeout-keep-alive",
            str(settings.keepalive_seconds),
            "--proxy-headers",
            "--forwarded-allow-ips",
            ",".join(settings.forwarded_allow_ips),
        ]
    )


def server_arguments(settings: ServerSettings, app_name: str) -> list[str]:
    """Arguments after `mlflow`, i.e. `server ...`. No secret in them: the store URIs carry no
    password (libpq reads it from PGPASSFILE), so they may be logged as they are."""
    backend = sqlalchemy_uri(settings, settings.db_name)
    return [
        "server",
        "--app-name",
        app_name,
        "--backend-store-uri",
        backend,
        "--registry-store-uri",
        backend,
        # The server resolves every artifact location; whether clients then move large files
        # through it or straight to S3 is `artifacts.clientAccess` (server/artifact_access.py).
        "--serve-artifacts",
        "--artifacts-destination",
        settings.artifacts_destination,
        "--host",
        settings.host,
        "--port",
        str(settings.port),
        "--workers",
        str(settings.workers),
        "--allowed-hosts",
        ",".join(allowed_hosts(settings)),
        "--cors-allowed-origins",
        ",".join(cors_origins(settings)),
        "--uvicorn-opts",
        uvicorn_options(settings),
        # Workspaces are stored in the backend store (no --workspace-store-uri needed).
        *(["--enable-workspaces"] if settings.workspaces else []),
    ]


def server_environment(settings: ServerSettings, auth_config_path: str) -> dict[str, str]:
    """Environment MLflow and its uvicorn workers read (names checked in mlflow/environment_variables.py)."""
    return {
        "MLFLOW_AUTH_CONFIG_PATH": auth_config_path,
        # No secret values here: this environment reaches the uvicorn process and its workers. The
        # Flask key and MLflow's encryption keys go to the workers as files (server/worker_secrets.py).
        # Read by server/app.py in every uvicorn worker.
        contract.HOT_PATHS.name: "true" if settings.hot_paths else "false",
        "MLFLOW_SQLALCHEMYSTORE_POOL_SIZE": str(settings.db_pool_size),
        "MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW": str(settings.db_max_overflow),
        # Read by server/artifact_access.py in every worker: whether clients get presigned S3 URLs.
        contract.ARTIFACT_CLIENT_ACCESS.name: settings.artifact_client_access,
        # MLflow's job runner (GenAI scorers/optimisation) queues jobs in a per-process huey store
        # under /dev/shm: with N replicas a job is only seen by the replica that queued it, and each
        # replica would spend CPU and memory on an idle runner. A tracking server does not need it.
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        # A production tracking server does not report usage to a third party; it also keeps the
        # exit-time telemetry flush from delaying a replica's shutdown (ECS stopTimeout, `local down`).
        "MLFLOW_DISABLE_TELEMETRY": "true",
        # MLflow's default silently truncates a param value over 6000 (tag: 8000) characters and
        # answers 200; a caller must learn that what it logged is not what was stored (400).
        "MLFLOW_TRUNCATE_LONG_VALUES": "false",
    }
