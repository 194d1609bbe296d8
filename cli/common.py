"""What `mlflow-stack runs` and `mlflow-stack models` share: the target and lock options, the
exit codes, and running one command with every failure mapped to its exit code.

Exit codes:
  0  done (or, in a dry run, listed)        1  some runs could not be changed (listed in the report)
  2  bad options or unresolvable target     3  the server or its API failed (nothing more was tried)
  4  lock held by another pipeline          5  the registry is not in a state to act on
  130 interrupted (Ctrl-C, SIGINT or SIGTERM): what was done is kept; rerun the same command to finish
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

from lifecycle import credentials
from lifecycle.client import DEFAULT_TIMEOUT_SECONDS
from lifecycle.targets import DEFAULT_LOCK_TABLE, Target, UsageError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_API = 3
EXIT_LOCKED = 4
EXIT_PRECONDITION = 5
EXIT_INTERRUPTED = 130  # the shell's convention for Ctrl-C


# The epilog of every command that talks to a server (the precedence: lifecycle/credentials.py).
TARGET_PRECEDENCE = (
    "Which server: --url, --stack or --local when given; otherwise MLflow's client variables "
    "MLFLOW_TRACKING_URI, MLFLOW_TRACKING_USERNAME, MLFLOW_TRACKING_PASSWORD and "
    "MLFLOW_TRACKING_SERVER_CERT_PATH; with neither, the command refuses (exit 2). With --url, "
    "--username/--password-file/--ca-file fall back to those variables. MLFLOW_TRACKING_INSECURE_TLS=true "
    "is refused: certificates are always verified."
)


def add_connection_flags(parser: argparse.ArgumentParser) -> None:
    # Not required: with no target flag the MLFLOW_TRACKING_* variables name the server.
    target = parser.add_mutually_exclusive_group()
    target.add_argument(
        "--url",
        help="the server's https:// URL (with --username and --password-file; default $MLFLOW_TRACKING_URI)",
    )
    target.add_argument("--stack", metavar="NAME", help="a deployed Pulumi stack: outputs + Secrets Manager")
    target.add_argument(
        "--local", action="store_true", help="the running local stack (`mlflow-stack local up`)"
    )
    parser.add_argument(
        "--username", help="with --url: the basic-auth user (default $MLFLOW_TRACKING_USERNAME)"
    )
    parser.add_argument(
        "--password-file",
        metavar="FILE",
        help=(
            "with --url: file holding the password "
            "(default: $MLFLOW_TRACKING_PASSWORD; never on the command line)"
        ),
    )
    parser.add_argument(
        "--ca-file",
        metavar="PEM",
        help="verify the server's certificate against this CA bundle "
        "(default $MLFLOW_TRACKING_SERVER_CERT_PATH)",
    )
    parser.epilog = TARGET_PRECEDENCE
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


def option_errors(args: argparse.Namespace) -> list[str]:
    errors = []
    if not args.url:
        errors += [
            f"--{n.replace('_', '-')} is only used with --url"
            for n in ("username", "password_file")
            if getattr(args, n)
        ]
    if args.url and not (args.username or os.environ.get(credentials.USERNAME_ENV_VAR)):
        errors.append(f"--url needs --username (the basic-auth user) or {credentials.USERNAME_ENV_VAR}")
    if args.state_dir and not args.local:
        errors.append("--state-dir is only used with --local")
    if args.local and args.ca_file:
        errors.append("--ca-file is not used with --local (the local stack reports its own)")
    if args.timeout <= 0:
        errors.append("--timeout must be a positive number of seconds")
    return errors


def resolve_target(args: argparse.Namespace) -> Target:
    """The target the options name (lifecycle.targets), after checking the options fit together."""
    from lifecycle import targets

    errors = option_errors(args)
    if errors:
        raise UsageError("; ".join(errors))
    return targets.resolve_target(
        url=args.url,
        username=args.username,
        password_file=args.password_file,
        ca_file=args.ca_file,
        stack=args.stack,
        local=args.local,
        state_dir=args.state_dir,
        timeout=args.timeout,
    )


def make_lock(args: argparse.Namespace, target: Target, lock_id: str) -> Any:
    from lifecycle import targets

    return targets.make_lock(
        target,
        lock_id,
        ttl_seconds=args.lock_ttl,
        wait_seconds=args.wait,
        lock_table=args.lock_table,
        aws_endpoint_url=args.aws_endpoint_url,
        stack=getattr(args, "stack", None),
    )


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
