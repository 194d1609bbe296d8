"""server/Dockerfile: lint-clean, non-root, hash-pinned, and in step with the contract and uv.lock.

There is no Docker engine on the build machines, so the image itself is not built here; these
tests check the file with hadolint and against the contract, and run its HEALTHCHECK probe.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from server import contract

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "server" / "Dockerfile"
REQUIREMENTS = REPO / "server" / "requirements.txt"


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text(encoding="utf-8"))
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def _one(keyword: str) -> str:
    found = [args for kw, args in _instructions() if kw == keyword]
    assert found, f"no {keyword} in the Dockerfile"
    return found[-1]


def test_hadolint_passes() -> None:
    hadolint = REPO / ".venv" / "bin" / "hadolint"
    completed = subprocess.run([str(hadolint), str(DOCKERFILE)], capture_output=True, text=True, check=False)
    assert completed.returncode == 0, completed.stdout + completed.stderr


def test_base_image_is_python_3_11_slim_pinned_to_a_patch_version() -> None:
    assert re.fullmatch(r"python:3\.11\.\d+-slim(-bookworm)?", _one("FROM"))


def test_runs_as_a_numeric_non_root_user() -> None:
    user = _one("USER")
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, user


def test_installs_exactly_the_hashed_requirements() -> None:
    runs = [args for kw, args in _instructions() if kw == "RUN" and "pip install" in args]
    assert len(runs) == 1
    words = shlex.split(runs[0])
    assert "--require-hashes" in words and "--no-cache-dir" in words
    assert words[words.index("-r") + 1].endswith("server/requirements.txt")


def test_copies_only_the_server_and_the_day2_packages() -> None:
    # lifecycle/ and cli/ are what the scheduled maintenance task runs; nothing of infra/, local/,
    # tests or the repository root reaches the image.
    sources = [shlex.split(args)[0] for kw, args in _instructions() if kw == "COPY"]
    allowed = ("server/", "lifecycle/", "cli/")
    assert sources and all(src.startswith(allowed) for src in sources), sources


def test_port_healthcheck_entrypoint_and_command_follow_the_contract() -> None:
    assert _one("EXPOSE") == str(contract.CONTAINER_PORT)
    assert json.loads(_one("ENTRYPOINT")) == list(contract.ENTRYPOINT)
    assert json.loads(_one("CMD")) == list(contract.COMMAND)
    assert contract.HEALTH_PATH in _one("HEALTHCHECK")


def _healthcheck_probe() -> list[str]:
    """The HEALTHCHECK's exec-form command, with `python` mapped to this interpreter."""
    argv = json.loads(_one("HEALTHCHECK").split(" CMD ", 1)[1])
    assert argv[0] == "python"
    return [sys.executable, *argv[1:]]


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == contract.HEALTH_PATH else 404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_healthcheck_probe_passes_on_a_healthy_server_and_fails_without_one() -> None:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    port = server.server_address[1]
    try:
        env = {**os.environ, contract.PORT.name: str(port)}
        assert subprocess.run(_healthcheck_probe(), env=env, check=False, timeout=30).returncode == 0
    finally:
        server.shutdown()
        server.server_close()
    env = {**os.environ, contract.PORT.name: str(port)}
    failed = subprocess.run(_healthcheck_probe(), env=env, check=False, timeout=30, capture_output=True)
    assert failed.returncode != 0


def _uv() -> str:
    found = shutil.which("uv") or str(REPO / ".venv-tools" / "bin" / "uv")
    if not Path(found).exists():
        pytest.fail("uv is needed to check server/requirements.txt against uv.lock; run `make install`")
    return found


def test_requirements_match_the_lock_file() -> None:
    """Drift guard: server/requirements.txt is what `make lock` exports from uv.lock right now."""
    completed = subprocess.run(
        [_uv(), "export", "--frozen", "--only-group", "server", "--no-emit-project", "--no-header"],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    assert REQUIREMENTS.read_text(encoding="utf-8") == completed.stdout, (
        "run `make lock` and commit the result"
    )


def test_requirements_pin_the_decided_server_stack() -> None:
    text = REQUIREMENTS.read_text(encoding="utf-8")
    assert re.search(r"^mlflow==3\.17\.2 ", text, re.M)
    assert re.search(r"^psycopg==3\.", text, re.M) and re.search(r"^psycopg-binary==3\.", text, re.M)
    assert re.search(r"^boto3==", text, re.M)
    # Every requirement carries at least one hash (pip --require-hashes refuses the file otherwise).
    blocks = re.split(r"\n(?=[a-z0-9])", text.strip())
    assert all("--hash=sha256:" in block for block in blocks if not block.startswith("#"))


def test_build_context_is_limited_to_the_server_package() -> None:
    ignore = (REPO / "server" / "Dockerfile.dockerignore").read_text(encoding="utf-8").split()
    assert "*" in ignore and "!server/" in ignore


def test_every_requirement_installs_from_a_wheel_on_the_image_platform() -> None:
    """The slim image has no compiler: each pin that applies to CPython 3.11 on Linux x86_64
    must have a matching wheel in uv.lock (what pip --require-hashes will pick)."""
    import tomllib

    from packaging.markers import Marker, default_environment
    from packaging.utils import canonicalize_name

    image_env = {
        **default_environment(),
        "python_version": "3.11",
        "python_full_version": "3.11.14",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "platform_machine": "x86_64",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
    }
    lock = tomllib.loads((REPO / "uv.lock").read_text(encoding="utf-8"))
    wheels = {
        (canonicalize_name(p["name"]), p["version"]): [
            w["url"].rsplit("/", 1)[-1] for w in p.get("wheels", [])
        ]
        for p in lock["package"]
    }
    missing = []
    for match in re.finditer(
        r"^([A-Za-z0-9_.-]+)==([^ ;\\]+)(?: ; ([^\\]+))?", REQUIREMENTS.read_text(), re.M
    ):
        name, version, marker = match.group(1), match.group(2), match.group(3)
        if marker and not Marker(marker.strip()).evaluate(image_env):
            continue
        files = wheels.get((canonicalize_name(name), version), [])
        if not any(
            f.endswith("-none-any.whl")
            or (("-cp311-" in f or "-abi3-" in f) and "manylinux" in f and "x86_64" in f)
            for f in files
        ):
            missing.append(f"{name}=={version}")
    assert missing == [], f"no Linux x86_64 CPython 3.11 wheel for: {missing}"
