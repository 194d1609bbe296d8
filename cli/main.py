"""`mlflow-stack` — the command-line front door.

Thin glue only: each sub-command lives in its own module under `cli/` and calls into `local/`,
`lifecycle/` or `infra/`. Sub-command modules are imported when registered, so every module must
keep its heavy imports (mlflow, pulumi) inside the functions that need them.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Each module exposes `register(subparsers)`, which adds its parser and sets `func`.
COMMAND_MODULES: tuple[str, ...] = (
    "cli.local",
    "cli.smoke",
    "cli.runs",
    "cli.models",
    "cli.preview",
    "cli.backend",
    "cli.doctor",
    "cli.deployer_policy",
    "cli.image",
    "cli.db",
    "cli.audit",
    "cli.users",
    "cli.team",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlflow-stack",
        description="Run MLflow in production on AWS: local stack, smoke checks and day-2 operations.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
