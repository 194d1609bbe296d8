"""Settings: presets, overrides, per-team stacks and the one-message validation of bad config."""

from __future__ import annotations

from typing import Any

import pytest

from infra.settings import (
    AUTH_LISTENER_CONNECTIONS_PER_WORKER,
    ENGINES_PER_WORKER,
    MAIN_PROCESS_CONNECTIONS_PER_REPLICA,
    SECTION_MODELS,
    Settings,
    SettingsError,
    build_settings,
    parse_stack_name,
)
from preview.offline import run_program

DOMAIN = {"name": "mlflow.dev.example.com", "hostedZoneId": "Z04517273RN5WZ0CTKS7E"}
CERTIFICATE_ID = "5f1c2a9e-7b3d-4c8e-9a61-2e4f8d0b7c35"
BASE: dict[str, Any] = {"owner": "ml-platform@example.com", "costCenter": "CC-4100", "domain": DOMAIN}


def settings(stack: str = "dev", region: str = "us-east-1", **raw: Any) -> Settings:
    return build_settings(stack, region, {**BASE, **raw})


def problems(stack: str = "dev", region: str | None = "us-east-1", **raw: Any) -> SettingsError:
    with pytest.raises(SettingsError) as caught:
        build_settings(stack, region, {**BASE, **raw})
    return caught.value


@pytest.mark.parametrize(
    ("stack", "instance_class", "multi_az", "backups", "nat", "max_replicas", "deletion_protection"),
    [
        ("dev", "db.t4g.micro", False, 7, "single", 2, False),
        ("staging", "db.t4g.small", False, 7, "single", 4, False),
        ("prod", "db.m7g.large", True, 14, "per_az", 6, True),
    ],
)
def test_environment_presets(
    stack, instance_class, multi_az, backups, nat, max_replicas, deletion_protection
):
    loaded = settings(stack)
    assert loaded.environment == stack
    assert loaded.database.instance_class == instance_class
    assert loaded.database.multi_az is multi_az
    assert loaded.database.backup_retention_days == backups
    assert loaded.database.deletion_protection is deletion_protection
    assert loaded.network.nat_gateways == nat
    assert loaded.server.max_replicas == max_replicas


def test_prod_preset_is_safer_than_dev():
    dev, prod = settings("dev"), settings("prod")
    assert prod.database.final_snapshot and not dev.database.final_snapshot
    assert prod.network.flow_logs and not dev.network.flow_logs
    assert dev.artifacts.force_destroy and not prod.artifacts.force_destroy
    assert prod.artifacts.noncurrent_expire_days > dev.artifacts.noncurrent_expire_days
    assert prod.server.log_retention_days > dev.server.log_retention_days
    assert prod.load_balancer.deletion_protection and prod.load_balancer.access_logs


def test_any_key_overrides_the_preset_and_snake_case_is_accepted():
    loaded = settings(
        "prod",
        database={"instanceClass": "db.r7g.xlarge", "backup_retention_days": 21},
        network={"natGateways": "single"},
    )
    assert loaded.database.instance_class == "db.r7g.xlarge"
    assert loaded.database.backup_retention_days == 21
    assert loaded.database.multi_az is True  # untouched keys keep the preset
    assert loaded.network.nat_gateways == "single"


def test_per_team_stack_is_the_same_model():
    team = settings("search-prod")
    plain = settings("prod")
    assert type(team) is type(plain) is Settings
    assert (team.team, team.environment, team.name_prefix) == ("search", "prod", "mlflow-search-prod")
    assert (plain.team, plain.name_prefix) == (None, "mlflow-prod")
    assert team.database == plain.database  # same preset, same defaults
    assert team.default_tags["team"] == "search"
    assert team.log_group_name == "/mlflow-stack/search-prod/server"


@pytest.mark.parametrize(
    ("stack", "expected"),
    [("dev", (None, "dev")), ("search-prod", ("search", "prod")), ("ml-ops-staging", ("ml-ops", "staging"))],
)
def test_stack_name_parsing(stack, expected):
    assert parse_stack_name(stack) == expected


def test_required_tags_are_always_present():
    tags = settings("dev", tags={"product": "ranking"}).default_tags
    assert {"team", "environment", "owner", "cost-center"} <= set(tags)
    assert tags["product"] == "ranking"
    assert tags["owner"] == "ml-platform@example.com" and tags["cost-center"] == "CC-4100"


def test_max_connections_follows_the_rds_formula():
    # DBInstanceClassMemory / 9531392 with the class's memory in bytes.
    assert settings("dev").database.max_connections == (1 * 1024**3) // 9531392 == 112
    assert settings("prod").database.max_connections == (8 * 1024**3) // 9531392 == 901


# --- every invalid case fails with one readable message naming the key -----------------------------


def test_bad_team_name():
    error = problems("Search_Team-dev")
    assert "mlflow-stack:team" in str(error)
    assert "'Search_Team'" in str(error)
    assert "lowercase letters, digits and single hyphens" in str(error)


def test_team_name_too_long_for_load_balancer_names():
    error = problems("recommendations-ml-staging")
    assert "mlflow-stack:team" in str(error) and "32" in str(error)
    assert "use a team name of at most 13 characters" in str(error)
    settings("abcdefghijklm-staging")  # exactly 13 fits
    settings("recsys-staging")  # a short team name fits


def test_prod_without_multi_az_is_refused():
    error = problems("prod", database={"multiAz": False})
    assert "mlflow-stack:database.multiAz: prod requires Multi-AZ" in str(error)
    assert "overrides" in str(error)


def test_prod_guards_all_reported_together():
    error = problems(
        "prod", database={"multiAz": False, "deletionProtection": False, "backupRetentionDays": 3}
    )
    text = str(error)
    for key in ("database.multiAz", "database.deletionProtection", "database.backupRetentionDays"):
        assert f"mlflow-stack:{key}" in text
    assert len(error.problems) == 3


def test_prod_guard_waived_only_with_a_reason():
    waived = settings(
        "search-prod",
        database={"multiAz": False},
        overrides={"database.multiAz": "sandbox registry, rebuilt from the feature store in under an hour"},
    )
    assert waived.database.multi_az is False
    error = problems("search-prod", database={"multiAz": False}, overrides={"database.multiAz": "ok"})
    assert "mlflow-stack:overrides.database.multiAz: needs a reason" in str(error)
    error = problems("prod", overrides={"database.instanceClass": "because we want to"})
    assert "mlflow-stack:overrides.database.instanceClass: is not a guard that can be waived" in str(error)


def test_connection_budget_exceeded():
    error = problems("dev", server={"maxReplicas": 10, "workers": 4, "dbPoolSize": 5, "dbMaxOverflow": 5})
    text = str(error)
    assert "mlflow-stack:server.maxReplicas" in text
    per_worker = ENGINES_PER_WORKER * (5 + 5) + AUTH_LISTENER_CONNECTIONS_PER_WORKER
    used = 10 * (4 * per_worker + MAIN_PROCESS_CONNECTIONS_PER_REPLICA)
    assert f"open {used} PostgreSQL connections" in text
    assert "over 80% of db.t4g.micro's max_connections 112 (89)" in text
    assert "larger database.instanceClass" in text
    # The same server on a big enough instance passes.
    settings(
        "dev",
        server={"maxReplicas": 10, "workers": 4, "dbPoolSize": 5, "dbMaxOverflow": 5},
        database={"instanceClass": "db.r7g.xlarge"},
    )


def test_connection_budget_boundary_is_80_percent():
    # db.t4g.small: 225 connections, budget 180. 2 replicas x (2 workers x (3 engines x 14 + 1
    # listener) + 4) = 180 fits; one more overflow connection per engine (2 x (2 x (3 x 15 + 1) + 4)
    # = 192) does not.
    fits = {"maxReplicas": 2, "workers": 2, "dbPoolSize": 7, "dbMaxOverflow": 7}
    assert settings("staging", server=fits).max_db_connections_used == 180
    problems("staging", server={**fits, "dbMaxOverflow": 8})


def test_unknown_keys_top_level_and_nested():
    error = problems("dev", databse={"multiAz": True}, database={"multiAZ": True})
    text = str(error)
    assert "mlflow-stack:databse: unknown key" in text
    assert "mlflow-stack:database.multiAZ: unknown key" in text
    assert "multiAz" in text  # the fix lists the valid spelling


def test_wrong_types():
    error = problems("dev", server={"minReplicas": "two"}, database={"multiAz": "yes"}, tags=["a"])
    text = str(error)
    assert "mlflow-stack:server.minReplicas: Input should be a valid integer (got 'two')" in text
    assert "use a whole number" in text
    assert "mlflow-stack:database.multiAz" in text and "use true or false" in text
    assert "mlflow-stack:tags: must map strings to strings" in text


def test_every_problem_in_one_message():
    error = problems(
        "Bad_Team-prod",
        region=None,
        owner="",
        server={"cpu": 300, "keepaliveSeconds": 30},
        loadBalancer={"idleTimeoutSeconds": 60},
        database={"multiAz": False},
        artifacts={"archiveAfterDays": 100},
        surprise=1,
    )
    text = str(error)
    assert "\n  - aws:region: is not set" in text
    for key in (
        "team",
        "owner",
        "server.cpu",
        "server.keepaliveSeconds",
        "database.multiAz",
        "artifacts.archiveAfterDays",
        "surprise",
    ):
        assert f"mlflow-stack:{key}" in text, key
    assert text.count("\n  - ") == len(error.problems) >= 8
    assert "nothing was created" in text


def test_fargate_size_and_replica_range():
    text = str(problems("dev", server={"cpu": 1024, "memory": 1024, "minReplicas": 3, "maxReplicas": 2}))
    assert "mlflow-stack:server.memory: 1024 MiB is not valid with cpu 1024" in text
    assert "mlflow-stack:server.minReplicas: 3 is above server.maxReplicas 2" in text


def test_keepalive_must_outlive_the_load_balancer_idle_timeout():
    text = str(problems("dev", server={"keepaliveSeconds": 60}))
    assert "mlflow-stack:server.keepaliveSeconds" in text and "idleTimeoutSeconds" in text


def test_domain_needs_a_certificate_source_in_the_stack_region():
    text = str(problems("dev", domain={"name": "mlflow.dev.example.com", "createAliasRecord": False}))
    assert "mlflow-stack:domain.certificateArn: neither certificateArn nor hostedZoneId" in text
    text = str(
        problems(
            "dev",
            domain={
                "name": "mlflow.dev.example.com",
                "certificateArn": f"arn:aws:acm:eu-west-1:123456789012:certificate/{CERTIFICATE_ID}",
                "createAliasRecord": False,
            },
        )
    )
    assert "certificate is in eu-west-1, the stack in us-east-1" in text
    assert "mlflow-stack:domain.name" in str(problems("dev", domain={"name": "MLflow_Dev", **_zone()}))


def _zone() -> dict[str, str]:
    return {"hostedZoneId": DOMAIN["hostedZoneId"]}


def test_existing_vpc_needs_its_subnets():
    text = str(
        problems(
            "dev",
            network={
                "existingVpcId": "vpc-0a1b2c3d4e5f67890",
                "existingPrivateSubnetIds": ["subnet-01a2b3c4d5e6f7081"],
            },
        )
    )
    assert "mlflow-stack:network.existingPrivateSubnetIds" in text
    assert "mlflow-stack:network.existingPublicSubnetIds" in text
    assert "mlflow-stack:network.natGateways" in str(problems("dev", network={"natGateways": "none"}))


def test_lifecycle_ages_and_log_retention():
    assert "mlflow-stack:artifacts.iaAfterDays" in str(problems("dev", artifacts={"iaAfterDays": 10}))
    assert "mlflow-stack:server.logRetentionDays" in str(problems("dev", server={"logRetentionDays": 10}))


def test_stack_name_must_name_an_environment():
    text = str(problems("sandbox"))
    assert "mlflow-stack:environment: stack name 'sandbox' is neither <env> nor <team>-<env>" in text
    text = str(problems("search-prod", environment="dev"))
    assert "mlflow-stack:environment: 'dev' contradicts the stack name 'search-prod'" in text


def test_every_section_is_documented():
    for key, model in SECTION_MODELS.items():
        for name, info in model.model_fields.items():
            assert info.description, f"{key}.{name} has no description"


def test_invalid_stack_registers_nothing():
    graph = run_program("dev", config_overrides={"team": "Bad_Team", "server": {"maxReplicas": 50}})
    assert graph.error is not None
    assert "mlflow-stack:team" in str(graph.error) and "mlflow-stack:server.maxReplicas" in str(graph.error)
    assert graph.resources == []
    assert graph.outputs == {}


def test_yaml_keys_are_readable_camel_case():
    assert settings(alarms={"http5xxPercent": 3}).alarms.http_5xx_percent == 3
    text = str(problems("dev", alarms={"http5XxPercent": 3}))
    assert "mlflow-stack:alarms.http5XxPercent: unknown key" in text and "http5xxPercent" in text


def test_extra_tags_cannot_shadow_the_required_ones():
    text = str(problems("dev", tags={"owner": "someone-else", "aws:created-by": "me"}))
    assert "mlflow-stack:tags.owner: is set by the stack itself" in text and "mlflow-stack:owner" in text
    assert "mlflow-stack:tags.aws:created-by: is not a valid AWS tag" in text


def test_artifact_client_access_is_proxied_unless_chosen():
    assert settings("prod").artifacts.client_access == "proxied"
    assert settings("dev", artifacts={"clientAccess": "presigned"}).artifacts.client_access == "presigned"
    text = str(problems("dev", artifacts={"clientAccess": "direct"}))
    assert "mlflow-stack:artifacts.clientAccess" in text and "'proxied' or 'presigned'" in text
