"""The server image: built from server/Dockerfile into a private ECR repository, or a prebuilt ref.

The tag is `<mlflow version>-<source hash>`. The source hash covers exactly what pulumi-docker-build
hashes to decide whether to rebuild (its `contextHash`: the Dockerfile, then every file the
dockerignore lets into the build context, with its path and mode) plus the build's platform. The
ECR repository's tags are IMMUTABLE, so the two must agree: if the provider saw a change the tag did
not, it would rebuild and re-push an existing tag, which ECR rejects. One ignore file
(server/Dockerfile.dockerignore) decides both what the build sends and what the tag hashes, and
`mlflow-stack image build` (deploy/image.py) tags prebuilt images with the same function. The task
definition pins the pushed image by digest (`tag@sha256:...`), so a redeploy never picks up other
bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_aws as aws
import pulumi_docker_build as docker_build

from infra.compute.spec import IMAGE_PLATFORM

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVER_DIR = "server"
# The build context and the Dockerfile, relative to the project directory (the provider's working
# directory); the same strings go into the Image resource.
CONTEXT = "."
DOCKERFILE = f"{SERVER_DIR}/Dockerfile"
REQUIREMENTS = f"{SERVER_DIR}/requirements.txt"


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


# --- The build context exactly as pulumi-docker-build 0.0.22 hashes it --------------------------
# Ported from github.com/pulumi/pulumi-docker-build v0.0.22 provider/internal/context.go
# (`hashBuildContext`, `hashFile`, `getIgnorePatterns`), which filters the context with
# github.com/tonistiigi/fsutil filter.go (`filterFS.Walk`) and github.com/moby/patternmatcher
# v0.6.1 (`ignorefile.ReadAll`, `MatchesUsingParentResults`, `Pattern.compile`). What it hashes:
#   sha256( Dockerfile bytes
#           + for every regular file or symlink the dockerignore lets in, in walk order
#             (depth first, entries sorted by name): contents (a symlink's target), then the
#             slash-separated relative path, then Go's FileMode.String() of its lstat mode )
# Caches, *.pyc and anything else the dockerignore excludes never reach the hash; a chmod does.
def ignore_file(context: Path, dockerfile: Path) -> Path | None:
    """The ignore file the provider (and BuildKit) read: `<Dockerfile>.dockerignore`, else
    `<context>/.dockerignore` (https://docs.docker.com/build/concepts/context/#filename-and-location)."""
    for candidate in (Path(f"{dockerfile}.dockerignore"), context / ".dockerignore"):
        if candidate.is_file():
            return candidate
    return None


def _go_clean(path: str) -> str:
    """Go's path/filepath.Clean on a slash path."""
    if not path:
        return "."
    cleaned = posixpath.normpath(path)
    return "/" + cleaned.lstrip("/") if cleaned.startswith("//") else cleaned


def read_ignore_patterns(path: Path) -> list[str]:
    """moby/patternmatcher ignorefile.ReadAll: BOM and `#` lines dropped, patterns trimmed and
    cleaned, a leading `/` removed (`!` kept in front)."""
    patterns: list[str] = []
    text = path.read_bytes().decode("utf-8", "surrogateescape").removeprefix("\ufeff")
    for raw in text.split("\n"):
        line = raw.removesuffix("\r")
        if line.startswith("#"):
            continue
        pattern = line.strip()
        if not pattern:
            continue
        invert = pattern.startswith("!")
        if invert:
            pattern = pattern[1:].strip()
        if pattern:
            pattern = _go_clean(pattern)
            if len(pattern) > 1 and pattern.startswith("/"):
                pattern = pattern[1:]
        patterns.append(f"!{pattern}" if invert else pattern)
    return patterns


@dataclass(frozen=True)
class _Pattern:
    """One compiled dockerignore pattern (patternmatcher's Pattern.compile, '/' separator)."""

    text: str
    exclusion: bool
    kind: str  # "exact" | "prefix" | "suffix" | "regexp", as patternmatcher decides
    regexp: re.Pattern[str] | None

    @classmethod
    def compile(cls, raw: str) -> _Pattern:
        text = _go_clean(raw.strip())
        exclusion = text.startswith("!")
        if exclusion:
            if len(text) == 1:
                raise ValueError('illegal exclusion pattern: "!"')
            text = text[1:]
        regex, kind, index, chars = "^", "exact", 0, list(text)
        while index < len(chars):
            char = chars[index]
            if char == "*" and index + 1 < len(chars) and chars[index + 1] == "*":
                start = index
                index += 2
                if index < len(chars) and chars[index] == "/":
                    index += 1  # `**/` is `**`
                if index == len(chars):
                    if kind == "exact":
                        kind = "prefix"
                    else:
                        regex, kind = regex + ".*", "regexp"
                else:
                    regex, kind = regex + "(.*/)?", "regexp"
                if start == 0:
                    kind = "suffix"
                continue
            if char == "*":
                regex, kind = regex + "[^/]*", "regexp"
            elif char == "?":
                regex, kind = regex + "[^/]", "regexp"
            elif char in ".+()|{}$":
                regex += "\\" + char
            elif char == "\\":
                if index + 1 < len(chars):
                    index += 1
                    regex, kind = regex + re.escape(chars[index]), "regexp"
                else:
                    regex += "\\\\"
            elif char in "[]":
                regex, kind = regex + char, "regexp"
            else:
                regex += char
            index += 1
        try:
            compiled = re.compile(regex + r"\Z") if kind == "regexp" else None
        except re.error as error:
            raise ValueError(f"invalid dockerignore pattern {raw!r}: {error}") from error
        return cls(text, exclusion, kind, compiled)

    def matches(self, path: str) -> bool:
        if self.kind == "exact":
            return path == self.text
        if self.kind == "prefix":
            return path.startswith(self.text[:-2])
        if self.kind == "suffix":
            suffix = self.text[2:]
            return path.endswith(suffix) or (suffix.startswith("/") and path == suffix[1:])
        assert self.regexp is not None
        return self.regexp.match(path) is not None

    def without_trailing_glob(self) -> str:
        return self.text.removesuffix("/**").removesuffix("/*")


def _matches(patterns: list[_Pattern], path: str, parent: list[bool] | None) -> tuple[bool, list[bool]]:
    """patternmatcher MatchesUsingParentResults: the last matching pattern wins, `!` re-includes,
    and a pattern that matched a directory matches everything under it."""
    matched, info = False, [False] * len(patterns)
    for index, pattern in enumerate(patterns):
        match = bool(parent and parent[index])
        if not match:
            if pattern.exclusion != matched:
                continue
            match = pattern.matches(path)
            if not match and parent is None:
                parts = posixpath.dirname(path).split("/") if "/" in path else []
                match = any(pattern.matches("/".join(parts[: i + 1])) for i in range(len(parts)))
        info[index] = match
        if match:
            matched = not pattern.exclusion
    return matched, info


def context_files(context: Path, patterns: list[str]) -> Iterator[tuple[str, Path]]:
    """(relative path, path) of every entry the filtered walk hands to the hash, in its order
    (fsutil filterFS.Walk over filepath.WalkDir: depth first, entries sorted by name)."""
    compiled = [_Pattern.compile(p) for p in patterns if p.strip()]
    glob_chars = set("*[]?^\\")
    only_prefix_exceptions = not any(
        p.exclusion and glob_chars & set(p.without_trailing_glob()) for p in compiled
    )
    exceptions = [f"{p.without_trailing_glob()}/" for p in compiled if p.exclusion]

    def reincluded_below(directory: str) -> bool:
        return any(exception.startswith(f"{directory}/") for exception in exceptions)

    def walk(directory: Path, prefix: str, parent: list[bool] | None) -> Iterator[tuple[str, Path]]:
        for entry in sorted(os.scandir(directory), key=lambda e: e.name):
            relative = f"{prefix}{entry.name}"
            is_dir = entry.is_dir(follow_symlinks=False)
            excluded, info = _matches(compiled, relative, parent) if compiled else (False, [])
            # No exception can re-include anything below this directory: skip it, as fsutil does.
            if excluded and is_dir and only_prefix_exceptions and not reincluded_below(relative):
                continue
            if is_dir:
                yield from walk(Path(entry.path), f"{relative}/", info if compiled else None)
            elif not excluded:
                yield relative, Path(entry.path)

    yield from walk(context, "", None)


_GO_MODE_TYPES = "dalTLDpSugct?"  # Go's FileMode.String() letters, bit 31 downwards


def go_file_mode(mode: int) -> str:
    """Go's os.FileMode(...).String() for an lstat st_mode (os/stat_linux.go fillFileStatFromSys)."""
    bits = {
        stat.S_IFDIR: 1 << 31,
        stat.S_IFLNK: 1 << 27,
        stat.S_IFBLK: 1 << 26,
        stat.S_IFIFO: 1 << 25,
        stat.S_IFSOCK: 1 << 24,
        stat.S_IFCHR: (1 << 26) | (1 << 21),
    }
    go_mode = (mode & 0o777) | bits.get(stat.S_IFMT(mode), 0)
    go_mode |= (1 << 23 if mode & stat.S_ISUID else 0) | (1 << 22 if mode & stat.S_ISGID else 0)
    go_mode |= 1 << 20 if mode & stat.S_ISVTX else 0
    letters = "".join(c for i, c in enumerate(_GO_MODE_TYPES) if go_mode & (1 << (31 - i)))
    return (letters or "-") + "".join(
        c if go_mode & (1 << (8 - i)) else "-" for i, c in enumerate("rwxrwxrwx")
    )


def context_ignore_patterns(root: Path = REPO_ROOT) -> list[str]:
    """The patterns the build (and so the tag) applies to the context; [] without an ignore file."""
    found = ignore_file(root / CONTEXT, root / DOCKERFILE)
    return read_ignore_patterns(found) if found else []


def build_context_hash(root: Path = REPO_ROOT) -> str:
    """What pulumi-docker-build 0.0.22 stores as the Image's `contextHash` for this build."""
    digest = hashlib.sha256()
    dockerfile = root / DOCKERFILE
    if dockerfile.is_file():
        digest.update(dockerfile.read_bytes())  # contents only: the provider does not hash its name
    for relative, path in context_files(root / CONTEXT, context_ignore_patterns(root)):
        mode = path.lstat().st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
            continue  # sockets, pipes, devices: the provider skips them
        if path.is_dir():
            continue  # a symlink to a directory: the provider's read fails with EISDIR and skips it
        digest.update(path.read_bytes())
        digest.update(posixpath.normpath(relative).encode("utf-8", "surrogateescape"))
        digest.update(go_file_mode(mode).encode())
    return digest.hexdigest()


def server_source_hash(root: Path = REPO_ROOT, platform: str = IMAGE_PLATFORM) -> str:
    """16 hex digits over the provider's context hash and the platform (a platform change rebuilds
    too, so it must change the tag as well)."""
    return hashlib.sha256(f"{build_context_hash(root)}\n{platform}\n".encode()).hexdigest()[:16]


def mlflow_version(root: Path = REPO_ROOT) -> str:
    """The MLflow version server/requirements.txt pins (what the image runs)."""
    text = (root / REQUIREMENTS).read_text()
    found = re.search(r"^mlflow(?:\[[^\]]*\])?==([0-9A-Za-z.+!-]+)", text, re.MULTILINE)
    if found is None:
        raise ValueError(f"{REQUIREMENTS} pins no mlflow version (expected a line `mlflow==X.Y.Z`)")
    return found.group(1)


def image_tag(root: Path = REPO_ROOT, platform: str = IMAGE_PLATFORM) -> str:
    """`<mlflow version>-<source hash>`: the tag of the stack-built and of the prebuilt image."""
    return f"{mlflow_version(root)}-{server_source_hash(root, platform)}"


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
        tag = image_tag(args.source_root, IMAGE_PLATFORM)
        image = docker_build.Image(
            f"{name}-image",
            # Relative to the project directory (Pulumi's working directory), so the inputs are the
            # same on every engineer's machine and do not trigger a rebuild by themselves. The
            # provider reads server/Dockerfile.dockerignore for this pair (see ignore_file).
            context=docker_build.BuildContextArgs(location=CONTEXT),
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
