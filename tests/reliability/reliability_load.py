"""Steady write load with an acknowledgement ledger, and process surgery for the fault tests.

A writer logs one metric step per request (`runs/log-batch`) to a run of its own and records the
step as *acknowledged* only when the server answered 200. After the fault, every acknowledged
step must be readable back: that is the "no acknowledged write is lost" check.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import requests

from local.processes import ProcessRecord, spawn

METRIC = "reliability_step"
REQUEST_TIMEOUT = 20.0


@dataclass
class Api:
    base_url: str
    auth: tuple[str, str]
    verify: bool | str = True

    def session(self) -> requests.Session:
        session = requests.Session()
        session.auth = self.auth
        session.verify = self.verify
        session.trust_env = False
        return session

    def request(self, method: str, path: str, **kwargs: object) -> requests.Response:
        # A fresh connection per call: with several workers behind one port, each call may land
        # on any of them (what the per-worker credential cache check needs).
        with self.session() as session:
            return session.request(method, self.base_url + path, timeout=REQUEST_TIMEOUT, **kwargs)  # type: ignore[arg-type]

    def ok(self, method: str, path: str, **kwargs: object) -> dict:  # type: ignore[type-arg]
        response = self.request(method, path, **kwargs)
        assert response.status_code == 200, f"{method} {path}: {response.status_code} {response.text[:300]}"
        return response.json() if response.content else {}

    def create_experiment(self) -> str:
        body = {"name": f"reliability-{uuid.uuid4().hex[:10]}"}
        return str(self.ok("POST", "/api/2.0/mlflow/experiments/create", json=body)["experiment_id"])

    def create_run(self, experiment_id: str) -> str:
        body = {"experiment_id": experiment_id, "start_time": int(time.time() * 1000)}
        return str(self.ok("POST", "/api/2.0/mlflow/runs/create", json=body)["run"]["info"]["run_id"])

    def metric_steps(self, run_id: str) -> set[int]:
        history = self.ok(
            "GET",
            "/api/2.0/mlflow/metrics/get-history",
            params={"run_id": run_id, "metric_key": METRIC, "max_results": "25000"},
        )
        return {int(m["step"]) for m in history.get("metrics", [])}


@dataclass
class Event:
    at: float  # time.monotonic()
    ok: bool
    detail: str = ""


@dataclass
class Writer:
    run_id: str
    acknowledged: list[int] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)


class SteadyLoad:
    """`clients` writers, each sending log-batch requests back to back until stopped.

    Bounded by `max_seconds` and `max_requests` per writer even if `stop()` is never called.
    """

    def __init__(
        self, api: Api, experiment_id: str, clients: int, max_seconds: float = 120, max_requests: int = 5000
    ) -> None:
        self.api = api
        self.writers = [Writer(api.create_run(experiment_id)) for _ in range(clients)]
        self.max_seconds = max_seconds
        self.max_requests = max_requests
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(w,), daemon=True) for w in self.writers]

    def _run(self, writer: Writer) -> None:
        deadline = time.monotonic() + self.max_seconds
        session = self.api.session()
        try:
            for step in range(self.max_requests):
                if self._stop.is_set() or time.monotonic() > deadline:
                    return
                body = {
                    "run_id": writer.run_id,
                    "metrics": [
                        {
                            "key": METRIC,
                            "value": float(step),
                            "timestamp": int(time.time() * 1000),
                            "step": step,
                        }
                    ],
                }
                try:
                    response = session.post(
                        self.api.base_url + "/api/2.0/mlflow/runs/log-batch",
                        json=body,
                        timeout=REQUEST_TIMEOUT,
                    )
                    ok = response.status_code == 200
                    detail = "" if ok else f"HTTP {response.status_code}: {response.text[:120]}"
                except requests.RequestException as exc:
                    ok, detail = False, type(exc).__name__
                if ok:
                    writer.acknowledged.append(step)
                writer.events.append(Event(time.monotonic(), ok, detail))
                if not ok:
                    time.sleep(0.05)  # a failing client backs off a little, as the MLflow client does
        finally:
            session.close()

    def __enter__(self) -> SteadyLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=REQUEST_TIMEOUT + 5)

    def events(self, start: float = 0.0, end: float = float("inf")) -> list[Event]:
        return [e for w in self.writers for e in w.events if start <= e.at < end]

    def acknowledged(self) -> int:
        return sum(len(w.acknowledged) for w in self.writers)

    def lost_writes(self) -> dict[str, list[int]]:
        """Acknowledged steps that cannot be read back, per run (empty when nothing was lost)."""
        lost = {}
        for writer in self.writers:
            missing = sorted(set(writer.acknowledged) - self.api.metric_steps(writer.run_id))
            if missing:
                lost[writer.run_id] = missing
        return lost

    def wait_for_successes(self, after: float, count: int, timeout: float) -> float | None:
        """Monotonic time at which every writer had `count` consecutive successes after `after`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            times = []
            for writer in self.writers:
                streak, reached = 0, None
                for event in [e for e in writer.events if e.at >= after]:
                    streak = streak + 1 if event.ok else 0
                    if streak >= count and reached is None:
                        reached = event.at
                    if not event.ok:
                        reached = None
                times.append(reached)
            if all(t is not None for t in times):
                return max(t for t in times if t is not None)
            time.sleep(0.2)
        return None


@dataclass(frozen=True)
class ProcessSpec:
    """How a running process was started, to start it again the same way after killing it."""

    name: str
    argv: list[str]
    env: dict[str, str]
    cwd: str
    uid: int
    gid: int
    log_file: Path
    stop_signal: int

    @classmethod
    def of(cls, name: str, pid: int, log_file: str, stop_signal: int = signal.SIGTERM) -> ProcessSpec:
        proc = psutil.Process(pid)
        return cls(
            name,
            proc.cmdline(),
            proc.environ(),
            proc.cwd(),
            proc.uids().real,
            proc.gids().real,
            Path(log_file),
            int(stop_signal),
        )

    def start(self) -> ProcessRecord:
        as_other_user = self.uid != os.getuid()
        return spawn(
            self.name,
            self.argv,
            self.log_file,
            self.env,
            cwd=Path(self.cwd),
            user=self.uid if as_other_user else None,  # type: ignore[arg-type]
            group=self.gid if as_other_user else None,
            stop_signal=self.stop_signal,
        )


def kill_tree(pid: int, sig: int = signal.SIGKILL, timeout: float = 20) -> None:
    """Signal a process and all its descendants at once, then wait (and reap) until they are gone."""
    proc = psutil.Process(pid)
    members = [proc, *proc.children(recursive=True)]
    for member in members:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.send_signal(sig)
    psutil.wait_procs(members, timeout=timeout)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
