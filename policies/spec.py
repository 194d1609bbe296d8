"""A rule's definition, independent of pulumi_policy: what it checks and how it can be tuned.

`policies/pack.py` turns each `Rule` into a pulumi_policy policy; tests call `check_*` directly.
Every configurable threshold is a JSON-schema property *with its default*, so the schema the
Pulumi CLI shows (`pulumi policy new`/`--policy-pack-config`) and the value a rule uses when
nothing is configured can never disagree.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from policies.model import Context, Resource, Violation

ResourceCheck = Callable[[Resource, Context], Iterable[str]]
StackCheck = Callable[[Sequence[Resource], Context], Iterable[Violation]]

# Rules that behave differently in prod accept the environment explicitly; otherwise it is
# resolved from the stack (see policies/environment.py).
ENVIRONMENT_PROPERTY: dict[str, dict[str, Any]] = {
    "environment": {
        "type": "string",
        "enum": ["dev", "staging", "prod"],
        "description": "Override the environment otherwise read from stack tags, stack config or stack name.",
    }
}


@dataclass(frozen=True)
class Rule:
    name: str
    description: str
    enforcement: Literal["mandatory", "advisory"]
    remediation: str
    # JSON-schema properties; each carries its default so unconfigured packs behave as documented.
    config: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # Resource rules: the type tokens they inspect (others are skipped without a diagnostic);
    # None means the check itself decides (e.g. "every taggable type").
    types: frozenset[str] | None = None
    check_resource: ResourceCheck | None = None
    check_stack: StackCheck | None = None

    def __post_init__(self) -> None:
        if (self.check_resource is None) == (self.check_stack is None):
            raise TypeError(f"rule {self.name}: give exactly one of check_resource / check_stack")

    def inspects(self, resource_type: str) -> bool:
        return self.types is None or resource_type in self.types

    @property
    def scope(self) -> Literal["resource", "stack"]:
        return "resource" if self.check_resource is not None else "stack"

    def settings(self, configured: Mapping[str, Any] | None) -> dict[str, Any]:
        """Schema defaults overlaid with what the user configured for this policy."""
        merged = {key: prop["default"] for key, prop in self.config.items() if "default" in prop}
        for key, value in (configured or {}).items():
            if key != "enforcementLevel":
                merged[key] = value
        return merged
