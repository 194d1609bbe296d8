"""The Kubernetes backend's cost: pods at their requests' share of a node (hand-computed)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from preview.build import build_report
from preview.cost import PriceTable, estimate
from preview.cost_kubernetes import cpu_cores, memory_gib

TABLE = PriceTable.load()


@dataclass
class R:
    type: str
    name: str
    inputs: dict[str, Any] = field(default_factory=dict)


def _pod(cpu: str, memory: str) -> dict[str, Any]:
    return {"containers": [{"name": "c", "resources": {"requests": {"cpu": cpu, "memory": memory}}}]}


def _deployment(replicas: int, cpu: str, memory: str) -> R:
    spec = {"replicas": replicas, "template": {"spec": _pod(cpu, memory)}}
    return R("kubernetes:apps/v1:Deployment", "d", {"metadata": {"name": "mlflow-server"}, "spec": spec})


def test_quantities_are_read_as_kubernetes_writes_them():
    assert (cpu_cores("2000m"), cpu_cores("1"), cpu_cores(0.5)) == (2.0, 1.0, 0.5)
    assert (memory_gib("4096Mi"), memory_gib("2Gi"), memory_gib(str(1024**3))) == (4.0, 2.0, 1.0)


def test_a_pod_costs_the_larger_of_its_cpu_and_memory_share_of_a_node():
    # m7g.xlarge: 4 vCPU / 16 GiB at $0.1632 an hour in us-east-1.
    cpu_bound = estimate(
        [_deployment(2, "2000m", "4096Mi")], "us-east-1", TABLE, node_instance_type="m7g.xlarge"
    )
    (line,) = cpu_bound.items
    assert line.monthly_usd == round(2 * 0.5 * 0.1632 * 730, 2) == 119.14
    memory_bound = estimate(
        [_deployment(1, "500m", "8Gi")], "us-east-1", TABLE, node_instance_type="m7g.xlarge"
    )
    assert memory_bound.items[0].monthly_usd == round(0.5 * 0.1632 * 730, 2)
    assert any("an estimate" in note for note in cpu_bound.notes)


def test_the_autoscaler_maximum_is_stated_not_priced():
    hpa = R(
        "kubernetes:autoscaling/v2:HorizontalPodAutoscaler",
        "h",
        {"spec": {"scaleTargetRef": {"name": "mlflow-server"}, "maxReplicas": 6}},
    )
    result = estimate(
        [_deployment(2, "2000m", "4096Mi"), hpa], "us-east-1", TABLE, node_instance_type="m7g.xlarge"
    )
    assert result.monthly_usd == 119.14
    assert any("HPA maximum of 6" in note and "$357.41" in note for note in result.notes)


def test_the_cronjob_is_priced_per_run_at_the_assumed_length():
    template = {"spec": _pod("500m", "1024Mi")}
    cronjob = R(
        "kubernetes:batch/v1:CronJob",
        "c",
        {
            "metadata": {"name": "m"},
            "spec": {"schedule": "0 3 * * SUN", "jobTemplate": {"spec": {"template": template}}},
        },
    )
    (line,) = estimate([cronjob], "us-east-1", TABLE, node_instance_type="m7g.xlarge").items
    runs = 365.25 / 12 / 7
    assert line.monthly_usd == round(0.125 * 0.1632 * runs * 15 / 60, 2)


def test_an_unpriced_node_type_is_said_not_guessed():
    result = estimate([_deployment(2, "1", "2Gi")], "us-east-1", TABLE, node_instance_type="x9.huge")
    assert result.items == () and any("'x9.huge' has no price" in note for note in result.notes)


@pytest.mark.parametrize("stack", ["vision-prod"])
def test_the_preview_prices_a_kubernetes_stacks_pods(stack):
    report = build_report(stack)
    # 2 prod replicas x 2 vCPU / 4 GiB on m7g.xlarge: half a node each (119.14), plus the weekly
    # maintenance CronJob's runs.
    assert 119.14 < report.cost.by_component[f"mlflow-{stack}-compute"] < 120
    assert any("m7g.xlarge" in note and "an estimate" in note for note in report.cost.notes)
    # The pack ran over the Kubernetes objects too (its k8s- rules) and found nothing mandatory.
    assert report.mandatory == []
