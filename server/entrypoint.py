"""`python -m server.entrypoint serve --app-name basic-auth` — how every replica starts.

(`python -m server.entrypoint bootstrap-db` is the step before it that holds the master
credentials: it creates the application role the server connects as, see server/db_roles.py.)

Order matters, and each step fails before the next one can half-start something:
1. validate every setting (stdlib only, sub-second) — one error listing all problems, exit 2;
2. write the basic-auth config, libpq's password file and the workers' keys into private 0600
   files (no secret value goes into any process's environment or command line);
3. under a PostgreSQL advisory lock: create the auth database, migrate both schemas, create the
   admin user — exactly once across any number of replicas;
4. run `mlflow server --app-name basic-auth` (uvicorn workers) in this process.

Step 4 calls MLflow's own `server` command in-process rather than exec-ing a new `mlflow`
process: the behaviour is the same command, but it saves re-importing MLflow (~5 s of CPU per
replica start). The store URIs it passes on carry no password (libpq reads PGPASSFILE).
MLflow's command installs its own SIGTERM/SIGINT forwarding to the uvicorn supervisor, so
container stop signals still work.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
from pathlib import Path

from server import contract
from server.settings import ServerSettings, SettingsError, load_settings

_logger = logging.getLogger("mlflow_stack.server")
EXIT_BAD_SETTINGS = 2
EXIT_DATABASE = 3
SUPPORTED_APPS = ("basic-auth",)


def _configure_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s [mlflow-stack] %(levelname)s %(message)s"))
    _logger.addHandler(handler)
    _logger.setLevel(logging.INFO)
    _logger.propagate = False


def _drop_secret_variables() -> None:
    """Secrets injected as env vars (ECS task `secrets`) are read once, by `load_settings`; the
    processes this one starts get files instead (libpq's password file, the auth config, the
    workers' key files), so no secret value is in the environment they inherit."""
    for setting in contract.SECRET_SETTINGS:
        os.environ.pop(setting.name, None)


def serve(app_name: str, *, migrate_only: bool = False) -> int:
    """With `migrate_only` (`python -m server.entrypoint migrate`): steps 1-3 and exit 0 — the
    one-off migration run of a deploy (an ECS task, a Kubernetes Job), see docs/upgrading.md."""
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return EXIT_BAD_SETTINGS

    # Imported after validation: these pull in psycopg (and later MLflow), which a bad setting
    # should not have to wait for.
    from server.auth_config import write_auth_config

    auth_config_path = write_auth_config(settings)
    try:
        return _prepare_and_run(settings, app_name, auth_config_path, migrate_only)
    finally:
        # The private dir holds the auth config (admin password), libpq's password file and the
        # workers' keys. Workers (and uvicorn's restarts of them) read them while the server runs,
        # so they go only once the server has stopped.
        shutil.rmtree(auth_config_path.parent, ignore_errors=True)


def _prepare_and_run(
    settings: ServerSettings, app_name: str, auth_config_path: Path, migrate_only: bool
) -> int:
    from server.command import server_arguments, server_environment
    from server.database import PASSFILE_ENV, DatabaseUnavailable, prepare_databases, write_passfile
    from server.worker_secrets import use_worker_app, write_worker_secrets

    private_dir = auth_config_path.parent
    os.environ.update(server_environment(settings, str(auth_config_path)))
    os.environ[PASSFILE_ENV] = str(write_passfile(settings, private_dir))
    os.environ.update(write_worker_secrets(settings, private_dir))
    _drop_secret_variables()
    for setting, value in (
        (contract.CRYPTO_KEK_PASSPHRASE, settings.crypto_kek_passphrase),
        (contract.WEBHOOK_ENCRYPTION_KEY, settings.webhook_encryption_key),
    ):
        if value is None:
            _logger.warning(
                "%s is not set: MLflow falls back to its built-in default for it (%s)",
                setting.name,
                setting.description,
            )
    try:
        prepare_databases(settings)
    except DatabaseUnavailable as exc:
        _logger.error("%s", exc)
        return EXIT_DATABASE
    if migrate_only:
        _logger.info("databases ready; not serving (migrate)")
        return 0

    arguments = server_arguments(settings, app_name)
    _logger.info("starting: mlflow %s", " ".join(arguments))
    from mlflow.cli import cli

    use_worker_app(settings.flask_secret_key)
    # Standalone mode: click reports usage errors the way `mlflow server` does and exits with
    # the server's status, so this call only returns through SystemExit.
    cli.main(args=arguments, prog_name="mlflow", standalone_mode=True)
    return 0


def bootstrap_db() -> int:
    """Create or refresh the application role with the master credentials (server/db_roles.py)."""
    from server.settings import load_bootstrap_settings

    try:
        settings = load_bootstrap_settings()
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return EXIT_BAD_SETTINGS
    from server.database import DatabaseUnavailable
    from server.db_roles import bootstrap

    try:
        report = bootstrap(settings)
    except DatabaseUnavailable as exc:
        _logger.error("%s", exc)
        return EXIT_DATABASE
    if not report.used_master:
        _logger.info("application role %s ready; the master credentials were not used", settings.app_user)
    for change in report.changes:
        _logger.info("bootstrap: %s", change)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m server.entrypoint", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True)
    serve_parser = subparsers.add_parser("serve", help="validate settings, prepare the databases, run MLflow")
    serve_parser.add_argument("--app-name", required=True, choices=SUPPORTED_APPS)
    migrate_parser = subparsers.add_parser(
        contract.MIGRATE_COMMAND[0],
        help="what `serve` does before serving (back up, migrate, apply the admin secret), then exit",
    )
    migrate_parser.add_argument("--app-name", required=True, choices=SUPPORTED_APPS)
    subparsers.add_parser(
        contract.BOOTSTRAP_COMMAND[0],
        help="with the master credentials: create or refresh the application role and hand it the databases",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _configure_logging()
    if args.command == contract.BOOTSTRAP_COMMAND[0]:
        return bootstrap_db()
    return serve(args.app_name, migrate_only=args.command == contract.MIGRATE_COMMAND[0])


if __name__ == "__main__":
    sys.exit(main())
