"""Tracing built alone, on a stub host: no stack file, no workers, no gateway. Jaeger's container
for each storage (a retained volume or a bounded tmpfs), where it publishes, its config as
`render_jaeger_config` renders it, and its hardening."""

from __future__ import annotations

from typing import Any

import pulumi

from components.observability.tracing import Tracing, TracingArgs, render_jaeger_config
from stacks.config import TracingConfig
from tests.support.alone import assert_hardened, assert_only, children
from tests.support.stub_host import stub_host
from tools.synth import Synth, run

BADGER = TracingConfig(enabled=True, storage="badger", retention_hours=168)
MEMORY = TracingConfig(enabled=True)
PRIVATE = "10.0.0.11"


def build(config: TracingConfig, private_address: str | None = None) -> Synth:
    def program() -> None:
        Tracing(
            "tracing",
            TracingArgs(
                config=config,
                host=stub_host(),
                bind_address="127.0.0.1",
                private_address=private_address,
                edge_network=pulumi.Output.from_input("test-edge"),
                stack="test",
            ),
        )

    return run("test", {}, [], program)


def jaeger(synth: Synth) -> dict[str, Any]:
    inputs: dict[str, Any] = synth.named("tracing-jaeger")["inputs"]
    return inputs


def ports(inputs: dict[str, Any]) -> set[tuple[int, int, str]]:
    return {(p["internal"], p["external"], p["ip"]) for p in inputs["ports"]}


def test_badger_keeps_traces_on_a_retained_volume_and_otlp_publishes_only_privately() -> None:
    synth = build(BADGER, private_address=PRIVATE)
    assert_only(synth, "tracing")
    assert {r["name"] for r in children(synth, "tracing")} == {"tracing-jaeger", "tracing-data"}
    assert_hardened(synth, writable={"tracing-jaeger"})
    inputs = jaeger(synth)
    assert inputs["image"] == BADGER.jaeger_image and inputs["memory"] == BADGER.memory_mb
    assert inputs["command"] == ["--config", "file:/etc/jaeger/config.yaml"]
    assert inputs["mounts"] == [{"type": "volume", "source": "test-jaeger-data", "target": "/tmp"}]
    assert not inputs.get("tmpfs")
    assert synth.named("tracing-data")["inputs"]["name"] == "test-jaeger-data" and "tracing-data" in synth.retained
    # The UI on the bind address (an SSH tunnel); OTLP gRPC only where other hosts' workers send it.
    assert ports(inputs) == {(16686, BADGER.ui_port, "127.0.0.1"), (4317, 4317, PRIVATE)}
    assert {n["name"] for n in inputs["networksAdvanced"]} == {"stub-workers", "test-edge"}


def test_memory_storage_is_a_bounded_tmpfs_and_publishes_only_the_ui() -> None:
    synth = build(MEMORY)
    assert [r["name"] for r in children(synth, "tracing")] == ["tracing-jaeger"], "no volume for memory storage"
    inputs = jaeger(synth)
    assert inputs.get("mounts", []) == [] and inputs["tmpfs"] == {"/tmp": "rw,size=64m"}
    assert ports(inputs) == {(16686, MEMORY.ui_port, "127.0.0.1")}


def test_its_config_is_the_renderer_s_and_its_healthcheck_probes_that_config_s_port() -> None:
    for config in (BADGER, MEMORY):
        synth = build(config)
        assert synth.files()["tracing-jaeger/etc/jaeger/config.yaml"] == render_jaeger_config(config)
        (upload,) = jaeger(synth)["uploads"]
        assert upload["permissions"] == "0444"
        health = jaeger(synth)["healthcheck"]["tests"]
        assert health == ["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:13133/status"]
        assert "0.0.0.0:13133" in render_jaeger_config(config)
