"""The shared local stack for integration tests.

`local_stack` (session scope) starts a fresh stack — real PostgreSQL, S3/DynamoDB emulator, two
MLflow replicas, Caddy with TLS — in a temporary state dir on free ports, yields its
`LocalStackInfo`, and stops it (by PID) at the end. Interface, stable for every test that uses it:

    info.url              https://localhost:<port>  (TLS by Caddy's internal CA)
    info.http_url         http://localhost:<port>   (redirects to url)
    info.username         the basic-auth admin
    info.password         the admin password (read from info.password_file)
    info.ca_file          PEM of the CA to trust
    info.s3_endpoint_url  the emulator (dummy credentials: local.s3_emulator.DUMMY_CREDENTIALS)
    info.lock_table       DynamoDB table on the emulator (lock_id S, TTL expires_at)
    info.state_dir        logs/, secrets/, state.json
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from local.processes import port_in_use
from local.stack import LocalStack, LocalStackInfo, Ports

REPLICAS = 2


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_ports(replicas: int = REPLICAS) -> Ports:
    """Ports nobody is using right now: ephemeral ones for singles, a free run for the replicas."""
    singles: set[int] = set()
    while len(singles) < 4:
        singles.add(_free_port())
    rng = random.Random()  # noqa: S311 - picking test ports, not secrets
    for _ in range(200):
        base = rng.randrange(20000, 30000)
        candidates = range(base, base + replicas)
        if not any(p in singles or port_in_use(p) for p in candidates):
            https, http, postgres, s3 = sorted(singles)
            return Ports(https=https, http=http, postgres=postgres, s3=s3, replica_base=base)
    raise RuntimeError("no run of free ports found for the replicas")


def new_state_dir(prefix: str = "mlflow-stack-test-") -> Path:
    # Directly under the system temp dir: when tests run as root, PostgreSQL runs as an
    # unprivileged user that must be able to traverse every parent of the state dir
    # (pytest's tmp_path lives under a 0700 directory).
    return Path(tempfile.mkdtemp(prefix=prefix))


@pytest.fixture(scope="session")
def local_stack() -> Iterator[LocalStackInfo]:
    state_dir = new_state_dir()
    stack = LocalStack(state_dir, replicas=REPLICAS, ports=free_ports())
    # A failed `up` stops what it started itself and keeps state_dir, whose logs its error names.
    info = stack.up()
    try:
        yield info
    finally:
        stack.down()
        shutil.rmtree(state_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def pick_free_ports() -> Callable[[int], Ports]:
    """For tests that start their own processes: `pick_free_ports(replicas)` -> Ports."""
    return free_ports


@pytest.fixture(scope="session")
def make_state_dir() -> Callable[[str], Path]:
    """For tests that need their own state dir (traversable by PostgreSQL when run as root)."""
    return new_state_dir


# -- the AWS API emulator for the deployer's tools (backend init, doctor, image build) ------------
# Not an example account (123456789012), so a tool's own placeholder checks never trip on it.
EMULATOR_ACCOUNT = "307946651234"


@pytest.fixture(scope="session")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A moto server process on a free 127.0.0.1 port for the session; its endpoint URL."""
    from local import s3_emulator
    from local.processes import stop, wait_until

    port = _free_port()
    log = tmp_path_factory.mktemp("aws-emulator") / "moto.log"
    env = {**os.environ, **s3_emulator.DUMMY_CREDENTIALS, "MOTO_ACCOUNT_ID": EMULATOR_ACCOUNT}
    record = s3_emulator.start(port, log, env)
    try:
        wait_until(lambda: s3_emulator.is_ready(port), what="moto server", timeout=60, record=record)
        yield s3_emulator.endpoint_url(port)
    finally:
        stop(record)


@pytest.fixture
def aws_environment(
    emulator: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Callable[[str, str], Any]:
    """Empties the emulator and points this process's boto3 at it through the environment only
    (AWS_ENDPOINT_URL and dummy credentials, no config files or profile), the way a tool reaches
    AWS. Returns `client(service, region)`, a separate client for setting up and reading back."""
    import boto3
    import requests

    from local import s3_emulator

    requests.post(f"{emulator}/moto-api/reset", timeout=10).raise_for_status()
    for name in list(os.environ):
        if name.startswith(("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ENDPOINT_URL", emulator)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_emulator.DUMMY_CREDENTIALS["AWS_ACCESS_KEY_ID"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_emulator.DUMMY_CREDENTIALS["AWS_SECRET_ACCESS_KEY"])
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))

    def client(service: str, region: str) -> Any:
        return boto3.client(
            service,
            region_name=region,
            endpoint_url=emulator,
            aws_access_key_id=s3_emulator.DUMMY_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=s3_emulator.DUMMY_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        )

    return client
