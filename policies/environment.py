"""Which environment a stack is, for the rules that are stricter in prod.

Order, most explicit first: the policy's own `environment` config, the stack's `environment`
tag (Pulumi Cloud stack tags), the stack config `mlflow-stack:environment`, the stack name
("prod" or "<team>-prod"), and finally the `environment` tag the resources themselves carry.
A stack whose environment cannot be told is treated as not-prod by the prod-only rules, but the
required-tags rule still fails it for lacking the `environment` tag.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from policies.model import ENVIRONMENTS, Resource
from policies.rules.tags import effective_tags


def _valid(value: object) -> str | None:
    return value if isinstance(value, str) and value in ENVIRONMENTS else None


def from_stack_name(stack: str | None) -> str | None:
    if not stack:
        return None
    # Fully-qualified names ("org/project/search-prod") end with the stack's own name.
    return _valid(stack.rsplit("/", 1)[-1].rsplit("-", 1)[-1])


def from_resource_tags(resources: Iterable[Resource]) -> str | None:
    for resource in resources:
        found = _valid(effective_tags(resource).get("environment"))
        if found:
            return found
    return None


def resolve_environment(
    configured: Mapping[str, object],
    stack_tags: Mapping[str, str],
    stack_config_environment: str | None,
    stack_name: str | None,
    resources: Iterable[Resource] = (),
) -> str | None:
    return (
        _valid(configured.get("environment"))
        or _valid(stack_tags.get("environment"))
        or _valid(stack_config_environment)
        or from_stack_name(stack_name)
        or from_resource_tags(resources)
    )
