"""Advisory: the evidence trail an incident review needs (ALB access logs, VPC flow logs)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from policies.model import Context, Resource, Violation, first_block, of_type, references, truthy
from policies.rules.alb import LOAD_BALANCERS, is_application
from policies.spec import Rule

VPC = "aws:ec2/vpc:Vpc"
FLOW_LOG = "aws:ec2/flowLog:FlowLog"


def check_alb_access_logs(resource: Resource, ctx: Context) -> Iterable[str]:
    logs = first_block(resource.props.get("accessLogs"))
    if is_application(resource) and not (truthy(logs.get("enabled")) and logs.get("bucket")):
        yield "access logs are off (accessLogs.enabled with a bucket)"


def check_vpc_flow_logs(resources: Sequence[Resource], ctx: Context) -> Iterable[Violation]:
    flow_logs = of_type(resources, FLOW_LOG)
    for vpc in of_type(resources, VPC):
        if not any(references(log, "vpcId", vpc) for log in flow_logs):
            yield Violation(f"VPC {vpc.name} has no flow log", vpc.urn)


RULES = (
    Rule(
        name="alb-access-logs",
        description="Application load balancers write access logs.",
        enforcement="advisory",
        remediation="Set load_balancer.accessLogs: true in the stack file.",
        types=LOAD_BALANCERS,
        check_resource=check_alb_access_logs,
    ),
    Rule(
        name="vpc-flow-logs",
        description="VPCs created by the stack record flow logs.",
        enforcement="advisory",
        remediation="Set network.flowLogs: true in the stack file.",
        check_stack=check_vpc_flow_logs,
    ),
)
