"""What a reviewer reads: resources by component with their key settings, every policy
violation with its enforcement level, and the estimated monthly cost — as text or Markdown."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from preview.analyzer import Diagnostic

# type token -> the inputs a reviewer wants to see (dotted paths into nested blocks).
KEY_SETTINGS: dict[str, tuple[str, ...]] = {
    "aws:rds/instance:Instance": (
        "instanceClass",
        "engineVersion",
        "multiAz",
        "allocatedStorage",
        "backupRetentionPeriod",
        "deletionProtection",
        "storageEncrypted",
        "publiclyAccessible",
    ),
    "aws:rds/parameterGroup:ParameterGroup": ("family",),
    "aws:s3/bucket:Bucket": ("bucket", "forceDestroy"),
    "aws:s3/bucketVersioning:BucketVersioning": ("versioningConfiguration.status",),
    "aws:lb/loadBalancer:LoadBalancer": (
        "internal",
        "idleTimeout",
        "dropInvalidHeaderFields",
        "accessLogs.enabled",
    ),
    "aws:lb/listener:Listener": ("protocol", "port", "sslPolicy"),
    "aws:lb/targetGroup:TargetGroup": ("protocol", "port", "deregistrationDelay"),
    "aws:ecs/service:Service": ("desiredCount", "launchType", "networkConfiguration.assignPublicIp"),
    "aws:ecs/taskDefinition:TaskDefinition": ("cpu", "memory", "runtimePlatform.cpuArchitecture"),
    "aws:appautoscaling/target:Target": ("minCapacity", "maxCapacity"),
    "aws:appautoscaling/policy:Policy": (
        "policyType",
        "targetTrackingScalingPolicyConfiguration.targetValue",
    ),
    "aws:ec2/vpc:Vpc": ("cidrBlock",),
    "aws:ec2/subnet:Subnet": ("cidrBlock", "availabilityZone"),
    "aws:ec2/vpcEndpoint:VpcEndpoint": ("serviceName", "vpcEndpointType"),
    "aws:ec2/flowLog:FlowLog": ("trafficType", "logDestinationType"),
    "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule": (
        "ipProtocol",
        "fromPort",
        "toPort",
        "cidrIpv4",
        "referencedSecurityGroupId",
    ),
    "aws:cloudwatch/logGroup:LogGroup": ("retentionInDays",),
    "aws:cloudwatch/metricAlarm:MetricAlarm": ("metricName", "threshold"),
    "aws:kms/key:Key": ("enableKeyRotation", "deletionWindowInDays"),
    "aws:ecr/repository:Repository": ("imageTagMutability",),
    "aws:acm/certificate:Certificate": ("domainName", "validationMethod"),
}
_LEVEL_ORDER = {"mandatory": 0, "remediate": 1, "advisory": 2, "disabled": 3}
STACK_GROUP = "(stack)"


@dataclass(frozen=True)
class ReviewedResource:
    component: str
    type: str
    name: str
    settings: Mapping[str, str]


@dataclass(frozen=True)
class CostSummary:
    region: str
    currency: str
    source: str
    as_of: str
    by_component: Mapping[str, float]
    total: float
    usage: Sequence[tuple[str, float, str]]  # (what, unit price, unit)
    notes: Sequence[str] = ()


@dataclass(frozen=True)
class PreviewReport:
    stack: str
    environment: str | None
    resources: Sequence[ReviewedResource]
    diagnostics: Sequence[Diagnostic]
    cost: CostSummary
    waivers: Mapping[str, str] = field(default_factory=dict)  # policy -> reason
    names_by_urn: Mapping[str, str] = field(default_factory=dict)

    @property
    def mandatory(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.mandatory]

    def sorted_diagnostics(self) -> list[Diagnostic]:
        return sorted(self.diagnostics, key=lambda d: (_LEVEL_ORDER.get(d.level, 9), d.policy, d.urn))

    def where(self, diagnostic: Diagnostic) -> str:
        return self.names_by_urn.get(diagnostic.urn, diagnostic.urn or "stack")


def shown_value(value: Any) -> str | None:
    """A setting as a reviewer reads it; None when unset. Secret-marked values never print."""
    if value is None:
        return None
    if isinstance(value, Mapping) and value.get("4dabf18193072939515e22adb298388d"):
        return "[secret]"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list | tuple):
        return ", ".join(shown_value(v) or "" for v in value)
    if isinstance(value, Mapping):
        return json.dumps(value, sort_keys=True)[:80]
    return str(value)


def key_settings(resource_type: str, inputs: Mapping[str, Any]) -> dict[str, str]:
    found: dict[str, str] = {}
    for path in KEY_SETTINGS.get(resource_type, ()):
        value: Any = inputs
        for part in path.split("."):
            if isinstance(value, list) and value:
                value = value[0]
            value = value.get(part) if isinstance(value, Mapping) else None
        text = shown_value(value)
        if text is not None:
            found[path] = text
    return found


def _money(value: float, currency: str) -> str:
    return f"${value:,.2f}" if currency == "USD" else f"{value:,.2f} {currency}"


def _unit_price(value: float, currency: str) -> str:
    # Unit prices are fractions of a cent; two decimals would print $0.045 as $0.04.
    text = f"{value:.6f}".rstrip("0")
    text = text + "0" * max(0, 2 - len(text.split(".")[1]))
    return f"${text}" if currency == "USD" else f"{text} {currency}"


def _grouped(report: PreviewReport) -> dict[str, list[ReviewedResource]]:
    groups: dict[str, list[ReviewedResource]] = {}
    for resource in report.resources:
        groups.setdefault(resource.component, []).append(resource)
    return groups


def _summary_line(report: PreviewReport) -> str:
    mandatory = len(report.mandatory)
    advisory = len(report.diagnostics) - mandatory
    verdict = "BLOCKED" if mandatory else "OK"
    return (
        f"{verdict}: {mandatory} mandatory and {advisory} advisory policy violation(s); "
        f"{len(report.resources)} resources; est. {_money(report.cost.total, report.cost.currency)}/month"
    )


def render_text(report: PreviewReport) -> str:
    env = f" ({report.environment})" if report.environment else ""
    lines = [f"Preview of stack {report.stack}{env}, region {report.cost.region}", ""]
    lines.append("Resources by component")
    for component, members in _grouped(report).items():
        lines.append(f"  {component}")
        for r in members:
            settings = ", ".join(f"{k}={v}" for k, v in r.settings.items())
            lines.append(
                f"    {r.type.split(':')[-1]:<32} {r.name}" + (f"  [{settings}]" if settings else "")
            )
    lines += ["", "Policy violations"]
    if not report.diagnostics:
        lines.append("  none")
    for d in report.sorted_diagnostics():
        waived = f" (waived: {report.waivers[d.policy]})" if d.policy in report.waivers else ""
        lines.append(f"  [{d.level}] {d.policy} on {report.where(d)}: {d.message}{waived}")
    cost = report.cost
    lines += ["", f"Estimated monthly cost ({cost.region}, prices as of {cost.as_of})"]
    for component, amount in sorted(cost.by_component.items(), key=lambda kv: -kv[1]):
        lines.append(f"  {component:<40} {_money(amount, cost.currency):>12}")
    lines.append(f"  {'total':<40} {_money(cost.total, cost.currency):>12}")
    lines.append("  plus usage-based charges:")
    lines += [
        f"    {what}: {_unit_price(price, cost.currency)} per {unit}" for what, price, unit in cost.usage
    ]
    lines += [f"  note: {note}" for note in cost.notes]
    lines += [f"  price source: {cost.source}", "", _summary_line(report)]
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(report: PreviewReport) -> str:
    env = f" ({report.environment})" if report.environment else ""
    verdict = ":no_entry: " if report.mandatory else ":white_check_mark: "
    lines = [
        f"### mlflow-stack preview: `{report.stack}`{env}",
        "",
        f"**{verdict}{_summary_line(report)}**",
        "",
    ]
    lines += ["#### Policy violations", ""]
    if report.diagnostics:
        lines += ["| level | policy | resource | finding |", "|---|---|---|---|"]
        for d in report.sorted_diagnostics():
            waived = f" — waived: {report.waivers[d.policy]}" if d.policy in report.waivers else ""
            lines.append(
                f"| {d.level} | `{d.policy}` | `{_cell(report.where(d))}` | {_cell(d.message + waived)} |"
            )
    else:
        lines.append("None.")
    cost = report.cost
    lines += [
        "",
        f"#### Estimated monthly cost ({cost.region})",
        "",
        "| component | per month |",
        "|---|---:|",
    ]
    for component, amount in sorted(cost.by_component.items(), key=lambda kv: -kv[1]):
        lines.append(f"| {component} | {_money(amount, cost.currency)} |")
    lines.append(f"| **total** | **{_money(cost.total, cost.currency)}** |")
    lines += [
        "",
        "Plus usage: "
        + "; ".join(f"{w} {_unit_price(p, cost.currency)}/{u}" for w, p, u in cost.usage)
        + ".",
    ]
    lines += [f"- {note}" for note in cost.notes]
    lines += ["", f"<sub>Prices as of {cost.as_of}. Source: {_cell(cost.source)}</sub>", ""]
    lines += ["<details><summary>Resources by component</summary>", ""]
    for component, members in _grouped(report).items():
        lines += [f"**{component}**", "", "| type | name | key settings |", "|---|---|---|"]
        for r in members:
            settings = ", ".join(f"{k}={v}" for k, v in r.settings.items())
            lines.append(f"| `{r.type}` | `{r.name}` | {_cell(settings)} |")
        lines.append("")
    lines += ["</details>", ""]
    return "\n".join(lines)
