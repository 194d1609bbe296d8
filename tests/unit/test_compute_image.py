"""The server image: ECR repository hygiene, the build's platform, content-addressed tags.

The tag must change whenever pulumi-docker-build's context hash does (else the provider re-pushes an
existing tag, which the IMMUTABLE repository rejects) and must not change for files the build never
sees. The tests below work on a copy of the real build context with the real ignore file.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
from edge_harness import REGISTRY_PASSWORD_SENTINEL, Run, build_edge, run_components

from infra.compute import image
from infra.compute.image import (
    ServerImage,
    ServerImageArgs,
    build_context_hash,
    context_files,
    context_ignore_patterns,
    copied_sources,
    declared_volumes,
    go_file_mode,
    image_can_run_read_only,
    image_tag,
    lifecycle_policy,
    mlflow_version,
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
    assert tag.endswith(f":{image_tag()}")
    assert image_tag() == f"{mlflow_version()}-{server_source_hash()}"
    assert mlflow_version() == "3.17.2"  # server/requirements.txt's pin
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


# --- the tag follows exactly what the builder hashes ------------------------------------------------


@pytest.fixture
def context(tmp_path: Path) -> Path:
    """A copy of the real build context (what server/Dockerfile copies, with its ignore file)."""
    for source in copied_sources(image.REPO_ROOT / image.DOCKERFILE):
        top = source.split("/")[0]
        if not (tmp_path / top).exists():
            shutil.copytree(
                image.REPO_ROOT / top, tmp_path / top, ignore=shutil.ignore_patterns("__pycache__")
            )
    return tmp_path


def test_a_chmod_of_a_copied_file_changes_the_tag(context: Path) -> None:
    before = server_source_hash(context)
    entrypoint = context / "server" / "entrypoint.py"
    entrypoint.chmod(entrypoint.stat().st_mode | 0o111)
    assert server_source_hash(context) != before


@pytest.mark.parametrize(
    "ignored",
    [
        "server/__pycache__/entrypoint.cpython-311.pyc",
        "cli/stale.pyc",
        "lifecycle/sub/__pycache__/gc.cpython-311.pyc",
        "server/.ruff_cache/0.17.5/1234567890",
        "lifecycle/.pytest_cache/v/cache/lastfailed",
        "cli/.mypy_cache/3.11/cli/main.data.json",
        "notes/todo.md",
        ".venv/lib/python3.11/site-packages/x.py",
        ".local-stack/secrets.json",
        "infra/platform.py",
        # Only the maintenance task's command module is in the image: a new CLI command is not.
        "cli/new_command.py",
        "cli/main.py",
    ],
)
def test_a_file_the_build_ignores_does_not_change_the_tag(context: Path, ignored: str) -> None:
    before = server_source_hash(context)
    (context / ignored).parent.mkdir(parents=True, exist_ok=True)
    (context / ignored).write_bytes(b"\x00not in the image")
    assert server_source_hash(context) == before
    assert ignored not in {
        relative for relative, _ in context_files(context, context_ignore_patterns(context))
    }


@pytest.mark.parametrize("added", ["server/static/app.js", "lifecycle/extra.py"])
def test_a_new_file_the_dockerfile_copies_changes_the_tag(context: Path, added: str) -> None:
    before = server_source_hash(context)
    (context / added).parent.mkdir(parents=True, exist_ok=True)
    (context / added).write_text("x = 1\n")
    assert server_source_hash(context) != before


def test_content_renames_the_dockerfile_and_the_platform_change_the_tag(context: Path) -> None:
    seen = {server_source_hash(context)}
    app = context / "lifecycle" / "gc.py"
    app.write_text(app.read_text() + "\n# edited\n")
    seen.add(server_source_hash(context))
    app.rename(app.with_name("gc_renamed.py"))
    seen.add(server_source_hash(context))
    dockerfile = context / image.DOCKERFILE
    dockerfile.write_text(dockerfile.read_text() + "LABEL edited=true\n")
    seen.add(server_source_hash(context))
    seen.add(server_source_hash(context, platform="linux/amd64"))  # the provider rebuilds on it too
    assert len(seen) == 5


def test_the_context_hash_is_the_providers_byte_stream(tmp_path: Path) -> None:
    # pulumi-docker-build v0.0.22 provider/internal/context.go hashBuildContext: the Dockerfile's
    # bytes, then per file in WalkDir order (per directory, sorted by name - so `cli/` comes before
    # `cli-notes`, although "cli-notes" < "cli/z.py" as strings): contents, path, Go mode string.
    (tmp_path / "server").mkdir()
    (tmp_path / "cli").mkdir()
    (tmp_path / "server" / "Dockerfile").write_bytes(b"FROM scratch\n")
    (tmp_path / "server" / "Dockerfile.dockerignore").write_bytes(b"# only these\n*\n!cli\n!cli-notes\n")
    (tmp_path / "cli" / "z.py").write_bytes(b"z = 1\n")
    (tmp_path / "cli" / "run.sh").write_bytes(b"#!/bin/sh\n")
    (tmp_path / "cli" / "z.py").chmod(0o644)
    (tmp_path / "cli" / "run.sh").chmod(0o755)
    (tmp_path / "cli" / "link").symlink_to("z.py")
    (tmp_path / "cli-notes").write_bytes(b"notes\n")
    (tmp_path / "cli-notes").chmod(0o600)
    (tmp_path / "excluded.txt").write_bytes(b"not hashed\n")

    expected = hashlib.sha256(
        b"FROM scratch\n"
        + b"z = 1\n" + b"cli/link" + b"Lrwxrwxrwx"
        + b"#!/bin/sh\n" + b"cli/run.sh" + b"-rwxr-xr-x"
        + b"z = 1\n" + b"cli/z.py" + b"-rw-r--r--"
        + b"notes\n" + b"cli-notes" + b"-rw-------"
    ).hexdigest()  # fmt: skip
    assert build_context_hash(tmp_path) == expected


def test_go_mode_strings() -> None:
    # Go's os.FileMode.String(): type letters (dalTLDpSugct?) first, "-" when there is none.
    assert go_file_mode(0o100644) == "-rw-r--r--"
    assert go_file_mode(0o104755) == "urwxr-xr-x"
    assert go_file_mode(0o120777) == "Lrwxrwxrwx"
    assert go_file_mode(0o041777) == "dtrwxrwxrwx"


@pytest.mark.parametrize(
    ("patterns", "included", "excluded"),
    [
        # Docker's documented examples (https://docs.docker.com/build/concepts/context/#dockerignore-files)
        (["*/temp*"], ["temp", "a/b/temporary"], ["a/temporary.txt", "a/temp/x"]),
        (["*/*/temp*"], ["a/temp", "temp"], ["a/b/temporary.txt"]),
        (["temp?"], ["temp", "tempab"], ["temp1", "tempa/x"]),
        (["**/*.go"], ["go.mod"], ["main.go", "a/b/c.go"]),
        (
            ["*.md", "!README*.md", "README-secret.md"],
            ["README.md", "README-x.md"],
            ["a.md", "README-secret.md"],
        ),
        # The last matching pattern wins; `!` re-includes below an excluded parent.
        (["*", "!server/"], ["server/app.py", "server/a/b.py"], ["Makefile", "serverx/a.py"]),
        (["server", "!server/keep.py"], ["server/keep.py"], ["server/drop.py"]),
        (["/build/**", "# a comment", "  "], ["src/build/x"], ["build/x", "build/a/b"]),
    ],
)
def test_dockerignore_patterns_follow_docker(
    tmp_path: Path, patterns: list[str], included: list[str], excluded: list[str]
) -> None:
    # Through an ignore file at the context root (the fallback when there is no Dockerfile one).
    (tmp_path / ".dockerignore").write_text("\ufeff" + "\n".join(patterns) + "\n")  # with a BOM
    for name in [*included, *excluded]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(name)
    walked = {relative for relative, _ in context_files(tmp_path, context_ignore_patterns(tmp_path))}
    assert set(included) <= walked
    assert not set(excluded) & walked


def test_the_tag_reads_the_ignore_file_the_build_gets() -> None:
    from preview.offline import run_program

    graph = run_program("dev")
    assert graph.error is None
    [build] = graph.of_type(BUILD)
    context_dir = image.REPO_ROOT / build.inputs["context"]["location"]
    dockerfile = image.REPO_ROOT / build.inputs["dockerfile"]["location"]
    # The provider's rule (getIgnorePatterns): <Dockerfile>.dockerignore first, else <context>/.dockerignore.
    candidates = [Path(f"{dockerfile}.dockerignore"), context_dir / ".dockerignore"]
    read_by_build = next(path for path in candidates if path.is_file())
    assert read_by_build == image.REPO_ROOT / "server" / "Dockerfile.dockerignore"
    lines = [line.strip() for line in read_by_build.read_text().splitlines()]
    written = [line.removesuffix("/") for line in lines if line and not line.startswith("#")]
    assert context_ignore_patterns() == written
    assert build.inputs["tags"][0].endswith(f":{image_tag()}")


def test_the_context_holds_what_the_dockerfile_copies_and_nothing_else() -> None:
    sources = [s.rstrip("/") for s in copied_sources(image.REPO_ROOT / image.DOCKERFILE)]
    walked = [relative for relative, _ in context_files(image.REPO_ROOT, context_ignore_patterns())]
    for source in sources:  # an ignored COPY source would fail the build
        assert any(relative == source or relative.startswith(f"{source}/") for relative in walked), source
    strays = [r for r in walked if not any(r == s or r.startswith(f"{s}/") for s in sources)]
    assert strays == []
    assert not [r for r in walked if "__pycache__" in r or r.endswith(".pyc")]


def test_the_provider_and_the_tag_walk_symlinked_directories_alike(tmp_path: Path) -> None:
    # A symlink to a directory is not descended (WalkDir) and its read fails with EISDIR, which the
    # provider skips: it adds nothing to the hash.
    (tmp_path / "server").mkdir()
    (tmp_path / "server" / "Dockerfile").write_text("FROM scratch\n")
    before = build_context_hash(tmp_path)
    os.symlink(tmp_path / "server", tmp_path / "server" / "loop")
    assert build_context_hash(tmp_path) == before
