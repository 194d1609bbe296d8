"""The suite's own guards: a layer that collects nothing fails the run, in one process or in the
lanes `make test` runs side by side (tests/run_layers.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _pytest(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _fake_suite(tmp_path: Path, layers: dict[str, bool]) -> Path:
    """A copy of the suite's conftest with the four layers and tests/upgrade; `True` layers hold
    one passing test (tests/upgrade always does)."""
    tests = tmp_path / "tests"
    tests.mkdir()
    (tests / "conftest.py").write_text((ROOT / "tests" / "conftest.py").read_text())
    for layer, has_test in {**layers, "upgrade": True}.items():
        (tests / layer).mkdir()
        if has_test:
            (tests / layer / f"test_{layer}.py").write_text("def test_ok():\n    assert True\n")
    return tmp_path


def test_a_half_whose_layer_collected_nothing_fails(tmp_path: Path) -> None:
    root = _fake_suite(tmp_path, {"unit": True, "policies": False, "integration": True, "reliability": True})
    half = _pytest("tests/unit", "tests/policies", cwd=root)
    assert half.returncode != 0 and "collected no tests in tests/policies" in half.stdout + half.stderr
    other = _pytest("tests/integration", "tests/reliability", cwd=root)
    assert other.returncode == 0, other.stdout
    # A developer's narrower run (one file) is not held to the layers.
    assert _pytest("tests/unit/test_unit.py", cwd=root).returncode == 0


def test_the_runner_fails_when_any_lane_fails(tmp_path: Path) -> None:
    root = _fake_suite(tmp_path, {"unit": True, "policies": True, "integration": True, "reliability": False})
    runner = tmp_path / "tests" / "run_layers.py"
    runner.write_text((ROOT / "tests" / "run_layers.py").read_text())
    done = subprocess.run(
        [sys.executable, str(runner), "-q", "-p", "no:cacheprovider"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 1
    assert "suite FAILED" in done.stdout and "reliability (exit" in done.stdout
    assert "unit + policies: pytest exit 0" in done.stdout and "upgrade: pytest exit 0" in done.stdout
    assert "integration: pytest exit 0" in done.stdout
    # The integration run reports live, the other lanes after it: one report each, never interleaved.
    assert done.stdout.index("integration (live") < done.stdout.index("===== reliability: pytest exit")
    assert done.stdout.index("===== reliability") < done.stdout.index("===== unit + policies")
