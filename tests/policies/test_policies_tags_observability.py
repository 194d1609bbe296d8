"""Required tags (through provider default tags), environment resolution, advisory rules."""

from __future__ import annotations

import json

from policy_helpers import TAGS, res, violations

from policies.environment import resolve_environment
from policies.model import Provider
from policies.rules.tags import taggable_types

BUCKET = "aws:s3/bucket:Bucket"


def test_provider_default_tags_satisfy_the_rule():
    assert violations("required-tags", res(BUCKET, "b")) == []


def test_missing_tags_fail_whichever_side_is_missing():
    assert violations("required-tags", res(BUCKET, "b", provider=None)) == [
        "missing required tag(s) team, environment, owner, cost-center (looked in provider defaultTags "
        "or the resource's tags)"
    ]
    partial = Provider(
        "pulumi:providers:aws", "p", "urn:p", {"defaultTags": json.dumps({"tags": {"team": "x"}})}
    )
    found = violations(
        "required-tags", res(BUCKET, "b", provider=partial, tags={"owner": "o", "environment": " "})
    )
    assert "cost-center" in found[0] and "environment" in found[0] and "owner" not in found[0]
    assert violations("required-tags", res(BUCKET, "b", provider=None, tags=TAGS)) == []
    assert violations("required-tags", res(BUCKET, "b"), config={"requiredTags": ["data-classification"]})


def test_default_tags_as_an_object_count_too():
    provider = Provider("pulumi:providers:aws", "p", "urn:p", {"defaultTags": {"tags": TAGS}})
    assert violations("required-tags", res(BUCKET, "b", provider=provider)) == []


def test_untaggable_types_are_not_checked():
    # BucketPolicy has no tags argument in pulumi-aws 7; demanding tags there would be noise.
    assert "aws:s3/bucketPolicy:BucketPolicy" not in taggable_types()
    assert {BUCKET, "aws:rds/instance:Instance", "aws:ecs/service:Service"} <= taggable_types()
    assert violations("required-tags", res("aws:s3/bucketPolicy:BucketPolicy", "p", provider=None)) == []


def test_environment_resolution_prefers_the_explicit_sources():
    tagged = [res(BUCKET, "b")]  # provider default tags say dev
    assert resolve_environment({"environment": "prod"}, {"environment": "dev"}, None, "dev") == "prod"
    assert resolve_environment({}, {"environment": "staging"}, "prod", "dev") == "staging"
    assert resolve_environment({}, {}, "prod", "dev") == "prod"
    assert resolve_environment({}, {}, None, "org/mlflow-stack/search-prod") == "prod"
    assert resolve_environment({}, {}, None, "sandbox", tagged) == "dev"
    assert resolve_environment({}, {}, None, "sandbox") is None


def test_alb_access_logs_advisory():
    lb = "aws:lb/loadBalancer:LoadBalancer"
    assert violations("alb-access-logs", res(lb, "alb", accessLogs={"enabled": True, "bucket": "logs"})) == []
    assert violations("alb-access-logs", res(lb, "alb", accessLogs={"enabled": False, "bucket": "logs"}))
    assert violations("alb-access-logs", res(lb, "alb"))


def test_vpc_flow_logs_advisory():
    vpc = res("aws:ec2/vpc:Vpc", "vpc")
    assert violations("vpc-flow-logs", [vpc]) == ["VPC vpc has no flow log"]
    assert violations("vpc-flow-logs", [vpc, res("aws:ec2/flowLog:FlowLog", "fl", vpcId="vpc")]) == []
