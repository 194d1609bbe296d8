"""`mlflow-stack db verify-restore`: the checks after restoring the database, run over HTTP against
the server that now serves the restored database.

A restore puts the database back to a point in time; the bucket stays where it is. So:
- registered model versions (and the aliases CI deploys by) may point at artifacts that were
  removed after that point (a `runs gc` that ran later): `models doctor` on every registered model;
- the aliases CI deploys by must name a version that loads: the alias check;
- runs deleted before the restore point but purged from the bucket after it are still in the
  database, referencing artifacts that are gone: they are exactly `mlflow gc`'s candidates, listed
  here; `mlflow-stack runs gc --apply` (in the maintenance task) removes them.
Read-only: nothing is deleted or moved.
"""

from __future__ import annotations

import fnmatch
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any

from lifecycle.client import Connection
from lifecycle.gc import list_candidates
from lifecycle.models import doctor

_MODEL_PAGE = 100


@dataclass
class VerifyReport:
    models: list[dict[str, Any]] = field(default_factory=list)  # models doctor, one per model
    broken_aliases: list[str] = field(default_factory=list)  # "model@alias -> version N (why)"
    broken_versions: list[str] = field(default_factory=list)
    unverifiable_versions: list[str] = field(default_factory=list)
    gc_candidate_runs: list[dict[str, Any]] = field(default_factory=list)
    gc_deleted_experiments: list[dict[str, Any]] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not (self.broken_aliases or self.broken_versions)

    def to_json(self) -> dict[str, Any]:
        body = asdict(self)
        body["passed"] = self.passed
        return body


def registered_model_names(conn: Connection, pattern: str = "*") -> list[str]:
    """Every registered model whose name matches the shell-style `pattern` (fnmatch, as `runs`)."""
    return [
        m["name"]
        for m in conn.paginate(
            "registered-models/search", {"max_results": _MODEL_PAGE}, "registered_models", method="GET"
        )
        if fnmatch.fnmatchcase(m["name"], pattern)
    ]


def verify_restore(conn: Connection, *, gc_older_than: timedelta, models: str = "*") -> VerifyReport:
    report = VerifyReport()
    for name in registered_model_names(conn, models):
        health = doctor(conn, name)
        report.models.append(health.to_json())
        report.broken_aliases += [
            f"{name}@{alias} -> version {v.version}: {v.detail}" for v in health.broken for alias in v.aliases
        ]
        report.broken_versions += [f"{name} v{v.version}: {v.detail}" for v in health.broken]
        report.unverifiable_versions += [
            f"{name} v{v.version}: {v.detail}" for v in health.versions if v.status == "unverifiable"
        ]
    runs, experiments, _ = list_candidates(conn, gc_older_than)
    report.gc_candidate_runs = [asdict(r) for r in runs]
    report.gc_deleted_experiments = experiments
    return report


def verify_lines(report: VerifyReport) -> list[str]:
    lines = [
        f"db verify-restore: {'PASS' if report.passed else 'FAIL'} "
        f"({len(report.models)} registered model(s) checked)"
    ]
    lines += [f"  alias on a broken version: {a}" for a in report.broken_aliases]
    lines += [f"  broken version: {v}" for v in report.broken_versions]
    lines += [f"  unverifiable: {v}" for v in report.unverifiable_versions]
    if report.broken_aliases:
        lines.append(
            "  fix: point each alias at a healthy version (`mlflow-stack models rollback`, or "
            "set_registered_model_alias) before CI deploys by it"
        )
    if report.gc_candidate_runs or report.gc_deleted_experiments:
        lines.append(
            f"  {len(report.gc_candidate_runs)} deleted run(s) and {len(report.gc_deleted_experiments)} "
            "deleted experiment(s) still in the database; their artifacts may already be gone. Purge them "
            "with `mlflow-stack runs gc --apply` (the maintenance task runs it weekly)"
        )
    else:
        lines.append("  no deleted runs or experiments left for gc")
    return lines
