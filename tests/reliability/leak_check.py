"""What an error body must never name: the bucket and prefix, the database's host and port, a
password, a file path of the stack, or a driver's traceback."""

from __future__ import annotations

from pathlib import Path

from local.stack import BUCKET


def forbidden_strings(stack, info) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """label -> text, for a running `LocalStack` (`stack`) and its `info` from `up`."""
    secrets = stack.secrets
    return {
        "an S3 URI": "s3://",
        "the bucket/prefix": f"{BUCKET}/mlflow-artifacts",  # as the destination's S3 keys name them
        "the database port": f"port {stack.ports.postgres}",
        "the database address": f":{stack.ports.postgres}",
        "the S3 endpoint": f":{stack.ports.s3}",
        "the database driver": "psycopg",
        "SQLAlchemy": "sqlalchemy",
        "a driver error": "OperationalError",
        "a traceback": "Traceback",
        "the state directory": str(info.state_dir),
        "a temporary file path": "/tmp/",
        # Labels only in messages: a failing test must not print a secret.
        "the admin password": Path(secrets.admin_password).read_text(encoding="utf-8"),
        "the database password": Path(secrets.db_password).read_text(encoding="utf-8"),
    }


def assert_leaks_nothing(body: bytes | str, forbidden: dict[str, str]) -> None:
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    leaked = [label for label, value in forbidden.items() if value and value.lower() in text.lower()]
    assert not leaked, f"the body names {leaked}"
