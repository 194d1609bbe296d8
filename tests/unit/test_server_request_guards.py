"""The kit's request checks, decided without a server (tests/reliability/ sends them for real)."""

from __future__ import annotations

import base64
import json

import pytest

from server import errors, request_guards, ssrf
from server.settings import SettingsError, load_settings


def _token(value: object) -> str:
    return base64.b64encode(json.dumps(value).encode()).decode()


@pytest.mark.parametrize(
    ("body", "refused"),
    [
        (b'{"value": "\\ud800"}', True),  # a lone high surrogate
        (b'{"\\udc00": "v"}', True),  # a lone low surrogate, as a key
        (b'{"value": ["\\ud83d\\ude00"]}', False),  # a pair: one emoji
        (b'{"value": "\\u00e9"}', False),
    ],
)
def test_only_lone_surrogates_are_refused(body: bytes, refused: bool) -> None:
    problem = request_guards.json_body_problem("POST", "application/json", body)
    assert (problem is not None and "surrogate" in problem) is refused


def test_runs_page_tokens_must_be_ones_mlflow_issues() -> None:
    from mlflow.utils.search_utils import SearchUtils

    assert request_guards.runs_page_token_problem(SearchUtils.create_page_token(100).decode()) is None
    assert request_guards.runs_page_token_problem("") is None
    for bad in ("garbage!", _token({"offset": "x"}), _token([1]), _token({"offset": -1}), "AAAA", 5):
        assert request_guards.runs_page_token_problem(bad) is not None, bad


def test_logged_model_page_tokens_must_be_ones_mlflow_issues() -> None:
    from mlflow.utils.search_utils import SearchLoggedModelsPaginationToken

    issued = SearchLoggedModelsPaginationToken(experiment_ids=["1"], filter_string=None, offset=10).encode()
    assert request_guards.logged_models_page_token_problem(issued) is None
    for bad in ("garbage!", _token({"offset": 1}), _token({"experiment_ids": "1"}), "AAAA"):
        assert request_guards.logged_models_page_token_problem(bad) is not None, bad


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "gopher://example.com/",
        "https://169.254.169.254/latest/meta-data/",
        "https://127.0.0.1/x",
        "https://[::1]/x",
        "https://[::ffff:10.0.0.1]/x",  # IPv4-mapped private address
        "https://10.1.2.3/x",
        "https://172.16.0.1/x",
        "https://192.168.1.1/x",
        "https://100.64.0.1/x",  # carrier-grade NAT
        "https://0.0.0.0/x",
        "https://internal.example/x",  # resolves to a private address below
        "https://",
    ],
)
def test_webhooks_into_the_network_are_refused(url: str) -> None:
    resolver = {"internal.example": ["93.184.216.34", "10.0.0.7"]}.get
    assert ssrf.webhook_url_problem(url, resolver=lambda host: resolver(host) or []) is not None


def test_webhooks_to_public_addresses_pass() -> None:
    assert ssrf.webhook_url_problem("https://8.8.8.8/hook") is None
    assert ssrf.webhook_url_problem("https://hooks.example/x", resolver=lambda _: ["93.184.216.34"]) is None


def test_webhook_events_must_be_known_pairs() -> None:
    assert ssrf.webhook_events_problem([{"entity": "MODEL_VERSION", "action": "CREATED"}]) is None
    assert ssrf.webhook_events_problem([{"entity": "model_version", "action": "CREATED"}]) is not None
    assert ssrf.webhook_events_problem([{"entity": "ENTITY_UNSPECIFIED", "action": "CREATED"}]) is not None
    assert ssrf.webhook_events_problem("MODEL_VERSION") is not None


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("1/run/artifacts/model.pkl", None),
        ("", None),
        ("1/run/artifacts/dir/", None),
        ("1/run/artifacts//x", "empty segment"),
        ("1/run/artifacts/a\x00b", "control character"),
        ("1/run/artifacts/a%00b", "control character"),
        ("1/run/artifacts/..\\..\\x", "backslash"),
        ("1/run/artifacts/../x", "'..'"),
        ("file:///etc/passwd", "URI"),
    ],
)
def test_artifact_paths(path: str, problem: str | None) -> None:
    found = errors.artifact_path_problem(path)
    assert found is None if problem is None else problem in (found or "")


def test_store_errors_are_answered_without_the_database_address() -> None:
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import BAD_REQUEST, TEMPORARILY_UNAVAILABLE
    from sqlalchemy.exc import IntegrityError, OperationalError

    outage = OperationalError("SELECT 1", {}, Exception('connection to server at "db.internal", port 5432'))
    for cause, status in (
        (outage, TEMPORARILY_UNAVAILABLE),
        (IntegrityError("INSERT", {}, Exception()), BAD_REQUEST),
    ):
        try:
            raise MlflowException(message=str(cause), error_code=status) from cause
        except MlflowException as exc:
            public, original_status = errors.public_exception(exc), exc.get_http_status_code()
        assert public is not None and public.get_http_status_code() == original_status
        assert "db.internal" not in public.message and "5432" not in public.message
    not_found = MlflowException.invalid_parameter_value("bad value")
    assert errors.public_exception(not_found) is None


def _env(**extra: str) -> dict[str, str]:
    return {
        "MLFLOW_STACK_DB_HOST": "db.internal",
        "MLFLOW_STACK_ARTIFACTS_DESTINATION": "s3://bucket/prefix",
        "MLFLOW_STACK_PUBLIC_HOSTS": "mlflow.example.com",
        "MLFLOW_STACK_DB_PASSWORD": "pw",
        "MLFLOW_STACK_ADMIN_PASSWORD": "a-long-admin-password",
        "MLFLOW_FLASK_SERVER_SECRET_KEY": "a-long-flask-secret-key",
        **extra,
    }


def test_forwarded_allow_ips_default_to_loopback_and_refuse_a_wildcard() -> None:
    assert load_settings(_env()).forwarded_allow_ips == ("127.0.0.1",)
    value = "10.40.0.0/20, 10.40.16.0/20"
    assert load_settings(_env(MLFLOW_STACK_FORWARDED_ALLOW_IPS=value)).forwarded_allow_ips == (
        "10.40.0.0/20",
        "10.40.16.0/20",
    )
    with pytest.raises(SettingsError, match="MLFLOW_STACK_FORWARDED_ALLOW_IPS"):
        load_settings(_env(MLFLOW_STACK_FORWARDED_ALLOW_IPS="*"))
