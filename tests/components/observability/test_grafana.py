"""Grafana's provisioning files, checked field by field against the structure Grafana's
provisioning docs describe (https://grafana.com/docs/grafana/latest/administration/provisioning/).
Grafana itself cannot run here (no registry for its image), so this is a structural check. The
files the Grafana container receives, with Monitoring built alone: test_monitoring_alone.py."""

from __future__ import annotations

import json

from components.observability import grafana


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
