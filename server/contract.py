"""The server's command contract: every setting the entrypoint reads, by name.

ECS, Kubernetes and the local stack all start the same entrypoint, so the names live here once.
This module imports nothing outside the standard library: `infra/` imports it to build the task
definition, `server/entrypoint` reads it at start-up, and neither drags the other's dependencies in.

Secrets can arrive two ways, and the entrypoint accepts both:
- as an environment variable injected by the platform from Secrets Manager (ECS task `secrets`,
  a Kubernetes `secretKeyRef`) — never a plain `environment` entry in a task definition;
- as a file path in `<NAME>_FILE` (Kubernetes secret volumes, the local stack's 0600 files), so
  the value is never in any process's environment at all.
"""

from __future__ import annotations

from dataclasses import dataclass

# The auth mode is part of the command (not an env var) so that anyone reading the task
# definition — a reviewer or the policy pack — can see the server runs with basic-auth.
APP_NAME_ARGS: tuple[str, ...] = ("--app-name", "basic-auth")
ENTRYPOINT: tuple[str, ...] = ("python", "-m", "server.entrypoint")
COMMAND: tuple[str, ...] = ("serve", *APP_NAME_ARGS)
# Everything `serve` does before serving, then exit: the one-off migration run of a deploy (the
# Kubernetes backend's migration Job; an ECS one-off task).
MIGRATE_COMMAND: tuple[str, ...] = ("migrate", *APP_NAME_ARGS)

CONTAINER_PORT = 8080
HEALTH_PATH = "/health"


@dataclass(frozen=True)
class Setting:
    name: str
    description: str
    default: str | None = None  # None: required


# Plain (non-secret) settings: safe in a task definition's `environment`.
DB_HOST = Setting("MLFLOW_STACK_DB_HOST", "PostgreSQL host name")
DB_PORT = Setting("MLFLOW_STACK_DB_PORT", "PostgreSQL port", "5432")
DB_NAME = Setting("MLFLOW_STACK_DB_NAME", "tracking + model registry database", "mlflow")
AUTH_DB_NAME = Setting("MLFLOW_STACK_AUTH_DB_NAME", "basic-auth users/permissions database", "mlflow_auth")
DB_USER = Setting(
    "MLFLOW_STACK_DB_USER",
    "PostgreSQL application role: owns the tracking and auth databases, nothing more",
    "mlflow_app",
)
DB_SSLMODE = Setting("MLFLOW_STACK_DB_SSLMODE", "libpq sslmode (RDS forces SSL: 'require')", "require")
ARTIFACTS_DESTINATION = Setting(
    "MLFLOW_STACK_ARTIFACTS_DESTINATION", "where proxied artifacts go, e.g. s3://bucket/mlflow-artifacts"
)
PUBLIC_HOSTS = Setting(
    "MLFLOW_STACK_PUBLIC_HOSTS",
    "comma-separated host names clients use (the domain); drives --allowed-hosts and CORS origins",
)
PORT = Setting("MLFLOW_STACK_PORT", "port the server listens on", str(CONTAINER_PORT))
HOST = Setting("MLFLOW_STACK_HOST", "address the server binds", "0.0.0.0")  # noqa: S104 - in a container
WORKERS = Setting("MLFLOW_STACK_WORKERS", "server worker processes per replica", "2")
KEEPALIVE_SECONDS = Setting(
    "MLFLOW_STACK_KEEPALIVE_SECONDS", "HTTP keep-alive; must exceed the load balancer's idle timeout", "315"
)
DB_POOL_SIZE = Setting("MLFLOW_STACK_DB_POOL_SIZE", "SQLAlchemy pool size per engine", "5")
DB_MAX_OVERFLOW = Setting("MLFLOW_STACK_DB_MAX_OVERFLOW", "SQLAlchemy max overflow per engine", "5")
DEFAULT_PERMISSION = Setting(
    "MLFLOW_STACK_DEFAULT_PERMISSION", "basic-auth default_permission", "NO_PERMISSIONS"
)
AUTH_CACHE_TTL_SECONDS = Setting(
    "MLFLOW_STACK_AUTH_CACHE_TTL_SECONDS", "basic-auth credential cache TTL (0 disables)", "60"
)
ADMIN_USERNAME = Setting("MLFLOW_STACK_ADMIN_USERNAME", "basic-auth admin user", "admin")
HOT_PATHS = Setting(
    "MLFLOW_STACK_HOT_PATHS",
    "the kit's CPU savings on MLflow's request hot paths (server/hot_paths.py): true or false",
    "true",
)
FORWARDED_ALLOW_IPS = Setting(
    "MLFLOW_STACK_FORWARDED_ALLOW_IPS",
    "comma-separated addresses/CIDRs of the load balancer; only their X-Forwarded-For/Proto is trusted",
    "127.0.0.1",
)
WORKSPACES = Setting(
    "MLFLOW_STACK_WORKSPACES",
    "MLflow workspaces (`mlflow server --enable-workspaces`): one server, one workspace per team; "
    "true or false",
    "false",
)
# How artifact bytes travel between clients and S3 (server/artifact_access.py).
ARTIFACT_CLIENT_ACCESS_MODES: tuple[str, ...] = ("proxied", "presigned")
ARTIFACT_CLIENT_ACCESS = Setting(
    "MLFLOW_STACK_ARTIFACT_CLIENT_ACCESS",
    "how clients move artifact bytes: 'proxied' (always through the server) or 'presigned' (large "
    "files straight to and from S3 by presigned URL; clients need network reach to S3)",
    "proxied",
)

# Secret settings: only ever from Secrets Manager (task `secrets`) or a *_FILE.
DB_PASSWORD = Setting("MLFLOW_STACK_DB_PASSWORD", "PostgreSQL application role's password")
ADMIN_PASSWORD = Setting("MLFLOW_STACK_ADMIN_PASSWORD", "basic-auth admin password (>= 12 characters)")
FLASK_SECRET_KEY = Setting(
    "MLFLOW_FLASK_SERVER_SECRET_KEY", "Flask session/CSRF key; identical on every replica"
)
# MLflow 3's own encryption keys (names from mlflow/utils/crypto.py and
# mlflow/environment_variables.py). Unset, MLflow falls back to a built-in passphrase for AI-gateway
# secrets and to a random Fernet key per *process* for webhook secrets (one worker cannot read what
# another stored); the stack generates both once and gives every replica the same values.
CRYPTO_KEK_PASSPHRASE = Setting(
    "MLFLOW_CRYPTO_KEK_PASSPHRASE", "passphrase MLflow derives the AI-gateway secrets' encryption key from"
)
WEBHOOK_ENCRYPTION_KEY = Setting(
    "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY",
    "Fernet key (32 bytes, url-safe base64) MLflow encrypts webhook secrets with",
)

PLAIN_SETTINGS: tuple[Setting, ...] = (
    DB_HOST,
    DB_PORT,
    DB_NAME,
    AUTH_DB_NAME,
    DB_USER,
    DB_SSLMODE,
    ARTIFACTS_DESTINATION,
    PUBLIC_HOSTS,
    PORT,
    HOST,
    WORKERS,
    KEEPALIVE_SECONDS,
    DB_POOL_SIZE,
    DB_MAX_OVERFLOW,
    DEFAULT_PERMISSION,
    AUTH_CACHE_TTL_SECONDS,
    ADMIN_USERNAME,
    HOT_PATHS,
    FORWARDED_ALLOW_IPS,
    ARTIFACT_CLIENT_ACCESS,
    WORKSPACES,
)
SECRET_SETTINGS: tuple[Setting, ...] = (
    DB_PASSWORD,
    ADMIN_PASSWORD,
    FLASK_SECRET_KEY,
    CRYPTO_KEK_PASSPHRASE,
    WEBHOOK_ENCRYPTION_KEY,
)
# Secrets only the uvicorn workers need (MLflow reads them from its environment there); the
# entrypoint hands them over as files, never as values (server/worker_secrets.py).
WORKER_SECRETS: tuple[Setting, ...] = (FLASK_SECRET_KEY, CRYPTO_KEK_PASSPHRASE, WEBHOOK_ENCRYPTION_KEY)

# The database bootstrap (`python -m server.entrypoint bootstrap-db`): the one step that uses the
# master credentials, to create the application role and hand it the two databases. It runs before
# the server (ECS: a non-essential container the server container waits on; Kubernetes: before
# the migration job; local stack: before the replicas) and never in the server's own process.
BOOTSTRAP_COMMAND: tuple[str, ...] = ("bootstrap-db",)
DB_MASTER_USER = Setting(
    "MLFLOW_STACK_DB_MASTER_USER", "PostgreSQL master (admin) user, used only to bootstrap"
)
DB_APP_CONNECTION_LIMIT = Setting(
    "MLFLOW_STACK_DB_APP_CONNECTION_LIMIT",
    "connections the application role may hold at once (-1: no limit); keeps slots free for the master",
    "-1",
)
DB_MASTER_PASSWORD = Setting("MLFLOW_STACK_DB_MASTER_PASSWORD", "PostgreSQL master password")
BOOTSTRAP_PLAIN_SETTINGS: tuple[Setting, ...] = (
    DB_HOST,
    DB_PORT,
    DB_NAME,
    AUTH_DB_NAME,
    DB_USER,
    DB_SSLMODE,
    DB_MASTER_USER,
    DB_APP_CONNECTION_LIMIT,
)
# DB_PASSWORD here is the application role's password: the bootstrap sets it on the role.
BOOTSTRAP_SECRET_SETTINGS: tuple[Setting, ...] = (DB_PASSWORD, DB_MASTER_PASSWORD)

# Upgrade settings: not part of the running service's definition. They are set for the one run
# that migrates (the local stack sets the backup ones itself; on ECS the migration task's
# overrides carry them, see docs/upgrading.md), each with a default that changes nothing.
AUTH_LEGACY_DENIES_CHOICES: tuple[str, ...] = ("refuse", "convert", "drop")
AUTH_LEGACY_DENIES = Setting(
    "MLFLOW_STACK_AUTH_LEGACY_DENIES",
    "what to do with MLflow 2.x explicit denies (NO_PERMISSIONS grants) that the 3.x auth migration "
    "drops: 'refuse' (stop and list them), 'convert' (keep them as DENY grants), 'drop'",
    "refuse",
)
BACKUP_DIR = Setting(
    "MLFLOW_STACK_BACKUP_DIR",
    "directory for a pg_dump of both databases, taken before any migration that changes a schema "
    "(unset: no dump; on AWS the deploy takes an RDS snapshot instead)",
    "",
)
PG_DUMP = Setting("MLFLOW_STACK_PG_DUMP", "the pg_dump program used for MLFLOW_STACK_BACKUP_DIR", "pg_dump")
UPGRADE_SETTINGS: tuple[Setting, ...] = (AUTH_LEGACY_DENIES, BACKUP_DIR, PG_DUMP)

FILE_SUFFIX = "_FILE"
