"""VllmWorkerPool built alone, on a stub host: no stack file, no gateway, no Redis. One container
per placement reserving exactly its GPUs, its secrets as files that stay secret, a seat that
moves a worker create-first, and what the pool refuses before it registers anything."""

from __future__ import annotations

import json
import re
from typing import Any

import pulumi
import pytest

from components.workers import layout
from components.workers.pool import VllmWorkerPool, VllmWorkerPoolArgs
from stacks.config import LmCacheConfig, WorkerGroup
from stacks.placement import Placement
from tests.helpers import VALID_MODEL
from tests.support.alone import assert_hardened, assert_only, containers
from tests.support.stub_host import stub_config, stub_host
from tools.synth import SECRET, Synth, run

RAW_GROUP: dict[str, Any] = {"name": "chat", "image": "vllm/vllm-openai:v0.32.0", "model": dict(VALID_MODEL)}
GROUP = WorkerGroup.model_validate(RAW_GROUP)
PRIVATE = "10.0.0.12"
API_KEY = "sk-TOPSECRET-worker-key-0123456789"
HF_TOKEN = "hf_TOPSECRET_token"


def placements(published: bool = False, group: WorkerGroup = GROUP) -> list[Placement]:
    host = stub_config(private_address=PRIVATE if published else None)
    return [Placement(group, host, i, (str(i),), 8000 + i if published else None, canary=False) for i in range(2)]


def pool_args(placed: list[Placement], **extra: Any) -> VllmWorkerPoolArgs:
    values: dict[str, Any] = {
        "group": placed[0].group,
        "placements": placed,
        "hosts": {"stub": stub_host(private_address=placed[0].host.private_address)},
        "api_key": pulumi.Output.secret(API_KEY),
        "hf_token": pulumi.Output.secret(HF_TOKEN),
        "stack": "test",
        "fingerprints": {p.name: "f" * 16 for p in placed},
        **extra,
    }
    return VllmWorkerPoolArgs(**values)


def build(published: bool = False, **extra: Any) -> Synth:
    def program() -> None:
        VllmWorkerPool("chat", pool_args(placements(published), **extra))

    return run("test", {}, [], program)


def test_the_pool_alone_is_one_container_per_placement_on_exactly_its_gpus() -> None:
    synth = build()
    assert_only(synth, "chat")
    workers = containers(synth, "chat")
    assert set(workers) == {"chat-stub-0", "chat-stub-1"}
    for i in range(2):
        inputs = workers[f"chat-stub-{i}"]
        assert inputs["name"] == f"test-chat-stub-{i}"
        assert inputs["deviceRequests"] == [{"driver": "nvidia", "deviceIds": [str(i)], "capabilities": ["gpu"]}]
        # On the gateway's host: reached over the container network, nothing published.
        assert not inputs.get("ports")
        assert inputs["networksAdvanced"][0]["name"] == "stub-workers"
    assert {"chat-stub-0", "chat-stub-1"} <= synth.delete_first, "a full host: replaced where they are"
    assert_hardened(synth, writable=set(workers))
    published = containers(build(published=True), "chat")
    for i in range(2):
        (port,) = published[f"chat-stub-{i}"]["ports"]
        assert port == {"internal": 8000, "external": 8000 + i, "ip": PRIVATE}


def test_secrets_redacted_in_synth() -> None:
    captured: dict[str, bool] = {}

    async def program() -> None:
        pool = VllmWorkerPool("chat", pool_args(placements()))
        captured["api_key"] = await pool.api_key.is_secret()

    synth = run("test", {}, [], program)
    assert captured == {"api_key": True}
    assert "TOPSECRET" not in json.dumps(synth.resources)
    for w in containers(synth, "chat").values():
        key = next(u for u in w["uploads"] if u["file"] == "/run/secrets/vllm-api-key")
        assert key["content"] == SECRET and key["permissions"] == "0400"
        token = next(u for u in w["uploads"] if u["file"] == "/run/secrets/hf-token")
        assert token["content"] == SECRET and token["permissions"] == "0400"
        assert not any("KEY" in e or "TOKEN" in e for e in w["envs"])
        assert "--api-key" not in w["command"], "the key reaches vLLM from a file, never argv"


def test_a_seat_on_a_spare_gpu_moves_its_worker_create_first_under_a_new_name() -> None:
    seat = layout.Seat("test-chat-stub-0-b", ("2",), layout.CREATE_FIRST, "GPU 2 is free")
    synth = build(seats={"chat-stub-0": seat})
    moved = containers(synth, "chat")["chat-stub-0"]
    assert moved["name"] == "test-chat-stub-0-b" and moved["deviceRequests"][0]["deviceIds"] == ["2"]
    # Still reachable under the slot's name; its compile cache is the slot's, not the name's.
    assert "test-chat-stub-0" in moved["networksAdvanced"][0]["aliases"]
    assert moved["volumes"][0]["hostPath"].endswith("/test-chat-stub-0")
    assert "chat-stub-0" not in synth.delete_first and "chat-stub-1" in synth.delete_first


def test_a_canary_without_the_gateway_is_refused_before_the_pool_registers_anything() -> None:
    group = WorkerGroup.model_validate({**RAW_GROUP, "canary": {"revision": "1" * 40, "weightPercent": 10}})

    def program() -> None:
        args = VllmWorkerPoolArgs(
            group=group,
            placements=placements(group=group),
            hosts={},
            api_key=pulumi.Output.secret("key"),
        )
        with pytest.raises(ValueError, match="chat: a canary needs the gateway and the gate's target"):
            VllmWorkerPool("chat", args)

    assert run("test", {}, [], program).resources == []


@pytest.mark.parametrize(
    ("drop", "message"),
    [
        ("hosts", "worker `chat-stub-0`: no prepared host `stub`"),
        ("fingerprints", "worker `chat-stub-0`: no spec fingerprint"),
        ("redis_urls", "worker `chat-stub-0`: KV offload needs a Redis URL for host `stub`"),
    ],
)
def test_a_worker_without_its_host_fingerprint_or_redis_is_refused_up_front(drop: str, message: str) -> None:
    def program() -> None:
        extra: dict[str, Any] = {"lmcache": LmCacheConfig()} if drop == "redis_urls" else {drop: {}}
        with pytest.raises(ValueError, match=re.escape(message)):
            VllmWorkerPool("chat", pool_args(placements(), **extra))

    registered = run("test", {}, [], program)
    assert "inference-stack:workers:VllmWorkerPool" not in {r["type"] for r in registered.resources}
    assert {r["name"] for r in registered.resources if r["parent"] is None} == {"stub"}
