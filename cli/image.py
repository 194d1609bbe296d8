"""`mlflow-stack image build`: build and push the server image for a stack's `server.image`.

Thin glue over deploy.image: parse the options, print the commands (or, with --dry-run, the recipe)
and the reference to paste into stacks/Pulumi.<stack>.yaml. Exit 0 done, 2 the recipe stopped.
"""

from __future__ import annotations

import argparse
import os
import sys

EXIT_ERROR = 2


def register(subparsers: argparse._SubParsersAction) -> None:
    from deploy.image import DEFAULT_KEEP_UNTAGGED, DEFAULT_REPOSITORY  # a light import

    parser = subparsers.add_parser(
        "image",
        help="prebuilt server images: build server/Dockerfile for linux/arm64 and push it to ECR",
        description="Prebuilt server images for a stack's `server.image`.",
    )
    commands = parser.add_subparsers(dest="image_command", required=True, metavar="COMMAND")
    build = commands.add_parser(
        "build",
        help="build server/Dockerfile with docker buildx and push it to an ECR repository",
        description=(
            "Build server/Dockerfile for linux/arm64 with `docker buildx build --push` into an ECR "
            "repository (created when missing: IMMUTABLE tags, scan on push, AES256 or KMS encryption, "
            "untagged images expire), tagged <mlflow version>-<source hash> like a stack-built image, "
            "and print the server.image reference for a stack file. Needs Docker with buildx and AWS "
            "credentials (none with --dry-run --account-id)."
        ),
    )
    build.add_argument(
        "--repository", default=DEFAULT_REPOSITORY, metavar="NAME", help=f"default {DEFAULT_REPOSITORY}"
    )
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    build.add_argument(
        "--region",
        default=region,
        required=region is None,
        help="the stack's AWS region, e.g. us-east-1 (default: $AWS_REGION / $AWS_DEFAULT_REGION)",
    )
    build.add_argument(
        "--account-id", metavar="ID", help="the registry's account (default: the credentials' account)"
    )
    build.add_argument(
        "--kms-key", metavar="ARN", help="encrypt a new repository with this KMS key (default AES256)"
    )
    build.add_argument(
        "--keep-untagged",
        type=int,
        default=DEFAULT_KEEP_UNTAGGED,
        metavar="N",
        help=f"a new repository's lifecycle policy keeps the last N untagged images (default "
        f"{DEFAULT_KEEP_UNTAGGED})",
    )
    build.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    build.set_defaults(func=run_build)


def run_build(args: argparse.Namespace) -> int:
    from deploy.image import RecipeError, build_image

    # Progress and the recipe on stderr in a real run; a dry run's recipe is the output (stdout).
    log = print if args.dry_run else (lambda line: print(line, file=sys.stderr, flush=True))
    try:
        result = build_image(
            region=args.region,
            repository=args.repository,
            account_id=args.account_id,
            keep_untagged=args.keep_untagged,
            kms_key=args.kms_key,
            dry_run=args.dry_run,
            log=log,
        )
    except RecipeError as error:
        print(f"mlflow-stack image build: {error}", file=sys.stderr)
        return EXIT_ERROR
    print(f"server.image: {result.reference}")
    if result.pinned:
        print(f"server.image (digest-pinned): {result.pinned}")
    return 0
