"""ECS: private tasks in prod, unprivileged containers, secrets only via `secrets`, logs shipped."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from policies.model import Context, Resource, as_list, first_block, parse_json, truthy
from policies.spec import ENVIRONMENT_PROPERTY, Rule

TASK_DEFINITION = "aws:ecs/taskDefinition:TaskDefinition"
SERVICE = "aws:ecs/service:Service"
TASK_DEFINITIONS = frozenset({TASK_DEFINITION})
SERVICES = frozenset({SERVICE})

# A pattern for variable *names*, not a password.
SECRET_NAME_PATTERN = r"(^|_)(PASSWORD|PASSWD|PWD|SECRET|TOKEN|API_KEY|ACCESS_KEY|PRIVATE_KEY)(_|$)"  # noqa: S105
# A URI with credentials in it ("scheme://user:password@host"), e.g. a database URI.
CREDENTIAL_URI = re.compile(r"^[a-z][a-z0-9+.-]*://[^/@:\s]+:[^/@\s]+@", re.IGNORECASE)
DATABASE_URI = re.compile(r"^(postgres(ql)?|mysql|mariadb|mssql|oracle)(\+[a-z0-9]+)?://", re.IGNORECASE)


def containers(resource: Resource) -> list[Mapping[str, Any]]:
    parsed = parse_json(resource.props.get("containerDefinitions"))
    return [c for c in as_list(parsed) if isinstance(c, Mapping)]


def check_no_public_ip_in_prod(resource: Resource, ctx: Context) -> Iterable[str]:
    network = first_block(resource.props.get("networkConfiguration"))
    if ctx.is_prod and truthy(network.get("assignPublicIp")):
        yield "prod service assigns public IPs to its tasks (networkConfiguration.assignPublicIp)"


def check_no_privileged(resource: Resource, ctx: Context) -> Iterable[str]:
    for container in containers(resource):
        if truthy(container.get("privileged")):
            yield f"container {container.get('name')} runs privileged"


def check_no_plaintext_secrets(resource: Resource, ctx: Context) -> Iterable[str]:
    name_pattern = re.compile(ctx.config["secretNamePattern"], re.IGNORECASE)
    for container in containers(resource):
        for entry in as_list(container.get("environment")):
            if not isinstance(entry, Mapping):
                continue
            name, value = str(entry.get("name", "")), str(entry.get("value", ""))
            # Report the variable, never its value: the value is the secret.
            where = f"container {container.get('name')}: {name}"
            if name_pattern.search(name):
                yield f"{where} looks like a secret in plain environment"
            elif CREDENTIAL_URI.match(value) or DATABASE_URI.match(value):
                yield f"{where} holds a database/credential URI in plain environment"


def check_logging(resource: Resource, ctx: Context) -> Iterable[str]:
    for container in containers(resource):
        if not first_block(container.get("logConfiguration")).get("logDriver"):
            yield f"container {container.get('name')} has no logConfiguration.logDriver"


RULES = (
    Rule(
        name="ecs-no-public-ip-in-prod",
        description="Prod ECS tasks get no public IP (they sit in private subnets behind the ALB).",
        enforcement="mandatory",
        remediation="Set network_configuration.assign_public_ip=False and use private subnets with NAT.",
        config=ENVIRONMENT_PROPERTY,
        types=SERVICES,
        check_resource=check_no_public_ip_in_prod,
    ),
    Rule(
        name="ecs-no-privileged-containers",
        description="No ECS container runs privileged.",
        enforcement="mandatory",
        remediation='Remove "privileged": true from the container definition.',
        types=TASK_DEFINITIONS,
        check_resource=check_no_privileged,
    ),
    Rule(
        name="ecs-no-plaintext-secrets",
        description="No password, key or database URI in a container's plain environment.",
        enforcement="mandatory",
        remediation="Pass secrets through the container's `secrets` (Secrets Manager valueFrom).",
        config={
            "secretNamePattern": {
                "type": "string",
                "default": SECRET_NAME_PATTERN,
                "description": "Case-insensitive regex; matching environment names are treated as secrets.",
            }
        },
        types=TASK_DEFINITIONS,
        check_resource=check_no_plaintext_secrets,
    ),
    Rule(
        name="ecs-logging",
        description="Every ECS container ships its logs (logConfiguration set).",
        enforcement="mandatory",
        remediation='Add logConfiguration {"logDriver": "awslogs", ...} to every container.',
        types=TASK_DEFINITIONS,
        check_resource=check_logging,
    ),
)
