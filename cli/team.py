"""`mlflow-stack team new|compare`: team stacks on an environment's shared platform.

Thin glue: the scaffold and its validation live in preview/team_scaffold.py, the cost comparison
of the tenancy modes in preview/cost_modes.py. No cloud credentials needed (the offline preview).
Exit codes: 0 done; 2 the stack could not be scaffolded or priced (the message says why).
"""

from __future__ import annotations

import argparse
import sys

EXIT_OK = 0
EXIT_ERROR = 2
DEFAULT_TEAMS = 10


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "team",
        help="team stacks on a shared platform: scaffold one, compare the tenancy modes' cost",
        description="Team stacks (tenancy.mode: team) run on an environment's platform stack "
        "(docs/teams.md).",
    )
    commands = parser.add_subparsers(dest="team_command", required=True, metavar="SUBCOMMAND")

    new = commands.add_parser(
        "new",
        help="scaffold stacks/Pulumi.<team>-<env>.yaml on the platform, validated, and print its cost",
        description="Write stacks/Pulumi.<NAME>-<ENV>.yaml: a team stack on the ENV platform stack, "
        "defaults from the environment preset. Validated like the Pulumi program validates it, previewed "
        "offline against the platform stack's file, never overwriting an existing file. Prints the "
        "monthly cost of one more team on the shared platform next to a standalone stack and workspaces.",
    )
    new.add_argument("name", metavar="NAME", help="team name: lowercase letters, digits, hyphens")
    new.add_argument("--env", required=True, metavar="ENV", help="dev, staging or prod")
    new.add_argument("--owner", required=True, metavar="EMAIL", help="owner tag and alarm e-mail")
    new.add_argument("--cost-center", metavar="CC", help="cost-center tag (default: the platform's)")
    new.add_argument(
        "--platform",
        metavar="STACK",
        help="the platform stack, <org>/<project>/<stack> (default: the one the ENV team stacks use, "
        "else organization/mlflow-stack/platform-ENV)",
    )
    new.add_argument(
        "--teams", type=int, default=DEFAULT_TEAMS, metavar="N", help="teams to compare the modes for"
    )
    new.add_argument("--stack-dir", metavar="DIR", help="where stack files live (default: stacks/)")
    new.set_defaults(func=run_new)

    compare = commands.add_parser(
        "compare",
        help="monthly cost of N teams: standalone stacks vs shared platform vs workspaces",
        description="Price N teams like a team stack in the three tenancy modes, from the offline "
        "preview's estimates (always-on resources; usage-driven charges extra).",
    )
    compare.add_argument(
        "--stack", required=True, metavar="NAME", help="a team stack: stacks/Pulumi.<NAME>.yaml"
    )
    compare.add_argument("--teams", type=int, default=DEFAULT_TEAMS, metavar="N", help="number of teams")
    compare.add_argument("--stack-dir", metavar="DIR", help="where stack files live (default: stacks/)")
    compare.set_defaults(func=run_compare)


def _stack_dir(args: argparse.Namespace) -> dict:
    return {"stack_dir": args.stack_dir} if args.stack_dir else {}


def run_new(args: argparse.Namespace) -> int:
    from infra.settings import SettingsError
    from preview.cost import CostError
    from preview.cost_modes import compare_modes, render_modes
    from preview.team_scaffold import ScaffoldError, scaffold_team_stack, write_team_stack

    try:
        team_stack = scaffold_team_stack(
            args.name,
            args.env,
            args.owner,
            cost_center=args.cost_center,
            platform=args.platform,
            **_stack_dir(args),
        )
        costs = compare_modes(
            team_stack.stack, args.teams, team_config=team_stack.document["config"], **_stack_dir(args)
        )
    except (ScaffoldError, SettingsError, CostError, FileNotFoundError, ValueError) as exc:
        print(f"mlflow-stack team new: {exc}", file=sys.stderr)
        return EXIT_ERROR
    try:
        write_team_stack(team_stack)
    except FileExistsError:
        print(f"mlflow-stack team new: {team_stack.path} already exists; not overwritten", file=sys.stderr)
        return EXIT_ERROR
    print(f"wrote {team_stack.path}")
    print(f"  platform {team_stack.platform_reference}, listener rule priority {team_stack.priority}")
    print(render_modes(costs), end="")
    print(f"next: review it, then `mlflow-stack preview --stack {team_stack.stack}` and `pulumi up`")
    return EXIT_OK


def run_compare(args: argparse.Namespace) -> int:
    from infra.settings import SettingsError
    from preview.cost import CostError
    from preview.cost_modes import compare_modes, render_modes

    try:
        costs = compare_modes(args.stack, args.teams, **_stack_dir(args))
    except (SettingsError, CostError, FileNotFoundError, ValueError) as exc:
        print(f"mlflow-stack team compare: {exc}", file=sys.stderr)
        return EXIT_ERROR
    print(render_modes(costs), end="")
    return EXIT_OK
