"""Artifacts: the private S3 bucket behind MLflow's proxied artifacts.

Clients never get S3 credentials (the server proxies artifacts), so the bucket is locked down: no
public access, ACLs disabled, SSE-KMS with a bucket key, versioning, TLS-only, and lifecycle rules
that move old artifacts to cheaper storage and clean up temporary data, stale multipart uploads and
old versions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra.settings import ArtifactSettings
from infra.tags import child_opts

TMP_PREFIX = "tmp/"
INFREQUENT_ACCESS = "STANDARD_IA"


@dataclass(frozen=True)
class ArtifactsArgs:
    settings: ArtifactSettings
    bucket_name: pulumi.Input[str]
    protect: bool = False


def lifecycle_rules(settings: ArtifactSettings) -> list[aws.s3.BucketLifecycleConfigurationRuleArgs]:
    return [
        aws.s3.BucketLifecycleConfigurationRuleArgs(
            id="artifacts-tiering",
            status="Enabled",
            filter=aws.s3.BucketLifecycleConfigurationRuleFilterArgs(prefix=f"{settings.prefix}/"),
            transitions=[
                aws.s3.BucketLifecycleConfigurationRuleTransitionArgs(
                    days=settings.ia_after_days, storage_class=INFREQUENT_ACCESS
                ),
                aws.s3.BucketLifecycleConfigurationRuleTransitionArgs(
                    days=settings.archive_after_days, storage_class=settings.archive_storage_class
                ),
            ],
        ),
        aws.s3.BucketLifecycleConfigurationRuleArgs(
            id="tmp-expiry",
            status="Enabled",
            filter=aws.s3.BucketLifecycleConfigurationRuleFilterArgs(prefix=TMP_PREFIX),
            expiration=aws.s3.BucketLifecycleConfigurationRuleExpirationArgs(days=settings.tmp_expire_days),
        ),
        aws.s3.BucketLifecycleConfigurationRuleArgs(
            id="abort-incomplete-multipart-uploads",
            status="Enabled",
            filter=aws.s3.BucketLifecycleConfigurationRuleFilterArgs(),
            abort_incomplete_multipart_upload=aws.s3.BucketLifecycleConfigurationRuleAbortIncompleteMultipartUploadArgs(
                days_after_initiation=settings.abort_multipart_days
            ),
        ),
        aws.s3.BucketLifecycleConfigurationRuleArgs(
            id="noncurrent-version-expiry",
            status="Enabled",
            filter=aws.s3.BucketLifecycleConfigurationRuleFilterArgs(),
            noncurrent_version_expiration=aws.s3.BucketLifecycleConfigurationRuleNoncurrentVersionExpirationArgs(
                noncurrent_days=settings.noncurrent_expire_days
            ),
            # Once the last version is gone, the lone delete marker is removed too.
            expiration=aws.s3.BucketLifecycleConfigurationRuleExpirationArgs(
                expired_object_delete_marker=True
            ),
        ),
    ]


def tls_only_policy(bucket_arn: str) -> str:
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "DenyInsecureTransport",
                    "Effect": "Deny",
                    "Principal": "*",
                    "Action": "s3:*",
                    "Resource": [bucket_arn, f"{bucket_arn}/*"],
                    "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                }
            ],
        }
    )


class Artifacts(pulumi.ComponentResource):
    bucket_name: pulumi.Output[str]
    bucket_arn: pulumi.Output[str]
    kms_key_arn: pulumi.Output[str]
    prefix: str

    def __init__(self, name: str, args: ArtifactsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mlflow-stack:artifacts:Artifacts", name, None, opts)
        settings = args.settings
        key = aws.kms.Key(
            f"{name}-kms",
            description="MLflow artifact bucket encryption",
            enable_key_rotation=True,
            deletion_window_in_days=30,
            opts=child_opts(self),
        )
        aws.kms.Alias(
            f"{name}-kms-alias",
            name=pulumi.Output.concat("alias/", args.bucket_name),
            target_key_id=key.key_id,
            opts=child_opts(self),
        )
        bucket = aws.s3.Bucket(
            f"{name}-bucket",
            bucket=args.bucket_name,
            force_destroy=settings.force_destroy,
            opts=child_opts(self, protect=args.protect),
        )
        public_access = aws.s3.BucketPublicAccessBlock(
            f"{name}-public-access",
            bucket=bucket.id,
            block_public_acls=True,
            block_public_policy=True,
            ignore_public_acls=True,
            restrict_public_buckets=True,
            opts=child_opts(self),
        )
        aws.s3.BucketOwnershipControls(
            f"{name}-ownership",
            bucket=bucket.id,
            rule=aws.s3.BucketOwnershipControlsRuleArgs(object_ownership="BucketOwnerEnforced"),
            opts=child_opts(self),
        )
        aws.s3.BucketServerSideEncryptionConfiguration(
            f"{name}-encryption",
            bucket=bucket.id,
            rules=[
                aws.s3.BucketServerSideEncryptionConfigurationRuleArgs(
                    apply_server_side_encryption_by_default=aws.s3.BucketServerSideEncryptionConfigurationRuleApplyServerSideEncryptionByDefaultArgs(
                        sse_algorithm="aws:kms", kms_master_key_id=key.arn
                    ),
                    # One data key per bucket instead of per object: far fewer (billed) KMS calls.
                    bucket_key_enabled=True,
                )
            ],
            opts=child_opts(self),
        )
        versioning = aws.s3.BucketVersioning(
            f"{name}-versioning",
            bucket=bucket.id,
            versioning_configuration=aws.s3.BucketVersioningVersioningConfigurationArgs(status="Enabled"),
            opts=child_opts(self),
        )
        aws.s3.BucketLifecycleConfiguration(
            f"{name}-lifecycle",
            bucket=bucket.id,
            rules=lifecycle_rules(settings),
            # Noncurrent-version rules need versioning in place first.
            opts=child_opts(self, depends_on=[versioning]),
        )
        aws.s3.BucketPolicy(
            f"{name}-policy",
            bucket=bucket.id,
            policy=bucket.arn.apply(tls_only_policy),
            # S3 rejects policies while the public access block is being (re)written.
            opts=child_opts(self, depends_on=[public_access]),
        )
        self.bucket_name = bucket.bucket
        self.bucket_arn = bucket.arn
        self.kms_key_arn = key.arn
        self.prefix = settings.prefix
        self.register_outputs(
            {"bucket_name": self.bucket_name, "bucket_arn": self.bucket_arn, "kms_key_arn": self.kms_key_arn}
        )
