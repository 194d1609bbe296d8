"""`mlflow-stack audit` and `models prune` against the real local stack (TLS, basic auth, PostgreSQL,
the lock table on the emulator's DynamoDB).

The stack is shared with every other integration test, so everything seeded here carries a unique
prefix and every assertion looks only at objects with that prefix. The CLI runs as a subprocess
where exit codes and --json are the point; ages are simulated by injecting the clock into the
library (never by sleeping) or with `--older-than 0`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from lifecycle.audit import run_audit
from lifecycle.audit_config import ARCHIVED_TAG, GovernanceConfig
from lifecycle.client import Connection, MlflowApiError
from lifecycle.locks import DynamoLock, dynamodb_client, model_lock_id
from lifecycle.models_prune import prune
from local import s3_emulator
from tests.integration.local_cli import cli

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
ALL_TAGS = {"team": "gov", "owner": "ana", "mlflow.source.git.commit": "0a1b2c3", "data_version": "2026-05"}


@pytest.fixture(scope="module")
def conn(local_stack: Any) -> Iterator[Connection]:
    with Connection(local_stack.url, local_stack.username, local_stack.password, local_stack.ca_file) as c:
        yield c


def mine(body: dict[str, Any], prefix: str) -> dict[str, set[str]]:
    """kind -> the subjects of this test's findings."""
    found: dict[str, set[str]] = {}
    for finding in body["findings"]:
        if prefix in finding["subject"]:
            found.setdefault(finding["kind"], set()).add(finding["subject"])
    return found


def new_run(conn: Connection, experiment_id: str, tags: dict[str, str]) -> str:
    body = {
        "experiment_id": experiment_id,
        "start_time": int(time.time() * 1000),
        "tags": [{"key": k, "value": v} for k, v in tags.items()],
    }
    return str(conn.call("POST", "runs/create", json=body)["run"]["info"]["run_id"])


def new_model(conn: Connection, name: str, run_id: str, alias: str | None = None) -> None:
    conn.call("POST", "registered-models/create", json={"name": name})
    version = conn.call(
        "POST",
        "model-versions/create",
        json={"name": name, "source": f"runs:/{run_id}/model", "run_id": run_id},
    )["model_version"]["version"]
    if alias:
        conn.call("POST", "registered-models/alias", json={"name": name, "alias": alias, "version": version})


def model_tags(conn: Connection, name: str) -> dict[str, str]:
    model = conn.call("GET", "registered-models/get", params={"name": name})["registered_model"]
    return {t["key"]: t["value"] for t in model.get("tags", [])}


@pytest.fixture(scope="module")
def seeded(conn: Connection) -> dict[str, str]:
    """Good and bad experiments, runs and models under a unique prefix."""
    p = f"gov{uuid.uuid4().hex[:8]}"
    names = {
        "prefix": p,
        "good_exp": f"/{p}/ranking/training",
        "untyped_exp": f"/{p}/ranking/scratch",
        "flat_exp": f"{p}-notebook",
        "untagged_exp": f"/{p}/ocr/training",
        "champion_model": f"{p}-search-ranking",
        "algorithm_model": f"{p}-churn-xgboost-v2",
        "aliased_model": f"{p}-fraud",
    }
    good = str(conn.call("POST", "experiments/create", json={"name": names["good_exp"]})["experiment_id"])
    for key in ("untyped_exp", "flat_exp"):
        conn.call("POST", "experiments/create", json={"name": names[key]})
    untagged = str(
        conn.call("POST", "experiments/create", json={"name": names["untagged_exp"]})["experiment_id"]
    )
    good_runs = [new_run(conn, good, ALL_TAGS) for _ in range(2)]
    # mlflow.source.git.commit missing, git_commit given instead: counts as the git commit.
    new_run(
        conn,
        good,
        {**{k: v for k, v in ALL_TAGS.items() if k != "mlflow.source.git.commit"}, "git_commit": "x"},
    )
    for _ in range(3):
        new_run(conn, untagged, {"team": "gov"})
    new_model(conn, names["champion_model"], good_runs[0], alias="champion")
    new_model(conn, names["algorithm_model"], good_runs[1])
    new_model(conn, names["aliased_model"], good_runs[1], alias="legacy")
    return names


def test_audit_reports_each_kind_for_the_bad_objects_and_not_the_good(
    local_stack: Any, conn: Connection, seeded: dict[str, str]
) -> None:
    p = seeded["prefix"]
    code, body = cli(local_stack, "audit")
    assert body["command"] == "audit" and body["ok"] is False and code == 1  # our warnings alone fail it
    found = mine(body, p)
    assert found["experiment-naming"] == {seeded["untyped_exp"], seeded["flat_exp"]}
    assert found["model-naming"] == {seeded["algorithm_model"]}
    assert found["runs-missing-tags"] == {seeded["untagged_exp"]}
    assert found["no-champion"] == {seeded["algorithm_model"], seeded["aliased_model"]}
    assert "unused-model" not in found  # everything here is minutes old
    by_subject = {(f["kind"], f["subject"]): f for f in body["findings"]}
    untagged = by_subject[("runs-missing-tags", seeded["untagged_exp"])]
    assert untagged["count"] == 3 and len(untagged["examples"]) == 3
    assert "owner 3" in untagged["detail"] and "data version 3" in untagged["detail"]
    assert "git commit 3" in untagged["detail"] and untagged["severity"] == "warning"
    naming = by_subject[("model-naming", seeded["algorithm_model"])]["detail"]
    assert "algorithm (xgboost)" in naming and "version (v2)" in naming
    # The shape CI reads.
    assert set(body["counts"]) == {
        "experiment-naming",
        "default-experiment-used",
        "model-naming",
        "runs-missing-tags",
        "no-champion",
        "unused-model",
    }
    assert body["counts"]["model-naming"] >= 1 and body["failing"] >= 4
    assert body["scanned"]["runs"] >= 6 and body["config"]["source"] == "stacks/governance.yaml"
    assert set(body["worst_offenders"]) <= set(body["counts"])

    # The same server through the exit-code knobs: no rule is at `error` by default...
    code, passing = cli(local_stack, "audit", "--fail-on", "error")
    assert code == 0 and passing["ok"] is True and passing["failing"] == 0
    # ...a config that makes model naming an error fails on our model...
    strict = Path(local_stack.state_dir) / f"{p}-governance.yaml"
    strict.write_text("severities:\n  model-naming: error\n")
    code, failing = cli(local_stack, "audit", "--config", str(strict), "--fail-on", "error")
    errors = {f["subject"] for f in failing["findings"] if f["severity"] == "error"}
    assert code == 1 and seeded["algorithm_model"] in errors and failing["failing"] == len(errors)
    # ...unless that many findings are tolerated.
    code, tolerated = cli(
        local_stack,
        "audit",
        "--config",
        str(strict),
        "--fail-on",
        "error",
        "--max-findings",
        str(len(errors)),
    )
    assert code == 0 and tolerated["ok"] is True


def test_audit_finds_unused_models_once_they_are_old(conn: Connection, seeded: dict[str, str]) -> None:
    """A clock 100 days ahead: the unaliased model is unused; aliased ones never are."""
    report = run_audit(conn, GovernanceConfig(), now=datetime.now(UTC) + timedelta(days=100))
    unused = {
        f.subject: f for f in report.findings if f.kind == "unused-model" and seeded["prefix"] in f.subject
    }
    assert set(unused) == {seeded["algorithm_model"]} and unused[seeded["algorithm_model"]].count == 100


def test_prune_archives_then_deletes_only_the_unused_unaliased_model(
    local_stack: Any, conn: Connection, seeded: dict[str, str]
) -> None:
    pattern = f"{seeded['prefix']}-*"
    target, champion, aliased = seeded["algorithm_model"], seeded["champion_model"], seeded["aliased_model"]

    code, dry = cli(local_stack, "models", "prune", "--model", pattern, "--older-than", "0")
    assert code == 0 and dry["dry_run"] is True and dry["counts"]["scanned"] == 3
    assert [c["name"] for c in dry["candidates"]] == [target]
    assert ARCHIVED_TAG not in model_tags(conn, target)  # a dry run writes nothing

    # Not yet 90 days old: nothing to do.
    code, young = cli(local_stack, "models", "prune", "--model", pattern, "--apply")
    assert code == 0 and young["candidates"] == [] and young["acted"] == []

    code, archived = cli(
        local_stack, "models", "prune", "--model", pattern, "--older-than", "0", "--apply", "--by", "ci"
    )
    assert code == 0 and archived["acted"] == [target]
    tags = model_tags(conn, target)
    assert tags[ARCHIVED_TAG] and tags[f"{ARCHIVED_TAG}_by"].startswith("ci")
    assert ARCHIVED_TAG not in model_tags(conn, champion) and ARCHIVED_TAG not in model_tags(conn, aliased)
    code, again = cli(local_stack, "models", "prune", "--model", pattern, "--older-than", "0", "--apply")
    assert code == 0 and again["acted"] == [] and again["already_archived"] == [target]

    # Another pipeline holds the model's promotion lock: prune waits its turn (skips, exit 1).
    dynamodb = dynamodb_client(local_stack.s3_endpoint_url, credentials=dict(s3_emulator.DUMMY_CREDENTIALS))
    other = DynamoLock(dynamodb, local_stack.lock_table, model_lock_id(target), holder="release-pipeline")
    with other.hold():
        code, locked = cli(
            local_stack, "models", "prune", "--model", pattern, "--older-than", "0", "--delete", "--apply"
        )
    assert code == 1 and locked["acted"] == [] and "release-pipeline" in locked["skipped"][target]
    assert model_tags(conn, target)

    # A year on (injected clock), --delete: the archived model goes; the aliased ones stay, however old.
    report = prune(
        conn,
        older_than_days=90,
        model_pattern=pattern,
        mode="delete",
        apply=True,
        lock_for=lambda name: DynamoLock(dynamodb, local_stack.lock_table, model_lock_id(name)),
        now=datetime.now(UTC) + timedelta(days=365),
    )
    assert report.acted == [target] and report.skipped == {} and report.failed == {}
    with pytest.raises(MlflowApiError) as gone:
        model_tags(conn, target)
    assert gone.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    assert model_tags(conn, champion) == {} and model_tags(conn, aliased) == {}
    assert other.current_holder() is None  # prune released the lease it took
