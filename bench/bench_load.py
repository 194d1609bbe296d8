"""Load benchmark: the kit's server against stock MLflow, same machine, same run, same database.

    .venv/bin/python -m bench.bench_load                # what `make bench` runs
    .venv/bin/python -m bench.bench_load --kit-variant w4:MLFLOW_STACK_WORKERS=4 --kit-variant ...

Starts one embedded PostgreSQL and one S3 emulator, then one server per row — stock
`mlflow server --app-name basic-auth` (MLflow's defaults), stock `mlflow server` (no auth) and the
kit's entrypoint (its defaults, or each `--kit-variant`) — each ONE process tree pinned to the same
CPUs. N clients send realistic tracking traffic (bench/traffic.py) straight to each server in
turn, for several interleaved rounds so that background load on a shared machine hits every row
alike. A last row (unless `--no-local-stack`) goes through the full local stack: Caddy TLS
and 2 replicas. Every number is reported next to the stock baselines of the same run.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import platform
import secrets
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

from bench import report
from bench.servers import TUNING_STACK, Server, bench_environment, free_port, stack_tuning
from bench.traffic import ClientLog, Sample, Stats, TrackingClient, in_window, run_clients
from local.processes import ProcessRecord, find_process
from server import contract

BENCH_USER = "bench-user"
ABLATION_LABEL = report.ABLATION_LABEL
RESULTS_FILE = Path(__file__).resolve().parent / "RESULTS.md"


@dataclass
class Target:
    """One row: where the clients send traffic, as whom, and which processes serve it."""

    label: str
    kind: str
    url: str
    credentials: tuple[str, str] | None
    processes: list[ProcessRecord]
    settings: dict[str, str]
    verify: bool | str = True
    experiment_id: str = ""
    samples: list[Sample] = field(default_factory=list)
    fatal: list[str] = field(default_factory=list)
    window_seconds: float = 0.0
    server_cpu_seconds: float = 0.0
    postgres_cpu_seconds: float = 0.0
    client_cpu_seconds: float = 0.0
    server_memory_mib: float = 0.0

    def client(self) -> TrackingClient:
        return TrackingClient(self.url, self.credentials, self.verify)


def _tree_cpu_seconds(record: ProcessRecord) -> float:
    proc = find_process(record)
    if proc is None:
        return 0.0
    total = 0.0
    for member in [proc, *proc.children(recursive=True)]:
        try:
            times = member.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            continue
    return total


def _tree_memory_mib(record: ProcessRecord) -> float:
    """Proportional set size of the process tree: what a container's memory limit sees (shared
    pages are split between the processes that share them instead of being counted in each)."""
    proc = find_process(record)
    if proc is None:
        return 0.0
    total = 0
    for member in [proc, *proc.children(recursive=True)]:
        try:
            total += member.memory_full_info().pss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total / 2**20


def _prepare(target: Target, admin: tuple[str, str] | None) -> None:
    """A non-admin user (what a team member is) who creates the experiment and so owns it."""
    if admin is not None:
        password = secrets.token_hex(16)
        admin_client = TrackingClient(target.url, admin, target.verify)
        try:
            admin_client.create_user(BENCH_USER, password)
        finally:
            admin_client.close()
        target.credentials = (BENCH_USER, password)
    client = target.client()
    try:
        target.experiment_id = client.create_experiment(f"bench-{target.label}-{secrets.token_hex(4)}")
    finally:
        client.close()


def _measure(
    target: Target,
    postgres: ProcessRecord | None,
    clients: int,
    warmup: float,
    seconds: float,
    workload: str = "mixed",
) -> None:
    """One round: warm-up (not counted), then the measured window, CPU sampled at its edges."""
    logs: list[ClientLog] = []
    start = time.monotonic()
    worker = threading.Thread(
        target=lambda: logs.extend(
            run_clients(target.client, target.experiment_id, clients, warmup + seconds, workload)
        )
    )
    worker.start()
    time.sleep(warmup)
    window_start = time.monotonic()
    cpu0 = sum(_tree_cpu_seconds(p) for p in target.processes)
    pg0 = _tree_cpu_seconds(postgres) if postgres else 0.0
    # This process: the client threads (the main thread only sleeps here).
    client0 = time.process_time()
    time.sleep(max(0.0, start + warmup + seconds - time.monotonic()))
    window_end = time.monotonic()
    cpu1 = sum(_tree_cpu_seconds(p) for p in target.processes)
    pg1 = _tree_cpu_seconds(postgres) if postgres else 0.0
    client1 = time.process_time()
    target.server_memory_mib = max(
        target.server_memory_mib, sum(_tree_memory_mib(p) for p in target.processes)
    )
    worker.join()
    target.samples += in_window(logs, window_start, window_end)
    target.fatal += [log.fatal for log in logs if log.fatal]
    target.window_seconds += window_end - window_start
    target.server_cpu_seconds += cpu1 - cpu0
    target.postgres_cpu_seconds += pg1 - pg0
    target.client_cpu_seconds += client1 - client0


def _parse_variant(text: str) -> tuple[str, dict[str, str]]:
    label, _, assignments = text.partition(":")
    known = {s.name for s in contract.PLAIN_SETTINGS}
    overrides: dict[str, str] = {}
    for item in filter(None, assignments.split(",")):
        name, _, value = item.partition("=")
        if name not in known or not value:
            raise SystemExit(
                f"--kit-variant {text!r}: {item!r} is not NAME=VALUE with NAME one of the server's "
                f"plain settings ({', '.join(sorted(known))})"
            )
        overrides[name] = value
    if not label or not label.replace("-", "").isalnum():
        raise SystemExit(
            f"--kit-variant {text!r}: start with a label of letters, digits and '-', e.g. w4:..."
        )
    return "kit-" + label, overrides


def _machine() -> dict[str, object]:
    model = "unknown CPU"
    with open("/proc/cpuinfo", encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    import mlflow

    return {
        "cpu": model,
        "cpus": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "mlflow": mlflow.__version__,
    }


def _start_local_stack(stack_dir: Path) -> tuple[Callable[[], None], Target]:
    """The 4th row: Caddy (TLS) + 2 replicas of the kit's defaults, via the local stack's own API."""
    from local.processes import port_in_use
    from local.stack import LocalStack, Ports

    base = next(
        b for b in range(21000, 29000, 7) if not port_in_use(b) and not port_in_use(b + 1)
    )  # two consecutive free ports for the replicas
    ports = Ports(
        https=free_port(), http=free_port(), postgres=free_port(), s3=free_port(), replica_base=base
    )
    stack = LocalStack(stack_dir, replicas=2, ports=ports, workers=int(contract.WORKERS.default or 1))
    info = stack.up()
    processes = [
        ProcessRecord(p.name, p.pid, find_process_start(p.pid), p.log_file)
        for p in info.processes
        if p.name.startswith("replica-")
    ]
    target = Target(
        label="kit-local-stack",
        kind="kit (Caddy TLS + 2 replicas)",
        url=info.url,
        credentials=None,
        processes=processes,
        settings={"replicas": "2", "via": "Caddy, HTTPS"},
        verify=info.ca_file,
    )
    _prepare(target, (info.username, info.password))
    return stack.down, target


def find_process_start(pid: int) -> float:
    return psutil.Process(pid).create_time()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_load", description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    parser.add_argument("--seconds", type=float, default=15.0, help="measured seconds per row per round")
    parser.add_argument("--warmup", type=float, default=4.0, help="unmeasured seconds before each window")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds over all rows")
    all_cpus = ",".join(str(c) for c in sorted(os.sched_getaffinity(0)))
    parser.add_argument("--cpus", default=all_cpus, help=f"CPU set every server is pinned to ({all_cpus})")
    parser.add_argument(
        "--kit-variant",
        action="append",
        default=[],
        metavar="LABEL:NAME=VALUE,...",
        help="a kit row with explicit settings (repeatable); default: the replica "
        f"stacks/Pulumi.{TUNING_STACK}.yaml deploys, with and without the hot paths",
    )
    parser.add_argument("--no-stock", action="store_true", help="skip the two stock baselines")
    parser.add_argument(
        "--no-local-stack", action="store_true", help="skip the row through Caddy + 2 replicas"
    )
    parser.add_argument("--json", type=Path, help="also write the raw results as JSON here")
    parser.add_argument(
        "--no-write", action="store_true", help=f"print only; leave {RESULTS_FILE.name} alone"
    )
    args = parser.parse_args(argv)
    if not 1 <= args.clients <= 64 or not 1 <= args.rounds <= 10 or not 1 <= args.seconds <= 600:
        parser.error("--clients 1..64, --rounds 1..10 and --seconds 1..600")
    if not shutil.which("taskset"):
        parser.error("taskset (util-linux) is needed to pin every server to the same CPUs")
    # By default the replica stacks/Pulumi.<TUNING_STACK>.yaml deploys (2 vCPU), and the same with
    # the hot paths off (an ablation: what server/hot_paths.py is worth, measured in the same run).
    tuning = stack_tuning()
    variants = [_parse_variant(v) for v in args.kit_variant] or [
        ("kit", tuning),
        (ABLATION_LABEL, {**tuning, contract.HOT_PATHS.name: "false"}),
    ]

    load_before = os.getloadavg()
    started = time.time()
    targets: list[Target] = []
    stop_local_stack: Callable[[], None] | None = None
    stack_dir: Path | None = None
    with bench_environment(args.cpus) as env:
        servers: list[Server] = []
        if not args.no_stock:
            servers.append(env.start_stock("stock-auth", auth=True))
            servers.append(env.start_stock("stock-noauth", auth=False))
        servers += [env.start_kit(label, overrides) for label, overrides in variants]
        try:
            with concurrent.futures.ThreadPoolExecutor(max_workers=len(servers)) as pool:
                for future in [pool.submit(env.wait_ready, s) for s in servers]:
                    future.result()
            for server in servers:
                target = Target(server.label, server.kind, server.url, None, [server.record], server.settings)
                _prepare(target, server.admin)
                targets.append(target)
            if not args.no_local_stack:
                stack_dir = Path(tempfile.mkdtemp(prefix="mlflow-stack-bench-stack-"))
                stop_local_stack, local_target = _start_local_stack(stack_dir)
                targets.append(local_target)
            for round_index in range(args.rounds):
                for target in targets:
                    print(
                        f"round {round_index + 1}/{args.rounds}: {target.label} ...",
                        file=sys.stderr,
                        flush=True,
                    )
                    postgres = env.postgres_record if target.label != "kit-local-stack" else None
                    _measure(target, postgres, args.clients, args.warmup, args.seconds)
        except Exception:
            for server in servers:
                print(f"--- last lines of {server.label}'s log ---\n{env.log_tail(server)}", file=sys.stderr)
            raise
        finally:
            if stop_local_stack is not None:
                stop_local_stack()
            if stack_dir is not None:
                shutil.rmtree(stack_dir, ignore_errors=True)

    results = report.Results(
        command="make bench  # = .venv/bin/python -m bench.bench_load "
        + " ".join(sys.argv[1:] if argv is None else argv),
        started_utc=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)),
        machine=_machine(),
        cpus=args.cpus,
        clients=args.clients,
        rounds=args.rounds,
        seconds=args.seconds,
        load_before=load_before,
        load_after=os.getloadavg(),
        rows=[
            report.Row(
                label=t.label,
                kind=t.kind,
                settings=t.settings,
                overall=Stats.of("all", t.samples, t.window_seconds),
                per_operation=[
                    Stats.of(op, [s for s in t.samples if s.operation == op], t.window_seconds)
                    for op in ("log-batch", "search-runs", "upload-artifact", "create-run")
                ],
                server_cpu_seconds=t.server_cpu_seconds,
                postgres_cpu_seconds=t.postgres_cpu_seconds,
                server_memory_mib=t.server_memory_mib,
                client_cpu_seconds=t.client_cpu_seconds,
                window_seconds=t.window_seconds,
                error_examples=sorted({s.error for s in t.samples if s.error})[:3] + t.fatal[:3],
            )
            for t in targets
        ],
    )
    text = report.render(results)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(asdict(results), indent=2, default=str), encoding="utf-8")
    if not args.no_write:
        report.replace_section(RESULTS_FILE, text)
        print(f"updated {RESULTS_FILE}", file=sys.stderr)
    return 0 if all(not row.error_examples for row in results.rows) else 1


if __name__ == "__main__":
    sys.exit(main())
