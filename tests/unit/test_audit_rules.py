"""The governance rules on names, tags and ages (lifecycle/audit_rules.py), without a server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from lifecycle.audit_config import ExperimentRules, ModelRules
from lifecycle.audit_rules import (
    experiment_name_problem,
    is_default_experiment,
    missing_tag_labels,
    model_name_problems,
    model_usage,
)

NOW = datetime(2026, 6, 1, tzinfo=UTC)


def ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


# --- experiments ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["/search/ranking/training", "/vision/ocr-v2/tuning", "/fraud/cards/evaluation"]
)
def test_experiments_named_team_project_type_pass(name: str) -> None:
    assert experiment_name_problem(name, ExperimentRules()) is None


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("search/ranking/training", "does not start with '/'"),
        ("/search/ranking", "2 segment(s)"),
        ("/search/ranking/training/extra", "4 segment(s)"),
        ("/Search/ranking/training", "'Search' is not lowercase"),
        ("/search/my ranking/training", "'my ranking'"),
        ("/search//training", "project segment is empty"),
        ("/search/ranking/scratch", "type 'scratch' is not one of training"),
        ("my-notebook-experiment", "does not start with '/'"),
    ],
)
def test_experiments_outside_the_scheme_say_why(name: str, why: str) -> None:
    problem = experiment_name_problem(name, ExperimentRules())
    assert problem is not None and why in problem


def test_the_type_vocabulary_and_teams_are_configurable() -> None:
    rules = ExperimentRules(types=("train", "serve"), teams=("search",))
    assert experiment_name_problem("/search/ranking/train", rules) is None
    assert "type 'training'" in (experiment_name_problem("/search/ranking/training", rules) or "")
    assert "team 'vision'" in (experiment_name_problem("/vision/ocr/train", rules) or "")


def test_only_experiment_zero_is_the_default_experiment() -> None:
    assert is_default_experiment({"experiment_id": "0", "name": "Default"})
    assert not is_default_experiment({"experiment_id": "7", "name": "Default"})


# --- model names ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "found"),
    [
        ("xgboost", "algorithm (xgboost)"),
        ("churn-xgboost", "algorithm (xgboost)"),
        ("XGBoostChurn", "algorithm (xgboost)"),
        ("random_forest", "algorithm (random-forest)"),
        ("RandomForestClassifier", "algorithm (random-forest)"),
        ("bert-base-uncased", "algorithm (bert)"),
        ("fraud-LightGBM", "algorithm (lightgbm)"),
        ("churn-v2", "version (v2)"),
        ("churnModelV3", "version (v3)"),
        ("churn-2024", "version (2024)"),
        ("churn_20240131", "version (20240131)"),
        ("churn-final", "version (final)"),
        ("new-churn", "version (new)"),
    ],
)
def test_models_named_after_algorithms_or_versions_are_found(name: str, found: str) -> None:
    problems = model_name_problems(name, ModelRules())
    assert any(found in p for p in problems), problems


def test_a_name_with_both_says_both_and_the_widest_algorithm_match_only() -> None:
    problems = model_name_problems("lightgbm_churn_v2", ModelRules())
    assert problems == ["names an algorithm (lightgbm)", "names a version (v2)"]


@pytest.mark.parametrize(
    "name", ["churn", "search-ranking", "robert-reviews", "perf-monitor", "env2", "fraud.cards", "Forecast"]
)
def test_product_names_pass_even_when_an_algorithm_hides_inside_a_word(name: str) -> None:
    assert model_name_problems(name, ModelRules()) == []


def test_the_algorithm_and_version_lists_are_configurable() -> None:
    rules = ModelRules(algorithm_names=("forecast",), version_words=())
    assert model_name_problems("xgboost-final", rules) == []
    assert model_name_problems("demand-forecast", rules) == ["names an algorithm (forecast)"]


# --- required tags --------------------------------------------------------------------------


def test_a_run_needs_every_required_tag_and_any_key_of_a_requirement_counts() -> None:
    required = {"team": ("team",), "git commit": ("mlflow.source.git.commit", "git_commit")}
    assert missing_tag_labels({"team": "search", "mlflow.source.git.commit": "abc123"}, required) == []
    assert missing_tag_labels({"team": "search", "git_commit": "abc123"}, required) == []
    assert missing_tag_labels({"team": "search"}, required) == ["git commit"]
    # An empty value is no tag at all.
    assert missing_tag_labels({"team": " ", "git_commit": "abc"}, required) == ["team"]


# --- unused models --------------------------------------------------------------------------


def registered(
    name: str, created: datetime, versions: list[datetime], aliases: dict[str, str] | None = None
) -> dict:
    return {
        "name": name,
        "creation_timestamp": ms(created),
        "latest_versions": [
            {"version": str(i + 1), "creation_timestamp": ms(at)} for i, at in enumerate(versions)
        ],
        "aliases": [{"alias": a, "version": v} for a, v in (aliases or {}).items()],
        "tags": [],
    }


def test_a_model_is_unused_after_n_days_without_an_alias_or_a_new_version() -> None:
    old = model_usage(
        registered("m", NOW - timedelta(days=400), [NOW - timedelta(days=200), NOW - timedelta(days=91)])
    )
    assert old.newest_version == "2" and int(old.idle_days(NOW)) == 91
    assert old.is_unused(NOW, 90)
    assert not old.is_unused(NOW, 92)


def test_any_alias_makes_a_model_used_however_old() -> None:
    aliased = model_usage(
        registered("m", NOW - timedelta(days=900), [NOW - timedelta(days=800)], {"legacy": "1"})
    )
    assert not aliased.is_unused(NOW, 90)
    assert not aliased.is_unused(NOW, 0)


def test_a_model_without_versions_ages_from_its_creation() -> None:
    empty = model_usage(registered("m", NOW - timedelta(days=100), []))
    assert empty.newest_version is None and empty.is_unused(NOW, 90)
    assert "no versions" in empty.last_activity()
    fresh = model_usage(registered("m", NOW - timedelta(days=10), []))
    assert not fresh.is_unused(NOW, 90)


def test_a_recent_version_keeps_an_old_model_in_use() -> None:
    usage = model_usage(
        registered("m", NOW - timedelta(days=900), [NOW - timedelta(days=800), NOW - timedelta(days=3)])
    )
    assert not usage.is_unused(NOW, 90)
