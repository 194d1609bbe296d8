"""The server image carries the maintenance task's code, can run read-only, and its tag follows it."""

from __future__ import annotations

import fnmatch
import subprocess
import sys
from pathlib import Path

from infra.compute.image import (
    DOCKERFILE,
    REPO_ROOT,
    copied_sources,
    image_can_run_read_only,
    server_source_hash,
)
from infra.compute.spec import SCRATCH_PATH

DOCKERIGNORE = REPO_ROOT / "server" / "Dockerfile.dockerignore"


def _copied_top_dirs() -> set[str]:
    return {source.split("/")[0] for source in copied_sources(REPO_ROOT / DOCKERFILE)}


def test_the_image_copies_the_server_and_the_day2_code() -> None:
    assert {"server", "lifecycle", "cli"} <= _copied_top_dirs()
    assert not {"infra", "local", "tests", "policies", "bench"} & _copied_top_dirs()


def test_every_first_party_module_the_maintenance_command_imports_is_in_the_image() -> None:
    # Import what `python -m cli.runs runs maintenance` uses (cli/runs.py and the lifecycle modules
    # its maintenance path imports lazily), then list the repository's packages that got loaded.
    script = (
        "import sys, pathlib\n"
        "import cli.runs, lifecycle.credentials, lifecycle.client, lifecycle.gc, lifecycle.locks\n"
        "import lifecycle.runs, lifecycle.durations, lifecycle.models\n"
        f"root = pathlib.Path({str(REPO_ROOT)!r})\n"
        "names = set()\n"
        "for module in list(sys.modules.values()):\n"
        "    path = getattr(module, '__file__', None)\n"
        "    if path and pathlib.Path(path).resolve().is_relative_to(root / '') and '.venv' not in path:\n"
        "        names.add(module.__name__.split('.')[0])\n"
        "print(' '.join(sorted(names)))\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=REPO_ROOT, timeout=120
    )
    loaded = set(completed.stdout.split())
    assert "cli" in loaded and "lifecycle" in loaded
    assert loaded <= _copied_top_dirs(), loaded - _copied_top_dirs()


def _ignored(path: str) -> bool:
    """Docker's rule: the last matching pattern wins; `!` re-includes."""
    ignored = False
    for line in DOCKERIGNORE.read_text().splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negated = pattern.startswith("!")
        pattern = pattern.removeprefix("!").rstrip("/")
        if fnmatch.fnmatch(path, pattern) or path.startswith(f"{pattern}/"):
            ignored = not negated
    return ignored


def test_the_build_context_holds_what_the_dockerfile_copies_and_nothing_more() -> None:
    for source in copied_sources(REPO_ROOT / DOCKERFILE):
        assert not _ignored(source.rstrip("/")), source
    assert not _ignored("lifecycle/gc.py") and not _ignored("cli/runs.py")
    for private in (".venv", ".local-stack", "infra/platform.py", "local/stack.py", "tests/conftest.py"):
        assert _ignored(private), private


def test_the_image_declares_the_scratch_volume_so_tasks_run_read_only() -> None:
    assert image_can_run_read_only(SCRATCH_PATH)


def test_the_tag_changes_with_any_copied_directory(tmp_path: Path) -> None:
    (tmp_path / "server").mkdir()
    (tmp_path / "server" / "Dockerfile").write_text(
        "FROM python:3.11-slim\nCOPY server/ /app/server/\nCOPY lifecycle/ /app/lifecycle/\n"
    )
    (tmp_path / "lifecycle").mkdir()
    (tmp_path / "lifecycle" / "gc.py").write_text("RETRIES = 1\n")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.md").write_text("not in the image\n")
    # The builder's ignore file (server/Dockerfile.dockerignore) decides what the context holds.
    (tmp_path / "server" / "Dockerfile.dockerignore").write_text("*\n!server/\n!lifecycle/\n")
    first = server_source_hash(tmp_path)

    (tmp_path / "notes" / "todo.md").write_text("still not in the image\n")
    assert server_source_hash(tmp_path) == first
    (tmp_path / "lifecycle" / "gc.py").write_text("RETRIES = 2\n")
    assert server_source_hash(tmp_path) != first


def test_copy_sources_are_read_like_docker_reads_them(tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(
        "FROM python:3.11-slim AS build\n"
        "COPY --chown=10001:10001 server/ \\\n    /app/server/\n"
        'COPY ["cli/", "lifecycle/", "/app/"]\n'
        "COPY --from=build /wheels /wheels\n"
        "add extra.txt /app/\n"
    )
    assert copied_sources(dockerfile) == ["server/", "cli/", "lifecycle/", "extra.txt"]
