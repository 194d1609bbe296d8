"""`mlflow-stack smoke`: prove a deployment works end to end, then remove every trace of the proof.

Runs the checks in `lifecycle.smoke_checks` in order against one server (a `ServerTarget` from
`lifecycle.credentials`), skipping a check whose prerequisite failed, and always — even after a
failure or Ctrl-C — runs the cleanup steps for whatever the checks tried to create. Returns a
`SmokeReport`; the CLI prints it and exits non-zero on any failure.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterable

from lifecycle.client import DEFAULT_RETRIES, DEFAULT_TIMEOUT_SECONDS, Connection, MlflowApiError
from lifecycle.credentials import ServerTarget
from lifecycle.smoke_checks import (
    ARTIFACTS_ENDPOINT,
    CHECKS,
    Check,
    CheckFailed,
    SmokeContext,
    proxied_artifact_path,
)
from lifecycle.smoke_report import CheckResult, Phase, SmokeReport

SOFT_DELETE_NOTE = (
    "experiments and runs are deleted through the REST API, which only marks them deleted: they stay "
    "in the database (and in the UI's trash) until an operator runs `mlflow gc` against the backend store"
)
MAX_DETAIL_CHARS = 1500

ResultCallback = Callable[[CheckResult], None]


def new_smoke_id() -> str:
    """A name no other smoke run will pick: 48 random bits."""
    return f"smoke-{secrets.token_hex(6)}"


def describe_error(exc: BaseException) -> str:
    # Our own errors already say what failed; anything else needs its type to make sense.
    known = isinstance(exc, CheckFailed | MlflowApiError)
    text = str(exc) if known else f"{exc.__class__.__name__}: {exc}"
    return text if len(text) <= MAX_DETAIL_CHARS else text[: MAX_DETAIL_CHARS - 3] + "..."


def timed(name: str, step: Callable[[], str], phase: Phase = "check") -> CheckResult:
    started = time.monotonic()
    try:
        detail = step()
    except Exception as exc:
        return CheckResult(name, "FAIL", time.monotonic() - started, describe_error(exc), phase)
    return CheckResult(name, "PASS", time.monotonic() - started, detail, phase)


# --- cleanup ----------------------------------------------------------------------------------


def _absent(exc: MlflowApiError) -> bool:
    return exc.status == 404 or exc.error_code == "RESOURCE_DOES_NOT_EXIST"


def _delete_user(ctx: SmokeContext) -> str:
    try:
        ctx.conn.call("DELETE", "users/delete", json={"username": ctx.username})
    except MlflowApiError as exc:
        if _absent(exc):
            return f"user {ctx.username} was not created"
        raise
    return f"deleted user {ctx.username} (and its grants)"


def _delete_registered_model(ctx: SmokeContext) -> str:
    try:
        ctx.conn.call("DELETE", "registered-models/delete", json={"name": ctx.model_name})
    except MlflowApiError as exc:
        if _absent(exc):
            return f"registered model {ctx.model_name} was not created"
        raise
    return f"deleted registered model {ctx.model_name} with its versions and aliases"


def _find_experiment(ctx: SmokeContext) -> dict[str, str] | None:
    # By name, not by the id a check remembered: a create whose response was lost still counts.
    try:
        body = ctx.conn.call(
            "GET", "experiments/get-by-name", params={"experiment_name": ctx.experiment_name}
        )
    except MlflowApiError as exc:
        if _absent(exc):
            return None
        raise
    return body["experiment"]


def _delete_logged_models(ctx: SmokeContext, experiment_id: str) -> str:
    models = list(ctx.conn.paginate("logged-models/search", {"experiment_ids": [experiment_id]}, "models"))
    for model in models:
        ctx.conn.call("DELETE", f"/api/2.0/mlflow/logged-models/{model['info']['model_id']}")
    return f"deleted {len(models)} logged model(s)"


def _delete_artifacts(ctx: SmokeContext, artifact_location: str) -> str:
    # The experiment's artifact root holds the run's files and the logged model: one prefix in S3.
    path = proxied_artifact_path(artifact_location)
    response = ctx.conn.request("DELETE", ARTIFACTS_ENDPOINT + path)
    if not response.ok:
        raise CheckFailed(f"DELETE {path} -> HTTP {response.status_code}: {response.text.strip()[:300]}")
    left = ctx.conn.call("GET", "/api/2.0/mlflow-artifacts/artifacts", params={"path": path})
    if left.get("files"):
        raise CheckFailed(f"{len(left['files'])} artifact(s) left under {path} after delete")
    return f"deleted {artifact_location} from the artifact store"


def _delete_traces(ctx: SmokeContext, experiment_id: str) -> str:
    if ctx.trace_id is None:
        return "no trace was stored"
    deleted = ctx.conn.call(
        "POST", "traces/delete-traces", json={"experiment_id": experiment_id, "request_ids": [ctx.trace_id]}
    ).get("traces_deleted", 0)
    return f"deleted {deleted} trace(s) ({ctx.trace_id})"


def _delete_runs(ctx: SmokeContext, experiment_id: str) -> str:
    runs = list(
        ctx.conn.paginate(
            "runs/search", {"experiment_ids": [experiment_id], "run_view_type": "ACTIVE_ONLY"}, "runs"
        )
    )
    for run in runs:
        ctx.conn.call("POST", "runs/delete", json={"run_id": run["info"]["run_id"]})
    return f"deleted {len(runs)} run(s) (soft delete)"


def _delete_experiment(ctx: SmokeContext, experiment_id: str) -> str:
    ctx.conn.call("POST", "experiments/delete", json={"experiment_id": experiment_id})
    return f"deleted experiment {ctx.experiment_name} (soft delete: REST cannot purge it)"


def cleanup(ctx: SmokeContext, on_result: ResultCallback) -> list[CheckResult]:
    """Remove what the checks tried to create; every step runs and reports, whatever failed before."""
    results: list[CheckResult] = []

    def step(name: str, action: Callable[[], str]) -> None:
        result = timed(name, action, phase="cleanup")
        results.append(result)
        on_result(result)

    if "user" in ctx.attempted:
        step("temporary user", lambda: _delete_user(ctx))
    if "registered_model" in ctx.attempted:
        step("registered model", lambda: _delete_registered_model(ctx))
    if "experiment" in ctx.attempted:
        found: dict[str, dict[str, str] | None] = {}

        def lookup() -> str:
            found["experiment"] = _find_experiment(ctx)
            if not found["experiment"]:
                return f"experiment {ctx.experiment_name} was not created"
            return f"found {ctx.experiment_name} (id {found['experiment']['experiment_id']})"

        step("experiment lookup", lookup)
        experiment = found.get("experiment")
        if experiment:
            experiment_id = experiment["experiment_id"]
            if "trace" in ctx.attempted:
                step("traces", lambda: _delete_traces(ctx, experiment_id))
            step("logged models", lambda: _delete_logged_models(ctx, experiment_id))
            step("artifacts", lambda: _delete_artifacts(ctx, experiment["artifact_location"]))
            step("runs", lambda: _delete_runs(ctx, experiment_id))
            step("experiment", lambda: _delete_experiment(ctx, experiment_id))
    return results


# --- the run ----------------------------------------------------------------------------------


def kept_objects(ctx: SmokeContext) -> list[str]:
    kept = []
    if "experiment" in ctx.attempted:
        kept.append(f"experiment {ctx.experiment_name} (id {ctx.experiment_id}) with its run and artifacts")
    if "registered_model" in ctx.attempted:
        kept.append(f"registered model {ctx.model_name}")
    if "user" in ctx.attempted:
        kept.append(f"user {ctx.username} (its password was random and is not shown)")
    return kept


def run_smoke(
    target: ServerTarget,
    *,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
    retries: int = DEFAULT_RETRIES,
    keep: bool = False,
    smoke_id: str | None = None,
    checks: Iterable[Check] = CHECKS,
    on_result: ResultCallback | None = None,
) -> SmokeReport:
    """Run every check against `target`, then clean up (unless `keep`). Never raises for a failed check."""
    notify = on_result or (lambda _result: None)
    report = SmokeReport(url=target.url, source=target.source, smoke_id=smoke_id or new_smoke_id(), kept=keep)
    started = time.monotonic()
    with Connection(
        target.url, target.username, target.password, target.ca_file, timeout=timeout, retries=retries
    ) as conn:
        ctx = SmokeContext(target=target, conn=conn, smoke_id=report.smoke_id, timeout=timeout)
        passed: set[str] = set()
        try:
            for check in checks:
                missing = [name for name in check.requires if name not in passed]
                if missing:
                    result = CheckResult(
                        check.name, "SKIP", 0.0, f"skipped: needs {', '.join(missing)} to pass"
                    )
                else:
                    result = timed(check.name, lambda check=check: check.run(ctx))
                if result.status == "PASS":
                    passed.add(check.name)
                report.add(result)
                notify(result)
        finally:
            if keep:
                report.notes += [f"kept (--keep): {obj}" for obj in kept_objects(ctx)]
            else:
                for result in cleanup(ctx, notify):
                    report.add(result)
                if "experiment" in ctx.attempted:
                    report.notes.append(SOFT_DELETE_NOTE)
            report.total_seconds = time.monotonic() - started
    return report
