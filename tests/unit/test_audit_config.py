"""The governance file (lifecycle/audit_config.py): the shipped example, defaults, and one clear error
per mistake naming the key and the fix — before the CLI sends anything to a server."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from cli.main import main
from lifecycle.audit_config import ConfigError, GovernanceConfig, load_config, parse_config

REPO_ROOT = Path(__file__).resolve().parents[2]


def _without_source(config: GovernanceConfig) -> dict:
    body = config.to_json()
    body.pop("source")
    return body


def test_the_shipped_example_spells_out_exactly_the_defaults() -> None:
    shipped = load_config(REPO_ROOT / "stacks" / "governance.yaml")
    assert _without_source(shipped) == _without_source(GovernanceConfig())
    assert shipped.source.endswith("governance.yaml")


def test_a_partial_file_overrides_only_what_it_names_and_json_works_too() -> None:
    config = parse_config(
        '{"models": {"unused_after_days": 30}, "runs": {"required_tags": {"team": "team"}}}'
    )
    assert config.models.unused_after_days == 30
    assert config.runs.required_tags == {"team": ("team",)}
    assert config.experiments.types == GovernanceConfig().experiments.types
    assert config.severities == GovernanceConfig().severities


def test_without_a_file_the_repository_example_or_else_the_defaults_apply(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_config().source == "built-in defaults"
    (tmp_path / "stacks").mkdir()
    (tmp_path / "stacks" / "governance.yaml").write_text("models:\n  unused_after_days: 45\n")
    config = load_config()
    assert config.models.unused_after_days == 45 and config.source == "stacks/governance.yaml"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("modles: {}", "modles: unknown section; did you mean 'models'?"),
        (
            "models: {unused_after_day: 3}",
            "models.unused_after_day: unknown key; did you mean 'unused_after_days'?",
        ),
        ("models: {unused_after_days: 0}", "models.unused_after_days: must be at least 1"),
        ("models: {unused_after_days: ninety}", "models.unused_after_days: must be a whole number"),
        ("models: {champion_alias: 'my champ'}", "models.champion_alias: must be an alias name"),
        ("runs: {page_size: 60000}", "runs.page_size: must be at least 1 and at most 50000"),
        ("runs: {required_tags: [team, owner]}", "runs.required_tags: must map a label to the tag keys"),
        (
            "runs: {required_tags: {team: []}}",
            "runs.required_tags.team: must be a tag key or a non-empty list",
        ),
        (
            "experiments: {types: []}",
            "experiments.types: must not be empty (to turn the rule off, set its severity",
        ),
        ("experiments: {types: [Train ing]}", "experiments.types: 'train ing' is not allowed"),
        ("experiments: {flag_default_experiment_runs: maybe}", "must be true or false"),
        (
            "severities: {no-champion: loud}",
            "severities.no-champion: must be one of info, warning, error, off",
        ),
        ("severities: {naming: warning}", "severities.naming: unknown key"),
        ("report: {fail_on: high}", "report.fail_on: must be one of info, warning, error, never"),
        ("models: [1]", "models: must be a mapping"),
        ("- a\n- b", "the top level must be a mapping"),
        ("a: [", "not valid YAML/JSON"),
    ],
)
def test_each_mistake_gets_one_error_naming_the_key_and_the_fix(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, source="governance.yaml")
    assert str(caught.value).startswith("governance.yaml: ")
    assert message in str(caught.value)


@pytest.fixture
def closed_url(monkeypatch: pytest.MonkeyPatch) -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "not-a-real-password")
    return f"https://127.0.0.1:{port}"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["audit", "--config", "{config}"], "models.unused_after_days"),
        (["audit", "--config", "{missing}"], "cannot read it"),
        (["audit", "--fail-on", "loud"], "--fail-on: must be one of"),
        (["audit", "--max-findings", "-1"], "--max-findings"),
        (["models", "prune", "--older-than", "soon"], "--older-than"),
        (["models", "prune", "--older-than", "-3"], "--older-than"),
        (["models", "prune", "--config", "{config}"], "models.unused_after_days"),
    ],
)
def test_bad_options_and_files_exit_2_before_the_server_is_contacted(
    capsys: pytest.CaptureFixture[str], closed_url: str, tmp_path: Path, argv: list[str], message: str
) -> None:
    """The URL is a closed port: had anything been sent, the exit code would be 3, not 2."""
    bad = tmp_path / "governance.yaml"
    bad.write_text("models:\n  unused_after_days: -1\n")
    argv = [a.format(config=bad, missing=tmp_path / "nope.yaml") for a in argv]
    code = main([*argv, "--url", closed_url, "--username", "admin", "--json"])
    body = json.loads(capsys.readouterr().out)
    assert code == 2 and body["error"] == "usage" and message in body["message"], body


def test_a_good_config_gets_as_far_as_the_server(capsys: pytest.CaptureFixture[str], closed_url: str) -> None:
    code = main(["audit", "--url", closed_url, "--username", "admin", "--json"])
    body = json.loads(capsys.readouterr().out)
    assert code == 3 and body["error"] == "api" and "CONNECTION_FAILED" in body["message"]
