"""`mlflow-stack <args> --local --json` against the shared local stack, as a subprocess: what the
day-2 and governance tests run, exactly as a user's CI job would."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def cli(local_stack: Any, *args: str) -> tuple[int, dict[str, Any]]:
    """(exit code, parsed JSON); the JSON's own exit code must match the process's."""
    result = subprocess.run(
        [sys.executable, "-m", "cli.main", *args, "--local", "--state-dir", local_stack.state_dir, "--json"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    try:
        body = json.loads(result.stdout)
    except ValueError:
        pytest.fail(f"not JSON (exit {result.returncode}):\n{result.stdout}\n{result.stderr}")
    assert body["exit_code"] == result.returncode
    return result.returncode, body
