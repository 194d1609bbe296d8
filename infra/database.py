"""Database: RDS PostgreSQL in private subnets, encrypted with its own KMS key, TLS forced.

The instance's security group has no ingress of its own: whoever creates the server's security group
calls `allow_from()` so the database accepts exactly that group on 5432 — never a CIDR.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_random as random

from infra.settings.database import DatabaseInstanceSettings
from infra.tags import child_opts, name_tag
from server import contract

POSTGRES_PORT = 5432
MASTER_USERNAME = "mlflow"  # RDS master: used only by the bootstrap step (server/db_roles.py)
APP_USERNAME = "mlflow_app"  # server/contract.py DB_USER default: what the server connects as
# Connections the application role may never take, so the master can always log in to repair
# things: RDS reserves 3 for superusers and 2 for rds_superuser (PostgreSQL 15+) itself, plus a few
# for operators. https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/CHAP_Limits.html#RDS_Limits.MaxConnections
MASTER_RESERVED_CONNECTIONS = 10
DATABASE_NAME = "mlflow"  # tracking + registry; the server creates the auth DB itself
AUTH_DATABASE_NAME = contract.AUTH_DB_NAME.default or "mlflow_auth"
PERFORMANCE_INSIGHTS_RETENTION_DAYS = 7  # the free tier
CA_CERT_IDENTIFIER = "rds-ca-rsa2048-g1"


@dataclass(frozen=True)
class DatabaseArgs:
    settings: DatabaseInstanceSettings
    identifier: str  # RDS instance identifier, e.g. "mlflow-search-prod-db"
    vpc_id: pulumi.Input[str]
    private_subnet_ids: pulumi.Input[list[str]]
    # RDS keeps the master password in Secrets Manager itself (manage_master_user_password), so it
    # is never in the Pulumi state; this key (the stack's secrets key) encrypts that secret.
    master_secret_kms_key_arn: pulumi.Input[str]
    # prod: `pulumi destroy` must refuse to delete the instance (Pulumi protect).
    protect: bool = False
    # The database RDS creates with the instance; None on a platform's shared instance, where each
    # team's bootstrap creates its own (infra/shared_database.py).
    initial_database: str | None = DATABASE_NAME


class Database(pulumi.ComponentResource):
    endpoint: pulumi.Output[str]  # host name only
    port: pulumi.Output[int]
    db_name: str
    auth_db_name: str  # created by the bootstrap (server/db_roles.py)
    username: str  # the application role
    master_username: str
    master_secret_arn: pulumi.Output[str]  # RDS-managed: JSON {"username", "password"}
    app_connection_limit: int
    security_group_id: pulumi.Output[str]
    kms_key_arn: pulumi.Output[str]
    instance_identifier: pulumi.Output[str]

    def __init__(self, name: str, args: DatabaseArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mlflow-stack:database:Database", name, None, opts)
        self._component_name = name
        settings = args.settings
        key = aws.kms.Key(
            f"{name}-kms",
            description=f"RDS storage and Performance Insights of {args.identifier}",
            enable_key_rotation=True,
            deletion_window_in_days=30,
            opts=child_opts(self),
        )
        aws.kms.Alias(
            f"{name}-kms-alias",
            name=f"alias/{args.identifier}",
            target_key_id=key.key_id,
            opts=child_opts(self),
        )
        self.security_group = aws.ec2.SecurityGroup(
            f"{name}-sg",
            name=f"{args.identifier}-sg",
            description=f"PostgreSQL {args.identifier}: ingress only from the MLflow server's group",
            vpc_id=args.vpc_id,
            tags=name_tag(f"{args.identifier}-sg"),
            opts=child_opts(self),
        )
        subnet_group = aws.rds.SubnetGroup(
            f"{name}-subnets",
            name=f"{args.identifier}-subnets",
            description=f"private subnets of {args.identifier}",
            subnet_ids=args.private_subnet_ids,
            opts=child_opts(self),
        )
        parameter_group = aws.rds.ParameterGroup(
            f"{name}-params",
            name=f"{args.identifier}-postgres{settings.engine_major}",
            family=f"postgres{settings.engine_major}",
            description=f"TLS-only, slow-query logging for {args.identifier}",
            parameters=[
                aws.rds.ParameterGroupParameterArgs(name="rds.force_ssl", value="1"),
                aws.rds.ParameterGroupParameterArgs(
                    name="log_min_duration_statement", value=str(settings.slow_query_ms)
                ),
                aws.rds.ParameterGroupParameterArgs(name="log_lock_waits", value="1"),
                aws.rds.ParameterGroupParameterArgs(name="log_temp_files", value="0"),
                # What `mlflow-stack db doctor` reads the slowest statements from. Static: RDS applies
                # it only at the next reboot ("pending-reboot"); RDS's own default group loads it too.
                # https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/USER_WorkingWithParamGroups.html
                aws.rds.ParameterGroupParameterArgs(
                    name="shared_preload_libraries", value="pg_stat_statements", apply_method="pending-reboot"
                ),
            ],
            opts=child_opts(self),
        )
        identifier, restore = _restore_args(args.identifier, settings)
        final_snapshot_identifier = None
        if settings.final_snapshot:
            # A fixed identifier works once: after `destroy` leaves "<db>-final" behind, the next
            # stack's delete fails with DBSnapshotAlreadyExists and the instance stays. The suffix is
            # new for every instance this stack creates (a new stack, or a replaced identifier).
            suffix = random.RandomId(
                f"{name}-final-snapshot-suffix",
                byte_length=4,
                keepers={"identifier": identifier},
                opts=child_opts(self),
            )
            final_snapshot_identifier = pulumi.Output.concat(identifier, "-final-", suffix.hex)
        instance = aws.rds.Instance(
            f"{name}-instance",
            identifier=identifier,
            engine="postgres",
            engine_version=settings.engine_version,
            instance_class=settings.instance_class,
            # A restored instance takes its databases, master user and KMS key from the snapshot or
            # backup (neither restore API accepts them), so they are only given for a new instance.
            db_name=None if restore else args.initial_database,
            username=None if restore else MASTER_USERNAME,
            **restore,
            # RDS generates the master password, stores it in Secrets Manager and rotates it (every
            # 7 days by default); it never passes through Pulumi. Not supported with RDS Blue/Green
            # deployments (docs/deploy.md). https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/rds-secrets-manager.html
            manage_master_user_password=True,
            master_user_secret_kms_key_id=args.master_secret_kms_key_arn,
            port=POSTGRES_PORT,
            allocated_storage=settings.allocated_storage_gb,
            max_allocated_storage=settings.max_allocated_storage_gb,
            storage_type="gp3",
            storage_encrypted=True,
            kms_key_id=None if restore else key.arn,
            multi_az=settings.multi_az,
            db_subnet_group_name=subnet_group.name,
            vpc_security_group_ids=[self.security_group.id],
            publicly_accessible=False,
            parameter_group_name=parameter_group.name,
            ca_cert_identifier=CA_CERT_IDENTIFIER,
            backup_retention_period=settings.backup_retention_days,
            # Keep the automated backups (the point-in-time window) when the instance is deleted —
            # also when a restore replaces it — until they age out of the retention period.
            # https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/USER_WorkingWithAutomatedBackups.Retaining.html
            delete_automated_backups=False,
            copy_tags_to_snapshot=True,
            deletion_protection=settings.deletion_protection,
            skip_final_snapshot=not settings.final_snapshot,
            final_snapshot_identifier=final_snapshot_identifier,
            performance_insights_enabled=settings.performance_insights,
            performance_insights_kms_key_id=key.arn if settings.performance_insights else None,
            performance_insights_retention_period=(
                PERFORMANCE_INSIGHTS_RETENTION_DAYS if settings.performance_insights else None
            ),
            # Slow statements (log_min_duration_statement) land in CloudWatch Logs.
            enabled_cloudwatch_logs_exports=["postgresql", "upgrade"],
            auto_minor_version_upgrade=True,
            allow_major_version_upgrade=False,
            # prod changes wait for the maintenance window; other stacks apply at once.
            apply_immediately=not args.protect,
            tags=name_tag(args.identifier),
            opts=child_opts(self, protect=args.protect),
        )
        self.endpoint = instance.address
        self.port = instance.port
        self.db_name = DATABASE_NAME
        self.auth_db_name = AUTH_DATABASE_NAME
        self.username = APP_USERNAME
        self.master_username = MASTER_USERNAME
        self.master_secret_arn = instance.master_user_secrets.apply(_master_secret_arn)
        self.app_connection_limit = settings.max_connections - MASTER_RESERVED_CONNECTIONS
        self.security_group_id = self.security_group.id
        self.kms_key_arn = key.arn
        self.instance_identifier = instance.identifier
        self.register_outputs(
            {
                "endpoint": self.endpoint,
                "port": self.port,
                "security_group_id": self.security_group_id,
                "kms_key_arn": self.kms_key_arn,
            }
        )

    def pre_upgrade_snapshot(self, mlflow_version: str) -> aws.rds.Snapshot:
        """A manual snapshot taken before the first server that runs `mlflow_version` starts, i.e.
        before its migrations: the consumers (task definition, migration Job) wait for it through
        their image input, and the provider waits until the snapshot is `available`
        (https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/USER_CreateSnapshot.html). A new
        MLflow version is a new resource, so the next version gets its own snapshot; kept on
        replacement and `destroy` (retain_on_delete): these are the restore points of upgrades,
        deleted by an operator (`aws rds delete-db-snapshot`) once the upgrade is trusted."""
        version = re.sub(r"[^0-9a-z]+", "-", mlflow_version.lower()).strip("-")
        snapshot = aws.rds.Snapshot(
            f"{self._component_name}-pre-mlflow-{version}",
            db_instance_identifier=self.instance_identifier,
            # Under the instance's identifier: a restored instance (a new identifier) never
            # collides with the snapshots of the one it replaced.
            db_snapshot_identifier=pulumi.Output.concat(self.instance_identifier, f"-pre-mlflow-{version}"),
            opts=child_opts(self, retain_on_delete=True),
        )
        self.pre_upgrade_snapshot_id = snapshot.db_snapshot_identifier
        return snapshot

    def allow_from(
        self, role: str, source_security_group_id: pulumi.Input[str]
    ) -> aws.vpc.SecurityGroupIngressRule:
        """Let one security group reach PostgreSQL, e.g. `db.allow_from("server", service_sg.id)`."""
        return aws.vpc.SecurityGroupIngressRule(
            f"{self._component_name}-ingress-{role}",
            security_group_id=self.security_group.id,
            referenced_security_group_id=source_security_group_id,
            ip_protocol="tcp",
            from_port=POSTGRES_PORT,
            to_port=POSTGRES_PORT,
            description=f"PostgreSQL from {role}",
            opts=child_opts(self),
        )


def _restore_args(identifier: str, settings: DatabaseInstanceSettings) -> tuple[str, dict[str, Any]]:
    """The instance identifier and the restore arguments for `database.restoreFrom*`.

    A restore always creates a *new* instance (RDS cannot restore in place), so it gets its own
    identifier: `<identifier>-r<hash of the source>`. Pulumi then replaces the old instance — creates
    the restored one, repoints the server's DB_HOST, and deletes the old one last (after its final
    snapshot, where the stack takes one). Everything else (class, storage, subnets, security group,
    parameter group, TLS, backups, Multi-AZ) is this stack's settings, as for a new instance.
    https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/USER_RestoreFromSnapshot.html
    https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/USER_PIT.html
    """
    source = settings.restore_source
    if source is None:
        return identifier, {}
    digest = hashlib.sha256(source.encode()).hexdigest()[:8]
    restored = f"{identifier}-r{digest}"
    if settings.restore_from_snapshot:
        return restored, {"snapshot_identifier": settings.restore_from_snapshot}
    latest = settings.restore_time == "latest"
    point = aws.rds.InstanceRestoreToPointInTimeArgs(
        source_db_instance_identifier=settings.restore_from_instance,
        use_latest_restorable_time=True if latest else None,
        restore_time=None if latest else settings.restore_time,
    )
    return restored, {"restore_to_point_in_time": point}


def _master_secret_arn(secrets: list | None) -> str:  # type: ignore[type-arg]
    if not secrets:
        raise ValueError("RDS returned no master user secret although manage_master_user_password is set")
    first = secrets[0]
    arn = first.get("secret_arn") if isinstance(first, dict) else getattr(first, "secret_arn", None)
    if not arn:
        raise ValueError("RDS' master user secret has no ARN")
    return str(arn)
