"""`mlflow-stack team new`: a team stack file on an environment's platform, validated before it is written.

The scaffold holds only what the team decides (owner, cost center, alarm e-mail) and what attaches it
to the platform (tenancy.platformStack, its host under the platform's domain, a listener priority no
other team of that platform uses); everything else comes from the environment preset
(infra/settings/presets.py), so the file stays short and follows the kit's defaults. It is checked
by the same settings validation the Pulumi program runs, then built offline against the platform
stack's own file, before it is written; an existing file is never overwritten.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from infra.settings import CONFIG_NAMESPACE, ENVIRONMENTS, NAME_PATTERN, build_settings
from infra.settings.tenancy import (
    ALB_RULES_PER_LOAD_BALANCER,
    DERIVED_PRIORITY_FLOOR,
    MAX_RULE_PRIORITY,
    MAX_TEAMS_PER_PLATFORM,
    RULES_PER_TEAM,
    derived_listener_priority,
    listener_priority,
    platform_stack_name,
)
from preview.offline import STACK_DIR, _stack_directory, list_stacks, load_stack_config

# Pulumi's organization name for self-managed (DIY) backends, used when no team stack of the
# environment names its platform yet.
DEFAULT_ORG = "organization"
TENANCY = f"{CONFIG_NAMESPACE}:tenancy"


class ScaffoldError(ValueError):
    """The team stack cannot be scaffolded; the message says why and what to do."""


@dataclass(frozen=True)
class TeamStack:
    stack: str
    path: Path
    platform_reference: str
    priority: int
    document: dict[str, Any]

    @property
    def text(self) -> str:
        team, environment = self.stack.rsplit("-", 1)
        header = (
            f"# The {team} team on the shared {environment} platform ({self.platform_reference}),\n"
            "# scaffolded by `mlflow-stack team new`. Its own database, bucket, keys, secrets, roles,\n"
            "# service and alarms; the VPC, cluster and load balancer are the platform stack's.\n"
            "# Defaults come from the environment preset (docs/teams.md).\n"
        )
        return header + yaml.safe_dump(self.document, sort_keys=False)


def team_stacks_of(
    platform_reference: str, stack_dir: str | Path = STACK_DIR
) -> dict[str, Mapping[str, Any]]:
    """stack name -> tenancy section, for every team stack in the directory on that platform."""
    found = {}
    for stack in list_stacks(stack_dir):
        tenancy = load_stack_config(stack, stack_dir).get(TENANCY)
        if (
            isinstance(tenancy, Mapping)
            and tenancy.get("mode") == "team"
            and tenancy.get("platformStack") == platform_reference
        ):
            found[stack] = tenancy
    return found


def listener_priorities(platform_reference: str, stack_dir: str | Path = STACK_DIR) -> dict[str, int]:
    """stack -> the priority its listener rules take on the platform's shared listeners."""
    from infra.settings.tenancy import TenancySettings

    priorities = {}
    for stack, tenancy in team_stacks_of(platform_reference, stack_dir).items():
        team = stack.rsplit("-", 1)[0]
        settings = TenancySettings.model_validate(dict(tenancy))
        priorities[stack] = listener_priority(settings, team)
    return priorities


def priority_collisions(platform_reference: str, stack_dir: str | Path = STACK_DIR) -> dict[int, list[str]]:
    """Priorities two or more team stacks of one platform would both take (AWS refuses the second
    rule with PriorityInUse)."""
    by_priority: dict[int, list[str]] = {}
    for stack, priority in listener_priorities(platform_reference, stack_dir).items():
        by_priority.setdefault(priority, []).append(stack)
    return {priority: sorted(stacks) for priority, stacks in by_priority.items() if len(stacks) > 1}


def default_platform_reference(environment: str, stack_dir: str | Path = STACK_DIR) -> str:
    """The platform the environment's team stacks already use, else <org>/mlflow-stack/platform-<env>."""
    for stack in list_stacks(stack_dir):
        tenancy = load_stack_config(stack, stack_dir).get(TENANCY)
        if isinstance(tenancy, Mapping) and tenancy.get("mode") == "team":
            reference = str(tenancy.get("platformStack", ""))
            if platform_stack_name(reference) == f"platform-{environment}":
                return reference
    return f"{DEFAULT_ORG}/mlflow-stack/platform-{environment}"


def scaffold_team_stack(
    team: str,
    environment: str,
    owner: str,
    *,
    cost_center: str | None = None,
    platform: str | None = None,
    stack_dir: str | Path = STACK_DIR,
) -> TeamStack:
    """The validated team stack (not yet written). Raises ScaffoldError naming what to fix."""
    if environment not in ENVIRONMENTS:
        raise ScaffoldError(f"--env {environment!r}: use one of {', '.join(ENVIRONMENTS)}")
    if not NAME_PATTERN.fullmatch(team) or team == "platform":
        raise ScaffoldError(
            f"team name {team!r}: use lowercase letters, digits and single hyphens, starting with a "
            "letter (and not 'platform', the shared stack's name)"
        )
    stack = f"{team}-{environment}"
    path = _stack_directory(stack_dir) / f"Pulumi.{stack}.yaml"
    if path.exists():
        raise ScaffoldError(
            f"{path} already exists; team new never overwrites a stack file — edit it instead"
        )
    reference = platform or default_platform_reference(environment, stack_dir)
    platform_stack = platform_stack_name(reference)
    try:
        platform_config = load_stack_config(platform_stack, stack_dir)
    except FileNotFoundError:
        raise ScaffoldError(
            f"no platform stack file Pulumi.{platform_stack}.yaml in {_stack_directory(stack_dir)}: create "
            f"the {environment} platform first (tenancy.mode: platform, docs/teams.md) or pass --platform "
            "<org>/<project>/<stack>"
        ) from None
    tenancy = platform_config.get(TENANCY)
    if not isinstance(tenancy, Mapping) or tenancy.get("mode") != "platform":
        raise ScaffoldError(f"{platform_stack} is not a platform stack (its tenancy.mode is not platform)")
    domain = platform_config.get(f"{CONFIG_NAMESPACE}:domain") or {}
    region = platform_config.get("aws:region")

    existing = listener_priorities(reference, stack_dir)
    if len(existing) >= MAX_TEAMS_PER_PLATFORM:
        raise ScaffoldError(
            f"{reference} already carries {len(existing)} team stacks: {RULES_PER_TEAM} listener rules each "
            f"reach the ALB's default quota of {ALB_RULES_PER_LOAD_BALANCER} rules (Quotas for your "
            "Application Load Balancers) — raise the quota, or start a second platform stack"
        )
    taken = set(existing.values())
    priority = derived_listener_priority(team)
    tenancy_section: dict[str, Any] = {"mode": "team", "platformStack": reference}
    if priority in taken:
        # The derived priority is another team's: take the next free one and write it down.
        candidates = [*range(priority, MAX_RULE_PRIORITY + 1), *range(DERIVED_PRIORITY_FLOOR, priority)]
        priority = next(p for p in candidates if p not in taken)
        tenancy_section["listenerPriority"] = priority
    config: dict[str, Any] = {
        "aws:region": region,
        f"{CONFIG_NAMESPACE}:owner": owner,
        f"{CONFIG_NAMESPACE}:costCenter": cost_center
        or str(platform_config.get(f"{CONFIG_NAMESPACE}:costCenter", "")),
        TENANCY: tenancy_section,
        f"{CONFIG_NAMESPACE}:domain": {"name": f"{team}.{domain.get('name')}"},
        f"{CONFIG_NAMESPACE}:alarms": {"email": owner},
    }
    boundary = platform_config.get(f"{CONFIG_NAMESPACE}:permissionsBoundaryArn")
    if boundary:
        config[f"{CONFIG_NAMESPACE}:permissionsBoundaryArn"] = boundary
    raw = {key.split(":", 1)[1]: value for key, value in config.items() if key.startswith(CONFIG_NAMESPACE)}
    build_settings(stack, region, raw)  # the program's own validation: raises SettingsError
    return TeamStack(stack, path, reference, priority, {"config": config})


def write_team_stack(team_stack: TeamStack) -> None:
    """Write the file; refuses to overwrite one that appeared meanwhile."""
    with team_stack.path.open("x") as handle:
        handle.write(team_stack.text)
