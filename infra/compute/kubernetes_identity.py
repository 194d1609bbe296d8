"""IAM for the Kubernetes backend: one role per service account, trusted by exactly that account.

The server's pods get the ECS task role's permissions (infra/identity.py `runtime_policy`: the
artifact prefix and its key, nothing else); the maintenance CronJob gets the ECS maintenance task's
(infra/operations.py `task_policy`: its lease in the lock table). Secrets Manager reads go to
whoever fetches the secrets: External Secrets' SecretStore service account, or, with the CSI
driver, the pods themselves (the driver fetches with the mounting pod's identity).

Trust, per the EKS user guide:
- IRSA: the cluster's OIDC provider, `sts:AssumeRoleWithWebIdentity`, and StringEquals on the
  issuer's `:sub` (system:serviceaccount:<namespace>:<name>) and `:aud` (sts.amazonaws.com) —
  https://docs.aws.amazon.com/eks/latest/userguide/associate-service-account-role.html
- Pod Identity: the `pods.eks.amazonaws.com` service with `sts:AssumeRole` + `sts:TagSession`,
  scoped by the session tags EKS sets (cluster, namespace, service account) —
  https://docs.aws.amazon.com/eks/latest/userguide/pod-id-role.html
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pulumi
import pulumi_aws as aws

from infra.identity import PolicedRole

POD_IDENTITY_PRINCIPAL = "pods.eks.amazonaws.com"
IRSA_AUDIENCE = "sts.amazonaws.com"


def service_account_subject(namespace: str, service_account: str) -> str:
    return f"system:serviceaccount:{namespace}:{service_account}"


def oidc_provider_arn(partition: str, account_id: str, issuer: str) -> str:
    return f"arn:{partition}:iam::{account_id}:oidc-provider/{issuer}"


def irsa_trust_policy(
    *, partition: str, account_id: str, issuer: str, namespace: str, service_account: str
) -> str:
    """Only this service account in this namespace of this cluster may assume the role."""
    return _document(
        [
            {
                "Sid": "ServiceAccountAssume",
                "Effect": "Allow",
                "Principal": {"Federated": oidc_provider_arn(partition, account_id, issuer)},
                "Action": "sts:AssumeRoleWithWebIdentity",
                "Condition": {
                    "StringEquals": {
                        f"{issuer}:sub": service_account_subject(namespace, service_account),
                        f"{issuer}:aud": IRSA_AUDIENCE,
                    }
                },
            }
        ]
    )


def pod_identity_trust_policy(
    *, account_id: str, cluster_name: str, namespace: str, service_account: str
) -> str:
    """EKS Pod Identity assumes the role for an association; the session tags it sets name the
    cluster, namespace and service account, so another association in the account cannot use it."""
    return _document(
        [
            {
                "Sid": "PodIdentityAssume",
                "Effect": "Allow",
                "Principal": {"Service": POD_IDENTITY_PRINCIPAL},
                "Action": ["sts:AssumeRole", "sts:TagSession"],
                "Condition": {
                    "StringEquals": {
                        "aws:SourceAccount": account_id,
                        "aws:RequestTag/eks-cluster-name": cluster_name,
                        "aws:RequestTag/kubernetes-namespace": namespace,
                        "aws:RequestTag/kubernetes-service-account": service_account,
                    }
                },
            }
        ]
    )


def secrets_read_statements(
    secret_arns: Sequence[str], kms_key_arn: str, region: str
) -> list[dict[str, Any]]:
    """Read exactly these secrets (GetSecretValue; DescribeSecret for the CSI driver's AWS provider)
    and decrypt them through Secrets Manager only."""
    return [
        {
            "Sid": "ReadSecrets",
            "Effect": "Allow",
            "Action": ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"],
            "Resource": sorted({_secret_arn(ref) for ref in secret_arns}),
        },
        {
            "Sid": "DecryptSecrets",
            "Effect": "Allow",
            "Action": ["kms:Decrypt"],
            "Resource": kms_key_arn,
            "Condition": {"StringEquals": {"kms:ViaService": f"secretsmanager.{region}.amazonaws.com"}},
        },
    ]


def secrets_read_policy(secret_arns: Sequence[str], kms_key_arn: str, region: str) -> str:
    return _document(secrets_read_statements(secret_arns, kms_key_arn, region))


def merge_policies(*documents: str) -> str:
    """One policy document holding every statement of `documents` (each `Sid` stays unique)."""
    statements = [statement for document in documents for statement in json.loads(document)["Statement"]]
    return _document(statements)


def split_secret_reference(reference: str) -> tuple[str, str | None]:
    """An ECS `valueFrom` (`<secret arn>[:<json key>:<stage>:<version>]`) as (secret ARN, json key).
    A Secrets Manager ARN has 7 colon-separated fields; anything after them selects a JSON key."""
    parts = reference.split(":")
    if len(parts) <= 7:
        return reference, None
    return ":".join(parts[:7]), parts[7] or None


def _secret_arn(reference: str) -> str:
    return split_secret_reference(reference)[0]


def _document(statements: list[dict[str, Any]]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": statements}, indent=2)


def service_account_role(
    name: str,
    *,
    role_name: str,
    description: str,
    trust: pulumi.Input[str],
    policy: pulumi.Input[str],
    permissions_boundary_arn: str | None,
    opts: pulumi.ResourceOptions,
) -> PolicedRole:
    """A role and its inline policy (`<name>-role`, `<name>-policy`); its ARN resolves once the
    policy is attached, so the service account never names a role that cannot act yet."""
    role = aws.iam.Role(
        f"{name}-role",
        name=role_name,
        description=description,
        assume_role_policy=trust,
        permissions_boundary=permissions_boundary_arn,
        opts=opts,
    )
    attached = aws.iam.RolePolicy(f"{name}-policy", role=role.id, policy=policy, opts=opts)
    return PolicedRole(role, attached)
