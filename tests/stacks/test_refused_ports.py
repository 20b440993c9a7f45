"""Two services publishing one host address and port anywhere in the fleet are refused before
anything is deployed, naming both; services on different addresses, families or hosts pass."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.helpers import assert_refused_at, valid_config, validate_values

Mutation = Callable[[dict[str, Any]], None]
SSH = {"user": "deploy", "address": "gpu-b.internal"}


def group(cfg: dict[str, Any]) -> dict[str, Any]:
    return cfg["workers"][0]


def two_hosts(cfg: dict[str, Any], **b: Any) -> Any:
    """gpu-a (the gateway host, 10.0.0.11) and gpu-b (10.0.0.12), whose workers publish."""
    cfg["hosts"][0]["privateAddress"] = "10.0.0.11"
    cfg["hosts"].append({"name": "gpu-b", "gpus": {"count": 2}, "privateAddress": "10.0.0.12", **b})


def observability(cfg: dict[str, Any], **values: Any) -> Any:
    cfg.setdefault("observability", {}).update(values)


def tracing(cfg: dict[str, Any], **values: Any) -> Any:
    cfg.setdefault("observability", {})["tracing"] = {"enabled": True, **values}


def offload(cfg: dict[str, Any]) -> Any:
    cfg["redis"] = {"enabled": True, "kvCacheOffload": True, "maxmemoryPolicy": "allkeys-lru"}


def second_group(cfg: dict[str, Any], **values: Any) -> Any:
    group(cfg).update(replicasPerHost=1)
    cfg["workers"].append({**group(cfg), "name": "other", **values})


# (id, mutation, expected key path, fragment of the rule)
CASES: list[tuple[str, Mutation, str, str]] = [
    (
        "gateway-and-prometheus",
        lambda c: c.update(gateway={"port": 9090}),
        "inference-stack:observability.prometheusPort",
        "host port 9090 on host `gpu-a` is already taken by the gateway (on 127.0.0.1, `gateway.port`)",
    ),
    (
        "prometheus-and-grafana",
        lambda c: observability(c, grafanaPort=9090),
        "inference-stack:observability.grafanaPort",
        "already taken by Prometheus",
    ),
    (
        "grafana-and-jaeger-ui",
        lambda c: tracing(c, uiPort=3000),
        "inference-stack:observability.tracing.uiPort",
        "already taken by Grafana",
    ),
    (
        "gateway-everywhere-and-grafana",
        lambda c: c.update(gateway={"listenAddress": "0.0.0.0", "port": 3000}),
        "inference-stack:observability.grafanaPort",
        "already taken by the gateway (on every address",
    ),
    (
        "prometheus-everywhere-and-gateway",
        lambda c: observability(c, bindAddress="0.0.0.0", prometheusPort=8080),
        "inference-stack:observability.prometheusPort",
        "host port 8080 on host `gpu-a` is already taken by the gateway",
    ),
    (
        "ipv6-everywhere-and-loopback",
        lambda c: c.update(gateway={"listenAddress": "::", "port": 9090}) or observability(c, bindAddress="::1"),
        "inference-stack:observability.prometheusPort",
        "already taken by the gateway (on every address",
    ),
    (
        "gateway-and-redis",
        lambda c: two_hosts(c) or offload(c) or c.update(gateway={"listenAddress": "10.0.0.11", "port": 6379}),
        "inference-stack:gateway.port",
        "host port 6379 on host `gpu-a` is already taken by Redis (on 10.0.0.11",
    ),
    (
        "gateway-and-otlp",
        lambda c: two_hosts(c) or tracing(c) or c.update(gateway={"listenAddress": "0.0.0.0", "port": 4317}),
        "inference-stack:gateway.port",
        "already taken by Jaeger's OTLP receiver (on 10.0.0.11, `hosts[0].privateAddress`)",
    ),
    (
        "prometheus-and-otlp",
        lambda c: two_hosts(c) or tracing(c) or observability(c, bindAddress="0.0.0.0", prometheusPort=4317),
        "inference-stack:observability.prometheusPort",
        "already taken by Jaeger's OTLP receiver",
    ),
    (
        "worker-and-dcgm",
        lambda c: two_hosts(c) or group(c).update(port=9399),
        "inference-stack:workers[0].port",
        "host port 9400 on host `gpu-b` is already taken by the DCGM exporter (on 10.0.0.12",
    ),
    (
        "worker-and-sshd",
        lambda c: two_hosts(c, ssh={**SSH, "port": 8000}),
        "inference-stack:workers[0].port",
        "host port 8000 on host `gpu-b` is already taken by sshd (on every address, "
        "`hosts[1].ssh.port`): worker `chat-gpu-b-0` could not start there",
    ),
    (
        "gateway-and-sshd",
        lambda c: (
            c["hosts"][0].update(ssh={**SSH, "address": "gpu-a.internal", "port": 8080})
            or group(c)["model"].update(weights="prefetched")
        ),
        "inference-stack:gateway.port",
        "host port 8080 on host `gpu-a` is already taken by sshd",
    ),
    (
        "worker-ranges-overlap",
        lambda c: (
            two_hosts(c, gpus={"count": 4})
            or group(c).update(replicasPerHost=2)
            or c["workers"].append(
                {**group(c), "name": "other", "port": 8001, "replicasPerHost": 1, "hosts": ["gpu-b"]}
            )
        ),
        "inference-stack:workers[1].port",
        "host port 8001 on host `gpu-b` is already taken by worker `chat-gpu-b-1` (on 10.0.0.12, `workers[0].port`)",
    ),
    (
        "worker-range-past-65535",
        lambda c: two_hosts(c) or group(c).update(port=65535),
        "inference-stack:workers[0].port",
        "up to 65536, beyond the last port (65535)",
    ),
]


@pytest.mark.parametrize(("mutate", "path", "rule"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_port_taken_twice_is_refused(mutate: Mutation, path: str, rule: str) -> None:
    cfg = valid_config()
    mutate(cfg)
    assert_refused_at(cfg, path, rule)


PASSING: list[tuple[str, Mutation]] = [
    (
        "same-port-other-address",
        lambda c: c.update(gateway={"listenAddress": "10.0.0.11", "port": 9090}) or two_hosts(c),
    ),
    ("same-port-other-family", lambda c: c.update(gateway={"listenAddress": "::", "port": 9090})),
    ("grafana-off-frees-its-port", lambda c: observability(c, grafana=False) or c.update(gateway={"port": 3000})),
    ("tracing-off-frees-the-ui-port", lambda c: c.update(observability={"tracing": {"uiPort": 9090}})),
    (
        "observability-off-frees-its-ports",
        lambda c: observability(c, enabled=False) or c.update(gateway={"port": 9090}),
    ),
    # OTLP and Redis publish only when workers run on another host; then on the private address.
    (
        "otlp-unpublished-on-one-host",
        lambda c: tracing(c) or c.update(gateway={"listenAddress": "0.0.0.0", "port": 4317}),
    ),
    ("dcgm-only-on-other-hosts", lambda c: group(c).update(port=9399) or c.update(gateway={"port": 9400})),
    ("same-port-other-host", lambda c: two_hosts(c) or group(c).update(port=8080)),
    ("worker-ranges-apart", lambda c: two_hosts(c) or second_group(c, port=8100)),
    ("last-port-exactly", lambda c: two_hosts(c) or group(c).update(port=65534)),
]


@pytest.mark.parametrize("mutate", [p[1] for p in PASSING], ids=[p[0] for p in PASSING])
def test_distinct_addresses_and_ports_pass(mutate: Mutation) -> None:
    cfg = valid_config()
    mutate(cfg)
    validate_values(cfg)


def test_the_fixed_ports_are_the_ones_the_components_publish() -> None:
    """The rule and the components read the same constants (stacks/network.py), and the render
    publishes them."""
    from stacks import network
    from tools.synth import synth_stack

    containers = synth_stack("prod").of_type("docker:index/container:Container")
    rendered = {port["external"] for c in containers for port in c["inputs"].get("ports") or []}
    assert {network.OTLP_GRPC_PORT, network.DCGM_PORT} <= rendered


def test_the_gateway_tmpfs_is_the_size_the_rules_assume() -> None:
    from pathlib import Path

    from stacks.config import GATEWAY_TMP_MIB

    source = (Path(__file__).resolve().parents[2] / "components/gateway/gateway.py").read_text()
    assert f'tmpfs={{"/tmp": "rw,size={GATEWAY_TMP_MIB}m"}}' in source
