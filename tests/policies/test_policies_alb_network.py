"""ALB and security-group rules on crafted resources."""

from __future__ import annotations

from policy_helpers import res, violations

LB = "aws:lb/loadBalancer:LoadBalancer"
LISTENER = "aws:lb/listener:Listener"
SG = "aws:ec2/securityGroup:SecurityGroup"
INGRESS = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
REDIRECT = [{"type": "redirect", "redirect": {"protocol": "HTTPS", "port": "443", "statusCode": "HTTP_301"}}]


def https(**overrides):
    props = {
        "protocol": "HTTPS",
        "port": 443,
        "sslPolicy": "ELBSecurityPolicy-TLS13-1-2-2021-06",
        "certificateArn": "arn:cert",
    }
    return res(LISTENER, "https", **{**props, **overrides})


def test_https_listener_with_approved_policy_passes_and_old_tls_fails():
    assert violations("alb-https-tls-policy", https()) == []
    assert (
        "ELBSecurityPolicy-2016-08"
        in violations("alb-https-tls-policy", https(sslPolicy="ELBSecurityPolicy-2016-08"))[0]
    )
    assert violations("alb-https-tls-policy", https(certificateArn=None)) == [
        "HTTPS listener has no certificateArn"
    ]
    assert violations(
        "alb-https-tls-policy", https(), config={"approvedPolicies": ["ELBSecurityPolicy-TLS13-1-3-2021-06"]}
    )


def test_http_listener_must_only_redirect_to_https():
    redirect = res(LISTENER, "http", protocol="HTTP", port=80, defaultActions=REDIRECT)
    assert violations("alb-http-redirect-only", [redirect]) == []
    forward = res(
        LISTENER,
        "http",
        protocol="HTTP",
        port=80,
        defaultActions=[{"type": "forward", "targetGroupArn": "tg"}],
    )
    assert violations("alb-http-redirect-only", [forward]) == [
        "HTTP listener http does something other than redirect to HTTPS"
    ]
    rule = res(
        "aws:lb/listenerRule:ListenerRule",
        "sneaky",
        listenerArn="http",
        actions=[{"type": "forward", "targetGroupArn": "tg"}],
    )
    assert violations("alb-http-redirect-only", [redirect, rule]) == [
        "listener rule sneaky on an HTTP listener does not redirect to HTTPS"
    ]


def test_load_balancer_must_drop_invalid_headers():
    assert violations("alb-drop-invalid-headers", res(LB, "alb", dropInvalidHeaderFields=True)) == []
    assert violations("alb-drop-invalid-headers", res(LB, "alb"))
    # Network load balancers have no HTTP headers to drop.
    assert violations("alb-drop-invalid-headers", res(LB, "nlb", loadBalancerType="network")) == []


def _edge(ingress_cidr: str = "0.0.0.0/0", port: int = 443) -> list:
    return [
        res(LB, "alb", securityGroups=["alb-sg"], dropInvalidHeaderFields=True),
        res(SG, "alb-sg"),
        res(
            INGRESS,
            "alb-in",
            securityGroupId="alb-sg",
            cidrIpv4=ingress_cidr,
            ipProtocol="tcp",
            fromPort=port,
            toPort=port,
        ),
    ]


def test_only_the_alb_may_be_public_and_only_on_80_443():
    assert violations("no-public-ingress", _edge()) == []
    assert violations("no-public-ingress", _edge(port=80)) == []
    assert "alb-sg allows tcp 22-22 from 0.0.0.0/0" in violations("no-public-ingress", _edge(port=22))[0]
    assert violations("no-public-ingress", _edge(ingress_cidr="::/0", port=8080))


def test_public_ingress_on_a_non_alb_group_fails_in_every_shape():
    inline = res(
        SG,
        "app-sg",
        ingress=[{"protocol": "tcp", "fromPort": 443, "toPort": 443, "cidrBlocks": ["0.0.0.0/0"]}],
    )
    assert violations("no-public-ingress", [inline])
    legacy = [
        res(SG, "app-sg"),
        res(
            "aws:ec2/securityGroupRule:SecurityGroupRule",
            "r",
            type="ingress",
            securityGroupId="app-sg",
            protocol="-1",
            fromPort=0,
            toPort=0,
            ipv6CidrBlocks=["::/0"],
        ),
    ]
    assert "all ports" in violations("no-public-ingress", legacy)[0]


def _data_path(rule) -> list:
    return [
        res("aws:rds/instance:Instance", "db", vpcSecurityGroupIds=["db-sg"]),
        res(SG, "db-sg"),
        res(SG, "svc-sg"),
        res(
            "aws:ecs/service:Service",
            "svc",
            networkConfiguration={"securityGroups": ["svc-sg"], "assignPublicIp": False},
        ),
        rule,
    ]


def test_database_admits_only_the_service_group():
    from_service = res(
        INGRESS,
        "db-in",
        securityGroupId="db-sg",
        referencedSecurityGroupId="svc-sg",
        ipProtocol="tcp",
        fromPort=5432,
        toPort=5432,
    )
    assert violations("database-ingress-from-service-only", _data_path(from_service)) == []
    from_vpc = res(
        INGRESS,
        "db-in",
        securityGroupId="db-sg",
        cidrIpv4="10.0.0.0/16",
        ipProtocol="tcp",
        fromPort=5432,
        toPort=5432,
    )
    assert (
        "only the MLflow service's security group"
        in violations("database-ingress-from-service-only", _data_path(from_vpc))[0]
    )
    from_other = res(
        INGRESS,
        "db-in",
        securityGroupId="db-sg",
        referencedSecurityGroupId="bastion-sg",
        ipProtocol="tcp",
        fromPort=5432,
        toPort=5432,
    )
    assert violations("database-ingress-from-service-only", _data_path(from_other))


def test_a_team_on_a_shared_instance_admits_only_its_service_group():
    # database.placement: shared — the instance and its group are the platform's: the team's rule
    # opens a group it does not declare (a StackReference output), on PostgreSQL's port.
    def team(rule) -> list:
        return [
            res(SG, "svc-sg"),
            res(
                "aws:ecs/service:Service",
                "svc",
                networkConfiguration={"securityGroups": ["svc-sg"], "assignPublicIp": False},
            ),
            rule,
        ]

    def ingress(**source) -> object:
        return res(INGRESS, "db-in", securityGroupId="sg-platform-db", ipProtocol="tcp", **source)

    assert (
        violations(
            "database-ingress-from-service-only",
            team(ingress(referencedSecurityGroupId="svc-sg", fromPort=5432, toPort=5432)),
        )
        == []
    )
    wide = violations(
        "database-ingress-from-service-only",
        team(ingress(cidrIpv4="10.0.0.0/16", fromPort=5000, toPort=6000)),
    )
    assert len(wide) == 1 and "sg-platform-db (the platform's shared instance)" in wide[0]
    # Another port on a group from elsewhere is not the database's business.
    assert (
        violations(
            "database-ingress-from-service-only",
            team(ingress(cidrIpv4="10.0.0.0/16", fromPort=443, toPort=443)),
        )
        == []
    )


def _ordered(*, eip_after_igw: bool) -> list:
    from dataclasses import replace

    igw = res("aws:ec2/internetGateway:InternetGateway", "igw")
    eip = res("aws:ec2/eip:Eip", "eip", domain="vpc")
    nat = res("aws:ec2/natGateway:NatGateway", "nat", allocationId="eip")
    alb = res("aws:lb/loadBalancer:LoadBalancer", "alb", internal=False)
    if eip_after_igw:
        eip = replace(eip, dependencies=(igw.urn,))
    # The NAT gateway reaches the gateway only through its address; the ALB through its subnets' route.
    return [igw, eip, replace(nat, dependencies=(eip.urn,)), replace(alb, dependencies=(igw.urn,))]


def test_internet_gateway_first_follows_dependencies_transitively():
    assert violations("internet-gateway-first", _ordered(eip_after_igw=True)) == []
    found = violations("internet-gateway-first", _ordered(eip_after_igw=False))
    assert [message.split(" ")[0] for message in found] == ["nat", "eip"]
    assert all("before the internet gateway is attached" in message for message in found)


def test_internet_gateway_first_on_the_kits_stacks(own_stacks):
    for stack, resources in own_stacks.items():
        assert violations("internet-gateway-first", resources) == [], stack
