"""Stack waivers (`mlflow-stack:overrides`) expressed as policy configuration.

The settings let a prod stack waive a guard with a written reason. The pack keeps the rule as it
is; a waiver only lowers that policy to advisory for that stack — the same thing a user does with
`pulumi preview --policy-pack-config` — so the violation still shows, next to its reason.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

OVERRIDES_KEY = "mlflow-stack:overrides"

# settings guard (infra/settings.PROD_GUARDS) -> the policy that enforces the same thing
GUARD_POLICIES: dict[str, str] = {
    "database.multiAz": "rds-prod-multi-az",
    "database.deletionProtection": "rds-prod-deletion-protection",
    "database.backupRetentionDays": "rds-backup-retention",
}


def waivers(stack_config: Mapping[str, Any]) -> dict[str, str]:
    """policy name -> the stack's written reason, for every waived guard a policy enforces."""
    raw = stack_config.get(OVERRIDES_KEY) or {}
    if isinstance(raw, str):
        raw = json.loads(raw)
    return {GUARD_POLICIES[key]: str(reason) for key, reason in dict(raw).items() if key in GUARD_POLICIES}


def waiver_config(waived: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """The `--policy-pack-config` entries that apply the waivers."""
    return {policy: {"enforcementLevel": "advisory"} for policy in waived}
