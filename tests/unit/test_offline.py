"""The offline runner: the real program under mocks, repeatable in one process, fast, realistic."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pulumi
import pytest

from infra.settings import SettingsError
from preview.offline import MOCK_ACCOUNT_ID, Secret, list_stacks, load_stack_config, run_program


def _canonical(value):
    """Inputs as comparable values: an asset or archive (a Lambda function's code) by what it holds,
    not by the identity of the object the mocks rebuilt it into."""
    if isinstance(value, pulumi.AssetArchive):
        return ("archive", {name: _canonical(asset) for name, asset in value.assets.items()})
    if isinstance(value, pulumi.FileAsset):
        return ("file", value.path)
    if isinstance(value, dict):
        return {key: _canonical(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_canonical(item) for item in value]
    return value


def _fingerprint(graph):
    return sorted(
        (r.type, r.name, r.urn, repr(_canonical(r.inputs)), r.protect, r.parent_name) for r in graph.resources
    )


def test_stacks_back_to_back_do_not_leak_into_each_other():
    first_dev = run_program("dev")
    team = run_program("search-prod", config_overrides={"server": {"maxReplicas": 3}})
    second_dev = run_program("dev")

    assert _fingerprint(first_dev) == _fingerprint(second_dev)
    assert first_dev.outputs == second_dev.outputs
    for graph, stack in ((second_dev, "dev"), (team, "search-prod")):
        assert all(r.urn.startswith(f"urn:pulumi:{stack}::mlflow-stack::") for r in graph.resources)
    assert not [r.name for r in second_dev.resources if "search" in r.name]
    assert ":eu-west-1:" in team.outputs["db_password_secret_arn"]
    assert ":us-east-1:" in second_dev.outputs["db_password_secret_arn"]
    # The override applied to that run only.
    assert team.config["mlflow-stack:server"]["maxReplicas"] == 3
    assert load_stack_config("search-prod")["mlflow-stack:server"]["maxReplicas"] == 4


def test_a_failed_run_leaves_the_next_one_clean():
    failed = run_program("dev", config_overrides={"database": {"instanceClass": "db.nope"}})
    assert isinstance(failed.error, SettingsError) and failed.resources == []
    assert run_program("dev").error is None


def test_a_stack_runs_in_a_few_seconds():
    run_program("prod")  # warm imports
    started = time.perf_counter()
    run_program("prod")
    elapsed = time.perf_counter() - started
    assert elapsed < 10, f"prod took {elapsed:.1f}s"


def test_settings_errors_are_returned_not_raised():
    graph = run_program("prod", config_overrides={"database": {"multiAz": False}, "bogus": 1})
    assert isinstance(graph.error, SettingsError)
    assert {"mlflow-stack:database.multiAz", "mlflow-stack:bogus"} <= {
        p.split(": ")[0] for p in graph.error.problems
    }
    assert graph.resources == [] and graph.outputs == {}


def test_other_program_errors_propagate(tmp_path: Path):
    program = tmp_path / "broken.py"
    program.write_text("raise RuntimeError('the program itself is broken')\n")
    with pytest.raises(RuntimeError, match="the program itself is broken"):
        run_program("dev", program=program)


def test_unmocked_invokes_fail_loudly(tmp_path: Path):
    program = tmp_path / "invoke.py"
    program.write_text(
        "import pulumi_aws as aws\nimport pulumi\n"
        "pulumi.export('x', aws.ec2.get_vpc_output(default=True).id)\n"
    )
    with pytest.raises(Exception, match="no mock for the invoke 'aws:ec2/getVpc:getVpc'"):
        run_program("dev", program=program)


def test_protect_and_parent_are_observed_including_inheritance(tmp_path: Path):
    program = tmp_path / "protect.py"
    program.write_text(
        "import pulumi, pulumi_aws as aws\n"
        "protected = pulumi.ResourceOptions(protect=True)\n"
        "parent = pulumi.ComponentResource('test:index:Box', 'box', None, protected)\n"
        "aws.s3.Bucket('box-bucket', opts=pulumi.ResourceOptions(parent=parent))\n"
        "aws.s3.Bucket('loose-bucket')\n"
    )
    graph = run_program("dev", program=program)
    inside, loose = graph.named("box-bucket"), graph.named("loose-bucket")
    assert inside.protect is True and inside.parent_name == "box"
    assert inside.parent_urn == graph.named("box").urn
    assert loose.protect is False and loose.parent_name is None


def test_mocks_answer_like_aws(stack_graph):
    graph = stack_graph("dev")
    assert re.fullmatch(r"vpc-[0-9a-f]{17}", graph.outputs["vpc_id"])
    assert all(re.fullmatch(r"subnet-[0-9a-f]{17}", s) for s in graph.outputs["private_subnet_ids"])
    zones = {s.get("availabilityZone") for s in graph.of_type("aws:ec2/subnet:Subnet")}
    assert zones == {"us-east-1a", "us-east-1b"}
    assert graph.outputs["bucket_name"].endswith(f"-{MOCK_ACCOUNT_ID}")
    assert re.fullmatch(
        r"mlflow-dev-db\.c[0-9a-f]{10}\.us-east-1\.rds\.amazonaws\.com", graph.outputs["db_endpoint"]
    )
    assert re.fullmatch(
        rf"arn:aws:secretsmanager:us-east-1:{MOCK_ACCOUNT_ID}:secret:mlflow-stack/dev/db-password-[0-9a-f]{{26}}-[0-9a-f]{{6}}",
        graph.outputs["db_password_secret_arn"],
    )
    assert graph.outputs["runtime_role_arn"] == f"arn:aws:iam::{MOCK_ACCOUNT_ID}:role/mlflow-dev-server-task"
    key = graph.named("mlflow-dev-artifacts-kms")
    assert re.fullmatch(r"[0-9a-f-]{36}", key.id)


def test_inputs_are_camel_case_with_secrets_marked(stack_graph):
    db = stack_graph("prod").one("aws:rds/instance:Instance")
    assert {"instanceClass", "multiAz", "backupRetentionPeriod", "vpcSecurityGroupIds"} <= set(db.inputs)
    admin_password = stack_graph("prod").named("mlflow-prod-secrets-admin-password-version")
    assert isinstance(admin_password.inputs["secretString"], Secret)
    assert db.get("backupRetentionPeriod") == 14 and isinstance(db.get("backupRetentionPeriod"), int)


def test_a_stack_file_from_another_directory(tmp_path: Path):
    (tmp_path / "Pulumi.fraud-staging.yaml").write_text(
        "config:\n"
        "  aws:region: eu-central-1\n"
        "  mlflow-stack:owner: fraud@example.com\n"
        "  mlflow-stack:costCenter: CC-7000\n"
        "  mlflow-stack:domain:\n"
        "    name: mlflow.fraud.example.com\n"
        "    hostedZoneId: Z08234151D8Y5QF9XJ3TL\n"
    )
    assert list_stacks(tmp_path) == ["fraud-staging"]
    graph = run_program("fraud-staging", stack_dir=tmp_path)
    assert graph.error is None, graph.error
    assert graph.outputs["bucket_name"] == f"mlflow-fraud-staging-artifacts-{MOCK_ACCOUNT_ID}"
    assert graph.one("aws:rds/instance:Instance").get("instanceClass") == "db.t4g.small"


def test_unknown_stack_lists_the_known_ones():
    with pytest.raises(FileNotFoundError, match=r"stacks here: .*dev.*prod"):
        run_program("qa")


def test_data_source_mocks_answer_for_the_stack_region(tmp_path: Path):
    program = tmp_path / "lookups.py"
    program.write_text(
        "import pulumi, pulumi_aws as aws\n"
        "pulumi.export('region', aws.get_region_output().region)\n"
        "pulumi.export('zones', aws.get_availability_zones_output(state='available').names)\n"
        "pulumi.export('account', aws.get_caller_identity_output().account_id)\n"
        "pulumi.export('partition', aws.get_partition_output().partition)\n"
    )
    graph = run_program("search-prod", program=program)
    assert graph.outputs["region"] == "eu-west-1"
    assert graph.outputs["zones"][:2] == ["eu-west-1a", "eu-west-1b"]
    assert graph.outputs["account"] == MOCK_ACCOUNT_ID
    assert graph.outputs["partition"] == "aws"
