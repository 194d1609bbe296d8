"""What an error response may say: failures are logged in full, answered without internal locations.

Measured on MLflow 3.17.2 (tests/reliability/test_reliability_bad_requests.py):
- every tracking/auth store failure becomes an `MlflowException` whose message *is* the SQLAlchemy
  error, so a caller — even one whose credentials were never checked, during a database outage —
  reads `psycopg.OperationalError … connection to server at "<host>", port <port>`;
- a download of a missing artifact (`mlflow-artifacts/artifacts/...`, `/get-artifact`) answers 500
  naming `s3://<bucket>/<prefix>` (on AWS the bucket name holds the account id), and the 500
  feeds the 5xx alarm although the client asked for something that does not exist.

Every `MlflowException` becomes a response body through `MlflowException.serialize_as_json`
(Flask's `catch_mlflow_exception`, the FastAPI handlers, the artifact router), so that one method
is where the body is replaced: store errors say only that the tracking store is unavailable (503)
or refused the request, any other 5xx says "internal error"; the detail goes to the server log.
Artifact downloads get a 404 for a missing object and a 400 for a malformed path, before S3.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable
from typing import Any

_logger = logging.getLogger("mlflow_stack.errors")

STORE_UNAVAILABLE = "the tracking store is unavailable; retry later"
STORE_REFUSED = "the tracking store refused the request"
SERVICE_UNAVAILABLE = "the service is temporarily unavailable; retry later"
INTERNAL = "internal server error; the details are in the server log"
ARTIFACT_NOT_FOUND = "the artifact does not exist"
ARTIFACT_STORE_UNAVAILABLE = "the artifact store could not serve the download; retry later"
# S3's answers for a key that does not exist (HeadObject says "404", GetObject "NoSuchKey").
_S3_NOT_FOUND = frozenset({"404", "NoSuchKey", "NotFound"})
# MLflow's message for some exceptions is itself an exception (the store's), so a body can only
# be judged by the cause chain, never by the text.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]|%00", re.IGNORECASE)

_installed = False


def _store_error(exc: BaseException) -> BaseException | None:
    """The SQLAlchemy error behind `exc`, if any (MLflow raises `MlflowException(...) from e`)."""
    from sqlalchemy.exc import SQLAlchemyError

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, SQLAlchemyError):
            return current
        current = current.__cause__ or current.__context__
    return None


def public_exception(exc: Any) -> Any | None:
    """The exception a client may see instead of `exc`, or None when `exc` may be shown as is."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import NOT_IMPLEMENTED, TEMPORARILY_UNAVAILABLE, ErrorCode
    from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    store_error = _store_error(exc)
    status = exc.get_http_status_code()
    if store_error is not None:
        if isinstance(store_error, OperationalError | InterfaceError | DisconnectionError | PoolTimeout):
            public = MlflowException(STORE_UNAVAILABLE, TEMPORARILY_UNAVAILABLE)
        else:
            public = MlflowException(STORE_REFUSED, ErrorCode.Value(exc.error_code))
    elif status >= 500 and exc.error_code != ErrorCode.Name(NOT_IMPLEMENTED):
        unavailable = exc.error_code == ErrorCode.Name(TEMPORARILY_UNAVAILABLE)
        message = SERVICE_UNAVAILABLE if unavailable else INTERNAL
        public = MlflowException(message, ErrorCode.Value(exc.error_code))
    else:
        return None
    # Logged here because not every path that answers logs (the artifact router does not).
    _logger.error("answered %s %s; the error was: %s", status, public.error_code, exc.message)
    return public


def log_store_error(error: BaseException) -> None:
    """The full database error, for the operator: the response never carries it."""
    _logger.error("answered a database error without its detail; the error was: %r", error)


def artifact_path_problem(path: str) -> str | None:
    """Why `path` (relative to the artifact root) cannot name an artifact, or None when it can."""
    if not path:
        return None
    if _CONTROL.search(path):
        return "the artifact path contains a control character"
    if "\\" in path:
        return "the artifact path contains a backslash; use '/' between segments"
    if "://" in path:
        return "the artifact path must be relative, not a URI"
    segments = path.split("/")
    if "" in segments[:-1] or path.startswith("/"):
        return "the artifact path contains an empty segment ('//')"
    if any(segment in (".", "..") for segment in segments):
        return "the artifact path contains a '.' or '..' segment"
    return None


def _guard_downloads(repo: Any) -> Any:
    """Make `repo.download_artifacts` answer 400/404/503 without naming the bucket."""
    from botocore.exceptions import ClientError
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, TEMPORARILY_UNAVAILABLE, ErrorCode

    download_artifacts = repo.download_artifacts
    download_file = repo._download_file

    def _download_file(remote_file_path: str, local_path: str) -> Any:
        try:
            return download_file(remote_file_path, local_path)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _S3_NOT_FOUND:
                # MLflow keeps a failure's error code when all failures share one: a 404 then.
                raise MlflowException(ARTIFACT_NOT_FOUND, RESOURCE_DOES_NOT_EXIST) from None
            raise

    @functools.wraps(download_artifacts)
    def guarded(artifact_path: str, dst_path: str | None = None) -> Any:
        problem = artifact_path_problem(artifact_path or "")
        if problem is not None:
            raise MlflowException.invalid_parameter_value(problem)
        try:
            return download_artifacts(artifact_path, dst_path)
        except MlflowException as exc:
            if exc.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
                raise MlflowException(ARTIFACT_NOT_FOUND, RESOURCE_DOES_NOT_EXIST) from None
            _logger.error("artifact download failed: %s", exc.message)
            raise MlflowException(ARTIFACT_STORE_UNAVAILABLE, TEMPORARILY_UNAVAILABLE) from None

    repo._download_file = _download_file
    repo.download_artifacts = guarded
    return repo


def install() -> None:
    """Scrub every error body and guard artifact downloads (once per worker, before serving)."""
    global _installed
    if _installed:
        return
    from mlflow.exceptions import MlflowException
    from mlflow.server import handlers

    serialize = MlflowException.serialize_as_json

    @functools.wraps(serialize)
    def serialize_as_json(self: Any) -> str:
        public = public_exception(self)
        return serialize(self if public is None else public)

    MlflowException.serialize_as_json = serialize_as_json  # type: ignore[method-assign]

    # One repository per process (MLflow caches it); the artifact router imports this getter from
    # `handlers` at call time, so both the Flask and the FastAPI download routes get the guard.
    get_repo: Callable[[], Any] = handlers._get_artifact_repo_mlflow_artifacts
    guarded_repos: dict[int, Any] = {}

    @functools.wraps(get_repo)
    def get_guarded_repo() -> Any:
        repo = get_repo()
        if id(repo) not in guarded_repos:
            guarded_repos[id(repo)] = _guard_downloads(repo)
        return repo

    handlers._get_artifact_repo_mlflow_artifacts = get_guarded_repo
    _installed = True
