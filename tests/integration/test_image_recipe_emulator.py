"""`mlflow-stack image build` against the AWS API emulator (a moto server process on 127.0.0.1).

The recipe's boto3 reaches the emulator only through the environment (AWS_ENDPOINT_URL and dummy
credentials), as it would reach AWS; docker is faked (no Docker engine here). The repository is
read back with separate clients: created once with the promised settings, reused by the next run.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import boto3
import pytest

from deploy import image as recipe
from infra.compute.image import image_tag
from local import s3_emulator

pytestmark = pytest.mark.integration

ACCOUNT = "307946651234"  # conftest.EMULATOR_ACCOUNT
REGION = "eu-west-1"


@pytest.fixture
def ecr(aws_environment: Any) -> Any:
    """An emptied emulator the recipe's boto3 reaches through the environment only, and a separate
    ECR client to read the result back."""
    return aws_environment("ecr", REGION)


class FakeDocker:
    """Answers like docker with buildx; records the commands; writes no metadata (no digest)."""

    def __init__(self) -> None:
        self.commands: list[list[str]] = []

    def __call__(
        self, argv: Sequence[str], *, stdin: bytes | None = None, capture: bool = False
    ) -> subprocess.CompletedProcess[bytes]:
        self.commands.append(list(argv))
        return subprocess.CompletedProcess(list(argv), 0, b"", b"")


def _build(tmp_path: Path, **options: Any) -> tuple[recipe.BuildResult, FakeDocker, list[str]]:
    docker, logged = FakeDocker(), []
    result = recipe.build_image(region=REGION, run=docker, log=logged.append, root=_root(tmp_path), **options)
    return result, docker, logged


def _root(tmp_path: Path) -> Path:
    """A copy of the build context: buildx's metadata file goes under its build/."""
    root = tmp_path / "checkout"
    if not root.exists():
        for top in ("server", "lifecycle", "cli"):
            shutil.copytree(recipe.REPO_ROOT / top, root / top, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def test_the_repository_is_created_with_the_promised_settings_then_reused(ecr: Any, tmp_path: Path) -> None:
    first, docker, logged = _build(tmp_path, keep_untagged=7)
    registry = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com"  # the account comes from STS
    assert first.reference == f"{registry}/mlflow-stack-server:{image_tag(_root(tmp_path))}"
    assert first.pinned is None  # buildx reported no digest: only the tag form is printed
    assert f"created ECR repository {registry}/mlflow-stack-server" in logged
    assert [c[:3] for c in docker.commands] == [
        ["docker", "buildx", "version"],
        ["docker", "login", "--username"],
        ["docker", "buildx", "build"],
    ]

    [repository] = ecr.describe_repositories()["repositories"]
    assert repository["repositoryName"] == "mlflow-stack-server"
    assert repository["imageTagMutability"] == "IMMUTABLE"
    assert repository["imageScanningConfiguration"] == {"scanOnPush": True}
    assert repository["encryptionConfiguration"]["encryptionType"] == "AES256"
    policy = json.loads(ecr.get_lifecycle_policy(repositoryName="mlflow-stack-server")["lifecyclePolicyText"])
    assert policy["rules"] == [
        {
            "rulePriority": 1,
            "description": "keep the last 7 untagged images",
            "selection": {"tagStatus": "untagged", "countType": "imageCountMoreThan", "countNumber": 7},
            "action": {"type": "expire"},
        }
    ]

    # A second run finds it and changes nothing (not even a different --keep-untagged).
    second, _, logged = _build(tmp_path, keep_untagged=3)
    assert second.reference == first.reference
    assert f"reusing ECR repository {registry}/mlflow-stack-server" in logged
    assert [r["repositoryArn"] for r in ecr.describe_repositories()["repositories"]] == [
        repository["repositoryArn"]
    ]
    again = json.loads(ecr.get_lifecycle_policy(repositoryName="mlflow-stack-server")["lifecyclePolicyText"])
    assert again == policy


def test_a_named_repository_with_a_kms_key(ecr: Any, tmp_path: Path, emulator: str) -> None:
    kms = boto3.client(
        "kms",
        region_name=REGION,
        endpoint_url=emulator,
        aws_access_key_id=s3_emulator.DUMMY_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=s3_emulator.DUMMY_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    )
    key = kms.create_key()["KeyMetadata"]["Arn"]
    result, _, _ = _build(tmp_path, repository="team/mlflow", kms_key=key)
    assert "/team/mlflow:" in result.reference
    [repository] = ecr.describe_repositories(repositoryNames=["team/mlflow"])["repositories"]
    assert repository["encryptionConfiguration"] == {"encryptionType": "KMS", "kmsKey": key}
    assert repository["imageTagMutability"] == "IMMUTABLE"


def test_a_tag_already_in_the_repository_is_reused_with_its_digest(ecr: Any, tmp_path: Path) -> None:
    _build(tmp_path)
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "size": 2,
            "digest": "sha256:00",
        },
        "layers": [],
    }
    pushed = ecr.put_image(
        repositoryName="mlflow-stack-server",
        imageManifest=json.dumps(manifest),
        imageTag=image_tag(_root(tmp_path)),
    )["image"]["imageId"]["imageDigest"]

    result, docker, _ = _build(tmp_path)
    assert result.pinned == f"{result.reference}@{pushed}"
    assert docker.commands == [["docker", "buildx", "version"]]  # no login, no build, no re-push
