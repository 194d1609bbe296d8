"""alb-internet-facing-web-acl on crafted resources: pass and fail."""

from __future__ import annotations

from policy_helpers import res, violations

from policies.rules import RULES_BY_NAME

LB = "aws:lb/loadBalancer:LoadBalancer"
ASSOCIATION = "aws:wafv2/webAclAssociation:WebAclAssociation"
RULE = "alb-internet-facing-web-acl"
ALB_ARN = "arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/app/mlflow-prod-alb/abc"


def alb(**props):
    return res(LB, "alb", **{"loadBalancerType": "application", "internal": False, "arn": ALB_ARN, **props})


def association(resource_arn: str = ALB_ARN):
    return res(ASSOCIATION, "waf", resourceArn=resource_arn, webAclArn="arn:aws:wafv2:...:webacl/x")


def test_internet_facing_alb_with_an_associated_web_acl_passes():
    assert violations(RULE, [alb(), association()]) == []


def test_internet_facing_alb_without_a_web_acl_is_reported():
    assert violations(RULE, [alb()]) == [
        "internet-facing load balancer alb has no AWS WAF web ACL associated"
    ]
    # An association with another load balancer does not count.
    assert violations(RULE, [alb(), association(ALB_ARN.replace("abc", "other"))])


def test_internal_and_network_load_balancers_are_not_inspected():
    assert violations(RULE, [alb(internal=True)]) == []
    assert violations(RULE, [alb(loadBalancerType="network")]) == []


def test_the_rule_is_advisory():
    assert RULES_BY_NAME[RULE].enforcement == "advisory"
