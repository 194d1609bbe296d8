"""Run edge/compute/monitoring components under Pulumi mocks and look at what they register.

The mocks echo every input back as an output and add the computed attributes the components read
(ARNs, names, DNS names, ...), so the resource graph resolves the way it would in a real `up`.
Inputs are recorded as the engine sees them: camelCase keys, JSON strings left as strings.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi

from preview.offline import stack_backend, stack_mode
from server import contract as _contract

# Every standalone stacks/Pulumi.<stack>.yaml (its own ALB, cluster and server): the per-stack tests
# run once for each. Platform and team stacks (tenancy.mode) split these parts between them;
# tests/unit/test_platform_team_*.py check each side.
STACKS = sorted(
    stack
    for stack in (
        path.name.removeprefix("Pulumi.").removesuffix(".yaml")
        for path in (Path(__file__).resolve().parents[2] / "stacks").glob("Pulumi.*.yaml")
    )
    if stack_mode(stack) == "standalone"
)
# Stacks on ECS (compute.backend, default ecs): the task-definition and ECS-service checks run on
# these; Kubernetes stacks have theirs in tests/unit/test_kubernetes_stacks.py.
ECS_STACKS = [stack for stack in STACKS if stack_backend(stack) == "ecs"]
ACCOUNT_ID = "123456789012"
REGION = "us-east-1"
ELB_ACCOUNT_ARN = "arn:aws:iam::127311923021:root"
# Stands in for the ECR login token: it may reach the image build's registry login and nothing else.
REGISTRY_PASSWORD_SENTINEL = "SENTINEL-ecr-token-must-not-leak"  # noqa: S105 - a test sentinel


@dataclass(frozen=True)
class Registered:
    typ: str
    name: str
    inputs: dict[str, Any]


class RecordingMocks(pulumi.runtime.Mocks):
    def __init__(self) -> None:
        self.resources: list[Registered] = []
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        self.resources.append(Registered(args.typ, args.name, dict(args.inputs)))
        resource_id = f"{args.name}-id"
        return resource_id, {**args.inputs, **_computed(args.typ, args.name, args.inputs)}

    def call(self, args: pulumi.runtime.MockCallArgs) -> dict[str, Any]:  # type: ignore[override]
        self.calls.append((args.token, dict(args.args)))
        function = args.token
        if function == "aws:elb/getServiceAccount:getServiceAccount":
            return {"arn": ELB_ACCOUNT_ARN, "id": "127311923021"}
        if function == "aws:ecr/getAuthorizationToken:getAuthorizationToken":
            return {
                "userName": "AWS",
                "password": REGISTRY_PASSWORD_SENTINEL,
                "proxyEndpoint": f"https://{ACCOUNT_ID}.dkr.ecr.{REGION}.amazonaws.com",
                "authorizationToken": "unused",
                "expiresAt": "2030-01-01T00:00:00Z",
                "id": REGION,
            }
        if function == "aws:index/getCallerIdentity:getCallerIdentity":
            return {"accountId": ACCOUNT_ID, "arn": f"arn:aws:iam::{ACCOUNT_ID}:user/test", "userId": "x"}
        raise AssertionError(f"unexpected invoke {args.token}")


def _computed(typ: str, name: str, inputs: dict[str, Any]) -> dict[str, Any]:
    physical = inputs.get("name") or f"{name}-1234567"
    service = typ.split(":")[1].split("/")[0]
    arn = f"arn:aws:{service}:{REGION}:{ACCOUNT_ID}:{typ.split(':')[-1].lower()}/{physical}"
    outputs: dict[str, Any] = {"arn": arn, "name": physical}
    if typ == "aws:lb/loadBalancer:LoadBalancer":
        outputs |= {
            "arnSuffix": f"app/{physical}/50dc6c495c0c9188",
            "dnsName": f"{physical}-1234567890.{REGION}.elb.amazonaws.com",
            "zoneId": "Z35SXDOTRQ7X7K",
        }
    elif typ == "aws:lb/targetGroup:TargetGroup":
        outputs |= {"arnSuffix": f"targetgroup/{physical}/73e2d6bc24d8a067"}
    elif typ == "aws:acm/certificate:Certificate":
        outputs |= {
            "domainValidationOptions": [
                {
                    "domainName": inputs["domainName"],
                    "resourceRecordName": f"_abc.{inputs['domainName']}.",
                    "resourceRecordType": "CNAME",
                    "resourceRecordValue": "_def.acm-validations.aws.",
                }
            ]
        }
    elif typ == "aws:acm/certificateValidation:CertificateValidation":
        outputs |= {"certificateArn": inputs["certificateArn"]}
    elif typ == "aws:route53/record:Record":
        outputs |= {"fqdn": inputs["name"]}
    elif typ == "aws:s3/bucket:Bucket":
        outputs |= {"bucket": physical, "arn": f"arn:aws:s3:::{physical}"}
    elif typ == "aws:ecr/repository:Repository":
        outputs |= {
            "registryId": ACCOUNT_ID,
            "repositoryUrl": f"{ACCOUNT_ID}.dkr.ecr.{REGION}.amazonaws.com/{physical}",
        }
    elif typ == "docker-build:index:Image":
        tag = inputs["tags"][0]
        outputs |= {"ref": f"{tag}@sha256:{'a' * 64}", "digest": f"sha256:{'a' * 64}"}
    elif typ == "aws:cloudwatch/logGroup:LogGroup":
        outputs |= {"arn": f"arn:aws:logs:{REGION}:{ACCOUNT_ID}:log-group:{physical}"}
    return outputs


@dataclass
class Run:
    resources: list[Registered]
    calls: list[tuple[str, dict[str, Any]]]
    outputs: dict[str, Any]

    def of_type(self, typ: str) -> list[Registered]:
        return [r for r in self.resources if r.typ == typ]

    def one(self, typ: str) -> Registered:
        found = self.of_type(typ)
        assert len(found) == 1, f"expected one {typ}, found {[r.name for r in found]}"
        return found[0]

    def named(self, name: str) -> Registered:
        found = [r for r in self.resources if r.name == name]
        assert len(found) == 1, f"expected one resource named {name}, found {len(found)}"
        return found[0]

    def texts(self) -> Iterator[str]:
        """Every registered input, serialised: for "this value appears nowhere" checks."""
        for resource in self.resources:
            yield json.dumps(resource.inputs, default=str)


def run_components(build: Callable[[], dict[str, Any] | None], *, stack: str = "dev") -> Run:
    """Run `build()` (which creates components) under mocks and wait for every registration.

    `build` may return a dict of outputs; their resolved values land in `Run.outputs`.
    """
    mocks = RecordingMocks()
    pulumi.runtime.set_mocks(mocks, project="mlflow-stack", stack=stack, preview=False)
    resolved: dict[str, Any] = {}

    @pulumi.runtime.test
    def program() -> Any:
        exports = build() or {}
        return pulumi.Output.all(**exports).apply(resolved.update) if exports else None

    program()
    return Run(resources=mocks.resources, calls=mocks.calls, outputs=resolved)


SECRET_ARNS = {
    name: f"arn:aws:secretsmanager:{REGION}:{ACCOUNT_ID}:secret:mlflow-stack/dev/{name.lower()}-AbCdEf"
    for name in (setting.name for setting in _contract.SECRET_SETTINGS)
}


def sample_spec(image: pulumi.Input[str] = "example.com/mlflow:1", **overrides: Any) -> Any:
    """A server spec with every contract setting, secrets as Secrets Manager ARNs."""
    from infra.compute.spec import ServerSpec
    from server import contract

    fields: dict[str, Any] = {
        "image": image,
        "entrypoint": contract.ENTRYPOINT,
        "command": contract.COMMAND,
        "environment": {s.name: s.default or f"value-of-{s.name.lower()}" for s in contract.PLAIN_SETTINGS},
        "secrets": dict(SECRET_ARNS),
        "port": contract.CONTAINER_PORT,
        "health_path": contract.HEALTH_PATH,
        "cpu": 1024,
        "memory": 2048,
    }
    return ServerSpec(**(fields | overrides))


def build_edge(
    *,
    load_balancer: dict[str, Any] | None = None,
    service: dict[str, Any] | None = None,
    image: dict[str, Any] | None = None,
    monitoring: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The edge, image, service and alarms wired together the way platform.py wires them,
    with fixed stand-ins for the foundation (VPC, subnets, DB security group, roles)."""
    from infra.compute.ecs import EcsService, EcsServiceArgs
    from infra.compute.image import ServerImage, ServerImageArgs
    from infra.load_balancer import LoadBalancer, LoadBalancerArgs
    from infra.monitoring import Monitoring, MonitoringArgs
    from server import contract

    edge = LoadBalancer(
        "edge",
        LoadBalancerArgs(
            **{
                "name_prefix": "mlflow-dev",
                "vpc_id": "vpc-0123456789abcdef0",
                "subnet_ids": ["subnet-0aaaaaaaaaaaaaaa1", "subnet-0aaaaaaaaaaaaaaa2"],
                "domain_name": "mlflow.dev.example.com",
                "target_port": contract.CONTAINER_PORT,
                "health_path": contract.HEALTH_PATH,
                "hosted_zone_id": "Z0123456789ABCDEFGHIJ",
                **(load_balancer or {}),
            }
        ),
    )
    server_image = ServerImage(
        "image", ServerImageArgs(**{"repository_name": "mlflow-dev-server", **(image or {})})
    )
    compute = EcsService(
        "compute",
        EcsServiceArgs(
            **{
                "name_prefix": "mlflow-dev",
                "spec": sample_spec(image=server_image.image_ref),
                "region": REGION,
                "vpc_id": "vpc-0123456789abcdef0",
                "private_subnet_ids": ["subnet-0bbbbbbbbbbbbbbb1", "subnet-0bbbbbbbbbbbbbbb2"],
                "load_balancer_security_group_id": edge.security_group_id,
                "target_group_arn": edge.target_group_arn,
                "request_count_resource_label": pulumi.Output.concat(
                    edge.arn_suffix, "/", edge.target_group_arn_suffix
                ),
                "database_security_group_id": "sg-0dddddddddddddddd",
                "execution_role_arn": f"arn:aws:iam::{ACCOUNT_ID}:role/mlflow-dev-execution",
                "task_role_arn": f"arn:aws:iam::{ACCOUNT_ID}:role/mlflow-dev-task",
                "log_group_name": "/mlflow-stack/dev/server",
                "log_retention_days": 14,
                "min_tasks": 1,
                "max_tasks": 2,
                **(service or {}),
            }
        ),
    )
    alarms = Monitoring(
        "monitoring",
        MonitoringArgs(
            **{
                "account_id": ACCOUNT_ID,
                "partition": "aws",
                "alb_arn_suffix": edge.arn_suffix,
                "target_group_arn_suffix": edge.target_group_arn_suffix,
                "ecs_cluster_name": compute.cluster_name,
                "ecs_service_name": compute.service_name,
                "db_instance_identifier": "mlflow-dev-db",
                "db_allocated_storage_gb": 20,
                "db_max_connections": 112,
                **(monitoring or {}),
            }
        ),
    )
    return {
        "url": edge.url,
        "dns_name": edge.dns_name,
        "cluster_name": compute.cluster_name,
        "service_name": compute.service_name,
        "image_ref": server_image.image_ref,
        "topic_arn": alarms.topic_arn,
    }
