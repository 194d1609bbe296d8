"""One description of how the MLflow server runs, shared by every compute backend.

ECS (infra/compute/ecs.py) turns a `ServerSpec` into a task definition; the Kubernetes backend
turns the same spec into a Deployment. Names, command and port come from `server/contract.py`,
so the entrypoint, the task definition and the local stack never disagree about them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pulumi

from server import contract

if TYPE_CHECKING:
    from infra.settings import ServerSettings, Settings

# One CPU architecture for the task and the image build. Graviton (ARM64) Fargate costs ~20% less
# per vCPU-hour than X86_64, and every wheel the server installs ships for aarch64.
CPU_ARCHITECTURE = "ARM64"
IMAGE_PLATFORM = "linux/arm64"

# The container runs as this non-root uid:gid (the server image creates it).
RUN_AS_USER = "10001:10001"

# RDS enforces TLS; `verify-full` would also need the RDS CA bundle inside the image, which this
# build cannot fetch (no internet at build time here), so the connection is encrypted but the
# server certificate is not pinned.
DB_SSLMODE = "require"

# The only writable path in a read-only container: the entrypoint's private auth-config dir and
# MLflow's upload spooling both live under the temp dir.
SCRATCH_PATH = "/tmp"


@dataclass(frozen=True)
class SecretRefs:
    """Where each secret lives: Secrets Manager ARNs (optionally `arn:<json-key>::`)."""

    db_password: pulumi.Input[str]  # the application role's
    admin_password: pulumi.Input[str]
    flask_secret_key: pulumi.Input[str]
    crypto_kek_passphrase: pulumi.Input[str]
    webhook_encryption_key: pulumi.Input[str]
    # Only the bootstrap step gets it, e.g. `<RDS-managed secret ARN>:password::`.
    db_master_password: pulumi.Input[str] = ""


@dataclass(frozen=True)
class BootstrapSpec:
    """The step that runs before the server, in the same image, and is the only holder of the
    master credentials: it creates the application role (server/db_roles.py). ECS runs it as a
    non-essential container the server container waits on (`dependsOn ... SUCCESS`)."""

    command: tuple[str, ...]
    environment: Mapping[str, pulumi.Input[str]]
    secrets: Mapping[str, pulumi.Input[str]]

    def __post_init__(self) -> None:
        leaked = {s.name for s in contract.BOOTSTRAP_SECRET_SETTINGS} & set(self.environment)
        if leaked:
            raise ValueError(f"bootstrap spec: secret settings {sorted(leaked)} must not be plain env vars")


@dataclass(frozen=True)
class ServerSpec:
    """Everything a backend needs to run the server; secrets are references, never values."""

    image: pulumi.Input[str]
    entrypoint: tuple[str, ...]
    command: tuple[str, ...]
    environment: Mapping[str, pulumi.Input[str]]
    secrets: Mapping[str, pulumi.Input[str]]  # env var name -> secret reference
    port: int
    health_path: str
    cpu: int  # ECS CPU units (1024 = 1 vCPU)
    memory: int  # MiB
    user: str = RUN_AS_USER
    cpu_architecture: str = CPU_ARCHITECTURE
    # Read-only root filesystem with a task volume at scratch_path. Needs the image to declare
    # `VOLUME <scratch_path>`: Fargate creates task volumes root-owned 0755 unless the image's
    # VOLUME directive hands over the directory's ownership/mode, and the server runs non-root.
    read_only_root: bool = True
    scratch_path: str = SCRATCH_PATH
    bootstrap: BootstrapSpec | None = None

    def __post_init__(self) -> None:
        if contract.DB_MASTER_PASSWORD.name in self.secrets:
            raise ValueError("server spec: the master password belongs to the bootstrap step only")
        overlap = set(self.environment) & set(self.secrets)
        if overlap:
            raise ValueError(f"server spec: {sorted(overlap)} set both as plain env and as secrets")
        leaked = {s.name for s in contract.SECRET_SETTINGS} & set(self.environment)
        if leaked:
            raise ValueError(f"server spec: secret settings {sorted(leaked)} must not be plain env vars")


def tuning_environment(server: ServerSettings) -> dict[str, str]:
    """A replica's performance settings as the entrypoint reads them. bench/ starts its kit rows
    with exactly these, taken from a stack file, so the benchmark measures what a stack deploys."""
    return {
        contract.WORKERS.name: str(server.workers),
        contract.KEEPALIVE_SECONDS.name: str(server.keepalive_seconds),
        contract.DB_POOL_SIZE.name: str(server.db_pool_size),
        contract.DB_MAX_OVERFLOW.name: str(server.db_max_overflow),
        contract.AUTH_CACHE_TTL_SECONDS.name: str(server.auth_cache_ttl_seconds),
        contract.HOT_PATHS.name: "true" if server.hot_paths else "false",
    }


# An existing VPC's subnet ranges are not in the stack file and cannot be looked up offline (an
# `ec2:DescribeSubnets` call at deploy time would be needed); the load balancer then is trusted
# anywhere in the private address space a VPC can use (RFC 1918 and RFC 6598). The task's security
# group admits only the load balancer anyway; this keeps a peer inside the VPC from forging.
# https://docs.aws.amazon.com/vpc/latest/userguide/vpc-cidr-blocks.html
EXISTING_VPC_FORWARDED_ALLOW_IPS = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10")


def load_balancer_cidrs(settings: Settings) -> tuple[str, ...]:
    """Where the ALB's nodes live, so only they may set X-Forwarded-For: the public subnets, or
    the private ones for an internal ALB (infra/platform.py places it the same way)."""
    from infra.network import subnet_cidrs

    network = settings.network
    if network.existing_vpc_id is not None:
        return EXISTING_VPC_FORWARDED_ALLOW_IPS
    public, private = subnet_cidrs(network.vpc_cidr, network.az_count)
    return tuple(public if settings.load_balancer.internet_facing else private)


def build_server_spec(
    settings: Settings,
    *,
    image: pulumi.Input[str],
    db_host: pulumi.Input[str],
    db_port: pulumi.Input[str],
    db_name: pulumi.Input[str],
    auth_db_name: pulumi.Input[str],
    db_user: pulumi.Input[str],
    artifacts_destination: pulumi.Input[str],
    secret_refs: SecretRefs,
    read_only_root: bool,
    db_master_user: pulumi.Input[str] | None = None,
    db_app_connection_limit: int = -1,
) -> ServerSpec:
    """The server as settings and the platform's outputs describe it."""
    server = settings.server
    plain: dict[str, pulumi.Input[str]] = {
        contract.DB_HOST.name: db_host,
        contract.DB_PORT.name: db_port,
        contract.DB_NAME.name: db_name,
        contract.AUTH_DB_NAME.name: auth_db_name,
        contract.DB_USER.name: db_user,
        contract.DB_SSLMODE.name: DB_SSLMODE,
        contract.ARTIFACTS_DESTINATION.name: artifacts_destination,
        contract.PUBLIC_HOSTS.name: settings.domain.name,
        contract.PORT.name: str(contract.CONTAINER_PORT),
        contract.HOST.name: "0.0.0.0",  # noqa: S104 - the task's own ENI; the SG limits who reaches it
        contract.DEFAULT_PERMISSION.name: server.default_permission,
        contract.ADMIN_USERNAME.name: server.admin_username,
        **tuning_environment(server),
        contract.FORWARDED_ALLOW_IPS.name: ",".join(load_balancer_cidrs(settings)),
        contract.ARTIFACT_CLIENT_ACCESS.name: settings.artifacts.client_access,
        contract.WORKSPACES.name: "true" if server.workspaces else "false",
    }
    secrets: dict[str, pulumi.Input[str]] = {
        contract.DB_PASSWORD.name: secret_refs.db_password,
        contract.ADMIN_PASSWORD.name: secret_refs.admin_password,
        contract.FLASK_SECRET_KEY.name: secret_refs.flask_secret_key,
        contract.CRYPTO_KEK_PASSPHRASE.name: secret_refs.crypto_kek_passphrase,
        contract.WEBHOOK_ENCRYPTION_KEY.name: secret_refs.webhook_encryption_key,
    }
    # The contract is the single list of names: a setting added there but not here fails loudly.
    expected_plain = {s.name for s in contract.PLAIN_SETTINGS}
    expected_secret = {s.name for s in contract.SECRET_SETTINGS}
    if set(plain) != expected_plain or set(secrets) != expected_secret:
        raise ValueError(
            "server spec is out of step with server/contract.py: "
            f"plain {sorted(set(plain) ^ expected_plain)}, secret {sorted(set(secrets) ^ expected_secret)}"
        )
    bootstrap = None
    if db_master_user is not None:
        bootstrap_plain = {
            name: plain[name] for name in (s.name for s in contract.BOOTSTRAP_PLAIN_SETTINGS) if name in plain
        }
        bootstrap_plain[contract.DB_MASTER_USER.name] = db_master_user
        bootstrap_plain[contract.DB_APP_CONNECTION_LIMIT.name] = str(db_app_connection_limit)
        bootstrap_secrets = {
            contract.DB_PASSWORD.name: secret_refs.db_password,
            contract.DB_MASTER_PASSWORD.name: secret_refs.db_master_password,
        }
        if set(bootstrap_plain) != {s.name for s in contract.BOOTSTRAP_PLAIN_SETTINGS} or set(
            bootstrap_secrets
        ) != {s.name for s in contract.BOOTSTRAP_SECRET_SETTINGS}:
            raise ValueError("bootstrap spec is out of step with server/contract.py")
        if not secret_refs.db_master_password:
            raise ValueError("bootstrap spec: no reference to the master password secret")
        bootstrap = BootstrapSpec(
            command=contract.BOOTSTRAP_COMMAND, environment=bootstrap_plain, secrets=bootstrap_secrets
        )
    return ServerSpec(
        image=image,
        entrypoint=contract.ENTRYPOINT,
        command=contract.COMMAND,
        environment=plain,
        secrets=secrets,
        port=contract.CONTAINER_PORT,
        health_path=contract.HEALTH_PATH,
        cpu=server.cpu,
        memory=server.memory,
        read_only_root=read_only_root,
        bootstrap=bootstrap,
    )
