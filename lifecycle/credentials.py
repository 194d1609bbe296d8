"""Where a day-2 tool finds the server it talks to, and the admin credentials for it.

Four sources, one result (`ServerTarget`):
- `resolve_url`: an explicit URL; the user from --username or MLFLOW_TRACKING_USERNAME, the password
  from a file or MLFLOW_TRACKING_PASSWORD (never from the command line, where `ps` and shell history
  would show it), the CA from --ca-file or MLFLOW_TRACKING_SERVER_CERT_PATH;
- `resolve_env`: no target flag at all — MLflow's own client variables, the way a CI job that already
  runs `mlflow` is configured (MLFLOW_TRACKING_URI, _USERNAME, _PASSWORD, _SERVER_CERT_PATH);
- `resolve_stack`: a deployed Pulumi stack — `pulumi stack output --json` for the URL, the admin
  user name, the Secrets Manager ARN and region, then boto3 for the password itself;
- `resolve_local`: the local stack, through local/'s status (what `mlflow-stack local status --json`
  prints).

Precedence (docs/ci.md "Which server a command talks to"): a target flag (--url, --stack, --local)
wins; with no flag, MLFLOW_TRACKING_URI; with neither, the command refuses (exit 2) rather than guess
— a pipeline whose variable went missing must not act on whatever server happens to be local. For
each setting a flag beats its variable; --stack and --local bring their own credentials and read no
MLFLOW_TRACKING_* variable. MLFLOW_TRACKING_INSECURE_TLS=true is refused, not honoured: the kit never
turns certificate checks off (MLFLOW_TRACKING_SERVER_CERT_PATH trusts a private CA instead).

Every problem is reported as one `TargetError` naming the setting and the fix, before anything is
sent to a server. No message ever contains the password or a URI's embedded credentials. This
module never imports pulumi or infra/: it runs the Pulumi CLI as a program.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

PASSWORD_ENV_VAR = "MLFLOW_TRACKING_PASSWORD"  # noqa: S105 - the variable's name, not a password
# MLflow's client conventions (mlflow.environment_variables), read when no target flag names a server.
TRACKING_URI_ENV_VAR = "MLFLOW_TRACKING_URI"
USERNAME_ENV_VAR = "MLFLOW_TRACKING_USERNAME"
CERT_PATH_ENV_VAR = "MLFLOW_TRACKING_SERVER_CERT_PATH"
INSECURE_TLS_ENV_VAR = "MLFLOW_TRACKING_INSECURE_TLS"
TOKEN_ENV_VAR = "MLFLOW_TRACKING_TOKEN"  # noqa: S105 - the variable's name, not a token

# The stack outputs contract (infra/ exports these names; see __main__.py).
STACK_OUTPUT_KEYS = ("tracking_url", "admin_username", "admin_password_secret_arn", "region")

# What the local stack reports about itself (LocalStackInfo / `mlflow-stack local status --json`).
LOCAL_STATUS_KEYS = ("url", "http_url", "username", "password_file", "ca_file")


class TargetError(ValueError):
    """The server or its credentials could not be resolved; the message says how to fix it."""


@dataclass(frozen=True)
class ServerTarget:
    """A server to check and how to authenticate to it. `password` is kept out of the repr."""

    url: str
    username: str
    password: str = field(repr=False)
    ca_file: str | None = None
    # The plain-HTTP address that must redirect to `url` (None: derive it, see default_http_url).
    http_url: str | None = None
    # Human-readable origin, for reports: "--url", "stack dev", "local stack".
    source: str = ""
    # How the deployment is configured to move artifact bytes (stack setting artifacts.clientAccess):
    # "proxied" or "presigned"; None when unknown (--url): the smoke then takes the server's word.
    artifact_client_access: str | None = None

    @property
    def redirect_url(self) -> str:
        return self.http_url or default_http_url(self.url)


def _optional_text(value: object) -> str | None:
    return str(value) if value else None


def with_http_url(target: ServerTarget, http_url: str) -> ServerTarget:
    """The same target with an explicit plain-HTTP address for the redirect check."""
    return dataclasses.replace(target, http_url=_check_url(http_url, "--http-url"))


def default_http_url(url: str) -> str:
    """The address a browser tries for plain http: the same host on port 80."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 literal keeps its brackets in a URL
        host = f"[{host}]"
    return urlunsplit(("http", host, "", "", ""))


def read_password_file(path: str | os.PathLike[str], setting: str = "--password-file") -> str:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise TargetError(f"{setting}: cannot read {os.fspath(path)!r} ({exc.strerror}).") from exc
    # Editors add a trailing newline; a password never ends with one.
    password = text.rstrip("\r\n")
    if not password:
        raise TargetError(f"{setting}: {os.fspath(path)!r} is empty; it must hold the password.")
    return password


def _check_url(url: str, setting: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise TargetError(f"{setting}: {url!r} is not an http(s) URL; give e.g. https://mlflow.example.com")
    return url.rstrip("/")


def _check_ca_file(ca_file: str | os.PathLike[str] | None, setting: str = "--ca-file") -> str | None:
    if ca_file is None:
        return None
    if not os.path.isfile(ca_file):
        raise TargetError(f"{setting}: CA file {os.fspath(ca_file)!r} does not exist; give a PEM file.")
    return os.fspath(ca_file)


def _redacted(uri: str) -> str:
    """A URI fit for a message: any user:password@ it embeds replaced."""
    parts = urlsplit(uri)
    if "@" not in parts.netloc:
        return uri
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]))


def _refuse_insecure_tls(env: Mapping[str, str]) -> None:
    if env.get(INSECURE_TLS_ENV_VAR, "").strip().lower() in ("true", "1", "yes"):
        raise TargetError(
            f"{INSECURE_TLS_ENV_VAR} is set: mlflow-stack never turns certificate verification off "
            f"(it sends the admin password). Unset it and trust the server's CA with {CERT_PATH_ENV_VAR} "
            "(or --ca-file) instead."
        )


def resolve_url(
    url: str,
    username: str | None,
    password_file: str | os.PathLike[str] | None = None,
    ca_file: str | os.PathLike[str] | None = None,
    http_url: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> ServerTarget:
    """An explicit server. The user comes from `username`, else MLFLOW_TRACKING_USERNAME; the
    password from `password_file`, else MLFLOW_TRACKING_PASSWORD; the CA from `ca_file`, else
    MLFLOW_TRACKING_SERVER_CERT_PATH (else the system's trust store)."""
    env = os.environ if environ is None else environ
    url = _check_url(url, "--url")
    _refuse_insecure_tls(env)
    username = username or env.get(USERNAME_ENV_VAR)
    if not username:
        raise TargetError(
            f"--username is required with --url (the basic-auth admin user), or set {USERNAME_ENV_VAR}."
        )
    if password_file is not None:
        password = read_password_file(password_file)
    elif env.get(PASSWORD_ENV_VAR):
        password = env[PASSWORD_ENV_VAR]
    else:
        raise TargetError(
            f"no password: pass --password-file FILE or set {PASSWORD_ENV_VAR} "
            "(a password is never accepted on the command line)."
        )
    if ca_file is None and env.get(CERT_PATH_ENV_VAR):
        ca_file, ca_setting = env[CERT_PATH_ENV_VAR], CERT_PATH_ENV_VAR
    else:
        ca_setting = "--ca-file"
    return ServerTarget(
        url=url,
        username=username,
        password=password,
        ca_file=_check_ca_file(ca_file, ca_setting),
        http_url=_check_url(http_url, "--http-url") if http_url else None,
        source="--url",
    )


def resolve_env(
    environ: Mapping[str, str] | None = None, ca_file: str | os.PathLike[str] | None = None
) -> ServerTarget | None:
    """The server MLflow's own client would use: MLFLOW_TRACKING_URI with MLFLOW_TRACKING_USERNAME,
    MLFLOW_TRACKING_PASSWORD and MLFLOW_TRACKING_SERVER_CERT_PATH (an explicit `ca_file`, --ca-file,
    beats the last). None when MLFLOW_TRACKING_URI is unset (the caller then says how to name a
    server)."""
    env = os.environ if environ is None else environ
    uri = env.get(TRACKING_URI_ENV_VAR, "").strip()
    if not uri:
        return None
    parts = urlsplit(uri)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise TargetError(
            f"{TRACKING_URI_ENV_VAR}={_redacted(uri)!r} is not an http(s) server URL; mlflow-stack talks "
            "to a tracking server (e.g. https://mlflow.example.com), not a local file or database store."
        )
    if parts.username or parts.password:
        raise TargetError(
            f"{TRACKING_URI_ENV_VAR}={_redacted(uri)!r} embeds credentials; put the user in "
            f"{USERNAME_ENV_VAR} and the password in {PASSWORD_ENV_VAR} instead."
        )
    _refuse_insecure_tls(env)
    username, password = env.get(USERNAME_ENV_VAR), env.get(PASSWORD_ENV_VAR)
    if not username or not password:
        pairs = ((USERNAME_ENV_VAR, username), (PASSWORD_ENV_VAR, password))
        missing = [name for name, value in pairs if not value]
        token_hint = (
            f" ({TOKEN_ENV_VAR} is set, but the server uses basic auth: a user and password, not a token)"
            if env.get(TOKEN_ENV_VAR)
            else ""
        )
        raise TargetError(
            f"{TRACKING_URI_ENV_VAR} names the server, but {' and '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not set{token_hint}."
        )
    return ServerTarget(
        url=_check_url(uri, TRACKING_URI_ENV_VAR),
        username=username,
        password=password,
        ca_file=_check_ca_file(ca_file)
        if ca_file is not None
        else _check_ca_file(env.get(CERT_PATH_ENV_VAR) or None, CERT_PATH_ENV_VAR),
        source=TRACKING_URI_ENV_VAR,
    )


NO_TARGET_MESSAGE = (
    "no server named: pass --url, --stack or --local, or set MLFLOW_TRACKING_URI "
    "(with MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD)"
)


def _run_json(command: list[str], what: str, cwd: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    try:
        completed = subprocess.run(command, capture_output=True, text=True, cwd=cwd, check=False)
    except FileNotFoundError as exc:
        raise TargetError(f"{what}: {command[0]!r} was not found on PATH.") from exc
    if completed.returncode != 0:
        detail = (completed.stderr or completed.stdout).strip()[-800:]
        raise TargetError(f"{what}: `{' '.join(command)}` failed (exit {completed.returncode}): {detail}")
    try:
        data = json.loads(completed.stdout)
    except json.JSONDecodeError as exc:
        raise TargetError(f"{what}: `{' '.join(command)}` did not print JSON ({exc}).") from exc
    if not isinstance(data, dict):
        raise TargetError(f"{what}: `{' '.join(command)}` printed {type(data).__name__}, expected an object.")
    return data


def read_stack_outputs(stack: str, cwd: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """`pulumi stack output --json --stack NAME`, checked against the outputs contract."""
    if not stack:
        raise TargetError("--stack needs a stack name, e.g. --stack dev")
    if shutil.which("pulumi") is None:
        raise TargetError(
            "--stack: the Pulumi CLI is not on PATH; install it (https://www.pulumi.com/docs/install/) "
            "or use --url with --username and --password-file."
        )
    outputs = _run_json(
        ["pulumi", "stack", "output", "--json", "--stack", stack], f"--stack {stack}", cwd=cwd
    )
    if outputs.get("tenancy_mode") == "platform":
        # A platform stack (docs/teams.md) shares a VPC, cluster and ALB and runs no server itself.
        raise TargetError(
            f"--stack {stack}: a platform stack runs no MLflow server; name one of its team stacks "
            "(tenancy.platformStack points at it), e.g. --stack <team>-<env>."
        )
    missing = [key for key in STACK_OUTPUT_KEYS if not outputs.get(key)]
    if missing:
        raise TargetError(
            f"--stack {stack}: the stack outputs lack {', '.join(missing)}; "
            "run `pulumi up` for this stack with the current kit, then retry."
        )
    return outputs


def _password_from_secret_string(secret_string: str) -> str:
    # The kit stores the bare password; accept a JSON object with a "password" key too, the shape
    # the RDS/Secrets Manager console produces, so a hand-rotated secret still works.
    try:
        value = json.loads(secret_string)
    except json.JSONDecodeError:
        return secret_string
    if isinstance(value, dict) and isinstance(value.get("password"), str):
        return value["password"]
    return secret_string


def read_admin_password(secret_arn: str, region: str, stack: str = "") -> str:
    """The admin password from Secrets Manager, with the caller's AWS credentials."""
    import boto3
    import botocore.exceptions

    label = f"--stack {stack}" if stack else "Secrets Manager"
    try:
        client = boto3.client("secretsmanager", region_name=region)
        secret = client.get_secret_value(SecretId=secret_arn)
    except botocore.exceptions.NoCredentialsError as exc:
        raise TargetError(
            f"{label}: no AWS credentials to read the admin password secret; "
            "set AWS_PROFILE (or run `aws sso login`) for the account that runs the stack."
        ) from exc
    except botocore.exceptions.ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "Unknown")
        raise TargetError(
            f"{label}: cannot read secret {secret_arn} in {region} ({code}); "
            "your AWS identity needs secretsmanager:GetSecretValue on it (and kms:Decrypt on its key)."
        ) from exc
    except botocore.exceptions.BotoCoreError as exc:
        raise TargetError(f"{label}: cannot reach Secrets Manager in {region} ({exc}).") from exc
    secret_string = secret.get("SecretString")
    if not secret_string:
        raise TargetError(f"{label}: secret {secret_arn} has no string value; it must hold the password.")
    password = _password_from_secret_string(secret_string)
    if not password:
        raise TargetError(f"{label}: secret {secret_arn} holds an empty password.")
    return password


def resolve_stack(
    stack: str, ca_file: str | os.PathLike[str] | None = None, cwd: str | os.PathLike[str] | None = None
) -> ServerTarget:
    """A deployed stack: URL and admin user from its outputs, the password from Secrets Manager."""
    outputs = read_stack_outputs(stack, cwd=cwd)
    url = _check_url(str(outputs["tracking_url"]), f"--stack {stack}: output tracking_url")
    password = read_admin_password(
        str(outputs["admin_password_secret_arn"]), str(outputs["region"]), stack=stack
    )
    return ServerTarget(
        url=url,
        username=str(outputs["admin_username"]),
        password=password,
        ca_file=_check_ca_file(ca_file),
        source=f"stack {stack}",
        # Stacks deployed before the setting existed have no such output: unknown, not a guess.
        artifact_client_access=_optional_text(outputs.get("artifact_client_access")),
    )


def resolve_local(state_dir: str | os.PathLike[str] | None = None) -> ServerTarget:
    """The running local stack (local/'s own status, the same data as `mlflow-stack local status --json`)."""
    # Imported here, on the --local path only: the local stack's modules are not needed to check
    # a deployed server, and lifecycle/ must stay importable without them.
    from local.stack import DEFAULT_STATE_DIR, LocalStack

    info = LocalStack(Path(state_dir) if state_dir is not None else DEFAULT_STATE_DIR).status()
    if not info.running:
        raise TargetError(
            f"--local: the local stack in {info.state_dir} is not running; start it with "
            "`mlflow-stack local up` (or `make up`), or pass --state-dir if it lives elsewhere."
        )
    return local_target_from_status(info.to_json())


def local_target_from_status(status: dict[str, Any]) -> ServerTarget:
    missing = [key for key in LOCAL_STATUS_KEYS if not status.get(key)]
    if missing:
        raise TargetError(
            f"--local: the local stack's status lacks {', '.join(missing)}; "
            "is the local stack running? Start it with `mlflow-stack local up` (or `make up`)."
        )
    return ServerTarget(
        url=_check_url(str(status["url"]), "--local: url"),
        username=str(status["username"]),
        password=read_password_file(status["password_file"], "--local: password_file"),
        ca_file=_check_ca_file(status["ca_file"], "--local: ca_file"),
        http_url=_check_url(str(status["http_url"]), "--local: http_url"),
        source="local stack",
        artifact_client_access=_optional_text(status.get("artifact_client_access")),
    )
