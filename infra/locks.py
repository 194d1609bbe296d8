"""The DynamoDB lock table the day-2 tools share, and the IAM policy CI attaches to use it.

Every stack has one, whether or not scheduled maintenance is on: `mlflow-stack models
promote|rollback` must be safe when two pipelines promote the same model at once, and that safety
is a conditional write AWS arbitrates (lifecycle/locks.py). The table:
- partition key `lock_id` (S), TTL on `expires_at` (epoch seconds) so abandoned leases are swept;
- on-demand billing (a few requests a week), encrypted, point-in-time recovery.

The policy `<prefix>-model-promotion-lock` is what a CI role attaches to take and release a
model's promotion lease: PutItem/GetItem/DeleteItem on this table only, and only on items whose
key starts with `model-aliases/` (lifecycle.locks.model_lock_id) — a pipeline cannot take or
break the maintenance lease. The names below are lifecycle/locks.py's; a unit test keeps them equal
(infra/ never imports lifecycle/).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra.tags import child_opts

LOCK_TABLE_HASH_KEY = "lock_id"
LOCK_TABLE_TTL_ATTRIBUTE = "expires_at"
# lifecycle.locks.model_lock_id(name) == MODEL_LOCK_PREFIX + name
MODEL_LOCK_PREFIX = "model-aliases/"
# Exactly the calls DynamoLock makes (try_acquire, current_holder/still_held, release); it never
# updates an item in place.
PROMOTION_LOCK_ACTIONS = ("dynamodb:DeleteItem", "dynamodb:GetItem", "dynamodb:PutItem")

# DynamoDB CreateTable: 3-255 characters of [a-zA-Z0-9_.-]. IAM CreatePolicy: 1-128 of [\w+=,.@-].
_TABLE_NAME = re.compile(r"[A-Za-z0-9_.-]{3,255}")
_POLICY_NAME = re.compile(r"[\w+=,.@-]{1,128}")


class LockTableConfigError(ValueError):
    """A lock table or policy name AWS would refuse; the message names it and the fix."""


@dataclass(frozen=True)
class LockTableArgs:
    name_prefix: str  # e.g. "mlflow-search-prod"; names the table and the policy
    table_name: str | None = None  # default "<name_prefix>-locks"
    policy_name: str | None = None  # default "<name_prefix>-model-promotion-lock"
    # Earlier addresses of the table, so `pulumi up` adopts it instead of replacing it (a
    # replacement would try to create a second table with the same name, and fail).
    table_aliases: Sequence[pulumi.Alias] = ()

    @property
    def resolved_table_name(self) -> str:
        return self.table_name or f"{self.name_prefix}-locks"

    @property
    def resolved_policy_name(self) -> str:
        return self.policy_name or f"{self.name_prefix}-model-promotion-lock"


def validate_args(args: LockTableArgs) -> None:
    problems = []
    table = args.resolved_table_name
    if not _TABLE_NAME.fullmatch(table):
        problems.append(
            f"lock table name {table!r} must be 3-255 characters of letters, digits, '_', '.', '-' "
            "(shorten the stack's name prefix or set table_name)"
        )
    policy = args.resolved_policy_name
    if not _POLICY_NAME.fullmatch(policy):
        problems.append(
            f"promotion lock policy name {policy!r} must be 1-128 characters of letters, digits and "
            "+=,.@_- (shorten the stack's name prefix or set policy_name)"
        )
    if problems:
        raise LockTableConfigError("; ".join(problems))


def promotion_lock_policy(table_arn: str) -> str:
    """Take, inspect and release model promotion leases in this table; nothing else."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "ModelPromotionLease",
                    "Effect": "Allow",
                    "Action": list(PROMOTION_LOCK_ACTIONS),
                    "Resource": table_arn,
                    # Every key the request touches must be a model's lock: not the maintenance lease.
                    "Condition": {
                        "ForAllValues:StringLike": {"dynamodb:LeadingKeys": [f"{MODEL_LOCK_PREFIX}*"]}
                    },
                }
            ],
        },
        indent=2,
    )


class LockTable(pulumi.ComponentResource):
    table_name: pulumi.Output[str]
    table_arn: pulumi.Output[str]
    promotion_lock_policy_arn: pulumi.Output[str]

    def __init__(self, name: str, args: LockTableArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mlflow-stack:locks:LockTable", name, None, opts)
        validate_args(args)
        child = child_opts(self)

        table = aws.dynamodb.Table(
            f"{name}-table",
            name=args.resolved_table_name,
            billing_mode="PAY_PER_REQUEST",
            hash_key=LOCK_TABLE_HASH_KEY,
            attributes=[aws.dynamodb.TableAttributeArgs(name=LOCK_TABLE_HASH_KEY, type="S")],
            ttl=aws.dynamodb.TableTtlArgs(attribute_name=LOCK_TABLE_TTL_ATTRIBUTE, enabled=True),
            point_in_time_recovery=aws.dynamodb.TablePointInTimeRecoveryArgs(enabled=True),
            server_side_encryption=aws.dynamodb.TableServerSideEncryptionArgs(enabled=True),
            opts=child_opts(self, aliases=list(args.table_aliases)),
        )
        policy = aws.iam.Policy(
            f"{name}-promotion-policy",
            name=args.resolved_policy_name,
            description="Attach to a CI role that runs `mlflow-stack models promote|rollback`: "
            "model promotion leases in this stack's lock table, nothing else",
            policy=table.arn.apply(promotion_lock_policy),
            opts=child,
        )

        self.table_name = table.name
        self.table_arn = table.arn
        self.promotion_lock_policy_arn = policy.arn
        self.register_outputs(
            {
                "table_name": self.table_name,
                "table_arn": self.table_arn,
                "promotion_lock_policy_arn": self.promotion_lock_policy_arn,
            }
        )
