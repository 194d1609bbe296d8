"""`mlflow-stack backend init` where the emulator cannot go: AWS refusing calls, a bucket name owned by
another account (moto answers HeadBucket for any account's bucket), a key scheduled for deletion,
no credentials at all, and the shapes real S3 returns for settings that are already right.

AWS is played by botocore's Stubber: every call the command makes must be one the test expects,
in order, so "no Put call" and "no KMS call" are checked, not assumed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from cli.main import main

ACCOUNT = "307946651234"
REGION = "us-east-1"
BUCKET = "acme-pulumi-state"
ALIAS = "alias/pulumi-mlflow-stack"
KEY_ID = "1234abcd-12ab-34cd-56ef-1234567890ab"
KEY_ARN = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/{KEY_ID}"


class FakeSession:
    """Stands in for boto3.session.Session: hands out the stubbed clients."""

    def __init__(self) -> None:
        self.region_name = REGION
        self.clients = {
            service: boto3.client(
                service,
                region_name=REGION,
                aws_access_key_id="stubbed",
                aws_secret_access_key="stubbed",  # noqa: S106 - Stubber answers; nothing is signed for AWS
            )
            for service in ("s3", "kms", "sts")
        }
        self.stubs = {service: Stubber(client) for service, client in self.clients.items()}

    def client(self, service: str, region_name: str | None = None) -> Any:
        assert region_name == REGION
        return self.clients[service]

    def get_partition_for_region(self, region: str) -> str:
        return "aws"


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSession]:
    session = FakeSession()
    monkeypatch.setattr(boto3.session, "Session", lambda *args, **kwargs: session)
    session.stubs["sts"].add_response(
        "get_caller_identity",
        {"Account": ACCOUNT, "Arn": f"arn:aws:iam::{ACCOUNT}:user/dev", "UserId": "AIDAEXAMPLEUSERID"},
    )
    for stub in session.stubs.values():
        stub.activate()
    yield session
    for stub in session.stubs.values():
        stub.assert_no_pending_responses()


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    try:
        code = main(["backend", "init", "--bucket", BUCKET, "--region", REGION, *args])
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def key_metadata(state: str = "Enabled") -> dict[str, Any]:
    return {
        "KeyId": KEY_ID,
        "Arn": KEY_ARN,
        "KeyState": state,
        "KeyManager": "CUSTOMER",
        "KeySpec": "SYMMETRIC_DEFAULT",
        "KeyUsage": "ENCRYPT_DECRYPT",
    }


def test_access_denied_names_the_call_the_iam_action_and_what_was_already_done(
    aws: FakeSession, capsys: pytest.CaptureFixture[str]
) -> None:
    s3, kms = aws.stubs["s3"], aws.stubs["kms"]
    s3.add_client_error("head_bucket", service_error_code="404", http_status_code=404)
    s3.add_response("create_bucket", {}, {"Bucket": BUCKET})
    kms.add_client_error("describe_key", service_error_code="NotFoundException", http_status_code=400)
    kms.add_response("list_keys", {"Keys": [], "Truncated": False})
    kms.add_client_error(
        "create_key",
        service_error_code="AccessDeniedException",
        service_message=f"User: arn:aws:iam::{ACCOUNT}:user/dev is not authorized to perform: kms:CreateKey",
        http_status_code=400,
    )

    code, out, err = run_cli(capsys)

    assert code == 1
    assert out == ""
    assert "CreateKey was denied (AccessDeniedException): grant kms:CreateKey and kms:TagResource" in err
    assert "is not authorized to perform: kms:CreateKey" in err
    assert "Changed before the failure (a rerun completes the rest):" in err
    assert f"  + created bucket {BUCKET} in {REGION}" in err


def test_a_bucket_owned_by_another_account_is_refused_before_any_key_is_made(
    aws: FakeSession, capsys: pytest.CaptureFixture[str]
) -> None:
    # With ExpectedBucketOwner set, S3 answers 403 for a bucket another account owns.
    aws.stubs["s3"].add_client_error(
        "head_bucket",
        service_error_code="403",
        http_status_code=403,
        expected_params={"Bucket": BUCKET, "ExpectedBucketOwner": ACCOUNT},
    )

    code, _out, err = run_cli(capsys)

    assert code == 1
    assert f"bucket {BUCKET} already exists and is not yours" in err
    assert "another AWS account owns this one" in err
    assert "choose another --bucket" in err
    # The kms stub has no responses queued: any KMS call would have failed the test.


def test_bucket_already_exists_from_create_bucket_is_said_clearly(
    aws: FakeSession, capsys: pytest.CaptureFixture[str]
) -> None:
    s3 = aws.stubs["s3"]
    s3.add_client_error("head_bucket", service_error_code="404", http_status_code=404)
    s3.add_client_error("create_bucket", service_error_code="BucketAlreadyExists", http_status_code=409)

    code, _out, err = run_cli(capsys)

    assert code == 1
    assert "CreateBucket answered BucketAlreadyExists" in err
    assert "choose another --bucket" in err


def test_an_alias_whose_key_is_pending_deletion_is_refused_with_the_fix(
    aws: FakeSession, capsys: pytest.CaptureFixture[str]
) -> None:
    aws.stubs["s3"].add_response("head_bucket", {})
    aws.stubs["s3"].add_response("get_bucket_location", {})  # us-east-1: no constraint
    aws.stubs["kms"].add_response(
        "describe_key", {"KeyMetadata": key_metadata("PendingDeletion")}, {"KeyId": ALIAS}
    )

    code, _out, err = run_cli(capsys)

    assert code == 1
    assert f"aws kms cancel-key-deletion --key-id {KEY_ID}" in err
    assert "--kms-alias" in err


def test_settings_already_right_in_real_s3_shapes_make_no_write(
    aws: FakeSession, capsys: pytest.CaptureFixture[str]
) -> None:
    # Real S3 may answer with the key ID instead of the ARN, an empty Filter, a policy Principal of
    # {"AWS": "*"} and list-valued Action: all mean "already done", so no Put* call may follow.
    s3, kms = aws.stubs["s3"], aws.stubs["kms"]
    s3.add_response("head_bucket", {})
    s3.add_response("get_bucket_location", {})  # us-east-1: no constraint
    kms.add_response("describe_key", {"KeyMetadata": key_metadata()})
    kms.add_response("get_key_rotation_status", {"KeyRotationEnabled": True})
    s3.add_response(
        "get_bucket_ownership_controls",
        {"OwnershipControls": {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}},
    )
    s3.add_response(
        "get_public_access_block",
        {
            "PublicAccessBlockConfiguration": {
                "BlockPublicAcls": True,
                "IgnorePublicAcls": True,
                "BlockPublicPolicy": True,
                "RestrictPublicBuckets": True,
            }
        },
    )
    s3.add_response(
        "get_bucket_encryption",
        {
            "ServerSideEncryptionConfiguration": {
                "Rules": [
                    {
                        "ApplyServerSideEncryptionByDefault": {
                            "SSEAlgorithm": "aws:kms",
                            "KMSMasterKeyID": KEY_ID,
                        },
                        "BucketKeyEnabled": True,
                    }
                ]
            }
        },
    )
    s3.add_response("get_bucket_versioning", {"Status": "Enabled"})
    s3.add_response(
        "get_bucket_lifecycle_configuration",
        {
            "Rules": [
                {
                    "ID": "pulumi-state-noncurrent-versions",
                    "Filter": {},
                    "Status": "Enabled",
                    "NoncurrentVersionExpiration": {"NoncurrentDays": 90},
                    "Expiration": {"ExpiredObjectDeleteMarker": True},
                    "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 7},
                }
            ]
        },
    )
    policy = {
        "Version": "2012-10-17",
        "Statement": {
            "Sid": "DenyInsecureTransport",
            "Effect": "Deny",
            "Principal": {"AWS": "*"},
            "Action": ["s3:*"],
            "Resource": [f"arn:aws:s3:::{BUCKET}/*", f"arn:aws:s3:::{BUCKET}"],
            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
        },
    }
    s3.add_response("get_bucket_policy", {"Policy": json.dumps(policy)})

    code, out, err = run_cli(capsys, "--json")

    assert code == 0, err
    report = json.loads(out)
    assert (report["changed"], report["changes"], report["kms_key_arn"]) == (False, [], KEY_ARN)


def test_no_credentials_is_an_aws_error_with_the_fix(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Real boto3, nothing to sign with: it fails before any request leaves the machine.
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # never reached; nothing leaves anyway

    code, out, err = run_cli(capsys)

    assert code == 1
    assert out == ""
    assert "GetCallerIdentity: no usable AWS credentials" in err
    assert "aws sso login" in err
