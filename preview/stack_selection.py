"""Which stacks a change touches, and which environment each stack deploys to — for CI matrices.

A pull request previews the stack files it changes, and every stack when it changes what every
stack is built from: the Pulumi program and its settings/presets (infra/, __main__.py, Pulumi.yaml),
the policy pack (policies/), the preview itself (preview/: prices, cost model) or the pinned
dependencies (pyproject.toml, uv.lock: provider versions). Deploys on merge go environment by
environment: dev, then staging, then prod (`DEPLOY_ORDER`).

Platform and team stacks (docs/teams.md): a team stack is built from its platform stack's outputs,
so a change to a platform's stack file previews its teams too, and within an environment the
platform stacks deploy first (`--tier platform`), the stacks that run a server after them
(`--tier server`: standalone and team stacks — the only ones a smoke check can reach).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import yaml

STACK_FILE = re.compile(r"^stacks/Pulumi\.(?P<stack>[A-Za-z0-9_.-]+)\.yaml$")
# A change under any of these can change every stack's preview.
EVERY_STACK_PATHS = (
    "__main__.py",
    "Pulumi.yaml",
    "pyproject.toml",
    "uv.lock",
    "infra/",
    "policies/",
    "preview/",
)
DEPLOY_ORDER = ("dev", "staging", "prod")
TIERS = ("platform", "server")


def stack_names(project: str | Path) -> list[str]:
    """Every stack with a file in the project's stacks/ directory."""
    return sorted(
        m["stack"]
        for p in Path(project, "stacks").glob("Pulumi.*.yaml")
        if (m := STACK_FILE.match(f"stacks/{p.name}"))
    )


def _config(project: str | Path, stack: str) -> dict[str, object]:
    path = Path(project, "stacks", f"Pulumi.{stack}.yaml")
    config = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("config") or {}
    return config if isinstance(config, dict) else {}


def tenancy_of(project: str | Path, stack: str) -> tuple[str, str | None]:
    """(`tenancy.mode`, the platform stack's name for a team stack): standalone when unset."""
    tenancy = _config(project, stack).get("mlflow-stack:tenancy") or {}
    if not isinstance(tenancy, dict):
        return "standalone", None
    mode = str(tenancy.get("mode") or "standalone")
    reference = tenancy.get("platformStack")
    # `org/project/stack` (or just `stack`): the stack file is stacks/Pulumi.<stack>.yaml.
    platform = str(reference).rsplit("/", 1)[-1] if mode == "team" and reference else None
    return mode, platform


def affected_stacks(
    changed_files: Iterable[str], stacks: Iterable[str], project: str | Path | None = None
) -> list[str]:
    """The stacks (of `stacks`, those that exist) a change to `changed_files` can alter; with
    `project`, a changed platform stack brings the team stacks built on it."""
    existing = sorted(set(stacks))
    named: set[str] = set()
    for raw in changed_files:
        path = raw.strip().removeprefix("./")
        if not path:
            continue
        if any(path == p or (p.endswith("/") and path.startswith(p)) for p in EVERY_STACK_PATHS):
            return existing
        match = STACK_FILE.match(path)
        if match:
            named.add(match["stack"])
    if project is not None:
        named |= {s for s in existing if tenancy_of(project, s)[1] in named}
    return [s for s in existing if s in named]


def of_tier(project: str | Path, stacks: Iterable[str], tier: str) -> list[str]:
    """`platform`: the platform stacks; `server`: the rest (standalone and team stacks)."""
    if tier not in TIERS:
        raise ValueError(f"tier must be one of {', '.join(TIERS)}, not {tier!r}")
    return [s for s in sorted(stacks) if (tenancy_of(project, s)[0] == "platform") == (tier == "platform")]


def environment_of(project: str | Path, stack: str) -> str | None:
    """The stack's environment: its `mlflow-stack:environment` setting, else its name's suffix
    (the rule the policy pack and the presets use: policies.environment)."""
    from policies.environment import resolve_environment

    setting = _config(project, stack).get("mlflow-stack:environment")
    return resolve_environment({}, {}, setting if isinstance(setting, str) else None, stack)


def stacks_by_environment(project: str | Path, stacks: Iterable[str]) -> dict[str, list[str]]:
    """environment -> its stacks, sorted; stacks of no known environment under ""."""
    grouped: dict[str, list[str]] = {}
    for stack in sorted(stacks):
        grouped.setdefault(environment_of(project, stack) or "", []).append(stack)
    return grouped
