"""What the program sends to AWS, checked against botocore's own service models.

The Pulumi provider turns each resource's inputs into API calls; here the same inputs are mapped to
those calls' parameters (RegisterTaskDefinition, CreateService, CreateListener, PutMetricAlarm, ...)
and checked with botocore's ParamValidator (types, required members, ranges) and against every enum
the model declares for a member, loaded from the model — no hand-written list of allowed values.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from functools import cache
from typing import Any

import botocore.session
import pytest
from botocore.model import ListShape, MapShape, Shape, StructureShape
from botocore.validate import ParamValidator
from edge_harness import ECS_STACKS, STACKS

from preview.offline import RegisteredResource, ResourceGraph, stack_backend, unwrap

GraphFor = Callable[[str], ResourceGraph]


@cache
def _model(service: str) -> Any:
    return botocore.session.get_session().get_service_model(service)


def _input_shape(service: str, operation: str) -> StructureShape:
    return _model(service).operation_model(operation).input_shape


def _plain(value: Any) -> Any:
    value = unwrap(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def enum_checks(shape: Shape, value: Any, path: str = "") -> Iterator[tuple[str, Any, list[str]]]:
    """(path, value, allowed) for every value in `value` whose shape declares an enum."""
    if isinstance(shape, StructureShape) and isinstance(value, dict):
        for key, item in value.items():
            if key in shape.members:
                yield from enum_checks(shape.members[key], item, f"{path}.{key}")
    elif isinstance(shape, ListShape) and isinstance(value, list):
        for index, item in enumerate(value):
            yield from enum_checks(shape.member, item, f"{path}[{index}]")
    elif isinstance(shape, MapShape) and isinstance(value, dict):
        for key, item in value.items():
            yield from enum_checks(shape.value, item, f"{path}[{key}]")
    elif getattr(shape, "enum", None):
        yield path, value, list(shape.enum)


def assert_valid(service: str, operation: str, params: dict[str, Any]) -> int:
    """Validate params for an operation; return how many enum-typed values were checked."""
    shape = _input_shape(service, operation)
    report = ParamValidator().validate(params, shape)
    assert not report.has_errors(), f"{service}.{operation}: {report.generate_report()}"
    checked = 0
    for path, value, allowed in enum_checks(shape, params):
        assert value in allowed, f"{service}.{operation}{path} = {value!r}, not one of {allowed}"
        checked += 1
    return checked


def documented_values(service: str, operation: str, member: str) -> list[str]:
    """Some members are plain strings in the model whose allowed values only its documentation
    lists ("Valid Values: <code>a | b</code>"), e.g. CloudWatch's TreatMissingData."""
    documentation = _input_shape(service, operation).members[member].documentation
    match = re.search(r"Valid Values:\s*<code>([^<]+)</code>", documentation)
    assert match, f"{service}.{operation}.{member} documents no valid values"
    return [value.strip() for value in match.group(1).split("|")]


# -- Pulumi inputs -> API parameters ------------------------------------------------------------


def task_definition_params(resource: RegisteredResource) -> dict[str, Any]:
    inputs = _plain(resource.inputs)
    params = {
        "family": inputs["family"],
        "containerDefinitions": json.loads(inputs["containerDefinitions"]),
        "taskRoleArn": inputs["taskRoleArn"],
        "executionRoleArn": inputs["executionRoleArn"],
        "networkMode": inputs["networkMode"],
        "requiresCompatibilities": inputs["requiresCompatibilities"],
        "cpu": inputs["cpu"],
        "memory": inputs["memory"],
        "runtimePlatform": inputs["runtimePlatform"],
    }
    if inputs.get("volumes"):
        params["volumes"] = inputs["volumes"]
    return params


def service_params(resource: RegisteredResource) -> dict[str, Any]:
    inputs = _plain(resource.inputs)
    network = inputs["networkConfiguration"]
    return {
        "cluster": inputs["cluster"],
        "serviceName": inputs["name"],
        "taskDefinition": inputs["taskDefinition"],
        "availabilityZoneRebalancing": inputs["availabilityZoneRebalancing"],
        "loadBalancers": inputs["loadBalancers"],
        "desiredCount": inputs["desiredCount"],
        "launchType": inputs["launchType"],
        "platformVersion": inputs["platformVersion"],
        "deploymentConfiguration": {
            "deploymentCircuitBreaker": inputs["deploymentCircuitBreaker"],
            "maximumPercent": inputs["deploymentMaximumPercent"],
            "minimumHealthyPercent": inputs["deploymentMinimumHealthyPercent"],
        },
        "networkConfiguration": {
            "awsvpcConfiguration": {
                "subnets": network["subnets"],
                "securityGroups": network["securityGroups"],
                "assignPublicIp": "ENABLED" if network["assignPublicIp"] else "DISABLED",
            }
        },
        "healthCheckGracePeriodSeconds": inputs["healthCheckGracePeriodSeconds"],
        "enableECSManagedTags": inputs["enableEcsManagedTags"],
        "propagateTags": inputs["propagateTags"],
        "enableExecuteCommand": inputs["enableExecuteCommand"],
    }


def cluster_params(resource: RegisteredResource) -> dict[str, Any]:
    inputs = _plain(resource.inputs)
    return {"clusterName": inputs["name"], "settings": inputs["settings"]}


def load_balancer_params(resource: RegisteredResource) -> dict[str, Any]:
    inputs = _plain(resource.inputs)
    return {
        "Name": inputs["name"],
        "Subnets": inputs["subnets"],
        "SecurityGroups": inputs["securityGroups"],
        "Scheme": "internal" if inputs["internal"] else "internet-facing",
        "Type": inputs["loadBalancerType"],
    }


def target_group_params(resource: RegisteredResource) -> dict[str, Any]:
    inputs = _plain(resource.inputs)
    check = inputs["healthCheck"]
    return {
        "Name": inputs["name"],
        "Protocol": inputs["protocol"],
        "ProtocolVersion": inputs["protocolVersion"],
        "Port": inputs["port"],
        "VpcId": inputs["vpcId"],
        "HealthCheckProtocol": check["protocol"],
        "HealthCheckPort": check["port"],
        "HealthCheckEnabled": check["enabled"],
        "HealthCheckPath": check["path"],
        "HealthCheckIntervalSeconds": check["interval"],
        "HealthCheckTimeoutSeconds": check["timeout"],
        "HealthyThresholdCount": check["healthyThreshold"],
        "UnhealthyThresholdCount": check["unhealthyThreshold"],
        "Matcher": {"HttpCode": check["matcher"]},
        "TargetType": inputs["targetType"],
    }


def listener_params(resource: RegisteredResource) -> dict[str, Any]:
    inputs = _plain(resource.inputs)
    actions = []
    for action in inputs["defaultActions"]:
        converted: dict[str, Any] = {"Type": action["type"]}
        if "targetGroupArn" in action:
            converted["TargetGroupArn"] = action["targetGroupArn"]
        if "redirect" in action:
            redirect = action["redirect"]
            converted["RedirectConfig"] = {
                "Protocol": redirect["protocol"],
                "Port": redirect["port"],
                "StatusCode": redirect["statusCode"],
            }
        actions.append(converted)
    params: dict[str, Any] = {
        "LoadBalancerArn": inputs["loadBalancerArn"],
        "Protocol": inputs["protocol"],
        "Port": inputs["port"],
        "DefaultActions": actions,
    }
    if "sslPolicy" in inputs:
        params["SslPolicy"] = inputs["sslPolicy"]
        params["Certificates"] = [{"CertificateArn": inputs["certificateArn"]}]
    return params


def certificate_params(resource: RegisteredResource) -> dict[str, Any]:
    inputs = _plain(resource.inputs)
    return {
        "DomainName": inputs["domainName"],
        "ValidationMethod": inputs["validationMethod"],
        "KeyAlgorithm": inputs["keyAlgorithm"],
    }


def scalable_target_params(resource: RegisteredResource) -> dict[str, Any]:
    inputs = _plain(resource.inputs)
    return {
        "ServiceNamespace": inputs["serviceNamespace"],
        "ResourceId": inputs["resourceId"],
        "ScalableDimension": inputs["scalableDimension"],
        "MinCapacity": inputs["minCapacity"],
        "MaxCapacity": inputs["maxCapacity"],
    }


def scaling_policy_params(resource: RegisteredResource) -> dict[str, Any]:
    inputs = _plain(resource.inputs)
    tracking = inputs["targetTrackingScalingPolicyConfiguration"]
    metric = tracking["predefinedMetricSpecification"]
    predefined = {"PredefinedMetricType": metric["predefinedMetricType"]}
    if "resourceLabel" in metric:
        predefined["ResourceLabel"] = metric["resourceLabel"]
    return {
        # The provider names the policy after the resource when `name` is not set.
        "PolicyName": inputs.get("name", resource.name),
        "ServiceNamespace": inputs["serviceNamespace"],
        "ResourceId": inputs["resourceId"],
        "ScalableDimension": inputs["scalableDimension"],
        "PolicyType": inputs["policyType"],
        "TargetTrackingScalingPolicyConfiguration": {
            "TargetValue": float(tracking["targetValue"]),
            "PredefinedMetricSpecification": predefined,
            "ScaleInCooldown": tracking["scaleInCooldown"],
            "ScaleOutCooldown": tracking["scaleOutCooldown"],
        },
    }


def metric_alarm_params(resource: RegisteredResource) -> dict[str, Any]:
    inputs = _plain(resource.inputs)

    def dimensions(mapping: dict[str, str]) -> list[dict[str, str]]:
        return [{"Name": name, "Value": value} for name, value in mapping.items()]

    params: dict[str, Any] = {
        "AlarmName": inputs.get("name", resource.name),
        "AlarmDescription": inputs["alarmDescription"],
        "AlarmActions": inputs["alarmActions"],
        "OKActions": inputs["okActions"],
        "EvaluationPeriods": inputs["evaluationPeriods"],
        "Threshold": float(inputs["threshold"]),
        "ComparisonOperator": inputs["comparisonOperator"],
        "TreatMissingData": inputs["treatMissingData"],
    }
    if "datapointsToAlarm" in inputs:
        params["DatapointsToAlarm"] = inputs["datapointsToAlarm"]
    if "metricQueries" in inputs:
        queries = []
        for query in inputs["metricQueries"]:
            converted: dict[str, Any] = {"Id": query["id"], "ReturnData": query["returnData"]}
            if "expression" in query:
                converted["Expression"] = query["expression"]
                converted["Label"] = query["label"]
            else:
                metric = query["metric"]
                converted["MetricStat"] = {
                    "Metric": {
                        "Namespace": metric["namespace"],
                        "MetricName": metric["metricName"],
                        "Dimensions": dimensions(metric["dimensions"]),
                    },
                    "Period": metric["period"],
                    "Stat": metric["stat"],
                }
            queries.append(converted)
        params["Metrics"] = queries
        return params
    params |= {
        "Namespace": inputs["namespace"],
        "MetricName": inputs["metricName"],
        "Dimensions": dimensions(inputs["dimensions"]),
        "Period": inputs["period"],
    }
    if "extendedStatistic" in inputs:
        params["ExtendedStatistic"] = inputs["extendedStatistic"]
    else:
        params["Statistic"] = inputs["statistic"]
    return params


def repository_params(resource: RegisteredResource) -> dict[str, Any]:
    inputs = _plain(resource.inputs)
    return {
        "repositoryName": inputs["name"],
        "imageTagMutability": inputs["imageTagMutability"],
        "imageScanningConfiguration": inputs["imageScanningConfiguration"],
        "encryptionConfiguration": inputs["encryptionConfigurations"][0],
    }


def record_params(resource: RegisteredResource) -> dict[str, Any]:
    inputs = _plain(resource.inputs)
    record: dict[str, Any] = {"Name": inputs["name"], "Type": inputs["type"]}
    if "aliases" in inputs:
        [alias] = inputs["aliases"]
        record["AliasTarget"] = {
            "HostedZoneId": alias["zoneId"],
            "DNSName": alias["name"],
            "EvaluateTargetHealth": alias["evaluateTargetHealth"],
        }
    else:
        record["TTL"] = inputs["ttl"]
        record["ResourceRecords"] = [{"Value": value} for value in inputs["records"]]
    return {
        "HostedZoneId": inputs["zoneId"],
        "ChangeBatch": {"Changes": [{"Action": "UPSERT", "ResourceRecordSet": record}]},
    }


# type token -> (botocore service, operation, converter)
CALLS: dict[str, tuple[str, str, Callable[[RegisteredResource], dict[str, Any]]]] = {
    "aws:ecs/taskDefinition:TaskDefinition": ("ecs", "RegisterTaskDefinition", task_definition_params),
    "aws:ecs/service:Service": ("ecs", "CreateService", service_params),
    "aws:ecs/cluster:Cluster": ("ecs", "CreateCluster", cluster_params),
    "aws:lb/loadBalancer:LoadBalancer": ("elbv2", "CreateLoadBalancer", load_balancer_params),
    "aws:lb/targetGroup:TargetGroup": ("elbv2", "CreateTargetGroup", target_group_params),
    "aws:lb/listener:Listener": ("elbv2", "CreateListener", listener_params),
    "aws:acm/certificate:Certificate": ("acm", "RequestCertificate", certificate_params),
    "aws:appautoscaling/target:Target": (
        "application-autoscaling",
        "RegisterScalableTarget",
        scalable_target_params,
    ),
    "aws:appautoscaling/policy:Policy": (
        "application-autoscaling",
        "PutScalingPolicy",
        scaling_policy_params,
    ),
    "aws:cloudwatch/metricAlarm:MetricAlarm": ("cloudwatch", "PutMetricAlarm", metric_alarm_params),
    "aws:ecr/repository:Repository": ("ecr", "CreateRepository", repository_params),
    "aws:route53/record:Record": ("route53", "ChangeResourceRecordSets", record_params),
}


@pytest.mark.parametrize("stack", ECS_STACKS)
def test_container_definitions_are_a_valid_register_task_definition(
    stack_graph: GraphFor, stack: str
) -> None:
    graph = stack_graph(stack)
    compute = next(r.name for r in graph.resources if r.type == "mlflow-stack:compute:EcsService")
    task = graph.one("aws:ecs/taskDefinition:TaskDefinition", parent=compute)
    params = task_definition_params(task)
    checked = assert_valid("ecs", "RegisterTaskDefinition", params)
    # networkMode, requiresCompatibilities, runtimePlatform (2), portMappings protocol/appProtocol,
    # logDriver: the enums the container definitions set must all have been looked at.
    assert checked >= 7


@pytest.mark.parametrize("stack", STACKS)
def test_every_edge_resource_is_a_valid_api_call_with_model_enums(stack_graph: GraphFor, stack: str) -> None:
    graph = stack_graph(stack)
    checked_per_service: dict[str, int] = {}
    for resource in graph.resources:
        if resource.type not in CALLS:
            continue
        service, operation, convert = CALLS[resource.type]
        checked = assert_valid(service, operation, convert(resource))
        checked_per_service[service] = checked_per_service.get(service, 0) + checked
    expected_services = {"elbv2", "cloudwatch"}
    if graph.of_type("aws:ecs/service:Service"):
        expected_services |= {"ecs", "application-autoscaling"}
    else:  # compute.backend: kubernetes runs no ECS service, so nothing of ECS to check
        assert stack_backend(stack) == "kubernetes"
    if graph.of_type("aws:acm/certificate:Certificate"):
        expected_services.add("acm")
    if graph.of_type("aws:route53/record:Record"):
        expected_services.add("route53")
    assert {s for s, n in checked_per_service.items() if n} >= expected_services


@pytest.mark.parametrize("stack", STACKS)
def test_alarm_missing_data_treatment_is_a_documented_value(stack_graph: GraphFor, stack: str) -> None:
    allowed = documented_values("cloudwatch", "PutMetricAlarm", "TreatMissingData")
    assert set(allowed) == {"breaching", "notBreaching", "ignore", "missing"}
    for alarm in stack_graph(stack).of_type("aws:cloudwatch/metricAlarm:MetricAlarm"):
        assert alarm.get("treatMissingData") in allowed, alarm.name


def test_the_checks_catch_a_wrong_enum_and_a_wrong_type() -> None:
    params = {
        "family": "f",
        "containerDefinitions": [{"name": "c", "image": "i", "logConfiguration": {"logDriver": "syslogd"}}],
        "networkMode": "awsvpc",
    }
    with pytest.raises(AssertionError, match=r"logDriver = 'syslogd'"):
        assert_valid("ecs", "RegisterTaskDefinition", params)
    params["containerDefinitions"][0]["logConfiguration"]["logDriver"] = "awslogs"
    params["containerDefinitions"][0]["stopTimeout"] = "30"
    with pytest.raises(AssertionError, match="stopTimeout"):
        assert_valid("ecs", "RegisterTaskDefinition", params)
