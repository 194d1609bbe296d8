"""The individual smoke checks. Each proves one thing a user of the deployment relies on.

A check is a function of a `SmokeContext`: it returns a one-line detail on success and raises
`CheckFailed` (or any exception) on failure. Checks that create something record it in the
context *before* the create call, so cleanup can look for it even if the call failed halfway.
Every object gets the run's unique `smoke-<id>` name, so smokes running in parallel never collide.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import secrets
import socket
import ssl
import tempfile
import time
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import requests

from lifecycle.client import MlflowApiError
from lifecycle.smoke_artifact_access import check_artifact_access
from lifecycle.smoke_context import (
    PROXIED_SCHEME,
    Check,
    CheckFailed,
    SmokeContext,
    proxied_artifact_path,
    send,
    trust_label,
)
from server.contract import HEALTH_PATH

# Any endpoint that needs a login will do for the 401 checks; this one is cheap and read-only.
PROTECTED_ENDPOINT = "/api/2.0/mlflow/experiments/search"
USERS_GRANT_ENDPOINT = "/api/3.0/mlflow/users/permissions/grant"
ARTIFACTS_ENDPOINT = "/api/2.0/mlflow-artifacts/artifacts/"
MODEL_FILE = Path(__file__).with_name("smoke_model.py")

SMOKE_PARAMS = {"alpha": "0.5", "optimizer": "adam"}
SMOKE_METRIC = "loss"
SMOKE_METRIC_STEPS = 5
ARTIFACT_BYTES = 64 * 1024
PREDICT_INPUT = [1.0, 2.0, 3.0]
PREDICT_EXPECTED = [3.0, 5.0, 7.0]  # smoke_model.AffineModel: 2x + 1
ALIASES = ("challenger", "champion")
SECURE_TLS_VERSIONS = ("TLSv1.2", "TLSv1.3")


# --- reachability and transport ------------------------------------------------------------


def check_health(ctx: SmokeContext) -> str:
    url = ctx.target.url + HEALTH_PATH
    response = send(ctx, "GET", url)
    if response.status_code != 200:
        raise CheckFailed(f"GET {url} -> HTTP {response.status_code}: {response.text.strip()[:200]}")
    return f"GET {HEALTH_PATH} -> 200 {response.text.strip()[:40]} (no login needed)"


def _origin(url: str) -> tuple[str, str, int | None, str]:
    parts = urlsplit(url)
    default_port = {"https": 443, "http": 80}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), parts.port or default_port, parts.path or "/"


def check_https_redirect(ctx: SmokeContext) -> str:
    http_url = ctx.target.redirect_url
    probe = http_url.rstrip("/") + HEALTH_PATH
    expected = ctx.target.url + HEALTH_PATH
    hint = "" if ctx.target.http_url else " (is HTTP on a non-standard port? pass --http-url)"
    try:
        response = requests.get(probe, timeout=ctx.timeout, allow_redirects=False)
    except requests.RequestException as exc:
        raise CheckFailed(
            f"nothing answers on {http_url}: the load balancer must listen on plain HTTP and "
            f"redirect to HTTPS{hint} ({exc.__class__.__name__})"
        ) from exc
    if response.status_code not in (301, 302, 307, 308):
        raise CheckFailed(f"GET {probe} -> HTTP {response.status_code}, expected a redirect to {expected}")
    location = urljoin(probe, response.headers.get("Location", ""))
    if _origin(location) != _origin(expected):
        raise CheckFailed(f"GET {probe} redirects to {location}, expected {expected}")
    return f"GET {probe} -> {response.status_code} {location}"


def _probe_legacy_tls(host: str, port: int, timeout: float) -> str:
    """Does the server still accept TLS 1.1? Only a refused handshake proves it does not."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with warnings.catch_warnings():
            # Python deprecates TLSv1_1 precisely because it is insecure; here it is the point.
            warnings.simplefilter("ignore", DeprecationWarning)
            context.minimum_version = ssl.TLSVersion.TLSv1_1
            context.maximum_version = ssl.TLSVersion.TLSv1_1
        # Let this machine's OpenSSL offer the old protocol at all (its default level forbids it).
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
    except (ValueError, ssl.SSLError):
        return "TLS 1.1 probe not possible with this machine's OpenSSL"
    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as sock,
            context.wrap_socket(sock, server_hostname=host),
        ):
            pass
    except ssl.SSLError as exc:
        if "NO_PROTOCOLS_AVAILABLE" in str(exc).upper():
            return "TLS 1.1 probe not possible with this machine's OpenSSL"
        return "TLS 1.1 refused"
    except OSError as exc:
        return f"TLS 1.1 probe inconclusive ({exc.__class__.__name__})"
    raise CheckFailed(
        f"{host}:{port} accepts TLS 1.1; configure a TLS 1.2+ policy on the load balancer "
        "(e.g. ELBSecurityPolicy-TLS13-1-2-2021-06)"
    )


def check_tls(ctx: SmokeContext) -> str:
    parts = urlsplit(ctx.target.url)
    if parts.scheme != "https":
        raise CheckFailed(
            f"{ctx.target.url} is plain HTTP: clients would send passwords in clear text; "
            "use the load balancer's https:// URL"
        )
    host, port = parts.hostname or "", parts.port or 443
    context = ssl.create_default_context(cafile=ctx.target.ca_file)
    try:
        with (
            socket.create_connection((host, port), timeout=ctx.timeout) as sock,
            context.wrap_socket(sock, server_hostname=host) as tls,
        ):
            version = tls.version() or "unknown"
            cipher = (tls.cipher() or ("unknown",))[0]
            cert = tls.getpeercert() or {}
    except ssl.SSLCertVerificationError as exc:
        raise CheckFailed(
            f"certificate of {host}:{port} not trusted by {trust_label(ctx)}: {exc.verify_message}; "
            "if the server uses a private CA, pass it with --ca-file"
        ) from exc
    except ssl.SSLError as exc:
        raise CheckFailed(
            f"TLS handshake with {host}:{port} failed ({exc.reason or exc}); "
            "the server may offer only TLS versions below 1.2"
        ) from exc
    except OSError as exc:
        raise CheckFailed(f"cannot connect to {host}:{port} ({exc})") from exc
    if version not in SECURE_TLS_VERSIONS:
        raise CheckFailed(f"negotiated {version}; TLS 1.2 or newer is required")
    not_after = cert.get("notAfter")
    expiry = ""
    if isinstance(not_after, str):
        expires = datetime.fromtimestamp(ssl.cert_time_to_seconds(not_after), UTC)
        left = expires - datetime.now(UTC)
        # Short-lived certificates (Caddy's internal CA issues 12-hour ones) read better in hours.
        remaining = f"{left.days} days" if left.days >= 2 else f"{int(left.total_seconds() // 3600)} hours"
        expiry = f", expires {expires:%Y-%m-%d %H:%M} UTC (in {remaining})"
    legacy = _probe_legacy_tls(host, port, ctx.timeout)
    return f"{version} {cipher}; certificate verified against {trust_label(ctx)}{expiry}; {legacy}"


# --- authentication ---------------------------------------------------------------------------


def _expect_401(ctx: SmokeContext, auth: tuple[str, str] | None, who: str) -> str:
    url = ctx.target.url + PROTECTED_ENDPOINT
    response = send(ctx, "GET", url, params={"max_results": 1}, auth=auth)
    if response.status_code == 401:
        return f"{who}: GET {PROTECTED_ENDPOINT} -> 401"
    if response.ok:
        raise CheckFailed(
            f"{who}: GET {PROTECTED_ENDPOINT} -> {response.status_code}: the API is open; "
            "the server must run with --app-name basic-auth"
        )
    raise CheckFailed(f"{who}: GET {PROTECTED_ENDPOINT} -> HTTP {response.status_code}, expected 401")


def check_anonymous_rejected(ctx: SmokeContext) -> str:
    return _expect_401(ctx, None, "no credentials")


def check_wrong_password_rejected(ctx: SmokeContext) -> str:
    return _expect_401(ctx, (ctx.conn.username, "wrong-" + secrets.token_urlsafe(16)), "wrong password")


def check_admin_login(ctx: SmokeContext) -> str:
    try:
        body = ctx.conn.call("GET", "users/current")
    except MlflowApiError as exc:
        if exc.status == 401:
            raise CheckFailed(
                f"the server rejected the password for user {ctx.conn.username!r} (401); check "
                "--password-file / MLFLOW_TRACKING_PASSWORD, or the stack's admin password secret"
            ) from exc
        raise
    user = body.get("user", {})
    if not user.get("is_admin"):
        raise CheckFailed(
            f"user {ctx.conn.username!r} logged in but is not an admin; "
            "the smoke check needs the admin user to create and delete a temporary user"
        )
    return f"user {ctx.conn.username!r} logged in, is_admin=true"


# --- tracking, artifacts, registry ------------------------------------------------------------


def check_tracking(ctx: SmokeContext) -> str:
    conn = ctx.conn
    ctx.attempted.add("experiment")
    ctx.experiment_id = conn.call(
        "POST",
        "experiments/create",
        json={"name": ctx.experiment_name, "tags": [{"key": "mlflow-stack.smoke", "value": ctx.smoke_id}]},
    )["experiment_id"]
    now_ms = int(time.time() * 1000)
    run = conn.call(
        "POST",
        "runs/create",
        json={
            "experiment_id": ctx.experiment_id,
            "run_name": ctx.smoke_id,
            "start_time": now_ms,
            "tags": [{"key": "mlflow-stack.smoke", "value": ctx.smoke_id}],
        },
    )["run"]
    ctx.run_id = run["info"]["run_id"]
    ctx.run_artifact_uri = run["info"].get("artifact_uri")
    metrics = [
        {"key": SMOKE_METRIC, "value": 1.0 / (step + 1), "timestamp": now_ms + step, "step": step}
        for step in range(SMOKE_METRIC_STEPS)
    ]
    conn.call(
        "POST",
        "runs/log-batch",
        json={
            "run_id": ctx.run_id,
            "params": [{"key": k, "value": v} for k, v in SMOKE_PARAMS.items()],
            "metrics": metrics,
            "tags": [{"key": "stage", "value": "smoke"}],
        },
    )
    conn.call(
        "POST", "runs/update", json={"run_id": ctx.run_id, "status": "FINISHED", "end_time": now_ms + 1000}
    )

    # Read everything back: a write the server acknowledged but did not store is still a failure.
    experiment = conn.call("GET", "experiments/get-by-name", params={"experiment_name": ctx.experiment_name})
    if experiment["experiment"]["experiment_id"] != ctx.experiment_id:
        raise CheckFailed(f"experiment {ctx.experiment_name!r} resolves to another id")
    stored = conn.call("GET", "runs/get", params={"run_id": ctx.run_id})["run"]
    params = {p["key"]: p["value"] for p in stored["data"].get("params", [])}
    tags = {t["key"]: t["value"] for t in stored["data"].get("tags", [])}
    if params != SMOKE_PARAMS:
        raise CheckFailed(f"params read back as {params}, logged {SMOKE_PARAMS}")
    if tags.get("stage") != "smoke" or tags.get("mlflow-stack.smoke") != ctx.smoke_id:
        raise CheckFailed(f"tags read back as {tags}")
    if stored["info"]["status"] != "FINISHED":
        raise CheckFailed(f"run status read back as {stored['info']['status']}, set FINISHED")
    history = conn.call(
        "GET", "metrics/get-history", params={"run_id": ctx.run_id, "metric_key": SMOKE_METRIC}
    )
    steps = sorted((m["step"], m["value"]) for m in history.get("metrics", []))
    if steps != [(m["step"], m["value"]) for m in metrics]:
        raise CheckFailed(f"metric {SMOKE_METRIC!r} history read back as {steps}")
    return (
        f"experiment {ctx.experiment_name} (id {ctx.experiment_id}), run {ctx.run_id}: "
        f"{len(params)} params, {len(steps)} metric steps, tags read back"
    )


def check_artifacts(ctx: SmokeContext) -> str:
    ctx.require_run()
    path = proxied_artifact_path(ctx.run_artifact_uri) + "/smoke/payload.bin"
    payload = ctx.smoke_id.encode() + secrets.token_bytes(ARTIFACT_BYTES)
    upload = ctx.conn.request("PUT", ARTIFACTS_ENDPOINT + path, data=payload)
    if not upload.ok:
        raise CheckFailed(f"upload to {path} -> HTTP {upload.status_code}: {upload.text.strip()[:300]}")
    download = ctx.conn.request("GET", ARTIFACTS_ENDPOINT + path)
    if not download.ok:
        raise CheckFailed(f"download of {path} -> HTTP {download.status_code}: {download.text.strip()[:300]}")
    if hashlib.sha256(download.content).digest() != hashlib.sha256(payload).digest():
        raise CheckFailed(f"downloaded {len(download.content)} bytes differ from the {len(payload)} uploaded")
    listed = ctx.conn.call("GET", "artifacts/list", params={"run_id": ctx.run_id, "path": "smoke"})
    sizes = {f["path"]: int(f.get("file_size", -1)) for f in listed.get("files", [])}
    if sizes.get("smoke/payload.bin") != len(payload):
        raise CheckFailed(
            f"run artifact listing shows {sizes}, expected smoke/payload.bin of {len(payload)} bytes"
        )
    return (
        f"{len(payload) // 1024} KiB up and down through the server, sha256 matches ({PROXIED_SCHEME}/{path})"
    )


@contextlib.contextmanager
def _quiet_mlflow_client() -> Iterator[None]:
    """Keep the mlflow client's banners and warnings out of the report (and out of --json stdout).

    Failures still surface: the client raises, and the check reports the exception.
    """
    logger = logging.getLogger("mlflow")
    level = logger.level
    saved_uv = os.environ.get("MLFLOW_LOG_UV_FILES")
    # Without this, log_model copies the caller's uv.lock/pyproject.toml into the artifact store.
    os.environ["MLFLOW_LOG_UV_FILES"] = "false"
    logger.setLevel(logging.ERROR)
    try:
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(io.StringIO()),
            contextlib.redirect_stderr(io.StringIO()),
        ):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)
        if saved_uv is None:
            os.environ.pop("MLFLOW_LOG_UV_FILES", None)
        else:
            os.environ["MLFLOW_LOG_UV_FILES"] = saved_uv


def _alias_version(ctx: SmokeContext, alias: str) -> str:
    body = ctx.conn.call("GET", "registered-models/alias", params={"name": ctx.model_name, "alias": alias})
    return str(body["model_version"]["version"])


def check_registry(ctx: SmokeContext) -> str:
    _, run_id = ctx.require_run()
    import mlflow
    import pandas as pd
    from mlflow.models import infer_signature

    example = pd.DataFrame({"x": PREDICT_INPUT})
    with ctx.conn.mlflow_client_env(), _quiet_mlflow_client():
        with mlflow.start_run(run_id=run_id):
            logged = mlflow.pyfunc.log_model(
                name="model",
                python_model=str(MODEL_FILE),
                signature=infer_signature(example, PREDICT_EXPECTED),
                pip_requirements=[f"mlflow=={mlflow.__version__}", f"pandas=={pd.__version__}"],
            )
        # MLflow 3: register the logged model's own URI (models:/m-...); a version created from
        # runs:/<id>/model points at the run's artifact folder, which no longer holds the model.
        ctx.attempted.add("registered_model")
        version = mlflow.register_model(logged.model_uri, ctx.model_name)
        ctx.model_version = str(version.version)
        for alias in ALIASES:
            ctx.conn.call(
                "POST",
                "registered-models/alias",
                json={"name": ctx.model_name, "alias": alias, "version": ctx.model_version},
            )
            resolved = _alias_version(ctx, alias)
            if resolved != ctx.model_version:
                raise CheckFailed(f"alias {alias!r} resolves to version {resolved}, set {ctx.model_version}")
        uri = f"models:/{ctx.model_name}@{ALIASES[-1]}"
        with tempfile.TemporaryDirectory(prefix="mlflow-stack-smoke-") as download_dir:
            model = mlflow.pyfunc.load_model(uri, dst_path=download_dir)
            prediction = [float(y) for y in model.predict(example)]
    if prediction != PREDICT_EXPECTED:
        raise CheckFailed(f"{uri} predicted {prediction} for x={PREDICT_INPUT}, expected {PREDICT_EXPECTED}")
    return (
        f"model {ctx.model_name} v{ctx.model_version}: {' then '.join(ALIASES)} set; "
        f"{uri} loaded through the server, predicted {prediction}"
    )


# --- isolation ----------------------------------------------------------------------------------


def check_isolation(ctx: SmokeContext) -> str:
    experiment_id, _ = ctx.require_run()
    password = secrets.token_urlsafe(24)
    ctx.attempted.add("user")
    ctx.conn.call("POST", "users/create", json={"username": ctx.username, "password": password})
    url = ctx.target.url + "/api/2.0/mlflow/experiments/get"
    as_user = {"params": {"experiment_id": experiment_id}, "auth": (ctx.username, password)}

    before = send(ctx, "GET", url, **as_user)
    if before.ok:
        raise CheckFailed(
            f"new user {ctx.username} read experiment {experiment_id} without a grant: the server's "
            "default_permission lets every user read everything (set it to NO_PERMISSIONS)"
        )
    if before.status_code != 403:
        raise CheckFailed(f"new user, no grant: HTTP {before.status_code}, expected 403: {before.text[:200]}")

    ctx.conn.call(
        "POST",
        USERS_GRANT_ENDPOINT,
        json={
            "username": ctx.username,
            "resource_type": "experiment",
            "resource_id": experiment_id,
            "permission": "READ",
        },
    )
    after = send(ctx, "GET", url, **as_user)
    if after.status_code != 200:
        raise CheckFailed(f"after a READ grant: HTTP {after.status_code}, expected 200: {after.text[:200]}")
    if after.json()["experiment"]["name"] != ctx.experiment_name:
        raise CheckFailed("after a READ grant the user reads a different experiment")

    # READ must stay read-only: creating a run in the experiment needs EDIT.
    write = send(
        ctx,
        "POST",
        ctx.target.url + "/api/2.0/mlflow/runs/create",
        json={"experiment_id": experiment_id},
        auth=(ctx.username, password),
    )
    if write.ok:
        raise CheckFailed(f"user {ctx.username} with READ created a run in experiment {experiment_id}")
    return (
        f"user {ctx.username}: 403 before a grant, 200 after READ on experiment {experiment_id}, "
        f"write still refused ({write.status_code})"
    )


# --- tracing: OTLP ingest ----------------------------------------------------------------------

# OpenTelemetry clients export to <tracking URI>/v1/traces, naming the experiment in this header
# (mlflow/tracing/utils/otlp.py). OTLP/HTTP also accepts JSON with hex ids (the OTLP spec's JSON
# encoding), so the check needs no OpenTelemetry SDK.
OTLP_TRACES_PATH = "/v1/traces"
OTLP_EXPERIMENT_HEADER = "x-mlflow-experiment-id"
SMOKE_SERVICE_NAME = "mlflow-stack-smoke"


def otlp_export_body(trace_hex: str, span_hex: str, smoke_id: str, now_ns: int) -> dict[str, object]:
    """One finished span, as an OTLP/HTTP JSON ExportTraceServiceRequest."""
    return {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": SMOKE_SERVICE_NAME}}]
                },
                "scopeSpans": [
                    {
                        "scope": {"name": "mlflow-stack.smoke"},
                        "spans": [
                            {
                                "traceId": trace_hex,
                                "spanId": span_hex,
                                "name": "smoke-span",
                                "kind": 1,
                                "startTimeUnixNano": str(now_ns),
                                "endTimeUnixNano": str(now_ns + 1_000_000),
                                "attributes": [
                                    {"key": "mlflow-stack.smoke", "value": {"stringValue": smoke_id}}
                                ],
                                "status": {"code": 1},
                            }
                        ],
                    }
                ],
            }
        ]
    }


def check_tracing(ctx: SmokeContext) -> str:
    """What an OpenTelemetry-instrumented app does: export a span to /v1/traces through the load
    balancer with basic-auth, then read the trace back from the tracking API. Anonymous export is
    refused too: the OTLP endpoint is behind the same authentication as the REST API."""
    experiment_id, _ = ctx.require_run()
    trace_hex, span_hex = secrets.token_hex(16), secrets.token_hex(8)
    url = urljoin(ctx.target.url.rstrip("/") + "/", OTLP_TRACES_PATH.lstrip("/"))
    body = otlp_export_body(trace_hex, span_hex, ctx.smoke_id, time.time_ns())
    headers = {"Content-Type": "application/json", OTLP_EXPERIMENT_HEADER: experiment_id}
    anonymous = send(ctx, "POST", url, json=body, headers=headers)
    if anonymous.status_code != 401:
        raise CheckFailed(
            f"anonymous OTLP export to {OTLP_TRACES_PATH} answered {anonymous.status_code}, not 401"
        )
    ctx.attempted.add("trace")
    exported = send(
        ctx, "POST", url, json=body, headers=headers, auth=(ctx.target.username, ctx.target.password)
    )
    if exported.status_code != 200:
        raise CheckFailed(
            f"OTLP export to {OTLP_TRACES_PATH} answered {exported.status_code}: {exported.text[:200]}"
        )
    ctx.trace_id = f"tr-{trace_hex}"
    info = ctx.conn.call("GET", f"/api/3.0/mlflow/traces/{ctx.trace_id}")["trace"]["trace_info"]
    location = info.get("trace_location", {}).get("mlflow_experiment", {}).get("experiment_id")
    if location != experiment_id or info.get("state") != "OK":
        raise CheckFailed(
            f"trace {ctx.trace_id} read back in experiment {location}, state {info.get('state')}"
        )
    if info.get("tags", {}).get("service.name") != SMOKE_SERVICE_NAME:
        raise CheckFailed(f"trace {ctx.trace_id} read back without service.name {SMOKE_SERVICE_NAME!r}")
    return (
        f"span exported over OTLP/HTTP (anonymous: 401), trace {ctx.trace_id} read back in "
        f"experiment {experiment_id}"
    )


CHECKS: tuple[Check, ...] = (
    Check("health", check_health),
    Check("https redirect", check_https_redirect),
    Check("tls", check_tls),
    Check("auth: anonymous -> 401", check_anonymous_rejected),
    Check("auth: wrong password -> 401", check_wrong_password_rejected),
    Check("auth: admin login", check_admin_login),
    Check("tracking", check_tracking, requires=("auth: admin login",)),
    Check("artifacts", check_artifacts, requires=("tracking",)),
    Check("artifact access", check_artifact_access, requires=("artifacts",)),
    Check("tracing (OTLP)", check_tracing, requires=("tracking",)),
    Check("registry", check_registry, requires=("tracking",)),
    Check("isolation", check_isolation, requires=("tracking",)),
)
