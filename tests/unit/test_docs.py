"""The documentation site: generated references complete, strict build clean, links resolve.

The expected keys, rules and options are read from the live settings models, policy pack and
argument parsers, so a setting, rule or option added without showing up in the docs fails here.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCS = REPO_ROOT / "docs"
README = REPO_ROOT / "README.md"
README_MAX_LINES = 200
BUILD_SECONDS_LIMIT = 30
# Markdown links, outside code: [text](target)
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`[^`\n]*`")


def _load_hook() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_reference_hook", DOCS / "hooks" / "reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


hook = _load_hook()


def _sections(page: str, level: str = "##") -> dict[str, str]:
    """Heading text (without its {#id}) -> the text up to the next heading of the same level."""
    parts = re.split(rf"^{level} (.+)$", page, flags=re.MULTILINE)
    return {re.sub(r"\s*\{#[^}]*\}$", "", parts[i]): parts[i + 1] for i in range(1, len(parts), 2)}


def _rows(block: str) -> dict[str, list[str]]:
    """First cell -> all cells of every table row in a block."""
    rows = {}
    for line in block.splitlines():
        if line.startswith("| ") and not line.startswith("|---"):
            cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]]
            rows[cells[0]] = cells
    return rows


# --- settings ------------------------------------------------------------------------------------


def test_settings_reference_lists_every_key_of_every_section_with_its_preset_defaults() -> None:
    from infra.settings import ENVIRONMENTS, PRESETS, SECTION_MODELS

    page = hook.settings_reference()
    sections = _sections(page, "###")
    for section, model in SECTION_MODELS.items():
        rows = _rows(sections[f"`mlflow-stack:{section}`"])
        header = rows["key"]
        for name, field in model.model_fields.items():
            key = field.alias or name
            assert f"`{key}`" in rows, f"{section}.{key} is missing from the settings reference"
            row = dict(zip(header, rows[f"`{key}`"], strict=True))
            assert row["meaning"] == " ".join((field.description or "").split()).replace("|", "\\|")
            if field.is_required():
                assert all(row[env] == "**required**" for env in ENVIRONMENTS), (section, key)
        # Every preset value reaches the column of its environment.
        for environment in ENVIRONMENTS:
            for key, value in PRESETS[environment].get(section, {}).items():
                row = dict(zip(header, rows[f"`{key}`"], strict=True))
                assert row[environment] == hook._yaml_value(value), (environment, section, key)


def test_settings_reference_shows_bounds_and_choices() -> None:
    from infra.settings import SECTION_MODELS

    sections = _sections(hook.settings_reference(), "###")
    server = _rows(sections["`mlflow-stack:server`"])
    workers = SECTION_MODELS["server"].model_fields["workers"]
    bounds = {type(meta).__name__: meta for meta in workers.metadata}
    assert server["`workers`"][-1] == f"≥ {bounds['Ge'].ge}, ≤ {bounds['Le'].le}"
    network = _rows(sections["`mlflow-stack:network`"])
    assert network["`natGateways`"][1] == "one of `single`, `per_az`, `none`"


def test_settings_reference_lists_every_scalar_key() -> None:
    from infra.settings import SCALAR_KEYS

    top = _rows(_sections(hook.settings_reference())["Top-level keys"])
    for key, description in SCALAR_KEYS.items():
        assert top[f"`mlflow-stack:{key}`"][1] == description.replace("|", "\\|")


# --- policies ------------------------------------------------------------------------------------


def test_policy_reference_lists_every_rule_with_its_level_and_settings() -> None:
    from policies.rules import ALL_RULES

    page = hook.policies_reference()
    summary = _rows(_sections(page)["Summary"])
    sections = _sections(page)
    for rule in ALL_RULES:
        assert summary[f"[`{rule.name}`](#{rule.name})"][1] == rule.enforcement
        body = sections[f"`{rule.name}`"]
        assert rule.remediation in body
        settings = _rows(body)
        for key, schema in rule.config.items():
            assert f"`{key}`" in settings, f"{rule.name}: setting {key} is not documented"
            if "default" in schema:
                assert settings[f"`{key}`"][2] == hook._yaml_value(schema["default"]).replace("|", "\\|")


# --- CLI -----------------------------------------------------------------------------------------


def test_cli_reference_lists_every_command_and_option() -> None:
    commands = hook.cli_commands()
    assert {path[0] for path, _, _ in commands} >= {"local", "smoke", "runs", "models", "preview"}
    sections = _sections(hook.cli_reference())
    for path, _, parser in commands:
        title = f"`mlflow-stack {' '.join(path)}`"
        assert title in sections, f"{title} has no section in the command reference"
        options = _rows(sections[title])
        for action in hook.documented_actions(parser):
            name = ", ".join(f"`{o}`" for o in action.option_strings) or f"`{action.dest}`"
            assert name in options, f"{title}: {name} is not documented"


def test_cli_reference_hides_nothing_a_user_types_and_no_machine_path() -> None:
    page = hook.cli_reference()
    # Defaults computed from the checkout (the local state dir) are shown relative to it.
    assert str(REPO_ROOT) not in page
    assert "`./.local-stack`" in _rows(_sections(page)["`mlflow-stack local up`"])["`--state-dir`"][3]


# --- the site ------------------------------------------------------------------------------------


def _mkdocs_build(config: Path, site_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    command = [
        sys.executable,
        "-m",
        "mkdocs",
        "build",
        "--strict",
        "-f",
        str(config),
        "--site-dir",
        str(site_dir),
    ]
    return subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_strict_build_passes_without_warnings_and_renders_the_references(tmp_path: Path) -> None:
    started = time.monotonic()
    result = _mkdocs_build(REPO_ROOT / "mkdocs.yml", tmp_path / "site")
    elapsed = time.monotonic() - started
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "WARNING" not in output, output
    assert elapsed < BUILD_SECONDS_LIMIT, f"the docs build took {elapsed:.1f}s"
    for page in hook.GENERATED_PAGES:
        html = tmp_path / "site" / page.removesuffix(".md") / "index.html"
        assert html.is_file(), f"{page} was not generated"
    # The hook's source is not published as a page or a static file.
    assert not (tmp_path / "site" / "hooks").exists()
    # README links into the docs land on headings that exist in the built site.
    for target in _links(README):
        path, _, anchor = target.partition("#")
        if anchor and path.startswith("docs/"):
            html = (
                tmp_path / "site" / path.removeprefix("docs/").removesuffix(".md") / "index.html"
            ).read_text()
            assert f'id="{anchor}"' in html, f"README links to {target}, which has no such heading"


def test_strict_build_fails_on_a_broken_anchor(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    shutil.copytree(DOCS, docs, ignore=shutil.ignore_patterns("hooks"))
    with (docs / "troubleshooting.md").open("a") as page:
        page.write("\nSee [the smoke checks](smoke.md#no-such-heading).\n")
    config = (REPO_ROOT / "mkdocs.yml").read_text()
    config = config.replace("docs_dir: docs", f"docs_dir: {docs}")
    config = config.replace("  - docs/hooks/reference.py", f"  - {DOCS / 'hooks' / 'reference.py'}")
    (tmp_path / "mkdocs.yml").write_text(config)
    result = _mkdocs_build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert result.returncode != 0
    assert "no-such-heading" in result.stdout + result.stderr


# --- README and links ----------------------------------------------------------------------------


def _links(markdown_file: Path) -> list[str]:
    text = INLINE_CODE.sub("", FENCE.sub("", markdown_file.read_text()))
    return [target for target in LINK.findall(text) if not re.match(r"[a-z]+:", target)]


def test_readme_fits_on_two_screens() -> None:
    lines = README.read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines"


@pytest.mark.parametrize(
    "markdown_file",
    [README, *sorted(DOCS.rglob("*.md"))],
    ids=lambda path: str(path.relative_to(REPO_ROOT)),
)
def test_relative_links_point_to_existing_files(markdown_file: Path) -> None:
    generated = {DOCS / page for page in hook.GENERATED_PAGES}
    for target in _links(markdown_file):
        path = target.partition("#")[0]
        if not path:
            continue  # an anchor on the same page: the strict build checks those
        resolved = (markdown_file.parent / path).resolve()
        assert resolved.exists() or resolved in generated, f"{markdown_file.name}: broken link {target}"


def test_links_are_found() -> None:
    # The link checker above sees links at all: the README links into every main docs page.
    linked = {target.partition("#")[0] for target in _links(README)}
    assert {"docs/getting-started.md", "docs/deploy.md", "docs/settings.md", "docs/architecture.md"} <= linked
