"""The server image: built from server/Dockerfile into a private ECR repository, or a prebuilt ref.

The tag is a hash of server/ and of every path server/Dockerfile COPYs into the image (lifecycle/
and cli/ for the maintenance task), so an unchanged image never produces a new tag (immutable tags
would reject a re-push anyway) and a change to anything it carries always does. The task definition
pins the pushed image by digest (`tag@sha256:...`), so a redeploy can never pick up other bytes.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_aws as aws
import pulumi_docker_build as docker_build

from infra.compute.spec import IMAGE_PLATFORM

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVER_DIR = "server"
DOCKERFILE = f"{SERVER_DIR}/Dockerfile"

# Files that never reach the image and must not change its tag.
_IGNORED_PARTS = {"__pycache__", ".pytest_cache", ".ruff_cache"}


def copied_sources(dockerfile: Path) -> list[str]:
    """Build-context paths a Dockerfile COPYs or ADDs (not from other stages), e.g. ["server/"]."""
    text = re.sub(r"\\\n\s*", " ", dockerfile.read_text())
    sources: list[str] = []
    for line in text.splitlines():
        instruction, _, rest = line.strip().partition(" ")
        if instruction.upper() not in {"COPY", "ADD"}:
            continue
        words = json.loads(rest) if rest.strip().startswith("[") else rest.split()
        if any(word.startswith("--from") for word in words):
            continue
        sources += [word for word in words if not word.startswith("--")][:-1]
    return sources


def _files(base: Path) -> list[Path]:
    if base.is_file():
        return [base]
    return [p for p in base.rglob("*") if p.is_file()]


def server_source_hash(root: Path = REPO_ROOT) -> str:
    """A short, stable hash (paths and contents) of server/ and everything the Dockerfile copies."""
    digest = hashlib.sha256()
    dockerfile = root / DOCKERFILE
    bases = [root / SERVER_DIR]
    if dockerfile.is_file():
        bases += [root / source for source in copied_sources(dockerfile)]
    files = {path for base in bases for path in _files(base)}
    for path in sorted(files):
        relative = path.relative_to(root)
        if _IGNORED_PARTS & set(relative.parts) or path.suffix == ".pyc":
            continue
        digest.update(relative.as_posix().encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def declared_volumes(dockerfile: Path) -> set[str]:
    """Paths a Dockerfile declares with VOLUME (JSON-array or plain form)."""
    volumes: set[str] = set()
    for line in dockerfile.read_text().splitlines():
        instruction, _, rest = line.strip().partition(" ")
        if instruction.upper() != "VOLUME":
            continue
        rest = rest.strip()
        paths = json.loads(rest) if rest.startswith("[") else rest.split()
        volumes.update(str(path).rstrip("/") or "/" for path in paths)
    return volumes


def image_can_run_read_only(scratch_path: str, root: Path = REPO_ROOT) -> bool:
    """Whether server/Dockerfile declares the scratch path as a VOLUME (see ServerSpec.read_only_root)."""
    return scratch_path.rstrip("/") in declared_volumes(root / DOCKERFILE)


def lifecycle_policy(keep_images: int) -> str:
    """ECR lifecycle policy: expire everything but the newest `keep_images` images."""
    return json.dumps(
        {
            "rules": [
                {
                    "rulePriority": 1,
                    "description": f"keep the last {keep_images} images",
                    "selection": {
                        "tagStatus": "any",
                        "countType": "imageCountMoreThan",
                        "countNumber": keep_images,
                    },
                    "action": {"type": "expire"},
                }
            ]
        }
    )


@dataclass(frozen=True)
class ServerImageArgs:
    # The ECR repository to build into; fixed, because the execution role's pull permission names it.
    repository_name: str | None = None
    prebuilt_image: str | None = None  # settings.server.image; None builds server/Dockerfile
    keep_images: int = 20
    force_delete_repository: bool = False  # dev stacks: let `pulumi destroy` drop pushed images
    source_root: Path = REPO_ROOT  # where server/ is read from to compute the tag

    def __post_init__(self) -> None:
        if self.keep_images < 1:
            raise ValueError("server image: keep_images must be >= 1")
        if self.prebuilt_image is None and not self.repository_name:
            raise ValueError("server image: set repository_name (to build) or prebuilt_image")


class ServerImage(pulumi.ComponentResource):
    """`image_ref` is what the task definition runs."""

    image_ref: pulumi.Output[str]
    repository: aws.ecr.Repository | None

    def __init__(self, name: str, args: ServerImageArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mlflow-stack:compute:ServerImage", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        if args.prebuilt_image is not None:
            self.repository = None
            self.image_ref = pulumi.Output.from_input(args.prebuilt_image)
            self.register_outputs({"image_ref": self.image_ref})
            return

        self.repository = aws.ecr.Repository(
            f"{name}-repo",
            name=args.repository_name,
            image_tag_mutability="IMMUTABLE",
            image_scanning_configuration=aws.ecr.RepositoryImageScanningConfigurationArgs(scan_on_push=True),
            encryption_configurations=[
                aws.ecr.RepositoryEncryptionConfigurationArgs(encryption_type="AES256")
            ],
            force_delete=args.force_delete_repository,
            opts=child,
        )
        aws.ecr.LifecyclePolicy(
            f"{name}-lifecycle",
            repository=self.repository.name,
            policy=lifecycle_policy(args.keep_images),
            opts=child,
        )
        token = aws.ecr.get_authorization_token_output(
            registry_id=self.repository.registry_id, opts=pulumi.InvokeOutputOptions(parent=self)
        )
        tag = server_source_hash(args.source_root)
        image = docker_build.Image(
            f"{name}-image",
            # Relative to the project directory (Pulumi's working directory), so the inputs are the
            # same on every engineer's machine and do not trigger a rebuild by themselves.
            context=docker_build.BuildContextArgs(location="."),
            dockerfile=docker_build.DockerfileArgs(location=DOCKERFILE),
            platforms=[docker_build.Platform(IMAGE_PLATFORM)],
            tags=[self.repository.repository_url.apply(lambda url: f"{url}:{tag}")],
            push=True,
            # `pulumi preview` should not need a Docker engine; the build runs on `pulumi up`.
            build_on_preview=False,
            registries=[
                docker_build.RegistryArgs(
                    address=self.repository.repository_url,
                    username=token.user_name,
                    password=pulumi.Output.secret(token.password),
                )
            ],
            opts=child,
        )
        self.image_ref = image.ref
        self.register_outputs({"image_ref": self.image_ref, "repository_url": self.repository.repository_url})
