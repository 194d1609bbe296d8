"""Where basic-auth's per-request CPU goes: one log-batch, no auth vs admin vs non-admin user.

    .venv/bin/python -m bench.profile_auth [--requests 200] [--profile]

Starts an embedded PostgreSQL, then for each mode runs MLflow's Flask app in a fresh process
(Flask test client: no HTTP, no uvicorn, so only the application's own work is measured) and
reports the CPU time per `runs/log-batch`. `--profile` adds the top functions of the non-admin run.
Modes: `noauth` (stock app), `admin` (basic-auth, credential cache on, admin user: permission checks
skipped), `user` (basic-auth, credential cache on, a non-admin user who owns the experiment), `kit`
(as `user`, with the kit's server/hot_paths.py and server/auth_cache.py installed).
"""

from __future__ import annotations

import argparse
import base64
import configparser
import io
import os
import secrets
import subprocess
import sys
import tempfile
import time

from bench.servers import bench_environment

MODES = ("noauth", "admin", "user", "kit")


def _measure(mode: str, requests: int, profile: bool) -> None:
    """Runs inside the child process: MLflow's app, configured by the parent's environment."""
    import cProfile
    import pstats

    import mlflow.server

    app = mlflow.server.app
    headers: dict[str, str] = {}
    if mode == "kit":
        from server import hot_paths

        hot_paths.install()  # before any store exists, as server/app.py does
    if mode != "noauth":
        from mlflow.server.auth import create_app, store

        create_app(app)
        if mode == "kit":
            from server import auth_cache

            auth_cache.install()  # after basic-auth's store exists, as server/app.py does
        password = secrets.token_hex(12)
        store.create_user(f"user-{mode}", password, is_admin=mode == "admin")  # kit: non-admin too
        token = base64.b64encode(f"user-{mode}:{password}".encode()).decode()
        headers = {"Authorization": f"Basic {token}"}
    client = app.test_client()
    created = client.post(
        "/api/2.0/mlflow/experiments/create", json={"name": f"profile-{mode}"}, headers=headers
    )
    experiment = created.json["experiment_id"]  # type: ignore[index]
    run = client.post(
        "/api/2.0/mlflow/runs/create", json={"experiment_id": experiment, "start_time": 1}, headers=headers
    ).json["run"]["info"]["run_id"]  # type: ignore[index]

    def log_batch(i: int) -> None:
        metrics = [
            {"key": k, "value": 1.0, "timestamp": 1, "step": s}
            for s in range(i * 5, i * 5 + 5)
            for k in ("loss", "accuracy", "learning_rate", "grad_norm")
        ]
        body = {
            "run_id": run,
            "metrics": metrics,
            "params": [{"key": f"p{i}_{j}", "value": "v"} for j in range(2)],
            "tags": [{"key": "phase", "value": str(i)}],
        }
        response = client.post("/api/2.0/mlflow/runs/log-batch", json=body, headers=headers)
        assert response.status_code == 200, response.data

    for i in range(20):  # warm-up: caches, connection pools, the credential cache
        log_batch(i)
    profiler = cProfile.Profile() if profile else None
    started = time.process_time()
    if profiler:
        profiler.enable()
    for i in range(20, 20 + requests):
        log_batch(i)
    if profiler:
        profiler.disable()
    cpu_ms = (time.process_time() - started) / requests * 1000
    note = ", under cProfile" if profile else ""
    print(f"{mode:7s} {cpu_ms:6.1f} ms CPU per log-batch ({requests} requests{note})")
    if profiler:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(30)
        print(out.getvalue())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_auth", description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--profile", action="store_true", help="cProfile the kit's (non-admin) run")
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args(argv)
    if args.mode:
        _measure(args.mode, args.requests, args.profile and args.mode == "kit")
        return 0
    cpus = ",".join(str(c) for c in sorted(os.sched_getaffinity(0)))
    with (
        bench_environment(cpus) as env,
        tempfile.TemporaryDirectory(prefix="mlflow-stack-profile-") as artifacts,
    ):
        for mode in MODES:
            database = f"profile_{mode}"
            env.create_database(database)
            env.create_database(database + "_users")
            config = configparser.ConfigParser(interpolation=None)
            config["mlflow"] = {
                "default_permission": "NO_PERMISSIONS",
                "database_uri": env.db_uri(database + "_users"),
                "admin_username": "admin",
                "admin_password": secrets.token_hex(16),
                "authorization_function": "mlflow.server.auth:authenticate_request_basic_auth",
                "auth_cache_ttl_seconds": "60",
            }
            ini = env.secrets / f"{mode}.ini"
            fd = os.open(ini, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                config.write(handle)
            child_env = {
                **os.environ,
                "MLFLOW_AUTH_CONFIG_PATH": str(ini),
                "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(32),
                "_MLFLOW_SERVER_FILE_STORE": env.db_uri(database),
                "_MLFLOW_SERVER_REGISTRY_STORE": env.db_uri(database),
                "_MLFLOW_SERVER_ARTIFACT_ROOT": artifacts,
            }
            argv_child = [
                sys.executable,
                "-m",
                "bench.profile_auth",
                "--mode",
                mode,
                "--requests",
                str(args.requests),
            ]
            if args.profile:
                argv_child.append("--profile")
            result = subprocess.run(
                argv_child, env=child_env, capture_output=True, text=True, timeout=600, check=False
            )
            print(result.stdout.rstrip() or f"{mode}: failed\n{result.stderr[-2000:]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
