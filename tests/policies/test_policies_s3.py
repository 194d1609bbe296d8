"""S3 rules on crafted buckets: each companion missing or wrong fails the right rule."""

from __future__ import annotations

import json

from policy_helpers import res, violations

BUCKET = "aws:s3/bucket:Bucket"


def _tls_policy(bucket: str) -> str:
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Deny",
                    "Principal": "*",
                    "Action": "s3:*",
                    "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"],
                    "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                }
            ],
        }
    )


def good_bucket(name: str = "artifacts") -> list:
    return [
        res(BUCKET, name, bucket=name),
        res(
            "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock",
            f"{name}-pab",
            bucket=name,
            blockPublicAcls=True,
            blockPublicPolicy=True,
            ignorePublicAcls=True,
            restrictPublicBuckets=True,
        ),
        res(
            "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
            f"{name}-sse",
            bucket=name,
            rules=[{"applyServerSideEncryptionByDefault": {"sseAlgorithm": "aws:kms"}}],
        ),
        res("aws:s3/bucketPolicy:BucketPolicy", f"{name}-policy", bucket=name, policy=_tls_policy(name)),
        res(
            "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration",
            f"{name}-lifecycle",
            bucket=name,
            rules=[
                {
                    "id": "mpu",
                    "status": "Enabled",
                    "abortIncompleteMultipartUpload": {"daysAfterInitiation": 7},
                },
                {"id": "old", "status": "Enabled", "noncurrentVersionExpiration": {"noncurrentDays": 30}},
            ],
        ),
    ]


def _without(resources: list, suffix: str) -> list:
    return [r for r in resources if not r.name.endswith(suffix)]


def _replace(resources: list, suffix: str, replacement) -> list:
    return [replacement if r.name.endswith(suffix) else r for r in resources]


def test_a_fully_configured_bucket_passes_every_s3_rule():
    for rule in ("s3-public-access-blocked", "s3-encryption", "s3-tls-only", "s3-lifecycle"):
        assert violations(rule, good_bucket()) == [], rule


def test_public_access_block_missing_or_partial_fails():
    assert violations("s3-public-access-blocked", _without(good_bucket(), "-pab")) == [
        "bucket artifacts has no BucketPublicAccessBlock"
    ]
    partial = res(
        "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock",
        "artifacts-pab",
        bucket="artifacts",
        blockPublicAcls=True,
        blockPublicPolicy=False,
        ignorePublicAcls=True,
    )
    found = violations("s3-public-access-blocked", _replace(good_bucket(), "-pab", partial))
    assert found == [
        "bucket artifacts: public access block leaves blockPublicPolicy, restrictPublicBuckets off"
    ]


def test_a_companion_for_another_bucket_does_not_count():
    other = [r for r in good_bucket("other") if r.type != BUCKET]
    resources = [res(BUCKET, "artifacts", bucket="artifacts"), *other]
    assert len(violations("s3-public-access-blocked", resources)) == 1
    assert len(violations("s3-encryption", resources)) == 1


def test_encryption_missing_or_not_allowed_fails():
    assert "no default encryption" in violations("s3-encryption", _without(good_bucket(), "-sse"))[0]
    aes_only = {"allowedAlgorithms": ["aws:kms"]}
    sse_s3 = res(
        "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
        "artifacts-sse",
        bucket="artifacts",
        rules=[{"applyServerSideEncryptionByDefault": {"sseAlgorithm": "AES256"}}],
    )
    found = violations("s3-encryption", _replace(good_bucket(), "-sse", sse_s3), config=aes_only)
    assert "found: AES256" in found[0]


def test_bucket_policy_without_tls_deny_fails():
    assert violations("s3-tls-only", _without(good_bucket(), "-policy"))
    # Denying only the objects leaves bucket-level calls (ListBucket) over plain HTTP.
    objects_only = json.loads(_tls_policy("artifacts"))
    objects_only["Statement"][0]["Resource"] = "arn:aws:s3:::artifacts/*"
    weak = res(
        "aws:s3/bucketPolicy:BucketPolicy",
        "artifacts-policy",
        bucket="artifacts",
        policy=json.dumps(objects_only),
    )
    assert violations("s3-tls-only", _replace(good_bucket(), "-policy", weak))
    allow = json.loads(_tls_policy("artifacts"))
    allow["Statement"][0]["Effect"] = "Allow"
    wrong = res(
        "aws:s3/bucketPolicy:BucketPolicy", "artifacts-policy", bucket="artifacts", policy=json.dumps(allow)
    )
    assert violations("s3-tls-only", _replace(good_bucket(), "-policy", wrong))


def test_lifecycle_needs_both_rules_enabled_and_within_limits():
    only_expiry = res(
        "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration",
        "artifacts-lifecycle",
        bucket="artifacts",
        rules=[
            {"id": "logs", "status": "Enabled", "expiration": {"days": 90}},
            {"id": "mpu", "status": "Disabled", "abortIncompleteMultipartUpload": {"daysAfterInitiation": 7}},
        ],
    )
    found = violations("s3-lifecycle", _replace(good_bucket(), "-lifecycle", only_expiry))
    assert len(found) == 2
    assert "aborts incomplete multipart uploads within 7 days" in found[0]
    assert "expires noncurrent versions within 90 days" in found[1]
    strict = {"maxNoncurrentVersionDays": 14}
    assert violations("s3-lifecycle", good_bucket(), config=strict) == [
        "bucket artifacts: no enabled lifecycle rule expires noncurrent versions within 14 days"
    ]
