"""`runs gc`: permanently remove deleted runs (metadata and proxied artifacts) with `mlflow gc`.

The listing is over HTTP like every other day-2 command. The removal itself cannot be: hard
deletion is not in MLflow's REST API, only in `mlflow gc`, which needs the backend store (the
database) directly. So `--apply` runs where the database is reachable — the stack's weekly
maintenance task (same image and secrets as the server) or next to the local stack — and reads
the database settings by the names in server/contract.py (secrets as `<NAME>` or `<NAME>_FILE`).

Facts checked in mlflow/cli/__init__.py (MLflow 3.17), which shape this module:
- `mlflow gc` resolves each run's `mlflow-artifacts:/...` URI against the *tracking URI* and
  deletes the artifacts with HTTP DELETE through the server's artifact proxy; so the tracking URI
  and basic-auth credentials are set (Connection.mlflow_client_env) and no S3 access is needed here.
- Age is judged by the run's deletion time (`runs.deleted_time`), which the REST API does not
  expose. And `--run-ids` combined with `--older-than` aborts the whole command at the first listed
  run deleted too recently. So `--apply` passes only `--older-than` and lets MLflow pick by
  deletion time; the HTTP listing shows the candidates (deleted runs that *started* before the
  cutoff — a superset, since a run is deleted after it starts), and the report names exactly the
  runs that were removed, checked by listing again afterwards.
- With or without `--run-ids`, `mlflow gc` also removes experiments and logged models that have
  been in the deleted state longer than the cutoff; the listing shows those experiments too.
- `mlflow gc` runs in this process (its click command), not as a child: the backend URI carries
  the database password, which a child's command line would show to `ps`.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from lifecycle.client import Connection
from lifecycle.durations import mlflow_gc_duration
from lifecycle.runs import PageCounter, RunRef, iter_runs, list_experiments
from server import contract

_REMOVED_RUN = re.compile(r"Run with ID (\w+) has been permanently deleted")
_REMOVED_MODEL = re.compile(r"Logged model with ID ([\w-]+) has been permanently deleted")


class GcConfigError(ValueError):
    """The database settings for `mlflow gc` are missing; the message names the setting and the fix."""


class GcFailed(RuntimeError):
    """`mlflow gc` itself failed (database unreachable, wrong password, ...); nothing secret in it."""


@dataclass
class GcReport:
    dry_run: bool
    older_than_seconds: int
    candidate_runs: list[dict[str, Any]]
    deleted_experiments: list[dict[str, Any]]
    pages: int
    removed_runs: list[str] = field(default_factory=list)
    removed_logged_models: list[str] = field(default_factory=list)
    still_deleted_runs: list[str] = field(default_factory=list)
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        body = asdict(self)
        body["counts"] = {
            "candidate_runs": len(self.candidate_runs),
            "deleted_experiments": len(self.deleted_experiments),
            "removed_runs": len(self.removed_runs),
            "removed_logged_models": len(self.removed_logged_models),
            "still_deleted_runs": len(self.still_deleted_runs),
        }
        return body


def backend_store_uri_from_env(env: Mapping[str, str] | None = None) -> str:
    """The tracking database's SQLAlchemy URI from the server contract's settings.

    Only the database settings are read (not the admin password or Flask key), so the maintenance
    task needs no more secrets than it uses. The password is percent-quoted: '@', ':' or '/' in it
    must not be parsed as part of the host.
    """
    source = os.environ if env is None else env
    host = source.get(contract.DB_HOST.name, "").strip()
    if not host:
        raise GcConfigError(
            f"{contract.DB_HOST.name} is not set: `runs gc --apply` needs the tracking database "
            "(run it in the stack's maintenance task, or with --local next to the local stack)"
        )
    password = _secret(source, contract.DB_PASSWORD)

    def plain(setting: contract.Setting) -> str:
        return source.get(setting.name, "").strip() or str(setting.default)

    user = quote(plain(contract.DB_USER), safe="")
    return (
        f"postgresql+psycopg://{user}:{quote(password, safe='')}@{host}:{plain(contract.DB_PORT)}/"
        f"{plain(contract.DB_NAME)}?sslmode={plain(contract.DB_SSLMODE)}"
    )


def _secret(env: Mapping[str, str], setting: contract.Setting) -> str:
    file_var = setting.name + contract.FILE_SUFFIX
    path = env.get(file_var, "").strip()
    if path and env.get(setting.name):
        # The server's entrypoint refuses this too: which one is meant is a guess either way.
        raise GcConfigError(f"both {setting.name} and {file_var} are set: set only one of them")
    if path:
        try:
            return Path(path).read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as error:
            raise GcConfigError(
                f"{file_var} points to {path!r}, which cannot be read ({error.strerror})"
            ) from None
    value = env.get(setting.name, "")
    if not value:
        raise GcConfigError(
            f"{setting.name} (or {file_var}) is not set: `runs gc --apply` needs the {setting.description}"
        )
    return value


def list_candidates(
    conn: Connection, older_than: timedelta, now: datetime | None = None, page_size: int = 1000
) -> tuple[list[RunRef], list[dict[str, Any]], int]:
    """Deleted runs that started before the cutoff, and deleted experiments untouched since it."""
    cutoff_ms = int(((now or datetime.now(UTC)) - older_than).timestamp() * 1000)
    experiments = list_experiments(conn, "*", view_type="ALL")
    counter = PageCounter()
    runs = [
        RunRef.from_api(run)
        for run in iter_runs(
            conn,
            [e.experiment_id for e in experiments],
            f"attributes.start_time < {cutoff_ms}",
            run_view_type="DELETED_ONLY",
            page_size=page_size,
            counter=counter,
        )
    ]
    deleted_experiments = [
        {"experiment_id": e.experiment_id, "name": e.name, "last_update_time": e.last_update_time}
        for e in experiments
        if e.lifecycle_stage == "deleted" and (e.last_update_time or 0) < cutoff_ms
    ]
    return runs, deleted_experiments, counter.pages


def collect_garbage(
    conn: Connection,
    older_than: timedelta,
    apply: bool = False,
    backend_store_uri: str | None = None,
    now: datetime | None = None,
) -> GcReport:
    """List what `mlflow gc` would remove; with `apply`, run it and report what it removed."""
    runs, experiments, pages = list_candidates(conn, older_than, now)
    report = GcReport(
        dry_run=not apply,
        older_than_seconds=int(older_than.total_seconds()),
        candidate_runs=[asdict(r) for r in runs],
        deleted_experiments=experiments,
        pages=pages,
        note=(
            "candidates are deleted runs that started before the cutoff; mlflow gc removes those "
            "whose deletion is older than the cutoff (deletion time is not visible over HTTP)"
        ),
    )
    if not apply:
        return report
    if not backend_store_uri:
        raise GcConfigError("runs gc --apply needs the tracking database settings (see server/contract.py)")
    output = run_mlflow_gc(conn, older_than, backend_store_uri)
    report.removed_runs = _REMOVED_RUN.findall(output)
    report.removed_logged_models = _REMOVED_MODEL.findall(output)
    after, _, _ = list_candidates(conn, older_than, now)
    report.still_deleted_runs = [r.run_id for r in after]
    return report


def run_mlflow_gc(conn: Connection, older_than: timedelta, backend_store_uri: str) -> str:
    """Run MLflow's own `gc` command in this process; returns what it printed."""
    from mlflow.cli import gc as mlflow_gc

    args = [
        "--older-than",
        mlflow_gc_duration(older_than),
        "--backend-store-uri",
        backend_store_uri,
        "--tracking-uri",
        conn.url,
    ]
    printed = io.StringIO()
    try:
        # The tracking URI and basic-auth credentials make mlflow-artifacts:/ URIs resolvable, so
        # the artifacts are deleted through the server's proxy.
        with conn.mlflow_client_env(), contextlib.redirect_stdout(printed):
            mlflow_gc.main(args=args, prog_name="mlflow gc", standalone_mode=False)
    except Exception as error:
        # Whatever was removed before the failure stays removed; a rerun continues from there.
        raise GcFailed(
            f"mlflow gc failed after removing {len(_REMOVED_RUN.findall(printed.getvalue()))} run(s): "
            + _scrub(f"{type(error).__name__}: {error}", backend_store_uri)
        ) from None
    return printed.getvalue()


def _scrub(message: str, backend_store_uri: str) -> str:
    """Drop the database password (quoted or not) from a message that may echo the URI."""
    password = urlsplit(backend_store_uri).password or ""
    for secret in {password, unquote(password)} - {""}:
        message = message.replace(secret, "***")
    return message
