"""Bootstrap a self-managed Pulumi state backend on AWS: an S3 bucket for state, a KMS key for secrets.

`bootstrap_backend(bucket, alias, region)` converges, idempotently, to:

- an S3 bucket in `region`: versioning Enabled; default encryption SSE-KMS with the key below and the
  S3 Bucket Key on; all four public-access-block flags; ObjectOwnership BucketOwnerEnforced (ACLs off);
  a bucket policy statement denying any request not made over TLS; a lifecycle rule that expires
  noncurrent versions after 90 days, removes the delete markers they leave and aborts incomplete
  multipart uploads after 7 days;
- a symmetric KMS key (default key policy: the account's IAM policies decide who may use it) with
  yearly rotation enabled, under `alias/<alias>`. An existing alias is reused, never a second key.

Every setting is read first and written only when it differs, so a second run changes nothing and
says so, and a run after a half-finished one (a bare bucket, a key whose alias was never created)
completes it. Settings other than ours (other lifecycle rules, other policy statements) are kept.

Why SSE-KMS and not AES256 for the state bucket: the state holds every resource's inputs and outputs
(only values marked secret are encrypted by the secrets provider). With the kit's key, reading state
needs both S3 and KMS permission, every read is in CloudTrail under one key, and it is the same key
the team already needs for `awskms://` secrets, so there is one grant to manage, not two. The Bucket
Key keeps KMS request costs flat however often Pulumi rewrites the checkpoint.

Choosing where state and secrets live (pick one):

- **This command (S3 + `awskms://`)** — state stays in your account, access is plain IAM, no third
  party; you run the backups (versioning here) and Pulumi's DIY backend locks with lock files.
- **Pulumi Cloud** — `pulumi login` with no URL: hosted state with transactional updates, history,
  RBAC and audit log, and per-stack secret keys managed by Pulumi; no bucket or key to bootstrap.
  Pick it when your organisation already uses or may use Pulumi Cloud.
- **The passphrase secrets provider** — `pulumi stack init --secrets-provider passphrase`, with the
  passphrase in `PULUMI_CONFIG_PASSPHRASE` or a file named by `PULUMI_CONFIG_PASSPHRASE_FILE`. It
  needs nothing in AWS, but every teammate and CI job must hold the same long-lived shared secret;
  it cannot be revoked for one person, rotating it means re-encrypting every stack, and its use is
  not audited. Fine for one person's sandbox, weaker for a team: prefer `awskms://`.

Pulumi's URL formats: https://www.pulumi.com/docs/iac/operations/stack-management/using-a-diy-backend/
(`s3://<bucket>?region=<r>&awssdk=v2`) and https://www.pulumi.com/docs/iac/concepts/secrets/
(`awskms://alias/<name>?region=<r>`, "Available encryption providers").

Why this file is long (~640 lines): it is one transaction-like run. Every AWS call goes through
`_Run`, which records what was already changed so that a refusal halfway can say exactly that, and
the order of work (validate, bucket ownership and region, key, then each bucket setting) must stay
readable top to bottom; splitting the bucket and key steps into modules would spread that record.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

DEFAULT_ALIAS = "pulumi-mlflow-stack"
NONCURRENT_VERSION_DAYS = 90
ABORT_MULTIPART_DAYS = 7
LIFECYCLE_RULE_ID = "pulumi-state-noncurrent-versions"
TLS_ONLY_SID = "DenyInsecureTransport"
# Lets a later run find a key whose alias was never created (a run stopped between the two calls).
ALIAS_TAG_KEY = "mlflow-stack:pulumi-secrets-alias"
KEY_DESCRIPTION = "mlflow-stack: encrypts Pulumi stack secrets and the Pulumi state bucket"

# https://docs.aws.amazon.com/AmazonS3/latest/userguide/bucketnamingrules.html
_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_IP_ADDRESS = re.compile(r"^\d+\.\d+\.\d+\.\d+$")
_RESERVED_BUCKET_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_RESERVED_BUCKET_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")
# https://docs.aws.amazon.com/kms/latest/APIReference/API_CreateAlias.html (AliasName)
_ALIAS_NAME = re.compile(r"^[a-zA-Z0-9/_-]{1,250}$")
_REGION = re.compile(r"^[a-z]{2,4}(-[a-z]+)+-\d+$")  # us-east-1, us-gov-west-1, eusc-de-east-1

# The IAM action each call needs, for "AccessDenied" messages (the API name and the action differ).
# https://docs.aws.amazon.com/AmazonS3/latest/userguide/using-with-s3-policy-actions.html
# https://docs.aws.amazon.com/kms/latest/developerguide/kms-api-permissions-reference.html
IAM_ACTIONS: dict[str, str] = {
    "HeadBucket": "s3:ListBucket",
    "GetBucketLocation": "s3:GetBucketLocation",
    "CreateBucket": "s3:CreateBucket",
    "GetBucketOwnershipControls": "s3:GetBucketOwnershipControls",
    "PutBucketOwnershipControls": "s3:PutBucketOwnershipControls",
    "GetPublicAccessBlock": "s3:GetBucketPublicAccessBlock",
    "PutPublicAccessBlock": "s3:PutBucketPublicAccessBlock",
    "GetBucketEncryption": "s3:GetEncryptionConfiguration",
    "PutBucketEncryption": "s3:PutEncryptionConfiguration",
    "GetBucketVersioning": "s3:GetBucketVersioning",
    "PutBucketVersioning": "s3:PutBucketVersioning",
    "GetBucketLifecycleConfiguration": "s3:GetLifecycleConfiguration",
    "PutBucketLifecycleConfiguration": "s3:PutLifecycleConfiguration",
    "GetBucketPolicy": "s3:GetBucketPolicy",
    "PutBucketPolicy": "s3:PutBucketPolicy",
    "DescribeKey": "kms:DescribeKey",
    "CreateKey": "kms:CreateKey and kms:TagResource",
    "CreateAlias": "kms:CreateAlias (on the alias and the key)",
    "ListKeys": "kms:ListKeys",
    "ListResourceTags": "kms:ListResourceTags",
    "GetKeyRotationStatus": "kms:GetKeyRotationStatus",
    "EnableKeyRotation": "kms:EnableKeyRotation",
}
_ACCESS_DENIED = {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "Forbidden", "403"}
_NO_CREDENTIALS_FIX = (
    "no usable AWS credentials: sign in (e.g. `aws sso login --profile NAME` and `export AWS_PROFILE=NAME`) "
    "or set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
)


class BackendError(Exception):
    """AWS refused a call, or the account holds something we must not touch. `done` lists what this run
    had already changed, so the user knows a rerun (after the fix) will complete the rest."""

    def __init__(self, message: str, done: list[str] | None = None) -> None:
        super().__init__(message)
        self.done = list(done or [])


@dataclass(frozen=True)
class BackendResult:
    bucket: str
    region: str
    account: str
    kms_key_arn: str
    kms_alias: str  # "alias/<name>"
    changes: list[str] = field(default_factory=list)

    @property
    def backend_url(self) -> str:
        return backend_url(self.bucket, self.region)

    @property
    def secrets_provider(self) -> str:
        return secrets_provider_url(self.kms_alias, self.region)

    def next_commands(self, stack: str = "<stack>") -> list[str]:
        return next_commands(self.bucket, self.kms_alias, self.region, stack)

    def to_json(self, stack: str = "<stack>") -> dict[str, Any]:
        login, stack_init = self.next_commands(stack)
        return {
            "bucket": self.bucket,
            "region": self.region,
            "account": self.account,
            "kms_key_arn": self.kms_key_arn,
            "kms_alias": self.kms_alias,
            "backend_url": self.backend_url,
            "secrets_provider": self.secrets_provider,
            "changed": bool(self.changes),
            "changes": list(self.changes),
            "next": {"login": login, "stack_init": stack_init},
        }


# --- option checks (pure) -------------------------------------------------------------------------


def bucket_name_problem(name: str) -> str | None:
    """Why `name` cannot be an S3 general purpose bucket name, or None. Rules from
    https://docs.aws.amazon.com/AmazonS3/latest/userguide/bucketnamingrules.html"""
    if not _BUCKET_NAME.match(name):
        return (
            "must be 3-63 characters of lowercase letters, digits, dots and hyphens, "
            "starting and ending with a letter or digit"
        )
    if ".." in name:
        return "must not contain two adjacent dots"
    if _IP_ADDRESS.match(name):
        return "must not be formatted as an IP address"
    if name.startswith(_RESERVED_BUCKET_PREFIXES) or name.endswith(_RESERVED_BUCKET_SUFFIXES):
        return "uses a prefix or suffix AWS reserves (xn--, sthree-, amzn-s3-demo-, -s3alias, --ol-s3, ...)"
    return None


def normalize_alias(alias: str) -> str:
    """`NAME` or `alias/NAME` -> `alias/NAME`; ValueError says why an alias is not allowed."""
    name = alias.removeprefix("alias/")
    if not _ALIAS_NAME.match(name):
        raise ValueError("must be 1-250 characters of letters, digits, '/', '_' and '-'")
    # https://docs.aws.amazon.com/kms/latest/developerguide/kms-alias.html: aws/ is reserved for
    # AWS managed keys, whose rotation and policy we could not manage.
    if name.lower().startswith("aws/"):
        raise ValueError("the alias/aws/ prefix is reserved for AWS managed keys")
    return f"alias/{name}"


def region_problem(region: str) -> str | None:
    if not _REGION.match(region):
        return "is not an AWS region name (like us-east-1 or eu-west-1)"
    return None


# --- what Pulumi is told (pure) -------------------------------------------------------------------


def backend_url(bucket: str, region: str) -> str:
    # awssdk=v2 with region, quoted for the shell's '&', exactly as Pulumi's DIY-backend page shows.
    return f"s3://{bucket}?region={region}&awssdk=v2"


def secrets_provider_url(alias: str, region: str) -> str:
    return f"awskms://{alias}?region={region}"


def next_commands(bucket: str, alias: str, region: str, stack: str = "<stack>") -> list[str]:
    return [
        f"pulumi login '{backend_url(bucket, region)}'",
        f"pulumi stack init {stack} --secrets-provider '{secrets_provider_url(alias, region)}'",
    ]


# --- the desired bucket settings (pure) -----------------------------------------------------------


def lifecycle_rule() -> dict[str, Any]:
    """Pulumi writes a new version of the checkpoint on every update, and creates and deletes a lock
    object each time; without this rule old versions and delete markers pile up forever.
    https://docs.aws.amazon.com/AmazonS3/latest/userguide/lifecycle-configuration-examples.html
    (noncurrent expiration with ExpiredObjectDeleteMarker; aborting incomplete multipart uploads)."""
    return {
        "ID": LIFECYCLE_RULE_ID,
        "Filter": {"Prefix": ""},
        "Status": "Enabled",
        "NoncurrentVersionExpiration": {"NoncurrentDays": NONCURRENT_VERSION_DAYS},
        "Expiration": {"ExpiredObjectDeleteMarker": True},
        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": ABORT_MULTIPART_DAYS},
    }


def tls_only_statement(bucket_arn: str) -> dict[str, Any]:
    """https://docs.aws.amazon.com/AmazonS3/latest/userguide/security-best-practices.html
    (enforce encryption in transit: deny when aws:SecureTransport is false). A Deny for "*" is not
    "public" to BlockPublicPolicy, so it coexists with the public access block."""
    return {
        "Sid": TLS_ONLY_SID,
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:*",
        "Resource": [bucket_arn, f"{bucket_arn}/*"],
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
    }


PUBLIC_ACCESS_BLOCK = {
    "BlockPublicAcls": True,
    "IgnorePublicAcls": True,
    "BlockPublicPolicy": True,
    "RestrictPublicBuckets": True,
}


def _same_lifecycle_rule(existing: dict[str, Any], wanted: dict[str, Any]) -> bool:
    def whole_bucket(rule: dict[str, Any]) -> bool:
        # S3 may hand an empty filter back as {} or {"Prefix": ""}, or as a legacy rule-level Prefix;
        # a filter with a tag, a size or a non-empty prefix would leave part of the bucket uncovered.
        return rule.get("Filter", {}) in ({}, {"Prefix": ""}) and rule.get("Prefix", "") == ""

    return (
        whole_bucket(existing)
        and existing.get("Status") == wanted["Status"]
        and existing.get("NoncurrentVersionExpiration", {}).get("NoncurrentDays")
        == wanted["NoncurrentVersionExpiration"]["NoncurrentDays"]
        and "NewerNoncurrentVersions" not in existing.get("NoncurrentVersionExpiration", {})
        and existing.get("Expiration") == wanted["Expiration"]
        and existing.get("AbortIncompleteMultipartUpload") == wanted["AbortIncompleteMultipartUpload"]
    )


def _same_statement(existing: dict[str, Any], wanted: dict[str, Any]) -> bool:
    def canonical(statement: dict[str, Any]) -> dict[str, Any]:
        out = dict(statement)
        for key in ("Action", "Resource"):
            value = out.get(key)
            out[key] = sorted([value] if isinstance(value, str) else value or [])
        if out.get("Principal") == {"AWS": "*"}:
            out["Principal"] = "*"
        return out

    return canonical(existing) == canonical(wanted)


# --- talking to AWS -------------------------------------------------------------------------------

_BAD_CREDENTIALS = {
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "ExpiredToken",
    "ExpiredTokenException",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
}


def _error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


@dataclass(frozen=True)
class _Refusal:
    code: str
    message: str


class _Run:
    """One bootstrap run: the clients, and the changes made so far (for the report and for errors)."""

    def __init__(self, session: Any, region: str) -> None:
        self.session = session
        self.region = region
        self.s3 = session.client("s3", region_name=region)
        self.kms = session.client("kms", region_name=region)
        self.sts = session.client("sts", region_name=region)
        self.changes: list[str] = []

    def attempt(self, client: Any, operation: str, **kwargs: Any) -> tuple[Any, _Refusal | None]:
        """`client.<operation>(**kwargs)` as (response, None), or (None, refusal) when AWS said no.
        Missing or rejected credentials are never an answer about the resource: they raise."""
        from botocore import xform_name
        from botocore.exceptions import ClientError, NoCredentialsError, PartialCredentialsError

        try:
            return getattr(client, xform_name(operation))(**kwargs), None
        except ClientError as exc:
            refusal = _Refusal(_error_code(exc), str(exc))
            if refusal.code in _BAD_CREDENTIALS:
                raise BackendError(self.explain(operation, refusal), self.changes) from exc
            return None, refusal
        except (NoCredentialsError, PartialCredentialsError) as exc:
            raise BackendError(f"{operation}: {_NO_CREDENTIALS_FIX}", self.changes) from exc

    def call(self, client: Any, operation: str, *, missing: tuple[str, ...] = (), **kwargs: Any) -> Any:
        """Like `attempt`, but None for the error codes in `missing` ("not configured yet") and a
        BackendError naming the call and the fix for any other refusal."""
        response, refusal = self.attempt(client, operation, **kwargs)
        if refusal is None:
            return response
        if refusal.code in missing:
            return None
        raise BackendError(self.explain(operation, refusal), self.changes)

    @staticmethod
    def explain(operation: str, refusal: _Refusal) -> str:
        code, said = refusal.code, refusal.message
        if code in _ACCESS_DENIED:
            action = IAM_ACTIONS.get(operation, "the matching IAM action")
            return (
                f"{operation} was denied ({code}): grant {action} to the identity you are using "
                f"(or have an account admin run this command); AWS said: {said}"
            )
        if code in _BAD_CREDENTIALS:
            return f"{operation} failed ({code}): {_NO_CREDENTIALS_FIX}; AWS said: {said}"
        if code == "InvalidBucketAclWithObjectOwnership":
            return (
                f"{operation} failed ({code}): the bucket's ACL grants access to others; remove those "
                f"grants (aws s3api put-bucket-acl --acl private) and rerun; AWS said: {said}"
            )
        return f"{operation} failed ({code}); AWS said: {said}"


def _partition(session: Any, region: str) -> str:
    try:
        return str(session.get_partition_for_region(region))
    except Exception:  # a region newer than botocore's table: the commercial partition
        return "aws"


# --- the KMS key ----------------------------------------------------------------------------------


def _find_tagged_key(run: _Run, alias: str) -> dict[str, Any] | None:
    """An enabled key this tool created for `alias` whose alias was never created (an interrupted
    run), so that a rerun completes it instead of leaving an orphan key behind."""
    from botocore.exceptions import ClientError

    marker = {"TagKey": ALIAS_TAG_KEY, "TagValue": alias}
    try:
        key_ids = [k["KeyId"] for page in run.kms.get_paginator("list_keys").paginate() for k in page["Keys"]]
    except ClientError:
        return None  # only a convenience: without kms:ListKeys, a new key is created instead
    for key_id in key_ids:
        tags, refusal = run.attempt(run.kms, "ListResourceTags", KeyId=key_id)
        if refusal is not None or marker not in tags.get("Tags", []):
            continue  # not ours (a key whose tags we may not read is not ours to reuse either)
        metadata = run.call(run.kms, "DescribeKey", KeyId=key_id)["KeyMetadata"]
        if metadata.get("KeyState") == "Enabled":
            return dict(metadata)
    return None


def _ensure_key(run: _Run, alias: str) -> str:
    described = run.call(run.kms, "DescribeKey", missing=("NotFoundException",), KeyId=alias)
    if described is not None:
        metadata = described["KeyMetadata"]
        _check_existing_key(alias, metadata, run.changes)
    else:
        metadata = _find_tagged_key(run, alias)
        if metadata is None:
            metadata = run.call(
                run.kms,
                "CreateKey",
                Description=KEY_DESCRIPTION,
                KeySpec="SYMMETRIC_DEFAULT",
                KeyUsage="ENCRYPT_DECRYPT",
                Tags=[{"TagKey": ALIAS_TAG_KEY, "TagValue": alias}],
            )["KeyMetadata"]
            run.changes.append(f"created KMS key {metadata['Arn']}")
        else:
            run.changes.append(f"reused KMS key {metadata['Arn']} (left by an interrupted run)")
        run.call(run.kms, "CreateAlias", AliasName=alias, TargetKeyId=metadata["KeyId"])
        run.changes.append(f"created alias {alias} for KMS key {metadata['KeyId']}")

    status = run.call(run.kms, "GetKeyRotationStatus", KeyId=metadata["KeyId"])
    if not status.get("KeyRotationEnabled"):
        # https://docs.aws.amazon.com/kms/latest/APIReference/API_EnableKeyRotation.html (yearly by default)
        run.call(run.kms, "EnableKeyRotation", KeyId=metadata["KeyId"])
        run.changes.append(f"enabled yearly rotation of KMS key {metadata['KeyId']}")
    return str(metadata["Arn"])


def _check_existing_key(alias: str, metadata: dict[str, Any], done: list[str]) -> None:
    """An existing alias is reused, never replaced; refuse one whose key cannot do the job."""
    key_id, state = metadata["KeyId"], metadata.get("KeyState")
    if metadata.get("KeyManager") == "AWS":
        raise BackendError(f"{alias} names an AWS managed key; choose another --kms-alias", done)
    if state == "PendingDeletion":
        raise BackendError(
            f"{alias} points to KMS key {key_id}, which is scheduled for deletion: cancel that "
            f"(aws kms cancel-key-deletion --key-id {key_id} && aws kms enable-key --key-id {key_id}) "
            "or choose another --kms-alias",
            done,
        )
    if state != "Enabled":
        raise BackendError(
            f"{alias} points to KMS key {key_id}, which is {state}: enable it "
            f"(aws kms enable-key --key-id {key_id}) or choose another --kms-alias",
            done,
        )
    spec, usage = metadata.get("KeySpec", "SYMMETRIC_DEFAULT"), metadata.get("KeyUsage", "ENCRYPT_DECRYPT")
    if (spec, usage) != ("SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT"):
        raise BackendError(
            f"{alias} points to a {spec}/{usage} key; Pulumi's awskms provider and S3 need a "
            "SYMMETRIC_DEFAULT/ENCRYPT_DECRYPT key: choose another --kms-alias",
            done,
        )


# --- the bucket -----------------------------------------------------------------------------------


def _taken(bucket: str, evidence: str) -> str:
    return (
        f"bucket {bucket} already exists and is not yours ({evidence}): S3 bucket names are global and "
        "another AWS account owns this one (or your identity lacks s3:ListBucket on it); "
        "choose another --bucket"
    )


def _ensure_bucket(run: _Run, bucket: str, account: str) -> None:
    # HeadBucket first: in us-east-1, CreateBucket on a bucket you already own answers 200 OK (and
    # resets its ACLs), so creating blindly could not tell "created" from "was already there".
    # https://docs.aws.amazon.com/AmazonS3/latest/API/API_CreateBucket.html (BucketAlreadyOwnedByYou)
    # ExpectedBucketOwner: a bucket that another account merely shares with us answers 403, so we
    # never reconfigure someone else's bucket.
    _, refusal = run.attempt(run.s3, "HeadBucket", Bucket=bucket, ExpectedBucketOwner=account)
    if refusal is None:
        _check_bucket_region(run, bucket, account)
    elif refusal.code in ("403", "Forbidden", "AccessDenied"):
        raise BackendError(_taken(bucket, f"HeadBucket answered {refusal.code}"), run.changes)
    elif refusal.code in ("404", "NoSuchBucket", "NotFound"):
        _create_bucket(run, bucket)
    else:
        raise BackendError(run.explain("HeadBucket", refusal), run.changes)


def _check_bucket_region(run: _Run, bucket: str, account: str) -> None:
    location = run.call(run.s3, "GetBucketLocation", Bucket=bucket, ExpectedBucketOwner=account)
    # GetBucketLocation answers None for us-east-1 and "EU" for the oldest eu-west-1 buckets.
    actual = location.get("LocationConstraint") or "us-east-1"
    actual = "eu-west-1" if actual == "EU" else actual
    if actual != run.region:
        raise BackendError(
            f"bucket {bucket} already exists in {actual}, not {run.region}: rerun with "
            f"--region {actual} (the key and the URLs given to Pulumi must be in the bucket's region) "
            "or choose another --bucket",
            run.changes,
        )


def _create_bucket(run: _Run, bucket: str) -> None:
    kwargs: dict[str, Any] = {"Bucket": bucket}
    # us-east-1 takes no LocationConstraint (InvalidLocationConstraint); every other region needs one
    # (IllegalLocationConstraintException). https://docs.aws.amazon.com/AmazonS3/latest/API/API_CreateBucket.html
    if run.region != "us-east-1":
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": run.region}
    _, refusal = run.attempt(run.s3, "CreateBucket", **kwargs)
    if refusal is None:
        run.changes.append(f"created bucket {bucket} in {run.region}")
    elif refusal.code == "BucketAlreadyExists":
        raise BackendError(_taken(bucket, "CreateBucket answered BucketAlreadyExists"), run.changes)
    elif refusal.code != "BucketAlreadyOwnedByYou":  # that one: created by a parallel run, fine
        raise BackendError(run.explain("CreateBucket", refusal), run.changes)


def _ensure_ownership(run: _Run, bucket: str) -> None:
    # https://docs.aws.amazon.com/AmazonS3/latest/userguide/about-object-ownership.html
    found = run.call(
        run.s3, "GetBucketOwnershipControls", missing=("OwnershipControlsNotFoundError",), Bucket=bucket
    )
    rules = (found or {}).get("OwnershipControls", {}).get("Rules", [])
    current = rules[0].get("ObjectOwnership") if rules else None
    if current != "BucketOwnerEnforced":
        run.call(
            run.s3,
            "PutBucketOwnershipControls",
            Bucket=bucket,
            OwnershipControls={"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]},
        )
        run.changes.append(f"object ownership: BucketOwnerEnforced, ACLs disabled (was {current or 'unset'})")


def _ensure_public_access_block(run: _Run, bucket: str) -> None:
    # https://docs.aws.amazon.com/AmazonS3/latest/userguide/access-control-block-public-access.html
    found = run.call(
        run.s3, "GetPublicAccessBlock", missing=("NoSuchPublicAccessBlockConfiguration",), Bucket=bucket
    )
    current = (found or {}).get("PublicAccessBlockConfiguration", {})
    off = [flag for flag, value in PUBLIC_ACCESS_BLOCK.items() if current.get(flag) is not value]
    if off:
        run.call(
            run.s3, "PutPublicAccessBlock", Bucket=bucket, PublicAccessBlockConfiguration=PUBLIC_ACCESS_BLOCK
        )
        run.changes.append(f"public access block: all four flags on (were off: {', '.join(off)})")


def _ensure_encryption(run: _Run, bucket: str, key_arn: str) -> None:
    # The key's ARN, not its alias: S3 resolves an alias in the *writer's* account, and the ARN keeps
    # the setting meaning the same key even if the alias is later repointed.
    # https://docs.aws.amazon.com/AmazonS3/latest/userguide/bucket-key.html (BucketKeyEnabled)
    found = run.call(
        run.s3,
        "GetBucketEncryption",
        missing=("ServerSideEncryptionConfigurationNotFoundError",),
        Bucket=bucket,
    )
    rules = (found or {}).get("ServerSideEncryptionConfiguration", {}).get("Rules", [])
    default = rules[0].get("ApplyServerSideEncryptionByDefault", {}) if rules else {}
    key_id = key_arn.rsplit("/", 1)[-1]
    ok = (
        len(rules) == 1
        and default.get("SSEAlgorithm") == "aws:kms"
        and default.get("KMSMasterKeyID") in (key_arn, key_id)
        and rules[0].get("BucketKeyEnabled") is True
    )
    if not ok:
        run.call(
            run.s3,
            "PutBucketEncryption",
            Bucket=bucket,
            ServerSideEncryptionConfiguration={
                "Rules": [
                    {
                        "ApplyServerSideEncryptionByDefault": {
                            "SSEAlgorithm": "aws:kms",
                            "KMSMasterKeyID": key_arn,
                        },
                        "BucketKeyEnabled": True,
                    }
                ]
            },
        )
        was = default.get("SSEAlgorithm", "none")
        run.changes.append(f"default encryption: SSE-KMS with {key_arn}, bucket key on (was {was})")


def _ensure_versioning(run: _Run, bucket: str) -> None:
    current = run.call(run.s3, "GetBucketVersioning", Bucket=bucket).get("Status")
    if current != "Enabled":
        run.call(run.s3, "PutBucketVersioning", Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
        run.changes.append(f"versioning: Enabled (was {current or 'never enabled'})")


def _ensure_lifecycle(run: _Run, bucket: str) -> None:
    found = run.call(
        run.s3, "GetBucketLifecycleConfiguration", missing=("NoSuchLifecycleConfiguration",), Bucket=bucket
    )
    rules = list((found or {}).get("Rules", []))
    wanted = lifecycle_rule()
    ours = [rule for rule in rules if rule.get("ID") == LIFECYCLE_RULE_ID]
    if len(ours) == 1 and _same_lifecycle_rule(ours[0], wanted):
        return
    # A put replaces the whole configuration: keep the rules someone else added.
    kept = [rule for rule in rules if rule.get("ID") != LIFECYCLE_RULE_ID]
    kwargs: dict[str, Any] = {"Bucket": bucket, "LifecycleConfiguration": {"Rules": [*kept, wanted]}}
    if found and found.get("TransitionDefaultMinimumObjectSize"):
        kwargs["TransitionDefaultMinimumObjectSize"] = found["TransitionDefaultMinimumObjectSize"]
    run.call(run.s3, "PutBucketLifecycleConfiguration", **kwargs)
    run.changes.append(
        f"lifecycle rule {LIFECYCLE_RULE_ID}: noncurrent versions expire after "
        f"{NONCURRENT_VERSION_DAYS} days, incomplete multipart uploads are aborted after "
        f"{ABORT_MULTIPART_DAYS} days" + (" (replaced a different rule of that name)" if ours else "")
    )


def _ensure_tls_only_policy(run: _Run, bucket: str) -> None:
    found = run.call(run.s3, "GetBucketPolicy", missing=("NoSuchBucketPolicy",), Bucket=bucket)
    policy = json.loads(found["Policy"]) if found else {"Version": "2012-10-17", "Statement": []}
    statements = policy.get("Statement", [])
    statements = [statements] if isinstance(statements, dict) else list(statements)
    wanted = tls_only_statement(f"arn:{_partition(run.session, run.region)}:s3:::{bucket}")
    ours = [s for s in statements if s.get("Sid") == TLS_ONLY_SID]
    if len(ours) == 1 and _same_statement(ours[0], wanted):
        return
    # Keep every other statement (e.g. cross-account access someone granted on purpose).
    policy["Statement"] = [s for s in statements if s.get("Sid") != TLS_ONLY_SID] + [wanted]
    run.call(run.s3, "PutBucketPolicy", Bucket=bucket, Policy=json.dumps(policy))
    run.changes.append(f"bucket policy: statement {TLS_ONLY_SID} denies requests without TLS")


def bootstrap_backend(
    bucket: str,
    alias: str,
    region: str,
    *,
    session: Any = None,
) -> BackendResult:
    """Create or complete the state bucket and the secrets key; see the module docstring.

    `alias` is `alias/<name>` (see `normalize_alias`). Credentials and endpoints come from the usual
    boto3 chain (AWS_PROFILE, AWS_ENDPOINT_URL, ...). Raises BackendError when AWS refuses something.
    """
    import boto3

    run = _Run(session or boto3.session.Session(), region)
    account = str(run.call(run.sts, "GetCallerIdentity")["Account"])
    # The bucket's name first: a name taken by another account is the likeliest failure, and it
    # should stop the run before a key is created for nothing.
    _ensure_bucket(run, bucket, account)
    key_arn = _ensure_key(run, alias)
    # Ownership and the public access block before anything else lands in a new bucket.
    for step in (_ensure_ownership, _ensure_public_access_block):
        step(run, bucket)
    _ensure_encryption(run, bucket, key_arn)
    for step in (_ensure_versioning, _ensure_lifecycle, _ensure_tls_only_policy):
        step(run, bucket)
    return BackendResult(bucket, region, account, key_arn, alias, list(run.changes))
