"""The folder map holds: each package imports only what its place in the architecture allows, and no
source file grows past ~600 lines without saying why (docs/architecture.md, ARCHITECTURE.md)."""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LONG_FILE_LINES = 600
LONG_FILE_REASON = "Why this file is long"

# package -> top-level modules it must never import
FORBIDDEN: dict[str, set[str]] = {
    # The Pulumi program stays light and is never shaped by review tooling or day-2 tools.
    "infra": {"preview", "policies", "lifecycle", "deploy", "cli", "local", "mlflow", "bench"},
    # Day-2 tools only talk HTTP (and the local stack's files): no Pulumi, no program.
    "lifecycle": {"pulumi", "pulumi_aws", "infra", "preview", "policies", "deploy", "cli"},
    # The one server definition runs everywhere without the kit around it.
    "server": {"pulumi", "infra", "lifecycle", "preview", "policies", "deploy", "cli", "local"},
    # The pack is loaded by the Pulumi CLI from policies/ alone.
    "policies": {"infra", "preview", "lifecycle", "deploy", "cli", "local"},
    "preview": {"lifecycle", "deploy", "cli", "local"},
    "deploy": {"lifecycle", "cli", "local"},
    "local": {"pulumi", "infra", "preview", "policies", "deploy", "cli"},
}


def _tracked(pattern: str) -> list[Path]:
    names = subprocess.run(
        ["git", "ls-files", pattern], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    return [ROOT / name for name in names if (ROOT / name).is_file()]


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_packages_import_only_what_the_architecture_allows(package: str) -> None:
    files = _tracked(f"{package}/*.py") + _tracked(f"{package}/**/*.py")
    assert files, f"no files in {package}/"
    problems = [
        f"{path.relative_to(ROOT)} imports {sorted(_imports(path) & FORBIDDEN[package])}"
        for path in sorted(set(files))
        if _imports(path) & FORBIDDEN[package]
    ]
    assert not problems, problems


def test_the_check_sees_a_forbidden_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from preview.offline import run_program\n")
    assert _imports(module) & FORBIDDEN["infra"] == {"preview"}


def test_review_tooling_lives_outside_infra() -> None:
    """What serves review (runner under mocks, cost, pack driver, report) is not the program."""
    for name in ("offline.py", "mocks.py", "cost.py", "prices.json", "analyzer.py", "report.py", "build.py"):
        assert not (ROOT / "infra" / name).exists(), name
        assert (ROOT / "preview" / name).is_file(), name


def test_no_source_file_is_long_without_saying_why() -> None:
    problems = []
    for path in _tracked("*.py"):
        lines = path.read_text().count("\n")
        if lines <= LONG_FILE_LINES:
            continue
        docstring = ast.get_docstring(ast.parse(path.read_text())) or ""
        if LONG_FILE_REASON not in docstring:
            problems.append(
                f"{path.relative_to(ROOT)}: {lines} lines and no '{LONG_FILE_REASON}' in its docstring"
            )
    assert not problems, problems


def _folder_map() -> list[str]:
    """The first column of the folder map in docs/architecture.md (the code block naming Pulumi.yaml)."""
    blocks = (ROOT / "docs" / "architecture.md").read_text().split("```")[1::2]
    (block,) = [b for b in blocks if "\nPulumi.yaml " in b]
    return [
        line.split()[0] for line in block.splitlines()[1:] if line.strip() and not line.startswith(" " * 6)
    ]


def test_the_architecture_map_matches_the_folders() -> None:
    mapped = _folder_map()
    top_level = {
        name.split("/")[0]
        for name in subprocess.run(
            ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.split()
    }
    folders = {name for name in top_level if (ROOT / name).is_dir() and not name.startswith(".")}
    assert {f"{name}/" for name in folders} <= set(mapped), sorted(folders - {m.rstrip("/") for m in mapped})
    # Everything the map names at the top level exists (nested entries are relative to the last folder).
    top_entries = [
        entry for entry in mapped if not entry.startswith(("compute/", "settings/", "platform.py"))
    ]
    missing = [entry for entry in top_entries if not (ROOT / entry.rstrip("/")).exists()]
    assert not missing, missing
