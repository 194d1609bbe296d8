"""AWS WAF in front of the ALB: password guessing, common exploits, oversized JSON calls.

One REGIONAL web ACL associated with the load balancer, default action Allow, four rules in order:

1. `rate-limit-per-ip`: basic-auth checks the password on every request except MLflow's unprotected
   prefixes (`/static`, `/favicon.ico`, `/health`: `_UNPROTECTED_PATH_PREFIXES` in
   mlflow/server/auth, MLflow 3.17), so every other path — `/api/`, `/ajax-api/`, the UI, `/graphql`,
   OTLP's `/v1/traces` — is a place to guess passwords. A list of API prefixes would leave the
   others open; the rule counts everything but those three, per client IP over 5 minutes, and
   answers 429 with Retry-After (the MLflow client retries 429 with backoff).
2. `json-body-size`: the managed common rule set's SizeRestrictions_BODY blocks bodies over 8 KB,
   which MLflow's log-batch (up to 1 MB, `MAX_BATCH_LOG_REQUEST_SIZE`) and artifact uploads exceed;
   it is set to COUNT. On an ALB, WAF inspects only the first 8 KB of a body ("Oversize request
   components", AWS WAF Developer Guide), so no body rule can enforce a larger limit; this rule
   instead blocks REST calls (`/api/`, `/ajax-api/`, artifact paths excepted) that declare a
   Content-Length of 10 MB or more (the header value has more than 7 digits), ten times MLflow's
   largest JSON request.
3. AWSManagedRulesCommonRuleSet, not applied to artifact uploads (raw files: HTML reports, notebooks
   and pickles are data, never interpreted by the server) and with GenericLFI_BODY set to COUNT:
   relative paths such as `../data/train.csv` are ordinary parameter and tag values.
4. AWSManagedRulesKnownBadInputsRuleSet: Log4j/Java deserialisation and similar probes; 200 WCU,
   nothing in MLflow's traffic looks like them.

Total capacity ~930 WCU, under the 1,500 the base price covers.

The rules are written in the WAFv2 API's own JSON (`rule_json`): the provider's typed `rule` blocks
cannot nest the statements rule 2 needs, and the JSON is exactly what botocore's wafv2 model
validates in tests. The cost is the provider's drift detection on rules: a console edit to the
rules is not shown by `pulumi preview`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

# MLflow basic-auth's unprotected path prefixes (no password check, nothing to guess).
UNPROTECTED_PATH_PREFIXES = ("/static", "/favicon.ico", "/health")
# Raw-file bodies: proxied artifact uploads and the UI's upload-artifact.
ARTIFACT_PATH_PREFIXES = (
    "/api/2.0/mlflow-artifacts/",
    "/ajax-api/2.0/mlflow-artifacts/",
    "/ajax-api/2.0/mlflow/upload-artifact",
)
REST_PATH_PREFIXES = ("/api/", "/ajax-api/")
# Content-Length values longer than this many digits (>= 10,000,000 bytes) are refused on REST calls.
MAX_CONTENT_LENGTH_DIGITS = 7
RATE_WINDOW_SECONDS = 300
RETRY_AFTER_SECONDS = 60
COMMON_RULE_SET = "AWSManagedRulesCommonRuleSet"
KNOWN_BAD_INPUTS_RULE_SET = "AWSManagedRulesKnownBadInputsRuleSet"
# Common rule set rules counted instead of blocked (see the module docstring).
COUNTED_COMMON_RULES = ("SizeRestrictions_BODY", "GenericLFI_BODY")
# WAF requires this prefix on a CloudWatch Logs destination's name.
LOG_GROUP_PREFIX = "aws-waf-logs-"


@dataclass(frozen=True)
class FirewallArgs:
    name_prefix: str  # web ACL "<prefix>-waf", metrics "<prefix>-<rule>"
    load_balancer_arn: pulumi.Input[str]
    rate_limit_per_5_min: int = 3000
    logs: bool = False
    log_retention_days: int = 30


def _visibility(metric_name: str) -> dict[str, Any]:
    return {"SampledRequestsEnabled": True, "CloudWatchMetricsEnabled": True, "MetricName": metric_name}


def _path_starts_with(prefix: str) -> dict[str, Any]:
    return {
        "ByteMatchStatement": {
            "SearchString": prefix,
            "FieldToMatch": {"UriPath": {}},
            "TextTransformations": [{"Priority": 0, "Type": "NONE"}],
            "PositionalConstraint": "STARTS_WITH",
        }
    }


def _any_path(prefixes: tuple[str, ...]) -> dict[str, Any]:
    statements = [_path_starts_with(prefix) for prefix in prefixes]
    return statements[0] if len(statements) == 1 else {"OrStatement": {"Statements": statements}}


def _not(statement: dict[str, Any]) -> dict[str, Any]:
    return {"NotStatement": {"Statement": statement}}


def web_acl_rules(prefix: str, rate_limit_per_5_min: int) -> list[dict[str, Any]]:
    """The web ACL's rules in the WAFv2 API shape (CreateWebACL's `Rules`)."""
    not_artifacts = _not(_any_path(ARTIFACT_PATH_PREFIXES))
    return [
        {
            "Name": "rate-limit-per-ip",
            "Priority": 0,
            "Statement": {
                "RateBasedStatement": {
                    "Limit": rate_limit_per_5_min,
                    "EvaluationWindowSec": RATE_WINDOW_SECONDS,
                    "AggregateKeyType": "IP",
                    "ScopeDownStatement": _not(_any_path(UNPROTECTED_PATH_PREFIXES)),
                }
            },
            "Action": {
                "Block": {
                    "CustomResponse": {
                        "ResponseCode": 429,
                        "ResponseHeaders": [{"Name": "retry-after", "Value": str(RETRY_AFTER_SECONDS)}],
                    }
                }
            },
            "VisibilityConfig": _visibility(f"{prefix}-rate-limit"),
        },
        {
            "Name": "json-body-size",
            "Priority": 1,
            "Statement": {
                "AndStatement": {
                    "Statements": [
                        {
                            "SizeConstraintStatement": {
                                "FieldToMatch": {"SingleHeader": {"Name": "content-length"}},
                                "ComparisonOperator": "GT",
                                "Size": MAX_CONTENT_LENGTH_DIGITS,
                                "TextTransformations": [{"Priority": 0, "Type": "NONE"}],
                            }
                        },
                        _any_path(REST_PATH_PREFIXES),
                        not_artifacts,
                    ]
                }
            },
            "Action": {"Block": {"CustomResponse": {"ResponseCode": 413}}},
            "VisibilityConfig": _visibility(f"{prefix}-json-body-size"),
        },
        {
            "Name": "aws-common",
            "Priority": 2,
            "Statement": {
                "ManagedRuleGroupStatement": {
                    "VendorName": "AWS",
                    "Name": COMMON_RULE_SET,
                    "ScopeDownStatement": not_artifacts,
                    "RuleActionOverrides": [
                        {"Name": rule, "ActionToUse": {"Count": {}}} for rule in COUNTED_COMMON_RULES
                    ],
                }
            },
            "OverrideAction": {"None": {}},
            "VisibilityConfig": _visibility(f"{prefix}-aws-common"),
        },
        {
            "Name": "aws-known-bad-inputs",
            "Priority": 3,
            "Statement": {
                "ManagedRuleGroupStatement": {"VendorName": "AWS", "Name": KNOWN_BAD_INPUTS_RULE_SET}
            },
            "OverrideAction": {"None": {}},
            "VisibilityConfig": _visibility(f"{prefix}-aws-known-bad-inputs"),
        },
    ]


class Firewall(pulumi.ComponentResource):
    """Web ACL + its association with the ALB (+ a log group and logging configuration)."""

    web_acl: aws.wafv2.WebAcl

    def __init__(self, name: str, args: FirewallArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mlflow-stack:edge:Firewall", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        acl_name = f"{args.name_prefix}-waf"
        self.web_acl = aws.wafv2.WebAcl(
            f"{name}-acl",
            name=acl_name,
            description="MLflow: per-IP rate limit, AWS common and known-bad-inputs rules",
            scope="REGIONAL",
            default_action=aws.wafv2.WebAclDefaultActionArgs(allow=aws.wafv2.WebAclDefaultActionAllowArgs()),
            rule_json=json.dumps(web_acl_rules(args.name_prefix, args.rate_limit_per_5_min)),
            visibility_config=aws.wafv2.WebAclVisibilityConfigArgs(
                cloudwatch_metrics_enabled=True, metric_name=acl_name, sampled_requests_enabled=True
            ),
            opts=child,
        )
        # The ARN input makes the association wait for the load balancer (and the ACL).
        aws.wafv2.WebAclAssociation(
            f"{name}-association",
            resource_arn=args.load_balancer_arn,
            web_acl_arn=self.web_acl.arn,
            opts=child,
        )
        if args.logs:
            log_group = aws.cloudwatch.LogGroup(
                f"{name}-logs",
                name=f"{LOG_GROUP_PREFIX}{args.name_prefix}",
                retention_in_days=args.log_retention_days,
                opts=child,
            )
            aws.wafv2.WebAclLoggingConfiguration(
                f"{name}-logging",
                resource_arn=self.web_acl.arn,
                log_destination_configs=[log_group.arn],
                # Basic-auth sends the password (base64) in every request's Authorization header.
                redacted_fields=[
                    aws.wafv2.WebAclLoggingConfigurationRedactedFieldArgs(
                        single_header=aws.wafv2.WebAclLoggingConfigurationRedactedFieldSingleHeaderArgs(
                            name="authorization"
                        )
                    )
                ],
                opts=child,
            )
        self.web_acl_arn = self.web_acl.arn
        self.register_outputs({"web_acl_arn": self.web_acl_arn})
