"""The deployer's IAM policy (`mlflow-stack deployer-policy`), generated from each stack's graph:
every resource type covered, every action real (parliament's IAM database), PassRole and
service-linked roles conditioned, `*` only where AWS allows nothing narrower, the size quota kept."""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path

import pytest
from test_iam import ABOVE_LOW, as_list, parliament

from cli.main import main
from deploy import deployer_actions as table
from deploy.deployer_policy import (
    BOUNDARY_REMOVAL,
    DENY_OBJECT_ACCESS_SID,
    MANAGED_POLICY_MAX_CHARS,
    UNSCOPED_SID,
    DeployerPolicy,
    DeployerPolicyError,
    PolicyOptions,
    UncoveredTypesError,
    build_deployer_policy,
    policy_size,
    split_documents,
    uncovered_types,
)
from preview.mocks import AwsMocks
from preview.offline import PROGRAM, ResourceGraph, list_stacks, run_program, stack_backend, stack_mode

ACCOUNT = "111122223333"
OPTIONS = PolicyOptions(account_id=ACCOUNT)
STACKS = [(stack, maintenance) for stack in list_stacks() for maintenance in (True, False)]
# Stacks that run a server (a platform stack runs none: no task roles, database or autoscaling).
SERVER_STACKS = [(stack, m) for stack, m in STACKS if stack_mode(stack) != "platform"]
SERVER_STACKS_NAMES = [stack for stack in list_stacks() if stack_mode(stack) != "platform"]
EXPECTED_SERVICE_LINKED = {
    "ecs.amazonaws.com",
    "elasticloadbalancing.amazonaws.com",
    "rds.amazonaws.com",
    "ecs.application-autoscaling.amazonaws.com",
}


@cache
def graph_of(stack: str, maintenance: bool) -> ResourceGraph:
    graph = run_program(stack, config_overrides={"maintenance": {"enabled": maintenance}})
    assert graph.error is None, graph.error
    return graph


@cache
def policy_of(stack: str, maintenance: bool) -> DeployerPolicy:
    return build_deployer_policy(graph_of(stack, maintenance), OPTIONS)


def assert_every_type_covered(graph: ResourceGraph) -> None:
    missing = uncovered_types(graph.types)
    assert not missing, f"stack {graph.stack}: no deployer actions for {', '.join(missing)}"


def privilege(action: str) -> dict | None:
    """parliament's entry for an action (its copy of the Service Authorization Reference)."""
    prefix, _, name = action.partition(":")
    for service in parliament.iam_definition:
        if service["prefix"] == prefix:
            for entry in service["privileges"]:
                if entry["privilege"] == name:
                    return entry
    return None


def has_resource_level_permissions(action: str) -> bool:
    entry = privilege(action)
    assert entry is not None, action
    return any(resource["resource_type"] for resource in entry["resource_types"])


def role_arns(graph: ResourceGraph, partition: str = "aws") -> dict[str, str]:
    """Role name (or the autoname pattern) -> ARN, read from the graph independently of the code."""
    arns = {}
    for role in graph.of_type("aws:iam/role:Role"):
        name = role.get("name") or f"{role.name}-*"
        arns[role.name] = f"arn:{partition}:iam::{ACCOUNT}:role/{name}"
    return arns


# --- coverage ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("stack", "maintenance"), STACKS)
def test_every_resource_type_of_every_stack_is_in_the_table(stack, maintenance):
    graph = graph_of(stack, maintenance)
    assert_every_type_covered(graph)
    granted = {
        action for statement in policy_of(stack, maintenance).statements for action in statement["Action"]
    }
    # Under a permissions boundary the deployer may not remove it (see the boundary test).
    withheld = {BOUNDARY_REMOVAL} if "mlflow-stack:permissionsBoundaryArn" in graph.config else set()
    # ... and takes no final snapshot when the instance is configured to skip it.
    if all(db.get("skipFinalSnapshot") for db in graph.of_type("aws:rds/instance:Instance")):
        withheld.add(table.FINAL_SNAPSHOT_ACTION)
    for type_token in graph.types:
        for actions in table.TYPE_ACTIONS[type_token].values():
            assert set(actions) - withheld <= granted, type_token


def test_maintenance_changes_the_types_and_the_policy():
    with_schedule = graph_of("dev", True).types - graph_of("dev", False).types
    assert "aws:scheduler/schedule:Schedule" in with_schedule
    actions_off = {a for s in policy_of("dev", False).statements for a in s["Action"]}
    assert "scheduler:CreateSchedule" not in actions_off


def test_a_resource_type_missing_from_the_table_is_named(tmp_path):
    program = tmp_path / "program.py"
    program.write_text(
        "import runpy\nimport pulumi\n"
        f"runpy.run_path({str(PROGRAM)!r}, run_name='__pulumi_program__')\n"
        "pulumi.CustomResource('aws:fake/widget:Widget', 'unlisted-widget', {})\n"
    )
    graph = run_program("dev", program=program)
    assert graph.error is None, graph.error
    assert uncovered_types(graph.types) == ["aws:fake/widget:Widget"]
    with pytest.raises(AssertionError, match="aws:fake/widget:Widget"):
        assert_every_type_covered(graph)
    with pytest.raises(UncoveredTypesError, match=r"aws:fake/widget:Widget .*deploy/deployer_actions.py"):
        build_deployer_policy(graph, OPTIONS)


@pytest.mark.parametrize("stack", ["dev", "staging", "search-prod"])
def test_every_invoke_the_program_makes_is_covered(monkeypatch, stack):
    called: list[str] = []
    real_call = AwsMocks.call

    def record(self, args):
        called.append(args.token)
        return real_call(self, args)

    monkeypatch.setattr(AwsMocks, "call", record)
    graph = run_program(stack)
    assert graph.error is None and called
    actions = {a for s in build_deployer_policy(graph, OPTIONS).statements for a in s["Action"]}
    for token in set(called):
        assert token in table.INVOKE_ACTIONS, f"no deployer actions for the invoke {token}"
        assert table.INVOKED_WITH[token] in graph.types, token
        assert set(table.INVOKE_ACTIONS[token]) <= actions, token


def test_invoke_actions_follow_the_resources_that_need_them():
    def unscoped(policy: DeployerPolicy) -> list[str]:
        return next(s["Action"] for s in policy.statements if s["Sid"] == UNSCOPED_SID)

    assert "ecr:GetAuthorizationToken" in unscoped(policy_of("dev", True))  # builds its image
    assert "ecr:GetAuthorizationToken" not in unscoped(policy_of("staging", True))  # prebuilt image
    assert "ec2:DescribeAvailabilityZones" not in unscoped(policy_of("search-prod", True))  # existing VPC
    assert "sts:GetCallerIdentity" in unscoped(policy_of("search-prod", True))


# --- validity ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("stack", "maintenance"), STACKS)
def test_documents_are_parliament_clean_and_every_action_exists(stack, maintenance):
    options = PolicyOptions(
        account_id=ACCOUNT,
        state_bucket="acme-pulumi-state",
        secrets_key_arn=f"arn:aws:kms:us-east-1:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab",
    )
    policy = build_deployer_policy(graph_of(stack, maintenance), options)
    for document in policy.documents:
        findings = parliament.analyze_policy_string(json.dumps(document)).findings
        enhanced = [parliament.enhance_finding(finding) for finding in findings]
        serious = [
            (f.issue, f.severity, f.detail)
            for f in enhanced
            if f.severity in ABOVE_LOW and not closed_by_the_object_denial(f, policy)
        ]
        assert not serious, serious
        # LOW findings that would mean a wrong table: an unknown action, or "*" where AWS
        # accepts a narrower resource.
        assert not [(f.issue, f.detail) for f in enhanced if f.issue in {"UNKNOWN_ACTION", "RESOURCE_STAR"}]
    for statement in policy.statements:
        for action in statement["Action"]:
            assert privilege(action) is not None, f"{action} is not an IAM action"


def closed_by_the_object_denial(finding, policy: DeployerPolicy) -> bool:
    """parliament reports s3:PutBucketPolicy without s3:GetObject/PutObject on the same bucket as a
    way to grant oneself the objects. The deployer needs PutBucketPolicy (the TLS-only policies),
    and the policy closes that way with an explicit Deny on exactly those objects, which no bucket
    policy can override; parliament counts only Allows, so the finding stays: accept it only for
    buckets whose objects are denied."""
    match = re.search(r"escalation on (\S+) due to s3:(\w+) not being allowed", str(finding.detail))
    if finding.issue != "RESOURCE_POLICY_PRIVILEGE_ESCALATION" or match is None:
        return False
    (denial,) = [s for s in policy.statements if s["Sid"] == DENY_OBJECT_ACCESS_SID]
    return f"{match[1]}/*" in denial["Resource"] and f"s3:{match[2]}" in denial["Action"]


def test_the_deployer_cannot_grant_itself_the_artifacts():
    for stack in list_stacks():
        statements = {s["Sid"]: s for s in policy_of(stack, True).statements}
        denials = [s for s in statements.values() if s["Effect"] == "Deny"]
        assert denials == [statements[DENY_OBJECT_ACCESS_SID]]
        assert denials[0]["Action"] == ["s3:GetObject", "s3:PutObject"]
        buckets = statements["StackBuckets"]["Resource"]
        assert denials[0]["Resource"] == sorted(f"{bucket}/*" for bucket in buckets)
        assert "s3:PutBucketPolicy" in statements["StackBuckets"]["Action"]


def test_parliament_catches_what_the_table_could_get_wrong():
    """The checks above can fail: a misspelt action, and an action with resource-level
    permissions put under `*`."""
    for action, issue in (("ec2:CreateVpcs", "UNKNOWN_ACTION"), ("rds:DeleteDBInstance", "RESOURCE_STAR")):
        document = {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": [action], "Resource": "*"}],
        }
        assert issue in {f.issue for f in parliament.analyze_policy_string(json.dumps(document)).findings}
    assert privilege("ec2:CreateVpcs") is None
    assert has_resource_level_permissions("rds:DeleteDBInstance")
    assert not has_resource_level_permissions("ec2:DescribeVpcs")


@pytest.mark.parametrize(("stack", "maintenance"), STACKS)
def test_no_wildcard_actions_and_star_only_where_nothing_narrower_exists(stack, maintenance):
    statements = policy_of(stack, maintenance).statements
    assert len({s["Sid"] for s in statements}) == len(statements)
    for statement in statements:
        assert "NotAction" not in statement and "NotResource" not in statement
        assert statement["Effect"] == ("Deny" if statement["Sid"] == DENY_OBJECT_ACCESS_SID else "Allow")
        for action in statement["Action"]:
            assert "*" not in action, f"{statement['Sid']}: {action}"
        resources = as_list(statement["Resource"])
        if statement["Sid"] == UNSCOPED_SID:
            assert resources == ["*"] and "Condition" not in statement
            narrower = [a for a in statement["Action"] if has_resource_level_permissions(a)]
            assert not narrower, f"these accept a resource ARN: {narrower}"
        else:
            assert "*" not in resources, statement["Sid"]
            wide = [a for a in statement["Action"] if not has_resource_level_permissions(a)]
            assert not wide, f"{statement['Sid']}: {wide} need Resource '*'"


# --- scoping ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("stack", "maintenance"), SERVER_STACKS)
def test_pass_role_names_exactly_the_stack_roles_for_the_services_that_assume_them(stack, maintenance):
    graph = graph_of(stack, maintenance)
    expected = role_arns(graph)
    passing = [s for s in policy_of(stack, maintenance).statements if "iam:PassRole" in s["Action"]]
    if stack_backend(stack) == "kubernetes":
        # IRSA roles trust the cluster's OIDC provider, not a service: nothing is passed to AWS.
        assert passing == []
        return
    assert passing and all(s["Action"] == ["iam:PassRole"] for s in passing)
    assert {arn for s in passing for arn in s["Resource"]} == set(expected.values())
    for statement in passing:
        service = statement["Condition"]["StringEquals"]["iam:PassedToService"]
        for role in graph.of_type("aws:iam/role:Role"):
            trust = json.loads(role.get("assumeRolePolicy"))["Statement"]
            trusted = {s["Principal"]["Service"] for s in as_list(trust)}
            assert (expected[role.name] in statement["Resource"]) == (service in trusted), role.name
    services = {s["Condition"]["StringEquals"]["iam:PassedToService"] for s in passing}
    assert "ecs-tasks.amazonaws.com" in services
    assert ("scheduler.amazonaws.com" in services) == maintenance
    assert ("vpc-flow-logs.amazonaws.com" in services) == bool(graph.of_type("aws:ec2/flowLog:FlowLog"))
    # The deploy-time migration runner of an ECS stack (infra/compute/ecs_migration.py).
    assert ("lambda.amazonaws.com" in services) == (stack_backend(stack) == "ecs")


@pytest.mark.parametrize(("stack", "maintenance"), SERVER_STACKS)
def test_service_linked_roles_only_for_the_services_the_stack_needs(stack, maintenance):
    statements = policy_of(stack, maintenance).statements
    (statement,) = [s for s in statements if "iam:CreateServiceLinkedRole" in s["Action"]]
    expected = EXPECTED_SERVICE_LINKED
    if stack_backend(stack) == "kubernetes":  # no ECS service, no ECS autoscaling
        expected = expected - {"ecs.amazonaws.com", "ecs.application-autoscaling.amazonaws.com"}
    if not graph_of(stack, maintenance).of_type("aws:rds/instance:Instance"):  # on a shared instance
        expected = expected - {"rds.amazonaws.com"}
    assert statement["Action"] == ["iam:CreateServiceLinkedRole"]
    assert set(statement["Condition"]["StringEquals"]["iam:AWSServiceName"]) == expected
    assert statement["Resource"] == sorted(
        f"arn:aws:iam::{ACCOUNT}:role/aws-service-role/{service}/*" for service in expected
    )


@pytest.mark.parametrize("stack", SERVER_STACKS_NAMES)
def test_the_deployer_manages_and_invokes_only_the_stacks_migration_function(stack):
    graph = graph_of(stack, False)
    statements = {s["Sid"]: s for s in policy_of(stack, False).statements}
    functions = [f.get("name") for f in graph.of_type("aws:lambda/function:Function")]
    if stack_backend(stack) == "kubernetes":  # the migration is a Job there
        assert functions == [] and "StackFunctions" not in statements
        return
    [name] = functions
    function = f"arn:aws:lambda:{graph.config['aws:region']}:{ACCOUNT}:function:{name}"
    assert statements["StackFunctions"]["Resource"] == [function, f"{function}:*"]
    assert "lambda:InvokeFunction" in statements["StackFunctions"]["Action"]
    assert not [
        a
        for sid, s in statements.items()
        if sid != "StackFunctions"
        for a in s["Action"]
        if a.startswith("lambda:")
    ]


# Standalone stacks: a team stack has no DNS record of its own, a platform stack no secret
# (test_platform_team_deployer.py checks theirs).
@pytest.mark.parametrize("stack", [s for s in list_stacks() if stack_mode(s) == "standalone"])
def test_data_scoped_to_the_stack_names(stack):
    graph = graph_of(stack, True)
    statements = {s["Sid"]: s for s in policy_of(stack, True).statements}
    # infra/settings.py: secret_name_prefix is <project>/<stack>
    assert statements["StackSecrets"]["Resource"] == [
        f"arn:aws:secretsmanager:{graph.config['aws:region']}:{ACCOUNT}:secret:mlflow-stack/{stack}/*"
    ]
    artifacts = next(b.get("bucket") for b in graph.of_type("aws:s3/bucket:Bucket") if b.get("bucket"))
    # The bucket name carries the account: the deployer's, not the offline run's.
    expected_bucket = artifacts.replace("123456789012", ACCOUNT)
    assert f"arn:aws:s3:::{expected_bucket}" in statements["StackBuckets"]["Resource"]
    log_groups = {r.get("name") for r in graph.of_type("aws:cloudwatch/logGroup:LogGroup")}
    region = graph.config["aws:region"]
    # A Kubernetes stack without flow or WAF logs creates no log group (the cluster ships pod logs).
    assert ("StackLogGroups" in statements) == bool(log_groups)
    assert set(statements.get("StackLogGroups", {"Resource": []})["Resource"]) == {
        f"arn:aws:logs:{region}:{ACCOUNT}:log-group:{name}{suffix}"
        for name in log_groups
        for suffix in ("", ":*")
    }
    assert "123456789012" not in json.dumps(statements["StackRoles"]) + json.dumps(statements["StackBuckets"])
    records = statements["StackDnsRecords"]["Condition"]["ForAllValues:StringLike"]
    domain = str(graph.config["mlflow-stack:domain"]["name"])
    assert set(records["route53:ChangeResourceRecordSetsNormalizedRecordNames"]) <= {domain, f"_*.{domain}"}


def test_a_permissions_boundary_must_be_kept_by_every_role_the_deployer_creates():
    graph = graph_of("prod", True)
    boundary = graph.config["mlflow-stack:permissionsBoundaryArn"]
    statements = {s["Sid"]: s for s in policy_of("prod", True).statements}
    assert statements["StackRolesOnlyUnderTheirBoundary"]["Condition"] == {
        "StringEquals": {"iam:PermissionsBoundary": boundary}
    }
    assert not {"iam:CreateRole", "iam:DeleteRolePermissionsBoundary"} & set(
        statements["StackRoles"]["Action"]
    )
    dev = {s["Sid"]: s for s in policy_of("dev", True).statements}
    assert "StackRolesOnlyUnderTheirBoundary" not in dev and "iam:CreateRole" in dev["StackRoles"]["Action"]


def test_final_snapshot_only_where_destroy_takes_one():
    prod = {s["Sid"]: s for s in policy_of("prod", True).statements}["StackDatabase"]
    assert "rds:CreateDBSnapshot" in prod["Action"]
    assert f"arn:aws:rds:us-east-1:{ACCOUNT}:snapshot:mlflow-prod-db-*" in prod["Resource"]
    assert graph_of("dev", True).one("aws:rds/instance:Instance").get("skipFinalSnapshot") is True
    dev = {s["Sid"]: s for s in policy_of("dev", True).statements}["StackDatabase"]
    # dev takes no final snapshot: its only snapshots are the pre-upgrade ones (infra/database.py).
    assert [arn for arn in dev["Resource"] if ":snapshot:" in arn] == [
        f"arn:aws:rds:us-east-1:{ACCOUNT}:snapshot:mlflow-dev-db-pre-mlflow-*"
    ]
    assert "rds:DeleteDBSnapshot" not in dev["Action"]


def test_state_backend_and_secrets_key_are_granted_only_when_given():
    key = f"arn:aws:kms:us-east-1:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    with_backend = build_deployer_policy(
        graph_of("dev", True),
        PolicyOptions(account_id=ACCOUNT, state_bucket="acme-state", secrets_key_arn=key),
    )
    statements = {s["Sid"]: s for s in with_backend.statements}
    assert statements["PulumiStateBucket"]["Resource"] == ["arn:aws:s3:::acme-state"]
    assert statements["PulumiStateObjects"]["Resource"] == ["arn:aws:s3:::acme-state/*"]
    assert statements["PulumiSecretsProvider"] == {
        "Sid": "PulumiSecretsProvider",
        "Effect": "Allow",
        "Action": ["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey"],
        "Resource": [key],
    }
    assert not {"PulumiStateBucket", "PulumiSecretsProvider"} & {
        s["Sid"] for s in policy_of("dev", True).statements
    }


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (PolicyOptions(secrets_key_arn="arn:aws:kms:us-east-1:111122223333:alias/pulumi"), "is an alias"),
        (PolicyOptions(partition="azure"), "not an AWS partition"),
        (PolicyOptions(account_id="1234"), "12 digits"),
        (PolicyOptions(state_bucket="Bad_Bucket"), "not an S3 bucket name"),
    ],
)
def test_options_that_cannot_work_are_refused(options, message):
    with pytest.raises(DeployerPolicyError, match=message):
        build_deployer_policy(graph_of("dev", True), options)


def test_a_partition_other_than_the_regions_is_refused():
    with pytest.raises(DeployerPolicyError, match=r"partition aws;.*--partition aws\)"):
        build_deployer_policy(graph_of("dev", True), PolicyOptions(partition="aws-us-gov"))


@pytest.mark.parametrize("stack", ["dev", "search-prod"])
def test_govcloud_stack_has_no_commercial_arns(stack):
    graph = run_program(stack, config_overrides={"aws:region": "us-gov-west-1"})
    assert graph.error is None, graph.error
    policy = build_deployer_policy(graph, PolicyOptions(partition="aws-us-gov", account_id=ACCOUNT))
    text = json.dumps(policy.documents)
    assert "arn:aws:" not in text
    assert f"arn:aws-us-gov:iam::{ACCOUNT}:role/" in text
    assert "secretsmanager.us-gov-west-1.amazonaws.com" in text


# --- size --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("stack", "maintenance"), STACKS)
def test_every_document_fits_a_managed_policy(stack, maintenance):
    policy = policy_of(stack, maintenance)
    assert all(policy_size(document) <= MANAGED_POLICY_MAX_CHARS for document in policy.documents)
    # 10 managed policies per role by default: leave the deployer room for its own.
    assert len(policy.documents) <= 5
    assert len(policy.policy_names) == len(policy.documents)
    again = build_deployer_policy(graph_of(stack, maintenance), OPTIONS)
    assert again.documents == policy.documents  # deterministic


def test_policy_size_counts_characters_but_not_white_space():
    document = {"Version": "2012-10-17", "Statement": [{"Sid": "A", "Action": ["s3:GetObject"]}]}
    compact = json.dumps(document, separators=(",", ":"))
    assert policy_size(document) == len(compact) == policy_size(json.loads(json.dumps(document, indent=4)))


def test_split_keeps_every_action_and_respects_the_limit():
    statements = policy_of("prod", True).statements
    documents = split_documents(statements, limit=1500)
    assert len(documents) > len(policy_of("prod", True).documents)
    assert all(policy_size(document) <= 1500 for document in documents)

    def grants(statements_: list[dict]) -> set[tuple[str, str, str]]:
        return {
            (action, resource, json.dumps(s.get("Condition"), sort_keys=True))
            for s in statements_
            for action in s["Action"]
            for resource in s["Resource"]
        }

    assert grants([s for d in documents for s in d["Statement"]]) == grants(statements)
    assert split_documents(statements, limit=1500) == documents


# --- the command -------------------------------------------------------------------------------


def test_command_writes_numbered_documents_and_says_how_to_attach(tmp_path, capsys):
    output = tmp_path / "deployer.json"
    assert main(["deployer-policy", "--stack", "dev", "--account-id", ACCOUNT, "--output", str(output)]) == 0
    err = capsys.readouterr().err
    expected = policy_of("dev", True).documents
    files = sorted(tmp_path.glob("deployer-*.json"))
    assert [json.loads(path.read_text()) for path in files] == expected
    for index, path in enumerate(files, start=1):
        assert f"--policy-document file://{path}" in err
        assert f"--policy-arn arn:aws:iam::{ACCOUNT}:policy/mlflow-dev-deployer-{index}" in err


def test_command_prints_json_to_stdout(capsys):
    assert main(["deployer-policy", "--stack", "staging", "--partition", "aws", "--account-id", ACCOUNT]) == 0
    printed = json.loads(capsys.readouterr().out)
    documents = policy_of("staging", True).documents
    assert printed == (documents[0] if len(documents) == 1 else documents)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--stack", "no-such-stack"], "no stack file"),
        (["--stack", "dev", "--secrets-key-arn", "arn:aws:kms:us-east-1:111122223333:alias/x"], "alias"),
        (["--stack", "dev", "--output", "/nonexistent-dir/deployer.json"], "cannot write"),
    ],
)
def test_command_refuses_with_exit_2(capsys, argv, message):
    assert main(["deployer-policy", *argv]) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not Path("/nonexistent-dir").exists()
