"""Where the server runs: `compute.backend` (ecs | kubernetes) and the `kubernetes` section.

ECS is the default and needs nothing here. `compute.backend: kubernetes` runs the same server spec
on an existing EKS cluster (infra/compute/kubernetes.py); the `kubernetes` section says which
cluster, how the pods get their AWS identity and their secrets, and how the Kubernetes provider
reaches the API server. The cross-field rules at the bottom refuse combinations that cannot work,
one message per problem, before anything is created.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Literal

from pydantic import Field, field_validator

from infra.settings.section import _Section

# A DNS-1123 label: what Kubernetes accepts as a namespace name.
# https://kubernetes.io/docs/concepts/overview/working-with-objects/names/#dns-label-names
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
# The cluster's OIDC issuer without its scheme, as IRSA trust conditions name it.
# https://docs.aws.amazon.com/eks/latest/userguide/associate-service-account-role.html
OIDC_ISSUER = re.compile(r"oidc\.eks\.[a-z0-9-]+\.amazonaws\.com(\.cn)?/id/[A-Z0-9]{10,64}")
# <organization>/<project>/<stack>, what a Pulumi StackReference names.
STACK_REFERENCE = re.compile(r"[\w.-]+/[\w.-]+/[\w.-]+")
SECURITY_GROUP_ID = re.compile(r"sg-[0-9a-f]{8,17}")


class ComputeSettings(_Section):
    """Which compute backend runs the server replicas."""

    backend: Literal["ecs", "kubernetes"] = Field(
        "ecs", description="ECS Fargate (created by the stack) or an existing EKS cluster (pulumi-kubernetes)"
    )


class KubernetesSettings(_Section):
    """The EKS cluster the server runs on when compute.backend is kubernetes (prerequisites: AWS Load
    Balancer Controller, External Secrets Operator or the Secrets Store CSI driver, metrics-server)."""

    cluster_name: str | None = Field(
        None, description="EKS cluster name (Pod Identity associations, Container Insights metrics)"
    )
    version: str = Field(
        "1.33",
        description="the cluster's Kubernetes minor version: manifests are validated against its schema",
    )
    kubeconfig_source: Literal["config", "stackReference"] = Field(
        "config",
        description="where the provider's kubeconfig comes from: the secret config key "
        "mlflow-stack:kubeconfig, or an output of the platform stack in clusterStack",
    )
    cluster_stack: str | None = Field(
        None, description="platform stack exporting the kubeconfig, <org>/<project>/<stack>"
    )
    kubeconfig_output: str = Field("kubeconfig", description="output name of the kubeconfig in clusterStack")
    namespace: str = Field("mlflow", description="namespace the stack creates and owns")
    identity: Literal["irsa", "podIdentity"] = Field(
        "irsa", description="how pods get their IAM role: IRSA (OIDC) or EKS Pod Identity"
    )
    oidc_issuer: str | None = Field(
        None,
        description="cluster OIDC issuer for IRSA, e.g. "
        "oidc.eks.us-east-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B7",
    )
    secrets_delivery: Literal["externalSecrets", "csiDriver"] = Field(
        "externalSecrets",
        description="how Secrets Manager values reach the pods: External Secrets Operator or the "
        "Secrets Store CSI driver with the AWS provider",
    )
    secret_refresh_interval: str = Field("1h", description="how often External Secrets re-reads the secrets")
    cluster_security_group_id: str | None = Field(
        None, description="security group of the cluster's pods (EKS cluster security group)"
    )
    https_egress_cidrs: list[str] = Field(
        default_factory=lambda: ["0.0.0.0/0"],
        description="where the pods' NetworkPolicies let them open HTTPS (AWS APIs, the tracking URL); "
        "narrow it to the VPC's range when S3, Secrets Manager, STS and DynamoDB have VPC endpoints",
    )
    pod_metrics: Literal["containerInsights", "prometheus"] = Field(
        "containerInsights",
        description="pod CPU/memory alarms: CloudWatch Container Insights, or a PrometheusRule "
        "(Prometheus Operator CRDs)",
    )
    node_instance_type: str = Field(
        "m7g.xlarge", description="the nodes' EC2 instance type: the preview prices the pods' share of it"
    )
    migration_timeout_seconds: int = Field(
        900, ge=60, le=7200, description="how long the migration Job may run before the rollout fails"
    )
    termination_grace_seconds: int = Field(
        60, ge=1, le=3600, description="SIGTERM to SIGKILL; above loadBalancer.deregistrationDelaySeconds"
    )

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, value: str) -> str:
        if not DNS_LABEL.fullmatch(value):
            raise ValueError("must be a DNS-1123 label: lowercase letters, digits and '-', at most 63")
        return value

    @field_validator("version")
    @classmethod
    def _version(cls, value: str) -> str:
        if not re.fullmatch(r"1\.(2[5-9]|3[0-9])", value):
            raise ValueError("must be a Kubernetes minor version between 1.25 and 1.39, e.g. '1.33' (quoted)")
        return value

    @field_validator("oidc_issuer")
    @classmethod
    def _issuer(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.removeprefix("https://")
        if not OIDC_ISSUER.fullmatch(value):
            raise ValueError(
                "must look like oidc.eks.<region>.amazonaws.com/id/<ID> (aws eks describe-cluster)"
            )
        return value

    @field_validator("cluster_stack")
    @classmethod
    def _stack(cls, value: str | None) -> str | None:
        if value is not None and not STACK_REFERENCE.fullmatch(value):
            raise ValueError("must be <organization>/<project>/<stack>")
        return value

    @field_validator("cluster_security_group_id")
    @classmethod
    def _security_group(cls, value: str | None) -> str | None:
        if value is not None and not SECURITY_GROUP_ID.fullmatch(value):
            raise ValueError("must look like sg-0123456789abcdef0")
        return value

    @field_validator("https_egress_cidrs")
    @classmethod
    def _cidrs(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("must list at least one CIDR (the pods need HTTPS to reach S3)")
        for cidr in value:
            try:
                ipaddress.ip_network(cidr, strict=True)
            except ValueError:
                raise ValueError(f"{cidr!r} is not a CIDR block such as 10.0.0.0/16") from None
        return value

    @field_validator("cluster_name")
    @classmethod
    def _cluster_name(cls, value: str | None) -> str | None:
        # https://docs.aws.amazon.com/eks/latest/APIReference/API_CreateCluster.html (name pattern)
        if value is not None and not re.fullmatch(r"[0-9A-Za-z][A-Za-z0-9\-_]{0,99}", value):
            raise ValueError("must be an EKS cluster name (letters, digits, '-', '_'; at most 100)")
        return value


# --- cross-field rules ---------------------------------------------------------------------------


def kubernetes_checks(ctx: dict[str, Any]) -> list[str]:
    """Every combination of compute, kubernetes, network and loadBalancer that cannot work."""
    from infra.settings.models import _problem

    compute: ComputeSettings = ctx["compute"]
    kubernetes: KubernetesSettings = ctx["kubernetes"]
    if compute.backend != "kubernetes":
        if ctx.get("kubernetes_set"):
            return [
                _problem(
                    "kubernetes",
                    "is set but compute.backend is 'ecs', so nothing reads it",
                    "set compute.backend: kubernetes, or remove the kubernetes section",
                )
            ]
        return []
    problems: list[str] = []

    def need(key: str, value: object, what: str, fix: str) -> None:
        if value is None:
            problems.append(_problem(f"kubernetes.{key}", what, fix))

    need(
        "clusterName",
        kubernetes.cluster_name,
        "is required with compute.backend: kubernetes",
        "set it to the EKS cluster's name (aws eks list-clusters)",
    )
    need(
        "clusterSecurityGroupId",
        kubernetes.cluster_security_group_id,
        "is required: the database and the load balancer admit the pods by this group",
        "set it to the cluster security group (aws eks describe-cluster --query "
        "cluster.resourcesVpcConfig.clusterSecurityGroupId)",
    )
    if kubernetes.identity == "irsa":
        need(
            "oidcIssuer",
            kubernetes.oidc_issuer,
            "is required with identity: irsa (the role trusts the cluster's OIDC provider)",
            "set it from `aws eks describe-cluster --query cluster.identity.oidc.issuer`, "
            "or use identity: podIdentity",
        )
    if kubernetes.identity == "podIdentity" and kubernetes.secrets_delivery == "externalSecrets":
        problems.append(
            _problem(
                "kubernetes.secretsDelivery",
                "External Secrets authenticates a SecretStore with an IRSA service-account token, "
                "which identity: podIdentity does not provide",
                "use secretsDelivery: csiDriver (the AWS provider supports Pod Identity), or identity: irsa",
            )
        )
    if kubernetes.kubeconfig_source == "stackReference":
        need(
            "clusterStack",
            kubernetes.cluster_stack,
            "is required with kubeconfigSource: stackReference",
            "set it to the platform stack that exports the kubeconfig, <org>/<project>/<stack>",
        )
    elif not ctx.get("kubeconfig_set"):
        problems.append(
            _problem(
                "kubeconfig",
                "is not set but kubernetes.kubeconfigSource is 'config'",
                "run `pulumi config set --secret kubeconfig < kubeconfig.yaml`, "
                "or use kubeconfigSource: stackReference",
            )
        )
    network = ctx.get("network")
    if network is not None and network.existing_vpc_id is None:
        problems.append(
            _problem(
                "network.existingVpcId",
                "is required with compute.backend: kubernetes: the load balancer's target group "
                "registers pod IPs, so it must live in the cluster's VPC",
                "set existingVpcId and the subnet ids to the EKS cluster's VPC",
            )
        )
    load_balancer = ctx.get("loadBalancer")
    if load_balancer is not None and (
        kubernetes.termination_grace_seconds <= load_balancer.deregistration_delay_seconds
    ):
        problems.append(
            _problem(
                "kubernetes.terminationGraceSeconds",
                f"{kubernetes.termination_grace_seconds}s is not above loadBalancer."
                f"deregistrationDelaySeconds ({load_balancer.deregistration_delay_seconds}s): pods would "
                "be killed while the load balancer still sends them requests",
                "set terminationGraceSeconds above the deregistration delay (e.g. delay + 30)",
            )
        )
    maintenance = ctx.get("maintenance")
    if maintenance is not None and maintenance.enabled:
        try:
            cron_for_kubernetes(maintenance.schedule)
        except ValueError as exc:
            problems.append(
                _problem(
                    "maintenance.schedule",
                    f"runs as a Kubernetes CronJob here, and {exc}",
                    "use cron(min hour day month weekday *) without L, W or #, or rate(N minutes|hours)",
                )
            )
    return problems


def kubernetes_pod_size(cpu: int, memory: int) -> list[str]:
    """server.cpu/memory as a pod's requests (1024 units = 1 vCPU): any size a node can hold, but
    at least what one MLflow worker needs to start (the Fargate sizes do not apply)."""
    from infra.settings.models import _problem

    problems = []
    if cpu < 256:
        problems.append(
            _problem("server.cpu", f"{cpu} is below a quarter vCPU", "use at least 256 (0.25 vCPU)")
        )
    if memory < 512:
        problems.append(_problem("server.memory", f"{memory} MiB is below 512 MiB", "use at least 512"))
    return problems


# EventBridge Scheduler's day-of-week runs 1-7 from Sunday; cron's (and a CronJob's) 0-6.
# https://docs.aws.amazon.com/scheduler/latest/UserGuide/schedule-types.html#cron-based
# https://kubernetes.io/docs/concepts/workloads/controllers/cron-jobs/#schedule-syntax
_RATE = re.compile(r"rate\((\d+) (minute|minutes|hour|hours|day|days)\)")


def cron_for_kubernetes(expression: str) -> str:
    """maintenance.schedule (an EventBridge Scheduler expression) as a CronJob schedule, or
    ValueError saying what a CronJob cannot express."""
    rate = _RATE.fullmatch(expression)
    if rate:
        count, unit = int(rate[1]), rate[2].rstrip("s")
        if unit == "minute" and count < 60:
            return f"*/{count} * * * *"
        if unit == "hour" and count < 24:
            return f"0 */{count} * * *"
        if unit == "day" and count == 1:
            return "0 0 * * *"
        raise ValueError(
            f"{expression} has no CronJob equivalent; write it as cron(min hour day month weekday *)"
        )
    if not (expression.startswith("cron(") and expression.endswith(")")):
        raise ValueError(f"{expression} is neither cron(...) nor rate(...)")
    fields = expression[5:-1].split()
    if len(fields) != 6:
        raise ValueError(f"{expression} needs 6 fields: min hour day-of-month month day-of-week year")
    minute, hour, day, month, weekday, year = fields
    if year != "*":
        raise ValueError(f"{expression}: a CronJob has no year field; use * for the year")
    if re.search(r"[LW]", day) or re.search(r"#|\dL|^L$", weekday):
        raise ValueError(f"{expression}: L, W and # have no CronJob equivalent")
    return " ".join(
        (minute, hour, "*" if day == "?" else day, month, "*" if weekday == "?" else _weekday(weekday))
    )


def _weekday(field: str) -> str:
    def shift(token: str) -> str:
        return str(int(token) - 1) if token.isdigit() else token

    parts = []
    for item in field.split(","):
        step = ""
        if "/" in item:
            item, step = item.split("/", 1)
            step = f"/{step}"
        parts.append("-".join(shift(token) for token in item.split("-")) + step)
    return ",".join(parts)
