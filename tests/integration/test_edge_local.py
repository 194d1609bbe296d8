"""The local stack's edge behaves like the ALB's (docs/deploy.md, "What runs, and the guard rails"):
HTTPS answers carry Strict-Transport-Security, and plain HTTP redirects to the configured host
whatever Host header the client sent — a forged Host can never pick the redirect target."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
import requests

from local.stack import LocalStackInfo

pytestmark = pytest.mark.integration


def test_https_answers_carry_hsts(local_stack: LocalStackInfo) -> None:
    response = requests.get(f"{local_stack.url}/health", verify=local_stack.ca_file, timeout=10)
    assert response.status_code == 200
    assert response.headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"


@pytest.mark.parametrize("host", [None, "evil.example", "evil.example:8443", "localhost.evil.example"])
def test_http_redirects_to_the_configured_host_not_the_requests(
    local_stack: LocalStackInfo, host: str | None
) -> None:
    headers = {"Host": host} if host else {}
    response = requests.get(
        f"{local_stack.http_url}/api/2.0/mlflow/experiments/search?max_results=1",
        headers=headers,
        allow_redirects=False,
        timeout=10,
    )
    assert response.status_code in (301, 308)
    location = urlsplit(response.headers["Location"])
    configured = urlsplit(local_stack.url)
    assert (location.scheme, location.netloc) == ("https", configured.netloc)
    assert location.path == "/api/2.0/mlflow/experiments/search" and location.query == "max_results=1"
