"""The deployer's table for the Kubernetes backend (compute.backend: kubernetes).

Objects in the cluster (Deployment, Job, the prerequisites' custom resources, ...) are created
through the Kubernetes API with the stack's kubeconfig, not through AWS: they need no IAM action of
the deployer (what the kubeconfig's identity may do in the cluster is the cluster's RBAC, see
docs/kubernetes.md). The EKS Pod Identity association is an AWS resource: the eks actions the
Terraform AWS provider's aws_eks_pod_identity_association calls, on the stack's cluster
(https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonelastickubernetesservice.html).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

EKS = "eks"  # the stack's EKS cluster and its pod identity associations
POD_IDENTITY = "aws:eks/podIdentityAssociation:PodIdentityAssociation"

# Resource types that live in the cluster (or are Pulumi-side only): nothing for IAM to allow.
_IN_CLUSTER = (
    "pulumi:providers:kubernetes",
    "pulumi:pulumi:StackReference",
    "mlflow-stack:compute:KubernetesService",
    "kubernetes:core/v1:Namespace",
    "kubernetes:core/v1:ServiceAccount",
    "kubernetes:core/v1:Service",
    "kubernetes:apps/v1:Deployment",
    "kubernetes:batch/v1:Job",
    "kubernetes:batch/v1:CronJob",
    "kubernetes:autoscaling/v2:HorizontalPodAutoscaler",
    "kubernetes:policy/v1:PodDisruptionBudget",
    "kubernetes:networking.k8s.io/v1:NetworkPolicy",
    "kubernetes:elbv2.k8s.aws/v1beta1:TargetGroupBinding",
    "kubernetes:external-secrets.io/v1:SecretStore",
    "kubernetes:external-secrets.io/v1:ExternalSecret",
    "kubernetes:secrets-store.csi.x-k8s.io/v1:SecretProviderClass",
    "kubernetes:monitoring.coreos.com/v1:PrometheusRule",
)

KUBERNETES_TYPE_ACTIONS: Mapping[str, Mapping[str, tuple[str, ...]]] = {
    **{type_token: {} for type_token in _IN_CLUSTER},
    POD_IDENTITY: {
        EKS: (
            "eks:CreatePodIdentityAssociation",
            "eks:DescribePodIdentityAssociation",
            "eks:UpdatePodIdentityAssociation",
            "eks:DeletePodIdentityAssociation",
            "eks:TagResource",
            "eks:UntagResource",
        ),
    },
}


def eks_scope(policy: Any) -> list[str]:
    """The EKS scope's ARNs for a deployer policy builder (deploy/deployer_policy.py): the clusters
    the stack associates pod identities in, and their associations."""
    clusters = sorted({str(r.get("clusterName")) for r in policy.graph.of_type(POD_IDENTITY)})
    return [
        policy.arn("eks", f"{kind}/{cluster}{tail}")
        for cluster in clusters
        for kind, tail in (("cluster", ""), ("podidentityassociation", "/*"))
    ]
