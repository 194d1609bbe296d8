"""One authenticated HTTP connection to an MLflow server, shared by every day-2 tool.

`Connection` wraps a `requests.Session` with basic auth, TLS verification (optionally against a
private CA file), retries with backoff, one error type for every failed REST call, pagination, and
a context manager that points the `mlflow` Python client at the same server.

This module imports only the standard library and `requests` at import time; `mlflow` is imported
inside `Connection.mlflow_client_env()` because only the pyfunc paths need it, and the CLI must
start fast. It never imports `pulumi` or `infra/` (lifecycle/ only talks HTTP to a server).
The password is held by the session and never appears in a repr, a log line or an error.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import NewConnectionError
from urllib3.util.retry import Retry

if TYPE_CHECKING:
    from lifecycle.credentials import ServerTarget

DEFAULT_TIMEOUT_SECONDS = 30.0
DEFAULT_RETRIES = 3
DEFAULT_BACKOFF_SECONDS = 0.5

# A load balancer answers these while replicas restart or scale; the call itself never ran.
RETRY_STATUSES = frozenset({502, 503, 504})
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})

REST_PREFIX = "/api/2.0/mlflow/"

# Environment variables the mlflow client reads for this server. Set only inside
# `Connection.mlflow_client_env()`; the conflicting ones are cleared there so a stray token or
# an insecure-TLS switch in the caller's shell cannot change what the client does.
MLFLOW_CLIENT_ENV_VARS = (
    "MLFLOW_TRACKING_URI",
    "MLFLOW_REGISTRY_URI",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_SERVER_CERT_PATH",
    "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_TRACKING_INSECURE_TLS",
    "MLFLOW_TRACKING_AUTH",
    "MLFLOW_TRACKING_CLIENT_CERT_PATH",
    "MLFLOW_HTTP_REQUEST_TIMEOUT",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
    # Which experiment/run the fluent API acts on: set for another server (or by a CI job), they
    # would point this block's `mlflow.start_run` at the wrong experiment or run.
    "MLFLOW_EXPERIMENT_ID",
    "MLFLOW_EXPERIMENT_NAME",
    "MLFLOW_RUN_ID",
)


class MlflowApiError(Exception):
    """A REST call that did not succeed: an HTTP error status, or no usable connection at all.

    `status` is the HTTP status, or 0 when no response arrived (`error_code` then says why:
    CONNECTION_FAILED, TLS_ERROR or TIMEOUT). `error_code` is MLflow's own code when the server sent
    one (e.g. RESOURCE_DOES_NOT_EXIST), otherwise `HTTP_<status>`.
    """

    def __init__(self, status: int, error_code: str, message: str, endpoint: str, method: str = "") -> None:
        self.status = status
        self.error_code = error_code
        self.message = message
        self.endpoint = endpoint
        self.method = method
        where = f"{method} {endpoint}".strip()
        code = f"HTTP {status} {error_code}" if status else error_code
        super().__init__(f"{where}: {code}: {message}")


@dataclass(frozen=True)
class Page:
    """One page of a paginated list call."""

    items: list[dict[str, Any]]
    next_page_token: str | None


def _error_from_response(response: requests.Response, endpoint: str, method: str) -> MlflowApiError:
    error_code = f"HTTP_{response.status_code}"
    message = response.text.strip()[:500] or response.reason or "no response body"
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        error_code = str(body.get("error_code") or error_code)
        message = str(body.get("message") or message)
    return MlflowApiError(response.status_code, error_code, message, endpoint, method)


def _error_from_exception(exc: requests.RequestException, endpoint: str, method: str) -> MlflowApiError:
    if isinstance(exc, requests.exceptions.SSLError):
        return MlflowApiError(
            0,
            "TLS_ERROR",
            f"TLS handshake or certificate verification failed ({exc.__class__.__name__}: {exc}). "
            "If the server uses a private CA, pass its certificate with --ca-file.",
            endpoint,
            method,
        )
    if isinstance(exc, requests.exceptions.Timeout):
        return MlflowApiError(0, "TIMEOUT", f"no answer in time ({exc})", endpoint, method)
    return MlflowApiError(
        0, "CONNECTION_FAILED", f"could not connect ({exc.__class__.__name__}: {exc})", endpoint, method
    )


def _never_connected(exc: requests.RequestException) -> bool:
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(reason, NewConnectionError)


class Connection:
    """An authenticated session to one MLflow server (basic auth, TLS, retries).

    `url` is the server's base URL as clients use it (e.g. https://mlflow.example.com).
    `ca_file` is a PEM bundle to verify the server's certificate against instead of the system
    trust store (the local stack's internal CA, a corporate CA).
    """

    def __init__(
        self,
        url: str,
        username: str,
        password: str,
        ca_file: str | os.PathLike[str] | None = None,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        retries: int = DEFAULT_RETRIES,
        backoff: float = DEFAULT_BACKOFF_SECONDS,
    ) -> None:
        if not url.startswith(("https://", "http://")):
            raise ValueError(f"MLflow server URL must start with https:// or http://, got {url!r}")
        if not username:
            raise ValueError("an MLflow username is required")
        if not password:
            raise ValueError(f"no password given for MLflow user {username!r}")
        if ca_file is not None and not os.path.isfile(ca_file):
            raise ValueError(f"CA file {os.fspath(ca_file)!r} does not exist; pass a PEM file to --ca-file")
        self.url = url.rstrip("/")
        self.username = username
        self.ca_file = os.fspath(ca_file) if ca_file is not None else None
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self._password = password
        self.session = requests.Session()
        self.session.auth = (username, password)
        self.session.verify = self.ca_file if self.ca_file else True
        # The adapter retries only failed *connects* (the request never left this machine, so
        # any method is safe); status and read retries are decided per call in `request()`.
        adapter = HTTPAdapter(
            max_retries=Retry(
                total=None, connect=retries, read=0, status=0, other=0, redirect=0, backoff_factor=backoff
            )
        )
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)

    def __repr__(self) -> str:
        return f"Connection(url={self.url!r}, username={self.username!r}, ca_file={self.ca_file!r})"

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self.session.close()

    # --- construction helpers -------------------------------------------------------------

    @classmethod
    def from_target(cls, target: ServerTarget, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> Connection:
        return cls(target.url, target.username, target.password, target.ca_file, timeout=timeout)

    @classmethod
    def from_local(cls, state_dir: str | os.PathLike[str] | None = None, **kwargs: Any) -> Connection:
        """Connect to the running local stack as its admin user."""
        from lifecycle.credentials import resolve_local

        return cls.from_target(resolve_local(state_dir), **kwargs)

    @classmethod
    def from_stack(cls, stack: str, **kwargs: Any) -> Connection:
        """Connect to a deployed Pulumi stack as its admin (outputs + Secrets Manager)."""
        from lifecycle.credentials import resolve_stack

        return cls.from_target(resolve_stack(stack), **kwargs)

    @classmethod
    def from_args(
        cls,
        url: str,
        username: str,
        password_file: str | os.PathLike[str] | None = None,
        ca_file: str | os.PathLike[str] | None = None,
        **kwargs: Any,
    ) -> Connection:
        """Connect with explicit settings; the password comes from a file or MLFLOW_TRACKING_PASSWORD."""
        from lifecycle.credentials import resolve_url

        return cls.from_target(resolve_url(url, username, password_file, ca_file), **kwargs)

    def as_user(self, username: str, password: str) -> Connection:
        """A second connection to the same server (same CA, timeout, retries) as another user."""
        return Connection(
            self.url, username, password, self.ca_file, self.timeout, self.retries, self.backoff
        )

    # --- HTTP -------------------------------------------------------------------------------

    def endpoint_path(self, endpoint: str) -> str:
        """`experiments/create` -> `/api/2.0/mlflow/experiments/create`; absolute paths pass through."""
        return endpoint if endpoint.startswith("/") else REST_PREFIX + endpoint

    def request(
        self, method: str, endpoint: str, *, idempotent: bool | None = None, **kwargs: Any
    ) -> requests.Response:
        """Send one request and return the response, whatever its status.

        Retries with exponential backoff on 502/503/504 and on dropped connections, but only
        when the call is idempotent (GET/PUT/DELETE/HEAD by default; pass `idempotent=True` for
        read-only POSTs such as searches). Raises MlflowApiError only when no response arrived.
        """
        method = method.upper()
        path = self.endpoint_path(endpoint)
        retryable = method in IDEMPOTENT_METHODS if idempotent is None else idempotent
        kwargs.setdefault("timeout", self.timeout)
        # Per request, because requests lets REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE in the environment
        # override a session's `verify` — and many machines set those to the system bundle.
        kwargs.setdefault("verify", self.session.verify)
        attempts = self.retries + 1 if retryable else 1
        for attempt in range(attempts):
            last_try = attempt == attempts - 1
            try:
                response = self.session.request(method, self.url + path, **kwargs)
            except requests.exceptions.SSLError as exc:
                # A certificate problem does not heal by retrying.
                raise _error_from_exception(exc, path, method) from exc
            except requests.RequestException as exc:
                # Failed connects were already retried by the adapter; only a dropped or timed-out
                # exchange of an idempotent call gets another round here.
                if last_try or _never_connected(exc):
                    raise _error_from_exception(exc, path, method) from exc
            else:
                if response.status_code not in RETRY_STATUSES or last_try:
                    return response
                response.close()
            time.sleep(self.backoff * (2**attempt))
        raise AssertionError("unreachable: the last attempt always returns or raises")

    def call(
        self,
        method: str,
        endpoint: str,
        *,
        json: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
        idempotent: bool | None = None,
    ) -> dict[str, Any]:
        """Call a JSON endpoint and return the decoded body; any non-2xx raises MlflowApiError.

        `endpoint` is relative to /api/2.0/mlflow/ (`experiments/create`, `users/create`) or an
        absolute path (`/api/3.0/mlflow/users/permissions/grant`).
        """
        method = method.upper()
        path = self.endpoint_path(endpoint)
        response = self.request(method, path, json=json, params=params, idempotent=idempotent)
        if not response.ok:
            raise _error_from_response(response, path, method)
        if not response.content:
            return {}
        try:
            body = response.json()
        except ValueError as exc:
            raise MlflowApiError(
                response.status_code,
                "INVALID_RESPONSE",
                f"expected JSON, got {response.headers.get('Content-Type', 'no content type')}",
                path,
                method,
            ) from exc
        return body if isinstance(body, dict) else {"value": body}

    def page(
        self,
        endpoint: str,
        body: dict[str, Any] | None,
        items_key: str,
        *,
        method: str = "POST",
        page_token: str | None = None,
    ) -> Page:
        """Fetch one page of a list/search endpoint (POST body or GET query parameters)."""
        request_body = dict(body or {})
        if page_token:
            request_body["page_token"] = page_token
        if method.upper() == "GET":
            result = self.call("GET", endpoint, params=request_body)
        else:
            # Searches are read-only, so they may be retried like a GET.
            result = self.call(method, endpoint, json=request_body, idempotent=True)
        return Page(list(result.get(items_key, [])), result.get("next_page_token") or None)

    def paginate(
        self, endpoint: str, body: dict[str, Any] | None, items_key: str, *, method: str = "POST"
    ) -> Iterator[dict[str, Any]]:
        """Yield every item of a list/search endpoint, following next_page_token to the end."""
        token: str | None = None
        while True:
            current = self.page(endpoint, body, items_key, method=method, page_token=token)
            yield from current.items
            if not current.next_page_token:
                return
            token = current.next_page_token

    # --- the mlflow Python client -------------------------------------------------------

    @contextlib.contextmanager
    def mlflow_client_env(self) -> Iterator[None]:
        """Point the `mlflow` Python client (fluent API, MlflowClient, pyfunc loading) at this server.

        Sets MLFLOW_TRACKING_URI/REGISTRY_URI/USERNAME/PASSWORD/SERVER_CERT_PATH (and the client's
        HTTP timeout and retries from this connection) for the duration of the block, clears
        variables that would change auth or TLS (tokens, insecure TLS), also overrides a
        tracking/registry URI set earlier with `mlflow.set_tracking_uri`, and restores all of it
        afterwards. Process-wide state: do not use from several threads at once.
        """
        import mlflow
        from mlflow.tracking import fluent
        from mlflow.tracking._model_registry import utils as registry_utils
        from mlflow.tracking._tracking_service import utils as tracking_utils

        saved_env = {name: os.environ.get(name) for name in MLFLOW_CLIENT_ENV_VARS}
        saved_tracking_uri = tracking_utils._tracking_uri
        saved_registry_uri = registry_utils._registry_uri
        # `mlflow.set_experiment` elsewhere in this process (another server, a notebook) leaves a
        # process-global active experiment; `start_run(run_id=...)` refuses a run outside it.
        saved_experiment_id = fluent._active_experiment_id
        try:
            fluent._active_experiment_id = None
            for name in MLFLOW_CLIENT_ENV_VARS:
                os.environ.pop(name, None)
            os.environ["MLFLOW_TRACKING_USERNAME"] = self.username
            os.environ["MLFLOW_TRACKING_PASSWORD"] = self._password
            if self.ca_file:
                os.environ["MLFLOW_TRACKING_SERVER_CERT_PATH"] = self.ca_file
            # The client's own defaults (120 s, 7 retries with long backoff) would let one dead
            # server stall a tool for many minutes; use this connection's budget instead.
            os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(math.ceil(self.timeout))
            os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(self.retries)
            mlflow.set_tracking_uri(self.url)
            mlflow.set_registry_uri(self.url)
            yield
        finally:
            fluent._active_experiment_id = saved_experiment_id
            mlflow.set_tracking_uri(saved_tracking_uri)
            mlflow.set_registry_uri(saved_registry_uri)
            for name, value in saved_env.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
