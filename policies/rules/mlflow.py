"""MLflow itself: basic-auth on, prod served by several autoscaled replicas, artifacts readable."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from policies.model import Context, Resource, Violation, as_list, known, of_type, shown
from policies.rules.ecs import SERVICE, TASK_DEFINITIONS, containers
from policies.rules.kubernetes import WORKLOADS, as_task_containers, check_prod_deployments_autoscaled
from policies.rules.s3 import LIFECYCLE, enabled_rules
from policies.spec import ENVIRONMENT_PROPERTY, Rule

SCALABLE_TARGET = "aws:appautoscaling/target:Target"
# S3 classes GetObject cannot read without a RestoreObject first (S3 User Guide, "Understanding
# archival storage in S3 Glacier Flexible Retrieval and S3 Glacier Deep Archive").
NEEDS_RESTORE = frozenset({"GLACIER", "DEEP_ARCHIVE"})
# Where a server container is told to put artifacts: the kit's contract variable, or MLflow's flags.
ARTIFACT_ENV = "MLFLOW_STACK_ARTIFACTS_DESTINATION"
ARTIFACT_FLAGS = ("--artifacts-destination", "--default-artifact-root")
SCALING_POLICY = "aws:appautoscaling/policy:Policy"
DESIRED_COUNT = "ecs:service:DesiredCount"


def _words(container: Mapping[str, Any]) -> list[str]:
    # Split each word too: `sh -c "mlflow server ..."` carries the whole command line in one word.
    return [
        part
        for word in as_list(container.get("entryPoint")) + as_list(container.get("command"))
        for part in str(word).split()
    ]


def is_mlflow_server(container: Mapping[str, Any]) -> bool:
    """A container that starts the MLflow server: the kit's entrypoint (`python -m server.entrypoint`),
    an `mlflow server` command (`mlflow`, `/usr/local/bin/mlflow` or `python -m mlflow`), or an MLflow
    image left to its default command. An MLflow image running something else (the maintenance task's
    `python -m cli.runs`, the entrypoint's `bootstrap-db` step before the server) is not a server."""
    words = _words(container)
    if not words:
        return "mlflow" in str(container.get("image")).lower()
    if "server.entrypoint" in words:
        subcommand = words[words.index("server.entrypoint") + 1 : words.index("server.entrypoint") + 2]
        return subcommand in ([], ["serve"])
    return any(a.rsplit("/", 1)[-1] == "mlflow" and b == "server" for a, b in itertools.pairwise(words))


def _basic_auth(words: list[str]) -> bool:
    pairs = itertools.pairwise(words)
    return "--app-name=basic-auth" in words or any(a == "--app-name" and b == "basic-auth" for a, b in pairs)


def _server_side_containers(resource: Resource) -> list[Mapping[str, Any]]:
    """ECS container definitions, or a Kubernetes workload's containers in that shape."""
    return containers(resource) if resource.type in TASK_DEFINITIONS else as_task_containers(resource)


def check_basic_auth(resource: Resource, ctx: Context) -> Iterable[str]:
    for container in _server_side_containers(resource):
        if is_mlflow_server(container) and not _basic_auth(_words(container)):
            yield f"container {container.get('name')} starts MLflow without --app-name basic-auth"


def _targets_for(service: Resource, targets: list[Resource]) -> list[Resource]:
    # Autoscaling names the service "service/<cluster>/<service name>"; without a `name` input
    # the service's physical name is its id.
    name = known(service.props, "name") or known(service.props, "id")
    return [
        t
        for t in targets
        if t.props.get("scalableDimension") == DESIRED_COUNT
        and (
            service.urn in t.property_dependencies.get("resourceId", ())
            or (isinstance(name, str) and str(known(t.props, "resourceId") or "").endswith(f"/{name}"))
        )
    ]


def _has_policy(target: Resource, policies: list[Resource]) -> bool:
    resource_id = known(target.props, "resourceId")
    return any(
        p.props.get("policyType", "StepScaling") in ("TargetTrackingScaling", "StepScaling")
        and (
            target.urn in p.property_dependencies.get("resourceId", ())
            or (resource_id is not None and known(p.props, "resourceId") == resource_id)
        )
        for p in policies
    )


def check_prod_replicas(resources: Sequence[Resource], ctx: Context) -> Iterable[Violation]:
    if not ctx.is_prod:
        return
    minimum = ctx.config["minReplicas"]
    yield from check_prod_deployments_autoscaled(resources, minimum)
    targets = of_type(resources, SCALABLE_TARGET)
    policies = of_type(resources, SCALING_POLICY)
    for service in of_type(resources, SERVICE):
        desired = service.props.get("desiredCount")
        if not isinstance(desired, int | float) or desired < minimum:
            yield Violation(
                f"prod service {service.name} starts {shown(desired)} task(s), minimum {shown(minimum)}",
                service.urn,
            )
        own = _targets_for(service, targets)
        if not own:
            yield Violation(f"prod service {service.name} has no autoscaling target", service.urn)
            continue
        for target in own:
            low, high = target.props.get("minCapacity"), target.props.get("maxCapacity")
            if not isinstance(low, int | float) or low < minimum:
                yield Violation(
                    f"prod service {service.name} may scale in to {shown(low)} task(s), "
                    f"minimum {shown(minimum)}",
                    target.urn,
                )
            if not isinstance(high, int | float) or not isinstance(low, int | float) or high <= low:
                yield Violation(
                    f"prod service {service.name} cannot scale out (maxCapacity {shown(high)})", target.urn
                )
            if not _has_policy(target, policies):
                yield Violation(
                    f"prod service {service.name} has a scaling target but no scaling policy", target.urn
                )


def artifact_destinations(resources: Sequence[Resource]) -> list[tuple[str, str]]:
    """(bucket, key prefix) of every s3:// artifact location an MLflow server container is given."""
    found = []
    for task in of_type(resources, *TASK_DEFINITIONS, *WORKLOADS):
        for container in _server_side_containers(task):
            if not is_mlflow_server(container):
                continue
            values = [
                e.get("value") for e in as_list(container.get("environment")) if e.get("name") == ARTIFACT_ENV
            ]
            words = _words(container)
            values += [b for a, b in itertools.pairwise(words) if a in ARTIFACT_FLAGS]
            values += [w.split("=", 1)[1] for w in words if w.split("=", 1)[0] in ARTIFACT_FLAGS and "=" in w]
            for value in values:
                if isinstance(value, str) and value.startswith("s3://"):
                    bucket, _, prefix = value.removeprefix("s3://").partition("/")
                    found.append((bucket, prefix.strip("/")))
    return found


def _overlaps(rule: Mapping[str, Any], prefix: str) -> bool:
    """Whether a lifecycle rule's filter can match keys under `prefix` (no prefix: every key)."""
    rule_filter = rule.get("filter") or {}
    rule_prefix = (rule_filter.get("prefix") if isinstance(rule_filter, Mapping) else None) or ""
    rule_prefix = rule_prefix or str(rule.get("prefix") or "")
    return prefix.startswith(rule_prefix) or rule_prefix.startswith(prefix)


def check_artifacts_readable(resources: Sequence[Resource], ctx: Context) -> Iterable[Violation]:
    destinations = artifact_destinations(resources)
    for config in of_type(resources, *LIFECYCLE):
        bucket = known(config.props, "bucket")
        prefixes = [prefix for name, prefix in destinations if name == bucket]
        for rule in enabled_rules([config]):
            if not any(_overlaps(rule, prefix) for prefix in prefixes):
                continue
            transitions = as_list(rule.get("transitions")) + as_list(rule.get("noncurrentVersionTransitions"))
            for transition in transitions:
                storage_class = transition.get("storageClass") if isinstance(transition, Mapping) else None
                if storage_class in NEEDS_RESTORE:
                    yield Violation(
                        f"lifecycle rule {rule.get('id')} moves MLflow artifacts in bucket {bucket} to "
                        f"{storage_class}; GetObject fails there until a restore, so old artifacts and "
                        "registered model versions could no longer be downloaded or rolled back to",
                        config.urn,
                    )


RULES = (
    Rule(
        name="mlflow-basic-auth",
        description="The MLflow server runs with --app-name basic-auth.",
        enforcement="mandatory",
        remediation="Start the server through server.entrypoint (its command carries --app-name basic-auth).",
        types=TASK_DEFINITIONS | WORKLOADS,
        check_resource=check_basic_auth,
    ),
    Rule(
        name="mlflow-prod-replicas-autoscaled",
        description="Prod runs at least two MLflow replicas and autoscales (scaling target and policy).",
        enforcement="mandatory",
        remediation="Set server.minReplicas >= 2 and server.maxReplicas above it in the prod stack file "
        "(ECS: scalable target and policy; Kubernetes: a HorizontalPodAutoscaler on the Deployment).",
        config={
            **ENVIRONMENT_PROPERTY,
            "minReplicas": {
                "type": "integer",
                "minimum": 1,
                "default": 2,
                "description": "Fewest replicas a prod service may run or scale in to.",
            },
        },
        check_stack=check_prod_replicas,
    ),
    Rule(
        name="mlflow-artifacts-instantly-readable",
        description="Lifecycle rules never move an MLflow server's artifacts to a class needing a restore.",
        enforcement="mandatory",
        remediation="Transition artifacts only to STANDARD_IA, INTELLIGENT_TIERING or GLACIER_IR "
        "(artifacts.archiveStorageClass), never GLACIER or DEEP_ARCHIVE.",
        check_stack=check_artifacts_readable,
    ),
)
