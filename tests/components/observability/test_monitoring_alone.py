"""Monitoring built alone, on two stub hosts (the gateway's, and a GPU host reached over its
private address): no stack file, no workers, no gateway. Prometheus, its exporters and Grafana,
where each publishes, what each is handed, and the Grafana password checked before any child.
Grafana's provisioning files are checked field by field against the structure Grafana's
provisioning docs describe (https://grafana.com/docs/grafana/latest/administration/provisioning/)."""

from __future__ import annotations

import json
from typing import Any

import pulumi
import pytest
import yaml

from components.observability import grafana
from components.observability.monitoring import Monitoring, MonitoringArgs
from components.observability.prometheus import Target, render_prometheus_yml, render_rules
from stacks import network
from stacks.config import ObservabilityConfig
from tests.support.alone import assert_hardened, assert_only, children, containers
from tests.support.stub_host import stub_host
from tools.synth import ROOT, SECRET, Synth, run

CONFIG = ObservabilityConfig()
PROD = ObservabilityConfig.model_validate(
    yaml.safe_load((ROOT / "Pulumi.prod.yaml").read_text())["config"]["inference-stack:observability"]
)
DEV = ObservabilityConfig.model_validate(
    yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())["config"].get("inference-stack:observability", {})
)
WORKERS = [Target("test-chat-stub-0:8000", {"host": "stub", "model": "m", "group": "chat"})]
PASSWORD = "grafana-TOPSECRET-admin-password"
JAEGER = "http://test-jaeger:16686"
STATUS = "test-gateway-status:3903"
PRIVATE = "10.0.0.12"


def build(config: ObservabilityConfig = CONFIG, password: str | None = PASSWORD, stack: str = "test") -> Synth:
    def program() -> None:
        host = stub_host()
        Monitoring(
            "monitoring",
            MonitoringArgs(
                config=config,
                host=host,
                workers=WORKERS,
                gpu_hosts={"stub": (host, None), "stub-b": (stub_host("stub-b"), PRIVATE)},
                gateway_container=pulumi.Output.from_input("test-gateway"),
                edge_network=pulumi.Output.from_input("test-edge"),
                stack=stack,
                grafana_password=None if password is None else pulumi.Output.secret(password),
                gateway_status_exporter=STATUS,
                jaeger_url=JAEGER,
            ),
        )

    return run(stack, {}, [], program)


def ports(inputs: dict[str, Any]) -> list[tuple[int, int, str]]:
    return [(p["internal"], p["external"], p["ip"]) for p in inputs.get("ports") or []]


def test_monitoring_alone_publishes_its_uis_on_the_bind_address_and_remote_dcgm_privately() -> None:
    synth = build()
    assert_only(synth, "monitoring", stubs=("stub", "stub-b"))
    made = containers(synth, "monitoring")
    assert set(made) == {
        "monitoring-dcgm-stub",
        "monitoring-dcgm-stub-b",
        "monitoring-nginx-exporter",
        "monitoring-prometheus",
        "monitoring-grafana",
    }
    assert ports(made["monitoring-prometheus"]) == [(9090, 9090, "127.0.0.1")]
    assert ports(made["monitoring-grafana"]) == [(3000, 3000, "127.0.0.1")]
    assert ports(made["monitoring-dcgm-stub-b"]) == [(9400, 9400, PRIVATE)]
    assert not ports(made["monitoring-dcgm-stub"]) and not ports(made["monitoring-nginx-exporter"])
    # Each DCGM exporter on its own host's network, through that host's provider.
    assert made["monitoring-dcgm-stub-b"]["networksAdvanced"] == [{"name": "stub-b-workers"}]
    assert made["monitoring-nginx-exporter"]["command"] == ["--nginx.scrape-uri=http://test-gateway:8081/stub_status"]
    # Prometheus and Grafana take uploads; DCGM's writes are undocumented (policy/hardening.py).
    writable = {"monitoring-prometheus", "monitoring-grafana", "monitoring-dcgm-stub", "monitoring-dcgm-stub-b"}
    assert_hardened(synth, writable=writable)


def test_prod_retention_by_time_and_size_on_a_volume() -> None:
    synth = build(PROD)
    prom = containers(synth, "monitoring")["monitoring-prometheus"]
    command = prom["command"]
    assert "--storage.tsdb.retention.time=15d" in command and "--storage.tsdb.retention.size=20GB" in command
    assert prom["mounts"][0]["target"] == "/prometheus" and prom["mounts"][0]["type"] == "volume"
    assert prom["mounts"][0]["source"] == "test-prometheus-data"
    assert {"monitoring-data", "monitoring-grafana-data"} <= synth.retained


def test_its_files_are_the_renderers_and_the_grafana_password_stays_secret() -> None:
    synth = build()
    files = {k.split("/", 1)[1]: v for k, v in synth.files().items() if k.startswith("monitoring-")}
    gpu_targets = [Target("test-dcgm-stub:9400", {"host": "stub"}), Target(f"{PRIVATE}:9400", {"host": "stub-b"})]
    assert [t.address for t in gpu_targets] == [
        network.dcgm_target("test", "stub", None),
        network.dcgm_target("test", "stub-b", PRIVATE),
    ]
    nginx_exporter = f"{network.nginx_exporter_container('test')}:9113"
    assert files["etc/prometheus/prometheus.yml"] == render_prometheus_yml(
        WORKERS, gpu_targets, nginx_exporter, CONFIG.scrape_interval, status_exporter=STATUS
    )
    assert files["etc/prometheus/rules/inference.yml"] == render_rules(CONFIG.slo)
    datasources = files[f"{grafana.PROVISIONING_DIR.lstrip('/')}/datasources/datasources.yaml"]
    assert datasources == grafana.render_datasources(network.prometheus_url("test"), JAEGER)
    assert {d["type"] for d in yaml.safe_load(datasources)["datasources"]} == {"prometheus", "jaeger"}
    assert files["run/secrets/grafana-admin-password"] == SECRET
    assert PASSWORD not in json.dumps(synth.resources)


def test_grafana_without_a_password_is_refused_before_the_first_child() -> None:
    def program() -> None:
        with pytest.raises(ValueError, match="Grafana needs an admin password"):
            without_password()

    def without_password() -> None:
        host = stub_host()
        Monitoring(
            "monitoring",
            MonitoringArgs(
                config=CONFIG,
                host=host,
                workers=WORKERS,
                gpu_hosts={"stub": (host, None)},
                gateway_container=pulumi.Output.from_input("test-gateway"),
                edge_network=pulumi.Output.from_input("test-edge"),
                stack="test",
                grafana_password=None,
            ),
        )

    assert children(run("test", {}, [], program), "monitoring") == []
    without = containers(build(ObservabilityConfig(grafana=False), password=None), "monitoring")
    assert "monitoring-grafana" not in without and "monitoring-prometheus" in without


def grafana_uploads(synth: Synth) -> dict[str, str]:
    grafana_inputs = containers(synth, "monitoring")["monitoring-grafana"]
    return {u["file"]: u.get("content", "") for u in grafana_inputs["uploads"]}


def test_datasource_file() -> None:
    files = grafana_uploads(build(PROD, stack="prod"))
    doc = yaml.safe_load(files["/etc/grafana/provisioning/datasources/datasources.yaml"])
    assert doc["apiVersion"] == 1
    ds, jaeger = doc["datasources"]  # Jaeger's entry: tests/components/observability/test_tracing.py
    assert jaeger["type"] == "jaeger"
    assert ds == {
        "name": "Prometheus",
        "type": "prometheus",
        "uid": "prometheus",
        "access": "proxy",
        "url": "http://prod-prometheus:9090",
        "isDefault": True,
        "editable": False,
    }


def test_dashboard_provider_points_at_the_uploaded_dashboard() -> None:
    files = grafana_uploads(build(PROD, stack="prod"))
    doc = yaml.safe_load(files["/etc/grafana/provisioning/dashboards/inference-stack.yaml"])
    assert doc["apiVersion"] == 1
    (provider,) = doc["providers"]
    assert provider["type"] == "file" and provider["orgId"] == 1
    path = provider["options"]["path"]
    dashboards = [f for f in files if f.startswith(path + "/") and f.endswith(".json")]
    assert dashboards == [f"{path}/inference.json"]


def test_admin_password_is_a_secret_file_and_anonymous_access_is_off() -> None:
    for stack, config in (("dev", DEV), ("prod", PROD)):
        synth = build(config, stack=stack)
        inputs = containers(synth, "monitoring")["monitoring-grafana"]
        env = dict(e.split("=", 1) for e in inputs["envs"])
        assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
        assert env["GF_SECURITY_ADMIN_PASSWORD__FILE"] == "/run/secrets/grafana-admin-password"
        assert not any(k.startswith("GF_SECURITY_ADMIN_PASSWORD") and not k.endswith("__FILE") for k in env)
        assert grafana_uploads(synth)["/run/secrets/grafana-admin-password"] == SECRET
        (port,) = inputs["ports"]
        assert port["ip"] == "127.0.0.1" and port["internal"] == 3000
