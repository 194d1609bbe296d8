"""The scheduled maintenance task and the lock table in the cost estimate (hand-computed)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from preview.cost import PriceTable, estimate, runs_per_month
from preview.offline import run_program

TABLE = PriceTable.load()


@dataclass
class R:
    type: str
    name: str
    inputs: dict[str, Any] = field(default_factory=dict)


@pytest.mark.parametrize(
    ("expression", "runs"),
    [
        ("cron(0 3 ? * SUN *)", 730 / 24 / 7),  # weekly: 30.44 days / 7
        ("cron(0 3 * * ? *)", 365.25 / 12),  # daily
        ("cron(0 */6 ? * MON-FRI *)", 4 * 5 * 365.25 / 12 / 7),
        ("cron(30 1 1 * ? *)", 1),  # monthly
        ("cron(0 3 1 JAN,JUL ? *)", 2 / 12),  # twice a year
        ("rate(12 hours)", 730 / 12),
        ("rate(1 day)", 730 / 24),
    ],
)
def test_runs_per_month_of_a_schedule(expression: str, runs: float) -> None:
    assert runs_per_month(expression, 730) == pytest.approx(runs, rel=1e-3)


def test_unmodelled_cron_fields_are_not_guessed() -> None:
    assert runs_per_month("cron(0 3 L * ? *)", 730) is None
    assert runs_per_month("cron(0 3 ? * 2#1 *)", 730) is None


def _task(family: str = "mlflow-dev-maintenance", cpu: str = "1024", memory: str = "2048") -> R:
    return R(
        "aws:ecs/taskDefinition:TaskDefinition",
        "task",
        {"family": family, "cpu": cpu, "memory": memory, "runtimePlatform": {"cpuArchitecture": "ARM64"}},
    )


def _schedule(expression: str) -> R:
    arn = "arn:aws:ecs:us-east-1:123456789012:task-definition/mlflow-dev-maintenance:3"
    return R(
        "aws:scheduler/schedule:Schedule",
        "schedule",
        {
            "scheduleExpression": expression,
            "target": {"ecsParameters": {"taskDefinitionArn": arn, "taskCount": 1}},
        },
    )


def test_a_scheduled_task_is_priced_per_run_at_the_assumed_length() -> None:
    result = estimate([_task(), _schedule("rate(1 hour)")], "us-east-1", TABLE)
    (item,) = result.items
    # (1 vCPU x 0.03238 + 2 GB x 0.00356) per hour x 730 runs x 15/60 h
    assert item.monthly_usd == 7.21
    assert "730.0 run(s)/month x 15 min" in item.description
    assert any("15 minutes per run (assumed)" in note for note in result.notes)


def test_a_weekly_maintenance_task_is_listed_though_negligible() -> None:
    result = estimate([_task(cpu="512", memory="1024"), _schedule("cron(0 3 ? * SUN *)")], "us-east-1", TABLE)
    (item,) = result.items
    assert item.monthly_usd == 0.02  # (0.5 x 0.03238 + 1 x 0.00356) x 4.35 x 0.25
    assert item.type == "aws:scheduler/schedule:Schedule"


def test_an_unpriceable_schedule_is_noted() -> None:
    result = estimate([_task(), _schedule("cron(0 3 L * ? *)")], "us-east-1", TABLE)
    assert result.items == ()
    assert result.notes == ("schedule schedule (cron(0 3 L * ? *)): its task is not priced",)


def test_the_on_demand_lock_table_is_a_usage_charge() -> None:
    assert not [u for u in estimate([], "us-east-1", TABLE).usage if "DynamoDB" in u.description]
    table = R("aws:dynamodb/table:Table", "locks", {"billingMode": "PAY_PER_REQUEST"})
    result = estimate([table], "eu-west-1", TABLE)
    assert result.items == ()  # nothing around the clock
    usage = {u.description: (u.unit_price_usd, u.unit) for u in result.usage}
    assert usage["DynamoDB on-demand writes (lock table)"] == (0.7068, "million WRU")
    assert usage["DynamoDB on-demand reads (lock table)"] == (0.1414, "million RRU")


def test_every_stack_lists_its_maintenance_schedule_and_lock_table() -> None:
    graph = run_program("prod")
    result = estimate(graph.resources, "us-east-1", TABLE)
    scheduled = [i for i in result.items if i.type == "aws:scheduler/schedule:Schedule"]
    assert [i.resource for i in scheduled] == ["mlflow-prod-operations-schedule"]
    assert 0 < scheduled[0].monthly_usd < 1
    assert any(u.description.startswith("DynamoDB on-demand writes") for u in result.usage)
