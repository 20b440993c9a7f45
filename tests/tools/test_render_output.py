"""What `make render` writes about commands: each carried script under its own name, where each
remote command connects (only the key a secret), and nothing on stderr after a good render."""

from __future__ import annotations

import base64
import gc
import json
import struct
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
import yaml

from components import inline
from tools import render
from tools.synth import ROOT, Synth, synth_stack

COMMANDS = ("command:remote:Command", "command:local:Command")
SHIPPED = {p.name: p for p in (ROOT / "components").rglob("*") if p.suffix in (".sh", ".py")}
PRIVATE_KEY = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\n"
    "b3BlbnNzaC1rZXktdjEAAAAAtest-only-never-rendered\n"
    "-----END OPENSSH PRIVATE KEY-----\n"
)


def ed25519_host_key() -> str:
    """A well-formed `ssh-ed25519` public key (RFC 8709 §4: string name, string key)."""
    name = b"ssh-ed25519"
    blob = struct.pack(">I", len(name)) + name + struct.pack(">I", 32) + bytes(range(32))
    return "ssh-ed25519 " + base64.b64encode(blob).decode()


def command_files(synth: Synth) -> dict[str, str]:
    commands = {r["name"] for r in synth.of_type(COMMANDS[0]) + synth.of_type(COMMANDS[1])}
    return {k: v for k, v in synth.files().items() if k.partition("/")[0] in commands}


def s3_stack_file(tmp_path: Path) -> Path:
    doc = yaml.safe_load((ROOT / "Pulumi.prod.yaml").read_text())
    doc["config"]["inference-stack:workers"][0]["model"]["source"] = "s3://models/mistral-7b-awq"
    path = tmp_path / "Pulumi.prod.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_prod_command_files_are_named_after_their_scripts() -> None:
    steps = {
        "firewall": "firewall.sh",
        "images": "pull-images.sh",
        "runtime": "runtime.sh",
        "storage": "storage.sh",
        "toolkit": "toolkit.sh",
        "tools": "tools.sh",
        "verify": "verify.sh",
        "weights-mistral-7b-instruct": "prefetch-hf.sh",
    }
    expected = {"gateway-readmit/readmit.sh"}
    expected |= {f"{host}-{step}/{script}" for host in ("gpu-a", "gpu-b") for step, script in steps.items()}
    assert set(command_files(synth_stack("prod"))) == expected


@pytest.mark.parametrize("stack", ["dev", "ci", "prod", "s3"])
def test_a_file_named_like_a_shipped_script_is_that_script(stack: str, tmp_path: Path) -> None:
    synth = synth_stack("prod", s3_stack_file(tmp_path)) if stack == "s3" else synth_stack(stack)
    files = command_files(synth)
    assert files
    for key, content in files.items():
        name = key.rpartition("/")[2]
        if name in SHIPPED:
            assert content == SHIPPED[name].read_text(), key
        else:
            assert name == "readmit.sh", f"{key}: not a script any component ships"
    if stack == "s3":
        assert "gpu-b-weights-mistral-7b-instruct/s3_sync.py" in files


def test_readmit_is_one_members_step_a_line() -> None:
    readmit = synth_stack("dev").files()["gateway-readmit/readmit.sh"]
    lines = readmit.splitlines()
    assert lines and all(" sh /opt/inference-stack/members.sh admit " in line for line in lines)


def test_a_carried_script_must_say_its_name() -> None:
    assert inline.script_of("sudo -n docker kill --signal HUP gw") is None
    assert inline.script_of("sudo -n bash -c 'echo hi' hello.sh arg") == ("hello.sh", "echo hi")
    with pytest.raises(ValueError, match="no name"):
        inline.script_of("sudo -n sh -c 'echo hi'")
    with pytest.raises(ValueError, match="plain file name"):
        inline.argv("sh", "echo hi", "--version")


def ssh_prod(tmp_path: Path) -> tuple[Synth, str]:
    doc = yaml.safe_load((ROOT / "Pulumi.prod.yaml").read_text())
    doc["config"]["inference-stack:hosts"][1]["ssh"].update({"port": 2222, "hostKey": ed25519_host_key()})
    path = tmp_path / "Pulumi.prod.yaml"
    path.write_text(yaml.safe_dump(doc))
    return synth_stack("prod", path, secrets={"sshPrivateKey": PRIVATE_KEY}), ed25519_host_key()


def on_host(res: dict[str, Any]) -> str:
    # The gateway and every member step run on the gateway host, gpu-a.
    return "gpu-b" if res["name"].startswith("gpu-b-") else "gpu-a"


def test_remote_commands_show_where_they_connect_and_hide_only_the_key(tmp_path: Path) -> None:
    synth, host_key = ssh_prod(tmp_path)
    remote = synth.of_type("command:remote:Command")
    assert len(remote) > 10
    for res in remote:
        conn = res["inputs"]["connection"]
        host = on_host(res)
        assert conn["host"] == f"{host}.internal", res["name"]
        assert conn["user"] == "deploy"
        assert conn["port"] == (2222 if host == "gpu-b" else 22)
        assert conn["privateKey"] == "[secret]"
        # The pinned host key is still handed to the provider, in the clear (it is public).
        assert conn.get("hostKey") == (host_key if host == "gpu-b" else None)
    render.write(synth, tmp_path / "out")
    written = "".join(p.read_text() for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert "test-only-never-rendered" not in written and "OPENSSH PRIVATE KEY" not in written


def test_the_revealing_synth_keeps_the_key_for_the_harness() -> None:
    synth = synth_stack("prod", secrets={"sshPrivateKey": PRIVATE_KEY}, reveal=True)
    assert synth.named("gpu-a-verify")["inputs"]["connection"]["privateKey"] == PRIVATE_KEY


def test_a_synth_closes_every_event_loop_it_made() -> None:
    # An unclosed loop warns when collected; at interpreter exit, collected after its own
    # socket, it fails instead (`Exception ignored ... Invalid file descriptor: -1`).
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always", ResourceWarning)
        synth_stack("dev")
        gc.collect()
    assert [str(w.message) for w in seen if issubclass(w.category, ResourceWarning)] == []


@pytest.mark.parametrize("module", ["tools.render", "tools.policy_run"])
def test_a_good_run_prints_nothing_on_stderr(module: str, tmp_path: Path) -> None:
    # `always::ResourceWarning` makes every unclosed loop, socket or file print, not only the
    # occasional one whose finalizer failed: one run shows what 20 plain runs might not.
    for stack in ("dev", "prod"):
        args = ["--stack", stack] + (["--out", str(tmp_path / stack)] if module == "tools.render" else [])
        proc = subprocess.run(
            [sys.executable, "-W", "always::ResourceWarning", "-m", module, *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert proc.stderr == "", f"{module} --stack {stack}:\n{proc.stderr}"


def test_render_json_has_the_connection_of_every_remote_command(tmp_path: Path) -> None:
    assert render.main(["--stack", "prod", "--out", str(tmp_path)]) == 0
    resources = json.loads((tmp_path / "prod/resources.json").read_text())
    conns = [r["inputs"]["connection"] for r in resources if r["type"] == "command:remote:Command"]
    assert conns and all(c["host"] in ("gpu-a.internal", "gpu-b.internal") for c in conns)
