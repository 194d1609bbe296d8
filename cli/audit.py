"""`mlflow-stack audit`: the tracking server and registry checked against the governance rules.

Thin glue over lifecycle/audit.py (rules in lifecycle/audit_rules.py, settings in
lifecycle/audit_config.py). Read-only. Exit codes: 0 the findings at or above --fail-on are within
--max-findings, 1 they are not, 2 bad options or a bad config file (nothing sent), 3 the server failed.
"""

from __future__ import annotations

import argparse
from typing import Any

from cli.common import EXIT_FAILED, EXIT_OK, Target, add_connection_flags, run_command


def register(subparsers: argparse._SubParsersAction) -> None:
    audit = subparsers.add_parser(
        "audit",
        help="governance report: naming, required run tags, champions, unused models (exit 1 for CI)",
        description=(
            "Checks experiment names (/team/project/type), registered model names (products, not "
            "algorithms or versions), required tags on recent runs, champion aliases and unused "
            "registered models. Prints counts per kind and the worst offenders (all findings with "
            "--json); exits 1 when more than --max-findings findings are at or above --fail-on."
        ),
    )
    add_connection_flags(audit)
    audit.add_argument(
        "--config",
        metavar="FILE",
        help="governance rules, YAML or JSON (default: stacks/governance.yaml if present, else built-in)",
    )
    audit.add_argument(
        "--fail-on",
        metavar="SEVERITY",
        help="info, warning, error, or never (report only); default from the config (warning)",
    )
    audit.add_argument(
        "--max-findings",
        type=int,
        metavar="N",
        help="tolerate up to N findings at or above --fail-on (default from the config: 0)",
    )
    audit.add_argument("--top", type=int, metavar="N", help="worst offenders shown per kind (default 10)")
    audit.set_defaults(func=_audit)


def _audit(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from lifecycle.audit import run_audit
    from lifecycle.audit_config import ConfigError, load_config, parse_fail_on

    def action(target: Target) -> tuple[dict[str, Any], list[str], int]:
        config = load_config(args.config)
        report_rules = config.report
        if args.fail_on is not None:
            report_rules = replace(report_rules, fail_on=parse_fail_on(args.fail_on))
        if args.max_findings is not None:
            if args.max_findings < 0:
                raise ConfigError("--max-findings must be 0 or more")
            report_rules = replace(report_rules, max_findings=args.max_findings)
        if args.top is not None:
            if args.top < 1:
                raise ConfigError("--top must be 1 or more")
            report_rules = replace(report_rules, top=args.top)
        report = run_audit(target.conn, replace(config, report=report_rules))
        return report.to_json(), report.lines(), EXIT_OK if report.passed else EXIT_FAILED

    return run_command(args, action, "audit")
