"""A pull request's previews, compared with main's: the one sticky comment a reviewer reads.

`mlflow-stack preview --stack NAME --format json` writes a stack's report as JSON (`report_to_json`,
or `error_to_json` when the preview could not be made); the workflow makes one per changed stack on
main and on the pull request's head, and `mlflow-stack preview compare BASE HEAD --markdown` turns
the two sides into the comment (`render_comment`): per stack the verdict, resources, violations,
the estimated monthly cost and its difference from main, then what changed in detail. The comment
starts with a hidden marker (`MARKER`) the workflow finds it by, to update it in place.

The exit code of `compare` is the pull request's verdict (`verdict_code`): 1 when a head stack has
a mandatory violation, 2 when a head stack could not be previewed, else 0.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
MARKER = "<!-- mlflow-stack-preview -->"
# GitHub refuses a comment body over 65,536 characters; leave room for the marker and footer.
COMMENT_LIMIT = 60_000
EXIT_OK, EXIT_VIOLATIONS, EXIT_ERROR = 0, 1, 2


class CompareError(ValueError):
    """A report file that is not a preview report; the message names the file."""


# -- one side: a report as JSON ------------------------------------------------------------------


def report_to_json(report: Any, markdown: str) -> dict[str, Any]:
    """A `preview.report.PreviewReport` as JSON, with its own Markdown rendering for the details."""
    cost = report.cost
    return {
        "schema": SCHEMA_VERSION,
        "stack": report.stack,
        "environment": report.environment,
        "resources": [{"component": r.component, "type": r.type, "name": r.name} for r in report.resources],
        "violations": [
            {
                "policy": d.policy,
                "level": d.level,
                "resource": report.where(d),
                "message": d.message,
                "waived": report.waivers.get(d.policy),
            }
            for d in report.sorted_diagnostics()
        ],
        "cost": {
            "region": cost.region,
            "currency": cost.currency,
            "as_of": cost.as_of,
            "total": round(cost.total, 2),
            "by_component": {k: round(v, 2) for k, v in cost.by_component.items()},
        },
        "markdown": markdown,
    }


def error_to_json(stack: str, message: str) -> dict[str, Any]:
    """What `preview --format json` prints when the preview could not be made."""
    return {"schema": SCHEMA_VERSION, "stack": stack, "error": message}


def load_reports(path: str | Path) -> dict[str, dict[str, Any]]:
    """stack -> report from one JSON file or a directory of them. A missing path is an empty side
    (main has no such stack, or main's kit could not write JSON yet)."""
    path = Path(path)
    if not path.exists():
        return {}
    files = sorted(path.glob("*.json")) if path.is_dir() else [path]
    reports: dict[str, dict[str, Any]] = {}
    for file in files:
        text = file.read_text(encoding="utf-8").strip()
        if not text:
            continue  # the preview died before printing anything: treated as absent
        try:
            report = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CompareError(f"{file}: not JSON ({exc})") from None
        if not isinstance(report, dict) or not isinstance(report.get("stack"), str):
            raise CompareError(f"{file}: not a preview report (no stack name)")
        reports[report["stack"]] = report
    return reports


# -- the comparison ------------------------------------------------------------------------------


def _violation_key(v: Mapping[str, Any]) -> tuple[str, str, str]:
    return (str(v["level"]), str(v["policy"]), str(v["resource"]))


def _mandatory(report: Mapping[str, Any] | None) -> list[Mapping[str, Any]]:
    return [v for v in (report or {}).get("violations", []) if v["level"] == "mandatory"]


def _usable(report: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    return report if report is not None and "error" not in report else None


@dataclass(frozen=True)
class StackComparison:
    """One stack on both sides. `base`/`head` are None where the stack does not exist."""

    stack: str
    base: Mapping[str, Any] | None
    head: Mapping[str, Any] | None

    @property
    def status(self) -> str:
        if self.head is None:
            return "removed"
        if "error" in self.head:
            return "error"
        if _mandatory(self.head):
            return "blocked"
        return "ok"

    @property
    def base_cost(self) -> float | None:
        base = _usable(self.base)
        return float(base["cost"]["total"]) if base else None

    @property
    def head_cost(self) -> float | None:
        head = _usable(self.head)
        return float(head["cost"]["total"]) if head else None

    @property
    def cost_delta(self) -> float | None:
        """head - base; a new stack costs all of it, a removed one saves all of it; None if a side
        could not be previewed (or main's report is missing although the stack existed)."""
        if self.head is None:
            return -self.base_cost if self.base_cost is not None else None
        if self.head_cost is None:
            return None
        if self.base is None:
            return self.head_cost
        return self.head_cost - self.base_cost if self.base_cost is not None else None

    def component_deltas(self) -> list[tuple[str, float, float]]:
        """(component, base, head) for every component whose monthly cost changed."""
        base = (_usable(self.base) or {}).get("cost", {}).get("by_component", {})
        head = (_usable(self.head) or {}).get("cost", {}).get("by_component", {})
        rows = [(c, float(base.get(c, 0.0)), float(head.get(c, 0.0))) for c in sorted({*base, *head})]
        return sorted((r for r in rows if round(r[2] - r[1], 2) != 0), key=lambda r: -abs(r[2] - r[1]))

    def resource_changes(self) -> tuple[list[str], list[str]]:
        """(added, removed) resources as `type name`, when both sides were previewed."""

        def names(report: Mapping[str, Any] | None) -> set[str]:
            return {f"{r['type']} {r['name']}" for r in (report or {}).get("resources", [])}

        if _usable(self.head) is None or (self.base is not None and _usable(self.base) is None):
            return [], []
        base, head = names(self.base), names(self.head)
        return sorted(head - base), sorted(base - head)

    def violation_changes(self) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]]:
        """(new on head, fixed since main)."""
        base = {_violation_key(v): v for v in (_usable(self.base) or {}).get("violations", [])}
        head = {_violation_key(v): v for v in (_usable(self.head) or {}).get("violations", [])}
        return [head[k] for k in head if k not in base], [base[k] for k in base if k not in head]


def compare(base: Mapping[str, dict[str, Any]], head: Mapping[str, dict[str, Any]]) -> list[StackComparison]:
    """Every stack on either side, by name. Stacks only on main are removed by the pull request
    only if the head side lists them as previewed; the caller passes the same stack list to both."""
    return [StackComparison(name, base.get(name), head.get(name)) for name in sorted({*base, *head})]


def verdict_code(comparisons: Iterable[StackComparison]) -> int:
    statuses = {c.status for c in comparisons}
    if "blocked" in statuses:
        return EXIT_VIOLATIONS
    if "error" in statuses:
        return EXIT_ERROR
    return EXIT_OK


# -- rendering -----------------------------------------------------------------------------------


def _money(value: float) -> str:
    return f"-${-value:,.2f}" if value < 0 else f"${value:,.2f}"


def _signed(value: float) -> str:
    return f"{'+' if value >= 0 else '-'}${abs(value):,.2f}"


def _delta_text(c: StackComparison) -> str:
    delta = c.cost_delta
    if delta is None:
        return "n/a"
    if c.base is None:
        return f"{_signed(delta)} (new stack)"
    if c.head is None:
        return f"{_signed(delta)} (stack removed)"
    base = c.base_cost or 0.0
    percent = f" ({delta / base:+.1%})" if base else ""
    return _signed(delta) + percent


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


_VERDICT = {
    "ok": ":white_check_mark: OK",
    "blocked": ":no_entry: blocked",
    "error": ":x: preview failed",
    "removed": ":wastebasket: removed",
}


def _summary_row(c: StackComparison) -> str:
    head = _usable(c.head)
    env = (c.head or c.base or {}).get("environment") or ""
    if head is None:
        return f"| `{c.stack}` | {env} | {_VERDICT[c.status]} | | | | {_delta_text(c)} |"
    added, removed = c.resource_changes()
    change = f" (+{len(added)} -{len(removed)})" if added or removed else ""
    mandatory = len(_mandatory(head))
    others = len(head["violations"]) - mandatory
    cost = _money(float(head["cost"]["total"]))
    return (
        f"| `{c.stack}` | {env} | {_VERDICT[c.status]} | {len(head['resources'])}{change} | "
        f"{mandatory} / {others} | {cost} | {_delta_text(c)} |"
    )


def _details(c: StackComparison, *, full: bool) -> list[str]:
    what = "what changed and the full preview" if full else "what changed"
    lines = [f"<details><summary><code>{c.stack}</code>: {what}</summary>", ""]
    if c.status == "error":
        lines += [f"The preview could not be made: {_cell(c.head['error'])}", ""]  # type: ignore[index]
    if c.base is not None and "error" in c.base:
        lines += [f"main's preview could not be made: {_cell(c.base['error'])}", ""]
    deltas = c.component_deltas()
    if deltas:
        lines += ["| component | main | this PR | change |", "|---|---:|---:|---:|"]
        lines += [f"| {_cell(n)} | {_money(b)} | {_money(h)} | {_signed(h - b)} |" for n, b, h in deltas]
        lines.append("")
    new, fixed = c.violation_changes()
    for title, items in (("New policy violations", new), ("Fixed since main", fixed)):
        if items:
            lines += [f"**{title}**", ""]
            lines += [
                f"- {v['level']} `{v['policy']}` on `{_cell(v['resource'])}`: {_cell(v['message'])}"
                for v in items
            ]
            lines.append("")
    added, removed = c.resource_changes()
    for title, names in (("Resources added", added), ("Resources removed", removed)):
        if names:
            lines += [f"**{title}** ({len(names)})", ""] + [f"- `{n}`" for n in names[:50]]
            if len(names) > 50:
                lines.append(f"- … and {len(names) - 50} more")
            lines.append("")
    if not (deltas or new or fixed or added or removed) and c.status in ("ok", "blocked"):
        lines += ["No change in cost, resources or policy findings from main.", ""]
    head = _usable(c.head)
    if full and head is not None and head.get("markdown"):
        lines += ["---", "", str(head["markdown"]).strip(), ""]
    lines += ["</details>", ""]
    return lines


def render_comment(
    comparisons: Sequence[StackComparison],
    *,
    base_label: str = "main",
    head_label: str = "this pull request",
    limit: int = COMMENT_LIMIT,
) -> str:
    """The sticky comment: the marker, a verdict, one row per stack, then the details per stack
    (full previews included while the comment stays under GitHub's size limit)."""
    code = verdict_code(comparisons)
    blocked = [c.stack for c in comparisons if c.status == "blocked"]
    failed = [c.stack for c in comparisons if c.status == "error"]
    if code == EXIT_VIOLATIONS:
        verdict = f":no_entry: **Blocked: a mandatory policy violation in {', '.join(map(_code, blocked))}.**"
    elif code == EXIT_ERROR:
        verdict = f":x: **The preview could not be made for {', '.join(map(_code, failed))}.**"
    elif comparisons:
        verdict = (
            f":white_check_mark: **{len(comparisons)} stack(s) previewed: no mandatory policy violation.**"
        )
    else:
        verdict = "No stack is affected by this pull request."
    head_lines = [MARKER, "## mlflow-stack preview", "", verdict, ""]
    if comparisons:
        head_lines += [
            "| stack | environment | verdict | resources | violations (mandatory / other) "
            f"| est. monthly cost | vs {_cell(base_label)} |",
            "|---|---|---|---:|---:|---:|---:|",
        ]
        head_lines += [_summary_row(c) for c in comparisons]
        known = [c.cost_delta for c in comparisons if c.cost_delta is not None]
        total_head = sum(c.head_cost or 0.0 for c in comparisons)
        if len(comparisons) > 1:
            head_lines.append(
                f"| **total** | | | | | **{_money(total_head)}** | **{_signed(sum(known))}**"
                + (" (some n/a)" if len(known) < len(comparisons) else "")
                + " |"
            )
        head_lines.append("")
    footer = [
        f"<sub>{_cell(head_label)} compared with {_cell(base_label)}. Offline preview: the Pulumi "
        "program under mocks, the policy pack, list-price cost estimates (usage-based charges "
        "excluded). Updated in place on every push.</sub>",
        "",
    ]
    for full in (True, False):
        body = [line for c in comparisons for line in _details(c, full=full)]
        text = "\n".join([*head_lines, *body, *footer])
        if len(text) <= limit:
            return text
    note = [
        "_Details left out to stay under GitHub's comment size limit: see the workflow run's summary._",
        "",
    ]
    return "\n".join([*head_lines, *note, *footer])


def _code(stack: str) -> str:
    return f"`{stack}`"


def render_text(comparisons: Sequence[StackComparison]) -> str:
    """A terminal version of the summary table."""
    lines = [f"{'stack':<24} {'verdict':<16} {'monthly':>12} {'vs main':>28}"]
    for c in comparisons:
        cost = _money(c.head_cost) if c.head_cost is not None else "-"
        lines.append(f"{c.stack:<24} {c.status:<16} {cost:>12} {_delta_text(c):>28}")
    return "\n".join(lines) + "\n"
