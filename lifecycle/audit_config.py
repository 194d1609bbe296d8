"""The governance rules' settings: built-in defaults, and a YAML/JSON file that overrides them.

`mlflow-stack audit` and `mlflow-stack models prune` read one file (`--config FILE`, else
`stacks/governance.yaml` when it exists, else the defaults here). Every key is checked before
anything is sent to a server; a bad file gets one error naming the key, what is wrong and the fix.
The shipped `stacks/governance.yaml` spells out these defaults, and docs/governance.md explains them.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lifecycle.durations import InvalidValue

DEFAULT_CONFIG_PATH = Path("stacks") / "governance.yaml"

SEVERITIES = ("info", "warning", "error")
# `off` disables a rule; `never` as fail_on makes the audit report-only (always exit 0).
SEVERITY_OFF = "off"
FAIL_NEVER = "never"

KINDS = (
    "experiment-naming",
    "default-experiment-used",
    "model-naming",
    "runs-missing-tags",
    "no-champion",
    "unused-model",
)

DEFAULT_SEVERITIES = {
    "experiment-naming": "warning",
    "default-experiment-used": "info",
    "model-naming": "warning",
    "runs-missing-tags": "warning",
    # A model still in development has no champion yet; worth seeing, not worth failing CI over.
    "no-champion": "info",
    "unused-model": "warning",
}

DEFAULT_EXPERIMENT_TYPES = (
    "training",
    "tuning",
    "evaluation",
    "exploration",
    "monitoring",
    "inference",
)

DEFAULT_ALGORITHM_NAMES = (
    "xgboost",
    "xgb",
    "lightgbm",
    "lgbm",
    "catboost",
    "random-forest",
    "rf",
    "gbm",
    "gbdt",
    "gradient-boosting",
    "decision-tree",
    "logistic-regression",
    "logreg",
    "linear-regression",
    "svm",
    "knn",
    "naive-bayes",
    "kmeans",
    "mlp",
    "cnn",
    "rnn",
    "lstm",
    "transformer",
    "bert",
    "distilbert",
    "roberta",
    "gpt",
    "llama",
    "resnet",
    "efficientnet",
    "yolo",
    "prophet",
    "arima",
    "sklearn",
    "pytorch",
    "tensorflow",
    "keras",
)

DEFAULT_VERSION_WORDS = ("final", "new", "latest", "old", "copy", "backup", "tmp", "temp")

# label -> tag keys, any of which (with a non-empty value) satisfies the requirement.
DEFAULT_REQUIRED_TAGS = {
    "team": ("team",),
    "owner": ("owner",),
    # MLflow sets mlflow.source.git.commit itself when a run starts inside a git checkout.
    "git commit": ("mlflow.source.git.commit", "git_commit"),
    "data version": ("data_version",),
}

ARCHIVED_TAG = "mlflow_stack.archived"


@dataclass(frozen=True)
class ExperimentRules:
    types: tuple[str, ...] = DEFAULT_EXPERIMENT_TYPES
    teams: tuple[str, ...] = ()  # empty: any team segment
    flag_default_experiment_runs: bool = True


@dataclass(frozen=True)
class ModelRules:
    algorithm_names: tuple[str, ...] = DEFAULT_ALGORITHM_NAMES
    version_words: tuple[str, ...] = DEFAULT_VERSION_WORDS
    champion_alias: str = "champion"
    # Three monthly reviews: a model nobody aliased or retrained in a quarter is not in use.
    unused_after_days: int = 90


@dataclass(frozen=True)
class RunRules:
    required_tags: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(DEFAULT_REQUIRED_TAGS))
    lookback_days: int = 30
    page_size: int = 500
    max_runs_per_experiment: int = 2000


@dataclass(frozen=True)
class ReportRules:
    fail_on: str = "warning"
    max_findings: int = 0
    top: int = 10


@dataclass(frozen=True)
class GovernanceConfig:
    experiments: ExperimentRules = field(default_factory=ExperimentRules)
    models: ModelRules = field(default_factory=ModelRules)
    runs: RunRules = field(default_factory=RunRules)
    severities: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_SEVERITIES))
    report: ReportRules = field(default_factory=ReportRules)
    source: str = "built-in defaults"

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "experiments": {
                "types": list(self.experiments.types),
                "teams": list(self.experiments.teams),
                "flag_default_experiment_runs": self.experiments.flag_default_experiment_runs,
            },
            "models": {
                "algorithm_names": list(self.models.algorithm_names),
                "version_words": list(self.models.version_words),
                "champion_alias": self.models.champion_alias,
                "unused_after_days": self.models.unused_after_days,
            },
            "runs": {
                "required_tags": {k: list(v) for k, v in self.runs.required_tags.items()},
                "lookback_days": self.runs.lookback_days,
                "page_size": self.runs.page_size,
                "max_runs_per_experiment": self.runs.max_runs_per_experiment,
            },
            "severities": dict(self.severities),
            "report": {
                "fail_on": self.report.fail_on,
                "max_findings": self.report.max_findings,
                "top": self.report.top,
            },
        }


class ConfigError(InvalidValue):
    """The governance file is unreadable or a key in it is wrong; the message names the key and fix.

    An InvalidValue, so every command maps it to exit 2 (bad input, nothing sent)."""


_SEGMENT = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_ALIAS = re.compile(r"^[A-Za-z0-9_-]+$")

_SECTIONS: dict[str, tuple[str, ...]] = {
    "experiments": ("types", "teams", "flag_default_experiment_runs"),
    "models": ("algorithm_names", "version_words", "champion_alias", "unused_after_days"),
    "runs": ("required_tags", "lookback_days", "page_size", "max_runs_per_experiment"),
    "severities": KINDS,
    "report": ("fail_on", "max_findings", "top"),
}


def load_config(path: str | Path | None = None) -> GovernanceConfig:
    """The config from `path`; with no path, stacks/governance.yaml if present, else the defaults."""
    if path is None:
        if not DEFAULT_CONFIG_PATH.is_file():
            return GovernanceConfig()
        path = DEFAULT_CONFIG_PATH
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"--config {path}: cannot read it ({error.strerror or error})") from None
    return parse_config(text, source=str(path))


def parse_config(text: str, source: str = "<config>") -> GovernanceConfig:
    """Parse YAML (JSON is YAML too) and validate every key; raises ConfigError on the first problem."""
    import yaml

    try:
        data = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{source}: not valid YAML/JSON ({error})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections ({', '.join(_SECTIONS)})")
    return _build(data, source)


def _build(data: dict[str, Any], source: str) -> GovernanceConfig:
    def fail(key: str, problem: str) -> ConfigError:
        return ConfigError(f"{source}: {key}: {problem}")

    for section, value in data.items():
        if section not in _SECTIONS:
            raise fail(str(section), f"unknown section{_did_you_mean(str(section), _SECTIONS)}")
        if not isinstance(value, dict):
            raise fail(section, "must be a mapping of keys, e.g. `models: {unused_after_days: 90}`")
        for key in value:
            if key not in _SECTIONS[section]:
                raise fail(f"{section}.{key}", f"unknown key{_did_you_mean(str(key), _SECTIONS[section])}")

    exp = data.get("experiments", {})
    mod = data.get("models", {})
    run = data.get("runs", {})
    rep = data.get("report", {})
    defaults = GovernanceConfig()

    def words(
        section: str, key: str, value: Any, pattern: re.Pattern[str], allow_empty: bool
    ) -> tuple[str, ...]:
        name = f"{section}.{key}"
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise fail(name, "must be a list of strings, e.g. [training, tuning]")
        cleaned = tuple(dict.fromkeys(v.strip().lower() for v in value))
        bad = [v for v in cleaned if not pattern.match(v)]
        if bad:
            raise fail(name, f"{bad[0]!r} is not allowed: use lowercase letters, digits, '.', '_' or '-'")
        if not cleaned and not allow_empty:
            raise fail(name, "must not be empty (to turn the rule off, set its severity to `off`)")
        return cleaned

    def integer(section: str, key: str, value: Any, minimum: int, maximum: int | None = None) -> int:
        name = f"{section}.{key}"
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail(name, f"must be a whole number, got {value!r}")
        if value < minimum or (maximum is not None and value > maximum):
            upper = f" and at most {maximum}" if maximum is not None else ""
            raise fail(name, f"must be at least {minimum}{upper}, got {value}")
        return value

    experiments = ExperimentRules(
        types=words("experiments", "types", exp["types"], _SEGMENT, False)
        if "types" in exp
        else defaults.experiments.types,
        teams=words("experiments", "teams", exp["teams"], _SEGMENT, True)
        if "teams" in exp
        else defaults.experiments.teams,
        flag_default_experiment_runs=_boolean(
            exp.get("flag_default_experiment_runs", True), "experiments.flag_default_experiment_runs", fail
        ),
    )
    champion = mod.get("champion_alias", defaults.models.champion_alias)
    if not isinstance(champion, str) or not _ALIAS.match(champion):
        raise fail("models.champion_alias", f"must be an alias name such as champion, got {champion!r}")
    models = ModelRules(
        algorithm_names=words("models", "algorithm_names", mod["algorithm_names"], _SEGMENT, True)
        if "algorithm_names" in mod
        else defaults.models.algorithm_names,
        version_words=words("models", "version_words", mod["version_words"], _SEGMENT, True)
        if "version_words" in mod
        else defaults.models.version_words,
        champion_alias=champion,
        unused_after_days=integer(
            "models", "unused_after_days", mod.get("unused_after_days", defaults.models.unused_after_days), 1
        ),
    )
    runs = RunRules(
        required_tags=_required_tags(run["required_tags"], fail)
        if "required_tags" in run
        else dict(defaults.runs.required_tags),
        lookback_days=integer(
            "runs", "lookback_days", run.get("lookback_days", defaults.runs.lookback_days), 1
        ),
        # MLflow's search-runs refuses max_results above 50000.
        page_size=integer("runs", "page_size", run.get("page_size", defaults.runs.page_size), 1, 50000),
        max_runs_per_experiment=integer(
            "runs",
            "max_runs_per_experiment",
            run.get("max_runs_per_experiment", defaults.runs.max_runs_per_experiment),
            1,
        ),
    )
    severities = dict(DEFAULT_SEVERITIES)
    for kind, level in data.get("severities", {}).items():
        if level not in (*SEVERITIES, SEVERITY_OFF):
            raise fail(
                f"severities.{kind}",
                f"must be one of {', '.join((*SEVERITIES, SEVERITY_OFF))}, got {level!r}",
            )
        severities[kind] = level
    report = ReportRules(
        fail_on=parse_fail_on(rep.get("fail_on", defaults.report.fail_on), f"{source}: report.fail_on"),
        max_findings=integer(
            "report", "max_findings", rep.get("max_findings", defaults.report.max_findings), 0
        ),
        top=integer("report", "top", rep.get("top", defaults.report.top), 1),
    )
    return GovernanceConfig(experiments, models, runs, severities, report, source)


def parse_fail_on(value: Any, flag: str = "--fail-on") -> str:
    """A severity (info, warning, error) or `never` (report only)."""
    choices = (*SEVERITIES, FAIL_NEVER)
    if value not in choices:
        raise ConfigError(f"{flag}: must be one of {', '.join(choices)}, got {value!r}")
    return str(value)


def _boolean(value: Any, name: str, fail: Any) -> bool:
    if not isinstance(value, bool):
        raise fail(name, f"must be true or false, got {value!r}")
    return value


def _required_tags(value: Any, fail: Any) -> dict[str, tuple[str, ...]]:
    example = "e.g. `required_tags: {team: [team], git commit: [mlflow.source.git.commit, git_commit]}`"
    if not isinstance(value, dict):
        raise fail("runs.required_tags", f"must map a label to the tag keys that satisfy it, {example}")
    tags: dict[str, tuple[str, ...]] = {}
    for label, keys in value.items():
        name = f"runs.required_tags.{label}"
        if isinstance(keys, str):
            keys = [keys]
        if not isinstance(keys, list) or not keys or not all(isinstance(k, str) and k.strip() for k in keys):
            raise fail(name, f"must be a tag key or a non-empty list of tag keys, {example}")
        tags[str(label)] = tuple(k.strip() for k in keys)
    return tags


def _did_you_mean(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"{hint} (known: {', '.join(choices)})"
