"""`mlflow-stack image build`: the exact docker commands, the secret's path, the failure messages,
and the staging stack's image reference, which must be what the recipe prints for this checkout.

Docker is faked (no Docker engine here); AWS is moto in-process. The repository settings against
a moto server process are in tests/integration/test_image_recipe_emulator.py.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from cli.main import main
from deploy import image as recipe
from infra.compute import image as stack_image
from preview.offline import load_stack_config, run_program

ACCOUNT = "123456789012"  # moto's default account, and the stack files' example account
REGION = "us-east-1"
DIGEST = "sha256:" + "ab" * 32
REGISTRY = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com"


@dataclass
class FakeDocker:
    """Records every call; `buildx build` writes buildx's --metadata-file like the real one."""

    root: Path
    buildx: bool = True
    login_ok: bool = True
    build_ok: bool = True
    calls: list[tuple[list[str], bytes | None]] = field(default_factory=list)

    def __call__(
        self, argv: Sequence[str], *, stdin: bytes | None = None, capture: bool = False
    ) -> subprocess.CompletedProcess[bytes]:
        argv = list(argv)
        self.calls.append((argv, stdin))
        code = 0
        if argv[:3] == ["docker", "buildx", "version"]:
            code = 0 if self.buildx else 1
        elif argv[:2] == ["docker", "login"]:
            code = 0 if self.login_ok else 1
        elif argv[:3] == ["docker", "buildx", "build"] and self.build_ok:
            metadata = self.root / argv[argv.index("--metadata-file") + 1]
            metadata.write_text(json.dumps({"containerimage.digest": DIGEST, "image.name": "x"}))
        elif argv[:3] == ["docker", "buildx", "build"]:
            code = 1
        return subprocess.CompletedProcess(argv, code, b"", b"login refused" if code else b"")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A copy of the build context (the recipe writes buildx's metadata file under root/build)."""
    for top in ("server", "lifecycle", "cli"):
        shutil.copytree(
            stack_image.REPO_ROOT / top, tmp_path / top, ignore=shutil.ignore_patterns("__pycache__")
        )
    return tmp_path


@pytest.fixture
def session() -> Iterator[boto3.Session]:
    with mock_aws():
        yield boto3.Session(
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",  # noqa: S106
        )


def _registry_password(session: boto3.Session) -> str:
    token = session.client("ecr").get_authorization_token()["authorizationData"][0]["authorizationToken"]
    return base64.b64decode(token).decode().partition(":")[2]


def test_build_runs_exactly_these_docker_commands(root: Path, session: boto3.Session) -> None:
    docker = FakeDocker(root)
    logged: list[str] = []
    result = recipe.build_image(region=REGION, run=docker, session=session, log=logged.append, root=root)

    tag = stack_image.image_tag(root)
    reference = f"{REGISTRY}/mlflow-stack-server:{tag}"
    assert [argv for argv, _ in docker.calls] == [
        ["docker", "buildx", "version"],
        ["docker", "login", "--username", "AWS", "--password-stdin", REGISTRY],
        [
            "docker", "buildx", "build",
            "--platform", "linux/arm64",
            "--provenance=false", "--sbom=false",
            "--file", "server/Dockerfile",
            "--tag", reference,
            "--metadata-file", "build/server-image-metadata.json",
            "--push",
            ".",
        ],
    ]  # fmt: skip
    assert result.reference == reference
    assert result.pinned == f"{reference}@{DIGEST}"
    assert tag.startswith("3.17.2-") and len(tag) == len("3.17.2-") + 16
    assert f"created ECR repository {REGISTRY}/mlflow-stack-server" in logged


def test_the_registry_password_goes_on_stdin_only(root: Path, session: boto3.Session) -> None:
    docker = FakeDocker(root)
    logged: list[str] = []
    recipe.build_image(region=REGION, run=docker, session=session, log=logged.append, root=root)

    password = _registry_password(session)
    assert len(password) > 8
    [login_stdin] = [stdin for argv, stdin in docker.calls if argv[:2] == ["docker", "login"]]
    assert login_stdin == password.encode()
    assert not [argv for argv, _ in docker.calls if any(password in word for word in argv)]
    assert [stdin for argv, stdin in docker.calls if argv[:2] != ["docker", "login"]] == [None, None]
    assert not [line for line in logged if password in line]


def test_the_prebuilt_tag_is_the_stack_built_tag() -> None:
    graph = run_program("dev")
    [build] = graph.of_type("docker-build:index:Image")
    [stack_tag] = build.inputs["tags"]
    plan = recipe.make_plan(account_id=ACCOUNT, region=REGION)
    assert stack_tag.rsplit(":", 1)[1] == plan.tag
    assert plan.platform == build.inputs["platforms"][0]
    assert (plan.dockerfile, plan.context) == (
        build.inputs["dockerfile"]["location"],
        build.inputs["context"]["location"],
    )


def test_an_already_pushed_tag_is_not_rebuilt(root: Path, session: boto3.Session) -> None:
    docker = FakeDocker(root)
    recipe.build_image(region=REGION, run=docker, session=session, log=lambda _: None, root=root)
    tag = stack_image.image_tag(root)
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "size": 1,
            "digest": DIGEST,
        },
        "layers": [],
    }
    session.client("ecr").put_image(
        repositoryName="mlflow-stack-server", imageManifest=json.dumps(manifest), imageTag=tag
    )
    docker.calls.clear()
    logged: list[str] = []
    again = recipe.build_image(region=REGION, run=docker, session=session, log=logged.append, root=root)
    # Only the buildx check: no login, no build, no push that IMMUTABLE tags would refuse.
    assert [argv for argv, _ in docker.calls] == [["docker", "buildx", "version"]]
    assert again.pinned is not None and again.pinned.startswith(f"{again.reference}@sha256:")
    assert f"reusing ECR repository {REGISTRY}/mlflow-stack-server" in logged


def test_a_dry_run_runs_nothing_and_prints_the_recipe(root: Path) -> None:
    def no_docker(*args: object, **kwargs: object) -> subprocess.CompletedProcess[bytes]:
        raise AssertionError("a dry run ran a command")

    lines: list[str] = []
    # No session and --account-id: a dry run needs neither AWS credentials nor Docker.
    result = recipe.build_image(
        region=REGION, account_id=ACCOUNT, dry_run=True, run=no_docker, log=lines.append, root=root
    )
    plan = recipe.make_plan(account_id=ACCOUNT, region=REGION, root=root)
    assert result.reference == plan.reference and result.digest is None
    joined = "\n".join(lines)
    assert (
        f"aws ecr get-login-password --region {REGION} | docker login --username AWS --password-stdin "
        in joined
    )
    assert " ".join(plan.build_argv()) in lines
    assert "--image-tag-mutability IMMUTABLE" in joined and "scanOnPush=true" in joined
    assert "encryptionType=AES256" in joined
    assert '"tagStatus":"untagged"' in joined and '"countNumber":10' in joined
    assert "--password " not in joined and "--password=" not in joined


def test_a_kms_key_encrypts_a_new_repository(root: Path, session: boto3.Session) -> None:
    key = session.client("kms").create_key()["KeyMetadata"]["Arn"]
    recipe.build_image(
        region=REGION, kms_key=key, run=FakeDocker(root), session=session, log=lambda _: None, root=root
    )
    [repository] = session.client("ecr").describe_repositories(repositoryNames=["mlflow-stack-server"])[
        "repositories"
    ]
    assert repository["encryptionConfiguration"] == {"encryptionType": "KMS", "kmsKey": key}


def test_a_mutable_repository_is_refused(root: Path, session: boto3.Session) -> None:
    session.client("ecr").create_repository(repositoryName="team-images", imageTagMutability="MUTABLE")
    docker = FakeDocker(root)
    with pytest.raises(recipe.RecipeError, match=r"needs IMMUTABLE ones.*put-image-tag-mutability"):
        recipe.build_image(
            region=REGION,
            repository="team-images",
            run=docker,
            session=session,
            log=lambda _: None,
            root=root,
        )
    assert [argv for argv, _ in docker.calls] == [["docker", "buildx", "version"]]


def test_a_missing_buildx_stops_before_aws_with_the_fix(root: Path, session: boto3.Session) -> None:
    with pytest.raises(recipe.RecipeError) as raised:
        recipe.build_image(region=REGION, run=FakeDocker(root, buildx=False), session=session, root=root)
    assert str(raised.value).startswith("docker buildx is not available")
    assert "https://docs.docker.com/build/install-buildx/" in str(raised.value)
    assert session.client("ecr").describe_repositories()["repositories"] == []


def test_failed_login_and_build_are_reported(root: Path, session: boto3.Session) -> None:
    with pytest.raises(recipe.RecipeError, match=f"docker login to {REGISTRY} failed: login refused"):
        recipe.build_image(
            region=REGION,
            run=FakeDocker(root, login_ok=False),
            session=session,
            log=lambda _: None,
            root=root,
        )
    with pytest.raises(recipe.RecipeError, match="docker buildx build failed"):
        recipe.build_image(
            region=REGION,
            run=FakeDocker(root, build_ok=False),
            session=session,
            log=lambda _: None,
            root=root,
        )


def test_an_account_id_other_than_the_credentials_is_refused(root: Path, session: boto3.Session) -> None:
    with pytest.raises(recipe.RecipeError, match=re.escape("not in 210987654321.dkr.ecr")):
        recipe.build_image(
            region=REGION,
            account_id="210987654321",
            run=FakeDocker(root),
            session=session,
            log=lambda _: None,
            root=root,
        )


# --- the real command, with the real runner, on a PATH without docker or without buildx -------------


def _cli(tmp_path: Path, path: str) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": path,
        "HOME": str(tmp_path),
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    argv = [sys.executable, "-m", "cli.main", "image", "build", "--region", REGION, "--account-id", ACCOUNT]
    return subprocess.run(
        argv, env=env, cwd=stack_image.REPO_ROOT, capture_output=True, text=True, timeout=120, check=False
    )


def test_no_docker_on_path_is_one_clear_message(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    completed = _cli(tmp_path, str(empty))
    assert completed.returncode == 2
    assert completed.stderr.strip().splitlines() == [
        f"mlflow-stack image build: docker is not installed (not on PATH): {recipe.INSTALL_BUILDX}"
    ]


def test_docker_without_buildx_is_one_clear_message(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # What the docker CLI answers when the buildx plugin is missing.
    fake = bin_dir / "docker"
    fake.write_text('#!/bin/sh\necho "docker: unknown command: docker $1" >&2\nexit 1\n')
    fake.chmod(0o755)
    completed = _cli(tmp_path, f"{bin_dir}{os.pathsep}/usr/bin:/bin")
    assert completed.returncode == 2
    assert completed.stderr.strip().splitlines() == [
        "mlflow-stack image build: docker buildx is not available (`docker buildx version` failed): "
        + recipe.INSTALL_BUILDX
    ]


# --- the staging stack runs what the recipe builds from this checkout --------------------------------

STAGING_COMMAND = f"mlflow-stack image build --dry-run --region {REGION} --account-id {ACCOUNT}"


def test_the_staging_image_is_what_the_recipe_prints(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(STAGING_COMMAND.split()[1:]) == 0
    [printed] = [
        line.removeprefix("server.image: ")
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("server.image: ")
    ]
    recorded = load_stack_config("staging")["mlflow-stack:server"]["image"]
    # File modes are part of the build context (and of the image): git records only the x bit, the
    # rest comes from the umask of whoever checked out. Say so when that is the likely difference.
    writable = [
        relative
        for relative, path in stack_image.context_files(
            stack_image.REPO_ROOT, stack_image.context_ignore_patterns()
        )
        if path.lstat().st_mode & 0o022
    ]
    hint = (
        f" Note: {len(writable)} files of the build context are group/other-writable (e.g. {writable[0]}; "
        "a checkout under umask 002?); the recorded tag was made from a checkout with umask 022."
        if writable
        else ""
    )
    assert recorded == printed, (
        f"stacks/Pulumi.staging.yaml server.image is {recorded}, but this checkout's image is {printed}: "
        "something the image carries changed (server/, lifecycle/, cli/, server/Dockerfile or its "
        f"dockerignore, a file mode). Re-run `{STAGING_COMMAND}` and paste its server.image line into "
        f"stacks/Pulumi.staging.yaml.{hint}"
    )
