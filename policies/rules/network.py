"""Security groups: nothing open to the internet but the load balancer's 80/443, and the
database reachable only from the MLflow service's security group. Creation order: nothing that
needs the internet gateway is created before it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from policies.model import (
    Context,
    Resource,
    Violation,
    as_list,
    first_block,
    known,
    known_items,
    of_type,
    references,
    refers,
    truthy,
)
from policies.rules.alb import LOAD_BALANCERS, is_application
from policies.spec import Rule

SECURITY_GROUP = "aws:ec2/securityGroup:SecurityGroup"
SECURITY_GROUP_RULE = "aws:ec2/securityGroupRule:SecurityGroupRule"
INGRESS_RULE = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
PUBLIC_CIDRS = frozenset({"0.0.0.0/0", "::/0"})
DB_INSTANCE = "aws:rds/instance:Instance"
POSTGRES_PORT = 5432  # the RDS PostgreSQL port the kit's instances listen on
ECS_SERVICE = "aws:ecs/service:Service"
EGRESS_RULE = "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule"
INTERNET_GATEWAY = "aws:ec2/internetGateway:InternetGateway"
NAT_GATEWAY = "aws:ec2/natGateway:NatGateway"
ELASTIC_IP = "aws:ec2/eip:Eip"


@dataclass(frozen=True)
class Ingress:
    """One ingress permission, whichever of the three AWS shapes declared it."""

    declared_by: Resource
    group: Resource | None  # the security group it opens
    cidrs: tuple[str, ...]
    prefix_lists: tuple[str, ...]
    source_groups: tuple[str, ...]
    source_prop: str  # property holding the source group (for dependency lookups)
    self_referencing: bool
    protocol: str
    from_port: int | None
    to_port: int | None

    def allows_from(self, group: Resource) -> bool:
        if group.urn in self.declared_by.property_dependencies.get(self.source_prop, ()):
            return True
        return refers(list(self.source_groups), group)

    def describe(self) -> str:
        ports = (
            "all ports"
            if self.protocol in ("-1", "all")
            else f"{self.protocol} {self.from_port}-{self.to_port}"
        )
        return f"{ports} from {', '.join(self.cidrs + self.prefix_lists + self.source_groups) or 'itself'}"


def _port(value: object) -> int | None:
    return int(value) if isinstance(value, int | float) else None


def collect_ingress(resources: Sequence[Resource]) -> list[Ingress]:
    groups = of_type(resources, SECURITY_GROUP)
    found: list[Ingress] = []

    def group_of(rule: Resource) -> Resource | None:
        return next((g for g in groups if references(rule, "securityGroupId", g)), None)

    for group in groups:
        for block in as_list(group.props.get("ingress")):
            if not isinstance(block, Mapping):
                continue
            found.append(
                Ingress(
                    declared_by=group,
                    group=group,
                    cidrs=tuple(as_list(block.get("cidrBlocks")) + as_list(block.get("ipv6CidrBlocks"))),
                    prefix_lists=tuple(as_list(block.get("prefixListIds"))),
                    source_groups=tuple(known_items(known(block, "securityGroups"))),
                    source_prop="ingress",
                    self_referencing=truthy(block.get("self")),
                    protocol=str(block.get("protocol", "")).lower(),
                    from_port=_port(block.get("fromPort")),
                    to_port=_port(block.get("toPort")),
                )
            )
    for rule in of_type(resources, SECURITY_GROUP_RULE):
        if rule.props.get("type") != "ingress":
            continue
        found.append(
            Ingress(
                declared_by=rule,
                group=group_of(rule),
                cidrs=tuple(
                    as_list(rule.props.get("cidrBlocks")) + as_list(rule.props.get("ipv6CidrBlocks"))
                ),
                prefix_lists=tuple(as_list(rule.props.get("prefixListIds"))),
                source_groups=tuple(known_items(known(rule.props, "sourceSecurityGroupId"))),
                source_prop="sourceSecurityGroupId",
                self_referencing=truthy(rule.props.get("self")),
                protocol=str(rule.props.get("protocol", "")).lower(),
                from_port=_port(rule.props.get("fromPort")),
                to_port=_port(rule.props.get("toPort")),
            )
        )
    for rule in of_type(resources, INGRESS_RULE):
        found.append(
            Ingress(
                declared_by=rule,
                group=group_of(rule),
                cidrs=tuple(as_list(rule.props.get("cidrIpv4")) + as_list(rule.props.get("cidrIpv6"))),
                prefix_lists=tuple(as_list(rule.props.get("prefixListId"))),
                source_groups=tuple(known_items(known(rule.props, "referencedSecurityGroupId"))),
                source_prop="referencedSecurityGroupId",
                self_referencing=False,
                protocol=str(rule.props.get("ipProtocol", "")).lower(),
                from_port=_port(rule.props.get("fromPort")),
                to_port=_port(rule.props.get("toPort")),
            )
        )
    return found


def _groups_used_by(users: Sequence[Resource], groups: Sequence[Resource], prop: str) -> list[Resource]:
    return [g for g in groups if any(references(user, prop, g) for user in users)]


def check_public_ingress(resources: Sequence[Resource], ctx: Context) -> Iterable[Violation]:
    allowed_ports = set(ctx.config["allowedPublicPorts"])
    albs = [lb for lb in of_type(resources, *LOAD_BALANCERS) if is_application(lb)]
    alb_groups = _groups_used_by(albs, of_type(resources, SECURITY_GROUP), "securityGroups")
    for ingress in collect_ingress(resources):
        public = sorted(PUBLIC_CIDRS & set(ingress.cidrs))
        if not public:
            continue
        single_web_port = (
            ingress.protocol in ("tcp", "6")
            and ingress.from_port == ingress.to_port
            and ingress.from_port in allowed_ports
        )
        if ingress.group is not None and ingress.group.urn in {g.urn for g in alb_groups} and single_web_port:
            continue
        target = ingress.group.name if ingress.group is not None else "an unknown security group"
        yield Violation(
            f"{target} allows {ingress.describe()}: only the load balancer may be open to "
            f"{'/'.join(public)}, on ports {sorted(allowed_ports)}",
            ingress.declared_by.urn,
        )


def check_database_ingress(resources: Sequence[Resource], ctx: Context) -> Iterable[Violation]:
    groups = of_type(resources, SECURITY_GROUP)
    db_groups = _groups_used_by(of_type(resources, DB_INSTANCE), groups, "vpcSecurityGroupIds")
    services = of_type(resources, ECS_SERVICE)
    service_groups = [
        g
        for g in groups
        if any(
            g.urn in svc.property_dependencies.get("networkConfiguration", ())
            or refers(known(first_block(svc.props.get("networkConfiguration")), "securityGroups"), g)
            for svc in services
        )
    ]
    backend_groups = set() if services else _load_balancer_backends(resources, groups)
    db_group_urns = {g.urn for g in db_groups}
    # A stack without an instance of its own (a team on its platform's shared instance,
    # database.placement: shared) opens the platform's database group, which it does not declare:
    # its rules admitting PostgreSQL to a group from elsewhere are the database's ingress.
    shared_instance = not of_type(resources, DB_INSTANCE)
    for ingress in collect_ingress(resources):
        if ingress.group is None:
            if not (shared_instance and _admits_postgres(ingress)):
                continue
        elif ingress.group.urn not in db_group_urns:
            continue
        from_service = any(ingress.allows_from(g) for g in service_groups) or (
            bool(ingress.source_groups) and set(ingress.source_groups) <= backend_groups
        )
        opened_wider = ingress.cidrs or ingress.prefix_lists or ingress.self_referencing
        if opened_wider or not from_service:
            yield Violation(
                f"database security group {_name_of(ingress)} allows {ingress.describe()}: "
                "only the MLflow service's security group may reach the database",
                ingress.declared_by.urn,
            )


def _name_of(ingress: Ingress) -> str:
    if ingress.group is not None:
        return ingress.group.name
    return f"{known(ingress.declared_by.props, 'securityGroupId') or '?'} (the platform's shared instance)"


def _admits_postgres(ingress: Ingress) -> bool:
    if ingress.protocol in ("-1", "all"):
        return True
    low, high = ingress.from_port, ingress.to_port
    return ingress.protocol == "tcp" and low is not None and high is not None and low <= POSTGRES_PORT <= high


def _load_balancer_backends(resources: Sequence[Resource], groups: Sequence[Resource]) -> set[str]:
    """Without an ECS service (compute.backend: kubernetes) the MLflow replicas are the security
    group the load balancer forwards to: the groups its own group's egress rules reference."""
    balancer_groups = _groups_used_by(of_type(resources, *LOAD_BALANCERS), groups, "securityGroups")
    return {
        str(source)
        for rule in of_type(resources, EGRESS_RULE)
        if any(references(rule, "securityGroupId", g) for g in balancer_groups)
        for source in known_items(known(rule.props, "referencedSecurityGroupId"))
    }


def _created_after(resources: Sequence[Resource]) -> dict[str, set[str]]:
    """urn -> every urn the engine creates before it (dependencies, transitively)."""
    direct = {r.urn: set(r.dependencies) for r in resources}
    closure: dict[str, set[str]] = {}
    for urn in direct:
        seen: set[str] = set()
        pending = list(direct[urn])
        while pending:
            current = pending.pop()
            if current not in seen:
                seen.add(current)
                pending.extend(direct.get(current, ()))
        closure[urn] = seen
    return closure


def check_internet_gateway_first(resources: Sequence[Resource], ctx: Context) -> Iterable[Violation]:
    gateways = of_type(resources, INTERNET_GATEWAY)
    if not gateways:
        return  # an existing VPC: its gateway is already attached
    after = _created_after(resources)
    public_nats = [n for n in of_type(resources, NAT_GATEWAY) if n.props.get("connectivityType") != "private"]
    albs = [
        lb
        for lb in of_type(resources, *LOAD_BALANCERS)
        if is_application(lb) and not truthy(lb.props.get("internal"))
    ]
    for resource in [*public_nats, *of_type(resources, ELASTIC_IP), *albs]:
        if not any(gateway.urn in after[resource.urn] for gateway in gateways):
            yield Violation(
                f"{resource.name} can be created before the internet gateway is attached "
                "(Gateway.NotAttached / InvalidSubnet on a first `pulumi up`)",
                resource.urn,
            )


RULES = (
    Rule(
        name="no-public-ingress",
        description="No security group accepts traffic from 0.0.0.0/0 or ::/0, except the ALB on 80/443.",
        enforcement="mandatory",
        remediation="Restrict the rule to a security-group source; only the ALB's group may be public.",
        config={
            "allowedPublicPorts": {
                "type": "array",
                "items": {"type": "integer"},
                "default": [80, 443],
                "description": "Ports the application load balancer may expose to the internet.",
            }
        },
        check_stack=check_public_ingress,
    ),
    Rule(
        name="database-ingress-from-service-only",
        description="The database's security group only admits the MLflow service's security group.",
        enforcement="mandatory",
        remediation="Replace CIDR rules on the database group with one referencing the ECS service's group "
        "(on Kubernetes: the cluster security group the load balancer forwards to).",
        check_stack=check_database_ingress,
    ),
    Rule(
        name="internet-gateway-first",
        description="Elastic IPs, public NAT gateways and internet-facing ALBs depend on the VPC's "
        "internet gateway.",
        enforcement="mandatory",
        remediation="Pass depends_on=[internet_gateway] (or an input derived from it) to the resource.",
        check_stack=check_internet_gateway_first,
    ),
)
