"""The `ci` stack (Pulumi.ci.yaml): the one the integration tests run on a real Docker engine."""

from __future__ import annotations

from tools.synth import synth_stack

CONTAINER = "docker:index/container:Container"


def test_ci_is_three_cpu_workers_gateway_redis_and_prometheus_on_loopback() -> None:
    synth = synth_stack("ci")
    names = {c["name"] for c in synth.of_type(CONTAINER)}
    assert names == {
        "chat-local-0",
        "chat-local-1",
        "chat-local-2",
        "gateway-nginx",
        "gateway-mtail",
        # `balance: cache_aware`: a router for the chat pool and one for its canary pool.
        "gateway-router-chat",
        "gateway-router-chat-canary",
        "redis",
        "monitoring-prometheus",
        "monitoring-nginx-exporter",
    }
    # No Grafana, Weaviate or Jaeger (their images cannot be built here), and no GPU anywhere.
    for c in synth.of_type(CONTAINER):
        assert not c["inputs"].get("deviceRequests"), c["name"]
        for port in c["inputs"].get("ports", []):
            assert port["ip"] == "127.0.0.1", (c["name"], port)
    worker = synth.named("chat-local-0")["inputs"]
    assert worker["image"] == "public.ecr.aws/q9t5s3a7/vllm-cpu-release-repo:v0.32.0"
    assert "HF_HUB_OFFLINE=1" in worker["envs"]
    (cache,) = [m for m in worker["mounts"] if m["target"] == "/root/.cache/huggingface"]
    assert cache["readOnly"] is True
