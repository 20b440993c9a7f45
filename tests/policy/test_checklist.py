"""The policy pack (policy/) over fixtures and over every shipped stack, through `tools/policy_run.py`:
the same validate functions the Pulumi CLI's analyzer calls, on the resources the program registers."""

from __future__ import annotations

import copy
import fnmatch
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from policy.kubernetes import KUBERNETES_POLICIES
from policy.pack import POLICIES
from tests.policy.support import WORKER, labels_set, mutated, new_findings
from tests.support.tools import require_tool
from tools.policy_run import UNKNOWN_IN_SYNTH, Finding, evaluate, load_config
from tools.synth import ROOT, Synth, synth_stack

README = ROOT / "README.md"
ENFORCEMENT = {p.name: (p.enforcement_level.value if p.enforcement_level else "mandatory") for p in POLICIES}


@pytest.fixture(scope="module")
def ci() -> Synth:
    return synth_stack("ci")


def gpu_worker(inputs: dict[str, Any]) -> None:
    labels_set(inputs, "inference-stack.accelerator", "nvidia")
    inputs["command"] = [*inputs["command"], "--gpu-memory-utilization", "0.9"]


# policy -> a change to the ci stack's first worker (or another container) that breaks only it
BREAKS: dict[str, tuple[str | tuple[str, ...], Callable[[dict[str, Any]], None], str]] = {
    "health-start-period-covers-cold-start": (
        WORKER,
        lambda i: labels_set(i, "inference-stack.cold-start-seconds", "600"),
        "set health.startPeriodSeconds to at least 1200",
    ),
    "weights-from-mounted-volume": (
        WORKER,
        lambda i: i.update(mounts=[m for m in i["mounts"] if m["target"] != "/root/.cache/huggingface"]),
        "never the image",
    ),
    "gpu-memory-utilization-cli": (
        WORKER,
        lambda i: i.update(envs=[*i["envs"], "VLLM_GPU_MEMORY_UTILIZATION=0.99"]),
        "use the CLI flag only",
    ),
    "cpu-and-memory-limits": ("monitoring-prometheus", lambda i: i.pop("memory"), "set `memory`"),
    "health-gated-creation": (WORKER, lambda i: i.update(waitTimeout=30), "raise it"),
    "health-check-exercises-model": (
        WORKER,
        lambda i: i["healthcheck"].update(tests=["CMD", "curl", "-f", "http://127.0.0.1:8000/health"]),
        "run the accuracy probe",
    ),
    "chat-probe-endpoint": (
        WORKER,
        lambda i: i["healthcheck"]["tests"].extend(["--path", "/v1/completions"]),
        "/v1/chat/completions",
    ),
    "no-debug-logs-and-rotation": (
        "redis",
        lambda i: i.pop("logOpts"),
        "set logDriver json-file with logOpts max-size",
    ),
    "not-privileged": (WORKER, lambda i: i.update(privileged=True), "GPUs come through deviceRequests"),
    "no-host-namespaces": ("redis", lambda i: i.update(networkMode="host"), "networkMode: host"),
    "ports-bind-a-specific-address": (
        "gateway-nginx",
        lambda i: i["ports"][0].update(ip="0.0.0.0"),
        "bind it to a specific address",
    ),
    "no-sensitive-host-mounts": (
        "redis",
        lambda i: i["mounts"].append({"type": "bind", "source": "/var/run/docker.sock", "target": "/s"}),
        "never mount it",
    ),
    "image-tag-pinned": ("redis", lambda i: i.update(image="redis:latest"), "explicit version tag or a digest"),
    "workers-restart-on-failure-bounded": (WORKER, lambda i: i.update(maxRetryCount=50), "at most 5 retries"),
    "no-new-privileges": ("redis", lambda i: i.update(securityOpts=[]), "no-new-privileges:true"),
    "one-worker-per-gpu": (
        ("chat-local-0", "chat-local-1"),
        lambda i: i.update(deviceRequests=[{"driver": "nvidia", "deviceIds": ["0"], "capabilities": ["gpu"]}]),
        "is used by",
    ),
    "workers-publish-only-privately": (
        WORKER,
        # A public address (only ever a string here: no traffic goes anywhere).
        lambda i: i.update(ports=[{"internal": 8000, "external": 8000, "ip": "8.8.8.8"}]),
        "publishes only on its host's private address",
    ),
    "capabilities-dropped": (
        "redis",
        lambda i: i.update(capabilities={"drops": ["ALL"], "adds": ["SYS_ADMIN"]}),
        "are allowed back",
    ),
    "read-only-rootfs": ("monitoring-nginx-exporter", lambda i: i.update(readOnly=False), "set read_only"),
    "writable-rootfs": (
        "gateway-mtail",
        lambda i: i.update(readOnly=False, uploads=[{"file": "/etc/mtail/x.mtail", "content": "x"}]),
        "Docker provider extracts at /",
    ),
    "only-the-gateway-publishes-publicly": (
        "monitoring-prometheus",
        # A public address (only ever a string here); Python counts the TEST-NET ranges as private.
        lambda i: i["ports"][0].update(ip="8.8.8.8"),
        "only the gateway faces clients",
    ),
    "every-worker-is-scraped": (
        "monitoring-prometheus",
        lambda i: i.update(uploads=[u for u in i["uploads"] if not u["file"].endswith("prometheus.yml")]),
        "keep observability.enabled on",
    ),
}


def test_every_policy_has_a_breaking_fixture() -> None:
    # The Kubernetes rules break the k8s stack instead, in test_kubernetes.py, which checks its own.
    assert set(BREAKS) | {p.name for p in KUBERNETES_POLICIES} == {p.name for p in POLICIES}


@pytest.mark.parametrize("policy", sorted(BREAKS))
def test_a_violating_fixture_reports_exactly_that_policy(policy: str, ci: Synth) -> None:
    name, change, advice = BREAKS[policy]
    findings = new_findings(mutated(ci, name, change), ci)
    assert findings and {f.policy for f in findings} == {policy}, findings
    assert all(advice in f.message for f in findings), findings
    assert all(f.enforcement == ENFORCEMENT[policy] for f in findings)


def advisory_docs() -> str:
    text = README.read_text()
    start = text.index("### Advisory findings in the shipped stacks")
    return text[start : text.index("\n## ", start)]


@pytest.mark.parametrize("stack", ["dev", "prod", "ci", "k8s"])
def test_every_shipped_stack_has_no_mandatory_violation_and_documents_its_advisories(stack: str) -> None:
    findings = evaluate(synth_stack(stack), load_config(stack))
    assert [f for f in findings if f.enforcement == "mandatory"] == []
    # Each advisory finding is listed in the README under its policy: a bullet naming the container
    # (or a glob of it) with the reason, which is also the finding's own message.
    docs = advisory_docs()
    for finding in findings:
        section = docs[docs.index(f"`{finding.policy}`") :]
        bullets = [" ".join(b.split()) for b in re.findall(r"^- .*(?:\n  .*)*", section, re.M)]
        names = finding.resource or ""
        listed = [b for b in bullets if any(fnmatch.fnmatch(names, g) for g in re.findall(r"`([^`]+)`", b))]
        assert listed, f"{stack}: {finding.policy} on {finding.resource} is not listed in the README"
        reason = finding.message.split(": ", 1)[1]
        assert any(reason in b.replace("`", "") for b in listed), (finding, listed)


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_a_broken_copy_of_each_shipped_stack_fires_every_checklist_policy(stack: str) -> None:
    """The issue's broken copy: utilization 0.95, a 60 s start period against a 90 s cold start, a
    `latest` tag, no memory limit, a published vLLM port and an env var for GPU utilization."""
    synth = synth_stack(stack)
    broken = copy.deepcopy(synth)
    workers = [
        r for r in broken.of_type("docker:index/container:Container") if "--revision" in r["inputs"].get("command", [])
    ]
    assert workers
    for w in workers:
        inputs = w["inputs"]
        labels_set(inputs, "inference-stack.accelerator", "nvidia")
        if "--gpu-memory-utilization" in inputs["command"]:
            inputs["command"][inputs["command"].index("--gpu-memory-utilization") + 1] = "0.95"
        else:
            inputs["command"] += ["--gpu-memory-utilization", "0.95"]
        labels_set(inputs, "inference-stack.cold-start-seconds", "90")
        inputs["healthcheck"]["startPeriod"] = "60s"
        inputs.pop("memory")
        inputs["envs"] = [*inputs["envs"], "GPU_MEMORY_UTILIZATION=0.95"]
        inputs["image"] = "vllm/vllm-openai:latest"
        inputs["ports"] = [{"internal": 8000, "external": 8000, "ip": "0.0.0.0"}]
    fired = {f.policy for f in new_findings(broken, synth) if f.enforcement == "mandatory"}
    # In prod, moving gpu-b's published ports also loses their scrape targets: one more policy fires.
    assert fired - {"every-worker-is-scraped"} == {
        "gpu-memory-utilization-cli",
        "health-start-period-covers-cold-start",
        "cpu-and-memory-limits",
        "image-tag-pinned",
        "ports-bind-a-specific-address",
        "workers-publish-only-privately",
    }
    utilization = [f.message for f in evaluate(broken, {}) if f.policy == "gpu-memory-utilization-cli"]
    assert any("0.95 is above 0.9" in m for m in utilization) and any(
        "env `GPU_MEMORY_UTILIZATION`" in m for m in utilization
    )


def test_unknown_values_are_skipped_not_crashed(ci: Synth) -> None:
    """During a preview, ids and computed values are unknown: every policy sees them and none crashes."""
    unknown = copy.deepcopy(ci)
    for res in unknown.resources:
        for key in ("command", "healthcheck", "labels", "memory", "uploads", "envs", "mounts", "waitTimeout"):
            if key in res["inputs"]:
                res["inputs"][key] = UNKNOWN_IN_SYNTH
    assert new_findings(unknown, ci) == []
    # Partly unknown: the known parts are still checked.
    partly = mutated(ci, WORKER, lambda i: i.update(command=UNKNOWN_IN_SYNTH, waitTimeout=30))
    assert {f.policy for f in new_findings(partly, ci)} == {"health-gated-creation"}


def test_relaxing_a_policy_needs_a_justification(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import tools.policy_run as run

    monkeypatch.setattr(run, "CONFIG_DIR", tmp_path)
    (tmp_path / "x.json").write_text('{"cpu-and-memory-limits": {"enforcementLevel": "advisory"}}')
    with pytest.raises(ValueError, match="without a `justification`"):
        load_config("x")
    (tmp_path / "x.json").write_text('{"no-such-policy": {"enforcementLevel": "advisory", "justification": "x"}}')
    with pytest.raises(ValueError, match="no policy named"):
        load_config("x")
    (tmp_path / "x.json").write_text(
        '{"cpu-and-memory-limits": {"enforcementLevel": "advisory", "justification": "a dev laptop"}}'
    )
    config = load_config("x")
    broken = mutated(synth_stack("ci"), "redis", lambda i: i.pop("memory"))
    found = new_findings(broken, synth_stack("ci"), config)
    assert [(f.policy, f.enforcement) for f in found] == [("cpu-and-memory-limits", "advisory")]


def make_policy(stack: str, stack_file: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The Makefile's own `policy` recipe; -o keeps make from reinstalling the venv this test
    already runs in."""
    command = [require_tool("make"), "-s", "--no-print-directory", "-o", ".venv/.stamp", "policy"]
    command += [f"STACK={stack}", f"PY={sys.executable}", *([f"STACK_FILE={stack_file}"] if stack_file else [])]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_make_policy_exits_zero_on_a_shipped_stack() -> None:
    ok = make_policy("dev")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.splitlines()[-1].endswith(" 0 mandatory, stack 'dev'"), ok.stdout


def test_make_policy_exits_nonzero_on_a_mandatory_violation(tmp_path: Path) -> None:
    """A valid config can still break a policy: with observability off no worker is scraped."""
    stack = yaml.safe_load((ROOT / "Pulumi.ci.yaml").read_text())
    stack["config"]["inference-stack:observability"]["enabled"] = False
    stack_file = tmp_path / "Pulumi.ci.yaml"
    stack_file.write_text(yaml.safe_dump(stack))
    failed = make_policy("ci", stack_file)
    assert failed.returncode != 0, failed.stdout + failed.stderr
    # make reports the recipe's own exit code: tools.policy_run's 1 for a mandatory violation.
    assert "policy] Error 1" in failed.stderr, failed.stderr
    workers = [f"chat-local-{n}" for n in range(3)]
    assert [line.strip() for line in failed.stdout.splitlines() if "every-worker-is-scraped" in line] == [
        f"[mandatory] every-worker-is-scraped: {w}: worker ci-{w} is not a Prometheus scrape target "
        f"(looked for ['ci-{w}:8000']): keep observability.enabled on"
        for w in workers
    ]
    assert failed.stdout.splitlines()[-1].endswith(" 3 mandatory, stack 'ci'"), failed.stdout


def test_findings_name_their_resource(ci: Synth) -> None:
    findings = new_findings(mutated(ci, "redis", lambda i: i.pop("memory")), ci)
    assert findings == [
        Finding(
            "cpu-and-memory-limits",
            "medium",
            "mandatory",
            "redis",
            "no memory limit: set `memory` (MB) on the container",
        )
    ]
