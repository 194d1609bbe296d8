"""`mlflow-stack users sync`: users, team roles and grants as code (docs/users.md).

Thin glue over lifecycle/users_*.py. Exit codes: 0 in sync or applied, 2 bad options or an invalid
declaration, 3 server/AWS/file failure, 5 refused (the declaration cannot isolate teams on this
server; nothing changed), 6 drift found by a dry run with --exit-code, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from cli.common import EXIT_API, EXIT_PRECONDITION, EXIT_USAGE, Target, add_connection_flags, run_command

DECLARATION_ENV = "MLFLOW_STACK_USERS_DECLARATION"


def register(subparsers: argparse._SubParsersAction) -> None:
    users = subparsers.add_parser(
        "users",
        help="users, team roles and grants as code: sync a declaration to a server",
        description="Users and grants declared in stacks/users/<stack>.yaml (docs/users.md).",
    )
    commands = users.add_subparsers(dest="users_command", required=True, metavar="COMMAND")
    sync = commands.add_parser(
        "sync",
        help="make the server's users, team roles and grants match the declaration (dry run unless --apply)",
        description=(
            "Plans the changes that make the server match the declaration: create users (generated "
            "passwords, stored in Secrets Manager with --stack, 0600 files with --local/--password-dir, "
            "never printed), team roles, memberships, and grants on every experiment/registered model "
            "matching each pattern. Removals only with --prune. Exit codes: 0 in sync/applied, 2 bad "
            "options or declaration, 3 server/AWS failure, 5 refused (no isolation possible), 6 drift "
            "(dry run with --exit-code)."
        ),
    )
    add_connection_flags(sync)
    source = sync.add_mutually_exclusive_group()
    source.add_argument(
        "--file", metavar="YAML", help="the declaration (default with --stack: stacks/users/<stack>.yaml)"
    )
    source.add_argument(
        "--declaration-env",
        metavar="VAR",
        help=f"read the declaration's YAML text from this environment variable (the maintenance task: "
        f"{DECLARATION_ENV})",
    )
    sync.add_argument("--apply", action="store_true", help="make the changes (default: print the plan)")
    sync.add_argument(
        "--prune",
        action="store_true",
        help="also revoke grants, memberships, team roles and users the declaration no longer lists "
        "(never the admin, never a user it did not create)",
    )
    sync.add_argument(
        "--grants-only",
        action="store_true",
        help="create and delete no users: roles, memberships and grants only (the scheduled re-sync)",
    )
    sync.add_argument(
        "--password-dir",
        metavar="DIR",
        help="where new users' passwords go as 0600 files (--url; default with --local: <state dir>/users)",
    )
    sync.add_argument(
        "--exit-code", action="store_true", help="a dry run exits 6 when changes are pending (for CI)"
    )
    sync.set_defaults(func=_sync)


def _fail(args: argparse.Namespace, code: int, kind: str, message: str) -> int:
    if args.json:
        print(
            json.dumps(
                {"ok": False, "command": "users sync", "error": kind, "message": message, "exit_code": code}
            )
        )
    else:
        print(f"mlflow-stack users sync: {message}", file=sys.stderr)
    return code


def _load_declaration(args: argparse.Namespace) -> Any:
    from lifecycle.users_declaration import DeclarationError, default_path, load_file, parse_text

    if args.file:
        return load_file(args.file)
    if args.declaration_env:
        text = os.environ.get(args.declaration_env)
        if not text:
            raise DeclarationError(f"--declaration-env: ${args.declaration_env} is not set or empty")
        return parse_text(text, f"${args.declaration_env}")
    if args.stack:
        return load_file(default_path(args.stack))
    raise DeclarationError("--local and --url need --file (the declaration, e.g. stacks/users/dev.yaml)")


def _password_store(args: argparse.Namespace, target: Target) -> Any:
    from lifecycle import credentials
    from lifecycle.users_passwords import SecretFiles, SecretsManagerPasswords

    if args.password_dir:
        return SecretFiles(args.password_dir)
    if target.local_state_dir is not None:
        return SecretFiles(Path(target.local_state_dir) / "users")
    if args.stack:
        outputs = credentials.read_stack_outputs(args.stack)
        return SecretsManagerPasswords.for_stack(
            str(outputs["admin_password_secret_arn"]), str(outputs["region"]), args.stack
        )
    return None


def _sync(args: argparse.Namespace) -> int:
    from lifecycle.users_declaration import DeclarationError
    from lifecycle.users_passwords import PasswordStoreError
    from lifecycle.users_plan import PlanRefused
    from lifecycle.users_sync import sync

    if args.prune and args.grants_only:
        return _fail(args, EXIT_USAGE, "usage", "--prune and --grants-only do not go together")
    if args.password_dir and args.stack:
        return _fail(args, EXIT_USAGE, "usage", "--password-dir is not used with --stack (Secrets Manager)")
    try:
        declaration = _load_declaration(args)
    except DeclarationError as error:
        return _fail(args, EXIT_USAGE, "declaration", str(error))

    def action(target: Target) -> tuple[dict[str, Any], list[str], int]:
        try:
            report = sync(
                target.conn,
                declaration,
                apply=args.apply,
                prune=args.prune,
                create_users=not args.grants_only,
                password_store=lambda: _password_store(args, target),
            )
        except PlanRefused as error:
            message = f"refused, nothing changed:\n{error}"
            return {"error": "refused", "message": message}, [message], EXIT_PRECONDITION
        except PasswordStoreError as error:
            return {"error": "password-store", "message": str(error)}, [str(error)], EXIT_API
        return report.to_json(), report.lines(), report.exit_code(args.exit_code)

    return run_command(args, action, "users sync")


def main(argv: list[str] | None = None) -> int:
    """`python -m cli.users users sync ...`: for the server image's maintenance task (cli.main
    registers commands whose packages the image does not install)."""
    parser = argparse.ArgumentParser(prog="mlflow-stack", description="MLflow users and grants as code.")
    register(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
