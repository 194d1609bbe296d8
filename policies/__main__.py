"""The policy pack's program: the Pulumi engine runs this (`pulumi preview --policy-pack policies`),
and so does `mlflow-stack preview` (via `python -m pulumi.policy`, exactly like the engine).

Constructing `PolicyPack` starts the analyzer's gRPC server, prints its port and blocks, which is
why it happens here and nowhere else.
"""

import sys
from pathlib import Path

# The engine runs this file by path from inside policies/; when the kit is not installed into
# the pack's virtualenv, make the repository root importable so `policies.*` resolves.
try:
    import policies.pack  # noqa: F401
except ModuleNotFoundError:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pulumi_policy import EnforcementLevel, PolicyPack

from policies.pack import PACK_NAME, build_policies

PolicyPack(
    name=PACK_NAME,
    policies=build_policies(),
    enforcement_level=EnforcementLevel.MANDATORY,
    description="Guardrails for the mlflow-stack kit: S3, RDS, ALB, network, IAM, ECS, MLflow and tags.",
)
