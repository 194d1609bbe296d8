"""`mlflow-stack models validate | promote | rollback | doctor | prune`: the registry operations CI runs.

Thin glue over lifecycle/models.py. Exit codes are those of `mlflow-stack runs` (cli/runs.py):
0 passed/done, 1 a validation check failed or doctor found broken versions, 2 bad options,
3 server/API/lock-table failure, 4 another pipeline holds the model's lock, 5 nothing to act on
(no such alias or model; nothing to roll back to). `prune` exits 1 when a model was locked or failed.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    Target,
    UsageError,
    add_connection_flags,
    add_lock_flags,
    make_lock,
    run_command,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    models = subparsers.add_parser(
        "models",
        help="model registry: validate (champion/challenger gate), promote, rollback, doctor",
        description=(
            "Registry operations by alias, for CI pipelines. Promote and rollback take a DynamoDB lock."
        ),
    )
    commands = models.add_subparsers(dest="models_command", required=True, metavar="COMMAND")

    validate = commands.add_parser(
        "validate",
        help="the champion/challenger gate: metric present, meets threshold, no large regression",
        description=(
            "Fails (exit 1) when the challenger's metric is missing, misses --threshold, or is worse "
            "than the "
            "champion's by more than --max-regression; the report says which check failed and why."
        ),
    )
    add_connection_flags(validate)
    validate.add_argument("name", help="registered model name")
    validate.add_argument("--alias", default="challenger", help="the candidate's alias (default challenger)")
    validate.add_argument("--champion-alias", default="champion", help="compare against (default champion)")
    validate.add_argument(
        "--metric", required=True, help="e.g. val_auc, val_ndcg_at_10 (MLflow 3 rejects '@')"
    )
    validate.add_argument("--threshold", type=float, help="the metric must reach this value")
    validate.add_argument(
        "--max-regression", help="allowed regression vs the champion: 2%% or 0.02 (relative)"
    )
    direction = validate.add_mutually_exclusive_group()
    direction.add_argument("--higher-is-better", dest="higher", action="store_true", default=True)
    direction.add_argument("--lower-is-better", dest="higher", action="store_false")
    validate.set_defaults(func=_validate)

    promote = commands.add_parser(
        "promote",
        help="move --to to the version --from points to; the replaced version becomes previous-<to>",
    )
    add_connection_flags(promote)
    add_lock_flags(promote)
    promote.add_argument("name", help="registered model name")
    promote.add_argument("--from", dest="from_alias", default="challenger", help="default challenger")
    promote.add_argument("--to", dest="to_alias", default="champion", help="default champion")
    promote.add_argument("--reason", default="", help="why (recorded as a model-version tag)")
    promote.add_argument("--by", default="", help="who (default: CI actor or user@host)")
    promote.set_defaults(func=_promote)

    rollback = commands.add_parser(
        "rollback", help="champion <- previous-champion; tags the rolled-back version"
    )
    add_connection_flags(rollback)
    add_lock_flags(rollback)
    rollback.add_argument("name", help="registered model name")
    rollback.add_argument("--reason", required=True, help="why (recorded on the rolled-back version)")
    rollback.add_argument("--alias", default="champion", help="the alias to roll back (default champion)")
    rollback.add_argument("--by", default="", help="who (default: CI actor or user@host)")
    rollback.set_defaults(func=_rollback)

    doctor = commands.add_parser(
        "doctor",
        help="list versions whose artifacts cannot be resolved, and the aliases pointing at them",
    )
    add_connection_flags(doctor)
    doctor.add_argument("name", help="registered model name")
    doctor.set_defaults(func=_doctor)

    prune = commands.add_parser(
        "prune",
        help="archive or delete unused registered models: no alias, no new version (dry run unless --apply)",
        description=(
            "A model is unused when no alias points to any of its versions and no version was "
            "registered for --older-than days. --archive (default) tags it mlflow_stack.archived "
            "(reversible: delete the tag); --delete deletes it with all its versions. A model any "
            "alias points to is never touched: with --apply each model is read again under its "
            "promotion lock right before acting."
        ),
    )
    add_connection_flags(prune)
    add_lock_flags(prune)
    prune.add_argument(
        "--older-than",
        metavar="DAYS",
        help="days without a new version: 90 or 90d (default: the config's models.unused_after_days, 90)",
    )
    prune.add_argument(
        "--model",
        default="*",
        metavar="PATTERN",
        help="only registered models whose name matches, shell-style ('search-*'; default '*')",
    )
    action = prune.add_mutually_exclusive_group()
    action.add_argument(
        "--archive",
        dest="prune_mode",
        action="store_const",
        const="archive",
        help="tag it archived (default)",
    )
    action.add_argument(
        "--delete", dest="prune_mode", action="store_const", const="delete", help="delete it for good"
    )
    prune.add_argument("--apply", action="store_true", help="act; without it, only list (dry run)")
    prune.add_argument(
        "--config",
        metavar="FILE",
        help="governance rules (default: stacks/governance.yaml if present, else built-in)",
    )
    prune.add_argument("--by", default="", help="who (default: CI actor or user@host)")
    prune.set_defaults(func=_prune, prune_mode="archive")


def _validate(args: argparse.Namespace) -> int:
    from lifecycle.durations import parse_ratio
    from lifecycle.models import validate

    def action(target: Target) -> tuple[dict[str, Any], list[str], int]:
        if args.threshold is None and args.max_regression is None:
            raise UsageError("give --threshold, --max-regression, or both: otherwise the gate checks nothing")
        regression = parse_ratio(args.max_regression) if args.max_regression is not None else None
        result = validate(
            target.conn,
            args.name,
            args.metric,
            threshold=args.threshold,
            max_regression=regression,
            higher_is_better=args.higher,
            challenger_alias=args.alias,
            champion_alias=args.champion_alias,
        )
        verdict = "PASS" if result.passed else "FAIL"
        lines = [f"models validate {args.name} ({args.alias} v{result.challenger['version']}): {verdict}"]  # type: ignore[index]
        lines += [f"  [{'ok' if c.passed else 'FAIL'}] {c.name}: {c.detail}" for c in result.checks]
        return result.to_json(), lines, EXIT_OK if result.passed else EXIT_FAILED

    return run_command(args, action, "models validate")


def _actor(args: argparse.Namespace, target: Target) -> str:
    from lifecycle.locks import default_holder

    if args.by:
        return args.by
    ci = os.environ.get("GITHUB_ACTOR") or os.environ.get("GITLAB_USER_LOGIN")
    return f"{ci or default_holder()} as {target.conn.username}"


def _move_lines(move: Any) -> list[str]:
    if move.action == "already-current":
        return [f"{move.model}: {move.alias} already points to version {move.version}; nothing changed"]
    verb = "promoted" if move.action == "promoted" else "rolled back"
    lines = [
        f"{move.model}: {move.alias} -> version {move.version} "
        f"({verb}; was {move.replaced_version or 'unset'})"
    ]
    if move.action == "promoted":
        lines.append(
            f"  {move.previous_alias} -> "
            + (move.previous_version or f"(unchanged: there was no {move.alias})")
        )
    else:
        lines.append(
            f"  {move.previous_alias} cleared; version {move.replaced_version} tagged with the reason"
        )
    lines.append(f"  by {move.by} at {move.at}; lock {move.lock_id} (waited {move.lock_waited_seconds:.1f}s)")
    return lines


def _promote(args: argparse.Namespace) -> int:
    from lifecycle.locks import model_lock_id
    from lifecycle.models import promote

    def action(target: Target) -> tuple[dict[str, Any], list[str], int]:
        lock = make_lock(args, target, model_lock_id(args.name))
        move = promote(
            target.conn,
            args.name,
            lock,
            from_alias=args.from_alias,
            to_alias=args.to_alias,
            reason=args.reason,
            by=_actor(args, target),
            wait_seconds=args.wait,
        )
        return move.to_json(), _move_lines(move), EXIT_OK

    return run_command(args, action, "models promote")


def _rollback(args: argparse.Namespace) -> int:
    from lifecycle.locks import model_lock_id
    from lifecycle.models import rollback

    def action(target: Target) -> tuple[dict[str, Any], list[str], int]:
        lock = make_lock(args, target, model_lock_id(args.name))
        move = rollback(
            target.conn,
            args.name,
            lock,
            reason=args.reason,
            alias=args.alias,
            by=_actor(args, target),
            wait_seconds=args.wait,
        )
        return move.to_json(), _move_lines(move), EXIT_OK

    return run_command(args, action, "models rollback")


def _doctor(args: argparse.Namespace) -> int:
    from lifecycle.models import doctor

    def action(target: Target) -> tuple[dict[str, Any], list[str], int]:
        report = doctor(target.conn, args.name)
        lines = [f"models doctor {args.name}: {len(report.versions)} version(s), {len(report.broken)} broken"]
        for v in report.versions:
            aliases = f" aliases={','.join(v.aliases)}" if v.aliases else ""
            lines.append(f"  v{v.version} [{v.status}]{aliases} {v.artifact_uri}")
            if v.status != "ok":
                lines.append(f"      {v.detail}")
        return report.to_json(), lines, EXIT_FAILED if report.broken else EXIT_OK

    return run_command(args, action, "models doctor")


def _prune(args: argparse.Namespace) -> int:
    from lifecycle.audit_config import load_config
    from lifecycle.locks import model_lock_id
    from lifecycle.models_prune import parse_days, prune

    def action(target: Target) -> tuple[dict[str, Any], list[str], int]:
        config = load_config(args.config)
        days = (
            parse_days(args.older_than)
            if args.older_than is not None
            else float(config.models.unused_after_days)
        )
        # Checked before anything is listed: a bad --lock-ttl/--wait must not surface after the scan.
        lock_for = (lambda name: make_lock(args, target, model_lock_id(name))) if args.apply else None
        if lock_for is not None:
            make_lock(args, target, model_lock_id("-"))
        report = prune(
            target.conn,
            older_than_days=days,
            model_pattern=args.model,
            mode=args.prune_mode,
            apply=args.apply,
            lock_for=lock_for,
            wait_seconds=args.wait,
            by=_actor(args, target),
        )
        verb = "archive" if args.prune_mode == "archive" else "delete"
        header = "DRY RUN (pass --apply to act)" if report.dry_run else "APPLIED"
        lines = [
            f"models prune --{verb}: {header}",
            f"  registered models matching {args.model!r}: {report.scanned}; "
            f"unused (no alias, no new version for {days:g} day(s)): {len(report.candidates)}",
        ]
        lines += [f"    {c.name}: idle {c.idle_days} day(s), {c.last_activity}" for c in report.candidates]
        if report.already_archived:
            lines.append(f"  already archived: {', '.join(report.already_archived)}")
        if not report.dry_run:
            lines.append(
                f"  {verb}d: {len(report.acted)}" + (f" [{', '.join(report.acted)}]" if report.acted else "")
            )
        lines += [f"  skipped {name}: {why}" for name, why in report.skipped.items()]
        lines += [f"  already gone: {name}" for name in report.already_gone]
        lines += [f"  FAILED {name}: {why}" for name, why in report.failed.items()]
        return report.to_json(), lines, EXIT_FAILED if report.incomplete else EXIT_OK

    return run_command(args, action, "models prune")
