"""tenancy.mode validation: what a platform engineer gets wrong is refused before anything is created,
with one message naming the setting and the fix; and the offline preview's StackReference."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from infra.settings import SettingsError, build_settings
from infra.settings.tenancy import (
    DERIVED_PRIORITY_FLOOR,
    MAX_RULE_PRIORITY,
    derived_listener_priority,
)
from preview.offline import load_stack_config, run_program

PLATFORM = "acme/mlflow-stack/platform-prod"


def _raw(stack: str) -> dict[str, Any]:
    return {
        k.split(":", 1)[1]: v for k, v in load_stack_config(stack).items() if k.startswith("mlflow-stack:")
    }


def _problems(stack: str, raw: dict[str, Any]) -> list[str]:
    with pytest.raises(SettingsError) as caught:
        build_settings(stack, "us-east-1", raw)
    return caught.value.problems


def test_the_shipped_platform_and_team_stacks_validate() -> None:
    assert build_settings("platform-prod", "us-east-1", _raw("platform-prod")).mode == "platform"
    team = build_settings("recsys-prod", "us-east-1", _raw("recsys-prod"))
    assert (team.mode, team.tenancy.platform_stack, team.waf_enabled) == ("team", PLATFORM, False)


def test_default_is_standalone_for_every_existing_stack() -> None:
    for stack in ("dev", "staging", "prod", "search-prod"):
        assert build_settings(stack, load_stack_config(stack)["aws:region"], _raw(stack)).mode == "standalone"


def test_team_stack_without_platform_reference_names_the_setting_and_the_fix() -> None:
    raw = _raw("recsys-prod")
    raw["tenancy"] = {"mode": "team"}
    (problem,) = _problems("recsys-prod", raw)
    assert problem.startswith("mlflow-stack:tenancy.platformStack: a team stack needs the platform stack")
    assert "set tenancy.platformStack: <org>/mlflow-stack/platform-<env>" in problem


@pytest.mark.parametrize(
    ("section", "value"),
    [
        ("server", {"maxReplicas": 4}),
        ("database", {"instanceClass": "db.r7g.large"}),
        ("artifacts", {"prefix": "x"}),
    ],
)
def test_platform_stack_refuses_server_settings(section: str, value: dict[str, Any]) -> None:
    raw = {**_raw("platform-prod"), section: value}
    (problem,) = _problems("platform-prod", raw)
    assert problem.startswith(f"mlflow-stack:{section}: a platform stack runs no MLflow server")
    assert "move it to a team stack" in problem


@pytest.mark.parametrize("section", ["network", "loadBalancer"])
def test_team_stack_refuses_the_platforms_sections(section: str) -> None:
    raw = {**_raw("recsys-prod"), section: _raw("platform-prod")[section]}
    (problem,) = _problems("recsys-prod", raw)
    assert problem.startswith(f"mlflow-stack:{section}: is the platform stack's")


def test_team_stack_refuses_a_platform_of_another_environment() -> None:
    raw = {
        **_raw("recsys-prod"),
        "tenancy": {"mode": "team", "platformStack": "acme/mlflow-stack/platform-dev"},
    }
    (problem,) = _problems("recsys-prod", raw)
    assert "platform-dev is a dev platform and this is a prod team stack" in problem


def test_team_host_must_be_its_name_under_the_platform_domain() -> None:
    raw = {**_raw("recsys-prod"), "domain": {"name": "mlflow.recsys.example.com"}}
    (problem,) = _problems("recsys-prod", raw)
    assert problem.startswith("mlflow-stack:domain.name: 'mlflow.recsys.example.com' is not <team>.<platform")


def test_team_stack_refuses_its_own_certificate() -> None:
    raw = {**_raw("recsys-prod"), "domain": {"name": "recsys.mlflow.example.com", "hostedZoneId": "Z0451727"}}
    assert any(
        p.startswith("mlflow-stack:domain.hostedZoneId: a team's host is covered")
        for p in _problems("recsys-prod", raw)
    )


def test_team_settings_on_a_standalone_stack_are_refused() -> None:
    raw = {**_raw("search-prod"), "tenancy": {"listenerPriority": 12}}
    problems = _problems("search-prod", raw)
    assert any(
        p.startswith("mlflow-stack:tenancy.listenerPriority: is a team stack's setting") for p in problems
    )


def test_a_team_stack_on_kubernetes_is_refused_for_now() -> None:
    raw = {**_raw("recsys-prod"), "compute": {"backend": "kubernetes"}}
    assert any(
        p.startswith("mlflow-stack:compute.backend: team stacks run on the platform")
        for p in _problems("recsys-prod", raw)
    )


@pytest.mark.parametrize("priority", [0, MAX_RULE_PRIORITY + 1])
def test_listener_priority_outside_what_alb_accepts_is_refused(priority: int) -> None:
    """CreateRule Priority: 1-50000 (Elastic Load Balancing API Reference, API_CreateRule)."""
    raw = {
        **_raw("recsys-prod"),
        "tenancy": {"mode": "team", "platformStack": PLATFORM, "listenerPriority": priority},
    }
    (problem,) = _problems("recsys-prod", raw)
    assert problem.startswith("mlflow-stack:tenancy.listenerPriority:")


def test_derived_priorities_are_stable_in_range_and_spread() -> None:
    names = [f"team{i}" for i in range(200)]
    priorities = [derived_listener_priority(name) for name in names]
    assert priorities == [derived_listener_priority(name) for name in names]
    assert all(DERIVED_PRIORITY_FLOOR <= p <= MAX_RULE_PRIORITY for p in priorities)
    assert len(set(priorities)) >= 195


def test_explicit_listener_priority_reaches_the_rules() -> None:
    graph = run_program(
        "recsys-prod",
        config_overrides={"tenancy": {"listenerPriority": 77}},
    )
    assert graph.error is None
    assert {r.get("priority") for r in graph.of_type("aws:lb/listenerRule:ListenerRule")} == {77}


def test_preview_of_a_team_without_its_platform_file_says_what_is_missing(tmp_path: Any) -> None:
    config = load_stack_config("recsys-prod")
    (tmp_path / "Pulumi.recsys-prod.yaml").write_text(yaml.safe_dump({"config": config}))
    with pytest.raises(FileNotFoundError) as caught:
        run_program("recsys-prod", stack_dir=tmp_path)
    message = str(caught.value)
    assert "tenancy.platformStack is acme/mlflow-stack/platform-prod" in message
    assert "Pulumi.platform-prod.yaml" in message


def test_team_domain_outside_the_platforms_wildcard_fails_the_preview() -> None:
    """Settings check the first label; the platform's domain is only known from its outputs."""
    with pytest.raises(Exception, match=r"wildcard certificate is \*\.mlflow\.example\.com"):
        run_program("recsys-prod", config_overrides={"domain": {"name": "recsys.other.example.com"}})
