"""The whole stack configuration as one validated model, read from Pulumi config.

Pulumi config namespace `mlflow-stack:` holds one key per section (YAML objects with camelCase keys),
plus a few scalars (`team`, `environment`, `owner`, `costCenter`, `tags`, `overrides`,
`permissionsBoundaryArn`) and `aws:region`. The environment (`dev`, `staging`, `prod`) picks a preset of
defaults; any key set in the stack file wins over the preset.

Validation never stops at the first problem: every section is checked, then every cross-field rule
whose inputs are valid, and one `SettingsError` lists them all as
`mlflow-stack:<key>: <what is wrong> — <how to fix>` before a single resource is registered.

`build_settings()` is the pure core (plain dicts in, `Settings` out) so it is testable without Pulumi;
`load_settings()` gathers its inputs from the running Pulumi program.
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
import zoneinfo
from collections.abc import Callable, Mapping
from typing import Any, Literal

from pulumi.errors import RunError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.alias_generators import to_camel

PROJECT = "mlflow-stack"
CONFIG_NAMESPACE = PROJECT
Environment = Literal["dev", "staging", "prod"]
ENVIRONMENTS: tuple[str, ...] = ("dev", "staging", "prod")

# SQLAlchemy engines one MLflow server worker process opens against PostgreSQL, each with its own
# pool: the tracking store and the model registry store keep *separate* class-level engine caches
# (mlflow/store/tracking/sqlalchemy_store.py and mlflow/store/model_registry/sqlalchemy_store.py,
# both `_engine_map`), and basic-auth opens a third for its users/permissions DB
# (mlflow/server/auth/sqlalchemy_store.py). Checked in MLflow 3.17.
ENGINES_PER_WORKER = 3
# Connections the replica's main process (the entrypoint, which runs MLflow's `server` command)
# keeps open besides its workers: MLflow initialises the tracking/registry stores and the auth
# store there before starting uvicorn, and their pools keep one connection each to both
# databases. Measured on the local stack (pg_stat_activity by client process): 2 to the tracking
# DB and 2 to the auth DB, constant under load, since that process serves no requests.
MAIN_PROCESS_CONNECTIONS_PER_REPLICA = 4
# RDS PostgreSQL default: max_connections = LEAST(DBInstanceClassMemory / 9531392, 5000).
RDS_CONNECTION_MEMORY_BYTES = 9531392
RDS_MAX_CONNECTIONS_CAP = 5000
# Leave a fifth of the connections for migrations, admin sessions, RDS' own reserved slots and the
# fact that DBInstanceClassMemory is a little below the class's nominal memory.
CONNECTION_BUDGET_FRACTION = 0.8

GIB = 1024**3
# Nominal memory of the RDS instance classes this kit supports (Graviton and current Intel/AMD).
INSTANCE_CLASS_MEMORY_GIB: dict[str, float] = {
    "db.t4g.micro": 1,
    "db.t4g.small": 2,
    "db.t4g.medium": 4,
    "db.t4g.large": 8,
    "db.t4g.xlarge": 16,
    "db.t4g.2xlarge": 32,
    "db.t3.micro": 1,
    "db.t3.small": 2,
    "db.t3.medium": 4,
    "db.t3.large": 8,
    "db.m7g.large": 8,
    "db.m7g.xlarge": 16,
    "db.m7g.2xlarge": 32,
    "db.m7g.4xlarge": 64,
    "db.m7g.8xlarge": 128,
    "db.m6g.large": 8,
    "db.m6g.xlarge": 16,
    "db.m6g.2xlarge": 32,
    "db.m6i.large": 8,
    "db.m6i.xlarge": 16,
    "db.m6i.2xlarge": 32,
    "db.r7g.large": 16,
    "db.r7g.xlarge": 32,
    "db.r7g.2xlarge": 64,
    "db.r7g.4xlarge": 128,
    "db.r6g.large": 16,
    "db.r6g.xlarge": 32,
    "db.r6g.2xlarge": 64,
}

# Fargate task sizes: cpu units -> allowed memory (MiB).
FARGATE_MEMORY_BY_CPU: dict[int, tuple[int, ...]] = {
    256: (512, 1024, 2048),
    512: tuple(range(1024, 4096 + 1, 1024)),
    1024: tuple(range(2048, 8192 + 1, 1024)),
    2048: tuple(range(4096, 16384 + 1, 1024)),
    4096: tuple(range(8192, 30720 + 1, 1024)),
    8192: tuple(range(16384, 61440 + 1, 4096)),
    16384: tuple(range(32768, 122880 + 1, 8192)),
}

# CloudWatch Logs accepts only these retention periods (PutRetentionPolicy).
LOG_RETENTION_DAYS: tuple[int, ...] = (
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653,
)  # fmt: skip

# Load balancer and target group names are limited to 32 characters. The edge component names them
# f"{name_prefix}-alb" and f"{name_prefix}-tg", so the prefix may use at most 32 - len("-alb").
LB_NAME_LIMIT = 32
LONGEST_LB_ROLE_SUFFIX = "-alb"
NAME_PREFIX_LIMIT = LB_NAME_LIMIT - len(LONGEST_LB_ROLE_SUFFIX)
# Lowercase DNS label without consecutive or trailing hyphens: valid in S3 bucket names, RDS
# identifiers, IAM/ALB names and DNS.
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")

# Prod guards that an explicit `overrides` entry (key -> reason) may waive.
PROD_GUARDS: tuple[str, ...] = (
    "database.multiAz",
    "database.deletionProtection",
    "database.backupRetentionDays",
    "artifacts.forceDestroy",
)
MIN_PROD_BACKUP_DAYS = 7
MIN_OVERRIDE_REASON_CHARS = 10

# S3 storage classes whose objects GetObject reads at once, and those that need a RestoreObject
# first ("Understanding archival storage in S3 Glacier Flexible Retrieval and S3 Glacier Deep
# Archive", S3 User Guide: objects in these classes "are not available for real-time access").
# The registry points at artifacts for as long as a model version exists, so artifacts may only
# ever move to a class that stays instantly readable. STANDARD_IA is the first transition.
INSTANT_ARCHIVE_STORAGE_CLASSES: tuple[str, ...] = ("GLACIER_IR", "INTELLIGENT_TIERING")
ARCHIVED_STORAGE_CLASSES: tuple[str, ...] = ("GLACIER", "DEEP_ARCHIVE")
# Keys an earlier version of the kit accepted: the fix their "unknown key" error names.
RENAMED_KEYS: dict[str, str] = {
    "glacierAfterDays": "it was renamed archiveAfterDays; artifacts now move to archiveStorageClass "
    "(default GLACIER_IR), because GLACIER objects cannot be downloaded without a restore",
}
# RDS: "the maximum storage threshold must be at least 10 percent more than the current allocated
# storage" ("Managing capacity automatically with Amazon RDS storage autoscaling", RDS User Guide).
RDS_MAX_STORAGE_RATIO = 1.1


class _Section(BaseModel):
    """Base for every settings model: immutable, unknown keys rejected, camelCase YAML keys."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        strict=True,
        alias_generator=to_camel,
        populate_by_name=True,
    )


class NetworkSettings(_Section):
    """Where the stack runs: a new VPC, or an existing one."""

    vpc_cidr: str = Field("10.40.0.0/16", description="CIDR of the new VPC (ignored with existingVpcId)")
    az_count: int = Field(2, ge=2, le=6, description="availability zones to spread subnets over")
    nat_gateways: Literal["single", "per_az", "none"] = Field(
        "single", description="NAT gateways for private subnets: one shared, one per AZ, or none"
    )
    existing_vpc_id: str | None = Field(None, description="use this VPC instead of creating one")
    existing_public_subnet_ids: list[str] = Field(
        default_factory=list, description="public subnets of the existing VPC (load balancer)"
    )
    existing_private_subnet_ids: list[str] = Field(
        default_factory=list, description="private subnets of the existing VPC (database, tasks)"
    )
    flow_logs: bool = Field(False, description="VPC flow logs to CloudWatch Logs")

    @field_validator("vpc_cidr")
    @classmethod
    def _cidr(cls, value: str) -> str:
        network = ipaddress.ip_network(value, strict=True)
        if network.version != 4 or not 16 <= network.prefixlen <= 22:
            raise ValueError("must be an IPv4 network between /16 and /22, e.g. 10.40.0.0/16")
        return value

    @field_validator("existing_vpc_id")
    @classmethod
    def _vpc_id(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"vpc-[0-9a-f]{8,17}", value):
            raise ValueError("must look like vpc-0123456789abcdef0")
        return value

    @field_validator("existing_public_subnet_ids", "existing_private_subnet_ids")
    @classmethod
    def _subnet_ids(cls, value: list[str]) -> list[str]:
        bad = [subnet for subnet in value if not re.fullmatch(r"subnet-[0-9a-f]{8,17}", subnet)]
        if bad:
            raise ValueError(f"{', '.join(bad)} do not look like subnet-0123456789abcdef0")
        return value


class DatabaseSettings(_Section):
    """RDS PostgreSQL for the tracking store, model registry and basic-auth DB."""

    engine_version: str = Field("17", description="PostgreSQL major (or major.minor) version")
    instance_class: str = Field("db.t4g.micro", description="RDS instance class")
    allocated_storage_gb: int = Field(20, ge=20, le=65536, description="initial gp3 storage")
    max_allocated_storage_gb: int = Field(100, ge=20, le=65536, description="storage autoscaling ceiling")
    multi_az: bool = Field(False, description="standby replica in a second AZ")
    backup_retention_days: int = Field(7, ge=0, le=35, description="automated backup retention")
    deletion_protection: bool = Field(False, description="RDS deletion protection")
    final_snapshot: bool = Field(False, description="take a final snapshot when the instance is deleted")
    performance_insights: bool = Field(True, description="Performance Insights (7 days, free tier)")
    slow_query_ms: int = Field(500, ge=0, description="log statements slower than this (0 logs all)")

    @field_validator("engine_version")
    @classmethod
    def _engine_version(cls, value: str) -> str:
        if not re.fullmatch(r"1[3-9](\.\d+)?", value):
            raise ValueError("must be a PostgreSQL version 13 or later, e.g. '17' or '17.5'")
        return value

    @field_validator("instance_class")
    @classmethod
    def _instance_class(cls, value: str) -> str:
        if value not in INSTANCE_CLASS_MEMORY_GIB:
            raise ValueError(f"unknown instance class; use one of {', '.join(INSTANCE_CLASS_MEMORY_GIB)}")
        return value

    @property
    def engine_major(self) -> str:
        return self.engine_version.split(".")[0]

    @property
    def max_connections(self) -> int:
        """RDS' default max_connections for this instance class."""
        memory = INSTANCE_CLASS_MEMORY_GIB[self.instance_class] * GIB
        return min(int(memory // RDS_CONNECTION_MEMORY_BYTES), RDS_MAX_CONNECTIONS_CAP)


class ArtifactSettings(_Section):
    """The S3 bucket behind MLflow's proxied artifacts, and its lifecycle rules (ages in days)."""

    prefix: str = Field("mlflow-artifacts", description="key prefix the server writes artifacts under")
    ia_after_days: int = Field(90, ge=30, description="move artifacts to STANDARD_IA after")
    archive_after_days: int = Field(365, ge=1, description="move artifacts to archiveStorageClass after")
    archive_storage_class: str = Field(
        "GLACIER_IR",
        description="storage class of old artifacts: GLACIER_IR or INTELLIGENT_TIERING (instantly readable; "
        "GLACIER and DEEP_ARCHIVE are refused)",
    )
    tmp_expire_days: int = Field(7, ge=1, description="delete objects under tmp/ after")
    abort_multipart_days: int = Field(7, ge=1, description="abort incomplete multipart uploads after")
    noncurrent_expire_days: int = Field(7, ge=1, description="delete overwritten/deleted versions after")
    force_destroy: bool = Field(False, description="let `pulumi destroy` delete a non-empty bucket")

    @field_validator("archive_storage_class")
    @classmethod
    def _archive_storage_class(cls, value: str) -> str:
        if value in ARCHIVED_STORAGE_CLASSES:
            raise ValueError(
                f"{value} objects must be restored before GetObject works (it answers InvalidObjectState), "
                "so downloads of old artifacts, loading an old model version and rolling back to it would "
                f"fail; use {' or '.join(INSTANT_ARCHIVE_STORAGE_CLASSES)}"
            )
        if value not in INSTANT_ARCHIVE_STORAGE_CLASSES:
            raise ValueError(f"must be one of {', '.join(INSTANT_ARCHIVE_STORAGE_CLASSES)}")
        return value

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not re.fullmatch(r"[a-z0-9][a-z0-9._-]*(/[a-z0-9][a-z0-9._-]*)*", value) or value.startswith(
            "tmp"
        ):
            raise ValueError(
                "must be a relative key prefix of lowercase letters, digits, '.', '_', '-' and '/', "
                "without leading/trailing '/' and not under tmp/ (which expires)"
            )
        return value


class ServerSettings(_Section):
    """The MLflow server replicas (ECS Fargate service)."""

    image: str | None = Field(None, description="prebuilt image; unset builds server/Dockerfile into ECR")
    cpu: int = Field(1024, description="Fargate task CPU units")
    memory: int = Field(2048, description="Fargate task memory (MiB), valid for the CPU size")
    workers: int = Field(2, ge=1, le=16, description="server worker processes per replica")
    min_replicas: int = Field(1, ge=1, le=100, description="autoscaling floor")
    max_replicas: int = Field(2, ge=1, le=100, description="autoscaling ceiling")
    target_cpu_percent: int = Field(60, ge=10, le=90, description="target-tracking CPU utilisation")
    target_requests_per_target: int = Field(
        300, ge=1, description="target-tracking ALB requests per replica per minute"
    )
    scale_in_cooldown_seconds: int = Field(300, ge=0, description="wait after scaling in")
    scale_out_cooldown_seconds: int = Field(60, ge=0, description="wait after scaling out")
    keepalive_seconds: int = Field(75, ge=1, description="HTTP keep-alive; above the LB idle timeout")
    db_pool_size: int = Field(5, ge=1, description="SQLAlchemy pool size per engine")
    db_max_overflow: int = Field(5, ge=0, description="SQLAlchemy max overflow per engine")
    default_permission: Literal["READ", "EDIT", "MANAGE", "NO_PERMISSIONS"] = Field(
        "NO_PERMISSIONS", description="basic-auth permission for users without an explicit grant"
    )
    auth_cache_ttl_seconds: int = Field(60, ge=0, description="basic-auth credential cache TTL (0 off)")
    admin_username: str = Field("admin", description="basic-auth admin user name")
    hot_paths: bool = Field(
        True,
        description="the kit's CPU savings on MLflow's request hot paths (server/hot_paths.py); "
        "false is an escape hatch",
    )
    log_retention_days: int = Field(14, description="CloudWatch Logs retention of server logs")
    health_check_grace_seconds: int = Field(120, ge=0, description="ignore health checks after start")

    @field_validator("image")
    @classmethod
    def _image(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[a-z0-9][a-z0-9._/:@-]*[a-z0-9]", value):
            raise ValueError("must be an image reference like 123456789012.dkr.ecr.../mlflow:3.17.2")
        return value

    @field_validator("admin_username")
    @classmethod
    def _admin_username(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_.-]{1,63}", value):
            raise ValueError("must start with a letter and use only letters, digits, '_', '.', '-'")
        return value

    @field_validator("log_retention_days")
    @classmethod
    def _log_retention(cls, value: int) -> int:
        if value not in LOG_RETENTION_DAYS:
            raise ValueError(f"CloudWatch Logs accepts only {', '.join(map(str, LOG_RETENTION_DAYS))}")
        return value


class LoadBalancerSettings(_Section):
    """The Application Load Balancer in front of the replicas."""

    internet_facing: bool = Field(True, description="public ALB (else internal)")
    allowed_cidrs: list[str] = Field(
        default_factory=lambda: ["0.0.0.0/0"], description="client CIDRs allowed on 80/443"
    )
    idle_timeout_seconds: int = Field(60, ge=1, le=4000, description="ALB idle timeout")
    deregistration_delay_seconds: int = Field(30, ge=0, le=3600, description="draining time per target")
    ssl_policy: str = Field("ELBSecurityPolicy-TLS13-1-2-2021-06", description="HTTPS listener policy")
    deletion_protection: bool = Field(False, description="ALB deletion protection")
    access_logs: bool = Field(False, description="ALB access logs to S3")

    @field_validator("allowed_cidrs")
    @classmethod
    def _cidrs(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("must list at least one CIDR")
        for cidr in value:
            ipaddress.ip_network(cidr, strict=True)
        return value

    @field_validator("ssl_policy")
    @classmethod
    def _ssl_policy(cls, value: str) -> str:
        if not value.startswith("ELBSecurityPolicy-"):
            raise ValueError("must be an ELB security policy name, e.g. ELBSecurityPolicy-TLS13-1-2-2021-06")
        return value


class DomainSettings(_Section):
    """The public host name and its TLS certificate."""

    name: str = Field(description="host name clients use, e.g. mlflow.dev.example.com")
    certificate_arn: str | None = Field(None, description="existing ACM certificate for the name")
    hosted_zone_id: str | None = Field(None, description="Route 53 zone: DNS-validated cert and alias")
    create_alias_record: bool = Field(True, description="create the Route 53 alias to the ALB")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        label = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
        if len(value) > 253 or not re.fullmatch(rf"({label}\.)+[a-z]{{2,63}}", value):
            raise ValueError("must be a lowercase fully-qualified host name, e.g. mlflow.dev.example.com")
        return value

    @field_validator("certificate_arn")
    @classmethod
    def _certificate_arn(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(
            r"arn:aws[a-z-]*:acm:[a-z0-9-]+:\d{12}:certificate/[0-9a-f-]{36}", value
        ):
            raise ValueError(
                "must be an ACM certificate ARN (arn:aws:acm:<region>:<account>:certificate/<id>)"
            )
        return value

    @field_validator("hosted_zone_id")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"Z[A-Z0-9]{4,31}", value):
            raise ValueError("must be a Route 53 hosted zone id like Z0123456789ABCDEFGHIJ")
        return value


class AlarmSettings(_Section):
    """CloudWatch alarm thresholds and where notifications go."""

    email: str | None = Field(None, description="SNS email subscription for alarms (unset: no e-mail)")
    p95_latency_ms: float = Field(500, gt=0, description="ALB target p95 response time")
    # Explicit alias: the generated camelCase would be "http5XxPercent".
    http_5xx_percent: float = Field(
        5, gt=0, le=100, alias="http5xxPercent", description="share of 5xx responses"
    )
    unhealthy_hosts: int = Field(1, ge=1, description="unhealthy targets")
    rds_cpu_percent: float = Field(80, gt=0, le=100, description="RDS CPU utilisation")
    rds_free_storage_percent: float = Field(10, gt=0, lt=100, description="RDS free storage left")
    rds_connections_percent: float = Field(80, gt=0, le=100, description="RDS connections of max")
    ecs_cpu_percent: float = Field(85, gt=0, le=100, description="ECS service CPU utilisation")
    ecs_memory_percent: float = Field(85, gt=0, le=100, description="ECS service memory utilisation")

    @field_validator("email")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[^@\s]+@[^@\s]+\.[a-z]{2,}", value):
            raise ValueError("must be an e-mail address")
        return value


# EventBridge Scheduler's recurring expressions: cron(<6 fields>) or rate(<n> <unit>). Scheduler
# also has one-off at(...), which would run maintenance once and never again.
SCHEDULE_EXPRESSION = re.compile(r"cron\(\S+( \S+){5}\)|rate\([1-9]\d* (minute|hour|day)s?\)")


class MaintenanceSettings(_Section):
    """Scheduled day-2 maintenance: an ECS task running `mlflow-stack runs maintenance --apply`.

    Each run reaps runs stuck in RUNNING, soft-deletes old runs (restorable), then `mlflow gc`
    permanently removes runs deleted longer ago than gcOlderThanDays, with their artifacts."""

    enabled: bool = Field(True, description="create the lock table, the maintenance task and its schedule")
    schedule: str = Field(
        "cron(0 3 ? * SUN *)", description="EventBridge Scheduler cron(...) or rate(...) expression"
    )
    timezone: str = Field("UTC", description="IANA time zone the schedule's cron fields are read in")
    reap_stuck_after_hours: int = Field(
        24, ge=1, description="mark RUNNING runs without an update for this long as FAILED"
    )
    cleanup_older_than_days: int = Field(
        90, ge=1, description="soft-delete finished runs older than this (restorable until gc)"
    )
    cleanup_experiment_pattern: str = Field(
        "*", description="glob of experiment names the cleanup applies to ('*' is every experiment)"
    )
    gc_older_than_days: int = Field(
        30, ge=1, description="permanently delete runs deleted longer ago than this (the undo window)"
    )
    cpu: int = Field(512, description="Fargate task CPU units of the maintenance task")
    memory: int = Field(1024, description="Fargate task memory (MiB) of the maintenance task")

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str) -> str:
        if not SCHEDULE_EXPRESSION.fullmatch(value):
            raise ValueError(
                "is not a recurring EventBridge Scheduler expression; use cron(min hour day month weekday "
                "year), e.g. cron(0 3 ? * SUN *), or rate(N minutes|hours|days)"
            )
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError("must be an IANA time zone name, e.g. UTC or Europe/Berlin") from None
        return value

    @field_validator("cleanup_experiment_pattern")
    @classmethod
    def _pattern(cls, value: str) -> str:
        if not value.strip() or value != value.strip():
            raise ValueError("must be a non-empty glob without surrounding spaces, e.g. '*' or 'sandbox-*'")
        return value


SECTION_MODELS: dict[str, type[_Section]] = {
    "network": NetworkSettings,
    "database": DatabaseSettings,
    "artifacts": ArtifactSettings,
    "server": ServerSettings,
    "loadBalancer": LoadBalancerSettings,
    "domain": DomainSettings,
    "alarms": AlarmSettings,
    "maintenance": MaintenanceSettings,
}

# Per-environment defaults (YAML key names). Anything not listed uses the model default above.
# Pool sizes are smaller where the instance class is: see the connection budget check.
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "dev": {
        "network": {"natGateways": "single", "flowLogs": False},
        "database": {
            "instanceClass": "db.t4g.micro",
            "maxAllocatedStorageGb": 100,
            "multiAz": False,
            # Not 1: the policy pack (rds-backup-retention) requires 7 days in every environment,
            # and a dev database's backups up to its own size cost nothing extra.
            "backupRetentionDays": 7,
            "deletionProtection": False,
            "finalSnapshot": False,
        },
        "artifacts": {"noncurrentExpireDays": 7, "forceDestroy": True},
        "server": {
            "minReplicas": 1,
            "maxReplicas": 2,
            "dbPoolSize": 2,
            "dbMaxOverflow": 2,
            "logRetentionDays": 14,
        },
        "loadBalancer": {"deletionProtection": False, "accessLogs": False},
        # Dev runs are scratch work: a month is enough to compare against.
        "maintenance": {"enabled": True, "cleanupOlderThanDays": 30},
    },
    "staging": {
        "network": {"natGateways": "single", "flowLogs": False},
        "database": {
            "instanceClass": "db.t4g.small",
            "maxAllocatedStorageGb": 200,
            "multiAz": False,
            "backupRetentionDays": 7,
            "deletionProtection": False,
            "finalSnapshot": True,
        },
        "artifacts": {"noncurrentExpireDays": 14, "forceDestroy": False},
        "server": {
            "minReplicas": 2,
            "maxReplicas": 4,
            "dbPoolSize": 3,
            "dbMaxOverflow": 3,
            "logRetentionDays": 30,
        },
        "loadBalancer": {"deletionProtection": False, "accessLogs": False},
        # A quarter: one release cycle of validation runs.
        "maintenance": {"enabled": True, "cleanupOlderThanDays": 90},
    },
    "prod": {
        "network": {"natGateways": "per_az", "flowLogs": True},
        "database": {
            "instanceClass": "db.m7g.large",
            "maxAllocatedStorageGb": 500,
            "multiAz": True,
            "backupRetentionDays": 14,
            "deletionProtection": True,
            "finalSnapshot": True,
        },
        "artifacts": {"noncurrentExpireDays": 30, "forceDestroy": False},
        "server": {
            "minReplicas": 2,
            "maxReplicas": 6,
            "dbPoolSize": 5,
            "dbMaxOverflow": 5,
            "logRetentionDays": 90,
        },
        "loadBalancer": {"deletionProtection": True, "accessLogs": True},
        # Half a year: prod runs are the evidence behind deployed models (audits, regressions
        # traced back to a training run). Runs behind a registered model version are never cleaned.
        "maintenance": {"enabled": True, "cleanupOlderThanDays": 180},
    },
}

# Top-level keys other than the sections: YAML key -> description.
SCALAR_KEYS: dict[str, str] = {
    "team": "team owning a per-team stack (default: parsed from the stack name)",
    "environment": "dev, staging or prod (default: parsed from the stack name)",
    "owner": "owner tag: who to ask about this stack",
    "costCenter": "cost-center tag",
    "tags": "extra tags on every resource",
    "overrides": "waivers of prod guards: key -> reason",
    "permissionsBoundaryArn": "IAM permissions boundary attached to every role",
}
KNOWN_KEYS: tuple[str, ...] = (*SCALAR_KEYS, *SECTION_MODELS)


class Settings(_Section):
    """Everything one stack needs, validated. Build it with `load_settings()` or `build_settings()`."""

    stack: str
    project: str = PROJECT
    team: str | None
    environment: Environment
    region: str
    owner: str
    cost_center: str
    tags: dict[str, str] = Field(default_factory=dict)
    permissions_boundary_arn: str | None = None
    network: NetworkSettings
    database: DatabaseSettings
    artifacts: ArtifactSettings
    server: ServerSettings
    load_balancer: LoadBalancerSettings
    domain: DomainSettings
    alarms: AlarmSettings
    maintenance: MaintenanceSettings
    overrides: dict[str, str] = Field(default_factory=dict)

    @property
    def name_prefix(self) -> str:
        """Prefix of every AWS name: mlflow-<team>-<env> or mlflow-<env>."""
        return name_prefix(self.team, self.environment)

    @property
    def is_prod(self) -> bool:
        return self.environment == "prod"

    @property
    def log_group_name(self) -> str:
        """The server's CloudWatch log group (created by the compute component; IAM is scoped to it)."""
        return f"/{self.project}/{self.stack}/server"

    @property
    def secret_name_prefix(self) -> str:
        """Secrets Manager names: <project>/<stack>/<secret>."""
        return f"{self.project}/{self.stack}"

    @property
    def default_tags(self) -> dict[str, str]:
        """Tags on every taggable resource (provider default tags)."""
        required = {
            "team": self.team or "platform",
            "environment": self.environment,
            "owner": self.owner,
            "cost-center": self.cost_center,
            "project": self.project,
            "stack": self.stack,
        }
        return {**self.tags, **required}

    @property
    def max_db_connections_used(self) -> int:
        """Connections the server can open at full scale-out."""
        return connections_at_full_scale(self.server)


class SettingsError(RunError, ValueError):
    """Every problem in a stack's configuration, reported together.

    A `RunError`, so `pulumi preview`/`up` print the list and exit cleanly, without a traceback."""

    def __init__(self, stack: str, problems: list[str]) -> None:
        self.stack = stack
        self.problems = problems
        lines = "\n".join(f"  - {problem}" for problem in problems)
        super().__init__(
            f"stack {stack!r} has {len(problems)} configuration problem(s); nothing was created:\n{lines}"
        )


def name_prefix(team: str | None, environment: str) -> str:
    return f"mlflow-{team}-{environment}" if team else f"mlflow-{environment}"


def parse_stack_name(stack: str) -> tuple[str | None, str | None]:
    """`prod` -> (None, 'prod'); `search-prod` -> ('search', 'prod'); anything else -> (None, None)."""
    for environment in ENVIRONMENTS:
        if stack == environment:
            return None, environment
        if stack.endswith(f"-{environment}"):
            return stack[: -len(environment) - 1], environment
    return None, None


def _problem(key: str, what: str, fix: str) -> str:
    qualified = key if key.startswith("aws:") else f"{CONFIG_NAMESPACE}:{key}"  # aws:region is not ours
    return f"{qualified}: {what} — {fix}"


def _fix_for(error: Mapping[str, Any], model: type[BaseModel], field: str | None) -> str:
    kind = error["type"]
    renamed = RENAMED_KEYS.get(str(error["loc"][0])) if error.get("loc") else None
    if kind == "extra_forbidden" and renamed:
        return renamed
    if kind == "extra_forbidden":
        valid = ", ".join(info.alias or name for name, info in model.model_fields.items())
        return f"remove it or fix the spelling; valid keys: {valid}"
    if kind == "missing":
        return "set it in the stack file"
    if kind in {"int_type", "int_parsing", "int_from_float"}:
        return "use a whole number without quotes"
    if kind in {"bool_type", "bool_parsing"}:
        return "use true or false without quotes"
    if kind in {"float_type", "float_parsing"}:
        return "use a number without quotes"
    if kind in {"string_type"}:
        return "use a string (quote it in YAML)"
    if kind in {"list_type"}:
        return "use a YAML list"
    if kind in {"dict_type", "model_type"}:
        return "use a YAML mapping"
    if kind == "literal_error":
        return f"use one of {error['ctx']['expected']}"
    description = model.model_fields[field].description if field in model.model_fields else None
    return f"set a valid value ({description})" if description else "set a valid value"


def _pydantic_problems(prefix: str, exc: ValidationError, model: type[BaseModel]) -> list[str]:
    problems = []
    for error in exc.errors():
        loc = [str(part) for part in error["loc"]]
        key = ".".join([prefix, *loc]) if loc else prefix
        field = _field_name(model, loc[0]) if loc else None
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        value = f" (got {error['input']!r})" if error["type"] not in {"missing", "extra_forbidden"} else ""
        problems.append(_problem(key, f"{message}{value}", _fix_for(error, model, field)))
    return problems


def _field_name(model: type[BaseModel], key: str) -> str | None:
    for name, info in model.model_fields.items():
        if key in {name, info.alias}:
            return name
    return None


def _normalise_keys(model: type[BaseModel], value: Mapping[str, Any]) -> dict[str, Any]:
    """Accept snake_case keys too, but always hand pydantic the alias so presets merge cleanly."""
    normalised: dict[str, Any] = {}
    for key, item in value.items():
        name = _field_name(model, key)
        normalised[model.model_fields[name].alias or name if name else key] = item
    return normalised


def _build_section(
    key: str, model: type[_Section], environment: str, raw: Any, problems: list[str]
) -> _Section | None:
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        problems.append(_problem(key, f"must be a mapping (got {raw!r})", "write the section as YAML keys"))
        return None
    merged = {**PRESETS[environment].get(key, {}), **_normalise_keys(model, raw)}
    try:
        return model.model_validate(merged)
    except ValidationError as exc:
        problems.extend(_pydantic_problems(key, exc, model))
        return None


def _check_identity(stack: str, raw: Mapping[str, Any], problems: list[str]) -> tuple[str | None, str | None]:
    stack_team, stack_env = parse_stack_name(stack)
    environment = raw.get("environment", stack_env)
    team = raw.get("team", stack_team)
    if stack_env is None and "environment" not in raw:
        problems.append(
            _problem(
                "environment",
                f"stack name {stack!r} is neither <env> nor <team>-<env>",
                f"rename the stack to one of {', '.join(ENVIRONMENTS)} or <team>-<env>, "
                "or set mlflow-stack:environment",
            )
        )
        return team, None
    if environment not in ENVIRONMENTS:
        problems.append(
            _problem(
                "environment", f"{environment!r} is not an environment", f"use {', '.join(ENVIRONMENTS)}"
            )
        )
        environment = None
    elif stack_env is not None and environment != stack_env:
        problems.append(
            _problem(
                "environment",
                f"{environment!r} contradicts the stack name {stack!r}",
                f"remove the key or set it to {stack_env!r}",
            )
        )
    if stack_team is not None and team != stack_team:
        problems.append(
            _problem(
                "team", f"{team!r} contradicts the stack name {stack!r}", f"remove it or use {stack_team!r}"
            )
        )
    if team is not None and (not isinstance(team, str) or not NAME_PATTERN.fullmatch(team)):
        problems.append(
            _problem(
                "team",
                f"{team!r} is not usable in AWS names (S3 buckets, RDS, IAM, load balancers)",
                "use lowercase letters, digits and single hyphens, starting with a letter, e.g. 'search'",
            )
        )
        team = None
    if environment is not None and (team is None or NAME_PATTERN.fullmatch(team)):
        prefix = name_prefix(team, environment)
        if len(prefix) > NAME_PREFIX_LIMIT:
            room = NAME_PREFIX_LIMIT - len(name_prefix(None, environment)) - len("-")
            problems.append(
                _problem(
                    "team",
                    f"name prefix {prefix!r} is {len(prefix)} characters; load balancer and target group "
                    f"names ({prefix}-alb) must fit in {LB_NAME_LIMIT}",
                    f"use a team name of at most {room} characters",
                )
            )
    return team, environment


def _require_string(key: str, raw: Mapping[str, Any], problems: list[str], fix: str) -> str:
    value = raw.get(key)
    if not isinstance(value, str) or not value.strip():
        what = "is required" if value is None else f"must be a non-empty string (got {value!r})"
        problems.append(_problem(key, what, fix))
        return ""
    return value


def _string_map(key: str, raw: Mapping[str, Any], problems: list[str], fix: str) -> dict[str, str]:
    value = raw.get(key, {})
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        problems.append(_problem(key, f"must map strings to strings (got {value!r})", fix))
        return {}
    return dict(value)


# Tag keys the stack sets itself (see Settings.default_tags), and the setting that drives each.
MANAGED_TAGS: dict[str, str] = {
    "team": "the stack name <team>-<env>",
    "environment": "the stack name",
    "owner": "mlflow-stack:owner",
    "cost-center": "mlflow-stack:costCenter",
    "project": "the project name",
    "stack": "the stack name",
}


def _check_tags(tags: dict[str, str], problems: list[str]) -> None:
    for tag_key, tag_value in tags.items():
        if tag_key in MANAGED_TAGS:
            problems.append(
                _problem(
                    f"tags.{tag_key}",
                    "is set by the stack itself and would be overwritten",
                    f"remove it; it comes from {MANAGED_TAGS[tag_key]}",
                )
            )
        elif len(tag_key) > 128 or len(tag_value) > 256 or tag_key.lower().startswith("aws:"):
            problems.append(
                _problem(
                    f"tags.{tag_key}",
                    "is not a valid AWS tag",
                    "keep keys <= 128 and values <= 256 characters and do not start keys with 'aws:'",
                )
            )


# Cross-field rules. Each takes the validated sections it needs and returns problems.
CrossCheck = Callable[[dict[str, Any]], list[str]]


def connections_at_full_scale(server: ServerSettings) -> int:
    """PostgreSQL connections the server can hold at maxReplicas, every pool full."""
    per_worker = ENGINES_PER_WORKER * (server.db_pool_size + server.db_max_overflow)
    return server.max_replicas * (server.workers * per_worker + MAIN_PROCESS_CONNECTIONS_PER_REPLICA)


def _connection_budget(ctx: dict[str, Any]) -> list[str]:
    server: ServerSettings = ctx["server"]
    database: DatabaseSettings = ctx["database"]
    used = connections_at_full_scale(server)
    budget = int(database.max_connections * CONNECTION_BUDGET_FRACTION)
    if used <= budget:
        return []
    return [
        _problem(
            "server.maxReplicas",
            f"at full scale the server can open {used} PostgreSQL connections "
            f"(maxReplicas {server.max_replicas} x (workers {server.workers} x {ENGINES_PER_WORKER} engines "
            f"(tracking, registry, auth) x (dbPoolSize {server.db_pool_size} + dbMaxOverflow "
            f"{server.db_max_overflow}) + {MAIN_PROCESS_CONNECTIONS_PER_REPLICA} held by the replica's main "
            f"process)), over {int(CONNECTION_BUDGET_FRACTION * 100)}% of "
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


# rule, and the inputs it needs (skipped when one of them already failed validation).
CROSS_CHECKS: tuple[tuple[CrossCheck, tuple[str, ...]], ...] = (
    (_connection_budget, ("server", "database")),
    (_replica_range, ("server",)),
    (_fargate_size, ("server",)),
    (_maintenance_fargate_size, ("maintenance",)),
    (_maintenance_reaches_tracking_url, ("maintenance", "loadBalancer", "network")),
    (_keepalive, ("server", "loadBalancer")),
    (_network_shape, ("network", "loadBalancer")),
    (_storage, ("database",)),
    (_lifecycle_order, ("artifacts",)),
    (_domain, ("domain", "region")),
    (_prod_guards, ("environment", "database", "artifacts", "overrides")),
    (_override_keys, ("overrides",)),
)


def build_settings(stack: str, region: str | None, raw: Mapping[str, Any]) -> Settings:
    """Validate a stack's raw config (YAML keys, `mlflow-stack:` namespace stripped) into `Settings`."""
    problems: list[str] = []
    for key in raw:
        if key not in KNOWN_KEYS:
            problems.append(
                _problem(
                    key, "unknown key", f"remove it or fix the spelling; valid keys: {', '.join(KNOWN_KEYS)}"
                )
            )
    if not region:
        problems.append(_problem("aws:region", "is not set", "run `pulumi config set aws:region us-east-1`"))

    team, environment = _check_identity(stack, raw, problems)
    owner = _require_string("owner", raw, problems, "set mlflow-stack:owner to a person or team e-mail")
    cost_center = _require_string(
        "costCenter", raw, problems, "set mlflow-stack:costCenter (used for billing)"
    )
    tags = _string_map("tags", raw, problems, "write tags as key: value strings")
    _check_tags(tags, problems)
    overrides = _string_map("overrides", raw, problems, "write overrides as <key>: <reason>")
    boundary = raw.get("permissionsBoundaryArn")
    if boundary is not None and not (
        isinstance(boundary, str)
        and re.fullmatch(r"arn:aws[a-z-]*:iam::\d{12}:policy/[\w+=,.@/-]+", boundary)
    ):
        problems.append(
            _problem(
                "permissionsBoundaryArn",
                f"{boundary!r} is not an IAM policy ARN",
                "use arn:aws:iam::<account>:policy/<name>, or remove the key",
            )
        )

    ctx: dict[str, Any] = {"overrides": overrides}
    if region:
        ctx["region"] = region
    if environment is not None:
        ctx["environment"] = environment
        for key, model in SECTION_MODELS.items():
            section = _build_section(key, model, environment, raw.get(key), problems)
            if section is not None:
                ctx[key] = section
    for check, needs in CROSS_CHECKS:
        if all(need in ctx for need in needs):
            problems.extend(check(ctx))

    if problems:
        raise SettingsError(stack, problems)
    return Settings(
        stack=stack,
        team=team,
        environment=environment,
        region=region,
        owner=owner,
        cost_center=cost_center,
        tags=tags,
        permissions_boundary_arn=boundary,
        network=ctx["network"],
        database=ctx["database"],
        artifacts=ctx["artifacts"],
        server=ctx["server"],
        load_balancer=ctx["loadBalancer"],
        domain=ctx["domain"],
        alarms=ctx["alarms"],
        maintenance=ctx["maintenance"],
        overrides=overrides,
    )


def _decode(value: Any) -> Any:
    """Pulumi hands structured config to the program as JSON text, scalars as plain text."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def read_raw_config() -> dict[str, Any]:
    """All `mlflow-stack:` keys of the running program, decoded. Enumerates every key set, not only
    known ones, so a misspelt key is reported instead of silently ignored."""
    from pulumi.runtime import config as runtime_config

    keys = {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}
    raw: dict[str, Any] = {}
    for full_key in keys:
        namespace, _, key = full_key.partition(":")
        if namespace != CONFIG_NAMESPACE:
            continue
        value = runtime_config.get_config(full_key)
        # Scalars such as `team: "007"` must stay strings: only decode what looks structured.
        raw[key] = _decode(value) if key in SECTION_MODELS or key in {"tags", "overrides"} else value
    return raw


def load_settings() -> Settings:
    """Settings of the running Pulumi program (stack name, `mlflow-stack:*` config, `aws:region`)."""
    import pulumi

    region = pulumi.Config("aws").get("region")
    return build_settings(pulumi.get_stack(), region, read_raw_config())
