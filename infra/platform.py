"""The platform: every component of one stack, and the only place that wires them together."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra.artifacts import Artifacts, ArtifactsArgs
from infra.compute.ecs import EcsService, EcsServiceArgs
from infra.compute.ecs_migration import migrate_before_rollout
from infra.compute.image import ServerImage, ServerImageArgs, image_can_run_read_only, mlflow_version
from infra.compute.kubernetes import KubernetesService
from infra.compute.kubernetes_platform import kubernetes_compute, kubernetes_pod_metrics
from infra.compute.spec import DB_SSLMODE, SCRATCH_PATH, SecretRefs, ServerSpec, build_server_spec
from infra.database import Database, DatabaseArgs
from infra.firewall import Firewall
from infra.identity import Identity, IdentityArgs, ecr_repository_arn_for_image
from infra.load_balancer import LoadBalancer
from infra.locks import LockTable, LockTableArgs
from infra.monitoring import AlarmThresholds, Monitoring, MonitoringArgs
from infra.network import Network
from infra.operations import Operations, OperationsArgs
from infra.ordering import ready_when
from infra.owned_edge import build_firewall, build_load_balancer, build_network
from infra.secrets import Secrets, SecretsArgs
from infra.settings import Settings, load_balancer_open_to_all
from infra.shared_database import TeamDatabase
from infra.shared_platform import SharedPlatform, build_shared_platform, export_platform_outputs
from infra.tags import aws_provider
from infra.team_route import PlatformReference, ReferencedNetwork, TeamRoute, team_route
from server import contract

# Days a deleted secret stays restorable; dev stacks are torn down and rebuilt often.
SECRET_RECOVERY_DAYS = {"dev": 0, "staging": 7, "prod": 30}


@dataclass(frozen=True)
class Platform:
    """What the components expose to each other and to the stack outputs."""

    settings: Settings
    provider: aws.Provider
    account_id: pulumi.Output[str]
    network: Network | ReferencedNetwork  # a team stack's is its platform stack's
    secrets: Secrets
    database: Database | TeamDatabase  # a team's on the platform's shared instance: TeamDatabase
    artifacts: Artifacts
    identity: Identity | None  # the ECS task roles; None on Kubernetes (each service account has its own)
    ecr_repository_name: str  # repository the compute component builds the image into
    log_group_name: str  # log group the compute component creates (the execution role may write it)
    load_balancer: LoadBalancer | TeamRoute  # a team stack's: its rules on the platform's shared ALB
    firewall: Firewall | None  # the WAF web ACL; None when loadBalancer.wafEnabled resolves to false
    server_image: ServerImage
    compute: EcsService | KubernetesService  # settings.compute.backend
    monitoring: Monitoring
    locks: LockTable  # promotion/rollback and maintenance leases; in every stack
    operations: Operations | None  # scheduled maintenance; None when maintenance.enabled is false

    @property
    def artifacts_destination(self) -> pulumi.Output[str]:
        return artifacts_destination(self.artifacts)


def artifacts_destination(artifacts: Artifacts) -> pulumi.Output[str]:
    """Where the server proxies artifacts to: s3://<bucket>/<prefix>."""
    return pulumi.Output.concat("s3://", artifacts.bucket_name, "/", artifacts.prefix)


def build_platform(settings: Settings) -> Platform | SharedPlatform:
    """The stack's resources. tenancy.mode platform builds only what teams share
    (infra/shared_platform.py); team attaches to such a stack; standalone builds everything."""
    if settings.mode == "platform":
        return build_shared_platform(settings)
    provider = aws_provider(settings)
    with_provider = pulumi.ResourceOptions(providers=[provider])
    invoke_opts = pulumi.InvokeOutputOptions(provider=provider)
    caller = aws.get_caller_identity_output(opts=invoke_opts)
    partition_info = aws.get_partition_output(opts=invoke_opts)
    partition = partition_info.partition
    prefix = settings.name_prefix

    shared = PlatformReference(settings) if settings.mode == "team" else None
    network: Network | ReferencedNetwork = (
        shared.network if shared is not None else build_network(settings, partition_info, with_provider)
    )
    secrets = Secrets(
        f"{prefix}-secrets",
        SecretsArgs(
            secret_name_prefix=settings.secret_name_prefix,
            recovery_window_days=SECRET_RECOVERY_DAYS[settings.environment],
        ),
        opts=with_provider,
    )
    database: Database | TeamDatabase
    if shared is not None and settings.database.shared:
        database = TeamDatabase(settings, shared)  # the platform's instance: infra/shared_database.py
    else:
        database = Database(
            f"{prefix}-database",
            DatabaseArgs(
                settings=settings.database,
                identifier=f"{prefix}-db",
                vpc_id=network.vpc_id,
                private_subnet_ids=network.private_subnet_ids,
                master_secret_kms_key_arn=secrets.kms_key_arn,
                protect=settings.is_prod,
            ),
            opts=with_provider,
        )
    artifacts = Artifacts(
        f"{prefix}-artifacts",
        ArtifactsArgs(
            settings=settings.artifacts,
            # Bucket names are global: the account id keeps two accounts' stacks from colliding.
            bucket_name=pulumi.Output.concat(prefix, "-artifacts-", caller.account_id),
            protect=settings.is_prod,
        ),
        opts=with_provider,
    )

    ecr_repository_name = f"{prefix}-server"
    if settings.server.image is None:
        ecr_repository_arn: pulumi.Input[str] | None = pulumi.Output.concat(
            "arn:",
            partition,
            ":ecr:",
            settings.region,
            ":",
            caller.account_id,
            ":repository/",
            ecr_repository_name,
        )
    else:
        image = settings.server.image
        ecr_repository_arn = (
            partition.apply(lambda name: ecr_repository_arn_for_image(image, name))
            if ecr_repository_arn_for_image(image, "aws") is not None
            else None
        )
    identity = None
    if not settings.on_kubernetes:
        identity = _identity(
            settings, caller, partition, artifacts, secrets, database, ecr_repository_arn, with_provider
        )
    load_balancer: LoadBalancer | TeamRoute
    if shared is not None:
        load_balancer = team_route(settings, shared, with_provider)
    else:
        load_balancer = build_load_balancer(settings, network, with_provider)
    # A team stack's WAF is its platform's, on the shared load balancer.
    firewall = (
        None
        if isinstance(load_balancer, TeamRoute)
        else build_firewall(settings, load_balancer.arn, with_provider)
    )
    server_image = ServerImage(
        f"{prefix}-image",
        ServerImageArgs(
            repository_name=ecr_repository_name,
            prebuilt_image=settings.server.image,
            # Every environment: the stack's images are rebuilt from the commit (the tag is the
            # source hash), and a repository kept by `destroy` would make the next `up` fail with
            # RepositoryAlreadyExistsException. Images meant to outlive a stack are prebuilt into a
            # repository of their own (`make image`) and set as server.image.
            force_delete_repository=True,
        ),
        opts=with_provider,
    )
    # No server of a new MLflow version (whose start migrates the schemas) before its snapshot exists.
    snapshot = database.pre_upgrade_snapshot(mlflow_version())
    spec = build_server_spec(
        settings,
        image=server_image.image_ref if snapshot is None else ready_when(server_image.image_ref, snapshot.id),
        db_host=database.endpoint,
        db_port=pulumi.Output.from_input(database.port).apply(str),
        db_name=database.db_name,
        auth_db_name=database.auth_db_name,
        db_user=database.username,
        artifacts_destination=artifacts_destination(artifacts),
        secret_refs=SecretRefs(
            secrets.db_password_secret_arn,
            secrets.admin_password_secret_arn,
            secrets.flask_secret_key_secret_arn,
            secrets.crypto_kek_passphrase_secret_arn,
            secrets.webhook_encryption_key_secret_arn,
            # ECS `valueFrom` with a JSON key: the RDS-managed secret is {"username", "password"}.
            db_master_password=pulumi.Output.concat(database.master_secret_arn, ":password::"),
        ),
        db_master_user=database.master_username,
        db_app_connection_limit=database.app_connection_limit,
        # A prebuilt image is expected to come from the same server/Dockerfile (e.g. built by CI).
        read_only_root=image_can_run_read_only(SCRATCH_PATH),
    )
    server = settings.server
    # Before the compute: the Kubernetes backend's maintenance CronJob takes its lease there.
    locks = LockTable(
        f"{prefix}-locks",
        LockTableArgs(
            name_prefix=prefix,
            table_aliases=[lock_table_previous_address(prefix)],
        ),
        opts=with_provider,
    )
    compute: EcsService | KubernetesService
    if settings.on_kubernetes:
        compute = kubernetes_compute(
            settings,
            aws_provider=provider,
            account_id=caller.account_id,
            partition=partition,
            spec=spec,
            database=database,
            artifacts=artifacts,
            secrets=secrets,
            load_balancer=load_balancer,
            locks=locks,
            opts=with_provider,
        )
    else:
        compute = _ecs_service(
            settings, spec, network, load_balancer, database, identity, with_provider, shared_cluster=shared
        )
    alarms = settings.alarms
    monitoring = Monitoring(
        f"{prefix}-monitoring",
        MonitoringArgs(
            account_id=caller.account_id,
            partition=partition,
            alb_arn_suffix=load_balancer.arn_suffix,
            target_group_arn_suffix=load_balancer.target_group_arn_suffix,
            ecs_cluster_name=compute.cluster_name,
            ecs_service_name=compute.service_name,
            pod_metrics=kubernetes_pod_metrics(settings) if settings.on_kubernetes else None,
            db_instance_identifier=database.instance_identifier,
            # A shared instance's size is the platform's (its outputs); an own instance's, the settings'.
            db_allocated_storage_gb=getattr(
                database, "allocated_storage_gb", settings.database.allocated_storage_gb
            ),
            db_max_connections=getattr(database, "max_connections", settings.database.max_connections),
            region=settings.region,
            bucket_name=artifacts.bucket_name,
            archive_storage_class=settings.artifacts.archive_storage_class,
            dashboard_name=prefix,
            # The maintenance report's metric filters read the ECS task's log group; on Kubernetes
            # the CronJob logs go wherever the cluster ships container logs.
            maintenance_log_group_name=(
                settings.log_group_name
                if settings.maintenance.enabled and not settings.on_kubernetes
                else None
            ),
            maintenance_log_group=compute.log_group,
            thresholds=AlarmThresholds(**alarms.model_dump(exclude={"email"})),
            email=alarms.email,
        ),
        opts=with_provider,
    )
    operations = None
    # On Kubernetes the maintenance is a CronJob of the compute component.
    if settings.maintenance.enabled and isinstance(compute, EcsService):
        operations = Operations(
            f"{prefix}-operations",
            OperationsArgs(
                name_prefix=prefix,
                region=settings.region,
                account_id=caller.account_id,
                partition=partition,
                cluster_arn=compute.cluster_arn,
                task_image=server_image.image_ref,
                subnet_ids=network.private_subnet_ids_routed,
                # The service's security group: it already reaches PostgreSQL (the only group the
                # database admits, see the policy pack's database-ingress-from-service-only) and
                # HTTPS; the task listens on nothing, so the group's one ingress rule is moot.
                security_group_id=compute.security_group_id,
                tracking_url=load_balancer.url,
                admin_username=server.admin_username,
                admin_password_secret_arn=secrets.admin_password_secret_arn,
                db_password_secret_arn=secrets.db_password_secret_arn,
                secrets_kms_key_arn=secrets.kms_key_arn,
                database_environment={
                    contract.DB_HOST.name: database.endpoint,
                    contract.DB_PORT.name: pulumi.Output.from_input(database.port).apply(str),
                    contract.DB_NAME.name: database.db_name,
                    contract.DB_USER.name: database.username,
                    contract.DB_SSLMODE.name: DB_SSLMODE,
                },
                log_group_name=settings.log_group_name,
                log_group=compute.log_group,
                lock_table_name=locks.table_name,
                lock_table_arn=locks.table_arn,
                settings=settings.maintenance,
                ecr_repository_arn=ecr_repository_arn,
                permissions_boundary_arn=settings.permissions_boundary_arn,
                read_only_root=image_can_run_read_only(SCRATCH_PATH),
                **_tracking_url_ingress(settings, network, load_balancer),
            ),
            opts=with_provider,
        )
    return Platform(
        settings=settings,
        provider=provider,
        account_id=caller.account_id,
        network=network,
        secrets=secrets,
        database=database,
        artifacts=artifacts,
        identity=identity,
        ecr_repository_name=ecr_repository_name,
        log_group_name=settings.log_group_name,
        load_balancer=load_balancer,
        firewall=firewall,
        server_image=server_image,
        compute=compute,
        monitoring=monitoring,
        locks=locks,
        operations=operations,
    )


def _ecs_service(
    settings: Settings,
    spec: ServerSpec,
    network: Network,
    load_balancer: LoadBalancer,
    database: Database | TeamDatabase,
    identity: Identity | None,
    with_provider: pulumi.ResourceOptions,
    shared_cluster: PlatformReference | None = None,
) -> EcsService:
    assert identity is not None  # created for every ECS stack
    prefix = settings.name_prefix
    server = settings.server
    return EcsService(
        f"{prefix}-compute",
        EcsServiceArgs(
            name_prefix=prefix,
            spec=spec,
            region=settings.region,
            vpc_id=network.vpc_id,
            private_subnet_ids=network.private_subnet_ids_routed,
            load_balancer_security_group_id=load_balancer.security_group_id,
            target_group_arn=load_balancer.target_group_arn,
            request_count_resource_label=pulumi.Output.concat(
                load_balancer.arn_suffix, "/", load_balancer.target_group_arn_suffix
            ),
            database_security_group_id=database.security_group_id,
            execution_role_arn=identity.execution_role_arn,
            task_role_arn=identity.runtime_role_arn,
            log_group_name=settings.log_group_name,
            log_retention_days=server.log_retention_days,
            min_tasks=server.min_replicas,
            max_tasks=server.max_replicas,
            target_cpu_percent=server.target_cpu_percent,
            target_requests_per_target=server.target_requests_per_target,
            scale_in_cooldown_seconds=server.scale_in_cooldown_seconds,
            scale_out_cooldown_seconds=server.scale_out_cooldown_seconds,
            health_check_grace_seconds=server.health_check_grace_seconds,
            shared_cluster=(
                (shared_cluster.cluster_arn, shared_cluster.cluster_name) if shared_cluster else None
            ),
            # The migration as a one-off task `pulumi up` runs and awaits before the service changes.
            before_rollout=migrate_before_rollout(
                snapshot_id=database.pre_upgrade_snapshot_id,
                permissions_boundary_arn=settings.permissions_boundary_arn,
            ),
        ),
        opts=with_provider,
    )


def _identity(
    settings: Settings,
    caller: aws.GetCallerIdentityResult | pulumi.Output,
    partition: pulumi.Output[str],
    artifacts: Artifacts,
    secrets: Secrets,
    database: Database | TeamDatabase,
    ecr_repository_arn: pulumi.Input[str] | None,
    with_provider: pulumi.ResourceOptions,
) -> Identity:
    """The ECS task and execution roles (the Kubernetes backend makes one role per service account)."""
    prefix = settings.name_prefix
    return Identity(
        f"{prefix}-identity",
        IdentityArgs(
            role_name_prefix=prefix,
            region=settings.region,
            account_id=caller.account_id,
            partition=partition,
            bucket_arn=artifacts.bucket_arn,
            artifact_prefix=artifacts.prefix,
            artifacts_kms_key_arn=artifacts.kms_key_arn,
            secret_arns=[
                secrets.db_password_secret_arn,
                secrets.admin_password_secret_arn,
                secrets.flask_secret_key_secret_arn,
                secrets.crypto_kek_passphrase_secret_arn,
                secrets.webhook_encryption_key_secret_arn,
                # Read by ECS for the bootstrap container only (the server container never gets it).
                database.master_secret_arn,
            ],
            secrets_kms_key_arn=secrets.kms_key_arn,
            log_group_name=settings.log_group_name,
            ecr_repository_arn=ecr_repository_arn,
            permissions_boundary_arn=settings.permissions_boundary_arn,
            # A shared instance's master secret is under the platform's key (infra/shared_database.py).
            extra_secrets_kms_key_arns=(
                [database.master_secret_kms_key_arn] if isinstance(database, TeamDatabase) else []
            ),
        ),
        opts=with_provider,
    )


def lock_table_previous_address(prefix: str) -> pulumi.Alias:
    """Where stacks deployed before infra/locks.py have their lock table: a child of the maintenance
    component. Adopting it from there keeps the table (and any live lease) on `pulumi up`, where a
    replacement would fail to create a second table with the same name."""
    operations = f"{prefix}-operations"
    return pulumi.Alias(
        name=f"{operations}-locks", parent=pulumi.create_urn(operations, "mlflow-stack:operations:Operations")
    )


def _tracking_url_ingress(
    settings: Settings, network: Network | ReferencedNetwork, load_balancer: LoadBalancer | TeamRoute
) -> dict:
    """How the maintenance task gets through the load balancer's allow-list to the tracking URL.

    Internal load balancer: the task connects inside the VPC; admit its security group.
    Internet-facing: the task's packets leave through the NAT gateways, so the load balancer sees
    their public IPs; admit those when allowedCidrs would not (settings refuses an existing VPC
    here, whose NAT addresses the stack cannot know)."""
    edge = settings.load_balancer
    if isinstance(load_balancer, TeamRoute):
        # Admitted by security group on an internal shared ALB; through an internet-facing one the
        # task's packets come from the platform's NAT gateways, which the platform stack admits.
        return {"load_balancer_security_group_id": load_balancer.security_group_id}
    if not edge.internet_facing:
        return {"load_balancer_security_group_id": load_balancer.security_group_id}
    if load_balancer_open_to_all(edge):
        return {}
    if not network.nat_public_ips:
        raise ValueError("maintenance: an internet-facing load balancer with allowedCidrs needs the NAT IPs")
    return {
        "load_balancer_security_group_id": load_balancer.security_group_id,
        "load_balancer_source_ips": network.nat_public_ips,
    }


def export_outputs(platform: Platform | SharedPlatform) -> None:
    """Stack outputs, all snake_case: names, endpoints and ARNs — never a secret value."""
    if isinstance(platform, SharedPlatform):
        export_platform_outputs(platform)
        return
    settings = platform.settings
    pulumi.export("environment", settings.environment)
    pulumi.export("team", settings.team)
    pulumi.export("region", settings.region)
    if settings.mode == "team":
        pulumi.export("tenancy_mode", "team")
        pulumi.export("platform_stack", settings.tenancy.platform_stack)
    pulumi.export("vpc_id", platform.network.vpc_id)
    pulumi.export("private_subnet_ids", platform.network.private_subnet_ids)
    pulumi.export("public_subnet_ids", platform.network.public_subnet_ids)
    pulumi.export("bucket_name", platform.artifacts.bucket_name)
    pulumi.export("artifacts_destination", platform.artifacts_destination)
    pulumi.export("db_endpoint", platform.database.endpoint)
    pulumi.export("db_port", platform.database.port)
    pulumi.export("db_name", platform.database.db_name)
    pulumi.export("db_auth_name", platform.database.auth_db_name)
    pulumi.export("db_placement", settings.database.placement)
    pulumi.export("db_user", platform.database.username)
    pulumi.export("db_password_secret_arn", platform.secrets.db_password_secret_arn)
    # `mlflow-stack db status --stack` reads the instance's backups (and the restored one's, after a restore).
    pulumi.export("db_instance_identifier", platform.database.instance_identifier)
    # The RDS-managed master secret, for an operator's repairs (the server never uses it).
    pulumi.export("db_master_user", platform.database.master_username)
    # The restore point taken before this MLflow version's migrations (docs/upgrading.md).
    if platform.database.pre_upgrade_snapshot_id is not None:  # none on a shared instance
        pulumi.export("pre_upgrade_snapshot_id", platform.database.pre_upgrade_snapshot_id)
    pulumi.export("db_master_secret_arn", platform.database.master_secret_arn)
    pulumi.export("flask_secret_key_secret_arn", platform.secrets.flask_secret_key_secret_arn)
    pulumi.export("crypto_kek_passphrase_secret_arn", platform.secrets.crypto_kek_passphrase_secret_arn)
    pulumi.export("webhook_encryption_key_secret_arn", platform.secrets.webhook_encryption_key_secret_arn)
    if platform.identity is not None:
        pulumi.export("runtime_role_arn", platform.identity.runtime_role_arn)
        pulumi.export("execution_role_arn", platform.identity.execution_role_arn)
    pulumi.export("log_group_name", platform.log_group_name)
    # The edge. `mlflow-stack smoke --stack <stack>` reads these names (lifecycle/credentials.py).
    pulumi.export("tracking_url", platform.load_balancer.url)
    pulumi.export("alb_dns_name", platform.load_balancer.dns_name)
    if isinstance(platform.compute, EcsService):
        pulumi.export("ecs_cluster_name", platform.compute.cluster_name)
        pulumi.export("ecs_service_name", platform.compute.service_name)
    else:
        pulumi.export("runtime_role_arn", platform.compute.server_role_arn)
        pulumi.export("kubernetes_cluster_name", platform.compute.cluster_name)
        pulumi.export("kubernetes_namespace", platform.compute.namespace_name)
        pulumi.export("kubernetes_deployment", platform.compute.deployment_name)
    pulumi.export("admin_username", settings.server.admin_username)
    # Read by `mlflow-stack smoke --stack`: it checks the server offers clients exactly this path.
    pulumi.export("artifact_client_access", settings.artifacts.client_access)
    pulumi.export("admin_password_secret_arn", platform.secrets.admin_password_secret_arn)
    pulumi.export("image_ref", platform.server_image.image_ref)
    pulumi.export("alarm_topic_arn", platform.monitoring.topic_arn)
    pulumi.export("dashboard_url", platform.monitoring.dashboard_url)
    if platform.firewall is not None:
        pulumi.export("web_acl_arn", platform.firewall.web_acl_arn)
    # `mlflow-stack runs|models ... --stack <stack>` take their leases in this table; the CI role
    # that runs `models promote|rollback` attaches the policy.
    pulumi.export("lock_table", platform.locks.table_name)
    pulumi.export("promotion_lock_policy_arn", platform.locks.promotion_lock_policy_arn)
    if platform.operations is not None:
        pulumi.export("maintenance_schedule_name", platform.operations.schedule_name)
