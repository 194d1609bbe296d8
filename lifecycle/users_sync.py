"""`mlflow-stack users sync`: read the server, plan, and (with apply) make it match the declaration.

Exit codes (cli/common.py's scheme, plus one for drift):
  0  in sync, or the changes were applied        2  bad options or an invalid declaration
  3  the server, Secrets Manager or a file failed 5  refused: the declaration cannot work on this
  6  drift: a dry run with --exit-code found changes   server (admin declared, default permission
                                                       EDIT/MANAGE, workspaces off) — nothing changed
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lifecycle.targets import UsageError
from lifecycle.users_apply import ApplyResult, apply_changes
from lifecycle.users_declaration import Declaration
from lifecycle.users_passwords import PasswordStore
from lifecycle.users_plan import Plan, build_plan
from lifecycle.users_state import read_state

EXIT_OK = 0
EXIT_DRIFT = 6


@dataclass
class SyncReport:
    declaration: Declaration
    plan: Plan
    apply: bool
    prune: bool
    default_permission: str
    result: ApplyResult | None = None

    @property
    def pending(self) -> list[Any]:
        """What this run applies (or, in a dry run, would apply)."""
        return self.plan.applicable(self.prune)

    @property
    def left_in_place(self) -> list[Any]:
        """Prunes a run without --prune lists but does not make."""
        return [] if self.prune else self.plan.prunable

    def exit_code(self, drift_exit_code: bool) -> int:
        if not self.apply and drift_exit_code and self.pending:
            return EXIT_DRIFT
        return EXIT_OK

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "declaration": self.declaration.source,
            "mode": "apply" if self.apply else "dry-run",
            "prune": self.prune,
            "default_permission": self.default_permission,
            "in_sync": not self.pending and not self.left_in_place,
            "changes": [c.to_json() for c in self.pending],
            "not_pruned": [c.to_json() for c in self.left_in_place],
            "skipped_users": self.plan.skipped_users,
            "warnings": self.plan.warnings,
        }
        if self.result is not None:
            body["applied"] = len(self.result.done)
            body["password_locations"] = self.result.passwords
        return body

    def lines(self) -> list[str]:
        lines = [f"warning: {w}" for w in self.plan.warnings]
        if not self.pending and not self.left_in_place:
            lines.append(f"in sync with {self.declaration.source}: nothing to change")
            return lines
        verb = "applied" if self.apply else "would"
        lines += [f"{verb}: {c.describe()}" for c in self.pending]
        lines += [f"not pruned (use --prune): {c.describe()}" for c in self.left_in_place]
        for user in self.plan.skipped_users:
            lines.append(f"skipped: user {user} does not exist (this mode creates no users; run users sync)")
        if self.result is not None:
            for user, where in sorted(self.result.passwords.items()):
                lines.append(f"password of {user}: stored in {where}")
            lines.append(f"{len(self.result.done)} change(s) applied")
        elif self.pending:
            lines.append(f"{len(self.pending)} change(s) planned; dry run: rerun with --apply to make them")
        return lines


def sync(
    conn: Any,
    declaration: Declaration,
    *,
    apply: bool,
    prune: bool,
    create_users: bool = True,
    password_store: Callable[[], PasswordStore] | None = None,
) -> SyncReport:
    """Plan (and with `apply`, carry out) the changes; `password_store` is called only when a user
    is about to be created, so a dry run needs no AWS access."""
    state = read_state(conn, declaration.workspaces)
    plan = build_plan(declaration, state, conn.username, create_users=create_users)
    if not create_users:
        # The scheduled re-sync neither creates nor deletes users.
        plan.changes = [c for c in plan.changes if c.action != "delete-user"]
    report = SyncReport(declaration, plan, apply, prune, state.default_permission)
    if apply and report.pending:
        creates = any(c.action == "create-user" for c in report.pending)
        store = password_store() if creates and password_store is not None else None
        if creates and store is None:
            raise UsageError(
                "creating users needs a place for their passwords: pass --password-dir DIR with --url"
            )
        report.result = apply_changes(conn, report.pending, state, store)
    elif apply:
        report.result = ApplyResult()
    return report
