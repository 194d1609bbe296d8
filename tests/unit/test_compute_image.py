"""The server image: ECR repository hygiene, the build's platform, content-addressed tags."""

from __future__ import annotations

import json
from pathlib import Path

from edge_harness import REGISTRY_PASSWORD_SENTINEL, Run, build_edge, run_components

from infra.compute import image
from infra.compute.image import (
    ServerImage,
    ServerImageArgs,
    declared_volumes,
    image_can_run_read_only,
    lifecycle_policy,
    server_source_hash,
)
from infra.compute.spec import CPU_ARCHITECTURE, IMAGE_PLATFORM, RUN_AS_USER

BUILD = "docker-build:index:Image"
REPOSITORY = "aws:ecr/repository:Repository"


def _built() -> Run:
    return run_components(lambda: build_edge(image={"keep_images": 15}))


def test_repository_is_immutable_scanned_and_pruned() -> None:
    run = _built()
    repository = run.one(REPOSITORY).inputs
    assert repository["imageTagMutability"] == "IMMUTABLE"
    assert repository["imageScanningConfiguration"] == {"scanOnPush": True}
    rules = json.loads(run.one("aws:ecr/lifecyclePolicy:LifecyclePolicy").inputs["policy"])["rules"]
    assert [r["selection"] for r in rules] == [
        {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 15}
    ]
    assert rules[0]["action"] == {"type": "expire"}


def test_build_uses_server_dockerfile_for_the_task_platform() -> None:
    run = _built()
    build = run.one(BUILD).inputs
    assert build["dockerfile"] == {"location": "server/Dockerfile"}
    assert build["context"] == {"location": "."}
    assert build["push"] is True
    assert build["platforms"] == [IMAGE_PLATFORM]
    # One architecture for the image and the Fargate task that runs it.
    task = run.one("aws:ecs/taskDefinition:TaskDefinition").inputs
    assert task["runtimePlatform"]["cpuArchitecture"] == CPU_ARCHITECTURE
    assert {"ARM64": "linux/arm64", "X86_64": "linux/amd64"}[CPU_ARCHITECTURE] == IMAGE_PLATFORM


def test_task_runs_the_pushed_image_pinned_by_digest() -> None:
    run = _built()
    [tag] = run.one(BUILD).inputs["tags"]
    assert tag.endswith(f":{server_source_hash()}")
    [container] = json.loads(run.one("aws:ecs/taskDefinition:TaskDefinition").inputs["containerDefinitions"])
    assert container["image"].startswith(f"{tag}@sha256:")
    assert run.outputs["image_ref"] == container["image"]


def test_registry_token_reaches_only_the_image_build() -> None:
    run = _built()
    leaks = [
        r.name for r in run.resources if r.typ != BUILD and REGISTRY_PASSWORD_SENTINEL in json.dumps(r.inputs)
    ]
    assert leaks == []
    assert REGISTRY_PASSWORD_SENTINEL not in json.dumps(run.outputs)


def test_prebuilt_image_skips_ecr_and_the_build() -> None:
    prebuilt = "ghcr.io/example/mlflow-server:3.17.2"

    def build() -> dict[str, object]:
        return {"ref": ServerImage("image", ServerImageArgs(prebuilt_image=prebuilt)).image_ref}

    run = run_components(build)
    assert run.outputs["ref"] == prebuilt
    assert not run.of_type(REPOSITORY) and not run.of_type(BUILD)


def test_source_hash_follows_content_not_caches(tmp_path: Path) -> None:
    server = tmp_path / "server"
    (server / "__pycache__").mkdir(parents=True)
    (server / "Dockerfile").write_text("FROM python:3.12-slim\n")
    (server / "entrypoint.py").write_text("print('hi')\n")
    first = server_source_hash(tmp_path)

    (server / "__pycache__" / "entrypoint.cpython-312.pyc").write_bytes(b"\x00cache")
    assert server_source_hash(tmp_path) == first

    (server / "entrypoint.py").write_text("print('hello')\n")
    changed = server_source_hash(tmp_path)
    assert changed != first

    (server / "entrypoint.py").rename(server / "main.py")
    assert server_source_hash(tmp_path) != changed  # a rename changes the image too


def test_lifecycle_policy_is_valid_json_with_one_rule() -> None:
    policy = json.loads(lifecycle_policy(3))
    assert policy["rules"][0]["selection"]["countNumber"] == 3
    assert image.DOCKERFILE == "server/Dockerfile"


def test_volume_declarations_are_read_from_the_dockerfile(tmp_path: Path) -> None:
    (tmp_path / "server").mkdir()
    dockerfile = tmp_path / "server" / "Dockerfile"
    dockerfile.write_text("FROM python:3.11-slim\nUSER 10001:10001\n")
    assert declared_volumes(dockerfile) == set()
    assert image_can_run_read_only("/tmp", tmp_path) is False

    dockerfile.write_text('FROM python:3.11-slim\nvolume ["/tmp/", "/data"]\nVOLUME /cache /more\n')
    assert declared_volumes(dockerfile) == {"/tmp", "/data", "/cache", "/more"}
    assert image_can_run_read_only("/tmp", tmp_path) is True


def test_task_user_is_the_user_the_dockerfile_creates() -> None:
    users = [
        line.split()[1]
        for line in (image.REPO_ROOT / image.DOCKERFILE).read_text().splitlines()
        if line.startswith("USER ")
    ]
    assert users[-1] == RUN_AS_USER
    assert RUN_AS_USER.split(":")[0] != "0"
