"""Required tags on every taggable AWS resource, counting the provider's `defaultTags`.

The kit sets the common tags once, on the explicit aws Provider's `defaultTags`, so a rule that
only looked at each resource's own `tags` would flag everything. The engine hands every resource
its provider (for default providers too), so the effective tags are provider default tags
overlaid with the resource's own — what AWS ends up applying.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from policies.model import Context, Resource, parse_json
from policies.spec import Rule

DEFAULT_REQUIRED_TAGS = ["team", "environment", "owner", "cost-center"]

# Every pulumi-aws resource module that accepts `tags` assigns it in `_internal_init`; its
# type token is the string passed to `super().__init__`. Reading the installed SDK's source
# (instead of importing ~900 modules) keeps the list exact for the pinned provider version.
_TAGS_ASSIGNMENT = '__props__.__dict__["tags"] = tags'
_TYPE_TOKEN = re.compile(r"'(aws:[A-Za-z0-9]+/[A-Za-z0-9]+:[A-Za-z0-9]+)'")


@lru_cache(maxsize=1)
def taggable_types() -> frozenset[str]:
    spec = importlib.util.find_spec("pulumi_aws")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("pulumi_aws is not installed in the policy pack's environment")
    root = Path(next(iter(spec.submodule_search_locations)))
    found: set[str] = set()
    for module in root.glob("*/*.py"):
        text = module.read_text(encoding="utf-8")
        if _TAGS_ASSIGNMENT in text:
            found.update(_TYPE_TOKEN.findall(text))
    return frozenset(found)


def provider_default_tags(resource: Resource) -> dict[str, str]:
    if resource.provider is None:
        return {}
    # Provider inputs are stored JSON-encoded when they are objects (state and engine requests).
    default_tags = parse_json(resource.provider.props.get("defaultTags"))
    if not isinstance(default_tags, Mapping):
        return {}
    tags = parse_json(default_tags.get("tags"))
    return dict(tags) if isinstance(tags, Mapping) else {}


def effective_tags(resource: Resource) -> dict[str, str]:
    tags = provider_default_tags(resource)
    own = resource.props.get("tags")
    if isinstance(own, Mapping):
        tags.update(own)
    return tags


def check_required_tags(resource: Resource, ctx: Context) -> Iterable[str]:
    if resource.type not in taggable_types():
        return []
    tags = effective_tags(resource)
    required: list[Any] = list(ctx.config.get("requiredTags", DEFAULT_REQUIRED_TAGS))
    missing = [key for key in required if not str(tags.get(key) or "").strip()]
    if not missing:
        return []
    where = "provider defaultTags or the resource's tags"
    return [f"missing required tag(s) {', '.join(missing)} (looked in {where})"]


REQUIRED_TAGS = Rule(
    name="required-tags",
    description="Every taggable AWS resource carries the team, environment, owner and cost-center tags.",
    enforcement="mandatory",
    remediation="Set the tags on the aws Provider's defaultTags (infra/settings owner/cost_center/team).",
    config={
        "requiredTags": {
            "type": "array",
            "items": {"type": "string"},
            "default": DEFAULT_REQUIRED_TAGS,
            "description": "Tag keys every taggable resource must carry (non-empty values).",
        }
    },
    # No fixed type list: the taggable set is read lazily, so importing the rules stays instant.
    types=None,
    check_resource=check_required_tags,
)

RULES = (REQUIRED_TAGS,)
