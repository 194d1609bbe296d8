"""HSTS, the HTTP redirect's target and the WAF web ACL on every shipped stack file (the whole program
under mocks), plus the ACL's rules validated against botocore's wafv2 model."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import botocore.session
import pytest
from botocore.validate import ParamValidator
from edge_harness import STACKS
from test_edge_stacks import _settings

from infra.firewall import ARTIFACT_PATH_PREFIXES, UNPROTECTED_PATH_PREFIXES, web_acl_rules
from infra.load_balancer import hsts_header
from infra.settings import build_settings
from preview.offline import ResourceGraph, load_stack_config, run_program

LISTENER = "aws:lb/listener:Listener"
WEB_ACL = "aws:wafv2/webAcl:WebAcl"
ASSOCIATION = "aws:wafv2/webAclAssociation:WebAclAssociation"
ALB = "aws:lb/loadBalancer:LoadBalancer"
GraphFor = Callable[[str], ResourceGraph]
BASE = {"owner": "ml@example.com", "costCenter": "CC-1", "domain": {"name": "mlflow.example.com",
        "hostedZoneId": "Z0123456789ABCDEFGHIJ"}}  # fmt: skip


def _https(graph: ResourceGraph) -> dict[str, Any]:
    [listener] = [r.inputs for r in graph.of_type(LISTENER) if r.inputs["port"] == 443]
    return listener


def _rules(graph: ResourceGraph) -> list[dict[str, Any]]:
    return json.loads(graph.one(WEB_ACL).get("ruleJson"))


# Stacks whose web ACL is on by default: internet-facing staging and prod (settings.waf_enabled).
WAF_STACKS = [
    s
    for s in STACKS
    if s != "dev"
    and (load_stack_config(s).get("mlflow-stack:loadBalancer") or {}).get("internetFacing", True)
]


@pytest.mark.parametrize("stack", STACKS)
def test_https_responses_carry_hsts_without_preload(stack_graph: GraphFor, stack: str) -> None:
    graph = stack_graph(stack)
    max_age = _settings(graph).load_balancer.hsts_max_age_seconds
    value = _https(graph)["routingHttpResponseStrictTransportSecurityHeaderValue"]
    assert value == f"max-age={max_age}; includeSubDomains"
    assert "preload" not in value


def test_hsts_defaults_to_a_year_and_zero_turns_it_off() -> None:
    assert build_settings("dev", "us-east-1", BASE).load_balancer.hsts_max_age_seconds == 31536000
    assert hsts_header(0) is None
    assert hsts_header(600) == "max-age=600; includeSubDomains"


@pytest.mark.parametrize("stack", STACKS)
def test_waf_follows_the_setting_and_is_on_for_internet_facing_staging_and_prod(
    stack_graph: GraphFor, stack: str
) -> None:
    graph = stack_graph(stack)
    settings = _settings(graph)
    acls = graph.of_type(WEB_ACL)
    assert bool(acls) == settings.waf_enabled
    if settings.environment in ("staging", "prod") and settings.load_balancer.internet_facing:
        assert acls, f"{stack}: internet-facing {settings.environment} without a web ACL"
    if not acls:
        assert not graph.of_type(ASSOCIATION)
        assert "web_acl_arn" not in graph.outputs
        return
    acl = acls[0]
    assert acl.get("scope") == "REGIONAL"
    assert "allow" in acl.get("defaultAction")
    assert graph.outputs["web_acl_arn"] == acl.arn


def test_waf_default_is_off_in_dev_and_for_internal_load_balancers() -> None:
    assert not build_settings("dev", "us-east-1", BASE).waf_enabled
    assert build_settings("staging", "us-east-1", BASE).waf_enabled
    internal = {**BASE, "loadBalancer": {"internetFacing": False}}
    assert not build_settings("prod", "us-east-1", internal).waf_enabled
    assert build_settings("dev", "us-east-1", {**BASE, "loadBalancer": {"wafEnabled": True}}).waf_enabled


@pytest.mark.parametrize("stack", WAF_STACKS)
def test_association_binds_the_acl_to_this_stacks_alb_after_both_exist(
    stack_graph: GraphFor, stack: str
) -> None:
    graph = stack_graph(stack)
    association = graph.one(ASSOCIATION)
    alb, acl = graph.one(ALB), graph.one(WEB_ACL)
    assert association.get("resourceArn") == alb.arn
    assert association.get("webAclArn") == acl.arn
    # Created after the load balancer and the ACL (their ARNs are inputs, so the engine waits).
    assert {alb.urn, acl.urn} <= association.dependencies


@pytest.mark.parametrize("stack", WAF_STACKS)
def test_rate_limit_covers_every_password_checked_path(stack_graph: GraphFor, stack: str) -> None:
    graph = stack_graph(stack)
    [rate] = [r for r in _rules(graph) if "RateBasedStatement" in r["Statement"]]
    statement = rate["Statement"]["RateBasedStatement"]
    assert statement["Limit"] == _settings(graph).load_balancer.waf_rate_limit_per_5_min
    assert statement["AggregateKeyType"] == "IP"
    assert statement["EvaluationWindowSec"] == 300
    excluded = statement["ScopeDownStatement"]["NotStatement"]["Statement"]["OrStatement"]["Statements"]
    assert [s["ByteMatchStatement"]["SearchString"] for s in excluded] == list(UNPROTECTED_PATH_PREFIXES)
    assert rate["Action"]["Block"]["CustomResponse"]["ResponseCode"] == 429
    assert rate["Priority"] == min(r["Priority"] for r in _rules(graph))


@pytest.mark.parametrize("stack", WAF_STACKS)
def test_common_rule_set_lets_mlflow_bodies_through(stack_graph: GraphFor, stack: str) -> None:
    rules = {r["Name"]: r for r in _rules(stack_graph(stack))}
    common = rules["aws-common"]["Statement"]["ManagedRuleGroupStatement"]
    assert (common["VendorName"], common["Name"]) == ("AWS", "AWSManagedRulesCommonRuleSet")
    counted = {o["Name"] for o in common["RuleActionOverrides"] if o["ActionToUse"] == {"Count": {}}}
    # SizeRestrictions_BODY blocks bodies over 8 KB: log-batch (up to 1 MB) and uploads exceed it.
    assert "SizeRestrictions_BODY" in counted
    artifact_paths = common["ScopeDownStatement"]["NotStatement"]["Statement"]["OrStatement"]["Statements"]
    assert [s["ByteMatchStatement"]["SearchString"] for s in artifact_paths] == list(ARTIFACT_PATH_PREFIXES)
    known_bad = rules["aws-known-bad-inputs"]["Statement"]["ManagedRuleGroupStatement"]
    assert known_bad["Name"] == "AWSManagedRulesKnownBadInputsRuleSet"
    # The kit's own size rule: a declared Content-Length of 10 MB or more on REST calls.
    [size] = [
        s["SizeConstraintStatement"]
        for s in rules["json-body-size"]["Statement"]["AndStatement"]["Statements"]
        if "SizeConstraintStatement" in s
    ]
    assert size["FieldToMatch"] == {"SingleHeader": {"Name": "content-length"}}
    assert (size["ComparisonOperator"], size["Size"]) == ("GT", 7)
    assert len(str(1_000_000)) <= size["Size"]  # MLflow's largest JSON call (log-batch, 1 MB) passes


@pytest.mark.parametrize("limit", [10, 3000, 2_000_000_000])
def test_rules_are_a_valid_create_web_acl_request(limit: int) -> None:
    """botocore's wafv2 model: shapes, required members, enums and numeric ranges."""
    model = botocore.session.get_session().get_service_model("wafv2")
    params = {
        "Name": "mlflow-prod-waf",
        "Scope": "REGIONAL",
        "DefaultAction": {"Allow": {}},
        "VisibilityConfig": {
            "SampledRequestsEnabled": True,
            "CloudWatchMetricsEnabled": True,
            "MetricName": "mlflow-prod-waf",
        },
        "Rules": web_acl_rules("mlflow-prod", limit),
    }
    report = ParamValidator().validate(params, model.operation_model("CreateWebACL").input_shape)
    assert not report.has_errors(), report.generate_report()
    broken = web_acl_rules("mlflow-prod", limit)
    broken[0]["Statement"]["RateBasedStatement"]["AggregateKeyType"] = 7
    report = ParamValidator().validate(
        {**params, "Rules": broken}, model.operation_model("CreateWebACL").input_shape
    )
    assert report.has_errors()


def test_waf_logs_go_to_an_aws_waf_logs_group_with_the_authorization_header_redacted() -> None:
    graph = run_program("dev", config_overrides={"loadBalancer": {"wafEnabled": True, "wafLogs": True}})
    assert graph.error is None, graph.error
    [logging] = graph.of_type("aws:wafv2/webAclLoggingConfiguration:WebAclLoggingConfiguration")
    [group] = [
        g for g in graph.of_type("aws:cloudwatch/logGroup:LogGroup") if g.get("name").startswith("aws-waf")
    ]
    assert logging.get("logDestinationConfigs") == [group.arn]
    assert logging.get("resourceArn") == graph.one(WEB_ACL).arn
    # Basic-auth puts the password (base64) in every request's Authorization header.
    assert logging.get("redactedFields") == [{"singleHeader": {"name": "authorization"}}]
    assert group.get("retentionInDays")


def test_an_internal_dev_stack_has_no_web_acl_unless_asked() -> None:
    graph = run_program("dev", config_overrides={"loadBalancer": {"wafEnabled": False}})
    assert graph.error is None and not graph.of_type(WEB_ACL)
