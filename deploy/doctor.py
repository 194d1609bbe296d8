"""`mlflow-stack doctor`: read-only preflight of an AWS account before the first `pulumi up`.

It reads stacks/Pulumi.<stack>.yaml, validates it with the kit's settings model, then asks AWS
only read-only questions (who am I, what quota is left, does the hosted zone / certificate / VPC /
image exist) and reports one `CheckResult` per check: ok, warn, fail or skip (with the reason),
and on warn/fail what to do about it. Nothing here creates, changes or deletes anything.

Everything that touches the outside world is injected through `DoctorEnvironment` (boto3 clients,
the DNS resolver, the command runner for docker, the URL fetcher for image configs), so tests can
point it at an AWS API emulator or stub each call. The checks themselves live in
deploy/doctor_checks_*.py; this module holds the result model, the runner and the report format.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

Status = Literal["ok", "warn", "fail", "skip"]

EXIT_OK = 0
EXIT_FAILED = 1
# Bad options or an unreadable stack file: nothing was checked.
EXIT_USAGE = 2

# Error codes AWS uses for "your credentials may not do this" (EC2 says UnauthorizedOperation).
ACCESS_DENIED_CODES = frozenset(
    {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "AuthorizationError"}
)


@dataclass(frozen=True)
class CheckResult:
    check: str
    status: Status
    detail: str
    fix: str = ""


class StackFileError(Exception):
    """The stack file is missing or not YAML: the command cannot start (exit 2)."""


class AccessRefused(Exception):
    """AWS refused a read-only call; `action` is the IAM action the deployer is missing."""

    def __init__(self, action: str) -> None:
        super().__init__(action)
        self.action = action


@dataclass(frozen=True)
class CommandResult:
    returncode: int
    output: str


ClientFactory = Callable[[str, str], Any]  # (service, region) -> boto3 client
NameServerResolver = Callable[[str], list[str]]  # zone -> NS host names; raises DnsLookupError
CommandRunner = Callable[[list[str]], CommandResult]
UrlFetcher = Callable[[str], bytes]


@dataclass
class DoctorEnvironment:
    """The outside world, injectable. `default_region` is the region the deployer's own AWS
    configuration points at (env/profile), compared with the stack's."""

    client: ClientFactory
    resolve_name_servers: NameServerResolver
    run_command: CommandRunner
    fetch_url: UrlFetcher
    default_region: str | None = None
    binfmt_dir: Path = Path("/proc/sys/fs/binfmt_misc")


@dataclass
class DoctorContext:
    stack: str
    region: str | None
    config: dict[str, Any]  # the stack file's config, keys qualified (`mlflow-stack:domain`)
    settings: Any  # infra.settings.Settings, or None when the file does not validate
    env: DoctorEnvironment
    account_id: str | None = None
    # Answers shared between checks (e.g. the hosted zone for the delegation check).
    memo: dict[str, Any] = field(default_factory=dict)

    def client(self, service: str, region: str | None = None) -> Any:
        return self.env.client(service, region or self.region or "us-east-1")


def call(client: Any, operation: str, **kwargs: Any) -> Any:
    """Call one AWS API operation; a refusal becomes `AccessRefused` naming the IAM action."""
    from botocore.exceptions import ClientError

    try:
        return getattr(client, operation)(**kwargs)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ACCESS_DENIED_CODES:
            prefix = client.meta.service_model.signing_name
            raise AccessRefused(f"{prefix}:{exc.operation_name}") from exc
        raise


def error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def ok(check: str, detail: str) -> CheckResult:
    return CheckResult(check, "ok", detail)


def warn(check: str, detail: str, fix: str) -> CheckResult:
    return CheckResult(check, "warn", detail, fix)


def fail(check: str, detail: str, fix: str) -> CheckResult:
    return CheckResult(check, "fail", detail, fix)


def skip(check: str, reason: str) -> CheckResult:
    return CheckResult(check, "skip", reason)


# -- the stack file ------------------------------------------------------------------------------


def read_stack(stack: str, stack_dir: str | Path) -> dict[str, Any]:
    """The stack file's `config:` map (keys qualified), via the kit's own loader."""
    import yaml

    from preview.offline import load_stack_config

    try:
        return load_stack_config(stack, stack_dir)
    except FileNotFoundError as exc:
        raise StackFileError(str(exc)) from exc
    except (OSError, yaml.YAMLError, AttributeError) as exc:
        # AttributeError: the document is YAML but not a mapping with a `config:` mapping.
        raise StackFileError(f"cannot read the stack file of {stack!r}: {exc}") from exc


def raw_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """The `mlflow-stack:` keys with the namespace stripped, as `build_settings` takes them."""
    from infra.settings import CONFIG_NAMESPACE

    prefix = f"{CONFIG_NAMESPACE}:"
    return {key.removeprefix(prefix): value for key, value in config.items() if key.startswith(prefix)}


def validate(ctx: DoctorContext) -> CheckResult:
    from infra.settings import SettingsError, build_settings

    region = ctx.region if isinstance(ctx.region, str) else None
    try:
        ctx.settings = build_settings(ctx.stack, region, raw_settings(ctx.config))
    except SettingsError as exc:
        return fail(
            "settings",
            f"the stack file does not validate ({len(exc.problems)} problem(s)): " + "; ".join(exc.problems),
            "fix each problem in the stack file (each names its key and how to fix it)",
        )
    return ok("settings", f"stack {ctx.stack!r} validates (environment {ctx.settings.environment})")


# -- running the checks --------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    name: str
    run: Callable[[DoctorContext], CheckResult]
    needs_settings: bool = True
    needs_aws: bool = True


def run_doctor(
    stack: str,
    env: DoctorEnvironment,
    *,
    stack_dir: str | Path = "stacks",
    on_result: Callable[[CheckResult], None] | None = None,
) -> list[CheckResult]:
    """Every check for `stack`, in order. Raises `StackFileError` when the file cannot be read."""
    from deploy.doctor_checks import CHECKS

    config = read_stack(stack, stack_dir)
    region = config.get("aws:region")
    ctx = DoctorContext(
        stack=stack,
        region=region if isinstance(region, str) else None,
        config=config,
        settings=None,
        env=env,
    )
    results: list[CheckResult] = []

    def record(result: CheckResult) -> None:
        results.append(result)
        if on_result is not None:
            on_result(result)

    record(validate(ctx))
    credentials_ok = True
    for check in CHECKS:
        if check.needs_settings and ctx.settings is None:
            record(skip(check.name, "needs a valid stack file (see the settings check)"))
            continue
        if check.needs_aws and ctx.region is None:
            record(skip(check.name, "aws:region is not set in the stack file"))
            continue
        if check.needs_aws and not credentials_ok:
            record(skip(check.name, "needs working AWS credentials (see the credentials check)"))
            continue
        record(run_check(check, ctx))
        if check.name == "credentials":
            # Set only when STS answered: a wrong region is reported, but the account is usable.
            credentials_ok = ctx.account_id is not None
    return results


def run_check(check: Check, ctx: DoctorContext) -> CheckResult:
    """One check; AWS refusals and errors become a failed row instead of a crash."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return check.run(ctx)
    except AccessRefused as exc:
        return fail(
            check.name,
            f"AWS refused {exc.action}",
            f"allow {exc.action} for the deployer's IAM identity (doctor only makes read-only calls)",
        )
    except (ClientError, BotoCoreError) as exc:
        return fail(check.name, f"the AWS call failed: {exc}", "fix the error above and run doctor again")


def exit_code(results: list[CheckResult]) -> int:
    return EXIT_FAILED if any(result.status == "fail" for result in results) else EXIT_OK


# -- the report ----------------------------------------------------------------------------------

STATUS_WIDTH = 5
CHECK_WIDTH = 55


def format_row(result: CheckResult) -> str:
    """One line: status, check, what was found, and on warn/fail the fix."""
    line = f"{result.status:<{STATUS_WIDTH}} {result.check:<{CHECK_WIDTH}} {result.detail}"
    if result.status in ("warn", "fail") and result.fix:
        line += f" — fix: {result.fix}"
    return line


def format_summary(results: list[CheckResult]) -> str:
    counts = {status: sum(r.status == status for r in results) for status in ("ok", "warn", "fail", "skip")}
    summary = ", ".join(f"{count} {status}" for status, count in counts.items())
    verdict = "not ready for pulumi up" if counts["fail"] else "ready for pulumi up"
    return f"{summary}: {verdict}"


def format_json(results: list[CheckResult]) -> str:
    return json.dumps([asdict(result) for result in results], indent=2)
