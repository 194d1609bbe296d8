"""The prerequisites' custom resources: what the AWS Load Balancer Controller, External Secrets
Operator, the Secrets Store CSI driver and the Prometheus Operator act on. Pure functions of resolved
values, like infra/compute/kubernetes_manifests.py; each cites the CRD's documentation.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from infra.compute.kubernetes_identity import split_secret_reference
from infra.compute.kubernetes_manifests import (
    CONTAINER_NAME,
    SECRET_STORE,
    SECRETS_READER,
    SERVER,
    Workload,
    _metadata,
)
from infra.compute.spec import ServerSpec

# (apiVersion, kind) of the prerequisites' custom resources.
TARGET_GROUP_BINDING = ("elbv2.k8s.aws/v1beta1", "TargetGroupBinding")
SECRET_STORE_KIND = ("external-secrets.io/v1", "SecretStore")
EXTERNAL_SECRET = ("external-secrets.io/v1", "ExternalSecret")
SECRET_PROVIDER_CLASS = ("secrets-store.csi.x-k8s.io/v1", "SecretProviderClass")
PROMETHEUS_RULE = ("monitoring.coreos.com/v1", "PrometheusRule")


def target_group_binding(spec: ServerSpec, workload: Workload, *, target_group_arn: str, alb_sg: str) -> dict:
    """The AWS Load Balancer Controller registers the Service's pod IPs in the stack's target group
    and opens the node/pod security group to the ALB's group on the container port.
    https://kubernetes-sigs.github.io/aws-load-balancer-controller/latest/guide/targetgroupbinding/spec/"""
    return {
        "apiVersion": TARGET_GROUP_BINDING[0],
        "kind": TARGET_GROUP_BINDING[1],
        "metadata": _metadata(workload, SERVER, "server"),
        "spec": {
            "targetGroupARN": target_group_arn,
            "targetType": "ip",
            "serviceRef": {"name": SERVER, "port": spec.port},
            "networking": {
                "ingress": [
                    {
                        "from": [{"securityGroup": {"groupID": alb_sg}}],
                        "ports": [{"protocol": "TCP", "port": spec.port}],
                    }
                ]
            },
        },
    }


def secret_store(workload: Workload) -> dict[str, Any]:
    """External Secrets' namespaced store: Secrets Manager, authenticated as the reader account's
    IRSA role. https://external-secrets.io/latest/provider/aws-secrets-manager/"""
    return {
        "apiVersion": SECRET_STORE_KIND[0],
        "kind": SECRET_STORE_KIND[1],
        "metadata": _metadata(workload, SECRET_STORE, "secrets"),
        "spec": {
            "provider": {
                "aws": {
                    "service": "SecretsManager",
                    "region": workload.region,
                    "auth": {"jwt": {"serviceAccountRef": {"name": SECRETS_READER}}},
                }
            }
        },
    }


def external_secret(workload: Workload, name: str, references: Mapping[str, str]) -> dict[str, Any]:
    """In-cluster Secret `name`: key -> Secrets Manager reference (an ARN, or ECS's arn:json-key form)."""
    data = []
    for key, reference in sorted(references.items()):
        arn, json_key = split_secret_reference(reference)
        remote: dict[str, str] = {"key": arn}
        if json_key:
            remote["property"] = json_key
        data.append({"secretKey": key, "remoteRef": remote})
    return {
        "apiVersion": EXTERNAL_SECRET[0],
        "kind": EXTERNAL_SECRET[1],
        # Pulumi waits until the operator has synced the Secret, so pods never start without it.
        "metadata": _metadata(
            workload, name, "secrets", annotations={"pulumi.com/waitFor": "condition=Ready"}
        ),
        "spec": {
            "refreshInterval": workload.secret_refresh_interval,
            "secretStoreRef": {"name": SECRET_STORE, "kind": "SecretStore"},
            "target": {"name": name, "creationPolicy": "Owner"},
            "data": data,
        },
    }


def secret_provider_class(
    workload: Workload, name: str, references: Mapping[str, str], *, sync: bool
) -> dict[str, Any]:
    """The CSI driver's AWS provider fetches these ARNs with the mounting pod's identity into files
    named by key in the pod; with `sync`, also into Secret `name` (for env vars).
    https://docs.aws.amazon.com/secretsmanager/latest/userguide/integrating_csi_driver.html"""
    objects = []
    for key, reference in sorted(references.items()):
        arn, json_key = split_secret_reference(reference)
        entry: dict[str, Any] = {"objectName": arn, "objectType": "secretsmanager"}
        if json_key:
            entry["jmesPath"] = [{"path": json_key, "objectAlias": key}]
        else:
            entry["objectAlias"] = key
        objects.append(entry)
    parameters = {"region": workload.region, "objects": json.dumps(objects)}
    if workload.pod_identity:
        parameters["usePodIdentity"] = "true"
    spec: dict[str, Any] = {"provider": "aws", "parameters": parameters}
    if sync:
        spec["secretObjects"] = [
            {
                "secretName": name,
                "type": "Opaque",
                "data": [{"objectName": key, "key": key} for key in sorted(references)],
            }
        ]
    return {
        "apiVersion": SECRET_PROVIDER_CLASS[0],
        "kind": SECRET_PROVIDER_CLASS[1],
        "metadata": _metadata(workload, name, "secrets"),
        "spec": spec,
    }


def prometheus_rule(workload: Workload, cpu_percent: float, memory_percent: float) -> dict[str, Any]:
    """Pod CPU/memory against their limits, from cAdvisor and kube-state-metrics (the server itself
    exposes no /metrics, so there is nothing for a ServiceMonitor to scrape)."""
    pods = f'namespace="{workload.namespace}", container="{CONTAINER_NAME}"'
    return {
        "apiVersion": PROMETHEUS_RULE[0],
        "kind": PROMETHEUS_RULE[1],
        "metadata": _metadata(workload, SERVER, "server"),
        "spec": {
            "groups": [
                {
                    "name": "mlflow-server",
                    "rules": [
                        {
                            "alert": "MlflowServerCpuHigh",
                            "expr": "100 * sum by (pod) "
                            f"(rate(container_cpu_usage_seconds_total{{{pods}}}[5m])) / "
                            f'sum by (pod) (kube_pod_container_resource_limits{{{pods}, resource="cpu"}}) '
                            f"> {cpu_percent:g}",
                            "for": "5m",
                            "labels": {"severity": "warning"},
                            "annotations": {
                                "summary": "MLflow server CPU near its limit (HPA at its ceiling?)"
                            },
                        },
                        {
                            "alert": "MlflowServerMemoryHigh",
                            "expr": f"100 * sum by (pod) (container_memory_working_set_bytes{{{pods}}}) / "
                            f'sum by (pod) (kube_pod_container_resource_limits{{{pods}, resource="memory"}}) '
                            f"> {memory_percent:g}",
                            "for": "5m",
                            "labels": {"severity": "warning"},
                            "annotations": {"summary": "MLflow server memory near its limit"},
                        },
                    ],
                }
            ]
        },
    }
