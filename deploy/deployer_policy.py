"""The IAM policy a deployer (a person or a CI role) needs to run `pulumi up`, `refresh` and
`destroy` for one stack, generated from what the stack's program registers.

The program runs offline (`preview.offline.run_program`); every resource type in its graph is looked
up in `deploy.deployer_actions.TYPE_ACTIONS` (a type the table does not know stops generation, by
name), and each group of actions gets the narrowest Resource this stack allows:
- names the program sets (roles, policies, buckets, log groups, the table, ...) become exact ARNs;
  names Pulumi generates become `<logical name>-*` (its autonaming appends a random suffix);
- ids AWS assigns (VPCs, subnets, KMS keys, certificates) are limited to this account and region;
- iam:PassRole names exactly the stack's roles, each for the service its trust policy names
  (iam:PassedToService); iam:CreateServiceLinkedRole only the services the stack's resources need
  (iam:AWSServiceName); a stack with a permissions boundary may only create roles under it;
- actions with no resource-level permissions get `Resource: "*"` in one statement of their own;
- the deployer writes the buckets' policies, so it is explicitly denied their objects (a bucket
  policy could otherwise grant them to it).

The documents are split to fit IAM's managed policy size, 6,144 characters not counting white space
(https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_iam-quotas.html); a role may have 10
managed policies attached by default, 20 at most.

Why this file is long: each scope of deploy/deployer_actions.py becomes ARNs here, and the scopes
must be read together to see that no statement is wider than its resource type allows.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from deploy import deployer_actions as table
from deploy.deployer_restore import restore_actions, restore_source_arns
from preview.mocks import MOCK_ACCOUNT_ID, partition_of
from preview.offline import RegisteredResource, ResourceGraph, run_program

MANAGED_POLICY_MAX_CHARS = 6144
POLICY_VERSION = "2012-10-17"
# arn:<partition>:...: aws, aws-us-gov, aws-cn, aws-iso, aws-iso-b, ...
PARTITION_PATTERN = re.compile(r"aws(-[a-z]+)*")
ACCOUNT_PATTERN = re.compile(r"\d{12}")
# S3 bucket naming rules (general purpose buckets).
BUCKET_PATTERN = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
# Without --account-id every ARN names any account; the deployer's own account is the one that matters.
ANY_ACCOUNT = "*"
# Sid of the statement for actions IAM authorizes only against "*".
UNSCOPED_SID = "NoResourceLevelPermissions"

# Statement ids, in the order statements appear (and are packed into documents).
SCOPE_SIDS: Mapping[str, str] = {
    table.UNSCOPED: UNSCOPED_SID,
    table.EC2: "Ec2InThisAccountAndRegion",
    table.ELB: "StackLoadBalancer",
    table.ECS: "StackEcsClusterServicesAndTasks",
    table.ECR: "StackImageRepository",
    table.IAM_ROLE: "StackRoles",
    table.IAM_POLICY: "StackManagedPolicies",
    table.S3_BUCKET: "StackBuckets",
    table.S3_OBJECT: "StackBucketObjects",
    table.KMS_KEY: "KmsKeysInThisAccountAndRegion",
    table.KMS_ALIAS: "StackKmsAliases",
    table.KMS_GRANT: "KmsGrantsForAwsServices",
    table.KMS_VIA_SECRETS_MANAGER: "KmsThroughSecretsManager",
    table.SECRETS: "StackSecrets",
    table.RDS_MANAGED_SECRET: "RdsManagedMasterSecret",
    table.LOG_GROUP: "StackLogGroups",
    table.RDS: "StackDatabase",
    table.DYNAMODB: "StackLockTable",
    table.SNS: "StackAlarmTopic",
    table.ALARM: "StackAlarms",
    table.ACM: "CertificatesInThisAccountAndRegion",
    table.ROUTE53_ZONE: "StackHostedZones",
    table.ROUTE53_RECORDS: "StackDnsRecords",
    table.ROUTE53_CHANGE: "Route53Changes",
    table.SCHEDULER: "StackSchedules",
    table.LAMBDA: "StackFunctions",
    table.APP_AUTOSCALING: "ScalableTargetsInThisAccountAndRegion",
    table.DASHBOARD: "StackDashboards",
    table.WAF: "StackWebAcl",
    table.EKS: "StackEksPodIdentityAssociations",
}
# Creating a role, or changing its boundary, is how a deployer could grant itself more: with a
# boundary configured, both must name it (iam:PermissionsBoundary), and removing it is not granted.
BOUNDARY_ACTIONS = ("iam:CreateRole", "iam:PutRolePermissionsBoundary")
BOUNDARY_REMOVAL = "iam:DeleteRolePermissionsBoundary"
DENY_OBJECT_ACCESS_SID = "NoObjectAccessThroughBucketPolicies"
DENIED_OBJECT_ACTIONS = ("s3:GetObject", "s3:PutObject")
S3_STATEMENT_SIDS = frozenset({"StackBuckets", "StackBucketObjects", DENY_OBJECT_ACCESS_SID})


class DeployerPolicyError(ValueError):
    """Options or a stack the policy cannot be generated for; the message says why."""


class UncoveredTypesError(DeployerPolicyError):
    """The stack registers resource types deploy/deployer_actions.py has no actions for."""

    def __init__(self, stack: str, types: list[str]) -> None:
        self.types = types
        super().__init__(
            f"stack {stack!r} registers resource types the deployer policy does not cover: "
            f"{', '.join(types)} — add each to TYPE_ACTIONS in deploy/deployer_actions.py with the "
            "actions its provider calls"
        )


@dataclass(frozen=True)
class PolicyOptions:
    partition: str = "aws"
    account_id: str | None = None  # None: ARNs name any account ("*")
    state_bucket: str | None = None  # Pulumi's S3 state backend (s3://<bucket>)
    secrets_key_arn: str | None = None  # Pulumi's awskms:// secrets provider key

    def validate(self) -> None:
        problems = []
        if not PARTITION_PATTERN.fullmatch(self.partition):
            problems.append(f"partition {self.partition!r} is not an AWS partition (aws, aws-us-gov, aws-cn)")
        if self.account_id is not None and not ACCOUNT_PATTERN.fullmatch(self.account_id):
            problems.append(f"account id {self.account_id!r} must be 12 digits")
        if self.state_bucket is not None and not BUCKET_PATTERN.fullmatch(self.state_bucket):
            problems.append(f"state bucket {self.state_bucket!r} is not an S3 bucket name")
        if self.secrets_key_arn is not None:
            problems += _secrets_key_problems(self.secrets_key_arn, self.partition)
        if problems:
            raise DeployerPolicyError("; ".join(problems))


def _secrets_key_problems(arn: str, partition: str) -> list[str]:
    if re.fullmatch(rf"arn:{re.escape(partition)}:kms:[a-z0-9-]+:\d{{12}}:key/[A-Za-z0-9-]+", arn):
        return []
    if ":alias/" in arn:
        # https://docs.aws.amazon.com/kms/latest/developerguide/alias-authorization.html
        return [
            f"secrets key {arn!r} is an alias: IAM authorizes KMS operations against the key's ARN "
            "(`aws kms describe-key --key-id <alias>` prints it)"
        ]
    return [f"secrets key {arn!r} is not a KMS key ARN (arn:{partition}:kms:<region>:<account>:key/<id>)"]


@dataclass(frozen=True)
class DeployerPolicy:
    stack: str
    name_prefix: str
    documents: list[dict[str, Any]] = field(default_factory=list)

    @property
    def policy_names(self) -> list[str]:
        """Suggested managed policy names, one per document."""
        if len(self.documents) == 1:
            return [f"{self.name_prefix}-deployer"]
        return [f"{self.name_prefix}-deployer-{index}" for index in range(1, len(self.documents) + 1)]

    @property
    def statements(self) -> list[dict[str, Any]]:
        return [statement for document in self.documents for statement in document["Statement"]]


def uncovered_types(types: Iterable[str]) -> list[str]:
    """Resource types the table has no entry for, sorted."""
    return sorted(set(types) - set(table.TYPE_ACTIONS))


def policy_size(document: Mapping[str, Any]) -> int:
    """Characters IAM counts against the size quota: everything but white space."""
    return len(re.sub(r"\s", "", json.dumps(document, separators=(",", ":"))))


def generate(
    stack: str,
    options: PolicyOptions | None = None,
    *,
    config_overrides: Mapping[str, Any] | None = None,
) -> DeployerPolicy:
    """Run the stack's program offline and build its deployer policy."""
    options = options or PolicyOptions()
    options.validate()
    graph = run_program(stack, config_overrides=config_overrides)
    if graph.error is not None:
        raise DeployerPolicyError(str(graph.error))
    return build_deployer_policy(graph, options)


def build_deployer_policy(graph: ResourceGraph, options: PolicyOptions | None = None) -> DeployerPolicy:
    options = options or PolicyOptions()
    options.validate()
    region = str(graph.config.get("aws:region", "us-east-1"))
    expected_partition = partition_of(region)[0]
    if options.partition != expected_partition:
        raise DeployerPolicyError(
            f"stack {graph.stack!r} deploys to {region}, in partition {expected_partition}; "
            f"ARNs in {options.partition} would match nothing there (use --partition {expected_partition})"
        )
    missing = uncovered_types(graph.types)
    if missing:
        raise UncoveredTypesError(graph.stack, missing)
    statements = _StackArns(graph, options).statements()
    return DeployerPolicy(
        stack=graph.stack,
        name_prefix=graph.one("pulumi:providers:aws").name.removesuffix("-aws"),
        documents=split_documents(statements),
    )


def split_documents(
    statements: list[dict[str, Any]], limit: int = MANAGED_POLICY_MAX_CHARS
) -> list[dict[str, Any]]:
    """Pack statements, in order, into as few documents of at most `limit` characters as first-fit
    finds; a statement too large on its own is split by its actions. Same input, same documents.
    The S3 statements travel together: a document that lets the deployer write a bucket's policy
    or lifecycle without the object grants and denial beside it reads as a privilege escalation."""
    units: list[list[dict[str, Any]]] = []
    together = [statement for statement in statements if statement["Sid"] in S3_STATEMENT_SIDS]
    for statement in statements:
        if statement["Sid"] not in S3_STATEMENT_SIDS:
            units += [[piece] for piece in _fit(statement, limit)]
        elif statement is together[0]:
            fits = policy_size(_document(together)) <= limit
            units += [together] if fits else [[piece] for s in together for piece in _fit(s, limit)]
    documents: list[list[dict[str, Any]]] = []
    for unit in units:
        for statements_so_far in documents:
            if policy_size(_document([*statements_so_far, *unit])) <= limit:
                statements_so_far.extend(unit)
                break
        else:
            documents.append(list(unit))
    return [_document(document) for document in documents]


def _fit(statement: dict[str, Any], limit: int) -> list[dict[str, Any]]:
    if policy_size(_document([statement])) <= limit:
        return [statement]
    actions = statement["Action"]
    if len(actions) < 2:
        raise DeployerPolicyError(f"statement {statement['Sid']} alone exceeds {limit} characters")
    half = len(actions) // 2
    first = {**statement, "Sid": f"{statement['Sid']}A", "Action": actions[:half]}
    second = {**statement, "Sid": f"{statement['Sid']}B", "Action": actions[half:]}
    return _fit(first, limit) + _fit(second, limit)


def _document(statements: list[dict[str, Any]]) -> dict[str, Any]:
    return {"Version": POLICY_VERSION, "Statement": statements}


def _statement(sid: str, actions: Iterable[str], resources: Iterable[str], condition: dict | None = None):
    statement: dict[str, Any] = {
        "Sid": sid,
        "Effect": "Allow",
        "Action": sorted(set(actions)),
        "Resource": sorted(set(resources)),
    }
    if condition:
        statement["Condition"] = condition
    return statement


def _camel(text: str) -> str:
    return "".join(part.capitalize() for part in re.split(r"[^A-Za-z0-9]+", text) if part)


class _StackArns:
    """This stack's ARNs per scope, in the requested partition and account."""

    def __init__(self, graph: ResourceGraph, options: PolicyOptions) -> None:
        self.graph = graph
        self.options = options
        self.partition = options.partition
        self.account = options.account_id or ANY_ACCOUNT
        self.region = str(graph.config.get("aws:region", "us-east-1"))

    # -- names and ARNs ----------------------------------------------------------------------
    def arn(self, service: str, resource: str, *, regional: bool = True, account: bool = True) -> str:
        region = self.region if regional else ""
        owner = self.account if account else ""
        return f"arn:{self.partition}:{service}:{region}:{owner}:{resource}"

    def name(self, resource: RegisteredResource, key: str = "name") -> str:
        """The physical name: the one the program sets (built with the offline account id, which
        becomes the deployer's), `<namePrefix>*` when it sets a prefix for the provider to
        complete, or Pulumi's autoname pattern `<logical name>-*`."""
        value = resource.get(key)
        if not (isinstance(value, str) and value):
            prefix = resource.get("namePrefix")
            value = f"{prefix}*" if isinstance(prefix, str) and prefix else f"{resource.name}-*"
        return value.replace(MOCK_ACCOUNT_ID, self.account)

    def names(self, type_token: str, key: str = "name") -> list[str]:
        return [self.name(resource, key) for resource in self.graph.of_type(type_token)]

    def role_arns(self) -> dict[str, str]:
        """Logical role name -> its ARN."""
        arns = {}
        for role in self.graph.of_type("aws:iam/role:Role"):
            path = role.get("path") or "/"
            arns[role.name] = self.arn("iam", f"role{path}{self.name(role)}", regional=False)
        return arns

    def scope_resources(self) -> dict[str, list[str]]:
        key_arns = [self.arn("kms", "key/*")]
        buckets = self.names("aws:s3/bucket:Bucket", "bucket")
        load_balancers = self.names("aws:lb/loadBalancer:LoadBalancer")
        clusters = self.names("aws:ecs/cluster:Cluster")
        # A team stack (tenancy.mode team) adds rules to its platform stack's ALB listeners and a
        # service to its cluster: only those, by the names in the ARNs the platform exports.
        shared_load_balancers = sorted(
            {
                str(rule.get("listenerArn")).split("/")[2]
                for rule in self.graph.of_type("aws:lb/listenerRule:ListenerRule")
                if str(rule.get("listenerArn")).count("/") >= 3
            }
            - set(load_balancers)
        )
        shared_clusters = sorted(
            {
                str(service.get("cluster")).rsplit("/", 1)[-1]
                for service in self.graph.of_type("aws:ecs/service:Service")
                if ":cluster/" in str(service.get("cluster"))
            }
            - set(clusters)
        )
        zones = sorted({str(r.get("zoneId")) for r in self.graph.of_type("aws:route53/record:Record")})
        return {
            table.UNSCOPED: ["*"],
            table.EC2: [self.arn("ec2", "*")],
            table.ELB: [
                # loadbalancer/app/<name>/<id>, listener/app/<name>/<lb id>/<id>, listener-rule/...
                # The listener actions' reference entry marks listener/app and listener/net both
                # required (parliament checks each): no load balancer of another type can have
                # the ALB's name, so listener/net/<name>/... matches nothing that exists.
                *(
                    self.arn("elasticloadbalancing", f"{kind}/{lb}/{ids}")
                    for lb in load_balancers
                    for kind, ids in (
                        ("loadbalancer/app", "*"),
                        ("listener/app", "*/*"),
                        ("listener/net", "*/*"),
                        ("listener-rule/app", "*/*/*"),
                    )
                ),
                *(
                    self.arn("elasticloadbalancing", f"targetgroup/{tg}/*")
                    for tg in self.names("aws:lb/targetGroup:TargetGroup")
                ),
                *(
                    self.arn("elasticloadbalancing", f"{kind}/{lb}/{ids}")
                    for lb in shared_load_balancers
                    for kind, ids in (
                        ("listener/app", "*/*"),
                        ("listener/net", "*/*"),
                        ("listener-rule/app", "*/*/*"),
                        ("listener-rule/net", "*/*/*"),  # parliament: Create/Modify/DeleteRule list both
                    )
                ),
            ],
            table.ECS: [
                *(self.arn("ecs", f"cluster/{cluster}") for cluster in clusters),
                *(self.arn("ecs", f"service/{cluster}/*") for cluster in [*clusters, *shared_clusters]),
                *(
                    self.arn("ecs", f"task-definition/{family}:*")
                    for family in self.names("aws:ecs/taskDefinition:TaskDefinition", "family")
                ),
            ],
            table.ECR: [
                self.arn("ecr", f"repository/{name}") for name in self.names("aws:ecr/repository:Repository")
            ],
            table.IAM_ROLE: list(self.role_arns().values()),
            table.IAM_POLICY: [
                self.arn("iam", f"policy/{name}", regional=False)
                for name in self.names("aws:iam/policy:Policy")
            ],
            table.S3_BUCKET: [self.arn("s3", bucket, regional=False, account=False) for bucket in buckets],
            table.S3_OBJECT: [
                self.arn("s3", f"{bucket}/*", regional=False, account=False) for bucket in buckets
            ],
            table.KMS_KEY: key_arns,
            table.KMS_ALIAS: [*(self.arn("kms", a) for a in self.names("aws:kms/alias:Alias")), *key_arns],
            table.KMS_GRANT: key_arns,
            table.KMS_VIA_SECRETS_MANAGER: key_arns,
            table.SECRETS: [
                self.arn("secretsmanager", f"secret:{pattern}") for pattern in self.secret_patterns()
            ],
            table.RDS_MANAGED_SECRET: [self.arn("secretsmanager", "secret:rds!db-*")],  # named by RDS
            table.LOG_GROUP: [
                self.arn("logs", f"log-group:{name}{suffix}")
                for name in self.names("aws:cloudwatch/logGroup:LogGroup")
                for suffix in ("", ":*")
            ],
            table.RDS: self.rds_arns(),
            table.DYNAMODB: [
                self.arn("dynamodb", f"table/{name}") for name in self.names("aws:dynamodb/table:Table")
            ],
            table.SNS: [self.arn("sns", name) for name in self.names("aws:sns/topic:Topic")],
            table.ALARM: self.alarm_arns(),
            table.ACM: [self.arn("acm", "certificate/*")],
            table.ROUTE53_ZONE: [
                self.arn("route53", f"hostedzone/{z}", regional=False, account=False) for z in zones
            ],
            table.ROUTE53_RECORDS: [
                self.arn("route53", f"hostedzone/{zone}", regional=False, account=False) for zone in zones
            ],
            table.ROUTE53_CHANGE: [self.arn("route53", "change/*", regional=False, account=False)],
            table.SCHEDULER: [
                self.arn("scheduler", f"schedule/{r.get('groupName') or 'default'}/{self.name(r)}")
                for r in self.graph.of_type("aws:scheduler/schedule:Schedule")
            ],
            table.LAMBDA: [
                # Unqualified, and qualified ($LATEST: the Invocation names it).
                self.arn("lambda", f"function:{name}{suffix}")
                for name in self.names("aws:lambda/function:Function")
                for suffix in ("", ":*")
            ],
            table.APP_AUTOSCALING: [self.arn("application-autoscaling", "scalable-target/*")],
            table.EKS: table.eks_scope(self),
            table.DASHBOARD: [
                self.arn("cloudwatch", f"dashboard/{name}", regional=False)
                for name in self.names("aws:cloudwatch/dashboard:Dashboard", "dashboardName")
            ],
            table.WAF: [
                *(
                    self.arn("wafv2", f"regional/webacl/{name}/*")
                    for name in self.names("aws:wafv2/webAcl:WebAcl")
                ),
                # Create/UpdateWebACL name the AWS managed rule groups the ACL references.
                self.arn("wafv2", "regional/managedruleset/*/*"),
                *(self.arn("elasticloadbalancing", f"loadbalancer/app/{lb}/*") for lb in load_balancers),
            ],
        }

    def secret_patterns(self) -> list[str]:
        """`<secret_name_prefix>/*` for names under a prefix (infra/settings.py), else the name and
        the 6 random characters Secrets Manager appends to the ARN."""
        patterns = set()
        for name in self.names("aws:secretsmanager/secret:Secret"):
            patterns.add(f"{name.rsplit('/', 1)[0]}/*" if "/" in name else f"{name}-??????")
        return sorted(patterns)

    def final_snapshots(self) -> list[str]:
        """Names of the final snapshots `destroy` takes; infra/database.py suffixes them randomly,
        so a name under the instance's identifier becomes `<identifier>-*`."""
        patterns = []
        for instance in self.graph.of_type("aws:rds/instance:Instance"):
            identifier = self.name(instance, "identifier")
            final_snapshot = instance.get("finalSnapshotIdentifier")
            if final_snapshot and not instance.get("skipFinalSnapshot"):
                patterns.append(
                    f"{identifier}-*" if final_snapshot.startswith(f"{identifier}-") else final_snapshot
                )
        return patterns

    def pre_upgrade_snapshots(self) -> list[str]:
        """`<instance identifier>-pre-mlflow-*`: one per MLflow version the stack has run."""
        return [
            f"{self.name(instance, 'identifier')}-pre-mlflow-*"
            for instance in self.graph.of_type("aws:rds/instance:Instance")
            if self.graph.of_type("aws:rds/snapshot:Snapshot")
        ]

    def rds_arns(self) -> list[str]:
        arns = [
            self.arn("rds", f"db:{self.name(instance, 'identifier')}")
            for instance in self.graph.of_type("aws:rds/instance:Instance")
        ]
        arns += [
            self.arn("rds", f"snapshot:{p}") for p in self.final_snapshots() + self.pre_upgrade_snapshots()
        ]
        arns += restore_source_arns(self.graph, self.arn)
        arns += [self.arn("rds", f"subgrp:{n}") for n in self.names("aws:rds/subnetGroup:SubnetGroup")]
        arns += [self.arn("rds", f"pg:{n}") for n in self.names("aws:rds/parameterGroup:ParameterGroup")]
        return arns

    def alarm_arns(self) -> list[str]:
        names = self.names("aws:cloudwatch/metricAlarm:MetricAlarm")
        # Target tracking names its alarms TargetTracking-<resource id>-AlarmHigh|Low-<uuid>.
        names += [
            f"TargetTracking-{target.get('resourceId')}-*"
            for target in self.graph.of_type("aws:appautoscaling/target:Target")
        ]
        return [self.arn("cloudwatch", f"alarm:{name}") for name in names]

    def record_names(self) -> list[str]:
        """Record names as Route 53 normalizes them (lower case, no final dot); an ACM validation
        record `_<token>.<domain>` becomes `_*.<domain>` (the token is only known once requested)."""
        names = set()
        for record in self.graph.of_type("aws:route53/record:Record"):
            name = str(record.get("name")).rstrip(".").lower()
            names.add(f"_*.{name.split('.', 1)[1]}" if name.startswith("_") else name)
        return sorted(names)

    # -- statements ----------------------------------------------------------------------------
    def conditions(self) -> dict[str, dict[str, Any]]:
        return {
            table.KMS_GRANT: {"Bool": {"kms:GrantIsForAWSResource": "true"}},
            table.KMS_VIA_SECRETS_MANAGER: {
                "StringEquals": {"kms:ViaService": f"secretsmanager.{self.region}.amazonaws.com"}
            },
            table.ROUTE53_RECORDS: {
                "ForAllValues:StringLike": {
                    "route53:ChangeResourceRecordSetsNormalizedRecordNames": self.record_names()
                }
            },
        }

    def actions_by_scope(self) -> dict[str, set[str]]:
        by_scope: dict[str, set[str]] = defaultdict(set)
        for type_token in self.graph.types:
            for scope, actions in table.TYPE_ACTIONS[type_token].items():
                by_scope[scope].update(actions)
        for invoke, actions in table.INVOKE_ACTIONS.items():
            if table.INVOKED_WITH[invoke] in self.graph.types:
                by_scope[table.UNSCOPED].update(actions)
        # An action a statement without a condition already grants on the same resources needs
        # no conditioned copy.
        resources = self.scope_resources()
        for scope in self.conditions():
            for other, actions in list(by_scope.items()):
                if other not in self.conditions() and resources[other] == resources[scope]:
                    by_scope[scope] -= actions
        return {scope: actions for scope, actions in by_scope.items() if actions}

    def statements(self) -> list[dict[str, Any]]:
        by_scope = self.actions_by_scope()
        resources = self.scope_resources()
        conditions = self.conditions()
        boundary = self.permissions_boundary()
        if table.RDS in by_scope:  # the final snapshot and a restore: only when the stack uses them
            by_scope[table.RDS] = (by_scope[table.RDS] | restore_actions(self.graph)) - (
                set() if self.final_snapshots() else {table.FINAL_SNAPSHOT_ACTION}
            )
        if boundary is not None and table.IAM_ROLE in by_scope:
            by_scope[table.IAM_ROLE] -= {*BOUNDARY_ACTIONS, BOUNDARY_REMOVAL}
        statements = [
            _statement(SCOPE_SIDS[scope], by_scope[scope], resources[scope], conditions.get(scope))
            for scope in SCOPE_SIDS
            if scope in by_scope
        ]
        if boundary is not None:
            statements.append(
                _statement(
                    "StackRolesOnlyUnderTheirBoundary",
                    BOUNDARY_ACTIONS,
                    resources[table.IAM_ROLE],
                    {"StringEquals": {"iam:PermissionsBoundary": boundary}},
                )
            )
        if table.S3_BUCKET in by_scope:
            statements.append(self.object_access_denial(resources[table.S3_OBJECT]))
        statements += self.pass_role_statements()
        statements += self.service_linked_role_statements()
        statements += self.backend_statements()
        return statements

    @staticmethod
    def object_access_denial(object_arns: list[str]) -> dict[str, Any]:
        """The deployer writes the stack's bucket policies (s3:PutBucketPolicy), so it could grant
        itself the artifacts; an explicit deny in an identity policy wins over any bucket policy's
        allow (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_evaluation-logic.html).
        Pulumi never reads or writes objects: `destroy` only lists and deletes them."""
        statement = _statement(DENY_OBJECT_ACCESS_SID, DENIED_OBJECT_ACTIONS, object_arns)
        return {**statement, "Effect": "Deny"}

    def permissions_boundary(self) -> str | None:
        """The boundary every role of the stack carries, or None (none, or not the same on all)."""
        boundaries = {role.get("permissionsBoundary") for role in self.graph.of_type("aws:iam/role:Role")}
        if len(boundaries) == 1 and (boundary := boundaries.pop()):
            return str(boundary)
        return None

    def pass_role_statements(self) -> list[dict[str, Any]]:
        """iam:PassRole on exactly the stack's roles, each only to the service its trust policy
        lets assume it (ECS tasks, VPC flow logs, EventBridge Scheduler)."""
        role_arns = self.role_arns()
        by_service: dict[str, set[str]] = defaultdict(set)
        for role in self.graph.of_type("aws:iam/role:Role"):
            for service in trusted_services(role):
                by_service[service].add(role_arns[role.name])
        return [
            _statement(
                f"PassStackRolesTo{_camel(service.removesuffix('.amazonaws.com'))}",
                ["iam:PassRole"],
                arns,
                {"StringEquals": {"iam:PassedToService": service}},
            )
            for service, arns in sorted(by_service.items())
        ]

    def service_linked_role_statements(self) -> list[dict[str, Any]]:
        services = sorted(
            {
                service
                for type_token, service in table.SERVICE_LINKED_ROLES.items()
                if type_token in self.graph.types
            }
        )
        if not services:
            return []
        return [
            _statement(
                "ServiceLinkedRolesTheStackNeeds",
                ["iam:CreateServiceLinkedRole"],
                [
                    self.arn("iam", f"role/aws-service-role/{service}/*", regional=False)
                    for service in services
                ],
                {"StringEquals": {"iam:AWSServiceName": services}},
            )
        ]

    def backend_statements(self) -> list[dict[str, Any]]:
        """Pulumi's own state (S3 backend) and secrets provider (AWS KMS), when given."""
        statements = []
        bucket = self.options.state_bucket
        if bucket:
            statements += [
                _statement(
                    "PulumiStateBucket",
                    ["s3:ListBucket"],
                    [self.arn("s3", bucket, regional=False, account=False)],
                ),
                _statement(
                    "PulumiStateObjects",
                    ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
                    [self.arn("s3", f"{bucket}/*", regional=False, account=False)],
                ),
            ]
        if self.options.secrets_key_arn:
            statements.append(
                _statement(
                    "PulumiSecretsProvider",
                    ["kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey"],
                    [self.options.secrets_key_arn],
                )
            )
        return statements


def trusted_services(role: RegisteredResource) -> list[str]:
    """Service principals the role's trust policy lets assume it."""
    document = role.get("assumeRolePolicy")
    parsed = json.loads(document) if isinstance(document, str) else document or {}
    statements = parsed.get("Statement", [])
    services: set[str] = set()
    for statement in statements if isinstance(statements, list) else [statements]:
        principal = statement.get("Principal", {})
        service = principal.get("Service", []) if isinstance(principal, dict) else []
        services.update([service] if isinstance(service, str) else service)
    return sorted(services)


def to_json(document: Mapping[str, Any]) -> str:
    return json.dumps(document, indent=2) + "\n"
