"""`mlflow-stack local up | down | status`: the whole stack on this machine, one command.

Thin glue over `local.stack.LocalStack`. Exit codes: 0 success (for `status`: running);
1 the stack failed to start or is not running; 2 bad options (e.g. a port already taken).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def _add_state_dir(parser: argparse.ArgumentParser) -> None:
    from local.stack import DEFAULT_STATE_DIR

    parser.add_argument(
        "--state-dir",
        type=Path,
        default=DEFAULT_STATE_DIR,
        metavar="DIR",
        help=f"where secrets, data, logs and PIDs live (default: {DEFAULT_STATE_DIR})",
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    from local.stack import DEFAULT_LOCK_TABLE, DEFAULT_TIMEOUT_SECONDS, Ports

    defaults = Ports()
    parser = subparsers.add_parser(
        "local",
        help="run the stack locally: PostgreSQL, S3 emulator, N MLflow replicas behind a TLS load balancer",
        description="Start, stop or inspect the local stack (no cloud account needed).",
    )
    actions = parser.add_subparsers(dest="local_command", required=True, metavar="ACTION")

    up = actions.add_parser("up", help="start the stack (idempotent: says so if it is already running)")
    _add_state_dir(up)
    up.add_argument("--replicas", type=int, default=2, help="MLflow replicas behind the balancer (default 2)")
    up.add_argument("--workers", type=int, default=1, help="uvicorn workers per replica (default 1)")
    up.add_argument(
        "--artifact-client-access",
        choices=("proxied", "presigned"),
        default="proxied",
        help="the stack setting artifacts.clientAccess: every artifact byte through the server (proxied, "
        "default), or large files straight to the S3 emulator by presigned URL (presigned)",
    )
    up.add_argument(
        "--workspaces",
        action="store_true",
        help="the stack setting server.workspaces: MLflow workspaces (`mlflow server --enable-workspaces`)",
    )
    up.add_argument("--https-port", type=int, default=defaults.https, help=f"default {defaults.https}")
    up.add_argument(
        "--http-port", type=int, default=defaults.http, help=f"redirects to HTTPS (default {defaults.http})"
    )
    up.add_argument(
        "--postgres-port", type=int, default=defaults.postgres, help=f"default {defaults.postgres}"
    )
    up.add_argument(
        "--s3-port", type=int, default=defaults.s3, help=f"S3/DynamoDB emulator (default {defaults.s3})"
    )
    up.add_argument(
        "--replica-base-port",
        type=int,
        default=defaults.replica_base,
        help=f"replica i listens on this + i (default {defaults.replica_base})",
    )
    up.add_argument(
        "--lock-table", default=DEFAULT_LOCK_TABLE, help=f"DynamoDB lock table (default {DEFAULT_LOCK_TABLE})"
    )
    up.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_SECONDS,
        metavar="SECONDS",
        help=f"how long to wait for each replica to become healthy (default {DEFAULT_TIMEOUT_SECONDS:g})",
    )
    up.add_argument("--json", action="store_true", help="print the stack's details as JSON")
    up.set_defaults(func=run_up)

    down = actions.add_parser("down", help="stop what `up` started (by PID); keeps data unless --purge")
    _add_state_dir(down)
    down.add_argument(
        "--purge", action="store_true", help="also delete the state dir: data, secrets, CA, logs"
    )
    down.set_defaults(func=run_down)

    status = actions.add_parser("status", help="show URL, credentials location and processes")
    _add_state_dir(status)
    status.add_argument("--json", action="store_true", help="machine-readable output for scripts")
    status.set_defaults(func=run_status)


def _print_info(info, heading: str) -> None:  # type: ignore[no-untyped-def]
    print(heading)
    print(f"  URL:        {info.url}   (http: {info.http_url} redirects to it)")
    print(f"  username:   {info.username}")
    print(f"  password:   in {info.password_file}")
    print(f"  trust CA:   {info.ca_file}")
    print(f"  S3 API:     {info.s3_endpoint_url}   lock table: {info.lock_table}")
    print(f"  state dir:  {info.state_dir}")
    print("  use it:")
    print(f"    export MLFLOW_TRACKING_URI={info.url}")
    print(f"    export MLFLOW_TRACKING_USERNAME={info.username}")
    print(f'    export MLFLOW_TRACKING_PASSWORD="$(cat {info.password_file})"')
    print(f"    export MLFLOW_TRACKING_SERVER_CERT_PATH={info.ca_file}")
    for proc in info.processes:
        state = "running" if proc.running else "STOPPED"
        print(f"  {proc.name:<12} pid {proc.pid:<8} {state:<8} log: {proc.log_file}")


def _json(info) -> str:  # type: ignore[no-untyped-def]
    data = info.to_json()
    data["running"] = info.running
    return json.dumps(data, indent=2)


def run_up(args: argparse.Namespace) -> int:
    from local.stack import LocalStack, LocalStackError, Ports

    started = time.monotonic()
    try:
        stack = LocalStack(
            args.state_dir,
            replicas=args.replicas,
            ports=Ports(
                https=args.https_port,
                http=args.http_port,
                postgres=args.postgres_port,
                s3=args.s3_port,
                replica_base=args.replica_base_port,
            ),
            workers=args.workers,
            lock_table=args.lock_table,
            timeout=args.timeout,
            artifact_client_access=args.artifact_client_access,
            workspaces=args.workspaces,
        )
        info = stack.up()
    except LocalStackError as exc:
        print(f"mlflow-stack local up: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # any failure: one message, not a traceback; `up` already cleaned up
        print(
            f"mlflow-stack local up failed: {exc}\nEverything it started was stopped; "
            f"logs are in {Path(args.state_dir).resolve() / 'logs'}.",
            file=sys.stderr,
        )
        return 1
    if args.json:
        print(_json(info))
    elif info.already_running:
        _print_info(info, "The local stack is already running (nothing was changed):")
    else:
        _print_info(info, f"The local stack is up ({time.monotonic() - started:.1f}s):")
    return 0


def run_down(args: argparse.Namespace) -> int:
    from local.stack import LocalStack

    stopped = LocalStack(args.state_dir).down(purge=args.purge)
    what = ", ".join(stopped) if stopped else "nothing was running"
    kept = "deleted the state dir" if args.purge else f"data kept in {Path(args.state_dir).resolve()}"
    print(f"Stopped: {what}; {kept}.")
    return 0


def run_status(args: argparse.Namespace) -> int:
    from local.stack import LocalStack

    info = LocalStack(args.state_dir).status()
    if args.json:
        print(_json(info))
    elif info.running:
        _print_info(info, "The local stack is running:")
    else:
        for proc in info.processes:
            state = "running" if proc.running else "STOPPED"
            print(f"  {proc.name:<12} pid {proc.pid:<8} {state:<8} log: {proc.log_file}")
    if not info.running:
        print(
            f"The local stack in {info.state_dir} is not running; start it with `mlflow-stack local up`.",
            file=sys.stderr,
        )
        return 1
    return 0
