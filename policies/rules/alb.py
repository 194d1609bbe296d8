"""Application load balancer: modern TLS only, plain HTTP only redirects, malformed headers dropped."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from policies.model import Context, Resource, Violation, as_list, first_block, of_type, references, truthy
from policies.spec import Rule

LOAD_BALANCERS = frozenset({"aws:lb/loadBalancer:LoadBalancer", "aws:alb/loadBalancer:LoadBalancer"})
LISTENERS = frozenset({"aws:lb/listener:Listener", "aws:alb/listener:Listener"})
LISTENER_RULES = frozenset({"aws:lb/listenerRule:ListenerRule", "aws:alb/listenerRule:ListenerRule"})

# AWS's TLS 1.2-minimum and TLS 1.3 policies for ALBs (no TLS 1.0/1.1, no legacy ciphers).
APPROVED_TLS_POLICIES = [
    "ELBSecurityPolicy-TLS13-1-2-2021-06",
    "ELBSecurityPolicy-TLS13-1-2-Res-2021-06",
    "ELBSecurityPolicy-TLS13-1-2-Ext2-2021-06",
    "ELBSecurityPolicy-TLS13-1-3-2021-06",
    "ELBSecurityPolicy-TLS13-1-2-FIPS-2023-04",
    "ELBSecurityPolicy-TLS13-1-2-Res-FIPS-2023-04",
    "ELBSecurityPolicy-TLS13-1-3-FIPS-2023-04",
    "ELBSecurityPolicy-TLS-1-2-2017-01",
    "ELBSecurityPolicy-TLS-1-2-Ext-2018-06",
    "ELBSecurityPolicy-FS-1-2-Res-2020-10",
]


def is_application(load_balancer: Resource) -> bool:
    return load_balancer.props.get("loadBalancerType", "application") == "application"


def check_https_tls_policy(resource: Resource, ctx: Context) -> Iterable[str]:
    if resource.props.get("protocol") != "HTTPS":
        return
    policy = resource.props.get("sslPolicy")
    if policy not in ctx.config["approvedPolicies"]:
        yield f"HTTPS listener uses sslPolicy {policy!r}, not one of the approved TLS 1.2+/1.3 policies"
    if not resource.props.get("certificateArn"):
        yield "HTTPS listener has no certificateArn"


def _redirects_to_https(actions: object) -> bool:
    listed = [a for a in as_list(actions) if isinstance(a, Mapping)]
    return bool(listed) and all(
        a.get("type") == "redirect" and first_block(a.get("redirect")).get("protocol") == "HTTPS"
        for a in listed
    )


def check_http_redirect_only(resources: Sequence[Resource], ctx: Context) -> Iterable[Violation]:
    http_listeners = [r for r in of_type(resources, *LISTENERS) if r.props.get("protocol") == "HTTP"]
    for listener in http_listeners:
        if not _redirects_to_https(listener.props.get("defaultActions")):
            yield Violation(
                f"HTTP listener {listener.name} does something other than redirect to HTTPS", listener.urn
            )
    # A listener rule on the HTTP listener could still forward traffic in clear text.
    for rule in of_type(resources, *LISTENER_RULES):
        if any(references(rule, "listenerArn", lst) for lst in http_listeners) and not _redirects_to_https(
            rule.props.get("actions")
        ):
            yield Violation(
                f"listener rule {rule.name} on an HTTP listener does not redirect to HTTPS", rule.urn
            )


def check_drop_invalid_headers(resource: Resource, ctx: Context) -> Iterable[str]:
    if is_application(resource) and not truthy(resource.props.get("dropInvalidHeaderFields")):
        yield "dropInvalidHeaderFields is not true (malformed headers reach MLflow)"


RULES = (
    Rule(
        name="alb-https-tls-policy",
        description="HTTPS listeners use an approved TLS 1.2+/1.3 security policy and a certificate.",
        enforcement="mandatory",
        remediation="Set ssl_policy to an approved policy (load_balancer.sslPolicy), e.g. "
        "ELBSecurityPolicy-TLS13-1-2-2021-06.",
        config={
            "approvedPolicies": {
                "type": "array",
                "items": {"type": "string"},
                "default": APPROVED_TLS_POLICIES,
                "description": "ELB security policies accepted on HTTPS listeners.",
            }
        },
        types=LISTENERS,
        check_resource=check_https_tls_policy,
    ),
    Rule(
        name="alb-http-redirect-only",
        description="Plain-HTTP listeners (and their rules) only redirect to HTTPS.",
        enforcement="mandatory",
        remediation='Give the port-80 listener a single default action {"type": "redirect", '
        '"redirect": {"protocol": "HTTPS", "port": "443", "statusCode": "HTTP_301"}}.',
        check_stack=check_http_redirect_only,
    ),
    Rule(
        name="alb-drop-invalid-headers",
        description="Application load balancers drop invalid HTTP header fields.",
        enforcement="mandatory",
        remediation="Set drop_invalid_header_fields=True on the load balancer.",
        types=LOAD_BALANCERS,
        check_resource=check_drop_invalid_headers,
    ),
)
