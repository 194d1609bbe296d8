"""The monthly cost model on known inputs (hand-computed from preview/prices.json)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from preview.cost import CostError, PriceRefreshError, PriceTable, estimate, refresh_region_prices

TABLE = PriceTable.load()


@dataclass
class R:
    type: str
    name: str
    inputs: dict[str, Any] = field(default_factory=dict)


def test_the_price_table_names_its_source_and_date():
    assert TABLE.as_of == "2025-01-15"
    assert "AWS" in TABLE.source and "Pricing API" in TABLE.source
    assert {"us-east-1", "eu-west-1"} <= set(TABLE.regions)


def test_single_az_database_hours_and_storage():
    db = R("aws:rds/instance:Instance", "db", {"instanceClass": "db.t4g.micro", "allocatedStorage": 20})
    result = estimate([db], "us-east-1", TABLE)
    assert [i.monthly_usd for i in result.items] == [11.68, 2.30]  # 0.016*730, 20*0.115
    assert result.monthly_usd == 13.98


def test_multi_az_doubles_instance_and_storage():
    db = R(
        "aws:rds/instance:Instance",
        "db",
        {"instanceClass": "db.m7g.large", "allocatedStorage": 100, "multiAz": True},
    )
    assert estimate([db], "us-east-1", TABLE).monthly_usd == 268.28  # 0.168*730*2 + 100*0.115*2


def test_fargate_priced_at_min_replicas_with_the_max_noted():
    resources = [
        R(
            "aws:ecs/taskDefinition:TaskDefinition",
            "task",
            {
                "family": "mlflow-server",
                "cpu": "2048",
                "memory": "4096",
                "runtimePlatform": {"cpuArchitecture": "ARM64"},
            },
        ),
        R(
            "aws:ecs/service:Service",
            "svc",
            {
                "name": "mlflow",
                "desiredCount": 2,
                "taskDefinition": "arn:aws:ecs:us-east-1:123456789012:task-definition/mlflow-server:1",
            },
        ),
        R(
            "aws:appautoscaling/target:Target",
            "target",
            {
                "resourceId": "service/cluster/mlflow",
                "scalableDimension": "ecs:service:DesiredCount",
                "minCapacity": 2,
                "maxCapacity": 6,
            },
        ),
    ]
    result = estimate(resources, "us-east-1", TABLE)
    # (2 vCPU * 0.03238 + 4 GB * 0.00356) * 730 h * 2 tasks
    assert result.monthly_usd == 115.34
    assert "maximum of 6" in result.notes[0] and "$346.02" in result.notes[0]


def test_edge_and_network_fixed_costs():
    resources = [
        R("aws:lb/loadBalancer:LoadBalancer", "alb", {"internal": False, "subnets": ["a", "b", "c"]}),
        R("aws:ec2/natGateway:NatGateway", "nat"),
        R("aws:ec2/eip:Eip", "eip"),
        R("aws:kms/key:Key", "key"),
        R("aws:secretsmanager/secret:Secret", "secret"),
        R("aws:cloudwatch/metricAlarm:MetricAlarm", "alarm"),
        R("aws:ec2/vpcEndpoint:VpcEndpoint", "s3", {"vpcEndpointType": "Gateway"}),
    ]
    result = estimate(resources, "us-east-1", TABLE)
    # ALB 16.425 + 3 IPv4 10.95 + NAT 32.85 + EIP 3.65 + KMS 1 + secret 0.40 + alarm 0.10;
    # a gateway endpoint is free.
    assert [i.monthly_usd for i in result.items] == [16.43, 10.95, 32.85, 3.65, 1.0, 0.4, 0.1]
    assert result.monthly_usd == 65.38
    assert result.by(lambda name: "edge" if name == "alb" else "rest") == {"edge": 27.38, "rest": 38.0}


def test_region_prices_differ_and_unknown_inputs_are_clear_errors():
    nat = [R("aws:ec2/natGateway:NatGateway", "nat")]
    assert estimate(nat, "eu-west-1", TABLE).monthly_usd == 35.04  # 0.048*730
    with pytest.raises(CostError, match=r"no prices for region 'ap-south-2'.*--refresh-prices"):
        estimate(nat, "ap-south-2", TABLE)
    db = R("aws:rds/instance:Instance", "db", {"instanceClass": "db.x2g.16xlarge"})
    with pytest.raises(CostError, match=r"db.x2g.16xlarge.*preview/prices.json"):
        estimate([db], "us-east-1", TABLE)


def test_usage_based_charges_are_listed_not_guessed():
    result = estimate([], "us-east-1", TABLE)
    assert result.monthly_usd == 0
    assert ("S3 Standard storage (artifacts)", 0.023, "GB-month") in [
        (u.description, u.unit_price_usd, u.unit) for u in result.usage
    ]


def test_refresh_without_credentials_fails_clearly(monkeypatch, tmp_path):
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", raising=False)
    monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", raising=False)
    with pytest.raises(PriceRefreshError, match="needs AWS credentials"):
        refresh_region_prices("us-east-1", TABLE.region("us-east-1"))


def _price_item(usage_type: str, usd: str) -> str:
    return json.dumps(
        {
            "product": {"sku": usage_type, "attributes": {"usagetype": usage_type}},
            "terms": {"OnDemand": {"t": {"priceDimensions": {"d": {"pricePerUnit": {"USD": usd}}}}}},
        }
    )


def test_refresh_reads_the_pricing_api_answers():
    """The Pricing API's request/response shapes, validated by botocore's own service model."""
    client = boto3.client(
        "pricing",
        region_name="us-east-1",
        aws_access_key_id="stub",
        aws_secret_access_key="stub",  # noqa: S106 - Stubber answers; nothing is sent
    )
    current = {**TABLE.region("us-east-1"), "rds_postgres_instance_hour": {"db.t4g.micro": 0.016}}
    answers = [
        [_price_item("USE1-InstanceUsage:db.t4g.micro", "0.0170000000")],
        [_price_item("USE1-RDS:GP3-Storage", "0.1200000000")],
        [
            _price_item("USE1-Fargate-vCPU-Hours:perCPU", "0.0410000000"),
            _price_item("USE1-Fargate-GB-Hours", "0.0045"),
        ],
        [_price_item("USE1-Fargate-ARM-vCPU-Hours:perCPU", "0.0330000000")],
        [_price_item("USE1-Fargate-GB-Hours", "0.0046000000")],
        [_price_item("USE1-Fargate-ARM-GB-Hours", "0.0037000000")],
        [_price_item("USE1-LoadBalancerUsage", "0.0230000000")],
        [_price_item("USE1-LCUUsage", "0.0081000000")],
        [_price_item("USE1-NatGateway-Hours", "0.0460000000")],
        [_price_item("USE1-NatGateway-Bytes", "0.0460000000")],
    ]
    with Stubber(client) as stub:
        for price_list in answers:
            stub.add_response("get_products", {"PriceList": price_list, "FormatVersion": "aws_v1"})
        refreshed = refresh_region_prices("us-east-1", current, client=client)
        stub.assert_no_pending_responses()
    assert refreshed["rds_postgres_instance_hour"] == {"db.t4g.micro": 0.017}
    assert refreshed["rds_gp3_gb_month"] == 0.12
    assert refreshed["fargate_vcpu_hour"] == {"X86_64": 0.041, "ARM64": 0.033}
    assert refreshed["fargate_gb_hour"] == {"X86_64": 0.0046, "ARM64": 0.0037}
    assert (refreshed["alb_hour"], refreshed["alb_lcu_hour"]) == (0.023, 0.0081)
    assert (refreshed["nat_gateway_hour"], refreshed["nat_gateway_gb"]) == (0.046, 0.046)
    assert refreshed["source"].startswith("AWS Pricing API")
    assert refreshed["kms_key_month"] == 1.0  # not re-read: kept from the table
    table = TABLE.with_region("us-east-1", refreshed)
    assert table.source_for("us-east-1")[0].startswith("AWS Pricing API")
    assert table.source_for("eu-west-1") == (TABLE.source, TABLE.as_of)


def test_container_insights_is_named_as_an_unestimated_cost():
    on = R(
        "aws:ecs/cluster:Cluster",
        "cluster",
        {"settings": [{"name": "containerInsights", "value": "enabled"}]},
    )
    off = R(
        "aws:ecs/cluster:Cluster", "quiet", {"settings": [{"name": "containerInsights", "value": "disabled"}]}
    )
    result = estimate([on, off], "us-east-1", TABLE)
    assert result.monthly_usd == 0
    assert len(result.notes) == 1 and "cluster cluster: Container Insights is on" in result.notes[0]
