"""The smoke report an operator reads (table) and CI parses (JSON), and how checks are sequenced."""

from __future__ import annotations

import json

import pytest

from lifecycle.credentials import ServerTarget
from lifecycle.smoke import SOFT_DELETE_NOTE, describe_error, run_smoke
from lifecycle.smoke_checks import Check, CheckFailed, SmokeContext
from lifecycle.smoke_report import (
    EXIT_FAILED,
    EXIT_OK,
    CheckResult,
    SmokeReport,
    format_json,
    format_table,
)

SENTINEL_PASSWORD = "sentinel-Pa55word-report"  # noqa: S105 - a marker, not a credential


def _report(*rows: CheckResult, notes: tuple[str, ...] = ()) -> SmokeReport:
    report = SmokeReport(url="https://mlflow.example.com", source="stack dev", smoke_id="smoke-0123456789ab")
    for row in rows:
        report.add(row)
    report.notes.extend(notes)
    report.total_seconds = 4.5
    return report


def test_table_lists_every_check_and_cleanup_step_with_seconds_and_a_verdict() -> None:
    report = _report(
        CheckResult("health", "PASS", 0.012, "GET /health -> 200 OK"),
        CheckResult("tracking", "PASS", 0.5, "experiment /smoke/smoke-0123456789ab/run"),
        CheckResult("experiment", "PASS", 0.03, "deleted (soft delete)", phase="cleanup"),
        notes=(SOFT_DELETE_NOTE,),
    )
    lines = format_table(report).splitlines()
    assert (
        lines[0]
        == "mlflow-stack smoke: https://mlflow.example.com (stack dev), objects named smoke-0123456789ab"
    )
    assert lines[1].split() == ["CHECK", "RESULT", "SECONDS", "DETAIL"]
    assert lines[2].split(maxsplit=3) == ["health", "PASS", "0.01", "GET /health -> 200 OK"]
    assert lines[4].startswith("cleanup: experiment")
    assert lines[5].split(maxsplit=3) == [
        "TOTAL",
        "PASS",
        "4.50",
        "2 passed, 0 failed, 0 skipped; cleanup 1/1 ok",
    ]
    assert lines[6] == f"note: {SOFT_DELETE_NOTE}"
    # Columns line up: every result sits in the same column.
    assert len({line.index(" PASS ") for line in lines[2:6]}) == 1
    assert report.exit_code == EXIT_OK


def test_a_failed_check_fails_the_run() -> None:
    report = _report(
        CheckResult("health", "PASS", 0.01, "ok"),
        CheckResult("auth: admin login", "FAIL", 0.2, "the server rejected the password"),
        CheckResult("tracking", "SKIP", 0.0, "skipped: needs auth: admin login to pass"),
    )
    assert report.exit_code == EXIT_FAILED
    assert "TOTAL                        FAIL" in format_table(report)
    assert "1 passed, 1 failed, 1 skipped" in format_table(report)


def test_a_failed_cleanup_step_fails_the_run_even_when_every_check_passed() -> None:
    report = _report(
        CheckResult("health", "PASS", 0.01, "ok"),
        CheckResult("temporary user", "FAIL", 0.02, "HTTP 500", phase="cleanup"),
    )
    assert report.exit_code == EXIT_FAILED
    assert "cleanup 0/1 ok" in format_table(report)


def test_a_report_where_nothing_passed_is_not_a_success() -> None:
    assert _report(CheckResult("tracking", "SKIP", 0.0, "skipped")).exit_code == EXIT_FAILED


def test_multi_line_details_stay_under_their_row() -> None:
    table = format_table(_report(CheckResult("registry", "FAIL", 1.0, "first line\nsecond line")))
    first, second = next(i for i, line in enumerate(table.splitlines()) if "first line" in line), None
    second = table.splitlines()[first + 1]
    assert second.strip() == "second line"
    assert second.index("second") == table.splitlines()[first].index("first")


def test_json_report_is_machine_readable() -> None:
    report = _report(
        CheckResult("health", "PASS", 0.0123456, "ok"),
        CheckResult("user", "PASS", 0.5, "deleted", phase="cleanup"),
        notes=("n",),
    )
    data = json.loads(format_json(report))
    assert data == {
        "url": "https://mlflow.example.com",
        "source": "stack dev",
        "smoke_id": "smoke-0123456789ab",
        "ok": True,
        "exit_code": 0,
        "total_seconds": 4.5,
        "kept": False,
        "checks": [{"name": "health", "status": "PASS", "seconds": 0.012, "detail": "ok", "phase": "check"}],
        "cleanup": [
            {"name": "user", "status": "PASS", "seconds": 0.5, "detail": "deleted", "phase": "cleanup"}
        ],
        "notes": ["n"],
    }


def test_unexpected_exceptions_keep_their_type_and_long_details_are_cut() -> None:
    assert describe_error(KeyError("model_version")) == "KeyError: 'model_version'"
    assert describe_error(CheckFailed("plain")) == "plain"
    assert len(describe_error(CheckFailed("x" * 5000))) == 1500


# --- sequencing (no server: these checks never touch the network) -------------------------------


def _target() -> ServerTarget:
    return ServerTarget("https://127.0.0.1:9", "admin", SENTINEL_PASSWORD, source="test")


def test_a_check_whose_prerequisite_failed_is_skipped_and_others_still_run() -> None:
    ran: list[str] = []

    def ok(name: str) -> Check:
        return Check(name, lambda ctx: ran.append(name) or f"{name} fine")

    def broken(ctx: SmokeContext) -> str:
        ran.append("login")
        raise CheckFailed("rejected")

    checks = [ok("health"), Check("login", broken), Check("tracking", lambda ctx: "x", requires=("login",))]
    checks.append(ok("independent"))
    seen: list[str] = []
    report = run_smoke(
        _target(), checks=checks, smoke_id="smoke-test", on_result=lambda r: seen.append(r.name)
    )

    assert ran == ["health", "login", "independent"]
    assert [(r.name, r.status) for r in report.checks] == [
        ("health", "PASS"),
        ("login", "FAIL"),
        ("tracking", "SKIP"),
        ("independent", "PASS"),
    ]
    assert report.checks[2].detail == "skipped: needs login to pass"
    assert seen == ["health", "login", "tracking", "independent"]
    # Nothing was created, so there is nothing to clean and no soft-delete note.
    assert report.cleanup == [] and report.notes == []
    assert report.exit_code == EXIT_FAILED


def test_keep_reports_what_was_left_behind_instead_of_cleaning() -> None:
    def creates(ctx: SmokeContext) -> str:
        ctx.attempted.update({"experiment", "user"})
        ctx.experiment_id = "42"
        return "created"

    report = run_smoke(_target(), checks=[Check("tracking", creates)], smoke_id="smoke-kept", keep=True)
    assert report.cleanup == []
    assert report.notes == [
        "kept (--keep): experiment /smoke/smoke-kept/run (id 42) with its run and artifacts",
        "kept (--keep): user smoke-kept (its password was random and is not shown)",
    ]
    assert "cleanup skipped (--keep)" in format_table(report)
    assert SENTINEL_PASSWORD not in format_table(report) + format_json(report)


def test_an_interrupted_run_still_reaches_cleanup() -> None:
    def interrupted(ctx: SmokeContext) -> str:
        ctx.attempted.add("user")
        raise KeyboardInterrupt

    cleaned: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        run_smoke(
            _target(),
            checks=[Check("isolation", interrupted)],
            smoke_id="smoke-int",
            retries=0,
            on_result=lambda r: cleaned.append(f"{r.phase}:{r.name}:{r.status}"),
        )
    # The server at port 9 is unreachable, so the cleanup step fails — but it was attempted.
    assert cleaned == ["cleanup:temporary user:FAIL"]
