"""Turns the rule catalog into pulumi_policy policies (without starting a PolicyPack server).

Only `policies/__main__.py` constructs the `PolicyPack` — doing so starts the gRPC server and
blocks — so this module stays importable from tests and tools.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import pulumi.runtime
from pulumi_policy import (
    EnforcementLevel,
    Policy,
    PolicyConfigSchema,
    PolicyProviderResource,
    PolicyResource,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    Severity,
    StackValidationArgs,
    StackValidationPolicy,
)

from policies.environment import resolve_environment
from policies.model import Context, Provider, Resource
from policies.rules import ALL_RULES
from policies.spec import Rule

PACK_NAME = "mlflow-stack-guardrails"
ENVIRONMENT_CONFIG_KEY = "mlflow-stack:environment"

_LEVELS = {"mandatory": EnforcementLevel.MANDATORY, "advisory": EnforcementLevel.ADVISORY}
_SEVERITIES = {"mandatory": Severity.HIGH, "advisory": Severity.LOW}


def _provider(provider: PolicyProviderResource | None) -> Provider | None:
    if provider is None:
        return None
    return Provider(provider.resource_type, provider.name, provider.urn, provider.props)


def from_validation_args(args: ResourceValidationArgs) -> Resource:
    return Resource(
        type=args.resource_type,
        name=args.name,
        urn=args.urn,
        props=args.props,
        provider=_provider(args.provider),
        parent=args.opts.parent,
    )


def from_policy_resource(resource: PolicyResource) -> Resource:
    return Resource(
        type=resource.resource_type,
        name=resource.name,
        urn=resource.urn,
        props=resource.props,
        provider=_provider(resource.provider),
        parent=resource.parent.urn if resource.parent is not None else None,
        dependencies=tuple(d.urn for d in resource.dependencies),
        property_dependencies={k: tuple(d.urn for d in v) for k, v in resource.property_dependencies.items()},
    )


def context_for(
    rule: Rule,
    configured: Mapping[str, Any] | None,
    stack_tags: Mapping[str, str],
    resources: Sequence[Resource],
) -> Context:
    settings = rule.settings(configured)
    configured_env = pulumi.runtime.get_config(ENVIRONMENT_CONFIG_KEY)
    environment = resolve_environment(
        settings,
        stack_tags,
        configured_env if isinstance(configured_env, str) else None,
        os.environ.get("PULUMI_STACK"),
        resources,
    )
    return Context(config=settings, environment=environment)


def _resource_policy(rule: Rule) -> ResourceValidationPolicy:
    check = rule.check_resource
    assert check is not None

    def validate(args: ResourceValidationArgs, report: ReportViolation) -> None:
        if not rule.inspects(args.resource_type):
            return
        resource = from_validation_args(args)
        ctx = context_for(rule, args.get_config(), args.stack_tags, [resource])
        for message in check(resource, ctx):
            report(message, None)

    return ResourceValidationPolicy(validate=validate, **_common(rule))


def _stack_policy(rule: Rule) -> StackValidationPolicy:
    check = rule.check_stack
    assert check is not None

    def validate(args: StackValidationArgs, report: ReportViolation) -> None:
        resources = [from_policy_resource(r) for r in args.resources]
        ctx = context_for(rule, args.get_config(), args.stack_tags, resources)
        for violation in check(resources, ctx):
            report(violation.message, violation.urn)

    return StackValidationPolicy(validate=validate, **_common(rule))


def _common(rule: Rule) -> dict[str, Any]:
    return {
        "name": rule.name,
        "description": rule.description,
        "enforcement_level": _LEVELS[rule.enforcement],
        "config_schema": PolicyConfigSchema(properties=dict(rule.config)) if rule.config else None,
        "severity": _SEVERITIES[rule.enforcement],
        "remediation_steps": rule.remediation,
    }


def build_policies(rules: Sequence[Rule] = ALL_RULES) -> list[Policy]:
    return [_resource_policy(r) if r.scope == "resource" else _stack_policy(r) for r in rules]
