"""`mlflow-stack db status | doctor | restore-drill | verify-restore`: the database, day 2.

Thin glue over lifecycle/db_*.py. Exit codes (those of `mlflow-stack runs`, cli/common.py):
0 healthy / at head / drill passed, 1 pending migrations, a warning finding, or a failed drill or
verification, 2 bad options or unresolvable target, 3 the database or server could not be reached.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from cli.common import (
    EXIT_API,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    Target,
    add_connection_flags,
    run_command,
)
from lifecycle.targets import UsageError


def _add_database_target(parser: argparse.ArgumentParser, *, stack: bool = True) -> None:
    target = parser.add_mutually_exclusive_group(required=True)
    if stack:
        target.add_argument(
            "--stack",
            metavar="NAME",
            help="a deployed stack: its RDS instance (reachable from where this runs, or --db-host)",
        )
    target.add_argument("--local", action="store_true", help="the local stack (`mlflow-stack local up`)")
    parser.add_argument("--state-dir", metavar="DIR", help="with --local: the local stack's state directory")
    if stack:
        parser.add_argument(
            "--db-host",
            metavar="HOST",
            help="with --stack: connect here instead of the RDS endpoint (a tunnel, e.g. 127.0.0.1)",
        )
        parser.add_argument("--db-port", type=int, metavar="PORT", help="with --stack: the tunnel's port")
    parser.add_argument("--json", action="store_true", help="print one JSON document (for CI)")


def register(subparsers: argparse._SubParsersAction) -> None:
    db = subparsers.add_parser(
        "db",
        help="database: schema status, doctor, restore drill, verify a restore",
        description=(
            "Day-2 commands for the PostgreSQL behind the server. They connect as the application role "
            "(never the master user) and only read, except restore-drill, which restores into a "
            "PostgreSQL of its own."
        ),
    )
    commands = db.add_subparsers(dest="db_command", required=True, metavar="COMMAND")

    status = commands.add_parser(
        "status",
        help="schema revisions of both databases vs this MLflow's, pending migrations, last backup",
        description=(
            "Exit 0 when both databases are at this MLflow's head revision, 1 when migrations are pending "
            "(the next server start runs them) or the database holds a revision this MLflow does not know."
        ),
    )
    _add_database_target(status)
    status.set_defaults(func=_status)

    doctor = commands.add_parser(
        "doctor",
        help="table/index sizes, dead tuples and bloat, slowest statements, long transactions, connections",
        description=(
            "Every finding comes with its fix. Exit 1 when there is a warning. Never suggests VACUUM FULL "
            "while serving: it locks the table for reads and writes."
        ),
    )
    _add_database_target(doctor)
    doctor.add_argument(
        "--long-transaction-seconds",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="report transactions open longer than this (default 300)",
    )
    doctor.add_argument(
        "--top", type=int, default=5, help="largest tables and slowest statements shown (default 5)"
    )
    doctor.set_defaults(func=_doctor)

    drill = commands.add_parser(
        "restore-drill",
        help="dump, restore into a fresh PostgreSQL, start a replica, compare counts, smoke, tear down",
        description=(
            "Proves the local stack's databases restore and times every step. The dump is kept in "
            "<state>/backups/ (the newest three) unless --discard-dump."
        ),
    )
    _add_database_target(drill, stack=False)
    drill.add_argument("--discard-dump", action="store_true", help="delete the dump when done")
    drill.add_argument("--no-smoke", action="store_true", help="skip the smoke on the restored replica")
    drill.set_defaults(func=_restore_drill)

    verify = commands.add_parser(
        "verify-restore",
        help="after a restore: orphaned artifact references (gc), models doctor on every model, aliases",
        description=(
            "The checks the restore procedure asks for, against the server running on the restored "
            "database. Read-only: it lists what `runs gc --apply` would purge, it does not purge."
        ),
    )
    add_connection_flags(verify)
    verify.add_argument(
        "--gc-older-than",
        default="1s",
        metavar="AGE",
        help="list deleted runs older than this as gc candidates (default 1s: every deleted run)",
    )
    verify.add_argument(
        "--models",
        default="*",
        metavar="PATTERN",
        help="only registered models whose name matches this shell-style pattern (default: all)",
    )
    verify.set_defaults(func=_verify_restore)


def _resolve(args: argparse.Namespace) -> Any:
    from lifecycle.db_target import resolve_local_database, resolve_stack_database

    if args.state_dir and not args.local:
        raise UsageError("--state-dir is only used with --local")
    if args.local:
        if getattr(args, "db_host", None) or getattr(args, "db_port", None):
            raise UsageError("--db-host/--db-port are only used with --stack")
        return resolve_local_database(args.state_dir)
    return resolve_stack_database(args.stack, host=args.db_host, port=args.db_port)


def _run(
    args: argparse.Namespace, name: str, action: Callable[[Any], tuple[dict[str, Any], list[str], int]]
) -> int:
    import botocore.exceptions
    import psycopg

    from lifecycle.db_drill import DrillFailed, drill_lines
    from lifecycle.db_target import DatabaseUnreachable

    def fail(code: int, kind: str, message: str, body: dict[str, Any] | None = None) -> int:
        if args.json:
            print(
                json.dumps(
                    {
                        "ok": False,
                        "command": name,
                        "error": kind,
                        "message": message,
                        "exit_code": code,
                        **(body or {}),
                    },
                    default=str,
                )
            )
        else:
            print(f"mlflow-stack {name}: {message}", file=sys.stderr)
        return code

    try:
        body, lines, code = action(_resolve(args))
    except UsageError as error:
        return fail(EXIT_USAGE, "usage", str(error))
    except DatabaseUnreachable as error:
        return fail(EXIT_API, "database", str(error))
    except psycopg.Error as error:
        # A query refused (a privilege, a lock timeout): PostgreSQL's message, never a password.
        return fail(EXIT_API, "database", f"{type(error).__name__}: {str(error).strip()}")
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
        return fail(EXIT_API, "aws", f"the RDS API failed reading the backups: {error}")
    except DrillFailed as error:
        if not args.json:
            print("\n".join(drill_lines(error.report)))
        return fail(EXIT_FAILED, "drill", str(error), error.report.to_json())
    if args.json:
        print(json.dumps({"ok": code == EXIT_OK, "command": name, "exit_code": code, **body}, default=str))
    else:
        print("\n".join(lines))
    return code


def _status(args: argparse.Namespace) -> int:
    from lifecycle.db_status import database_status, status_lines

    def action(target: Any) -> tuple[dict[str, Any], list[str], int]:
        report = database_status(target)
        return report.to_json(), status_lines(report), EXIT_OK if report.up_to_date else EXIT_FAILED

    return _run(args, "db status", action)


def _doctor(args: argparse.Namespace) -> int:
    from lifecycle.db_doctor import doctor_lines, run_doctor

    def action(target: Any) -> tuple[dict[str, Any], list[str], int]:
        if args.long_transaction_seconds < 0 or args.top < 1:
            raise UsageError("--long-transaction-seconds must be >= 0 and --top >= 1")
        report = run_doctor(target, long_transaction_seconds=args.long_transaction_seconds, top=args.top)
        return report.to_json(), doctor_lines(report), EXIT_OK if report.healthy else EXIT_FAILED

    return _run(args, "db doctor", action)


def _restore_drill(args: argparse.Namespace) -> int:
    from lifecycle.db_drill import drill_lines, restore_drill

    def action(target: Any) -> tuple[dict[str, Any], list[str], int]:
        report = restore_drill(target, keep_dump=not args.discard_dump, smoke=not args.no_smoke)
        return report.to_json(), drill_lines(report), EXIT_OK if report.passed else EXIT_FAILED

    return _run(args, "db restore-drill", action)


def _verify_restore(args: argparse.Namespace) -> int:
    from lifecycle.db_verify import verify_lines, verify_restore
    from lifecycle.durations import parse_duration

    def action(target: Target) -> tuple[dict[str, Any], list[str], int]:
        report = verify_restore(
            target.conn,
            gc_older_than=parse_duration(args.gc_older_than, "--gc-older-than"),
            models=args.models,
        )
        return report.to_json(), verify_lines(report), EXIT_OK if report.passed else EXIT_FAILED

    return run_command(args, action, "db verify-restore")
