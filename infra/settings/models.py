"""The stack configuration's sections as validated models, the whole `Settings`, and its error.

Every model is immutable, rejects unknown keys and reads camelCase YAML keys. Field descriptions and
constraints are the settings reference (docs/ generates it from these models).
"""

from __future__ import annotations

import ipaddress
import re
import zoneinfo
from typing import Literal

from pulumi.errors import RunError
from pydantic import Field, field_validator

# The compute backend's sections live in their own module (kept apart from the data plane's).
from infra.settings.compute import ComputeSettings, KubernetesSettings
from infra.settings.database import DatabaseSettings, SharedDatabaseSettings
from infra.settings.limits import (
    ARCHIVED_STORAGE_CLASSES,
    AUTH_LISTENER_CONNECTIONS_PER_WORKER,
    CONFIG_NAMESPACE,
    ENGINES_PER_WORKER,
    ENVIRONMENTS,
    INSTANT_ARCHIVE_STORAGE_CLASSES,
    LOG_RETENTION_DAYS,
    MAIN_PROCESS_CONNECTIONS_PER_REPLICA,
    PROJECT,
    Environment,
)
from infra.settings.section import _Section
from infra.settings.tenancy import TenancySettings


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
    client_access: Literal["proxied", "presigned"] = Field(
        "proxied",
        description="how clients move artifact bytes. proxied (default): every byte through the load "
        "balancer and the server, so clients need reach to the domain only and the bucket stays private "
        "to the stack's roles. presigned: MLflow 3 clients upload/download large files (>= 500 MB by "
        "default) straight to S3 with presigned URLs the server signs — faster and cheaper for big models, "
        "but clients need HTTPS reach to S3 (s3.<region>.amazonaws.com) and bypass the WAF and the ALB "
        "access logs for those bytes",
    )

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
    keepalive_seconds: int = Field(315, ge=1, description="HTTP keep-alive; above the LB idle timeout")
    db_pool_size: int = Field(5, ge=1, description="SQLAlchemy pool size per engine")
    db_max_overflow: int = Field(5, ge=0, description="SQLAlchemy max overflow per engine")
    default_permission: Literal["READ", "EDIT", "MANAGE", "NO_PERMISSIONS"] = Field(
        "NO_PERMISSIONS", description="basic-auth permission for users without an explicit grant"
    )
    auth_cache_ttl_seconds: int = Field(60, ge=0, description="basic-auth credential cache TTL (0 off)")
    workspaces: bool = Field(
        False,
        description="MLflow workspaces (`mlflow server --enable-workspaces`): teams share one server, each "
        "in its own workspace (docs/users.md)",
    )
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
    # A proxied artifact transfer is silent while the server copies the file to or from S3 (after
    # an upload's last byte, before a download's first): 60 s (AWS's default) cuts multi-GB
    # transfers. docs/performance.md, "Large artifacts", has the measurements.
    idle_timeout_seconds: int = Field(
        300,
        ge=1,
        le=4000,
        description="ALB idle timeout; above the server's silent S3 copy of the largest proxied artifact",
    )
    deregistration_delay_seconds: int = Field(30, ge=0, le=3600, description="draining time per target")
    ssl_policy: str = Field("ELBSecurityPolicy-TLS13-1-2-2021-06", description="HTTPS listener policy")
    deletion_protection: bool = Field(False, description="ALB deletion protection")
    access_logs: bool = Field(False, description="ALB access logs to S3")
    hsts_max_age_seconds: int = Field(
        31536000,
        ge=0,
        le=63072000,
        description="Strict-Transport-Security max-age on HTTPS responses, with includeSubDomains "
        "(one year; 0 sends no header). preload is left off on purpose: it commits the whole "
        "registered domain to HTTPS in browsers' built-in lists",
    )
    waf_enabled: bool | None = Field(
        None,
        description="AWS WAF web ACL on the ALB (rate limit per client IP, AWS common and "
        "known-bad-inputs rules); unset: on for an internet-facing ALB in staging and prod, off otherwise",
    )
    waf_rate_limit_per_5_min: int = Field(
        3000,
        ge=10,
        le=2_000_000_000,
        alias="wafRateLimitPer5Min",
        description="requests one client IP may send in any 5 minutes to paths that check a password "
        "(all but /health and /static); above it WAF answers 429, which the MLflow client retries. "
        "Raise it when many training jobs share one NAT address",
    )
    waf_logs: bool = Field(
        False, description="WAF logs to CloudWatch Logs (the Authorization header is redacted)"
    )

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
    artifact_store_gb: float = Field(
        200,
        gt=0,
        description="artifact bucket size (GiB, every storage class) above which the daily capacity alarm "
        "fires",
    )

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
    compute: ComputeSettings = Field(default_factory=ComputeSettings)
    kubernetes: KubernetesSettings = Field(default_factory=KubernetesSettings)
    tenancy: TenancySettings = Field(default_factory=TenancySettings)
    shared_database: SharedDatabaseSettings = Field(default_factory=SharedDatabaseSettings)

    @property
    def name_prefix(self) -> str:
        """Prefix of every AWS name: mlflow-<team>-<env> or mlflow-<env>."""
        return name_prefix(self.team, self.environment)

    @property
    def on_kubernetes(self) -> bool:
        """compute.backend is kubernetes: the server runs on an existing EKS cluster, not ECS."""
        return self.compute.backend == "kubernetes"

    @property
    def mode(self) -> str:
        """tenancy.mode: standalone, platform (the shared VPC/cluster/ALB) or team (a tenant of one)."""
        return self.tenancy.mode

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
    def waf_enabled(self) -> bool:
        """loadBalancer.wafEnabled, or its default: on for an internet-facing ALB in staging and prod
        (dev stacks are short-lived and their cost matters more than a rate limit)."""
        if self.tenancy.mode == "team":
            return False  # the WAF guards the platform stack's shared ALB
        edge = self.load_balancer
        if edge.waf_enabled is not None:
            return edge.waf_enabled
        return edge.internet_facing and self.environment in ("staging", "prod")

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


def connections_at_full_scale(server: ServerSettings) -> int:
    """PostgreSQL connections the server can hold at maxReplicas, every pool full."""
    per_worker = (
        ENGINES_PER_WORKER * (server.db_pool_size + server.db_max_overflow)
        + AUTH_LISTENER_CONNECTIONS_PER_WORKER
    )
    return server.max_replicas * (server.workers * per_worker + MAIN_PROCESS_CONNECTIONS_PER_REPLICA)
