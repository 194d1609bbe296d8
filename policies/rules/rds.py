"""RDS PostgreSQL: encrypted, private, backed up, highly available in prod, SSL forced."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from policies.model import Context, Resource, Violation, as_list, of_type, references, shown, truthy
from policies.spec import ENVIRONMENT_PROPERTY, Rule

INSTANCE = "aws:rds/instance:Instance"
PARAMETER_GROUP = "aws:rds/parameterGroup:ParameterGroup"
INSTANCES = frozenset({INSTANCE})


def check_storage_encrypted(resource: Resource, ctx: Context) -> Iterable[str]:
    if not truthy(resource.props.get("storageEncrypted")):
        yield "storageEncrypted is not true"


def check_not_public(resource: Resource, ctx: Context) -> Iterable[str]:
    if truthy(resource.props.get("publiclyAccessible")):
        yield "publiclyAccessible is true"


def check_backups(resource: Resource, ctx: Context) -> Iterable[str]:
    minimum = ctx.config["minBackupDays"]
    days = resource.props.get("backupRetentionPeriod")
    if not isinstance(days, int | float) or days < minimum:
        found = shown(days) if days is not None else "unset (AWS default 1)"
        yield f"backupRetentionPeriod is {found}, minimum {shown(minimum)}"


def check_prod_multi_az(resource: Resource, ctx: Context) -> Iterable[str]:
    if ctx.is_prod and not truthy(resource.props.get("multiAz")):
        yield "prod database is not Multi-AZ (multiAz is not true)"


def check_prod_deletion_protection(resource: Resource, ctx: Context) -> Iterable[str]:
    if ctx.is_prod and not truthy(resource.props.get("deletionProtection")):
        yield "prod database has deletionProtection off"


def _forces_ssl(group: Resource) -> bool:
    return any(
        isinstance(p, Mapping) and p.get("name") == "rds.force_ssl" and str(p.get("value")) == "1"
        for p in as_list(group.props.get("parameters"))
    )


def check_force_ssl(resources: Sequence[Resource], ctx: Context) -> Iterable[Violation]:
    groups = of_type(resources, PARAMETER_GROUP)
    for instance in of_type(resources, INSTANCE):
        attached = [g for g in groups if references(instance, "parameterGroupName", g)]
        if not attached:
            yield Violation(
                f"database {instance.name} does not use a parameter group from this stack "
                "(cannot show rds.force_ssl=1)",
                instance.urn,
            )
        elif not any(_forces_ssl(g) for g in attached):
            yield Violation(
                f"database {instance.name}: parameter group does not set rds.force_ssl=1", instance.urn
            )


RULES = (
    Rule(
        name="rds-storage-encrypted",
        description="RDS storage is encrypted at rest.",
        enforcement="mandatory",
        remediation="Set storage_encrypted=True on the aws.rds.Instance.",
        types=INSTANCES,
        check_resource=check_storage_encrypted,
    ),
    Rule(
        name="rds-not-public",
        description="RDS instances are not publicly accessible.",
        enforcement="mandatory",
        remediation="Set publicly_accessible=False and place the instance in private subnets.",
        types=INSTANCES,
        check_resource=check_not_public,
    ),
    Rule(
        name="rds-backup-retention",
        description="RDS automated backups are kept long enough to recover from a bad migration.",
        enforcement="mandatory",
        remediation="Raise backup_retention_period (database.backupRetentionDays in the stack file).",
        config={
            "minBackupDays": {
                "type": "integer",
                "minimum": 1,
                "maximum": 35,
                "default": 7,
                "description": "Minimum backupRetentionPeriod in days.",
            }
        },
        types=INSTANCES,
        check_resource=check_backups,
    ),
    Rule(
        name="rds-prod-multi-az",
        description="Prod databases run Multi-AZ.",
        enforcement="mandatory",
        remediation="Set database.multiAz: true in the prod stack file.",
        config=ENVIRONMENT_PROPERTY,
        types=INSTANCES,
        check_resource=check_prod_multi_az,
    ),
    Rule(
        name="rds-prod-deletion-protection",
        description="Prod databases have deletion protection on.",
        enforcement="mandatory",
        remediation="Set database.deletionProtection: true in the prod stack file.",
        config=ENVIRONMENT_PROPERTY,
        types=INSTANCES,
        check_resource=check_prod_deletion_protection,
    ),
    Rule(
        name="rds-force-ssl",
        description="RDS parameter groups force SSL connections (rds.force_ssl=1).",
        enforcement="mandatory",
        remediation='Attach an aws.rds.ParameterGroup with {"name": "rds.force_ssl", "value": "1"}.',
        check_stack=check_force_ssl,
    ),
)
