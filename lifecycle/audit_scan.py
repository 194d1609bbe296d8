"""What the audit reads from the server, over the REST API only (lifecycle/client.py Connection).

How it scales: experiments and registered models are listed page by page (1000 a page, the most
MLflow's registered-model search returns). Runs are never listed in full: per experiment, one
search for the runs *started in the last `lookback_days`*, newest first, `page_size` a page, and at
most `max_runs_per_experiment` of them; an experiment whose recent runs exceed the cap is reported
as capped, with counts over the runs seen. An idle experiment costs one request.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from lifecycle.client import Connection

LIST_PAGE_SIZE = 1000  # SEARCH_REGISTERED_MODEL_MAX_RESULTS_THRESHOLD in MLflow


def experiments(conn: Connection) -> Iterator[dict[str, Any]]:
    """Every active experiment."""
    yield from conn.paginate(
        "experiments/search", {"max_results": LIST_PAGE_SIZE, "view_type": "ACTIVE_ONLY"}, "experiments"
    )


def registered_models(conn: Connection) -> Iterator[dict[str, Any]]:
    """Every registered model, with its aliases, tags and latest versions."""
    yield from conn.paginate(
        "registered-models/search", {"max_results": LIST_PAGE_SIZE}, "registered_models", method="GET"
    )


def newest_version(conn: Connection, name: str) -> dict[str, Any] | None:
    """The model's most recently registered version, asked for directly (prune's re-check)."""
    escaped = name.replace("\\", "\\\\").replace("'", "\\'")
    body = conn.call(
        "GET",
        "model-versions/search",
        params={"filter": f"name='{escaped}'", "order_by": "creation_timestamp DESC", "max_results": 1},
    )
    versions = body.get("model_versions", [])
    return versions[0] if versions else None


@dataclass
class RecentRuns:
    """The recent runs of one experiment that the audit looked at."""

    experiment_id: str
    runs: list[dict[str, Any]] = field(default_factory=list)
    pages: int = 0
    capped: bool = False


def recent_runs(
    conn: Connection,
    experiment_id: str,
    *,
    now: datetime,
    lookback_days: int,
    page_size: int,
    cap: int,
) -> RecentRuns:
    """The experiment's active runs started within the lookback window, newest first, at most `cap`."""
    since_ms = int((now - timedelta(days=lookback_days)).timestamp() * 1000)
    body = {
        "experiment_ids": [experiment_id],
        "filter": f"attributes.start_time >= {since_ms}",
        "run_view_type": "ACTIVE_ONLY",
        "order_by": ["attributes.start_time DESC"],
        "max_results": min(page_size, cap),
    }
    found = RecentRuns(experiment_id)
    token: str | None = None
    while True:
        page = conn.page("runs/search", body, "runs", page_token=token)
        found.pages += 1
        found.runs.extend(page.items)
        token = page.next_page_token
        if len(found.runs) >= cap:
            found.capped = len(found.runs) > cap or token is not None
            del found.runs[cap:]
            return found
        if not token:
            return found
