"""`mlflow-stack backend init --bucket NAME [--kms-alias ALIAS] [--region R] [--stack NAME] [--json]`.

Thin glue over `deploy.backend.bootstrap_backend`: check the options, run it, print what changed and
the two Pulumi commands to run next. Exit codes: 0 the backend is complete (created, completed, or
already so); 1 AWS refused something (the message names the call and the fix); 2 bad options.
"""

from __future__ import annotations

import argparse
import json
import sys

EXIT_AWS_REFUSED = 1


def register(subparsers: argparse._SubParsersAction) -> None:
    from deploy.backend import DEFAULT_ALIAS

    parser = subparsers.add_parser(
        "backend",
        help="bootstrap a self-managed Pulumi state backend: S3 bucket for state, KMS key for secrets",
        description="Set up where Pulumi keeps stack state and how it encrypts stack secrets.",
    )
    actions = parser.add_subparsers(dest="backend_command", required=True, metavar="ACTION")
    init = actions.add_parser(
        "init",
        help="create or complete the state bucket and the KMS key (idempotent)",
        description=(
            "Create, or bring up to standard, an S3 bucket for Pulumi state (versioned, SSE-KMS, "
            "public access blocked, ACLs off, TLS only, old versions expire) and a KMS key with "
            "rotation for Pulumi secrets, then print the `pulumi login` and `pulumi stack init` lines. "
            "A second run changes nothing. Exits 1 if AWS refuses a call, 2 on bad options."
        ),
        allow_abbrev=False,
    )
    init.add_argument(
        "--bucket", required=True, metavar="NAME", help="the state bucket's name (S3 names are global)"
    )
    init.add_argument(
        "--kms-alias",
        default=DEFAULT_ALIAS,
        metavar="ALIAS",
        help=f"KMS alias of the secrets key, without or with 'alias/' (default {DEFAULT_ALIAS}); "
        "an existing alias is reused",
    )
    init.add_argument(
        "--region", metavar="REGION", help="AWS region (default: the region your AWS configuration sets)"
    )
    init.add_argument(
        "--stack",
        default="<stack>",
        metavar="NAME",
        help="stack name to put in the printed `pulumi stack init` line (default: a <stack> placeholder)",
    )
    init.add_argument("--json", action="store_true", help="print the result as JSON (machine-readable)")
    init.set_defaults(func=run_init, parser=init)


def _resolve_options(args: argparse.Namespace) -> tuple[str, str]:
    """(alias, region), or exit 2 through the parser with every problem named by its option."""
    from deploy.backend import bucket_name_problem, normalize_alias, region_problem

    errors = []
    problem = bucket_name_problem(args.bucket)
    if problem:
        errors.append(f"--bucket {args.bucket!r} {problem}")
    alias = ""
    try:
        alias = normalize_alias(args.kms_alias)
    except ValueError as exc:
        errors.append(f"--kms-alias {args.kms_alias!r}: {exc}")
    region = args.region or _configured_region()
    if not region:
        errors.append(
            "no AWS region: pass --region (e.g. --region eu-west-1), or set one in your AWS configuration "
            "(AWS_REGION / AWS_DEFAULT_REGION, or `region` in your AWS profile)"
        )
    elif region_problem(region):
        errors.append(f"--region {region!r} {region_problem(region)}")
    if args.stack != "<stack>" and (not args.stack or any(c.isspace() or c in "'\"" for c in args.stack)):
        errors.append(f"--stack {args.stack!r} must be a stack name without spaces or quotes")
    if errors:
        args.parser.error("; ".join(errors))
    return alias, str(region)


def _configured_region() -> str | None:
    import boto3

    return boto3.session.Session().region_name


def run_init(args: argparse.Namespace) -> int:
    from deploy.backend import BackendError, bootstrap_backend

    alias, region = _resolve_options(args)
    try:
        result = bootstrap_backend(args.bucket, alias, region)
    except BackendError as exc:
        print(f"mlflow-stack backend init: {exc}", file=sys.stderr)
        if exc.done:
            print("Changed before the failure (a rerun completes the rest):", file=sys.stderr)
            for change in exc.done:
                print(f"  + {change}", file=sys.stderr)
        return EXIT_AWS_REFUSED

    if args.json:
        print(json.dumps(result.to_json(args.stack), indent=2))
        return 0
    print(f"Pulumi state backend in account {result.account}, region {result.region}:")
    print(f"  state bucket:  s3://{result.bucket}")
    print(f"  secrets key:   {result.kms_alias} -> {result.kms_key_arn}")
    if result.changes:
        print("Changed:")
        for change in result.changes:
            print(f"  + {change}")
    else:
        print("Nothing to change: the bucket and the key were already complete.")
    print("Next:")
    for line in result.next_commands(args.stack):
        print(f"  {line}")
    return 0
