"""`make render`: deterministic, complete, and silent on an invalid config."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from composition.loader import load
from stacks.errors import ConfigError
from tests.helpers import as_pulumi_config, valid_config
from tools import render
from tools.synth import ROOT, Mocks, RecordingMonitor, read_stack_file, run, synth_stack


def tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_render_is_byte_identical_across_runs(stack: str, tmp_path: Path) -> None:
    outs = []
    for i in range(2):
        # A separate interpreter each time: nothing may depend on hash seeds or process state.
        subprocess.run(
            [sys.executable, "-m", "tools.render", "--stack", stack, "--out", str(tmp_path / str(i))],
            cwd=ROOT,
            check=True,
            capture_output=True,
            env={"PYTHONHASHSEED": str(i), "PATH": "/usr/bin:/bin"},
        )
        outs.append(tree(tmp_path / str(i) / stack))
    assert outs[0] == outs[1]
    assert "resources.json" in outs[0] and "diagram.mmd" in outs[0]


def test_render_layout(tmp_path: Path) -> None:
    assert render.main(["--stack", "dev", "--out", str(tmp_path)]) == 0
    resources = json.loads((tmp_path / "dev" / "resources.json").read_text())
    assert all(set(r) == {"type", "name", "parent", "inputs"} for r in resources)
    probe = tmp_path / "dev/files/chat-local-0/opt/inference-stack/healthcheck.py"
    assert probe.read_text() == (ROOT / "components/workers/files/healthcheck.py").read_text()
    assert (tmp_path / "dev/files/chat-local-0/run/secrets/vllm-api-key").read_text() == "[secret]"


def test_secure_values_are_never_decrypted(tmp_path: Path) -> None:
    doc = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())
    doc["config"]["inference-stack:vllmApiKey"] = {"secure": "v1:ciphertext-that-needs-a-passphrase"}
    stack_file = tmp_path / "Pulumi.dev.yaml"
    stack_file.write_text(yaml.safe_dump(doc))
    _, secret_keys = read_stack_file(stack_file)
    assert secret_keys == ["inference-stack:vllmApiKey"]
    assert render.main(["--stack", "dev", "--stack-file", str(stack_file), "--out", str(tmp_path / "out")]) == 0
    dump = (tmp_path / "out/dev/resources.json").read_text()
    assert "ciphertext" not in dump
    generated = {r["name"] for r in json.loads(dump) if r["type"].startswith("random:")}
    assert "vllm-api-key" not in generated, "a configured key is used as is"


def test_invalid_config_exits_nonzero_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = yaml.safe_load((ROOT / "Pulumi.prod.yaml").read_text())
    doc["config"]["inference-stack:workers"][0]["gpuMemoryUtilization"] = 0.97
    stack_file = tmp_path / "Pulumi.prod.yaml"
    stack_file.write_text(yaml.safe_dump(doc))
    out = tmp_path / "out"
    assert render.main(["--stack", "prod", "--stack-file", str(stack_file), "--out", str(out)]) == 2
    assert "inference-stack:workers[0].gpuMemoryUtilization = 0.97" in capsys.readouterr().err
    assert not out.exists()


def test_config_error_registers_no_resource() -> None:
    values = valid_config()
    values["workers"][0]["image"] = "vllm/vllm-openai:latest"
    monitor = RecordingMonitor(Mocks())
    with pytest.raises(ConfigError):
        run("test", as_pulumi_config(values), [], lambda: load() and None, monitor=monitor)
    assert monitor.records == []


def test_every_private_publish_is_covered_by_its_hosts_firewall_check() -> None:
    """Whatever a container publishes on a host's private address (workers, the DCGM exporter,
    Jaeger's OTLP port) is in the port list that host's firewall step checks; only the gateway's
    client port is meant for everyone."""
    synth = synth_stack("prod")
    hosts = {
        h["privateAddress"]: h["name"]
        for h in yaml.safe_load((ROOT / "Pulumi.prod.yaml").read_text())["config"]["inference-stack:hosts"]
        if h.get("privateAddress")
    }
    published: dict[str, set[int]] = {name: set() for name in hosts.values()}
    for res in synth.of_type("docker:index/container:Container"):
        roles = {item["value"] for item in res["inputs"].get("labels", []) if item["label"] == "inference-stack.role"}
        for port in res["inputs"].get("ports", []):
            if port["ip"] in hosts and "gateway" not in roles:
                published[hosts[port["ip"]]].add(port["external"])
    assert any(published.values())
    for host, ports in published.items():
        checked = synth.named(f"{host}-firewall")["inputs"]["create"].rsplit("firewall.sh", 1)[1].split()[0]
        assert ports == {int(p) for p in checked.split(",")}, (host, checked)


@pytest.mark.parametrize("stack", ["dev", "prod", "ci"])
def test_every_container_is_replaced_delete_first(stack: str) -> None:
    """Every container has a fixed name (most a fixed host port too), which Docker will not give to
    a second container: Pulumi's default create-before-delete would fail the update
    (pulumi/pulumi-docker#1356)."""
    synth = synth_stack(stack)
    containers = {c["name"] for c in synth.of_type("docker:index/container:Container")}
    assert all(synth.named(n)["inputs"].get("name") for n in containers)
    assert containers - synth.delete_first == set()
