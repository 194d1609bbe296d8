"""`mlflow-stack preview compare`: main's and a pull request's previews, as the one sticky comment.

Synthetic reports pin the arithmetic and the wording; two real previews (`preview --format json`,
the program under mocks) prove the JSON the workflow writes is the JSON compare reads.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import pytest

from cli.main import main
from preview.compare import (
    COMMENT_LIMIT,
    MARKER,
    CompareError,
    compare,
    load_reports,
    render_comment,
    verdict_code,
)


def report(
    stack: str,
    total: float,
    *,
    components: dict[str, float] | None = None,
    resources: list[str] = ("aws:s3/bucket:Bucket b",),  # type: ignore[assignment]
    violations: list[tuple[str, str, str]] = (),  # type: ignore[assignment]
    environment: str = "dev",
) -> dict[str, Any]:
    return {
        "schema": 1,
        "stack": stack,
        "environment": environment,
        "resources": [{"component": "c", "type": r.split()[0], "name": r.split()[1]} for r in resources],
        "violations": [
            {"policy": p, "level": level, "resource": res, "message": f"{p} says no", "waived": None}
            for level, p, res in violations
        ],
        "cost": {
            "region": "us-east-1",
            "currency": "USD",
            "as_of": "2026-01-01",
            "total": total,
            "by_component": components or {"everything": total},
        },
        "markdown": f"### mlflow-stack preview: `{stack}` FULL-{stack}",
    }


def write(directory: Path, *reports: dict[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for r in reports:
        (directory / f"{r['stack']}.json").write_text(json.dumps(r))
    return directory


def cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["preview", *argv])
    return code, out.getvalue(), err.getvalue()


def test_cost_difference_from_main_per_stack_and_in_total() -> None:
    base = {
        "dev": report("dev", 100.0, components={"network": 40.0, "database": 60.0}),
        "prod": report("prod", 400.0, environment="prod"),
    }
    head = {
        "dev": report("dev", 130.0, components={"network": 40.0, "database": 90.0}),
        "prod": report("prod", 350.0, environment="prod"),
    }
    comparisons = compare(base, head)
    assert [(c.stack, c.cost_delta) for c in comparisons] == [("dev", 30.0), ("prod", -50.0)]
    comment = render_comment(comparisons)
    assert comment.startswith(MARKER + "\n")
    assert "| `dev` | dev | :white_check_mark: OK | 1 | 0 / 0 | $130.00 | +$30.00 (+30.0%) |" in comment
    assert "| `prod` | prod | :white_check_mark: OK | 1 | 0 / 0 | $350.00 | -$50.00 (-12.5%) |" in comment
    assert "| **total** | | | | | **$480.00** | **-$20.00** |" in comment
    # Only the component that changed is listed, with main's and the PR's cost.
    assert "| database | $60.00 | $90.00 | +$30.00 |" in comment
    assert "| network |" not in comment
    assert verdict_code(comparisons) == 0


def test_new_and_removed_stacks_count_in_full() -> None:
    comparisons = compare({"old-dev": report("old-dev", 80.0)}, {"team-dev": report("team-dev", 120.0)})
    deltas = {c.stack: (c.status, c.cost_delta) for c in comparisons}
    assert deltas == {"old-dev": ("removed", -80.0), "team-dev": ("ok", 120.0)}
    comment = render_comment(comparisons)
    assert "+$120.00 (new stack)" in comment and "-$80.00 (stack removed)" in comment


def test_a_mandatory_violation_on_the_head_blocks_and_says_where() -> None:
    base = {"prod": report("prod", 400.0, violations=[("advisory", "vpc-flow-logs", "vpc")])}
    head = {
        "prod": report(
            "prod",
            400.0,
            violations=[("mandatory", "rds-backup-retention", "db"), ("advisory", "vpc-flow-logs", "vpc")],
        )
    }
    comparisons = compare(base, head)
    assert verdict_code(comparisons) == 1
    comment = render_comment(comparisons)
    assert ":no_entry: **Blocked: a mandatory policy violation in `prod`.**" in comment
    assert "| 1 | 1 / 1 | $400.00 | +$0.00 (+0.0%) |" in comment
    new_section = comment.split("**New policy violations**")[1].split("</details>")[0]
    assert "mandatory `rds-backup-retention` on `db`" in new_section
    assert "vpc-flow-logs" not in new_section  # already on main: not new


def test_a_violation_fixed_by_the_pull_request_is_listed_as_fixed() -> None:
    base = {"dev": report("dev", 10.0, violations=[("mandatory", "s3-public", "bucket")])}
    comparisons = compare(base, {"dev": report("dev", 10.0)})
    assert verdict_code(comparisons) == 0  # main's violation does not block the fix
    assert "**Fixed since main**" in render_comment(comparisons)


def test_a_failed_head_preview_fails_the_check_and_a_failed_base_is_na() -> None:
    head_error = {"schema": 1, "stack": "dev", "error": "mlflow-stack:database.instanceClass: not a class"}
    comparisons = compare({"dev": report("dev", 10.0)}, {"dev": head_error})
    assert verdict_code(comparisons) == 2 and comparisons[0].cost_delta is None
    comment = render_comment(comparisons)
    assert "The preview could not be made: mlflow-stack:database.instanceClass: not a class" in comment
    base_error = {"schema": 1, "stack": "dev", "error": "main is broken"}
    comparisons = compare({"dev": base_error}, {"dev": report("dev", 10.0)})
    assert verdict_code(comparisons) == 0 and comparisons[0].cost_delta is None
    assert "| $10.00 | n/a |" in render_comment(comparisons)


def test_added_and_removed_resources_are_named() -> None:
    base = {"dev": report("dev", 1.0, resources=["aws:s3/bucket:Bucket a", "aws:kms/key:Key k"])}
    head = {"dev": report("dev", 1.0, resources=["aws:s3/bucket:Bucket a", "aws:sqs/queue:Queue q"])}
    (comparison,) = compare(base, head)
    assert comparison.resource_changes() == (["aws:sqs/queue:Queue q"], ["aws:kms/key:Key k"])
    assert "| 2 (+1 -1) |" in render_comment([comparison])


def test_the_comment_stays_under_githubs_size_limit() -> None:
    big = {f"team{i}-dev": report(f"team{i}-dev", 10.0) for i in range(3)}
    for r in big.values():
        r["markdown"] = "x" * 30_000
    comparisons = compare({}, big)
    comment = render_comment(comparisons)
    assert len(comment) <= COMMENT_LIMIT
    # The full previews went; the summary and each stack's changes stayed.
    assert "x" * 1000 not in comment and comment.count("<details>") == 3
    assert "| `team2-dev` |" in comment


def test_no_affected_stack_still_makes_a_comment() -> None:
    comment = render_comment(compare({}, {}))
    assert comment.startswith(MARKER) and "No stack is affected" in comment


def test_reports_from_files_and_directories(tmp_path: Path) -> None:
    write(tmp_path / "base", report("dev", 1.0))
    (tmp_path / "base" / "crashed.json").write_text("")  # the preview died before printing
    assert set(load_reports(tmp_path / "base")) == {"dev"}
    assert load_reports(tmp_path / "missing") == {}
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(CompareError, match=r"bad\.json: not JSON"):
        load_reports(tmp_path / "bad.json")


def test_compare_command_writes_the_comment_and_exits_with_the_verdict(tmp_path: Path) -> None:
    base = write(tmp_path / "base", report("prod", 400.0))
    head = write(tmp_path / "head", report("prod", 410.0, violations=[("mandatory", "p", "r")]))
    output = tmp_path / "comment.md"
    code, out, _ = cli("compare", str(base), str(head), "--markdown", "--output", str(output))
    assert code == 1 and out == ""
    assert output.read_text().startswith(MARKER) and "+$10.00 (+2.5%)" in output.read_text()
    code, out, _ = cli("compare", str(base), str(base))
    assert code == 0 and out.splitlines()[1].split() == ["prod", "ok", "$400.00", "+$0.00", "(+0.0%)"]
    (tmp_path / "head" / "prod.json").write_text("[]")
    code, _, err = cli("compare", str(base), str(head))
    assert code == 2 and "not a preview report" in err


def test_real_previews_round_trip_through_json(tmp_path: Path) -> None:
    """`preview --format json` of staging as main has it, then with a stricter policy config (the
    pull request): compare blocks it and names the rule; the cost is unchanged."""
    code, out, _ = cli("--stack", "staging", "--format", "json")
    assert code == 0
    write(tmp_path / "base", json.loads(out))
    config = tmp_path / "policy-config.json"
    config.write_text(json.dumps({"rds-backup-retention": {"minBackupDays": 30}}))
    code, out, _ = cli("--stack", "staging", "--format", "json", "--policy-config", str(config))
    assert code == 1
    head = json.loads(out)
    assert head["markdown"].startswith("### mlflow-stack preview: `staging`")
    write(tmp_path / "head", head)
    code, comment, _ = cli("compare", str(tmp_path / "base"), str(tmp_path / "head"), "--markdown")
    assert code == 1
    assert "mandatory `rds-backup-retention` on `mlflow-staging-database-instance`" in comment
    assert f"| ${head['cost']['total']:,.2f} | +$0.00 (+0.0%) |" in comment


def test_json_output_of_a_failed_preview_is_an_error_report() -> None:
    code, out, err = cli("--stack", "no-such-stack", "--format", "json")
    assert code == 2 and "no stack file" in err
    assert (
        json.loads(out)["error"].startswith("no stack file") and json.loads(out)["stack"] == "no-such-stack"
    )
