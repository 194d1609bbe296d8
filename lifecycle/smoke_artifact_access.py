"""Smoke check: artifact bytes travel the way the stack is configured (`artifacts.clientAccess`).

- `proxied`: the server offers no multipart transfers in server-info and refuses to hand out a
  presigned S3 URL — every byte goes through the load balancer, as the "artifacts" check proved.
- `presigned`: the check does what an MLflow 3 client does with a large file, on a small one: it
  asks the server for a multipart upload, PUTs the part straight to the presigned S3 URL, completes
  it, then fetches a presigned download URL and GETs the bytes from S3. This proves, from where the
  smoke runs, the network reach to S3 and the signing role's bucket and KMS permissions that
  presigned clients need.
"""

from __future__ import annotations

import hashlib
import secrets
from urllib.parse import urlsplit

import requests

from lifecycle.smoke_context import CheckFailed, SmokeContext, proxied_artifact_path

SERVER_INFO_ENDPOINT = "/api/3.0/mlflow/server-info"
MULTIPART_CREATE = "/api/2.0/mlflow-artifacts/mpu/create/"
MULTIPART_COMPLETE = "/api/2.0/mlflow-artifacts/mpu/complete/"
MULTIPART_ABORT = "/api/2.0/mlflow-artifacts/mpu/abort/"
PRESIGNED_DOWNLOAD = "/api/2.0/mlflow-artifacts/presigned/"
# One part: S3's 5 MiB minimum applies to every part but the last, so a small single part is valid.
PRESIGNED_BYTES = 48 * 1024
FILE_NAME = "presigned.bin"
PROXIED = "proxied"
PRESIGNED = "presigned"


def offered_mode(ctx: SmokeContext) -> str:
    """What the server tells MLflow clients (mlflow/store/artifact/mlflow_artifacts_repo.py reads
    exactly these two flags to choose between proxied and presigned transfers)."""
    response = ctx.conn.request("GET", SERVER_INFO_ENDPOINT)
    if not response.ok:
        raise CheckFailed(f"GET {SERVER_INFO_ENDPOINT} -> HTTP {response.status_code}")
    info = response.json()
    uploads, downloads = (bool(info.get(f"multipart_{kind}_enabled")) for kind in ("uploads", "downloads"))
    if uploads != downloads:
        raise CheckFailed(
            f"server-info offers multipart uploads={uploads} but downloads={downloads}: clients would "
            "use presigned S3 URLs one way only"
        )
    return PRESIGNED if uploads else PROXIED


def _outside_the_server(ctx: SmokeContext, url: str) -> None:
    """A presigned URL must point at the object store, not back at the MLflow server."""
    if urlsplit(url).netloc == urlsplit(ctx.target.url).netloc:
        raise CheckFailed(f"presigned URL {url.split('?')[0]} points at the MLflow server, not at S3")


def _s3_request(ctx: SmokeContext, method: str, url: str, **kwargs: object) -> requests.Response:
    try:
        return requests.request(method, url, timeout=ctx.timeout, **kwargs)  # type: ignore[arg-type]
    except requests.RequestException as exc:
        # Only scheme and host: the query string is the signature.
        where = "{0.scheme}://{0.netloc}".format(urlsplit(url))
        raise CheckFailed(
            f"{method} to S3 at {where} failed ({type(exc).__name__}); presigned clients need HTTPS "
            "reach to S3 from where they run (docs: artifacts.clientAccess)"
        ) from exc


def _presigned_round_trip(ctx: SmokeContext) -> str:
    base = proxied_artifact_path(ctx.run_artifact_uri) + "/smoke"
    payload = ctx.smoke_id.encode() + secrets.token_bytes(PRESIGNED_BYTES)
    create = ctx.conn.request("POST", MULTIPART_CREATE + base, json={"path": FILE_NAME, "num_parts": 1})
    if not create.ok:
        raise CheckFailed(f"multipart create -> HTTP {create.status_code}: {create.text.strip()[:300]}")
    created = create.json()
    upload_id, credentials = created.get("upload_id"), created.get("credentials", [])
    if not upload_id or len(credentials) != 1:
        raise CheckFailed(f"multipart create answered {len(credentials)} part URL(s), expected 1")
    part = credentials[0]
    _outside_the_server(ctx, part["url"])
    put = _s3_request(ctx, "PUT", part["url"], data=payload, headers=part.get("headers") or {})
    if not put.ok:
        ctx.conn.request("POST", MULTIPART_ABORT + base, json={"path": FILE_NAME, "upload_id": upload_id})
        raise CheckFailed(f"PUT of the part to its presigned S3 URL -> HTTP {put.status_code}")
    complete = ctx.conn.request(
        "POST",
        MULTIPART_COMPLETE + base,
        json={
            "path": FILE_NAME,
            "upload_id": upload_id,
            "parts": [
                {"part_number": part["part_number"], "etag": put.headers.get("ETag", ""), "url": part["url"]}
            ],
        },
    )
    if not complete.ok:
        raise CheckFailed(f"multipart complete -> HTTP {complete.status_code}: {complete.text.strip()[:300]}")

    presigned = ctx.conn.request("GET", f"{PRESIGNED_DOWNLOAD}{base}/{FILE_NAME}")
    if not presigned.ok:
        raise CheckFailed(f"presigned download URL -> HTTP {presigned.status_code}: {presigned.text[:300]}")
    download = presigned.json()
    _outside_the_server(ctx, download["url"])
    got = _s3_request(ctx, "GET", download["url"], headers=download.get("headers") or {})
    if not got.ok:
        raise CheckFailed(f"GET from the presigned S3 URL -> HTTP {got.status_code}")
    if hashlib.sha256(got.content).digest() != hashlib.sha256(payload).digest():
        raise CheckFailed(f"downloaded {len(got.content)} bytes differ from the {len(payload)} uploaded")
    host = urlsplit(download["url"]).netloc
    return (
        f"presigned: {len(payload) // 1024} KiB up and down straight to S3 ({host}) by presigned URL, "
        "sha256 matches"
    )


def check_artifact_access(ctx: SmokeContext) -> str:
    ctx.require_run()
    mode = offered_mode(ctx)
    expected = ctx.target.artifact_client_access
    if expected is not None and expected != mode:
        raise CheckFailed(
            f"the stack is configured with artifacts.clientAccess: {expected}, but the server offers "
            f"{mode} transfers to clients; redeploy, or check the replicas' "
            "MLFLOW_STACK_ARTIFACT_CLIENT_ACCESS"
        )
    if mode == PRESIGNED:
        return _presigned_round_trip(ctx)
    base = proxied_artifact_path(ctx.run_artifact_uri) + "/smoke"
    refused = ctx.conn.request("POST", MULTIPART_CREATE + base, json={"path": FILE_NAME, "num_parts": 1})
    if refused.status_code != 404:
        raise CheckFailed(
            f"artifacts.clientAccess is proxied, yet multipart create -> HTTP {refused.status_code} "
            "(expected 404: no presigned S3 URL may reach a client)"
        )
    return "proxied: the server offers no presigned S3 URLs; every artifact byte goes through it"
