"""Day-2 inputs: ages, ratios, statuses, the gc database URI, and the missing-metric hints."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from lifecycle.durations import InvalidValue, mlflow_gc_duration, parse_duration, parse_ratio, parse_statuses
from lifecycle.gc import GcConfigError, backend_store_uri_from_env
from lifecycle.models import missing_metric_hint
from lifecycle.runs import TERMINAL_STATUSES

PASSWORD_SENTINEL = "SENTINEL p@ss:w/rd%?#"  # noqa: S105 - a test sentinel with every URI delimiter


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90d", timedelta(days=90)),
        ("24h", timedelta(hours=24)),
        ("1.5h", timedelta(minutes=90)),
        ("2w", timedelta(days=14)),
        ("30m", timedelta(minutes=30)),
        (" 45s ", timedelta(seconds=45)),
        ("12D", timedelta(days=12)),
    ],
)
def test_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["90", "d", "-1d", "0d", "1d12h", "90 days", "", "1y"])
def test_bad_durations_name_the_flag_and_an_example(text: str) -> None:
    with pytest.raises(InvalidValue, match=r"--gc-older-than .*e\.g\. 90d"):
        parse_duration(text, "--gc-older-than")


def test_mlflow_gc_gets_whole_seconds() -> None:
    # `mlflow gc --older-than` parses [Nd][Nh][Nm][Ns]; whole seconds is the one form both agree on.
    assert mlflow_gc_duration(timedelta(days=30)) == "2592000s"
    assert mlflow_gc_duration(parse_duration("1.5h")) == "5400s"


@pytest.mark.parametrize(("text", "expected"), [("2%", 0.02), ("0.02", 0.02), ("0%", 0.0), ("12.5%", 0.125)])
def test_ratios(text: str, expected: float) -> None:
    assert parse_ratio(text) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["-1%", "abc", "2 percent", "%"])
def test_bad_ratios(text: str) -> None:
    with pytest.raises(InvalidValue, match="--max-regression"):
        parse_ratio(text)


def test_statuses_are_normalised_and_limited_to_terminal_ones() -> None:
    assert parse_statuses("failed, killed,FAILED", TERMINAL_STATUSES) == ("FAILED", "KILLED")
    for bad in ("RUNNING", "FINISHED,SCHEDULED", ",", ""):
        with pytest.raises(InvalidValue, match="--status"):
            parse_statuses(bad, TERMINAL_STATUSES)


# --- the database URI `runs gc --apply` hands to mlflow gc ---------------------------------------


def _env(**overrides: str) -> dict[str, str]:
    return {
        "MLFLOW_STACK_DB_HOST": "db.internal",
        "MLFLOW_STACK_DB_PASSWORD": PASSWORD_SENTINEL,
        **overrides,
    }


def test_backend_uri_quotes_the_password_and_uses_contract_defaults() -> None:
    uri = backend_store_uri_from_env(_env())
    parts = urlsplit(uri)
    assert parts.scheme == "postgresql+psycopg"
    assert (parts.hostname, parts.port, parts.path) == ("db.internal", 5432, "/mlflow")
    # The contract default is the application role, never the master user.
    assert parts.username == "mlflow_app" and unquote(parts.password or "") == PASSWORD_SENTINEL
    assert parts.query == "sslmode=require"


def test_backend_uri_reads_the_password_file(tmp_path: Path) -> None:
    secret = tmp_path / "db_password"
    secret.write_text(PASSWORD_SENTINEL + "\n", encoding="utf-8")
    env = {
        "MLFLOW_STACK_DB_HOST": "127.0.0.1",
        "MLFLOW_STACK_DB_PORT": "15432",
        "MLFLOW_STACK_DB_SSLMODE": "disable",
    }
    uri = backend_store_uri_from_env({**env, "MLFLOW_STACK_DB_PASSWORD_FILE": str(secret)})
    assert unquote(urlsplit(uri).password or "") == PASSWORD_SENTINEL
    assert urlsplit(uri).port == 15432 and uri.endswith("sslmode=disable")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MLFLOW_STACK_DB_PASSWORD": "x"}, "MLFLOW_STACK_DB_HOST is not set"),
        (
            {"MLFLOW_STACK_DB_HOST": "db"},
            "MLFLOW_STACK_DB_PASSWORD .or MLFLOW_STACK_DB_PASSWORD_FILE. is not set",
        ),
        (
            {
                "MLFLOW_STACK_DB_HOST": "db",
                "MLFLOW_STACK_DB_PASSWORD": "x",
                "MLFLOW_STACK_DB_PASSWORD_FILE": "/f",
            },
            "set only one",
        ),
        (
            {"MLFLOW_STACK_DB_HOST": "db", "MLFLOW_STACK_DB_PASSWORD_FILE": "/nonexistent/pw"},
            "cannot be read",
        ),
    ],
)
def test_missing_database_settings_are_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(GcConfigError, match=message) as error:
        backend_store_uri_from_env(env)
    assert PASSWORD_SENTINEL not in str(error.value)


# --- why a metric is missing --------------------------------------------------------------------


def test_hint_explains_that_mlflow3_rejects_at_signs() -> None:
    hint = missing_metric_hint("val_ndcg@10", ["val_ndcg_at_10", "val_auc"])
    assert "MLflow 3 rejects metric names containing '@'" in hint
    assert "'val_ndcg_at_10'" in hint


def test_hint_suggests_close_names_or_lists_what_was_logged() -> None:
    assert "did you mean 'val_auc'" in missing_metric_hint("val_acu", ["val_auc", "loss"])
    assert "logged metrics: loss" in missing_metric_hint("precision", ["loss"])
    assert "no metrics at all" in missing_metric_hint("precision", [])


def test_a_gc_failure_message_never_carries_the_database_password() -> None:
    from lifecycle.gc import _scrub

    uri = backend_store_uri_from_env(_env())
    echoed = f"could not connect to {uri} (password {PASSWORD_SENTINEL!s} rejected)"
    scrubbed = _scrub(echoed, uri)
    assert "SENTINEL" not in scrubbed and "***" in scrubbed
