"""Alarms on the request path: thresholds from settings, notifications to an encrypted topic."""

from __future__ import annotations

import json

import pytest
from edge_harness import ACCOUNT_ID, Run, build_edge, run_components

from infra.monitoring import AlarmThresholds, connections_threshold, free_storage_threshold_bytes

ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"
GIB = 1024**3


def _alarms(run: Run) -> dict[str, dict]:
    return {r.name.removeprefix("monitoring-"): r.inputs for r in run.of_type(ALARM)}


@pytest.fixture(scope="module")
def default_run() -> Run:
    return run_components(build_edge)


def test_every_alarm_and_its_default_threshold(default_run: Run) -> None:
    alarms = _alarms(default_run)
    assert {name: alarm["threshold"] for name, alarm in alarms.items()} == {
        "p95-latency": 0.5,  # seconds: 500 ms
        "5xx-rate": 5,
        "unhealthy-hosts": 1,
        "no-healthy-hosts": 1,
        "rds-cpu": 80,
        "rds-free-storage": 20 * GIB * 0.10,
        "rds-connections": 89.6,  # 80% of 112
        "ecs-cpu": 85,
        "ecs-memory": 85,
    }


def test_latency_alarm_uses_the_p95_of_target_response_time(default_run: Run) -> None:
    alarm = _alarms(default_run)["p95-latency"]
    assert alarm["metricName"] == "TargetResponseTime"
    assert alarm["extendedStatistic"] == "p95"
    assert "statistic" not in alarm
    assert alarm["dimensions"] == {
        "LoadBalancer": "app/mlflow-dev-alb/50dc6c495c0c9188",
        "TargetGroup": "targetgroup/mlflow-dev-tg/73e2d6bc24d8a067",
    }


def test_5xx_rate_is_metric_math_over_request_count(default_run: Run) -> None:
    queries = {q["id"]: q for q in _alarms(default_run)["5xx-rate"]["metricQueries"]}
    assert {q["metric"]["metricName"] for q in queries.values() if "metric" in q} == {
        "RequestCount",
        "HTTPCode_Target_5XX_Count",
        "HTTPCode_ELB_5XX_Count",
    }
    [result] = [q for q in queries.values() if q.get("returnData")]
    assert result["expression"] == "100 * (FILL(target5xx, 0) + FILL(elb5xx, 0)) / requests"
    # every id the expression names is a query of this alarm
    for name in ("target5xx", "elb5xx", "requests"):
        assert queries[name]["metric"]["stat"] == "Sum"


def test_alarms_notify_the_topic_on_alarm_and_recovery(default_run: Run) -> None:
    topic_arn = default_run.outputs["topic_arn"]
    for name, alarm in _alarms(default_run).items():
        assert alarm["alarmActions"] == [topic_arn], name
        assert alarm["okActions"] == [topic_arn], name
        assert alarm["treatMissingData"] in {"missing", "notBreaching", "breaching", "ignore"}, name
    # Traffic alarms stay quiet without traffic; "no healthy hosts" treats silence as an outage.
    alarms = _alarms(default_run)
    assert alarms["5xx-rate"]["treatMissingData"] == "notBreaching"
    assert alarms["no-healthy-hosts"]["treatMissingData"] == "breaching"


def test_topic_is_encrypted_with_a_key_cloudwatch_may_use(default_run: Run) -> None:
    topic = default_run.one("aws:sns/topic:Topic").inputs
    key = default_run.one("aws:kms/key:Key")
    assert topic["kmsMasterKeyId"].endswith(f"key/{key.name}-1234567")
    assert key.inputs["enableKeyRotation"] is True
    statements = json.loads(key.inputs["policy"])["Statement"]
    [cloudwatch] = [s for s in statements if s["Principal"] == {"Service": "cloudwatch.amazonaws.com"}]
    assert set(cloudwatch["Action"]) == {"kms:Decrypt", "kms:GenerateDataKey*"}
    assert cloudwatch["Condition"] == {"StringEquals": {"aws:SourceAccount": ACCOUNT_ID}}
    assert not default_run.of_type("aws:sns/topicSubscription:TopicSubscription")


def test_configured_thresholds_and_email_are_used() -> None:
    thresholds = AlarmThresholds(
        p95_latency_ms=750,
        http_5xx_percent=2,
        unhealthy_hosts=2,
        rds_cpu_percent=70,
        rds_free_storage_percent=20,
        rds_connections_percent=90,
        ecs_cpu_percent=75,
        ecs_memory_percent=80,
    )
    run = run_components(
        lambda: build_edge(
            monitoring={
                "thresholds": thresholds,
                "email": "oncall@example.com",
                "db_allocated_storage_gb": 100,
                "db_max_connections": 858,
            }
        )
    )
    alarms = _alarms(run)
    assert alarms["p95-latency"]["threshold"] == 0.75
    assert alarms["5xx-rate"]["threshold"] == 2
    assert alarms["unhealthy-hosts"]["threshold"] == 2
    assert alarms["rds-cpu"]["threshold"] == 70
    assert alarms["rds-free-storage"]["threshold"] == 100 * GIB * 0.2
    assert alarms["rds-connections"]["threshold"] == pytest.approx(858 * 0.9)
    assert alarms["ecs-cpu"]["threshold"] == 75
    assert alarms["ecs-memory"]["threshold"] == 80
    subscription = run.one("aws:sns/topicSubscription:TopicSubscription").inputs
    assert (subscription["protocol"], subscription["endpoint"]) == ("email", "oncall@example.com")


def test_threshold_arithmetic() -> None:
    assert free_storage_threshold_bytes(20, 10) == 2 * GIB
    assert connections_threshold(858, 80) == pytest.approx(686.4)
