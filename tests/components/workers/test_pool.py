"""The worker containers the shipped stacks declare, read from the synth of the real
Pulumi.dev.yaml and Pulumi.prod.yaml under Pulumi's mock runtime."""

from __future__ import annotations

import json
from typing import Any

import pytest

from components import hardening
from composition.loader import load
from composition.platform import build
from stacks import provider_rules
from tests.helpers import as_pulumi_config, valid_config
from tools.synth import Synth, run

CONTAINER = "docker:index/container:Container"


def containers(s: Synth) -> list[dict[str, Any]]:
    pools = {p["name"] for p in s.of_type("inference-stack:workers:VllmWorkerPool")}
    return [c for c in s.of_type(CONTAINER) if c["parent"] in pools]


def arg(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


def test_dev_has_one_worker_on_one_gpu(dev: Synth) -> None:
    (worker,) = containers(dev)
    assert worker["parent"] == "chat"
    assert worker["inputs"]["deviceRequests"] == [{"driver": "nvidia", "deviceIds": ["0"], "capabilities": ["gpu"]}]
    assert arg(worker["inputs"]["command"], "--gpu-memory-utilization") == "0.85"


def test_prod_has_one_worker_per_gpu_on_each_host(prod: Synth) -> None:
    workers = containers(prod)
    assert len(workers) == 8
    seen = set()
    for w in workers:
        (request,) = w["inputs"]["deviceRequests"]
        assert request["driver"] == "nvidia" and request["capabilities"] == ["gpu"]
        assert len(request["deviceIds"]) == 1
        host = w["name"].split("-")[1] + "-" + w["name"].split("-")[2]
        seen.add((host, request["deviceIds"][0]))
    assert seen == {(h, str(i)) for h in ("gpu-a", "gpu-b") for i in range(4)}


def test_prod_command_line(prod: Synth) -> None:
    for w in containers(prod):
        cmd = w["inputs"]["command"]
        assert cmd[0] == "solidrust/Mistral-7B-Instruct-v0.3-AWQ", "vllm serve takes the model positionally"
        assert arg(cmd, "--served-model-name") == "mistral-7b-instruct"
        assert arg(cmd, "--quantization") == "awq_marlin"
        assert arg(cmd, "--max-model-len") == "8192"
        assert arg(cmd, "--gpu-memory-utilization") == "0.9"
        assert arg(cmd, "--tensor-parallel-size") == "1"
        assert arg(cmd, "--max-num-seqs") == "64"
        assert len(arg(cmd, "--revision")) == 40
        assert "--enable-prefix-caching" in cmd
        assert "--api-key" not in cmd, "the key reaches vLLM from a file, never argv"
        # Utilization is a CLI argument: vLLM ignores any env var for it.
        assert not any("GPU_MEMORY" in e for e in w["inputs"]["envs"])
        assert "VLLM_LOGGING_LEVEL=INFO" in w["inputs"]["envs"]


def test_mounts_and_offline_weights(dev: Synth, prod: Synth) -> None:
    for synth, prefetched in ((dev, False), (prod, True)):
        for w in containers(synth):
            mounts = {m["target"]: m for m in w["inputs"]["mounts"]}
            cache = mounts["/root/.cache/huggingface"]
            volume = next(v for v in synth.of_type("docker:index/volume:Volume") if v["name"] == cache["source"])
            assert volume["inputs"]["driverOpts"]["type"] == "none" and volume["inputs"]["driverOpts"]["o"] == "bind"
            assert volume["inputs"]["driverOpts"]["device"].startswith("/")
            assert cache["readOnly"] is prefetched
            assert ("HF_HUB_OFFLINE=1" in w["inputs"]["envs"]) is prefetched
            (compile_cache,) = w["inputs"]["volumes"]
            assert compile_cache["containerPath"] == "/root/.cache/vllm"
            root = "/var/lib/inference-stack/compile-cache" if synth is dev else "/nvme/vllm-compile-cache"
            assert compile_cache["hostPath"] == f"{root}/{w['inputs']['name']}"
            assert "VLLM_CACHE_ROOT=/root/.cache/vllm" in w["inputs"]["envs"]


def test_healthcheck_two_tier_with_start_period(dev: Synth, prod: Synth) -> None:
    for synth, cold in ((dev, 90), (prod, 120)):
        for w in containers(synth):
            hc = w["inputs"]["healthcheck"]
            assert hc["tests"][:3] == ["CMD", "python3", "/opt/inference-stack/healthcheck.py"]
            assert "curl" not in " ".join(hc["tests"])
            # Go durations as the provider reads them back: 180 s is "3m0s".
            assert provider_rules.parse_go_duration(hc["startPeriod"]) == 2 * cold * 10**9
            assert hc["startPeriod"] == provider_rules.go_duration(2 * cold * 10**9)
            assert hc["interval"] == "30s" and hc["timeout"] == "20s" and hc["retries"] == 3
            assert "startInterval" not in hc
            assert arg(hc["tests"], "--probe-every") == "600"
            assert w["inputs"]["wait"] is True
            assert w["inputs"]["waitTimeout"] > 2 * cold
            uploaded = {u["file"] for u in w["inputs"]["uploads"]}
            assert "/opt/inference-stack/healthcheck.py" in uploaded


def test_limits_logs_restart_and_shm(prod: Synth) -> None:
    for w in containers(prod):
        i = w["inputs"]
        assert i["cpus"] == "8.0" and i["memory"] == 32768 and i["memoryReservation"] == 16384
        assert i["memorySwap"] == i["memory"], "no swap for a GPU worker"
        assert i["cpuShares"] == 4096
        assert i["logDriver"] == "json-file"
        assert i["logOpts"]["max-size"] == "100m" and i["logOpts"]["max-file"] == "5"
        assert set(hardening.LOG_DEFAULTS) <= set(i["logOpts"]), "every option dockerd could merge is set"
        assert i["restart"] == "on-failure" and i["maxRetryCount"] == 5
        assert i["shmSize"] == 2048
        assert "ipcMode" not in i


def test_dev_publishes_no_port(dev: Synth) -> None:
    for w in containers(dev):
        assert not w["inputs"].get("ports")
        assert w["inputs"]["networksAdvanced"][0]["name"] == "dev-workers"


def test_prod_publishes_only_off_the_gateway_host_on_its_private_address(prod: Synth) -> None:
    for w in containers(prod):
        host = "-".join(w["name"].split("-")[1:3])
        if host == "gpu-a":  # the gateway host reaches its workers over the container network
            assert not w["inputs"].get("ports")
            continue
        (port,) = w["inputs"]["ports"]
        assert port["ip"] == "10.20.0.12"
        assert port["internal"] == 8000
        assert port["external"] == 8000 + int(w["name"].rsplit("-", 1)[1])


def test_configured_secrets_stay_secret_everywhere() -> None:
    values = valid_config()
    values["workers"][0]["model"]["weights"] = "download"
    values.update(hfToken="hf_TOPSECRET_token", vllmApiKey="sk-TOPSECRET-key")
    config = as_pulumi_config(values)
    captured: dict[str, Any] = {}

    async def program() -> None:
        stack = load()
        pool = build(stack)["chat"]
        captured["api_key_secret"] = await pool.api_key.is_secret()
        captured["config_secrets"] = {k: await v.is_secret() for k, v in stack.secrets.items()}

    synth = run("test", config, ["inference-stack:hfToken", "inference-stack:vllmApiKey"], program)
    dump = json.dumps(synth.resources)
    assert "TOPSECRET" not in dump
    assert captured["api_key_secret"] is True
    assert captured["config_secrets"] == {"hfToken": True, "vllmApiKey": True}
    (w,) = synth.of_type(CONTAINER)[:1]
    files = {u["file"]: u["content"] for u in w["inputs"]["uploads"]}
    assert files["/run/secrets/vllm-api-key"] == "[secret]"
    assert files["/run/secrets/hf-token"] == "[secret]"


def test_generated_api_key_is_secret(dev: Synth) -> None:
    (password,) = [r for r in dev.of_type("random:index/randomPassword:RandomPassword") if r["name"] == "vllm-api-key"]
    assert password["inputs"]["length"] >= 32

    captured: dict[str, Any] = {}

    async def program() -> None:
        captured["secret"] = await build(load())["chat"].api_key.is_secret()

    run("test", as_pulumi_config(valid_config()), [], program)
    assert captured["secret"] is True


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_component_tree(stack: str, request: pytest.FixtureRequest) -> None:
    synth: Synth = request.getfixturevalue(stack)
    for r in synth.resources:
        if r["type"].startswith("docker:index/"):
            assert r["parent"] is not None, f"{r['name']} must be parented to a component"
    pools = synth.of_type("inference-stack:workers:VllmWorkerPool")
    hosts = synth.of_type("inference-stack:hosts:GpuHost")
    assert pools and hosts


def test_a_membership_sits_under_its_worker_and_keeps_the_urn_it_had_under_the_pool(dev: Synth) -> None:
    (member,) = [r for r in dev.resources if r["name"].endswith("-member")]
    assert member["parent"] == "chat-local-0" and dev.named("chat-local-0")["parent"] == "chat"
    # A child's URN is its parent's qualified type, `$`, its own type and its name: the alias is the
    # URN under the pool, as the membership was registered before it moved.
    pool_type = "inference-stack:workers:VllmWorkerPool"
    assert dev.aliases[member["name"]] == [
        f"urn:pulumi:dev::inference-stack::{pool_type}$command:local:Command::chat-local-0-member"
    ]
