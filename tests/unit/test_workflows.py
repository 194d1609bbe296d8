"""The GitHub Actions workflows: actionlint finds nothing, and they do what docs/ci.md promises.

Nothing here runs GitHub; these read the workflow files. actionlint (a dev dependency, also run by
`make lint`) checks syntax, expressions, job/step references and, where shellcheck is on PATH, every
`run:` script. The rest asserts the behaviour a reviewer relies on: previews on pull requests with
one sticky comment that fails the check on a mandatory violation, deploys on merge in environment
order with prod behind an approval and a smoke after each `pulumi up`, OIDC instead of stored AWS
keys, and every third-party action pinned to a commit.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from preview.compare import MARKER

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"
ACTIONS = ROOT / ".github" / "actions"
ACTIONLINT = shutil.which("actionlint", path=str(Path(sys.executable).parent)) or shutil.which("actionlint")


def workflow(name: str) -> dict[str, Any]:
    return yaml.safe_load((WORKFLOWS / name).read_text())


def triggers(wf: dict[str, Any]) -> dict[str, Any]:
    # YAML 1.1 reads the key `on` as the boolean true.
    return wf.get("on", wf.get(True)) or {}


def steps(job: dict[str, Any]) -> list[dict[str, Any]]:
    return job.get("steps", [])


def step_index(job: dict[str, Any], predicate: Any) -> int:
    for index, step in enumerate(steps(job)):
        if predicate(step):
            return index
    raise AssertionError("no such step")


def runs(job: dict[str, Any]) -> str:
    return "\n".join(str(s.get("run", "")) for s in steps(job))


def every_yaml() -> list[Path]:
    return sorted([*WORKFLOWS.glob("*.yml"), *ACTIONS.glob("*/action.yml")])


def run_actionlint(*paths: Path, cwd: Path = ROOT) -> list[dict[str, Any]]:
    assert ACTIONLINT, "actionlint is not installed: `make install` (dev dependency group)"
    completed = subprocess.run(
        [ACTIONLINT, "-format", "{{json .}}", *map(str, paths)], cwd=cwd, capture_output=True, text=True
    )
    assert completed.returncode in (0, 1), completed.stderr
    return json.loads(completed.stdout or "[]")


# -- actionlint ----------------------------------------------------------------------------------


def test_actionlint_finds_nothing_in_the_workflows() -> None:
    files = sorted(WORKFLOWS.glob("*.yml"))
    assert {f.name for f in files} >= {"preview.yml", "deploy.yml", "ci.yml", "model-pipeline.yml"}
    findings = run_actionlint(*files)
    assert findings == [], "\n".join(f"{f['filepath']}:{f['line']}: {f['message']}" for f in findings)


def test_actionlint_would_catch_a_broken_workflow(tmp_path: Path) -> None:
    broken = tmp_path / ".github" / "workflows" / "broken.yml"
    broken.parent.mkdir(parents=True)
    broken.write_text(
        "on: pull_request\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n"
        "      - run: echo ${{ steps.nope.outputs.x }}\n        if: ${{ github.event.no_such_thing( }}\n"
    )
    assert run_actionlint(broken, cwd=tmp_path)


def test_make_lint_runs_actionlint() -> None:
    makefile = (ROOT / "Makefile").read_text()
    lint = makefile.split("\nlint:", 1)[1].split("\n\n", 1)[0]
    assert "$(RUN)/actionlint" in lint


# -- what every workflow must (not) do -----------------------------------------------------------


def test_every_third_party_action_is_pinned_to_a_commit() -> None:
    for path in every_yaml():
        for line in path.read_text().splitlines():
            match = re.search(r"uses:\s*(\S+)", line)
            if not match or match[1].startswith("./"):
                continue
            action, _, ref = match[1].partition("@")
            assert re.fullmatch(r"[0-9a-f]{40}", ref), f"{path.name}: {action} is not pinned to a commit SHA"
            assert re.search(r"#\s*v\d+", line), f"{path.name}: {action}@{ref} has no `# vX.Y.Z` comment"


FORBIDDEN_KEYS = ("aws-access-key-id", "aws-secret-access-key", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


def test_no_long_lived_aws_keys_anywhere() -> None:
    for path in every_yaml():
        text = path.read_text()
        for forbidden in (
            "aws-access-key-id",
            "aws-secret-access-key",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
        ):
            assert forbidden not in text, f"{path.name} references {forbidden}: use OIDC (role-to-assume)"


def test_aws_credentials_come_from_oidc_roles() -> None:
    for path in WORKFLOWS.glob("*.yml"):
        for name, job in workflow(path.name).get("jobs", {}).items():
            aws = [s for s in steps(job) if str(s.get("uses", "")).startswith("aws-actions/configure-aws")]
            for step in aws:
                assert re.fullmatch(r"\$\{\{ vars\.AWS_[A-Z_]+_ROLE_ARN \}\}", step["with"]["role-to-assume"])
                assert job["permissions"]["id-token"] == "write", f"{path.name}:{name} needs id-token: write"


def test_run_scripts_take_no_expressions() -> None:
    """`${{ }}` inside a script is pasted into the shell before it runs (script injection); values
    go through `env:` instead."""
    for path in every_yaml():
        data = yaml.safe_load(path.read_text())
        jobs = data.get("jobs") or {"composite": data.get("runs", {})}
        for job in jobs.values():
            for step in steps(job):
                assert "${{" not in str(step.get("run", "")), f"{path.name}: {step.get('name')}"


def test_the_kit_is_set_up_with_the_makefiles_uv() -> None:
    action = yaml.safe_load((ACTIONS / "setup-kit" / "action.yml").read_text())
    makefile_uv = re.search(r"^UV_VERSION := (\S+)$", (ROOT / "Makefile").read_text(), re.M)[1]  # type: ignore[index]
    assert action["runs"]["steps"][0]["with"]["version"] == makefile_uv
    assert "uv sync --locked" in action["runs"]["steps"][1]["run"]


# -- preview.yml ---------------------------------------------------------------------------------


def test_preview_runs_on_pull_requests_and_compares_with_main() -> None:
    wf = workflow("preview.yml")
    assert "pull_request" in triggers(wf)
    offline = wf["jobs"]["offline"]
    script = runs(offline)
    assert "mlflow-stack preview stacks --changed-files" in script
    assert "mlflow-stack preview --stack" in script and "--format json" in script
    assert "mlflow-stack preview compare" in script and "--markdown" in script
    checkouts = [s for s in steps(offline) if str(s.get("uses", "")).startswith("actions/checkout@")]
    assert {c["with"].get("path") for c in checkouts} == {"head", "base"}
    base = next(c for c in checkouts if c["with"]["path"] == "base")
    assert base["with"]["ref"] == "${{ github.event.pull_request.base.sha }}"


def test_preview_posts_one_sticky_comment_found_by_the_marker() -> None:
    offline = workflow("preview.yml")["jobs"]["offline"]
    assert offline["permissions"]["pull-requests"] == "write"
    (comment,) = [s for s in steps(offline) if str(s.get("uses", "")).startswith("actions/github-script@")]
    script = comment["with"]["script"]
    assert f"const marker = '{MARKER}';" in script
    assert "updateComment" in script and "createComment" in script and "startsWith(marker)" in script
    # The comment posts before the check fails, so a blocked PR still shows why.
    fail = step_index(offline, lambda s: "verdict != '0'" in str(s.get("if", "")))
    assert step_index(offline, lambda s: s is comment) < fail
    assert "exit 1" in steps(offline)[fail]["run"]


def test_preview_fails_the_check_on_a_mandatory_violation() -> None:
    offline = workflow("preview.yml")["jobs"]["offline"]
    compare = next(s for s in steps(offline) if s.get("id") == "compare")
    # compare's exit code (1: a mandatory violation, 2: a stack that cannot be previewed) is the verdict.
    assert 'echo "verdict=$?"' in compare["run"]
    assert any(s.get("if") == "steps.compare.outputs.verdict != '0'" for s in steps(offline))


def test_preview_runs_pulumi_preview_with_the_policy_pack_when_a_role_is_configured() -> None:
    cloud = workflow("preview.yml")["jobs"]["cloud"]
    assert "vars.AWS_PREVIEW_ROLE_ARN != ''" in cloud["if"]
    assert cloud["permissions"]["id-token"] == "write"
    assert cloud["strategy"]["matrix"]["stack"] == "${{ fromJSON(needs.offline.outputs.stacks) }}"
    assert 'pulumi preview --stack "$STACK" --policy-pack policies' in runs(cloud)


# -- deploy.yml ----------------------------------------------------------------------------------


def test_deploy_runs_on_merge_in_environment_order() -> None:
    wf = workflow("deploy.yml")
    assert triggers(wf)["push"]["branches"] == ["main"]
    jobs = wf["jobs"]
    for environment in ("dev", "staging", "prod"):
        assert jobs[environment]["uses"] == "./.github/workflows/deploy-environment.yml"
        assert jobs[environment]["with"]["environment"] == environment
    assert jobs["staging"]["needs"] == ["plan", "dev"] and jobs["prod"]["needs"] == ["plan", "staging"]
    # A failed dev or staging stops the later environments.
    assert "!failure()" in jobs["staging"]["if"] and "!failure()" in jobs["prod"]["if"]


def test_each_stack_is_deployed_in_its_environment_then_smoked() -> None:
    up = workflow("deploy-environment.yml")["jobs"]["up"]
    # The GitHub environment (prod: required reviewers) gates the job, and names its role.
    assert up["environment"] == "${{ inputs.environment }}"
    assert up["concurrency"] == {"group": "pulumi-stack-${{ matrix.stack }}", "cancel-in-progress": False}
    assert up["permissions"]["id-token"] == "write"
    pulumi_up = step_index(up, lambda s: "pulumi up --stack" in str(s.get("run", "")))
    assert "--policy-pack policies" in steps(up)[pulumi_up]["run"]
    smoke = step_index(up, lambda s: str(s.get("run", "")).startswith('mlflow-stack smoke --stack "$STACK"'))
    assert pulumi_up < smoke


def test_platform_stacks_deploy_before_the_stacks_built_on_them() -> None:
    jobs = workflow("deploy-environment.yml")["jobs"]
    tiers, platform, up = jobs["tiers"], jobs["platform"], jobs["up"]
    assert '--tier "$tier"' in runs(tiers) and "for tier in platform server" in runs(tiers)
    assert platform["strategy"]["matrix"]["stack"] == "${{ fromJSON(needs.tiers.outputs.platform) }}"
    assert up["strategy"]["matrix"]["stack"] == "${{ fromJSON(needs.tiers.outputs.server) }}"
    assert up["needs"] == ["tiers", "platform"] and "!failure()" in up["if"]
    # Same gate as every stack: the environment, one deployment at a time, the policy pack.
    assert platform["environment"] == up["environment"] and platform["concurrency"] == up["concurrency"]
    assert "--policy-pack policies" in runs(platform)
    # A platform runs no server: a smoke check there could only fail.
    assert "mlflow-stack smoke" not in runs(platform)


# -- ci.yml and the model pipeline --------------------------------------------------------------


def test_ci_runs_make_test_and_the_large_artifact_as_its_own_job() -> None:
    jobs = workflow("ci.yml")["jobs"]
    assert [runs(job).strip() for job in jobs.values()] == ["make test", "make test-large-artifact"]


def test_model_pipeline_trains_validates_with_the_2_percent_gate_then_promotes() -> None:
    job = workflow("model-pipeline.yml")["jobs"]["train-validate-promote"]
    ids = [s.get("id") for s in steps(job) if s.get("id")]
    assert ids == ["train", "validate", "promote"]
    by_id = {s["id"]: s["run"] for s in steps(job) if s.get("id")}
    assert "examples/model-pipeline/train.py" in by_id["train"]
    assert "mlflow-stack models validate" in by_id["validate"] and "--max-regression 2%" in by_id["validate"]
    assert "mlflow-stack models promote" in by_id["promote"]
    # MLflow's own variables name the server, for the training script and mlflow-stack alike.
    assert job["env"]["MLFLOW_TRACKING_PASSWORD"] == "${{ secrets.MLFLOW_TRACKING_PASSWORD }}"  # noqa: S105
    assert {"MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME"} <= set(job["env"])
    assert "--url" not in "".join(by_id.values()) and "--stack" not in "".join(by_id.values())


@pytest.mark.parametrize("name", ["preview.yml", "deploy.yml", "ci.yml", "model-pipeline.yml"])
def test_default_token_permissions_are_read_only(name: str) -> None:
    assert workflow(name)["permissions"] == {"contents": "read"}
