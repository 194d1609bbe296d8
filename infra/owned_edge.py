"""The network, load balancer and firewall, built from the stack's settings the same way by every
stack that owns them: a standalone stack (infra/platform.py) and a platform stack
(infra/shared_platform.py, whose load balancer is shared by its team stacks)."""

from __future__ import annotations

import pulumi
import pulumi_aws as aws

from infra.firewall import Firewall, FirewallArgs
from infra.load_balancer import LoadBalancer, LoadBalancerArgs
from infra.network import Network, NetworkArgs
from infra.settings import Settings
from server import contract


def build_network(
    settings: Settings, partition_info: aws.GetPartitionResult | pulumi.Output, opts: pulumi.ResourceOptions
) -> Network:
    return Network(
        f"{settings.name_prefix}-network",
        NetworkArgs(
            settings=settings.network,
            region=settings.region,
            service_name_prefix=partition_info.reverse_dns_prefix,
            permissions_boundary_arn=settings.permissions_boundary_arn,
        ),
        opts=opts,
    )


def build_load_balancer(
    settings: Settings, network: Network, opts: pulumi.ResourceOptions, *, shared: bool = False
) -> LoadBalancer:
    edge = settings.load_balancer
    domain = settings.domain
    return LoadBalancer(
        f"{settings.name_prefix}-edge",
        LoadBalancerArgs(
            name_prefix=settings.name_prefix,
            vpc_id=network.vpc_id,
            # An internal ALB lives in the private subnets, next to the clients it serves.
            subnet_ids=network.public_subnet_ids if edge.internet_facing else network.private_subnet_ids,
            domain_name=domain.name,
            target_port=contract.CONTAINER_PORT,
            health_path=contract.HEALTH_PATH,
            certificate_arn=domain.certificate_arn,
            hosted_zone_id=domain.hosted_zone_id,
            create_alias_record=domain.create_alias_record,
            internet_facing=edge.internet_facing,
            allowed_cidrs=tuple(edge.allowed_cidrs),
            ssl_policy=edge.ssl_policy,
            idle_timeout_seconds=edge.idle_timeout_seconds,
            deregistration_delay_seconds=edge.deregistration_delay_seconds,
            deletion_protection=edge.deletion_protection,
            access_logs=edge.access_logs,
            access_log_bucket_force_destroy=settings.artifacts.force_destroy,  # the preset's
            hsts_max_age_seconds=edge.hsts_max_age_seconds,
            shared=shared,
        ),
        opts=opts,
    )


def build_firewall(
    settings: Settings, load_balancer_arn: pulumi.Input[str], opts: pulumi.ResourceOptions
) -> Firewall | None:
    """The WAF web ACL on the load balancer; None when loadBalancer.wafEnabled resolves to false."""
    if not settings.waf_enabled:
        return None
    edge = settings.load_balancer
    return Firewall(
        f"{settings.name_prefix}-firewall",
        FirewallArgs(
            name_prefix=settings.name_prefix,
            load_balancer_arn=load_balancer_arn,
            rate_limit_per_5_min=edge.waf_rate_limit_per_5_min,
            logs=edge.waf_logs,
            log_retention_days=settings.server.log_retention_days,
        ),
        opts=opts,
    )
