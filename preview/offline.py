"""Run the real Pulumi program offline, under `pulumi.runtime.set_mocks`, and return what it registers.

There is no Pulumi CLI, no provider plugin and no AWS account here, so `run_program()` plays the
engine: it reads `stacks/Pulumi.<stack>.yaml`, runs `__main__.py` (exactly what `pulumi up` runs)
against mocks that answer like AWS would (ids, ARNs with the stack's region and a fixed account,
availability zones, caller identity), and returns a `ResourceGraph`: every resource with its type
token, logical name, inputs (camelCase, Outputs resolved, secrets wrapped in `Secret`), parent,
provider and `protect`, plus the stack outputs — or the `SettingsError` that stopped the program.

Resource options never reach the mocks, so a stack transformation observes them (`protect`,
`parent`). Every run happens on a fresh thread with a fresh event loop: Pulumi keeps its runtime
state (settings, root stack, config) in context variables, and a new thread starts with an empty
context, so nothing from one stack leaks into the next.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import runpy
import threading
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pulumi
import yaml
from pulumi.runtime import rpc
from pulumi.runtime import settings as runtime_settings
from pulumi.runtime.mocks import MockCallArgs, MockMonitor, MockResourceArgs, Mocks
from pulumi.runtime.stack import run_pulumi_func

from infra.settings import CONFIG_NAMESPACE, PROJECT, SettingsError

REPO_ROOT = Path(__file__).resolve().parent.parent
PROGRAM = REPO_ROOT / "__main__.py"
MOCK_ACCOUNT_ID = "123456789012"
# Every generated secret (random passwords) starts with this, so a test can scan the whole graph
# for it: it must only ever appear inside a `Secret`.
SECRET_SENTINEL = "SENTINEL-do-not-leak-"  # noqa: S105 - the marker mock secrets carry


# AWS partitions by region prefix: (partition, DNS suffix, reverse DNS prefix). Every ARN and
# service name the mocks hand out follows the stack's region, so a stack in us-gov-west-1 shows
# any `arn:aws:` the program wrote itself instead of looking up the partition.
PARTITIONS: tuple[tuple[str, tuple[str, str, str]], ...] = (
    ("us-gov-", ("aws-us-gov", "amazonaws.com", "com.amazonaws")),
    ("cn-", ("aws-cn", "amazonaws.com.cn", "cn.com.amazonaws")),
)
COMMERCIAL_PARTITION = ("aws", "amazonaws.com", "com.amazonaws")


def partition_of(region: str) -> tuple[str, str, str]:
    """(partition, dnsSuffix, reverseDnsPrefix) of a region, as aws.get_partition answers."""
    for prefix, partition in PARTITIONS:
        if region.startswith(prefix):
            return partition
    return COMMERCIAL_PARTITION


# Services whose ARNs have no region.
GLOBAL_SERVICES = frozenset({"iam", "s3", "route53", "cloudfront", "organizations"})


@dataclass(frozen=True)
class Secret:
    """A value the program marked secret (Pulumi encrypts it in the state and masks it in output)."""

    value: Any


@dataclass
class RegisteredResource:
    type: str
    name: str
    urn: str
    id: str | None
    inputs: dict[str, Any]
    parent_urn: str | None
    parent_name: str | None
    protect: bool
    provider: str | None  # "<provider urn>::<id>" when an explicit provider was given
    custom: bool
    # URNs the engine would create first: explicit depends_on plus those behind Output inputs.
    dependencies: frozenset[str] = frozenset()
    # input name -> URNs whose Outputs fed that input
    property_dependencies: dict[str, frozenset[str]] = field(default_factory=dict)
    arn: str | None = None  # what the mocks answered, as AWS would after creation

    def get(self, path: str, default: Any = None) -> Any:
        """Input by dotted path, e.g. `res.get("versioningConfiguration.status")`, secrets unwrapped."""
        value: Any = self.inputs
        for part in path.split("."):
            value = unwrap(value)
            if isinstance(value, list) and part.isdigit():
                value = value[int(part)]
            elif isinstance(value, Mapping) and part in value:
                value = value[part]
            else:
                return default
        return unwrap(value)


@dataclass
class ResourceGraph:
    stack: str
    config: dict[str, Any]
    resources: list[RegisteredResource] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)
    error: SettingsError | None = None

    def of_type(self, type_token: str, *, parent: str | None = None) -> list[RegisteredResource]:
        """Resources of one type; `parent` keeps only the children of that component."""
        return [
            resource
            for resource in self.resources
            if resource.type == type_token and (parent is None or resource.parent_name == parent)
        ]

    def one(self, type_token: str, *, parent: str | None = None) -> RegisteredResource:
        matches = self.of_type(type_token, parent=parent)
        if len(matches) != 1:
            where = f" under {parent}" if parent else ""
            raise LookupError(
                f"expected one {type_token}{where}, found {len(matches)}: {[r.name for r in matches]}"
            )
        return matches[0]

    def named(self, name: str) -> RegisteredResource:
        for resource in self.resources:
            if resource.name == name:
                return resource
        raise LookupError(f"no resource named {name!r}")

    def children_of(self, name: str) -> list[RegisteredResource]:
        return [resource for resource in self.resources if resource.parent_name == name]

    @property
    def types(self) -> set[str]:
        return {resource.type for resource in self.resources}

    def by_urn(self, urn: str) -> RegisteredResource:
        for resource in self.resources:
            if resource.urn == urn:
                return resource
        raise LookupError(f"no resource with urn {urn!r}")

    def dependencies_of(self, resource: RegisteredResource, *, transitive: bool = True) -> set[str]:
        """Names of the resources the engine creates before `resource` (directly, or at any depth)."""
        known = {r.urn: r for r in self.resources}
        seen: set[str] = set()
        pending = list(resource.dependencies)
        while pending:
            urn = pending.pop()
            if urn in seen or urn not in known:
                continue
            seen.add(urn)
            if transitive:
                pending.extend(known[urn].dependencies)
        return {known[urn].name for urn in seen}

    def depends_on(self, resource: RegisteredResource, other: RegisteredResource) -> bool:
        """Whether the engine must finish `other` before it starts `resource` (transitively)."""
        return other.name in self.dependencies_of(resource)


def unwrap(value: Any) -> Any:
    return value.value if isinstance(value, Secret) else value


def iter_plain_strings(value: Any) -> Iterator[str]:
    """Every string in a value that is *not* inside a `Secret` (where a secret may not appear)."""
    if isinstance(value, Secret):
        return
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield str(key)
            yield from iter_plain_strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from iter_plain_strings(item)


def _stack_directory(stack_dir: str | Path) -> Path:
    directory = Path(stack_dir)
    return directory if directory.is_absolute() else REPO_ROOT / directory


def list_stacks(stack_dir: str | Path = "stacks") -> list[str]:
    """Stack names that have a stacks/Pulumi.<stack>.yaml file."""
    paths = _stack_directory(stack_dir).glob("Pulumi.*.yaml")
    return sorted(path.name.removeprefix("Pulumi.").removesuffix(".yaml") for path in paths)


def load_stack_config(stack: str, stack_dir: str | Path = "stacks") -> dict[str, Any]:
    """The `config:` map of stacks/Pulumi.<stack>.yaml, keys fully qualified (`mlflow-stack:x`)."""
    path = _stack_directory(stack_dir) / f"Pulumi.{stack}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"no stack file {path}; stacks here: {', '.join(list_stacks(stack_dir))}")
    document = yaml.safe_load(path.read_text()) or {}
    config = document.get("config") or {}
    return {_qualify(key): value for key, value in config.items()}


def _qualify(key: str) -> str:
    return key if ":" in key else f"{CONFIG_NAMESPACE}:{key}"


def _merge(base: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge mappings; a `None` override removes the key."""
    merged = dict(base)
    for key, value in overrides.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


def _runtime_config_value(value: Any) -> str:
    """What the Pulumi engine hands the program: plain text for strings, JSON for everything else."""
    return value if isinstance(value, str) else json.dumps(value)


def _short_hash(*parts: str, length: int = 17) -> str:
    return hashlib.sha256("/".join(parts).encode()).hexdigest()[:length]


class RecordingMonitor(MockMonitor):
    """The SDK's mock monitor, keeping what it drops: each registration's dependencies."""

    def __init__(self, mocks: Mocks) -> None:
        super().__init__(mocks)
        # urn -> (dependencies, property dependencies)
        self.dependencies: dict[str, tuple[frozenset[str], dict[str, frozenset[str]]]] = {}

    def RegisterResource(self, request):  # type: ignore[no-untyped-def] - the gRPC servicer's shape
        response = super().RegisterResource(request)
        self.dependencies[response.urn] = (
            frozenset(request.dependencies),
            {key: frozenset(deps.urns) for key, deps in request.propertyDependencies.items()},
        )
        return response


class AwsMocks(Mocks):
    """Answers resource registrations and invokes the way AWS would, deterministically."""

    # type token -> EC2-style id prefix
    ID_PREFIXES: ClassVar[dict[str, str]] = {
        "aws:ec2/vpc:Vpc": "vpc",
        "aws:ec2/subnet:Subnet": "subnet",
        "aws:ec2/internetGateway:InternetGateway": "igw",
        "aws:ec2/natGateway:NatGateway": "nat",
        "aws:ec2/eip:Eip": "eipalloc",
        "aws:ec2/routeTable:RouteTable": "rtb",
        "aws:ec2/routeTableAssociation:RouteTableAssociation": "rtbassoc",
        "aws:ec2/securityGroup:SecurityGroup": "sg",
        "aws:ec2/vpcEndpoint:VpcEndpoint": "vpce",
        "aws:ec2/flowLog:FlowLog": "fl",
        "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule": "sgr",
        "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule": "sgr",
    }

    def __init__(self, stack: str, region: str) -> None:
        self.stack = stack
        self.region = region
        self.partition, self.dns_suffix, self.reverse_dns_prefix = partition_of(region)
        self.registrations: list[tuple[MockResourceArgs, str, dict[str, Any]]] = []

    # -- helpers ---------------------------------------------------------------------------
    def _arn(self, service: str, resource: str, *, region: bool = True) -> str:
        return f"arn:{self.partition}:{service}:{self.region if region else ''}:{MOCK_ACCOUNT_ID}:{resource}"

    def _uuid(self, name: str) -> str:
        return str(uuid.UUID(hashlib.md5(f"{self.stack}/{name}".encode()).hexdigest()))  # noqa: S324 - ids, not security

    # -- resources -------------------------------------------------------------------------
    def new_resource(self, args: MockResourceArgs) -> tuple[str, dict[str, Any]]:
        resource_id, state = self._state(args.typ, args.name, dict(args.inputs))
        self.registrations.append((args, resource_id, state))
        return resource_id, state

    def _state(self, typ: str, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        state = dict(inputs)
        short = _short_hash(self.stack, typ, name)
        # Like the provider: an explicit name, else namePrefix plus a unique suffix, else generated.
        prefix = _plain(inputs.get("namePrefix"))
        unique = _short_hash(self.stack, typ, name, length=26)
        physical = _plain(inputs.get("name")) or (f"{prefix}{unique}" if prefix else f"{name}-{short[:7]}")
        module, _, kind = typ.partition(":")[2].partition("/")
        service = module.split("/")[0]
        regional = service not in GLOBAL_SERVICES
        state.setdefault(
            "arn", self._arn(service, f"{kind.split(':')[0].lower()}/{physical}", region=regional)
        )
        resource_id: str = physical

        if typ.startswith("pulumi:providers:"):
            return self._uuid(name), state
        if typ in self.ID_PREFIXES:
            resource_id = f"{self.ID_PREFIXES[typ]}-{short}"
            state["arn"] = self._arn("ec2", f"{self.ID_PREFIXES[typ]}/{resource_id}")
        if typ == "random:index/randomPassword:RandomPassword":
            length = int(_plain(inputs.get("length")) or 16)
            value = (SECRET_SENTINEL + _short_hash(name, length=64))[: max(length, len(SECRET_SENTINEL) + 4)]
            state["result"] = rpc.wrap_rpc_secret(value)
            state["bcryptHash"] = rpc.wrap_rpc_secret("$2a$10$" + _short_hash(name, "bcrypt", length=53))
            resource_id = "none"
        elif typ == "random:index/randomId:RandomId":
            size = int(_plain(inputs.get("byteLength")) or 8)
            state.update(hex=_short_hash(name, "id", length=size * 2), b64Url=short[: size + size // 3])
            resource_id = state["b64Url"]
        elif typ == "aws:s3/bucket:Bucket":
            bucket = _plain(inputs.get("bucket")) or f"{name}-{short[:7]}"
            resource_id = bucket
            state.update(
                bucket=bucket,
                arn=f"arn:{self.partition}:s3:::{bucket}",
                bucketDomainName=f"{bucket}.s3.{self.dns_suffix}",
                bucketRegionalDomainName=f"{bucket}.s3.{self.region}.{self.dns_suffix}",
                region=self.region,
            )
        elif typ == "aws:rds/instance:Instance":
            identifier = _plain(inputs.get("identifier")) or f"{name}-{short[:7]}"
            address = f"{identifier}.c{short[:10]}.{self.region}.rds.{self.dns_suffix}"
            port = int(_plain(inputs.get("port")) or 5432)
            resource_id = f"db-{short.upper()}"
            state.update(
                identifier=identifier,
                address=address,
                endpoint=f"{address}:{port}",
                port=port,
                resourceId=resource_id,
                arn=self._arn("rds", f"db:{identifier}"),
                hostedZoneId="Z2R2ITUGPM61AM",
            )
        elif typ == "aws:ec2/eip:Eip":
            # An address from TEST-NET-2 (RFC 5737), stable per stack and name.
            state["publicIp"] = f"198.51.100.{int(short[:4], 16) % 254 + 1}"
        elif typ == "aws:kms/key:Key":
            key_id = self._uuid(name)
            resource_id = key_id
            state.update(keyId=key_id, arn=self._arn("kms", f"key/{key_id}"))
        elif typ == "aws:kms/alias:Alias":
            state["arn"] = self._arn("kms", _plain(inputs.get("name")) or physical)
        elif typ == "aws:secretsmanager/secret:Secret":
            arn = self._arn("secretsmanager", f"secret:{physical}-{short[:6]}")
            resource_id = arn
            state.update(arn=arn, name=physical)
        elif typ == "aws:secretsmanager/secretVersion:SecretVersion":
            resource_id = f"{_plain(inputs.get('secretId'))}|{self._uuid(name)}"
            state["versionId"] = self._uuid(name)
        elif typ == "aws:iam/role:Role":
            state.update(
                arn=self._arn("iam", f"role/{physical}", region=False),
                name=physical,
                uniqueId="AROA" + short.upper(),
            )
        elif typ == "aws:iam/policy:Policy":
            state.update(arn=self._arn("iam", f"policy/{physical}", region=False), name=physical)
        elif typ == "aws:iam/rolePolicy:RolePolicy":
            resource_id = f"{_plain(inputs.get('role'))}:{physical}"
            state["name"] = physical
        elif typ == "aws:cloudwatch/logGroup:LogGroup":
            state.update(arn=self._arn("logs", f"log-group:{physical}"), name=physical)
        elif typ in {"aws:rds/subnetGroup:SubnetGroup", "aws:rds/parameterGroup:ParameterGroup"}:
            state.update(
                name=physical, arn=self._arn("rds", f"{'subgrp' if 'subnet' in typ else 'pg'}:{physical}")
            )
        elif typ == "aws:lb/loadBalancer:LoadBalancer":
            suffix = f"app/{physical}/{short[:16]}"
            state.update(
                arn=self._arn("elasticloadbalancing", f"loadbalancer/{suffix}"),
                arnSuffix=suffix,
                dnsName=f"{physical}-{short[:10]}.{self.region}.elb.{self.dns_suffix}",
                zoneId="Z35SXDOTRQ7X7K",
            )
            resource_id = state["arn"]
        elif typ == "aws:lb/targetGroup:TargetGroup":
            suffix = f"targetgroup/{physical}/{short[:16]}"
            state.update(arn=self._arn("elasticloadbalancing", suffix), arnSuffix=suffix, name=physical)
            resource_id = state["arn"]
        elif typ == "aws:ecr/repository:Repository":
            state.update(
                arn=self._arn("ecr", f"repository/{physical}"),
                name=physical,
                repositoryUrl=f"{MOCK_ACCOUNT_ID}.dkr.ecr.{self.region}.{self.dns_suffix}/{physical}",
                registryId=MOCK_ACCOUNT_ID,
            )
        elif typ == "aws:ecs/cluster:Cluster":
            state.update(arn=self._arn("ecs", f"cluster/{physical}"), name=physical)
        elif typ == "aws:ecs/taskDefinition:TaskDefinition":
            family = _plain(inputs.get("family")) or physical
            state.update(arn=self._arn("ecs", f"task-definition/{family}:1"), revision=1, family=family)
        elif typ == "aws:acm/certificate:Certificate":
            domain = _plain(inputs.get("domainName")) or physical
            state.update(
                arn=self._arn("acm", f"certificate/{self._uuid(name)}"),
                domainValidationOptions=[
                    {
                        "domainName": domain,
                        "resourceRecordName": f"_{short[:32]}.{domain}.",
                        "resourceRecordType": "CNAME",
                        "resourceRecordValue": f"_{short[:32]}.acm-validations.aws.",
                    }
                ],
            )
        elif typ == "aws:sns/topic:Topic":
            state.update(arn=self._arn("sns", physical), name=physical)
        elif typ == "docker-build:index:Image":
            tags = _plain(inputs.get("tags")) or [f"{physical}:latest"]
            digest = "sha256:" + hashlib.sha256(name.encode()).hexdigest()
            state.update(digest=digest, ref=f"{str(tags[0]).rsplit(':', 1)[0]}@{digest}")
        return resource_id, state

    # -- invokes ---------------------------------------------------------------------------
    def call(self, args: MockCallArgs) -> dict[str, Any]:  # type: ignore[override] - no check failures
        invoke: str = args.token
        region = _plain(args.args.get("region")) or self.region
        if invoke == "aws:index/getCallerIdentity:getCallerIdentity":
            return {
                "accountId": MOCK_ACCOUNT_ID,
                "arn": self._arn("iam", "user/offline", region=False),
                "userId": "AIDAOFFLINEOFFLINE",
                "id": MOCK_ACCOUNT_ID,
            }
        if invoke == "aws:index/getAvailabilityZones:getAvailabilityZones":
            names = [f"{region}{letter}" for letter in "abc"]
            return {"names": names, "zoneIds": [f"use1-az{i}" for i in (1, 2, 4)], "id": region}
        if invoke == "aws:index/getRegion:getRegion":
            return {
                "name": region,
                "region": region,
                "id": region,
                "endpoint": f"ec2.{region}.{self.dns_suffix}",
                "description": region,
            }
        if invoke == "aws:index/getPartition:getPartition":
            return {
                "partition": self.partition,
                "dnsSuffix": self.dns_suffix,
                "id": self.partition,
                "reverseDnsPrefix": self.reverse_dns_prefix,
            }
        if invoke == "aws:elb/getServiceAccount:getServiceAccount":
            # The us-east-1 ELB log delivery account; the value only has to look right here.
            return {"arn": f"arn:{self.partition}:iam::127311923021:root", "id": "127311923021"}
        if invoke == "aws:ecr/getAuthorizationToken:getAuthorizationToken":
            return {
                "authorizationToken": rpc.wrap_rpc_secret(SECRET_SENTINEL + "ecr-token"),
                "password": rpc.wrap_rpc_secret(SECRET_SENTINEL + "ecr-password"),
                "userName": "AWS",
                "proxyEndpoint": f"https://{MOCK_ACCOUNT_ID}.dkr.ecr.{region}.{self.dns_suffix}",
                "expiresAt": "2030-01-01T00:00:00Z",
                "id": region,
            }
        raise NotImplementedError(
            f"preview/offline.py has no mock for the invoke {invoke!r}; add one to AwsMocks.call"
        )


def _plain(value: Any) -> Any:
    """An input as a plain value: rpc secrets unwrapped."""
    return rpc.unwrap_rpc_secret(value) if rpc.is_rpc_secret(value) else value


def _to_graph_value(value: Any) -> Any:
    if rpc.is_rpc_secret(value):
        return Secret(_to_graph_value(rpc.unwrap_rpc_secret(value)))
    if isinstance(value, Mapping):
        return {key: _to_graph_value(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_to_graph_value(item) for item in value]
    # The wire format (protobuf Struct) has only doubles; give whole numbers back as ints.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def run_program(
    stack: str,
    *,
    config_overrides: Mapping[str, Any] | None = None,
    stack_dir: str | Path = "stacks",
    program: Path = PROGRAM,
) -> ResourceGraph:
    """Run the Pulumi program for `stack` under mocks and return everything it registered.

    `config_overrides` use the stack file's keys (`mlflow-stack:database`, `aws:region`, or the short
    `database`); mappings deep-merge into the file's values and `None` removes a key.
    """
    config = load_stack_config(stack, stack_dir)
    if config_overrides:
        config = _merge(config, {_qualify(key): value for key, value in config_overrides.items()})
    graph = ResourceGraph(stack=stack, config=config)
    failure: list[BaseException] = []

    def target() -> None:
        try:
            _run_in_fresh_runtime(graph, program)
        except BaseException as exc:  # handed back to the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=target, name=f"pulumi-offline-{stack}")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return graph


def _run_in_fresh_runtime(graph: ResourceGraph, program: Path) -> None:
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        region = str(graph.config.get("aws:region", "us-east-1"))
        mocks = AwsMocks(graph.stack, region)
        monitor = RecordingMonitor(mocks)
        pulumi.runtime.set_all_config({key: _runtime_config_value(v) for key, v in graph.config.items()}, [])
        pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=graph.stack, preview=False, monitor=monitor)
        # Not set by set_mocks: without these, two runs would share one set of pending outputs.
        runtime_settings.SETTINGS.outputs = set()
        runtime_settings.SETTINGS.lock = threading.Lock()

        observed: dict[tuple[str, str], tuple[pulumi.Resource, pulumi.Resource | None]] = {}

        def observe(args: pulumi.ResourceTransformationArgs) -> pulumi.ResourceTransformationResult | None:
            observed[(args.type_, args.name)] = (args.resource, args.opts.parent)
            return None  # observe only, change nothing

        pulumi.runtime.register_stack_transformation(observe)

        def run() -> None:
            try:
                runpy.run_path(str(program), run_name="__pulumi_program__")
            except SettingsError as exc:
                graph.error = exc

        loop.run_until_complete(run_pulumi_func(run))
        root = runtime_settings.get_root_resource()
        exports = dict(getattr(root, "outputs", {}))
        graph.outputs = loop.run_until_complete(_resolve_outputs(exports))
        graph.resources = _collect(mocks, monitor, observed)
    finally:
        loop.close()
        asyncio.set_event_loop(None)


async def _resolve_outputs(exports: dict[str, Any]) -> dict[str, Any]:
    resolved: dict[str, Any] = {}
    for name, value in exports.items():
        output = pulumi.Output.from_input(value)
        plain = await output.future(with_unknowns=False)
        resolved[name] = Secret(plain) if await output.is_secret() else plain
    return resolved


def _collect(
    mocks: AwsMocks, monitor: RecordingMonitor, observed: dict[tuple[str, str], Any]
) -> list[RegisteredResource]:
    urns = {}
    for urn in monitor.resources:
        qualified_type, name = urn.split("::")[2:4]
        urns[(qualified_type.split("$")[-1], name)] = urn
    resources = []
    for args, resource_id, state in mocks.registrations:
        resource, parent = observed.get((args.typ, args.name), (None, None))
        parent_key = (parent._type, parent._name) if parent is not None else None
        urn = urns.get((args.typ, args.name), "")
        dependencies, property_dependencies = monitor.dependencies.get(urn, (frozenset(), {}))
        resources.append(
            RegisteredResource(
                type=args.typ,
                name=args.name,
                urn=urn,
                id=resource_id or None,
                inputs=_to_graph_value(args.inputs),
                parent_urn=urns.get(parent_key) if parent_key else None,
                parent_name=parent._name if parent is not None else None,
                protect=bool(getattr(resource, "_protect", False)),
                provider=args.provider or None,
                custom=bool(args.custom),
                dependencies=dependencies,
                property_dependencies=property_dependencies,
                arn=_plain(state.get("arn")) if args.custom else None,
            )
        )
    return resources
