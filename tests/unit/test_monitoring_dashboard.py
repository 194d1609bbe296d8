"""The per-stack dashboard, its URL output and the artifact-store capacity alarm, on every shipped
stack file (the whole program under mocks)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pytest
from edge_harness import ECS_STACKS, STACKS
from test_edge_stacks import _settings

from infra.monitoring import dashboard_url, maintenance_report_pattern
from preview.mocks import MOCK_ACCOUNT_ID
from preview.offline import ResourceGraph, run_program

DASHBOARD = "aws:cloudwatch/dashboard:Dashboard"
ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"
FILTER = "aws:cloudwatch/logMetricFilter:LogMetricFilter"
GraphFor = Callable[[str], ResourceGraph]
GIB = 1024**3


def _body(graph: ResourceGraph) -> dict[str, Any]:
    return json.loads(graph.one(DASHBOARD).get("dashboardBody"))


def _metrics(body: dict[str, Any]) -> list[list[Any]]:
    return [metric for widget in body["widgets"] for metric in widget["properties"]["metrics"]]


def _dimensions(metric: list[Any]) -> dict[str, str]:
    plain = [part for part in metric[2:] if not isinstance(part, dict)]
    return dict(zip(plain[::2], plain[1::2], strict=True))


@pytest.mark.parametrize("stack", ECS_STACKS)
def test_dashboard_widgets_name_this_stacks_resources(stack_graph: GraphFor, stack: str) -> None:
    graph = stack_graph(stack)
    body = _body(graph)
    # ELB's arn suffix is the ARN after its resource-type prefix ("loadbalancer/", "targetgroup" kept).
    alb = graph.one("aws:lb/loadBalancer:LoadBalancer").arn.split(":loadbalancer/", 1)[1]
    target_group = (
        "targetgroup/" + graph.one("aws:lb/targetGroup:TargetGroup").arn.split(":targetgroup/", 1)[1]
    )
    database = graph.one("aws:rds/instance:Instance").get("identifier")
    bucket = graph.outputs["bucket_name"]
    cluster, service = graph.outputs["ecs_cluster_name"], graph.outputs["ecs_service_name"]
    seen: dict[str, set[str]] = {}
    for metric in _metrics(body):
        for key, value in _dimensions(metric).items():
            seen.setdefault(key, set()).add(value)
    assert seen["LoadBalancer"] == {alb}
    assert seen["TargetGroup"] == {target_group}
    assert seen["ClusterName"] == {cluster} and seen["ServiceName"] == {service}
    assert seen["DBInstanceIdentifier"] == {database}
    assert seen["BucketName"] == {bucket}
    names = {(m[0], m[1]) for m in _metrics(body)}
    assert {
        ("AWS/ApplicationELB", "RequestCount"),
        ("AWS/ApplicationELB", "TargetResponseTime"),
        ("AWS/ApplicationELB", "HTTPCode_Target_5XX_Count"),
        ("AWS/ApplicationELB", "HealthyHostCount"),
        ("ECS/ContainerInsights", "RunningTaskCount"),
        ("AWS/ECS", "CPUUtilization"),
        ("AWS/ECS", "MemoryUtilization"),
        ("AWS/RDS", "DatabaseConnections"),
        ("AWS/RDS", "CPUUtilization"),
        ("AWS/RDS", "FreeStorageSpace"),
        ("AWS/S3", "BucketSizeBytes"),
        ("AWS/S3", "NumberOfObjects"),
    } <= names
    stats = {m[-1].get("stat") for m in _metrics(body) if m[1] == "TargetResponseTime"}
    assert stats == {"p50", "p95"}
    settings = _settings(graph)
    assert {w["properties"]["region"] for w in body["widgets"]} == {settings.region}
    # No account id or partition written into the body: the only account id is inside the bucket's
    # own name (which the stack derives from the caller identity), and no ARN appears at all.
    text = json.dumps(body).replace(bucket, "<bucket>")
    assert MOCK_ACCOUNT_ID not in text and "arn:" not in text


@pytest.mark.parametrize("stack", ECS_STACKS)
def test_maintenance_outcomes_are_counted_from_the_tasks_json_report(
    stack_graph: GraphFor, stack: str
) -> None:
    graph = stack_graph(stack)
    settings = _settings(graph)
    filters = graph.of_type(FILTER)
    assert bool(filters) == settings.maintenance.enabled
    namespaces = {f.get("metricTransformation")["namespace"] for f in filters}
    assert namespaces == {f"mlflow-stack/{settings.name_prefix}"}
    assert {f.get("logGroupName") for f in filters} == {settings.log_group_name}
    log_group = next(
        g
        for g in graph.of_type("aws:cloudwatch/logGroup:LogGroup")
        if g.get("name") == settings.log_group_name
    )
    assert all(graph.depends_on(f, log_group) for f in filters)
    widget_metrics = {(m[0], m[1]) for m in _metrics(_body(graph))}
    assert {
        (f"mlflow-stack/{settings.name_prefix}", f.get("metricTransformation")["name"]) for f in filters
    } <= widget_metrics


def test_the_report_pattern_matches_the_line_the_task_prints() -> None:
    """The task's --json line (cli/common.py) selects exactly one of the two filters."""
    line = {"ok": False, "command": "runs maintenance", "exit_code": 1, "error": "api"}

    def matches(pattern: str, event: dict[str, Any]) -> bool:  # the two clauses the patterns use
        command, ok = re.findall(r'\$\.command = "([^"]+)" && \$\.ok IS (TRUE|FALSE)', pattern)[0]
        return event.get("command") == command and event.get("ok") is (ok == "TRUE")

    assert matches(maintenance_report_pattern(False), line)
    assert not matches(maintenance_report_pattern(True), line)
    assert not matches(maintenance_report_pattern(True), {"message": "GET /health 200"})


@pytest.mark.parametrize("stack", STACKS)
def test_dashboard_url_output_opens_the_stacks_partition_console(stack_graph: GraphFor, stack: str) -> None:
    graph = stack_graph(stack)
    settings = _settings(graph)
    name = graph.one(DASHBOARD).get("dashboardName")
    assert name == settings.name_prefix
    assert graph.outputs["dashboard_url"] == (
        f"https://console.aws.amazon.com/cloudwatch/home?region={settings.region}#dashboards/dashboard/{name}"
    )


def test_dashboard_url_in_govcloud_and_china() -> None:
    assert dashboard_url("aws-us-gov", "us-gov-west-1", "d").startswith(
        "https://console.amazonaws-us-gov.com/"
    )
    assert dashboard_url("aws-cn", "cn-north-1", "d").startswith("https://console.amazonaws.cn/")
    graph = run_program("dev", config_overrides={"aws:region": "us-gov-west-1"})
    assert graph.error is None, graph.error
    assert graph.outputs["dashboard_url"].startswith("https://console.amazonaws-us-gov.com/cloudwatch/")


@pytest.mark.parametrize("stack", STACKS)
def test_artifact_store_alarm_sums_every_storage_class_of_this_bucket(
    stack_graph: GraphFor, stack: str
) -> None:
    graph = stack_graph(stack)
    settings = _settings(graph)
    [alarm] = [a for a in graph.of_type(ALARM) if a.name.endswith("-artifact-store-size")]
    assert alarm.get("threshold") == settings.alarms.artifact_store_gb * GIB
    assert alarm.get("treatMissingData") == "notBreaching"
    queries = alarm.get("metricQueries")
    metrics = [q["metric"] for q in queries if "metric" in q]
    assert {m["period"] for m in metrics} == {86400}
    assert {m["dimensions"]["BucketName"] for m in metrics} == {graph.outputs["bucket_name"]}
    classes = {m["dimensions"]["StorageType"] for m in metrics}
    assert {"StandardStorage", "StandardIAStorage"} <= classes
    archive = {
        "GLACIER_IR": "GlacierInstantRetrievalStorage",
        "INTELLIGENT_TIERING": "IntelligentTieringFAStorage",
    }
    assert archive[settings.artifacts.archive_storage_class] in classes
    [total] = [q for q in queries if q.get("returnData")]
    assert all(f"FILL({q['id']}, 0)" in total["expression"] for q in queries if "metric" in q)
    # Daily metric: 2 x 1 day stays within CloudWatch's 7-day evaluation range for periods >= 1 hour.
    assert alarm.get("evaluationPeriods") * 86400 <= 7 * 86400
    assert alarm.get("alarmActions") == [graph.outputs["alarm_topic_arn"]]


def test_artifact_store_threshold_is_sized_per_preset() -> None:
    from infra.settings import build_settings

    base = {
        "owner": "o@example.com",
        "costCenter": "c",
        "domain": {"name": "m.example.com", "hostedZoneId": "Z0123456"},
    }
    sizes = {
        env: build_settings(env, "us-east-1", base).alarms.artifact_store_gb
        for env in ("dev", "staging", "prod")
    }
    assert sizes == {"dev": 50, "staging": 200, "prod": 1000}
