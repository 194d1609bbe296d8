"""Doctor checks 6 and 7: the server image runs on Graviton (linux/arm64) Fargate tasks.

Without server.image the stack builds server/Dockerfile itself (docker-build provider, platform
linux/arm64), so the deployer's machine needs Docker with buildx and either a native arm64 builder
or QEMU registered through binfmt_misc. With server.image set, the image must already have a
linux/arm64 variant, or every task fails to start with "exec format error".
"""

from __future__ import annotations

import json
import re
import subprocess
import urllib.request
from typing import Any

from deploy.doctor import CheckResult, CommandResult, DoctorContext, call, fail, ok, skip, warn
from infra.compute.spec import IMAGE_PLATFORM

IMAGE_OS, IMAGE_ARCH = IMAGE_PLATFORM.split("/")
INSTALL_BUILDX = (
    "install Docker with the buildx plugin (https://docs.docker.com/build/install-buildx/), then "
    "register arm64 emulation: docker run --privileged --rm tonistiigi/binfmt --install arm64"
)

# `<account>.dkr.ecr.<region>.amazonaws.com[.cn]/<repository>[:<tag>][@sha256:<digest>]`
ECR_REFERENCE = re.compile(
    r"(?P<account>\d{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?:\.cn)?/"
    r"(?P<repository>[a-z0-9][a-z0-9._/-]*?)(?::(?P<tag>[\w][\w.-]{0,127}))?(?:@(?P<digest>sha256:[0-9a-f]{64}))?"
)
MANIFEST_LISTS = (
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.index.v1+json",
)
SINGLE_MANIFESTS = (
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
)


def run_command(argv: list[str]) -> CommandResult:
    """The real command runner: output and exit code; a missing program is exit 127."""
    try:
        completed = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    except FileNotFoundError:
        return CommandResult(127, f"{argv[0]}: command not found")
    except subprocess.TimeoutExpired:
        return CommandResult(124, f"{' '.join(argv)}: no answer within 60 s")
    return CommandResult(completed.returncode, completed.stdout + completed.stderr)


def fetch_url(url: str) -> bytes:
    """The real URL fetcher (ECR hands out pre-signed HTTPS URLs for blobs)."""
    if not url.startswith("https://"):
        raise ValueError(f"refusing a non-HTTPS blob URL: {url[:40]}")
    with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310 - https only, checked above
        return bytes(response.read())


def check_image_build(ctx: DoctorContext) -> CheckResult:
    check = "image-build"
    if ctx.settings.server.image is not None:
        return skip(check, "server.image is set; the stack does not build an image")
    version = ctx.env.run_command(["docker", "buildx", "version"])
    if version.returncode != 0:
        first_line = (version.output.strip().splitlines() or ["no output"])[0]
        return fail(
            check,
            f"the stack builds the server image for {IMAGE_PLATFORM}, but `docker buildx version` "
            f"failed ({first_line})",
            INSTALL_BUILDX,
        )
    builders = ctx.env.run_command(["docker", "buildx", "ls"])
    if builders.returncode == 0 and IMAGE_PLATFORM in builders.output:
        return ok(check, f"docker buildx is available and a builder lists {IMAGE_PLATFORM}")
    if (ctx.env.binfmt_dir / "qemu-aarch64").exists():
        return ok(
            check, f"docker buildx is available and QEMU (binfmt_misc qemu-aarch64) builds {IMAGE_PLATFORM}"
        )
    return fail(
        check,
        f"docker buildx is available but no builder can build {IMAGE_PLATFORM} and QEMU is not registered",
        "register arm64 emulation: docker run --privileged --rm tonistiigi/binfmt --install arm64 "
        "(or build on an arm64 machine, or set server.image to a prebuilt multi-arch image)",
    )


def check_image(ctx: DoctorContext) -> CheckResult:
    check = "image"
    image = ctx.settings.server.image
    if image is None:
        return skip(check, "server.image is unset; the stack builds server/Dockerfile (see image-build)")
    match = ECR_REFERENCE.fullmatch(image)
    if match is None:
        return skip(
            check,
            f"{image} is not in Amazon ECR; doctor reads only ECR manifests. Check by hand that "
            f"`docker buildx imagetools inspect {image}` lists {IMAGE_PLATFORM}",
        )
    reference = match.groupdict()
    image_id = (
        {"imageDigest": reference["digest"]}
        if reference["digest"]
        else {"imageTag": reference["tag"] or "latest"}
    )
    ecr = ctx.client("ecr", reference["region"])
    target = {"registryId": reference["account"], "repositoryName": reference["repository"]}
    try:
        answer = call(
            ecr,
            "batch_get_image",
            **target,
            imageIds=[image_id],
            acceptedMediaTypes=[*MANIFEST_LISTS, *SINGLE_MANIFESTS],
        )
    except ecr.exceptions.RepositoryNotFoundException:
        return fail(
            check,
            f"ECR repository {reference['repository']} does not exist in "
            f"{reference['account']}/{reference['region']}",
            "push the image first, or fix server.image",
        )
    if not answer.get("images"):
        return fail(
            check, f"{image} is not in ECR", "push the image first, or fix the tag/digest in server.image"
        )
    found = answer["images"][0]
    manifest = json.loads(found["imageManifest"])
    media_type = found.get("imageManifestMediaType") or manifest.get("mediaType", "")
    if media_type in MANIFEST_LISTS or "manifests" in manifest:
        platforms = [
            f"{entry.get('platform', {}).get('os')}/{entry.get('platform', {}).get('architecture')}"
            for entry in manifest.get("manifests", [])
        ]
        if IMAGE_PLATFORM in platforms:
            return ok(check, f"{image} has a {IMAGE_PLATFORM} manifest (of {', '.join(platforms)})")
        return fail(
            check,
            f"{image} has no {IMAGE_PLATFORM} manifest (only {', '.join(platforms) or 'none'}); "
            "the Graviton tasks would fail with 'exec format error'",
            f"rebuild and push with docker buildx build --platform {IMAGE_PLATFORM} "
            f"(or linux/amd64,{IMAGE_PLATFORM})",
        )
    return _single_image(ctx, check, image, ecr, target, manifest)


def _single_image(
    ctx: DoctorContext, check: str, image: str, ecr: Any, target: dict[str, str], manifest: dict[str, Any]
) -> CheckResult:
    """A single-platform image names its architecture only in its config blob."""
    by_hand = f"check by hand: docker buildx imagetools inspect {image} --raw"
    digest = manifest.get("config", {}).get("digest")
    if not digest:
        return warn(check, f"{image} has an unknown manifest format; cannot tell its platform", by_hand)
    url = call(ecr, "get_download_url_for_layer", **target, layerDigest=digest)["downloadUrl"]
    try:
        config = json.loads(ctx.env.fetch_url(url))
    except (OSError, ValueError) as exc:
        return warn(check, f"could not read the config of {image}: {exc}", by_hand)
    platform = f"{config.get('os')}/{config.get('architecture')}"
    if platform == IMAGE_PLATFORM:
        return ok(check, f"{image} is a single-platform {IMAGE_PLATFORM} image")
    return fail(
        check,
        f"{image} is a single-platform {platform} image; "
        "the Graviton tasks would fail with 'exec format error'",
        f"rebuild and push with docker buildx build --platform {IMAGE_PLATFORM}",
    )
