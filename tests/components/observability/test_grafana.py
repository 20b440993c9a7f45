"""Grafana's provisioning files, checked field by field against the structure Grafana's
provisioning docs describe (https://grafana.com/docs/grafana/latest/administration/provisioning/).
Grafana itself cannot run here (no registry for its image), so this is a structural check."""

from __future__ import annotations

import json
from typing import Any

import yaml

from components.observability import grafana
from tools.synth import Synth

CONTAINER = "docker:index/container:Container"


def grafana_container(s: Synth) -> dict[str, Any]:
    return next(c for c in s.of_type(CONTAINER) if c["name"] == "monitoring-grafana")


def uploads(s: Synth) -> dict[str, str]:
    return {u["file"]: u.get("content", "") for u in grafana_container(s)["inputs"]["uploads"]}


def test_datasource_file(prod: Synth) -> None:
    doc = yaml.safe_load(uploads(prod)["/etc/grafana/provisioning/datasources/datasources.yaml"])
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


def test_dashboard_provider_points_at_the_uploaded_dashboard(prod: Synth) -> None:
    files = uploads(prod)
    doc = yaml.safe_load(files["/etc/grafana/provisioning/dashboards/inference-stack.yaml"])
    assert doc["apiVersion"] == 1
    (provider,) = doc["providers"]
    assert provider["type"] == "file" and provider["orgId"] == 1
    path = provider["options"]["path"]
    dashboards = [f for f in files if f.startswith(path + "/") and f.endswith(".json")]
    assert dashboards == [f"{path}/inference.json"]


def test_dashboard_json_structure() -> None:
    board = json.loads(grafana.render_dashboard())
    assert board["uid"] and board["title"] and isinstance(board["schemaVersion"], int)
    titles = [p["title"] for p in board["panels"]]
    for wanted in (
        "Time to first token",
        "Inter-token latency",
        "End-to-end latency",
        "KV-cache usage",
        "Requests running and waiting per worker",
        "Tokens per second",
        "Finished requests by reason",
        "GPU utilization",
        "GPU memory used",
        "Worker health",
        "Gateway requests per second",
    ):
        assert wanted in titles
    ids = [p["id"] for p in board["panels"]]
    assert len(set(ids)) == len(ids)
    for panel in board["panels"]:
        assert panel["type"] == "timeseries"
        assert panel["datasource"] == {"type": "prometheus", "uid": grafana.DATASOURCE_UID}
        assert set(panel["gridPos"]) == {"h", "w", "x", "y"}
        refs = [t["refId"] for t in panel["targets"]]
        assert len(set(refs)) == len(refs) and all(t["expr"] for t in panel["targets"])
    ttft = next(p for p in board["panels"] if p["title"] == "Time to first token")
    assert [t["legendFormat"] for t in ttft["targets"]] == ["p50", "p95", "p99"]


def test_admin_password_is_a_secret_file_and_anonymous_access_is_off(prod: Synth, dev: Synth) -> None:
    for synth in (dev, prod):
        inputs = grafana_container(synth)["inputs"]
        env = dict(e.split("=", 1) for e in inputs["envs"])
        assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
        assert env["GF_SECURITY_ADMIN_PASSWORD__FILE"] == "/run/secrets/grafana-admin-password"
        assert not any(k.startswith("GF_SECURITY_ADMIN_PASSWORD") and not k.endswith("__FILE") for k in env)
        assert uploads(synth)["/run/secrets/grafana-admin-password"] == "[secret]"
        (port,) = inputs["ports"]
        assert port["ip"] == "127.0.0.1" and port["internal"] == 3000
