"""The platform: every component of one stack, and the only place that wires them together."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra.artifacts import Artifacts, ArtifactsArgs
from infra.database import Database, DatabaseArgs
from infra.identity import Identity, IdentityArgs, ecr_repository_arn_for_image
from infra.network import Network, NetworkArgs
from infra.secrets import Secrets, SecretsArgs
from infra.settings import Settings
from infra.tags import aws_provider

# Days a deleted secret stays restorable; dev stacks are torn down and rebuilt often.
SECRET_RECOVERY_DAYS = {"dev": 0, "staging": 7, "prod": 30}


@dataclass(frozen=True)
class Platform:
    """What the components expose to each other and to the stack outputs."""

    settings: Settings
    provider: aws.Provider
    account_id: pulumi.Output[str]
    network: Network
    secrets: Secrets
    database: Database
    artifacts: Artifacts
    identity: Identity
    ecr_repository_name: str  # repository the compute component builds the image into
    log_group_name: str  # log group the compute component creates (the execution role may write it)

    @property
    def artifacts_destination(self) -> pulumi.Output[str]:
        return pulumi.Output.concat("s3://", self.artifacts.bucket_name, "/", self.artifacts.prefix)


def build_platform(settings: Settings) -> Platform:
    provider = aws_provider(settings)
    with_provider = pulumi.ResourceOptions(providers=[provider])
    invoke_opts = pulumi.InvokeOutputOptions(provider=provider)
    caller = aws.get_caller_identity_output(opts=invoke_opts)
    partition = aws.get_partition_output(opts=invoke_opts).partition
    prefix = settings.name_prefix

    network = Network(
        f"{prefix}-network",
        NetworkArgs(
            settings=settings.network,
            region=settings.region,
            permissions_boundary_arn=settings.permissions_boundary_arn,
        ),
        opts=with_provider,
    )
    secrets = Secrets(
        f"{prefix}-secrets",
        SecretsArgs(
            secret_name_prefix=settings.secret_name_prefix,
            recovery_window_days=SECRET_RECOVERY_DAYS[settings.environment],
        ),
        opts=with_provider,
    )
    database = Database(
        f"{prefix}-database",
        DatabaseArgs(
            settings=settings.database,
            identifier=f"{prefix}-db",
            vpc_id=network.vpc_id,
            private_subnet_ids=network.private_subnet_ids,
            master_password=secrets.db_password,
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
        ecr_repository_arn = ecr_repository_arn_for_image(settings.server.image)
    identity = Identity(
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
            ],
            secrets_kms_key_arn=secrets.kms_key_arn,
            log_group_name=settings.log_group_name,
            ecr_repository_arn=ecr_repository_arn,
            permissions_boundary_arn=settings.permissions_boundary_arn,
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
    )


def export_outputs(platform: Platform) -> None:
    """Stack outputs: names, endpoints and ARNs — never a secret value."""
    settings = platform.settings
    pulumi.export("environment", settings.environment)
    pulumi.export("team", settings.team)
    pulumi.export("region", settings.region)
    pulumi.export("vpcId", platform.network.vpc_id)
    pulumi.export("privateSubnetIds", platform.network.private_subnet_ids)
    pulumi.export("publicSubnetIds", platform.network.public_subnet_ids)
    pulumi.export("bucketName", platform.artifacts.bucket_name)
    pulumi.export("artifactsDestination", platform.artifacts_destination)
    pulumi.export("dbEndpoint", platform.database.endpoint)
    pulumi.export("dbPort", platform.database.port)
    pulumi.export("dbName", platform.database.db_name)
    pulumi.export("dbUser", platform.database.username)
    pulumi.export("dbPasswordSecretArn", platform.secrets.db_password_secret_arn)
    pulumi.export("adminPasswordSecretArn", platform.secrets.admin_password_secret_arn)
    pulumi.export("flaskSecretKeySecretArn", platform.secrets.flask_secret_key_secret_arn)
    pulumi.export("runtimeRoleArn", platform.identity.runtime_role_arn)
    pulumi.export("executionRoleArn", platform.identity.execution_role_arn)
    pulumi.export("logGroupName", platform.log_group_name)
