"""The Kubernetes backend's objects as plain manifests, built from the one `ServerSpec`.

Pure functions of resolved values: infra/compute/kubernetes.py hands them to pulumi-kubernetes,
and tests validate the very same dicts against the cluster version's OpenAPI schema and scan them.
Every pod runs the server image as the spec says (uid 10001, read-only root with an emptyDir at
the scratch path, no capabilities, seccomp RuntimeDefault, no service-account token mounted) on
arm64 nodes, which is the only platform the image is built for (infra/compute/spec.py).

Secret values never appear here: External Secrets Operator or the Secrets Store CSI driver fetch
them from Secrets Manager inside the cluster; the manifests carry only the Secrets Manager ARNs.
The server and its migration read them as files (`<NAME>_FILE`), never from their environment.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import Any, Literal

from infra.compute.spec import ServerSpec
from server import contract

CONTAINER_NAME = "mlflow"
SERVER = "mlflow-server"  # Deployment, Service, ServiceAccount, PDB, HPA
MAINTENANCE = "mlflow-maintenance"  # CronJob and its ServiceAccount
SECRETS_READER = "mlflow-secrets"  # External Secrets' SecretStore authenticates as this account
SECRET_STORE = "mlflow-secrets-manager"  # noqa: S105 - object names, not values
SERVER_SECRET = "mlflow-server-secrets"  # noqa: S105 - the in-cluster Secret the server's env reads
MAINTENANCE_SECRET = "mlflow-maintenance-secrets"  # noqa: S105
# The master password and the application role's, for the migration Job's db-bootstrap init
# container only (server/db_roles.py); no other pod mounts it.
BOOTSTRAP_SECRET = "mlflow-bootstrap-secrets"  # noqa: S105
BOOTSTRAP_CONTAINER_NAME = "db-bootstrap"
BOOTSTRAP_VOLUME = "bootstrap-secrets"
# With the CSI driver the pod's own role fetches the secrets: the migration Job gets an account of
# its own, the only one whose role may read the master secret.
MIGRATE = "mlflow-migrate"
SCRATCH_VOLUME = "scratch"
SECRETS_VOLUME = "secrets-store"
SECRETS_MOUNT = "/var/run/secrets/mlflow-stack"
CSI_DRIVER = "secrets-store.csi.k8s.io"
POSTGRES_PORT = 5432
HTTPS_PORT = 443
# The EKS Pod Identity Agent serves credentials on this link-local address.
# https://docs.aws.amazon.com/eks/latest/userguide/pod-id-agent-setup.html
POD_IDENTITY_AGENT = "169.254.170.23/32"
# Pod-level limit on the scratch emptyDir: upload spooling and the private auth dir live there.
SCRATCH_SIZE_LIMIT = "2Gi"
ARM64_NODES = {"kubernetes.io/arch": "arm64", "kubernetes.io/os": "linux"}
Delivery = Literal["externalSecrets", "csiDriver"]


@dataclass(frozen=True)
class Workload:
    """Everything besides the spec that shapes the objects; resolved, plain values only."""

    namespace: str
    instance: str  # settings.name_prefix, the app.kubernetes.io/instance label
    region: str
    secrets_delivery: Delivery
    pod_identity: bool
    min_replicas: int
    max_replicas: int
    target_cpu_percent: int
    scale_in_cooldown_seconds: int
    scale_out_cooldown_seconds: int
    startup_grace_seconds: int
    termination_grace_seconds: int
    deregistration_delay_seconds: int
    migration_timeout_seconds: int
    load_balancer_cidrs: tuple[str, ...]  # where the ALB's nodes live: the only ingress
    database_cidrs: tuple[str, ...]  # the subnets RDS lives in
    # Where pods may open HTTPS: AWS APIs (S3, Secrets Manager, STS, DynamoDB) and the tracking URL.
    https_cidrs: tuple[str, ...] = ("0.0.0.0/0",)
    secret_refresh_interval: str = "1h"  # noqa: S105 - a duration


def labels_for(instance: str, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "mlflow",
        "app.kubernetes.io/instance": instance,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/managed-by": "pulumi",
    }


def labels(workload: Workload, component: str) -> dict[str, str]:
    return labels_for(workload.instance, component)


def selector(workload: Workload, component: str) -> dict[str, str]:
    keys = ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/component")
    return {key: labels(workload, component)[key] for key in keys}


def _metadata(workload: Workload, name: str, component: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "namespace": workload.namespace, "labels": labels(workload, component), **extra}


def _uid_gid(spec: ServerSpec) -> tuple[int, int]:
    uid, _, gid = spec.user.partition(":")
    return int(uid), int(gid or uid)


def pod_security_context(spec: ServerSpec) -> dict[str, Any]:
    uid, gid = _uid_gid(spec)
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": gid,
        "fsGroup": gid,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context(spec: ServerSpec) -> dict[str, Any]:
    uid, gid = _uid_gid(spec)
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": gid,
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": spec.read_only_root,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def resources(cpu_units: int, memory_mib: int) -> dict[str, Any]:
    """ECS units (1024 = 1 vCPU) as millicores; requests = limits, so the pod is Guaranteed QoS and
    gets what a Fargate task of the same size would (a memory limit above the request would let a
    node overcommit and OOM-kill it)."""
    amounts = {"cpu": f"{cpu_units * 1000 // 1024}m", "memory": f"{memory_mib}Mi"}
    return {"requests": dict(amounts), "limits": dict(amounts)}


def secret_env(names: Mapping[str, str], secret_name: str) -> list[dict[str, Any]]:
    """env var -> key in the in-cluster Secret; the value never appears in the manifest."""
    return [
        {"name": env, "valueFrom": {"secretKeyRef": {"name": secret_name, "key": key}}}
        for env, key in sorted(names.items())
    ]


def plain_env(environment: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"name": key, "value": str(environment[key])} for key in sorted(environment)]


def secret_files(names: Sequence[str]) -> list[dict[str, str]]:
    """`<NAME>_FILE` env vars naming each secret's file: the entrypoint reads the value from there,
    so no secret is in any process's environment (server/contract.py)."""
    return [
        {"name": f"{name}{contract.FILE_SUFFIX}", "value": f"{SECRETS_MOUNT}/{name}"}
        for name in sorted(names)
    ]


def _volumes(
    spec: ServerSpec, workload: Workload, secret_name: str, *, as_files: bool
) -> tuple[list[dict], list[dict]]:
    """Scratch space, and the secrets: as files (`as_files`: the server and its migration) or, for
    env vars, a CSI mount that makes the driver sync the Secret the env reads."""
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    if spec.read_only_root:
        volumes.append({"name": SCRATCH_VOLUME, "emptyDir": {"sizeLimit": SCRATCH_SIZE_LIMIT}})
        mounts.append({"name": SCRATCH_VOLUME, "mountPath": spec.scratch_path})
    secrets: dict[str, Any] | None = None
    if workload.secrets_delivery == "csiDriver":
        secrets = {
            "csi": {
                "driver": CSI_DRIVER,
                "readOnly": True,
                "volumeAttributes": {"secretProviderClass": secret_name},
            }
        }
    elif as_files:
        # Owned by the pod's fsGroup, readable by the server's group only.
        secrets = {"secret": {"secretName": secret_name, "defaultMode": 0o440}}
    if secrets is not None:
        volumes.append({"name": SECRETS_VOLUME, **secrets})
        mounts.append({"name": SECRETS_VOLUME, "mountPath": SECRETS_MOUNT, "readOnly": True})
    return volumes, mounts


def _pod_spec(
    spec: ServerSpec,
    workload: Workload,
    *,
    service_account: str,
    containers: list[dict[str, Any]],
    volumes: list[dict[str, Any]],
    restart_policy: str,
    termination_grace_seconds: int,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "serviceAccountName": service_account,
        # IRSA and Pod Identity inject their own projected token; nothing here calls the API server.
        "automountServiceAccountToken": False,
        "securityContext": pod_security_context(spec),
        "nodeSelector": dict(ARM64_NODES),
        "restartPolicy": restart_policy,
        "terminationGracePeriodSeconds": termination_grace_seconds,
        "enableServiceLinks": False,
        "containers": containers,
        "volumes": volumes,
        **(extra or {}),
    }


def server_container(spec: ServerSpec, workload: Workload, mounts: list[dict[str, Any]]) -> dict[str, Any]:
    probe = {"httpGet": {"path": spec.health_path, "port": "http"}, "timeoutSeconds": 5}
    period = 5
    return {
        "name": CONTAINER_NAME,
        "image": spec.image,
        "imagePullPolicy": "IfNotPresent",
        "command": list(spec.entrypoint),
        # `--app-name basic-auth` stays visible here for reviewers and the policy pack.
        "args": list(spec.command),
        "ports": [{"name": "http", "containerPort": spec.port, "protocol": "TCP"}],
        "env": plain_env(spec.environment) + secret_files(list(spec.secrets)),
        "resources": resources(spec.cpu, spec.memory),
        "securityContext": container_security_context(spec),
        "volumeMounts": mounts,
        # Migrations normally run in the Job first; the entrypoint still takes its advisory lock,
        # so a replica that starts mid-migration waits instead of failing its probes.
        "startupProbe": {
            **probe,
            "periodSeconds": period,
            "failureThreshold": max(1, workload.startup_grace_seconds // period),
        },
        "readinessProbe": {**probe, "periodSeconds": 10, "failureThreshold": 3},
        "livenessProbe": {**probe, "periodSeconds": 30, "failureThreshold": 3},
        # Keep serving while the load balancer deregisters the pod (TargetGroupBinding removes it
        # when the pod starts terminating; requests already routed still arrive for the delay).
        "lifecycle": {
            "preStop": {
                "exec": {
                    "command": [
                        "python",
                        "-c",
                        f"import time; time.sleep({workload.deregistration_delay_seconds})",
                    ]
                }
            }
        },
    }


def deployment(spec: ServerSpec, workload: Workload) -> dict[str, Any]:
    volumes, mounts = _volumes(spec, workload, SERVER_SECRET, as_files=True)
    match = selector(workload, "server")
    pod = _pod_spec(
        spec,
        workload,
        service_account=SERVER,
        containers=[server_container(spec, workload, mounts)],
        volumes=volumes,
        restart_policy="Always",
        termination_grace_seconds=workload.termination_grace_seconds,
        extra={
            # One replica per zone before any zone gets a second: a zone outage leaves the rest.
            "topologySpreadConstraints": [
                {
                    "maxSkew": 1,
                    "topologyKey": "topology.kubernetes.io/zone",
                    "whenUnsatisfiable": "DoNotSchedule",
                    "labelSelector": {"matchLabels": match},
                },
                {
                    "maxSkew": 1,
                    "topologyKey": "kubernetes.io/hostname",
                    "whenUnsatisfiable": "ScheduleAnyway",
                    "labelSelector": {"matchLabels": match},
                },
            ]
        },
    )
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(workload, SERVER, "server"),
        "spec": {
            # The HorizontalPodAutoscaler owns the count after creation (the component ignores it).
            "replicas": workload.min_replicas,
            "revisionHistoryLimit": 5,
            "minReadySeconds": 10,
            "progressDeadlineSeconds": 600,
            "selector": {"matchLabels": match},
            # Never below the floor during a rollout: the new pod is ready before an old one goes.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {"metadata": {"labels": labels(workload, "server")}, "spec": pod},
        },
    }


def migration_job_name(spec: ServerSpec, command: Sequence[str]) -> str:
    """Changes with the image and with anything the migration reads, so every such change runs a
    new Job (a Job's pod template is immutable; a finished Job never runs again)."""
    fingerprint = json.dumps(
        {
            "image": spec.image,
            "env": dict(spec.environment),
            "secrets": dict(spec.secrets),
            "bootstrap": dict(spec.bootstrap.environment) if spec.bootstrap else {},
            "cmd": list(command),
        },
        sort_keys=True,
    )
    return f"mlflow-migrate-{hashlib.sha256(fingerprint.encode()).hexdigest()[:10]}"


def _bootstrap_init_container(spec: ServerSpec, workload: Workload) -> tuple[dict[str, Any], dict[str, Any]]:
    """`python -m server.entrypoint bootstrap-db` before the migration: the only container that
    sees the master password; it creates the application role the migration and the server use."""
    assert spec.bootstrap is not None
    if workload.secrets_delivery == "csiDriver":
        source: dict[str, Any] = {
            "csi": {
                "driver": CSI_DRIVER,
                "readOnly": True,
                "volumeAttributes": {"secretProviderClass": BOOTSTRAP_SECRET},
            }
        }
    else:
        source = {"secret": {"secretName": BOOTSTRAP_SECRET, "defaultMode": 0o440}}
    volume = {"name": BOOTSTRAP_VOLUME, **source}
    container = {
        "name": BOOTSTRAP_CONTAINER_NAME,
        "image": spec.image,
        "imagePullPolicy": "IfNotPresent",
        "command": list(spec.entrypoint),
        "args": list(spec.bootstrap.command),
        "env": plain_env(spec.bootstrap.environment) + secret_files(list(spec.bootstrap.secrets)),
        "resources": resources(spec.cpu, spec.memory),
        "securityContext": container_security_context(spec),
        "volumeMounts": [{"name": BOOTSTRAP_VOLUME, "mountPath": SECRETS_MOUNT, "readOnly": True}],
    }
    return container, volume


def migration_job(spec: ServerSpec, workload: Workload, command: Sequence[str]) -> dict[str, Any]:
    """`python -m server.entrypoint migrate`: the same settings and advisory lock as a replica's
    start, then exit. Pulumi waits for it to complete before the Deployment rolls; its failure
    fails `pulumi up` with the old replicas still serving. With a bootstrap step in the spec, it
    runs first as an init container (a failed bootstrap fails the Job the same way)."""
    volumes, mounts = _volumes(spec, workload, SERVER_SECRET, as_files=True)
    extra: dict[str, Any] = {}
    if spec.bootstrap is not None:
        init, volume = _bootstrap_init_container(spec, workload)
        volumes = [*volumes, volume]
        extra["initContainers"] = [init]
    container = {
        "name": CONTAINER_NAME,
        "image": spec.image,
        "imagePullPolicy": "IfNotPresent",
        "command": list(spec.entrypoint),
        "args": list(command),
        "env": plain_env(spec.environment) + secret_files(list(spec.secrets)),
        "resources": resources(spec.cpu, spec.memory),
        "securityContext": container_security_context(spec),
        "volumeMounts": mounts,
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        # A Job that failed is replaced by the next `pulumi up` instead of awaited again.
        "metadata": _metadata(
            workload,
            migration_job_name(spec, command),
            "migrate",
            annotations={"pulumi.com/replaceUnready": "true"},
        ),
        "spec": {
            "backoffLimit": 1,
            "activeDeadlineSeconds": workload.migration_timeout_seconds,
            "template": {
                "metadata": {"labels": labels(workload, "migrate")},
                "spec": _pod_spec(
                    spec,
                    workload,
                    service_account=MIGRATE if workload.secrets_delivery == "csiDriver" else SERVER,
                    containers=[container],
                    volumes=volumes,
                    restart_policy="Never",
                    termination_grace_seconds=30,
                    extra=extra,
                ),
            },
        },
    }


@dataclass(frozen=True)
class Maintenance:
    """The weekly maintenance: the ECS scheduled task's command, as a CronJob."""

    schedule: str  # CronJob syntax (infra.settings.cron_for_kubernetes)
    timezone: str
    entrypoint: tuple[str, ...]
    arguments: tuple[str, ...]
    environment: Mapping[str, str]
    secrets: Mapping[str, str]  # env var -> key in the maintenance Secret
    cpu: int
    memory: int
    # `users sync --grants-only --apply` (docs/users.md): (entrypoint, arguments, plain environment)
    users_sync: tuple[tuple[str, ...], tuple[str, ...], Mapping[str, str]] | None = None
    users_sync_secrets: Mapping[str, str] = dataclass_field(default_factory=dict)


def maintenance_cronjob(spec: ServerSpec, workload: Workload, maintenance: Maintenance) -> dict[str, Any]:
    # The ECS task's command reads the admin password from MLFLOW_TRACKING_PASSWORD: env vars here.
    volumes, mounts = _volumes(spec, workload, MAINTENANCE_SECRET, as_files=False)
    container = {
        "name": "maintenance",
        "image": spec.image,
        "imagePullPolicy": "IfNotPresent",
        "command": list(maintenance.entrypoint),
        "args": list(maintenance.arguments),
        "env": plain_env(maintenance.environment) + secret_env(maintenance.secrets, MAINTENANCE_SECRET),
        "resources": resources(maintenance.cpu, maintenance.memory),
        "securityContext": container_security_context(spec),
        "volumeMounts": mounts,
    }
    containers = [container]
    if maintenance.users_sync is not None:
        # A second container, not an init container: as on ECS, a failed re-sync (the Job is marked
        # failed, its report in the container's log) never stops the housekeeping beside it.
        entrypoint, arguments, environment = maintenance.users_sync
        sync_secrets = secret_env(maintenance.users_sync_secrets, MAINTENANCE_SECRET)
        containers.append(
            {
                **container,
                "name": "users-sync",
                "command": list(entrypoint),
                "args": list(arguments),
                "env": plain_env(environment) + sync_secrets,
            }
        )
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": _metadata(workload, MAINTENANCE, "maintenance"),
        "spec": {
            "schedule": maintenance.schedule,
            "timeZone": maintenance.timezone,
            # The run takes a lease too; Forbid keeps a slow week from stacking up behind it.
            "concurrencyPolicy": "Forbid",
            "startingDeadlineSeconds": 3600,
            "successfulJobsHistoryLimit": 3,
            "failedJobsHistoryLimit": 3,
            "jobTemplate": {
                "metadata": {"labels": labels(workload, "maintenance")},
                "spec": {
                    # Idempotent, but a failed week is better investigated than re-run (as on ECS).
                    "backoffLimit": 0,
                    "activeDeadlineSeconds": 4 * 3600,
                    "template": {
                        "metadata": {"labels": labels(workload, "maintenance")},
                        "spec": _pod_spec(
                            spec,
                            workload,
                            service_account=MAINTENANCE,
                            containers=containers,
                            volumes=volumes,
                            restart_policy="Never",
                            termination_grace_seconds=60,
                        ),
                    },
                },
            },
        },
    }


def service(spec: ServerSpec, workload: Workload) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(workload, SERVER, "server"),
        "spec": {
            "type": "ClusterIP",
            "selector": selector(workload, "server"),
            "ports": [{"name": "http", "port": spec.port, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def autoscaler(workload: Workload) -> dict[str, Any]:
    """CPU target tracking between the presets' min and max, cooling down as the ECS policy does."""
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(workload, SERVER, "server"),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": SERVER},
            "minReplicas": workload.min_replicas,
            "maxReplicas": workload.max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": workload.target_cpu_percent},
                    },
                }
            ],
            "behavior": {
                "scaleDown": {
                    "stabilizationWindowSeconds": workload.scale_in_cooldown_seconds,
                    "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}],
                },
                "scaleUp": {
                    "stabilizationWindowSeconds": 0,
                    "policies": [
                        {
                            "type": "Pods",
                            "value": 2,
                            "periodSeconds": max(15, workload.scale_out_cooldown_seconds),
                        }
                    ],
                },
            },
        },
    }


def disruption_budget(workload: Workload) -> dict[str, Any]:
    """One pod at a time may be evicted (node drains, upgrades): with 2+ replicas one always serves,
    and a single-replica dev stack can still be drained."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(workload, SERVER, "server"),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector(workload, "server")}},
    }


def _cidr_peers(cidrs: Sequence[str]) -> list[dict[str, Any]]:
    return [{"ipBlock": {"cidr": cidr}} for cidr in cidrs]


def network_policies(spec: ServerSpec, workload: Workload) -> list[dict[str, Any]]:
    """Default deny for the namespace, then per component only what it needs:
    server: in from the load balancer's subnets on the container port; out to DNS, PostgreSQL
    and HTTPS to `https_cidrs` (kubernetes.httpsEgressCidrs: anywhere by default, since AWS's
    public endpoints have no fixed addresses; the VPC's range when S3, Secrets Manager and STS
    are reached through VPC endpoints).
    migrate: DNS and PostgreSQL. maintenance: DNS, PostgreSQL and HTTPS (the tracking URL,
    DynamoDB). https://kubernetes.io/docs/concepts/services-networking/network-policies/"""
    dns = {
        "to": [
            {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
            }
        ],
        "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
    }
    database = {
        "to": _cidr_peers(workload.database_cidrs),
        "ports": [{"protocol": "TCP", "port": POSTGRES_PORT}],
    }
    https = {"to": _cidr_peers(workload.https_cidrs), "ports": [{"protocol": "TCP", "port": HTTPS_PORT}]}
    credentials = (
        [{"to": [{"ipBlock": {"cidr": POD_IDENTITY_AGENT}}], "ports": [{"protocol": "TCP", "port": 80}]}]
        if workload.pod_identity
        else []
    )

    def policy(name: str, component: str | None, ingress: list[dict], egress: list[dict]) -> dict[str, Any]:
        pods = {"matchLabels": selector(workload, component)} if component else {}
        return {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": _metadata(workload, name, component or "namespace"),
            "spec": {
                "podSelector": pods,
                "policyTypes": ["Ingress", "Egress"],
                "ingress": ingress,
                "egress": egress,
            },
        }

    from_load_balancer = {
        "from": _cidr_peers(workload.load_balancer_cidrs),
        "ports": [{"protocol": "TCP", "port": spec.port}],
    }
    return [
        policy("default-deny", None, [], []),
        policy(SERVER, "server", [from_load_balancer], [dns, database, https, *credentials]),
        policy("mlflow-migrate", "migrate", [], [dns, database, *credentials]),
        policy(MAINTENANCE, "maintenance", [], [dns, database, https, *credentials]),
    ]
