"""How the platform feeds the Kubernetes backend: the kubeconfig, the settings, the data plane.

Kept out of infra/platform.py so that file stays a table of contents; this is the only place the
Kubernetes backend meets the other components.
"""

from __future__ import annotations

import pulumi
import pulumi_aws as aws

from infra.artifacts import Artifacts
from infra.compute.kubernetes import KubernetesService, KubernetesServiceArgs
from infra.compute.kubernetes_manifests import SERVER
from infra.compute.spec import ServerSpec
from infra.database import Database
from infra.load_balancer import LoadBalancer
from infra.locks import LockTable
from infra.monitoring_pods import PodMetrics
from infra.secrets import Secrets
from infra.settings import CONFIG_NAMESPACE, Settings

KUBECONFIG_KEY = "kubeconfig"


def kubeconfig(settings: Settings) -> pulumi.Output[str]:
    """The cluster's kubeconfig, always a secret: from `mlflow-stack:kubeconfig` (set with
    `pulumi config set --secret`) or from the platform stack's output."""
    cluster = settings.kubernetes
    if cluster.kubeconfig_source == "stackReference":
        reference = pulumi.StackReference(
            f"{settings.name_prefix}-cluster-stack", stack_name=cluster.cluster_stack
        )
        return pulumi.Output.secret(reference.require_output(cluster.kubeconfig_output))
    return pulumi.Config(CONFIG_NAMESPACE).require_secret(KUBECONFIG_KEY)


def kubernetes_pod_metrics(settings: Settings) -> PodMetrics:
    cluster = settings.kubernetes
    return PodMetrics(
        cluster_name=cluster.cluster_name or "",
        namespace=cluster.namespace,
        workload=SERVER,
        alarms=cluster.pod_metrics == "containerInsights",
    )


def kubernetes_compute(
    settings: Settings,
    *,
    aws_provider: aws.Provider,
    account_id: pulumi.Input[str],
    partition: pulumi.Input[str],
    spec: ServerSpec,
    database: Database,
    artifacts: Artifacts,
    secrets: Secrets,
    load_balancer: LoadBalancer,
    locks: LockTable,
    opts: pulumi.ResourceOptions,
) -> KubernetesService:
    server = settings.server
    edge = settings.load_balancer
    network = settings.network
    return KubernetesService(
        f"{settings.name_prefix}-compute",
        KubernetesServiceArgs(
            name_prefix=settings.name_prefix,
            spec=spec,
            settings=settings.kubernetes,
            maintenance=settings.maintenance,
            aws_provider=aws_provider,
            kubeconfig=kubeconfig(settings),
            region=settings.region,
            account_id=account_id,
            partition=partition,
            target_group_arn=load_balancer.target_group_arn,
            load_balancer_security_group_id=load_balancer.security_group_id,
            # Where infra/platform.py places the ALB (settings require an existing VPC here).
            load_balancer_subnet_ids=(
                network.existing_public_subnet_ids
                if edge.internet_facing
                else network.existing_private_subnet_ids
            ),
            internal_load_balancer=not edge.internet_facing,
            database_subnet_ids=network.existing_private_subnet_ids,
            database_security_group_id=database.security_group_id,
            deregistration_delay_seconds=edge.deregistration_delay_seconds,
            bucket_arn=artifacts.bucket_arn,
            artifact_prefix=artifacts.prefix,
            artifacts_kms_key_arn=artifacts.kms_key_arn,
            secrets_kms_key_arn=secrets.kms_key_arn,
            tracking_url=load_balancer.url,
            admin_username=server.admin_username,
            lock_table_name=locks.table_name,
            lock_table_arn=locks.table_arn,
            min_replicas=server.min_replicas,
            max_replicas=server.max_replicas,
            target_cpu_percent=server.target_cpu_percent,
            scale_in_cooldown_seconds=server.scale_in_cooldown_seconds,
            scale_out_cooldown_seconds=server.scale_out_cooldown_seconds,
            startup_grace_seconds=server.health_check_grace_seconds,
            pod_cpu_alarm_percent=settings.alarms.ecs_cpu_percent,
            pod_memory_alarm_percent=settings.alarms.ecs_memory_percent,
            permissions_boundary_arn=settings.permissions_boundary_arn,
        ),
        opts=opts,
    )
