"""MkDocs hook: the reference pages, generated from the code on every build so they cannot drift.

- reference/settings.md from `infra.settings` (section models, presets, scalar keys);
- reference/policies.md from the policy pack's rules (`policies.rules.ALL_RULES`);
- reference/cli.md from the `mlflow-stack` argument parsers (`cli.main.build_parser()`).

The pages are added to the build in memory (`on_files`), never written into docs/, so there is no
generated file to forget to regenerate. tests/unit/test_docs.py imports the same functions and
compares the pages with the live model, pack and parsers.
"""

from __future__ import annotations

import argparse
import sys
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
# Document the checkout being built, not whatever copy of the kit happens to be installed.
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

SETTINGS_PAGE = "reference/settings.md"
POLICIES_PAGE = "reference/policies.md"
CLI_PAGE = "reference/cli.md"
PROGRAM = "mlflow-stack"
# The Pulumi config namespace of every kit setting (the project name in Pulumi.yaml).
PROJECT_NAMESPACE = "mlflow-stack"


# ---------------------------------------------------------------------------------------------
# Markdown helpers


def _cell(text: object) -> str:
    """One table cell: no line breaks, no unescaped pipes."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _code(value: str) -> str:
    return f"`{value}`" if value else ""


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(cell) for cell in row) + " |" for row in rows]
    return [*lines, ""]


def _yaml_value(value: Any) -> str:
    """A default as it would be written in a stack file."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, list | tuple):
        return "`[" + ", ".join(str(item) for item in value) + "]`"
    if isinstance(value, dict):
        return "`{" + ", ".join(f"{k}: {v}" for k, v in value.items()) + "}`"
    return f"`{value}`"


# ---------------------------------------------------------------------------------------------
# Settings


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return "one of " + ", ".join(f"`{arg}`" for arg in args)
    if origin in (typing.Union, types.UnionType):
        names = [_type_name(arg) for arg in args if arg is not type(None)]
        nullable = " or null" if type(None) in args else ""
        return " or ".join(names) + nullable
    if origin in (list, tuple):
        return f"list of {_type_name(args[0])}s" if args else "list"
    if origin is dict:
        return "map of strings" if args and args[1] is str else "map"
    return {str: "string", int: "integer", float: "number", bool: "boolean"}.get(annotation, str(annotation))


_BOUND_SYMBOLS = (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<"), ("min_length", "length ≥"))


def _constraints(model: type, field_name: str, field: Any) -> str:
    parts = []
    for meta in field.metadata:
        for attribute, symbol in _BOUND_SYMBOLS:
            bound = getattr(meta, attribute, None)
            if bound is not None:
                parts.append(f"{symbol} {bound}")
    validators = model.__pydantic_decorators__.field_validators.values()
    if any(field_name in validator.info.fields for validator in validators):
        parts.append("format checked when loaded")
    return ", ".join(parts) or "—"


def _model_default(field: Any) -> tuple[bool, Any]:
    """(required, default) of a pydantic field."""
    if field.is_required():
        return True, None
    if field.default_factory is not None:
        return False, field.default_factory()
    return False, field.default


def settings_sections() -> dict[str, list[str]]:
    """Section key -> the YAML keys (camelCase aliases) of its fields, from the live models."""
    from infra.settings import SECTION_MODELS

    return {
        section: [field.alias or name for name, field in model.model_fields.items()]
        for section, model in SECTION_MODELS.items()
    }


def settings_reference() -> str:
    from infra.settings import ENVIRONMENTS, PRESETS, SCALAR_KEYS, SECTION_MODELS

    lines = [
        "# Settings reference",
        "",
        "Generated from the settings models, presets and key list (`infra.settings`) every time the "
        "site is built. How the keys fit together, the cross-field checks and what the data plane "
        "builds from them: [Settings](../settings.md).",
        "",
        "Each stack file `stacks/Pulumi.<stack>.yaml` sets `aws:region` (required) and keys in the "
        f"`{PROJECT_NAMESPACE}:` namespace. The default of a section key depends on the environment: "
        "the preset's value where the preset sets one, else the model's default. A value in the "
        "stack file always wins.",
        "",
        "## Top-level keys {#top-level-keys}",
        "",
    ]
    lines += _table(
        ["key", "meaning"],
        [[f"`{PROJECT_NAMESPACE}:{key}`", description] for key, description in SCALAR_KEYS.items()],
    )
    lines += ["## Sections {#sections}", ""]
    lines += [
        "One YAML object per section key. " + ", ".join(f"[`{s}`](#{s.lower()})" for s in SECTION_MODELS),
        "",
    ]
    for section, model in SECTION_MODELS.items():
        doc = (model.__doc__ or "").strip().split("\n\n")[0]
        heading = f"### `{PROJECT_NAMESPACE}:{section}` {{#{section.lower()}}}"
        lines += [heading, "", " ".join(doc.split()), ""]
        rows = []
        for name, field in model.model_fields.items():
            key = field.alias or name
            required, default = _model_default(field)
            per_env = []
            for environment in ENVIRONMENTS:
                preset = PRESETS.get(environment, {}).get(section, {})
                if key in preset:
                    per_env.append(_yaml_value(preset[key]))
                else:
                    per_env.append("**required**" if required else _yaml_value(default))
            rows.append(
                [
                    f"`{key}`",
                    _type_name(field.annotation),
                    *per_env,
                    field.description or "",
                    _constraints(model, name, field),
                ]
            )
        lines += _table(["key", "type", *ENVIRONMENTS, "meaning", "constraints"], rows)
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Policies


def _schema_type(schema: Mapping[str, Any]) -> str:
    kind = schema.get("type", "")
    if kind == "array":
        return f"list of {schema.get('items', {}).get('type', 'values')}s"
    return str(kind)


def _schema_limits(schema: Mapping[str, Any]) -> str:
    parts = []
    if "enum" in schema:
        parts.append("one of " + ", ".join(f"`{value}`" for value in schema["enum"]))
    if "minimum" in schema:
        parts.append(f"≥ {schema['minimum']}")
    if "maximum" in schema:
        parts.append(f"≤ {schema['maximum']}")
    return ", ".join(parts) or "—"


def policies_reference() -> str:
    from policies.rules import ALL_RULES

    lines = [
        "# Policy rules reference",
        "",
        "Generated from the policy pack's rules (`policies/rules/`) every time the site is built. "
        "How the pack runs, how to configure it and how waivers work: "
        "[Guardrails and the offline preview](../guardrails.md).",
        "",
        "**mandatory** rules block `pulumi preview`/`up` (and make `mlflow-stack preview` exit 1); "
        "**advisory** rules only report. A *resource* rule looks at one resource at a time, a *stack* "
        "rule at the whole resource graph (companion resources, dependencies).",
        "",
        "## Summary {#summary}",
        "",
    ]
    lines += _table(
        ["rule", "level", "scope", "what it checks"],
        [[f"[`{r.name}`](#{r.name})", r.enforcement, r.scope, r.description] for r in ALL_RULES],
    )
    for rule in ALL_RULES:
        lines += [
            f"## `{rule.name}` {{#{rule.name}}}",
            "",
            f"*{rule.enforcement}, {rule.scope} rule.* {rule.description}",
            "",
            f"**Fix:** {rule.remediation}",
            "",
        ]
        if rule.config:
            lines += ["Configuration (`--policy-pack-config` / `mlflow-stack preview --policy-config`):", ""]
            rows = [
                [
                    f"`{key}`",
                    _schema_type(schema),
                    _yaml_value(schema["default"]) if "default" in schema else "—",
                    _schema_limits(schema),
                    schema.get("description", ""),
                ]
                for key, schema in rule.config.items()
            ]
            lines += _table(["setting", "type", "default", "allowed", "meaning"], rows)
        else:
            lines += ["No settings besides the enforcement level.", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# CLI


def _subcommands(parser: argparse.ArgumentParser) -> Iterator[tuple[str, str, argparse.ArgumentParser]]:
    """(name, help, parser) of each direct sub-command."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
            for name, sub in action.choices.items():
                yield name, helps.get(name, ""), sub


def cli_commands() -> list[tuple[tuple[str, ...], str, argparse.ArgumentParser]]:
    """Every command and sub-command, depth first: (path, help, parser)."""
    from cli.main import build_parser

    found: list[tuple[tuple[str, ...], str, argparse.ArgumentParser]] = []

    def walk(parser: argparse.ArgumentParser, path: tuple[str, ...]) -> None:
        for name, help_text, sub in _subcommands(parser):
            found.append(((*path, name), help_text, sub))
            walk(sub, (*path, name))

    walk(build_parser(), ())
    return found


def documented_actions(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The options and positionals a user sees in --help (hidden ones and --help itself left out)."""
    return [
        action
        for action in parser._actions
        if not isinstance(action, argparse._SubParsersAction | argparse._HelpAction)
        and action.help != argparse.SUPPRESS
    ]


def _local_paths(text: str) -> str:
    """Defaults computed from the checkout (e.g. the state dir) shown relative to it."""
    return text.replace(str(REPO_ROOT), ".")


def _action_row(parser: argparse.ArgumentParser, action: argparse.Action) -> list[str]:
    name = ", ".join(f"`{option}`" for option in action.option_strings) or f"`{action.dest}`"
    takes_value = action.nargs != 0
    value = action.metavar or (action.dest.upper() if action.option_strings else "")
    if action.choices and takes_value:
        value = "{" + ",".join(map(str, action.choices)) + "}"
    default = ""
    if takes_value and action.default not in (None, "", argparse.SUPPRESS):
        default = _local_paths(_yaml_value(action.default))
    required = "yes" if action.required or not action.option_strings else ""
    help_text = _local_paths(parser._get_formatter()._expand_help(action)) if action.help else ""
    return [name, _code(str(value)) if takes_value else "flag", required, default, help_text]


def command_anchor(path: tuple[str, ...]) -> str:
    return "-".join(path)


def cli_reference() -> str:
    commands = cli_commands()
    lines = [
        "# Command reference",
        "",
        f"Generated from the `{PROGRAM}` argument parsers every time the site is built, so it lists "
        f"exactly what `{PROGRAM} … --help` prints. `make install` puts the command into "
        f"`.venv/bin/{PROGRAM}`. Exit codes and JSON output: [Operating the stack](../operations.md), "
        "[Smoke checks](../smoke.md), [Deploying to AWS](../deploy.md).",
        "",
        "## Commands {#commands}",
        "",
    ]
    lines += _table(
        ["command", "what it does"],
        [[f"[`{PROGRAM} {' '.join(p)}`](#{command_anchor(p)})", h] for p, h, _ in commands],
    )
    for path, help_text, parser in commands:
        lines += [f"## `{PROGRAM} {' '.join(path)}` {{#{command_anchor(path)}}}", ""]
        description = parser.description or help_text
        if description:
            lines += [" ".join(_local_paths(description).split()), ""]
        usage = " ".join(_local_paths(parser.format_usage()).split()).removeprefix("usage: ")
        lines += ["```text", usage, "```", ""]
        actions = documented_actions(parser)
        subs = [name for name, _, _ in _subcommands(parser)]
        if subs:
            links = [f"[`{sub}`](#{command_anchor((*path, sub))})" for sub in subs]
            lines += ["Sub-commands: " + ", ".join(links), ""]
        if actions:
            lines += _table(
                ["option", "value", "required", "default", "meaning"],
                [_action_row(parser, action) for action in actions],
            )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# The MkDocs hook

GENERATED_PAGES: dict[str, Callable[[], str]] = {
    SETTINGS_PAGE: settings_reference,
    POLICIES_PAGE: policies_reference,
    CLI_PAGE: cli_reference,
}


def on_files(files: Any, config: Any) -> Any:
    """Add the generated pages to the build (MkDocs event: after docs/ is collected, before nav)."""
    from mkdocs.exceptions import PluginError
    from mkdocs.structure.files import File

    for src_uri, build in GENERATED_PAGES.items():
        if files.get_file_from_path(src_uri) is not None:
            raise PluginError(f"docs/{src_uri} is generated at build time; delete the checked-in copy")
        files.append(File.generated(config, src_uri, content=build()))
    return files
