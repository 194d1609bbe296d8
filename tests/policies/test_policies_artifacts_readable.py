"""mlflow-artifacts-instantly-readable: no lifecycle rule may archive an MLflow server's artifacts
into a class GetObject cannot read without a restore (GLACIER, DEEP_ARCHIVE)."""

from __future__ import annotations

import json

import pytest
from policy_helpers import res, violations

RULE = "mlflow-artifacts-instantly-readable"
LIFECYCLE = "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration"


def _server(destination: str, *, via: str = "env") -> object:
    container: dict = {
        "name": "mlflow",
        "image": "mlflow:3.17.2",
        "command": ["python", "-m", "server.entrypoint"],
    }
    if via == "env":
        container["environment"] = [{"name": "MLFLOW_STACK_ARTIFACTS_DESTINATION", "value": destination}]
    else:
        container["command"] = ["mlflow", "server", "--artifacts-destination", destination]
    return res("aws:ecs/taskDefinition:TaskDefinition", "task", containerDefinitions=json.dumps([container]))


def _lifecycle(bucket: str, prefix: str, *classes: str, noncurrent: bool = False) -> object:
    key = "noncurrentVersionTransitions" if noncurrent else "transitions"
    return res(
        LIFECYCLE,
        f"{bucket}-lifecycle",
        bucket=bucket,
        rules=[
            {
                "id": "tiering",
                "status": "Enabled",
                "filter": {"prefix": prefix},
                key: [{"days": 90 * (i + 1), "storageClass": c} for i, c in enumerate(classes)],
            }
        ],
    )


@pytest.mark.parametrize("archive", ["GLACIER", "DEEP_ARCHIVE"])
@pytest.mark.parametrize("via", ["env", "flag"])
def test_archiving_artifacts_into_a_restore_class_is_refused(archive, via):
    found = violations(
        RULE,
        [
            _server("s3://art/mlflow-artifacts", via=via),
            _lifecycle("art", "mlflow-artifacts/", "STANDARD_IA", archive),
        ],
    )
    assert found == [
        f"lifecycle rule tiering moves MLflow artifacts in bucket art to {archive}; GetObject fails there "
        "until a restore, so old artifacts and registered model versions could no longer be downloaded "
        "or rolled back to"
    ]


def test_a_whole_bucket_rule_and_noncurrent_versions_count_too():
    server = _server("s3://art/mlflow-artifacts")
    assert violations(RULE, [server, _lifecycle("art", "", "GLACIER")])
    assert violations(RULE, [server, _lifecycle("art", "mlflow-artifacts/", "GLACIER", noncurrent=True)])


@pytest.mark.parametrize("archive", ["GLACIER_IR", "INTELLIGENT_TIERING", "STANDARD_IA"])
def test_instantly_readable_classes_pass(archive):
    assert (
        violations(
            RULE, [_server("s3://art/mlflow-artifacts"), _lifecycle("art", "mlflow-artifacts/", archive)]
        )
        == []
    )


def test_other_buckets_and_prefixes_may_archive():
    server = _server("s3://art/mlflow-artifacts")
    # Access logs in another bucket, and another prefix of the same bucket, are not artifacts.
    assert violations(RULE, [server, _lifecycle("logs", "", "GLACIER")]) == []
    assert violations(RULE, [server, _lifecycle("art", "exports/", "DEEP_ARCHIVE")]) == []


def test_the_kits_own_stacks_pass(own_stacks):
    for stack, resources in own_stacks.items():
        assert violations(RULE, resources, environment=None) == [], stack
