"""infra/locks.py under Pulumi mocks: the lock table, the CI promotion-lock policy, and their contract
with lifecycle/locks.py (the client that uses them), checked without importing one from the other.

The policy is checked by parliament (a real third-party IAM linter); the table by botocore's own
CreateTable/UpdateTimeToLive validator; the client's calls through a real botocore client whose
requests are answered before they leave the process.
"""

from __future__ import annotations

import fnmatch
import json
import types
import warnings
from typing import Any

import pytest
from edge_harness import ACCOUNT_ID, REGION, run_components

from infra.locks import (
    LOCK_TABLE_HASH_KEY,
    LOCK_TABLE_TTL_ATTRIBUTE,
    MODEL_LOCK_PREFIX,
    PROMOTION_LOCK_ACTIONS,
    LockTable,
    LockTableArgs,
    LockTableConfigError,
    promotion_lock_policy,
)

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # parliament imports the deprecated pkg_resources
    import parliament

# parliament 1.6.4 has invalid escape sequences in its regexes; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

TABLE = "aws:dynamodb/table:Table"
POLICY = "aws:iam/policy:Policy"
TABLE_ARN = f"arn:aws:dynamodb:{REGION}:{ACCOUNT_ID}:table/mlflow-team-dev-locks"


def _build(args: LockTableArgs) -> dict[str, Any]:
    locks = LockTable("locks", args)
    return {
        "table": locks.table_name,
        "arn": locks.table_arn,
        "policy_arn": locks.promotion_lock_policy_arn,
    }


@pytest.fixture(scope="module")
def run() -> Any:
    return run_components(lambda: _build(LockTableArgs(name_prefix="mlflow-team-dev")))


def _statement(run: Any) -> dict[str, Any]:
    (statement,) = json.loads(run.one(POLICY).inputs["policy"])["Statement"]
    return statement


# --- the table ---------------------------------------------------------------------------------


def test_lock_table_matches_the_lock_contract(run: Any) -> None:
    table = run.one(TABLE).inputs
    assert table["name"] == "mlflow-team-dev-locks" == run.outputs["table"]
    assert table["billingMode"] == "PAY_PER_REQUEST"
    assert table["hashKey"] == "lock_id"
    assert table["attributes"] == [{"name": "lock_id", "type": "S"}]
    assert table["ttl"] == {"attributeName": "expires_at", "enabled": True}
    assert table["pointInTimeRecovery"]["enabled"] is True
    assert table["serverSideEncryption"]["enabled"] is True


def _validate(service: str, operation: str, params: dict[str, Any]) -> None:
    import botocore.session
    from botocore.validate import ParamValidator

    shape = botocore.session.get_session().get_service_model(service).operation_model(operation).input_shape
    report = ParamValidator().validate(params, shape)
    assert not report.has_errors(), report.generate_report()


def test_lock_table_is_a_valid_create_table(run: Any) -> None:
    inputs = run.one(TABLE).inputs
    _validate(
        "dynamodb",
        "CreateTable",
        {
            "TableName": inputs["name"],
            "BillingMode": inputs["billingMode"],
            "KeySchema": [{"AttributeName": inputs["hashKey"], "KeyType": "HASH"}],
            "AttributeDefinitions": [
                {"AttributeName": a["name"], "AttributeType": a["type"]} for a in inputs["attributes"]
            ],
            "SSESpecification": {"Enabled": inputs["serverSideEncryption"]["enabled"]},
        },
    )
    _validate(
        "dynamodb",
        "UpdateTimeToLive",
        {
            "TableName": inputs["name"],
            "TimeToLiveSpecification": {"Enabled": True, "AttributeName": inputs["ttl"]["attributeName"]},
        },
    )


# --- the CI policy -------------------------------------------------------------------------------


def test_policy_grants_only_the_lease_actions_on_only_this_table(run: Any) -> None:
    policy = run.one(POLICY).inputs
    assert policy["name"] == "mlflow-team-dev-model-promotion-lock"
    # (this harness's mock ARNs are generic; the stack tests check the real IAM ARN shape)
    assert run.outputs["policy_arn"].endswith(":policy/mlflow-team-dev-model-promotion-lock")
    statement = _statement(run)
    assert statement["Effect"] == "Allow"
    assert sorted(statement["Action"]) == ["dynamodb:DeleteItem", "dynamodb:GetItem", "dynamodb:PutItem"]
    assert statement["Resource"] == TABLE_ARN == run.outputs["arn"]
    assert statement["Condition"] == {
        "ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["model-aliases/*"]}
    }


def _findings_above_low(document: str) -> list[str]:
    policy = parliament.analyze_policy_string(document)
    found = []
    for finding in policy.findings:
        parliament.enhance_finding(finding)
        if finding.severity not in ("LOW", "INFO", "MUTE"):
            found.append(f"{finding.severity} {finding.issue} {finding.detail}")
    return found


def test_policy_passes_parliament(run: Any) -> None:
    assert _findings_above_low(run.one(POLICY).inputs["policy"]) == []


def test_parliament_would_flag_the_lease_actions_on_a_wrong_resource() -> None:
    # The check above means something only if parliament rejects this policy when it is wrong.
    assert _findings_above_low(promotion_lock_policy("arn:aws:s3:::a-bucket"))


def test_policy_passes_every_mandatory_iam_rule_of_the_pack(run: Any) -> None:
    from policies.model import Context, Resource
    from policies.rules.iam import RULES

    policy = run.one(POLICY)
    resource = Resource(type=POLICY, name=policy.name, urn=f"urn:{policy.name}", props=policy.inputs)
    inspected = [rule for rule in RULES if rule.inspects(POLICY) and rule.check_resource is not None]
    assert inspected
    for rule in inspected:
        assert list(rule.check_resource(resource, Context(config=rule.settings(None)))) == []


# --- the contract with lifecycle/locks.py ---------------------------------------------------------


class _AnsweredLocally:
    """A real botocore DynamoDB client whose requests are answered in-process (never sent): records
    each operation and its validated parameters, keeps one item like the table would."""

    def __init__(self) -> None:
        import boto3

        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.item: dict[str, Any] | None = None
        self.client = boto3.session.Session(
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",  # noqa: S106
        ).client("dynamodb", endpoint_url="http://127.0.0.1:9")
        self.client.meta.events.register("before-call.dynamodb.*", self._answer)

    def _answer(self, model: Any, params: dict[str, Any], **_: Any) -> tuple[Any, dict[str, Any]]:
        body = json.loads(params["body"])  # what would go on the wire, after botocore's validation
        self.calls.append((model.name, body))
        response: dict[str, Any] = {}
        if model.name == "PutItem":
            self.item = body["Item"]
        elif model.name == "GetItem" and self.item is not None:
            response["Item"] = self.item
        elif model.name == "DeleteItem":
            self.item = None
        return types.SimpleNamespace(status_code=200, headers={}), response


def test_the_lock_client_needs_exactly_the_granted_actions_and_keys() -> None:
    from lifecycle.locks import DynamoLock, model_lock_id

    aws = _AnsweredLocally()
    lock = DynamoLock(aws.client, "mlflow-team-dev-locks", model_lock_id("churn-model"))
    with lock.hold():
        assert lock.still_held()

    assert {f"dynamodb:{operation}" for operation, _ in aws.calls} == set(PROMOTION_LOCK_ACTIONS)
    put = next(body for operation, body in aws.calls if operation == "PutItem")
    assert {LOCK_TABLE_HASH_KEY, LOCK_TABLE_TTL_ATTRIBUTE} <= set(put["Item"])
    granted = json.loads(promotion_lock_policy(TABLE_ARN))["Statement"][0]["Condition"]
    patterns = granted["ForAllValues:StringLike"]["dynamodb:LeadingKeys"]
    for _, body in aws.calls:
        key = (body.get("Item") or body["Key"])[LOCK_TABLE_HASH_KEY]["S"]
        assert any(fnmatch.fnmatchcase(key, pattern) for pattern in patterns), key


def test_model_locks_are_admitted_and_the_maintenance_lease_is_not() -> None:
    from lifecycle.locks import MAINTENANCE_LOCK_ID, model_lock_id

    assert model_lock_id("x") == f"{MODEL_LOCK_PREFIX}x"
    (pattern,) = json.loads(promotion_lock_policy(TABLE_ARN))["Statement"][0]["Condition"][
        "ForAllValues:StringLike"
    ]["dynamodb:LeadingKeys"]
    assert fnmatch.fnmatchcase(model_lock_id("team/churn"), pattern)
    assert not fnmatch.fnmatchcase(MAINTENANCE_LOCK_ID, pattern)


# --- names ---------------------------------------------------------------------------------------


def test_a_name_at_the_dynamodb_limit_is_accepted() -> None:
    graph = run_components(lambda: _build(LockTableArgs(name_prefix="p", table_name="t" * 255)))
    assert graph.one(TABLE).inputs["name"] == "t" * 255


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (LockTableArgs(name_prefix="p" * 250), "lock table name"),
        (LockTableArgs(name_prefix="mlflow", table_name="team/locks"), "lock table name 'team/locks'"),
        (LockTableArgs(name_prefix="p" * 110), "promotion lock policy name"),
        (LockTableArgs(name_prefix="mlflow", policy_name="a policy"), "promotion lock policy name"),
    ],
)
def test_names_aws_would_refuse_fail_before_anything_is_created(args: LockTableArgs, message: str) -> None:
    with pytest.raises(LockTableConfigError, match=message):
        run_components(lambda: _build(args))


def test_children_are_parented_and_named_after_the_component(run: Any) -> None:
    owned = [r for r in run.resources if r.typ != "mlflow-stack:locks:LockTable"]
    assert sorted(r.typ for r in owned) == [TABLE, POLICY]
    assert all(r.name.startswith("locks-") for r in owned)


# --- adopting the table of stacks deployed before this component ---------------------------------


def test_the_table_is_adopted_from_where_the_maintenance_component_created_it() -> None:
    from test_operations_component import make_args

    from infra.operations import Operations
    from infra.platform import lock_table_previous_address

    def build() -> dict[str, Any]:
        # The maintenance component as platform.py names it; its lock table child was "<it>-locks".
        operations = Operations("mlflow-team-dev-operations", make_args())
        alias = lock_table_previous_address("mlflow-team-dev")
        return {"operations_urn": operations.urn, "alias_parent": alias.parent, "alias_name": alias.name}

    graph = run_components(build)
    # The engine (Deployment.generateURN) leaves the root stack's type out of its children's URNs;
    # the Python SDK's mock monitor keeps it. Compare with the URN the engine gave the component.
    engine_urn = graph.outputs["operations_urn"].replace("::pulumi:pulumi:Stack$", "::", 1)
    assert (
        engine_urn
        == "urn:pulumi:dev::mlflow-stack::mlflow-stack:operations:Operations::mlflow-team-dev-operations"
    )
    assert graph.outputs["alias_parent"] == engine_urn
    assert graph.outputs["alias_name"] == "mlflow-team-dev-operations-locks"
