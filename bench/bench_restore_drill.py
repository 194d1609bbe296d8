"""Restore-drill timings at a realistic database size: the local numbers behind the RTO table.

    .venv/bin/python -m bench.bench_restore_drill [--metric-rows 2000000]

Starts a fresh local stack (1 replica) in a temporary state dir on free ports, creates one run
through the load balancer, then gives the tracking database `--metric-rows` metric rows (one
INSERT … SELECT as the application role: the REST API would take hours for millions of rows) and
runs `mlflow-stack db restore-drill --local`. Prints the database size and each step's time as
JSON; docs/operations.md ("RTO and RPO") quotes them. Stops everything it started.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time

from lifecycle.client import Connection
from lifecycle.db_drill import restore_drill
from lifecycle.db_target import resolve_local_database
from local.stack import LocalStack
from tests.integration.conftest import free_ports, new_state_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--metric-rows", type=int, default=2_000_000, help="metric rows to seed (default 2M)")
    args = parser.parse_args(argv)
    state_dir = new_state_dir("mlflow-stack-bench-drill-")
    stack = LocalStack(state_dir, replicas=1, ports=free_ports(1))
    try:
        info = stack.up()
        with Connection(info.url, info.username, info.password, info.ca_file) as conn:
            experiment = conn.call("POST", "experiments/create", json={"name": "bench-drill"})[
                "experiment_id"
            ]
            run_id = conn.call("POST", "runs/create", json={"experiment_id": experiment})["run"]["info"][
                "run_id"
            ]
        target = resolve_local_database(state_dir)
        started = time.monotonic()
        with target.connect() as db:
            db.execute(
                "INSERT INTO metrics (key, value, timestamp, run_uuid, step, is_nan) "
                "SELECT 'loss_' || (g %% 20), random(), 1700000000000 + g, %s, g / 20, false "
                "FROM generate_series(1, %s) g",
                (run_id, args.metric_rows),
            )
            db.execute("ANALYZE metrics")
            size = db.execute("SELECT pg_database_size(current_database())").fetchone()[0]  # type: ignore[index]
        seeded = time.monotonic() - started
        report = restore_drill(target, keep_dump=False)
        print(
            json.dumps(
                {
                    "metric_rows": args.metric_rows,
                    "tracking_db_bytes": size,
                    "seed_seconds": round(seeded, 1),
                    "dump_bytes": report.dump_bytes,
                    "passed": report.passed,
                    "steps": {s.name: round(s.seconds, 2) for s in report.steps},
                    "total_seconds": round(report.total_seconds, 1),
                },
                indent=2,
            )
        )
        return 0 if report.passed else 1
    finally:
        stack.down()
        shutil.rmtree(state_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
