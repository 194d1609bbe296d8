"""`mlflow-stack preview`: every stack file, end to end (program under mocks -> real policy pack
process -> cost), as a reviewer or a PR job runs it."""

from __future__ import annotations

import contextlib
import io
import json
import resource
import time
from dataclasses import dataclass

import pytest

from cli.main import main
from preview.offline import SECRET_SENTINEL, list_stacks, load_stack_config, stack_mode

# The budget is CPU seconds (this process and the pack's), not wall time: the machine's 2 cores are
# shared with other suites, and under a load average of 20+ the same 5 CPU-second preview takes
# 20 s of wall time. Idle, wall time is within a second of CPU time (4.3 s for dev).
STACK_PREVIEW_BUDGET_SECONDS = 15


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str
    seconds: float
    cpu_seconds: float


def _cpu() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def preview(*args: str) -> Run:
    out, err = io.StringIO(), io.StringIO()
    started, cpu = time.monotonic(), _cpu()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["preview", *args])
    return Run(code, out.getvalue(), err.getvalue(), time.monotonic() - started, _cpu() - cpu)


@pytest.fixture(scope="module")
def previews() -> dict[str, Run]:
    return {stack: preview("--stack", stack) for stack in list_stacks()}


@pytest.mark.parametrize("stack", list_stacks())
def test_every_stack_file_previews_without_mandatory_violations(previews, stack):
    run = previews[stack]
    assert "[mandatory]" not in run.out, run.out[run.out.index("Policy violations") :]
    assert run.code == 0


# A platform stack has no database component to look for (tenancy.mode platform).
@pytest.mark.parametrize("stack", [s for s in list_stacks() if stack_mode(s) != "platform"])
def test_preview_is_fast_and_complete(previews, stack):
    run = previews[stack]
    assert run.cpu_seconds < STACK_PREVIEW_BUDGET_SECONDS, (
        f"{stack} took {run.cpu_seconds:.1f} CPU s ({run.seconds:.1f} s wall)"
    )
    assert f"Preview of stack {stack}" in run.out
    for section in ("Resources by component", "Policy violations", "Estimated monthly cost", "price source:"):
        assert section in run.out
    # Resources are grouped under their component with their key settings: the database's, or for a
    # team on its platform's shared instance (which has none of its own) the service's.
    lines = run.out.splitlines()
    database = load_stack_config(stack).get("mlflow-stack:database") or {}
    if database.get("placement") == "shared":
        header = lines.index(f"  mlflow-{stack}-compute")
        task = next(x for x in lines[header:] if f"mlflow-{stack}-compute-task " in x)
        assert "cpu=" in task and "memory=" in task
        assert f"mlflow-{stack}-database-instance" not in run.out
        return
    header = lines.index(f"  mlflow-{stack}-database")
    instance = next(x for x in lines[header:] if f"mlflow-{stack}-database-instance" in x)
    assert "instanceClass=db." in instance and "storageEncrypted=true" in instance


@pytest.mark.parametrize("stack", list_stacks())
def test_secrets_never_reach_the_preview(previews, stack):
    run = previews[stack]
    assert SECRET_SENTINEL not in run.out + run.err


def test_dev_and_prod_costs_are_printed_with_the_price_date(previews):
    for stack in ("dev", "prod"):
        out = previews[stack].out
        assert "prices as of 2025-01-15" in out
        total = next(line for line in out.splitlines() if line.strip().startswith("total"))
        assert total.split()[-1].startswith("$")
    # Prod (Multi-AZ db.m7g.large, 2 bigger tasks, 3 NAT gateways) costs more than dev.
    cost = {
        s: float(previews[s].out.split("est. $")[1].split("/")[0].replace(",", "")) for s in ("dev", "prod")
    }
    assert cost["prod"] > 3 * cost["dev"]


def test_a_waived_guard_shows_as_advisory_with_its_reason(previews):
    out = previews["search-prod"].out
    line = next(x for x in out.splitlines() if "rds-prod-multi-az" in x)
    assert line.strip().startswith("[advisory]")
    assert "waived: search's registry is rebuilt" in line


def test_a_stricter_policy_config_blocks_the_stack(tmp_path):
    config = tmp_path / "policy-config.json"
    config.write_text(json.dumps({"rds-backup-retention": {"minBackupDays": 30}}))
    run = preview("--stack", "staging", "--policy-config", str(config))
    assert run.code == 1
    assert "[mandatory] rds-backup-retention on mlflow-staging-database-instance" in run.out
    assert "BLOCKED" in run.out


def test_markdown_for_a_pr_comment():
    run = preview("--stack", "staging", "--format", "markdown")
    assert run.out.startswith("### mlflow-stack preview: `staging`")
    assert "| component | per month |" in run.out
    assert "<details><summary>Resources by component</summary>" in run.out


def test_unknown_stack_is_one_clear_error():
    run = preview("--stack", "nope")
    assert run.code == 2
    assert "no stack file" in run.err and "dev" in run.err
    assert run.out == ""


def test_refresh_prices_without_credentials_stops_before_touching_the_table(monkeypatch, tmp_path):
    from preview.cost import PRICES_PATH

    for var in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    before = PRICES_PATH.read_bytes()
    run = preview("--stack", "dev", "--refresh-prices")
    assert run.code == 2
    assert "--refresh-prices needs AWS credentials" in run.err
    assert run.out == ""
    assert PRICES_PATH.read_bytes() == before
