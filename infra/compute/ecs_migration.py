"""The ECS deploy's migration: once, as a one-off task, before the service's task definition changes.

`pulumi up` runs it with no CLI in the loop:
- a task definition, family `<prefix>-migrate`: the server image, the `db-bootstrap` container
  (infra/compute/ecs.py) then a `migrate` container running `python -m server.entrypoint migrate
  --app-name basic-auth` (server/contract.py MIGRATE_COMMAND) with the server's settings and
  secrets, the server's two roles, no port, a read-only root filesystem;
- a Lambda function (infra/compute/migration_runner_lambda.py) that runs that task in the service's
  subnets and security group, waits until it stopped and fails unless every container exited 0;
- an `aws.lambda_.Invocation` of that function. Under its default lifecycle scope (CREATE_ONLY) the
  provider invokes on create, and a change of `input` forces a replacement, i.e. a new invocation
  (https://www.pulumi.com/registry/packages/aws/api-docs/lambda/invocation/; the Terraform
  provider's customizeDiffInputChangeWithCreateOnlyScope). The input carries the image, the
  settings the migration reads and the pre-upgrade snapshot id (`migration_fingerprint`), so the
  migration runs exactly when the schema may change, and not when e.g. the replica count does;
- the service's task definition waits for the invocation (EcsServiceArgs.before_rollout), so a
  failed migration stops `pulumi up` before the service changes and the old tasks keep serving.

The server's own start keeps the advisory-lock migration (server/database.py): after this run it
finds the schemas at head and does nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pulumi
import pulumi_aws as aws

from infra.compute import migration_runner_lambda
from infra.compute.ecs import (
    BOOTSTRAP_CONTAINER_NAME,
    SCRATCH_VOLUME,
    bootstrap_container,
    fargate_task_definition,
    resolved_spec,
    task_container,
)
from infra.compute.spec import ServerSpec
from infra.identity import PolicedRole
from infra.ordering import ready_when
from infra.tags import child_opts
from server import contract

if TYPE_CHECKING:
    from infra.compute.ecs import EcsService

MIGRATE_CONTAINER_NAME = "migrate"
RUNTIME = "python3.13"
HANDLER_FILE = Path(migration_runner_lambda.__file__)
HANDLER = f"{HANDLER_FILE.stem}.handler"
# Lambda's maximum (https://docs.aws.amazon.com/lambda/latest/dg/configuration-timeout.html).
LAMBDA_TIMEOUT_SECONDS = 900
LAMBDA_MEMORY_MB = 128
# What the migration reads besides the image: where the databases are and as whom, and what the
# auth migration and the admin step decide on. Not the tuning (workers, pools), the domain, the
# artifacts: changing those rolls the service without a migration run.
MIGRATION_SETTINGS = (
    contract.DB_HOST,
    contract.DB_PORT,
    contract.DB_NAME,
    contract.AUTH_DB_NAME,
    contract.DB_USER,
    contract.DB_SSLMODE,
    contract.DEFAULT_PERMISSION,
    contract.ADMIN_USERNAME,
)


@dataclass(frozen=True)
class EcsMigrationArgs:
    name_prefix: str  # task family "<prefix>-migrate", function "<prefix>-migrate"
    spec: ServerSpec
    region: str
    cluster_arn: pulumi.Input[str]  # arn:<partition>:ecs:<region>:<account>:cluster/<name>
    subnet_ids: pulumi.Input[Sequence[str]]
    security_group_id: pulumi.Input[str]  # the service's: reaches PostgreSQL and AWS APIs
    execution_role_arn: pulumi.Input[str]  # the service's two roles, passed to ECS
    task_role_arn: pulumi.Input[str]
    log_group_name: str  # the server's log group; streams migrate/... and db-bootstrap/...
    snapshot_id: pulumi.Input[str]  # the restore point named in a failure
    log_retention_days: int
    log_kms_key_arn: pulumi.Input[str] | None = None
    permissions_boundary_arn: str | None = None
    # What the task needs before it can start and reach the database (log group, SG rules).
    ready_after: Sequence[pulumi.Resource] = ()

    @property
    def task_family(self) -> str:
        return f"{self.name_prefix}-migrate"

    @property
    def function_name(self) -> str:
        return f"{self.name_prefix}-migrate"


def migrate_container(
    spec: ServerSpec,
    *,
    image: str,
    environment: Mapping[str, str],
    secrets: Mapping[str, str],
    log_group_name: str,
    region: str,
) -> dict[str, Any]:
    """The server's settings and secrets, `migrate` instead of `serve`; no port, no health check."""
    container = task_container(
        spec,
        name=MIGRATE_CONTAINER_NAME,
        image=image,
        command=list(contract.MIGRATE_COMMAND),
        essential=True,
        environment=environment,
        secrets=secrets,
        log_group_name=log_group_name,
        region=region,
    )
    # Like the server: a read-only root only when the image can run that way, then with its scratch.
    container["readonlyRootFilesystem"] = spec.read_only_root
    container["mountPoints"] = (
        [{"sourceVolume": SCRATCH_VOLUME, "containerPath": spec.scratch_path, "readOnly": False}]
        if spec.read_only_root
        else []
    )
    return container


def migration_container_definitions(
    spec: ServerSpec,
    *,
    image: str,
    environment: Mapping[str, str],
    secrets: Mapping[str, str],
    bootstrap_environment: Mapping[str, str],
    bootstrap_secrets: Mapping[str, str],
    log_group_name: str,
    region: str,
) -> list[dict[str, Any]]:
    migrate = migrate_container(
        spec,
        image=image,
        environment=environment,
        secrets=secrets,
        log_group_name=log_group_name,
        region=region,
    )
    if spec.bootstrap is None:
        return [migrate]
    migrate["dependsOn"] = [{"containerName": BOOTSTRAP_CONTAINER_NAME, "condition": "SUCCESS"}]
    bootstrap = bootstrap_container(
        spec,
        image=image,
        environment=bootstrap_environment,
        secrets=bootstrap_secrets,
        log_group_name=log_group_name,
        region=region,
    )
    return [bootstrap, migrate]


def migration_fingerprint(
    *,
    image: str,
    environment: Mapping[str, str],
    secrets: Mapping[str, str],
    bootstrap_environment: Mapping[str, str],
    snapshot_id: str,
) -> dict[str, Any]:
    """What, when it changes, may change the schemas or what the migration does to them."""
    names = {s.name for s in MIGRATION_SETTINGS}
    return {
        "image": image,
        "settings": {key: environment[key] for key in sorted(environment) if key in names},
        # References (ARNs), never values: a new admin or DB password secret is applied by the run.
        "secrets": dict(sorted(secrets.items())),
        "bootstrap": dict(sorted(bootstrap_environment.items())),
        "snapshotId": snapshot_id,
    }


def invocation_input(
    *,
    cluster_arn: str,
    task_family: str,
    subnet_ids: Sequence[str],
    security_group_id: str,
    log_group_name: str,
    snapshot_id: str,
    fingerprint: Mapping[str, Any],
) -> str:
    """The Lambda's event (migration_runner_lambda.MigrationRequest) plus the fingerprint. The task
    family, not a revision ARN: a revision changes with every task definition change, the family
    runs its latest revision, which the invocation waits for."""
    return json.dumps(
        {
            "cluster": cluster_arn,
            "taskDefinition": task_family,
            "subnets": sorted(subnet_ids),
            "securityGroups": [security_group_id],
            "logGroup": log_group_name,
            "logStreamPrefixes": {
                MIGRATE_CONTAINER_NAME: MIGRATE_CONTAINER_NAME,
                BOOTSTRAP_CONTAINER_NAME: BOOTSTRAP_CONTAINER_NAME,
            },
            "snapshotId": snapshot_id,
            "fingerprint": fingerprint,
        },
        sort_keys=True,
    )


# --- IAM (pure functions of resolved values; parliament-checked in tests) ------------------------


def _document(statements: list[dict[str, Any]]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": statements}, indent=2)


def lambda_trust_policy(account_id: str) -> str:
    # aws:SourceAccount: only this account's Lambda service assumes it.
    return _document(
        [
            {
                "Effect": "Allow",
                "Principal": {"Service": "lambda.amazonaws.com"},
                "Action": "sts:AssumeRole",
                "Condition": {"StringEquals": {"aws:SourceAccount": account_id}},
            }
        ]
    )


def arn_parts(cluster_arn: str) -> tuple[str, str, str, str]:
    """(partition, region, account, cluster name) of an ECS cluster ARN."""
    _, partition, _, region, account, resource = cluster_arn.split(":", 5)
    return partition, region, account, resource.split("/", 1)[1]


def runner_policy(
    *,
    cluster_arn: str,
    task_family: str,
    execution_role_arn: str,
    task_role_arn: str,
    function_name: str,
) -> str:
    """Run this one task family on this cluster, pass it its two roles, watch its tasks, write the
    function's own log group. Resource-level support per the Service Authorization Reference:
    https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonelasticcontainerservice.html"""
    partition, region, account, cluster = arn_parts(cluster_arn)
    log_group = f"arn:{partition}:logs:{region}:{account}:log-group:/aws/lambda/{function_name}"
    return _document(
        [
            {
                "Sid": "RunMigrationTask",
                "Effect": "Allow",
                "Action": ["ecs:RunTask"],
                "Resource": f"arn:{partition}:ecs:{region}:{account}:task-definition/{task_family}:*",
                "Condition": {"ArnEquals": {"ecs:cluster": cluster_arn}},
            },
            {
                "Sid": "WatchMigrationTask",
                "Effect": "Allow",
                "Action": ["ecs:DescribeTasks"],
                "Resource": f"arn:{partition}:ecs:{region}:{account}:task/{cluster}/*",
            },
            {
                "Sid": "PassMigrationTaskRoles",
                "Effect": "Allow",
                "Action": ["iam:PassRole"],
                "Resource": sorted([execution_role_arn, task_role_arn]),
                "Condition": {"StringEquals": {"iam:PassedToService": "ecs-tasks.amazonaws.com"}},
            },
            {
                "Sid": "WriteOwnLogs",
                "Effect": "Allow",
                "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
                "Resource": [log_group, f"{log_group}:log-stream:*"],
            },
        ]
    )


# --- the component ---------------------------------------------------------------------------


class EcsMigration(pulumi.ComponentResource):
    """Migration task definition + runner Lambda + its invocation; wait for `invocation`."""

    task_definition: aws.ecs.TaskDefinition
    function: aws.lambda_.Function
    invocation: aws.lambda_.Invocation

    def __init__(self, name: str, args: EcsMigrationArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mlflow-stack:compute:EcsMigration", name, None, opts)
        child = child_opts(self)
        spec = args.spec
        resolved = resolved_spec(spec)
        self.task_definition = fargate_task_definition(
            f"{name}-task",
            family=args.task_family,
            spec=spec,
            execution_role_arn=args.execution_role_arn,
            task_role_arn=args.task_role_arn,
            container_definitions=resolved.apply(
                lambda v: json.dumps(
                    migration_container_definitions(
                        spec,
                        image=v["image"],
                        environment=v["environment"],
                        secrets=v["secrets"],
                        bootstrap_environment=v["bootstrap_environment"],
                        bootstrap_secrets=v["bootstrap_secrets"],
                        log_group_name=args.log_group_name,
                        region=args.region,
                    )
                )
            ),
            opts=pulumi.ResourceOptions.merge(
                child, pulumi.ResourceOptions(depends_on=list(args.ready_after))
            ),
        )

        log_group = aws.cloudwatch.LogGroup(
            f"{name}-logs",
            name=f"/aws/lambda/{args.function_name}",
            retention_in_days=args.log_retention_days,
            kms_key_id=args.log_kms_key_arn,
            opts=child,
        )
        account_id = pulumi.Output.from_input(args.cluster_arn).apply(lambda arn: arn_parts(arn)[2])
        role = aws.iam.Role(
            f"{name}-role",
            name=f"{args.name_prefix}-migrate-runner",
            description="Runs the MLflow migration task at deploy time: that task family, its two roles",
            assume_role_policy=account_id.apply(lambda_trust_policy),
            permissions_boundary=args.permissions_boundary_arn,
            opts=child,
        )
        policy = aws.iam.RolePolicy(
            f"{name}-policy",
            role=role.id,
            policy=pulumi.Output.all(args.cluster_arn, args.execution_role_arn, args.task_role_arn).apply(
                lambda v: runner_policy(
                    cluster_arn=v[0],
                    task_family=args.task_family,
                    execution_role_arn=v[1],
                    task_role_arn=v[2],
                    function_name=args.function_name,
                )
            ),
            opts=child,
        )
        self.function = aws.lambda_.Function(
            f"{name}-function",
            name=args.function_name,
            description="Runs the MLflow schema migration as a one-off ECS task before the service changes",
            runtime=RUNTIME,
            architectures=["arm64"],
            handler=HANDLER,
            code=pulumi.AssetArchive({HANDLER_FILE.name: pulumi.FileAsset(str(HANDLER_FILE))}),
            role=PolicedRole(role, policy).arn,
            timeout=LAMBDA_TIMEOUT_SECONDS,
            memory_size=LAMBDA_MEMORY_MB,
            # Its log group exists first (with retention and key), so Lambda never creates one.
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[log_group])),
        )

        event = pulumi.Output.all(
            args.cluster_arn,
            # The family's newest revision must exist before the run: wait for it (no ARN in the input).
            ready_when(args.task_family, self.task_definition.arn),
            args.subnet_ids,
            args.security_group_id,
            args.snapshot_id,
            resolved,
        ).apply(
            lambda v: invocation_input(
                cluster_arn=v[0],
                task_family=v[1],
                subnet_ids=v[2],
                security_group_id=v[3],
                log_group_name=args.log_group_name,
                snapshot_id=v[4],
                fingerprint=migration_fingerprint(
                    image=v[5]["image"],
                    environment=v[5]["environment"],
                    secrets=v[5]["secrets"],
                    bootstrap_environment=v[5]["bootstrap_environment"],
                    snapshot_id=v[4],
                ),
            )
        )
        self.invocation = aws.lambda_.Invocation(
            f"{name}-run",
            function_name=self.function.name,
            input=event,
            opts=pulumi.ResourceOptions.merge(
                child, pulumi.ResourceOptions(depends_on=[self.task_definition, *args.ready_after])
            ),
        )
        self.register_outputs(
            {"task_definition_arn": self.task_definition.arn, "function_name": self.function.name}
        )


def migrate_before_rollout(
    *, snapshot_id: pulumi.Input[str], permissions_boundary_arn: str | None
) -> Callable[[EcsService], Sequence[pulumi.Resource]]:
    """EcsServiceArgs.before_rollout: the migration run, built from the service being created
    (its cluster, subnets, security group, roles, spec), parented to it."""

    def build(service: EcsService) -> Sequence[pulumi.Resource]:
        args = service.args
        migration = EcsMigration(
            f"{service.component_name}-migration",
            EcsMigrationArgs(
                name_prefix=args.name_prefix,
                spec=args.spec,
                region=args.region,
                cluster_arn=service.cluster_arn,
                subnet_ids=args.private_subnet_ids,
                security_group_id=service.security_group.id,
                execution_role_arn=args.execution_role_arn,
                task_role_arn=args.task_role_arn,
                log_group_name=args.log_group_name,
                snapshot_id=snapshot_id,
                log_retention_days=args.log_retention_days,
                log_kms_key_arn=args.log_kms_key_arn,
                permissions_boundary_arn=permissions_boundary_arn,
                ready_after=[service.log_group, *service.task_network_rules],
            ),
            opts=pulumi.ResourceOptions(parent=service),
        )
        return [migration.invocation]

    return build
