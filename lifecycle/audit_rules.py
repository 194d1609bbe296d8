"""The governance rules themselves, as pure functions of names, tags and timestamps (no HTTP).

- experiments are named `/team/project/type`: lowercase segments, `type` from a vocabulary;
- registered models are named after the product they serve, not the algorithm (`xgboost`,
  `random-forest`, `bert`) nor a version (`v2`, `2024`, `final`, `new`);
- runs carry the required tags (any of a requirement's keys, non-empty);
- a registered model is *unused* when no alias points to any of its versions and its newest version
  (or the model itself, when it has none) is older than N days.

lifecycle/audit.py applies them to what lifecycle/audit_scan.py reads from the server.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from lifecycle.audit_config import ARCHIVED_TAG, ExperimentRules, ModelRules

DEFAULT_EXPERIMENT_ID = "0"
DEFAULT_EXPERIMENT_NAME = "Default"
_MS_PER_DAY = 86_400_000


@dataclass
class Finding:
    """One thing the audit found. `count` ranks the worst offenders: the runs missing tags in an
    experiment, the days a model has been idle; 1 for a name."""

    kind: str
    severity: str
    subject: str  # the experiment or registered model name
    detail: str
    count: int = 1
    subject_id: str = ""
    examples: list[str] = field(default_factory=list)


# --- experiments ----------------------------------------------------------------------------


def experiment_name_problem(name: str, rules: ExperimentRules) -> str | None:
    """Why `name` is not `/team/project/type`, or None when it is."""
    types = ", ".join(rules.types)
    fix = f"rename it /<team>/<project>/<type> with <type> one of {types}"
    if not name.startswith("/"):
        return f"does not start with '/': {fix}"
    segments = name[1:].split("/")
    if len(segments) != 3:
        return f"has {len(segments)} segment(s), not 3 (/team/project/type): {fix}"
    for label, segment in zip(("team", "project", "type"), segments, strict=True):
        if not segment:
            return f"the {label} segment is empty: {fix}"
        if not re.fullmatch(r"[a-z0-9][a-z0-9._-]*", segment):
            return f"the {label} segment {segment!r} is not lowercase letters, digits, '.', '_' or '-': {fix}"
    team, _, kind = segments
    if rules.teams and team not in rules.teams:
        return f"team {team!r} is not one of the configured teams ({', '.join(rules.teams)})"
    if kind not in rules.types:
        return f"type {kind!r} is not one of {types}: rename it /{team}/{segments[1]}/<type>"
    return None


def is_default_experiment(experiment: dict[str, Any]) -> bool:
    """MLflow's own `Default` experiment (id 0): it cannot be renamed away, so its name is not judged."""
    return str(experiment.get("experiment_id")) == DEFAULT_EXPERIMENT_ID


# --- registered model names -----------------------------------------------------------------

_SEPARATORS = re.compile(r"[^A-Za-z0-9]+")
# camelCase and digit boundaries: "XGBoostChurnV2" -> XG, Boost, Churn, V, 2
_WORDS = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+")
_VERSION_TOKEN = re.compile(r"v\d+")
_YEAR = re.compile(r"(19|20)\d{2}")
_DATE = re.compile(r"(19|20)\d{6}")  # 20240131


def name_tokens(name: str) -> list[str]:
    """Lowercase words of a name, split at separators, camelCase and digit boundaries."""
    return [word.lower() for part in _SEPARATORS.split(name) for word in _WORDS.findall(part)]


def model_name_problems(name: str, rules: ModelRules) -> list[str]:
    """What makes `name` a name of an algorithm or a version rather than of a product."""
    tokens = name_tokens(name)
    algorithms = {"".join(name_tokens(term)): term for term in rules.algorithm_names}
    widest = max((len(name_tokens(term)) for term in rules.algorithm_names), default=1)
    matches: list[tuple[int, int, str, str]] = []  # (start, end, what, token text)
    for start in range(len(tokens)):
        for end in range(start + 1, min(len(tokens), start + max(widest, 2)) + 1):
            joined = "".join(tokens[start:end])
            if joined in algorithms:
                matches.append((start, end, "algorithm", algorithms[joined]))
            elif _is_version_marker(joined, end - start, rules):
                matches.append((start, end, "version", joined))
    # "lightgbm" also contains the algorithm "gbm": keep only the widest match over the same words.
    kept = [
        m
        for m in matches
        if not any(
            o is not m and o[0] <= m[0] and m[1] <= o[1] and (o[1] - o[0]) > (m[1] - m[0]) for o in matches
        )
    ]
    problems = []
    algorithm_hits = sorted({m[3] for m in kept if m[2] == "algorithm"})
    version_hits = sorted({m[3] for m in kept if m[2] == "version"})
    if algorithm_hits:
        problems.append(f"names an algorithm ({', '.join(algorithm_hits)})")
    if version_hits:
        problems.append(f"names a version ({', '.join(version_hits)})")
    return problems


def _is_version_marker(joined: str, width: int, rules: ModelRules) -> bool:
    """`v2` (one or two words: "v", "2"), a year, a yyyymmdd date, or a configured version word."""
    if width <= 2 and _VERSION_TOKEN.fullmatch(joined):
        return True
    return width == 1 and bool(
        _YEAR.fullmatch(joined) or _DATE.fullmatch(joined) or joined in rules.version_words
    )


def _wider(other: tuple[int, int, str, str], match: tuple[int, int, str, str]) -> bool:
    """`other` covers `match`'s words and more."""
    return other[0] <= match[0] and match[1] <= other[1] and other[1] - other[0] > match[1] - match[0]


# --- runs -----------------------------------------------------------------------------------


def missing_tag_labels(tags: dict[str, str], required: dict[str, tuple[str, ...]]) -> list[str]:
    """The requirements (labels) none of whose tag keys the run has with a non-empty value."""
    return [
        label for label, keys in required.items() if not any(str(tags.get(key, "")).strip() for key in keys)
    ]


def run_tags(run: dict[str, Any]) -> dict[str, str]:
    """A REST run's tags as a dict."""
    return {t["key"]: t.get("value", "") for t in run.get("data", {}).get("tags", [])}


# --- registered model usage -----------------------------------------------------------------


@dataclass
class ModelUsage:
    """What the unused-model rule needs to know about one registered model."""

    name: str
    created_ms: int
    aliases: dict[str, str]  # alias -> version
    newest_version: str | None
    newest_version_ms: int | None
    archived: str | None  # the value of the mlflow_stack.archived tag, if set

    @property
    def last_activity_ms(self) -> int:
        """When the newest version was registered, or the model created when it has none."""
        return self.newest_version_ms if self.newest_version_ms is not None else self.created_ms

    def idle_days(self, now: datetime) -> float:
        return (now.timestamp() * 1000 - self.last_activity_ms) / _MS_PER_DAY

    def is_unused(self, now: datetime, older_than_days: float) -> bool:
        """No alias points to it and nothing new was registered for `older_than_days`."""
        return not self.aliases and self.idle_days(now) >= older_than_days

    def last_activity(self) -> str:
        stamp = datetime.fromtimestamp(self.last_activity_ms / 1000).astimezone().date().isoformat()
        if self.newest_version is None:
            return f"created {stamp}, no versions"
        return f"newest version {self.newest_version} registered {stamp}"


def model_usage(model: dict[str, Any], newest: dict[str, Any] | None = None) -> ModelUsage:
    """ModelUsage from a REST registered model.

    The newest version is `newest` when given (a model-versions/search ordered by creation time),
    else the highest of the model's `latest_versions` (MLflow returns the latest version of each
    stage; every version is in one stage, so the highest of those is the newest overall)."""
    candidates = [newest] if newest else list(model.get("latest_versions", []))
    best = max(candidates, key=lambda v: int(v.get("version", 0)), default=None)
    tags = {t["key"]: t.get("value", "") for t in model.get("tags", [])}
    return ModelUsage(
        name=model["name"],
        created_ms=int(model.get("creation_timestamp", 0)),
        aliases={a["alias"]: str(a["version"]) for a in model.get("aliases", [])},
        newest_version=str(best["version"]) if best else None,
        newest_version_ms=int(best.get("creation_timestamp", 0)) if best else None,
        archived=tags.get(ARCHIVED_TAG) or None,
    )
