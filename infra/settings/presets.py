"""Per-environment defaults and the keys a stack file may set."""

from __future__ import annotations

from typing import Any

from infra.settings.compute import ComputeSettings, KubernetesSettings
from infra.settings.database import SharedDatabaseSettings
from infra.settings.models import (
    AlarmSettings,
    ArtifactSettings,
    DatabaseSettings,
    DomainSettings,
    LoadBalancerSettings,
    MaintenanceSettings,
    NetworkSettings,
    ServerSettings,
    _Section,
)
from infra.settings.tenancy import TenancySettings

SECTION_MODELS: dict[str, type[_Section]] = {
    "network": NetworkSettings,
    "database": DatabaseSettings,
    "artifacts": ArtifactSettings,
    "server": ServerSettings,
    "loadBalancer": LoadBalancerSettings,
    "domain": DomainSettings,
    "alarms": AlarmSettings,
    "maintenance": MaintenanceSettings,
    "compute": ComputeSettings,
    "kubernetes": KubernetesSettings,
    "tenancy": TenancySettings,
    "sharedDatabase": SharedDatabaseSettings,
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
        # Artifact-store capacity alarm (GiB): a size worth a look, not a quota. Dev holds scratch
        # runs (forceDestroy) and 50 GiB is years of them; staging mirrors a release cycle of
        # validation runs; prod 1 TiB (~$23/month in S3 Standard) is where growth deserves a decision.
        "alarms": {"artifactStoreGb": 50},
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
        "alarms": {"artifactStoreGb": 200},
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
        "alarms": {"artifactStoreGb": 1000},
        # Half a year: prod runs are the evidence behind deployed models (audits, regressions
        # traced back to a training run). Runs behind a registered model version are never cleaned.
        "maintenance": {"enabled": True, "cleanupOlderThanDays": 180},
    },
}

# A platform's shared instance is sized like a stack's own instance of the same environment.
for _preset in PRESETS.values():
    _preset["sharedDatabase"] = dict(_preset["database"])

# Top-level keys other than the sections: YAML key -> description.
SCALAR_KEYS: dict[str, str] = {
    "team": "team owning a per-team stack (default: parsed from the stack name)",
    "environment": "dev, staging or prod (default: parsed from the stack name)",
    "owner": "owner tag: who to ask about this stack",
    "costCenter": "cost-center tag",
    "tags": "extra tags on every resource",
    "overrides": "waivers of prod guards: key -> reason",
    "permissionsBoundaryArn": "IAM permissions boundary attached to every role",
    "kubeconfig": "the EKS cluster's kubeconfig for kubernetes.kubeconfigSource: config; always a secret "
    "(`pulumi config set --secret kubeconfig`)",
}
KNOWN_KEYS: tuple[str, ...] = (*SCALAR_KEYS, *SECTION_MODELS)
