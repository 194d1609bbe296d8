"""The edge: an Application Load Balancer that terminates TLS in front of the MLflow replicas.

HTTPS (TLS 1.3 policy) forwards to an `ip` target group health-checked on /health and adds
Strict-Transport-Security to every response; HTTP only 301-redirects to HTTPS on the configured
domain (never the request's Host header, which the client controls). The certificate is either an
existing ACM ARN or a new DNS-validated one in a Route 53 zone. Only the configured CIDRs reach
80/443; the ALB reaches nothing by itself (the compute component adds the one egress rule towards
the service).
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

HTTPS_PORT = 443
HTTP_PORT = 80

# Where the ALB writes access logs inside its dedicated bucket.
ACCESS_LOG_PREFIX = "alb"
LB_NAME_LIMIT = 32
ABORT_MULTIPART_DAYS = 7
NONCURRENT_VERSION_DAYS = 30


@dataclass(frozen=True)
class LoadBalancerArgs:
    name_prefix: str  # settings.name_prefix; ALB "<prefix>-alb", target group "<prefix>-tg" (<= 32 chars)
    vpc_id: pulumi.Input[str]
    subnet_ids: pulumi.Input[Sequence[str]]  # public subnets; private ones for an internal ALB
    domain_name: str
    target_port: int
    health_path: str
    certificate_arn: str | None = None  # existing ACM certificate, or
    hosted_zone_id: str | None = None  # the zone to DNS-validate a new certificate in
    create_alias_record: bool = True  # A/AAAA alias domain_name -> ALB (needs hosted_zone_id)
    internet_facing: bool = True
    allowed_cidrs: Sequence[str] = ("0.0.0.0/0",)
    ssl_policy: str = "ELBSecurityPolicy-TLS13-1-2-2021-06"
    idle_timeout_seconds: int = 300  # LoadBalancerSettings.idle_timeout_seconds: why 300
    deregistration_delay_seconds: int = 30
    deletion_protection: bool = False
    access_logs: bool = False
    access_log_retention_days: int = 90
    access_log_bucket_force_destroy: bool = False
    health_check_interval_seconds: int = 15
    healthy_threshold: int = 2
    unhealthy_threshold: int = 3
    hsts_max_age_seconds: int = 31536000  # 0: no Strict-Transport-Security header
    # One ALB for many team stacks (tenancy.mode platform): a wildcard certificate and alias record
    # for *.domain_name, no target group, and an HTTPS listener answering 404 to hosts no team claims.
    shared: bool = False

    def __post_init__(self) -> None:
        if self.certificate_arn is None and self.hosted_zone_id is None:
            raise ValueError(
                "load balancer: no certificate — set domain.certificateArn (existing ACM certificate) "
                "or domain.hostedZoneId (a new DNS-validated one)"
            )
        for cidr in self.allowed_cidrs:
            ipaddress.ip_network(cidr)  # raises a ValueError naming the bad CIDR
        too_long = [n for n in (self.alb_name, self.target_group_name) if len(n) > LB_NAME_LIMIT]
        if too_long:
            raise ValueError(f"load balancer: {too_long} exceed AWS's {LB_NAME_LIMIT}-character limit")

    @property
    def alb_name(self) -> str:
        return f"{self.name_prefix}-alb"

    @property
    def target_group_name(self) -> str:
        return f"{self.name_prefix}-tg"

    @property
    def certificate_domain_name(self) -> str:
        """The certificate's (and alias record's) name: the host, or *.domain for a shared ALB."""
        return f"*.{self.domain_name}" if self.shared else self.domain_name


def server_target_group(
    resource_name: str,
    *,
    name: str,
    vpc_id: pulumi.Input[str],
    target_port: int,
    health_path: str,
    deregistration_delay_seconds: int,
    interval_seconds: int = 15,
    healthy_threshold: int = 2,
    unhealthy_threshold: int = 3,
    opts: pulumi.ResourceOptions,
) -> aws.lb.TargetGroup:
    """The replicas' `ip` target group, health-checked on /health (a standalone ALB's, or a team's
    on the shared ALB)."""
    return aws.lb.TargetGroup(
        resource_name,
        name=name,
        vpc_id=vpc_id,
        target_type="ip",  # Fargate tasks register by ENI IP
        protocol="HTTP",
        protocol_version="HTTP1",
        port=target_port,
        deregistration_delay=deregistration_delay_seconds,
        health_check=aws.lb.TargetGroupHealthCheckArgs(
            enabled=True,
            protocol="HTTP",
            path=health_path,
            port="traffic-port",
            matcher="200",
            interval=interval_seconds,
            timeout=5,
            healthy_threshold=healthy_threshold,
            unhealthy_threshold=unhealthy_threshold,
        ),
        opts=opts,
    )


def hsts_header(max_age_seconds: int) -> str | None:
    """Strict-Transport-Security value, or None (no header) for 0.

    includeSubDomains: the domain is the MLflow host itself, so this covers only names below it.
    No `preload`: that asks browsers to hard-code HTTPS for the whole registered domain, a decision
    for the domain's owner, not for one service on it."""
    if max_age_seconds <= 0:
        return None
    return f"max-age={max_age_seconds}; includeSubDomains"


def _cidr_kwargs(cidr: str) -> dict[str, str]:
    return (
        {"cidr_ipv6": cidr}
        if isinstance(ipaddress.ip_network(cidr), ipaddress.IPv6Network)
        else {"cidr_ipv4": cidr}
    )


class LoadBalancer(pulumi.ComponentResource):
    """ALB + listeners + target group + certificate (+ alias record, + access-log bucket)."""

    alb: aws.lb.LoadBalancer
    security_group: aws.ec2.SecurityGroup
    target_group: aws.lb.TargetGroup | None  # None on a shared ALB
    https_listener: aws.lb.Listener
    http_listener: aws.lb.Listener

    def __init__(self, name: str, args: LoadBalancerArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mlflow-stack:edge:LoadBalancer", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        self.security_group = aws.ec2.SecurityGroup(
            f"{name}-sg",
            description="MLflow ALB: HTTPS (and the HTTP redirect) from the allowed CIDRs only",
            vpc_id=args.vpc_id,
            tags={"Name": args.alb_name},
            # No inline rules: each rule is its own resource below, so nothing is implicitly open.
            opts=child,
        )
        for index, cidr in enumerate(args.allowed_cidrs):
            for port in (HTTPS_PORT, HTTP_PORT):
                aws.vpc.SecurityGroupIngressRule(
                    f"{name}-in-{port}-{index}",
                    security_group_id=self.security_group.id,
                    ip_protocol="tcp",
                    from_port=port,
                    to_port=port,
                    description=f"{'HTTPS' if port == HTTPS_PORT else 'HTTP->HTTPS redirect'} from {cidr}",
                    **_cidr_kwargs(cidr),
                    opts=child,
                )

        self.certificate_arn = self._certificate(name, args, child)

        access_logs = None
        self.access_log_bucket: aws.s3.Bucket | None = None
        alb_depends_on: list[pulumi.Resource] = []
        if args.access_logs:
            self.access_log_bucket, policy = self._access_log_bucket(name, args, child)
            alb_depends_on.append(policy)  # ALB validates write access when logging is enabled
            access_logs = aws.lb.LoadBalancerAccessLogsArgs(
                bucket=self.access_log_bucket.bucket, prefix=ACCESS_LOG_PREFIX, enabled=True
            )

        self.alb = aws.lb.LoadBalancer(
            f"{name}-alb",
            # Fixed, readable names (also the CloudWatch dimensions people search for). A change that
            # forces replacement (e.g. internetFacing) needs the old ALB removed first.
            name=args.alb_name,
            load_balancer_type="application",
            internal=not args.internet_facing,
            security_groups=[self.security_group.id],
            subnets=args.subnet_ids,
            idle_timeout=args.idle_timeout_seconds,
            drop_invalid_header_fields=True,
            enable_deletion_protection=args.deletion_protection,
            desync_mitigation_mode="defensive",
            access_logs=access_logs,
            opts=pulumi.ResourceOptions(parent=self, depends_on=alb_depends_on),
        )

        self.target_group = None
        if not args.shared:
            self.target_group = server_target_group(
                f"{name}-tg",
                name=args.target_group_name,
                vpc_id=args.vpc_id,
                target_port=args.target_port,
                health_path=args.health_path,
                deregistration_delay_seconds=args.deregistration_delay_seconds,
                interval_seconds=args.health_check_interval_seconds,
                healthy_threshold=args.healthy_threshold,
                unhealthy_threshold=args.unhealthy_threshold,
                opts=child,
            )
        https_default = (
            aws.lb.ListenerDefaultActionArgs(type="forward", target_group_arn=self.target_group.arn)
            if self.target_group is not None
            # A host no team's rule claims gets a plain 404 from the ALB itself, never a team's server.
            else aws.lb.ListenerDefaultActionArgs(
                type="fixed-response",
                fixed_response=aws.lb.ListenerDefaultActionFixedResponseArgs(
                    content_type="text/plain", message_body="no MLflow here\n", status_code="404"
                ),
            )
        )

        self.https_listener = aws.lb.Listener(
            f"{name}-https",
            load_balancer_arn=self.alb.arn,
            port=HTTPS_PORT,
            protocol="HTTPS",
            ssl_policy=args.ssl_policy,
            certificate_arn=self.certificate_arn,
            default_actions=[https_default],
            # The ALB sets the header on every HTTPS response, whatever the target answered
            # ("HTTP header modification for your Application Load Balancer", ELB User Guide).
            routing_http_response_strict_transport_security_header_value=hsts_header(
                args.hsts_max_age_seconds
            ),
            opts=child,
        )
        self.http_listener = aws.lb.Listener(
            f"{name}-http",
            load_balancer_arn=self.alb.arn,
            port=HTTP_PORT,
            protocol="HTTP",
            default_actions=[
                aws.lb.ListenerDefaultActionArgs(
                    type="redirect",
                    # host defaults to #{host}, the request's Host header: a forged Host would
                    # send the client (and its credentials on the next request) elsewhere.
                    redirect=aws.lb.ListenerDefaultActionRedirectArgs(
                        protocol="HTTPS", host=args.domain_name, port=str(HTTPS_PORT), status_code="HTTP_301"
                    ),
                )
            ],
            opts=child,
        )

        if args.create_alias_record and args.hosted_zone_id is not None:
            # The ALB is IPv4-only (the default ip_address_type), so one A alias is the whole answer.
            aws.route53.Record(
                f"{name}-alias",
                zone_id=args.hosted_zone_id,
                name=args.certificate_domain_name,
                type="A",
                aliases=[
                    aws.route53.RecordAliasArgs(
                        name=self.alb.dns_name, zone_id=self.alb.zone_id, evaluate_target_health=True
                    )
                ],
                opts=child,
            )

        self.url = pulumi.Output.from_input(f"https://{args.domain_name}")
        self.dns_name = self.alb.dns_name
        self.arn = self.alb.arn
        self.arn_suffix = self.alb.arn_suffix
        self.security_group_id = self.security_group.id
        self.https_listener_arn = self.https_listener.arn
        self.http_listener_arn = self.http_listener.arn
        if self.target_group is None:  # shared: each team stack brings its own (infra/team_route.py)
            self.register_outputs(
                {
                    "dns_name": self.dns_name,
                    "arn_suffix": self.arn_suffix,
                    "security_group_id": self.security_group_id,
                    "https_listener_arn": self.https_listener_arn,
                }
            )
            return
        self.target_group_arn_suffix = self.target_group.arn_suffix
        # ECS refuses a target group that no listener uses yet; carrying the listener in this
        # output makes every consumer of the target group wait for the listener.
        self.target_group_arn = pulumi.Output.all(self.https_listener.arn, self.target_group.arn).apply(
            lambda arns: arns[1]
        )
        self.register_outputs(
            {
                "url": self.url,
                "dns_name": self.dns_name,
                "arn_suffix": self.arn_suffix,
                "security_group_id": self.security_group_id,
                "target_group_arn": self.target_group_arn,
            }
        )

    def _certificate(
        self, name: str, args: LoadBalancerArgs, child: pulumi.ResourceOptions
    ) -> pulumi.Output[str]:
        if args.certificate_arn is not None:
            return pulumi.Output.from_input(args.certificate_arn)
        certificate = aws.acm.Certificate(
            f"{name}-cert",
            domain_name=args.certificate_domain_name,
            validation_method="DNS",
            key_algorithm="EC_prime256v1",
            opts=child,
        )
        option = certificate.domain_validation_options[0]
        validation_record = aws.route53.Record(
            f"{name}-cert-validation",
            zone_id=args.hosted_zone_id,
            name=option.resource_record_name,
            type=option.resource_record_type,
            records=[option.resource_record_value],
            ttl=300,
            allow_overwrite=True,  # the same CNAME validates every certificate for this name
            opts=child,
        )
        validation = aws.acm.CertificateValidation(
            f"{name}-cert-validated",
            certificate_arn=certificate.arn,
            validation_record_fqdns=[validation_record.fqdn],
            opts=child,
        )
        return validation.certificate_arn

    def _access_log_bucket(
        self, name: str, args: LoadBalancerArgs, child: pulumi.ResourceOptions
    ) -> tuple[aws.s3.Bucket, aws.s3.BucketPolicy]:
        bucket = aws.s3.Bucket(
            f"{name}-access-logs", force_destroy=args.access_log_bucket_force_destroy, opts=child
        )
        public_access = aws.s3.BucketPublicAccessBlock(
            f"{name}-access-logs-public-access",
            bucket=bucket.id,
            block_public_acls=True,
            block_public_policy=True,
            ignore_public_acls=True,
            restrict_public_buckets=True,
            opts=child,
        )
        aws.s3.BucketOwnershipControls(
            f"{name}-access-logs-ownership",
            bucket=bucket.id,
            rule=aws.s3.BucketOwnershipControlsRuleArgs(object_ownership="BucketOwnerEnforced"),
            opts=child,
        )
        aws.s3.BucketServerSideEncryptionConfiguration(
            f"{name}-access-logs-encryption",
            bucket=bucket.id,
            # ALB log delivery supports SSE-S3 only (not SSE-KMS).
            rules=[
                aws.s3.BucketServerSideEncryptionConfigurationRuleArgs(
                    apply_server_side_encryption_by_default=aws.s3.BucketServerSideEncryptionConfigurationRuleApplyServerSideEncryptionByDefaultArgs(
                        sse_algorithm="AES256"
                    )
                )
            ],
            opts=child,
        )
        aws.s3.BucketLifecycleConfiguration(
            f"{name}-access-logs-lifecycle",
            bucket=bucket.id,
            rules=[
                aws.s3.BucketLifecycleConfigurationRuleArgs(
                    id="expire-access-logs",
                    status="Enabled",
                    filter=aws.s3.BucketLifecycleConfigurationRuleFilterArgs(prefix=f"{ACCESS_LOG_PREFIX}/"),
                    expiration=aws.s3.BucketLifecycleConfigurationRuleExpirationArgs(
                        days=args.access_log_retention_days
                    ),
                ),
                # The bucket is unversioned and ELB writes whole objects, so this rule costs nothing;
                # it keeps the bucket within the kit's rule for every bucket (policies/rules/s3.py)
                # should versioning or multipart uploads ever appear.
                aws.s3.BucketLifecycleConfigurationRuleArgs(
                    id="abort-uploads-expire-old-versions",
                    status="Enabled",
                    filter=aws.s3.BucketLifecycleConfigurationRuleFilterArgs(),
                    abort_incomplete_multipart_upload=aws.s3.BucketLifecycleConfigurationRuleAbortIncompleteMultipartUploadArgs(
                        days_after_initiation=ABORT_MULTIPART_DAYS
                    ),
                    noncurrent_version_expiration=aws.s3.BucketLifecycleConfigurationRuleNoncurrentVersionExpirationArgs(
                        noncurrent_days=NONCURRENT_VERSION_DAYS
                    ),
                ),
            ],
            opts=child,
        )
        # Regions launched before August 2022 deliver ALB logs as a regional ELB account; newer
        # regions as the log-delivery service principal. Granting both covers every region.
        elb_account = aws.elb.get_service_account_output(opts=pulumi.InvokeOutputOptions(parent=self))
        policy_document = pulumi.Output.all(bucket.arn, elb_account.arn).apply(
            lambda values: json.dumps(_access_log_policy(bucket_arn=values[0], elb_account_arn=values[1]))
        )
        policy = aws.s3.BucketPolicy(
            f"{name}-access-logs-policy",
            bucket=bucket.id,
            policy=policy_document,
            # S3 rejects concurrent configuration calls on one bucket (OperationAborted); order them.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[public_access]),
        )
        return bucket, policy


def _access_log_policy(*, bucket_arn: str, elb_account_arn: str) -> dict[str, object]:
    log_objects = f"{bucket_arn}/{ACCESS_LOG_PREFIX}/AWSLogs/*"
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "ElbLogDeliveryLegacyRegions",
                "Effect": "Allow",
                "Principal": {"AWS": elb_account_arn},
                "Action": "s3:PutObject",
                "Resource": log_objects,
            },
            {
                "Sid": "ElbLogDeliveryServicePrincipal",
                "Effect": "Allow",
                "Principal": {"Service": "logdelivery.elasticloadbalancing.amazonaws.com"},
                "Action": "s3:PutObject",
                "Resource": log_objects,
            },
            {
                "Sid": "DenyInsecureTransport",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:*",
                "Resource": [bucket_arn, f"{bucket_arn}/*"],
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            },
        ],
    }
