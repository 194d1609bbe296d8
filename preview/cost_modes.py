"""What N teams cost per month in each tenancy mode, from the offline preview's estimates.

- **standalone**: every team its own self-contained stack (VPC, NAT, ALB, cluster, database, ...):
  N x one standalone stack.
- **shared platform**: one platform stack (VPC, NAT, ALB, WAF, cluster, and the shared RDS instance
  when `sharedDatabase.enabled`) + N team stacks; a team pays its own stack plus 1/N of the platform.
  The marginal cost of one more team is one team stack — without an instance for a team whose
  `database.placement` is shared (the shared instance is priced on the platform).
- **workspaces**: one standalone stack whose server all N teams share, one MLflow workspace each
  (`server.workspaces`): 1/N of one stack per team. It is the same stack sized for one team; N teams'
  load needs more replicas and a larger database, which this estimate does not add.

All three are built from the same team: the team stack as scaffolded (or given), and a standalone
stack with the same settings plus the platform's network, load balancer and domain settings, so the
difference is only what is shared. Usage-driven charges (S3 storage, NAT data, LCUs) are not in any
of the three (see `mlflow-stack preview`'s usage lines).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from infra.settings import CONFIG_NAMESPACE
from infra.settings.tenancy import platform_stack_name
from preview.offline import STACK_DIR, _stack_directory, load_stack_config, run_program

TENANCY = f"{CONFIG_NAMESPACE}:tenancy"
# The platform's settings a standalone stack of the same environment would carry itself.
PLATFORM_KEYS = ("network", "loadBalancer")


@dataclass(frozen=True)
class ModeCosts:
    teams: int
    currency: str
    standalone_stack: float  # one self-contained stack
    platform_stack: float  # the shared platform alone
    team_stack: float  # one team on the platform: the marginal cost of one more team

    @property
    def rows(self) -> list[tuple[str, float, float]]:
        """(mode, monthly total for N teams, monthly per team)."""
        n = self.teams
        shared_total = self.platform_stack + n * self.team_stack
        return [
            ("standalone (a stack per team)", n * self.standalone_stack, self.standalone_stack),
            ("shared platform + team stacks", shared_total, shared_total / n),
            ("workspaces on one standalone stack", self.standalone_stack, self.standalone_stack / n),
        ]


def _monthly(stack: str, stack_dir: Path) -> tuple[float, str]:
    from preview.cost import PriceTable, estimate

    graph = run_program(stack, stack_dir=stack_dir)
    if graph.error is not None:
        raise graph.error
    region = str(graph.config.get("aws:region", "us-east-1"))
    cost = estimate(graph.resources, region, PriceTable.load())
    return cost.monthly_usd, cost.currency


def standalone_twin(team_config: Mapping[str, Any], platform_config: Mapping[str, Any]) -> dict[str, Any]:
    """The team stack's config as a standalone stack: no tenancy, and the platform's network, load
    balancer and certificate settings as its own (its own VPC, NAT, ALB, WAF and cluster)."""
    config = {key: value for key, value in team_config.items() if key != TENANCY}
    for key in PLATFORM_KEYS:
        if f"{CONFIG_NAMESPACE}:{key}" in platform_config:
            config[f"{CONFIG_NAMESPACE}:{key}"] = platform_config[f"{CONFIG_NAMESPACE}:{key}"]
    platform_domain = platform_config.get(f"{CONFIG_NAMESPACE}:domain") or {}
    domain = dict(team_config.get(f"{CONFIG_NAMESPACE}:domain") or {})
    if platform_domain.get("hostedZoneId"):
        domain["hostedZoneId"] = platform_domain["hostedZoneId"]  # its own DNS-validated certificate
    else:
        # The platform's wildcard certificate covers the host too; DNS pointed by hand.
        domain.update(certificateArn=platform_domain.get("certificateArn"), createAliasRecord=False)
    config[f"{CONFIG_NAMESPACE}:domain"] = domain
    database = team_config.get(f"{CONFIG_NAMESPACE}:database")
    if isinstance(database, Mapping):
        # A standalone stack has its own instance: the team's placement on the shared one goes.
        own = {k: v for k, v in database.items() if k not in ("placement", "connectionLimit")}
        config.pop(f"{CONFIG_NAMESPACE}:database")
        if own:
            config[f"{CONFIG_NAMESPACE}:database"] = own
    return config


def compare_modes(
    team_stack: str,
    teams: int,
    *,
    team_config: Mapping[str, Any] | None = None,
    stack_dir: str | Path = STACK_DIR,
) -> ModeCosts:
    """Price the three modes for `teams` teams like `team_stack` (a team stack file in stack_dir, or
    `team_config` for one not written yet)."""
    if teams < 1:
        raise ValueError("--teams must be at least 1")
    directory = _stack_directory(stack_dir)
    config = dict(team_config) if team_config is not None else load_stack_config(team_stack, directory)
    tenancy = config.get(TENANCY)
    if not isinstance(tenancy, Mapping) or tenancy.get("mode") != "team":
        raise ValueError(f"{team_stack} is not a team stack (tenancy.mode: team); compare modes from one")
    platform_stack = platform_stack_name(str(tenancy.get("platformStack")))
    platform_config = load_stack_config(platform_stack, directory)
    with tempfile.TemporaryDirectory(prefix="mlflow-stack-modes-") as scratch:
        work = Path(scratch)
        shutil.copy(directory / f"Pulumi.{platform_stack}.yaml", work)
        (work / f"Pulumi.{team_stack}.yaml").write_text(yaml.safe_dump({"config": config}))
        twin = f"{team_stack.rsplit('-', 1)[0]}x-{team_stack.rsplit('-', 1)[1]}"
        twin_config = standalone_twin(config, platform_config)
        # The twin's own name: the team's name with an x, so nothing collides with the team stack.
        domain = twin_config[f"{CONFIG_NAMESPACE}:domain"]
        domain["name"] = f"{twin.rsplit('-', 1)[0]}.{domain['name'].split('.', 1)[1]}"
        (work / f"Pulumi.{twin}.yaml").write_text(yaml.safe_dump({"config": twin_config}))
        standalone, currency = _monthly(twin, work)
        platform, _ = _monthly(platform_stack, work)
        team, _ = _monthly(team_stack, work)
    return ModeCosts(teams, currency, round(standalone, 2), round(platform, 2), round(team, 2))


def render_modes(costs: ModeCosts) -> str:
    money = f"{{:,.2f}} {costs.currency}"
    lines = [
        f"Monthly cost of {costs.teams} team(s), by tenancy mode (always-on resources; usage extra):",
        f"  one more team on the shared platform (marginal): {money.format(costs.team_stack)}",
        f"  a standalone stack of the same environment:      {money.format(costs.standalone_stack)}",
        f"  the platform stack alone:                        {money.format(costs.platform_stack)}",
        "",
        f"  {'mode':<38} {'total':>14} {'per team':>14}",
    ]
    for mode, total, per_team in costs.rows:
        lines.append(f"  {mode:<38} {money.format(total):>14} {money.format(per_team):>14}")
    lines.append(
        "  workspaces: one server and database sized for one team; N teams' load needs more "
        "(not priced), and no data or blast-radius isolation (docs/teams.md)"
    )
    return "\n".join(lines) + "\n"
