"""Settings for compute.backend: kubernetes — defaults, one message per problem, schedules."""

from __future__ import annotations

from typing import Any

import pytest

from infra.settings import SettingsError, build_settings, cron_for_kubernetes

DOMAIN = {"name": "mlflow.vision.example.com", "hostedZoneId": "Z04517273RN5WZ0CTKS7E"}
NETWORK = {
    "existingVpcId": "vpc-0a1b2c3d4e5f60718",
    "existingPrivateSubnetIds": ["subnet-0a11b22c33d44e551", "subnet-0a11b22c33d44e552"],
}
CLUSTER = {
    "clusterName": "platform-prod",
    "kubeconfigSource": "stackReference",
    "clusterStack": "acme/eks-platform/prod",
    "oidcIssuer": "oidc.eks.us-east-1.amazonaws.com/id/5E1F2A9C7B3D4C8E9A612E4F8D0B7C35",
    "clusterSecurityGroupId": "sg-0c4f1e2d3b5a69788",
}
BASE: dict[str, Any] = {
    "owner": "vision-ml@example.com",
    "costCenter": "CC-4270",
    "domain": DOMAIN,
    "network": NETWORK,
    "loadBalancer": {"internetFacing": False},
    "compute": {"backend": "kubernetes"},
    "kubernetes": CLUSTER,
}


def build(stack: str = "vision-prod", **raw: Any):
    config = {**BASE, **raw}
    return build_settings(stack, "us-east-1", {k: v for k, v in config.items() if v is not None})


def problems(**raw: Any) -> list[str]:
    with pytest.raises(SettingsError) as caught:
        build(**raw)
    return caught.value.problems


def test_a_complete_kubernetes_section_loads_with_documented_defaults():
    loaded = build()
    assert loaded.on_kubernetes
    cluster = loaded.kubernetes
    assert (cluster.namespace, cluster.identity, cluster.secrets_delivery) == (
        "mlflow",
        "irsa",
        "externalSecrets",
    )
    assert cluster.pod_metrics == "containerInsights"
    assert cluster.version == "1.33"
    # The prod preset's replicas feed the HorizontalPodAutoscaler as they feed ECS autoscaling.
    assert (loaded.server.min_replicas, loaded.server.max_replicas) == (2, 6)


def test_ecs_stays_the_default_and_needs_no_kubernetes_section():
    loaded = build(compute=None, kubernetes=None, network=None, loadBalancer=None)
    assert not loaded.on_kubernetes and loaded.compute.backend == "ecs"


def test_an_https_issuer_is_accepted_and_stored_without_its_scheme():
    issuer = "https://" + CLUSTER["oidcIssuer"]
    assert build(kubernetes={**CLUSTER, "oidcIssuer": issuer}).kubernetes.oidc_issuer == CLUSTER["oidcIssuer"]


def test_every_missing_piece_is_its_own_message_naming_the_setting_and_the_fix():
    found = problems(kubernetes={"kubeconfigSource": "stackReference"}, network=None)
    keys = [problem.split(":")[1] for problem in found]
    assert keys == [
        "kubernetes.clusterName",
        "kubernetes.clusterSecurityGroupId",
        "kubernetes.oidcIssuer",
        "kubernetes.clusterStack",
        "network.existingVpcId",
    ], found
    assert all(" — " in problem for problem in found)  # what is wrong — how to fix it
    assert "aws eks describe-cluster" in found[2]


def test_config_kubeconfig_must_be_set_and_is_never_kept_in_settings():
    found = problems(kubernetes={**CLUSTER, "kubeconfigSource": "config"})
    assert found == [
        "mlflow-stack:kubeconfig: is not set but kubernetes.kubeconfigSource is 'config' — run "
        "`pulumi config set --secret kubeconfig < kubeconfig.yaml`, or use kubeconfigSource: stackReference"
    ]
    secret = "apiVersion: v1\nusers: [{user: {token: do-not-keep}}]"  # noqa: S105 - a test value
    loaded = build(kubernetes={**CLUSTER, "kubeconfigSource": "config"}, kubeconfig=secret)
    assert "do-not-keep" not in loaded.model_dump_json()


def test_pod_identity_cannot_feed_external_secrets_but_can_feed_the_csi_driver():
    pod_identity = {**CLUSTER, "identity": "podIdentity", "oidcIssuer": None}
    found = problems(kubernetes={k: v for k, v in pod_identity.items() if v is not None})
    assert len(found) == 1 and found[0].startswith("mlflow-stack:kubernetes.secretsDelivery:")
    loaded = build(
        kubernetes={**{k: v for k, v in pod_identity.items() if v}, "secretsDelivery": "csiDriver"}
    )
    assert loaded.kubernetes.identity == "podIdentity"


def test_termination_grace_must_outlast_the_load_balancer_deregistration():
    found = problems(
        kubernetes={**CLUSTER, "terminationGraceSeconds": 30},
        loadBalancer={"internetFacing": False, "deregistrationDelaySeconds": 45},
    )
    assert found == [
        "mlflow-stack:kubernetes.terminationGraceSeconds: 30s is not above "
        "loadBalancer.deregistrationDelaySeconds (45s): pods would be killed while the load balancer "
        "still sends them requests — set "
        "terminationGraceSeconds above the deregistration delay (e.g. delay + 30)"
    ]


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("namespace", "MLflow_NS", "DNS-1123 label"),
        ("oidcIssuer", "https://example.com/issuer", "oidc.eks.<region>.amazonaws.com/id/<ID>"),
        ("clusterSecurityGroupId", "sg-nope", "sg-0123456789abcdef0"),
        ("clusterStack", "eks-platform", "<organization>/<project>/<stack>"),
        ("version", "1.20", "between 1.25 and 1.39"),
        ("identity", "kiam", "use one of 'irsa' or 'podIdentity'"),
        ("httpsEgressCidrs", ["10.0.0.0/33"], "is not a CIDR block"),
        ("httpsEgressCidrs", [], "at least one CIDR"),
    ],
)
def test_malformed_values_are_reported_with_the_key(key, value, expected):
    found = problems(kubernetes={**CLUSTER, key: value})
    assert len(found) == 1 and found[0].startswith(f"mlflow-stack:kubernetes.{key}:"), found
    assert expected in found[0]


def test_a_kubernetes_section_on_an_ecs_stack_is_refused_not_ignored():
    found = problems(compute={"backend": "ecs"})
    assert found == [
        "mlflow-stack:kubernetes: is set but compute.backend is 'ecs', so nothing reads it — set "
        "compute.backend: kubernetes, or remove the kubernetes section"
    ]


def test_pods_are_sized_freely_but_not_below_what_a_worker_needs():
    # 1536 CPU units is no Fargate size, but a fine pod request.
    assert build(server={"cpu": 1536, "memory": 3072}).server.cpu == 1536
    found = problems(server={"cpu": 128, "memory": 256})
    assert [p.split(":")[1] for p in found] == ["server.cpu", "server.memory"]


def test_a_schedule_a_cronjob_cannot_express_is_refused():
    found = problems(maintenance={"schedule": "cron(0 3 ? * 6L *)"})
    assert len(found) == 1 and found[0].startswith(
        "mlflow-stack:maintenance.schedule: runs as a Kubernetes CronJob"
    )


@pytest.mark.parametrize(
    ("expression", "cron"),
    [
        ("cron(0 3 ? * SUN *)", "0 3 * * SUN"),
        # EventBridge counts weekdays 1-7 from Sunday; a CronJob 0-6.
        ("cron(0 3 ? * 1 *)", "0 3 * * 0"),
        ("cron(30 2 ? * 2-6 *)", "30 2 * * 1-5"),
        ("cron(15 4 1 * ? *)", "15 4 1 * *"),
        ("rate(6 hours)", "0 */6 * * *"),
        ("rate(1 day)", "0 0 * * *"),
    ],
)
def test_maintenance_schedules_become_the_same_cronjob_schedule(expression, cron):
    assert cron_for_kubernetes(expression) == cron


@pytest.mark.parametrize("expression", ["rate(3 days)", "cron(0 3 ? * SUN 2027)", "cron(0 3 L * ? *)"])
def test_schedules_without_a_cronjob_equivalent_raise(expression):
    with pytest.raises(ValueError, match=r"CronJob|cron"):
        cron_for_kubernetes(expression)
