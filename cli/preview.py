"""`mlflow-stack preview --stack NAME`: the offline preview a reviewer reads in a PR.

Thin glue: parse options, build the report (preview.build: the program under mocks, the policy pack,
the cost estimate) and print it (preview.report). No cloud credentials needed.
Exit codes: 0 no mandatory violation; 1 a mandatory policy violation; 2 the preview could not be
made (invalid stack settings, unknown region prices, the pack failed, bad options).
`--format json` is what CI compares (`preview compare`, `preview stacks`: cli/preview_ci.py).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

EXIT_OK = 0
EXIT_VIOLATIONS = 1
EXIT_ERROR = 2


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "preview",
        help="offline preview for review: resources, policy violations, estimated monthly cost",
        description=(
            "Run the Pulumi program for a stack under mocks (no AWS account, no Pulumi CLI), check every "
            "resource with the policy pack in policies/, and estimate the monthly cost. Exits 1 on a "
            "mandatory policy violation, 2 if the preview cannot be made."
        ),
    )
    # Required unless a sub-command (compare, stacks) is given: checked in run().
    parser.add_argument("--stack", metavar="NAME", help="stacks/Pulumi.<NAME>.yaml (required)")
    parser.add_argument(
        "--format",
        choices=("text", "markdown", "json"),
        default="text",
        help="markdown: a PR comment; json: the report for `preview compare`",
    )
    parser.add_argument(
        "--policy-config",
        metavar="FILE",
        help="policy pack config (the JSON `pulumi preview --policy-pack-config` takes)",
    )
    parser.add_argument(
        "--refresh-prices",
        action="store_true",
        help="re-read the region's prices from the AWS Pricing API (needs AWS credentials) and save them "
        "to preview/prices.json",
    )
    parser.set_defaults(func=run, parser=parser)
    from cli import preview_ci

    preview_ci.register(parser)


# Set in the environment of a preview re-run in another checkout, so it never re-runs again.
RERUN_MARKER = "MLFLOW_STACK_PREVIEW_PROJECT"


def _run_in_project(args: argparse.Namespace) -> int | None:
    """Like `pulumi preview`, preview the checkout the command was started in. When that is not the
    checkout this interpreter imported the kit from (a second checkout using the first one's
    virtualenv), run the preview again with that checkout's code first on the import path, so its
    program, stack files and policy pack are the ones previewed. None: this is the right checkout."""
    from preview.offline import REPO_ROOT, find_project

    project = find_project()
    if project == REPO_ROOT:
        return None
    if os.environ.get(RERUN_MARKER):
        print(
            f"mlflow-stack preview: {project} does not import its own kit code (got {REPO_ROOT}); "
            "is it a checkout of mlflow-stack?",
            file=sys.stderr,
        )
        return EXIT_ERROR
    argv = ["preview", "--stack", args.stack, "--format", args.format]
    if args.policy_config:
        argv += ["--policy-config", str(Path(args.policy_config).resolve())]
    if args.refresh_prices:
        argv.append("--refresh-prices")
    env = {
        **os.environ,
        RERUN_MARKER: str(project),
        "PYTHONPATH": os.pathsep.join([str(project), *filter(None, [os.environ.get("PYTHONPATH")])]),
    }
    return subprocess.run([sys.executable, "-m", "cli.main", *argv], cwd=project, env=env).returncode


def _fail(args: argparse.Namespace, message: str) -> int:
    print(f"mlflow-stack preview: {message}", file=sys.stderr)
    if args.format == "json":
        from preview.compare import error_to_json

        print(json.dumps(error_to_json(args.stack, message)))
    return EXIT_ERROR


def run(args: argparse.Namespace) -> int:
    if not args.stack:
        args.parser.error("--stack NAME is required (or a sub-command: compare, stacks)")
    try:
        rerun = _run_in_project(args)
    except FileNotFoundError as exc:
        return _fail(args, str(exc))
    if rerun is not None:
        return rerun
    from infra.settings import SettingsError
    from preview.analyzer import PolicyPackError
    from preview.build import build_report
    from preview.cost import CostError, PriceRefreshError
    from preview.report import render_markdown, render_text

    started = time.monotonic()
    try:
        pack_config = json.loads(Path(args.policy_config).read_text()) if args.policy_config else None
        report = build_report(args.stack, pack_config=pack_config, refresh_prices=args.refresh_prices)
    except (SettingsError, CostError, PriceRefreshError, PolicyPackError, FileNotFoundError) as exc:
        return _fail(args, str(exc))
    except json.JSONDecodeError as exc:
        return _fail(args, f"--policy-config {args.policy_config} is not JSON: {exc}")
    if args.format == "json":
        from preview.compare import report_to_json

        rendered = json.dumps(report_to_json(report, render_markdown(report)), indent=1) + "\n"
    else:
        rendered = render_markdown(report) if args.format == "markdown" else render_text(report)
    sys.stdout.write(rendered)
    print(f"(preview took {time.monotonic() - started:.1f}s)", file=sys.stderr)
    return EXIT_VIOLATIONS if report.mandatory else EXIT_OK
