"""Every Kubernetes manifest the program renders, validated and scanned as a cluster would see it.

- Built-in kinds against the OpenAPI schema of the cluster's Kubernetes version (kubernetes.version)
  with kubernetes-validate in strict mode (unknown fields are errors, as with `kubectl apply
  --validate=strict`).
- The prerequisites' custom resources against the fields their CRDs document, written here from
  their reference pages (the CRDs themselves are not vendored), closed to unknown keys.
- checkov's Kubernetes checks (installed from .ci/manifest-scan's lock into .venv-scan by
  `make install`): no finding, except the ones listed in ACCEPTED with the reason.

Renders every stack file on the kubernetes backend plus the variants a setting switches on
(Pod Identity with the CSI driver, the Prometheus rule), so every builder is covered.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from infra.settings import KubernetesSettings
from preview.offline import REPO_ROOT, list_stacks, run_program, stack_backend, unwrap

KUBERNETES_STACKS = [stack for stack in list_stacks() if stack_backend(stack) == "kubernetes"]
VARIANTS: dict[str, tuple[str, dict[str, Any] | None]] = {
    **{stack: (stack, None) for stack in KUBERNETES_STACKS},
    "vision-prod+pod-identity+csi": (
        "vision-prod",
        {"kubernetes": {"identity": "podIdentity", "secretsDelivery": "csiDriver", "oidcIssuer": None}},
    ),
    "vision-prod+prometheus": ("vision-prod", {"kubernetes": {"podMetrics": "prometheus"}}),
}
CHECKOV = REPO_ROOT / ".venv-scan" / "bin" / "checkov"
# checkov findings accepted, by check id and the kinds they may appear on, with the reason.
ACCEPTED: dict[str, tuple[set[str], str]] = {
    "CKV_K8S_35": (
        {"CronJob"},
        "the maintenance CronJob runs the ECS scheduled task's command unchanged, which reads the admin "
        "password from MLFLOW_TRACKING_PASSWORD (lifecycle/credentials.py); the server and its "
        "migration Job read every secret from files",
    ),
}


def _plain(value: Any) -> Any:
    value = unwrap(value)
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


@pytest.fixture(scope="module")
def rendered() -> dict[str, tuple[str, list[dict[str, Any]]]]:
    """variant -> (cluster version, every Kubernetes object it registers, as plain manifests)."""
    found = {}
    for variant, (stack, overrides) in VARIANTS.items():
        graph = run_program(stack, config_overrides=overrides)
        assert graph.error is None, graph.error
        cluster = graph.config.get("mlflow-stack:kubernetes") or {}
        version = cluster.get("version", KubernetesSettings.model_fields["version"].default)
        objects = [_plain(r.inputs) for r in graph.resources if r.type.startswith("kubernetes:")]
        found[variant] = (version, objects)
    return found


def _closed(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(required),
        "additionalProperties": False,
    }


STRING = {"type": "string"}
STRING_MAP = {"type": "object", "additionalProperties": STRING}
# Written from each CRD's reference page; only the fields the kit sets, each required one required.
CRD_SPECS: dict[tuple[str, str], dict[str, Any]] = {
    # https://kubernetes-sigs.github.io/aws-load-balancer-controller/latest/guide/targetgroupbinding/spec/
    ("elbv2.k8s.aws/v1beta1", "TargetGroupBinding"): _closed(
        {
            "targetGroupARN": {"type": "string", "pattern": r"^arn:aws[a-z-]*:elasticloadbalancing:"},
            "targetType": {"enum": ["instance", "ip"]},
            "serviceRef": _closed(
                {"name": STRING, "port": {"type": ["integer", "string"]}}, ("name", "port")
            ),
            "networking": _closed(
                {
                    "ingress": {
                        "type": "array",
                        "items": _closed(
                            {
                                "from": {
                                    "type": "array",
                                    "minItems": 1,
                                    "items": _closed(
                                        {
                                            "securityGroup": _closed({"groupID": STRING}, ("groupID",)),
                                            "ipBlock": _closed({"cidr": STRING}, ("cidr",)),
                                        }
                                    ),
                                },
                                "ports": {
                                    "type": "array",
                                    "items": _closed(
                                        {
                                            "port": {"type": ["integer", "string"]},
                                            "protocol": {"enum": ["TCP", "UDP"]},
                                        }
                                    ),
                                },
                            },
                            ("from", "ports"),
                        ),
                    }
                }
            ),
        },
        ("serviceRef", "targetGroupARN"),
    ),
    # https://external-secrets.io/latest/api/secretstore/ and .../provider/aws-secrets-manager/
    ("external-secrets.io/v1", "SecretStore"): _closed(
        {
            "provider": _closed(
                {
                    "aws": _closed(
                        {
                            "service": {"enum": ["SecretsManager", "ParameterStore"]},
                            "region": STRING,
                            "auth": _closed(
                                {"jwt": _closed({"serviceAccountRef": _closed({"name": STRING}, ("name",))})}
                            ),
                        },
                        ("service", "region"),
                    )
                },
                ("aws",),
            )
        },
        ("provider",),
    ),
    # https://external-secrets.io/latest/api/externalsecret/
    ("external-secrets.io/v1", "ExternalSecret"): _closed(
        {
            "refreshInterval": {"type": "string", "pattern": r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"},
            "secretStoreRef": _closed(
                {"name": STRING, "kind": {"enum": ["SecretStore", "ClusterSecretStore"]}}, ("name",)
            ),
            "target": _closed(
                {"name": STRING, "creationPolicy": {"enum": ["Owner", "Orphan", "Merge", "None"]}}, ("name",)
            ),
            "data": {
                "type": "array",
                "minItems": 1,
                "items": _closed(
                    {
                        "secretKey": STRING,
                        "remoteRef": _closed({"key": STRING, "property": STRING}, ("key",)),
                    },
                    ("secretKey", "remoteRef"),
                ),
            },
        },
        ("secretStoreRef", "target", "data"),
    ),
    # https://secrets-store-csi-driver.sigs.k8s.io/topics/sync-as-kubernetes-secret and the AWS
    # provider's parameters: https://docs.aws.amazon.com/secretsmanager/latest/userguide/ascp-examples.html
    ("secrets-store.csi.x-k8s.io/v1", "SecretProviderClass"): _closed(
        {
            "provider": {"const": "aws"},
            "parameters": {
                **STRING_MAP,
                "required": ["objects", "region"],
                "propertyNames": {"enum": ["objects", "region", "usePodIdentity"]},
            },
            "secretObjects": {
                "type": "array",
                "items": _closed(
                    {
                        "secretName": STRING,
                        "type": STRING,
                        "data": {
                            "type": "array",
                            "items": _closed({"objectName": STRING, "key": STRING}, ("objectName", "key")),
                        },
                    },
                    ("secretName", "type", "data"),
                ),
            },
        },
        ("provider", "parameters"),
    ),
    # https://prometheus-operator.dev/docs/api-reference/api/#monitoring.coreos.com/v1.PrometheusRule
    ("monitoring.coreos.com/v1", "PrometheusRule"): _closed(
        {
            "groups": {
                "type": "array",
                "items": _closed(
                    {
                        "name": STRING,
                        "rules": {
                            "type": "array",
                            "items": _closed(
                                {
                                    "alert": STRING,
                                    "expr": STRING,
                                    "for": STRING,
                                    "labels": STRING_MAP,
                                    "annotations": STRING_MAP,
                                },
                                ("alert", "expr"),
                            ),
                        },
                    },
                    ("name", "rules"),
                ),
            }
        },
        ("groups",),
    ),
}
# The AWS provider's `objects` parameter: a YAML (here JSON) list of what to fetch.
SECRET_OBJECTS = {
    "type": "array",
    "minItems": 1,
    "items": _closed(
        {
            "objectName": {"type": "string", "pattern": r"^arn:aws[a-z-]*:secretsmanager:"},
            "objectType": {"const": "secretsmanager"},
            "objectAlias": STRING,
            "jmesPath": {
                "type": "array",
                "items": _closed({"path": STRING, "objectAlias": STRING}, ("path", "objectAlias")),
            },
        },
        ("objectName", "objectType"),
    ),
}


def _validate_custom(manifest: dict[str, Any]) -> None:
    schema = CRD_SPECS[(manifest["apiVersion"], manifest["kind"])]
    jsonschema.validate(manifest["spec"], schema)
    assert set(manifest) == {"apiVersion", "kind", "metadata", "spec"}
    assert manifest["metadata"]["name"] and manifest["metadata"]["namespace"]
    if manifest["kind"] == "SecretProviderClass":
        jsonschema.validate(json.loads(manifest["spec"]["parameters"]["objects"]), SECRET_OBJECTS)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_manifest_validates_against_the_clusters_schema(rendered, variant):
    version, objects = rendered[variant]
    builtin = custom = 0
    for manifest in objects:
        if (manifest["apiVersion"], manifest["kind"]) in CRD_SPECS:
            _validate_custom(manifest)
            custom += 1
        else:
            assert kubernetes_validate.validate(manifest, version, strict=True) == version
            builtin += 1
    assert builtin >= 13 and custom >= 2, (builtin, custom)


def test_the_schema_check_rejects_what_a_cluster_would():
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "x"},
        "spec": {
            "selector": {"matchLabels": {"a": "b"}},
            "template": {
                "metadata": {"labels": {"a": "b"}},
                # A typo (readOnlyRootFileSystem) is an unknown field, not a silent no-op.
                "spec": {
                    "containers": [
                        {"name": "c", "image": "i", "securityContext": {"readOnlyRootFileSystem": True}}
                    ]
                },
            },
        },
    }
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, "1.33", strict=True)
    binding = {
        "apiVersion": "elbv2.k8s.aws/v1beta1",
        "kind": "TargetGroupBinding",
        "metadata": {"name": "x", "namespace": "y"},
        "spec": {"serviceRef": {"name": "s", "port": 80}, "targetGroupArn": "arn:aws:elasticloadbalancing:x"},
    }
    with pytest.raises(jsonschema.ValidationError):
        _validate_custom(binding)


# One scan for the whole module: checkov's start-up (~8 s) dominates its run time.
CANARY = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "unsafe", "namespace": "x"},
    "spec": {
        "hostNetwork": True,
        "containers": [{"name": "c", "image": "nginx", "securityContext": {"privileged": True}}],
    },
}


@pytest.fixture(scope="module")
def scanned(rendered, tmp_path_factory) -> dict[str, list[dict[str, Any]]]:
    """checkov's failed checks, split into the kit's manifests ("kit") and a known-unsafe Pod ("canary")."""
    if not CHECKOV.exists():
        pytest.fail(
            f"{CHECKOV} is missing: run `make install` (it syncs .ci/manifest-scan's lock into .venv-scan)"
        )
    directory = tmp_path_factory.mktemp("manifests")
    for variant, (_version, objects) in rendered.items():
        (directory / f"{variant}.yaml").write_text(yaml.safe_dump_all(objects, sort_keys=False))
    (directory / "canary.yaml").write_text(yaml.safe_dump(CANARY))
    completed = subprocess.run(
        [
            str(CHECKOV),
            "--directory",
            str(directory),
            "--framework",
            "kubernetes",
            "--output",
            "json",
            "--quiet",
            # Offline: no Prisma Cloud guideline download (so no severities: every finding counts).
            "--skip-download",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={"PATH": "/usr/bin:/bin", "HOME": str(directory)},
    )
    assert completed.returncode in (0, 1), completed.stderr[-2000:]
    report = json.loads(completed.stdout)
    reports = report if isinstance(report, list) else [report]
    (kubernetes,) = [r for r in reports if r["check_type"] == "kubernetes"]
    assert kubernetes["summary"]["parsing_errors"] == 0
    assert kubernetes["summary"]["passed"] > 100  # the checks ran on the objects
    found: dict[str, list[dict[str, Any]]] = {"kit": [], "canary": []}
    for finding in kubernetes["results"]["failed_checks"]:
        found["canary" if finding["file_path"].endswith("canary.yaml") else "kit"].append(finding)
    return found


def test_the_manifest_scanner_finds_nothing_unaccepted(scanned):
    unaccepted = []
    for finding in scanned["kit"]:
        kind = finding["resource"].split(".", 1)[0]
        accepted_kinds, _reason = ACCEPTED.get(finding["check_id"], (set(), ""))
        if kind not in accepted_kinds:
            unaccepted.append((finding["check_id"], finding["check_name"], finding["resource"]))
    assert not unaccepted, unaccepted


def test_the_scanner_reports_an_unsafe_pod(scanned):
    failed = {finding["check_id"] for finding in scanned["canary"]}
    # privileged (CKV_K8S_16), host network (CKV_K8S_19), no digest (CKV_K8S_43)
    assert {"CKV_K8S_16", "CKV_K8S_19", "CKV_K8S_43"} <= failed
