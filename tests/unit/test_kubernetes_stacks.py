"""Every kubernetes stack file, run offline: the resources the issue asks for, the one server spec
(compared field by field with the same stack on ECS), scoped identities, ordering and the edge."""

from __future__ import annotations

import json
from typing import Any

import pytest

from infra.compute.kubernetes_manifests import migration_job_name
from infra.settings import cron_for_kubernetes
from preview.offline import ResourceGraph, Secret, list_stacks, load_stack_config, run_program
from server import contract

KUBERNETES_STACKS = [
    stack
    for stack in list_stacks()
    if (load_stack_config(stack).get("mlflow-stack:compute") or {}).get("backend") == "kubernetes"
]
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
JOB = "kubernetes:batch/v1:Job"
CRON_JOB = "kubernetes:batch/v1:CronJob"
BINDING = "kubernetes:elbv2.k8s.aws/v1beta1:TargetGroupBinding"
EXTERNAL_SECRET = "kubernetes:external-secrets.io/v1:ExternalSecret"  # noqa: S105 - a type token
ROLE = "aws:iam/role:Role"
ON_ECS = {"compute": {"backend": "ecs"}, "kubernetes": None}


@pytest.fixture(scope="module")
def on_ecs():
    """The same stack file with compute.backend: ecs, the baseline the spec is compared with."""
    cache: dict[str, ResourceGraph] = {}

    def get(stack: str) -> ResourceGraph:
        if stack not in cache:
            cache[stack] = run_program(stack, config_overrides=ON_ECS)
            assert cache[stack].error is None, cache[stack].error
        return cache[stack]

    return get


def _prefix(graph: ResourceGraph) -> str:
    return f"mlflow-{graph.stack}"


def _container(resource: Any, path: str = "spec.template.spec.containers.0") -> dict[str, Any]:
    return resource.get(path)


def _namespace(graph: ResourceGraph) -> str:
    return graph.config["mlflow-stack:kubernetes"].get("namespace", "mlflow")


def test_the_kit_ships_a_kubernetes_stack():
    assert "vision-prod" in KUBERNETES_STACKS


@pytest.mark.parametrize("stack", KUBERNETES_STACKS)
def test_the_workload_objects_exist_and_no_ecs_compute_does(stack_graph, stack):
    graph = stack_graph(stack)
    for kind in (
        "kubernetes:core/v1:Namespace",
        DEPLOYMENT,
        "kubernetes:core/v1:Service",
        "kubernetes:autoscaling/v2:HorizontalPodAutoscaler",
        "kubernetes:policy/v1:PodDisruptionBudget",
        JOB,
        CRON_JOB,
        BINDING,
    ):
        assert graph.of_type(kind), kind
    assert len(graph.of_type("kubernetes:networking.k8s.io/v1:NetworkPolicy")) == 4
    ecs_side = sorted(
        t for t in graph.types if t.split(":")[1].split("/")[0] in ("ecs", "appautoscaling", "scheduler")
    )
    assert ecs_side == []
    # No Secret is ever built by Pulumi: the values are fetched inside the cluster.
    assert not graph.of_type("kubernetes:core/v1:Secret")
    assert graph.one("aws:lb/targetGroup:TargetGroup").get("targetType") == "ip"


@pytest.mark.parametrize("stack", KUBERNETES_STACKS)
def test_the_server_spec_is_the_ecs_task_definitions_field_by_field(stack_graph, on_ecs, stack):
    graph, ecs = stack_graph(stack), on_ecs(stack)
    containers = json.loads(ecs.named(f"{_prefix(graph)}-compute-task").get("containerDefinitions"))
    task = next(c for c in containers if c["name"] == "mlflow")
    pod = graph.one(DEPLOYMENT)
    container = _container(pod)
    assert container["image"] == task["image"]
    assert container["command"] == task["entryPoint"]
    assert container["args"] == task["command"]
    plain = {e["name"]: e["value"] for e in container["env"] if not e["name"].endswith("_FILE")}
    assert plain == {e["name"]: e["value"] for e in task["environment"]}
    # Secrets arrive as files: <NAME>_FILE names the file of the key NAME in the synced Secret.
    from_file = {
        e["name"].removesuffix("_FILE"): e["value"] for e in container["env"] if e["name"].endswith("_FILE")
    }
    assert (
        set(from_file) == {s["name"] for s in task["secrets"]} == {s.name for s in contract.SECRET_SETTINGS}
    )
    (secret_volume,) = [v for v in pod.get("spec.template.spec.volumes") if "secret" in v]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == secret_volume["name"]]
    assert all(path == f"{mount['mountPath']}/{name}" for name, path in from_file.items())
    # Each file's key is fetched from exactly the Secrets Manager ARN ECS injects.
    synced = graph.named(f"{_prefix(graph)}-compute-mlflow-server-secrets")
    assert synced.get("spec.target.name") == secret_volume["secret"]["secretName"]
    remote = {d["secretKey"]: d["remoteRef"]["key"] for d in synced.get("spec.data")}
    assert remote == {s["name"]: s["valueFrom"] for s in task["secrets"]}
    assert not any("valueFrom" in e for e in container["env"])  # no secret value in the environment
    security = container["securityContext"]
    assert f"{security['runAsUser']}:{security['runAsGroup']}" == task["user"]
    assert security["readOnlyRootFilesystem"] is task["readonlyRootFilesystem"]
    assert container["ports"][0]["containerPort"] == task["portMappings"][0]["containerPort"]
    task_definition = ecs.named(f"{_prefix(graph)}-compute-task")
    assert container["resources"]["requests"] == {
        "cpu": f"{int(task_definition.get('cpu')) * 1000 // 1024}m",
        "memory": f"{task_definition.get('memory')}Mi",
    }
    assert container["resources"]["limits"] == container["resources"]["requests"]
    scratch = [m["mountPath"] for m in container["volumeMounts"] if m["name"] == "scratch"]
    assert scratch == [m["containerPath"] for m in task["mountPoints"]]


@pytest.mark.parametrize("stack", KUBERNETES_STACKS)
def test_the_pod_role_has_the_ecs_task_roles_policy_and_trusts_only_its_service_account(
    stack_graph, on_ecs, stack
):
    graph, ecs = stack_graph(stack), on_ecs(stack)
    prefix, namespace = _prefix(graph), _namespace(graph)
    server_policy = json.loads(graph.named(f"{prefix}-compute-mlflow-server-policy").get("policy"))
    ecs_policy = json.loads(ecs.named(f"{prefix}-identity-runtime-policy").get("policy"))
    assert server_policy == ecs_policy
    maintenance_policy = json.loads(graph.named(f"{prefix}-compute-mlflow-maintenance-policy").get("policy"))
    assert maintenance_policy == json.loads(ecs.named(f"{prefix}-operations-task-policy").get("policy"))

    issuer = graph.config["mlflow-stack:kubernetes"]["oidcIssuer"]
    annotations = {
        sa.get("metadata.name"): sa.get("metadata.annotations")["eks.amazonaws.com/role-arn"]
        for sa in graph.of_type("kubernetes:core/v1:ServiceAccount")
    }
    assert set(annotations) == {"mlflow-server", "mlflow-maintenance", "mlflow-secrets"}
    for account, role_arn in annotations.items():
        role = next(r for r in graph.of_type(ROLE) if r.arn == role_arn)
        (statement,) = json.loads(role.get("assumeRolePolicy"))["Statement"]
        assert statement["Action"] == "sts:AssumeRoleWithWebIdentity"
        assert statement["Principal"] == {"Federated": f"arn:aws:iam::123456789012:oidc-provider/{issuer}"}
        assert statement["Condition"] == {
            "StringEquals": {
                f"{issuer}:sub": f"system:serviceaccount:{namespace}:{account}",
                f"{issuer}:aud": "sts.amazonaws.com",
            }
        }
    # No ECS roles: nothing on this stack is assumable by ecs-tasks.amazonaws.com.
    assert not any("ecs-tasks" in r.get("assumeRolePolicy") for r in graph.of_type(ROLE))


@pytest.mark.parametrize("stack", KUBERNETES_STACKS)
def test_the_migration_job_runs_before_the_deployment_on_the_same_image(stack_graph, stack):
    graph = stack_graph(stack)
    job, deployment = graph.one(JOB), graph.one(DEPLOYMENT)
    assert graph.depends_on(deployment, job)
    assert not graph.depends_on(job, deployment)
    migrate = _container(job)
    server = _container(deployment)
    assert migrate["image"] == server["image"] and migrate["command"] == server["command"]
    assert migrate["args"] == list(contract.MIGRATE_COMMAND)
    assert migrate["env"] == server["env"]
    assert job.get("spec.template.spec.restartPolicy") == "Never"
    assert job.get("metadata.name").startswith("mlflow-migrate-")
    # A failed migration is re-run (replaced) by the next `up` rather than awaited forever.
    assert job.get("metadata.annotations") == {"pulumi.com/replaceUnready": "true"}


def test_a_new_image_or_setting_names_a_new_migration_job(stack_graph):
    from dataclasses import replace

    from infra.compute.spec import ServerSpec

    spec = ServerSpec(
        image="repo@sha256:" + "a" * 64,
        entrypoint=contract.ENTRYPOINT,
        command=contract.COMMAND,
        environment={"MLFLOW_STACK_DB_HOST": "db"},
        secrets={},
        port=8080,
        health_path="/health",
        cpu=1024,
        memory=2048,
    )
    name = migration_job_name(spec, contract.MIGRATE_COMMAND)
    assert migration_job_name(spec, contract.MIGRATE_COMMAND) == name
    assert (
        migration_job_name(replace(spec, image="repo@sha256:" + "b" * 64), contract.MIGRATE_COMMAND) != name
    )
    assert (
        migration_job_name(
            replace(spec, environment={"MLFLOW_STACK_DB_HOST": "db2"}), contract.MIGRATE_COMMAND
        )
        != name
    )


@pytest.mark.parametrize("stack", KUBERNETES_STACKS)
def test_the_stacks_target_group_is_bound_to_the_service(stack_graph, stack):
    graph = stack_graph(stack)
    binding = graph.one(BINDING)
    target_group = graph.one("aws:lb/targetGroup:TargetGroup")
    assert binding.get("spec.targetGroupARN") == target_group.arn
    assert binding.get("spec.targetType") == "ip"
    service = graph.one("kubernetes:core/v1:Service")
    assert binding.get("spec.serviceRef") == {
        "name": service.get("metadata.name"),
        "port": contract.CONTAINER_PORT,
    }
    alb_group = graph.named(f"{_prefix(graph)}-edge-sg")
    (rule,) = binding.get("spec.networking.ingress")
    assert rule["from"] == [{"securityGroup": {"groupID": alb_group.id}}]
    assert (
        service.get("spec.selector").items()
        <= graph.one(DEPLOYMENT).get("spec.template.metadata.labels").items()
    )


@pytest.mark.parametrize("stack", KUBERNETES_STACKS)
def test_the_maintenance_cronjob_runs_the_ecs_scheduled_tasks_command(stack_graph, on_ecs, stack):
    graph, ecs = stack_graph(stack), on_ecs(stack)
    tasks = json.loads(ecs.named(f"{_prefix(graph)}-operations-task").get("containerDefinitions"))
    schedule = ecs.named(f"{_prefix(graph)}-operations-schedule")
    cronjob = graph.one(CRON_JOB)
    pods = cronjob.get("spec.jobTemplate.spec.template.spec.containers")
    # Each ECS container (the housekeeping; the users re-sync when stacks/users/<stack>.yaml exists,
    # docs/users.md) is a container of the CronJob's pod, with the same command and environment.
    assert [c["name"] for c in pods] == [t["name"] for t in reversed(tasks)]
    for index, task in enumerate(reversed(tasks)):
        container = _container(cronjob, f"spec.jobTemplate.spec.template.spec.containers.{index}")
        assert container["command"] == task["entryPoint"]
        assert container["args"] == task["command"]
        plain = {e["name"]: e["value"] for e in container["env"] if "value" in e}
        assert plain == {e["name"]: e["value"] for e in task["environment"]}
        secret_names = {e["name"] for e in container["env"] if "valueFrom" in e}
        assert secret_names == {s["name"] for s in task["secrets"]}
    assert cronjob.get("spec.schedule") == cron_for_kubernetes(schedule.get("scheduleExpression"))
    assert cronjob.get("spec.timeZone") == schedule.get("scheduleExpressionTimezone")
    assert cronjob.get("spec.concurrencyPolicy") == "Forbid"


@pytest.mark.parametrize("stack", KUBERNETES_STACKS)
def test_autoscaling_and_disruption_budget_follow_the_presets(stack_graph, on_ecs, stack):
    graph, ecs = stack_graph(stack), on_ecs(stack)
    target = ecs.one("aws:appautoscaling/target:Target")
    hpa = graph.one("kubernetes:autoscaling/v2:HorizontalPodAutoscaler")
    assert (hpa.get("spec.minReplicas"), hpa.get("spec.maxReplicas")) == (
        target.get("minCapacity"),
        target.get("maxCapacity"),
    )
    assert graph.one(DEPLOYMENT).get("spec.replicas") == hpa.get("spec.minReplicas")
    budget = graph.one("kubernetes:policy/v1:PodDisruptionBudget")
    assert budget.get("spec.maxUnavailable") == 1
    assert budget.get("spec.selector.matchLabels") == graph.one(DEPLOYMENT).get("spec.selector.matchLabels")


@pytest.mark.parametrize("stack", KUBERNETES_STACKS)
def test_the_database_and_load_balancer_admit_the_cluster_security_group_only(stack_graph, stack):
    graph = stack_graph(stack)
    pods = graph.config["mlflow-stack:kubernetes"]["clusterSecurityGroupId"]
    prefix = _prefix(graph)
    database_in = graph.named(f"{prefix}-compute-db-in-from-pods")
    assert database_in.get("referencedSecurityGroupId") == pods
    assert database_in.get("fromPort") == database_in.get("toPort") == 5432
    alb_out = graph.named(f"{prefix}-compute-alb-out-to-pods")
    assert (alb_out.get("referencedSecurityGroupId"), alb_out.get("fromPort")) == (
        pods,
        contract.CONTAINER_PORT,
    )


@pytest.mark.parametrize("stack", KUBERNETES_STACKS)
def test_the_kubeconfig_only_ever_travels_as_a_secret(stack_graph, stack):
    graph = stack_graph(stack)
    provider = graph.one("pulumi:providers:kubernetes")
    assert isinstance(provider.inputs["kubeconfig"], Secret)
    assert all(
        r.provider and "providers:kubernetes" in r.provider
        for r in graph.resources
        if r.type.startswith("kubernetes:")
    )


def test_a_kubeconfig_from_stack_config_is_kept_secret():
    kubeconfig = (
        "apiVersion: v1\nkind: Config\nusers: [{name: u, user: {token: SENTINEL-do-not-leak-kube}}]\n"
    )
    graph = run_program(
        "vision-prod",
        config_overrides={
            "kubernetes": {"kubeconfigSource": "config", "clusterStack": None},
            "kubeconfig": kubeconfig,
        },
    )
    assert graph.error is None, graph.error
    assert graph.one("pulumi:providers:kubernetes").inputs["kubeconfig"] == Secret(kubeconfig)
    assert not graph.of_type("pulumi:pulumi:StackReference")


def test_pod_identity_with_the_csi_driver_scopes_roles_by_session_tags():
    graph = run_program(
        "vision-prod",
        config_overrides={
            "kubernetes": {"identity": "podIdentity", "secretsDelivery": "csiDriver", "oidcIssuer": None}
        },
    )
    assert graph.error is None, graph.error
    associations = {
        a.get("serviceAccount"): a
        for a in graph.of_type("aws:eks/podIdentityAssociation:PodIdentityAssociation")
    }
    # No External Secrets reader; the migration Job's own account is the only one whose role may
    # fetch the RDS master secret through the CSI driver.
    assert set(associations) == {"mlflow-server", "mlflow-maintenance", "mlflow-migrate"}
    for account, association in associations.items():
        role = next(r for r in graph.of_type(ROLE) if r.arn == association.get("roleArn"))
        (statement,) = json.loads(role.get("assumeRolePolicy"))["Statement"]
        assert statement["Principal"] == {"Service": "pods.eks.amazonaws.com"}
        assert statement["Condition"]["StringEquals"] == {
            "aws:SourceAccount": "123456789012",
            "aws:RequestTag/eks-cluster-name": "platform-prod",
            "aws:RequestTag/kubernetes-namespace": association.get("namespace"),
            "aws:RequestTag/kubernetes-service-account": account,
        }
    # The CSI driver fetches with the pod's identity: each role reads exactly its own secrets.
    prefix = "mlflow-vision-prod"
    server = json.loads(graph.named(f"{prefix}-compute-mlflow-server-policy").get("policy"))
    maintenance = json.loads(graph.named(f"{prefix}-compute-mlflow-maintenance-policy").get("policy"))
    classes = {
        c.get("metadata.name"): c
        for c in graph.of_type("kubernetes:secrets-store.csi.x-k8s.io/v1:SecretProviderClass")
    }
    for policy, name in ((server, "mlflow-server-secrets"), (maintenance, "mlflow-maintenance-secrets")):
        (read,) = [s for s in policy["Statement"] if s["Sid"] == "ReadSecrets"]
        objects = json.loads(classes[name].get("spec.parameters.objects"))
        assert sorted(read["Resource"]) == sorted(o["objectName"] for o in objects)
        assert classes[name].get("spec.parameters.usePodIdentity") == "true"
    assert len(json.loads(classes["mlflow-server-secrets"].get("spec.parameters.objects"))) == 5
    assert len(json.loads(classes["mlflow-maintenance-secrets"].get("spec.parameters.objects"))) == 2
    volumes = graph.one(DEPLOYMENT).get("spec.template.spec.volumes")
    assert {"secretProviderClass": "mlflow-server-secrets"} in [
        v.get("csi", {}).get("volumeAttributes") for v in volumes
    ]
    # The server reads files from the mount; only the maintenance env needs a synced Secret.
    assert "secretObjects" not in classes["mlflow-server-secrets"].get("spec")
    assert (
        classes["mlflow-maintenance-secrets"].get("spec.secretObjects.0.secretName")
        == "mlflow-maintenance-secrets"
    )
    assert not graph.of_type(EXTERNAL_SECRET)


def test_prometheus_pod_metrics_replace_the_container_insights_alarms():
    graph = run_program("vision-prod", config_overrides={"kubernetes": {"podMetrics": "prometheus"}})
    assert graph.error is None, graph.error
    (rule,) = graph.of_type("kubernetes:monitoring.coreos.com/v1:PrometheusRule")
    alerts = [r["alert"] for r in rule.get("spec.groups.0.rules")]
    assert alerts == ["MlflowServerCpuHigh", "MlflowServerMemoryHigh"]
    namespaces = {a.get("namespace") for a in graph.of_type("aws:cloudwatch/metricAlarm:MetricAlarm")}
    assert "ContainerInsights" not in namespaces and "AWS/ECS" not in namespaces


@pytest.mark.parametrize("stack", KUBERNETES_STACKS)
def test_container_insights_alarms_watch_the_pods_with_the_ecs_thresholds(stack_graph, on_ecs, stack):
    graph, ecs = stack_graph(stack), on_ecs(stack)
    pods = {
        a.name.rsplit("-", 2)[-2] + "-" + a.name.rsplit("-", 1)[-1]: a
        for a in graph.of_type("aws:cloudwatch/metricAlarm:MetricAlarm")
    }
    tasks = {
        a.name.rsplit("-", 2)[-2] + "-" + a.name.rsplit("-", 1)[-1]: a
        for a in ecs.of_type("aws:cloudwatch/metricAlarm:MetricAlarm")
    }
    assert pods["pod-cpu"].get("namespace") == "ContainerInsights"
    assert pods["pod-cpu"].get("dimensions") == {
        "ClusterName": graph.config["mlflow-stack:kubernetes"]["clusterName"],
        "Namespace": _namespace(graph),
        "PodName": "mlflow-server",
    }
    assert pods["pod-cpu"].get("threshold") == tasks["ecs-cpu"].get("threshold")
    assert pods["pod-memory"].get("threshold") == tasks["ecs-memory"].get("threshold")
    # Every other alarm (ALB, RDS, artifact store) is the same on both backends.
    assert set(pods) - {"pod-cpu", "pod-memory"} == set(tasks) - {"ecs-cpu", "ecs-memory"}


@pytest.mark.parametrize("stack", KUBERNETES_STACKS)
def test_secrets_and_identities_exist_before_anything_reads_them(stack_graph, stack):
    """External Secrets reads a secret only once it has a value, with a role whose policy is
    attached; the pods start only once their secrets are synced (the ECS task definition's rule:
    tests/unit/test_deploy_ordering.py)."""
    graph = stack_graph(stack)
    versions = {v.get("secretId"): v for v in graph.of_type("aws:secretsmanager/secretVersion:SecretVersion")}
    secrets_by_arn = {s.arn: s for s in graph.of_type("aws:secretsmanager/secret:Secret")}
    instance = graph.one("aws:rds/instance:Instance")
    for synced in graph.of_type(EXTERNAL_SECRET):
        for item in synced.get("spec.data"):
            arn = item["remoteRef"]["key"]
            if arn not in secrets_by_arn:
                # RDS' own master secret (the bootstrap's): it exists once the instance does.
                assert ":secret:rds!db-" in arn and item["remoteRef"]["property"] == "password"
                assert graph.depends_on(synced, instance), synced.name
                continue
            version = versions[secrets_by_arn[arn].id]
            assert graph.depends_on(synced, version), (synced.name, version.name)
        assert synced.get("metadata.annotations") == {"pulumi.com/waitFor": "condition=Ready"}
    for account in graph.of_type("kubernetes:core/v1:ServiceAccount"):
        policy = graph.named(account.name.removesuffix("-sa") + "-policy")
        assert graph.depends_on(account, policy), account.name
    for workload in (graph.one(DEPLOYMENT), graph.one(JOB), graph.one(CRON_JOB)):
        assert all(graph.depends_on(workload, synced) for synced in graph.of_type(EXTERNAL_SECRET)), (
            workload.name
        )


@pytest.mark.parametrize("stack", KUBERNETES_STACKS)
def test_outputs_name_the_cluster_namespace_and_deployment_and_no_ecs(stack_graph, stack):
    graph = stack_graph(stack)
    cluster = graph.config["mlflow-stack:kubernetes"]
    assert graph.outputs["kubernetes_cluster_name"] == cluster["clusterName"]
    assert graph.outputs["kubernetes_namespace"] == _namespace(graph)
    assert graph.outputs["kubernetes_deployment"] == graph.one(DEPLOYMENT).get("metadata.name")
    assert (
        graph.outputs["runtime_role_arn"] == graph.named(f"{_prefix(graph)}-compute-mlflow-server-role").arn
    )
    assert not {"ecs_cluster_name", "ecs_service_name", "execution_role_arn"} & set(graph.outputs)
    # What `mlflow-stack smoke --stack` reads is there as on ECS (lifecycle/credentials.py).
    assert {"tracking_url", "admin_username", "admin_password_secret_arn", "region"} <= set(graph.outputs)


def test_the_deployer_may_associate_pod_identities_only_on_the_stacks_cluster():
    from deploy.deployer_policy import PolicyOptions, build_deployer_policy

    graph = run_program(
        "vision-prod",
        config_overrides={
            "kubernetes": {"identity": "podIdentity", "secretsDelivery": "csiDriver", "oidcIssuer": None}
        },
    )
    policy = build_deployer_policy(graph, PolicyOptions(account_id="111122223333"))
    (eks,) = [s for s in policy.statements if any(a.startswith("eks:") for a in s["Action"])]
    assert "eks:CreatePodIdentityAssociation" in eks["Action"]
    assert sorted(eks["Resource"]) == [
        "arn:aws:eks:us-east-1:111122223333:cluster/platform-prod",
        "arn:aws:eks:us-east-1:111122223333:podidentityassociation/platform-prod/*",
    ]
    from test_iam import ABOVE_LOW, parliament

    document = json.dumps({"Version": "2012-10-17", "Statement": [eks]})
    findings = [parliament.enhance_finding(f) for f in parliament.analyze_policy_string(document).findings]
    assert not [(f.issue, f.detail) for f in findings if f.severity in ABOVE_LOW]
    (passing,) = [s for s in policy.statements if s["Action"] == ["iam:PassRole"]]
    assert passing["Condition"] == {"StringEquals": {"iam:PassedToService": "pods.eks.amazonaws.com"}}
    assert sorted(passing["Resource"]) == [
        "arn:aws:iam::111122223333:role/mlflow-vision-prod-maint-pod",
        "arn:aws:iam::111122223333:role/mlflow-vision-prod-migrate-pod",
        "arn:aws:iam::111122223333:role/mlflow-vision-prod-server-pod",
    ]


def test_network_policies_admit_the_load_balancer_only_and_egress_only_what_the_server_uses():
    graph = run_program("vision-prod", config_overrides={"kubernetes": {"httpsEgressCidrs": ["10.0.0.0/8"]}})
    assert graph.error is None, graph.error
    policies = {
        p.get("metadata.name"): p.get("spec")
        for p in graph.of_type("kubernetes:networking.k8s.io/v1:NetworkPolicy")
    }
    assert policies["default-deny"] == {
        "podSelector": {},
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [],
        "egress": [],
    }
    server = policies["mlflow-server"]
    (ingress,) = server["ingress"]
    # The ALB's subnets (internal: the private ones), looked up from the existing VPC.
    subnets = graph.config["mlflow-stack:network"]["existingPrivateSubnetIds"]
    lookups = [c for c in graph_calls_for_subnets(graph, subnets)]
    assert sorted(peer["ipBlock"]["cidr"] for peer in ingress["from"]) == sorted(set(lookups))
    assert ingress["ports"] == [{"protocol": "TCP", "port": contract.CONTAINER_PORT}]
    ports = sorted(port["port"] for rule in server["egress"] for port in rule["ports"])
    assert ports == [53, 53, 443, 5432]
    (https,) = [rule for rule in server["egress"] if rule["ports"] == [{"protocol": "TCP", "port": 443}]]
    assert https["to"] == [{"ipBlock": {"cidr": "10.0.0.0/8"}}]
    # The migration reaches only DNS and PostgreSQL: its secrets are files synced by the cluster.
    assert sorted(
        port["port"] for rule in policies["mlflow-migrate"]["egress"] for port in rule["ports"]
    ) == [53, 53, 5432]


def graph_calls_for_subnets(graph: ResourceGraph, subnets: list[str]) -> list[str]:
    """The CIDRs the offline mocks answer for these existing subnets (preview/mocks.py)."""
    from pulumi.runtime.mocks import MockCallArgs

    from preview.mocks import AwsMocks

    mocks = AwsMocks(graph.stack, "us-east-1")
    return [
        mocks.call(MockCallArgs("aws:ec2/getSubnet:getSubnet", {"id": subnet}, ""))["cidrBlock"]
        for subnet in subnets
    ]


@pytest.mark.parametrize("stack", KUBERNETES_STACKS)
def test_only_the_migration_jobs_bootstrap_container_gets_the_master_password(stack_graph, stack):
    """The database bootstrap (server/db_roles.py) runs as the migration Job's init container, so
    the application role exists before the migration and the server connect as it; the in-cluster
    Secret holding the RDS-managed master password is mounted by that container only."""
    graph = stack_graph(stack)
    job = graph.one(JOB).get("spec.template.spec")
    [init] = job["initContainers"]
    assert init["name"] == "db-bootstrap" and init["args"] == list(contract.BOOTSTRAP_COMMAND)
    env = {e["name"]: e.get("value") for e in init["env"]}
    assert env[contract.DB_MASTER_PASSWORD.name + contract.FILE_SUFFIX].startswith("/var/run/secrets/")
    assert env[contract.DB_USER.name] == "mlflow_app" and env[contract.DB_MASTER_USER.name] == "mlflow"
    bootstrap_volumes = {v["name"] for v in job["volumes"] if "bootstrap" in json.dumps(v)}
    assert bootstrap_volumes == {"bootstrap-secrets"}
    for container in job["containers"]:
        assert all(m["name"] != "bootstrap-secrets" for m in container.get("volumeMounts", []))
    for workload in (graph.one(DEPLOYMENT), graph.one(CRON_JOB)):
        assert "bootstrap-secrets" not in json.dumps(workload.inputs)
        assert contract.DB_MASTER_PASSWORD.name not in json.dumps(workload.inputs)
