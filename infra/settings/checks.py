"""Cross-field rules: each takes the validated sections it needs and returns every problem."""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Callable
from typing import Any

from infra.settings.compute import kubernetes_checks, kubernetes_pod_size
from infra.settings.limits import (
    AUTH_LISTENER_CONNECTIONS_PER_WORKER,
    CONNECTION_BUDGET_FRACTION,
    ENGINES_PER_WORKER,
    FARGATE_MEMORY_BY_CPU,
    MAIN_PROCESS_CONNECTIONS_PER_REPLICA,
    MIN_OVERRIDE_REASON_CHARS,
    MIN_PROD_BACKUP_DAYS,
    PROD_GUARDS,
    RDS_MAX_STORAGE_RATIO,
)
from infra.settings.models import (
    ArtifactSettings,
    DatabaseSettings,
    DomainSettings,
    LoadBalancerSettings,
    MaintenanceSettings,
    NetworkSettings,
    ServerSettings,
    _problem,
    connections_at_full_scale,
)

# Cross-field rules. Each takes the validated sections it needs and returns problems.
CrossCheck = Callable[[dict[str, Any]], list[str]]


def _connection_budget(ctx: dict[str, Any]) -> list[str]:
    server: ServerSettings = ctx["server"]
    database: DatabaseSettings = ctx["database"]
    if database.shared:
        return []  # the role's limit on the platform's instance: infra/settings/shared_database.py
    used = connections_at_full_scale(server)
    budget = int(database.max_connections * CONNECTION_BUDGET_FRACTION)
    if used <= budget:
        return []
    return [
        _problem(
            "server.maxReplicas",
            f"at full scale the server can open {used} PostgreSQL connections "
            f"(maxReplicas {server.max_replicas} x (workers {server.workers} x ({ENGINES_PER_WORKER} engines "
            f"(tracking, registry, auth) x (dbPoolSize {server.db_pool_size} + dbMaxOverflow "
            f"{server.db_max_overflow}) + {AUTH_LISTENER_CONNECTIONS_PER_WORKER} auth-change listener) + "
            f"{MAIN_PROCESS_CONNECTIONS_PER_REPLICA} held by the replica's main process)), "
            f"over {int(CONNECTION_BUDGET_FRACTION * 100)}% of "
            f"{database.instance_class}'s max_connections {database.max_connections} ({budget})",
            "lower server.maxReplicas, server.workers, server.dbPoolSize or server.dbMaxOverflow, "
            "or choose a larger database.instanceClass",
        )
    ]


def _replica_range(ctx: dict[str, Any]) -> list[str]:
    server: ServerSettings = ctx["server"]
    if server.min_replicas <= server.max_replicas:
        return []
    return [
        _problem(
            "server.minReplicas",
            f"{server.min_replicas} is above server.maxReplicas {server.max_replicas}",
            "make minReplicas <= maxReplicas",
        )
    ]


def _fargate_size_of(section: str, cpu: int, memory: int) -> list[str]:
    allowed = FARGATE_MEMORY_BY_CPU.get(cpu)
    if allowed is None:
        return [
            _problem(
                f"{section}.cpu",
                f"{cpu} is not a Fargate CPU size",
                f"use one of {', '.join(map(str, FARGATE_MEMORY_BY_CPU))}",
            )
        ]
    if memory not in allowed:
        return [
            _problem(
                f"{section}.memory",
                f"{memory} MiB is not valid with cpu {cpu}",
                f"use {allowed[0]}-{allowed[-1]} MiB in steps of {allowed[1] - allowed[0]}",
            )
        ]
    return []


def _fargate_size(ctx: dict[str, Any]) -> list[str]:
    server: ServerSettings = ctx["server"]
    if ctx["compute"].backend == "kubernetes":
        return kubernetes_pod_size(server.cpu, server.memory)
    return _fargate_size_of("server", server.cpu, server.memory)


def _maintenance_fargate_size(ctx: dict[str, Any]) -> list[str]:
    maintenance: MaintenanceSettings = ctx["maintenance"]
    if not maintenance.enabled:
        return []
    return _fargate_size_of("maintenance", maintenance.cpu, maintenance.memory)


def _maintenance_reaches_tracking_url(ctx: dict[str, Any]) -> list[str]:
    """The maintenance task calls the tracking URL from a private subnet. To an internal load
    balancer it connects inside the VPC (the platform admits its security group); to an
    internet-facing one its packets leave through the NAT gateways, so the load balancer sees the
    NAT's public IPs. The platform admits the NAT gateways it creates; an existing VPC's NAT
    addresses are unknown to the stack, and a restricted allowedCidrs would silently drop them."""
    maintenance: MaintenanceSettings = ctx["maintenance"]
    load_balancer: LoadBalancerSettings = ctx["loadBalancer"]
    network: NetworkSettings = ctx["network"]
    if (
        not maintenance.enabled
        or ctx["tenancy"].mode != "standalone"  # the platform admits its own NAT gateways' addresses
        or not load_balancer.internet_facing
        or load_balancer_open_to_all(load_balancer)
        or network.existing_vpc_id is None
    ):
        return []
    return [
        _problem(
            "maintenance.enabled",
            "the maintenance task would reach the internet-facing load balancer through the existing "
            "VPC's NAT, whose public IPs the stack cannot know and loadBalancer.allowedCidrs "
            f"({', '.join(load_balancer.allowed_cidrs)}) may not admit: "
            "scheduled runs could silently time out",
            "set loadBalancer.internetFacing: false (the task is then admitted by security group), "
            "allow 0.0.0.0/0, or set maintenance.enabled: false and run "
            "`mlflow-stack runs maintenance --stack <stack> --apply` from an allowed network",
        )
    ]


def load_balancer_open_to_all(load_balancer: LoadBalancerSettings) -> bool:
    """Whether allowedCidrs admits every IPv4 address (then nothing needs to be added to it)."""
    return any(ipaddress.ip_network(cidr).prefixlen == 0 for cidr in load_balancer.allowed_cidrs)


def _keepalive(ctx: dict[str, Any]) -> list[str]:
    server: ServerSettings = ctx["server"]
    load_balancer: LoadBalancerSettings = ctx["loadBalancer"]
    if server.keepalive_seconds > load_balancer.idle_timeout_seconds:
        return []
    return [
        _problem(
            "server.keepaliveSeconds",
            f"{server.keepalive_seconds}s is not above loadBalancer.idleTimeoutSeconds "
            f"({load_balancer.idle_timeout_seconds}s); the server would close connections the load "
            "balancer still reuses, and clients would see 502s",
            "set keepaliveSeconds above the idle timeout (e.g. idle timeout + 15)",
        )
    ]


def _network_shape(ctx: dict[str, Any]) -> list[str]:
    network: NetworkSettings = ctx["network"]
    load_balancer: LoadBalancerSettings = ctx["loadBalancer"]
    problems = []
    if network.existing_vpc_id is None:
        if network.existing_public_subnet_ids or network.existing_private_subnet_ids:
            problems.append(
                _problem(
                    "network.existingVpcId",
                    "subnet ids are set but no existing VPC",
                    "set existingVpcId, or remove existingPublicSubnetIds/existingPrivateSubnetIds",
                )
            )
        if network.nat_gateways == "none":
            problems.append(
                _problem(
                    "network.natGateways",
                    "'none' leaves a new VPC's private subnets without egress (ECR, Secrets Manager, logs)",
                    "use 'single' or 'per_az', or bring an existing VPC with its own egress",
                )
            )
        return problems
    if len(network.existing_private_subnet_ids) < 2:
        problems.append(
            _problem(
                "network.existingPrivateSubnetIds",
                "an existing VPC needs at least 2 private subnets (RDS subnet groups span 2 AZs)",
                "list the VPC's private subnet ids, one per AZ",
            )
        )
    if load_balancer.internet_facing and len(network.existing_public_subnet_ids) < 2:
        problems.append(
            _problem(
                "network.existingPublicSubnetIds",
                "an internet-facing load balancer needs at least 2 public subnets",
                "list the VPC's public subnet ids, or set loadBalancer.internetFacing: false",
            )
        )
    return problems


def min_max_allocated_storage_gb(allocated_storage_gb: int) -> int:
    """The smallest autoscaling ceiling RDS accepts for an allocation (10 % above, whole GiB)."""
    return math.ceil(allocated_storage_gb * RDS_MAX_STORAGE_RATIO - 1e-9)


def _storage(ctx: dict[str, Any]) -> list[str]:
    database: DatabaseSettings = ctx["database"]
    minimum = min_max_allocated_storage_gb(database.allocated_storage_gb)
    if database.max_allocated_storage_gb >= minimum:
        return []
    return [
        _problem(
            "database.maxAllocatedStorageGb",
            f"{database.max_allocated_storage_gb} is less than 10 % above allocatedStorageGb "
            f"{database.allocated_storage_gb}; RDS refuses a storage autoscaling ceiling below "
            f"{RDS_MAX_STORAGE_RATIO} x the allocation (InvalidParameterCombination)",
            f"set maxAllocatedStorageGb to at least {minimum}",
        )
    ]


def _lifecycle_order(ctx: dict[str, Any]) -> list[str]:
    artifacts: ArtifactSettings = ctx["artifacts"]
    if artifacts.archive_after_days >= artifacts.ia_after_days + 30:
        return []
    return [
        _problem(
            "artifacts.archiveAfterDays",
            f"{artifacts.archive_after_days} is less than 30 days after iaAfterDays "
            f"{artifacts.ia_after_days}; S3 requires 30 days in STANDARD_IA before the next transition",
            f"set archiveAfterDays to at least {artifacts.ia_after_days + 30}",
        )
    ]


def _domain(ctx: dict[str, Any]) -> list[str]:
    domain: DomainSettings = ctx["domain"]
    region: str = ctx["region"]
    if ctx["tenancy"].mode == "team":
        return []  # the platform stack's wildcard certificate and DNS record serve a team's host
    problems = []
    if domain.certificate_arn is None and domain.hosted_zone_id is None:
        problems.append(
            _problem(
                "domain.certificateArn",
                "neither certificateArn nor hostedZoneId is set; HTTPS needs a certificate",
                "set certificateArn (existing ACM certificate) or hostedZoneId (new DNS-validated one)",
            )
        )
    if domain.create_alias_record and domain.hosted_zone_id is None:
        problems.append(
            _problem(
                "domain.createAliasRecord",
                "is true but there is no hostedZoneId to create the record in",
                "set hostedZoneId, or createAliasRecord: false and point DNS at the load balancer yourself",
            )
        )
    if domain.certificate_arn is not None and domain.certificate_arn.split(":")[3] != region:
        problems.append(
            _problem(
                "domain.certificateArn",
                f"certificate is in {domain.certificate_arn.split(':')[3]}, the stack in {region}",
                "use an ACM certificate from the stack's region (a load balancer cannot use another's)",
            )
        )
    return problems


def _prod_guards(ctx: dict[str, Any]) -> list[str]:
    if ctx["environment"] != "prod":
        return []
    database: DatabaseSettings = ctx["database"]
    artifacts: ArtifactSettings = ctx["artifacts"]
    overrides: dict[str, str] = ctx["overrides"]
    violations = {
        "database.multiAz": (not database.multi_az, "prod requires Multi-AZ"),
        "database.deletionProtection": (
            not database.deletion_protection,
            "prod requires deletion protection",
        ),
        "database.backupRetentionDays": (
            database.backup_retention_days < MIN_PROD_BACKUP_DAYS,
            f"prod requires >= {MIN_PROD_BACKUP_DAYS} days of backups (got {database.backup_retention_days})",
        ),
        "artifacts.forceDestroy": (artifacts.force_destroy, "prod must not let destroy empty the bucket"),
    }
    return [
        _problem(
            key,
            what,
            f"fix the value, or waive it explicitly with overrides: {{{key}: <reason>}}",
        )
        for key, (violated, what) in violations.items()
        if violated and key not in overrides
    ]


def _override_keys(ctx: dict[str, Any]) -> list[str]:
    problems = []
    for key, reason in ctx["overrides"].items():
        if key not in PROD_GUARDS:
            problems.append(
                _problem(
                    f"overrides.{key}", "is not a guard that can be waived", f"use {', '.join(PROD_GUARDS)}"
                )
            )
        elif len(reason.strip()) < MIN_OVERRIDE_REASON_CHARS:
            problems.append(
                _problem(
                    f"overrides.{key}",
                    "needs a reason",
                    f"write why the guard is waived (at least {MIN_OVERRIDE_REASON_CHARS} characters)",
                )
            )
    return problems


def _restore(ctx: dict[str, Any]) -> list[str]:
    database: DatabaseSettings = ctx["database"]
    problems = []
    if database.restore_from_snapshot and database.restore_from_instance:
        problems.append(
            _problem(
                "database.restoreFromSnapshot",
                "is set together with database.restoreFromInstance",
                "restore from a snapshot or to a point in time, not both: remove one of them",
            )
        )
    if database.restore_from_instance and not database.restore_time:
        problems.append(
            _problem(
                "database.restoreTime",
                "is missing: a point-in-time restore from database.restoreFromInstance needs the time",
                "set restoreTime to a UTC time like 2026-01-31T12:00:00Z, or `latest`",
            )
        )
    if database.restore_time and not database.restore_from_instance:
        problems.append(
            _problem(
                "database.restoreTime",
                "is set without database.restoreFromInstance",
                "name the instance whose backups to restore (restoreFromInstance), or remove restoreTime",
            )
        )
    return problems


# rule, and the inputs it needs (skipped when one of them already failed validation).
CROSS_CHECKS: tuple[tuple[CrossCheck, tuple[str, ...]], ...] = (
    (_connection_budget, ("server", "database")),
    (_replica_range, ("server",)),
    (_fargate_size, ("server", "compute")),
    (_maintenance_fargate_size, ("maintenance",)),
    (_maintenance_reaches_tracking_url, ("maintenance", "loadBalancer", "network", "tenancy")),
    (_keepalive, ("server", "loadBalancer")),
    (_network_shape, ("network", "loadBalancer")),
    (_storage, ("database",)),
    (_restore, ("database",)),
    (_lifecycle_order, ("artifacts",)),
    (_domain, ("domain", "region", "tenancy")),
    (_prod_guards, ("environment", "database", "artifacts", "overrides")),
    (_override_keys, ("overrides",)),
    (kubernetes_checks, ("compute", "kubernetes")),
)
