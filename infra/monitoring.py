"""Alarms on the request path (ALB, ECS service, RDS) and the artifact store, notifying one
KMS-encrypted SNS topic; one CloudWatch dashboard with the stack's vital signs.

Every alarm notifies on ALARM and on OK, so a page is always followed by its all-clear. Missing
data is "not breaching" for traffic-driven metrics (no requests is not an outage) and "breaching"
for the healthy-host count (no data there means no targets reporting at all). The artifact-store
alarm reads S3's daily storage metrics, which arrive once a day and late, so missing data there is
"not breaching" too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from infra.monitoring_pods import PodMetrics

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
    artifact_store_gb: float = 200


@dataclass(frozen=True)
class MonitoringArgs:
    account_id: pulumi.Input[str]  # the KMS key policy names the account root
    partition: pulumi.Input[str]  # aws, aws-us-gov, aws-cn: the account root's ARN depends on it
    alb_arn_suffix: pulumi.Input[str]
    target_group_arn_suffix: pulumi.Input[str]
    ecs_cluster_name: pulumi.Input[str]
    ecs_service_name: pulumi.Input[str]
    db_instance_identifier: pulumi.Input[str]
    # A team on a shared instance knows these from the platform's outputs only.
    db_allocated_storage_gb: pulumi.Input[int]
    db_max_connections: pulumi.Input[int]
    region: str = "us-east-1"  # every dashboard widget names its region
    bucket_name: pulumi.Input[str] | None = None  # artifact bucket: capacity alarm and dashboard
    archive_storage_class: str = "GLACIER_IR"  # where old artifacts move (settings.artifacts)
    dashboard_name: str | None = None  # one dashboard per stack, e.g. "mlflow-dev"
    # The log group the maintenance task writes its JSON report to; None: no maintenance widgets.
    maintenance_log_group_name: str | None = None
    maintenance_log_group: pulumi.Resource | None = None  # wait for it: a metric filter needs the group
    thresholds: AlarmThresholds = AlarmThresholds()
    email: str | None = None
    # The Kubernetes backend: its pods' Container Insights metrics replace the ECS service's.
    pod_metrics: PodMetrics | None = None


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
        storage_gb = pulumi.Output.from_input(args.db_allocated_storage_gb)
        max_connections = pulumi.Output.from_input(args.db_max_connections)

        def alarm(role: str, description: pulumi.Input[str], **kwargs: object) -> aws.cloudwatch.MetricAlarm:
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
                storage_gb.apply(
                    lambda gb: f"database free storage below {limits.rds_free_storage_percent:g}% of {gb} GiB"
                ),
                namespace="AWS/RDS",
                metric_name="FreeStorageSpace",
                dimensions=database,
                statistic="Minimum",
                period=RDS_PERIOD_SECONDS,
                evaluation_periods=1,
                threshold=storage_gb.apply(
                    lambda gb: free_storage_threshold_bytes(gb, limits.rds_free_storage_percent)
                ),
                comparison_operator="LessThanThreshold",
                treat_missing_data="missing",
            ),
            "rds-connections": alarm(
                "rds-connections",
                max_connections.apply(
                    lambda most: (
                        f"database connections above {limits.rds_connections_percent:g}% of "
                        f"max_connections ({most})"
                    )
                ),
                namespace="AWS/RDS",
                metric_name="DatabaseConnections",
                dimensions=database,
                statistic="Maximum",
                period=RDS_PERIOD_SECONDS,
                evaluation_periods=2,
                threshold=max_connections.apply(
                    lambda most: connections_threshold(most, limits.rds_connections_percent)
                ),
                comparison_operator="GreaterThanThreshold",
                treat_missing_data="missing",
            ),
        }
        if args.pod_metrics is None:
            self.alarms.update(
                {
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
            )
        else:
            for role, spec in args.pod_metrics.alarm_specs(
                limits.ecs_cpu_percent, limits.ecs_memory_percent
            ).items():
                description = spec.pop("description")
                self.alarms[role] = alarm(role, description, **spec)
        if args.bucket_name is not None:
            self.alarms["artifact-store-size"] = alarm(
                "artifact-store-size",
                f"artifact bucket above {limits.artifact_store_gb:g} GiB (all storage classes)",
                metric_queries=_bucket_size_queries(args.bucket_name, args.archive_storage_class),
                # S3 publishes storage metrics once a day, a day or more late: two daily periods,
                # one of them over the line, so the newest datapoint is always in the window.
                evaluation_periods=2,
                datapoints_to_alarm=1,
                threshold=limits.artifact_store_gb * GIB,
                comparison_operator="GreaterThanThreshold",
                treat_missing_data="notBreaching",
            )

        maintenance_namespace = None
        if args.maintenance_log_group_name is not None and args.dashboard_name is not None:
            maintenance_namespace = f"{METRIC_NAMESPACE_PREFIX}/{args.dashboard_name}"
            for metric_name, outcome in MAINTENANCE_OUTCOMES.items():
                aws.cloudwatch.LogMetricFilter(
                    f"{name}-{metric_name.lower()}",
                    log_group_name=args.maintenance_log_group_name,
                    pattern=maintenance_report_pattern(outcome),
                    metric_transformation=aws.cloudwatch.LogMetricFilterMetricTransformationArgs(
                        name=metric_name, namespace=maintenance_namespace, value="1", unit="Count"
                    ),
                    opts=pulumi.ResourceOptions(
                        parent=self,
                        depends_on=[args.maintenance_log_group] if args.maintenance_log_group else [],
                    ),
                )

        self.dashboard_name: pulumi.Output[str] | None = None
        self.dashboard_url: pulumi.Output[str] | None = None
        if args.dashboard_name is not None:
            dimensions = pulumi.Output.all(
                alb=args.alb_arn_suffix,
                target_group=args.target_group_arn_suffix,
                cluster=args.ecs_cluster_name,
                service=args.ecs_service_name,
                database=args.db_instance_identifier,
                bucket=args.bucket_name,
            )
            region = args.region
            archive_class = args.archive_storage_class
            pod_metrics = args.pod_metrics
            dashboard = aws.cloudwatch.Dashboard(
                f"{name}-dashboard",
                dashboard_name=args.dashboard_name,
                dashboard_body=dimensions.apply(
                    lambda d: json.dumps(
                        dashboard_body(
                            DashboardDimensions(**d),
                            region=region,
                            archive_storage_class=archive_class,
                            maintenance_namespace=maintenance_namespace,
                            pod_metrics=pod_metrics,
                        )
                    )
                ),
                opts=child,
            )
            self.dashboard_name = dashboard.dashboard_name
            self.dashboard_url = pulumi.Output.all(args.partition, dashboard.dashboard_name).apply(
                lambda values: dashboard_url(values[0], region, values[1])
            )
        self.topic_arn = self.topic.arn
        self.register_outputs({"topic_arn": self.topic_arn, "dashboard_url": self.dashboard_url})


# S3 daily storage metrics: the StorageType of each class artifacts can be in. Artifacts start in
# STANDARD, move to STANDARD_IA, then to the archive class ("Metrics and dimensions", S3 User Guide).
BASE_STORAGE_TYPES = ("StandardStorage", "StandardIAStorage")
ARCHIVE_STORAGE_TYPES: dict[str, tuple[str, ...]] = {
    "GLACIER_IR": ("GlacierInstantRetrievalStorage",),
    "INTELLIGENT_TIERING": (
        "IntelligentTieringFAStorage",
        "IntelligentTieringIAStorage",
        "IntelligentTieringAIAStorage",
    ),
}
DAY_SECONDS = 86400
# Custom metrics from the maintenance task's JSON report: mlflow-stack/<dashboard name>.
METRIC_NAMESPACE_PREFIX = "mlflow-stack"
# metric name -> the report's "ok" value it counts
MAINTENANCE_OUTCOMES = {"MaintenanceSucceeded": True, "MaintenanceFailed": False}
MAINTENANCE_COMMAND = "runs maintenance"
# Console host per partition: the dashboard URL must open in the stack's own partition.
CONSOLE_DOMAINS = {
    "aws": "console.aws.amazon.com",
    "aws-us-gov": "console.amazonaws-us-gov.com",
    "aws-cn": "console.amazonaws.cn",
}


def artifact_storage_types(archive_storage_class: str) -> tuple[str, ...]:
    return BASE_STORAGE_TYPES + ARCHIVE_STORAGE_TYPES[archive_storage_class]


def maintenance_report_pattern(ok: bool) -> str:
    """The maintenance task prints one JSON line, `{"ok": ..., "command": "runs maintenance", ...}`
    (cli/common.py run_command with --json), also when it fails early; the server's log lines in
    the same group never carry that command."""
    return f'{{ $.command = "{MAINTENANCE_COMMAND}" && $.ok IS {"TRUE" if ok else "FALSE"} }}'


def dashboard_url(partition: str, region: str, dashboard_name: str) -> str:
    domain = CONSOLE_DOMAINS.get(partition, CONSOLE_DOMAINS["aws"])
    return f"https://{domain}/cloudwatch/home?region={region}#dashboards/dashboard/{dashboard_name}"


@dataclass(frozen=True)
class DashboardDimensions:
    alb: str
    target_group: str
    cluster: str
    service: str
    database: str
    bucket: str | None


def dashboard_body(
    dims: DashboardDimensions,
    *,
    region: str,
    archive_storage_class: str,
    maintenance_namespace: str | None,
    pod_metrics: PodMetrics | None = None,
) -> dict[str, Any]:
    """The dashboard's JSON ("Dashboard Body Structure and Syntax", CloudWatch API Reference)."""
    elb = "AWS/ApplicationELB"
    lb = ["LoadBalancer", dims.alb]
    tg = [*lb, "TargetGroup", dims.target_group]
    service = ["ClusterName", dims.cluster, "ServiceName", dims.service]
    db = ["DBInstanceIdentifier", dims.database]
    replica_rows = (
        pod_metrics.dashboard_rows()
        if pod_metrics is not None
        else [
            (
                "Running replicas",
                # Container Insights (on for the cluster) publishes the task count per service.
                [["ECS/ContainerInsights", "RunningTaskCount", *service, {"stat": "Average"}]],
                {"period": 60},
            ),
            (
                "Replica CPU / memory (%)",
                [
                    ["AWS/ECS", "CPUUtilization", *service, {"stat": "Average"}],
                    ["AWS/ECS", "MemoryUtilization", *service, {"stat": "Average"}],
                ],
                {"period": 60},
            ),
        ]
    )
    widgets: list[tuple[str, list[list[Any]], dict[str, Any]]] = [
        ("Requests per minute", [[elb, "RequestCount", *lb, {"stat": "Sum"}]], {"period": 60}),
        (
            "Target response time (seconds)",
            [
                [elb, "TargetResponseTime", *tg, {"stat": "p50", "label": "p50"}],
                [elb, "TargetResponseTime", *tg, {"stat": "p95", "label": "p95"}],
            ],
            {"period": 60},
        ),
        (
            "5xx responses per minute",
            [
                [elb, "HTTPCode_Target_5XX_Count", *lb, {"stat": "Sum", "label": "from MLflow"}],
                [elb, "HTTPCode_ELB_5XX_Count", *lb, {"stat": "Sum", "label": "from the load balancer"}],
            ],
            {"period": 60},
        ),
        (
            "Healthy / unhealthy targets",
            [
                [elb, "HealthyHostCount", *tg, {"stat": "Minimum"}],
                [elb, "UnHealthyHostCount", *tg, {"stat": "Maximum"}],
            ],
            {"period": 60},
        ),
        *replica_rows,
        (
            "Database connections",
            [["AWS/RDS", "DatabaseConnections", *db, {"stat": "Maximum"}]],
            {"period": 300},
        ),
        (
            "Database CPU (%) / free storage (bytes)",
            [
                ["AWS/RDS", "CPUUtilization", *db, {"stat": "Average"}],
                ["AWS/RDS", "FreeStorageSpace", *db, {"stat": "Minimum", "yAxis": "right"}],
            ],
            {"period": 300},
        ),
    ]
    if dims.bucket is not None:
        bucket = ["BucketName", dims.bucket]
        widgets += [
            (
                "Artifact store size (bytes) by storage class",
                [
                    ["AWS/S3", "BucketSizeBytes", *bucket, "StorageType", storage_type, {"stat": "Average"}]
                    for storage_type in artifact_storage_types(archive_storage_class)
                ],
                {"period": DAY_SECONDS, "stacked": True},
            ),
            (
                "Artifact objects",
                [
                    [
                        "AWS/S3",
                        "NumberOfObjects",
                        *bucket,
                        "StorageType",
                        "AllStorageTypes",
                        {"stat": "Average"},
                    ]
                ],
                {"period": DAY_SECONDS},
            ),
        ]
    if maintenance_namespace is not None:
        widgets.append(
            (
                "Scheduled maintenance runs",
                [
                    [maintenance_namespace, metric, {"stat": "Sum", "label": metric}]
                    for metric in MAINTENANCE_OUTCOMES
                ],
                {"period": DAY_SECONDS, "view": "bar"},
            )
        )
    body = []
    for index, (title, metrics, extra) in enumerate(widgets):
        properties = {"title": title, "region": region, "view": "timeSeries", "metrics": metrics, **extra}
        body.append(
            {
                "type": "metric",
                "x": (index % 2) * 12,
                "y": (index // 2) * 6,
                "width": 12,
                "height": 6,
                "properties": properties,
            }
        )
    return {"widgets": body}


def _bucket_size_queries(
    bucket_name: pulumi.Input[str], archive_storage_class: str
) -> list[aws.cloudwatch.MetricAlarmMetricQueryArgs]:
    """The bucket's size over every storage class its artifacts can be in, in bytes."""
    storage_types = artifact_storage_types(archive_storage_class)
    queries = [
        aws.cloudwatch.MetricAlarmMetricQueryArgs(
            id=f"size{index}",
            return_data=False,
            metric=aws.cloudwatch.MetricAlarmMetricQueryMetricArgs(
                namespace="AWS/S3",
                metric_name="BucketSizeBytes",
                dimensions={"BucketName": bucket_name, "StorageType": storage_type},
                stat="Average",
                period=DAY_SECONDS,
            ),
        )
        for index, storage_type in enumerate(storage_types)
    ]
    # A class without objects has no datapoint; FILL makes it 0 where another class has one.
    total = " + ".join(f"FILL(size{index}, 0)" for index in range(len(storage_types)))
    queries.append(
        aws.cloudwatch.MetricAlarmMetricQueryArgs(
            id="total", label="artifact bucket size (bytes)", expression=total, return_data=True
        )
    )
    return queries


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
