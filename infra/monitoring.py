"""Alarms on the request path (ALB, ECS service, RDS), notifying one KMS-encrypted SNS topic.

Every alarm notifies on ALARM and on OK, so a page is always followed by its all-clear. Missing
data is "not breaching" for traffic-driven metrics (no requests is not an outage) and "breaching"
for the healthy-host count (no data there means no targets reporting at all).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

GIB = 1024**3
PERIOD_SECONDS = 60
RDS_PERIOD_SECONDS = 300


@dataclass(frozen=True)
class AlarmThresholds:
    """Mirrors settings.alarms; plain values so the component does not depend on settings."""

    p95_latency_ms: float = 500
    http_5xx_percent: float = 5
    unhealthy_hosts: int = 1
    rds_cpu_percent: float = 80
    rds_free_storage_percent: float = 10
    rds_connections_percent: float = 80
    ecs_cpu_percent: float = 85
    ecs_memory_percent: float = 85


@dataclass(frozen=True)
class MonitoringArgs:
    account_id: pulumi.Input[str]  # the KMS key policy names the account root
    partition: pulumi.Input[str]  # aws, aws-us-gov, aws-cn: the account root's ARN depends on it
    alb_arn_suffix: pulumi.Input[str]
    target_group_arn_suffix: pulumi.Input[str]
    ecs_cluster_name: pulumi.Input[str]
    ecs_service_name: pulumi.Input[str]
    db_instance_identifier: pulumi.Input[str]
    db_allocated_storage_gb: int
    db_max_connections: int
    thresholds: AlarmThresholds = AlarmThresholds()
    email: str | None = None


def free_storage_threshold_bytes(allocated_storage_gb: int, percent: float) -> float:
    """FreeStorageSpace below which the alarm fires. Based on the initial allocation: after storage
    autoscaling grows the volume the alarm fires at a smaller share, never later than configured."""
    return allocated_storage_gb * GIB * percent / 100


def connections_threshold(max_connections: int, percent: float) -> float:
    return max_connections * percent / 100


def topic_key_policy(account_id: str, partition: str) -> str:
    """CloudWatch publishes to an encrypted topic only if the key lets it (the AWS-managed
    aws/sns key does not), so the topic gets its own key."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "AccountAdministers",
                    "Effect": "Allow",
                    "Principal": {"AWS": f"arn:{partition}:iam::{account_id}:root"},
                    "Action": "kms:*",
                    "Resource": "*",
                },
                {
                    "Sid": "CloudWatchAlarmsPublish",
                    "Effect": "Allow",
                    "Principal": {"Service": "cloudwatch.amazonaws.com"},
                    "Action": ["kms:Decrypt", "kms:GenerateDataKey*"],
                    "Resource": "*",
                    "Condition": {"StringEquals": {"aws:SourceAccount": account_id}},
                },
            ],
        }
    )


class Monitoring(pulumi.ComponentResource):
    """SNS topic (+ optional e-mail) and the request-path alarms."""

    topic: aws.sns.Topic
    alarms: dict[str, aws.cloudwatch.MetricAlarm]

    def __init__(self, name: str, args: MonitoringArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mlflow-stack:monitoring:Monitoring", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        limits = args.thresholds

        key = aws.kms.Key(
            f"{name}-topic-key",
            description="encrypts the MLflow alarm topic",
            enable_key_rotation=True,
            deletion_window_in_days=30,
            policy=pulumi.Output.all(args.account_id, args.partition).apply(lambda a: topic_key_policy(*a)),
            opts=child,
        )
        self.topic = aws.sns.Topic(f"{name}-alarms", kms_master_key_id=key.arn, opts=child)
        if args.email is not None:
            aws.sns.TopicSubscription(
                f"{name}-alarms-email",
                topic=self.topic.arn,
                protocol="email",
                endpoint=args.email,
                opts=child,
            )

        actions = [self.topic.arn]
        alb = {"LoadBalancer": args.alb_arn_suffix}
        target_group = {"LoadBalancer": args.alb_arn_suffix, "TargetGroup": args.target_group_arn_suffix}
        service = {"ClusterName": args.ecs_cluster_name, "ServiceName": args.ecs_service_name}
        database = {"DBInstanceIdentifier": args.db_instance_identifier}

        def alarm(role: str, description: str, **kwargs: object) -> aws.cloudwatch.MetricAlarm:
            return aws.cloudwatch.MetricAlarm(
                f"{name}-{role}",
                alarm_description=description,
                alarm_actions=actions,
                ok_actions=actions,
                opts=child,
                **kwargs,
            )

        self.alarms = {
            "p95-latency": alarm(
                "p95-latency",
                f"MLflow p95 response time above {limits.p95_latency_ms:g} ms",
                namespace="AWS/ApplicationELB",
                metric_name="TargetResponseTime",
                dimensions=target_group,
                extended_statistic="p95",
                period=PERIOD_SECONDS,
                evaluation_periods=5,
                datapoints_to_alarm=3,
                threshold=limits.p95_latency_ms / 1000,  # the metric is in seconds
                comparison_operator="GreaterThanThreshold",
                treat_missing_data="notBreaching",
            ),
            "5xx-rate": alarm(
                "5xx-rate",
                f"more than {limits.http_5xx_percent:g}% of MLflow requests fail with 5xx",
                metric_queries=_error_rate_queries(alb),
                evaluation_periods=5,
                datapoints_to_alarm=3,
                threshold=limits.http_5xx_percent,
                comparison_operator="GreaterThanThreshold",
                treat_missing_data="notBreaching",
            ),
            "unhealthy-hosts": alarm(
                "unhealthy-hosts",
                f"{limits.unhealthy_hosts} or more MLflow tasks fail the /health check",
                namespace="AWS/ApplicationELB",
                metric_name="UnHealthyHostCount",
                dimensions=target_group,
                statistic="Maximum",
                period=PERIOD_SECONDS,
                evaluation_periods=3,
                threshold=limits.unhealthy_hosts,
                comparison_operator="GreaterThanOrEqualToThreshold",
                treat_missing_data="notBreaching",
            ),
            "no-healthy-hosts": alarm(
                "no-healthy-hosts",
                "no MLflow task passes the /health check: the service is down",
                namespace="AWS/ApplicationELB",
                metric_name="HealthyHostCount",
                dimensions=target_group,
                statistic="Minimum",
                period=PERIOD_SECONDS,
                evaluation_periods=2,
                threshold=1,
                comparison_operator="LessThanThreshold",
                treat_missing_data="breaching",
            ),
            "rds-cpu": alarm(
                "rds-cpu",
                f"database CPU above {limits.rds_cpu_percent:g}%",
                namespace="AWS/RDS",
                metric_name="CPUUtilization",
                dimensions=database,
                statistic="Average",
                period=RDS_PERIOD_SECONDS,
                evaluation_periods=3,
                threshold=limits.rds_cpu_percent,
                comparison_operator="GreaterThanThreshold",
                treat_missing_data="missing",
            ),
            "rds-free-storage": alarm(
                "rds-free-storage",
                f"database free storage below {limits.rds_free_storage_percent:g}% of "
                f"{args.db_allocated_storage_gb} GiB",
                namespace="AWS/RDS",
                metric_name="FreeStorageSpace",
                dimensions=database,
                statistic="Minimum",
                period=RDS_PERIOD_SECONDS,
                evaluation_periods=1,
                threshold=free_storage_threshold_bytes(
                    args.db_allocated_storage_gb, limits.rds_free_storage_percent
                ),
                comparison_operator="LessThanThreshold",
                treat_missing_data="missing",
            ),
            "rds-connections": alarm(
                "rds-connections",
                f"database connections above {limits.rds_connections_percent:g}% of max_connections "
                f"({args.db_max_connections})",
                namespace="AWS/RDS",
                metric_name="DatabaseConnections",
                dimensions=database,
                statistic="Maximum",
                period=RDS_PERIOD_SECONDS,
                evaluation_periods=2,
                threshold=connections_threshold(args.db_max_connections, limits.rds_connections_percent),
                comparison_operator="GreaterThanThreshold",
                treat_missing_data="missing",
            ),
            "ecs-cpu": alarm(
                "ecs-cpu",
                f"MLflow service CPU above {limits.ecs_cpu_percent:g}% (autoscaling at its ceiling?)",
                namespace="AWS/ECS",
                metric_name="CPUUtilization",
                dimensions=service,
                statistic="Average",
                period=PERIOD_SECONDS,
                evaluation_periods=5,
                threshold=limits.ecs_cpu_percent,
                comparison_operator="GreaterThanThreshold",
                treat_missing_data="missing",
            ),
            "ecs-memory": alarm(
                "ecs-memory",
                f"MLflow service memory above {limits.ecs_memory_percent:g}%",
                namespace="AWS/ECS",
                metric_name="MemoryUtilization",
                dimensions=service,
                statistic="Average",
                period=PERIOD_SECONDS,
                evaluation_periods=5,
                threshold=limits.ecs_memory_percent,
                comparison_operator="GreaterThanThreshold",
                treat_missing_data="missing",
            ),
        }
        self.topic_arn = self.topic.arn
        self.register_outputs({"topic_arn": self.topic_arn})


def _error_rate_queries(alb: dict[str, pulumi.Input[str]]) -> list[aws.cloudwatch.MetricAlarmMetricQueryArgs]:
    """5xx share of requests: target 5xx plus the ALB's own 5xx (502/503/504 when targets fail)."""

    def count(query_id: str, metric_name: str) -> aws.cloudwatch.MetricAlarmMetricQueryArgs:
        return aws.cloudwatch.MetricAlarmMetricQueryArgs(
            id=query_id,
            return_data=False,
            metric=aws.cloudwatch.MetricAlarmMetricQueryMetricArgs(
                namespace="AWS/ApplicationELB",
                metric_name=metric_name,
                dimensions=alb,
                stat="Sum",
                period=PERIOD_SECONDS,
            ),
        )

    return [
        count("requests", "RequestCount"),
        count("target5xx", "HTTPCode_Target_5XX_Count"),
        count("elb5xx", "HTTPCode_ELB_5XX_Count"),
        aws.cloudwatch.MetricAlarmMetricQueryArgs(
            id="errorrate",
            label="5xx responses (% of requests)",
            # A minute without errors has no 5xx datapoint: FILL turns it into 0. A minute without
            # requests divides by zero, yields no value and counts as missing (not breaching).
            expression="100 * (FILL(target5xx, 0) + FILL(elb5xx, 0)) / requests",
            return_data=True,
        ),
    ]
