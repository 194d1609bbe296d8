"""The Kubernetes backend's share of a stack's cost: its pods, priced at their share of a node.

The cluster is not the stack's: its control plane, node groups and add-ons are paid by whoever runs
the cluster. What the stack adds is room on the nodes, so each pod is priced at the larger of its
CPU and memory requests' share of one node of `kubernetes.nodeInstanceType` (on-demand, Linux),
times the replicas it runs around the clock (the Deployment's starting count, which the
HorizontalPodAutoscaler's minimum matches), plus the maintenance CronJob's runs at an assumed
length. An estimate, and said so: bin-packing, daemonsets, reserved or spot capacity and
Savings Plans all move the real figure.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

DEPLOYMENT = "kubernetes:apps/v1:Deployment"
CRON_JOB = "kubernetes:batch/v1:CronJob"
AUTOSCALER = "kubernetes:autoscaling/v2:HorizontalPodAutoscaler"
# vCPU and memory (GiB) of the node types prices.json lists (the EC2 instance type pages).
NODE_SHAPES: dict[str, tuple[float, float]] = {
    "m7g.large": (2, 8),
    "m7g.xlarge": (4, 16),
    "m7g.2xlarge": (8, 32),
    "m7g.4xlarge": (16, 64),
    "c7g.xlarge": (4, 8),
    "c7g.2xlarge": (8, 16),
    "r7g.xlarge": (4, 32),
    "r7g.2xlarge": (8, 64),
    "m6g.xlarge": (4, 16),
    "m6g.2xlarge": (8, 32),
}
_MEMORY_UNITS = {"Ki": 1 / 1024**2, "Mi": 1 / 1024, "Gi": 1.0, "Ti": 1024.0, "": 1 / 1024**3}


def cpu_cores(quantity: Any) -> float:
    """A Kubernetes CPU quantity ("500m", "2", 1.5) in cores."""
    text = str(quantity)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def memory_gib(quantity: Any) -> float:
    """A Kubernetes memory quantity ("4096Mi", "4Gi", bytes) in GiB."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|)", str(quantity))
    if match is None:
        raise ValueError(f"unsupported memory quantity {quantity!r}")
    return float(match[1]) * _MEMORY_UNITS[match[2]]


def _pod(spec: Mapping[str, Any]) -> tuple[float, float]:
    """(cores, GiB) a pod template requests, summed over its containers."""
    cores = memory = 0.0
    for container in spec.get("containers") or []:
        requests = (container.get("resources") or {}).get("requests") or {}
        cores += cpu_cores(requests.get("cpu", 0))
        memory += memory_gib(requests.get("memory", 0))
    return cores, memory


def pod_share_hourly(cores: float, memory: float, node_type: str, node_hourly: float) -> float:
    node_cores, node_memory = NODE_SHAPES[node_type]
    return max(cores / node_cores, memory / node_memory) * node_hourly


def price_kubernetes(
    resources: Sequence[Any],
    prices: Mapping[str, Any],
    hours: float,
    node_type: str,
    runs_per_month: Any,
    scheduled_minutes: int,
) -> tuple[list[tuple[Any, str, float]], list[str]]:
    """(resource, description, monthly USD) lines and notes for the stack's Deployments and CronJobs."""
    workloads = [r for r in resources if r.type in (DEPLOYMENT, CRON_JOB)]
    if not workloads:
        return [], []
    node_hourly = (prices.get("ec2_instance_hour") or {}).get(node_type)
    if node_hourly is None or node_type not in NODE_SHAPES:
        return [], [
            f"kubernetes.nodeInstanceType {node_type!r} has no price in preview/prices.json "
            f"(ec2_instance_hour; priced types: {', '.join(sorted(NODE_SHAPES))}): the pods are not priced"
        ]
    lines: list[tuple[Any, str, float]] = []
    notes = [
        f"Kubernetes pods are priced at their requests' share of one {node_type} node (on-demand, "
        f"${node_hourly}/hour): an estimate; the cluster, its control plane and node overhead are not this "
        "stack's and are not included"
    ]
    maxima = {
        (r.inputs.get("spec") or {}).get("scaleTargetRef", {}).get("name"): (r.inputs.get("spec") or {}).get(
            "maxReplicas"
        )
        for r in resources
        if r.type == AUTOSCALER
    }
    for r in workloads:
        spec = r.inputs.get("spec") or {}
        name = (r.inputs.get("metadata") or {}).get("name", r.name)
        if r.type == DEPLOYMENT:
            cores, memory = _pod((spec.get("template") or {}).get("spec") or {})
            replicas = int(spec.get("replicas") or 1)
            per_pod = pod_share_hourly(cores, memory, node_type, node_hourly) * hours
            lines.append(
                (
                    r,
                    f"{replicas} pod(s) x {cores:g} vCPU / {memory:g} GiB on {node_type} (share)",
                    per_pod * replicas,
                )
            )
            maximum = maxima.get(name)
            if isinstance(maximum, int) and maximum > replicas:
                notes.append(
                    f"deployment {name}: priced at {replicas} pod(s); at its HPA maximum of {maximum} the "
                    f"line is ${per_pod * maximum:,.2f}/month"
                )
        else:
            template = ((spec.get("jobTemplate") or {}).get("spec") or {}).get("template") or {}
            cores, memory = _pod(template.get("spec") or {})
            schedule = str(spec.get("schedule", ""))
            runs = runs_per_month(f"cron({schedule} *)", hours)
            if runs is None:
                notes.append(f"cronjob {name} ({schedule}): not priced")
                continue
            hourly = pod_share_hourly(cores, memory, node_type, node_hourly)
            lines.append(
                (
                    r,
                    f"CronJob ~{runs:.1f} run(s)/month x {scheduled_minutes} min x {cores:g} vCPU / "
                    f"{memory:g} GiB on {node_type} (share)",
                    hourly * runs * scheduled_minutes / 60,
                )
            )
    return lines, notes
