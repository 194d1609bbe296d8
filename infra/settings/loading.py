"""From stack config to `Settings`: every section, then every cross-field rule, one error for all.

`build_settings()` is the pure core (plain dicts in, `Settings` out) so it is testable without Pulumi;
`load_settings()` gathers its inputs from the running Pulumi program.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from infra.settings.checks import CROSS_CHECKS
from infra.settings.limits import (
    CONFIG_NAMESPACE,
    ENVIRONMENTS,
    LB_NAME_LIMIT,
    NAME_PATTERN,
    NAME_PREFIX_LIMIT,
    RENAMED_KEYS,
)
from infra.settings.models import Settings, SettingsError, _problem, _Section, name_prefix, parse_stack_name
from infra.settings.presets import KNOWN_KEYS, PRESETS, SECTION_MODELS
from infra.settings.shared_database import shared_database_problems
from infra.settings.tenancy import tenancy_problems


def _fix_for(error: Mapping[str, Any], model: type[BaseModel], field: str | None) -> str:
    kind = error["type"]
    renamed = RENAMED_KEYS.get(str(error["loc"][0])) if error.get("loc") else None
    if kind == "extra_forbidden" and renamed:
        return renamed
    if kind == "extra_forbidden":
        valid = ", ".join(info.alias or name for name, info in model.model_fields.items())
        return f"remove it or fix the spelling; valid keys: {valid}"
    if kind == "missing":
        return "set it in the stack file"
    if kind in {"int_type", "int_parsing", "int_from_float"}:
        return "use a whole number without quotes"
    if kind in {"bool_type", "bool_parsing"}:
        return "use true or false without quotes"
    if kind in {"float_type", "float_parsing"}:
        return "use a number without quotes"
    if kind in {"string_type"}:
        return "use a string (quote it in YAML)"
    if kind in {"list_type"}:
        return "use a YAML list"
    if kind in {"dict_type", "model_type"}:
        return "use a YAML mapping"
    if kind == "literal_error":
        return f"use one of {error['ctx']['expected']}"
    description = model.model_fields[field].description if field in model.model_fields else None
    return f"set a valid value ({description})" if description else "set a valid value"


def _pydantic_problems(prefix: str, exc: ValidationError, model: type[BaseModel]) -> list[str]:
    problems = []
    for error in exc.errors():
        loc = [str(part) for part in error["loc"]]
        key = ".".join([prefix, *loc]) if loc else prefix
        field = _field_name(model, loc[0]) if loc else None
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        value = f" (got {error['input']!r})" if error["type"] not in {"missing", "extra_forbidden"} else ""
        problems.append(_problem(key, f"{message}{value}", _fix_for(error, model, field)))
    return problems


def _field_name(model: type[BaseModel], key: str) -> str | None:
    for name, info in model.model_fields.items():
        if key in {name, info.alias}:
            return name
    return None


def _normalise_keys(model: type[BaseModel], value: Mapping[str, Any]) -> dict[str, Any]:
    """Accept snake_case keys too, but always hand pydantic the alias so presets merge cleanly."""
    normalised: dict[str, Any] = {}
    for key, item in value.items():
        name = _field_name(model, key)
        normalised[model.model_fields[name].alias or name if name else key] = item
    return normalised


def _build_section(
    key: str, model: type[_Section], environment: str, raw: Any, problems: list[str]
) -> _Section | None:
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        problems.append(_problem(key, f"must be a mapping (got {raw!r})", "write the section as YAML keys"))
        return None
    merged = {**PRESETS[environment].get(key, {}), **_normalise_keys(model, raw)}
    try:
        return model.model_validate(merged)
    except ValidationError as exc:
        problems.extend(_pydantic_problems(key, exc, model))
        return None


def _check_identity(stack: str, raw: Mapping[str, Any], problems: list[str]) -> tuple[str | None, str | None]:
    stack_team, stack_env = parse_stack_name(stack)
    environment = raw.get("environment", stack_env)
    team = raw.get("team", stack_team)
    if stack_env is None and "environment" not in raw:
        problems.append(
            _problem(
                "environment",
                f"stack name {stack!r} is neither <env> nor <team>-<env>",
                f"rename the stack to one of {', '.join(ENVIRONMENTS)} or <team>-<env>, "
                "or set mlflow-stack:environment",
            )
        )
        return team, None
    if environment not in ENVIRONMENTS:
        problems.append(
            _problem(
                "environment", f"{environment!r} is not an environment", f"use {', '.join(ENVIRONMENTS)}"
            )
        )
        environment = None
    elif stack_env is not None and environment != stack_env:
        problems.append(
            _problem(
                "environment",
                f"{environment!r} contradicts the stack name {stack!r}",
                f"remove the key or set it to {stack_env!r}",
            )
        )
    if stack_team is not None and team != stack_team:
        problems.append(
            _problem(
                "team", f"{team!r} contradicts the stack name {stack!r}", f"remove it or use {stack_team!r}"
            )
        )
    if team is not None and (not isinstance(team, str) or not NAME_PATTERN.fullmatch(team)):
        problems.append(
            _problem(
                "team",
                f"{team!r} is not usable in AWS names (S3 buckets, RDS, IAM, load balancers)",
                "use lowercase letters, digits and single hyphens, starting with a letter, e.g. 'search'",
            )
        )
        team = None
    if environment is not None and (team is None or NAME_PATTERN.fullmatch(team)):
        prefix = name_prefix(team, environment)
        if len(prefix) > NAME_PREFIX_LIMIT:
            room = NAME_PREFIX_LIMIT - len(name_prefix(None, environment)) - len("-")
            problems.append(
                _problem(
                    "team",
                    f"name prefix {prefix!r} is {len(prefix)} characters; load balancer and target group "
                    f"names ({prefix}-alb) must fit in {LB_NAME_LIMIT}",
                    f"use a team name of at most {room} characters",
                )
            )
    return team, environment


def _require_string(key: str, raw: Mapping[str, Any], problems: list[str], fix: str) -> str:
    value = raw.get(key)
    if not isinstance(value, str) or not value.strip():
        what = "is required" if value is None else f"must be a non-empty string (got {value!r})"
        problems.append(_problem(key, what, fix))
        return ""
    return value


def _string_map(key: str, raw: Mapping[str, Any], problems: list[str], fix: str) -> dict[str, str]:
    value = raw.get(key, {})
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        problems.append(_problem(key, f"must map strings to strings (got {value!r})", fix))
        return {}
    return dict(value)


# Tag keys the stack sets itself (see Settings.default_tags), and the setting that drives each.
MANAGED_TAGS: dict[str, str] = {
    "team": "the stack name <team>-<env>",
    "environment": "the stack name",
    "owner": "mlflow-stack:owner",
    "cost-center": "mlflow-stack:costCenter",
    "project": "the project name",
    "stack": "the stack name",
}


def _check_tags(tags: dict[str, str], problems: list[str]) -> None:
    for tag_key, tag_value in tags.items():
        if tag_key in MANAGED_TAGS:
            problems.append(
                _problem(
                    f"tags.{tag_key}",
                    "is set by the stack itself and would be overwritten",
                    f"remove it; it comes from {MANAGED_TAGS[tag_key]}",
                )
            )
        elif len(tag_key) > 128 or len(tag_value) > 256 or tag_key.lower().startswith("aws:"):
            problems.append(
                _problem(
                    f"tags.{tag_key}",
                    "is not a valid AWS tag",
                    "keep keys <= 128 and values <= 256 characters and do not start keys with 'aws:'",
                )
            )


def build_settings(stack: str, region: str | None, raw: Mapping[str, Any]) -> Settings:
    """Validate a stack's raw config (YAML keys, `mlflow-stack:` namespace stripped) into `Settings`."""
    problems: list[str] = []
    for key in raw:
        if key not in KNOWN_KEYS:
            problems.append(
                _problem(
                    key, "unknown key", f"remove it or fix the spelling; valid keys: {', '.join(KNOWN_KEYS)}"
                )
            )
    if not region:
        problems.append(_problem("aws:region", "is not set", "run `pulumi config set aws:region us-east-1`"))

    team, environment = _check_identity(stack, raw, problems)
    owner = _require_string("owner", raw, problems, "set mlflow-stack:owner to a person or team e-mail")
    cost_center = _require_string(
        "costCenter", raw, problems, "set mlflow-stack:costCenter (used for billing)"
    )
    tags = _string_map("tags", raw, problems, "write tags as key: value strings")
    _check_tags(tags, problems)
    overrides = _string_map("overrides", raw, problems, "write overrides as <key>: <reason>")
    boundary = raw.get("permissionsBoundaryArn")
    if boundary is not None and not (
        isinstance(boundary, str)
        and re.fullmatch(r"arn:aws[a-z-]*:iam::\d{12}:policy/[\w+=,.@/-]+", boundary)
    ):
        problems.append(
            _problem(
                "permissionsBoundaryArn",
                f"{boundary!r} is not an IAM policy ARN",
                "use arn:aws:iam::<account>:policy/<name>, or remove the key",
            )
        )

    ctx: dict[str, Any] = {"overrides": overrides}
    # Only whether they are set: the kubeconfig is a secret and never enters Settings.
    ctx["kubernetes_set"] = bool(raw.get("kubernetes"))
    ctx["kubeconfig_set"] = bool(raw.get("kubeconfig"))
    if region:
        ctx["region"] = region
    if environment is not None:
        ctx["environment"] = environment
        for key, model in SECTION_MODELS.items():
            section = _build_section(key, model, environment, raw.get(key), problems)
            if section is not None:
                ctx[key] = section
    for check, needs in CROSS_CHECKS:
        if all(need in ctx for need in needs):
            problems.extend(check(ctx))
    if "tenancy" in ctx:
        domain = ctx.get("domain")
        problems.extend(
            tenancy_problems(
                ctx["tenancy"],
                raw,
                team=team,
                environment=ctx["environment"],
                domain_name=domain.name if domain is not None else None,
                problem=_problem,
            )
        )
        problems.extend(shared_database_problems(ctx, raw))

    if problems:
        raise SettingsError(stack, problems)
    return Settings(
        stack=stack,
        team=team,
        environment=environment,
        region=region,
        owner=owner,
        cost_center=cost_center,
        tags=tags,
        permissions_boundary_arn=boundary,
        network=ctx["network"],
        database=ctx["database"],
        artifacts=ctx["artifacts"],
        server=ctx["server"],
        load_balancer=ctx["loadBalancer"],
        domain=ctx["domain"],
        alarms=ctx["alarms"],
        maintenance=ctx["maintenance"],
        overrides=overrides,
        compute=ctx["compute"],
        kubernetes=ctx["kubernetes"],
        tenancy=ctx["tenancy"],
        shared_database=ctx["sharedDatabase"],
    )


def _decode(value: Any) -> Any:
    """Pulumi hands structured config to the program as JSON text, scalars as plain text."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def read_raw_config() -> dict[str, Any]:
    """All `mlflow-stack:` keys of the running program, decoded. Enumerates every key set, not only
    known ones, so a misspelt key is reported instead of silently ignored."""
    from pulumi.runtime import config as runtime_config

    keys = {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}
    raw: dict[str, Any] = {}
    for full_key in keys:
        namespace, _, key = full_key.partition(":")
        if namespace != CONFIG_NAMESPACE:
            continue
        value = runtime_config.get_config(full_key)
        # Scalars such as `team: "007"` must stay strings: only decode what looks structured.
        raw[key] = _decode(value) if key in SECTION_MODELS or key in {"tags", "overrides"} else value
    return raw


def load_settings() -> Settings:
    """Settings of the running Pulumi program (stack name, `mlflow-stack:*` config, `aws:region`)."""
    import pulumi

    region = pulumi.Config("aws").get("region")
    return build_settings(pulumi.get_stack(), region, read_raw_config())
