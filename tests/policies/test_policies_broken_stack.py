"""A deliberately broken stack: the staging program's real resource graph with three classic
mistakes made by hand — a public database, plain HTTP serving traffic with no TLS redirect (and
a TLS 1.0 policy on 443), and a wildcard IAM grant. The real pack must block it, naming exactly
those rules."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from infra.settings import PROJECT
from preview.analyzer import AnalyzedResource, run_policy_pack
from preview.build import analyzed_resources
from preview.offline import run_program

FORWARD = [
    {
        "type": "forward",
        "targetGroupArn": "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/x/1",
    }
]
WILDCARD = json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
)


def _patch(resource: AnalyzedResource, **changes: Any) -> AnalyzedResource:
    return dataclasses.replace(
        resource, inputs={**resource.inputs, **changes}, outputs={**resource.outputs, **changes}
    )


def _break(resource: AnalyzedResource) -> AnalyzedResource:
    if resource.type == "aws:rds/instance:Instance":
        return _patch(resource, publiclyAccessible=True)
    if resource.name.endswith("-edge-http"):
        return _patch(resource, defaultActions=FORWARD)
    if resource.name.endswith("-edge-https"):
        return _patch(resource, sslPolicy="ELBSecurityPolicy-2016-08")
    if resource.name.endswith("-identity-runtime-policy"):
        return _patch(resource, policy=WILDCARD)
    return resource


def test_the_broken_stack_is_blocked_by_exactly_the_right_rules():
    graph = run_program("staging")
    stack_config = {k: v if isinstance(v, str) else json.dumps(v) for k, v in graph.config.items()}
    intact = analyzed_resources(graph)
    assert not [
        d
        for d in run_policy_pack(intact, project=PROJECT, stack="staging", stack_config=stack_config)
        if d.mandatory
    ]

    broken = [_break(r) for r in intact]
    found = run_policy_pack(broken, project=PROJECT, stack="staging", stack_config=stack_config)
    mandatory = {(d.policy, d.urn.rsplit("::", 1)[-1]) for d in found if d.mandatory}
    assert mandatory == {
        ("rds-not-public", "mlflow-staging-database-instance"),
        ("alb-http-redirect-only", "mlflow-staging-edge-http"),
        ("alb-https-tls-policy", "mlflow-staging-edge-https"),
        ("iam-no-wildcard-actions", "mlflow-staging-identity-runtime-policy"),
        ("iam-no-wildcard-resource-on-data", "mlflow-staging-identity-runtime-policy"),
    }
