"""The prefix-cache router's Prometheus job and dashboard panels against the real vllm-router
0.1.17 (started as its image starts it, tests/components/gateway/test_routing.py) in front of
fake workers, scraped by Debian's Prometheus through the generated prometheus.yml. Traffic stays
on 127.0.0.0/8."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from components.observability.grafana import dashboard_exprs
from components.observability.prometheus import ROUTER_JOB, RULES_PATH, render_prometheus_yml, render_rules
from stacks.config import SloConfig
from tests.components.gateway.fakes import FakeWorker
from tests.components.gateway.test_routing import IPS, router, turn, url
from tests.components.gateway.test_status_metrics import poll
from tests.components.observability.test_prometheus import metric_names, prometheus, query
from tests.support.tools import require_tool

ROUTER_PANELS = {
    name: expr for name, expr in dashboard_exprs() if any(m.startswith("vllm_router_") for m in metric_names(expr))
}


def test_prometheus_scrapes_the_router_and_its_panels_show_what_it_did(tmp_path: Path) -> None:
    """Three conversations of three turns over three workers: the router counts 3 more misses and
    6 more hits, and reports 3 healthy workers. The panels are rates, so their values are checked
    in proportion: hits grow twice as fast as misses."""
    require_tool("prometheus")
    assert set(ROUTER_PANELS) >= {
        "Router decisions by prefix cache / {{outcome}}",
        "Router requests per worker / {{worker}}",
        "Router healthy workers / healthy {{instance}}",
    }
    workers = [FakeWorker(name, ip) for name, ip in IPS.items()]
    try:
        with router(tmp_path / "router", [url(w) for w in workers]) as (address, metrics):
            target = metrics.removeprefix("http://")
            config = render_prometheus_yml([], [], None, "1s", routers=[target])
            prom_dir = tmp_path / "prometheus"
            prom_dir.mkdir()
            (prom_dir / "inference.yml").write_text(render_rules(SloConfig()))
            with prometheus(prom_dir, config.replace(RULES_PATH, str(prom_dir / "inference.yml"))) as prom:

                def routed_total() -> float:
                    result = query(prom, f'sum(vllm_router_processed_requests_total{{job="{ROUTER_JOB}"}})')
                    values = result["data"]["result"]
                    return float(values[0]["value"][1]) if values else -1.0

                poll(
                    "Prometheus to scrape the router",
                    lambda: query(prom, f'up{{job="{ROUTER_JOB}"}} == 1')["data"]["result"],
                    20,
                )
                # First one conversation of three turns (1 miss, 2 hits), seen by Prometheus: both
                # outcomes' series then exist, and grow by the same factor (x4) through the counted
                # traffic, so their rates (extrapolated alike) are exactly in its proportion.
                opening = [{"role": "user", "content": "opening conversation: " + "word " * 300}]
                for t in range(3):
                    turn(address, opening)
                    opening += [{"role": "assistant", "content": f"a{t}"}, {"role": "user", "content": f"q{t}"}]
                poll("Prometheus to see the first 3 requests", lambda: routed_total() == 3, 20)
                histories = [[{"role": "user", "content": f"conversation {c}: " + "word " * 300}] for c in range(3)]
                for t in range(3):
                    for history in histories:
                        turn(address, history)
                        history += [{"role": "assistant", "content": f"a{t}"}, {"role": "user", "content": f"q{t}"}]
                # Scraped twice after the traffic, so the 5 m rates see the whole of it.
                poll("Prometheus to see all 12 requests", lambda: routed_total() == 12, 20)
                time.sleep(2.5)
                panels = {name: query(prom, expr)["data"]["result"] for name, expr in ROUTER_PANELS.items()}
    finally:
        for w in workers:
            w.close()
    for name, result in panels.items():
        assert result, f"dashboard {name}: {ROUTER_PANELS[name]} shows no data"
    decisions = {
        r["metric"]["outcome"]: float(r["value"][1]) for r in panels["Router decisions by prefix cache / {{outcome}}"]
    }
    assert set(decisions) == {"prefix_hit", "prefix_miss"}
    assert decisions["prefix_hit"] / decisions["prefix_miss"] == pytest.approx(2.0, rel=1e-6)
    per_worker = panels["Router requests per worker / {{worker}}"]
    assert {r["metric"]["worker"] for r in per_worker} <= {url(w) for w in workers}
    (healthy,) = panels["Router healthy workers / healthy {{instance}}"]
    assert float(healthy["value"][1]) == 3
    (known,) = panels["Router healthy workers / known {{instance}}"]
    assert float(known["value"][1]) == 3
