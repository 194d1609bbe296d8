"""`python tests/run_layers.py`: the whole suite as two pytest processes running at once.

The unit and policy layers are CPU-bound (each stack file's program under mocks); the integration
and reliability layers mostly wait on real servers. Run one after the other they took ~16 minutes
on CI's 2 cores; side by side the fast half finishes while the slow half is still starting its
local stacks. Each half is an ordinary pytest run whose layers must each collect tests
(tests/conftest.py), and the suite fails if either half fails or collected nothing (pytest's exit
code 5 is a failure here too). Output: each half's report, one after the other, never interleaved.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HALVES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("integration + reliability", ("tests/integration", "tests/reliability")),
    ("unit + policies", ("tests/unit", "tests/policies")),
)


def main(extra: list[str]) -> int:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="mlflow-stack-suite-") as logs:
        runs = []
        for label, paths in HALVES:
            log = Path(logs) / f"{label.split()[0]}.log"
            handle = open(log, "wb")  # noqa: SIM115 - closed below, after the process exits
            process = subprocess.Popen(
                [sys.executable, "-m", "pytest", *paths, *extra],
                cwd=ROOT,
                stdout=handle,
                stderr=subprocess.STDOUT,
            )
            runs.append((label, process, handle, log))
        failed = []
        for label, process, handle, log in runs:
            code = process.wait()
            handle.close()
            sys.stdout.write(f"\n===== {label}: pytest exit {code} =====\n")
            sys.stdout.write(log.read_text(errors="replace"))
            sys.stdout.flush()
            if code != 0:
                failed.append(f"{label} (exit {code})")
    minutes = (time.monotonic() - started) / 60
    if failed:
        print(f"\nsuite FAILED in {minutes:.1f} min: {', '.join(failed)}")
        return 1
    print(f"\nsuite passed in {minutes:.1f} min (both halves)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
