"""Cleanup throughput: `runs cleanup --apply` (bounded concurrency) against a one-call-at-a-time baseline.

    .venv/bin/python -m bench.bench_cleanup [--runs 5000] [--concurrency 8] [--rounds 2] [--no-write]

Starts a fresh local stack through local/'s API (2 replicas behind Caddy/TLS, PostgreSQL, the S3
emulator) in a temporary state dir on free ports, seeds old FINISHED runs through the load
balancer, and then, in the same run and on the same data, for each of `--rounds` rounds:
1. baseline: the same listing, then deletes one request at a time (concurrency 1);
2. restores every run (so every pass deletes exactly the same runs);
3. the kit: deletes with `--concurrency` requests in flight (then restores, except at the end).
Every pass must delete every seeded run, or the benchmark fails. The numbers go to stdout (JSON)
and into this benchmark's own section of bench/RESULTS.md.

`seed_runs` is also what the integration tests use to create thousands of runs quickly.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from lifecycle.client import Connection

RESULTS_FILE = Path(__file__).resolve().parent / "RESULTS.md"
SECTION_TITLE = "## Cleanup throughput (`runs cleanup`)"
BEGIN_MARKER = "<!-- bench_cleanup: begin (generated) -->"
END_MARKER = "<!-- bench_cleanup: end (generated) -->"
DAY_MS = 86_400_000


@dataclass(frozen=True)
class RunSpec:
    """One run to create: its age, final status (None: leave RUNNING) and tags."""

    age_days: float
    status: str | None = "FINISHED"
    tags: dict[str, str] = field(default_factory=dict)


def seed_runs(
    conn: Connection, experiment_id: str, specs: Iterable[RunSpec], concurrency: int = 12
) -> list[str]:
    """Create runs through the REST API with bounded concurrency; returns their ids in spec order.

    Two calls per run: the API has no batch create, and a run is created RUNNING (create_run takes
    a start time but no status), so a terminal status needs an update.
    """
    now_ms = int(time.time() * 1000)

    def create(spec: RunSpec) -> str:
        start = now_ms - int(spec.age_days * DAY_MS)
        body: dict[str, Any] = {"experiment_id": experiment_id, "start_time": start}
        if spec.tags:
            body["tags"] = [{"key": k, "value": v} for k, v in spec.tags.items()]
        run_id = str(conn.call("POST", "runs/create", json=body)["run"]["info"]["run_id"])
        if spec.status is not None:
            conn.call(
                "POST",
                "runs/update",
                json={"run_id": run_id, "status": spec.status, "end_time": start + 60_000},
            )
        return run_id

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        return list(pool.map(create, specs))


def restore_runs(conn: Connection, run_ids: list[str], concurrency: int = 12) -> None:
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(lambda run_id: conn.call("POST", "runs/restore", json={"run_id": run_id}), run_ids))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _fresh_stack(state_dir: Path) -> Any:
    from local.processes import port_in_use
    from local.stack import LocalStack, Ports

    for _ in range(100):
        base = _free_port()
        if not port_in_use(base + 1):
            ports = Ports(
                https=_free_port(),
                http=_free_port(),
                postgres=_free_port(),
                s3=_free_port(),
                replica_base=base,
            )
            return LocalStack(state_dir, replicas=2, ports=ports)
    raise RuntimeError("no two consecutive free ports for the replicas")


def measure(conn: Connection, runs: int, concurrency: int, rounds: int, experiment: str) -> dict[str, Any]:
    from lifecycle.runs import cleanup

    exp_id = conn.call("POST", "experiments/create", json={"name": experiment})["experiment_id"]
    started = time.monotonic()
    run_ids = seed_runs(conn, exp_id, [RunSpec(age_days=120)] * runs)
    seed_seconds = time.monotonic() - started
    age = timedelta(days=90)

    def delete_all(in_flight: int) -> Any:
        report = cleanup(conn, experiment, age, apply=True, concurrency=in_flight)
        if sorted(report.deleted) != sorted(run_ids) or report.failed:
            raise RuntimeError(
                f"concurrency {in_flight}: deleted {len(report.deleted)} of {runs}, "
                f"failed {len(report.failed)}"
            )
        return report

    # Passes alternate on the same runs (restored in between), so load that drifts on a shared
    # machine hits both sides alike.
    results = []
    for round_number in range(rounds):
        baseline = delete_all(1)
        restore_runs(conn, run_ids)
        kit = delete_all(concurrency)
        if round_number < rounds - 1:
            restore_runs(conn, run_ids)
        results.append({"baseline_seconds": baseline.seconds, "kit_seconds": kit.seconds, "pages": kit.pages})
    baseline_total = sum(r["baseline_seconds"] for r in results)
    kit_total = sum(r["kit_seconds"] for r in results)
    return {
        "runs": runs,
        "concurrency": concurrency,
        "seed_seconds": round(seed_seconds, 1),
        "seed_runs_per_second": round(runs / seed_seconds, 1),
        "rounds": [{**r, "speedup": round(r["baseline_seconds"] / r["kit_seconds"], 2)} for r in results],
        "baseline_runs_per_second": round(runs * rounds / baseline_total, 1),
        "kit_runs_per_second": round(runs * rounds / kit_total, 1),
        "speedup": round(baseline_total / kit_total, 2),
    }


def render(result: dict[str, Any], command: str) -> str:
    rows = [
        f"| {i + 1} | {r['baseline_seconds']} | {r['kit_seconds']} | {r['speedup']}x |"
        for i, r in enumerate(result["rounds"])
    ]
    return "\n".join(
        [
            f"Measured {result['measured_at']} on {result['machine']} "
            "(shared with other work; absolute numbers vary).",
            "",
            "```",
            command,
            "```",
            "",
            "A fresh local stack (2 replicas behind Caddy/TLS, PostgreSQL, S3 emulator); "
            f"{result['runs']} old FINISHED runs seeded through the load balancer. Each round deletes "
            "all of them one request at a time (baseline), restores them, then deletes them with "
            f"`runs cleanup --apply --concurrency {result['concurrency']}`; rounds alternate on the same "
            f"runs. Every pass lists every run first ({result['rounds'][0]['pages']} pages) and must "
            f"delete all {result['runs']}.",
            "",
            "| round | baseline (1 in flight) s "
            f"| `runs cleanup` ({result['concurrency']} in flight) s | speed-up |",
            "|---|---|---|---|",
            *rows,
            "",
            f"**Speed-up: {result['speedup']}x** ({result['baseline_runs_per_second']} -> "
            f"{result['kit_runs_per_second']} runs/s over all rounds). Seeding ran at "
            f"{result['seed_runs_per_second']} runs/s (two calls per run: the REST API has no batch "
            "create and no status on create).",
        ]
    )


def replace_section(path: Path, body: str) -> None:
    """Replace only this benchmark's generated block; other sections stay byte for byte."""
    block = f"{BEGIN_MARKER}\n{body.rstrip()}\n{END_MARKER}\n"
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmark results\n"
    if BEGIN_MARKER in text and END_MARKER in text:
        head, _, rest = text.partition(BEGIN_MARKER)
        _, _, tail = rest.partition(END_MARKER)
        path.write_text(head + block.rstrip("\n") + tail, encoding="utf-8")
    else:
        path.write_text(text.rstrip("\n") + f"\n\n{SECTION_TITLE}\n\n{block}", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.bench_cleanup", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--runs", type=int, default=5000, help="runs to seed and delete (default 5000)")
    parser.add_argument("--concurrency", type=int, default=8, help="the kit's requests in flight (default 8)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating baseline/kit rounds (default 2)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave bench/RESULTS.md alone")
    args = parser.parse_args(argv)
    if min(args.runs, args.concurrency, args.rounds) < 1:
        parser.error("--runs, --concurrency and --rounds must be at least 1")

    state_dir = Path(tempfile.mkdtemp(prefix="mlflow-stack-bench-cleanup-"))
    stack = _fresh_stack(state_dir)
    try:
        print(f"starting a local stack in {state_dir} ...", file=sys.stderr, flush=True)
        info = stack.up()
        with Connection(info.url, info.username, info.password, info.ca_file) as conn:
            result = measure(conn, args.runs, args.concurrency, args.rounds, "bench-cleanup")
    finally:
        stack.down()
        shutil.rmtree(state_dir, ignore_errors=True)
    result["measured_at"] = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    result["machine"] = f"{os.cpu_count()} CPUs, {platform.system()} {platform.machine()}"
    command = (
        ".venv/bin/python -m bench.bench_cleanup"
        + (f" --runs {args.runs}" if args.runs != 5000 else "")
        + (f" --concurrency {args.concurrency}" if args.concurrency != 8 else "")
    )
    print(json.dumps(result, indent=2))
    if not args.no_write:
        replace_section(RESULTS_FILE, render(result, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
