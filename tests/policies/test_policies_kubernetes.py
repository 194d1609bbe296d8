"""Kubernetes rules on crafted workloads: the kit's own manifests pass, each weakening fails."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from policy_helpers import res, violations

from infra.compute import kubernetes_manifests as manifests
from infra.compute.spec import ServerSpec
from server import contract

DEPLOYMENT = "kubernetes:apps/v1:Deployment"
CRON_JOB = "kubernetes:batch/v1:CronJob"
JOB = "kubernetes:batch/v1:Job"
PDB = "kubernetes:policy/v1:PodDisruptionBudget"
HPA = "kubernetes:autoscaling/v2:HorizontalPodAutoscaler"
DIGEST_IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/mlflow@sha256:" + "ab" * 32
SPEC = ServerSpec(
    image=DIGEST_IMAGE,
    entrypoint=contract.ENTRYPOINT,
    command=contract.COMMAND,
    environment={"MLFLOW_STACK_DB_HOST": "db.internal", "MLFLOW_STACK_DB_USER": "mlflow"},
    secrets={"MLFLOW_STACK_DB_PASSWORD": "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-AbCdEf"},
    port=8080,
    health_path="/health",
    cpu=1024,
    memory=2048,
)
WORKLOAD = manifests.Workload(
    namespace="mlflow",
    instance="mlflow-prod",
    region="us-east-1",
    secrets_delivery="externalSecrets",
    pod_identity=False,
    min_replicas=2,
    max_replicas=6,
    target_cpu_percent=60,
    scale_in_cooldown_seconds=300,
    scale_out_cooldown_seconds=60,
    startup_grace_seconds=120,
    termination_grace_seconds=60,
    deregistration_delay_seconds=30,
    migration_timeout_seconds=900,
    load_balancer_cidrs=("10.0.0.0/24",),
    database_cidrs=("10.0.1.0/24",),
)
POD_RULES = (
    "k8s-non-root",
    "k8s-read-only-root-filesystem",
    "k8s-resource-limits",
    "k8s-no-host-access-or-privilege",
    "k8s-image-pinned-by-digest",
    "k8s-no-plain-secrets",
)


def _deployment(**changes: Any):
    manifest = manifests.deployment(SPEC, WORKLOAD)
    return res(DEPLOYMENT, "server", metadata=manifest["metadata"], spec=manifest["spec"], **changes)


def _mutated(change) -> Any:
    manifest = copy.deepcopy(manifests.deployment(SPEC, WORKLOAD))
    change(manifest["spec"]["template"]["spec"], manifest["spec"]["template"]["spec"]["containers"][0])
    return res(DEPLOYMENT, "server", metadata=manifest["metadata"], spec=manifest["spec"])


def _budget_and_autoscaler() -> list[Any]:
    budget = manifests.disruption_budget(WORKLOAD)
    hpa = manifests.autoscaler(WORKLOAD)
    return [res(PDB, "pdb", metadata=budget["metadata"], spec=budget["spec"]), res(HPA, "hpa", **hpa)]


@pytest.mark.parametrize("rule", [*POD_RULES, "k8s-probes", "mlflow-basic-auth"])
def test_the_kits_deployment_passes(rule):
    assert violations(rule, _deployment()) == []


@pytest.mark.parametrize("rule", POD_RULES)
def test_the_kits_job_and_cronjob_pass(rule):
    job = manifests.migration_job(SPEC, WORKLOAD, contract.MIGRATE_COMMAND)
    maintenance = manifests.Maintenance(
        schedule="0 3 * * SUN",
        timezone="UTC",
        entrypoint=("python", "-m", "cli.runs"),
        arguments=("runs", "maintenance", "--apply"),
        environment={"MLFLOW_STACK_DB_HOST": "db.internal"},
        secrets={"MLFLOW_TRACKING_PASSWORD": "MLFLOW_STACK_ADMIN_PASSWORD"},
        cpu=512,
        memory=1024,
    )
    cronjob = manifests.maintenance_cronjob(SPEC, WORKLOAD, maintenance)
    assert violations(rule, [res(JOB, "migrate", **job), res(CRON_JOB, "maintenance", **cronjob)]) == []


def test_root_or_unset_non_root_fails():
    def as_root(pod, container):
        pod["securityContext"]["runAsUser"] = 0
        container["securityContext"]["runAsUser"] = 0

    assert violations("k8s-non-root", _mutated(as_root)) == ["container mlflow runs as uid 0"]

    def unset(pod, container):
        del pod["securityContext"]["runAsNonRoot"], container["securityContext"]["runAsNonRoot"]

    assert violations("k8s-non-root", _mutated(unset)) == ["container mlflow does not set runAsNonRoot: true"]


def test_writable_root_filesystem_fails():
    def writable(pod, container):
        container["securityContext"]["readOnlyRootFilesystem"] = False

    assert violations("k8s-read-only-root-filesystem", _mutated(writable)) == [
        "container mlflow has a writable root filesystem (readOnlyRootFilesystem)"
    ]


def test_missing_limits_or_overcommitted_memory_fails():
    def no_limits(pod, container):
        del container["resources"]["limits"]

    assert violations("k8s-resource-limits", _mutated(no_limits)) == [
        "container mlflow lacks resources limits.cpu, limits.memory"
    ]

    def burstable(pod, container):
        container["resources"]["limits"]["memory"] = "4096Mi"

    assert violations("k8s-resource-limits", _mutated(burstable)) == [
        "container mlflow: memory request 2048Mi != limit 4096Mi"
    ]


def test_missing_probes_fail():
    def no_startup(pod, container):
        del container["startupProbe"], container["livenessProbe"]

    assert violations("k8s-probes", _mutated(no_startup)) == [
        "container mlflow has no startupProbe, livenessProbe"
    ]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda pod, c: pod.update(hostNetwork=True), "pod uses hostNetwork"),
        (lambda pod, c: c["securityContext"].update(privileged=True), "container mlflow runs privileged"),
        (
            lambda pod, c: c["securityContext"].update(allowPrivilegeEscalation=True),
            "container mlflow does not set allowPrivilegeEscalation: false",
        ),
        (
            lambda pod, c: c["securityContext"]["capabilities"].update(add=["NET_ADMIN"]),
            "container mlflow adds capabilities ['NET_ADMIN']",
        ),
        (
            lambda pod, c: pod["volumes"].append({"name": "host", "hostPath": {"path": "/"}}),
            "volume host mounts a hostPath",
        ),
    ],
)
def test_host_access_and_privilege_fail(change, message):
    assert violations("k8s-no-host-access-or-privilege", _mutated(change)) == [message]


def test_a_tag_instead_of_a_digest_fails():
    def tagged(pod, container):
        container["image"] = "123456789012.dkr.ecr.us-east-1.amazonaws.com/mlflow:3.17.2"

    (message,) = violations("k8s-image-pinned-by-digest", _mutated(tagged))
    assert message.endswith("is not pinned by digest (@sha256:...)")


def test_plain_secret_values_fail_in_env_and_as_secret_objects():
    def plain(pod, container):
        container["env"].append({"name": "MLFLOW_STACK_ADMIN_PASSWORD", "value": "hunter2hunter2"})
        container["env"].append({"name": "DATABASE_URL", "value": "postgresql://u:p@db/mlflow"})

    found = violations("k8s-no-plain-secrets", _mutated(plain))
    assert found == [
        "container mlflow: MLFLOW_STACK_ADMIN_PASSWORD looks like a secret in a plain env value",
        "container mlflow: DATABASE_URL holds a database/credential URI in a plain env value",
    ]
    assert all("hunter2" not in message for message in found)  # the value is never echoed
    secret = res("kubernetes:core/v1:Secret", "s", metadata={"name": "db"}, stringData={"password": "x"})
    assert violations("k8s-no-plain-secrets", secret)
    assert (
        violations("k8s-no-plain-secrets", res("kubernetes:core/v1:Secret", "s", metadata={"name": "x"}))
        == []
    )


def test_a_prod_deployment_needs_a_matching_disruption_budget():
    budget, _ = _budget_and_autoscaler()
    assert violations("k8s-disruption-budget-in-prod", [_deployment(), budget], environment="prod") == []
    (message,) = violations("k8s-disruption-budget-in-prod", [_deployment()], environment="prod")
    assert message == "prod Deployment mlflow-server has no PodDisruptionBudget selecting its pods"
    other = res(
        PDB,
        "pdb",
        metadata=budget.props["metadata"],
        spec={"maxUnavailable": 1, "selector": {"matchLabels": {"app": "x"}}},
    )
    assert violations("k8s-disruption-budget-in-prod", [_deployment(), other], environment="prod")
    assert violations("k8s-disruption-budget-in-prod", [_deployment()], environment="dev") == []


def test_mlflow_without_basic_auth_fails_on_kubernetes_too():
    def open_server(pod, container):
        container["args"] = ["serve"]

    assert violations("mlflow-basic-auth", _mutated(open_server)) == [
        "container mlflow starts MLflow without --app-name basic-auth"
    ]


def test_prod_deployments_must_be_autoscaled_from_two_replicas():
    _, hpa = _budget_and_autoscaler()
    assert violations("mlflow-prod-replicas-autoscaled", [_deployment(), hpa], environment="prod") == []
    assert violations("mlflow-prod-replicas-autoscaled", [_deployment()], environment="prod") == [
        "prod Deployment mlflow-server has no HorizontalPodAutoscaler"
    ]
    single = res(
        HPA,
        "hpa",
        metadata=hpa.props["metadata"],
        spec={**hpa.props["spec"], "minReplicas": 1, "maxReplicas": 1},
    )
    assert violations("mlflow-prod-replicas-autoscaled", [_deployment(), single], environment="prod") == [
        "prod Deployment mlflow-server may scale in to 1 replica(s)",
        "prod Deployment mlflow-server cannot scale out (maxReplicas 1)",
    ]
