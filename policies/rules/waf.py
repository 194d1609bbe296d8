"""AWS WAF: an internet-facing Application Load Balancer has a web ACL in front of it.

Advisory, not mandatory: a stack may rely on a firewall the kit does not create (an organisation's
AWS Firewall Manager policy associates web ACLs outside the stack), and a dev stack may turn WAF
off to save its cost (loadBalancer.wafEnabled).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from policies.model import Context, Resource, Violation, of_type, references, truthy
from policies.rules.alb import LOAD_BALANCERS, is_application
from policies.spec import Rule

WEB_ACL_ASSOCIATIONS = frozenset({"aws:wafv2/webAclAssociation:WebAclAssociation"})


def check_internet_facing_alb_has_web_acl(resources: Sequence[Resource], ctx: Context) -> Iterable[Violation]:
    associations = of_type(resources, *WEB_ACL_ASSOCIATIONS)
    for load_balancer in of_type(resources, *LOAD_BALANCERS):
        if not is_application(load_balancer) or truthy(load_balancer.props.get("internal")):
            continue
        if not any(references(association, "resourceArn", load_balancer) for association in associations):
            yield Violation(
                f"internet-facing load balancer {load_balancer.name} has no AWS WAF web ACL associated",
                load_balancer.urn,
            )


RULES = (
    Rule(
        name="alb-internet-facing-web-acl",
        description="Internet-facing Application Load Balancers have an AWS WAF web ACL associated "
        "(rate limit against password guessing, common exploit rules).",
        enforcement="advisory",
        remediation="Set loadBalancer.wafEnabled: true in the stack file (the default for staging and "
        "prod), or associate the organisation's web ACL with the load balancer.",
        check_stack=check_internet_facing_alb_has_web_acl,
    ),
)
