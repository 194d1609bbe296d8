"""A team stack's attachment to its platform stack (tenancy.mode team).

`PlatformReference` reads the platform stack's outputs through a `pulumi.StackReference` and hands
them on in the shapes the components already take (the network's ids, the shared cluster, the
shared ALB). `TeamRoute` is the team's own part of the edge: its target group and two listener
rules on the shared ALB — HTTPS forwards the host `<team>.<platform domain>` to the team's
replicas, HTTP redirects that host to HTTPS (the shared HTTP listener's default redirects to the
platform's own name, never to a Host header a client chose).
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra.load_balancer import HTTPS_PORT, server_target_group
from infra.settings import Settings
from infra.settings.tenancy import listener_priority
from server import contract


@dataclass(frozen=True)
class ReferencedNetwork:
    """The platform's VPC, in the shape of infra.network.Network that the team's components read."""

    vpc_id: pulumi.Output[str]
    private_subnet_ids: pulumi.Output[list[str]]
    private_subnet_ids_routed: pulumi.Output[list[str]]  # exported once their NAT routes exist
    public_subnet_ids: pulumi.Output[list[str]]
    nat_public_ips: tuple[pulumi.Output[str], ...] = ()  # the platform admits its own NATs


class PlatformReference:
    """The platform stack a team stack runs on (tenancy.platformStack), read once."""

    def __init__(self, settings: Settings) -> None:
        reference = settings.tenancy.platform_stack
        assert reference is not None  # settings refuse a team stack without it
        self.stack = pulumi.StackReference(reference)
        self.name = reference
        out = self.stack.require_output
        self.domain: pulumi.Output[str] = out("domain")
        self.host = pulumi.Output.all(out("tenancy_mode"), out("environment"), self.domain).apply(
            lambda values: _team_host(settings, reference, *values)
        )
        self.network = ReferencedNetwork(
            vpc_id=out("vpc_id"),
            private_subnet_ids=out("private_subnet_ids"),
            private_subnet_ids_routed=out("private_subnet_ids"),
            public_subnet_ids=out("public_subnet_ids"),
        )
        self.cluster_arn: pulumi.Output[str] = out("ecs_cluster_arn")
        self.cluster_name: pulumi.Output[str] = out("ecs_cluster_name")
        self.alb_arn_suffix: pulumi.Output[str] = out("alb_arn_suffix")
        self.alb_dns_name: pulumi.Output[str] = out("alb_dns_name")
        self.alb_security_group_id: pulumi.Output[str] = out("alb_security_group_id")
        self.https_listener_arn: pulumi.Output[str] = out("https_listener_arn")
        self.http_listener_arn: pulumi.Output[str] = out("http_listener_arn")


def _team_host(settings: Settings, reference: str, mode: str, environment: str, domain: str) -> str:
    """The team's host name, once the platform's outputs are known: refuses a reference to a stack
    that is not a platform, of another environment, or a domain.name outside the wildcard."""
    fix = f"mlflow-stack:tenancy.platformStack ({reference})"
    if mode != "platform":
        raise ValueError(f"{fix} is not a platform stack (its tenancy_mode output is {mode!r})")
    if environment != settings.environment:
        raise ValueError(f"{fix} is a {environment} platform; this team stack is {settings.environment}")
    expected = f"{settings.team}.{domain}"
    if settings.domain.name != expected:
        raise ValueError(
            f"mlflow-stack:domain.name {settings.domain.name!r}: the platform's wildcard certificate is "
            f"*.{domain} — set domain.name: {expected}"
        )
    return expected


@dataclass(frozen=True)
class TeamRouteArgs:
    name_prefix: str  # target group "<prefix>-tg" (<= 32 characters, like a standalone stack's)
    host: pulumi.Input[str]  # <team>.<platform domain>
    priority: int  # the rules' priority on both shared listeners (unique per listener)
    platform: PlatformReference
    target_port: int
    health_path: str
    deregistration_delay_seconds: int = 30


class TeamRoute(pulumi.ComponentResource):
    """Target group + HTTPS forward rule + HTTP redirect rule on the shared ALB. Exposes what the
    compute, monitoring and maintenance components read from a standalone stack's LoadBalancer."""

    def __init__(self, name: str, args: TeamRouteArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mlflow-stack:edge:TeamRoute", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        platform = args.platform
        self.target_group = server_target_group(
            f"{name}-tg",
            name=f"{args.name_prefix}-tg",
            vpc_id=platform.network.vpc_id,
            target_port=args.target_port,
            health_path=args.health_path,
            deregistration_delay_seconds=args.deregistration_delay_seconds,
            opts=child,
        )
        host_condition = [
            aws.lb.ListenerRuleConditionArgs(
                host_header=aws.lb.ListenerRuleConditionHostHeaderArgs(values=[args.host])
            )
        ]
        self.https_rule = aws.lb.ListenerRule(
            f"{name}-https-rule",
            listener_arn=platform.https_listener_arn,
            priority=args.priority,
            conditions=host_condition,
            actions=[aws.lb.ListenerRuleActionArgs(type="forward", target_group_arn=self.target_group.arn)],
            opts=child,
        )
        aws.lb.ListenerRule(
            f"{name}-http-rule",
            listener_arn=platform.http_listener_arn,
            priority=args.priority,
            conditions=host_condition,
            actions=[
                aws.lb.ListenerRuleActionArgs(
                    type="redirect",
                    redirect=aws.lb.ListenerRuleActionRedirectArgs(
                        protocol="HTTPS", host=args.host, port=str(HTTPS_PORT), status_code="HTTP_301"
                    ),
                )
            ],
            opts=child,
        )
        self.url = pulumi.Output.concat("https://", args.host)
        self.dns_name = platform.alb_dns_name
        self.arn_suffix = platform.alb_arn_suffix
        self.security_group_id = platform.alb_security_group_id
        self.target_group_arn_suffix = self.target_group.arn_suffix
        # ECS refuses a target group no listener rule forwards to yet: consumers wait for the rule.
        self.target_group_arn = pulumi.Output.all(self.https_rule.arn, self.target_group.arn).apply(
            lambda arns: arns[1]
        )
        self.register_outputs({"url": self.url, "target_group_arn": self.target_group_arn})


def team_route(settings: Settings, platform: PlatformReference, opts: pulumi.ResourceOptions) -> TeamRoute:
    assert settings.team is not None  # settings refuse a team stack without a team
    return TeamRoute(
        f"{settings.name_prefix}-edge",
        TeamRouteArgs(
            name_prefix=settings.name_prefix,
            host=platform.host,
            priority=listener_priority(settings.tenancy, settings.team),
            platform=platform,
            target_port=contract.CONTAINER_PORT,
            health_path=contract.HEALTH_PATH,
            deregistration_delay_seconds=settings.load_balancer.deregistration_delay_seconds,
        ),
        opts=opts,
    )
