"""Helpers for the policy tests: crafted resources and a direct way to run one rule on them."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from policies.model import Context, Provider, Resource
from policies.rules import RULES_BY_NAME

TAGS = {"team": "platform", "environment": "dev", "owner": "ml@example.com", "cost-center": "CC-1"}
PROVIDER = Provider(
    "pulumi:providers:aws",
    "aws",
    "urn:pulumi:dev::mlflow-stack::pulumi:providers:aws::aws",
    {"region": "us-east-1", "defaultTags": json.dumps({"tags": TAGS})},
)


def res(type_: str, name: str, provider: Provider | None = PROVIDER, **props: Any) -> Resource:
    """A crafted resource; its id is its name so others can point at it by value."""
    return Resource(
        type=type_,
        name=name,
        urn=f"urn:pulumi:dev::mlflow-stack::{type_}::{name}",
        props={"id": name, **props},
        provider=provider,
    )


def violations(
    rule_name: str,
    resources: list[Resource] | Resource,
    environment: str | None = "dev",
    config: Mapping[str, Any] | None = None,
) -> list[str]:
    """Messages a rule reports: one resource for resource rules, a list for stack rules."""
    rule = RULES_BY_NAME[rule_name]
    ctx = Context(config=rule.settings(config), environment=environment)
    listed = resources if isinstance(resources, list) else [resources]
    if rule.check_resource is not None:
        return [m for r in listed if rule.inspects(r.type) for m in rule.check_resource(r, ctx)]
    assert rule.check_stack is not None
    return [v.message for v in rule.check_stack(listed, ctx)]
