"""`mlflow-stack audit`: the registry and tracking server checked against the governance rules.

Reads experiments, registered models and recent runs (lifecycle/audit_scan.py), applies the rules
(lifecycle/audit_rules.py) with the settings of lifecycle/audit_config.py, and returns one report:
every finding, counts per kind and severity, the worst offenders of each kind, and whether the
findings at or above the fail-on severity exceed the tolerated number (the CI exit code). Read-only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from lifecycle import audit_scan
from lifecycle.audit_config import FAIL_NEVER, KINDS, SEVERITIES, SEVERITY_OFF, GovernanceConfig
from lifecycle.audit_rules import (
    DEFAULT_EXPERIMENT_NAME,
    Finding,
    experiment_name_problem,
    is_default_experiment,
    missing_tag_labels,
    model_name_problems,
    model_usage,
    run_tags,
)
from lifecycle.client import Connection

EXAMPLES = 5  # run ids kept per experiment as examples of missing tags


@dataclass
class Scanned:
    experiments: int = 0
    registered_models: int = 0
    archived_models: int = 0
    runs: int = 0
    run_pages: int = 0
    capped_experiments: list[str] = field(default_factory=list)


@dataclass
class AuditReport:
    target: str
    generated_at: str
    config: GovernanceConfig
    fail_on: str
    max_findings: int
    top: int
    findings: list[Finding]
    scanned: Scanned

    def active(self) -> list[Finding]:
        return [f for f in self.findings if f.severity != SEVERITY_OFF]

    def counts(self) -> dict[str, int]:
        return {kind: sum(1 for f in self.active() if f.kind == kind) for kind in KINDS}

    def counts_by_severity(self) -> dict[str, int]:
        return {level: sum(1 for f in self.active() if f.severity == level) for level in SEVERITIES}

    def failing(self) -> list[Finding]:
        """The findings at or above the fail-on severity."""
        if self.fail_on == FAIL_NEVER:
            return []
        floor = SEVERITIES.index(self.fail_on)
        return [f for f in self.active() if SEVERITIES.index(f.severity) >= floor]

    @property
    def passed(self) -> bool:
        return len(self.failing()) <= self.max_findings

    def worst_offenders(self) -> dict[str, list[Finding]]:
        """Per kind, the `top` findings with the largest count (most runs, longest idle)."""
        ranked: dict[str, list[Finding]] = {}
        for kind in KINDS:
            of_kind = [f for f in self.active() if f.kind == kind]
            of_kind.sort(key=lambda f: (-f.count, f.subject))
            if of_kind:
                ranked[kind] = of_kind[: self.top]
        return ranked

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "generated_at": self.generated_at,
            "passed": self.passed,
            "fail_on": self.fail_on,
            "max_findings": self.max_findings,
            "failing": len(self.failing()),
            "counts": self.counts(),
            "counts_by_severity": self.counts_by_severity(),
            "scanned": asdict(self.scanned),
            "worst_offenders": {k: [asdict(f) for f in v] for k, v in self.worst_offenders().items()},
            "findings": [asdict(f) for f in self.active()],
            "config": self.config.to_json(),
        }

    def lines(self) -> list[str]:
        verdict = "PASS" if self.passed else "FAIL"
        threshold = (
            "report only (--fail-on never)"
            if self.fail_on == FAIL_NEVER
            else f"{len(self.failing())} at or above {self.fail_on}, {self.max_findings} tolerated"
        )
        s = self.scanned
        capped = f", {len(s.capped_experiments)} experiment(s) capped" if s.capped_experiments else ""
        out = [
            f"audit {self.target}: {verdict} ({threshold})",
            f"  scanned {s.experiments} experiment(s), {s.registered_models} registered model(s) "
            f"({s.archived_models} archived), {s.runs} recent run(s) in the last "
            f"{self.config.runs.lookback_days} day(s){capped}",
            f"  config: {self.config.source}",
            "",
            "  findings by kind:",
        ]
        severities = self.config.severities
        for kind, count in self.counts().items():
            out.append(f"    {kind:<24} {count:>5}  [{severities[kind]}]")
        for kind, worst in self.worst_offenders().items():
            total = self.counts()[kind]
            more = f" (top {len(worst)} of {total}; all of them with --json)" if total > len(worst) else ""
            out += ["", f"  {kind}{more}:"]
            out += [f"    {f.subject}: {f.detail}" for f in worst]
        return out


def run_audit(conn: Connection, config: GovernanceConfig, *, now: datetime | None = None) -> AuditReport:
    """Audit the server behind `conn`. `now` is injectable so ages are testable without waiting."""
    now = now or datetime.now(UTC)
    report = AuditReport(
        target=conn.url,
        generated_at=now.isoformat(timespec="seconds"),
        config=config,
        fail_on=config.report.fail_on,
        max_findings=config.report.max_findings,
        top=config.report.top,
        findings=[],
        scanned=Scanned(),
    )
    severity = config.severities
    checks_tags = severity["runs-missing-tags"] != SEVERITY_OFF
    checks_default = (
        severity["default-experiment-used"] != SEVERITY_OFF
        and config.experiments.flag_default_experiment_runs
    )
    for experiment in audit_scan.experiments(conn):
        report.scanned.experiments += 1
        report.findings += _experiment_findings(experiment, config)
        if checks_tags or (checks_default and is_default_experiment(experiment)):
            report.findings += _run_findings(conn, experiment, config, now, report.scanned)
    for model in audit_scan.registered_models(conn):
        report.scanned.registered_models += 1
        report.findings += _model_findings(model, config, now, report.scanned)
    return report


def _experiment_findings(experiment: dict[str, Any], config: GovernanceConfig) -> list[Finding]:
    if is_default_experiment(experiment):
        return []
    name = experiment["name"]
    problem = experiment_name_problem(name, config.experiments)
    if problem is None:
        return []
    return [
        Finding(
            "experiment-naming",
            config.severities["experiment-naming"],
            name,
            problem,
            subject_id=str(experiment["experiment_id"]),
        )
    ]


def _run_findings(
    conn: Connection, experiment: dict[str, Any], config: GovernanceConfig, now: datetime, scanned: Scanned
) -> list[Finding]:
    rules = config.runs
    found = audit_scan.recent_runs(
        conn,
        str(experiment["experiment_id"]),
        now=now,
        lookback_days=rules.lookback_days,
        page_size=rules.page_size,
        cap=rules.max_runs_per_experiment,
    )
    scanned.runs += len(found.runs)
    scanned.run_pages += found.pages
    name = experiment["name"]
    if found.capped:
        scanned.capped_experiments.append(name)
    findings: list[Finding] = []
    window = f"in the last {rules.lookback_days} day(s)"
    seen = f"{len(found.runs)}{'+' if found.capped else ''} recent run(s)"
    if is_default_experiment(experiment) and found.runs and config.experiments.flag_default_experiment_runs:
        findings.append(
            Finding(
                "default-experiment-used",
                config.severities["default-experiment-used"],
                name or DEFAULT_EXPERIMENT_NAME,
                f"{seen} logged to MLflow's Default experiment {window}: the job forgot "
                "mlflow.set_experiment('/team/project/type')",
                count=len(found.runs),
                subject_id=str(experiment["experiment_id"]),
                examples=[r["info"]["run_id"] for r in found.runs[:EXAMPLES]],
            )
        )
    missing: dict[str, int] = {}
    offenders: list[str] = []
    for run in found.runs:
        labels = missing_tag_labels(run_tags(run), rules.required_tags)
        if labels:
            offenders.append(run["info"]["run_id"])
        for label in labels:
            missing[label] = missing.get(label, 0) + 1
    if offenders:
        per_label = ", ".join(f"{label} {count}" for label, count in missing.items())
        findings.append(
            Finding(
                "runs-missing-tags",
                config.severities["runs-missing-tags"],
                name,
                f"{len(offenders)} of {seen} {window} miss required tags ({per_label})",
                count=len(offenders),
                subject_id=str(experiment["experiment_id"]),
                examples=offenders[:EXAMPLES],
            )
        )
    return findings


def _model_findings(
    model: dict[str, Any], config: GovernanceConfig, now: datetime, scanned: Scanned
) -> list[Finding]:
    rules = config.models
    severity = config.severities
    name = model["name"]
    findings = []
    problems = model_name_problems(name, rules)
    if problems:
        detail = "; ".join(problems) + ": name it after the product it serves (e.g. churn, search-ranking)"
        findings.append(Finding("model-naming", severity["model-naming"], name, detail))
    usage = model_usage(model)
    if usage.archived:
        # Archived by `models prune`: dealt with, so neither unused nor missing a champion.
        scanned.archived_models += 1
        return findings
    if rules.champion_alias not in usage.aliases:
        aliases = ", ".join(sorted(usage.aliases)) or "none"
        findings.append(
            Finding(
                "no-champion",
                severity["no-champion"],
                name,
                f"no {rules.champion_alias!r} alias (aliases: {aliases}); promote one with "
                f"`mlflow-stack models promote {name}`",
            )
        )
    if usage.is_unused(now, rules.unused_after_days):
        idle = int(usage.idle_days(now))
        findings.append(
            Finding(
                "unused-model",
                severity["unused-model"],
                name,
                f"no alias, and idle {idle} day(s) ({usage.last_activity()}); archive or delete it with "
                f"`mlflow-stack models prune --older-than {rules.unused_after_days}`",
                count=idle,
            )
        )
    return findings
