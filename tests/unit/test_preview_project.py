"""`mlflow-stack preview` previews the checkout it is started in, as `pulumi preview` does — also when
the command comes from another checkout's virtualenv (a second worktree, a CI cache)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from preview.offline import REPO_ROOT, find_project, project_options

MARKED_VPC = "network-vpc-second-checkout"


def _second_checkout(tmp_path: Path) -> Path:
    """A copy of the tracked files with one change to the program and one to a stack file."""
    files = (
        subprocess.run(["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, check=True)
        .stdout.decode()
        .split("\0")
    )
    checkout = tmp_path / "second-checkout"
    for name in filter(None, files):
        source = REPO_ROOT / name
        if source.is_file():
            (checkout / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, checkout / name)
    network = checkout / "infra" / "network.py"
    network.write_text(network.read_text().replace('f"{name}-vpc",', 'f"{name}-vpc-second-checkout",', 1))
    stack = checkout / "stacks" / "Pulumi.dev.yaml"
    stack.write_text(stack.read_text().replace("mlflow.dev.example.com", "mlflow.second.example.com"))
    return checkout


def _preview(cwd: Path) -> subprocess.CompletedProcess[str]:
    mlflow_stack = Path(sys.executable).parent / "mlflow-stack"
    return subprocess.run(
        [str(mlflow_stack), "preview", "--stack", "dev"], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_preview_runs_the_program_and_stack_files_of_the_checkout_it_starts_in(tmp_path: Path) -> None:
    checkout = _second_checkout(tmp_path)
    second = _preview(checkout / "stacks")  # anywhere inside the checkout, like pulumi
    assert second.returncode == 0, second.stderr
    assert MARKED_VPC in second.stdout and "mlflow.second.example.com" in second.stdout

    first = _preview(REPO_ROOT)
    assert first.returncode == 0, first.stderr
    assert MARKED_VPC not in first.stdout and "mlflow.second.example.com" not in first.stdout


def test_outside_any_checkout_the_preview_refuses(tmp_path: Path) -> None:
    done = _preview(tmp_path)
    assert done.returncode == 2
    assert "no Pulumi.yaml" in done.stderr and str(tmp_path) in done.stderr


def test_the_project_file_decides_program_and_stack_directory(tmp_path: Path) -> None:
    assert find_project(REPO_ROOT / "infra" / "settings") == REPO_ROOT
    assert project_options() == {"main": ".", "stackConfigDir": "stacks"}
    (tmp_path / "Pulumi.yaml").write_text("name: x\nruntime: python\nmain: src/\nstackConfigDir: envs\n")
    assert project_options(tmp_path) == {"main": "src/", "stackConfigDir": "envs"}
