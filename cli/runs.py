"""`mlflow-stack runs cleanup | reap-stuck | gc | maintenance`: run housekeeping.

Thin glue over lifecycle/runs.py and lifecycle/gc.py. Anything destructive is a dry run unless
--apply. Every command prints a readable summary, or one JSON document with --json.

Exit codes (shared with `mlflow-stack models`):
  0  done (or, in a dry run, listed)        1  some runs could not be changed (listed in the report)
  2  bad options or unresolvable target     3  the server or its API failed (nothing more was tried)
  4  lock held by another pipeline          5  the registry is not in a state to act on
  130 interrupted (Ctrl-C, SIGINT or SIGTERM): what was done is kept; rerun the same command to finish
This module also holds the connection and lock options `cli/models.py` shares.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lifecycle.client import DEFAULT_TIMEOUT_SECONDS

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_API = 3
EXIT_LOCKED = 4
EXIT_PRECONDITION = 5
EXIT_INTERRUPTED = 130  # the shell's convention for Ctrl-C

DEFAULT_LOCK_TABLE = "mlflow-stack-locks"


# --- options shared with cli/models.py --------------------------------------------------------


def add_connection_flags(parser: argparse.ArgumentParser) -> None:
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--url", help="the server's https:// URL (with --username and --password-file)")
    target.add_argument("--stack", metavar="NAME", help="a deployed Pulumi stack: outputs + Secrets Manager")
    target.add_argument(
        "--local", action="store_true", help="the running local stack (`mlflow-stack local up`)"
    )
    parser.add_argument("--username", help="with --url: the basic-auth user")
    parser.add_argument(
        "--password-file",
        metavar="FILE",
        help=(
            "with --url: file holding the password "
            "(default: $MLFLOW_TRACKING_PASSWORD; never on the command line)"
        ),
    )
    parser.add_argument(
        "--ca-file", metavar="PEM", help="verify the server's certificate against this CA bundle"
    )
    parser.add_argument("--state-dir", metavar="DIR", help="with --local: the local stack's state directory")
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_SECONDS,
        metavar="SECONDS",
        help=f"per-request timeout (default {DEFAULT_TIMEOUT_SECONDS:g})",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document (for CI)")


def add_lock_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--lock-table",
        metavar="TABLE",
        help=(
            f"DynamoDB lock table (default: the stack's, else {DEFAULT_LOCK_TABLE}); "
            "region from AWS_REGION or the profile"
        ),
    )
    parser.add_argument(
        "--aws-endpoint-url",
        metavar="URL",
        help="DynamoDB endpoint for an emulator (local only; --local sets it)",
    )
    parser.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="wait this long for another pipeline's promotion/rollback to finish (default 0: fail at once)",
    )
    parser.add_argument(
        "--lock-ttl",
        type=int,
        default=120,
        metavar="SECONDS",
        help="lease length; a crashed holder blocks the model at most this long (default 120)",
    )


@dataclass
class Target:
    """Where to talk to: the server connection, plus what --stack/--local know about locks and DB."""

    conn: Any  # lifecycle.client.Connection
    lock_table: str | None = None
    aws_endpoint_url: str | None = None
    aws_credentials: dict[str, str] | None = None
    aws_region: str | None = None
    local_state_dir: str | None = None


class UsageError(ValueError):
    pass


def option_errors(args: argparse.Namespace) -> list[str]:
    errors = []
    if not args.url:
        errors += [
            f"--{n.replace('_', '-')} is only used with --url"
            for n in ("username", "password_file")
            if getattr(args, n)
        ]
    if args.url and not args.username:
        errors.append("--url needs --username (the basic-auth user)")
    if args.state_dir and not args.local:
        errors.append("--state-dir is only used with --local")
    if args.local and args.ca_file:
        errors.append("--ca-file is not used with --local (the local stack reports its own)")
    if args.timeout <= 0:
        errors.append("--timeout must be a positive number of seconds")
    return errors


def resolve_target(args: argparse.Namespace) -> Target:
    """The same resolution `mlflow-stack smoke` uses (lifecycle.credentials / Connection.from_*)."""
    from lifecycle import credentials
    from lifecycle.client import Connection

    errors = option_errors(args)
    if errors:
        raise UsageError("; ".join(errors))
    try:
        if args.url:
            target = credentials.resolve_url(args.url, args.username, args.password_file, args.ca_file)
            return Target(Connection.from_target(target, timeout=args.timeout))
        if args.stack:
            target = credentials.resolve_stack(args.stack, ca_file=args.ca_file)
            outputs = credentials.read_stack_outputs(args.stack)
            return Target(
                Connection.from_target(target, timeout=args.timeout),
                lock_table=outputs.get("lock_table"),
                aws_region=outputs.get("region"),
            )
        from local import s3_emulator
        from local.stack import DEFAULT_STATE_DIR, LocalStack

        conn = Connection.from_local(args.state_dir, timeout=args.timeout)
        info = LocalStack(args.state_dir or DEFAULT_STATE_DIR).status()
        return Target(
            conn,
            lock_table=info.lock_table,
            aws_endpoint_url=info.s3_endpoint_url,
            aws_credentials=dict(s3_emulator.DUMMY_CREDENTIALS),
            local_state_dir=info.state_dir,
        )
    except credentials.TargetError as error:
        raise UsageError(str(error)) from None
    except ValueError as error:
        raise UsageError(str(error)) from None


def make_lock(args: argparse.Namespace, target: Target, lock_id: str) -> Any:
    from lifecycle.locks import DynamoLock, dynamodb_client

    if args.lock_ttl <= 0:
        raise UsageError("--lock-ttl must be a positive number of seconds")
    if args.wait < 0:
        raise UsageError("--wait must not be negative")
    endpoint = args.aws_endpoint_url or target.aws_endpoint_url
    client = dynamodb_client(endpoint, target.aws_region, target.aws_credentials if endpoint else None)
    table = args.lock_table or target.lock_table
    if table is None and getattr(args, "stack", None):
        # A deployed stack always exports its table; guessing a name here would take a lock in a
        # table no other pipeline uses, which is no lock at all.
        raise UsageError(
            f"stack {args.stack} exports no lock_table output: run `pulumi up` with the current kit "
            "(every stack creates its lock table), or name the table with --lock-table"
        )
    table = table or DEFAULT_LOCK_TABLE
    return DynamoLock(client, table, lock_id, ttl_seconds=args.lock_ttl)


def run_command(
    args: argparse.Namespace, action: Callable[[Target], tuple[dict[str, Any], list[str], int]], name: str
) -> int:
    """Resolve the target, run `action`, print its lines or JSON; map every failure to an exit code.

    `action` returns (json body, human lines, exit code).
    """
    from lifecycle.client import MlflowApiError
    from lifecycle.durations import InvalidValue
    from lifecycle.gc import GcConfigError, GcFailed
    from lifecycle.locks import LockHeld, LockUnavailable
    from lifecycle.models import LockLost, PreconditionFailed

    def fail(code: int, kind: str, message: str) -> int:
        if args.json:
            print(
                json.dumps(
                    {"ok": False, "command": name, "error": kind, "message": message, "exit_code": code}
                )
            )
        else:
            print(f"mlflow-stack {name}: {message}", file=sys.stderr)
        return code

    # ECS stops a task with SIGTERM (then SIGKILL 30 s later): treat it like Ctrl-C, so the
    # requests in flight finish and the report says what was done.
    previous_handler = signal.signal(signal.SIGTERM, _interrupt)
    try:
        target = resolve_target(args)
        with target.conn:
            body, lines, code = action(target)
    except (UsageError, InvalidValue, GcConfigError) as error:
        return fail(EXIT_USAGE, "usage", str(error))
    except MlflowApiError as error:
        return fail(EXIT_API, "api", str(error))
    except LockHeld as error:
        return fail(EXIT_LOCKED, "locked", str(error))
    except (LockUnavailable, LockLost, GcFailed) as error:
        return fail(EXIT_API, "lock", str(error))
    except PreconditionFailed as error:
        return fail(EXIT_PRECONDITION, "precondition", str(error))
    except KeyboardInterrupt as error:
        # Every write is idempotent and nothing is half-done per run: rerunning finishes the job.
        return fail(
            EXIT_INTERRUPTED, "interrupted", f"{error or 'interrupted'}; rerun the same command to finish"
        )
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
    if args.json:
        print(json.dumps({"ok": code == EXIT_OK, "command": name, "exit_code": code, **body}, default=str))
    else:
        print("\n".join(lines))
    return code


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"stopped by signal {signal.Signals(signum).name}")


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


def gc_backend_store_uri(target: Target) -> str:
    """The tracking DB URI: from the local stack's state dir with --local, else the contract env."""
    from lifecycle.gc import backend_store_uri_from_env
    from server import contract

    if target.local_state_dir is None:
        return backend_store_uri_from_env()
    from local.stack import DB_NAME, DB_USER, LocalStack

    state_dir = Path(target.local_state_dir)
    try:
        state = json.loads((state_dir / "state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise UsageError(
            f"--local: cannot read {state_dir / 'state.json'} ({error}); is the stack up?"
        ) from None
    return backend_store_uri_from_env(
        {
            contract.DB_HOST.name: "127.0.0.1",
            contract.DB_PORT.name: str(state["ports"]["postgres"]),
            contract.DB_NAME.name: DB_NAME,
            contract.DB_USER.name: DB_USER,
            contract.DB_SSLMODE.name: "disable",
            contract.DB_PASSWORD.name + contract.FILE_SUFFIX: str(LocalStack(state_dir).secrets.db_password),
        }
    )


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
