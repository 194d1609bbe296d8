"""The platform stack (tenancy.mode platform): what an environment's team stacks share, and no server.

It owns the VPC (NAT gateways, the S3 gateway endpoint, flow logs), one ECS cluster, one ALB with a
wildcard certificate for `*.<domain.name>` whose HTTPS listener answers 404 to any host no team
claims, the ALB's WAF, and alarms on the shared parts. Team stacks attach to it by
`pulumi.StackReference` and read only the outputs exported here (`PLATFORM_OUTPUTS`): ids, ARNs and
names, never a secret.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra.firewall import Firewall
from infra.load_balancer import HTTPS_PORT, LoadBalancer
from infra.monitoring import (
    RDS_PERIOD_SECONDS,
    AlarmThresholds,
    connections_threshold,
    free_storage_threshold_bytes,
    topic_key_policy,
)
from infra.network import Network
from infra.owned_edge import build_firewall, build_load_balancer, build_network
from infra.settings import Settings, load_balancer_open_to_all
from infra.shared_database import SharedDatabase, build_shared_database, export_shared_database_outputs
from infra.tags import aws_provider

# What a team stack reads from the platform (infra/team_route.py); tests check both sides agree.
PLATFORM_OUTPUTS = (
    "tenancy_mode",
    "environment",
    "region",
    "domain",
    "vpc_id",
    "private_subnet_ids",
    "public_subnet_ids",
    "ecs_cluster_name",
    "ecs_cluster_arn",
    "alb_arn_suffix",
    "alb_dns_name",
    "alb_security_group_id",
    "https_listener_arn",
    "http_listener_arn",
)
# ALB-level alarms of the shared edge (each team's stack alarms on its own target group).
ELB_5XX_PER_5_MIN = 25
PERIOD_SECONDS = 300


@dataclass(frozen=True)
class SharedPlatform:
    settings: Settings
    network: Network
    load_balancer: LoadBalancer
    firewall: Firewall | None
    cluster: aws.ecs.Cluster
    alarm_topic: aws.sns.Topic
    shared_database: SharedDatabase | None = None  # sharedDatabase.enabled


def build_shared_platform(settings: Settings) -> SharedPlatform:
    provider = aws_provider(settings)
    with_provider = pulumi.ResourceOptions(providers=[provider])
    invoke_opts = pulumi.InvokeOutputOptions(provider=provider)
    caller = aws.get_caller_identity_output(opts=invoke_opts)
    partition_info = aws.get_partition_output(opts=invoke_opts)
    prefix = settings.name_prefix
    edge = settings.load_balancer

    network = build_network(settings, partition_info, with_provider)
    load_balancer = build_load_balancer(settings, network, with_provider, shared=True)
    if edge.internet_facing and not load_balancer_open_to_all(edge):
        # The teams' maintenance tasks call their tracking URLs from the private subnets; to an
        # internet-facing ALB their packets arrive from these NAT gateways' public IPs.
        for index, address in enumerate(network.nat_public_ips):
            aws.vpc.SecurityGroupIngressRule(
                f"{prefix}-edge-in-from-nat-{index}",
                security_group_id=load_balancer.security_group_id,
                cidr_ipv4=address.apply(lambda ip: f"{ip}/32"),
                ip_protocol="tcp",
                from_port=HTTPS_PORT,
                to_port=HTTPS_PORT,
                description="HTTPS from the teams' maintenance tasks, through this NAT gateway",
                opts=pulumi.ResourceOptions(parent=load_balancer),
            )
    firewall = build_firewall(settings, load_balancer.arn, with_provider)
    cluster = aws.ecs.Cluster(
        f"{prefix}-cluster",
        # Every team's service and maintenance task runs here; Container Insights per service.
        name=prefix,
        settings=[aws.ecs.ClusterSettingArgs(name="containerInsights", value="enabled")],
        opts=with_provider,
    )
    topic = _alarms(settings, caller.account_id, partition_info.partition, load_balancer, with_provider)
    shared_database = None
    if settings.shared_database.enabled:
        shared_database = build_shared_database(
            settings, network.vpc_id, network.private_subnet_ids, with_provider
        )
        _shared_database_alarms(settings, shared_database, topic, with_provider)
    return SharedPlatform(
        settings=settings,
        network=network,
        load_balancer=load_balancer,
        firewall=firewall,
        cluster=cluster,
        alarm_topic=topic,
        shared_database=shared_database,
    )


def _alarms(
    settings: Settings,
    account_id: pulumi.Output[str],
    partition: pulumi.Output[str],
    load_balancer: LoadBalancer,
    opts: pulumi.ResourceOptions,
) -> aws.sns.Topic:
    """The shared edge's own failures, which no team's target-group alarms see: the ALB answering
    5xx itself (no healthy target, a team's rule pointing nowhere) and connections it rejects."""
    prefix = settings.name_prefix
    key = aws.kms.Key(
        f"{prefix}-alarms-key",
        description="encrypts the MLflow platform alarm topic",
        enable_key_rotation=True,
        deletion_window_in_days=30,
        policy=pulumi.Output.all(account_id, partition).apply(lambda a: topic_key_policy(*a)),
        opts=opts,
    )
    topic = aws.sns.Topic(f"{prefix}-alarms", kms_master_key_id=key.arn, opts=opts)
    if settings.alarms.email is not None:
        aws.sns.TopicSubscription(
            f"{prefix}-alarms-email",
            topic=topic.arn,
            protocol="email",
            endpoint=settings.alarms.email,
            opts=opts,
        )
    alb = {"LoadBalancer": load_balancer.arn_suffix}
    for role, metric, threshold, description in (
        (
            "elb-5xx",
            "HTTPCode_ELB_5XX_Count",
            ELB_5XX_PER_5_MIN,
            f"the shared ALB itself answered more than {ELB_5XX_PER_5_MIN} 5xx in 5 minutes",
        ),
        ("rejected-connections", "RejectedConnectionCount", 0, "the shared ALB rejected connections"),
    ):
        aws.cloudwatch.MetricAlarm(
            f"{prefix}-{role}",
            alarm_description=description,
            namespace="AWS/ApplicationELB",
            metric_name=metric,
            dimensions=alb,
            statistic="Sum",
            period=PERIOD_SECONDS,
            evaluation_periods=1,
            threshold=threshold,
            comparison_operator="GreaterThanThreshold",
            treat_missing_data="notBreaching",
            alarm_actions=[topic.arn],
            ok_actions=[topic.arn],
            opts=opts,
        )
    return topic


def _shared_database_alarms(
    settings: Settings, shared: SharedDatabase, topic: aws.sns.Topic, opts: pulumi.ResourceOptions
) -> None:
    """The shared instance's health on the platform's own topic: its on-call owns the instance (each
    sharing team's alarms watch it too, with the same thresholds as a team's own instance)."""
    prefix = settings.name_prefix
    limits = AlarmThresholds()
    instance = settings.shared_database
    database = {"DBInstanceIdentifier": shared.database.instance_identifier}
    for role, metric, statistic, periods, threshold, comparison, description in (
        (
            "cpu",
            "CPUUtilization",
            "Average",
            3,
            limits.rds_cpu_percent,
            "GreaterThanThreshold",
            f"shared database CPU above {limits.rds_cpu_percent:g}%",
        ),
        (
            "free-storage",
            "FreeStorageSpace",
            "Minimum",
            1,
            free_storage_threshold_bytes(instance.allocated_storage_gb, limits.rds_free_storage_percent),
            "LessThanThreshold",
            f"shared database free storage below {limits.rds_free_storage_percent:g}% of "
            f"{instance.allocated_storage_gb} GiB",
        ),
        (
            "connections",
            "DatabaseConnections",
            "Maximum",
            2,
            connections_threshold(instance.max_connections, limits.rds_connections_percent),
            "GreaterThanThreshold",
            f"shared database connections above {limits.rds_connections_percent:g}% of "
            f"max_connections ({instance.max_connections}): the teams' limits together",
        ),
    ):
        aws.cloudwatch.MetricAlarm(
            f"{prefix}-shared-db-{role}",
            alarm_description=description,
            namespace="AWS/RDS",
            metric_name=metric,
            dimensions=database,
            statistic=statistic,
            period=RDS_PERIOD_SECONDS,
            evaluation_periods=periods,
            threshold=threshold,
            comparison_operator=comparison,
            treat_missing_data="missing",
            alarm_actions=[topic.arn],
            ok_actions=[topic.arn],
            opts=opts,
        )


def export_platform_outputs(platform: SharedPlatform) -> None:
    """What team stacks read (`PLATFORM_OUTPUTS`) plus what an operator looks up; never a secret."""
    settings = platform.settings
    edge = platform.load_balancer
    pulumi.export("tenancy_mode", "platform")
    pulumi.export("environment", settings.environment)
    pulumi.export("region", settings.region)
    pulumi.export("domain", settings.domain.name)
    pulumi.export("vpc_id", platform.network.vpc_id)
    pulumi.export("private_subnet_ids", platform.network.private_subnet_ids_routed)
    pulumi.export("public_subnet_ids", platform.network.public_subnet_ids)
    pulumi.export("ecs_cluster_name", platform.cluster.name)
    pulumi.export("ecs_cluster_arn", platform.cluster.arn)
    pulumi.export("alb_arn_suffix", edge.arn_suffix)
    pulumi.export("alb_dns_name", edge.dns_name)
    pulumi.export("alb_security_group_id", edge.security_group_id)
    pulumi.export("https_listener_arn", edge.https_listener_arn)
    pulumi.export("http_listener_arn", edge.http_listener_arn)
    pulumi.export("alarm_topic_arn", platform.alarm_topic.arn)
    if platform.firewall is not None:
        pulumi.export("web_acl_arn", platform.firewall.web_acl_arn)
    if platform.shared_database is not None:
        export_shared_database_outputs(platform.shared_database)
