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

The package: `limits` (what AWS, RDS and MLflow impose), `models` (the sections and `Settings`),
`presets` (per-environment defaults, the keys a stack file may set), `checks` (cross-field rules),
`loading` (stack config → `Settings`), `compute` (compute.backend and the `kubernetes` section).
Import from `infra.settings`, the one public entry point.
"""

from __future__ import annotations

from infra.settings.checks import (
    CROSS_CHECKS,
    CrossCheck,
    load_balancer_open_to_all,
    min_max_allocated_storage_gb,
)
from infra.settings.compute import (
    ComputeSettings,
    KubernetesSettings,
    cron_for_kubernetes,
)
from infra.settings.limits import (
    ARCHIVED_STORAGE_CLASSES,
    AUTH_LISTENER_CONNECTIONS_PER_WORKER,
    CONFIG_NAMESPACE,
    CONNECTION_BUDGET_FRACTION,
    ENGINES_PER_WORKER,
    ENVIRONMENTS,
    FARGATE_MEMORY_BY_CPU,
    GIB,
    INSTANCE_CLASS_MEMORY_GIB,
    INSTANT_ARCHIVE_STORAGE_CLASSES,
    LB_NAME_LIMIT,
    LOG_RETENTION_DAYS,
    LONGEST_LB_ROLE_SUFFIX,
    MAIN_PROCESS_CONNECTIONS_PER_REPLICA,
    MIN_OVERRIDE_REASON_CHARS,
    MIN_PROD_BACKUP_DAYS,
    NAME_PATTERN,
    NAME_PREFIX_LIMIT,
    PROD_GUARDS,
    PROJECT,
    RDS_CONNECTION_MEMORY_BYTES,
    RDS_MAX_CONNECTIONS_CAP,
    RDS_MAX_STORAGE_RATIO,
    RENAMED_KEYS,
    Environment,
)
from infra.settings.loading import (
    MANAGED_TAGS,
    build_settings,
    load_settings,
    read_raw_config,
)
from infra.settings.models import (
    SCHEDULE_EXPRESSION,
    AlarmSettings,
    ArtifactSettings,
    DatabaseSettings,
    DomainSettings,
    LoadBalancerSettings,
    MaintenanceSettings,
    NetworkSettings,
    ServerSettings,
    Settings,
    SettingsError,
    connections_at_full_scale,
    name_prefix,
    parse_stack_name,
)
from infra.settings.presets import (
    KNOWN_KEYS,
    PRESETS,
    SCALAR_KEYS,
    SECTION_MODELS,
)

__all__ = [
    "ARCHIVED_STORAGE_CLASSES",
    "AUTH_LISTENER_CONNECTIONS_PER_WORKER",
    "CONFIG_NAMESPACE",
    "CONNECTION_BUDGET_FRACTION",
    "CROSS_CHECKS",
    "ENGINES_PER_WORKER",
    "ENVIRONMENTS",
    "FARGATE_MEMORY_BY_CPU",
    "GIB",
    "INSTANCE_CLASS_MEMORY_GIB",
    "INSTANT_ARCHIVE_STORAGE_CLASSES",
    "KNOWN_KEYS",
    "LB_NAME_LIMIT",
    "LOG_RETENTION_DAYS",
    "LONGEST_LB_ROLE_SUFFIX",
    "MAIN_PROCESS_CONNECTIONS_PER_REPLICA",
    "MANAGED_TAGS",
    "MIN_OVERRIDE_REASON_CHARS",
    "MIN_PROD_BACKUP_DAYS",
    "NAME_PATTERN",
    "NAME_PREFIX_LIMIT",
    "PRESETS",
    "PROD_GUARDS",
    "PROJECT",
    "RDS_CONNECTION_MEMORY_BYTES",
    "RDS_MAX_CONNECTIONS_CAP",
    "RDS_MAX_STORAGE_RATIO",
    "RENAMED_KEYS",
    "SCALAR_KEYS",
    "SCHEDULE_EXPRESSION",
    "SECTION_MODELS",
    "AlarmSettings",
    "ArtifactSettings",
    "ComputeSettings",
    "CrossCheck",
    "DatabaseSettings",
    "DomainSettings",
    "Environment",
    "KubernetesSettings",
    "LoadBalancerSettings",
    "MaintenanceSettings",
    "NetworkSettings",
    "ServerSettings",
    "Settings",
    "SettingsError",
    "build_settings",
    "connections_at_full_scale",
    "cron_for_kubernetes",
    "load_balancer_open_to_all",
    "load_settings",
    "min_max_allocated_storage_gb",
    "name_prefix",
    "parse_stack_name",
    "read_raw_config",
]
