"""How a stack shares AWS with others: `tenancy.mode` standalone | platform | team.

- **standalone** (the default): today's self-contained stack — its own VPC, NAT, load balancer,
  cluster, database, bucket, secrets. Nothing here changes its graph.
- **platform**: one per environment/account/region; owns what teams can share safely — the VPC,
  NAT gateways, VPC endpoints, the ECS cluster and one ALB with a wildcard certificate
  (`*.<domain.name>`), an HTTPS listener answering 404 to unknown hosts, its WAF and alarms. It runs
  no MLflow server and exports ids/ARNs (never secrets) for the team stacks.
- **team**: reads the platform stack through a `pulumi.StackReference` (`tenancy.platformStack`)
  and owns only what must be isolated: database, bucket, KMS keys, secrets, IAM roles, the ECS
  service in the shared cluster, its target group and listener rules (host `<team>.<domain>`), its
  lock table, maintenance and alarms.

`tenancy_problems()` refuses the combinations a platform engineer gets wrong, one message per
problem naming the setting and the fix, before anything is created.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, field_validator

from infra.settings.compute import STACK_REFERENCE
from infra.settings.section import _Section

# ALB listener rule priorities: "a value between 1 and 50,000", unique per listener
# (https://docs.aws.amazon.com/elasticloadbalancing/latest/application/listener-rules.html,
# "Rule priority"; CreateRule's Priority parameter, Elastic Load Balancing API reference).
MIN_RULE_PRIORITY = 1
MAX_RULE_PRIORITY = 50_000
# "Quotas for your Application Load Balancers" (ELB User Guide, load-balancer-limits.html): rules
# per ALB, not counting default rules, 100 (adjustable); target groups per ALB 100 (not adjustable);
# condition values per rule 5. A team takes 2 rules (HTTPS forward, HTTP redirect), 1 target group
# and 1 host value per rule, so one shared ALB carries at most 50 teams at the default quota.
ALB_RULES_PER_LOAD_BALANCER = 100
ALB_TARGET_GROUPS_PER_LOAD_BALANCER = 100
ALB_CONDITION_VALUES_PER_RULE = 5
RULES_PER_TEAM = 2
MAX_TEAMS_PER_PLATFORM = ALB_RULES_PER_LOAD_BALANCER // RULES_PER_TEAM
# Derived priorities start above this, leaving 1-999 to rules a platform engineer places by hand.
DERIVED_PRIORITY_FLOOR = 1_000

# Sections a platform stack refuses: it runs no MLflow server, so these would be silently ignored.
SERVER_SECTIONS = ("database", "artifacts", "server", "maintenance", "compute", "kubernetes")
# Sections a team stack refuses: the network and the load balancer are the platform stack's.
PLATFORM_SECTIONS = ("network", "loadBalancer")


class TenancySettings(_Section):
    """Whether the stack stands alone, is the shared platform of an environment, or a team on one."""

    mode: Literal["standalone", "platform", "team"] = Field(
        "standalone",
        description="standalone: a self-contained stack (own VPC, load balancer, cluster). platform: the "
        "shared VPC, NAT, ECS cluster and wildcard-certificate ALB of an environment, no server. team: "
        "a team's isolated database, bucket, keys, secrets, roles and service on a platform stack",
    )
    platform_stack: str | None = Field(
        None,
        description="team mode: the platform stack to attach to, <org>/<project>/<stack> "
        "(e.g. acme/mlflow-stack/platform-prod)",
    )
    listener_priority: int | None = Field(
        None,
        ge=MIN_RULE_PRIORITY,
        le=MAX_RULE_PRIORITY,
        description="team mode: the priority of the team's rules on the shared listeners (unique per "
        "platform; unset: derived from the team name, see docs/teams.md)",
    )

    @field_validator("platform_stack")
    @classmethod
    def _platform_stack(cls, value: str | None) -> str | None:
        if value is not None and not STACK_REFERENCE.fullmatch(value):
            raise ValueError("must be <org>/<project>/<stack>, e.g. acme/mlflow-stack/platform-prod")
        return value


def derived_listener_priority(team: str) -> int:
    """A stable priority for a team's listener rules, from its name alone (the same on every
    machine and every run): 1000-50000. Two teams may collide (about 1 in 49,000 per pair);
    `mlflow-stack team new` and the shipped-stack tests refuse a collision, and
    tenancy.listenerPriority settles it."""
    digest = int(hashlib.sha256(team.encode()).hexdigest()[:12], 16)
    return DERIVED_PRIORITY_FLOOR + digest % (MAX_RULE_PRIORITY - DERIVED_PRIORITY_FLOOR + 1)


def listener_priority(tenancy: TenancySettings, team: str) -> int:
    return tenancy.listener_priority or derived_listener_priority(team)


def platform_stack_name(reference: str) -> str:
    """`acme/mlflow-stack/platform-prod` -> `platform-prod` (the stack file's name)."""
    return reference.rsplit("/", 1)[-1]


def tenancy_problems(
    tenancy: TenancySettings,
    raw: Mapping[str, Any],
    *,
    team: str | None,
    environment: str,
    domain_name: str | None,
    problem: Any,
) -> list[str]:
    """Every way the stack's mode contradicts its other settings. `problem(key, what, fix)` formats."""
    from infra.settings.models import parse_stack_name

    problems: list[str] = []
    mode = tenancy.mode
    if mode != "team":
        for key in ("platform_stack", "listener_priority"):
            if getattr(tenancy, key) is not None:
                alias = TenancySettings.model_fields[key].alias
                problems.append(
                    problem(
                        f"tenancy.{alias}",
                        f"is a team stack's setting, and this stack's tenancy.mode is {mode}",
                        "remove it, or set tenancy.mode: team",
                    )
                )
    if mode == "platform":
        for section in SERVER_SECTIONS:
            value = raw.get(section)
            # maintenance.enabled alone is harmless (nothing to schedule on a platform), and what a
            # stack-wide override such as the deployer-policy check sets on every stack.
            if section == "maintenance" and isinstance(value, Mapping) and set(value) <= {"enabled"}:
                continue
            if value:
                problems.append(
                    problem(
                        section,
                        "a platform stack runs no MLflow server, so this section would be ignored",
                        f"move it to a team stack (tenancy.mode: team), or remove it; {section} is "
                        "each team's own",
                    )
                )
        if team is None:
            problems.append(
                problem(
                    "tenancy.mode",
                    "a platform stack needs a name <name>-<env> (e.g. platform-prod): its resources are "
                    "named after it and team stacks reference it",
                    "rename the stack, e.g. `pulumi stack init platform-prod`",
                )
            )
    if mode == "team":
        if team is None:
            problems.append(
                problem(
                    "tenancy.mode",
                    "a team stack must be named <team>-<env> (the team names its resources and host)",
                    "rename the stack to <team>-<env>, e.g. recsys-prod",
                )
            )
        if tenancy.platform_stack is None:
            problems.append(
                problem(
                    "tenancy.platformStack",
                    "a team stack needs the platform stack it runs on",
                    "set tenancy.platformStack: <org>/mlflow-stack/platform-<env> (the stack that owns "
                    "the VPC, cluster and shared load balancer), or use tenancy.mode: standalone",
                )
            )
        else:
            _, platform_env = parse_stack_name(platform_stack_name(tenancy.platform_stack))
            if platform_env is not None and platform_env != environment:
                problems.append(
                    problem(
                        "tenancy.platformStack",
                        f"{tenancy.platform_stack} is a {platform_env} platform and this is a "
                        f"{environment} team stack: a team shares a VPC and load balancer only with its "
                        "own environment",
                        f"reference the {environment} platform stack, e.g. <org>/mlflow-stack/"
                        f"platform-{environment}",
                    )
                )
        compute = raw.get("compute") if isinstance(raw.get("compute"), Mapping) else {}
        if compute.get("backend") == "kubernetes":
            problems.append(
                problem(
                    "compute.backend",
                    "team stacks run on the platform stack's ECS cluster; a Kubernetes team stack is not "
                    "supported yet",
                    "remove compute.backend (ecs), or use tenancy.mode: standalone with the kubernetes "
                    "section",
                )
            )
        for section in PLATFORM_SECTIONS:
            if raw.get(section):
                problems.append(
                    problem(
                        section,
                        "is the platform stack's: a team stack runs in the platform's VPC, behind its "
                        "load balancer",
                        "remove it here and set it in the platform stack",
                    )
                )
        domain = raw.get("domain") if isinstance(raw.get("domain"), Mapping) else {}
        for key in ("certificateArn", "hostedZoneId"):
            if domain.get(key):
                problems.append(
                    problem(
                        f"domain.{key}",
                        "a team's host is covered by the platform's wildcard certificate and DNS record",
                        "remove it (set domain.certificateArn/hostedZoneId in the platform stack)",
                    )
                )
        if team is not None and domain_name is not None and not domain_name.startswith(f"{team}."):
            problems.append(
                problem(
                    "domain.name",
                    f"{domain_name!r} is not <team>.<platform domain>: the shared load balancer routes "
                    f"the host {team}.<platform domain> to this team and the wildcard certificate covers "
                    "one label only",
                    f"set domain.name: {team}.<the platform stack's domain.name>",
                )
            )
    return problems
