"""Estimated monthly cost of a stack, from the resources the program registers.

Prices come from `preview/prices.json` (a small table that names its source and date) or, with
`refresh_region_prices`, from the AWS Pricing API. The estimate covers what runs around the clock
(database, tasks at their minimum count, load balancer, NAT gateways, public IPv4 addresses, keys,
secrets, alarms, WAF web ACLs and rules) and scheduled tasks (runs per month from the schedule
expression, at an assumed run length); traffic- and volume-driven charges (S3 storage, NAT data,
LCUs, log ingestion, DynamoDB on-demand requests, WAF requests) are listed with their unit price
instead of being guessed.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

PRICES_PATH = Path(__file__).resolve().parent / "prices.json"
# The scheduled maintenance task (reap, cleanup, gc) runs for minutes; priced at this length per
# run (Fargate bills per second, one-minute minimum), and said so in the estimate's notes.
SCHEDULED_TASK_MINUTES = 15
DAYS_PER_MONTH = 365.25 / 12


class CostError(ValueError):
    """The estimate cannot be made (unknown region or instance class, unreadable price table)."""


class PriceRefreshError(RuntimeError):
    """Prices could not be fetched from the AWS Pricing API."""


class PricedResource(Protocol):
    type: str
    name: str
    inputs: Mapping[str, Any]


@dataclass(frozen=True)
class LineItem:
    resource: str
    type: str
    description: str
    monthly_usd: float


@dataclass(frozen=True)
class UsagePrice:
    description: str
    unit_price_usd: float
    unit: str


@dataclass(frozen=True)
class PriceTable:
    source: str
    as_of: str
    currency: str
    hours_per_month: float
    regions: Mapping[str, Mapping[str, Any]]

    @classmethod
    def load(cls, path: Path = PRICES_PATH) -> PriceTable:
        try:
            data = json.loads(path.read_text())
            return cls(
                source=data["source"],
                as_of=data["as_of"],
                currency=data["currency"],
                hours_per_month=float(data["hours_per_month"]),
                regions=data["regions"],
            )
        except (OSError, ValueError, KeyError) as exc:
            raise CostError(f"price table {path} is unreadable ({exc}); restore it from git") from exc

    def region(self, name: str) -> Mapping[str, Any]:
        if name not in self.regions:
            raise CostError(
                f"no prices for region {name!r} in the price table (has {', '.join(sorted(self.regions))}); "
                "add the region to preview/prices.json or run with --refresh-prices and AWS credentials"
            )
        return self.regions[name]

    def source_for(self, region: str) -> tuple[str, str]:
        """(source, as-of date) for a region; refreshed regions carry their own."""
        prices = self.regions.get(region, {})
        return str(prices.get("source", self.source)), str(prices.get("as_of", self.as_of))

    def with_region(self, region: str, prices: Mapping[str, Any]) -> PriceTable:
        return PriceTable(
            self.source,
            self.as_of,
            self.currency,
            self.hours_per_month,
            {**self.regions, region: dict(prices)},
        )

    def save(self, path: Path = PRICES_PATH) -> None:
        document = {
            "source": self.source,
            "as_of": self.as_of,
            "currency": self.currency,
            "hours_per_month": self.hours_per_month,
            "regions": self.regions,
        }
        path.write_text(json.dumps(document, indent=2) + "\n")


@dataclass(frozen=True)
class CostEstimate:
    region: str
    source: str
    as_of: str
    currency: str
    items: tuple[LineItem, ...]
    usage: tuple[UsagePrice, ...]
    notes: tuple[str, ...] = field(default=())

    @property
    def monthly_usd(self) -> float:
        return round(sum(item.monthly_usd for item in self.items), 2)

    def by(self, group_of: Callable[[str], str]) -> dict[str, float]:
        """Monthly totals grouped by `group_of(resource name)` (e.g. the owning component)."""
        totals: dict[str, float] = {}
        for item in self.items:
            group = group_of(item.resource)
            totals[group] = totals.get(group, 0.0) + item.monthly_usd
        return {group: round(total, 2) for group, total in totals.items()}


def _plain(value: Any) -> Any:
    # Secret-wrapped values never drive a price; anything not plain counts as absent.
    return value if isinstance(value, str | int | float | bool | list | dict) or value is None else None


def _get(resource: PricedResource, key: str, default: Any = None) -> Any:
    value = _plain(resource.inputs.get(key))
    return default if value is None else value


def _block(resource: PricedResource, key: str) -> Mapping[str, Any]:
    value = _plain(resource.inputs.get(key))
    if isinstance(value, list):
        value = value[0] if value else {}
    return value if isinstance(value, Mapping) else {}


@dataclass(frozen=True)
class _Fargate:
    vcpu: float
    memory_gb: float
    architecture: str


def _task_shapes(resources: Sequence[PricedResource]) -> dict[str, _Fargate]:
    shapes = {}
    for task in resources:
        if task.type != "aws:ecs/taskDefinition:TaskDefinition":
            continue
        architecture = str(_block(task, "runtimePlatform").get("cpuArchitecture") or "X86_64")
        shapes[str(_get(task, "family", task.name))] = _Fargate(
            vcpu=float(_get(task, "cpu", 0)) / 1024,
            memory_gb=float(_get(task, "memory", 0)) / 1024,
            architecture=architecture,
        )
    return shapes


def _family(task_definition_ref: Any) -> str:
    # "arn:aws:ecs:<region>:<account>:task-definition/<family>:<revision>" or "<family>[:<rev>]"
    text = str(task_definition_ref).rsplit("/", 1)[-1]
    return text.rsplit(":", 1)[0] if text.count(":") == 1 else text


def _scaling_bounds(resources: Sequence[PricedResource]) -> list[tuple[str, int, int]]:
    return [
        (str(_get(t, "resourceId", "")), int(_get(t, "minCapacity", 0)), int(_get(t, "maxCapacity", 0)))
        for t in resources
        if t.type == "aws:appautoscaling/target:Target"
        and _get(t, "scalableDimension") == "ecs:service:DesiredCount"
    ]


_CRON_NAMES = {
    **{day: str(index) for index, day in enumerate(("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"), 1)},
    **{
        month: str(index)
        for index, month in enumerate(
            ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"), 1
        )
    },
}
_RATE_MINUTES = {"minute": 1, "hour": 60, "day": 1440}


def _cron_count(field_: str, low: int, high: int) -> int | None:
    """How many values a cron field selects; None for what this estimate does not model (L, W, #)."""
    if field_ in ("*", "?"):
        return high - low + 1
    values: set[int] = set()
    for part in field_.upper().split(","):
        for name, number in _CRON_NAMES.items():
            part = part.replace(name, number)
        match = re.fullmatch(r"(\*|\d+)(?:-(\d+))?(?:/(\d+))?", part)
        if match is None:
            return None
        start = low if match[1] == "*" else int(match[1])
        end = int(match[2]) if match[2] else (high if match[1] == "*" or match[3] else start)
        values.update(range(start, end + 1, int(match[3] or 1)))
    return len(values)


def runs_per_month(expression: str, hours_per_month: float) -> float | None:
    """Average runs a month of an EventBridge Scheduler cron(...)/rate(...) expression, or None."""
    rate = re.fullmatch(r"rate\((\d+) (minute|hour|day)s?\)", expression)
    if rate:
        return hours_per_month * 60 / (int(rate[1]) * _RATE_MINUTES[rate[2]])
    cron = re.fullmatch(r"cron\((.+)\)", expression)
    fields = cron[1].split() if cron else []
    if len(fields) != 6:
        return None
    minutes, hours, day_of_month, month, day_of_week = (
        _cron_count(fields[0], 0, 59),
        _cron_count(fields[1], 0, 23),
        _cron_count(fields[2], 1, 31),
        _cron_count(fields[3], 1, 12),
        _cron_count(fields[4], 1, 7),
    )
    if None in (minutes, hours, day_of_month, month, day_of_week):
        return None
    if fields[4] not in ("*", "?"):
        days = day_of_week * DAYS_PER_MONTH / 7  # type: ignore[operator]
    elif fields[2] not in ("*", "?"):
        days = float(day_of_month)  # type: ignore[arg-type]
    else:
        days = DAYS_PER_MONTH
    return minutes * hours * days * month / 12  # type: ignore[operator]


def _waf_rule_count(resource: PricedResource) -> int:
    """Rules of a web ACL, written as `rules` blocks or as the API's JSON (`ruleJson`)."""
    rule_json = _get(resource, "ruleJson")
    if isinstance(rule_json, str) and rule_json:
        return len(json.loads(rule_json))
    return len(_get(resource, "rules", []) or [])


def _scheduled_task(target: Mapping[str, Any]) -> Mapping[str, Any]:
    ecs = _plain(target.get("ecsParameters"))
    if isinstance(ecs, list):
        ecs = ecs[0] if ecs else {}
    return ecs if isinstance(ecs, Mapping) else {}


def estimate(
    resources: Iterable[PricedResource], region: str, table: PriceTable, node_instance_type: str | None = None
) -> CostEstimate:
    """`node_instance_type`: the Kubernetes backend's node type (kubernetes.nodeInstanceType)."""
    listed = list(resources)
    prices = table.region(region)
    hours = table.hours_per_month
    items: list[LineItem] = []
    notes: list[str] = []
    shapes = _task_shapes(listed)
    bounds = _scaling_bounds(listed)

    def add(resource: PricedResource, description: str, monthly: float) -> None:
        items.append(LineItem(resource.name, resource.type, description, round(monthly, 2)))

    for r in listed:
        if r.type == "aws:rds/instance:Instance":
            instance_class = str(_get(r, "instanceClass"))
            hourly = prices["rds_postgres_instance_hour"].get(instance_class)
            if hourly is None:
                raise CostError(
                    f"no price for RDS instance class {instance_class!r} in {region}; add it to "
                    "preview/prices.json (rds_postgres_instance_hour) or run with --refresh-prices"
                )
            copies = 2 if _get(r, "multiAz", False) else 1
            az = "Multi-AZ" if copies == 2 else "single-AZ"
            add(r, f"RDS PostgreSQL {instance_class} {az}", hourly * hours * copies)
            storage = float(_get(r, "allocatedStorage", 20))
            add(r, f"RDS storage {storage:g} GB gp3 {az}", storage * prices["rds_gp3_gb_month"] * copies)
            if _get(r, "manageMasterUserPassword", False):
                # RDS creates this secret itself; it is billed like any other.
                add(r, "Secrets Manager secret (RDS-managed master password)", prices["secret_month"])
        elif r.type == "aws:ecs/service:Service":
            shape = shapes.get(_family(_get(r, "taskDefinition", "")))
            if shape is None:
                notes.append(f"service {r.name}: its task definition is not in the stack; not priced")
                continue
            desired = int(_get(r, "desiredCount", 1))
            # Autoscaling names the service by its physical name: the `name` input or its id.
            physical = _get(r, "name") or getattr(r, "id", None) or r.name
            minimum, maximum = next(
                ((lo, hi) for rid, lo, hi in bounds if rid.endswith(f"/{physical}")), (desired, desired)
            )
            per_task = (
                shape.vcpu * prices["fargate_vcpu_hour"][shape.architecture]
                + shape.memory_gb * prices["fargate_gb_hour"][shape.architecture]
            ) * hours
            add(
                r,
                f"Fargate {minimum} task(s) x {shape.vcpu:g} vCPU / {shape.memory_gb:g} GB "
                f"{shape.architecture}",
                per_task * minimum,
            )
            if maximum > minimum:
                notes.append(
                    f"service {r.name}: priced at its minimum of {minimum} task(s); at its maximum of "
                    f"{maximum} the Fargate line is ${per_task * maximum:,.2f}/month"
                )
        elif r.type == "aws:scheduler/schedule:Schedule" and _scheduled_task(_block(r, "target")):
            ecs = _scheduled_task(_block(r, "target"))
            shape = shapes.get(_family(ecs.get("taskDefinitionArn", "")))
            expression = str(_get(r, "scheduleExpression", ""))
            runs = runs_per_month(expression, hours)
            if shape is None or runs is None:
                notes.append(f"schedule {r.name} ({expression}): its task is not priced")
                continue
            count = int(ecs.get("taskCount") or 1)
            per_hour = (
                shape.vcpu * prices["fargate_vcpu_hour"][shape.architecture]
                + shape.memory_gb * prices["fargate_gb_hour"][shape.architecture]
            )
            add(
                r,
                f"Fargate scheduled task ~{runs:.1f} run(s)/month x {SCHEDULED_TASK_MINUTES} min x "
                f"{shape.vcpu:g} vCPU / {shape.memory_gb:g} GB {shape.architecture}",
                per_hour * runs * count * SCHEDULED_TASK_MINUTES / 60,
            )
            notes.append(
                f"schedule {r.name}: priced at {SCHEDULED_TASK_MINUTES} minutes per run (assumed); "
                "Fargate bills the real run time per second"
            )
        elif r.type in ("aws:lb/loadBalancer:LoadBalancer", "aws:alb/loadBalancer:LoadBalancer"):
            add(r, "Application Load Balancer hours", prices["alb_hour"] * hours)
            if not _get(r, "internal", False):
                # An internet-facing ALB holds one public IPv4 address per subnet (AZ).
                count = len(_get(r, "subnets", []) or _get(r, "subnetMappings", [])) or 2
                add(
                    r,
                    f"{count} public IPv4 address(es) of the ALB",
                    count * prices["public_ipv4_hour"] * hours,
                )
        elif r.type == "aws:ec2/natGateway:NatGateway":
            add(r, "NAT gateway hours", prices["nat_gateway_hour"] * hours)
        elif r.type == "aws:ec2/eip:Eip":
            add(r, "public IPv4 address (Elastic IP)", prices["public_ipv4_hour"] * hours)
        elif r.type == "aws:ec2/vpcEndpoint:VpcEndpoint" and _get(r, "vpcEndpointType") == "Interface":
            count = len(_get(r, "subnetIds", [])) or 1
            add(r, f"interface endpoint x {count} AZ(s)", count * prices["interface_endpoint_hour"] * hours)
        elif r.type == "aws:kms/key:Key":
            add(r, "KMS customer managed key", prices["kms_key_month"])
        elif r.type == "aws:secretsmanager/secret:Secret":
            add(r, "Secrets Manager secret", prices["secret_month"])
        elif r.type == "aws:cloudwatch/metricAlarm:MetricAlarm":
            add(r, "CloudWatch alarm", prices["alarm_month"])
        elif r.type == "aws:wafv2/webAcl:WebAcl":
            add(r, "AWS WAF web ACL", prices["waf_web_acl_month"])
            rules = _waf_rule_count(r)
            add(
                r,
                f"AWS WAF {rules} rule(s) (AWS managed rule groups count as one)",
                rules * prices["waf_rule_month"],
            )
        elif r.type == "aws:ecs/cluster:Cluster" and any(
            isinstance(setting, Mapping)
            and setting.get("name") == "containerInsights"
            and setting.get("value") in ("enabled", "enhanced")
            for setting in _get(r, "settings", [])
        ):
            notes.append(
                f"cluster {r.name}: Container Insights is on; its metrics and performance logs are billed "
                "as CloudWatch custom metrics and log ingestion (not estimated)"
            )

    if node_instance_type is not None:
        from preview.cost_kubernetes import price_kubernetes

        pod_lines, pod_notes = price_kubernetes(
            listed, prices, hours, node_instance_type, runs_per_month, SCHEDULED_TASK_MINUTES
        )
        for resource, description, monthly in pod_lines:
            add(resource, description, monthly)
        notes.extend(pod_notes)

    usage = (
        UsagePrice("S3 Standard storage (artifacts)", prices["s3_standard_gb_month"], "GB-month"),
        UsagePrice("NAT gateway data processed", prices["nat_gateway_gb"], "GB"),
        UsagePrice("ALB capacity units", prices["alb_lcu_hour"], "LCU-hour"),
        UsagePrice("CloudWatch Logs ingestion", prices["logs_ingest_gb"], "GB"),
        UsagePrice("CloudWatch Logs storage", prices["logs_storage_gb_month"], "GB-month"),
        UsagePrice("ECR image storage", prices["ecr_gb_month"], "GB-month"),
    )
    if any(r.type == "aws:wafv2/webAcl:WebAcl" for r in listed):
        usage += (
            UsagePrice("AWS WAF requests inspected", prices["waf_request_million"], "million requests"),
        )
    if any(
        r.type == "aws:dynamodb/table:Table" and _get(r, "billingMode") == "PAY_PER_REQUEST" for r in listed
    ):
        # The lock table: a few leases a week, each a handful of requests; billed per request.
        usage += (
            UsagePrice(
                "DynamoDB on-demand writes (lock table)", prices["dynamodb_write_million"], "million WRU"
            ),
            UsagePrice(
                "DynamoDB on-demand reads (lock table)", prices["dynamodb_read_million"], "million RRU"
            ),
        )
    source, as_of = table.source_for(region)
    return CostEstimate(region, source, as_of, table.currency, tuple(items), usage, tuple(notes))


# --- refresh from the AWS Pricing API ---------------------------------------------------------

# The Pricing API is served from us-east-1 whatever region is being priced.
PRICING_API_REGION = "us-east-1"


def _on_demand_usd(price_item: str) -> float:
    product = json.loads(price_item)
    for term in product["terms"]["OnDemand"].values():
        for dimension in term["priceDimensions"].values():
            usd = float(dimension["pricePerUnit"]["USD"])
            if usd > 0:
                return usd
    raise PriceRefreshError(f"no on-demand USD price in {product['product'].get('sku')}")


def _products(client: Any, service: str, filters: Mapping[str, str]) -> list[dict[str, Any]]:
    request = {
        "ServiceCode": service,
        "Filters": [{"Type": "TERM_MATCH", "Field": k, "Value": v} for k, v in filters.items()],
        "FormatVersion": "aws_v1",
    }
    found: list[dict[str, Any]] = []
    while True:
        page = client.get_products(**request)
        found.extend({"raw": item, **json.loads(item)["product"]} for item in page["PriceList"])
        if not page.get("NextToken"):
            return found
        request["NextToken"] = page["NextToken"]


def _one_price(
    client: Any, service: str, filters: Mapping[str, str], usage_suffix: str | None = None
) -> float:
    products = _products(client, service, filters)
    if usage_suffix is not None:
        products = [p for p in products if str(p["attributes"].get("usagetype", "")).endswith(usage_suffix)]
    if not products:
        raise PriceRefreshError(
            f"the Pricing API has no {service} product for {dict(filters)} {usage_suffix or ''}"
        )
    return _on_demand_usd(products[0]["raw"])


def refresh_region_prices(
    region: str, current: Mapping[str, Any], client: Any | None = None
) -> dict[str, Any]:
    """The region's price entry with the main cost drivers re-read from the Pricing API.

    Re-read: RDS PostgreSQL instance classes (single-AZ) and gp3 storage, Fargate vCPU/GB for
    both architectures, ALB hours and LCUs, NAT gateway hours and data. Everything else keeps the
    table's value; the entry records which source and date it now comes from.
    """
    if client is None:
        client = _pricing_client()
    try:
        refreshed = dict(current)
        rds = {"regionCode": region, "databaseEngine": "PostgreSQL", "deploymentOption": "Single-AZ"}
        refreshed["rds_postgres_instance_hour"] = {
            instance_class: _one_price(client, "AmazonRDS", {**rds, "instanceType": instance_class})
            for instance_class in current["rds_postgres_instance_hour"]
        }
        refreshed["rds_gp3_gb_month"] = _one_price(
            client,
            "AmazonRDS",
            {**rds, "productFamily": "Database Storage", "volumeType": "General Purpose-GP3"},
        )
        fargate = {"regionCode": region, "productFamily": "Compute"}
        refreshed["fargate_vcpu_hour"] = {
            "X86_64": _one_price(client, "AmazonECS", fargate, "-Fargate-vCPU-Hours:perCPU"),
            "ARM64": _one_price(client, "AmazonECS", fargate, "-Fargate-ARM-vCPU-Hours:perCPU"),
        }
        refreshed["fargate_gb_hour"] = {
            "X86_64": _one_price(client, "AmazonECS", fargate, "-Fargate-GB-Hours"),
            "ARM64": _one_price(client, "AmazonECS", fargate, "-Fargate-ARM-GB-Hours"),
        }
        alb = {"regionCode": region, "productFamily": "Load Balancer-Application"}
        refreshed["alb_hour"] = _one_price(client, "AWSELB", alb, "LoadBalancerUsage")
        refreshed["alb_lcu_hour"] = _one_price(client, "AWSELB", alb, "LCUUsage")
        nat = {"regionCode": region, "productFamily": "NAT Gateway"}
        refreshed["nat_gateway_hour"] = _one_price(client, "AmazonEC2", nat, "NatGateway-Hours")
        refreshed["nat_gateway_gb"] = _one_price(client, "AmazonEC2", nat, "NatGateway-Bytes")
    except PriceRefreshError:
        raise
    except Exception as exc:  # botocore's ClientError, EndpointConnectionError, ...
        raise PriceRefreshError(f"the AWS Pricing API call failed: {exc}") from exc
    refreshed["source"] = (
        "AWS Pricing API (get_products, on-demand) for RDS, Fargate, ALB and NAT; the rest from the table"
    )
    refreshed["as_of"] = dt.datetime.now(dt.UTC).date().isoformat()
    return refreshed


def _pricing_client() -> Any:
    import boto3

    session = boto3.Session()
    try:
        credentials = session.get_credentials()
    except Exception as exc:  # a broken profile or credential endpoint is as good as none
        raise PriceRefreshError(f"--refresh-prices could not load AWS credentials: {exc}") from exc
    if credentials is None:
        raise PriceRefreshError(
            "--refresh-prices needs AWS credentials (AWS_PROFILE, or AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY) with pricing:GetProducts; none were found. Run without "
            "--refresh-prices to use preview/prices.json."
        )
    return session.client("pricing", region_name=PRICING_API_REGION)
