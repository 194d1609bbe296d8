"""`mlflow-stack doctor --stack NAME [--json]`: read-only account preflight before `pulumi up`.

Thin glue: build the real environment (boto3 in the stack's region, the system DNS resolver,
docker via subprocess), run deploy.doctor, print one line per check.
Exit codes: 0 every check ok, warn or skip; 1 a check failed; 2 bad options or an unreadable
stack file (nothing was checked).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "doctor",
        help="read-only preflight of the AWS account for a stack, before the first pulumi up",
        description=(
            "Validate stacks/Pulumi.<NAME>.yaml and check the AWS account it deploys to with read-only "
            "calls: credentials and region, quotas, hosted zone and delegation, certificate, "
            "service-linked roles, existing VPC, image build or prebuilt image, example values left in "
            "the file. Exits 1 if any check fails, 2 on bad options or an unreadable stack file."
        ),
        allow_abbrev=False,
    )
    parser.add_argument(
        "--stack", metavar="NAME", required=True, help="the stack (stacks/Pulumi.<NAME>.yaml)"
    )
    parser.add_argument(
        "--stack-dir",
        metavar="DIR",
        default=None,
        help="directory of the stack files (default: the kit's stacks/)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print a JSON list of {check, status, detail, fix}"
    )
    parser.set_defaults(func=run)


def _environment():  # type: ignore[no-untyped-def] - deploy.doctor is imported lazily
    import boto3
    from botocore.config import Config

    from deploy.doctor import DoctorEnvironment
    from deploy.doctor_checks_dns import query_name_servers
    from deploy.doctor_checks_image import fetch_url, run_command

    session = boto3.session.Session()
    # Few retries and short timeouts: a preflight should answer in seconds, also when offline.
    config = Config(retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=5, read_timeout=20)
    clients: dict[tuple[str, str], object] = {}

    def client(service: str, region: str) -> object:
        if (service, region) not in clients:
            clients[(service, region)] = session.client(service, region_name=region, config=config)
        return clients[(service, region)]

    return DoctorEnvironment(
        client=client,
        resolve_name_servers=query_name_servers,
        run_command=run_command,
        fetch_url=fetch_url,
        default_region=session.region_name,
    )


def run(args: argparse.Namespace) -> int:
    from deploy.doctor import (
        EXIT_USAGE,
        CheckResult,
        StackFileError,
        exit_code,
        format_json,
        format_row,
        format_summary,
        run_doctor,
    )

    stack_dir = Path(args.stack_dir).resolve() if args.stack_dir else "stacks"

    def show(result: CheckResult) -> None:
        print(format_row(result), flush=True)

    try:
        results = run_doctor(
            args.stack, _environment(), stack_dir=stack_dir, on_result=None if args.json else show
        )
    except StackFileError as exc:
        print(f"mlflow-stack doctor: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        print(format_json(results))
    else:
        print(format_summary(results))
    return exit_code(results)
