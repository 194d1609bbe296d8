"""S3 buckets: public access blocked, encrypted, TLS-only, lifecycle hygiene.

pulumi-aws 7 keeps each of these in a companion resource (BucketPublicAccessBlock,
BucketServerSideEncryptionConfiguration, BucketPolicy, BucketLifecycleConfiguration), so these
are stack checks: for every bucket, find the companion that points at it and inspect that.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from policies.model import (
    Context,
    Resource,
    Violation,
    as_list,
    first_block,
    of_type,
    parse_json,
    references,
    shown,
    truthy,
)
from policies.spec import Rule

BUCKET_TYPES = ("aws:s3/bucket:Bucket", "aws:s3/bucketV2:BucketV2")
PUBLIC_ACCESS_BLOCK = "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock"
ENCRYPTION = (
    "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
    "aws:s3/bucketServerSideEncryptionConfigurationV2:BucketServerSideEncryptionConfigurationV2",
)
BUCKET_POLICY = "aws:s3/bucketPolicy:BucketPolicy"
LIFECYCLE = (
    "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration",
    "aws:s3/bucketLifecycleConfigurationV2:BucketLifecycleConfigurationV2",
)
PUBLIC_ACCESS_FLAGS = ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")


def _companions(resources: Sequence[Resource], bucket: Resource, *types: str) -> list[Resource]:
    return [r for r in of_type(resources, *types) if references(r, "bucket", bucket)]


def check_public_access_block(resources: Sequence[Resource], ctx: Context) -> Iterable[Violation]:
    for bucket in of_type(resources, *BUCKET_TYPES):
        blocks = _companions(resources, bucket, PUBLIC_ACCESS_BLOCK)
        if not blocks:
            yield Violation(f"bucket {bucket.name} has no BucketPublicAccessBlock", bucket.urn)
            continue
        for block in blocks:
            off = [flag for flag in PUBLIC_ACCESS_FLAGS if not truthy(block.props.get(flag))]
            if off:
                yield Violation(
                    f"bucket {bucket.name}: public access block leaves {', '.join(off)} off", block.urn
                )


def check_encryption(resources: Sequence[Resource], ctx: Context) -> Iterable[Violation]:
    allowed = set(ctx.config["allowedAlgorithms"])
    for bucket in of_type(resources, *BUCKET_TYPES):
        configs = _companions(resources, bucket, *ENCRYPTION)
        algorithms = {
            first_block(rule.get("applyServerSideEncryptionByDefault")).get("sseAlgorithm")
            for config in configs
            for rule in as_list(config.props.get("rules"))
            if isinstance(rule, Mapping)
        }
        if not algorithms & allowed:
            found = ", ".join(sorted(str(a) for a in algorithms if a)) or "none"
            yield Violation(
                f"bucket {bucket.name} has no default encryption with one of {sorted(allowed)} "
                f"(found: {found})",
                bucket.urn,
            )


def _is_tls_deny(statement: Mapping[str, Any]) -> bool:
    if statement.get("Effect") != "Deny":
        return False
    principal = statement.get("Principal")
    if not (principal == "*" or (isinstance(principal, Mapping) and "*" in as_list(principal.get("AWS")))):
        return False
    if not {"s3:*", "*"} & set(as_list(statement.get("Action"))):
        return False
    secure = (statement.get("Condition") or {}).get("Bool", {}).get("aws:SecureTransport")
    if [str(v).lower() for v in as_list(secure)] != ["false"]:
        return False
    targets = [str(r) for r in as_list(statement.get("Resource"))]
    # Both the bucket itself and its objects must be covered.
    return any(t.endswith("/*") for t in targets) and any(not t.endswith("/*") for t in targets)


def check_tls_only(resources: Sequence[Resource], ctx: Context) -> Iterable[Violation]:
    for bucket in of_type(resources, *BUCKET_TYPES):
        policies = _companions(resources, bucket, BUCKET_POLICY)
        statements = [
            statement
            for policy in policies
            for statement in as_list((parse_json(policy.props.get("policy")) or {}).get("Statement"))
            if isinstance(statement, Mapping)
        ]
        if not any(_is_tls_deny(s) for s in statements):
            yield Violation(
                f"bucket {bucket.name} has no bucket policy denying s3:* for every principal on the bucket "
                "and its objects when aws:SecureTransport is false",
                bucket.urn,
            )


def enabled_rules(configs: list[Resource]) -> list[Mapping[str, Any]]:
    return [
        rule
        for config in configs
        for rule in as_list(config.props.get("rules"))
        if isinstance(rule, Mapping) and rule.get("status") == "Enabled"
    ]


def check_lifecycle(resources: Sequence[Resource], ctx: Context) -> Iterable[Violation]:
    max_abort = ctx.config["maxAbortIncompleteMultipartDays"]
    max_noncurrent = ctx.config["maxNoncurrentVersionDays"]
    for bucket in of_type(resources, *BUCKET_TYPES):
        rules = enabled_rules(_companions(resources, bucket, *LIFECYCLE))
        abort_days = [
            first_block(r.get("abortIncompleteMultipartUpload")).get("daysAfterInitiation") for r in rules
        ]
        noncurrent_days = [
            first_block(r.get("noncurrentVersionExpiration")).get("noncurrentDays") for r in rules
        ]
        if not any(isinstance(d, int | float) and 0 < d <= max_abort for d in abort_days):
            yield Violation(
                f"bucket {bucket.name}: no enabled lifecycle rule aborts incomplete multipart uploads "
                f"within {shown(max_abort)} days",
                bucket.urn,
            )
        if not any(isinstance(d, int | float) and 0 < d <= max_noncurrent for d in noncurrent_days):
            yield Violation(
                f"bucket {bucket.name}: no enabled lifecycle rule expires noncurrent versions "
                f"within {shown(max_noncurrent)} days",
                bucket.urn,
            )


RULES = (
    Rule(
        name="s3-public-access-blocked",
        description="Every S3 bucket has a public access block with all four settings on.",
        enforcement="mandatory",
        remediation="Add aws.s3.BucketPublicAccessBlock with block/ignore public ACLs and policies all True.",
        check_stack=check_public_access_block,
    ),
    Rule(
        name="s3-encryption",
        description="Every S3 bucket has server-side encryption configured.",
        enforcement="mandatory",
        remediation="Add aws.s3.BucketServerSideEncryptionConfiguration (aws:kms or AES256).",
        config={
            "allowedAlgorithms": {
                "type": "array",
                "items": {"type": "string"},
                "default": ["aws:kms", "aws:kms:dsse", "AES256"],
                "description": "Accepted sseAlgorithm values.",
            }
        },
        check_stack=check_encryption,
    ),
    Rule(
        name="s3-tls-only",
        description="Every S3 bucket's policy denies requests that do not use TLS.",
        enforcement="mandatory",
        remediation='Add a BucketPolicy statement: Deny s3:* to "*" on the bucket and bucket/* '
        'when {"Bool": {"aws:SecureTransport": "false"}}.',
        check_stack=check_tls_only,
    ),
    Rule(
        name="s3-lifecycle",
        description="Every S3 bucket aborts incomplete multipart uploads and expires noncurrent versions.",
        enforcement="mandatory",
        remediation="Add aws.s3.BucketLifecycleConfiguration rules with abortIncompleteMultipartUpload "
        "and noncurrentVersionExpiration.",
        config={
            "maxAbortIncompleteMultipartDays": {
                "type": "integer",
                "minimum": 1,
                "default": 7,
                "description": "Incomplete multipart uploads must be aborted within this many days.",
            },
            "maxNoncurrentVersionDays": {
                "type": "integer",
                "minimum": 1,
                "default": 90,
                "description": "Noncurrent object versions must expire within this many days.",
            },
        },
        check_stack=check_lifecycle,
    ),
)
