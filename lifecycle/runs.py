"""Run housekeeping over the REST API: cleanup of old runs and reaping of stuck runs.

Everything here talks HTTP to the tracking server through a `lifecycle.client.Connection` (basic
auth, TLS CA, retries) — never to the database — so it works the same against a laptop stack, a
team's stack in AWS, or from CI.

Two rules shape the code:
- List first, then act. MLflow's page tokens are offsets; deleting runs while paging would shift
  later pages and silently skip runs. So a command pages through *every* match (no 500/1000 cap),
  decides, and only then writes, with bounded concurrency.
- Idempotent writes. Deleting an already-deleted run, or one that vanished, counts as done, so an
  interrupted cleanup is finished by simply running it again.
"""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from lifecycle.client import Connection, MlflowApiError

TERMINAL_STATUSES: tuple[str, ...] = ("FINISHED", "FAILED", "KILLED")
KEEP_TAG = "keep"
REAPED_REASON_TAG = "mlflow_stack.reaped_reason"
REAPED_AT_TAG = "mlflow_stack.reaped_at"
DEFAULT_CONCURRENCY = 8
DEFAULT_PAGE_SIZE = 1000
_EXPERIMENT_PAGE = 1000
_VERSION_PAGE = 10000
_ALREADY_GONE = {"RESOURCE_DOES_NOT_EXIST"}


@dataclass(frozen=True)
class RunRef:
    run_id: str
    experiment_id: str
    run_name: str
    status: str
    start_time: int | None
    end_time: int | None
    lifecycle_stage: str = "active"

    @classmethod
    def from_api(cls, run: dict[str, Any]) -> RunRef:
        info = run.get("info", {})
        return cls(
            run_id=info["run_id"],
            experiment_id=info["experiment_id"],
            run_name=info.get("run_name", ""),
            status=info.get("status", ""),
            start_time=_int_or_none(info.get("start_time")),
            end_time=_int_or_none(info.get("end_time")),
            lifecycle_stage=info.get("lifecycle_stage", "active"),
        )


@dataclass
class Experiment:
    experiment_id: str
    name: str
    lifecycle_stage: str = "active"
    last_update_time: int | None = None


@dataclass
class ActionOutcome:
    """What a bounded-concurrency batch of writes did, per run id."""

    done: list[str] = field(default_factory=list)
    already_gone: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


@dataclass
class CleanupReport:
    dry_run: bool
    experiment_pattern: str
    older_than_seconds: int
    statuses: list[str]
    experiments: list[dict[str, str]]
    scanned: int
    pages: int
    to_delete: list[str]
    kept_by_tag: list[str]
    kept_by_model_version: list[str]
    deleted: list[str] = field(default_factory=list)
    already_gone: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed

    def to_json(self) -> dict[str, Any]:
        body = asdict(self)
        body["counts"] = {
            "scanned": self.scanned,
            "to_delete": len(self.to_delete),
            "kept_by_tag": len(self.kept_by_tag),
            "kept_by_model_version": len(self.kept_by_model_version),
            "deleted": len(self.deleted),
            "already_gone": len(self.already_gone),
            "failed": len(self.failed),
        }
        return body


@dataclass
class ReapReport:
    dry_run: bool
    older_than_seconds: int
    experiments: list[dict[str, str]]
    stuck: list[dict[str, Any]]
    reaped: list[str] = field(default_factory=list)
    already_gone: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed

    def to_json(self) -> dict[str, Any]:
        body = asdict(self)
        body["counts"] = {
            "stuck": len(self.stuck),
            "reaped": len(self.reaped),
            "already_gone": len(self.already_gone),
            "failed": len(self.failed),
        }
        return body


# --- listing --------------------------------------------------------------------------------


def list_experiments(
    conn: Connection, pattern: str = "*", view_type: str = "ACTIVE_ONLY"
) -> list[Experiment]:
    """Every experiment whose name matches the shell-style `pattern` ('team-a/*'), all pages.

    Matching is done here with fnmatch rather than a SQL LIKE filter: LIKE treats '_' as a
    wildcard, and experiment names are full of underscores.
    """
    body = {"max_results": _EXPERIMENT_PAGE, "view_type": view_type}
    return [
        Experiment(
            experiment_id=exp["experiment_id"],
            name=exp["name"],
            lifecycle_stage=exp.get("lifecycle_stage", "active"),
            last_update_time=_int_or_none(exp.get("last_update_time")),
        )
        for exp in conn.paginate("experiments/search", body, "experiments")
        if fnmatch.fnmatchcase(exp["name"], pattern)
    ]


@dataclass
class PageCounter:
    pages: int = 0


def iter_runs(
    conn: Connection,
    experiment_ids: list[str],
    filter_string: str,
    run_view_type: str = "ACTIVE_ONLY",
    page_size: int = DEFAULT_PAGE_SIZE,
    counter: PageCounter | None = None,
) -> Iterator[dict[str, Any]]:
    """Every run matching `filter_string` in `experiment_ids`, following page tokens to the end."""
    # Experiments are searched in groups: one search over thousands of ids makes a huge query.
    for start in range(0, len(experiment_ids), 50):
        group = experiment_ids[start : start + 50]
        body: dict[str, Any] = {
            "experiment_ids": group,
            "filter": filter_string,
            "run_view_type": run_view_type,
            "max_results": page_size,
            # A stable order, so consecutive pages neither repeat nor skip runs.
            "order_by": ["attributes.start_time ASC", "attributes.run_id ASC"],
        }
        token: str | None = None
        while True:
            page = conn.page("runs/search", body, "runs", page_token=token)
            if counter is not None:
                counter.pages += 1
            yield from page.items
            token = page.next_page_token
            if not token:
                break


def model_linked_run_ids(conn: Connection) -> set[str]:
    """Run ids that any registered model version points to — deleting them would orphan a version.

    A version normally names its run (MLflow 3 fills it from the logged model it was registered
    from); for one that does not, the logged model's `source_run_id` is looked up.
    """
    run_ids: set[str] = set()
    model_ids: set[str] = set()
    versions = conn.paginate(
        "model-versions/search", {"max_results": _VERSION_PAGE}, "model_versions", method="GET"
    )
    for version in versions:
        if version.get("run_id"):
            run_ids.add(version["run_id"])
            continue
        # The REST shape of a version has no model_id; its source names the logged model.
        source = str(version.get("source", ""))
        if source.startswith("models:/m-"):
            model_ids.add(source.removeprefix("models:/").split("/", 1)[0])
    for model_id in model_ids:
        try:
            model = conn.call("GET", f"logged-models/{model_id}")
        except MlflowApiError as error:
            if _error_code(error) in _ALREADY_GONE:
                continue
            raise
        source = model.get("model", {}).get("info", {}).get("source_run_id")
        if source:
            run_ids.add(source)
    return run_ids


# --- writing --------------------------------------------------------------------------------


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM turned into it) stopped a batch; `outcome` is what was done before."""

    def __init__(self, outcome: ActionOutcome, reason: str = "") -> None:
        super().__init__(f"{reason or 'interrupted'}: {len(outcome.done)} run(s) had been changed")
        self.outcome = outcome


def run_bounded(
    run_ids: Iterable[str], action: Callable[[str], None], concurrency: int = DEFAULT_CONCURRENCY
) -> ActionOutcome:
    """Apply `action` to each run id with at most `concurrency` requests in flight.

    Failures are collected per run instead of aborting the batch: one bad run must not leave the
    other 4,999 undone, and the report names exactly which ones to look at. Work is submitted as
    slots free up (not all at once), so an interrupt stops within the requests already in flight;
    what was done is kept in the raised `Interrupted`, and a rerun picks up the rest.
    """
    outcome = ActionOutcome()

    def attempt(run_id: str) -> tuple[str, str, str]:
        try:
            action(run_id)
        except MlflowApiError as error:
            if _error_code(error) in _ALREADY_GONE:
                return run_id, "gone", ""
            return run_id, "failed", str(error)
        return run_id, "done", ""

    def record(result: tuple[str, str, str]) -> None:
        run_id, status, message = result
        if status == "done":
            outcome.done.append(run_id)
        elif status == "gone":
            outcome.already_gone.append(run_id)
        else:
            outcome.failed[run_id] = message

    pending: set[Future[tuple[str, str, str]]] = set()
    pool = ThreadPoolExecutor(max_workers=max(1, concurrency))
    try:
        for run_id in run_ids:
            if len(pending) >= max(1, concurrency):
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    record(future.result())
            pending.add(pool.submit(attempt, run_id))
        for future in pending:
            record(future.result())
    except KeyboardInterrupt as interrupt:
        # Let the requests already sent finish (their outcome is real), start nothing new.
        pool.shutdown(wait=True, cancel_futures=True)
        for future in pending:
            if future.done() and not future.cancelled():
                record(future.result())
        raise Interrupted(outcome, str(interrupt)) from None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return outcome


def delete_run(conn: Connection, run_id: str) -> None:
    # Deleting twice is harmless, so a dropped connection may be retried.
    conn.call("POST", "runs/delete", json={"run_id": run_id}, idempotent=True)


# --- commands -------------------------------------------------------------------------------


def cleanup(
    conn: Connection,
    experiment_pattern: str,
    older_than: timedelta,
    statuses: tuple[str, ...] = TERMINAL_STATUSES,
    apply: bool = False,
    concurrency: int = DEFAULT_CONCURRENCY,
    page_size: int = DEFAULT_PAGE_SIZE,
    now: datetime | None = None,
) -> CleanupReport:
    """Delete (soft: lifecycle_stage=deleted) terminal runs started before now - `older_than`.

    Survivors: runs tagged keep=true, and runs a registered model version points to. Deleted runs
    stay restorable until `runs gc` removes them for good.
    """
    started = time.monotonic()
    cutoff_ms = _cutoff_ms(older_than, now)
    experiments = list_experiments(conn, experiment_pattern)
    linked = model_linked_run_ids(conn) if experiments else set()
    experiment_ids = [e.experiment_id for e in experiments]
    counter = PageCounter()
    to_delete: list[str] = []
    kept_by_tag: list[str] = []
    kept_by_model: list[str] = []
    scanned = 0
    for run in (
        run
        # The search grammar has no OR and allows IN only for run_id: one search per status.
        for status in statuses
        for run in iter_runs(
            conn,
            experiment_ids,
            f"attributes.start_time < {cutoff_ms} AND attributes.status = '{status}'",
            page_size=page_size,
            counter=counter,
        )
    ):
        scanned += 1
        run_id = run["info"]["run_id"]
        if _tag(run, KEEP_TAG).strip().lower() == "true":
            kept_by_tag.append(run_id)
        elif run_id in linked:
            kept_by_model.append(run_id)
        else:
            to_delete.append(run_id)
    report = CleanupReport(
        dry_run=not apply,
        experiment_pattern=experiment_pattern,
        older_than_seconds=int(older_than.total_seconds()),
        statuses=list(statuses),
        experiments=[{"experiment_id": e.experiment_id, "name": e.name} for e in experiments],
        scanned=scanned,
        pages=counter.pages,
        to_delete=to_delete,
        kept_by_tag=kept_by_tag,
        kept_by_model_version=kept_by_model,
    )
    if apply and to_delete:
        outcome = run_bounded(to_delete, lambda run_id: delete_run(conn, run_id), concurrency)
        report.deleted, report.already_gone, report.failed = (
            outcome.done,
            outcome.already_gone,
            outcome.failed,
        )
    report.seconds = round(time.monotonic() - started, 3)
    return report


def reap_stuck(
    conn: Connection,
    older_than: timedelta,
    experiment_pattern: str = "*",
    apply: bool = False,
    concurrency: int = DEFAULT_CONCURRENCY,
    now: datetime | None = None,
) -> ReapReport:
    """Mark RUNNING runs with no end time, started before now - `older_than`, as FAILED.

    A crashed training job never calls end_run; its run says RUNNING forever and pollutes every
    "what is running" view. The tag records why the status changed, for whoever finds it later.
    """
    moment = now or datetime.now(UTC)
    cutoff_ms = _cutoff_ms(older_than, moment)
    experiments = list_experiments(conn, experiment_pattern)
    filter_string = f"attributes.status = 'RUNNING' AND attributes.start_time < {cutoff_ms}"
    stuck = [
        RunRef.from_api(run)
        for run in iter_runs(conn, [e.experiment_id for e in experiments], filter_string)
        if not run["info"].get("end_time")
    ]
    report = ReapReport(
        dry_run=not apply,
        older_than_seconds=int(older_than.total_seconds()),
        experiments=[{"experiment_id": e.experiment_id, "name": e.name} for e in experiments],
        stuck=[asdict(r) for r in stuck],
    )
    if not apply or not stuck:
        return report
    now_ms = int(moment.timestamp() * 1000)
    hours = older_than.total_seconds() / 3600
    reason = (
        f"RUNNING with no end time more than {hours:g}h after it started; "
        "set to FAILED by `mlflow-stack runs reap-stuck`"
    )

    def reap(run_id: str) -> None:
        # Tag first: if the status update then fails, the run still says why someone looked at it.
        stamp = moment.isoformat(timespec="seconds")
        for key, value in ((REAPED_REASON_TAG, reason), (REAPED_AT_TAG, stamp)):
            conn.call(
                "POST", "runs/set-tag", json={"run_id": run_id, "key": key, "value": value}, idempotent=True
            )
        conn.call(
            "POST",
            "runs/update",
            json={"run_id": run_id, "status": "FAILED", "end_time": now_ms},
            idempotent=True,
        )

    outcome = run_bounded([r.run_id for r in stuck], reap, concurrency)
    report.reaped, report.already_gone, report.failed = outcome.done, outcome.already_gone, outcome.failed
    return report


# --- helpers --------------------------------------------------------------------------------


def _cutoff_ms(older_than: timedelta, now: datetime | None) -> int:
    moment = now or datetime.now(UTC)
    return int((moment - older_than).timestamp() * 1000)


def _tag(run: dict[str, Any], key: str) -> str:
    for tag in run.get("data", {}).get("tags", []):
        if tag.get("key") == key:
            return str(tag.get("value", ""))
    return ""


def _int_or_none(value: Any) -> int | None:
    return int(value) if value not in (None, "") else None


def _error_code(error: Exception) -> str:
    return str(getattr(error, "error_code", "") or "")
