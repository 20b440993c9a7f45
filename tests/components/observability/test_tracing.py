"""Tracing: Jaeger as the stacks declare it, and real vLLM spans through the real gateway.

Jaeger itself cannot run here (no registry for its image, no release download), so its config is
checked by structure against Jaeger v2.20.0's own sample configs. What can run does: vLLM 0.32
(CPU, SmolLM2-135M) started with the flags the workers get, behind the generated nginx config,
exporting to an OTLP/gRPC receiver (tests/support/otlp_receiver.py) that stands in for Jaeger's
`otlp` receiver. All traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.observability.tracing import render_jaeger_config
from components.workers import spec
from stacks.config import TracingConfig
from stacks.vllm_flags import check_extra_args
from tests.components.gateway.fakes import call
from tests.components.gateway.test_nginx import KEY_A, WORKER_KEY, gateway, single
from tests.support.model_server import SERVED_MODEL_NAME, model_cache_dir, require_model_server, vllm_server
from tools.processes import stop
from tools.synth import Synth

CONTAINER = "docker:index/container:Container"
RECEIVER = Path(__file__).resolve().parents[2] / "support" / "otlp_receiver.py"


def container(s: Synth, name: str) -> dict[str, Any]:
    return next(c for c in s.of_type(CONTAINER) if c["name"] == name)


def jaeger_config(s: Synth) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(s.files()["tracing-jaeger/etc/jaeger/config.yaml"])
    return doc


# 1. Jaeger's config, by structure ------------------------------------------------------------------


@pytest.mark.parametrize("storage", ["memory", "badger"])
def test_jaeger_config_wires_every_component_it_names(storage: str) -> None:
    """The OpenTelemetry Collector refuses a config whose pipeline names an undefined component,
    and Jaeger's query extension one whose storage names an undefined backend: check both, as
    `jaeger --config` would (v2.20.0, cmd/jaeger/internal/all-in-one.yaml and config-badger.yaml)."""
    doc = yaml.safe_load(render_jaeger_config(TracingConfig(enabled=True, storage=storage)))  # type: ignore[arg-type]
    service = doc["service"]
    for kind in ("receivers", "processors", "exporters"):
        for name in service["pipelines"]["traces"][kind]:
            assert name in doc[kind], f"{kind}: {name} is used but not defined"
    for name in service["extensions"]:
        assert name in doc["extensions"], name
    backends = doc["extensions"]["jaeger_storage"]["backends"]
    assert doc["extensions"]["jaeger_query"]["storage"]["traces"] in backends
    assert doc["exporters"]["jaeger_storage_exporter"]["trace_storage"] in backends
    # Only OTLP comes in: the Jaeger, Zipkin and sampling endpoints of the default stay closed.
    assert list(doc["receivers"]) == ["otlp"]
    assert doc["receivers"]["otlp"]["protocols"] == {
        "grpc": {"endpoint": "0.0.0.0:4317"},
        "http": {"endpoint": "0.0.0.0:4318"},
    }
    (backend,) = backends.values()
    assert list(backend) == [storage]


def test_badger_keeps_spans_on_the_volume_and_memory_is_bounded() -> None:
    badger = yaml.safe_load(render_jaeger_config(TracingConfig(storage="badger", retention_hours=72)))
    (store,) = badger["extensions"]["jaeger_storage"]["backends"].values()
    assert store["badger"] == {
        "directories": {"keys": "/tmp/jaeger/keys", "values": "/tmp/jaeger/values"},
        # Badger's default is ephemeral (internal/storage/v1/badger/config.go): it must be said.
        "ephemeral": False,
        "ttl": {"spans": "72h"},
    }
    memory = yaml.safe_load(render_jaeger_config(TracingConfig(max_traces=5000)))
    (store,) = memory["extensions"]["jaeger_storage"]["backends"].values()
    assert store == {"memory": {"max_traces": 5000}}


# 2. The stacks -------------------------------------------------------------------------------------


def test_prod_jaeger_keeps_traces_on_a_retained_volume_and_publishes_otlp_privately(prod: Synth) -> None:
    jaeger = container(prod, "tracing-jaeger")["inputs"]
    assert jaeger["image"] == "jaegertracing/jaeger:2.20.0"
    assert jaeger["command"] == ["--config", "file:/etc/jaeger/config.yaml"]
    assert jaeger["memory"] == 1024
    (mount,) = jaeger["mounts"]
    assert mount == {"type": "volume", "source": "prod-jaeger-data", "target": "/tmp"}
    volume = prod.named("tracing-data")
    assert volume["inputs"]["name"] == "prod-jaeger-data" and "tracing-data" in prod.retained
    ports = {(p["internal"], p["ip"]) for p in jaeger["ports"]}
    # UI on loopback (SSH tunnel); OTLP gRPC only on the private address gpu-b's workers use.
    assert ports == {(16686, "127.0.0.1"), (4317, "10.20.0.11")}
    assert "badger" in str(jaeger_config(prod)["extensions"]["jaeger_storage"])
    # gpu-a's firewall check covers the OTLP port it now publishes.
    firewall = prod.named("gpu-a-firewall")["inputs"]["create"]
    assert "4317" in firewall.split("firewall.sh", 1)[1]


def test_dev_jaeger_is_memory_only_and_publishes_nothing_but_the_ui(dev: Synth) -> None:
    jaeger = container(dev, "tracing-jaeger")["inputs"]
    assert jaeger.get("mounts", []) == [] and jaeger["tmpfs"] == {"/tmp": "rw,size=64m"}
    assert [(p["internal"], p["ip"]) for p in jaeger["ports"]] == [(16686, "127.0.0.1")]
    assert "memory" in str(jaeger_config(dev)["extensions"]["jaeger_storage"])


def test_every_worker_sends_spans_to_the_jaeger_it_can_reach(prod: Synth, dev: Synth) -> None:
    for synth, stack in ((prod, "prod"), (dev, "dev")):
        pools = {p["name"] for p in synth.of_type("inference-stack:workers:VllmWorkerPool")}
        workers = [c for c in synth.of_type(CONTAINER) if c["parent"] in pools]
        assert workers
        for w in workers:
            command = w["inputs"]["command"]
            endpoint = command[command.index("--otlp-traces-endpoint") + 1]
            expected = "http://10.20.0.11:4317" if "gpu-b" in w["name"] else f"http://{stack}-jaeger:4317"
            assert endpoint == expected, w["name"]
            assert "--collect-detailed-traces" not in command
            # Jaeger sits on the workers' network, where the name resolves.
        jaeger_networks = [n["name"] for n in container(synth, "tracing-jaeger")["inputs"]["networksAdvanced"]]
        assert f"{stack}-workers" in jaeger_networks


def test_tracing_flags_are_real_vllm_flags_and_not_settable_through_extra_args() -> None:
    args = spec.tracing_args("http://jaeger:4317", ["model", "worker"])
    assert args == ["--otlp-traces-endpoint", "http://jaeger:4317", "--collect-detailed-traces", "model", "worker"]
    help_text = (Path(__file__).resolve().parents[2] / "fixtures" / "vllm-0.32.0-serve-help.txt").read_text()
    assert "--otlp-traces-endpoint OTLP_TRACES_ENDPOINT" in help_text
    assert "--collect-detailed-traces {all,model,worker,None}" in help_text
    problems = check_extra_args(["--otlp-traces-endpoint", "http://elsewhere:4317"])
    assert problems and "observability.tracing" in str(problems[0])


def test_grafana_gets_a_jaeger_datasource_only_with_tracing(prod: Synth) -> None:
    from composition.platform import main
    from tools.synth import ROOT, read_stack_file, run

    def datasources(s: Synth) -> list[dict[str, Any]]:
        text = s.files()["monitoring-grafana/etc/grafana/provisioning/datasources/datasources.yaml"]
        found: list[dict[str, Any]] = yaml.safe_load(text)["datasources"]
        return found

    jaeger = [d for d in datasources(prod) if d["type"] == "jaeger"]
    assert jaeger == [
        {
            "name": "Jaeger",
            "type": "jaeger",
            "uid": "jaeger",
            "access": "proxy",
            "url": "http://prod-jaeger:16686",
            "isDefault": False,
            "editable": False,
        }
    ]
    grafana_networks = {n["name"] for n in container(prod, "monitoring-grafana")["inputs"]["networksAdvanced"]}
    jaeger_networks = {n["name"] for n in container(prod, "tracing-jaeger")["inputs"]["networksAdvanced"]}
    assert grafana_networks & jaeger_networks, "Grafana cannot reach Jaeger's query API"
    config, secret_keys = read_stack_file(ROOT / "Pulumi.dev.yaml")
    config["inference-stack:observability"] = json.dumps({"tracing": {"enabled": False}})
    off = run("dev", config, secret_keys, main)
    assert [d["type"] for d in datasources(off)] == ["prometheus"]
    assert not [c for c in off.of_type(CONTAINER) if c["name"] == "tracing-jaeger"]
    for w in off.of_type(CONTAINER):
        assert "--otlp-traces-endpoint" not in (w["inputs"].get("command") or [])


# 3. Real spans -------------------------------------------------------------------------------------


@contextlib.contextmanager
def otlp_receiver(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    out = tmp_path / "spans.jsonl"
    out.touch()
    python = model_cache_dir() / "venv" / "bin" / "python"
    proc = subprocess.Popen(
        [str(python), str(RECEIVER), str(out)], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        yield port, out
    finally:
        stop(proc)


def spans(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def test_vllm_exports_a_span_under_the_callers_trace_through_the_gateway(tmp_path: Path) -> None:
    """A client's W3C `traceparent` crosses the gateway untouched; vLLM, started with the flags
    the workers get, exports its request span to the OTLP endpoint, as a child of the client's
    span, with the latency breakdown as attributes."""
    require_model_server()
    trace_id, parent = secrets.token_hex(16), secrets.token_hex(8)
    with otlp_receiver(tmp_path) as (port, out):
        flags = spec.tracing_args(f"http://127.0.0.1:{port}")
        with vllm_server(api_key=WORKER_KEY, extra_args=flags) as base:
            upstream = int(base.rsplit(":", 1)[1])
            with gateway(
                tmp_path, single("smol", [f"vllm-0:{upstream}"], model=SERVED_MODEL_NAME), {"vllm-0": "127.0.0.1"}
            ) as gw:
                started = time.monotonic()
                reply = call(
                    gw.url,
                    "/v1/chat/completions",
                    key=KEY_A,
                    body={
                        "model": SERVED_MODEL_NAME,
                        "messages": [{"role": "user", "content": "Say hello."}],
                        "temperature": 0,
                        "max_tokens": 16,
                    },
                    headers={"traceparent": f"00-{trace_id}-{parent}-01"},
                    timeout=60,
                )
                assert reply.status == 200, reply.body
                deadline = time.monotonic() + 30  # the batch span processor flushes every 5 s
                ours: list[dict[str, Any]] = []
                while not ours and time.monotonic() < deadline:
                    ours = [s for s in spans(out) if s["trace_id"] == trace_id]
                    time.sleep(0.5)
                waited = time.monotonic() - started
    assert ours, f"no span with trace id {trace_id} in {spans(out)[:5]}"
    (span,) = ours
    print(f"span {span['name']!r} arrived {waited:.1f} s after the request: {span['attributes']}")
    assert span["parent_span_id"] == parent
    assert span["name"] == "llm_request"
    attributes = span["attributes"]
    assert attributes["gen_ai.request.max_tokens"] == 16
    assert 0 < attributes["gen_ai.latency.time_to_first_token"] <= attributes["gen_ai.latency.e2e"]
    assert attributes["gen_ai.usage.completion_tokens"] >= 1
