"""The model-pipeline example, step for step, against the local stack.

The steps are read from .github/workflows/model-pipeline.yml (train, validate, promote) and run as
GitHub runs them (`bash -eo pipefail`), with the same environment: MLflow's own client variables
only (MLFLOW_TRACKING_URI, _USERNAME, _PASSWORD, _SERVER_CERT_PATH — no --url, no --local), the lock
table's name, and an AWS endpoint for the local emulator instead of an AWS role. A first model
becomes champion; a better challenger is promoted; a challenger more than 2 % worse is refused
(the validate step exits non-zero, promote never runs) and the champion stays.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from lifecycle.client import Connection
from lifecycle.models import alias_version
from local import s3_emulator

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PIPELINE = ROOT / ".github" / "workflows" / "model-pipeline.yml"
STEP_IDS = ("train", "validate", "promote")


def pipeline_steps() -> list[tuple[str, str]]:
    job = yaml.safe_load(PIPELINE.read_text())["jobs"]["train-validate-promote"]
    steps = [(s["id"], s["run"]) for s in job["steps"] if s.get("id") in STEP_IDS]
    assert [i for i, _ in steps] == list(STEP_IDS)
    return steps


def pipeline_environment(info: Any, model: str) -> dict[str, str]:
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MLFLOW_", "AWS_", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"))
    }
    return {
        **base,
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), base.get("PATH", "")]),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), base.get("PYTHONPATH")])),
        # What the workflow's env: block sets from repository variables and the secret.
        "MLFLOW_TRACKING_URI": info.url,
        "MLFLOW_TRACKING_USERNAME": info.username,
        "MLFLOW_TRACKING_PASSWORD": info.password,
        "MLFLOW_TRACKING_SERVER_CERT_PATH": str(info.ca_file),
        "MODEL_NAME": model,
        "LOCK_TABLE": info.lock_table,
        "GITHUB_RUN_ID": "local-test",
        # In place of the OIDC role: the local emulator's DynamoDB, its dummy keys and region.
        **s3_emulator.DUMMY_CREDENTIALS,
        "AWS_REGION": s3_emulator.DUMMY_CREDENTIALS["AWS_DEFAULT_REGION"],
        "AWS_ENDPOINT_URL_DYNAMODB": info.s3_endpoint_url,
    }


def run_pipeline(info: Any, model: str, features: int) -> tuple[list[str], int, str]:
    """The steps in order until one fails, like a job: (steps run, exit code of the last, output)."""
    env = {**pipeline_environment(info, model), "FEATURES": str(features)}
    ran, output = [], ""
    for step_id, script in pipeline_steps():
        completed = subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        ran.append(step_id)
        output += completed.stdout + completed.stderr
        if completed.returncode != 0:
            return ran, completed.returncode, output
    return ran, 0, output


def test_the_pipeline_promotes_better_models_and_refuses_a_regression(local_stack: Any) -> None:
    model = f"pipeline-{uuid.uuid4().hex[:8]}"
    conn = Connection(local_stack.url, local_stack.username, local_stack.password, local_stack.ca_file)

    # 1. The first model: nothing to regress from, it becomes champion.
    ran, code, output = run_pipeline(local_stack, model, features=5)
    assert (ran, code) == (list(STEP_IDS), 0), output
    assert "has no 'champion' yet" in output
    assert alias_version(conn, model, "champion")["version"] == "1"

    # 2. A better challenger (all 20 features) passes the gate and is promoted.
    ran, code, output = run_pipeline(local_stack, model, features=20)
    assert (ran, code) == (list(STEP_IDS), 0), output
    assert "better or equal" in output
    assert alias_version(conn, model, "champion")["version"] == "2"
    assert alias_version(conn, model, "previous-champion")["version"] == "1"

    # 3. A challenger > 2 % worse (2 features) is refused: validate fails, promote never runs.
    ran, code, output = run_pipeline(local_stack, model, features=2)
    assert ran == ["train", "validate"] and code == 1, output
    assert "[FAIL] regression" in output and "worse (allowed regression 2.00%)" in output
    assert alias_version(conn, model, "challenger")["version"] == "3"
    assert alias_version(conn, model, "champion")["version"] == "2"

    # The password went in through the environment only; no step printed it.
    assert local_stack.password not in output


def test_runs_commands_work_with_only_mlflows_variables(local_stack: Any) -> None:
    env = pipeline_environment(local_stack, "unused")
    completed = subprocess.run(
        [sys.executable, "-m", "cli.main", "runs", "reap-stuck", "--older-than", "24h", "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    assert (
        '"ok": true' in completed.stdout and local_stack.password not in completed.stdout + completed.stderr
    )
