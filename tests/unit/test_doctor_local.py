"""Doctor parts that need no AWS: the docker/buildx check (fake and real command runner), the
stdlib DNS client against a local UDP responder, the example-value scan, settings errors and the
command's exit codes."""

from __future__ import annotations

import json
import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from cli.main import main
from deploy.doctor import CommandResult, DoctorContext, DoctorEnvironment, exit_code, run_doctor
from deploy.doctor_checks import check_placeholders, example_values
from deploy.doctor_checks_dns import DnsLookupError, covers, query_name_servers
from deploy.doctor_checks_image import check_image_build, run_command
from infra.settings import build_settings

RAW = {
    "owner": "ml@acme-analytics.io",
    "costCenter": "CC-7",
    "domain": {"name": "mlflow.acme-analytics.io", "hostedZoneId": "Z04517273RN5WZ0CTKS7E"},
}


def environment(runner: Any = None, binfmt_dir: Path = Path("/nonexistent")) -> DoctorEnvironment:
    def no_aws(service: str, region: str) -> Any:
        raise AssertionError(f"no AWS call expected, got {service}")

    return DoctorEnvironment(
        client=no_aws,
        resolve_name_servers=lambda zone: [],
        run_command=runner or run_command,
        fetch_url=lambda url: b"",
        binfmt_dir=binfmt_dir,
    )


def build_context(env: DoctorEnvironment, **config: Any) -> DoctorContext:
    return DoctorContext(
        "acme-dev", "eu-west-1", {}, build_settings("acme-dev", "eu-west-1", {**RAW, **config}), env
    )


# -- docker buildx -------------------------------------------------------------------------------


def fake_docker(buildx_ls: str) -> Any:
    calls: list[list[str]] = []

    def run(argv: list[str]) -> CommandResult:
        calls.append(argv)
        return CommandResult(
            0, buildx_ls if argv == ["docker", "buildx", "ls"] else "github.com/docker/buildx v0.17.1"
        )

    run.calls = calls  # type: ignore[attr-defined]
    return run


def test_buildx_listing_arm64_passes() -> None:
    runner = fake_docker(
        "NAME/NODE  DRIVER  STATUS   PLATFORMS\ndefault    docker  running  linux/amd64, linux/arm64"
    )

    result = check_image_build(build_context(environment(runner)))

    assert result.status == "ok" and "lists linux/arm64" in result.detail
    assert runner.calls == [["docker", "buildx", "version"], ["docker", "buildx", "ls"]]


def test_qemu_registered_in_binfmt_passes(tmp_path: Path) -> None:
    (tmp_path / "qemu-aarch64").write_text("enabled\n")

    result = check_image_build(
        build_context(environment(fake_docker("default docker linux/amd64"), tmp_path))
    )

    assert result.status == "ok" and "QEMU" in result.detail


def test_amd64_only_builder_without_qemu_fails_with_binfmt_fix() -> None:
    result = check_image_build(
        build_context(environment(fake_docker("default docker linux/amd64, linux/386")))
    )

    assert result.status == "fail"
    assert "docker run --privileged --rm tonistiigi/binfmt --install arm64" in result.fix


def test_real_runner_without_docker_fails_cleanly(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no docker

    result = check_image_build(build_context(environment()))

    assert result.status == "fail"
    assert "docker: command not found" in result.detail
    assert "buildx" in result.fix and "tonistiigi/binfmt --install arm64" in result.fix


def test_prebuilt_image_skips_the_build_check() -> None:
    ctx = build_context(environment(fake_docker("")), server={"image": "ghcr.io/acme/mlflow:3.17.2"})

    result = check_image_build(ctx)

    assert result.status == "skip" and "server.image is set" in result.detail


# -- the stdlib DNS client -----------------------------------------------------------------------


def ns_response(query: bytes, hosts: list[str], rcode: int = 0) -> bytes:
    """A DNS answer to `query`: NS records whose names are compressed against the question."""
    query_id = struct.unpack_from("!H", query)[0]
    question = query[12:]
    header = struct.pack("!HHHHHH", query_id, 0x8180 | rcode, 1, len(hosts), 0, 0)
    answers = b""
    for host in hosts:
        rdata = b"".join(bytes([len(label)]) + label.encode() for label in host.split(".")) + b"\x00"
        # The record's owner is a compression pointer to the question's name (offset 12).
        answers += b"\xc0\x0c" + struct.pack("!HHIH", 2, 1, 300, len(rdata)) + rdata
    return header + question + answers


@pytest.fixture
def dns_responder() -> Iterator[tuple[int, list[bytes], dict[str, Any]]]:
    """A UDP responder on 127.0.0.1 answering whatever `behaviour` says; yields its port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    received: list[bytes] = []
    behaviour: dict[str, Any] = {"hosts": [], "rcode": 0}

    def serve() -> None:
        try:
            query, peer = sock.recvfrom(512)
        except OSError:
            return
        received.append(query)
        sock.sendto(ns_response(query, behaviour["hosts"], behaviour["rcode"]), peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield sock.getsockname()[1], received, behaviour
    sock.close()
    thread.join(timeout=5)


def test_query_reads_ns_records_from_a_real_udp_answer(dns_responder: Any) -> None:
    port, received, behaviour = dns_responder
    behaviour["hosts"] = ["ns-1536.awsdns-00.co.uk", "ns-0.awsdns-00.com"]

    hosts = query_name_servers("acme-analytics.io", "127.0.0.1", port=port, timeout=5)

    assert hosts == ["ns-1536.awsdns-00.co.uk", "ns-0.awsdns-00.com"]
    # The question asked: NS (2) IN (1) for acme-analytics.io, recursion desired.
    assert received[0][12:] == b"\x0eacme-analytics\x02io\x00\x00\x02\x00\x01"
    assert struct.unpack_from("!H", received[0], 2)[0] & 0x0100


def test_query_for_an_undelegated_zone_finds_no_name_servers(dns_responder: Any) -> None:
    port, _, behaviour = dns_responder
    behaviour["rcode"] = 3  # NXDOMAIN

    assert query_name_servers("acme-analytics.io", "127.0.0.1", port=port, timeout=5) == []


def test_query_without_an_answer_raises_lookup_error() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))  # bound, never answers
        with pytest.raises(DnsLookupError, match="no answer from the resolver"):
            query_name_servers("acme-analytics.io", "127.0.0.1", port=silent.getsockname()[1], timeout=0.3)


@pytest.mark.parametrize(
    ("pattern", "host", "expected"),
    [
        ("mlflow.acme.io", "mlflow.acme.io", True),
        ("*.acme.io", "mlflow.acme.io", True),
        ("*.acme.io", "mlflow.dev.acme.io", False),
        ("*.dev.acme.io", "mlflow.acme.io", False),
        ("acme.io", "mlflow.acme.io", False),
    ],
)
def test_certificate_names_cover_exact_or_one_level_wildcard(pattern: str, host: str, expected: bool) -> None:
    assert covers(pattern, host) is expected


# -- example values ------------------------------------------------------------------------------


def test_own_values_pass_the_placeholder_check() -> None:
    ctx = build_context(environment())
    ctx.config = {"aws:region": "eu-west-1", **{f"mlflow-stack:{key}": value for key, value in RAW.items()}}

    assert check_placeholders(ctx).status == "ok"


def test_example_values_are_each_named() -> None:
    found = example_values(
        {
            "mlflow-stack:server": {"image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/mlflow:1"},
            "mlflow-stack:alarms": {"email": "oncall@example.org"},
            "mlflow-stack:loadBalancer": {"allowedCidrs": ["10.0.0.0/8", "198.51.100.0/24"]},
            "mlflow-stack:domain": {"name": "mlflow.acme.io", "hostedZoneId": "ZEXAMPLE12345"},
        }
    )

    assert found == [
        "mlflow-stack:server.image uses the example account 123456789012",
        "mlflow-stack:alarms.email = oncall@example.org is a documentation domain",
        "mlflow-stack:loadBalancer.allowedCidrs[1] = 198.51.100.0/24 "
        "is a documentation address range (RFC 5737)",
        "mlflow-stack:domain.hostedZoneId = ZEXAMPLE12345 looks like a placeholder",
    ]


# -- the whole run and the command ---------------------------------------------------------------


def write_stack(directory: Path, stack: str, config: dict[str, Any]) -> None:
    (directory / f"Pulumi.{stack}.yaml").write_text(yaml.safe_dump({"config": config}))


def test_invalid_settings_fail_with_their_problems_and_skip_what_needs_them(tmp_path: Path) -> None:
    # No aws:region and a misspelt key: nothing may reach AWS (environment() refuses any client).
    write_stack(tmp_path, "dev", {"mlflow-stack:owner": "ml@acme.io", "mlflow-stack:costCentre": "CC-7"})

    results = {
        r.check: r for r in run_doctor("dev", environment(fake_docker("linux/arm64")), stack_dir=tmp_path)
    }

    assert results["settings"].status == "fail"
    assert "mlflow-stack:costCentre: unknown key" in results["settings"].detail
    assert "aws:region: is not set" in results["settings"].detail
    assert results["quota:vpcs"].status == "skip" and "valid stack file" in results["quota:vpcs"].detail
    assert results["credentials"].status == "skip" and "aws:region" in results["credentials"].detail
    assert results["placeholders"].status == "ok"
    assert exit_code(list(results.values())) == 1


def test_missing_stack_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor", "--stack", "nope", "--stack-dir", str(tmp_path)]) == 2
    assert "no stack file" in capsys.readouterr().err


def test_unparsable_stack_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "Pulumi.dev.yaml").write_text("config: [unclosed\n")

    assert main(["doctor", "--stack", "dev", "--stack-dir", str(tmp_path)]) == 2
    assert "cannot read the stack file" in capsys.readouterr().err


def test_missing_stack_option_exits_2() -> None:
    with pytest.raises(SystemExit) as exited:
        main(["doctor", "--json"])
    assert exited.value.code == 2


def test_json_output_of_a_settings_failure(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_stack(tmp_path, "dev", {"mlflow-stack:owner": "ml@example.com"})

    assert main(["doctor", "--stack", "dev", "--stack-dir", str(tmp_path), "--json"]) == 1

    rows = json.loads(capsys.readouterr().out)
    assert all(set(row) == {"check", "status", "detail", "fix"} for row in rows)
    by_check = {row["check"]: row for row in rows}
    assert by_check["settings"]["status"] == "fail" and by_check["settings"]["fix"]
    assert by_check["placeholders"]["status"] == "fail"
    assert by_check["placeholders"]["fix"].startswith("replace with your own")
