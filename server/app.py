"""The app every replica serves: MLflow's own basic-auth app, with guards for what it mishandles.

`--app-name basic-auth` still means MLflow's basic-auth — same users, permissions, credential
cache, UI and authorization function. The entrypoint points that name at `create_app` below (see
`use_kit_app`), which installs three things on MLflow's Flask app before basic-auth wraps it.
Measured on MLflow 3.17.2 by tests/reliability/, each answered with a 500 without them:
- a JSON body that is not a UTF-8 JSON object (malformed, an array, invalid UTF-8, nested deeper
  than the parser's recursion limit) reaches handlers that call `len()` on `None` → now 400;
- an `Authorization` header that is not Basic (e.g. `Bearer`) makes basic-auth hash a `None`
  password → now 401 with the Basic challenge;
- an artifact upload while S3 is unreachable lets botocore's exception escape → now 503 that names
  the artifact store, so a client (and its retry logic) can tell what failed.
"""

from __future__ import annotations

import json
import os
from typing import Any

KIT_APP = "server.app:create_app"
BASIC_AUTH = "basic-auth"
_BODY_METHODS = frozenset({"POST", "PATCH", "PUT", "DELETE"})


def _json_error(status: int, error_code: str, message: str, headers: dict[str, str] | None = None) -> Any:
    from flask import Response

    body = json.dumps({"error_code": error_code, "message": message})
    return Response(body, status=status, mimetype="application/json", headers=headers)


def json_body_problem(method: str, mimetype: str, body: bytes) -> str | None:
    """Why a request body cannot be a REST call's JSON object, or None when it can (or isn't JSON)."""
    if method not in _BODY_METHODS or mimetype != "application/json" or not body:
        return None
    try:
        value = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        return "the request body is not valid UTF-8"
    except RecursionError:
        return "the request body is nested too deeply"
    except ValueError as exc:
        return f"the request body is not valid JSON: {exc}"
    if not isinstance(value, dict):
        return "the request body must be a JSON object"
    return None


def _reject_malformed_request() -> Any:
    from flask import request

    header = request.headers.get("Authorization")
    credentials = request.authorization
    if header is not None and (
        credentials is None
        or credentials.type != "basic"
        or credentials.username is None
        or credentials.password is None
    ):
        return _json_error(
            401,
            "UNAUTHENTICATED",
            "only HTTP Basic credentials are accepted (Authorization: Basic <base64 user:password>)",
            headers={"WWW-Authenticate": 'Basic realm="mlflow"'},
        )
    problem = json_body_problem(request.method, request.mimetype, request.get_data(cache=True))
    if problem is not None:
        return _json_error(400, "INVALID_PARAMETER_VALUE", problem)
    return None


def _artifact_store_unavailable(error: Exception) -> Any:
    return _json_error(
        503,
        "TEMPORARILY_UNAVAILABLE",
        f"the artifact store (S3) could not be reached or refused the request: {type(error).__name__}; "
        "tracking data is unaffected, retry the upload later",
    )


async def _artifact_store_unavailable_asgi(_request: Any, error: Exception) -> Any:
    from starlette.responses import JSONResponse

    return JSONResponse(status_code=503, content=json.loads(_artifact_store_unavailable(error).get_data()))


def create_app() -> Any:
    """uvicorn's app factory in every worker: guards first, then MLflow's basic-auth app."""
    from botocore.exceptions import BotoCoreError, ClientError

    from server import contract, hot_paths

    # Before anything creates a store: the session-maker change applies when a store is built.
    if os.environ.get(contract.HOT_PATHS.name, contract.HOT_PATHS.default) == "true":
        hot_paths.install()
    from mlflow.server import app as flask_app
    from mlflow.server.auth import create_app as create_basic_auth_app

    # Registered before basic-auth's own before_request hook, so malformed requests never reach
    # the authorization validators (which parse the body) or the handlers.
    flask_app.before_request(_reject_malformed_request)
    # Artifact routes exist twice: Flask handlers (listing, multipart) and, under uvicorn, MLflow's
    # native FastAPI router for streaming upload/download. Both get the same answer.
    for error in (BotoCoreError, ClientError):
        flask_app.register_error_handler(error, _artifact_store_unavailable)
    asgi_app = create_basic_auth_app(flask_app)
    if hasattr(asgi_app, "add_exception_handler"):
        for error in (BotoCoreError, ClientError):
            asgi_app.add_exception_handler(error, _artifact_store_unavailable_asgi)
    return asgi_app


def use_kit_app() -> None:
    """Make MLflow's `server --app-name basic-auth` serve `create_app` (called in the entrypoint).

    MLflow resolves an app name through its `mlflow.app` entry points in `_find_app`; the image
    does not install this kit as a distribution, so the name is redirected here instead. MLflow
    keeps treating the app as basic-auth (admin bootstrap, auth env), since the name is unchanged.
    """
    import mlflow.server as mlflow_server

    original = mlflow_server._find_app

    def find_app(app_name: str) -> str:
        return KIT_APP if app_name == BASIC_AUTH else original(app_name)

    mlflow_server._find_app = find_app
