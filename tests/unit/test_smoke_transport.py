"""The smoke check's transport checks (health, TLS, HTTP->HTTPS redirect) against real sockets.

A throwaway CA and a certificate for 127.0.0.1 are generated per session; small HTTP(S) servers on
127.0.0.1 play the load balancer, so what is tested is the real handshake and the real redirect.
"""

from __future__ import annotations

import datetime
import ipaddress
import re
import socket
import ssl
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from lifecycle.client import Connection, MlflowApiError
from lifecycle.credentials import ServerTarget
from lifecycle.smoke_checks import (
    CheckFailed,
    SmokeContext,
    check_health,
    check_https_redirect,
    check_tls,
)

SENTINEL_PASSWORD = "sentinel-Pa55word-transport"  # noqa: S105 - a marker, not a credential


@dataclass(frozen=True)
class Pki:
    ca_file: Path
    other_ca_file: Path
    cert_file: Path
    key_file: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _ca(common_name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    ca_key, ca_cert = _ca("smoke test CA")
    _, other_ca = _ca("some other CA")
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=10))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    files = Pki(
        ca_file=directory / "ca.pem",
        other_ca_file=directory / "other-ca.pem",
        cert_file=directory / "server.pem",
        key_file=directory / "server-key.pem",
    )
    files.ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    files.other_ca_file.write_bytes(other_ca.public_bytes(serialization.Encoding.PEM))
    files.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return files


Responder = Callable[[BaseHTTPRequestHandler], None]


def _ok_health(handler: BaseHTTPRequestHandler) -> None:
    handler.send_response(200 if handler.path == "/health" else 404)
    handler.send_header("Content-Length", "2")
    handler.end_headers()
    handler.wfile.write(b"OK")


@contextmanager
def serve(respond: Responder, tls: ssl.SSLContext | None = None) -> Iterator[int]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            respond(self)

        def log_message(self, *args: object) -> None:
            pass

    class Server(ThreadingHTTPServer):
        daemon_threads = True

        def get_request(self) -> tuple[socket.socket, object]:
            sock, address = super().get_request()
            if tls is None:
                return sock, address
            try:
                return tls.wrap_socket(sock, server_side=True), address
            except (ssl.SSLError, OSError):
                # A refused handshake (the client offered a protocol we do not speak) is the
                # expected outcome of the legacy-TLS probe; keep serving.
                sock.close()
                raise

    httpd = Server(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd.server_address[1]
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def server_tls(pki: Pki, lowest: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = lowest
    if lowest < ssl.TLSVersion.TLSv1_2:
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
    context.load_cert_chain(pki.cert_file, pki.key_file)
    return context


def smoke_context(url: str, ca_file: Path | None = None, http_url: str | None = None) -> SmokeContext:
    target = ServerTarget(
        url=url,
        username="admin",
        password=SENTINEL_PASSWORD,
        ca_file=str(ca_file) if ca_file else None,
        http_url=http_url,
    )
    conn = Connection(url, "admin", SENTINEL_PASSWORD, ca_file=ca_file, timeout=5, retries=0)
    return SmokeContext(target=target, conn=conn, smoke_id="smoke-test", timeout=5)


def test_tls_passes_with_the_servers_ca_and_reports_version_and_expiry(pki: Pki) -> None:
    with serve(_ok_health, server_tls(pki)) as port:
        detail = check_tls(smoke_context(f"https://127.0.0.1:{port}", pki.ca_file))
    assert detail.startswith(("TLSv1.3", "TLSv1.2"))
    assert f"verified against CA file {pki.ca_file}" in detail
    assert "(in 9 days)" in detail or "(in 10 days)" in detail
    assert "TLS 1.1 refused" in detail


def test_tls_fails_against_the_wrong_ca_and_says_how_to_fix_it(pki: Pki) -> None:
    with serve(_ok_health, server_tls(pki)) as port, pytest.raises(CheckFailed) as failed:
        check_tls(smoke_context(f"https://127.0.0.1:{port}", pki.other_ca_file))
    assert "not trusted" in str(failed.value)
    assert "--ca-file" in str(failed.value)


def test_tls_fails_when_the_server_still_accepts_tls_1_1(pki: Pki) -> None:
    with (
        serve(_ok_health, server_tls(pki, lowest=ssl.TLSVersion.TLSv1_1)) as port,
        pytest.raises(CheckFailed) as failed,
    ):
        check_tls(smoke_context(f"https://127.0.0.1:{port}", pki.ca_file))
    assert "accepts TLS 1.1" in str(failed.value)


def test_tls_fails_for_a_plain_http_url() -> None:
    with pytest.raises(CheckFailed, match="plain HTTP"):
        check_tls(smoke_context("http://127.0.0.1:9"))


def test_health_over_https_needs_no_login(pki: Pki) -> None:
    with serve(_ok_health, server_tls(pki)) as port:
        assert check_health(smoke_context(f"https://127.0.0.1:{port}", pki.ca_file)).startswith(
            "GET /health -> 200 OK"
        )


def test_health_with_the_wrong_ca_names_the_fix(pki: Pki) -> None:
    with serve(_ok_health, server_tls(pki)) as port, pytest.raises(CheckFailed, match="--ca-file"):
        check_health(smoke_context(f"https://127.0.0.1:{port}", pki.other_ca_file))


def test_connection_reports_a_tls_error_without_retrying(pki: Pki) -> None:
    with serve(_ok_health, server_tls(pki)) as port:
        conn = Connection(f"https://127.0.0.1:{port}", "admin", SENTINEL_PASSWORD, ca_file=pki.other_ca_file)
        with pytest.raises(MlflowApiError) as raised:
            conn.call("GET", "experiments/search")
    assert raised.value.error_code == "TLS_ERROR"
    assert "--ca-file" in str(raised.value)
    assert SENTINEL_PASSWORD not in str(raised.value)


def redirect_to(location: Callable[[BaseHTTPRequestHandler], str], status: int = 308) -> Responder:
    def respond(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        handler.send_header("Location", location(handler))
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    return respond


def test_redirect_to_the_https_url_passes() -> None:
    https_url = "https://127.0.0.1:8443"
    with serve(redirect_to(lambda h: https_url + h.path)) as port:
        detail = check_https_redirect(smoke_context(https_url, http_url=f"http://127.0.0.1:{port}"))
    assert detail == f"GET http://127.0.0.1:{port}/health -> 308 {https_url}/health"


def test_redirect_that_drops_the_port_fails() -> None:
    # Caddy's automatic redirect does exactly this on a non-standard port.
    with (
        serve(redirect_to(lambda h: "https://127.0.0.1" + h.path, status=301)) as port,
        pytest.raises(CheckFailed, match=re.escape("expected https://127.0.0.1:8443/health")),
    ):
        check_https_redirect(smoke_context("https://127.0.0.1:8443", http_url=f"http://127.0.0.1:{port}"))


def test_http_that_serves_content_instead_of_redirecting_fails() -> None:
    with serve(_ok_health) as port, pytest.raises(CheckFailed, match="HTTP 200, expected a redirect"):
        check_https_redirect(smoke_context("https://127.0.0.1:8443", http_url=f"http://127.0.0.1:{port}"))


def test_nothing_listening_on_http_fails_with_the_address() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(CheckFailed) as failed:
        check_https_redirect(smoke_context("https://127.0.0.1:8443", http_url=f"http://127.0.0.1:{port}"))
    assert f"nothing answers on http://127.0.0.1:{port}" in str(failed.value)
    assert "must listen on plain HTTP and redirect to HTTPS" in str(failed.value)


def test_connection_trusts_its_ca_file_even_when_requests_ca_bundle_says_otherwise(
    pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    # requests lets REQUESTS_CA_BUNDLE override a session's `verify`; many machines set it.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(pki.other_ca_file))
    monkeypatch.setenv("CURL_CA_BUNDLE", str(pki.other_ca_file))
    with serve(_ok_health, server_tls(pki)) as port:
        conn = Connection(f"https://127.0.0.1:{port}", "admin", SENTINEL_PASSWORD, ca_file=pki.ca_file)
        assert conn.request("GET", "/health").text == "OK"
