"""Read and validate every entrypoint setting before anything starts.

Standard library only, so a bad setting is reported in well under a second, before MLflow (a
multi-second import) is loaded. Every problem is collected, not just the first one: an operator
fixing a task definition should see the whole list in one go.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from server import contract

# MLflow 3.17's basic-auth permission names (mlflow/server/auth/permissions.py ALL_PERMISSIONS);
# a unit test keeps this list in step with the installed MLflow.
PERMISSIONS: tuple[str, ...] = ("READ", "USE", "EDIT", "MANAGE", "NO_PERMISSIONS", "DENY")
# libpq's sslmode values.
BOOLEANS: tuple[str, ...] = ("true", "false")
SSLMODES: tuple[str, ...] = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
MIN_ADMIN_PASSWORD_LENGTH = 12
MIN_FLASK_SECRET_KEY_LENGTH = 16
MIN_KEK_PASSPHRASE_LENGTH = 16
FERNET_KEY_BYTES = 32  # cryptography's Fernet: urlsafe_b64decode(key) must be exactly 32 bytes

_DB_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_HOST_NAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9*]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
_S3_URI = re.compile(r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$")


@dataclass(frozen=True)
class Problem:
    name: str
    what: str
    fix: str

    def __str__(self) -> str:
        return f"  - {self.name}: {self.what}. {self.fix}"


class SettingsError(Exception):
    """Every missing or malformed setting, rendered as one message."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        lines = [
            f"mlflow-stack server: {len(problems)} setting(s) missing or invalid; nothing was started.",
            *(str(p) for p in problems),
            f"Secrets may be given as the variable itself or as a file path in <NAME>{contract.FILE_SUFFIX}.",
        ]
        super().__init__("\n".join(lines))


@dataclass(frozen=True)
class ServerSettings:
    db_host: str
    db_port: int
    db_name: str
    auth_db_name: str
    db_user: str
    db_sslmode: str
    artifacts_destination: str
    public_hosts: tuple[str, ...]
    port: int
    host: str
    workers: int
    keepalive_seconds: int
    db_pool_size: int
    db_max_overflow: int
    default_permission: str
    auth_cache_ttl_seconds: int
    admin_username: str
    hot_paths: bool
    # Peers whose X-Forwarded-For/Proto uvicorn believes: the load balancer's subnets, never "*".
    forwarded_allow_ips: tuple[str, ...]
    artifact_client_access: str
    # Secrets: repr=False keeps them out of any accidental log of the settings object.
    db_password: str
    admin_password: str
    flask_secret_key: str
    # Optional: unset, MLflow uses its built-in fallbacks (the entrypoint warns).
    crypto_kek_passphrase: str | None = None
    webhook_encryption_key: str | None = None
    # `mlflow server --enable-workspaces` (contract.WORKSPACES).
    workspaces: bool = False
    # Upgrade settings (contract.UPGRADE_SETTINGS).
    auth_legacy_denies: str = "refuse"
    backup_dir: str | None = None
    pg_dump: str = "pg_dump"

    def __repr__(self) -> str:
        return (
            f"ServerSettings(db_host={self.db_host!r}, db_name={self.db_name!r}, port={self.port}, "
            "<secrets hidden>)"
        )


class _Reader:
    """Collects problems while reading values, so validation never stops at the first one."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.problems: list[Problem] = []

    def fail(self, setting: contract.Setting, what: str, fix: str) -> None:
        self.problems.append(Problem(setting.name, what, fix))

    def text(self, setting: contract.Setting) -> str | None:
        raw = self.env.get(setting.name)
        value = raw.strip() if raw is not None else None
        if value:
            return value
        if setting.default is not None:
            return setting.default
        self.fail(setting, "not set", f"Set it to the {setting.description}.")
        return None

    def integer(self, setting: contract.Setting, minimum: int, maximum: int) -> int | None:
        value = self.text(setting)
        if value is None:
            return None
        try:
            number = int(value)
        except ValueError:
            self.fail(
                setting, f"{value!r} is not a whole number", f"Use an integer from {minimum} to {maximum}."
            )
            return None
        if not minimum <= number <= maximum:
            self.fail(setting, f"{number} is out of range", f"Use an integer from {minimum} to {maximum}.")
            return None
        return number

    def choice(self, setting: contract.Setting, choices: tuple[str, ...]) -> str | None:
        value = self.text(setting)
        if value is not None and value not in choices:
            self.fail(setting, f"{value!r} is not a valid value", f"Use one of: {', '.join(choices)}.")
            return None
        return value

    def identifier(self, setting: contract.Setting) -> str | None:
        value = self.text(setting)
        if value is not None and not _DB_IDENTIFIER.match(value):
            self.fail(
                setting,
                f"{value!r} is not a plain PostgreSQL identifier",
                "Use letters, digits and underscores (starting with a letter or underscore), at most 63.",
            )
            return None
        return value

    def secret(self, setting: contract.Setting, min_length: int = 1, required: bool = True) -> str | None:
        """A secret from `<NAME>` or from the file named by `<NAME>_FILE`; never echoes the value."""
        file_var = setting.name + contract.FILE_SUFFIX
        direct = self.env.get(setting.name)
        path = self.env.get(file_var, "").strip()
        if direct and path:
            self.fail(setting, f"set both as {setting.name} and {file_var}", "Set only one of them.")
            return None
        if path:
            try:
                # Files written by `echo`/editors end in a newline that is not part of the secret.
                value = Path(path).read_text(encoding="utf-8").rstrip("\r\n")
            except OSError as exc:
                self.fail(
                    setting,
                    f"{file_var} points to {path!r}, which cannot be read ({exc.strerror})",
                    "Mount the secret file there or fix the path.",
                )
                return None
            source = f"the file in {file_var}"
        elif direct:
            value, source = direct, setting.name
        elif not required:
            return None
        else:
            self.fail(
                setting,
                "not set",
                f"Provide the {setting.description} as {setting.name} (from a secret store) "
                f"or as a file path in {file_var}.",
            )
            return None
        if len(value) < min_length:
            self.fail(
                setting,
                f"the value from {source} is {len(value)} characters long",
                f"Use at least {min_length} characters.",
            )
            return None
        return value


def _forwarded_allow_ips(r: _Reader) -> tuple[str, ...]:
    """Addresses or networks (IPv4/IPv6) uvicorn may take a client address from. A wildcard
    would let any client that reaches a replica write its own address into the log."""
    setting = contract.FORWARDED_ALLOW_IPS
    value = r.text(setting) or ""
    entries = tuple(e.strip() for e in value.split(",") if e.strip())
    bad = []
    for entry in entries:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            bad.append(entry)
    if bad or not entries:
        r.fail(
            setting,
            f"{', '.join(repr(b) for b in bad) or 'empty list'} is not an IP address or CIDR",
            "List the load balancer's addresses or subnets, e.g. 10.40.0.0/20,10.40.16.0/20 "
            "('*' is refused: every client could then forge its address).",
        )
        return ()
    return entries


def load_settings(env: Mapping[str, str] | None = None) -> ServerSettings:
    """Validate the whole environment; raise one SettingsError listing every problem."""
    r = _Reader(os.environ if env is None else env)
    c = contract

    db_host = r.text(c.DB_HOST)
    if db_host is not None and not _HOST_NAME.match(db_host):
        r.fail(
            c.DB_HOST,
            f"{db_host!r} is not a host name",
            "Use a DNS name or IP address, without scheme or port.",
        )
    db_port = r.integer(c.DB_PORT, 1, 65535)
    db_name = r.identifier(c.DB_NAME)
    auth_db_name = r.identifier(c.AUTH_DB_NAME)
    if db_name is not None and db_name == auth_db_name:
        r.fail(
            c.AUTH_DB_NAME,
            f"is the same database as {c.DB_NAME.name} ({db_name!r})",
            "Give the basic-auth store its own database, e.g. 'mlflow_auth'.",
        )
    db_user = r.text(c.DB_USER)
    db_sslmode = r.choice(c.DB_SSLMODE, SSLMODES)

    artifacts = r.text(c.ARTIFACTS_DESTINATION)
    if artifacts is not None and not _S3_URI.match(artifacts):
        r.fail(
            c.ARTIFACTS_DESTINATION,
            f"{artifacts!r} is not an s3:// URI",
            "Use s3://<bucket>[/<prefix>], e.g. s3://my-mlflow-artifacts/mlflow-artifacts.",
        )

    public_hosts: tuple[str, ...] = ()
    hosts_value = r.text(c.PUBLIC_HOSTS)
    if hosts_value is not None:
        public_hosts = tuple(h.strip().lower() for h in hosts_value.split(",") if h.strip())
        bad = [h for h in public_hosts if not _HOST_NAME.match(h)]
        if bad or not public_hosts:
            r.fail(
                c.PUBLIC_HOSTS,
                f"{', '.join(repr(h) for h in bad) or 'empty list'} is not a host name",
                "Use comma-separated DNS names without scheme or port, e.g. mlflow.example.com.",
            )

    port = r.integer(c.PORT, 1, 65535)
    host = r.text(c.HOST)
    workers = r.integer(c.WORKERS, 1, 64)
    keepalive = r.integer(c.KEEPALIVE_SECONDS, 1, 4000)
    pool_size = r.integer(c.DB_POOL_SIZE, 1, 1000)
    max_overflow = r.integer(c.DB_MAX_OVERFLOW, 0, 1000)
    default_permission = r.choice(c.DEFAULT_PERMISSION, PERMISSIONS)
    cache_ttl = r.integer(c.AUTH_CACHE_TTL_SECONDS, 0, 86400)
    admin_username = r.text(c.ADMIN_USERNAME)
    hot_paths = r.choice(c.HOT_PATHS, BOOLEANS)
    forwarded_allow_ips = _forwarded_allow_ips(r)
    artifact_client_access = r.choice(c.ARTIFACT_CLIENT_ACCESS, c.ARTIFACT_CLIENT_ACCESS_MODES)
    workspaces = r.choice(c.WORKSPACES, BOOLEANS)

    db_password = r.secret(c.DB_PASSWORD)
    admin_password = r.secret(c.ADMIN_PASSWORD, MIN_ADMIN_PASSWORD_LENGTH)
    flask_key = r.secret(c.FLASK_SECRET_KEY, MIN_FLASK_SECRET_KEY_LENGTH)
    kek_passphrase = r.secret(c.CRYPTO_KEK_PASSPHRASE, MIN_KEK_PASSPHRASE_LENGTH, required=False)
    webhook_key = r.secret(c.WEBHOOK_ENCRYPTION_KEY, required=False)
    if webhook_key is not None and not is_fernet_key(webhook_key):
        r.fail(
            c.WEBHOOK_ENCRYPTION_KEY,
            "the value is not a Fernet key",
            f"Use {FERNET_KEY_BYTES} random bytes in url-safe base64 (44 characters ending in '='), "
            "e.g. from `cryptography.fernet.Fernet.generate_key()`.",
        )

    legacy_denies = r.choice(c.AUTH_LEGACY_DENIES, c.AUTH_LEGACY_DENIES_CHOICES)
    backup_dir = (r.env.get(c.BACKUP_DIR.name) or "").strip() or None
    if backup_dir is not None and not Path(backup_dir).is_absolute():
        r.fail(c.BACKUP_DIR, f"{backup_dir!r} is not an absolute path", "Use an absolute directory path.")
    pg_dump = r.text(c.PG_DUMP)

    if r.problems:
        raise SettingsError(r.problems)
    # Every value is set when there are no problems; the asserts document it for the type checker.
    assert db_host and db_port and db_name and auth_db_name and db_user and db_sslmode and artifacts
    assert port and host and workers and keepalive and pool_size and max_overflow is not None
    assert default_permission and cache_ttl is not None and admin_username and hot_paths
    assert artifact_client_access and legacy_denies and pg_dump
    assert db_password and admin_password and flask_key
    return ServerSettings(
        db_host=db_host,
        db_port=db_port,
        db_name=db_name,
        auth_db_name=auth_db_name,
        db_user=db_user,
        db_sslmode=db_sslmode,
        artifacts_destination=artifacts,
        public_hosts=public_hosts,
        port=port,
        host=host,
        workers=workers,
        keepalive_seconds=keepalive,
        db_pool_size=pool_size,
        db_max_overflow=max_overflow,
        default_permission=default_permission,
        auth_cache_ttl_seconds=cache_ttl,
        admin_username=admin_username,
        hot_paths=hot_paths == "true",
        workspaces=workspaces == "true",
        forwarded_allow_ips=forwarded_allow_ips,
        artifact_client_access=artifact_client_access,
        db_password=db_password,
        admin_password=admin_password,
        flask_secret_key=flask_key,
        crypto_kek_passphrase=kek_passphrase,
        webhook_encryption_key=webhook_key,
        auth_legacy_denies=legacy_denies,
        backup_dir=backup_dir,
        pg_dump=pg_dump,
    )


def is_fernet_key(value: str) -> bool:
    """What cryptography's `Fernet(key)` accepts: url-safe base64 decoding to exactly 32 bytes.
    Checked here with the standard library, so a bad key fails start-up instead of the first
    webhook request."""
    try:
        return len(base64.urlsafe_b64decode(value.encode("ascii"))) == FERNET_KEY_BYTES
    except (binascii.Error, ValueError):
        return False


@dataclass(frozen=True)
class BootstrapSettings:
    """What `bootstrap-db` needs: where PostgreSQL is, the application role to create or refresh,
    and the master credentials to do it with."""

    db_host: str
    db_port: int
    db_sslmode: str
    db_name: str
    auth_db_name: str
    app_user: str
    app_password: str = field(repr=False)
    master_user: str = ""
    master_password: str = field(default="", repr=False)
    app_connection_limit: int = -1


def load_bootstrap_settings(env: Mapping[str, str] | None = None) -> BootstrapSettings:
    """Read and validate every bootstrap setting; raise SettingsError listing all problems."""
    r = _Reader(os.environ if env is None else env)
    c = contract
    db_host = r.text(c.DB_HOST)
    db_port = r.integer(c.DB_PORT, 1, 65535)
    db_sslmode = r.choice(c.DB_SSLMODE, SSLMODES)
    db_name = r.identifier(c.DB_NAME)
    auth_db_name = r.identifier(c.AUTH_DB_NAME)
    app_user = r.identifier(c.DB_USER)
    master_user = r.identifier(c.DB_MASTER_USER)
    if app_user is not None and app_user == master_user:
        r.fail(
            c.DB_USER,
            f"is the master user ({app_user!r})",
            "Give the server its own application role, e.g. 'mlflow_app'; the master only bootstraps it.",
        )
    limit = r.integer(c.DB_APP_CONNECTION_LIMIT, -1, 100000)
    app_password = r.secret(c.DB_PASSWORD)
    master_password = r.secret(c.DB_MASTER_PASSWORD)
    if r.problems:
        raise SettingsError(r.problems)
    assert db_host and db_port and db_sslmode and db_name and auth_db_name and app_user and master_user
    assert limit is not None and app_password and master_password
    return BootstrapSettings(
        db_host=db_host,
        db_port=db_port,
        db_sslmode=db_sslmode,
        db_name=db_name,
        auth_db_name=auth_db_name,
        app_user=app_user,
        app_password=app_password,
        master_user=master_user,
        master_password=master_password,
        app_connection_limit=limit,
    )
