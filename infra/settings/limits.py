"""Numbers and names AWS, RDS and MLflow impose, which the settings are checked against."""

from __future__ import annotations

import re
from typing import Literal

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
# Plus one connection per worker outside those pools: the authorization cache's listener, which
# LISTENs on the auth database for changes (server/auth_cache.py). Counted on the local stack
# (pg_stat_activity by application_name, tests/reliability/test_reliability_revocation.py).
AUTH_LISTENER_CONNECTIONS_PER_WORKER = 1
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
