"""`mlflow-stack runs cleanup | reap-stuck | gc | maintenance`: run housekeeping.

Thin glue over lifecycle/runs.py and lifecycle/gc.py. Anything destructive is a dry run unless
--apply. Every command prints a readable summary, or one JSON document with --json.

Exit codes: see cli/common.py (shared with `mlflow-stack models`).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from typing import Any

from cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    add_connection_flags,
    add_lock_flags,
    make_lock,
    run_command,
)
from lifecycle.targets import Target, UsageError, gc_backend_store_uri


def _ids(label: str, ids: list[str], limit: int = 10) -> str:
    shown = ", ".join(ids[:limit]) + (f", ... ({len(ids) - limit} more)" if len(ids) > limit else "")
    return f"  {label}: {len(ids)}" + (f" [{shown}]" if ids else "")


# --- commands -------------------------------------------------------------------------------


def register(subparsers: argparse._SubParsersAction) -> None:
    runs = subparsers.add_parser(
        "runs",
        help="run housekeeping: cleanup, reap-stuck, gc, maintenance (dry run unless --apply)",
        description=(
            "Run housekeeping against a server over HTTP. Destructive commands are dry runs unless --apply."
        ),
    )
    commands = runs.add_subparsers(dest="runs_command", required=True, metavar="COMMAND")

    cleanup = commands.add_parser(
        "cleanup",
        help="delete old terminal runs (keeps keep=true and model-linked runs)",
        description=(
            "Delete runs in experiments matching PATTERN that started more than --older-than ago and "
            "ended with one of --status. Runs tagged keep=true and runs any registered model version "
            "points to are kept. Deleted runs stay restorable until `runs gc`. Safe to interrupt and rerun."
        ),
    )
    add_connection_flags(cleanup)
    cleanup.add_argument(
        "--experiment",
        required=True,
        metavar="PATTERN",
        help="experiment names, shell-style ('team-a/*', '*')",
    )
    cleanup.add_argument("--older-than", required=True, metavar="AGE", help="e.g. 90d, 12w, 36h")
    cleanup.add_argument(
        "--status", default="FAILED,KILLED,FINISHED", help="comma-separated (default FAILED,KILLED,FINISHED)"
    )
    cleanup.add_argument("--apply", action="store_true", help="delete; without it, only list")
    cleanup.add_argument("--concurrency", type=int, default=8, help="deletes in flight at once (default 8)")
    cleanup.add_argument("--page-size", type=int, default=1000, help="runs per search page (default 1000)")
    cleanup.set_defaults(func=_cleanup)

    reap = commands.add_parser(
        "reap-stuck",
        help="set RUNNING runs with no end time, started long ago, to FAILED (tagged with why)",
    )
    add_connection_flags(reap)
    reap.add_argument("--older-than", required=True, metavar="AGE", help="e.g. 24h")
    reap.add_argument("--experiment", default="*", metavar="PATTERN", help="experiment names (default: all)")
    reap.add_argument("--apply", action="store_true", help="change the runs; without it, only list")
    reap.add_argument("--concurrency", type=int, default=8, help="updates in flight at once (default 8)")
    reap.set_defaults(func=_reap)

    gc = commands.add_parser(
        "gc",
        help="permanently remove deleted runs and their artifacts (mlflow gc)",
        description=(
            "List deleted runs that started before the cutoff (over HTTP). With --apply, run `mlflow gc "
            "--older-than AGE` against the tracking database, which removes runs (and experiments, logged "
            "models) deleted more than AGE ago, artifacts included, and report exactly which. --apply needs "
            "the database settings: the server contract's MLFLOW_STACK_DB_* variables (password as "
            "MLFLOW_STACK_DB_PASSWORD or MLFLOW_STACK_DB_PASSWORD_FILE), or --local."
        ),
    )
    add_connection_flags(gc)
    gc.add_argument("--older-than", required=True, metavar="AGE", help="time since deletion, e.g. 30d")
    gc.add_argument("--apply", action="store_true", help="remove for good; without it, only list")
    gc.set_defaults(func=_gc)

    maintenance = commands.add_parser(
        "maintenance",
        help="the scheduled task: reap-stuck, then cleanup, then gc, in one report",
    )
    add_connection_flags(maintenance)
    maintenance.add_argument("--reap-older-than", default="24h", metavar="AGE", help="default 24h")
    maintenance.add_argument("--cleanup-older-than", default="90d", metavar="AGE", help="default 90d")
    maintenance.add_argument("--cleanup-experiment", default="*", metavar="PATTERN", help="default: all")
    maintenance.add_argument("--cleanup-status", default="FAILED,KILLED,FINISHED")
    maintenance.add_argument("--gc-older-than", default="30d", metavar="AGE", help="default 30d")
    maintenance.add_argument("--apply", action="store_true", help="make the changes; without it, only list")
    maintenance.add_argument("--concurrency", type=int, default=8)
    add_lock_flags(maintenance)
    # A lease long enough for a large cleanup; a crashed task blocks the next run at most this long.
    maintenance.set_defaults(func=_maintenance, lock_ttl=6 * 3600)


def _check_counts(args: argparse.Namespace) -> None:
    if getattr(args, "concurrency", 1) < 1:
        raise UsageError("--concurrency must be at least 1")
    if getattr(args, "page_size", 1) < 1 or getattr(args, "page_size", 1) > 50000:
        raise UsageError("--page-size must be between 1 and 50000 (MLflow's limit)")


def _cleanup(args: argparse.Namespace) -> int:
    from lifecycle import runs
    from lifecycle.durations import parse_duration, parse_statuses

    def action(target: Target) -> tuple[dict[str, Any], list[str], int]:
        _check_counts(args)
        report = runs.cleanup(
            target.conn,
            args.experiment,
            parse_duration(args.older_than),
            parse_statuses(args.status, runs.TERMINAL_STATUSES),
            apply=args.apply,
            concurrency=args.concurrency,
            page_size=args.page_size,
        )
        return report.to_json(), _cleanup_lines(report), EXIT_OK if report.ok else EXIT_FAILED

    return run_command(args, action, "runs cleanup")


def _cleanup_lines(report: Any) -> list[str]:
    mode = "DRY RUN (pass --apply to delete)" if report.dry_run else "APPLIED"
    lines = [
        f"runs cleanup: {mode}",
        f"  experiments matching {report.experiment_pattern!r}: {len(report.experiments)}",
        f"  runs scanned: {report.scanned} in {report.pages} page(s)",
        _ids("kept (tag keep=true)", report.kept_by_tag),
        _ids("kept (a model version points to them)", report.kept_by_model_version),
        _ids("to delete" if report.dry_run else "selected", report.to_delete),
    ]
    if not report.dry_run:
        lines += [
            _ids("deleted", report.deleted),
            _ids("already gone", report.already_gone),
            _ids("failed", sorted(report.failed)),
        ]
        lines += [f"    {run_id}: {message}" for run_id, message in list(report.failed.items())[:10]]
    lines.append(f"  seconds: {report.seconds}")
    return lines


def _reap(args: argparse.Namespace) -> int:
    from lifecycle import runs
    from lifecycle.durations import parse_duration

    def action(target: Target) -> tuple[dict[str, Any], list[str], int]:
        _check_counts(args)
        report = runs.reap_stuck(
            target.conn, parse_duration(args.older_than), args.experiment, args.apply, args.concurrency
        )
        return report.to_json(), _reap_lines(report), EXIT_OK if report.ok else EXIT_FAILED

    return run_command(args, action, "runs reap-stuck")


def _reap_lines(report: Any) -> list[str]:
    mode = "DRY RUN (pass --apply to mark them FAILED)" if report.dry_run else "APPLIED"
    lines = [f"runs reap-stuck: {mode}", _ids("stuck RUNNING runs", [r["run_id"] for r in report.stuck])]
    if not report.dry_run:
        lines += [_ids("set to FAILED", report.reaped), _ids("failed", sorted(report.failed))]
    return lines


def _gc(args: argparse.Namespace) -> int:
    from lifecycle.durations import parse_duration
    from lifecycle.gc import collect_garbage

    def action(target: Target) -> tuple[dict[str, Any], list[str], int]:
        age = parse_duration(args.older_than)
        uri = gc_backend_store_uri(target) if args.apply else None
        report = collect_garbage(target.conn, age, apply=args.apply, backend_store_uri=uri)
        return report.to_json(), _gc_lines(report), EXIT_OK

    return run_command(args, action, "runs gc")


def _gc_lines(report: Any) -> list[str]:
    mode = "DRY RUN (pass --apply to remove for good)" if report.dry_run else "APPLIED"
    lines = [
        f"runs gc: {mode}",
        _ids("deleted runs started before the cutoff", [r["run_id"] for r in report.candidate_runs]),
        _ids("deleted experiments", [e["experiment_id"] for e in report.deleted_experiments]),
    ]
    if report.dry_run:
        lines.append(f"  note: {report.note}")
    else:
        lines += [
            _ids("runs removed for good (with their artifacts)", report.removed_runs),
            _ids("logged models removed", report.removed_logged_models),
            _ids("deleted runs kept (deleted too recently)", report.still_deleted_runs),
        ]
    return lines


def _maintenance(args: argparse.Namespace) -> int:
    from lifecycle import runs
    from lifecycle.durations import parse_duration, parse_statuses
    from lifecycle.gc import collect_garbage
    from lifecycle.locks import MAINTENANCE_LOCK_ID

    def action(target: Target) -> tuple[dict[str, Any], list[str], int]:
        _check_counts(args)
        # Parse every value first: bad input fails before anything is changed.
        reap_age = parse_duration(args.reap_older_than, "--reap-older-than")
        cleanup_age = parse_duration(args.cleanup_older_than, "--cleanup-older-than")
        gc_age = parse_duration(args.gc_older_than, "--gc-older-than")
        statuses = parse_statuses(args.cleanup_status, runs.TERMINAL_STATUSES, "--cleanup-status")
        uri = gc_backend_store_uri(target) if args.apply else None
        lease = make_lock(args, target, MAINTENANCE_LOCK_ID) if args.apply else None
        with lease.hold(args.wait) if lease else contextlib.nullcontext():
            # Reap first, so runs it marks FAILED are judged by cleanup in the same pass.
            reaped = runs.reap_stuck(target.conn, reap_age, "*", args.apply, args.concurrency)
            cleaned = runs.cleanup(
                target.conn, args.cleanup_experiment, cleanup_age, statuses, args.apply, args.concurrency
            )
            collected = collect_garbage(target.conn, gc_age, apply=args.apply, backend_store_uri=uri)
        ok = reaped.ok and cleaned.ok
        body = {"reap_stuck": reaped.to_json(), "cleanup": cleaned.to_json(), "gc": collected.to_json()}
        lines = [*_reap_lines(reaped), *_cleanup_lines(cleaned), *_gc_lines(collected)]
        return body, lines, EXIT_OK if ok else EXIT_FAILED

    return run_command(args, action, "runs maintenance")


def main(argv: list[str] | None = None) -> int:
    """`python -m cli.runs runs ...`: only the run commands, for the server image's maintenance task.

    `cli.main` registers every sub-command, and some (`local`) import packages the server image
    does not install; this entry point imports nothing beyond lifecycle/, server/ and their deps.
    """
    parser = argparse.ArgumentParser(prog="mlflow-stack", description="MLflow run housekeeping.")
    register(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
