"""The preview report: the program under mocks, every resource through the policy pack, the cost.

What `mlflow-stack preview` prints (cli/preview.py only parses options and renders): the graph as
the engine would send it to the pack (`analyzed_resources`), as the pack's rules receive it
(`rule_resources`, for calling a rule directly), and the assembled `PreviewReport`.
"""

from __future__ import annotations

import json
from typing import Any

# How the engine marks a secret on the wire; the pack unwraps it like any engine request.
_SECRET_SIG_KEY = "4dabf18193072939515e22adb298388d"  # noqa: S105 - a protocol marker
_SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"  # noqa: S105 - a protocol marker


def _wire(value: Any) -> Any:
    """Graph values as the engine sends them: secrets in the engine's secret envelope."""
    from preview.offline import Secret

    if isinstance(value, Secret):
        return {_SECRET_SIG_KEY: _SECRET_SIG, "value": _wire(value.value)}
    if isinstance(value, dict):
        return {k: _wire(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_wire(v) for v in value]
    return value


def analyzed_resources(graph: Any) -> list[Any]:
    """The offline graph as analyzer requests: inputs for Analyze, inputs + id for AnalyzeStack."""
    from preview.analyzer import AnalyzedResource, ProviderRef

    providers = {
        r.urn: ProviderRef(r.type, r.name, r.urn, _wire(r.inputs))
        for r in graph.resources
        if r.type.startswith("pulumi:providers:")
    }
    analyzed = []
    for r in graph.resources:
        inputs = _wire(r.inputs)
        # A provider reference is "<provider urn>::<provider id>".
        provider = providers.get(r.provider.rsplit("::", 1)[0]) if r.provider else None
        analyzed.append(
            AnalyzedResource(
                type=r.type,
                name=r.name,
                urn=r.urn,
                inputs=inputs,
                outputs={**inputs, "id": r.id} if r.id else inputs,
                parent=r.parent_urn,
                protect=r.protect,
                provider=provider,
                # What the engine sends too: rules that judge creation order need them.
                dependencies=tuple(sorted(r.dependencies)),
                property_dependencies={k: tuple(sorted(v)) for k, v in r.property_dependencies.items()},
            )
        )
    return analyzed


def _plain(value: Any) -> Any:
    """A wire value with the engine's secret envelopes opened (what a rule reads from `props`)."""
    if isinstance(value, dict):
        if value.get(_SECRET_SIG_KEY) == _SECRET_SIG:
            return _plain(value["value"])
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def rule_resources(graph: Any) -> list[Any]:
    """The offline graph as the pack's rules receive it during `pulumi up` (resolved outputs,
    secrets opened, provider, parent and dependencies), for calling a rule's check directly."""
    from policies.model import Provider, Resource

    return [
        Resource(
            type=a.type,
            name=a.name,
            urn=a.urn,
            props=_plain(a.outputs),
            provider=Provider(a.provider.type, a.provider.name, a.provider.urn, a.provider.props)
            if a.provider
            else None,
            parent=a.parent,
            dependencies=a.dependencies,
            property_dependencies=a.property_dependencies,
        )
        for a in analyzed_resources(graph)
    ]


def component_of(graph: Any) -> dict[str, str]:
    """resource name -> its top-level component (or "(stack)" for the provider)."""
    from preview.report import STACK_GROUP

    parents = {r.name: r.parent_name for r in graph.resources}
    owner: dict[str, str] = {}
    for r in graph.resources:
        name, top = r.name, None
        while parents.get(name):
            top = name = parents[name]
        owner[r.name] = top or STACK_GROUP
    return owner


def _stack_config_strings(config: dict[str, Any]) -> dict[str, str]:
    # What the engine hands the pack (PULUMI_CONFIG): strings, objects JSON-encoded.
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in config.items()}


def _node_instance_type(config: dict[str, Any]) -> str | None:
    """kubernetes.nodeInstanceType (or its default) of a kubernetes stack; None for ECS stacks."""
    from infra.settings import KubernetesSettings

    compute = config.get("mlflow-stack:compute") or {}
    if not isinstance(compute, dict) or compute.get("backend") != "kubernetes":
        return None
    cluster = config.get("mlflow-stack:kubernetes") or {}
    default = KubernetesSettings.model_fields["node_instance_type"].default
    return str(cluster.get("nodeInstanceType", default)) if isinstance(cluster, dict) else default


def build_report(
    stack: str, *, pack_config: dict[str, Any] | None = None, refresh_prices: bool = False
) -> Any:
    from infra.settings import PROJECT
    from policies.environment import resolve_environment
    from policies.waivers import waiver_config, waivers
    from preview.analyzer import run_policy_pack
    from preview.cost import PriceTable, estimate, refresh_region_prices
    from preview.offline import run_program
    from preview.report import STACK_GROUP, CostSummary, PreviewReport, ReviewedResource, key_settings

    graph = run_program(stack)
    if graph.error is not None:
        raise graph.error
    region = str(graph.config.get("aws:region", "us-east-1"))
    table = PriceTable.load()
    if refresh_prices:
        table = table.with_region(region, refresh_region_prices(region, table.region(region)))
        table.save()

    waived = waivers(graph.config)
    # The stack's waivers first; an explicit --policy-config has the last word.
    config = {**waiver_config(waived), **(pack_config or {})}
    analyzed = analyzed_resources(graph)
    diagnostics = run_policy_pack(
        analyzed,
        project=PROJECT,
        stack=stack,
        stack_config=_stack_config_strings(graph.config),
        pack_config=config,
    )

    owner = component_of(graph)
    cost = estimate(graph.resources, region, table, node_instance_type=_node_instance_type(graph.config))
    environment = graph.config.get("mlflow-stack:environment")
    return PreviewReport(
        stack=stack,
        environment=resolve_environment({}, {}, environment if isinstance(environment, str) else None, stack),
        resources=[
            ReviewedResource(owner[r.name], r.type, r.name, key_settings(r.type, _wire(r.inputs)))
            for r in graph.resources
            if r.custom and not r.type.startswith("pulumi:providers:")
        ],
        diagnostics=diagnostics,
        cost=CostSummary(
            region=region,
            currency=cost.currency,
            source=cost.source,
            as_of=cost.as_of,
            by_component=cost.by(lambda name: owner.get(name, STACK_GROUP)),
            total=cost.monthly_usd,
            usage=[(u.description, u.unit_price_usd, u.unit) for u in cost.usage],
            notes=list(cost.notes),
        ),
        waivers={p: reason for p, reason in waived.items() if p not in (pack_config or {})},
        names_by_urn={r.urn: r.name for r in graph.resources},
    )
