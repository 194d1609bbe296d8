"""Identity: the server's two IAM roles, each scoped to exactly what this stack owns.

- the task (runtime) role: what MLflow itself may do — read/write objects under the artifact prefix
  of this bucket, with this bucket's KMS key. Nothing else.
- the task execution role: what ECS does to start a task — pull the image from its ECR repository,
  write the server's log group, read this stack's three secrets and decrypt them with their key.

Resource ARNs that belong to other components (log group, ECR repository) are built from their
deterministic names, so this component never depends on the compute component.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_aws as aws

from infra.ordering import ready_when
from infra.tags import child_opts

ECR_IMAGE_PATTERN = re.compile(
    r"^(?P<account>\d{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(\.cn)?/(?P<repo>[^:@]+)"
)


@dataclass(frozen=True)
class IdentityArgs:
    role_name_prefix: str  # e.g. "mlflow-search-prod"
    region: str
    account_id: pulumi.Input[str]
    partition: pulumi.Input[str]
    bucket_arn: pulumi.Input[str]
    artifact_prefix: str
    artifacts_kms_key_arn: pulumi.Input[str]
    secret_arns: list[pulumi.Input[str]]
    secrets_kms_key_arn: pulumi.Input[str]
    log_group_name: str
    # None: the image is not in ECR (or prebuilt elsewhere), so no repository pull is granted.
    ecr_repository_arn: pulumi.Input[str] | None = None
    permissions_boundary_arn: str | None = None
    # Keys of secrets in secret_arns that are not this stack's: a shared instance's master secret.
    extra_secrets_kms_key_arns: list[pulumi.Input[str]] = field(default_factory=list)


def ecr_repository_arn_for_image(image: str, partition: str) -> str | None:
    """The ECR repository ARN of an image reference, or None when the image is not in ECR."""
    match = ECR_IMAGE_PATTERN.match(image)
    if match is None:
        return None
    return f"arn:{partition}:ecr:{match['region']}:{match['account']}:repository/{match['repo']}"


def ecs_tasks_trust_policy(account_id: str) -> str:
    # aws:SourceAccount stops another account's ECS from assuming the role (confused deputy).
    return _document(
        [
            {
                "Sid": "EcsTasksAssume",
                "Effect": "Allow",
                "Principal": {"Service": "ecs-tasks.amazonaws.com"},
                "Action": "sts:AssumeRole",
                "Condition": {"StringEquals": {"aws:SourceAccount": account_id}},
            }
        ]
    )


def runtime_policy(bucket_arn: str, prefix: str, kms_key_arn: str, region: str) -> str:
    return _document(
        [
            {
                "Sid": "ListArtifactPrefix",
                "Effect": "Allow",
                "Action": ["s3:ListBucket"],
                "Resource": bucket_arn,
                "Condition": {"StringLike": {"s3:prefix": [prefix, f"{prefix}/*"]}},
            },
            {
                "Sid": "ReadWriteArtifacts",
                "Effect": "Allow",
                "Action": [
                    "s3:GetObject",
                    "s3:PutObject",
                    "s3:DeleteObject",
                    "s3:AbortMultipartUpload",
                    "s3:ListMultipartUploadParts",
                ],
                "Resource": f"{bucket_arn}/{prefix}/*",
            },
            {
                "Sid": "ArtifactEncryption",
                "Effect": "Allow",
                "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
                "Resource": kms_key_arn,
                "Condition": {"StringEquals": {"kms:ViaService": f"s3.{region}.amazonaws.com"}},
            },
        ]
    )


def execution_policy(
    *,
    log_group_arn: str,
    secret_arns: list[str],
    secrets_kms_key_arn: str,
    region: str,
    ecr_repository_arn: str | None,
    log_stream_prefix: str = "",
    extra_secrets_kms_key_arns: list[str] | None = None,
) -> str:
    """What ECS needs to start a task of the server image: pull it, write its log streams (those
    under `log_stream_prefix` only), read exactly `secret_arns`. The server and the maintenance
    task each get their own role with this shape."""
    statements: list[dict[str, Any]] = []
    if ecr_repository_arn:
        statements += [
            {
                # GetAuthorizationToken is account-wide; AWS accepts no narrower resource for it.
                "Sid": "EcrLogin",
                "Effect": "Allow",
                "Action": ["ecr:GetAuthorizationToken"],
                "Resource": "*",
            },
            {
                "Sid": "PullServerImage",
                "Effect": "Allow",
                "Action": [
                    "ecr:BatchCheckLayerAvailability",
                    "ecr:GetDownloadUrlForLayer",
                    "ecr:BatchGetImage",
                ],
                "Resource": ecr_repository_arn,
            },
        ]
    statements += [
        {
            "Sid": "WriteLogs",
            "Effect": "Allow",
            "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
            "Resource": [log_group_arn, f"{log_group_arn}:log-stream:{log_stream_prefix}*"],
        },
        {
            "Sid": "ReadSecrets",
            "Effect": "Allow",
            "Action": ["secretsmanager:GetSecretValue"],
            "Resource": sorted(secret_arns),
        },
        {
            "Sid": "DecryptSecrets",
            "Effect": "Allow",
            "Action": ["kms:Decrypt"],
            "Resource": (
                sorted([secrets_kms_key_arn, *extra_secrets_kms_key_arns])
                if extra_secrets_kms_key_arns
                else secrets_kms_key_arn
            ),
            "Condition": {"StringEquals": {"kms:ViaService": f"secretsmanager.{region}.amazonaws.com"}},
        },
    ]
    return _document(statements)


def create_execution_role(
    name: str,
    *,
    role_name: str,
    description: str,
    trust: pulumi.Input[str],
    permissions_boundary_arn: str | None,
    partition: pulumi.Input[str],
    account_id: pulumi.Input[str],
    region: str,
    log_group_name: str,
    secret_arns: list[pulumi.Input[str]],
    secrets_kms_key_arn: pulumi.Input[str],
    ecr_repository_arn: pulumi.Input[str] | None,
    opts: pulumi.ResourceOptions,
    log_stream_prefix: str = "",
    extra_secrets_kms_key_arns: list[pulumi.Input[str]] | None = None,
) -> PolicedRole:
    """An ECS task execution role (`<name>-execution-role`) with its `execution_policy`; the server
    and the maintenance task each get one, scoped to their own secrets and log streams."""
    role = aws.iam.Role(
        f"{name}-execution-role",
        name=role_name,
        description=description,
        assume_role_policy=trust,
        permissions_boundary=permissions_boundary_arn,
        opts=opts,
    )
    policy = aws.iam.RolePolicy(
        f"{name}-execution-policy",
        role=role.id,
        policy=pulumi.Output.all(
            partition,
            account_id,
            secrets_kms_key_arn,
            ecr_repository_arn,
            pulumi.Output.all(*(extra_secrets_kms_key_arns or [])),
            *secret_arns,
        ).apply(
            lambda values: execution_policy(
                log_group_arn=log_group_arn(values[0], region, values[1], log_group_name),
                secrets_kms_key_arn=values[2],
                ecr_repository_arn=values[3],
                extra_secrets_kms_key_arns=list(values[4]),
                secret_arns=list(values[5:]),
                region=region,
                log_stream_prefix=log_stream_prefix,
            )
        ),
        opts=opts,
    )
    return PolicedRole(role, policy)


@dataclass(frozen=True)
class PolicedRole:
    """A role and its inline policy. `arn` resolves once the policy is attached: ECS refuses a task
    whose execution role cannot yet read its secrets or pull its image, and a task started with a
    role whose policy is still missing fails on its first AWS call."""

    role: aws.iam.Role
    policy: aws.iam.RolePolicy

    @property
    def arn(self) -> pulumi.Output[str]:
        return ready_when(self.role.arn, self.policy.id)

    @property
    def name(self) -> pulumi.Output[str]:
        return self.role.name


def log_group_arn(partition: str, region: str, account_id: str, log_group_name: str) -> str:
    return f"arn:{partition}:logs:{region}:{account_id}:log-group:{log_group_name}"


def _document(statements: list[dict[str, Any]]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": statements}, indent=2)


class Identity(pulumi.ComponentResource):
    runtime_role_arn: pulumi.Output[str]
    runtime_role_name: pulumi.Output[str]
    execution_role_arn: pulumi.Output[str]
    execution_role_name: pulumi.Output[str]

    def __init__(self, name: str, args: IdentityArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mlflow-stack:identity:Identity", name, None, opts)
        trust = pulumi.Output.from_input(args.account_id).apply(ecs_tasks_trust_policy)

        runtime_role = aws.iam.Role(
            f"{name}-runtime-role",
            name=f"{args.role_name_prefix}-server-task",
            description="MLflow server at runtime: its artifact prefix and key, nothing else",
            assume_role_policy=trust,
            permissions_boundary=args.permissions_boundary_arn,
            opts=child_opts(self),
        )
        runtime_policy_resource = aws.iam.RolePolicy(
            f"{name}-runtime-policy",
            role=runtime_role.id,
            policy=pulumi.Output.all(args.bucket_arn, args.artifacts_kms_key_arn).apply(
                lambda values: runtime_policy(values[0], args.artifact_prefix, values[1], args.region)
            ),
            opts=child_opts(self),
        )

        execution_role = create_execution_role(
            name,
            role_name=f"{args.role_name_prefix}-server-execution",
            description="ECS starting the MLflow server: image pull, its log group, its secrets",
            trust=trust,
            permissions_boundary_arn=args.permissions_boundary_arn,
            partition=args.partition,
            account_id=args.account_id,
            region=args.region,
            log_group_name=args.log_group_name,
            secret_arns=list(args.secret_arns),
            secrets_kms_key_arn=args.secrets_kms_key_arn,
            ecr_repository_arn=args.ecr_repository_arn,
            extra_secrets_kms_key_arns=args.extra_secrets_kms_key_arns,
            opts=child_opts(self),
        )
        self.runtime_role_arn = PolicedRole(runtime_role, runtime_policy_resource).arn
        self.runtime_role_name = runtime_role.name
        self.execution_role_arn = execution_role.arn
        self.execution_role_name = execution_role.name
        self.register_outputs(
            {"runtime_role_arn": self.runtime_role_arn, "execution_role_arn": self.execution_role_arn}
        )
