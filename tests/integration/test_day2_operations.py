"""Day-2 operations against the real local stack: cleanup, reap-stuck, gc, validate, promote, rollback,
doctor — through the load balancer (TLS + basic auth), with the lock on the emulator's DynamoDB.

The CLI is run as a real subprocess where exit codes and --json shapes are the point; the library
is called in-process where speed matters (seeding thousands of runs, racing promotions).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest

from bench.bench_cleanup import RunSpec, seed_runs
from lifecycle.client import Connection, MlflowApiError
from lifecycle.gc import collect_garbage
from lifecycle.locks import DynamoLock, LockHeld, dynamodb_client, model_lock_id
from lifecycle.models import alias_version, promote
from lifecycle.runs import cleanup
from lifecycle.targets import Target, gc_backend_store_uri
from local import s3_emulator
from tests.integration.local_cli import cli

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
BUCKET = (
    "mlflow-artifacts"  # local/stack.py BUCKET: proxied artifacts live under s3://BUCKET/mlflow-artifacts/
)


@pytest.fixture(scope="module")
def conn(local_stack: Any) -> Iterator[Connection]:
    with Connection(local_stack.url, local_stack.username, local_stack.password, local_stack.ca_file) as c:
        yield c


@pytest.fixture(scope="module")
def dynamodb(local_stack: Any) -> Any:
    return dynamodb_client(local_stack.s3_endpoint_url, credentials=dict(s3_emulator.DUMMY_CREDENTIALS))


def uid() -> str:
    return uuid.uuid4().hex[:8]


def new_experiment(conn: Connection, name: str) -> str:
    return str(conn.call("POST", "experiments/create", json={"name": name})["experiment_id"])


def search_ids(conn: Connection, experiment_id: str, view: str = "ACTIVE_ONLY") -> set[str]:
    body = {"experiment_ids": [experiment_id], "run_view_type": view, "max_results": 1000}
    return {r["info"]["run_id"] for r in conn.paginate("runs/search", body, "runs")}


def s3_keys(local_stack: Any, prefix: str) -> list[str]:
    s3 = boto3.client(
        "s3",
        endpoint_url=local_stack.s3_endpoint_url,
        region_name=s3_emulator.REGION,
        aws_access_key_id=s3_emulator.DUMMY_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=s3_emulator.DUMMY_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    )
    return [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])]


def run_artifact_prefix(conn: Connection, run_id: str) -> str:
    # mlflow-artifacts:/<exp>/<run>/artifacts -> <destination prefix>/<exp>/<run>/artifacts
    uri = conn.call("GET", "runs/get", params={"run_id": run_id})["run"]["info"]["artifact_uri"]
    return "mlflow-artifacts/" + uri.removeprefix("mlflow-artifacts:/").lstrip("/")


# --- gc (first: it removes every run deleted long enough ago, server-wide) -------------------------


def test_gc_removes_runs_deleted_before_the_cutoff_with_their_proxied_artifacts(
    local_stack: Any, conn: Connection
) -> None:
    from mlflow import MlflowClient

    exp_id = new_experiment(conn, f"day2-gc-{uid()}")
    started = int((time.time() - 3 * 86400) * 1000)  # three days ago: older than any cutoff below
    run_ids = []
    with conn.mlflow_client_env():
        client = MlflowClient()
        for name in ("old-deletion", "recent-deletion"):
            run = client.create_run(exp_id, start_time=started, run_name=name)
            client.log_text(run.info.run_id, "weights", "model/weights.txt")
            client.set_terminated(run.info.run_id, "FINISHED")
            run_ids.append(run.info.run_id)
    old, recent = run_ids
    prefixes = {run_id: run_artifact_prefix(conn, run_id) for run_id in run_ids}
    assert all(s3_keys(local_stack, p) for p in prefixes.values()), "artifacts did not reach S3"

    conn.call("POST", "runs/delete", json={"run_id": old})
    old_deleted = time.monotonic()
    code, dry = cli(local_stack, "runs", "gc", "--older-than", "10s")
    assert code == 0 and dry["dry_run"] is True
    assert old in {r["run_id"] for r in dry["candidate_runs"]}
    assert _info(conn, old)["lifecycle_stage"] == "deleted", "a dry run changed something"

    # The grace period is timing-sensitive, so this step runs in-process (MLflow already imported);
    # the CLI's own --apply path is exercised below, where timing no longer matters.
    import mlflow.cli  # noqa: F401 - importing takes seconds: do it before the window opens

    backend = gc_backend_store_uri(Target(conn, local_state_dir=local_stack.state_dir))
    time.sleep(max(0.0, 11 - (time.monotonic() - old_deleted)))
    conn.call("POST", "runs/delete", json={"run_id": recent})
    # `recent` was deleted under a second ago: inside the 10 s grace period whatever the load.
    applied = collect_garbage(conn, timedelta(seconds=10), apply=True, backend_store_uri=backend)
    assert old in applied.removed_runs
    assert recent not in applied.removed_runs and recent in applied.still_deleted_runs
    with pytest.raises(MlflowApiError) as gone:
        conn.call("GET", "runs/get", params={"run_id": old})
    assert gone.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    assert s3_keys(local_stack, prefixes[old]) == [], "mlflow gc left the proxied artifacts in S3"
    assert s3_keys(local_stack, prefixes[recent]), "a run inside its grace period lost its artifacts"

    time.sleep(10)
    code, body = cli(local_stack, "runs", "gc", "--older-than", "10s", "--apply")
    assert code == 0 and recent in body["removed_runs"], body
    assert s3_keys(local_stack, prefixes[recent]) == []


# --- cleanup ----------------------------------------------------------------------------------


def test_cleanup_over_5000_runs_deletes_exactly_the_right_ones_and_survives_an_interrupt(
    local_stack: Any, conn: Connection
) -> None:
    tag = uid()
    experiment = f"day2-cleanup-{tag}"
    exp_id = new_experiment(conn, experiment)
    other_id = new_experiment(conn, f"day2-elsewhere-{tag}")
    statuses = ("FINISHED", "FAILED", "KILLED")
    doomed_specs = [RunSpec(120 + i % 30, statuses[i % 3]) for i in range(4850)]
    doomed_specs += [RunSpec(100, "FINISHED", {"keep": "false"})] * 10
    kept_specs = [RunSpec(200, "FAILED", {"keep": "true"})] * 95 + [
        RunSpec(200, "KILLED", {"keep": "TRUE"})
    ] * 5
    linked_specs = [RunSpec(150, "FINISHED")] * 40
    young_specs = [RunSpec(10, "FINISHED")] * 20
    running_specs = [RunSpec(300, None)] * 20

    started = time.monotonic()
    specs = doomed_specs + kept_specs + linked_specs + young_specs + running_specs
    ids = seed_runs(conn, exp_id, specs)
    elsewhere = set(seed_runs(conn, other_id, [RunSpec(400, "FINISHED")] * 10))
    seed_seconds = time.monotonic() - started
    cut = [len(doomed_specs), len(kept_specs), len(linked_specs), len(young_specs), len(running_specs)]
    bounds = [sum(cut[:i]) for i in range(len(cut) + 1)]
    doomed, kept, linked, young, running = (set(ids[bounds[i] : bounds[i + 1]]) for i in range(len(cut)))
    assert len(doomed) + len(kept) + len(linked) == 5000

    # Runs a registered model version points to: 39 the 2.x way, one through an MLflow 3 logged model.
    model = f"day2-linked-{tag}"
    conn.call("POST", "registered-models/create", json={"name": model})
    linked_list = sorted(linked)
    for run_id in linked_list[:-1]:
        conn.call(
            "POST",
            "model-versions/create",
            json={"name": model, "source": f"runs:/{run_id}/model", "run_id": run_id},
        )
    logged = conn.call(
        "POST", "logged-models", json={"experiment_id": exp_id, "source_run_id": linked_list[-1]}
    )
    model_id = logged["model"]["info"]["model_id"]
    conn.call(
        "POST",
        "model-versions/create",
        json={"name": model, "source": f"models:/{model_id}", "model_id": model_id},
    )

    # Dry run: the full listing, many pages, nothing changed.
    dry = cleanup(conn, f"day2-cleanup-{tag}", _days(90), page_size=500)
    assert dry.dry_run and dry.scanned == 5000 and dry.pages >= 10
    assert set(dry.to_delete) == doomed
    assert set(dry.kept_by_tag) == kept and set(dry.kept_by_model_version) == linked
    assert len(search_ids(conn, exp_id)) == len(ids)

    # --apply, interrupted part-way (as a CI cancel or an ECS task stop would)...
    process = subprocess.Popen(
        [
            sys.executable, "-m", "cli.main", "runs", "cleanup", "--local",
            "--state-dir", local_stack.state_dir, "--experiment", experiment,
            "--older-than", "90d", "--apply", "--json", "--concurrency", "4",
        ],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while len(search_ids_page(conn, exp_id)) < 200:
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "cleanup never started deleting"
            time.sleep(0.3)
        process.send_signal(signal.SIGTERM)  # what ECS sends a task it stops; Ctrl-C takes the same path
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    interrupted = json.loads(out)
    assert process.returncode == 130 and interrupted["error"] == "interrupted", (out, err)
    assert "SIGTERM" in interrupted["message"] and "rerun" in interrupted["message"]
    partly_deleted = search_ids(conn, exp_id, "DELETED_ONLY")
    assert partly_deleted and partly_deleted < doomed

    # ... and simply run again: it finishes the job, touching only what is left.
    second = cleanup(conn, experiment, _days(90), apply=True, concurrency=8, page_size=500)
    assert second.ok, second.failed
    assert set(second.deleted) | set(second.already_gone) == doomed - partly_deleted
    assert search_ids(conn, exp_id, "DELETED_ONLY") == doomed
    assert search_ids(conn, exp_id) == kept | linked | young | running
    assert search_ids(conn, other_id) == elsewhere
    print(f"\nseeded {len(ids) + 10} runs in {seed_seconds:.0f}s; second cleanup pass {second.seconds}s")


def search_ids_page(conn: Connection, experiment_id: str) -> list[dict[str, Any]]:
    """One page of deleted runs: a cheap "has the cleanup started deleting?" probe."""
    body = {"experiment_ids": [experiment_id], "run_view_type": "DELETED_ONLY", "max_results": 1000}
    return conn.page("runs/search", body, "runs").items


def _days(n: int) -> Any:
    from datetime import timedelta

    return timedelta(days=n)


# --- reap-stuck -------------------------------------------------------------------------------


def test_reap_stuck_marks_only_old_running_runs_failed_and_says_why(
    local_stack: Any, conn: Connection
) -> None:
    experiment = f"day2-reap-{uid()}"
    exp_id = new_experiment(conn, experiment)
    stuck = seed_runs(conn, exp_id, [RunSpec(2, None)] * 3)
    fresh, done = seed_runs(conn, exp_id, [RunSpec(1 / 24, None), RunSpec(2, "FINISHED")])

    code, dry = cli(local_stack, "runs", "reap-stuck", "--older-than", "24h", "--experiment", experiment)
    assert code == 0 and {r["run_id"] for r in dry["stuck"]} == set(stuck)
    assert _info(conn, stuck[0])["status"] == "RUNNING"

    code, applied = cli(
        local_stack, "runs", "reap-stuck", "--older-than", "24h", "--experiment", experiment, "--apply"
    )
    assert code == 0 and set(applied["reaped"]) == set(stuck)
    for run_id in stuck:
        run = conn.call("GET", "runs/get", params={"run_id": run_id})["run"]
        tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
        assert run["info"]["status"] == "FAILED" and int(run["info"]["end_time"]) > 0
        assert "no end time" in tags["mlflow_stack.reaped_reason"] and tags["mlflow_stack.reaped_at"]
    assert _info(conn, fresh)["status"] == "RUNNING"
    assert _info(conn, done)["status"] == "FINISHED"


def _info(conn: Connection, run_id: str) -> dict[str, Any]:
    return conn.call("GET", "runs/get", params={"run_id": run_id})["run"]["info"]


# --- the registry -------------------------------------------------------------------------------


def make_model(conn: Connection, metrics_by_version: list[dict[str, float]]) -> str:
    """A registered model whose version i (1-based) has a run that logged metrics_by_version[i-1]."""
    name = f"day2-model-{uid()}"
    exp_id = new_experiment(conn, name)
    conn.call("POST", "registered-models/create", json={"name": name})
    for metrics in metrics_by_version:
        run_id = conn.call("POST", "runs/create", json={"experiment_id": exp_id})["run"]["info"]["run_id"]
        now = int(time.time() * 1000)
        batch = [{"key": k, "value": v, "timestamp": now, "step": 0} for k, v in metrics.items()]
        conn.call("POST", "runs/log-batch", json={"run_id": run_id, "metrics": batch})
        conn.call(
            "POST",
            "model-versions/create",
            json={"name": name, "source": f"runs:/{run_id}/model", "run_id": run_id},
        )
    return name


def set_alias(conn: Connection, name: str, alias: str, version: int) -> None:
    conn.call("POST", "registered-models/alias", json={"name": name, "alias": alias, "version": str(version)})


def aliases(conn: Connection, name: str) -> dict[str, str]:
    model = conn.call("GET", "registered-models/get", params={"name": name})["registered_model"]
    return {a["alias"]: str(a["version"]) for a in model.get("aliases", [])}


def version_tags(conn: Connection, name: str, version: str) -> dict[str, str]:
    mv = conn.call("GET", "model-versions/get", params={"name": name, "version": version})["model_version"]
    return {t["key"]: t["value"] for t in mv.get("tags", [])}


def test_validate_passes_and_fails_for_the_right_reasons(local_stack: Any, conn: Connection) -> None:
    name = make_model(
        conn,
        [
            {"val_auc": 0.90, "rmse": 1.00},  # v1 champion
            {"val_auc": 0.89, "rmse": 1.01},  # v2: 1.1% worse on both
            {"val_auc": 0.80, "rmse": 1.20},  # v3: much worse
            {"val_ndcg_at_10": 0.5},  # v4: logged the MLflow 3 spelling only
        ],
    )
    set_alias(conn, name, "champion", 1)
    set_alias(conn, name, "challenger", 2)
    gate = (
        "models",
        "validate",
        name,
        "--metric",
        "val_auc",
        "--threshold",
        "0.85",
        "--max-regression",
        "2%",
    )
    code, passed = cli(local_stack, *gate)
    assert code == 0 and passed["passed"] is True and passed["champion"]["version"] == "1"
    code, lower = cli(local_stack, "models", "validate", name, "--metric", "rmse", "--lower-is-better",
                      "--threshold", "1.05", "--max-regression", "2%")  # fmt: skip
    assert code == 0, lower

    set_alias(conn, name, "challenger", 3)
    code, failed = cli(local_stack, *gate)
    assert code == 1 and failed["failed_checks"] == ["threshold", "regression"]
    regression = next(c for c in failed["checks"] if c["name"] == "regression")
    assert "11.11% worse" in regression["detail"]
    code, lower = cli(local_stack, "models", "validate", name, "--metric", "rmse", "--lower-is-better",
                      "--max-regression", "2%")  # fmt: skip
    assert code == 1 and lower["failed_checks"] == ["regression"]

    set_alias(conn, name, "challenger", 4)
    code, missing = cli(
        local_stack, "models", "validate", name, "--metric", "val_ndcg@10", "--threshold", "0.1"
    )
    assert code == 1 and missing["failed_checks"] == ["metric-present"]
    detail = missing["checks"][0]["detail"]
    assert "'@'" in detail and "val_ndcg_at_10" in detail

    code, no_alias = cli(local_stack, "models", "validate", name, "--alias", "nope", "--metric", "val_auc",
                         "--threshold", "0.5")  # fmt: skip
    assert code == 5 and "no 'nope' alias" in no_alias["message"]


def test_promote_then_rollback_restores_the_exact_previous_champion(
    local_stack: Any, conn: Connection
) -> None:
    name = make_model(conn, [{"val_auc": 0.8}, {"val_auc": 0.9}])
    set_alias(conn, name, "champion", 1)
    set_alias(conn, name, "challenger", 2)

    code, promoted = cli(local_stack, "models", "promote", name, "--reason", "better auc", "--by", "ci-bot")
    assert code == 0 and promoted["action"] == "promoted"
    assert aliases(conn, name) == {"champion": "2", "challenger": "2", "previous-champion": "1"}
    tags = version_tags(conn, name, "2")
    assert (
        tags["mlflow_stack.promoted_by"] == "ci-bot" and tags["mlflow_stack.promoted_reason"] == "better auc"
    )
    assert tags["mlflow_stack.promoted_at"] == promoted["at"]
    assert version_tags(conn, name, "1")["mlflow_stack.replaced_by"] == "2"

    code, rolled = cli(
        local_stack, "models", "rollback", name, "--reason", "p99 latency regression", "--by", "oncall"
    )
    assert code == 0 and rolled["version"] == "1" and rolled["replaced_version"] == "2"
    assert aliases(conn, name) == {"champion": "1", "challenger": "2"}
    tags = version_tags(conn, name, "2")
    assert tags["mlflow_stack.rolled_back_reason"] == "p99 latency regression"
    assert tags["mlflow_stack.rolled_back_at"] == rolled["at"]

    code, nothing = cli(local_stack, "models", "rollback", name, "--reason", "again")
    assert code == 5 and "nothing to roll back to" in nothing["message"]
    assert aliases(conn, name)["champion"] == "1"


def test_concurrent_promotions_never_leave_aliases_inconsistent(
    local_stack: Any, conn: Connection, dynamodb: Any
) -> None:
    pipelines = 4
    name = make_model(conn, [{"val_auc": 0.5}] * (1 + pipelines * 4))
    set_alias(conn, name, "champion", 1)
    next_version = 2

    def race(wait_seconds: float) -> tuple[list[Any], list[Exception], dict[str, str]]:
        nonlocal next_version
        candidates = list(range(next_version, next_version + pipelines))
        next_version += pipelines
        for k, version in enumerate(candidates):
            set_alias(conn, name, f"candidate-{k}", version)
        before = aliases(conn, name)["champion"]
        barrier = threading.Barrier(pipelines)
        moves: list[Any] = []
        errors: list[Exception] = []

        def pipeline(k: int) -> None:
            lock = DynamoLock(dynamodb, local_stack.lock_table, model_lock_id(name), ttl_seconds=60)
            with Connection(
                local_stack.url, local_stack.username, local_stack.password, local_stack.ca_file
            ) as own:
                barrier.wait()
                try:
                    moves.append(
                        promote(
                            own,
                            name,
                            lock,
                            from_alias=f"candidate-{k}",
                            by=f"p{k}",
                            wait_seconds=wait_seconds,
                        )
                    )
                except LockHeld as error:
                    errors.append(error)

        threads = [threading.Thread(target=pipeline, args=(k,)) for k in range(pipelines)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        return moves, errors, {"before": before, **aliases(conn, name)}

    contended = 0
    for _ in range(3):  # no waiting: one pipeline wins, the others fail cleanly with LockHeld
        moves, errors, state = race(wait_seconds=0)
        assert moves and len(moves) + len(errors) == pipelines, (moves, errors)
        assert_one_chain(moves, state)
        assert all(f"lock '{model_lock_id(name)}' is held" in str(e) for e in errors)
        contended += len(errors)
    # Pipelines released together really collide (else the rounds above proved nothing).
    assert contended >= 3

    moves, errors, state = race(wait_seconds=60)  # waiting: all succeed, strictly one after another
    assert not errors and len(moves) == pipelines
    assert_one_chain(moves, state)
    assert alias_version(conn, name, "champion")["version"] == state["champion"]  # type: ignore[index]


def assert_one_chain(moves: list[Any], state: dict[str, str]) -> None:
    """Every promotion replaced the champion left by the one before it: before -> ... -> champion,
    and previous-champion is what the last one replaced. Two promotions that both read the same
    champion (the check-then-set race) would replace the same version and break the chain."""
    chain = {m.replaced_version: m.version for m in moves}
    assert len(chain) == len(moves), f"two promotions replaced the same champion: {moves}"
    current = state["before"]
    for _ in moves:
        current = chain[current]
    assert current == state["champion"]
    last = next(m for m in moves if m.version == state["champion"])
    assert state["previous-champion"] == last.replaced_version


def test_doctor_finds_versions_registered_the_mlflow2_way(local_stack: Any, conn: Connection) -> None:
    import mlflow
    import numpy as np
    from mlflow import MlflowClient
    from sklearn.linear_model import LogisticRegression

    name = f"day2-doctor-{uid()}"
    with conn.mlflow_client_env():
        mlflow.set_experiment(name)
        with mlflow.start_run() as run:
            fitted = LogisticRegression().fit(np.array([[0.0], [1.0], [2.0], [3.0]]), np.array([0, 0, 1, 1]))
            logged = mlflow.sklearn.log_model(fitted, name="model")
        client = MlflowClient()
        client.create_registered_model(name)
        broken = client.create_model_version(
            name, source=f"runs:/{run.info.run_id}/model", run_id=run.info.run_id
        )
        good = mlflow.register_model(logged.model_uri, name)
        client.set_registered_model_alias(name, "champion", broken.version)
        # Ground truth for doctor's verdicts: what loading each version actually does.
        with pytest.raises(Exception, match="MLmodel"):
            mlflow.pyfunc.load_model(f"models:/{name}/{broken.version}")
        mlflow.pyfunc.load_model(f"models:/{name}/{good.version}")

    code, report = cli(local_stack, "models", "doctor", name)
    assert code == 1
    assert report["broken"] == [str(broken.version)] and report["broken_aliases"] == ["champion"]
    statuses = {v["version"]: v["status"] for v in report["versions"]}
    assert statuses == {str(broken.version): "broken", str(good.version): "ok"}
    detail = next(v["detail"] for v in report["versions"] if v["status"] == "broken")
    assert "mlflow.register_model" in detail


def test_bad_input_is_refused_before_anything_is_sent(local_stack: Any, conn: Connection) -> None:
    experiment = f"day2-refuse-{uid()}"
    exp_id = new_experiment(conn, experiment)
    (run_id,) = seed_runs(conn, exp_id, [RunSpec(400, "FINISHED")])
    code, body = cli(
        local_stack, "runs", "cleanup", "--experiment", experiment, "--older-than", "90 days", "--apply"
    )
    assert code == 2 and "--older-than" in body["message"]
    code, body = cli(local_stack, "runs", "cleanup", "--experiment", experiment, "--older-than", "90d",
                     "--status", "RUNNING", "--apply")  # fmt: skip
    assert code == 2 and "--status" in body["message"]
    assert _info(conn, run_id)["lifecycle_stage"] == "active"
    # Nor does a report ever carry the admin password.
    assert local_stack.password not in json.dumps(body)
