"""The path from a fresh clone to `pulumi up` works as the README writes it.

Pulumi.yaml says `toolchain: uv` with `virtualenv: .venv`: the Pulumi CLI runs `uv` from PATH to
sync and run the program in .venv. `make install` creates .venv from uv.lock and puts the pinned uv
into it, so `source .venv/bin/activate` is all a deployer needs before `pulumi …`. These tests run
the command lines that path relies on (the Pulumi CLI itself cannot be installed here).
"""

from __future__ import annotations

import os
import re
import subprocess
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = ROOT / ".venv" / "bin"


def _makefile_value(name: str) -> str:
    match = re.search(rf"^{name}\s*:?=\s*(\S+)", (ROOT / "Makefile").read_text(), re.MULTILINE)
    assert match, name
    return match.group(1)


def _activated_env() -> dict[str, str]:
    """What `source .venv/bin/activate` gives a shell: .venv/bin first on PATH, nothing else of ours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UV_", "VIRTUAL_ENV"))}
    env["PATH"] = f"{VENV_BIN}:/usr/local/bin:/usr/bin:/bin"
    env["VIRTUAL_ENV"] = str(ROOT / ".venv")
    return env


def test_pulumi_yaml_runs_the_program_with_uv_in_the_makefiles_venv():
    project = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())
    assert project["runtime"]["name"] == "python"
    assert project["runtime"]["options"] == {"toolchain": "uv", "virtualenv": _makefile_value("VENV")}
    assert project["stackConfigDir"] == "stacks"


def test_make_install_puts_the_pinned_uv_into_the_venv():
    version = _makefile_value("UV_VERSION")
    dev = tomllib.loads((ROOT / "pyproject.toml").read_text())["dependency-groups"]["dev"]
    assert f"uv=={version}" in dev
    found = subprocess.run(
        ["uv", "--version"], env=_activated_env(), capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert found.stdout.split()[:2] == ["uv", version]
    # The uv an activated shell finds is the venv's, not one that happens to be installed elsewhere.
    which = subprocess.run(
        ["sh", "-c", "command -v uv"], env=_activated_env(), capture_output=True, text=True
    )
    assert Path(which.stdout.strip()) == VENV_BIN / "uv"


def test_the_environment_pulumi_syncs_is_the_locked_one():
    """Pulumi's uv toolchain syncs the project before running it; on a `make install`ed clone that
    sync must change nothing (same lock file, same groups)."""
    result = subprocess.run(
        ["uv", "sync", "--locked", "--dry-run"],
        env=_activated_env(),
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "Would make no changes" in result.stderr + result.stdout


def test_the_program_imports_under_uv_run():
    """`uv run` in the project imports the program's modules exactly as the Pulumi language host would."""
    result = subprocess.run(
        [
            "uv",
            "run",
            "--locked",
            "--no-sync",
            "python",
            "-c",
            "import infra.platform, pulumi_aws; print('ok')",
        ],
        env=_activated_env(),
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
