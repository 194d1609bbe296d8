"""How clients move artifact bytes: `proxied` (every byte through the server) or `presigned`.

MLflow 3.17 clients ask `/api/3.0/mlflow/server-info` whether the server offers multipart uploads
and downloads; for an S3 artifact store it says yes, and the client then PUTs and GETs large files
(≥ MLFLOW_MULTIPART_UPLOAD_MINIMUM_FILE_SIZE / MLFLOW_MULTIPART_DOWNLOAD_MINIMUM_FILE_SIZE) straight
against S3 with presigned URLs (mlflow/store/artifact/mlflow_artifacts_repo.py). Those clients then
need network reach to S3, which "artifacts go through the server" denies. The stack setting
`artifacts.clientAccess` decides, and this module makes the server say and do exactly that:

- `proxied`: server-info advertises neither capability, and every route that would hand out a
  presigned S3 URL answers 404 ENDPOINT_NOT_FOUND naming the setting. A client forcing
  MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD/_DOWNLOAD=true falls back to the proxied path on that answer
  (the client's own rules, see `UNSUPPORTED_MULTIPART`).
- `presigned`: MLflow's own behaviour, left as it is.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any

PROXIED = "proxied"
PRESIGNED = "presigned"

# Flask endpoints (MLflow's handler names) that return an S3 URL to the client. Checked against
# the installed MLflow by tests/unit/test_artifact_access.py so a rename cannot slip through.
PRESIGNED_URL_ENDPOINTS = frozenset(
    {
        "_create_multipart_upload_artifact",
        "_complete_multipart_upload_artifact",
        "_abort_multipart_upload_artifact",
        "_get_presigned_download_url",
        "_create_presigned_upload_url",
        "_create_presigned_download_url",
    }
)
# mlflow/utils/server_info.py SERVER_INFO_MULTIPART_UPLOADS_ENABLED / ..._DOWNLOADS_ENABLED.
CAPABILITY_KEYS = ("multipart_uploads_enabled", "multipart_downloads_enabled")
# MLflow's client falls back to a plain (proxied) upload when the multipart-create answer's message
# starts with this (mlflow/exceptions.py `_UnsupportedMultipartUploadException.MESSAGE`, checked
# against the installed MLflow by tests/unit/test_artifact_access.py), and to a plain download on a
# 404 — so even a client forcing the multipart variables keeps working, through the server.
UNSUPPORTED_MULTIPART = "Multipart upload is not supported for the current artifact repository"
REFUSAL = (
    f"{UNSUPPORTED_MULTIPART}: this server proxies every artifact byte (stack setting "
    "artifacts.clientAccess: proxied) and hands out no presigned S3 URLs; upload and download "
    "through the server (unset MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD / _DOWNLOAD in the client)"
)


def _refuse_presigned() -> Any:
    from flask import Response, request

    if request.endpoint not in PRESIGNED_URL_ENDPOINTS:
        return None
    body = json.dumps({"error_code": "ENDPOINT_NOT_FOUND", "message": REFUSAL})
    return Response(body, status=404, mimetype="application/json")


def _without_capabilities(build: Callable[[], dict[str, Any]]) -> Callable[[], dict[str, Any]]:
    @functools.wraps(build)
    def build_server_info_payload() -> dict[str, Any]:
        return {**build(), **dict.fromkeys(CAPABILITY_KEYS, False)}

    build_server_info_payload.kit_proxied_only = True  # type: ignore[attr-defined]
    return build_server_info_payload


def install(flask_app: Any, mode: str) -> None:
    """Call after basic-auth's app is built: its hook runs first, so an anonymous caller still
    gets 401 and a caller without permission on the run still gets 403, never this 404."""
    if mode == PRESIGNED:
        return
    if mode != PROXIED:
        raise ValueError(f"artifact client access must be {PROXIED!r} or {PRESIGNED!r}, not {mode!r}")
    # server-info is answered twice in MLflow 3.17: by the Flask handler and by a native FastAPI
    # route (mlflow/server/server_info_api.py); both call this module-level function at request time.
    from mlflow.server import handlers, server_info_api

    if not getattr(handlers.build_server_info_payload, "kit_proxied_only", False):
        handlers.build_server_info_payload = _without_capabilities(handlers.build_server_info_payload)
    server_info_api.build_server_info_payload = handlers.build_server_info_payload
    flask_app.before_request(_refuse_presigned)
