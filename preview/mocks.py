"""What the offline runner answers in place of AWS and the Pulumi engine.

`AwsMocks` answers resource registrations and invokes the way AWS would (ids, ARNs in the stack's
region and partition, availability zones, caller identity), deterministically per stack and name;
`RecordingMonitor` is the SDK's mock monitor keeping what it drops, each registration's
dependencies. preview/offline.py runs the program against them.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Any, ClassVar

from pulumi.runtime import rpc
from pulumi.runtime.mocks import MockCallArgs, MockMonitor, MockResourceArgs, Mocks

MOCK_ACCOUNT_ID = "123456789012"
# Every generated secret (random passwords) starts with this, so a test can scan the whole graph
# for it: it must only ever appear inside a `Secret`.
SECRET_SENTINEL = "SENTINEL-do-not-leak-"  # noqa: S105 - the marker mock secrets carry
# What a platform stack's `kubeconfig` output holds offline; it carries the sentinel, so the leak
# tests see it if it ever left a Secret.
OFFLINE_KUBECONFIG = f"apiVersion: v1\nkind: Config\n# {SECRET_SENTINEL}kubeconfig\n"


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

    def __init__(
        self, stack: str, region: str, stack_outputs: dict[str, dict[str, Any]] | None = None
    ) -> None:
        self.stack = stack
        self.region = region
        # StackReference name -> the referenced stack's outputs (a team stack's platform, built
        # offline from its own stack file by preview/offline.py); rpc-wrapped secrets stay secret.
        self.stack_outputs = stack_outputs or {}
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
        if typ == "pulumi:pulumi:StackReference":
            reference = _plain(inputs.get("name")) or name
            if reference in self.stack_outputs:
                outputs = self.stack_outputs[reference]
                state["outputs"] = dict(outputs)
                state["secretOutputNames"] = [
                    key for key, value in outputs.items() if rpc.is_rpc_secret(value)
                ]
                return reference, state
            # The platform stack the Kubernetes backend reads its kubeconfig from: a stand-in
            # kubeconfig, secret as a real stack output of one would be.
            state["outputs"] = {"kubeconfig": rpc.wrap_rpc_secret(OFFLINE_KUBECONFIG)}
            state["secretOutputNames"] = ["kubeconfig"]
            return reference, state
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
            if _plain(inputs.get("manageMasterUserPassword")):
                # RDS names its managed secret `rds!db-<uuid>` and returns it as MasterUserSecret.
                state["masterUserSecrets"] = [
                    {
                        "secretArn": self._arn(
                            "secretsmanager", f"secret:rds!db-{self._uuid(name)}-{short[:6]}"
                        ),
                        "kmsKeyId": _plain(inputs.get("masterUserSecretKmsKeyId")) or "",
                        "secretStatus": "active",
                    }
                ]
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
        elif typ in {"aws:lb/listener:Listener", "aws:lb/listenerRule:ListenerRule"}:
            # As ELB names them: listener/app/<lb name>/<lb id>/<id>, listener-rule/app/.../<id>
            # (the parent's ARN is an input: loadBalancerArn, listenerArn).
            parent = str(_plain(inputs.get("loadBalancerArn") or inputs.get("listenerArn")) or "")
            path = parent.split(":", 5)[-1].split("/", 1)[-1] if "/" in parent else f"app/{physical}/0"
            kind = "listener" if typ.endswith("Listener") else "listener-rule"
            state["arn"] = self._arn("elasticloadbalancing", f"{kind}/{path}/{short[:16]}")
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
        if invoke == "aws:ec2/getSubnet:getSubnet":
            # An existing subnet's range, stable per id (the Kubernetes NetworkPolicies read it).
            subnet_id = str(_plain(args.args.get("id")))
            second, third = (int(_short_hash(subnet_id, part, length=2), 16) for part in ("b", "c"))
            cidr = f"10.{100 + second % 100}.{third}.0/24"
            return {
                "id": subnet_id,
                "cidrBlock": cidr,
                "vpcId": "vpc-existing",
                "availabilityZone": f"{region}a",
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
