"""The smoke check's report: one row per check and per cleanup step, as a table or as JSON.

Kept apart from the checks so the format (what an operator reads after `pulumi up`, what CI
parses) can be tested without a server.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Literal

Status = Literal["PASS", "FAIL", "SKIP"]
Phase = Literal["check", "cleanup"]

EXIT_OK = 0
EXIT_FAILED = 1
# Bad options or an unresolvable target: reported before anything is sent to the server.
EXIT_USAGE = 2

NAME_WIDTH = 28
STATUS_WIDTH = 6
SECONDS_WIDTH = 8


@dataclass(frozen=True)
class CheckResult:
    name: str
    status: Status
    seconds: float
    detail: str
    phase: Phase = "check"


@dataclass
class SmokeReport:
    url: str
    source: str
    smoke_id: str
    checks: list[CheckResult] = field(default_factory=list)
    cleanup: list[CheckResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    total_seconds: float = 0.0
    kept: bool = False

    def add(self, result: CheckResult) -> None:
        (self.cleanup if result.phase == "cleanup" else self.checks).append(result)

    @property
    def failures(self) -> list[CheckResult]:
        return [r for r in (*self.checks, *self.cleanup) if r.status == "FAIL"]

    @property
    def ok(self) -> bool:
        # A skipped check is never the only problem (it is skipped because another failed), but a
        # report with nothing passed must not read as success either.
        return not self.failures and any(r.status == "PASS" for r in self.checks)

    @property
    def exit_code(self) -> int:
        return EXIT_OK if self.ok else EXIT_FAILED

    def counts(self, phase: Phase = "check") -> dict[str, int]:
        rows = self.checks if phase == "check" else self.cleanup
        return {status: sum(1 for r in rows if r.status == status) for status in ("PASS", "FAIL", "SKIP")}

    def to_dict(self) -> dict[str, object]:
        return {
            "url": self.url,
            "source": self.source,
            "smoke_id": self.smoke_id,
            "ok": self.ok,
            "exit_code": self.exit_code,
            "total_seconds": round(self.total_seconds, 3),
            "kept": self.kept,
            "checks": [_row_dict(r) for r in self.checks],
            "cleanup": [_row_dict(r) for r in self.cleanup],
            "notes": list(self.notes),
        }


def _row_dict(result: CheckResult) -> dict[str, object]:
    row = asdict(result)
    row["seconds"] = round(result.seconds, 3)
    return row


def format_json(report: SmokeReport) -> str:
    return json.dumps(report.to_dict(), indent=2)


def format_header(url: str, source: str, smoke_id: str) -> str:
    origin = f" ({source})" if source else ""
    title = f"mlflow-stack smoke: {url}{origin}, objects named {smoke_id}"
    columns = f"{'CHECK':<{NAME_WIDTH}} {'RESULT':<{STATUS_WIDTH}} {'SECONDS':>{SECONDS_WIDTH}}  DETAIL"
    return f"{title}\n{columns}"


def format_row(result: CheckResult) -> str:
    name = f"cleanup: {result.name}" if result.phase == "cleanup" else result.name
    # Multi-line details (tracebacks, server messages) are indented under their row.
    detail = result.detail.replace("\n", "\n" + " " * (NAME_WIDTH + STATUS_WIDTH + SECONDS_WIDTH + 4))
    return (
        f"{name:<{NAME_WIDTH}} {result.status:<{STATUS_WIDTH}} {result.seconds:>{SECONDS_WIDTH}.2f}  {detail}"
    )


def format_footer(report: SmokeReport) -> str:
    checks = report.counts("check")
    summary = f"{checks['PASS']} passed, {checks['FAIL']} failed, {checks['SKIP']} skipped"
    if report.kept:
        summary += "; cleanup skipped (--keep)"
    elif report.cleanup:
        cleanup = report.counts("cleanup")
        summary += f"; cleanup {cleanup['PASS']}/{len(report.cleanup)} ok"
    verdict = "PASS" if report.ok else "FAIL"
    seconds = f"{report.total_seconds:>{SECONDS_WIDTH}.2f}"
    lines = [f"{'TOTAL':<{NAME_WIDTH}} {verdict:<{STATUS_WIDTH}} {seconds}  {summary}"]
    lines += [f"note: {note}" for note in report.notes]
    return "\n".join(lines)


def format_table(report: SmokeReport) -> str:
    rows = [format_row(r) for r in (*report.checks, *report.cleanup)]
    return "\n".join(
        [format_header(report.url, report.source, report.smoke_id), *rows, format_footer(report)]
    )
