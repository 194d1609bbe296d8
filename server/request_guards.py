"""Checks on a request that MLflow 3.17 answers with a 500 when they fail.

Pure functions (standard library, plus MLflow's protobuf enums in `server/ssrf.py`), each naming
what is wrong so the client gets a 400 it can act on. Measured by tests/reliability/:
- a body that is not a UTF-8 JSON object, or holds a lone UTF-16 surrogate (`"\\ud800"`: Python
  parses it, protobuf drops the string and MLflow stored '' with a 200), reaches handlers that
  crash or silently store something else;
- `runs/search` and `logged-models/search` decode `page_token` with a non-strict base64 and let
  the decoder's or `.get()`'s exception escape (`binascii.Error`, `AttributeError`);
- `/graphql` with an empty or missing query crashes in the GraphQL parser.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

BODY_METHODS = frozenset({"POST", "PATCH", "PUT", "DELETE"})
# A JSON \u escape of a UTF-16 surrogate: only then can a parsed string hold a lone surrogate.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _has_lone_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(value, dict):
        return any(_has_lone_surrogate(k) or _has_lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_lone_surrogate(v) for v in value)
    return False


def json_body_problem(method: str, mimetype: str, body: bytes) -> str | None:
    """Why a request body cannot be a REST call's JSON object, or None when it can (or isn't JSON)."""
    if method not in BODY_METHODS or mimetype != "application/json" or not body:
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
    # Paired surrogates (an emoji written as two escapes) decode to one valid character; only a
    # lone one survives parsing as a string that cannot be stored. Checked only when an escape is
    # there, so ordinary bodies pay one regex scan.
    if _SURROGATE_ESCAPE.search(body) and _has_lone_surrogate(value):
        return "the request body contains a lone UTF-16 surrogate (\\ud800-\\udfff), which is not text"
    return None


def _decode_token(token: str) -> dict[str, Any] | None:
    try:
        decoded = json.loads(base64.b64decode(token.encode("ascii"), validate=True).decode("utf-8"))
    except (binascii.Error, UnicodeError, ValueError):
        return None
    return decoded if isinstance(decoded, dict) else None


def _is_offset(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def runs_page_token_problem(token: Any) -> str | None:
    """MLflow's `runs/search` token: base64 of `{"offset": <int>}` (SearchUtils.create_page_token)."""
    if token in (None, ""):
        return None
    decoded = _decode_token(token) if isinstance(token, str) else None
    if decoded is None or not _is_offset(decoded.get("offset")):
        return "page_token is not a token this server issued; pass next_page_token from a previous answer"
    return None


def logged_models_page_token_problem(token: Any) -> str | None:
    """MLflow's `logged-models/search` token: base64 of a JSON object with the search it continues
    (SearchLoggedModelsPaginationToken: experiment_ids, filter_string, order_by, offset)."""
    if token in (None, ""):
        return None
    decoded = _decode_token(token) if isinstance(token, str) else None
    if (
        decoded is None
        or not isinstance(decoded.get("experiment_ids"), list)
        or not isinstance(decoded.get("filter_string"), str | None)
        or not isinstance(decoded.get("order_by"), list | None)
        or not (decoded.get("offset") is None or _is_offset(decoded.get("offset")))
    ):
        return "page_token is not a token this server issued; pass next_page_token from a previous answer"
    return None


def graphql_query_problem(query: Any) -> str | None:
    if not isinstance(query, str) or not query.strip():
        return "a GraphQL request needs a non-empty 'query' string"
    return None
