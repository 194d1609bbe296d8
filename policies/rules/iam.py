"""IAM: least privilege, checked on every identity policy document the stack creates or attaches."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from typing import Any

from policies.model import Context, Resource, as_list, parse_json
from policies.spec import Rule

# type token -> properties holding a policy document (JSON string or object).
DOCUMENT_PROPS: dict[str, tuple[str, ...]] = {
    "aws:iam/policy:Policy": ("policy",),
    "aws:iam/rolePolicy:RolePolicy": ("policy",),
    "aws:iam/userPolicy:UserPolicy": ("policy",),
    "aws:iam/groupPolicy:GroupPolicy": ("policy",),
}
ROLE = "aws:iam/role:Role"
# type token -> properties holding managed policy ARNs.
ATTACHMENT_PROPS: dict[str, tuple[str, ...]] = {
    "aws:iam/rolePolicyAttachment:RolePolicyAttachment": ("policyArn",),
    "aws:iam/userPolicyAttachment:UserPolicyAttachment": ("policyArn",),
    "aws:iam/groupPolicyAttachment:GroupPolicyAttachment": ("policyArn",),
    "aws:iam/policyAttachment:PolicyAttachment": ("policyArn",),
    "aws:iam/rolePolicyAttachmentsExclusive:RolePolicyAttachmentsExclusive": ("policyArns",),
    ROLE: ("managedPolicyArns",),
}
DOCUMENT_TYPES = frozenset({*DOCUMENT_PROPS, ROLE})
ATTACHMENT_TYPES = frozenset(ATTACHMENT_PROPS)

DATA_SERVICES = ["s3", "secretsmanager", "kms", "ssm", "rds-db", "dynamodb", "rds-data"]
DENIED_MANAGED_POLICIES = [
    "arn:aws*:iam::aws:policy/*FullAccess",
    "arn:aws*:iam::aws:policy/AdministratorAccess",
    "arn:aws*:iam::aws:policy/PowerUserAccess",
]


def documents(resource: Resource) -> list[tuple[str, Mapping[str, Any]]]:
    """(label, parsed document) for every permission document the resource defines."""
    found: list[tuple[str, Any]] = [
        (prop, parse_json(resource.props.get(prop))) for prop in DOCUMENT_PROPS.get(resource.type, ())
    ]
    if resource.type == ROLE:
        for inline in as_list(resource.props.get("inlinePolicies")):
            if isinstance(inline, Mapping):
                found.append((f"inline policy {inline.get('name')}", parse_json(inline.get("policy"))))
    return [(label, doc) for label, doc in found if isinstance(doc, Mapping)]


def allow_statements(resource: Resource) -> Iterable[tuple[str, Mapping[str, Any]]]:
    for label, doc in documents(resource):
        for statement in as_list(doc.get("Statement")):
            if isinstance(statement, Mapping) and statement.get("Effect") == "Allow":
                yield label, statement


def check_no_wildcard_actions(resource: Resource, ctx: Context) -> Iterable[str]:
    for label, statement in allow_statements(resource):
        if "NotAction" in statement:
            yield f"{label}: Allow with NotAction grants everything except a list"
        for action in as_list(statement.get("Action")):
            lowered = str(action).lower()
            if lowered in ("*", "*:*"):
                yield f'{label}: Allow of action "{action}"'
            elif lowered.endswith(":*") and lowered.split(":", 1)[0] in ctx.config["deniedServiceWildcards"]:
                yield f'{label}: Allow of every {lowered.split(":", 1)[0]} action ("{action}")'


def check_no_wildcard_resource_on_data(resource: Resource, ctx: Context) -> Iterable[str]:
    data_services = {s.lower() for s in ctx.config["dataServices"]}
    for label, statement in allow_statements(resource):
        if "*" not in as_list(statement.get("Resource")) and "NotResource" not in statement:
            continue
        # An action's service part may itself be a pattern ("*", "s3*"): it counts if it covers
        # any data service.
        data_actions = sorted(
            str(a)
            for a in as_list(statement.get("Action"))
            if any(fnmatch.fnmatchcase(service, str(a).split(":", 1)[0].lower()) for service in data_services)
        )
        if data_actions:
            yield f'{label}: data actions {", ".join(data_actions)} allowed on Resource "*"'


def check_no_managed_full_access(resource: Resource, ctx: Context) -> Iterable[str]:
    patterns = ctx.config["deniedManagedPolicies"]
    for prop in ATTACHMENT_PROPS.get(resource.type, ()):
        for arn in as_list(resource.props.get(prop)):
            if any(fnmatch.fnmatchcase(str(arn), pattern) for pattern in patterns):
                yield f"attaches AWS-managed policy {arn}"


RULES = (
    Rule(
        name="iam-no-wildcard-actions",
        description='IAM policies never allow "*" or a whole data service (e.g. "s3:*").',
        enforcement="mandatory",
        remediation="List the exact actions MLflow needs (s3:GetObject, s3:PutObject, ...).",
        config={
            "deniedServiceWildcards": {
                "type": "array",
                "items": {"type": "string"},
                "default": ["s3", "iam", "kms", "secretsmanager", "rds", "ec2", "sts"],
                "description": 'Services whose "<service>:*" wildcard is refused.',
            }
        },
        types=DOCUMENT_TYPES,
        check_resource=check_no_wildcard_actions,
    ),
    Rule(
        name="iam-no-wildcard-resource-on-data",
        description='IAM policies never allow data actions (S3, Secrets Manager, KMS, ...) on Resource "*".',
        enforcement="mandatory",
        remediation="Scope data actions to the stack's bucket, secrets and key ARNs.",
        config={
            "dataServices": {
                "type": "array",
                "items": {"type": "string"},
                "default": DATA_SERVICES,
                "description": 'Services whose actions must name their resources (never "*").',
            }
        },
        types=DOCUMENT_TYPES,
        check_resource=check_no_wildcard_resource_on_data,
    ),
    Rule(
        name="iam-no-managed-full-access",
        description="No AWS-managed *FullAccess (or admin) policy is attached.",
        enforcement="mandatory",
        remediation="Replace the managed policy with a scoped inline policy.",
        config={
            "deniedManagedPolicies": {
                "type": "array",
                "items": {"type": "string"},
                "default": DENIED_MANAGED_POLICIES,
                "description": "Glob patterns of managed policy ARNs that must not be attached.",
            }
        },
        types=ATTACHMENT_TYPES,
        check_resource=check_no_managed_full_access,
    ),
)
