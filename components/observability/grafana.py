"""Grafana provisioning, generated: the Prometheus datasource, a dashboard provider and the main
inference dashboard, as Grafana's provisioning docs describe them
(https://grafana.com/docs/grafana/latest/administration/provisioning/)."""

from __future__ import annotations

import json
from typing import Any

import yaml

PROVISIONING_DIR = "/etc/grafana/provisioning"
DASHBOARDS_DIR = "/etc/grafana/dashboards"
DATASOURCE_UID = "prometheus"
JAEGER_UID = "jaeger"
RATE = "5m"


def _quantiles(metric: str, qs: tuple[float, ...]) -> list[tuple[str, str]]:
    return [
        (f"p{round(q * 100)}", f"histogram_quantile({q}, sum by (le, model_name) (rate({metric}_bucket[{RATE}])))")
        for q in qs
    ]


# (title, unit, [(legend, PromQL)]). Every metric is vLLM 0.32's, DCGM's, the nginx exporter's, the
# gateway's mtail's (components/gateway/mtail/gateway.mtail), vllm-router's or Prometheus's own.
PANELS: list[tuple[str, str, list[tuple[str, str]]]] = [
    ("Time to first token", "s", _quantiles("vllm:time_to_first_token_seconds", (0.5, 0.95, 0.99))),
    ("Inter-token latency", "s", _quantiles("vllm:inter_token_latency_seconds", (0.5, 0.99))),
    ("End-to-end latency", "s", _quantiles("vllm:e2e_request_latency_seconds", (0.5, 0.95))),
    (
        "Requests running and waiting per worker",
        "short",
        [("running {{instance}}", "vllm:num_requests_running"), ("waiting {{instance}}", "vllm:num_requests_waiting")],
    ),
    ("KV-cache usage", "percentunit", [("{{instance}}", "vllm:kv_cache_usage_perc")]),
    # Prompt tokens served from a worker's prefix cache: what session and cache-aware balancing
    # buy; a conversation sent to a cold worker recomputes its whole history (TTFT pays).
    (
        "Prefix-cache hit rate per worker",
        "percentunit",
        [
            (
                "{{instance}}",
                # Matched series by series: one per worker (and engine), as Prometheus labels them.
                f"rate(vllm:prefix_cache_hits_total[{RATE}]) / rate(vllm:prefix_cache_queries_total[{RATE}])",
            )
        ],
    ),
    (
        "Prefix-cache tokens per second",
        "short",
        [
            ("queried", f"sum by (model_name) (rate(vllm:prefix_cache_queries_total[{RATE}]))"),
            ("hit", f"sum by (model_name) (rate(vllm:prefix_cache_hits_total[{RATE}]))"),
        ],
    ),
    # The prefix-cache routers (`gateway.balance: cache_aware`, vllm-router 0.1.17's own series):
    # whether requests follow the cache, how the load spreads, and which workers they consider up.
    (
        "Router decisions by prefix cache",
        "reqps",
        [("{{outcome}}", f"sum by (outcome) (rate(vllm_router_prefix_routing_decisions_total[{RATE}]))")],
    ),
    (
        "Router requests per worker",
        "reqps",
        [("{{worker}}", f"sum by (worker) (rate(vllm_router_processed_requests_total[{RATE}]))")],
    ),
    (
        "Router healthy workers",
        "short",
        [
            ("healthy {{instance}}", "sum by (instance) (vllm_router_worker_health)"),
            ("known {{instance}}", "vllm_router_active_workers"),
        ],
    ),
    (
        "Tokens per second",
        "short",
        [
            ("prompt", f"sum by (model_name) (rate(vllm:prompt_tokens_total[{RATE}]))"),
            ("generation", f"sum by (model_name) (rate(vllm:generation_tokens_total[{RATE}]))"),
        ],
    ),
    (
        "Finished requests by reason",
        "reqps",
        [("{{finished_reason}}", f"sum by (finished_reason) (rate(vllm:request_success_total[{RATE}]))")],
    ),
    ("Worker health", "short", [("{{instance}}", 'up{job="vllm"}')]),
    ("GPU utilization", "percent", [("{{host}} GPU {{gpu}}", "DCGM_FI_DEV_GPU_UTIL")]),
    ("GPU memory used", "mbytes", [("{{host}} GPU {{gpu}}", "DCGM_FI_DEV_FB_USED")]),
    ("Gateway requests per second", "reqps", [("requests", f"rate(nginx_http_requests_total[{RATE}])")]),
    (
        "Gateway responses by status",
        "reqps",
        [("{{status}}", f"sum by (status) (rate(gateway_http_responses_total[{RATE}]))")],
    ),
    (
        "Gateway 5xx ratio",
        "percentunit",
        [
            (
                "5xx",
                f'(sum(rate(gateway_http_responses_total{{status=~"5.."}}[{RATE}])) or vector(0))'
                f" / sum(rate(gateway_http_responses_total[{RATE}]))",
            )
        ],
    ),
]


def dashboard() -> dict[str, Any]:
    panels = []
    for i, (title, unit, queries) in enumerate(PANELS):
        panels.append(
            {
                "id": i + 1,
                "type": "timeseries",
                "title": title,
                "datasource": {"type": "prometheus", "uid": DATASOURCE_UID},
                "gridPos": {"h": 8, "w": 12, "x": 12 * (i % 2), "y": 8 * (i // 2)},
                "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                "targets": [
                    {
                        "refId": chr(ord("A") + j),
                        "datasource": {"type": "prometheus", "uid": DATASOURCE_UID},
                        "expr": expr,
                        "legendFormat": legend,
                    }
                    for j, (legend, expr) in enumerate(queries)
                ],
            }
        )
    return {
        "uid": "inference-stack",
        "title": "Inference platform",
        "tags": ["inference-stack", "vllm"],
        "timezone": "browser",
        "schemaVersion": 39,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "panels": panels,
    }


def dashboard_exprs() -> list[tuple[str, str]]:
    return [(f"{title} / {legend}", expr) for title, _, queries in PANELS for legend, expr in queries]


def render_dashboard() -> str:
    return json.dumps(dashboard(), indent=2, sort_keys=True) + "\n"


def render_datasources(prometheus_url: str, jaeger_url: str | None = None) -> str:
    """Prometheus (the default) and, when tracing is on, Jaeger's query API
    (https://grafana.com/docs/grafana/latest/datasources/jaeger/#provision-the-data-source)."""
    sources: list[dict[str, Any]] = [
        {
            "name": "Prometheus",
            "type": "prometheus",
            "uid": DATASOURCE_UID,
            "access": "proxy",
            "url": prometheus_url,
            "isDefault": True,
            "editable": False,
        }
    ]
    if jaeger_url is not None:
        sources.append(
            {
                "name": "Jaeger",
                "type": "jaeger",
                "uid": JAEGER_UID,
                "access": "proxy",
                "url": jaeger_url,
                "isDefault": False,
                "editable": False,
            }
        )
    return yaml.safe_dump({"apiVersion": 1, "datasources": sources}, sort_keys=False)


def render_dashboard_provider() -> str:
    doc = {
        "apiVersion": 1,
        "providers": [
            {
                "name": "inference-stack",
                "orgId": 1,
                "folder": "Inference",
                "type": "file",
                "disableDeletion": True,
                "allowUiUpdates": False,
                "options": {"path": DASHBOARDS_DIR},
            }
        ],
    }
    return yaml.safe_dump(doc, sort_keys=False)


def grafana_env() -> dict[str, str]:
    """https://grafana.com/docs/grafana/latest/setup-grafana/configure-grafana/ (GF_<SECTION>_<KEY>,
    and `__FILE` to read a value from a file)."""
    return {
        "GF_SECURITY_ADMIN_USER": "admin",
        "GF_SECURITY_ADMIN_PASSWORD__FILE": "/run/secrets/grafana-admin-password",
        "GF_AUTH_ANONYMOUS_ENABLED": "false",
        "GF_USERS_ALLOW_SIGN_UP": "false",
        "GF_ANALYTICS_REPORTING_ENABLED": "false",
        "GF_ANALYTICS_CHECK_FOR_UPDATES": "false",
        "GF_PATHS_PROVISIONING": PROVISIONING_DIR,
    }
