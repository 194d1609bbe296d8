"""The Kubernetes backend's replica metrics: Container Insights for EKS in place of AWS/ECS.

With compute.backend: kubernetes there is no ECS service to alarm on; the replicas' CPU and memory
come from CloudWatch Container Insights (the amazon-cloudwatch-observability add-on), measured
against the pods' limits, per workload (`PodName` is the pod name without its generated suffix).
https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/Container-Insights-metrics-EKS.html
With kubernetes.podMetrics: prometheus the alarms are a PrometheusRule in the cluster instead, and
only the dashboard reads Container Insights (empty if the add-on is absent).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

NAMESPACE = "ContainerInsights"
CPU_METRIC = "pod_cpu_utilization_over_pod_limit"
MEMORY_METRIC = "pod_memory_utilization_over_pod_limit"
RUNNING_METRIC = "service_number_of_running_pods"


@dataclass(frozen=True)
class PodMetrics:
    cluster_name: str
    namespace: str
    workload: str  # the Deployment's and the Service's name
    alarms: bool = True  # False: a PrometheusRule alarms instead (kubernetes.podMetrics: prometheus)

    @property
    def pod_dimensions(self) -> dict[str, str]:
        return {"ClusterName": self.cluster_name, "Namespace": self.namespace, "PodName": self.workload}

    def alarm_specs(self, cpu_percent: float, memory_percent: float) -> dict[str, dict[str, Any]]:
        """role -> MetricAlarm keyword arguments (description included), as the ECS alarms are made."""
        if not self.alarms:
            return {}
        common = {
            "namespace": NAMESPACE,
            "dimensions": self.pod_dimensions,
            "statistic": "Average",
            "period": 60,
            "evaluation_periods": 5,
            "comparison_operator": "GreaterThanThreshold",
            "treat_missing_data": "missing",
        }
        return {
            "pod-cpu": {
                "description": f"MLflow pods' CPU above {cpu_percent:g}% of their limit (HPA at its max?)",
                "metric_name": CPU_METRIC,
                "threshold": cpu_percent,
                **common,
            },
            "pod-memory": {
                "description": f"MLflow pods' memory above {memory_percent:g}% of their limit",
                "metric_name": MEMORY_METRIC,
                "threshold": memory_percent,
                **common,
            },
        }

    def dashboard_rows(self) -> list[tuple[str, list[list[Any]], dict[str, Any]]]:
        pods = [key_or_value for pair in self.pod_dimensions.items() for key_or_value in pair]
        service = ["ClusterName", self.cluster_name, "Namespace", self.namespace, "Service", self.workload]
        return [
            (
                "Running replicas",
                [[NAMESPACE, RUNNING_METRIC, *service, {"stat": "Average"}]],
                {"period": 60},
            ),
            (
                "Replica CPU / memory (% of limit)",
                [
                    [NAMESPACE, CPU_METRIC, *pods, {"stat": "Average"}],
                    [NAMESPACE, MEMORY_METRIC, *pods, {"stat": "Average"}],
                ],
                {"period": 60},
            ),
        ]
