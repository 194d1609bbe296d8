"""`mlflow-stack preview compare | stacks`: what the pull-request and deploy workflows run.

Thin glue over preview/compare.py and preview/stack_selection.py (.github/workflows/ call these;
the logic lives in code, tested, not in YAML). Registered under `mlflow-stack preview` by
cli/preview.py.

Exit codes of `compare`: 0 no mandatory violation on the head side; 1 a head stack has a mandatory
violation; 2 a head stack could not be previewed, or a report file is unreadable.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(preview: argparse.ArgumentParser) -> None:
    commands = preview.add_subparsers(dest="preview_command", metavar="COMMAND")

    compare = commands.add_parser(
        "compare",
        help="compare previews (`preview --format json`) of main and a pull request: the PR comment",
        description=(
            "Read the JSON reports of the base (main) and head (the pull request) side — a file or a "
            "directory of <stack>.json each — and print per stack the verdict, the resources, the policy "
            "violations, the estimated monthly cost and its difference from main. Exits 1 if a head "
            "stack has a mandatory violation, 2 if one could not be previewed."
        ),
    )
    compare.add_argument("base", metavar="BASE", help="main's report(s): a JSON file or a directory")
    compare.add_argument("head", metavar="HEAD", help="the pull request's report(s): a file or a directory")
    compare.add_argument(
        "--markdown",
        action="store_true",
        help="the sticky PR comment (starts with a hidden marker to find it by); default: a text table",
    )
    compare.add_argument("--base-label", default="main", metavar="TEXT", help="how to name the base side")
    compare.add_argument(
        "--head-label", default="this pull request", metavar="TEXT", help="how to name the head side"
    )
    compare.add_argument("--output", metavar="FILE", help="write to FILE instead of standard output")
    compare.set_defaults(func=_compare)

    stacks = commands.add_parser(
        "stacks",
        help="the stacks a change touches (for CI matrices), optionally of one environment",
        description=(
            "List the project's stacks: all of them, or (--changed-files) those whose stack file changed "
            "— every stack when the program, its settings and presets, the policy pack, the preview or "
            "the pinned dependencies changed. --environment keeps one environment's stacks."
        ),
    )
    stacks.add_argument(
        "--changed-files",
        metavar="FILE",
        help="paths changed by the pull request, one per line (`git diff --name-only`); '-' for stdin",
    )
    stacks.add_argument("--environment", metavar="ENV", help="only the stacks of this environment")
    stacks.add_argument(
        "--tier",
        choices=("platform", "server"),
        help="platform: only platform stacks (deployed first); server: standalone and team stacks",
    )
    stacks.add_argument(
        "--project", metavar="DIR", default=".", help="the checkout whose stacks/ to read (default .)"
    )
    stacks.add_argument("--json", action="store_true", help="a JSON array (a GitHub Actions matrix)")
    stacks.set_defaults(func=_stacks)


def _compare(args: argparse.Namespace) -> int:
    from preview.compare import EXIT_ERROR, CompareError, compare, load_reports, render_comment, render_text

    try:
        comparisons = compare(load_reports(args.base), load_reports(args.head))
    except (CompareError, OSError) as exc:
        print(f"mlflow-stack preview compare: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if args.markdown:
        text = render_comment(comparisons, base_label=args.base_label, head_label=args.head_label)
    else:
        text = render_text(comparisons)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    from preview.compare import verdict_code

    return verdict_code(comparisons)


def _stacks(args: argparse.Namespace) -> int:
    from preview.stack_selection import affected_stacks, of_tier, stack_names, stacks_by_environment

    names = stack_names(args.project)
    if args.changed_files:
        stream = sys.stdin if args.changed_files == "-" else None
        try:
            text = stream.read() if stream else Path(args.changed_files).read_text(encoding="utf-8")
        except OSError as exc:
            print(f"mlflow-stack preview stacks: {exc}", file=sys.stderr)
            return 2
        names = affected_stacks(text.splitlines(), names, args.project)
    if args.environment:
        names = stacks_by_environment(args.project, names).get(args.environment, [])
    if args.tier:
        names = of_tier(args.project, names, args.tier)
    print(json.dumps(names) if args.json else "\n".join(names))
    return 0
