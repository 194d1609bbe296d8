"""Scheduled maintenance: a weekly ECS task that runs `mlflow-stack runs maintenance --apply`.

What it creates, each scoped to exactly its job (the lock table it takes its lease in is the
stack's, infra/locks.py, which exists with or without maintenance):
- a Fargate task definition running the *server image* (same code, same pinned MLflow) with the
  day-2 CLI: reap stuck runs, clean up old runs, then `mlflow gc` with the stack's retention;
- its execution role: pull the image, write its log stream, read exactly the two secrets it uses
  (admin password, DB password) — secrets reach the container only as ECS `secrets`, never as
  plain environment values;
- its task role: take and release the maintenance lease in the lock table, nothing else (it talks
  to MLflow over HTTPS with basic auth and to PostgreSQL with a password, neither needs IAM);
- when the stack has a users declaration (`stacks/users/<stack>.yaml`, docs/users.md), a first,
  non-essential container that re-syncs its grants (`users sync --grants-only --apply`) so
  experiments and models created since the last sync get their team's grants; the maintenance
  container waits for it to finish (ECS `dependsOn` COMPLETE: it runs even if the re-sync fails).
  The declaration reaches the task as a plain environment value (users and patterns, no secret),
  so changing it needs a `pulumi up` (a new task revision), not a new image;
- an EventBridge Scheduler schedule and its role, which may only `ecs:RunTask` this task family on
  this cluster and pass this task's two roles to ECS.
- when asked, the load balancer ingress the task's HTTPS calls need: from the task's security group
  (internal load balancer), or from the NAT gateways' public IPs it egresses through (an
  internet-facing one whose allowedCidrs would otherwise drop them).

This module never imports mlflow or lifecycle/: it only builds the command line the task runs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import pulumi_aws as aws

from infra.compute.spec import CPU_ARCHITECTURE, RUN_AS_USER, SCRATCH_PATH
from infra.identity import PolicedRole, create_execution_role
from infra.settings import MaintenanceSettings
from infra.tags import child_opts
from server import contract

CONTAINER_NAME = "maintenance"
SCRATCH_VOLUME = "scratch"
HTTPS_PORT = 443
# The container reads the admin password by the name lifecycle.credentials.resolve_url expects.
ADMIN_PASSWORD_ENV = "MLFLOW_TRACKING_PASSWORD"  # noqa: S105 - a variable name, not a value
DB_SETTINGS = (contract.DB_HOST, contract.DB_PORT, contract.DB_NAME, contract.DB_USER, contract.DB_SSLMODE)
USERS_SYNC_CONTAINER = "users-sync"
# cli/users.py DECLARATION_ENV; a unit test keeps them equal.
USERS_DECLARATION_ENV = "MLFLOW_STACK_USERS_DECLARATION"
USERS_DIR = Path(__file__).resolve().parent.parent / "stacks" / "users"
# A task definition is at most 64 KiB (ECS service quotas, "Task definition size":
# https://docs.aws.amazon.com/AmazonECS/latest/developerguide/service-quotas.html); the declaration
# may take a quarter of it, leaving the rest to the two containers.
USERS_DECLARATION_MAX_BYTES = 16 * 1024
# The lease `runs maintenance` takes (lifecycle.locks.MAINTENANCE_LOCK_ID; a unit test keeps them equal).
MAINTENANCE_LOCK_ID = "maintenance/runs"


@dataclass(frozen=True)
class OperationsArgs:
    """Inputs of the maintenance component. What and when come from the validated settings
    section (`settings.maintenance`); the rest is wiring from the platform."""

    name_prefix: str  # e.g. "mlflow-search-prod"; names the roles, task family, schedule
    region: str
    account_id: pulumi.Input[str]
    partition: pulumi.Input[str]
    cluster_arn: pulumi.Input[str]
    task_image: pulumi.Input[str]  # the server image (it carries lifecycle/ and cli/)
    # Private subnets that reach the DB and the tracking URL (a list, or the network's Output of one).
    subnet_ids: pulumi.Input[Sequence[pulumi.Input[str]]]
    security_group_id: pulumi.Input[str]  # allowed into PostgreSQL, egress to the load balancer
    tracking_url: pulumi.Input[str]  # https://mlflow.example.com
    admin_username: str
    admin_password_secret_arn: pulumi.Input[str]  # ECS `valueFrom`, e.g. a Secrets Manager ARN
    db_password_secret_arn: pulumi.Input[str]
    secrets_kms_key_arn: pulumi.Input[str]
    # The server contract's plain DB settings (MLFLOW_STACK_DB_HOST, _PORT, _NAME, _USER, _SSLMODE).
    database_environment: Mapping[str, pulumi.Input[str]]
    log_group_name: str  # an existing log group; the task writes under the "maintenance" prefix
    # The stack's lock table (infra.locks.LockTable): the task takes its lease there.
    lock_table_name: pulumi.Input[str]
    lock_table_arn: pulumi.Input[str]
    settings: MaintenanceSettings = field(default_factory=MaintenanceSettings)  # when, how much
    ecr_repository_arn: pulumi.Input[str] | None = None  # grant pulls only from this repository
    permissions_boundary_arn: str | None = None
    # The resource behind log_group_name when this stack creates it: ECS refuses to start a task
    # whose awslogs group does not exist yet, so the task definition waits for it.
    log_group: pulumi.Resource | None = None
    # Read-only root filesystem with a task volume at /tmp: needs the image to declare
    # `VOLUME /tmp` (infra.compute.image.image_can_run_read_only), like the server's task.
    read_only_root: bool = True
    # Admit the task on 443 to this load balancer security group. With `load_balancer_source_ips`
    # (the NAT gateways' public IPs: the task reaches an internet-facing load balancer through
    # them) one /32 rule per address; without, one rule from `security_group_id` (internal ALB).
    load_balancer_security_group_id: pulumi.Input[str] | None = None
    load_balancer_source_ips: Sequence[pulumi.Input[str]] = ()

    @property
    def task_family(self) -> str:
        return f"{self.name_prefix}-maintenance"


class OperationsConfigError(ValueError):
    """A maintenance setting that cannot work; the message names it and the fix."""


def validate_args(args: OperationsArgs) -> None:
    """Refuse wiring that cannot work, before creating anything. The user-facing values (schedule,
    retention, task size) are validated once, by `infra.settings.MaintenanceSettings`."""
    problems = []
    if isinstance(args.subnet_ids, Sequence) and not args.subnet_ids:
        problems.append("maintenance needs at least one private subnet")
    missing = [s.name for s in DB_SETTINGS if s.default is None and s.name not in args.database_environment]
    if missing:
        problems.append(f"database_environment lacks {', '.join(missing)} (server/contract.py)")
    unknown = sorted(set(args.database_environment) - {s.name for s in DB_SETTINGS})
    if unknown:
        problems.append(f"database_environment has settings the task does not use: {', '.join(unknown)}")
    if problems:
        raise OperationsConfigError("; ".join(problems))


def users_declaration(stack: str, users_dir: Path = USERS_DIR) -> str | None:
    """The stack's users declaration as text (validated by lifecycle/users_declaration.py in the
    task and in tests/unit/test_users_declaration.py; infra/ does not import lifecycle/)."""
    path = users_dir / f"{stack}.yaml"
    if not path.is_file():
        return None
    text = path.read_text(encoding="utf-8")
    if len(text.encode()) > USERS_DECLARATION_MAX_BYTES:
        raise OperationsConfigError(
            f"{path} is {len(text.encode())} bytes; the maintenance task carries it in its task definition, "
            f"which allows {USERS_DECLARATION_MAX_BYTES}: drop comments, or use fewer, broader patterns"
        )
    return text


def users_sync_arguments(admin_username: str, tracking_url: str) -> list[str]:
    """`users sync ... --grants-only --apply --json`: grants for objects created since the last
    sync; it creates and deletes no users (that stays a reviewed `users sync --stack --apply`)."""
    return [
        "users",
        "sync",
        "--url",
        tracking_url,
        "--username",
        admin_username,
        "--declaration-env",
        USERS_DECLARATION_ENV,
        "--grants-only",
        "--apply",
        "--json",
    ]


def maintenance_command(args: OperationsArgs, tracking_url: str, lock_table: str) -> list[str]:
    """The container command: `python -m cli.runs runs maintenance ... --apply --json`."""
    return maintenance_arguments(args.settings, args.admin_username, tracking_url, lock_table)


def maintenance_arguments(
    maintenance: MaintenanceSettings, admin_username: str, tracking_url: str, lock_table: str
) -> list[str]:
    """`runs maintenance ... --apply --json`, the arguments of `python -m cli.runs` on every backend
    (the ECS scheduled task here, the Kubernetes CronJob in infra/compute/kubernetes.py)."""
    return [
        "runs",
        "maintenance",
        "--url",
        tracking_url,
        "--username",
        admin_username,
        "--reap-older-than",
        f"{maintenance.reap_stuck_after_hours}h",
        "--cleanup-older-than",
        f"{maintenance.cleanup_older_than_days}d",
        "--cleanup-experiment",
        maintenance.cleanup_experiment_pattern,
        "--gc-older-than",
        f"{maintenance.gc_older_than_days}d",
        "--lock-table",
        lock_table,
        "--apply",
        "--json",
    ]


# cli.runs, not cli.main: cli.main registers every sub-command, some of which import packages
# (the local stack's) that the server image does not install.
ENTRYPOINT = ["python", "-m", "cli.runs"]
USERS_SYNC_ENTRYPOINT = ["python", "-m", "cli.users"]


def container_definitions(
    args: OperationsArgs,
    *,
    image: str,
    tracking_url: str,
    lock_table: str,
    database_environment: Mapping[str, str],
    admin_password_secret_arn: str,
    db_password_secret_arn: str,
    users_declaration: str | None = None,
) -> list[dict[str, Any]]:
    environment = {
        **database_environment,
        "AWS_REGION": args.region,
        # MLflow and boto3 write caches under HOME; the root filesystem is read-only.
        "HOME": SCRATCH_PATH,
        "TMPDIR": SCRATCH_PATH,
    }
    scratch = (
        [{"sourceVolume": SCRATCH_VOLUME, "containerPath": SCRATCH_PATH, "readOnly": False}]
        if args.read_only_root
        else []
    )
    secrets = {
        ADMIN_PASSWORD_ENV: admin_password_secret_arn,
        contract.DB_PASSWORD.name: db_password_secret_arn,
    }
    common = {
        "image": image,
        # The server image's non-root user, stated here as for the server's task.
        "user": RUN_AS_USER,
        "readonlyRootFilesystem": args.read_only_root,
        "mountPoints": scratch,
        "linuxParameters": {"initProcessEnabled": True, "capabilities": {"drop": ["ALL"]}},
        "logConfiguration": {
            "logDriver": "awslogs",
            "options": {
                "awslogs-group": args.log_group_name,
                "awslogs-region": args.region,
                "awslogs-stream-prefix": "maintenance",
            },
        },
    }
    maintenance = {
        "name": CONTAINER_NAME,
        "essential": True,
        "entryPoint": ENTRYPOINT,
        "command": maintenance_command(args, tracking_url, lock_table),
        **common,
        "environment": [{"name": key, "value": environment[key]} for key in sorted(environment)],
        "secrets": [{"name": key, "valueFrom": secrets[key]} for key in sorted(secrets)],
    }
    if users_declaration is None:
        return [maintenance]
    # COMPLETE, not SUCCESS: a failed re-sync (its exit code and report are in its log stream) must
    # not stop the week's housekeeping. A container others wait on to COMPLETE must be non-essential
    # (ContainerDependency: https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_ContainerDependency.html).
    maintenance["dependsOn"] = [{"containerName": USERS_SYNC_CONTAINER, "condition": "COMPLETE"}]
    sync_environment = {
        "AWS_REGION": args.region,
        "HOME": SCRATCH_PATH,
        "TMPDIR": SCRATCH_PATH,
        USERS_DECLARATION_ENV: users_declaration,
    }
    users_sync = {
        "name": USERS_SYNC_CONTAINER,
        "essential": False,
        "entryPoint": USERS_SYNC_ENTRYPOINT,
        "command": users_sync_arguments(args.admin_username, tracking_url),
        **common,
        "environment": [{"name": key, "value": sync_environment[key]} for key in sorted(sync_environment)],
        "secrets": [{"name": ADMIN_PASSWORD_ENV, "valueFrom": admin_password_secret_arn}],
    }
    return [users_sync, maintenance]


# --- IAM documents (pure functions of resolved values, checked with parliament in tests) ---------


def _document(statements: list[dict[str, Any]]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": statements}, indent=2)


def trust_policy(service: str, account_id: str) -> str:
    # aws:SourceAccount: another account's ECS or Scheduler cannot assume these roles.
    return _document(
        [
            {
                "Effect": "Allow",
                "Principal": {"Service": service},
                "Action": "sts:AssumeRole",
                "Condition": {"StringEquals": {"aws:SourceAccount": account_id}},
            }
        ]
    )


def task_policy(lock_table_arn: str) -> str:
    """The maintenance lease: one item in the lock table, conditional writes only."""
    return _document(
        [
            {
                "Sid": "MaintenanceLease",
                "Effect": "Allow",
                "Action": ["dynamodb:PutItem", "dynamodb:GetItem", "dynamodb:DeleteItem"],
                "Resource": lock_table_arn,
                "Condition": {"ForAllValues:StringEquals": {"dynamodb:LeadingKeys": [MAINTENANCE_LOCK_ID]}},
            }
        ]
    )


def scheduler_policy(
    *, task_family_arn_pattern: str, cluster_arn: str, execution_role_arn: str, task_role_arn: str
) -> str:
    return _document(
        [
            {
                "Sid": "RunMaintenanceTask",
                "Effect": "Allow",
                "Action": ["ecs:RunTask"],
                # Any revision of this family (a new image is a new revision), on this cluster only.
                "Resource": task_family_arn_pattern,
                "Condition": {"ArnEquals": {"ecs:cluster": cluster_arn}},
            },
            {
                "Sid": "PassMaintenanceRoles",
                "Effect": "Allow",
                "Action": ["iam:PassRole"],
                "Resource": sorted([execution_role_arn, task_role_arn]),
                "Condition": {"StringEquals": {"iam:PassedToService": "ecs-tasks.amazonaws.com"}},
            },
        ]
    )


def task_family_arn_pattern(partition: str, region: str, account_id: str, family: str) -> str:
    return f"arn:{partition}:ecs:{region}:{account_id}:task-definition/{family}:*"


def role_arn(partition: str, account_id: str, name: str) -> str:
    return f"arn:{partition}:iam::{account_id}:role/{name}"


# --- the component ---------------------------------------------------------------------------


class Operations(pulumi.ComponentResource):
    task_definition_arn: pulumi.Output[str]
    schedule_name: pulumi.Output[str]

    def __init__(self, name: str, args: OperationsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mlflow-stack:operations:Operations", name, None, opts)
        validate_args(args)
        child = child_opts(self)

        ecs_trust = pulumi.Output.from_input(args.account_id).apply(
            lambda account: trust_policy("ecs-tasks.amazonaws.com", account)
        )
        execution_role = create_execution_role(
            name,
            role_name=f"{args.name_prefix}-maint-execution",
            description="ECS starting the maintenance task: image pull, its log stream, its two secrets",
            trust=ecs_trust,
            permissions_boundary_arn=args.permissions_boundary_arn,
            partition=args.partition,
            account_id=args.account_id,
            region=args.region,
            log_group_name=args.log_group_name,
            secret_arns=[args.admin_password_secret_arn, args.db_password_secret_arn],
            secrets_kms_key_arn=args.secrets_kms_key_arn,
            ecr_repository_arn=args.ecr_repository_arn,
            opts=child,
            log_stream_prefix="maintenance/",
        )
        task_role = aws.iam.Role(
            f"{name}-task-role",
            name=f"{args.name_prefix}-maint-task",
            description="The maintenance task at runtime: its lease in the lock table, nothing else",
            assume_role_policy=ecs_trust,
            permissions_boundary=args.permissions_boundary_arn,
            opts=child,
        )
        task_policy_resource = aws.iam.RolePolicy(
            f"{name}-task-policy",
            role=task_role.id,
            policy=pulumi.Output.from_input(args.lock_table_arn).apply(task_policy),
            opts=child,
        )

        db_env = {k: pulumi.Output.from_input(v) for k, v in args.database_environment.items()}
        declaration = users_declaration(pulumi.get_stack())
        definitions = pulumi.Output.all(
            args.task_image,
            args.tracking_url,
            args.admin_password_secret_arn,
            args.db_password_secret_arn,
            pulumi.Output.all(**db_env),
            args.lock_table_name,
        ).apply(
            lambda v: json.dumps(
                container_definitions(
                    args,
                    image=v[0],
                    tracking_url=v[1],
                    admin_password_secret_arn=v[2],
                    db_password_secret_arn=v[3],
                    database_environment=v[4],
                    lock_table=v[5],
                    users_declaration=declaration,
                )
            )
        )
        task_definition = aws.ecs.TaskDefinition(
            f"{name}-task",
            family=args.task_family,
            requires_compatibilities=["FARGATE"],
            network_mode="awsvpc",
            cpu=str(args.settings.cpu),
            memory=str(args.settings.memory),
            # The server image is built for this architecture only (infra/compute/spec.py).
            runtime_platform=aws.ecs.TaskDefinitionRuntimePlatformArgs(
                operating_system_family="LINUX", cpu_architecture=CPU_ARCHITECTURE
            ),
            execution_role_arn=execution_role.arn,
            task_role_arn=PolicedRole(task_role, task_policy_resource).arn,
            volumes=[aws.ecs.TaskDefinitionVolumeArgs(name=SCRATCH_VOLUME)] if args.read_only_root else [],
            container_definitions=definitions,
            opts=pulumi.ResourceOptions.merge(
                child, pulumi.ResourceOptions(depends_on=[args.log_group] if args.log_group else [])
            ),
        )

        scheduler_trust = pulumi.Output.from_input(args.account_id).apply(
            lambda account: trust_policy("scheduler.amazonaws.com", account)
        )
        scheduler_role = aws.iam.Role(
            f"{name}-scheduler-role",
            name=f"{args.name_prefix}-maint-scheduler",
            description="EventBridge Scheduler: run the maintenance task on this cluster, nothing else",
            assume_role_policy=scheduler_trust,
            permissions_boundary=args.permissions_boundary_arn,
            opts=child,
        )
        scheduler_policy_resource = aws.iam.RolePolicy(
            f"{name}-scheduler-policy",
            role=scheduler_role.id,
            # Role ARNs from their fixed names (path "/"), like identity.py's log group ARNs.
            policy=pulumi.Output.all(
                args.partition, args.account_id, args.cluster_arn, execution_role.name, task_role.name
            ).apply(
                lambda v: scheduler_policy(
                    task_family_arn_pattern=task_family_arn_pattern(
                        v[0], args.region, v[1], args.task_family
                    ),
                    cluster_arn=v[2],
                    execution_role_arn=role_arn(v[0], v[1], v[3]),
                    task_role_arn=role_arn(v[0], v[1], v[4]),
                )
            ),
            opts=child,
        )
        schedule = aws.scheduler.Schedule(
            f"{name}-schedule",
            name=f"{args.name_prefix}-maintenance",
            description="Weekly MLflow maintenance: reap stuck runs, clean up old runs, garbage-collect",
            schedule_expression=args.settings.schedule,
            schedule_expression_timezone=args.settings.timezone,
            flexible_time_window=aws.scheduler.ScheduleFlexibleTimeWindowArgs(mode="OFF"),
            target=aws.scheduler.ScheduleTargetArgs(
                arn=args.cluster_arn,
                # Scheduler checks at invocation, but a schedule created before its role can pass
                # the task's roles would fail its first run.
                role_arn=PolicedRole(scheduler_role, scheduler_policy_resource).arn,
                ecs_parameters=aws.scheduler.ScheduleTargetEcsParametersArgs(
                    task_definition_arn=task_definition.arn,
                    launch_type="FARGATE",
                    task_count=1,
                    network_configuration=aws.scheduler.ScheduleTargetEcsParametersNetworkConfigurationArgs(
                        subnets=args.subnet_ids,
                        security_groups=[args.security_group_id],
                        assign_public_ip=False,
                    ),
                ),
                # The commands are idempotent, but a failed week is better investigated than re-run
                # blindly: the task's exit code and JSON report are in its log stream.
                retry_policy=aws.scheduler.ScheduleTargetRetryPolicyArgs(maximum_retry_attempts=0),
            ),
            opts=child,
        )

        self._admit_to_load_balancer(name, args, child)

        self.task_definition_arn = task_definition.arn
        self.schedule_name = schedule.name
        self.register_outputs(
            {
                "task_definition_arn": self.task_definition_arn,
                "schedule_name": self.schedule_name,
            }
        )

    @staticmethod
    def _admit_to_load_balancer(name: str, args: OperationsArgs, child: pulumi.ResourceOptions) -> None:
        """Let the task's HTTPS calls to the tracking URL through the load balancer's allow-list."""
        if args.load_balancer_security_group_id is None:
            return
        if not args.load_balancer_source_ips:
            aws.vpc.SecurityGroupIngressRule(
                f"{name}-alb-in-from-task",
                security_group_id=args.load_balancer_security_group_id,
                referenced_security_group_id=args.security_group_id,
                ip_protocol="tcp",
                from_port=HTTPS_PORT,
                to_port=HTTPS_PORT,
                description="HTTPS from the maintenance task",
                opts=child,
            )
            return
        for index, address in enumerate(args.load_balancer_source_ips):
            aws.vpc.SecurityGroupIngressRule(
                f"{name}-alb-in-from-nat-{index}",
                security_group_id=args.load_balancer_security_group_id,
                cidr_ipv4=pulumi.Output.from_input(address).apply(lambda ip: f"{ip}/32"),
                ip_protocol="tcp",
                from_port=HTTPS_PORT,
                to_port=HTTPS_PORT,
                description="HTTPS from the maintenance task, through this NAT gateway",
                opts=child,
            )
