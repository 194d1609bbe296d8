"""Model registry operations for CI: the champion/challenger gate, promotion, rollback, doctor.

Aliases are the registry's pointers (`champion`, `challenger`, `previous-champion`); tags on model
versions are the audit trail (who moved what, when, why). Promotion and rollback move two aliases,
so they run under a DynamoDB lease (lifecycle/locks.py): two pipelines promoting at once are
serialised by AWS, never by a read-then-write race in the client.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlparse

from lifecycle.client import Connection, MlflowApiError
from lifecycle.locks import DynamoLock

PREVIOUS_PREFIX = "previous-"
TAG_PREFIX = "mlflow_stack."
_NOT_FOUND = {"RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"}
_VERSION_PAGE = 1000


class PreconditionFailed(RuntimeError):
    """The registry is not in a state the command can act on (e.g. no alias to promote from)."""


class LockLost(RuntimeError):
    """This pipeline's lease expired before it could write; nothing more was changed."""


# --- reading --------------------------------------------------------------------------------


def alias_version(
    conn: Connection, name: str, alias: str, model: dict[str, Any] | None = None
) -> dict[str, Any] | None:
    """The model version an alias points to, or None when the alias is not set.

    Read from the registered model's alias list: the alias endpoint answers a missing alias with a
    generic 400 INVALID_PARAMETER_VALUE, indistinguishable from a malformed request.
    """
    aliases = (model or require_model(conn, name)).get("aliases", [])
    version = next((str(a["version"]) for a in aliases if a.get("alias") == alias), None)
    if version is None:
        return None
    return conn.call("GET", "model-versions/get", params={"name": name, "version": version})["model_version"]


def require_model(conn: Connection, name: str) -> dict[str, Any]:
    try:
        return conn.call("GET", "registered-models/get", params={"name": name})["registered_model"]
    except MlflowApiError as error:
        if _code(error) in _NOT_FOUND:
            raise PreconditionFailed(
                f"registered model {name!r} does not exist (check the name, and that this user can read it)"
            ) from None
        raise


@dataclass
class MetricLookup:
    value: float | None
    source: str  # "run <id>", "logged model <id>", or "" when not found
    available: list[str] = field(default_factory=list)


def version_metric(conn: Connection, version: dict[str, Any], metric: str) -> MetricLookup:
    """The metric's latest value for a version: from its run, else from its MLflow 3 logged model."""
    available: list[str] = []
    run_id = version.get("run_id")
    if run_id:
        try:
            run = conn.call("GET", "runs/get", params={"run_id": run_id})["run"]
        except MlflowApiError as error:
            if _code(error) not in _NOT_FOUND:
                raise
        else:
            metrics = {m["key"]: m["value"] for m in run.get("data", {}).get("metrics", [])}
            available.extend(metrics)
            if metric in metrics:
                return MetricLookup(float(metrics[metric]), f"run {run_id}", sorted(available))
    model_id = _logged_model_id(version)
    if model_id:
        try:
            model = conn.call("GET", f"logged-models/{model_id}")["model"]
        except MlflowApiError as error:
            if _code(error) not in _NOT_FOUND:
                raise
        else:
            metrics = {m["key"]: m["value"] for m in model.get("data", {}).get("metrics", [])}
            available.extend(k for k in metrics if k not in available)
            if metric in metrics:
                return MetricLookup(float(metrics[metric]), f"logged model {model_id}", sorted(available))
    return MetricLookup(None, "", sorted(available))


# --- validate -------------------------------------------------------------------------------


@dataclass
class Check:
    name: str  # "metric-present", "threshold", "regression"
    passed: bool
    detail: str


@dataclass
class ValidationResult:
    model: str
    metric: str
    higher_is_better: bool
    challenger_alias: str
    champion_alias: str
    challenger: dict[str, Any] | None
    champion: dict[str, Any] | None
    checks: list[Check]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def to_json(self) -> dict[str, Any]:
        body = asdict(self)
        body["passed"] = self.passed
        body["failed_checks"] = [c.name for c in self.checks if not c.passed]
        return body


def missing_metric_hint(metric: str, available: list[str]) -> str:
    """Why a metric may be missing, including MLflow 3's refusal of '@' in metric names."""
    hints = []
    if "@" in metric:
        hints.append(
            f"MLflow 3 rejects metric names containing '@' (only alphanumerics, _ - . space : / are "
            f"allowed), so {metric!r} can never have been logged; log and validate e.g. "
            f"{metric.replace('@', '_at_')!r} instead"
        )
    close = difflib.get_close_matches(metric.replace("@", "_at_"), available, n=3, cutoff=0.6)
    if close:
        hints.append(f"did you mean {', '.join(repr(c) for c in close)}?")
    elif available:
        hints.append(f"logged metrics: {', '.join(available[:20])}")
    else:
        hints.append("the version's run logged no metrics at all")
    return "; ".join(hints)


def validate(
    conn: Connection,
    name: str,
    metric: str,
    threshold: float | None = None,
    max_regression: float | None = None,
    higher_is_better: bool = True,
    challenger_alias: str = "challenger",
    champion_alias: str = "champion",
) -> ValidationResult:
    """The champion/challenger gate. Every check that applies is reported, not just the first failure."""
    model = require_model(conn, name)
    challenger = alias_version(conn, name, challenger_alias, model)
    if challenger is None:
        raise PreconditionFailed(
            f"model {name!r} has no {challenger_alias!r} alias: set it on the candidate version first "
            f"(MlflowClient().set_registered_model_alias({name!r}, {challenger_alias!r}, VERSION))"
        )
    champion = alias_version(conn, name, champion_alias, model)
    checks: list[Check] = []
    found = version_metric(conn, challenger, metric)
    result = ValidationResult(
        model=name,
        metric=metric,
        higher_is_better=higher_is_better,
        challenger_alias=challenger_alias,
        champion_alias=champion_alias,
        challenger={
            "version": challenger["version"],
            "run_id": challenger.get("run_id"),
            "value": found.value,
        },
        champion=None,
        checks=checks,
    )
    if found.value is None or math.isnan(found.value):
        checks.append(
            Check(
                "metric-present",
                False,
                f"challenger version {challenger['version']} has no metric {metric!r}: "
                + missing_metric_hint(metric, found.available),
            )
        )
        return result
    value = found.value
    checks.append(Check("metric-present", True, f"{metric}={value:g} (from {found.source})"))
    better = "higher" if higher_is_better else "lower"
    if threshold is not None:
        ok = value >= threshold if higher_is_better else value <= threshold
        relation = ">=" if higher_is_better else "<="
        checks.append(
            Check(
                "threshold",
                ok,
                f"{metric}={value:g} {'meets' if ok else 'fails'} the threshold {relation} {threshold:g} "
                f"({better} is better)",
            )
        )
    if max_regression is not None:
        check, champion_value = _regression_check(
            conn, name, champion, champion_alias, metric, value, max_regression, higher_is_better
        )
        checks.append(check)
        if champion is not None:
            result.champion = {
                "version": champion["version"],
                "run_id": champion.get("run_id"),
                "value": champion_value,
            }
    return result


def _regression_check(
    conn: Connection,
    name: str,
    champion: dict[str, Any] | None,
    champion_alias: str,
    metric: str,
    value: float,
    max_regression: float,
    higher_is_better: bool,
) -> tuple[Check, float | None]:
    """The challenger's value against the champion's; returns the check and the champion's value."""
    if champion is None:
        return Check(
            "regression", True, f"model {name!r} has no {champion_alias!r} yet: nothing to regress from"
        ), None
    champ = version_metric(conn, champion, metric)
    if champ.value is None or math.isnan(champ.value):
        # The gate cannot compare; passing silently would let any challenger through, so fail.
        detail = f"{champion_alias} version {champion['version']} has no metric {metric!r} to compare with: "
        return Check("regression", False, detail + missing_metric_hint(metric, champ.available)), None
    # Regression as a fraction of the champion's value, in the "worse" direction.
    worse_by = (champ.value - value) if higher_is_better else (value - champ.value)
    scale = abs(champ.value) if champ.value != 0 else 1.0
    regression = worse_by / scale
    ok = regression <= max_regression + 1e-12
    direction = "worse" if worse_by > 0 else "better or equal"
    detail = (
        f"challenger {metric}={value:g} vs {champion_alias} v{champion['version']} {champ.value:g}: "
        f"{abs(regression):.2%} {direction} (allowed regression {max_regression:.2%})"
    )
    return Check("regression", ok, detail), champ.value


# --- promote / rollback ---------------------------------------------------------------------


@dataclass
class AliasMove:
    model: str
    action: str  # "promoted", "already-current", "rolled-back"
    alias: str
    version: str
    replaced_version: str | None
    previous_alias: str
    previous_version: str | None
    by: str
    at: str
    reason: str
    lock_id: str
    lock_waited_seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def promote(
    conn: Connection,
    name: str,
    lock: DynamoLock,
    from_alias: str = "challenger",
    to_alias: str = "champion",
    reason: str = "",
    by: str = "",
    wait_seconds: float = 0.0,
    now: datetime | None = None,
) -> AliasMove:
    """`to_alias` <- the version `from_alias` points to; the replaced version becomes previous-<to>."""
    previous_alias = PREVIOUS_PREFIX + to_alias
    with _locked(lock, wait_seconds) as waited:
        # Everything is read *inside* the lock, so the state acted on is the state after any
        # promotion that won the race.
        model = require_model(conn, name)
        candidate = alias_version(conn, name, from_alias, model)
        if candidate is None:
            raise PreconditionFailed(f"model {name!r} has no {from_alias!r} alias: nothing to promote")
        current = alias_version(conn, name, to_alias, model)
        stamp = (now or datetime.now(UTC)).isoformat(timespec="seconds")
        move = AliasMove(
            model=name,
            action="promoted",
            alias=to_alias,
            version=str(candidate["version"]),
            replaced_version=str(current["version"]) if current else None,
            previous_alias=previous_alias,
            previous_version=None,
            by=by,
            at=stamp,
            reason=reason,
            lock_id=lock.lock_id,
            lock_waited_seconds=round(waited(), 3),
        )
        if current is not None and str(current["version"]) == move.version:
            # A second pipeline promoting the same version must not make previous-champion point
            # at the champion itself, which would leave nothing real to roll back to.
            move.action = "already-current"
            prior = alias_version(conn, name, previous_alias, model)
            move.previous_version = str(prior["version"]) if prior else None
            return move
        _ensure_held(lock)
        if current is not None:
            _set_alias(conn, name, previous_alias, move.replaced_version or "")
            move.previous_version = move.replaced_version
            _set_tags(
                conn,
                name,
                move.replaced_version or "",
                {
                    "demoted_at": stamp,
                    "demoted_by": by,
                    "demoted_from": to_alias,
                    "replaced_by": move.version,
                },
            )
        _set_alias(conn, name, to_alias, move.version)
        _set_tags(
            conn,
            name,
            move.version,
            {
                "promoted_at": stamp,
                "promoted_by": by,
                "promoted_to": to_alias,
                "promoted_from": from_alias,
                "promoted_reason": reason,
            },
        )
        return move


def rollback(
    conn: Connection,
    name: str,
    lock: DynamoLock,
    reason: str,
    alias: str = "champion",
    by: str = "",
    wait_seconds: float = 0.0,
    now: datetime | None = None,
) -> AliasMove:
    """`alias` <- previous-<alias>; the rolled-back version is tagged with the reason and time."""
    previous_alias = PREVIOUS_PREFIX + alias
    with _locked(lock, wait_seconds) as waited:
        model = require_model(conn, name)
        previous = alias_version(conn, name, previous_alias, model)
        if previous is None:
            raise PreconditionFailed(
                f"nothing to roll back to: model {name!r} has no {previous_alias!r} alias "
                f"(it is set when `models promote` replaces a {alias!r}, and cleared by a rollback)"
            )
        current = alias_version(conn, name, alias, model)
        stamp = (now or datetime.now(UTC)).isoformat(timespec="seconds")
        move = AliasMove(
            model=name,
            action="rolled-back",
            alias=alias,
            version=str(previous["version"]),
            replaced_version=str(current["version"]) if current else None,
            previous_alias=previous_alias,
            previous_version=None,
            by=by,
            at=stamp,
            reason=reason,
            lock_id=lock.lock_id,
            lock_waited_seconds=round(waited(), 3),
        )
        _ensure_held(lock)
        _set_alias(conn, name, alias, move.version)
        # previous-<alias> is consumed: a second rollback must not flip back to the bad version.
        conn.call("DELETE", "registered-models/alias", json={"name": name, "alias": previous_alias})
        if move.replaced_version and move.replaced_version != move.version:
            _set_tags(
                conn,
                name,
                move.replaced_version,
                {
                    "rolled_back_at": stamp,
                    "rolled_back_by": by,
                    "rolled_back_reason": reason,
                    "rolled_back_from": alias,
                    "rolled_back_to": move.version,
                },
            )
        _set_tags(
            conn, name, move.version, {"restored_at": stamp, "restored_by": by, "restored_reason": reason}
        )
        return move


class _locked:
    """Hold `lock` for the block and yield a callable giving the seconds spent waiting for it."""

    def __init__(self, lock: DynamoLock, wait_seconds: float) -> None:
        self.lock = lock
        self.wait_seconds = wait_seconds
        self.waited = 0.0

    def __enter__(self) -> Any:
        started = self.lock.clock()
        self.lock.acquire(self.wait_seconds)
        self.waited = self.lock.clock() - started
        return lambda: self.waited

    def __exit__(self, *exc: object) -> None:
        self.lock.release()


def _ensure_held(lock: DynamoLock) -> None:
    if not lock.still_held():
        raise LockLost(
            f"the lease on {lock.lock_id!r} expired before the aliases were written; nothing was changed. "
            "Rerun, or raise --lock-ttl if the server is this slow."
        )


def _set_alias(conn: Connection, name: str, alias: str, version: str) -> None:
    conn.call("POST", "registered-models/alias", json={"name": name, "alias": alias, "version": version})


def _set_tags(conn: Connection, name: str, version: str, tags: dict[str, str]) -> None:
    for key, value in tags.items():
        conn.call(
            "POST",
            "model-versions/set-tag",
            json={"name": name, "version": version, "key": TAG_PREFIX + key, "value": value},
        )


# --- doctor ---------------------------------------------------------------------------------


@dataclass
class VersionHealth:
    version: str
    source: str
    artifact_uri: str
    aliases: list[str]
    status: str  # "ok", "broken", "unverifiable"
    detail: str


@dataclass
class DoctorReport:
    model: str
    versions: list[VersionHealth]

    @property
    def broken(self) -> list[VersionHealth]:
        return [v for v in self.versions if v.status == "broken"]

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "versions": [asdict(v) for v in self.versions],
            "broken": [v.version for v in self.broken],
            "broken_aliases": sorted(a for v in self.broken for a in v.aliases),
        }


def doctor(conn: Connection, name: str) -> DoctorReport:
    """Every version of `name` whose artifacts hold no MLmodel, and the aliases that point at them.

    The usual cause under MLflow 3: a 2.x-style `create_model_version(source="runs:/<id>/model")`
    after `log_model`, which now stores the model under the logged model (models:/m-...), not under
    the run's artifacts — so the version registers fine and fails only when someone loads it.
    """
    model = require_model(conn, name)
    aliases_by_version: dict[str, list[str]] = {}
    for entry in model.get("aliases", []):
        aliases_by_version.setdefault(str(entry["version"]), []).append(entry["alias"])
    report = DoctorReport(model=name, versions=[])
    for version in _all_versions(conn, name):
        number = str(version["version"])
        uri = conn.call(
            "GET", "model-versions/get-download-uri", params={"name": name, "version": number}
        ).get("artifact_uri", "")
        status, detail = _check_artifacts(conn, uri)
        report.versions.append(
            VersionHealth(
                version=number,
                source=version.get("source", ""),
                artifact_uri=uri,
                aliases=sorted(aliases_by_version.get(number, [])),
                status=status,
                detail=detail,
            )
        )
    report.versions.sort(key=lambda v: int(v.version) if v.version.isdigit() else 0)
    return report


def _all_versions(conn: Connection, name: str) -> list[dict[str, Any]]:
    versions: list[dict[str, Any]] = []
    token: str | None = None
    escaped = name.replace("'", "\\'")
    while True:
        params: dict[str, Any] = {"filter": f"name='{escaped}'", "max_results": _VERSION_PAGE}
        if token:
            params["page_token"] = token
        page = conn.call("GET", "model-versions/search", params=params)
        versions.extend(page.get("model_versions", []))
        token = page.get("next_page_token")
        if not token:
            return versions


def _check_artifacts(conn: Connection, uri: str) -> tuple[str, str]:
    """('ok'|'broken'|'unverifiable', why) for one version's resolved artifact location."""
    parsed = urlparse(uri)
    if parsed.scheme == "runs":
        run_id, _, path = uri.removeprefix("runs:").lstrip("/").partition("/")
        files = _list_run_artifacts(conn, run_id, path)
        if files is None:
            return "broken", f"run {run_id} no longer exists"
        if f"{path}/MLmodel".lstrip("/") in files:
            return "ok", "MLmodel found in the run's artifacts"
        return "broken", (
            f"no MLmodel under runs:/{run_id}/{path}: under MLflow 3 the model lives under its logged "
            "model (models:/m-...). Re-register with mlflow.register_model(<model_uri from log_model>) "
            "or mlflow.register_model('runs:/<id>/<name>'), which resolves it; not "
            "MlflowClient().create_model_version(source='runs:/...')"
        )
    if parsed.scheme == "mlflow-artifacts":
        files = _list_proxied(conn, parsed.path.lstrip("/"))
        if "MLmodel" in files:
            return "ok", "MLmodel found"
        return "broken", f"no MLmodel at {uri}"
    return "unverifiable", f"{parsed.scheme or 'this'} URIs are not served by the tracking server's proxy"


def _list_run_artifacts(conn: Connection, run_id: str, path: str) -> set[str] | None:
    try:
        body = conn.call("GET", "artifacts/list", params={"run_id": run_id, "path": path})
    except MlflowApiError as error:
        if _code(error) in _NOT_FOUND:
            return None
        raise
    return {f["path"] for f in body.get("files", [])}


def _list_proxied(conn: Connection, path: str) -> set[str]:
    body = conn.call("GET", "/api/2.0/mlflow-artifacts/artifacts", params={"path": path})
    return {f["path"] for f in body.get("files", [])}


def _logged_model_id(version: dict[str, Any]) -> str | None:
    if version.get("model_id"):
        return str(version["model_id"])
    source = str(version.get("source", ""))
    if source.startswith("models:/m-"):
        return source.removeprefix("models:/").split("/", 1)[0]
    return None


def _code(error: Exception) -> str:
    return str(getattr(error, "error_code", "") or "")
