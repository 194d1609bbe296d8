"""What every smoke check works with: the context, the failure type, and a request helper.

Kept apart from the checks themselves so that check modules (lifecycle/smoke_checks.py,
lifecycle/smoke_artifact_access.py) can share it without importing one another.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import requests

from lifecycle.client import Connection
from lifecycle.credentials import ServerTarget

PROXIED_SCHEME = "mlflow-artifacts:"


class CheckFailed(Exception):
    """A check's expectation was not met; the message is the report's detail."""


@dataclass
class SmokeContext:
    target: ServerTarget
    conn: Connection
    smoke_id: str
    timeout: float
    # Filled in as checks go, read by later checks and by cleanup.
    experiment_id: str | None = None
    run_id: str | None = None
    run_artifact_uri: str | None = None
    model_version: str | None = None
    trace_id: str | None = None
    # Kinds of object a check tried to create ("experiment", "trace", "registered_model", "user").
    attempted: set[str] = field(default_factory=set)

    @property
    def experiment_name(self) -> str:
        return f"/smoke/{self.smoke_id}/run"

    @property
    def model_name(self) -> str:
        return self.smoke_id

    @property
    def username(self) -> str:
        return self.smoke_id

    def require_run(self) -> tuple[str, str]:
        if not (self.experiment_id and self.run_id):
            raise CheckFailed("no smoke run to work with (the tracking check did not create one)")
        return self.experiment_id, self.run_id


@dataclass(frozen=True)
class Check:
    name: str
    run: Callable[[SmokeContext], str]
    # Names of checks that must have passed first; otherwise this one is skipped, not failed.
    requires: tuple[str, ...] = ()


def verify(ctx: SmokeContext) -> str | bool:
    return ctx.target.ca_file or True


def trust_label(ctx: SmokeContext) -> str:
    return f"CA file {ctx.target.ca_file}" if ctx.target.ca_file else "the system trust store"


def send(ctx: SmokeContext, method: str, url: str, **kwargs: object) -> requests.Response:
    """One request outside the admin session (anonymous, or as another user), with clear errors."""
    try:
        return requests.request(
            method, url, verify=verify(ctx), timeout=ctx.timeout, allow_redirects=False, **kwargs
        )
    except requests.exceptions.SSLError as exc:
        raise CheckFailed(
            f"{method} {url}: TLS verification failed against {trust_label(ctx)} ({exc}); "
            "pass the server's CA with --ca-file"
        ) from exc
    except requests.RequestException as exc:
        raise CheckFailed(f"{method} {url}: no answer ({exc.__class__.__name__}: {exc})") from exc


def proxied_artifact_path(artifact_uri: str | None) -> str:
    """`mlflow-artifacts:/3/<run>/artifacts` -> `3/<run>/artifacts` (the proxy's path)."""
    if not artifact_uri or not artifact_uri.startswith(PROXIED_SCHEME):
        raise CheckFailed(
            f"artifact location is {artifact_uri!r}, not {PROXIED_SCHEME}/...: the server does not proxy "
            "artifacts, so clients would need S3 credentials (serve artifacts with --artifacts-destination)"
        )
    path = artifact_uri[len(PROXIED_SCHEME) :].lstrip("/")
    if not path or ".." in path.split("/"):
        raise CheckFailed(f"unexpected artifact location {artifact_uri!r}")
    return path
