"""The MLflow replicas on an existing EKS cluster, with pulumi-kubernetes.

The same `ServerSpec` as ECS (image, command, environment, secret references, size), the same
data plane and the same Pulumi-managed ALB: the stack's target group (target type `ip`) is bound
to the pods by a TargetGroupBinding, so TLS, the redirect, the WAF and the ALB alarms are the code
ECS stacks use. What this component adds, in namespace `kubernetes.namespace`:

- a Kubernetes provider from the kubeconfig (a secret config key, or a platform stack's output);
- one ServiceAccount per workload, each bound to its own IAM role through IRSA (trust scoped to
  exactly that namespace/account) or an EKS Pod Identity association;
- the secrets: an ExternalSecret (External Secrets Operator) or a SecretProviderClass (Secrets
  Store CSI driver) — the cluster fetches the values; Pulumi state holds only their ARNs;
- a migration Job named after the image and settings, awaited before the Deployment rolls;
- Deployment, Service, HorizontalPodAutoscaler, PodDisruptionBudget, NetworkPolicies;
- the weekly maintenance as a CronJob running the ECS scheduled task's command;
- pod CPU/memory alarms: Container Insights (CloudWatch, in infra/monitoring.py) or a
  PrometheusRule.

Prerequisites on the cluster (docs/kubernetes.md says how to check each): the AWS Load Balancer
Controller, External Secrets Operator or the Secrets Store CSI driver with its AWS provider,
metrics-server, arm64 nodes, and a CNI that enforces NetworkPolicy.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from infra.compute import kubernetes_crds as crds
from infra.compute import kubernetes_manifests as manifests
from infra.compute.kubernetes_identity import (
    irsa_trust_policy,
    merge_policies,
    pod_identity_trust_policy,
    secrets_read_policy,
    service_account_role,
)
from infra.compute.spec import ServerSpec
from infra.identity import runtime_policy
from infra.operations import ENTRYPOINT as MAINTENANCE_ENTRYPOINT
from infra.operations import task_policy
from infra.settings import KubernetesSettings, MaintenanceSettings, cron_for_kubernetes
from server import contract

# The maintenance container reads the admin password by the name lifecycle.credentials expects.
MAINTENANCE_PASSWORD_ENV = "MLFLOW_TRACKING_PASSWORD"  # noqa: S105 - a variable name, not a value
DB_SETTINGS = (contract.DB_HOST, contract.DB_PORT, contract.DB_NAME, contract.DB_USER, contract.DB_SSLMODE)


@dataclass(frozen=True)
class KubernetesServiceArgs:
    name_prefix: str
    spec: ServerSpec
    settings: KubernetesSettings
    maintenance: MaintenanceSettings
    aws_provider: aws.Provider  # subnet look-ups (their CIDRs feed the NetworkPolicies)
    kubeconfig: pulumi.Input[str]  # a secret
    region: str
    account_id: pulumi.Input[str]
    partition: pulumi.Input[str]
    target_group_arn: pulumi.Input[str]
    load_balancer_security_group_id: pulumi.Input[str]
    load_balancer_subnet_ids: Sequence[str]
    internal_load_balancer: bool
    database_subnet_ids: Sequence[str]
    database_security_group_id: pulumi.Input[str]
    deregistration_delay_seconds: int
    bucket_arn: pulumi.Input[str]
    artifact_prefix: str
    artifacts_kms_key_arn: pulumi.Input[str]
    secrets_kms_key_arn: pulumi.Input[str]
    tracking_url: pulumi.Input[str]
    admin_username: str
    lock_table_name: pulumi.Input[str]
    lock_table_arn: pulumi.Input[str]
    min_replicas: int
    max_replicas: int
    target_cpu_percent: int
    scale_in_cooldown_seconds: int
    scale_out_cooldown_seconds: int
    startup_grace_seconds: int
    pod_cpu_alarm_percent: float
    pod_memory_alarm_percent: float
    permissions_boundary_arn: str | None = None


class KubernetesService(pulumi.ComponentResource):
    """Namespace, identities, secrets, migration Job, Deployment and its neighbours, CronJob."""

    def __init__(
        self, name: str, args: KubernetesServiceArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("mlflow-stack:compute:KubernetesService", name, None, opts)
        cluster = args.settings
        spec = args.spec
        namespace = cluster.namespace
        aws_child = pulumi.ResourceOptions(parent=self)
        self.provider = k8s.Provider(
            f"{name}-provider",
            kubeconfig=pulumi.Output.secret(args.kubeconfig),
            # Every object names its namespace; a missing one must not land in "default".
            namespace=namespace,
            opts=pulumi.ResourceOptions(parent=self),
        )
        kube = pulumi.ResourceOptions(parent=self, provider=self.provider)

        self.namespace = k8s.core.v1.Namespace(
            f"{name}-namespace",
            metadata={
                "name": namespace,
                "labels": {
                    # Pod Security Admission: the "restricted" profile every pod here meets.
                    # https://kubernetes.io/docs/concepts/security/pod-security-standards/
                    "pod-security.kubernetes.io/enforce": "restricted",
                    "pod-security.kubernetes.io/enforce-version": "latest",
                    # The AWS Load Balancer Controller holds a rollout until a new pod is healthy
                    # in the target group (pod readiness gate).
                    "elbv2.k8s.aws/pod-readiness-gate-inject": "enabled",
                },
            },
            opts=kube,
        )
        in_namespace = pulumi.ResourceOptions(
            parent=self, provider=self.provider, depends_on=[self.namespace]
        )

        workload = pulumi.Output.all(
            lb=_subnet_cidrs(args.load_balancer_subnet_ids, args.aws_provider),
            db=_subnet_cidrs(args.database_subnet_ids, args.aws_provider),
        ).apply(
            lambda cidrs: manifests.Workload(
                namespace=namespace,
                instance=args.name_prefix,
                region=args.region,
                secrets_delivery=cluster.secrets_delivery,
                pod_identity=cluster.identity == "podIdentity",
                min_replicas=args.min_replicas,
                max_replicas=args.max_replicas,
                target_cpu_percent=args.target_cpu_percent,
                scale_in_cooldown_seconds=args.scale_in_cooldown_seconds,
                scale_out_cooldown_seconds=args.scale_out_cooldown_seconds,
                startup_grace_seconds=args.startup_grace_seconds,
                termination_grace_seconds=cluster.termination_grace_seconds,
                deregistration_delay_seconds=args.deregistration_delay_seconds,
                migration_timeout_seconds=cluster.migration_timeout_seconds,
                load_balancer_cidrs=tuple(cidrs["lb"]),
                database_cidrs=tuple(cidrs["db"]),
                secret_refresh_interval=cluster.secret_refresh_interval,
                https_cidrs=tuple(cluster.https_egress_cidrs),
            )
        )
        bootstrap = spec.bootstrap
        resolved = pulumi.Output.all(
            image=spec.image,
            environment=pulumi.Output.all(**dict(spec.environment)),
            secrets=pulumi.Output.all(**dict(spec.secrets)),
            bootstrap_environment=pulumi.Output.all(**dict(bootstrap.environment if bootstrap else {})),
            bootstrap_secrets=pulumi.Output.all(**dict(bootstrap.secrets if bootstrap else {})),
        ).apply(lambda v: _resolved_spec(spec, v))

        def render(builder: Any, *extra: Any) -> pulumi.Output[dict[str, Any]]:
            return pulumi.Output.all(resolved, workload, *extra).apply(lambda v: builder(*v))

        # --- identities ---------------------------------------------------------------------
        csi = cluster.secrets_delivery == "csiDriver"
        server_secret_refs = dict(spec.secrets)
        maintenance_secret_refs = {
            contract.ADMIN_PASSWORD.name: spec.secrets[contract.ADMIN_PASSWORD.name],
            contract.DB_PASSWORD.name: spec.secrets[contract.DB_PASSWORD.name],
        }
        server_policy = pulumi.Output.all(
            args.bucket_arn,
            args.artifacts_kms_key_arn,
            args.secrets_kms_key_arn,
            *server_secret_refs.values(),
        ).apply(
            lambda v: _with_secrets(
                runtime_policy(v[0], args.artifact_prefix, v[1], args.region), v[3:], v[2], args.region, csi
            )
        )
        bootstrap_secret_refs = dict(bootstrap.secrets) if bootstrap else {}
        maintenance_policy = pulumi.Output.all(
            args.lock_table_arn, args.secrets_kms_key_arn, *maintenance_secret_refs.values()
        ).apply(lambda v: _with_secrets(task_policy(v[0]), v[2:], v[1], args.region, csi))
        accounts: list[tuple[str, str, str, pulumi.Input[str]]] = [
            (
                manifests.SERVER,
                f"{args.name_prefix}-server-pod",
                "MLflow server pods: artifacts",
                server_policy,
            ),
            (
                manifests.MAINTENANCE,
                f"{args.name_prefix}-maint-pod",
                "MLflow maintenance CronJob: its lease in the lock table",
                maintenance_policy,
            ),
        ]
        if csi and bootstrap_secret_refs:
            # The CSI driver fetches with the pod's role: only the migration Job's account may
            # read the master secret (its bootstrap init container is the only consumer).
            migrate_policy = pulumi.Output.all(
                args.bucket_arn,
                args.artifacts_kms_key_arn,
                args.secrets_kms_key_arn,
                *server_secret_refs.values(),
                *bootstrap_secret_refs.values(),
            ).apply(
                lambda v: _with_secrets(
                    runtime_policy(v[0], args.artifact_prefix, v[1], args.region),
                    v[3:],
                    v[2],
                    args.region,
                    csi,
                )
            )
            accounts.append(
                (
                    manifests.MIGRATE,
                    f"{args.name_prefix}-migrate-pod",
                    "MLflow migration Job: bootstraps the database role, migrates",
                    migrate_policy,
                )
            )
        if not csi:
            reader_policy = pulumi.Output.all(
                args.secrets_kms_key_arn, *server_secret_refs.values(), *bootstrap_secret_refs.values()
            ).apply(lambda v: secrets_read_policy(v[1:], v[0], args.region))
            accounts.append(
                (
                    manifests.SECRETS_READER,
                    f"{args.name_prefix}-secrets-reader",
                    "External Secrets reading this stack's MLflow secrets",
                    reader_policy,
                )
            )
        self.role_arns: dict[str, pulumi.Output[str]] = {}
        self.service_accounts: dict[str, k8s.core.v1.ServiceAccount] = {}
        for account, role_name, description, policy in accounts:
            role = service_account_role(
                f"{name}-{account}",
                role_name=role_name,
                description=description,
                trust=_trust(args, account),
                policy=policy,
                permissions_boundary_arn=args.permissions_boundary_arn,
                opts=aws_child,
            )
            self.role_arns[account] = role.arn
            annotations = {}
            if cluster.identity == "irsa":
                annotations = {"eks.amazonaws.com/role-arn": role.arn}
            else:
                aws.eks.PodIdentityAssociation(
                    f"{name}-{account}-pod-identity",
                    cluster_name=cluster.cluster_name,
                    namespace=namespace,
                    service_account=account,
                    role_arn=role.arn,
                    opts=aws_child,
                )
            self.service_accounts[account] = k8s.core.v1.ServiceAccount(
                f"{name}-{account}-sa",
                metadata={
                    "name": account,
                    "namespace": namespace,
                    "labels": manifests.labels_for(args.name_prefix, account),
                    "annotations": annotations,
                },
                automount_service_account_token=False,
                opts=in_namespace,
            )

        # --- secrets: created in the cluster from Secrets Manager, never by Pulumi ---------------
        secret_keys = {
            manifests.SERVER_SECRET: tuple(server_secret_refs),
            manifests.MAINTENANCE_SECRET: tuple(maintenance_secret_refs),
        }
        if bootstrap_secret_refs:
            secret_keys[manifests.BOOTSTRAP_SECRET] = tuple(bootstrap_secret_refs)
        secret_objects: list[pulumi.Resource] = []
        if csi:
            for secret_name, keys in secret_keys.items():
                secret_objects.append(
                    _custom(
                        f"{name}-{secret_name}",
                        crds.SECRET_PROVIDER_CLASS,
                        render(
                            lambda s, w, n=secret_name, k=keys: crds.secret_provider_class(
                                w,
                                n,
                                {key: _all_secrets(s)[key] for key in k},
                                sync=n == manifests.MAINTENANCE_SECRET,
                            )
                        ),
                        opts=in_namespace,
                    )
                )
        else:
            store = _custom(
                f"{name}-secret-store",
                crds.SECRET_STORE_KIND,
                workload.apply(crds.secret_store),
                opts=pulumi.ResourceOptions(
                    parent=self,
                    provider=self.provider,
                    depends_on=[self.namespace, self.service_accounts[manifests.SECRETS_READER]],
                ),
            )
            for secret_name, keys in secret_keys.items():
                secret_objects.append(
                    _custom(
                        f"{name}-{secret_name}",
                        crds.EXTERNAL_SECRET,
                        render(
                            lambda s, w, n=secret_name, k=keys: crds.external_secret(
                                w, n, {key: _all_secrets(s)[key] for key in k}
                            )
                        ),
                        opts=pulumi.ResourceOptions(parent=self, provider=self.provider, depends_on=[store]),
                    )
                )

        # --- network policies, migration, server -------------------------------------------------
        for index, policy_name in enumerate(("default-deny", "server", "migrate", "maintenance")):
            k8s.networking.v1.NetworkPolicy(
                f"{name}-netpol-{policy_name}",
                **_body(render(lambda s, w, i=index: manifests.network_policies(s, w)[i])),
                opts=in_namespace,
            )
        ready = pulumi.ResourceOptions(
            parent=self,
            provider=self.provider,
            depends_on=[self.namespace, self.service_accounts[manifests.SERVER], *secret_objects],
        )
        # Pulumi's Job awaiter: done when the Job is Complete, failed at once when it is Failed,
        # else failed after the timeout (10 minutes unless custom_timeouts say otherwise).
        # https://www.pulumi.com/registry/packages/kubernetes/api-docs/batch/v1/job/
        wait = f"{cluster.migration_timeout_seconds + 60}s"
        self.migration = k8s.batch.v1.Job(
            f"{name}-migrate",
            **_body(render(lambda s, w: manifests.migration_job(s, w, contract.MIGRATE_COMMAND))),
            # A new name per image/settings: the old Job goes once the new one has completed. A
            # failed Job is replaced (pulumi.com/replaceUnready) by the next `up`, which re-runs it
            # under the same name, so the old one must go first.
            opts=pulumi.ResourceOptions.merge(
                ready,
                pulumi.ResourceOptions(
                    custom_timeouts=pulumi.CustomTimeouts(create=wait, update=wait),
                    delete_before_replace=True,
                ),
            ),
        )
        self.deployment = k8s.apps.v1.Deployment(
            f"{name}-deployment",
            **_body(render(manifests.deployment)),
            opts=pulumi.ResourceOptions.merge(
                ready,
                # The Job first: Pulumi awaits its completion, and its failure stops the rollout.
                pulumi.ResourceOptions(depends_on=[self.migration], ignore_changes=["spec.replicas"]),
            ),
        )
        self.service = k8s.core.v1.Service(
            f"{name}-service", **_body(render(manifests.service)), opts=in_namespace
        )
        k8s.autoscaling.v2.HorizontalPodAutoscaler(
            f"{name}-autoscaler",
            **_body(render(lambda _s, w: manifests.autoscaler(w))),
            opts=pulumi.ResourceOptions(parent=self, provider=self.provider, depends_on=[self.deployment]),
        )
        k8s.policy.v1.PodDisruptionBudget(
            f"{name}-disruption-budget",
            **_body(render(lambda _s, w: manifests.disruption_budget(w))),
            opts=in_namespace,
        )
        self.target_group_binding = _custom(
            f"{name}-target-group-binding",
            crds.TARGET_GROUP_BINDING,
            render(
                lambda s, w, arn, sg: crds.target_group_binding(s, w, target_group_arn=arn, alb_sg=sg),
                args.target_group_arn,
                args.load_balancer_security_group_id,
            ),
            opts=pulumi.ResourceOptions(parent=self, provider=self.provider, depends_on=[self.service]),
        )
        if args.maintenance.enabled:
            maintenance_job = pulumi.Output.all(
                resolved, workload, args.tracking_url, args.lock_table_name
            ).apply(lambda v: manifests.maintenance_cronjob(v[0], v[1], _maintenance(args, v[0], v[2], v[3])))
            k8s.batch.v1.CronJob(
                f"{name}-maintenance",
                **_body(maintenance_job),
                opts=pulumi.ResourceOptions(
                    parent=self,
                    provider=self.provider,
                    depends_on=[
                        self.namespace,
                        self.service_accounts[manifests.MAINTENANCE],
                        *secret_objects,
                    ],
                ),
            )
        if cluster.pod_metrics == "prometheus":
            _custom(
                f"{name}-prometheus-rule",
                crds.PROMETHEUS_RULE,
                workload.apply(
                    lambda w: crds.prometheus_rule(
                        w, args.pod_cpu_alarm_percent, args.pod_memory_alarm_percent
                    )
                ),
                opts=in_namespace,
            )

        self._security_group_rules(name, args, aws_child)
        self.namespace_name = namespace
        self.deployment_name = manifests.SERVER
        # What infra/monitoring.py reads from either backend.
        self.cluster_name = cluster.cluster_name or ""
        self.service_name = manifests.SERVER
        self.log_group: pulumi.Resource | None = None
        self.server_role_arn = self.role_arns[manifests.SERVER]
        self.register_outputs(
            {"namespace": namespace, "deployment": manifests.SERVER, "server_role_arn": self.server_role_arn}
        )

    def _security_group_rules(
        self, name: str, args: KubernetesServiceArgs, opts: pulumi.ResourceOptions
    ) -> None:
        """The ECS service's neighbour rules, with the cluster's pod security group in its place."""
        pods = args.settings.cluster_security_group_id
        port = args.spec.port
        aws.vpc.SecurityGroupIngressRule(
            f"{name}-db-in-from-pods",
            security_group_id=args.database_security_group_id,
            referenced_security_group_id=pods,
            ip_protocol="tcp",
            from_port=manifests.POSTGRES_PORT,
            to_port=manifests.POSTGRES_PORT,
            description="PostgreSQL from the MLflow pods",
            opts=opts,
        )
        aws.vpc.SecurityGroupEgressRule(
            f"{name}-alb-out-to-pods",
            security_group_id=args.load_balancer_security_group_id,
            referenced_security_group_id=pods,
            ip_protocol="tcp",
            from_port=port,
            to_port=port,
            description="load balancer to the MLflow pods",
            opts=opts,
        )
        if args.maintenance.enabled and args.internal_load_balancer:
            # The maintenance CronJob calls the tracking URL from inside the VPC.
            aws.vpc.SecurityGroupIngressRule(
                f"{name}-alb-in-from-pods",
                security_group_id=args.load_balancer_security_group_id,
                referenced_security_group_id=pods,
                ip_protocol="tcp",
                from_port=manifests.HTTPS_PORT,
                to_port=manifests.HTTPS_PORT,
                description="HTTPS from the MLflow maintenance CronJob",
                opts=opts,
            )


def _resolved_spec(spec: ServerSpec, values: Mapping[str, Any]) -> ServerSpec:
    bootstrap = spec.bootstrap
    if bootstrap is not None:
        bootstrap = dataclasses.replace(
            bootstrap, environment=values["bootstrap_environment"], secrets=values["bootstrap_secrets"]
        )
    return dataclasses.replace(
        spec,
        image=values["image"],
        environment=values["environment"],
        secrets=values["secrets"],
        bootstrap=bootstrap,
    )


def _all_secrets(spec: ServerSpec) -> dict[str, str]:
    """The server's secret references and the bootstrap's (the same name, DB_PASSWORD, is the same
    secret in both)."""
    return {**(spec.bootstrap.secrets if spec.bootstrap else {}), **spec.secrets}


def _trust(args: KubernetesServiceArgs, account: str) -> pulumi.Output[str]:
    cluster = args.settings
    if cluster.identity == "irsa":
        issuer = cluster.oidc_issuer or ""
        return pulumi.Output.all(args.partition, args.account_id).apply(
            lambda v: irsa_trust_policy(
                partition=v[0],
                account_id=v[1],
                issuer=issuer,
                namespace=cluster.namespace,
                service_account=account,
            )
        )
    return pulumi.Output.from_input(args.account_id).apply(
        lambda account_id: pod_identity_trust_policy(
            account_id=account_id,
            cluster_name=cluster.cluster_name or "",
            namespace=cluster.namespace,
            service_account=account,
        )
    )


def _with_secrets(policy: str, refs: Sequence[str], kms_key_arn: str, region: str, csi: bool) -> str:
    """With the CSI driver the pod itself fetches its secrets, so its role reads exactly them."""
    return merge_policies(policy, secrets_read_policy(refs, kms_key_arn, region)) if csi else policy


def _maintenance(args: KubernetesServiceArgs, spec: ServerSpec, tracking_url: str, lock_table: str) -> Any:
    from infra.operations import (
        USERS_DECLARATION_ENV,
        USERS_SYNC_ENTRYPOINT,
        maintenance_arguments,
        users_declaration,
        users_sync_arguments,
    )

    maintenance = args.maintenance
    environment = {setting.name: spec.environment[setting.name] for setting in DB_SETTINGS}
    environment.update({"AWS_REGION": args.region, "HOME": spec.scratch_path, "TMPDIR": spec.scratch_path})
    return manifests.Maintenance(
        schedule=cron_for_kubernetes(maintenance.schedule),
        timezone=maintenance.timezone,
        entrypoint=tuple(MAINTENANCE_ENTRYPOINT),
        arguments=tuple(maintenance_arguments(maintenance, args.admin_username, tracking_url, lock_table)),
        environment=environment,
        secrets={
            MAINTENANCE_PASSWORD_ENV: contract.ADMIN_PASSWORD.name,
            contract.DB_PASSWORD.name: contract.DB_PASSWORD.name,
        },
        cpu=maintenance.cpu,
        memory=maintenance.memory,
        users_sync=_users_sync(
            users_declaration(pulumi.get_stack()),
            environment={"AWS_REGION": args.region, "HOME": spec.scratch_path, "TMPDIR": spec.scratch_path},
            entrypoint=tuple(USERS_SYNC_ENTRYPOINT),
            arguments=tuple(users_sync_arguments(args.admin_username, tracking_url)),
            declaration_env=USERS_DECLARATION_ENV,
        ),
        # The admin password only (users sync needs no database credentials).
        users_sync_secrets={MAINTENANCE_PASSWORD_ENV: contract.ADMIN_PASSWORD.name},
    )


def _users_sync(
    declaration: str | None,
    *,
    environment: Mapping[str, str],
    entrypoint: tuple[str, ...],
    arguments: tuple[str, ...],
    declaration_env: str,
) -> tuple[tuple[str, ...], tuple[str, ...], Mapping[str, str]] | None:
    """The re-sync of the stack's users declaration (stacks/users/<stack>.yaml), as on ECS."""
    if declaration is None:
        return None
    return entrypoint, arguments, {**environment, declaration_env: declaration}


def _subnet_cidrs(subnet_ids: Sequence[str], provider: aws.Provider) -> pulumi.Output[list[str]]:
    options = pulumi.InvokeOutputOptions(provider=provider)
    return pulumi.Output.all(
        *[aws.ec2.get_subnet_output(id=subnet_id, opts=options).cidr_block for subnet_id in subnet_ids]
    ).apply(lambda cidrs: sorted(set(cidrs)))


def _body(manifest: pulumi.Output[Mapping[str, Any]]) -> dict[str, pulumi.Output[Any]]:
    """metadata and spec of a rendered manifest, as a typed resource's inputs."""
    return {"metadata": manifest.apply(lambda m: m["metadata"]), "spec": manifest.apply(lambda m: m["spec"])}


def _custom(
    name: str,
    kind: tuple[str, str],
    manifest: pulumi.Output[Mapping[str, Any]],
    *,
    opts: pulumi.ResourceOptions,
) -> k8s.apiextensions.CustomResource:
    """An instance of a prerequisite's CRD (`kind` is (apiVersion, kind)) from a rendered manifest."""
    api_version, kind_name = kind
    return k8s.apiextensions.CustomResource(
        name, api_version=api_version, kind=kind_name, **_body(manifest), opts=opts
    )
