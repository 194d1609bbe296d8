"""`mlflow-stack backend init` against the AWS API emulator (a moto server process on 127.0.0.1).

The command runs through `cli.main.main([...])` exactly as a user would, with boto3 pointed at the
emulator only through the environment (AWS_ENDPOINT_URL and dummy credentials), which is also the
proof that both its S3 and its KMS clients honour that variable. Every setting is then read back
with separate boto3 clients. Each test starts from an emptied emulator.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from cli.main import main

pytestmark = pytest.mark.integration

ACCOUNT = "307946651234"  # conftest.EMULATOR_ACCOUNT


@pytest.fixture
def aws(aws_environment: Callable[..., Any]) -> Callable[..., Any]:
    """An emptied emulator that the command's boto3 reaches through the environment only; a client
    factory for reading the result back."""
    return aws_environment


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """`mlflow-stack backend init ARGS`: (exit code, stdout, stderr); argparse's exit 2 included."""
    try:
        code = main(["backend", "init", *args])
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def key_ids(aws: Callable[..., Any], region: str) -> set[str]:
    return {k["KeyId"] for k in aws("kms", region).list_keys()["Keys"]}


def assert_backend_complete(aws: Callable[..., Any], bucket: str, alias: str, region: str) -> str:
    """Everything `backend init` promises, read back from the emulator; returns the key's ARN."""
    s3, kms = aws("s3", region), aws("kms", region)

    key = kms.describe_key(KeyId=f"alias/{alias}")["KeyMetadata"]
    assert key["KeyState"] == "Enabled"
    assert (key["KeySpec"], key["KeyUsage"]) == ("SYMMETRIC_DEFAULT", "ENCRYPT_DECRYPT")
    assert key["Arn"].startswith(f"arn:aws:kms:{region}:{ACCOUNT}:key/")
    assert kms.get_key_rotation_status(KeyId=key["KeyId"])["KeyRotationEnabled"] is True
    aliases = kms.list_aliases(KeyId=key["KeyId"])["Aliases"]
    assert [a["AliasName"] for a in aliases] == [f"alias/{alias}"]

    assert (s3.get_bucket_location(Bucket=bucket)["LocationConstraint"] or "us-east-1") == region
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"

    rules = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
    assert rules == [
        {
            "ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key["Arn"]},
            "BucketKeyEnabled": True,
        }
    ]

    block = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
    assert block == {
        "BlockPublicAcls": True,
        "IgnorePublicAcls": True,
        "BlockPublicPolicy": True,
        "RestrictPublicBuckets": True,
    }
    ownership = s3.get_bucket_ownership_controls(Bucket=bucket)["OwnershipControls"]["Rules"]
    assert ownership == [{"ObjectOwnership": "BucketOwnerEnforced"}]

    policy = json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])
    denies_plain_http = [
        s
        for s in policy["Statement"]
        if s["Effect"] == "Deny"
        and s["Principal"] in ("*", {"AWS": "*"})
        and s["Action"] in ("s3:*", ["s3:*"])
        and s.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}}
        and set(s["Resource"]) == {f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"}
    ]
    assert len(denies_plain_http) == 1, policy

    lifecycle = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    ours = [r for r in lifecycle if r["ID"] == "pulumi-state-noncurrent-versions"]
    assert len(ours) == 1, lifecycle
    assert ours[0]["Status"] == "Enabled"
    assert ours[0]["NoncurrentVersionExpiration"]["NoncurrentDays"] == 90
    assert ours[0]["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 7}
    assert ours[0]["Expiration"] == {"ExpiredObjectDeleteMarker": True}
    assert ours[0].get("Filter", {}).get("Prefix", "") == ""
    return str(key["Arn"])


def next_lines(bucket: str, alias: str, region: str, stack: str = "<stack>") -> list[str]:
    return [
        f"pulumi login 's3://{bucket}?region={region}&awssdk=v2'",
        f"pulumi stack init {stack} --secrets-provider 'awskms://alias/{alias}?region={region}'",
    ]


def test_first_run_creates_everything_in_the_configured_region(
    aws: Callable[..., Any], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # No --region: boto3's configured region is used (us-east-1, where CreateBucket takes no
    # LocationConstraint), and the default alias.
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")

    code, out, err = run_cli(capsys, "--bucket", "acme-pulumi-state")

    assert code == 0, err
    key_arn = assert_backend_complete(aws, "acme-pulumi-state", "pulumi-mlflow-stack", "us-east-1")
    assert "created bucket acme-pulumi-state in us-east-1" in out
    assert f"created KMS key {key_arn}" in out
    assert "Nothing to change" not in out
    lines = out.splitlines()
    for expected in next_lines("acme-pulumi-state", "pulumi-mlflow-stack", "us-east-1"):
        assert f"  {expected}" in lines
    assert key_ids(aws, "us-east-1") == {key_arn.rsplit("/", 1)[-1]}


def test_second_run_changes_nothing_and_creates_no_second_key(
    aws: Callable[..., Any], capsys: pytest.CaptureFixture[str]
) -> None:
    args = ("--bucket", "acme-state-twice", "--kms-alias", "acme-secrets", "--region", "eu-west-1")
    assert run_cli(capsys, *args)[0] == 0
    keys_after_first = key_ids(aws, "eu-west-1")
    policy_after_first = aws("s3", "eu-west-1").get_bucket_policy(Bucket="acme-state-twice")["Policy"]

    code, out, err = run_cli(capsys, *args)

    assert code == 0, err
    assert "Nothing to change: the bucket and the key were already complete." in out
    assert "Changed:" not in out
    assert key_ids(aws, "eu-west-1") == keys_after_first
    assert len(keys_after_first) == 1
    assert aws("s3", "eu-west-1").get_bucket_policy(Bucket="acme-state-twice")["Policy"] == policy_after_first
    key_arn = assert_backend_complete(aws, "acme-state-twice", "acme-secrets", "eu-west-1")
    assert key_arn in out
    for expected in next_lines("acme-state-twice", "acme-secrets", "eu-west-1"):
        assert f"  {expected}" in out.splitlines()


def test_a_bare_bucket_is_completed_and_other_settings_are_kept(
    aws: Callable[..., Any], capsys: pytest.CaptureFixture[str]
) -> None:
    region = "eu-west-1"
    s3 = aws("s3", region)
    s3.create_bucket(Bucket="acme-half-made", CreateBucketConfiguration={"LocationConstraint": region})
    s3.put_bucket_versioning(Bucket="acme-half-made", VersioningConfiguration={"Status": "Suspended"})
    s3.put_bucket_encryption(
        Bucket="acme-half-made",
        ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
        },
    )
    s3.put_public_access_block(
        Bucket="acme-half-made",
        PublicAccessBlockConfiguration={
            "BlockPublicAcls": True,
            "IgnorePublicAcls": True,
            "BlockPublicPolicy": False,
            "RestrictPublicBuckets": False,
        },
    )
    someone_elses_rule = {
        "ID": "logs-to-glacier",
        "Filter": {"Prefix": "logs/"},
        "Status": "Enabled",
        "Transitions": [{"Days": 30, "StorageClass": "GLACIER"}],
    }
    s3.put_bucket_lifecycle_configuration(
        Bucket="acme-half-made", LifecycleConfiguration={"Rules": [someone_elses_rule]}
    )
    ci_read_access = {
        "Sid": "CiReadsState",
        "Effect": "Allow",
        "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:role/ci"},
        "Action": "s3:GetObject",
        "Resource": "arn:aws:s3:::acme-half-made/*",
    }
    s3.put_bucket_policy(
        Bucket="acme-half-made", Policy=json.dumps({"Version": "2012-10-17", "Statement": [ci_read_access]})
    )

    code, out, err = run_cli(capsys, "--bucket", "acme-half-made", "--kms-alias", "half", "--region", region)

    assert code == 0, err
    assert_backend_complete(aws, "acme-half-made", "half", region)
    assert "created bucket" not in out
    assert "versioning: Enabled (was Suspended)" in out
    assert "(was AES256)" in out
    assert "were off: BlockPublicPolicy, RestrictPublicBuckets" in out
    rules = {r["ID"]: r for r in s3.get_bucket_lifecycle_configuration(Bucket="acme-half-made")["Rules"]}
    assert rules["logs-to-glacier"]["Transitions"] == someone_elses_rule["Transitions"]
    statements = json.loads(s3.get_bucket_policy(Bucket="acme-half-made")["Policy"])["Statement"]
    assert ci_read_access in statements


def test_a_key_left_without_its_alias_is_reused_not_duplicated(
    aws: Callable[..., Any], capsys: pytest.CaptureFixture[str]
) -> None:
    # An earlier run stopped between CreateKey and CreateAlias: the key carries the tool's tag.
    kms = aws("kms", "us-west-2")
    orphan = kms.create_key(
        Description="left by an interrupted run",
        KeySpec="SYMMETRIC_DEFAULT",
        KeyUsage="ENCRYPT_DECRYPT",
        Tags=[{"TagKey": "mlflow-stack:pulumi-secrets-alias", "TagValue": "alias/resumed"}],
    )["KeyMetadata"]
    kms.create_key(Description="someone else's key, untagged")

    code, out, err = run_cli(
        capsys, "--bucket", "acme-resumed", "--kms-alias", "resumed", "--region", "us-west-2"
    )

    assert code == 0, err
    assert assert_backend_complete(aws, "acme-resumed", "resumed", "us-west-2") == orphan["Arn"]
    assert f"reused KMS key {orphan['Arn']}" in out
    assert len(key_ids(aws, "us-west-2")) == 2


def test_another_region_with_json_output(aws: Callable[..., Any], capsys: pytest.CaptureFixture[str]) -> None:
    region = "ap-southeast-2"
    code, out, err = run_cli(
        capsys, "--bucket", "acme-sydney-state", "--region", region, "--stack", "search-prod", "--json"
    )

    assert code == 0, err
    report = json.loads(out)
    key_arn = assert_backend_complete(aws, "acme-sydney-state", "pulumi-mlflow-stack", region)
    assert aws("s3", region).get_bucket_location(Bucket="acme-sydney-state")["LocationConstraint"] == region
    assert report["bucket"] == "acme-sydney-state"
    assert report["region"] == region
    assert report["account"] == ACCOUNT
    assert report["kms_key_arn"] == key_arn
    assert report["kms_alias"] == "alias/pulumi-mlflow-stack"
    assert report["changed"] is True
    assert f"created bucket acme-sydney-state in {region}" in report["changes"]
    login, stack_init = next_lines("acme-sydney-state", "pulumi-mlflow-stack", region, stack="search-prod")
    assert report["next"] == {"login": login, "stack_init": stack_init}
    assert report["backend_url"] == f"s3://acme-sydney-state?region={region}&awssdk=v2"
    assert report["secrets_provider"] == f"awskms://alias/pulumi-mlflow-stack?region={region}"

    again = json.loads(run_cli(capsys, "--bucket", "acme-sydney-state", "--region", region, "--json")[1])
    assert (again["changed"], again["changes"], again["kms_key_arn"]) == (False, [], key_arn)


def test_a_bucket_in_another_region_is_refused_naming_the_region(
    aws: Callable[..., Any], capsys: pytest.CaptureFixture[str]
) -> None:
    aws("s3", "eu-central-1").create_bucket(
        Bucket="acme-frankfurt", CreateBucketConfiguration={"LocationConstraint": "eu-central-1"}
    )

    code, out, err = run_cli(capsys, "--bucket", "acme-frankfurt", "--region", "us-east-1")

    assert code == 1
    assert out == ""
    assert "already exists in eu-central-1" in err
    assert "--region eu-central-1" in err
    assert key_ids(aws, "us-east-1") == set()  # stopped before creating a key for nothing


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--bucket", "Acme_State", "--region", "us-east-1"], "--bucket 'Acme_State'"),
        (["--bucket", "192.168.1.10", "--region", "us-east-1"], "--bucket '192.168.1.10'"),
        (["--bucket", "acme-state", "--kms-alias", "aws/s3", "--region", "us-east-1"], "alias/aws/ prefix"),
        (["--bucket", "acme-state", "--kms-alias", "bad alias!", "--region", "us-east-1"], "--kms-alias"),
        (["--bucket", "acme-state", "--region", "mars-1"], "--region 'mars-1'"),
        (["--bucket", "acme-state"], "pass --region"),
        (["--region", "us-east-1"], "--bucket"),
    ],
)
def test_bad_options_exit_2_naming_the_option(
    aws: Callable[..., Any], capsys: pytest.CaptureFixture[str], args: list[str], named: str
) -> None:
    # The fixture removed every region setting, so the no-region case has none to fall back on.
    code, out, err = run_cli(capsys, *args)

    assert code == 2
    assert named in err
    assert out == ""
    assert aws("s3", "us-east-1").list_buckets()["Buckets"] == []
    assert key_ids(aws, "us-east-1") == set()
