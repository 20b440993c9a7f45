"""The network layout (stacks/network.py) of the shipped stacks, and the render agreeing with it:
the ports the firewall opens, the ports containers publish, the names and URLs."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from stacks import network
from stacks.config import StackConfig
from stacks.model_files import read_cached
from stacks.placement import Placement
from stacks.stackfile import read_stack_file
from stacks.validation import split_config, validate
from tools.synth import Synth, synth_stack

CONTAINER = "docker:index/container:Container"
ROOT = Path(__file__).resolve().parents[2]


def config_values(stack: str) -> tuple[dict[str, Any], set[str], list[str]]:
    config, secret_keys = read_stack_file(ROOT / f"Pulumi.{stack}.yaml")
    return split_config(dict(config), secret_keys)


@cache
def model(stack: str) -> tuple[StackConfig, list[Placement]]:
    values, secret, foreign = config_values(stack)
    return validate(stack, values, secret, foreign, read_cached)


@cache
def synth(stack: str) -> Synth:
    return synth_stack(stack)


def host_ports(stack: str) -> dict[str, set[int]]:
    """Host ports the render publishes on each host's private address for the other hosts, by
    host: all but the gateway's own, which is for clients."""
    cfg, _ = model(stack)
    by_address = {h.private_address: h.name for h in cfg.hosts if h.private_address is not None}
    found: dict[str, set[int]] = {h.name: set() for h in cfg.hosts}
    for c in synth(stack).of_type(CONTAINER):
        for port in c["inputs"].get("ports") or []:
            if port["ip"] in by_address and c["name"] != "gateway-nginx":
                found[by_address[port["ip"]]].add(port["external"])
    return found


def test_prod_opens_otlp_on_the_gateway_host_and_workers_and_dcgm_on_the_other() -> None:
    cfg, placements = model("prod")
    ports = network.firewall_ports(cfg, placements)
    assert ports == {"gpu-a": [network.OTLP_GRPC_PORT], "gpu-b": [8000, 8001, 8002, 8003, network.DCGM_PORT]}


def test_kv_cache_offload_across_hosts_opens_redis_on_the_gateway_host() -> None:
    values, secret, foreign = config_values("prod")
    redis = {**json.loads(values["redis"]), "kvCacheOffload": True, "maxmemoryPolicy": "allkeys-lru"}
    values["redis"] = json.dumps(redis)
    cfg, placements = validate("prod", values, secret, foreign, read_cached)
    assert network.redis_published(cfg, placements)
    assert network.firewall_ports(cfg, placements)["gpu-a"] == [network.REDIS_PORT, network.OTLP_GRPC_PORT]


def test_prod_firewall_ports_are_what_the_render_publishes_on_private_addresses() -> None:
    cfg, placements = model("prod")
    assert {h: set(p) for h, p in network.firewall_ports(cfg, placements).items()} == host_ports("prod")


def test_single_host_stacks_open_nothing() -> None:
    for stack in ("dev", "ci"):
        cfg, placements = model(stack)
        assert network.firewall_ports(cfg, placements) == {"local": []}
        assert not network.redis_published(cfg, placements)
        assert not network.tracing_published(cfg, placements)


def test_every_published_port_of_prod_is_in_the_clash_rule() -> None:
    """`published` (the port-clash rule's list) holds every host port the render publishes."""
    cfg, placements = model("prod")
    listed = {(p.address, p.port) for p in network.published(cfg, placements)}
    rendered = {
        (port["ip"], port["external"])
        for c in synth("prod").of_type(CONTAINER)
        for port in c["inputs"].get("ports") or []
    }
    assert rendered <= listed


def test_container_names_are_the_rendered_ones() -> None:
    networks = {n["inputs"]["name"] for n in synth("prod").of_type("docker:index/network:Network")}
    assert network.workers_network("prod") in networks
    names = {c["inputs"]["name"] for c in synth("prod").of_type(CONTAINER)}
    assert {
        network.redis_container("prod"),
        network.weaviate_container("prod"),
        network.jaeger_container("prod"),
        network.prometheus_container("prod"),
        network.grafana_container("prod"),
        network.nginx_exporter_container("prod"),
        network.dcgm_container("prod", "gpu-a"),
        network.dcgm_container("prod", "gpu-b"),
    } <= names


def test_grafana_reaches_prometheus_and_jaeger_at_their_internal_urls() -> None:
    assert network.prometheus_url("prod") == "http://prod-prometheus:9090"
    assert network.jaeger_query_url("prod") == "http://prod-jaeger:16686"
    datasources = synth("prod").files()["monitoring-grafana/etc/grafana/provisioning/datasources/datasources.yaml"]
    assert f"url: {network.prometheus_url('prod')}" in datasources
    assert f"url: {network.jaeger_query_url('prod')}" in datasources


def test_prometheus_scrapes_dcgm_by_name_beside_it_and_by_address_elsewhere() -> None:
    assert network.dcgm_target("prod", "gpu-a", None) == "prod-dcgm-gpu-a:9400"
    assert network.dcgm_target("prod", "gpu-b", "10.20.0.12") == "10.20.0.12:9400"
    config = synth("prod").files()["monitoring-prometheus/etc/prometheus/prometheus.yml"]
    assert "- prod-dcgm-gpu-a:9400" in config
    assert "- 10.20.0.12:9400" in config


def test_workers_reach_redis_and_jaeger_by_name_beside_them_and_by_address_elsewhere() -> None:
    cfg, _ = model("prod")
    assert network.redis_target(cfg, "prod", "gpu-a") == "prod-redis:6379"
    assert network.redis_target(cfg, "prod", "gpu-b") == "10.20.0.11:6379"
    assert network.redis_url("prod-redis:6379", "pw") == "redis://:pw@prod-redis:6379"
    assert network.host_otlp_endpoint(cfg, "prod", "gpu-a") == "http://prod-jaeger:4317"
    assert network.host_otlp_endpoint(cfg, "prod", "gpu-b") == "http://10.20.0.11:4317"


def test_the_rendered_workers_send_spans_to_the_endpoint_of_their_host() -> None:
    cfg, placements = model("prod")
    for p in placements:
        command = json.dumps(synth("prod").named(p.name)["inputs"].get("command"))
        assert network.host_otlp_endpoint(cfg, "prod", p.host.name) in command, p.name
