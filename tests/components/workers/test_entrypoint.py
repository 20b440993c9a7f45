"""entrypoint.sh hands vLLM its secrets through the environment of the exec'd process, read
from files, so they appear in neither the container's config nor any argv."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from components.workers import spec
from tests.support.tools import require_tool

ENTRYPOINT = spec.HERE / "entrypoint.sh"

FAKE_VLLM = """#!/bin/sh
python3 -c 'import json, os, sys; json.dump({"argv": sys.argv[1:], "key": os.environ.get("VLLM_API_KEY"),
 "token": os.environ.get("HF_TOKEN")}, open(os.environ["OUT"], "w"))' "$@"
"""


def run_entrypoint(tmp_path: Path, secrets: dict[str, str]) -> dict[str, Any]:
    bin_dir, secrets_dir = tmp_path / "bin", tmp_path / "secrets"
    bin_dir.mkdir()
    secrets_dir.mkdir()
    (bin_dir / "vllm").write_text(FAKE_VLLM)
    (bin_dir / "vllm").chmod(0o755)
    for name, value in secrets.items():
        (secrets_dir / name).write_text(value)
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "INFERENCE_STACK_SECRETS_DIR": str(secrets_dir),
        "OUT": str(tmp_path / "out.json"),
    }
    subprocess.run(["sh", str(ENTRYPOINT), "--model", "m", "--port", "8000"], env=env, check=True, timeout=30)
    return json.loads((tmp_path / "out.json").read_text())


def test_secrets_reach_vllm_env_not_argv(tmp_path: Path) -> None:
    seen = run_entrypoint(tmp_path, {"vllm-api-key": "sk-file-key", "hf-token": "hf_file_token"})
    assert seen["argv"] == ["serve", "--model", "m", "--port", "8000"]
    assert seen["key"] == "sk-file-key" and seen["token"] == "hf_file_token"
    assert not any("sk-file-key" in a or "hf_file_token" in a for a in seen["argv"])


def test_missing_secret_files_set_nothing(tmp_path: Path) -> None:
    seen = run_entrypoint(tmp_path, {})
    assert seen["key"] is None and seen["token"] is None


def test_entrypoint_passes_shellcheck() -> None:
    shellcheck = require_tool("shellcheck")
    result = subprocess.run([shellcheck, "--shell=sh", str(ENTRYPOINT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_spec_paths_match_entrypoint() -> None:
    text = ENTRYPOINT.read_text()
    assert Path(spec.API_KEY_PATH).name in text and Path(spec.HF_TOKEN_PATH).name in text
    assert spec.SECRETS_DIR in text
    assert shutil.which("sh")


@pytest.mark.parametrize("path", [spec.API_KEY_PATH, spec.HF_TOKEN_PATH])
def test_secret_files_live_in_secrets_dir(path: str) -> None:
    assert path.startswith(spec.SECRETS_DIR + "/")
