"""Runs under whichever MLflow the interpreter has: the old release in its throwaway environment
(to fill a server and snapshot it), and the kit's pinned MLflow (to snapshot it after the upgrade).

    python mlflow_client_script.py fill <manifest.json>    # data, users and grants, as an old client
    python mlflow_client_script.py snapshot <out.json>     # everything the client API can read back
    python mlflow_client_script.py log <out.json>          # one more run, after the upgrade

The server and credentials come from MLFLOW_TRACKING_URI / MLFLOW_TRACKING_USERNAME / _PASSWORD.
Only APIs present in MLflow 2.22 and 3.x alike are used; the snapshot is normalised (sorted,
versions as strings) so the two can be compared as equal, key for key.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import sys
import tempfile
from pathlib import Path

import mlflow
from mlflow.entities import Metric, Param, ViewType
from mlflow.tracking import MlflowClient

PROMPT = "greeting"
EXPERIMENTS = ("exp-a", "exp-b", "exp-secret")


def _password() -> str:
    return secrets.token_urlsafe(18)


def fill(manifest_path: Path) -> None:
    client = MlflowClient()
    ids = {name: client.create_experiment(name, tags={"team": name.upper()}) for name in EXPERIMENTS}
    run_ids = []
    with tempfile.TemporaryDirectory() as tmp:
        for index, experiment in enumerate(("exp-a", "exp-a", "exp-b", "exp-secret")):
            run = client.create_run(ids[experiment], run_name=f"run-{index}", tags={"stage": f"s{index}"})
            run_id = run.info.run_id
            run_ids.append(run_id)
            # One batch per run: every call costs the old server a password-hash check (no cache in 2.x).
            client.log_batch(
                run_id,
                metrics=[
                    Metric(key, value, 1_700_000_000_000 + step, step)
                    for step in range(25)
                    for key, value in (("loss", 1.0 / (step + 1 + index)), ("acc", step * 0.01 + index))
                ],
                params=[Param(key, f"{key}-{index}") for key in ("lr", "batch")],
            )
            data = Path(tmp) / f"run{index}"
            (data / "nested").mkdir(parents=True)
            (data / "notes.txt").write_text(f"run {index}\n")
            (data / "nested" / "weights.bin").write_bytes(os.urandom(4096 + index))
            client.log_artifacts(run_id, str(data), artifact_path="files")
            client.set_terminated(run_id, "FINISHED")
        deleted = client.create_run(ids["exp-b"], run_name="deleted-run")
        client.log_param(deleted.info.run_id, "gone", "yes")
        client.delete_run(deleted.info.run_id)

    for name, description in (("model-a", "the champion"), ("model-b", "")):
        client.create_registered_model(name, tags={"domain": name}, description=description)
        for version, run_id in enumerate(run_ids[:2], start=1):
            mv = client.create_model_version(
                name,
                source=f"mlflow-artifacts:/models/{name}/{version}",
                run_id=run_id,
                tags={"v": str(version)},
            )
            client.set_model_version_tag(name, mv.version, "validated", str(version == 1).lower())
        client.set_registered_model_alias(name, "champion", "1")
        client.set_registered_model_alias(name, "challenger", "2")

    mlflow.register_prompt(PROMPT, "Hello {{name}}!", commit_message="first")
    mlflow.register_prompt(PROMPT, "Hello {{name}}, welcome.", commit_message="second")

    mlflow.set_experiment("exp-a")
    for index in range(2):
        with mlflow.start_span(name=f"root-{index}") as span:
            span.set_inputs({"question": f"q{index}"})
            with mlflow.start_span(name="child") as child:
                child.set_inputs({"i": index})
                child.set_outputs({"o": index * 2})
            span.set_outputs({"answer": f"a{index}"})
    # MLflow 3 uploads a trace's spans in the background: wait for them before the process ends.
    flush = getattr(mlflow, "flush_trace_async_logging", None)
    if flush is not None:
        flush(terminate=False)

    from mlflow.server import get_app_client

    auth = get_app_client("basic-auth", tracking_uri=os.environ["MLFLOW_TRACKING_URI"])
    users = {name: _password() for name in ("alice", "bob", "carol")}
    for name, password in users.items():
        auth.create_user(name, password)
    grants = [
        ("alice", "experiment", ids["exp-a"], "READ"),
        ("alice", "registered_model", "model-a", "EDIT"),
        ("alice", "prompt", PROMPT, "READ"),
        ("bob", "experiment", ids["exp-b"], "MANAGE"),
        ("bob", "experiment", ids["exp-secret"], "NO_PERMISSIONS"),
        ("bob", "registered_model", "model-b", "READ"),
        ("carol", "experiment", ids["exp-secret"], "EDIT"),
    ]
    for user, kind, resource, permission in grants:
        if kind == "experiment":
            auth.create_experiment_permission(resource, user, permission)
        else:  # prompts are registered models to a 2.x server
            auth.create_registered_model_permission(resource, user, permission)
    manifest = {"experiments": ids, "users": users, "grants": grants, "run_ids": run_ids}
    manifest_path.write_text(json.dumps(manifest, indent=2))


def _artifacts(client: MlflowClient, run_id: str, path: str | None = None) -> dict[str, str]:
    found: dict[str, str] = {}
    for item in client.list_artifacts(run_id, path):
        if item.is_dir:
            found.update(_artifacts(client, run_id, item.path))
            continue
        with tempfile.TemporaryDirectory() as tmp:
            local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=item.path, dst_path=tmp)
            found[item.path] = hashlib.sha256(Path(local).read_bytes()).hexdigest()
    return found


def _trace_id(info: object) -> str:
    return str(getattr(info, "trace_id", None) or info.request_id)  # type: ignore[attr-defined]


def snapshot(out: Path) -> None:
    client = MlflowClient()
    experiments = {}
    for experiment in sorted(client.search_experiments(view_type=ViewType.ALL), key=lambda e: e.name):
        runs = {}
        for run in client.search_runs(
            [experiment.experiment_id], run_view_type=ViewType.ALL, max_results=1000
        ):
            run_id = run.info.run_id
            runs[run_id] = {
                "name": run.info.run_name,
                "status": run.info.status,
                "lifecycle": run.info.lifecycle_stage,
                "start": run.info.start_time,
                "params": dict(sorted(run.data.params.items())),
                "tags": {k: v for k, v in sorted(run.data.tags.items())},
                "metrics": {
                    key: [(m.step, m.value, m.timestamp) for m in client.get_metric_history(run_id, key)]
                    for key in sorted(run.data.metrics)
                },
                "artifacts": _artifacts(client, run_id) if run.info.lifecycle_stage == "active" else {},
            }
        traces = []
        if experiment.name == "exp-a":
            for trace in client.search_traces([experiment.experiment_id], max_results=100):
                traces.append(
                    {
                        "id": _trace_id(trace.info),
                        "spans": sorted(
                            (
                                s.name,
                                json.dumps(s.inputs, sort_keys=True),
                                json.dumps(s.outputs, sort_keys=True),
                            )
                            for s in trace.data.spans
                        ),
                    }
                )
        experiments[experiment.name] = {
            "id": experiment.experiment_id,
            "lifecycle": experiment.lifecycle_stage,
            "tags": {k: v for k, v in sorted(experiment.tags.items())},
            "artifact_location": experiment.artifact_location,
            "runs": runs,
            "traces": sorted(traces, key=lambda t: t["id"]),
        }
    models = {}
    for name in ("model-a", "model-b"):
        model = client.get_registered_model(name)
        versions = client.search_model_versions(f"name = '{name}'")
        models[name] = {
            "description": model.description or "",
            "tags": dict(sorted(model.tags.items())),
            "aliases": {alias: str(version) for alias, version in sorted(model.aliases.items())},
            "versions": {
                str(v.version): {"source": v.source, "run_id": v.run_id, "tags": dict(sorted(v.tags.items()))}
                for v in sorted(versions, key=lambda v: int(v.version))
            },
            "alias_lookup": {
                a: str(client.get_model_version_by_alias(name, a).version) for a in sorted(model.aliases)
            },
        }
    load_prompt = getattr(getattr(mlflow, "genai", None), "load_prompt", None) or mlflow.load_prompt
    prompts = {f"{PROMPT}/{v}": load_prompt(f"prompts:/{PROMPT}/{v}").template for v in (1, 2)}
    out.write_text(
        json.dumps(
            {"experiments": experiments, "models": models, "prompts": prompts}, indent=2, sort_keys=True
        )
    )


def log(out: Path) -> None:
    client = MlflowClient()
    experiment = client.get_experiment_by_name("exp-a")
    run = client.create_run(experiment.experiment_id, run_name="after-upgrade")
    client.log_param(run.info.run_id, "client", mlflow.__version__)
    client.log_metric(run.info.run_id, "loss", 0.5, step=1)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "after.txt"
        path.write_text("logged by an old client\n")
        client.log_artifact(run.info.run_id, str(path))
    client.set_terminated(run.info.run_id)
    out.write_text(json.dumps({"run_id": run.info.run_id, "client": mlflow.__version__}))


if __name__ == "__main__":
    command, target = sys.argv[1], Path(sys.argv[2])
    {"fill": fill, "snapshot": snapshot, "log": log}[command](target)
