"""The `maintenance` settings: presets, and every bad value reported by load_settings with the rest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from infra.settings import MaintenanceSettings, Settings, SettingsError, build_settings

DOMAIN = {"name": "mlflow.dev.example.com", "hostedZoneId": "Z04517273RN5WZ0CTKS7E"}
BASE: dict[str, Any] = {"owner": "ml-platform@example.com", "costCenter": "CC-4100", "domain": DOMAIN}


def settings(stack: str = "dev", **raw: Any) -> Settings:
    return build_settings(stack, "us-east-1", {**BASE, **raw})


def problems(stack: str = "dev", **raw: Any) -> list[str]:
    with pytest.raises(SettingsError) as caught:
        build_settings(stack, "us-east-1", {**BASE, **raw})
    return caught.value.problems


@pytest.mark.parametrize(("stack", "cleanup_days"), [("dev", 30), ("staging", 90), ("prod", 180)])
def test_presets_turn_maintenance_on_with_the_environment_retention(stack: str, cleanup_days: int) -> None:
    maintenance = settings(stack).maintenance
    assert maintenance.enabled is True
    assert maintenance.cleanup_older_than_days == cleanup_days
    assert maintenance.schedule == "cron(0 3 ? * SUN *)"
    assert maintenance.timezone == "UTC"
    assert (maintenance.reap_stuck_after_hours, maintenance.gc_older_than_days) == (24, 30)
    assert maintenance.cleanup_experiment_pattern == "*"
    assert (maintenance.cpu, maintenance.memory) == (512, 1024)


def test_stack_file_values_win_over_the_preset() -> None:
    maintenance = settings(
        "prod",
        maintenance={
            "schedule": "rate(1 day)",
            "timezone": "Europe/Berlin",
            "cleanupOlderThanDays": 365,
            "cleanupExperimentPattern": "sandbox-*",
            "gcOlderThanDays": 60,
            "reapStuckAfterHours": 48,
            "cpu": 1024,
            "memory": 2048,
        },
    ).maintenance
    assert maintenance == MaintenanceSettings(
        schedule="rate(1 day)",
        timezone="Europe/Berlin",
        cleanup_older_than_days=365,
        cleanup_experiment_pattern="sandbox-*",
        gc_older_than_days=60,
        reap_stuck_after_hours=48,
        cpu=1024,
        memory=2048,
    )


def test_every_bad_value_is_reported_with_the_other_problems() -> None:
    found = problems(
        maintenance={
            "schedule": "every sunday",
            "timezone": "Mars/Olympus",
            "reapStuckAfterHours": 0,
            "cleanupOlderThanDays": 0,
            "gcOlderThanDays": 0,
            "cleanupExperimentPattern": "",
            "enabled": "yes",
        },
        server={"maxReplicas": 0},
    )
    keys = [problem.split(":", 2)[1] for problem in found]
    assert keys == [
        "server.maxReplicas",
        "maintenance.enabled",
        "maintenance.schedule",
        "maintenance.timezone",
        "maintenance.reapStuckAfterHours",
        "maintenance.cleanupOlderThanDays",
        "maintenance.cleanupExperimentPattern",
        "maintenance.gcOlderThanDays",
    ]
    # Each problem says what is wrong and how to fix it.
    assert all(" — " in problem for problem in found)
    schedule = next(p for p in found if "maintenance.schedule" in p)
    assert "cron(0 3 ? * SUN *)" in schedule and "'every sunday'" in schedule


@pytest.mark.parametrize(
    "expression",
    ["cron(0 3 ? * SUN *)", "cron(30 1 1 * ? *)", "rate(12 hours)", "rate(1 day)", "rate(5 minutes)"],
)
def test_recurring_scheduler_expressions_are_accepted(expression: str) -> None:
    assert settings(maintenance={"schedule": expression}).maintenance.schedule == expression


@pytest.mark.parametrize(
    "expression",
    ["at(2026-12-01T03:00:00)", "cron(0 3 * *)", "rate(0 days)", "rate(1 week)", "0 3 * * 0", ""],
)
def test_one_off_or_malformed_expressions_are_refused(expression: str) -> None:
    (problem,) = problems(maintenance={"schedule": expression})
    assert problem.startswith("mlflow-stack:maintenance.schedule:")


def test_task_size_must_be_a_fargate_pair() -> None:
    (problem,) = problems(maintenance={"cpu": 512, "memory": 512})
    assert problem == (
        "mlflow-stack:maintenance.memory: 512 MiB is not valid with cpu 512 — "
        "use 1024-4096 MiB in steps of 1024"
    )
    (problem,) = problems(maintenance={"cpu": 300})
    assert problem.startswith("mlflow-stack:maintenance.cpu: 300 is not a Fargate CPU size")
    # A disabled section creates no task, so its size does not matter.
    assert settings(maintenance={"enabled": False, "cpu": 300}).maintenance.enabled is False


def test_unknown_key_names_the_valid_ones() -> None:
    (problem,) = problems(maintenance={"scheduleExpression": "rate(1 day)"})
    assert problem.startswith("mlflow-stack:maintenance.scheduleExpression: unknown key")
    assert "schedule" in problem and "gcOlderThanDays" in problem


RESTRICTED = {"allowedCidrs": ["203.0.113.0/24"]}
EXISTING_VPC = {
    "existingVpcId": "vpc-0a1b2c3d4e5f67890",
    "existingPublicSubnetIds": ["subnet-0a1b2c3d4e5f67801", "subnet-0a1b2c3d4e5f67802"],
    "existingPrivateSubnetIds": ["subnet-0a1b2c3d4e5f67803", "subnet-0a1b2c3d4e5f67804"],
}


def test_an_existing_vpc_behind_a_cidr_restricted_public_load_balancer_is_refused() -> None:
    # The task's packets reach a public ALB from the existing NAT's IPs, which the stack cannot
    # know and the allow-list may drop.
    (problem,) = problems(loadBalancer=RESTRICTED, network=EXISTING_VPC)
    assert problem.startswith("mlflow-stack:maintenance.enabled: the maintenance task would reach")
    assert "203.0.113.0/24" in problem and "internetFacing: false" in problem


@pytest.mark.parametrize(
    "raw",
    [
        # The stack's own NAT gateways: the platform admits their IPs on the load balancer.
        {"loadBalancer": RESTRICTED},
        {"loadBalancer": {**RESTRICTED, "internetFacing": False}, "network": EXISTING_VPC},
        {"loadBalancer": RESTRICTED, "network": EXISTING_VPC, "maintenance": {"enabled": False}},
        {"loadBalancer": {"allowedCidrs": ["203.0.113.0/24", "0.0.0.0/0"]}, "network": EXISTING_VPC},
    ],
)
def test_the_task_can_reach_the_tracking_url(raw: dict[str, Any]) -> None:
    assert settings(**raw).stack == "dev"


@pytest.mark.parametrize("stack", ["dev", "staging", "prod", "search-prod"])
def test_the_commented_maintenance_example_in_each_stack_file_is_valid(stack: str) -> None:
    import yaml

    from preview.offline import load_stack_config

    lines = (Path(__file__).resolve().parents[2] / "stacks" / f"Pulumi.{stack}.yaml").read_text().splitlines()
    start = lines.index("  # mlflow-stack:maintenance:")
    block = ["mlflow-stack:maintenance:"]
    for line in lines[start + 1 :]:
        if not line.startswith("  #   "):
            break
        block.append(line.removeprefix("  # "))
    example = yaml.safe_load("\n".join(block))["mlflow-stack:maintenance"]
    assert example, stack
    config = load_stack_config(stack, "stacks")
    raw = {k.removeprefix("mlflow-stack:"): v for k, v in config.items() if k.startswith("mlflow-stack:")}
    loaded = build_settings(stack, config["aws:region"], {**raw, "maintenance": example})
    assert loaded.maintenance.model_dump(by_alias=True).items() >= example.items()
