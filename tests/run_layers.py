"""`python tests/run_layers.py`: the whole suite as two pytest processes running at once.

The unit and policy layers are CPU-bound (each stack file's program under mocks); the integration
and reliability layers mostly wait on real servers. Run one after the other they took ~16 minutes
on CI's 2 cores; side by side the fast half finishes while the slow half is still working through
its local stacks. Each half is an ordinary pytest run whose layers must each collect tests
(tests/conftest.py), and the suite fails if either half fails or collected nothing (pytest's exit
code 5 is a failure here too). The slow half reports live; the fast half's report follows it
(never interleaved).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIVE = ("integration + reliability", ("tests/integration", "tests/reliability"))
BUFFERED = ("unit + policies", ("tests/unit", "tests/policies"))


def _pytest(paths: tuple[str, ...], extra: list[str], **output: object) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "pytest", *paths, *extra], cwd=ROOT, **output)  # type: ignore[call-overload]


def main(extra: list[str]) -> int:
    started = time.monotonic()
    failed = []
    with tempfile.TemporaryDirectory(prefix="mlflow-stack-suite-") as logs:
        log = Path(logs) / "unit.log"
        with open(log, "wb") as handle:
            buffered = _pytest(BUFFERED[1], extra, stdout=handle, stderr=subprocess.STDOUT)
            sys.stdout.write(f"===== {LIVE[0]} (live; {BUFFERED[0]} runs alongside, reported after) =====\n")
            sys.stdout.flush()
            live_code = _pytest(LIVE[1], extra).wait()
            buffered_code = buffered.wait()
        sys.stdout.write(f"\n===== {BUFFERED[0]}: pytest exit {buffered_code} =====\n")
        sys.stdout.write(log.read_text(errors="replace"))
    for (label, _), code in ((LIVE, live_code), (BUFFERED, buffered_code)):
        sys.stdout.write(f"{label}: pytest exit {code}\n")
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
