"""Every rule against the kit's own stacks (the real program under mocks).

Mandatory rules must pass on every stack file; prod-only rules are checked on the prod stacks;
the advisory rules on the stacks whose settings turn the feature on (flow logs and access logs
are prod presets). Each test first proves the rule had something to inspect.
"""

from __future__ import annotations

import pytest
from policy_helpers import violations

from policies.environment import from_stack_name
from policies.rules import ALL_RULES

# The resource types that make each rule meaningful on a stack (non-vacuous checks).
SUBJECTS: dict[str, str] = {
    "s3-public-access-blocked": "aws:s3/bucket:Bucket",
    "s3-encryption": "aws:s3/bucket:Bucket",
    "s3-tls-only": "aws:s3/bucket:Bucket",
    "s3-lifecycle": "aws:s3/bucket:Bucket",
    "rds-force-ssl": "aws:rds/instance:Instance",
    "alb-http-redirect-only": "aws:lb/listener:Listener",
    "no-public-ingress": "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule",
    "database-ingress-from-service-only": "aws:rds/instance:Instance",
    "mlflow-prod-replicas-autoscaled": "aws:ecs/service:Service",
    "vpc-flow-logs": "aws:ec2/vpc:Vpc",
    "required-tags": "aws:s3/bucket:Bucket",
    "alb-internet-facing-web-acl": "aws:lb/loadBalancer:LoadBalancer",
}
PROD_ONLY = {
    "rds-prod-multi-az",
    "rds-prod-deletion-protection",
    "ecs-no-public-ip-in-prod",
    "mlflow-prod-replicas-autoscaled",
}
ADVISORY_STACKS = {
    "alb-access-logs": ("prod", "search-prod", "platform-prod"),
    "vpc-flow-logs": ("prod", "platform-prod"),
    # WAF is on by default for internet-facing staging and prod; dev leaves it off to save its cost.
    "alb-internet-facing-web-acl": ("staging", "prod", "search-prod", "platform-prod"),
}
# search-prod's stack file waives Multi-AZ with a written reason (mlflow-stack:overrides); the
# preview lowers that policy to advisory for that stack, so it is not expected to pass there.
WAIVED = {("search-prod", "rds-prod-multi-az")}
STACKS = (
    "dev",
    "staging",
    "prod",
    "search-prod",
    "vision-prod",
    "platform-prod",
    "recsys-prod",
    "fraud-prod",
    "media-prod",
)
# compute.backend: kubernetes stacks: the ECS rules have nothing there, the Kubernetes rules only
# there; the replicas rule looks at the Deployment instead of the ECS service.
KUBERNETES_STACKS = ("vision-prod",)
ECS_ONLY = {
    "ecs-no-public-ip-in-prod",
    "ecs-no-privileged-containers",
    "ecs-no-plaintext-secrets",
    "ecs-logging",
}
KUBERNETES_SUBJECTS = {"mlflow-prod-replicas-autoscaled": "kubernetes:apps/v1:Deployment"}


# tenancy.mode: a platform stack runs no server (no database, task or bucket of MLflow's); a team
# stack's ALB and listeners are its platform's, so the ALB rules judge them in the platform stack.
# With `database.placement: shared` (media-prod) the RDS instance is the platform's too: the RDS
# rules judge it in the platform stack (platform-prod shares one, sharedDatabase).
PLATFORM_STACKS = ("platform-prod",)
TEAM_STACKS = ("recsys-prod", "fraud-prod", "media-prod")
SHARED_DATABASE_TEAMS = ("media-prod",)
# There the database's ingress is the team's rule on the platform's database group.
SHARED_DATABASE_SUBJECTS = {
    "database-ingress-from-service-only": "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
}
RDS_INSTANCE_RULES = {
    "rds-storage-encrypted",
    "rds-not-public",
    "rds-backup-retention",
    "rds-prod-multi-az",
    "rds-prod-deletion-protection",
    "rds-force-ssl",
}
NOT_IN_PLATFORM = {
    "database-ingress-from-service-only",
    "mlflow-basic-auth",
    "mlflow-prod-replicas-autoscaled",
    *ECS_ONLY,
}
NOT_IN_TEAM = {"alb-https-tls-policy", "alb-http-redirect-only", "alb-drop-invalid-headers"}


def _cases():
    for rule in ALL_RULES:
        for stack in ADVISORY_STACKS.get(rule.name, STACKS):
            if (
                (stack in PLATFORM_STACKS and rule.name in NOT_IN_PLATFORM)
                or (stack in TEAM_STACKS and rule.name in NOT_IN_TEAM)
                or (stack in SHARED_DATABASE_TEAMS and rule.name in RDS_INSTANCE_RULES)
            ):
                continue
            if rule.name in PROD_ONLY and from_stack_name(stack) != "prod":
                continue
            if (stack, rule.name) in WAIVED:
                continue
            on_kubernetes = stack in KUBERNETES_STACKS
            if (rule.name in ECS_ONLY and on_kubernetes) or (
                rule.name.startswith("k8s-") and not on_kubernetes
            ):
                continue
            yield pytest.param(rule.name, stack, id=f"{rule.name}[{stack}]")


def test_the_stack_files_are_the_ones_tested(own_stacks):
    assert sorted(own_stacks) == sorted(STACKS)


@pytest.mark.parametrize(("rule_name", "stack"), list(_cases()))
def test_rule_passes_on_own_stack(own_stacks, rule_name, stack):
    resources = own_stacks[stack]
    rule = next(r for r in ALL_RULES if r.name == rule_name)
    special = (
        KUBERNETES_SUBJECTS
        if stack in KUBERNETES_STACKS
        else SHARED_DATABASE_SUBJECTS
        if stack in SHARED_DATABASE_TEAMS
        else {}
    )
    subject = special.get(rule_name, SUBJECTS.get(rule_name))
    inspected = [r for r in resources if (r.type == subject if subject else rule.inspects(r.type))]
    assert inspected, f"{stack} has nothing for {rule_name} to inspect"
    assert violations(rule_name, resources, environment=from_stack_name(stack)) == []


def test_every_rule_is_exercised_on_some_own_stack():
    assert {name for name, _ in (c.values for c in _cases())} == {r.name for r in ALL_RULES}
