"""Every rule of the pack, by area. Importing this starts nothing (no PolicyPack here)."""

from __future__ import annotations

from policies.rules import (
    alb,
    ecs,
    iam,
    kubernetes,
    migration,
    mlflow,
    network,
    observability,
    rds,
    s3,
    tags,
    waf,
)
from policies.spec import Rule

ALL_RULES: tuple[Rule, ...] = (
    *s3.RULES,
    *rds.RULES,
    *alb.RULES,
    *waf.RULES,
    *network.RULES,
    *iam.RULES,
    *ecs.RULES,
    *kubernetes.RULES,
    *mlflow.RULES,
    *migration.RULES,
    *tags.RULES,
    *observability.RULES,
)
RULES_BY_NAME: dict[str, Rule] = {rule.name: rule for rule in ALL_RULES}
