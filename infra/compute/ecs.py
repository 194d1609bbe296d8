"""The MLflow replicas on ECS Fargate: cluster, task definition, service, autoscaling.

The service runs in private subnets without public IPs. Its security group admits only the load
balancer's security group on the container port, and the database's security group admits only
the service. Secrets reach the container through the task definition's `secrets` (Secrets Manager
references resolved by the ECS agent), never through `environment`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from infra.compute.spec import ServerSpec

CONTAINER_NAME = "mlflow"
# Runs first and exits; holds the master password (infra/compute/spec.py BootstrapSpec).
BOOTSTRAP_CONTAINER_NAME = "db-bootstrap"
SCRATCH_VOLUME = "scratch"
POSTGRES_PORT = 5432
HTTPS_PORT = 443
# How long ECS waits after SIGTERM before SIGKILL (Fargate allows at most 120 s). The ALB stops
# sending new requests at deregistration; this lets in-flight uploads finish.
STOP_TIMEOUT_SECONDS = 60
# ECS container health checks allow a start period of at most 300 s.
MAX_HEALTH_START_PERIOD_SECONDS = 300


@dataclass(frozen=True)
class EcsServiceArgs:
    # settings.name_prefix: cluster "<prefix>", service and task family "<prefix>-server". Fixed
    # names, so operators, alarms and `mlflow-stack smoke` find them without looking them up.
    name_prefix: str
    spec: ServerSpec
    region: str
    vpc_id: pulumi.Input[str]
    private_subnet_ids: pulumi.Input[Sequence[str]]
    load_balancer_security_group_id: pulumi.Input[str]
    target_group_arn: pulumi.Input[str]
    # "app/<name>/<id>/targetgroup/<name>/<id>", the ALBRequestCountPerTarget resource label
    request_count_resource_label: pulumi.Input[str]
    database_security_group_id: pulumi.Input[str]
    execution_role_arn: pulumi.Input[str]  # pulls the image, reads the secrets, writes the logs
    task_role_arn: pulumi.Input[str]  # what the server itself may do (S3 artifacts)
    log_group_name: str
    log_retention_days: int
    min_tasks: int
    max_tasks: int
    target_cpu_percent: int = 60
    target_requests_per_target: int = 300
    scale_in_cooldown_seconds: int = 300
    scale_out_cooldown_seconds: int = 60
    health_check_grace_seconds: int = 120
    database_port: int = POSTGRES_PORT
    enable_execute_command: bool = False
    log_kms_key_arn: pulumi.Input[str] | None = None
    # A team stack's service joins the platform stack's cluster (tenancy.mode team) instead of
    # creating its own: (cluster ARN, cluster name).
    shared_cluster: tuple[pulumi.Input[str], pulumi.Input[str]] | None = None
    # Called once the cluster, security group rules and log group exist, before the task definition:
    # the resources it returns are what the task definition (and so every rollout) waits for — the
    # one-off migration run (infra/compute/ecs_migration.py migrate_before_rollout).
    before_rollout: Callable[[EcsService], Sequence[pulumi.Resource]] | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.min_tasks <= self.max_tasks:
            raise ValueError(
                f"ecs service: need 1 <= min_tasks ({self.min_tasks}) <= max_tasks ({self.max_tasks})"
            )


def task_container(
    spec: ServerSpec,
    *,
    name: str,
    image: str,
    command: list[str],
    essential: bool,
    environment: Mapping[str, str],
    secrets: Mapping[str, str],
    log_group_name: str,
    region: str,
) -> dict[str, Any]:
    """A one-shot container of the server image, hardened as the server is (its user, no
    capabilities, an init process, its own log stream prefix), writing only to the scratch volume."""
    container: dict[str, Any] = {
        "name": name,
        "image": image,
        "essential": essential,
        "entryPoint": list(spec.entrypoint),
        "command": command,
        "user": spec.user,
        "readonlyRootFilesystem": True,
        "environment": [{"name": key, "value": environment[key]} for key in sorted(environment)],
        "secrets": [{"name": key, "valueFrom": secrets[key]} for key in sorted(secrets)],
        "linuxParameters": {"initProcessEnabled": True, "capabilities": {"drop": ["ALL"]}},
        "logConfiguration": {
            "logDriver": "awslogs",
            "options": {
                "awslogs-group": log_group_name,
                "awslogs-region": region,
                "awslogs-stream-prefix": name,
            },
        },
    }
    return container


def bootstrap_container(
    spec: ServerSpec,
    *,
    image: str,
    environment: Mapping[str, str],
    secrets: Mapping[str, str],
    log_group_name: str,
    region: str,
) -> dict[str, Any]:
    """The database bootstrap (server/db_roles.py): the only container that receives the master
    password. Not essential — it exits when done — and the server container starts only after it
    exited 0, so a failed bootstrap stops the task before anything serves. It writes nothing."""
    assert spec.bootstrap is not None
    return task_container(
        spec,
        name=BOOTSTRAP_CONTAINER_NAME,
        image=image,
        command=list(spec.bootstrap.command),
        essential=False,
        environment=environment,
        secrets=secrets,
        log_group_name=log_group_name,
        region=region,
    )


def container_definitions(
    spec: ServerSpec,
    *,
    image: str,
    environment: Mapping[str, str],
    secrets: Mapping[str, str],
    log_group_name: str,
    region: str,
    health_check_grace_seconds: int,
    bootstrap_environment: Mapping[str, str] | None = None,
    bootstrap_secrets: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """The task's container definitions (RegisterTaskDefinition shape), from resolved values."""
    health_url = f"http://127.0.0.1:{spec.port}{spec.health_path}"
    scratch = (
        [{"sourceVolume": SCRATCH_VOLUME, "containerPath": spec.scratch_path, "readOnly": False}]
        if spec.read_only_root
        else []
    )
    server: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": image,
        "essential": True,
        "entryPoint": list(spec.entrypoint),
        # `--app-name basic-auth` stays visible here for reviewers and the policy pack.
        "command": list(spec.command),
        "user": spec.user,
        "readonlyRootFilesystem": spec.read_only_root,
        "mountPoints": scratch,
        "portMappings": [
            {
                "name": "http",
                "containerPort": spec.port,
                "hostPort": spec.port,
                "protocol": "tcp",
                "appProtocol": "http",
            }
        ],
        "environment": [{"name": key, "value": environment[key]} for key in sorted(environment)],
        "secrets": [{"name": key, "valueFrom": secrets[key]} for key in sorted(secrets)],
        "healthCheck": {
            # The image has Python but not curl; a failed request raises and exits non-zero.
            "command": [
                "CMD",
                "python",
                "-c",
                f"import urllib.request; urllib.request.urlopen('{health_url}', timeout=4)",
            ],
            "interval": 30,
            "timeout": 5,
            "retries": 3,
            "startPeriod": min(health_check_grace_seconds, MAX_HEALTH_START_PERIOD_SECONDS),
        },
        "stopTimeout": STOP_TIMEOUT_SECONDS,
        "linuxParameters": {
            # An init process reaps the workers' children and forwards SIGTERM.
            "initProcessEnabled": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "logConfiguration": {
            "logDriver": "awslogs",
            "options": {
                "awslogs-group": log_group_name,
                "awslogs-region": region,
                "awslogs-stream-prefix": "server",
                # Never block the server on a slow log pipe; drop lines beyond the buffer.
                "mode": "non-blocking",
                "max-buffer-size": "25m",
            },
        },
    }
    if spec.bootstrap is None:
        return [server]
    server["dependsOn"] = [{"containerName": BOOTSTRAP_CONTAINER_NAME, "condition": "SUCCESS"}]
    bootstrap = bootstrap_container(
        spec,
        image=image,
        environment=bootstrap_environment or {},
        secrets=bootstrap_secrets or {},
        log_group_name=log_group_name,
        region=region,
    )
    return [bootstrap, server]


def resolved_spec(spec: ServerSpec, **extra: pulumi.Input[Any]) -> pulumi.Output[dict[str, Any]]:
    """The spec's image, environment, secrets and bootstrap settings (plus `extra`) resolved as one
    dict: what the service's and the migration's container definitions are rendered from."""
    bootstrap = spec.bootstrap
    return pulumi.Output.all(
        image=spec.image,
        environment=pulumi.Output.all(**dict(spec.environment)),
        secrets=pulumi.Output.all(**dict(spec.secrets)),
        bootstrap_environment=pulumi.Output.all(**dict(bootstrap.environment if bootstrap else {})),
        bootstrap_secrets=pulumi.Output.all(**dict(bootstrap.secrets if bootstrap else {})),
        **extra,
    )


def fargate_task_definition(
    resource_name: str,
    *,
    family: str,
    spec: ServerSpec,
    execution_role_arn: pulumi.Input[str],
    task_role_arn: pulumi.Input[str],
    container_definitions: pulumi.Input[str],
    opts: pulumi.ResourceOptions,
) -> aws.ecs.TaskDefinition:
    """A Fargate task definition sized, placed and hardened as the server spec says: the service's
    and the one-off migration's (infra/compute/ecs_migration.py)."""
    return aws.ecs.TaskDefinition(
        resource_name,
        family=family,
        requires_compatibilities=["FARGATE"],
        network_mode="awsvpc",
        cpu=str(spec.cpu),
        memory=str(spec.memory),
        runtime_platform=aws.ecs.TaskDefinitionRuntimePlatformArgs(
            operating_system_family="LINUX", cpu_architecture=spec.cpu_architecture
        ),
        execution_role_arn=execution_role_arn,
        task_role_arn=task_role_arn,
        # A task-scoped (bind-mount) volume: the only writable path of a read-only container.
        volumes=[aws.ecs.TaskDefinitionVolumeArgs(name=SCRATCH_VOLUME)] if spec.read_only_root else [],
        container_definitions=container_definitions,
        opts=opts,
    )


class EcsService(pulumi.ComponentResource):
    """Cluster + task definition + service + target-tracking autoscaling for the server."""

    cluster: aws.ecs.Cluster  # absent when the service joins a shared cluster
    service: aws.ecs.Service
    task_definition: aws.ecs.TaskDefinition
    security_group: aws.ec2.SecurityGroup

    def __init__(self, name: str, args: EcsServiceArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mlflow-stack:compute:EcsService", name, None, opts)
        self.component_name = name
        self.args = args
        child = pulumi.ResourceOptions(parent=self)
        spec = args.spec

        self.security_group = aws.ec2.SecurityGroup(
            f"{name}-sg",
            description="MLflow tasks: the container port from the load balancer only",
            vpc_id=args.vpc_id,
            tags={"Name": f"{args.name_prefix}-server"},
            opts=child,
        )
        aws.vpc.SecurityGroupIngressRule(
            f"{name}-in-from-alb",
            security_group_id=self.security_group.id,
            referenced_security_group_id=args.load_balancer_security_group_id,
            ip_protocol="tcp",
            from_port=spec.port,
            to_port=spec.port,
            description="MLflow from the load balancer",
            opts=child,
        )
        to_db = aws.vpc.SecurityGroupEgressRule(
            f"{name}-out-to-db",
            security_group_id=self.security_group.id,
            referenced_security_group_id=args.database_security_group_id,
            ip_protocol="tcp",
            from_port=args.database_port,
            to_port=args.database_port,
            description="PostgreSQL",
            opts=child,
        )
        to_aws_apis = aws.vpc.SecurityGroupEgressRule(
            f"{name}-out-https",
            security_group_id=self.security_group.id,
            # AWS APIs (S3 artifacts, Secrets Manager, ECR, CloudWatch Logs) via NAT or endpoints.
            cidr_ipv4="0.0.0.0/0",
            ip_protocol="tcp",
            from_port=HTTPS_PORT,
            to_port=HTTPS_PORT,
            description="HTTPS to AWS APIs",
            opts=child,
        )
        # The two rules that open the neighbours to this service live here, with the service.
        db_from_service = aws.vpc.SecurityGroupIngressRule(
            f"{name}-db-in-from-service",
            security_group_id=args.database_security_group_id,
            referenced_security_group_id=self.security_group.id,
            ip_protocol="tcp",
            from_port=args.database_port,
            to_port=args.database_port,
            description="PostgreSQL from the MLflow service",
            opts=child,
        )
        aws.vpc.SecurityGroupEgressRule(
            f"{name}-alb-out-to-service",
            security_group_id=args.load_balancer_security_group_id,
            referenced_security_group_id=self.security_group.id,
            ip_protocol="tcp",
            from_port=spec.port,
            to_port=spec.port,
            description="load balancer to the MLflow tasks",
            opts=child,
        )
        # What a task of this group needs to reach PostgreSQL and the AWS APIs.
        self.task_network_rules = [to_db, to_aws_apis, db_from_service]

        self.log_group = aws.cloudwatch.LogGroup(
            f"{name}-logs",
            name=args.log_group_name,
            retention_in_days=args.log_retention_days,
            kms_key_id=args.log_kms_key_arn,
            opts=child,
        )

        if args.shared_cluster is None:
            self.cluster = aws.ecs.Cluster(
                f"{name}-cluster",
                name=args.name_prefix,
                settings=[aws.ecs.ClusterSettingArgs(name="containerInsights", value="enabled")],
                opts=child,
            )
            cluster_arn, cluster_name = self.cluster.arn, self.cluster.name
        else:
            cluster_arn, cluster_name = (pulumi.Output.from_input(v) for v in args.shared_cluster)
        self.cluster_name = cluster_name
        self.cluster_arn = cluster_arn  # where the migration and the scheduled maintenance task run
        rollout_waits_for = list(args.before_rollout(self)) if args.before_rollout else []

        definitions = resolved_spec(spec, log_group=self.log_group.name).apply(
            lambda resolved: json.dumps(
                container_definitions(
                    spec,
                    image=resolved["image"],
                    environment=resolved["environment"],
                    secrets=resolved["secrets"],
                    log_group_name=resolved["log_group"],
                    region=args.region,
                    health_check_grace_seconds=args.health_check_grace_seconds,
                    bootstrap_environment=resolved["bootstrap_environment"],
                    bootstrap_secrets=resolved["bootstrap_secrets"],
                )
            )
        )
        self.task_definition = fargate_task_definition(
            f"{name}-task",
            family=f"{args.name_prefix}-server",
            spec=spec,
            execution_role_arn=args.execution_role_arn,
            task_role_arn=args.task_role_arn,
            container_definitions=definitions,
            opts=pulumi.ResourceOptions(parent=self, depends_on=rollout_waits_for),
        )

        self.service = aws.ecs.Service(
            f"{name}-service",
            name=f"{args.name_prefix}-server",
            cluster=cluster_arn,
            task_definition=self.task_definition.arn,
            launch_type="FARGATE",
            platform_version="LATEST",
            desired_count=args.min_tasks,
            network_configuration=aws.ecs.ServiceNetworkConfigurationArgs(
                subnets=args.private_subnet_ids,
                security_groups=[self.security_group.id],
                assign_public_ip=False,
            ),
            load_balancers=[
                aws.ecs.ServiceLoadBalancerArgs(
                    target_group_arn=args.target_group_arn,
                    container_name=CONTAINER_NAME,
                    container_port=spec.port,
                )
            ],
            health_check_grace_period_seconds=args.health_check_grace_seconds,
            deployment_circuit_breaker=aws.ecs.ServiceDeploymentCircuitBreakerArgs(
                enable=True, rollback=True
            ),
            # Never drop below the floor during a deploy; start the new tasks first.
            deployment_minimum_healthy_percent=100,
            deployment_maximum_percent=200,
            availability_zone_rebalancing="ENABLED",
            enable_execute_command=args.enable_execute_command,
            enable_ecs_managed_tags=True,
            propagate_tags="SERVICE",
            # `pulumi up` fails (and the circuit breaker rolls back) if the new tasks never get healthy.
            wait_for_steady_state=True,
            # Autoscaling owns the running count after creation.
            opts=pulumi.ResourceOptions(parent=self, ignore_changes=["desiredCount"]),
        )

        resource_id = pulumi.Output.concat("service/", cluster_name, "/", self.service.name)
        scaling_target = aws.appautoscaling.Target(
            f"{name}-scaling-target",
            service_namespace="ecs",
            scalable_dimension="ecs:service:DesiredCount",
            resource_id=resource_id,
            min_capacity=args.min_tasks,
            max_capacity=args.max_tasks,
            opts=child,
        )
        target_kwargs = {
            "service_namespace": scaling_target.service_namespace,
            "scalable_dimension": scaling_target.scalable_dimension,
            "resource_id": scaling_target.resource_id,
            "policy_type": "TargetTrackingScaling",
        }
        aws.appautoscaling.Policy(
            f"{name}-scale-on-cpu",
            target_tracking_scaling_policy_configuration=aws.appautoscaling.PolicyTargetTrackingScalingPolicyConfigurationArgs(
                predefined_metric_specification=aws.appautoscaling.PolicyTargetTrackingScalingPolicyConfigurationPredefinedMetricSpecificationArgs(
                    predefined_metric_type="ECSServiceAverageCPUUtilization"
                ),
                target_value=args.target_cpu_percent,
                scale_in_cooldown=args.scale_in_cooldown_seconds,
                scale_out_cooldown=args.scale_out_cooldown_seconds,
            ),
            opts=child,
            **target_kwargs,
        )
        aws.appautoscaling.Policy(
            f"{name}-scale-on-requests",
            target_tracking_scaling_policy_configuration=aws.appautoscaling.PolicyTargetTrackingScalingPolicyConfigurationArgs(
                predefined_metric_specification=aws.appautoscaling.PolicyTargetTrackingScalingPolicyConfigurationPredefinedMetricSpecificationArgs(
                    predefined_metric_type="ALBRequestCountPerTarget",
                    resource_label=args.request_count_resource_label,
                ),
                target_value=args.target_requests_per_target,
                scale_in_cooldown=args.scale_in_cooldown_seconds,
                scale_out_cooldown=args.scale_out_cooldown_seconds,
            ),
            opts=child,
            **target_kwargs,
        )

        self.service_name = self.service.name
        self.security_group_id = self.security_group.id
        self.register_outputs(
            {
                "cluster_name": self.cluster_name,
                "cluster_arn": self.cluster_arn,
                "service_name": self.service_name,
                "security_group_id": self.security_group_id,
                "task_definition_arn": self.task_definition.arn,
            }
        )
