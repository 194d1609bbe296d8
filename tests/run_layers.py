"""`python tests/run_layers.py`: the whole suite as pytest runs side by side.

The unit and policy layers are CPU-bound (each stack file's program under mocks); the integration
and reliability layers mostly wait on real servers; the upgrade tests (tests/upgrade, which plain
`pytest` does not collect) mostly wait on PyPI and on old MLflow servers. Run one after the other
they would take well over CI's 20 minutes on 2 cores; here three lanes run side by side: the
integration tests (one shared local stack), the reliability tests (each starts the stacks it breaks),
and unit + policies followed by the upgrade tests. Each is an ordinary pytest run whose layers must
each collect tests (tests/conftest.py); the suite fails if any run fails or collected nothing
(pytest's exit code 5 is a failure here too). The integration run reports live; the others' reports
follow it (never interleaved).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIVE = ("integration", ("tests/integration",))
# Lanes next to LIVE, side by side; the runs of one lane go one after the other.
LANES: tuple[tuple[tuple[str, tuple[str, ...]], ...], ...] = (
    (("reliability", ("tests/reliability",)),),
    (("unit + policies", ("tests/unit", "tests/policies")), ("upgrade", ("tests/upgrade",))),
)
ALONGSIDE = tuple(run for lane in LANES for run in lane)


def _pytest(paths: tuple[str, ...], extra: list[str], **output: object) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "pytest", *paths, *extra]
    return subprocess.Popen(command, cwd=ROOT, **output)  # type: ignore[call-overload]


def _run_lane(
    lane: tuple[tuple[str, tuple[str, ...]], ...],
    extra: list[str],
    logs: Path,
    results: dict[str, tuple[int, Path]],
) -> None:
    for label, paths in lane:
        log = logs / f"{label.split()[0]}.log"
        with open(log, "wb") as handle:
            code = _pytest(paths, extra, stdout=handle, stderr=subprocess.STDOUT).wait()
        results[label] = (code, log)


def main(extra: list[str]) -> int:
    started = time.monotonic()
    results: dict[str, tuple[int, Path]] = {}
    with tempfile.TemporaryDirectory(prefix="mlflow-stack-suite-") as logs:
        lanes = [
            threading.Thread(target=_run_lane, args=(lane, extra, Path(logs), results)) for lane in LANES
        ]
        for lane in lanes:
            lane.start()
        names = ", ".join(" then ".join(label for label, _ in lane) for lane in LANES)
        sys.stdout.write(f"===== {LIVE[0]} (live; alongside: {names}; reported after) =====\n")
        sys.stdout.flush()
        live_code = _pytest(LIVE[1], extra).wait()
        for lane in lanes:
            lane.join()
        for label, _ in ALONGSIDE:
            code, log = results[label]
            sys.stdout.write(f"\n===== {label}: pytest exit {code} =====\n")
            sys.stdout.write(log.read_text(errors="replace"))
    codes = {LIVE[0]: live_code, **{label: results[label][0] for label, _ in ALONGSIDE}}
    failed = []
    for label, code in codes.items():
        sys.stdout.write(f"{label}: pytest exit {code}\n")
        if code != 0:
            failed.append(f"{label} (exit {code})")
    minutes = (time.monotonic() - started) / 60
    if failed:
        print(f"\nsuite FAILED in {minutes:.1f} min: {', '.join(failed)}")
        return 1
    print(f"\nsuite passed in {minutes:.1f} min (every run)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
