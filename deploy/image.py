"""Prebuilt server images: `mlflow-stack image build` (and `make image`).

Builds server/Dockerfile for the Fargate tasks' platform with `docker buildx build --push` into a
private ECR repository, created when missing with the same hygiene the stack gives its own
repository (IMMUTABLE tags, scan on push, encryption at rest, a lifecycle policy), and prints the
`server.image` reference to paste into a stack file.

The tag is `infra.compute.image.image_tag()`: `<mlflow version>-<source hash>`, the very tag a stack
that builds its own image pushes, so the two agree. It is content-addressed (it changes exactly when
the bytes the build sees change), which is what IMMUTABLE tags need: a tag names one image forever.
A tag already in the repository is therefore the same image, and is reused instead of rebuilt.

Docker is called through an injectable `Runner`; the registry password goes to `docker login` on
stdin, never on a command line. `--dry-run` prints the equivalent shell recipe and runs nothing.
"""

from __future__ import annotations

import base64
import json
import shlex
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_REPOSITORY = "mlflow-stack-server"
DEFAULT_KEEP_UNTAGGED = 10
# Relative to the repository root; build/ is git-ignored and outside the image's build context.
METADATA_FILE = "build/server-image-metadata.json"
INSTALL_BUILDX = (
    "install Docker with the buildx plugin (Docker Desktop includes it; on Linux the "
    "docker-buildx-plugin package): https://docs.docker.com/build/install-buildx/"
)


class RecipeError(Exception):
    """The recipe cannot go on; the message says why and what to do."""


class Runner(Protocol):
    def __call__(
        self, argv: Sequence[str], *, stdin: bytes | None = None, capture: bool = False
    ) -> subprocess.CompletedProcess[bytes]: ...


def run_process(
    argv: Sequence[str], *, stdin: bytes | None = None, capture: bool = False
) -> subprocess.CompletedProcess[bytes]:
    """The real runner: from the repository root, so the build context and Dockerfile are the
    relative paths the stack's own build uses; output streams to the terminal unless captured."""
    return subprocess.run(list(argv), input=stdin, capture_output=capture, cwd=REPO_ROOT, check=False)


def dns_suffix(region: str) -> str:
    return "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"


def lifecycle_policy(keep_untagged: int) -> str:
    """Expire untagged images beyond the newest `keep_untagged`; tagged images are what stacks run.
    Syntax: https://docs.aws.amazon.com/AmazonECR/latest/userguide/lifecycle_policy_examples.html"""
    rule = {
        "rulePriority": 1,
        "description": f"keep the last {keep_untagged} untagged images",
        "selection": {
            "tagStatus": "untagged",
            "countType": "imageCountMoreThan",
            "countNumber": keep_untagged,
        },
        "action": {"type": "expire"},
    }
    return json.dumps({"rules": [rule]}, separators=(",", ":"))


@dataclass(frozen=True)
class ImagePlan:
    """One build: where it goes and what it builds (`plan()` fills it from infra.compute)."""

    account_id: str
    region: str
    tag: str  # infra.compute.image.image_tag(): the stack-built image's tag too
    platform: str  # infra.compute.spec.IMAGE_PLATFORM: what the Fargate tasks run
    dockerfile: str  # relative to the repository root, like the stack's own build
    context: str
    repository: str = DEFAULT_REPOSITORY
    keep_untagged: int = DEFAULT_KEEP_UNTAGGED
    kms_key: str | None = None  # None: AES256 (ECR-managed keys)

    def __post_init__(self) -> None:
        if not (len(self.account_id) == 12 and self.account_id.isdigit()):
            raise RecipeError(f"--account-id must be 12 digits, got {self.account_id!r}")
        if self.keep_untagged < 1:
            raise RecipeError("--keep-untagged must be >= 1")

    @property
    def registry(self) -> str:
        return f"{self.account_id}.dkr.ecr.{self.region}.{dns_suffix(self.region)}"

    @property
    def reference(self) -> str:
        """What goes into a stack file's `server.image`."""
        return f"{self.registry}/{self.repository}:{self.tag}"

    @property
    def encryption(self) -> dict[str, str]:
        if self.kms_key:
            return {"encryptionType": "KMS", "kmsKey": self.kms_key}
        return {"encryptionType": "AES256"}

    def login_argv(self) -> list[str]:
        # The password arrives on stdin (https://docs.aws.amazon.com/AmazonECR/latest/userguide/
        # registry_auth.html): a command line is visible to every user in the process list.
        return ["docker", "login", "--username", "AWS", "--password-stdin", self.registry]

    def build_argv(self) -> list[str]:
        return [
            "docker",
            "buildx",
            "build",
            "--platform",
            self.platform,
            # One plain image manifest: no provenance/SBOM attestation manifests riding along as
            # untagged artifacts, and the digest buildx reports is the image's own.
            "--provenance=false",
            "--sbom=false",
            "--file",
            self.dockerfile,
            "--tag",
            self.reference,
            "--metadata-file",
            METADATA_FILE,
            "--push",
            self.context,
        ]


@dataclass(frozen=True)
class Repository:
    uri: str
    created: bool


def ensure_repository(ecr: Any, plan: ImagePlan) -> Repository:
    """The ECR repository, created when missing; an existing one is reused as it is, unless its tags
    are mutable (a content-addressed tag must name one image forever:
    https://docs.aws.amazon.com/AmazonECR/latest/userguide/image-tag-mutability.html)."""
    try:
        [found] = ecr.describe_repositories(repositoryNames=[plan.repository])["repositories"]
    except ecr.exceptions.RepositoryNotFoundException:
        created = ecr.create_repository(
            repositoryName=plan.repository,
            imageTagMutability="IMMUTABLE",
            imageScanningConfiguration={"scanOnPush": True},
            encryptionConfiguration=plan.encryption,
        )["repository"]
        ecr.put_lifecycle_policy(
            repositoryName=plan.repository, lifecyclePolicyText=lifecycle_policy(plan.keep_untagged)
        )
        return Repository(created["repositoryUri"], created=True)
    if found.get("imageTagMutability") != "IMMUTABLE":
        raise RecipeError(
            f"ECR repository {plan.repository} has {found.get('imageTagMutability')} tags; this recipe "
            "pushes content-addressed tags and needs IMMUTABLE ones. Run `aws ecr put-image-tag-mutability "
            f"--repository-name {plan.repository} --image-tag-mutability IMMUTABLE` or pick another "
            "--repository."
        )
    return Repository(found["repositoryUri"], created=False)


def pushed_digest(ecr: Any, plan: ImagePlan) -> str | None:
    """The digest of `plan.tag` when it is already in the repository, else None."""
    try:
        images = ecr.describe_images(repositoryName=plan.repository, imageIds=[{"imageTag": plan.tag}])
    except ecr.exceptions.ImageNotFoundException:
        return None
    details = images.get("imageDetails", [])
    return details[0]["imageDigest"] if details else None


def registry_password(ecr: Any) -> bytes:
    """`aws ecr get-login-password`: the token is base64 of `AWS:<password>`."""
    token = ecr.get_authorization_token()["authorizationData"][0]["authorizationToken"]
    user, _, password = base64.b64decode(token).decode().partition(":")
    if user != "AWS" or not password:
        raise RecipeError("ECR returned an authorization token that is not `AWS:<password>`")
    return password.encode()


def check_buildx(run: Runner) -> None:
    """Docker with buildx, or one message that says what to install."""
    try:
        result = run(["docker", "buildx", "version"], capture=True)
    except FileNotFoundError:
        raise RecipeError(f"docker is not installed (not on PATH): {INSTALL_BUILDX}") from None
    if result.returncode != 0:
        raise RecipeError(
            f"docker buildx is not available (`docker buildx version` failed): {INSTALL_BUILDX}"
        )


def build_digest(metadata_file: Path) -> str | None:
    """The pushed manifest's digest from buildx's --metadata-file, when it reports one."""
    try:
        digest = json.loads(metadata_file.read_text()).get("containerimage.digest")
    except (OSError, ValueError):
        return None
    return digest if isinstance(digest, str) and digest.startswith("sha256:") else None


@dataclass(frozen=True)
class BuildResult:
    reference: str
    digest: str | None  # None in a dry run, or when buildx reports none

    @property
    def pinned(self) -> str | None:
        return f"{self.reference}@{self.digest}" if self.digest else None


def make_plan(
    *,
    account_id: str,
    region: str,
    repository: str = DEFAULT_REPOSITORY,
    keep_untagged: int = DEFAULT_KEEP_UNTAGGED,
    kms_key: str | None = None,
    root: Path = REPO_ROOT,
) -> ImagePlan:
    """The plan for this checkout: the stack's own Dockerfile, context, platform and tag function.
    (infra/ imports pulumi, so it is imported here and `mlflow-stack` starts fast.)"""
    from infra.compute.image import CONTEXT, DOCKERFILE, image_tag
    from infra.compute.spec import IMAGE_PLATFORM

    return ImagePlan(
        account_id=account_id,
        region=region,
        tag=image_tag(root, IMAGE_PLATFORM),
        platform=IMAGE_PLATFORM,
        dockerfile=DOCKERFILE,
        context=CONTEXT,
        repository=repository,
        keep_untagged=keep_untagged,
        kms_key=kms_key,
    )


def dry_run_commands(plan: ImagePlan) -> list[str]:
    """The recipe as shell commands (the AWS CLI doing what the real run does with boto3)."""
    region = ["--region", plan.region]
    ensure = [
        "aws", "ecr", "create-repository", *region, "--repository-name", plan.repository,
        "--image-tag-mutability", "IMMUTABLE", "--image-scanning-configuration", "scanOnPush=true",
        "--encryption-configuration", ",".join(f"{k}={v}" for k, v in plan.encryption.items()),
    ]  # fmt: skip
    lifecycle = [
        "aws", "ecr", "put-lifecycle-policy", *region, "--repository-name", plan.repository,
        "--lifecycle-policy-text", lifecycle_policy(plan.keep_untagged),
    ]  # fmt: skip
    exists = ["aws", "ecr", "describe-repositories", *region, "--repository-names", plan.repository]
    return [
        "# dry run: nothing was run. The real run does the same with boto3, and skips the login and",
        "# the build when the tag is already in the repository (IMMUTABLE: it is this very image).",
        shlex.join(["docker", "buildx", "version"]),
        f"{shlex.join(exists)} >/dev/null 2>&1 || {{ {shlex.join(ensure)} && {shlex.join(lifecycle)}; }}",
        f"aws ecr get-login-password {shlex.join(region)} | {shlex.join(plan.login_argv())}",
        f"mkdir -p {shlex.quote(str(Path(METADATA_FILE).parent))}",
        shlex.join(plan.build_argv()),
    ]


def _session(region: str) -> Any:
    import boto3

    return boto3.Session(region_name=region)


def build_image(
    *,
    region: str,
    repository: str = DEFAULT_REPOSITORY,
    account_id: str | None = None,
    keep_untagged: int = DEFAULT_KEEP_UNTAGGED,
    kms_key: str | None = None,
    dry_run: bool = False,
    run: Runner = run_process,
    session: Any = None,
    log: Callable[[str], None] = print,
    root: Path = REPO_ROOT,
) -> BuildResult:
    """Build and push the server image (or, with dry_run, print how) and return its reference.

    `session` is a boto3 Session (tests pass one aimed at an emulator); AWS is only called for the
    account id (when not given: STS, even in a dry run), the repository, the existing tag and the
    registry token. `root` is where the tag is computed from; `run` runs in the repository root."""
    if account_id is None:
        session = session or _session(region)
        account_id = session.client("sts", region_name=region).get_caller_identity()["Account"]
    plan = make_plan(
        account_id=account_id,
        region=region,
        repository=repository,
        keep_untagged=keep_untagged,
        kms_key=kms_key,
        root=root,
    )
    if dry_run:
        for command in dry_run_commands(plan):
            log(command)
        return BuildResult(plan.reference, digest=None)

    check_buildx(run)  # before any change in the account
    ecr = (session or _session(region)).client("ecr", region_name=region)
    found = ensure_repository(ecr, plan)
    log(f"{'created' if found.created else 'reusing'} ECR repository {found.uri}")
    if found.uri != f"{plan.registry}/{plan.repository}":
        raise RecipeError(
            f"the repository is {found.uri}, not in {plan.registry}: drop --account-id, or use "
            f"credentials of account {plan.account_id}"
        )
    existing = pushed_digest(ecr, plan)
    if existing:
        # IMMUTABLE: the tag is already this image (the tag is content-addressed); a re-push is refused.
        log(f"{plan.reference} is already pushed; not rebuilding")
        return BuildResult(plan.reference, existing)

    login = run(plan.login_argv(), stdin=registry_password(ecr), capture=True)
    if login.returncode != 0:
        detail = login.stderr.decode(errors="replace").strip()
        raise RecipeError(f"docker login to {plan.registry} failed: {detail}")
    metadata = root / METADATA_FILE
    metadata.parent.mkdir(parents=True, exist_ok=True)
    metadata.unlink(missing_ok=True)
    log(shlex.join(plan.build_argv()))
    if run(plan.build_argv()).returncode != 0:
        raise RecipeError("docker buildx build failed (its output is above)")
    return BuildResult(plan.reference, build_digest(metadata))
