"""Kubernetes workloads (compute.backend: kubernetes): the Pod Security Standards' "restricted"
profile, sized and probed containers, images pinned by digest, no secret values in manifests,
and a disruption budget for every prod Deployment.

https://kubernetes.io/docs/concepts/security/pod-security-standards/ (restricted profile)
https://kubernetes.io/docs/concepts/configuration/manage-resources-containers/
https://kubernetes.io/docs/tasks/run-application/configure-pdb/
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from policies.model import Context, Resource, Violation, as_list, truthy
from policies.rules.ecs import CREDENTIAL_URI, DATABASE_URI, SECRET_NAME_PATTERN
from policies.spec import ENVIRONMENT_PROPERTY, Rule

DEPLOYMENT = "kubernetes:apps/v1:Deployment"
STATEFUL_SET = "kubernetes:apps/v1:StatefulSet"
DAEMON_SET = "kubernetes:apps/v1:DaemonSet"
JOB = "kubernetes:batch/v1:Job"
CRON_JOB = "kubernetes:batch/v1:CronJob"
POD = "kubernetes:core/v1:Pod"
SECRET = "kubernetes:core/v1:Secret"  # noqa: S105 - a type token
PDB = "kubernetes:policy/v1:PodDisruptionBudget"
AUTOSCALER = "kubernetes:autoscaling/v2:HorizontalPodAutoscaler"
LONG_RUNNING = frozenset({DEPLOYMENT, STATEFUL_SET, DAEMON_SET})
WORKLOADS = frozenset({*LONG_RUNNING, JOB, CRON_JOB, POD})
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")


def pod_spec(resource: Resource) -> Mapping[str, Any]:
    """The pod template's spec of any workload kind (a Pod's own spec)."""
    spec = _mapping(resource.props.get("spec"))
    if resource.type == POD:
        return spec
    if resource.type == CRON_JOB:
        spec = _mapping(_mapping(spec.get("jobTemplate")).get("spec"))
    return _mapping(_mapping(spec.get("template")).get("spec"))


def pod_labels(resource: Resource) -> Mapping[str, Any]:
    if resource.type == POD:
        return _mapping(_mapping(resource.props.get("metadata")).get("labels"))
    spec = _mapping(resource.props.get("spec"))
    if resource.type == CRON_JOB:
        spec = _mapping(_mapping(spec.get("jobTemplate")).get("spec"))
    return _mapping(_mapping(_mapping(spec.get("template")).get("metadata")).get("labels"))


def all_containers(resource: Resource) -> list[Mapping[str, Any]]:
    pod = pod_spec(resource)
    return [
        c for key in ("initContainers", "containers") for c in as_list(pod.get(key)) if isinstance(c, Mapping)
    ]


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _security(container: Mapping[str, Any]) -> Mapping[str, Any]:
    return _mapping(container.get("securityContext"))


def check_non_root(resource: Resource, ctx: Context) -> Iterable[str]:
    pod = _mapping(pod_spec(resource).get("securityContext"))
    for container in all_containers(resource):
        security = _security(container)
        non_root = security.get("runAsNonRoot", pod.get("runAsNonRoot"))
        user = security.get("runAsUser", pod.get("runAsUser"))
        if not truthy(non_root):
            yield f"container {container.get('name')} does not set runAsNonRoot: true"
        elif user is not None and int(user) == 0:
            yield f"container {container.get('name')} runs as uid 0"


def check_read_only_root(resource: Resource, ctx: Context) -> Iterable[str]:
    for container in all_containers(resource):
        if not truthy(_security(container).get("readOnlyRootFilesystem")):
            yield f"container {container.get('name')} has a writable root filesystem (readOnlyRootFilesystem)"


def check_resources(resource: Resource, ctx: Context) -> Iterable[str]:
    for container in all_containers(resource):
        name = container.get("name")
        amounts = _mapping(container.get("resources"))
        requests, limits = _mapping(amounts.get("requests")), _mapping(amounts.get("limits"))
        missing = [
            f"{kind}.{amount}"
            for kind, values in (("requests", requests), ("limits", limits))
            for amount in ("cpu", "memory")
            if values.get(amount) in (None, "")
        ]
        if missing:
            yield f"container {name} lacks resources {', '.join(missing)}"
        elif str(requests.get("memory")) != str(limits.get("memory")):
            yield f"container {name}: memory request {requests.get('memory')} != limit {limits.get('memory')}"


def check_probes(resource: Resource, ctx: Context) -> Iterable[str]:
    for container in as_list(pod_spec(resource).get("containers")):
        if not isinstance(container, Mapping):
            continue
        missing = [p for p in ("startupProbe", "readinessProbe", "livenessProbe") if not container.get(p)]
        if missing:
            yield f"container {container.get('name')} has no {', '.join(missing)}"


def check_no_host_or_privileged(resource: Resource, ctx: Context) -> Iterable[str]:
    pod = pod_spec(resource)
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if truthy(pod.get(key)):
            yield f"pod uses {key}"
    for volume in as_list(pod.get("volumes")):
        if isinstance(volume, Mapping) and volume.get("hostPath"):
            yield f"volume {volume.get('name')} mounts a hostPath"
    for container in all_containers(resource):
        name, security = container.get("name"), _security(container)
        if truthy(security.get("privileged")):
            yield f"container {name} runs privileged"
        if security.get("allowPrivilegeEscalation") is not False:
            yield f"container {name} does not set allowPrivilegeEscalation: false"
        capabilities = _mapping(security.get("capabilities"))
        if "ALL" not in [str(c) for c in as_list(capabilities.get("drop"))]:
            yield f"container {name} does not drop ALL capabilities"
        if as_list(capabilities.get("add")):
            yield f"container {name} adds capabilities {as_list(capabilities.get('add'))}"
        for port in as_list(container.get("ports")):
            if isinstance(port, Mapping) and port.get("hostPort"):
                yield f"container {name} binds hostPort {port.get('hostPort')}"


def check_image_digest(resource: Resource, ctx: Context) -> Iterable[str]:
    for container in all_containers(resource):
        image = str(container.get("image") or "")
        if not DIGEST.search(image):
            yield f"container {container.get('name')} image {image!r} is not pinned by digest (@sha256:...)"


def check_no_plain_secrets(resource: Resource, ctx: Context) -> Iterable[str]:
    if resource.type == SECRET:
        if resource.props.get("data") or resource.props.get("stringData"):
            yield "a Secret with values in the manifest (and in Pulumi state); sync it from Secrets Manager"
        return
    name_pattern = re.compile(ctx.config["secretNamePattern"], re.IGNORECASE)
    for container in all_containers(resource):
        for entry in as_list(container.get("env")):
            if not isinstance(entry, Mapping) or "value" not in entry:
                continue
            name, value = str(entry.get("name", "")), str(entry.get("value", ""))
            where = f"container {container.get('name')}: {name}"
            if name_pattern.search(name) and not name.endswith("_FILE"):
                yield f"{where} looks like a secret in a plain env value"
            elif CREDENTIAL_URI.match(value) or DATABASE_URI.match(value):
                yield f"{where} holds a database/credential URI in a plain env value"


def _selects(selector: Mapping[str, Any], labels: Mapping[str, Any]) -> bool:
    wanted = _mapping(selector.get("matchLabels"))
    return bool(wanted) and all(labels.get(key) == value for key, value in wanted.items())


def check_disruption_budget(resources: Sequence[Resource], ctx: Context) -> Iterable[Violation]:
    if not ctx.is_prod:
        return
    budgets = [
        (
            _mapping(r.props.get("metadata")).get("namespace"),
            _mapping(_mapping(r.props.get("spec")).get("selector")),
        )
        for r in resources
        if r.type == PDB
    ]
    for resource in resources:
        if resource.type != DEPLOYMENT:
            continue
        namespace = _mapping(resource.props.get("metadata")).get("namespace")
        labels = pod_labels(resource)
        if not any(ns == namespace and _selects(selector, labels) for ns, selector in budgets):
            name = _mapping(resource.props.get("metadata")).get("name", resource.name)
            yield Violation(
                f"prod Deployment {name} has no PodDisruptionBudget selecting its pods", resource.urn
            )


SECRET_NAME_CONFIG = {
    "secretNamePattern": {
        "type": "string",
        "default": SECRET_NAME_PATTERN,
        "description": "Case-insensitive regex; env var names it matches may not have a plain value.",
    }
}

RULES = (
    Rule(
        name="k8s-non-root",
        description="Every Kubernetes container runs as a non-root user (runAsNonRoot, uid != 0).",
        enforcement="mandatory",
        remediation="Set securityContext.runAsNonRoot: true and a non-zero runAsUser (pod or container).",
        types=WORKLOADS,
        check_resource=check_non_root,
    ),
    Rule(
        name="k8s-read-only-root-filesystem",
        description="Every Kubernetes container has a read-only root filesystem.",
        enforcement="mandatory",
        remediation="Set securityContext.readOnlyRootFilesystem: true; mount an emptyDir for scratch space.",
        types=WORKLOADS,
        check_resource=check_read_only_root,
    ),
    Rule(
        name="k8s-resource-limits",
        description="Every Kubernetes container requests and limits CPU and memory, memory request = limit.",
        enforcement="mandatory",
        remediation="Set resources.requests and resources.limits for cpu and memory (equal memory).",
        types=WORKLOADS,
        check_resource=check_resources,
    ),
    Rule(
        name="k8s-probes",
        description="Long-running Kubernetes containers have startup, readiness and liveness probes.",
        enforcement="mandatory",
        remediation="Add startupProbe, readinessProbe and livenessProbe (e.g. httpGet /health).",
        types=LONG_RUNNING,
        check_resource=check_probes,
    ),
    Rule(
        name="k8s-no-host-access-or-privilege",
        description="No host namespaces, hostPath, hostPort, privilege or escalation; drop ALL capabilities.",
        enforcement="mandatory",
        remediation="Remove host namespaces and privilege; set allowPrivilegeEscalation: false and drop ALL.",
        types=WORKLOADS,
        check_resource=check_no_host_or_privileged,
    ),
    Rule(
        name="k8s-image-pinned-by-digest",
        description="Every Kubernetes container image is pinned by digest: a rollout runs what was reviewed.",
        enforcement="mandatory",
        remediation="Reference images as <repository>@sha256:<digest> (the stack's image build does).",
        types=WORKLOADS,
        check_resource=check_image_digest,
    ),
    Rule(
        name="k8s-no-plain-secrets",
        description="No Secret with values and no secret-looking plain env value in a Kubernetes manifest.",
        enforcement="mandatory",
        remediation="Sync secrets from Secrets Manager (External Secrets or CSI driver); use secretKeyRef.",
        config=SECRET_NAME_CONFIG,
        types=frozenset({*WORKLOADS, SECRET}),
        check_resource=check_no_plain_secrets,
    ),
    Rule(
        name="k8s-disruption-budget-in-prod",
        description="Every prod Deployment has a PodDisruptionBudget selecting its pods.",
        enforcement="mandatory",
        remediation="Add a policy/v1 PodDisruptionBudget (e.g. maxUnavailable: 1) selecting its pods.",
        config=ENVIRONMENT_PROPERTY,
        check_stack=check_disruption_budget,
    ),
)


# --- what the MLflow rules (policies/rules/mlflow.py) read from Kubernetes workloads ---------------


def as_task_containers(resource: Resource) -> list[dict[str, Any]]:
    """A workload's containers in the ECS container-definition shape the MLflow rules read:
    `command` -> entryPoint, `args` -> command, `env` values -> environment."""
    return [
        {
            "name": container.get("name"),
            "image": container.get("image"),
            "entryPoint": as_list(container.get("command")),
            "command": as_list(container.get("args")),
            "environment": [
                {"name": e.get("name"), "value": e.get("value")}
                for e in as_list(container.get("env"))
                if isinstance(e, Mapping) and "value" in e
            ],
        }
        for container in all_containers(resource)
    ]


def check_prod_deployments_autoscaled(resources: Sequence[Resource], minimum: int) -> Iterable[Violation]:
    """mlflow-prod-replicas-autoscaled for Deployments: a HorizontalPodAutoscaler targets each,
    never below `minimum` and able to scale out."""
    autoscalers = [r for r in resources if r.type == AUTOSCALER]
    for deployment in resources:
        if deployment.type != DEPLOYMENT:
            continue
        metadata = _mapping(deployment.props.get("metadata"))
        name = metadata.get("name", deployment.name)
        replicas = _mapping(deployment.props.get("spec")).get("replicas")
        if not isinstance(replicas, int | float) or replicas < minimum:
            yield Violation(
                f"prod Deployment {name} starts {replicas} replica(s), minimum {minimum}", deployment.urn
            )
        own = [
            a
            for a in autoscalers
            if _mapping(_mapping(a.props.get("spec")).get("scaleTargetRef")).get("name") == name
            and _mapping(a.props.get("metadata")).get("namespace") == metadata.get("namespace")
        ]
        if not own:
            yield Violation(f"prod Deployment {name} has no HorizontalPodAutoscaler", deployment.urn)
        for autoscaler in own:
            spec = _mapping(autoscaler.props.get("spec"))
            low, high = spec.get("minReplicas"), spec.get("maxReplicas")
            if not isinstance(low, int | float) or low < minimum:
                yield Violation(f"prod Deployment {name} may scale in to {low} replica(s)", autoscaler.urn)
            if not isinstance(high, int | float) or not isinstance(low, int | float) or high <= low:
                yield Violation(
                    f"prod Deployment {name} cannot scale out (maxReplicas {high})", autoscaler.urn
                )
