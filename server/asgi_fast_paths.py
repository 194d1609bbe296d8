"""Three of MLflow's ASGI middlewares skipped on the requests they only pass through.

MLflow registers three `@app.middleware("http")` functions on its FastAPI app: basic-auth's
permission check for routes FastAPI serves itself, the workspace context, and the gateway timer.
Starlette runs each through `BaseHTTPMiddleware`, which for *every* request starts a task group,
copies the body through memory streams and rebuilds the response — profiled under the write
benchmark (py-spy, GIL samples, non-admin `runs/log-batch`) that machinery and the permission
middleware's scan of every native route were ~10 % of a worker's CPU, while for a request Flask
serves (the whole REST API) all three only call the next app:

- the permission middleware leaves Flask-served paths to Flask's `before_request` (authorization
  is Flask's there) and public paths to nobody; which of its branches a request takes depends only
  on the path and the method, so that answer is remembered per (path, root path, method);
- the gateway timer acts on `/gateway/` paths only;
- with workspaces off and no workspace header, the workspace middleware sets "no workspace" and
  calls the next app; the fast path sets and clears the same context variables itself.

Each is replaced by a plain ASGI middleware that sends exactly those requests straight to the next
app and every other request through MLflow's own function, unchanged, in the same position of the
stack. Governed by `MLFLOW_STACK_HOT_PATHS` with the other fast paths (server/hot_paths.py);
tests/unit/test_server_asgi_fast_paths.py pins the MLflow internals relied on and checks that the
answers of the whole stack do not change.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from server.hot_paths import LruCache

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
AsgiApp = Callable[[Scope, Receive, Send], Awaitable[None]]

PERMISSION = "add_fastapi_permission_middleware.<locals>.fastapi_permission_middleware"
WORKSPACE = "add_fastapi_workspace_middleware.<locals>.workspace_context_middleware"
GATEWAY_TIMING = "add_gateway_timing_middleware.<locals>.gateway_timing_middleware"
# Distinct (path, method) pairs remembered per worker; ids in paths make the space unbounded.
DECISION_CACHE_SIZE = 4096


class PassThroughUnless:
    """Runs MLflow's `dispatch` (as Starlette would) only for requests `needs_dispatch` selects;
    any other HTTP request goes to the next app inside `around` (a context, e.g. the workspace)."""

    def __init__(
        self,
        app: AsgiApp,
        dispatch: Callable[..., Any],
        needs_dispatch: Callable[[Scope], bool],
        around: Callable[[], Any] | None = None,
    ) -> None:
        from starlette.middleware.base import BaseHTTPMiddleware

        self.app = app
        self._dispatching = BaseHTTPMiddleware(app, dispatch=dispatch)
        self._needs_dispatch = needs_dispatch
        self._around = around

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._needs_dispatch(scope):
            await self._dispatching(scope, receive, send)
        elif self._around is None:
            await self.app(scope, receive, send)
        else:
            with self._around():
                await self.app(scope, receive, send)


def _routed_path(scope: Scope) -> str | None:
    # mlflow.server.asgi_utils.get_routed_asgi_path prefers scope["path"]; without one it rebuilds
    # the path from the URL, which only the original middleware does.
    path = scope.get("path")
    return path if isinstance(path, str) and path else None


def permission_needs_dispatch(native_routes: list[Any]) -> Callable[[Scope], bool]:
    """False when MLflow's permission middleware would only call the next app: a public path, or a
    path with no FastAPI validator that fail-closed mode would not refuse."""
    from mlflow.environment_variables import MLFLOW_BASIC_AUTH_FAIL_CLOSED
    from mlflow.server import auth

    decisions = LruCache(DECISION_CACHE_SIZE)

    def decide(scope: Scope, path: str) -> bool:
        if auth.is_unprotected_route(path):
            return False
        if auth._find_fastapi_validator(path, scope["method"]) is not None:
            return True
        return bool(
            MLFLOW_BASIC_AUTH_FAIL_CLOSED.get()
            and auth._scope_matches_native_route(native_routes, scope)
            and not any(marker in path for marker in auth._KNOWN_UNGATED_FASTAPI_ROUTE_MARKERS)
        )

    def needs_dispatch(scope: Scope) -> bool:
        path = _routed_path(scope)
        if path is None:
            return True
        key = (path, scope.get("root_path", ""), scope["method"])
        decision = decisions.get(key)
        if decision is None:
            decision = decide(scope, path)
            decisions.put(key, decision)
        return bool(decision)

    return needs_dispatch


def gateway_needs_dispatch() -> Callable[[Scope], bool]:
    from mlflow.server.fastapi_app import _add_static_prefix

    prefix = _add_static_prefix("/gateway/")

    def needs_dispatch(scope: Scope) -> bool:
        path = _routed_path(scope)
        return path is None or path.startswith(prefix)

    return needs_dispatch


def workspace_needs_dispatch() -> Callable[[Scope], bool]:
    """With workspaces off, only a request carrying a workspace header gets an answer of its own
    (MLflow refuses it); every other one gets "no workspace" and goes on."""
    from mlflow.environment_variables import MLFLOW_ENABLE_WORKSPACES
    from mlflow.utils.workspace_utils import WORKSPACE_HEADER_NAME

    header = WORKSPACE_HEADER_NAME.lower().encode("latin-1")

    def needs_dispatch(scope: Scope) -> bool:
        if MLFLOW_ENABLE_WORKSPACES.get():
            return True
        return any(name == header and value.strip() for name, value in scope.get("headers", ()))

    return needs_dispatch


class _NoWorkspace:
    """What MLflow's workspace middleware does around the next app when workspaces are off."""

    def __enter__(self) -> None:
        from mlflow.utils import workspace_context

        workspace_context.set_server_request_workspace(None)

    def __exit__(self, *_: object) -> None:
        from mlflow.utils import workspace_context

        workspace_context.clear_server_request_workspace()


def install(asgi_app: Any) -> list[str]:
    """Swap MLflow's three http middlewares for their fast-path wrappers, in place, before the
    app's middleware stack is built. Returns the names replaced: all three, or it raises having
    changed nothing."""
    from mlflow.server.auth import _native_fastapi_routes
    from starlette.middleware import Middleware
    from starlette.middleware.base import BaseHTTPMiddleware

    if getattr(asgi_app, "middleware_stack", None) is not None:
        raise RuntimeError("the ASGI fast paths must be installed before the app serves a request")
    choosers: dict[str, tuple[Callable[[Scope], bool], Callable[[], Any] | None]] = {
        PERMISSION: (permission_needs_dispatch(_native_fastapi_routes(asgi_app)), None),
        WORKSPACE: (workspace_needs_dispatch(), _NoWorkspace),
        GATEWAY_TIMING: (gateway_needs_dispatch(), None),
    }
    found: dict[int, str] = {}
    for index, middleware in enumerate(asgi_app.user_middleware):
        name = getattr(middleware.kwargs.get("dispatch"), "__qualname__", "")
        if middleware.cls is BaseHTTPMiddleware and name in choosers:
            found[index] = name
    if sorted(found.values()) != sorted(choosers):
        # An MLflow upgrade renamed or dropped one: change nothing and say so, rather than guess.
        missing = sorted(set(choosers) - set(found.values()))
        raise RuntimeError(f"MLflow's http middlewares changed; not found: {missing}")
    for index, name in found.items():
        needs_dispatch, around = choosers[name]
        dispatch = asgi_app.user_middleware[index].kwargs["dispatch"]
        asgi_app.user_middleware[index] = Middleware(
            PassThroughUnless, dispatch=dispatch, needs_dispatch=needs_dispatch, around=around
        )
    return sorted(found.values())
