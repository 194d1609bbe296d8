"""`mlflow-stack models prune`: archive or delete the registered models nobody uses.

A model is *unused* when no alias points to any of its versions and no version was registered for
`older_than_days` (the audit's `unused-model` rule, lifecycle/audit_rules.py). A model any alias
points to is never touched.

What "archive" means. MLflow 3 registered models have no archived state: stages are deprecated and
aliases are the only pointers. So archiving is a marker, reversible by deleting one tag:
`mlflow_stack.archived` (when) on the registered model, with `mlflow_stack.archived_by` and
`mlflow_stack.archived_reason`. Nothing else changes: every version, its artifacts and its run stay
loadable. The audit counts archived models as dealt with (neither unused nor missing a champion), a
second archive run skips them, and `--delete` removes them (and unarchived unused ones) for good.

Safety. With `--apply` each model is acted on under the same DynamoDB lease `models promote` and
`rollback` take (`model-aliases/<name>`, lifecycle/locks.py), and is read again inside it — aliases
and the newest version asked for directly — so a promotion that raced the scan wins: the model is
skipped, not pruned. A model whose lease another pipeline holds is skipped and reported (exit 1).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from lifecycle import audit_scan
from lifecycle.audit_config import ARCHIVED_TAG
from lifecycle.audit_rules import ModelUsage, model_usage
from lifecycle.client import Connection, MlflowApiError
from lifecycle.durations import InvalidValue, parse_duration
from lifecycle.locks import DynamoLock, LockHeld

ARCHIVE = "archive"
DELETE = "delete"
_NOT_FOUND = {"RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"}


@dataclass
class Candidate:
    name: str
    idle_days: int
    last_activity: str
    newest_version: str | None
    archived: str | None


@dataclass
class PruneReport:
    mode: str
    dry_run: bool
    older_than_days: float
    model_pattern: str = "*"
    scanned: int = 0
    candidates: list[Candidate] = field(default_factory=list)
    already_archived: list[str] = field(default_factory=list)
    acted: list[str] = field(default_factory=list)  # archived or deleted
    skipped: dict[str, str] = field(default_factory=dict)  # name -> why (alias set, new version, locked)
    already_gone: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def incomplete(self) -> bool:
        """Some candidates could not be acted on for a reason that may pass (a lock, an API error)."""
        return bool(self.failed) or any(reason.startswith("locked") for reason in self.skipped.values())

    def to_json(self) -> dict[str, Any]:
        body = asdict(self)
        body["counts"] = {
            "scanned": self.scanned,
            "candidates": len(self.candidates),
            "already_archived": len(self.already_archived),
            "acted": len(self.acted),
            "skipped": len(self.skipped),
            "already_gone": len(self.already_gone),
            "failed": len(self.failed),
        }
        return body


def parse_days(text: str, flag: str = "--older-than") -> float:
    """'90' or '90d' -> 90.0 days; '12w', '36h' as everywhere else; '0' means any age."""
    try:
        days = float(text)
    except ValueError:
        return parse_duration(text, flag).total_seconds() / 86400
    if days < 0 or days != days:  # negative or NaN
        raise InvalidValue(f"{flag} {text!r} must be a number of days, 0 or more, e.g. 90 or 90d")
    return days


def prune(
    conn: Connection,
    *,
    older_than_days: float,
    model_pattern: str = "*",
    mode: str = ARCHIVE,
    apply: bool = False,
    lock_for: Callable[[str], DynamoLock] | None = None,
    wait_seconds: float = 0.0,
    by: str = "",
    now: datetime | None = None,
) -> PruneReport:
    """List (dry run) or archive/delete (apply) the unused registered models matching `model_pattern`
    (shell-style, case-sensitive: 'search-*').

    `lock_for(name)` gives the model's lease; required with `apply`. `now` is injectable, so an age
    can be tested without waiting for it.
    """
    if mode not in (ARCHIVE, DELETE):
        raise ValueError(f"mode must be {ARCHIVE!r} or {DELETE!r}, got {mode!r}")
    if apply and lock_for is None:
        raise ValueError("prune --apply needs the model lock (lock_for)")
    now = now or datetime.now(UTC)
    report = PruneReport(
        mode=mode, dry_run=not apply, older_than_days=older_than_days, model_pattern=model_pattern
    )
    for model in audit_scan.registered_models(conn):
        if not fnmatch.fnmatchcase(model["name"], model_pattern):
            continue
        report.scanned += 1
        usage = model_usage(model)
        if not usage.is_unused(now, older_than_days):
            continue
        if mode == ARCHIVE and usage.archived:
            report.already_archived.append(usage.name)
            continue
        report.candidates.append(_candidate(usage, now))
    if not apply:
        return report
    assert lock_for is not None
    for candidate in report.candidates:
        lock = lock_for(candidate.name)
        try:
            with lock.hold(wait_seconds):
                _act(conn, candidate.name, lock, report, older_than_days, mode, by, now)
        except LockHeld as error:
            report.skipped[candidate.name] = f"locked: {error}"
        except MlflowApiError as error:
            report.failed[candidate.name] = str(error)
    return report


def _candidate(usage: ModelUsage, now: datetime) -> Candidate:
    return Candidate(
        name=usage.name,
        idle_days=int(usage.idle_days(now)),
        last_activity=usage.last_activity(),
        newest_version=usage.newest_version,
        archived=usage.archived,
    )


def _act(
    conn: Connection,
    name: str,
    lock: DynamoLock,
    report: PruneReport,
    older_than_days: float,
    mode: str,
    by: str,
    now: datetime,
) -> None:
    """Re-read the model inside its lease, and archive/delete it only if it is still unused."""
    try:
        model = conn.call("GET", "registered-models/get", params={"name": name})["registered_model"]
    except MlflowApiError as error:
        if error.error_code in _NOT_FOUND:
            report.already_gone.append(name)
            return
        raise
    usage = model_usage(model, audit_scan.newest_version(conn, name))
    if usage.aliases:
        aliases = ", ".join(f"{alias} -> v{version}" for alias, version in sorted(usage.aliases.items()))
        report.skipped[name] = f"an alias points to it since the scan ({aliases}); not touched"
        return
    if not usage.is_unused(now, older_than_days):
        report.skipped[name] = (
            f"a version was registered since the scan ({usage.last_activity()}); not touched"
        )
        return
    if mode == ARCHIVE and usage.archived:
        report.already_archived.append(name)
        return
    if not lock.still_held():
        report.skipped[name] = "locked: the lease expired before the write; rerun, or raise --lock-ttl"
        return
    if mode == DELETE:
        conn.call("DELETE", "registered-models/delete", json={"name": name})
    else:
        stamp = now.isoformat(timespec="seconds")
        reason = (
            f"unused: no alias and no new version for {older_than_days:g} day(s) ({usage.last_activity()})"
        )
        for key, value in (
            (ARCHIVED_TAG, stamp),
            (f"{ARCHIVED_TAG}_by", by),
            (f"{ARCHIVED_TAG}_reason", reason),
        ):
            conn.call("POST", "registered-models/set-tag", json={"name": name, "key": key, "value": value})
    report.acted.append(name)
