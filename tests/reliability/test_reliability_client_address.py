"""Client addresses in the server log cannot be forged with X-Forwarded-For.

A replica believes X-Forwarded-For only from the load balancer (locally: Caddy on 127.0.0.1,
`MLFLOW_STACK_FORWARDED_ALLOW_IPS`). A client reaching a replica directly — here from 127.0.0.2,
another address of the loopback network, standing in for another host — is logged as itself. Through
Caddy the client's own header is not passed on: Caddy trusts no proxy in front of it, so it sends
the address it saw, and that is what the replica logs.
"""

from __future__ import annotations

import http.client
import ssl
import time
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

FORGED = "203.0.113.9"


def _access_line(log_files: list[str], marker: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for log in log_files:
            for line in Path(log).read_text(encoding="utf-8", errors="replace").splitlines():
                if marker in line and '"GET ' in line:
                    return line
        time.sleep(0.2)
    raise AssertionError(f"no access-log line for {marker} in {log_files}")


def _replica_logs(reliability_stack) -> list[str]:  # type: ignore[no-untyped-def]
    return [p.log_file for p in reliability_stack.info.processes if p.name.startswith("replica-")]


def test_a_direct_request_is_logged_with_its_real_address(reliability_stack) -> None:  # type: ignore[no-untyped-def]
    port = reliability_stack.stack.ports.replica_ports(1)[0]
    marker = uuid.uuid4().hex
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30, source_address=("127.0.0.2", 0))
    try:
        connection.request("GET", f"/health?probe={marker}", headers={"X-Forwarded-For": FORGED})
        assert connection.getresponse().status == 200
    finally:
        connection.close()
    line = _access_line(_replica_logs(reliability_stack), marker)
    assert "127.0.0.2:" in line and FORGED not in line, line


def test_through_the_proxy_the_real_client_is_logged_not_its_header(reliability_stack) -> None:  # type: ignore[no-untyped-def]
    info = reliability_stack.info
    marker = uuid.uuid4().hex
    context = ssl.create_default_context(cafile=info.ca_file)
    connection = http.client.HTTPSConnection(
        "localhost", reliability_stack.stack.ports.https, timeout=30, context=context
    )
    try:
        connection.request("GET", f"/health?probe={marker}", headers={"X-Forwarded-For": FORGED})
        assert connection.getresponse().status == 200
    finally:
        connection.close()
    line = _access_line(_replica_logs(reliability_stack), marker)
    assert "127.0.0.1:" in line and FORGED not in line, line
