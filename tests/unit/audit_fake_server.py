"""An in-memory stand-in for the few MLflow REST calls the audit and prune make, with a request log.

Just enough of the server's behaviour to test the report and prune logic without a server: search
pages honour max_results and page tokens, runs/search honours the start_time filter, writes change
the state. The real server is exercised by tests/integration/test_audit_local.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from lifecycle.client import MlflowApiError, Page


@dataclass
class FakeServer:
    url: str = "https://mlflow.example.com"
    experiments: list[dict[str, Any]] = field(default_factory=list)
    runs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # experiment id -> runs
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    versions: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    requests: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)

    # --- seeding ---------------------------------------------------------------------------

    def add_experiment(self, experiment_id: str, name: str) -> None:
        self.experiments.append({"experiment_id": experiment_id, "name": name})
        self.runs.setdefault(experiment_id, [])

    def add_run(self, experiment_id: str, run_id: str, start_ms: int, tags: dict[str, str]) -> None:
        self.runs[experiment_id].append(
            {
                "info": {"run_id": run_id, "start_time": start_ms},
                "data": {"tags": [{"key": k, "value": v} for k, v in tags.items()]},
            }
        )

    def add_model(self, name: str, created_ms: int, tags: dict[str, str] | None = None) -> None:
        self.models[name] = {
            "name": name,
            "creation_timestamp": created_ms,
            "aliases": [],
            "tags": [{"key": k, "value": v} for k, v in (tags or {}).items()],
        }
        self.versions[name] = []

    def add_version(self, name: str, created_ms: int) -> str:
        number = str(len(self.versions[name]) + 1)
        self.versions[name].append({"name": name, "version": number, "creation_timestamp": created_ms})
        return number

    def set_alias(self, name: str, alias: str, version: str) -> None:
        aliases = [a for a in self.models[name]["aliases"] if a["alias"] != alias]
        self.models[name]["aliases"] = [*aliases, {"alias": alias, "version": version}]

    def tags(self, name: str) -> dict[str, str]:
        return {t["key"]: t["value"] for t in self.models[name]["tags"]}

    def writes(self) -> list[tuple[str, str, dict[str, Any]]]:
        return [r for r in self.requests if r[0] in ("DELETE",) or r[1].endswith(("set-tag", "delete"))]

    # --- the Connection interface the audit uses -------------------------------------------

    def _model_body(self, name: str) -> dict[str, Any]:
        body = dict(self.models[name])
        if self.versions[name]:
            # Like MLflow: the latest version per stage; every version here is in stage None.
            body["latest_versions"] = [self.versions[name][-1]]
        return body

    def _items(self, endpoint: str, body: dict[str, Any]) -> list[dict[str, Any]]:
        if endpoint == "experiments/search":
            return list(self.experiments)
        if endpoint == "registered-models/search":
            return [self._model_body(name) for name in sorted(self.models)]
        if endpoint == "runs/search":
            since = int(re.fullmatch(r"attributes.start_time >= (\d+)", body["filter"])[1])  # type: ignore[index]
            found = [
                r for e in body["experiment_ids"] for r in self.runs[e] if r["info"]["start_time"] >= since
            ]
            return sorted(found, key=lambda r: -r["info"]["start_time"])
        raise AssertionError(f"unexpected search {endpoint}")

    def page(
        self,
        endpoint: str,
        body: dict[str, Any] | None,
        items_key: str,
        *,
        method: str = "POST",
        page_token: str | None = None,
    ) -> Page:
        body = dict(body or {})
        self.requests.append((method, endpoint, {**body, "page_token": page_token}))
        items = self._items(endpoint, body)
        start = int(page_token or 0)
        end = start + int(body["max_results"])
        return Page(items[start:end], str(end) if end < len(items) else None)

    def paginate(
        self, endpoint: str, body: dict[str, Any] | None, items_key: str, *, method: str = "POST"
    ) -> Any:
        token = None
        while True:
            current = self.page(endpoint, body, items_key, method=method, page_token=token)
            yield from current.items
            if not current.next_page_token:
                return
            token = current.next_page_token

    def call(
        self,
        method: str,
        endpoint: str,
        *,
        json: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
        idempotent: bool | None = None,
    ) -> dict[str, Any]:
        args = dict(json or params or {})
        self.requests.append((method, endpoint, args))
        if endpoint == "registered-models/get":
            if args["name"] not in self.models:
                raise MlflowApiError(404, "RESOURCE_DOES_NOT_EXIST", "no such model", endpoint, method)
            return {"registered_model": self._model_body(args["name"])}
        if endpoint == "model-versions/search":
            name = re.fullmatch(r"name='(.*)'", args["filter"])[1]  # type: ignore[index]
            newest = sorted(self.versions.get(name, []), key=lambda v: -v["creation_timestamp"])
            return {"model_versions": newest[: args["max_results"]]}
        if endpoint == "registered-models/set-tag":
            tags = [t for t in self.models[args["name"]]["tags"] if t["key"] != args["key"]]
            self.models[args["name"]]["tags"] = [*tags, {"key": args["key"], "value": args["value"]}]
            return {}
        if endpoint == "registered-models/delete":
            del self.models[args["name"]]
            return {}
        raise AssertionError(f"unexpected call {method} {endpoint}")


class FakeLock:
    """A lease that is always granted (or never, with `held_by`), and can run a hook on acquire."""

    def __init__(self, lock_id: str, held_by: str | None = None, on_acquire: Any = None) -> None:
        self.lock_id = lock_id
        self.held_by = held_by
        self.on_acquire = on_acquire
        self.acquired = 0
        self.released = 0

    def hold(self, wait_seconds: float = 0.0) -> Any:
        import contextlib

        from lifecycle.locks import LockHeld

        @contextlib.contextmanager
        def held() -> Any:
            if self.held_by:
                raise LockHeld(self.lock_id, {"holder": self.held_by}, wait_seconds)
            self.acquired += 1
            if self.on_acquire:
                self.on_acquire()
            try:
                yield self
            finally:
                self.released += 1

        return held()

    def still_held(self) -> bool:
        return not self.held_by
