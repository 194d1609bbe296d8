"""Every IAM policy document the program emits, checked by parliament and by what each role needs."""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Iterator
from typing import Any

import pytest

from infra.identity import ecr_repository_arn_for_image
from preview.offline import ResourceGraph, list_stacks, run_program, stack_backend, stack_mode, unwrap

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # parliament imports the deprecated pkg_resources
    import parliament

STACK_FILES = list_stacks()
# The ECS task roles; the Kubernetes backend's roles are checked in tests/unit/test_kubernetes_stacks.py.
# A platform stack (tenancy.mode platform) runs no task: its only role is the flow logs'.
ECS_STACKS = [s for s in STACK_FILES if stack_backend(s) == "ecs" and stack_mode(s) != "platform"]
ABOVE_LOW = {"MEDIUM", "HIGH", "CRITICAL"}
# IAM rejects a Resource element in a role's trust policy, while parliament's grammar (written for
# identity policies) demands one: that single finding is expected on trust policies, nothing else.
TRUST_POLICY_MISSING_RESOURCE = ("MALFORMED", "Statement contains neither Resource nor NotResource")
# parliament knows only the public web identity providers (Cognito, Google, ...) as federation
# sources; an EKS cluster's IAM OIDC provider (IRSA, the Kubernetes backend) is what the EKS user
# guide prescribes: https://docs.aws.amazon.com/eks/latest/userguide/associate-service-account-role.html
EKS_OIDC_PROVIDER = re.compile(
    r"arn:aws[a-z-]*:iam::\d{12}:oidc-provider/oidc\.eks\.[a-z0-9-]+\.amazonaws\.com(\.cn)?/id/"
)


def policy_documents(graph: ResourceGraph) -> Iterator[tuple[str, str, str]]:
    """(resource name, input key, document) for every JSON policy document in any resource input."""

    def walk(value: Any, key: str) -> Iterator[tuple[str, str]]:
        value = unwrap(value)
        if isinstance(value, str) and value.lstrip().startswith("{"):
            try:
                document = json.loads(value)
            except ValueError:
                return
            if isinstance(document, dict) and "Statement" in document:
                yield key, value
        elif isinstance(value, dict):
            for child_key, child in value.items():
                yield from walk(child, child_key)
        elif isinstance(value, list):
            for child in value:
                yield from walk(child, key)

    for resource in graph.resources:
        for key, document in walk(resource.inputs, ""):
            yield resource.name, key, document


def statements(document: str) -> list[dict[str, Any]]:
    parsed = json.loads(document)["Statement"]
    return parsed if isinstance(parsed, list) else [parsed]


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def role_policy(graph: ResourceGraph, role: str) -> list[dict[str, Any]]:
    return statements(graph.named(f"{graph_prefix(graph)}-identity-{role}-policy").get("policy"))


def graph_prefix(graph: ResourceGraph) -> str:
    return graph.one("mlflow-stack:identity:Identity").name.removesuffix("-identity")


@pytest.mark.parametrize("stack", STACK_FILES)
def test_every_policy_passes_parliament(stack_graph, stack):
    documents = list(policy_documents(stack_graph(stack)))
    assert len(documents) >= 4  # 2 trust + 2 role policies + bucket policy at least
    for name, key, document in documents:
        policy = parliament.analyze_policy_string(document)
        findings = [parliament.enhance_finding(finding) for finding in policy.findings]
        serious = [
            (finding.issue, finding.severity, finding.detail)
            for finding in findings
            if finding.severity in ABOVE_LOW
            and not (
                key == "assumeRolePolicy" and (finding.issue, finding.detail) == TRUST_POLICY_MISSING_RESOURCE
            )
            and not (
                key == "assumeRolePolicy"
                and finding.issue == "UNKNOWN_FEDERATION_SOURCE"
                and EKS_OIDC_PROVIDER.match(str(finding.detail))
            )
        ]
        assert not serious, f"{name}.{key}: {serious}\n{document}"


@pytest.mark.parametrize("stack", STACK_FILES)
def test_no_statement_grants_everything(stack_graph, stack):
    for name, key, document in policy_documents(stack_graph(stack)):
        for statement in statements(document):
            if statement["Effect"] != "Allow":
                continue
            assert "NotAction" not in statement and "NotResource" not in statement, f"{name}.{key}"
            actions = as_list(statement["Action"])
            assert "*" not in actions and "s3:*" not in actions, f"{name}.{key}: {actions}"


def test_runtime_role_reaches_only_its_prefix_and_key(stack_graph):
    graph = stack_graph("prod")
    bucket_arn = f"arn:aws:s3:::{graph.outputs['bucket_name']}"
    artifacts_key = graph.named("mlflow-prod-artifacts-kms")
    policy = {statement["Sid"]: statement for statement in role_policy(graph, "runtime")}
    assert set(policy) == {"ListArtifactPrefix", "ReadWriteArtifacts", "ArtifactEncryption"}
    assert policy["ListArtifactPrefix"]["Resource"] == bucket_arn
    assert policy["ListArtifactPrefix"]["Condition"]["StringLike"]["s3:prefix"] == [
        "mlflow-artifacts",
        "mlflow-artifacts/*",
    ]
    assert policy["ReadWriteArtifacts"]["Resource"] == f"{bucket_arn}/mlflow-artifacts/*"
    assert policy["ArtifactEncryption"]["Resource"].endswith(f"key/{artifacts_key.id}")
    assert (
        policy["ArtifactEncryption"]["Condition"]["StringEquals"]["kms:ViaService"]
        == "s3.us-east-1.amazonaws.com"
    )
    for statement in policy.values():
        assert "*" not in as_list(statement["Resource"])


def test_execution_role_reads_only_its_secrets_logs_and_image(stack_graph):
    graph = stack_graph("dev")
    policy = {statement["Sid"]: statement for statement in role_policy(graph, "execution")}
    secret_arns = sorted(
        graph.outputs[key]
        for key in (
            "db_password_secret_arn",
            "admin_password_secret_arn",
            "flask_secret_key_secret_arn",
            "crypto_kek_passphrase_secret_arn",
            "webhook_encryption_key_secret_arn",
            # RDS' own master secret: ECS hands it to the db-bootstrap container only.
            "db_master_secret_arn",
        )
    )
    assert policy["ReadSecrets"]["Resource"] == secret_arns
    assert policy["ReadSecrets"]["Action"] == ["secretsmanager:GetSecretValue"]
    secrets_key = graph.named("mlflow-dev-secrets-kms")
    assert policy["DecryptSecrets"]["Resource"].endswith(f"key/{secrets_key.id}")
    log_group = f"arn:aws:logs:us-east-1:123456789012:log-group:{graph.outputs['log_group_name']}"
    assert policy["WriteLogs"]["Resource"] == [log_group, f"{log_group}:log-stream:*"]
    # The image is built into this stack's repository: pull from that one repository only.
    assert (
        policy["PullServerImage"]["Resource"]
        == "arn:aws:ecr:us-east-1:123456789012:repository/mlflow-dev-server"
    )
    # GetAuthorizationToken has no resource-level permissions; it is alone in its statement.
    assert (
        policy["EcrLogin"]["Action"] == ["ecr:GetAuthorizationToken"]
        and policy["EcrLogin"]["Resource"] == "*"
    )
    stars = [s["Sid"] for s in policy.values() if "*" in as_list(s["Resource"])]
    assert stars == ["EcrLogin"]


def test_prebuilt_ecr_image_is_pulled_from_its_own_repository(stack_graph):
    policy = {statement["Sid"]: statement for statement in role_policy(stack_graph("staging"), "execution")}
    assert policy["PullServerImage"]["Resource"] == (
        "arn:aws:ecr:us-east-1:123456789012:repository/mlflow-stack-server"
    )


def test_image_outside_ecr_gets_no_ecr_permissions():
    graph = run_program("dev", config_overrides={"server": {"image": "ghcr.io/acme/mlflow-server:3.17.2"}})
    assert graph.error is None, graph.error
    actions = [
        action for statement in role_policy(graph, "execution") for action in as_list(statement["Action"])
    ]
    assert not [action for action in actions if action.startswith("ecr:")]
    assert "secretsmanager:GetSecretValue" in actions


@pytest.mark.parametrize("stack", ECS_STACKS)
def test_task_roles_trust_only_ecs_tasks_of_this_account(stack_graph, stack):
    graph = stack_graph(stack)
    prefix = graph_prefix(graph)
    for role in ("runtime", "execution"):
        (statement,) = statements(graph.named(f"{prefix}-identity-{role}-role").get("assumeRolePolicy"))
        assert statement["Principal"] == {"Service": "ecs-tasks.amazonaws.com"}
        assert statement["Action"] == "sts:AssumeRole"
        assert statement["Condition"] == {"StringEquals": {"aws:SourceAccount": "123456789012"}}


@pytest.mark.parametrize(
    ("image", "arn"),
    [
        (
            "123456789012.dkr.ecr.eu-west-1.amazonaws.com/team/mlflow:3.17.2",
            "arn:aws:ecr:eu-west-1:123456789012:repository/team/mlflow",
        ),
        (
            "123456789012.dkr.ecr.us-east-1.amazonaws.com/mlflow@sha256:" + "a" * 64,
            "arn:aws:ecr:us-east-1:123456789012:repository/mlflow",
        ),
        ("ghcr.io/acme/mlflow:3.17.2", None),
        ("mlflow/mlflow:3.17.2", None),
    ],
)
def test_ecr_repository_of_an_image(image, arn):
    assert ecr_repository_arn_for_image(image, "aws") == arn


def test_parliament_flags_the_mistakes_this_suite_guards_against():
    """The check above can fail: object actions on the bucket ARN, or a misspelt condition key."""
    wrong_resource = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::bucket"}],
    }
    wrong_condition = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": "kms:Decrypt",
                "Resource": "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
                "Condition": {"StringEquals": {"kms:ViaServce": "s3.us-east-1.amazonaws.com"}},
            }
        ],
    }
    for document in (wrong_resource, wrong_condition):
        findings = parliament.analyze_policy_string(json.dumps(document)).findings
        assert {parliament.enhance_finding(f).severity for f in findings} & ABOVE_LOW, document


@pytest.mark.parametrize("stack", ECS_STACKS)
def test_execution_role_names_the_repository_and_log_group_that_exist(stack_graph, stack):
    """Identity builds these ARNs from deterministic names; the compute side must create exactly those."""
    graph = stack_graph(stack)
    policy = {statement["Sid"]: statement for statement in role_policy(graph, "execution")}
    log_groups = {r.get("name") for r in graph.of_type("aws:cloudwatch/logGroup:LogGroup")}
    assert graph.outputs["log_group_name"] in log_groups
    assert policy["WriteLogs"]["Resource"][0].endswith(f":log-group:{graph.outputs['log_group_name']}")
    repositories = [r.get("name") for r in graph.of_type("aws:ecr/repository:Repository")]
    if repositories:  # the image is built by this stack
        assert policy["PullServerImage"]["Resource"].endswith(f":repository/{repositories[0]}")
        assert len(repositories) == 1


def test_every_data_plane_role_trusts_only_this_account(stack_graph):
    graph = stack_graph("prod")
    components = {"mlflow-prod-network", "mlflow-prod-identity"}
    roles = [role for role in graph.of_type("aws:iam/role:Role") if role.parent_name in components]
    assert len(roles) == 3  # flow logs, task runtime, task execution
    for role in roles:
        for statement in statements(role.get("assumeRolePolicy")):
            assert statement["Condition"]["StringEquals"]["aws:SourceAccount"] == "123456789012", role.name
