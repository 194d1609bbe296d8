"""The audit report and `models prune` over an in-memory server (tests/unit/audit_fake_server.py):
counts, worst offenders, the CI verdict, the bounded run scan, and prune's never-an-aliased-model
re-check under the lock. Ages come from an injected clock, never from waiting."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from lifecycle.audit import run_audit
from lifecycle.audit_config import ARCHIVED_TAG, GovernanceConfig, ReportRules, RunRules
from lifecycle.models_prune import parse_days, prune
from tests.unit.audit_fake_server import FakeLock, FakeServer

NOW = datetime(2026, 6, 1, tzinfo=UTC)
GOOD_TAGS = {"team": "search", "owner": "ana", "mlflow.source.git.commit": "abc", "data_version": "v7"}


def ago(days: float) -> int:
    return int((NOW - timedelta(days=days)).timestamp() * 1000)


@pytest.fixture
def server() -> FakeServer:
    s = FakeServer()
    s.add_experiment("0", "Default")
    s.add_experiment("1", "/search/ranking/training")
    s.add_experiment("2", "ranking-experiments")
    s.add_experiment("3", "/vision/ocr/training")
    for i in range(3):
        s.add_run("1", f"good{i}", ago(1), GOOD_TAGS)
    s.add_run("1", "notag", ago(2), {"team": "search"})
    s.add_run("1", "ancient", ago(400), {})  # outside the lookback window: not scanned
    for i in range(5):
        s.add_run("3", f"bare{i}", ago(3), {"git_commit": "abc"})
    s.add_run("0", "lost", ago(1), GOOD_TAGS)
    # champion, in use
    s.add_model("search-ranking", ago(300))
    s.set_alias("search-ranking", "champion", s.add_version("search-ranking", ago(200)))
    # named after an algorithm and a version, old, no alias: unused
    s.add_model("xgboost-v2", ago(500))
    s.add_version("xgboost-v2", ago(400))
    # old but aliased (not champion): in use
    s.add_model("fraud", ago(900))
    s.set_alias("fraud", "legacy", s.add_version("fraud", ago(800)))
    # unaliased but recently retrained: in use
    s.add_model("churn", ago(900))
    s.add_version("churn", ago(5))
    return s


def by_kind(report: object, kind: str) -> dict[str, object]:
    return {f.subject: f for f in report.findings if f.kind == kind}  # type: ignore[attr-defined]


def test_every_kind_is_found_for_the_bad_objects_only(server: FakeServer) -> None:
    report = run_audit(server, GovernanceConfig(), now=NOW)  # type: ignore[arg-type]
    assert set(by_kind(report, "experiment-naming")) == {"ranking-experiments"}
    assert set(by_kind(report, "model-naming")) == {"xgboost-v2"}
    assert "algorithm (xgboost)" in by_kind(report, "model-naming")["xgboost-v2"].detail  # type: ignore[attr-defined]
    tags = by_kind(report, "runs-missing-tags")
    assert set(tags) == {"/search/ranking/training", "/vision/ocr/training"}
    assert tags["/vision/ocr/training"].count == 5  # type: ignore[attr-defined]
    assert "owner 5" in tags["/vision/ocr/training"].detail  # type: ignore[attr-defined]
    assert "git commit" not in tags["/vision/ocr/training"].detail  # git_commit counts  # type: ignore[attr-defined]
    assert tags["/search/ranking/training"].examples == ["notag"]  # type: ignore[attr-defined]
    assert set(by_kind(report, "default-experiment-used")) == {"Default"}
    assert set(by_kind(report, "no-champion")) == {"xgboost-v2", "fraud", "churn"}
    unused = by_kind(report, "unused-model")
    assert set(unused) == {"xgboost-v2"} and unused["xgboost-v2"].count == 400  # type: ignore[attr-defined]
    assert report.scanned.runs == 10  # the 400-day-old run was never fetched
    assert report.counts() == {
        "experiment-naming": 1,
        "default-experiment-used": 1,
        "model-naming": 1,
        "runs-missing-tags": 2,
        "no-champion": 3,
        "unused-model": 1,
    }


def test_worst_offenders_rank_by_count_and_stop_at_top(server: FakeServer) -> None:
    config = replace(GovernanceConfig(), report=ReportRules(top=1))
    report = run_audit(server, config, now=NOW)  # type: ignore[arg-type]
    worst = report.worst_offenders()
    assert [f.subject for f in worst["runs-missing-tags"]] == ["/vision/ocr/training"]
    assert "top 1 of 2" in "\n".join(report.lines())
    body = report.to_json()
    assert len(body["findings"]) == sum(body["counts"].values())
    assert body["worst_offenders"]["runs-missing-tags"][0]["count"] == 5


def test_the_ci_verdict_counts_findings_at_or_above_fail_on(server: FakeServer) -> None:
    def verdict(**rules: object) -> tuple[bool, int]:
        config = replace(GovernanceConfig(), report=ReportRules(**rules))  # type: ignore[arg-type]
        report = run_audit(server, config, now=NOW)  # type: ignore[arg-type]
        return report.passed, len(report.failing())

    assert verdict() == (False, 5)  # warnings: 1 + 1 + 2 + 1; the 4 infos do not count
    assert verdict(fail_on="info") == (False, 9)
    assert verdict(fail_on="error") == (True, 0)
    assert verdict(fail_on="never") == (True, 0)
    assert verdict(max_findings=5) == (True, 5)
    assert verdict(max_findings=4) == (False, 5)


def test_a_clean_server_passes(server: FakeServer) -> None:
    clean = FakeServer()
    clean.add_experiment("1", "/search/ranking/training")
    clean.add_run("1", "r", ago(1), GOOD_TAGS)
    clean.add_model("search-ranking", ago(10))
    clean.set_alias("search-ranking", "champion", clean.add_version("search-ranking", ago(9)))
    report = run_audit(clean, GovernanceConfig(), now=NOW)  # type: ignore[arg-type]
    assert report.passed and report.findings == []


def test_severity_off_silences_a_rule_and_skips_its_run_scan(server: FakeServer) -> None:
    severities = {
        **GovernanceConfig().severities,
        "runs-missing-tags": "off",
        "default-experiment-used": "off",
    }
    report = run_audit(server, replace(GovernanceConfig(), severities=severities), now=NOW)  # type: ignore[arg-type]
    assert not by_kind(report, "runs-missing-tags") and not by_kind(report, "default-experiment-used")
    assert not [r for r in server.requests if r[1] == "runs/search"]


def test_the_run_scan_is_bounded_by_the_lookback_page_size_and_cap(server: FakeServer) -> None:
    for i in range(30):
        server.add_run("3", f"more{i}", ago(2), {})
    rules = RunRules(lookback_days=30, page_size=10, max_runs_per_experiment=25)
    report = run_audit(server, replace(GovernanceConfig(), runs=rules), now=NOW)  # type: ignore[arg-type]
    searches = [r for r in server.requests if r[1] == "runs/search" and r[2]["experiment_ids"] == ["3"]]
    assert len(searches) == 3 and all(r[2]["max_results"] == 10 for r in searches)
    assert searches[0][2]["filter"] == f"attributes.start_time >= {ago(30)}"
    assert report.scanned.capped_experiments == ["/vision/ocr/training"]
    assert by_kind(report, "runs-missing-tags")["/vision/ocr/training"].count == 25  # type: ignore[attr-defined]


# --- prune ----------------------------------------------------------------------------------


def test_parse_days_takes_numbers_and_durations() -> None:
    assert parse_days("90") == 90 and parse_days("90d") == 90 and parse_days("0") == 0
    assert parse_days("2w") == 14 and parse_days("36h") == 1.5


def test_a_dry_run_lists_the_unused_models_and_writes_nothing(server: FakeServer) -> None:
    report = prune(server, older_than_days=90, now=NOW)  # type: ignore[arg-type]
    assert [c.name for c in report.candidates] == ["xgboost-v2"]
    assert report.dry_run and report.acted == [] and server.writes() == []


def test_archive_tags_only_the_unused_model_and_is_idempotent(server: FakeServer) -> None:
    locks: list[FakeLock] = []

    def lock_for(name: str) -> FakeLock:
        locks.append(FakeLock(f"model-aliases/{name}"))
        return locks[-1]

    report = prune(server, older_than_days=90, apply=True, lock_for=lock_for, by="ci", now=NOW)  # type: ignore[arg-type]
    assert report.acted == ["xgboost-v2"]
    assert [lock.lock_id for lock in locks] == ["model-aliases/xgboost-v2"] and locks[0].released == 1
    tags = server.tags("xgboost-v2")
    assert tags[ARCHIVED_TAG] == NOW.isoformat(timespec="seconds") and tags[f"{ARCHIVED_TAG}_by"] == "ci"
    assert "no alias and no new version for 90 day(s)" in tags[f"{ARCHIVED_TAG}_reason"]
    assert server.versions["xgboost-v2"]  # archiving removes nothing
    # A second run changes nothing, and the audit no longer reports the model as unused.
    again = prune(server, older_than_days=90, apply=True, lock_for=lock_for, now=NOW)  # type: ignore[arg-type]
    assert again.candidates == [] and again.already_archived == ["xgboost-v2"]
    audit = run_audit(server, GovernanceConfig(), now=NOW)  # type: ignore[arg-type]
    assert "xgboost-v2" not in by_kind(audit, "unused-model") and audit.scanned.archived_models == 1


def test_older_than_zero_still_never_touches_an_aliased_model(server: FakeServer) -> None:
    report = prune(
        server,  # type: ignore[arg-type]
        older_than_days=0,
        mode="delete",
        apply=True,
        lock_for=lambda name: FakeLock(name),
        now=NOW,
    )
    assert sorted(report.acted) == ["churn", "xgboost-v2"]
    assert set(server.models) == {"search-ranking", "fraud"}


def test_an_alias_set_between_the_scan_and_the_write_wins(server: FakeServer) -> None:
    """The race prune must lose: a promotion lands after the listing, before the delete."""

    def promote_meanwhile() -> None:
        server.set_alias("xgboost-v2", "champion", "1")

    report = prune(
        server,  # type: ignore[arg-type]
        older_than_days=90,
        mode="delete",
        apply=True,
        lock_for=lambda name: FakeLock(name, on_acquire=promote_meanwhile),
        now=NOW,
    )
    assert report.acted == [] and "champion -> v1" in report.skipped["xgboost-v2"]
    assert "xgboost-v2" in server.models and not report.incomplete


def test_a_version_registered_between_the_scan_and_the_write_wins(server: FakeServer) -> None:
    report = prune(
        server,  # type: ignore[arg-type]
        older_than_days=90,
        apply=True,
        lock_for=lambda name: FakeLock(name, on_acquire=lambda: server.add_version("xgboost-v2", ago(0))),
        now=NOW,
    )
    assert report.acted == [] and "a version was registered since the scan" in report.skipped["xgboost-v2"]
    assert ARCHIVED_TAG not in server.tags("xgboost-v2")


def test_a_model_locked_by_another_pipeline_is_skipped_and_reported(server: FakeServer) -> None:
    report = prune(
        server,  # type: ignore[arg-type]
        older_than_days=90,
        apply=True,
        lock_for=lambda name: FakeLock(name, held_by="deploy-bot"),
        now=NOW,
    )
    assert report.acted == [] and report.incomplete
    assert "deploy-bot" in report.skipped["xgboost-v2"] and server.writes() == []


def test_prune_looks_only_at_the_models_matching_the_pattern(server: FakeServer) -> None:
    report = prune(server, older_than_days=0, model_pattern="ch*", now=NOW)  # type: ignore[arg-type]
    assert report.scanned == 1 and [c.name for c in report.candidates] == ["churn"]
