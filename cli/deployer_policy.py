"""`mlflow-stack deployer-policy --stack NAME`: the IAM policy to run `pulumi up|refresh|destroy`.

Thin glue: parse options, call deploy.deployer_policy.generate, write the documents, print how to
attach them. Exit codes: 0 written; 1 the stack registers a resource type the policy table does not
cover (a kit bug: the message names the type); 2 bad options or an invalid stack.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXIT_UNCOVERED = 1
EXIT_USAGE = 2

ATTACH_HELP = """\
Attach (one managed policy per document; a role takes 10 managed policies by default):
  mlflow-stack deployer-policy --stack prod --account-id 111122223333 \\
      --state-bucket acme-pulumi-state --secrets-key-arn arn:aws:kms:...:key/... --output deployer.json
  aws iam create-policy --policy-name mlflow-prod-deployer-1 --policy-document file://deployer-1.json
  aws iam attach-role-policy --role-name <deployer role> \\
      --policy-arn arn:aws:iam::111122223333:policy/mlflow-prod-deployer-1
A policy that does not fit IAM's 6,144-character limit is split into numbered documents
(deployer-1.json, deployer-2.json, ...); the command prints the exact commands for each. Keep the
deployer's own role and policies outside the stack's names (mlflow-<team>-<env>-*).
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "deployer-policy",
        help="the IAM policy a person or CI role needs to run pulumi up/refresh/destroy for a stack",
        description=(
            "Generate the deployer's IAM policy from the resource types the stack's program "
            "registers (run offline), scoped to the stack's names, account and region. Prints JSON "
            "(an array when the policy is split into several documents) or writes --output."
        ),
        epilog=ATTACH_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    parser.add_argument("--stack", required=True, metavar="NAME", help="stacks/Pulumi.<NAME>.yaml")
    parser.add_argument(
        "--account-id", metavar="ID", help="the 12-digit account the stack deploys to (default: any, '*')"
    )
    parser.add_argument("--partition", default="aws", help="ARN partition: aws (default), aws-us-gov, aws-cn")
    parser.add_argument(
        "--state-bucket",
        metavar="NAME",
        help="Pulumi S3 state backend bucket (s3://NAME): read/write its state",
    )
    parser.add_argument(
        "--secrets-key-arn",
        metavar="ARN",
        help="Pulumi awskms:// secrets provider key (a key ARN, not an alias): encrypt/decrypt",
    )
    parser.add_argument(
        "--output",
        metavar="FILE",
        help="write the document to FILE (several: FILE's name with -1, -2, ... before the suffix)",
    )
    parser.set_defaults(func=run, parser=parser)


def output_paths(output: Path, count: int) -> list[Path]:
    if count == 1:
        return [output]
    return [output.with_name(f"{output.stem}-{index}{output.suffix}") for index in range(1, count + 1)]


def run(args: argparse.Namespace) -> int:
    import json

    from deploy.deployer_policy import (
        MANAGED_POLICY_MAX_CHARS,
        DeployerPolicyError,
        PolicyOptions,
        UncoveredTypesError,
        generate,
        policy_size,
        to_json,
    )

    options = PolicyOptions(
        partition=args.partition,
        account_id=args.account_id,
        state_bucket=args.state_bucket.removeprefix("s3://").rstrip("/") if args.state_bucket else None,
        secrets_key_arn=args.secrets_key_arn,
    )
    try:
        policy = generate(args.stack, options)
    except UncoveredTypesError as exc:
        print(f"mlflow-stack deployer-policy: {exc}", file=sys.stderr)
        return EXIT_UNCOVERED
    except (DeployerPolicyError, FileNotFoundError) as exc:
        print(f"mlflow-stack deployer-policy: {exc}", file=sys.stderr)
        return EXIT_USAGE

    documents = policy.documents
    sizes = ", ".join(f"{policy_size(document):,}" for document in documents)
    print(
        f"mlflow-stack deployer-policy: {args.stack}: {len(documents)} document(s) of {sizes} characters "
        f"(IAM's limit is {MANAGED_POLICY_MAX_CHARS:,})",
        file=sys.stderr,
    )
    if args.output is None:
        payload = documents[0] if len(documents) == 1 else documents
        sys.stdout.write(json.dumps(payload, indent=2) + "\n")
        return 0

    account = args.account_id or "<account>"
    for path, name, document in zip(
        output_paths(Path(args.output), len(documents)), policy.policy_names, documents, strict=True
    ):
        try:
            path.write_text(to_json(document))
        except OSError as exc:
            print(f"mlflow-stack deployer-policy: cannot write {path}: {exc.strerror}", file=sys.stderr)
            return EXIT_USAGE
        print(
            f"  wrote {path}\n"
            f"  aws iam create-policy --policy-name {name} --policy-document file://{path}\n"
            f"  aws iam attach-role-policy --role-name <deployer role> "
            f"--policy-arn arn:{args.partition}:iam::{account}:policy/{name}",
            file=sys.stderr,
        )
    return 0
