"""`mlflow-stack smoke [--url URL | --stack NAME | --local]`: the post-deploy check.

With no target flag, MLflow's client variables name the server (MLFLOW_TRACKING_URI, _USERNAME,
_PASSWORD, _SERVER_CERT_PATH); the precedence is lifecycle/credentials.py's.

Thin glue: resolve the target (lifecycle.credentials), run lifecycle.smoke, print the report.
Exit codes: 0 every check passed and cleanup succeeded; 1 a check or a cleanup step failed;
2 bad options or the target could not be resolved (nothing was sent to the server); 130 interrupted
(after cleanup).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

from cli.common import TARGET_PRECEDENCE
from lifecycle.client import DEFAULT_TIMEOUT_SECONDS
from lifecycle.credentials import USERNAME_ENV_VAR
from lifecycle.smoke_report import EXIT_USAGE

# The shell's convention for "stopped by SIGINT".
EXIT_INTERRUPTED = 130

URL_ONLY_OPTIONS = ("username", "password_file")
NOT_LOCAL_OPTIONS = ("ca_file", "http_url")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "smoke",
        help="post-deploy check: TLS, auth, tracking, artifacts, registry, isolation; cleans up after itself",
        description=(
            "Run the smoke checks against a deployment and print a report (check, result, seconds, "
            "detail). Exits 1 if any check or cleanup step fails, 2 on bad options."
        ),
        # No prefix matching: `--password X` must not silently mean `--password-file X`.
        allow_abbrev=False,
    )
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
        "--username", help="with --url: the basic-auth admin user (default $MLFLOW_TRACKING_USERNAME)"
    )
    parser.add_argument(
        "--password-file",
        metavar="FILE",
        help="with --url: file holding the password (default: $MLFLOW_TRACKING_PASSWORD; "
        "never on the command line)",
    )
    # Accepted only to refuse it with a useful message (argv is visible to every user via `ps`).
    parser.add_argument("--password", dest="password_argument", help=argparse.SUPPRESS)
    parser.add_argument(
        "--ca-file",
        metavar="PEM",
        help="verify the server's certificate against this CA bundle "
        "(default $MLFLOW_TRACKING_SERVER_CERT_PATH)",
    )
    parser.add_argument(
        "--http-url",
        metavar="URL",
        help="plain-HTTP address that must redirect to HTTPS (default: the same host on port 80)",
    )
    parser.add_argument(
        "--artifact-client-access",
        choices=("proxied", "presigned"),
        help="the artifacts.clientAccess the server must offer (default: --stack/--local read it from the "
        "stack; with --url the server's own answer is exercised)",
    )
    parser.add_argument("--state-dir", metavar="DIR", help="with --local: the local stack's state directory")
    parser.add_argument("--json", action="store_true", help="print the report as JSON (machine-readable)")
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_SECONDS,
        metavar="SECONDS",
        help=f"per-request timeout (default {DEFAULT_TIMEOUT_SECONDS:g})",
    )
    parser.add_argument("--keep", action="store_true", help="leave the smoke objects in place, for debugging")
    parser.epilog = TARGET_PRECEDENCE
    parser.set_defaults(func=run, parser=parser)


def _option_errors(args: argparse.Namespace) -> list[str]:
    errors = []
    if args.password_argument is not None:
        errors.append(
            "a password is never accepted on the command line (other users can read it with `ps`); "
            "use --password-file FILE or the MLFLOW_TRACKING_PASSWORD environment variable"
        )
    if not args.url:
        errors += [
            f"--{name.replace('_', '-')} is only used with --url"
            for name in URL_ONLY_OPTIONS
            if getattr(args, name)
        ]
    if args.local:
        errors += [
            f"--{name.replace('_', '-')} is not used with --local (the local stack reports its own)"
            for name in NOT_LOCAL_OPTIONS
            if getattr(args, name)
        ]
    if args.state_dir and not args.local:
        errors.append("--state-dir is only used with --local")
    if args.url and not (args.username or os.environ.get(USERNAME_ENV_VAR)):
        errors.append(f"--url needs --username (the basic-auth admin user) or {USERNAME_ENV_VAR}")
    if args.timeout <= 0:
        errors.append("--timeout must be a positive number of seconds")
    return errors


def run(args: argparse.Namespace) -> int:
    from lifecycle import credentials
    from lifecycle.smoke import new_smoke_id, run_smoke
    from lifecycle.smoke_report import CheckResult, format_footer, format_header, format_json, format_row

    errors = _option_errors(args)
    if errors:
        args.parser.error("; ".join(errors))
    try:
        if args.url:
            target = credentials.resolve_url(
                args.url, args.username, args.password_file, args.ca_file, args.http_url
            )
        elif args.stack:
            target = credentials.resolve_stack(args.stack, ca_file=args.ca_file)
            if args.http_url:
                target = credentials.with_http_url(target, args.http_url)
        elif args.local:
            target = credentials.resolve_local(args.state_dir)
        else:
            from_env = credentials.resolve_env(ca_file=args.ca_file)
            if from_env is None:
                raise credentials.TargetError(credentials.NO_TARGET_MESSAGE)
            target = credentials.with_http_url(from_env, args.http_url) if args.http_url else from_env
        if args.artifact_client_access:
            target = dataclasses.replace(target, artifact_client_access=args.artifact_client_access)
    except credentials.TargetError as exc:
        print(f"mlflow-stack smoke: {exc}", file=sys.stderr)
        return EXIT_USAGE

    smoke_id = new_smoke_id()
    try:
        if args.json:
            report = run_smoke(target, timeout=args.timeout, keep=args.keep, smoke_id=smoke_id)
            print(format_json(report))
            return report.exit_code

        # Rows are printed as they finish: the registry check takes a few seconds.
        print(format_header(target.url, target.source, smoke_id), flush=True)

        def show(result: CheckResult) -> None:
            print(format_row(result), flush=True)

        report = run_smoke(target, timeout=args.timeout, keep=args.keep, smoke_id=smoke_id, on_result=show)
    except KeyboardInterrupt:
        # run_smoke's cleanup has already run (its rows were printed in table mode).
        print(f"mlflow-stack smoke: interrupted; cleanup of {smoke_id} was attempted", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(format_footer(report))
    return report.exit_code
