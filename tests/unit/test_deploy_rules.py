"""AWS rules no schema holds, checked on every shipped stack file's resource graph.

botocore's service models (tests/unit/test_botocore_contracts.py) know shapes and enums; they do not
know that a GLACIER object cannot be downloaded, that RDS wants 10 % headroom between allocated and
maximum storage, or that an ARN written as `arn:aws:` breaks in GovCloud. Each rule below names the
AWS documentation page it comes from.
"""

from __future__ import annotations

import re

import pytest

from infra.settings import (
    ARCHIVED_STORAGE_CLASSES,
    INSTANT_ARCHIVE_STORAGE_CLASSES,
    SettingsError,
    min_max_allocated_storage_gb,
)
from preview.offline import iter_plain_strings, list_stacks, load_stack_config, run_program, stack_mode

STACK_FILES = list_stacks()
# A platform stack has no artifact bucket; a team stack's region is its platform's (the partition
# override below would move the team alone), so the partition check runs on the platform itself.
BUCKET_STACKS = [s for s in STACK_FILES if stack_mode(s) != "platform"]
SELF_CONTAINED_STACKS = [s for s in STACK_FILES if stack_mode(s) != "team"]
LIFECYCLE = "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration"
RDS = "aws:rds/instance:Instance"
# S3 classes GetObject reads without a restore ("Understanding S3 storage classes", S3 User Guide).
INSTANTLY_READABLE = {"STANDARD", "STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING", "GLACIER_IR"}


def _artifact_transitions(graph):
    prefix = graph.outputs["artifacts_destination"].split("/", 3)[3] + "/"
    bucket = graph.outputs["bucket_name"]
    for lifecycle in graph.of_type(LIFECYCLE):
        if lifecycle.get("bucket") != bucket:
            continue
        for rule in lifecycle.get("rules"):
            rule_prefix = (rule.get("filter") or {}).get("prefix") or ""
            if rule.get("status") == "Enabled" and (prefix.startswith(rule_prefix)):
                for transition in rule.get("transitions") or []:
                    yield rule["id"], transition["storageClass"]
                for transition in rule.get("noncurrentVersionTransitions") or []:
                    yield rule["id"], transition["storageClass"]


@pytest.mark.parametrize("stack", BUCKET_STACKS)
def test_artifacts_stay_instantly_readable(stack_graph, stack):
    """S3 User Guide, "Understanding archival storage in S3 Glacier Flexible Retrieval and S3 Glacier
    Deep Archive": objects in GLACIER / DEEP_ARCHIVE are not available for real-time access; GetObject
    answers InvalidObjectState until a RestoreObject completes. The registry points at artifacts
    for as long as a model version exists, so they may only move to instantly readable classes."""
    transitions = list(_artifact_transitions(stack_graph(stack)))
    assert transitions, f"{stack}: no lifecycle transition over the artifact prefix"
    assert {storage_class for _, storage_class in transitions} <= INSTANTLY_READABLE, transitions
    assert ("artifacts-tiering", "GLACIER_IR") in transitions


@pytest.mark.parametrize("storage_class", ARCHIVED_STORAGE_CLASSES)
def test_settings_refuse_archive_classes_that_need_a_restore(storage_class):
    graph = run_program("dev", config_overrides={"artifacts": {"archiveStorageClass": storage_class}})
    assert isinstance(graph.error, SettingsError) and graph.resources == []
    (problem,) = graph.error.problems
    assert problem.startswith("mlflow-stack:artifacts.archiveStorageClass: ")
    assert "InvalidObjectState" in problem and "GLACIER_IR or INTELLIGENT_TIERING" in problem


@pytest.mark.parametrize("storage_class", INSTANT_ARCHIVE_STORAGE_CLASSES)
def test_instantly_readable_archive_classes_are_deployed(storage_class):
    graph = run_program("dev", config_overrides={"artifacts": {"archiveStorageClass": storage_class}})
    assert graph.error is None
    assert ("artifacts-tiering", storage_class) in list(_artifact_transitions(graph))


def test_the_old_glacier_key_names_its_replacement():
    graph = run_program("dev", config_overrides={"artifacts": {"glacierAfterDays": 400}})
    (problem,) = graph.error.problems
    assert problem.startswith(
        "mlflow-stack:artifacts.glacierAfterDays: unknown key — it was renamed archiveAfterDays"
    )


@pytest.mark.parametrize("stack", STACK_FILES)
def test_rds_storage_autoscaling_ceiling_is_ten_percent_above_allocation(stack_graph, stack):
    """RDS User Guide, "Managing capacity automatically with Amazon RDS storage autoscaling": the
    maximum storage threshold must be at least 10 % more than the allocated storage."""
    for db in stack_graph(stack).of_type(RDS):
        assert db.get("maxAllocatedStorage") >= 1.1 * db.get("allocatedStorage")


@pytest.mark.parametrize(
    ("allocated", "maximum", "accepted"),
    [(100, 105, False), (100, 109, False), (100, 110, True), (20, 22, True), (20, 21, False), (33, 37, True)],
)
def test_settings_enforce_the_rds_storage_ratio(allocated, maximum, accepted):
    overrides = {"database": {"allocatedStorageGb": allocated, "maxAllocatedStorageGb": maximum}}
    graph = run_program("dev", config_overrides=overrides)
    if accepted:
        assert graph.error is None
        assert graph.one(RDS).get("maxAllocatedStorage") == maximum
        return
    (problem,) = graph.error.problems
    assert problem.startswith("mlflow-stack:database.maxAllocatedStorageGb: ")
    assert f"set maxAllocatedStorageGb to at least {min_max_allocated_storage_gb(allocated)}" in problem
    assert graph.resources == []


# Name rules per resource type: (input, pattern, maximum length, documentation page).
NAME_RULES = {
    "aws:lb/loadBalancer:LoadBalancer": (
        "name", r"[a-zA-Z0-9](-?[a-zA-Z0-9])*", 32, "ELB API reference, CreateLoadBalancer: Name"
    ),
    "aws:lb/targetGroup:TargetGroup": (
        "name", r"[a-zA-Z0-9](-?[a-zA-Z0-9])*", 32, "ELB API reference, CreateTargetGroup: Name"
    ),
    "aws:s3/bucket:Bucket": (
        "bucket", r"[a-z0-9][a-z0-9.-]*[a-z0-9]", 63, "S3 User Guide, General purpose bucket naming rules"
    ),
    "aws:rds/instance:Instance": (
        "identifier", r"[a-z](-?[a-z0-9])*", 63, "RDS User Guide, Naming constraints in Amazon RDS"
    ),
    "aws:iam/role:Role": ("name", r"[\w+=,.@-]+", 64, "IAM User Guide, IAM and AWS STS quotas: role name"),
    "aws:ecs/cluster:Cluster": ("name", r"[a-zA-Z0-9_-]+", 255, "ECS API reference, CreateCluster"),
    "aws:cloudwatch/logGroup:LogGroup": (
        "name", r"[\w./#-]+", 512, "CloudWatch Logs API reference, CreateLogGroup"
    ),
    "aws:kms/alias:Alias": ("name", r"alias/(?!aws/)[a-zA-Z0-9/_-]+", 256, "KMS API reference, CreateAlias"),
    "aws:dynamodb/table:Table": ("name", r"[a-zA-Z0-9_.-]{3,255}", 255, "DynamoDB Developer Guide, naming"),
    "aws:secretsmanager/secret:Secret": (
        "namePrefix", r"[\w/+=.@-]+", 512 - 27, "Secrets Manager API reference, CreateSecret: Name"
    ),
}  # fmt: skip


@pytest.mark.parametrize("stack", STACK_FILES)
def test_names_follow_each_services_rules(stack_graph, stack):
    problems = []
    for type_token, (key, pattern, limit, page) in NAME_RULES.items():
        for resource in stack_graph(stack).of_type(type_token):
            value = resource.get(key)
            if value is None:
                continue
            if len(value) > limit or not re.fullmatch(pattern, value) or "--" in value.strip("-"):
                problems.append(f"{resource.name}.{key}={value!r} breaks {page}")
    assert not problems, problems


@pytest.mark.parametrize("stack", STACK_FILES)
def test_final_snapshot_identifiers_are_unique_per_instance(stack_graph, stack):
    """RDS DeleteDBInstance fails with DBSnapshotAlreadyExists when FinalDBSnapshotIdentifier names an
    existing snapshot — the one a previous `destroy` of the same stack left behind."""
    graph = stack_graph(stack)
    for db in graph.of_type(RDS):
        if db.get("skipFinalSnapshot"):
            assert db.get("finalSnapshotIdentifier") is None
            continue
        identifier = db.get("finalSnapshotIdentifier")
        assert re.fullmatch(rf"{db.get('identifier')}-final-[0-9a-f]{{8}}", identifier)
        assert len(identifier) <= 255
        suffix = graph.one("random:index/randomId:RandomId", parent=db.parent_name)
        # A new instance identifier gets a new suffix (keepers), and so does a new stack.
        assert suffix.get("keepers") == {"identifier": db.get("identifier")}


@pytest.mark.parametrize("stack", STACK_FILES)
def test_secrets_survive_destroy_then_up(stack_graph, stack):
    """Secrets Manager DeleteSecret keeps the name for the recovery window: CreateSecret with that name
    fails ("You can't create this secret because a secret with this name is already scheduled for
    deletion") for up to 30 days. Only a name prefix lets a destroyed stack come back at once."""
    graph = stack_graph(stack)
    for secret in graph.of_type("aws:secretsmanager/secret:Secret"):
        assert secret.get("name") is None and secret.get("namePrefix").endswith("-")


@pytest.mark.parametrize("stack", STACK_FILES)
def test_a_stack_built_image_repository_can_be_destroyed(stack_graph, stack):
    """ECR DeleteRepository fails with RepositoryNotEmptyException unless forced: the stack's own
    images are rebuilt from the commit, so `destroy` drops them in every environment."""
    for repository in stack_graph(stack).of_type("aws:ecr/repository:Repository"):
        assert repository.get("forceDelete") is True


PARTITION_REGIONS = {"us-gov-west-1": "aws-us-gov", "cn-north-1": "aws-cn"}


def _in_partition(value, region: str, partition: str):
    """A stack file's own values moved to another partition: what its owner would write there."""
    if isinstance(value, str):
        value = re.sub(r"\.dkr\.ecr\.[a-z0-9-]+\.", f".dkr.ecr.{region}.", value)
        return value.replace("arn:aws:", f"arn:{partition}:")
    if isinstance(value, dict):
        return {key: _in_partition(item, region, partition) for key, item in value.items()}
    if isinstance(value, list):
        return [_in_partition(item, region, partition) for item in value]
    return value


@pytest.mark.parametrize("stack", SELF_CONTAINED_STACKS)
@pytest.mark.parametrize("region", sorted(PARTITION_REGIONS))
def test_arns_follow_the_partition(stack, region):
    """ "Identify AWS resources with Amazon Resource Names (ARNs)", IAM User Guide: the partition is
    `aws` only in commercial regions (`aws-us-gov`, `aws-cn` elsewhere). The mocks answer in the
    stack's partition, so an ARN the program wrote by hand shows up here as `arn:aws:`."""
    partition = PARTITION_REGIONS[region]
    config = _in_partition(load_stack_config(stack), region, partition)
    # The certificate must come from the stack's region; the stack requests its own instead.
    config["mlflow-stack:domain"]["certificateArn"] = None  # None removes the key (run_program)
    graph = run_program(stack, config_overrides={**config, "aws:region": region})
    assert graph.error is None, graph.error
    found = [
        f"{resource.name}: {text[:120]}"
        for resource in graph.resources
        for text in iter_plain_strings(resource.inputs)
        if "arn:aws:" in text
    ] + [
        name
        for name, value in graph.outputs.items()
        for text in iter_plain_strings(value)
        if "arn:aws:" in text
    ]
    assert not found, found
    arns = [text for r in graph.resources for text in iter_plain_strings(r.inputs) if text.startswith("arn:")]
    assert arns and all(arn.startswith(f"arn:{partition}:") for arn in arns)
    if region.startswith("cn-"):
        # China's gateway endpoints are cn.com.amazonaws.<region>.s3 (aws.get_partition's reverseDnsPrefix).
        for endpoint in graph.of_type("aws:ec2/vpcEndpoint:VpcEndpoint"):
            assert endpoint.get("serviceName") == f"cn.com.amazonaws.{region}.s3"
