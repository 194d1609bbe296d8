"""`mlflow-stack preview --stack NAME`: the offline preview a reviewer reads in a PR.

Thin glue: run the Pulumi program under mocks with the stack's config (infra.offline), send every
resource through the real policy pack over the analyzer protocol (policies.analyzer), estimate
the monthly cost (infra.cost), print the report (policies.report). No cloud credentials needed.
Exit codes: 0 no mandatory violation; 1 a mandatory policy violation; 2 the preview could not be
made (invalid stack settings, unknown region prices, the pack failed, bad options).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

EXIT_OK = 0
EXIT_VIOLATIONS = 1
EXIT_ERROR = 2

# How the engine marks a secret on the wire; the pack unwraps it like any engine request.
_SECRET_SIG_KEY = "4dabf18193072939515e22adb298388d"  # noqa: S105 - a protocol marker
_SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"  # noqa: S105 - a protocol marker


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "preview",
        help="offline preview for review: resources, policy violations, estimated monthly cost",
        description=(
            "Run the Pulumi program for a stack under mocks (no AWS account, no Pulumi CLI), check every "
            "resource with the policy pack in policies/, and estimate the monthly cost. Exits 1 on a "
            "mandatory policy violation, 2 if the preview cannot be made."
        ),
    )
    parser.add_argument("--stack", required=True, metavar="NAME", help="stacks/Pulumi.<NAME>.yaml")
    parser.add_argument(
        "--format", choices=("text", "markdown"), default="text", help="markdown: a PR comment"
    )
    parser.add_argument(
        "--policy-config",
        metavar="FILE",
        help="policy pack config (the JSON `pulumi preview --policy-pack-config` takes)",
    )
    parser.add_argument(
        "--refresh-prices",
        action="store_true",
        help="re-read the region's prices from the AWS Pricing API (needs AWS credentials) and save them "
        "to infra/prices.json",
    )
    parser.set_defaults(func=run)


def _wire(value: Any) -> Any:
    """Graph values as the engine sends them: secrets in the engine's secret envelope."""
    from infra.offline import Secret

    if isinstance(value, Secret):
        return {_SECRET_SIG_KEY: _SECRET_SIG, "value": _wire(value.value)}
    if isinstance(value, dict):
        return {k: _wire(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_wire(v) for v in value]
    return value


def analyzed_resources(graph: Any) -> list[Any]:
    """The offline graph as analyzer requests: inputs for Analyze, inputs + id for AnalyzeStack."""
    from policies.analyzer import AnalyzedResource, ProviderRef

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
    from policies.report import STACK_GROUP

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


def build_report(
    stack: str, *, pack_config: dict[str, Any] | None = None, refresh_prices: bool = False
) -> Any:
    from infra.cost import PriceTable, estimate, refresh_region_prices
    from infra.offline import run_program
    from infra.settings import PROJECT
    from policies.analyzer import run_policy_pack
    from policies.environment import resolve_environment
    from policies.report import STACK_GROUP, CostSummary, PreviewReport, ReviewedResource, key_settings
    from policies.waivers import waiver_config, waivers

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
    cost = estimate(graph.resources, region, table)
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


def run(args: argparse.Namespace) -> int:
    from infra.cost import CostError, PriceRefreshError
    from infra.settings import SettingsError
    from policies.analyzer import PolicyPackError
    from policies.report import render_markdown, render_text

    started = time.monotonic()
    try:
        pack_config = json.loads(Path(args.policy_config).read_text()) if args.policy_config else None
        report = build_report(args.stack, pack_config=pack_config, refresh_prices=args.refresh_prices)
    except (SettingsError, CostError, PriceRefreshError, PolicyPackError, FileNotFoundError) as exc:
        print(f"mlflow-stack preview: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except json.JSONDecodeError as exc:
        print(
            f"mlflow-stack preview: --policy-config {args.policy_config} is not JSON: {exc}", file=sys.stderr
        )
        return EXIT_ERROR
    rendered = render_markdown(report) if args.format == "markdown" else render_text(report)
    sys.stdout.write(rendered)
    print(f"(preview took {time.monotonic() - started:.1f}s)", file=sys.stderr)
    return EXIT_VIOLATIONS if report.mandatory else EXIT_OK
