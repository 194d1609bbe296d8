"""The app every replica serves: MLflow's own basic-auth app, with guards for what it mishandles.

`--app-name basic-auth` still means MLflow's basic-auth — same users, permissions, credential
cache, UI and authorization function. The entrypoint points that name at `create_app` below (see
`use_kit_app`), which installs these on MLflow's Flask app around basic-auth's own hook.
Measured on MLflow 3.17.2 by tests/reliability/, each answered with a 500 (or leaked) without them:
- an `Authorization` header that is not Basic (e.g. `Bearer`) makes basic-auth hash a `None`
  password → 401 with the Basic challenge;
- **authentication first**: every other check below runs for an authenticated caller only, so an
  anonymous malformed or 12 MB body costs no parse and gets basic-auth's 401 (the credentials are
  checked once per request: `authenticate_request` is memoised on `flask.g`);
- a body sent to a route that parses a JSON message (MLflow's protobuf REST endpoints and
  /graphql) that is not a UTF-8 JSON object (server/request_guards.py) → 400; upload routes
  (`/ajax-api/2.0/mlflow/upload-artifact`, artifact PUTs) carry raw files and are never parsed;
- a malformed `page_token` for `runs/search` / `logged-models/search`, an empty GraphQL query or
  a GraphQL syntax error → 400;
- a webhook URL aimed at loopback, private, link-local or metadata addresses → 400 (server/ssrf.py),
  checked after basic-auth's authorization so only callers allowed to manage webhooks learn why;
- an artifact store (S3) failure → 503 naming the artifact store; a missing artifact → 404 and a
  malformed artifact path → 400, never the bucket (server/errors.py);
- with `artifacts.clientAccess: proxied`, no route hands out a presigned S3 URL and server-info
  does not offer multipart transfers (server/artifact_access.py);
- a store (database) error → its body says only that the tracking store is unavailable; any other
  5xx body says "internal error"; the detail is logged (server/errors.py).
"""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Callable
from typing import Any

from server import artifact_access, request_guards, ssrf

_logger = logging.getLogger(__name__)

KIT_APP = "server.app:create_app"
BASIC_AUTH = "basic-auth"
_AUTHORIZATION_KEY = "mlflow_stack_authorization"
# Flask endpoint names are MLflow's handler names (mlflow/server/__init__.py `add_url_rule`).
_RAW_BODY_ENDPOINTS = frozenset({"_upload_artifact"})
_PAGE_TOKEN_CHECKS: dict[str, Callable[[Any], str | None]] = {
    "_search_runs": request_guards.runs_page_token_problem,
    "_search_logged_models": request_guards.logged_models_page_token_problem,
}
_GRAPHQL_ENDPOINT = "_graphql"
_WEBHOOK_WRITE_ENDPOINTS = frozenset({"_create_webhook", "_update_webhook"})

# Kept for callers of the former module-level name.
json_body_problem = request_guards.json_body_problem


def _json_error(status: int, error_code: str, message: str, headers: dict[str, str] | None = None) -> Any:
    from flask import Response

    body = json.dumps({"error_code": error_code, "message": message})
    return Response(body, status=status, mimetype="application/json", headers=headers)


def _bad_request(problem: str) -> Any:
    return _json_error(400, "INVALID_PARAMETER_VALUE", problem)


def json_message_endpoints() -> frozenset[str]:
    """Flask endpoints whose handler parses the body as a JSON message (never an upload)."""
    from mlflow.server.handlers import get_endpoints

    return frozenset(handler.__name__ for _, handler, _ in get_endpoints()) - _RAW_BODY_ENDPOINTS


def _request_json() -> Any:
    from flask import request

    return request.get_json(force=True, silent=True, cache=True)


def _body_field(name: str) -> Any:
    body = _request_json()
    return body.get(name) if isinstance(body, dict) else None


def _malformed_authorization() -> Any:
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
    return None


def _make_authenticate_then_check(json_endpoints: frozenset[str]) -> Callable[[], Any]:
    def authenticate_then_check() -> Any:
        """Runs before basic-auth's hook: the same 401 basic-auth would give, then the body checks
        (before basic-auth's authorization, whose validators parse the body themselves)."""
        from flask import Response, request
        from mlflow.server import auth

        rejected = _malformed_authorization()
        if rejected is not None or auth.is_unprotected_route(request.path):
            return rejected
        authorization = auth.authenticate_request()
        if isinstance(authorization, Response):
            return authorization
        endpoint = request.endpoint or ""
        if endpoint not in json_endpoints:
            return None
        method = request.method
        problem = request_guards.json_body_problem(method, request.mimetype, request.get_data(cache=True))
        if problem is None and endpoint in _PAGE_TOKEN_CHECKS and method in request_guards.BODY_METHODS:
            problem = _PAGE_TOKEN_CHECKS[endpoint](_body_field("page_token"))
        if problem is None and endpoint == _GRAPHQL_ENDPOINT:
            problem = request_guards.graphql_query_problem(_body_field("query"))
        return None if problem is None else _bad_request(problem)

    return authenticate_then_check


def _check_webhook() -> Any:
    """Runs after basic-auth's hook: only a caller allowed to write webhooks gets here."""
    from flask import request

    if request.endpoint not in _WEBHOOK_WRITE_ENDPOINTS or request.method not in request_guards.BODY_METHODS:
        return None
    body = _request_json()
    if not isinstance(body, dict):
        return None
    problem = ssrf.webhook_events_problem(body.get("events"))
    if problem is None and ("url" in body or request.endpoint == "_create_webhook"):
        problem = ssrf.webhook_url_problem(body.get("url"))
    return None if problem is None else _bad_request(problem)


def _memoise_authentication() -> None:
    """basic-auth's hook and its after-request grants call `authenticate_request` again; within
    one request the answer cannot change, so the password hash is verified once."""
    from flask import g
    from mlflow.server import auth

    authenticate = auth.authenticate_request
    if getattr(authenticate, "kit_memoised", False):
        return

    @functools.wraps(authenticate)
    def authenticate_request() -> Any:
        if _AUTHORIZATION_KEY not in g:
            setattr(g, _AUTHORIZATION_KEY, authenticate())
        return getattr(g, _AUTHORIZATION_KEY)

    authenticate_request.kit_memoised = True  # type: ignore[attr-defined]
    auth.authenticate_request = authenticate_request


def _graphql_syntax_is_a_client_error(view: Callable[..., Any]) -> Callable[..., Any]:
    from graphql import GraphQLError

    @functools.wraps(view)
    def graphql_view(*args: Any, **kwargs: Any) -> Any:
        try:
            return view(*args, **kwargs)
        except GraphQLError as exc:  # raised by the parser only; execution errors are in the result
            return _bad_request(f"the GraphQL query is not valid: {exc.message}")

    return graphql_view


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


def _database_error(error: Exception) -> Any:
    """A database error raised outside MLflow's handlers — while authenticating, in basic-auth's
    permission lookups — would be Flask's HTML 500. Answer it like the store errors MLflow raises
    (server/errors.py): unavailable (503) or refused, no host, port or driver text; log the detail."""
    import psycopg
    from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    from server import errors

    errors.log_store_error(error)
    unavailable = (
        OperationalError,
        InterfaceError,
        DisconnectionError,
        PoolTimeout,
        psycopg.OperationalError,
    )
    if isinstance(error, unavailable):
        return _json_error(503, "TEMPORARILY_UNAVAILABLE", errors.STORE_UNAVAILABLE)
    return _json_error(500, "INTERNAL_ERROR", errors.STORE_REFUSED)


def create_app() -> Any:
    """uvicorn's app factory in every worker: guards first, then MLflow's basic-auth app."""
    import psycopg
    from botocore.exceptions import BotoCoreError, ClientError
    from sqlalchemy.exc import SQLAlchemyError

    from server import asgi_fast_paths, auth_cache, contract, errors, hot_paths

    fast_paths = os.environ.get(contract.HOT_PATHS.name, contract.HOT_PATHS.default) == "true"
    # Before anything creates a store: the session-maker change applies when a store is built.
    if fast_paths:
        hot_paths.install()
    from mlflow.server import app as flask_app
    from mlflow.server.auth import create_app as create_basic_auth_app
    from mlflow.server.handlers import catch_mlflow_exception

    errors.install()
    _memoise_authentication()
    # Registered before basic-auth's own before_request hook; MLflow errors raised while
    # authenticating (database down) are answered as MLflow answers them (scrubbed by `errors`).
    flask_app.before_request(catch_mlflow_exception(_make_authenticate_then_check(json_message_endpoints())))
    if _GRAPHQL_ENDPOINT in flask_app.view_functions:
        flask_app.view_functions[_GRAPHQL_ENDPOINT] = _graphql_syntax_is_a_client_error(
            flask_app.view_functions[_GRAPHQL_ENDPOINT]
        )
    # Artifact routes exist twice: Flask handlers (listing, multipart) and, under uvicorn, MLflow's
    # native FastAPI router for streaming upload/download. Both get the same answer.
    for error in (BotoCoreError, ClientError):
        flask_app.register_error_handler(error, _artifact_store_unavailable)
    for error in (SQLAlchemyError, psycopg.Error):
        flask_app.register_error_handler(error, _database_error)
    asgi_app = create_basic_auth_app(flask_app)
    if fast_paths:
        # After basic-auth built its store: remember its answers, invalidated by the auth DB.
        auth_cache.install()
        try:
            asgi_fast_paths.install(asgi_app)
        except RuntimeError as error:
            # Only an optimisation: MLflow's own middlewares keep serving, the log says why.
            _logger.warning("ASGI fast paths not installed: %s", error)
    flask_app.before_request(catch_mlflow_exception(_check_webhook))
    artifact_access.install(
        flask_app,
        os.environ.get(contract.ARTIFACT_CLIENT_ACCESS.name, contract.ARTIFACT_CLIENT_ACCESS.default or ""),
    )
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
