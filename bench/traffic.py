"""Realistic tracking traffic from N concurrent clients, and its latency statistics.

Each client is what a training job does against a tracking server: it creates a run, then loops
over a fixed cycle of 10 requests — 7 `log-batch` (step metrics, new params, a tag), 2
`search_runs` and 1 small artifact upload (a 4 KiB file through the proxied-artifacts API) — and
starts a new run every 50 log-batches. Closed loop: each client sends its next request when the
previous one has answered, so throughput is what the server sustains at that concurrency.

Every loop is bounded twice: by a deadline and by a maximum request count per client.
"""

from __future__ import annotations

import base64
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import requests

OPERATIONS = ("log-batch", "search-runs", "upload-artifact", "create-run")
CYCLE = (
    "log-batch",
    "log-batch",
    "search-runs",
    "log-batch",
    "log-batch",
    "upload-artifact",
    "log-batch",
    "log-batch",
    "search-runs",
    "log-batch",
)
BATCHES_PER_RUN = 50
METRIC_KEYS = ("loss", "accuracy", "learning_rate", "grad_norm")
STEPS_PER_BATCH = 5
ARTIFACT_BYTES = 4096
# The writes-only workload (bench/bench_writes.py): one `log-batch` of this many metrics per step.
WRITE_METRIC_KEYS = tuple(f"metric_{i}" for i in range(10))
MAX_REQUESTS_PER_CLIENT = 100_000
REQUEST_TIMEOUT = 30.0


class ApiError(RuntimeError):
    def __init__(self, method: str, path: str, status: int, body: str) -> None:
        super().__init__(f"{method} {path} -> HTTP {status}: {body[:300]}")
        self.status = status


def basic_auth_header(username: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


class TrackingClient:
    """The few MLflow REST calls the workload makes, over one keep-alive connection."""

    def __init__(self, base_url: str, credentials: tuple[str, str] | None, verify: bool | str = True) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = requests.Session()
        self.session.verify = verify
        # Never pick up proxies or netrc credentials from the caller's environment.
        self.session.trust_env = False
        if credentials is not None:
            self.session.headers.update(basic_auth_header(*credentials))

    def close(self) -> None:
        self.session.close()

    def call(self, method: str, path: str, **kwargs: object) -> requests.Response:
        response = self.session.request(method, self.base_url + path, timeout=REQUEST_TIMEOUT, **kwargs)  # type: ignore[arg-type]
        if response.status_code >= 400:
            raise ApiError(method, path, response.status_code, response.text)
        return response

    def post(self, path: str, body: dict[str, object]) -> dict[str, object]:
        return self.call("POST", "/api/2.0/mlflow/" + path, json=body).json()  # type: ignore[no-any-return]

    def get(self, path: str, params: dict[str, str]) -> dict[str, object]:
        return self.call("GET", "/api/2.0/mlflow/" + path, params=params).json()  # type: ignore[no-any-return]

    # -- setup -------------------------------------------------------------------------------------
    def create_user(self, username: str, password: str) -> None:
        self.post("users/create", {"username": username, "password": password})

    def create_experiment(self, name: str) -> str:
        return str(self.post("experiments/create", {"name": name})["experiment_id"])

    def create_run(self, experiment_id: str, name: str) -> str:
        body = {"experiment_id": experiment_id, "run_name": name, "start_time": int(time.time() * 1000)}
        return str(self.post("runs/create", body)["run"]["info"]["run_id"])  # type: ignore[index]

    # -- traffic -----------------------------------------------------------------------------------
    def log_batch(self, run_id: str, batch_index: int) -> None:
        now = int(time.time() * 1000)
        metrics = [
            {"key": key, "value": 1.0 / (step + 1), "timestamp": now, "step": step}
            for step in range(batch_index * STEPS_PER_BATCH, (batch_index + 1) * STEPS_PER_BATCH)
            for key in METRIC_KEYS
        ]
        params = [{"key": f"param_{batch_index}_{i}", "value": f"value-{batch_index}-{i}"} for i in range(2)]
        tags = [{"key": "phase", "value": f"epoch-{batch_index}"}]
        self.post("runs/log-batch", {"run_id": run_id, "metrics": metrics, "params": params, "tags": tags})

    def log_metrics(self, run_id: str, step: int) -> None:
        now = int(time.time() * 1000)
        metrics = [
            {"key": key, "value": 1.0 / (step + 1), "timestamp": now, "step": step}
            for key in WRITE_METRIC_KEYS
        ]
        self.post("runs/log-batch", {"run_id": run_id, "metrics": metrics})

    def search_runs(self, experiment_id: str) -> None:
        self.post(
            "runs/search",
            {
                "experiment_ids": [experiment_id],
                "filter": "attributes.status = 'RUNNING'",
                "max_results": 50,
                "order_by": ["attributes.start_time DESC"],
            },
        )

    def upload_artifact(self, experiment_id: str, run_id: str, name: str, payload: bytes) -> None:
        path = f"/api/2.0/mlflow-artifacts/artifacts/{experiment_id}/{run_id}/artifacts/{name}"
        self.call("PUT", path, data=payload, headers={"Content-Type": "application/octet-stream"})


@dataclass
class Sample:
    operation: str
    started: float
    seconds: float
    error: str | None = None


@dataclass
class ClientLog:
    samples: list[Sample] = field(default_factory=list)
    fatal: str | None = None


def _client_loop(
    make_client: Callable[[], TrackingClient],
    experiment_id: str,
    client_index: int,
    stop_at: float,
    log: ClientLog,
) -> None:
    client = make_client()
    payload = (f"client {client_index} ".encode() * ARTIFACT_BYTES)[:ARTIFACT_BYTES]
    try:
        run_id: str | None = None
        batch = 0
        for i in range(MAX_REQUESTS_PER_CLIENT):
            if time.monotonic() >= stop_at:
                return
            operation = "create-run" if run_id is None else CYCLE[i % len(CYCLE)]
            started = time.monotonic()
            error = None
            try:
                if operation == "create-run":
                    run_id = client.create_run(experiment_id, f"bench-{client_index}-{uuid.uuid4().hex[:8]}")
                    batch = 0
                elif operation == "log-batch":
                    assert run_id is not None
                    client.log_batch(run_id, batch)
                    batch += 1
                    if batch >= BATCHES_PER_RUN:
                        run_id = None
                elif operation == "search-runs":
                    client.search_runs(experiment_id)
                else:
                    assert run_id is not None
                    client.upload_artifact(experiment_id, run_id, f"file-{i}.txt", payload)
            except (ApiError, requests.RequestException) as exc:
                error = str(exc)
            log.samples.append(Sample(operation, started, time.monotonic() - started, error))
    except Exception as exc:  # a bug in the workload itself: report it, never hang the run
        log.fatal = repr(exc)
    finally:
        client.close()


def _writer_loop(
    make_client: Callable[[], TrackingClient],
    experiment_id: str,
    client_index: int,
    stop_at: float,
    log: ClientLog,
) -> None:
    """What a training job's logging does: one run, then a `log-batch` of 10 metrics per step."""
    client = make_client()
    try:
        started = time.monotonic()
        run_id = client.create_run(experiment_id, f"bench-writer-{client_index}-{uuid.uuid4().hex[:8]}")
        log.samples.append(Sample("create-run", started, time.monotonic() - started))
        for step in range(MAX_REQUESTS_PER_CLIENT):
            if time.monotonic() >= stop_at:
                return
            started = time.monotonic()
            error = None
            try:
                client.log_metrics(run_id, step)
            except (ApiError, requests.RequestException) as exc:
                error = str(exc)
            log.samples.append(Sample("log-batch", started, time.monotonic() - started, error))
    except Exception as exc:  # a bug in the workload itself (or no run): report it, never hang the run
        log.fatal = repr(exc)
    finally:
        client.close()


WORKLOADS = {"mixed": _client_loop, "writes": _writer_loop}


def run_clients(
    make_client: Callable[[], TrackingClient],
    experiment_id: str,
    clients: int,
    seconds: float,
    workload: str = "mixed",
) -> list[ClientLog]:
    """Run `clients` concurrent clients for `seconds` (each request also bounded by its timeout)."""
    stop_at = time.monotonic() + seconds
    logs = [ClientLog() for _ in range(clients)]
    loop = WORKLOADS[workload]
    threads = [
        threading.Thread(target=loop, args=(make_client, experiment_id, i, stop_at, logs[i]), daemon=True)
        for i in range(clients)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=seconds + REQUEST_TIMEOUT + 10)
    return logs


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), round(fraction * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


@dataclass(frozen=True)
class Stats:
    operation: str
    requests: int
    errors: int
    throughput: float
    p50_ms: float
    p95_ms: float
    p99_ms: float

    @classmethod
    def of(cls, operation: str, samples: list[Sample], window_seconds: float) -> Stats:
        ok = sorted(s.seconds * 1000 for s in samples if s.error is None)
        errors = sum(1 for s in samples if s.error is not None)
        return cls(
            operation,
            len(samples),
            errors,
            len(ok) / window_seconds if window_seconds > 0 else 0.0,
            percentile(ok, 0.50),
            percentile(ok, 0.95),
            percentile(ok, 0.99),
        )


def in_window(logs: list[ClientLog], start: float, end: float) -> list[Sample]:
    """Samples of requests that *completed* inside [start, end)."""
    return [s for log in logs for s in log.samples if start <= s.started + s.seconds < end]
