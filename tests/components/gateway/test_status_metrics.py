"""The gateway's responses by HTTP status, end to end through the real consumers.

Debian's nginx runs the generated config unmodified (tools/local_nginx.py) and sends its status
log line over UDP syslog to Debian's mtail 3.0.0~rc50 (the package the image installs) running
the program from components/gateway/mtail/; the container name of mtail resolves, as in the
gateway's container, through /etc/hosts in nginx's mount namespace. Then Debian's Prometheus
scrapes that mtail with the generated `gateway-status` job and evaluates the dashboard panels and
the GatewayErrorRatio alert on what it scraped. Every address is on 127.0.0.0/8.
"""

from __future__ import annotations

import contextlib
import math
import re
import socket
import subprocess
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from components.gateway import status_metrics
from components.gateway.members import render_members
from components.gateway.nginx import Pool, Route, render_clients_map, render_nginx_conf, render_worker_auth
from components.observability.grafana import PANELS, dashboard_exprs
from components.observability.prometheus import (
    GATEWAY_STATUS_JOB,
    RULES_PATH,
    alert_rules,
    render_prometheus_yml,
    render_rules,
)
from stacks.config import GatewayConfig, RateLimit, SloConfig
from tests.components.gateway.fakes import FakeWorker, call
from tests.components.observability.test_prometheus import get_json, metric_names, parse_exposition, prometheus, query
from tests.support.nginx import nginx_test, run_nginx
from tests.support.tools import require_tool
from tools.local_nginx import Nginx, free_port
from tools.processes import stop

WORKER_KEY = "worker-key-0123456789abcdefXYZ"
CLIENT_KEYS = {
    "team-a": "sk-team-a-0123456789abcdef",
    "team-b": "sk-team-b-fedcba9876543210",
    "team-c": "sk-team-c-00112233445566778",
}
KEY_A, KEY_B, KEY_C = CLIENT_KEYS["team-a"], CLIENT_KEYS["team-b"], CLIENT_KEYS["team-c"]
SECRETS = {"clients.map": render_clients_map(CLIENT_KEYS), "worker-auth.conf": render_worker_auth(WORKER_KEY)}
# 1 r/s with a burst of 2: a key's first 3 requests at once pass, the rest get 429, and after 3 s
# of quiet the same requests get the same answers again.
LIMITED = GatewayConfig(rate_limit=RateLimit(requests_per_second=1, burst=2))
REFILL_SECONDS = 3.0

MTAIL_NAME = "test-gateway-mtail"
MTAIL_IP = "127.0.3.1"
WORKER_IP = "127.0.0.2"
DEAD_IP = "127.0.0.3"  # nothing listens there: the `gone` model has no reachable worker
HOSTS = {"w": WORKER_IP, "gone-0": DEAD_IP, MTAIL_NAME: MTAIL_IP}
RESPONSES = status_metrics.RESPONSES
DURATION = status_metrics.DURATION


@dataclass(frozen=True)
class Sent:
    method: str
    path: str
    key: str | None
    status: int
    """What the client must get."""
    endpoint: str
    model: str
    """The labels the gateway must count it under."""


CHAT, COMPLETIONS = "/v1/chat/completions", "/v1/completions"
# One round of traffic: 22 requests the gateway counts, 3 health checks it must not.
ROUND = [
    Sent("POST", CHAT, KEY_A, 200, CHAT, "m"),
    Sent("POST", CHAT, KEY_A, 200, CHAT, "m"),
    Sent("GET", "/models/m/v1/models", KEY_A, 200, "/v1/models", "m"),
    *[Sent("POST", "/models/m/v1/completions", KEY_B, 200, COMPLETIONS, "m")] * 3,
    *[Sent("POST", "/models/m/v1/completions", KEY_B, 429, COMPLETIONS, "m")] * 4,
    *[Sent("POST", CHAT, None, 401, CHAT, "m")] * 4,
    *[Sent("GET", "/metrics", KEY_A, 404, "other", "other")] * 5,
    # An invented model name is a 404 counted under `other`, not a new series.
    Sent("POST", "/models/made-up-model/v1/chat/completions", KEY_A, 404, CHAT, "other"),
    # No worker listening: nginx's 502, answered (and logged) as the OpenAI-shaped 503.
    *[Sent("POST", "/models/gone/v1/chat/completions", KEY_C, 503, CHAT, "gone")] * 2,
]
PER_STATUS = {"200": 6, "401": 4, "404": 6, "429": 4, "503": 2}
assert Counter(str(s.status) for s in ROUND) == PER_STATUS


def routes(dead_port: int, worker_port: int) -> list[Route]:
    return [Route("m", Pool("p", [f"w:{worker_port}"])), Route("gone", Pool("g", [f"gone-0:{dead_port}"]))]


T = TypeVar("T")


def poll(what: str, check: Callable[[], T], timeout: float = 15.0) -> T:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError, KeyError):
            last = check()
            if last:
                return last
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; last: {last!r}")


# --- mtail ---------------------------------------------------------------------------------------


def free_udp_port(ip: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((ip, 0))
        return int(s.getsockname()[1])


def udp_bound(ip: str, port: int) -> bool:
    local = socket.inet_aton(ip)[::-1].hex().upper() + f":{port:04X}"
    return any(line.split()[1] == local for line in Path("/proc/net/udp").read_text().splitlines()[1:])


@dataclass
class Mtail:
    process: subprocess.Popen[bytes]
    syslog_port: int
    metrics_url: str
    log: Path

    def samples(self) -> list[tuple[str, dict[str, str], float]]:
        with urllib.request.urlopen(self.metrics_url, timeout=5) as response:
            return parse_exposition(response.read().decode())

    def counts(self) -> Counter[tuple[str, str, str]]:
        """gateway_http_responses_total by (status, endpoint, model)."""
        counts: Counter[tuple[str, str, str]] = Counter()
        for name, labels, value in self.samples():
            if name == RESPONSES:
                assert set(labels) == {"status", "endpoint", "model"}, labels
                counts[labels["status"], labels["endpoint"], labels["model"]] = int(value)
        return counts

    def value(self, metric: str) -> float:
        return sum(value for name, _, value in self.samples() if name == metric)


@contextlib.contextmanager
def run_mtail(root: Path) -> Iterator[Mtail]:
    """Debian's mtail with the gateway's program, syslog on MTAIL_IP over UDP, metrics over HTTP."""
    binary = require_tool("mtail")
    progs = root / "mtail-progs"
    progs.mkdir(parents=True)
    (progs / status_metrics.PROGRAM_FILE.name).write_text(status_metrics.program())
    syslog_port, metrics_port = free_udp_port(MTAIL_IP), free_port()
    argv = [binary, *status_metrics.command(syslog_port, metrics_port, MTAIL_IP, str(progs))]
    log = root / "mtail.log"
    with log.open("wb") as out:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    mtail = Mtail(process, syslog_port, f"http://{MTAIL_IP}:{metrics_port}/metrics", log)
    try:

        def ready() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"mtail exited with {process.returncode}:\n{log.read_text()[-3000:]}")
            return udp_bound(MTAIL_IP, syslog_port) and "mtail_lines_total" in {n for n, _, _ in mtail.samples()}

        poll("mtail to listen", ready)
        yield mtail
    finally:
        stop(process)


@contextlib.contextmanager
def gateway(root: Path, mtail: Mtail, conf_edit: Callable[[str], str] = lambda c: c) -> Iterator[Nginx]:
    with FakeWorker("w", WORKER_IP) as worker:
        port = free_port()
        served = routes(free_port(), worker.port)
        conf = render_nginx_conf(
            LIMITED,
            served,
            listen_port=port,
            status_port=free_port(),
            status_syslog=f"{MTAIL_NAME}:{mtail.syslog_port}",
        )
        files = {**SECRETS, **render_members(LIMITED, served)}
        with run_nginx(root / "nginx", conf_edit(conf), files, HOSTS, port) as nginx:
            yield nginx


# The one key ROUND takes past its burst. At 1 r/s with a burst of 2, nginx (limit_req, nodelay)
# passes its first 3 requests and refuses the next 4 only while they all reach it within 1 s of
# the first: each millisecond after that frees a thousandth of a request.
LIMITED_KEY = KEY_B
assert {s.key for s in ROUND if s.status == 429} == {LIMITED_KEY}


class SlowRoundError(Exception):
    """The limited key's requests spread over 1 s or more and its verdicts moved with them: the
    round proves nothing either way (nginx did what its rate says), so the run is repeated."""


def send_round(nginx: Nginx) -> float:
    """Send ROUND and /healthz x3; every answer must be the expected one. Returns when it ended.

    The limited key's span is measured from before its first request left to after its last
    answer came, so it bounds the span nginx saw. Only when that span reached 1 s, and only the
    limited key's answers differ, is the round void (SlowRoundError); any other difference fails."""
    statuses, spans = [], []
    for sent in ROUND:
        body = {"model": sent.model} if sent.method == "POST" else None
        before = time.monotonic()
        statuses.append(call(nginx.url, sent.path, method=sent.method, key=sent.key, body=body).status)
        if sent.key == LIMITED_KEY:
            spans += [before, time.monotonic()]
    for _ in range(3):
        assert call(nginx.url, "/healthz", method="GET").status == 200
    ended = time.monotonic()
    want = [s.status for s in ROUND]
    others = [(got, s.status) for got, s in zip(statuses, ROUND, strict=True) if s.key != LIMITED_KEY]
    assert all(got == status for got, status in others), (statuses, want)
    spread = max(spans) - min(spans)
    if statuses != want and spread >= 1.0:
        raise SlowRoundError(f"the limited key's requests took {spread:.2f} s: {statuses}")
    assert statuses == want
    return ended


def unless_slow(run: Callable[[Path], T], root: Path, attempts: int = 3) -> T:
    """`run(a fresh directory)`, again with fresh processes after a void round (at most `attempts`)."""
    for attempt in range(1, attempts + 1):
        try:
            return run(root / f"attempt-{attempt}")
        except SlowRoundError as slow:
            print(f"attempt {attempt} void: {slow}")
            if attempt == attempts:
                raise AssertionError(f"{attempts} rounds in a row too slow to judge the rate limit") from slow
    raise AssertionError("unreachable")


def expected(rounds: int) -> Counter[tuple[str, str, str]]:
    return Counter({k: v * rounds for k, v in Counter((str(s.status), s.endpoint, s.model) for s in ROUND).items()})


def counted(mtail: Mtail, rounds: int) -> Counter[tuple[str, str, str]]:
    """mtail's counts once it has all of `rounds` rounds, and a second later (so nothing extra came)."""
    poll(f"mtail to count {rounds} rounds", lambda: sum(mtail.counts().values()) >= len(ROUND) * rounds)
    time.sleep(1.0)
    return mtail.counts()


# --- 1. nginx -t ---------------------------------------------------------------------------------


def test_status_log_config_passes_nginx_t_and_needs_mtail_resolvable(tmp_path: Path) -> None:
    """nginx resolves the syslog server when it loads the config: with mtail's name it checks
    out, without it nginx refuses to start (hence mtail first, and a reload when it moves)."""
    conf = render_nginx_conf(LIMITED, routes(8000, 8000), status_syslog=f"{MTAIL_NAME}:5140")
    assert "syslog:server=test-gateway-mtail:5140" in conf
    ok = nginx_test(tmp_path / "ok", conf, SECRETS, HOSTS)
    assert ok.returncode == 0, ok.stderr
    assert "syntax is ok" in ok.stderr and "test is successful" in ok.stderr
    unresolved = nginx_test(tmp_path / "unresolved", conf, SECRETS, {k: v for k, v in HOSTS.items() if k != MTAIL_NAME})
    assert unresolved.returncode != 0 and "host not found" in unresolved.stderr, unresolved.stderr
    # Without status metrics there is no syslog line, and nothing more to resolve.
    plain = render_nginx_conf(LIMITED, routes(8000, 8000))
    assert "syslog" not in plain and "gateway_status" not in plain


# --- 2. mtail counts every status exactly --------------------------------------------------------


def test_mtail_counts_every_status_exactly(tmp_path: Path) -> None:
    """22 requests (200 x6, 401 x4, 404 x6, 429 x4, 503 x2) and 3 health checks through the real
    nginx: mtail counts exactly those 22, under the status, endpoint and model the client got,
    the health checks not at all; its request-time histogram is consistent with them."""

    def once(root: Path) -> tuple[Counter[tuple[str, str, str]], list[tuple[str, dict[str, str], float]], float]:
        with run_mtail(root) as mtail, gateway(root, mtail) as nginx:
            send_round(nginx)
            return counted(mtail, 1), mtail.samples(), mtail.value("mtail_lines_total")

    counts, samples, lines = unless_slow(once, tmp_path)
    print(f"mtail counted {dict(sorted(counts.items()))}")
    assert counts == expected(1)
    per_status: Counter[str] = Counter()
    for (status, _, _), n in counts.items():
        per_status[status] += n
    assert per_status == PER_STATUS
    assert lines == len(ROUND), "one syslog line per counted request, none for /healthz"
    # The histogram: one observation per request, every one of them in a bucket (+Inf == _count).
    by_pair: Counter[tuple[str, str]] = Counter()
    for (_, endpoint, model), n in counts.items():
        by_pair[endpoint, model] += n
    histogram_count, inf_bucket = {}, {}
    for name, labels, value in samples:
        pair = (labels.get("endpoint", ""), labels.get("model", ""))
        if name == f"{DURATION}_count":
            histogram_count[pair] = value
        elif name == f"{DURATION}_bucket" and labels["le"] == "+Inf":
            inf_bucket[pair] = value
    assert histogram_count == inf_bucket == {pair: float(n) for pair, n in by_pair.items()}
    sums = [v for n, _, v in samples if n == f"{DURATION}_sum"]
    assert all(0 < v < 5 for v in sums), sums


def test_without_the_trailing_newline_mtail_counts_nothing(tmp_path: Path) -> None:
    """Why the log format ends in `\\n`: mtail rc50 reads UDP as one byte stream and splits lines
    only at newlines, and nginx's syslog messages carry none. Without it, not one line arrives."""

    def strip_newline(conf: str) -> str:
        edited = conf.replace("request_time=$request_time\\n';", "request_time=$request_time';")
        assert edited != conf
        return edited

    def once(root: Path) -> tuple[float, Counter[tuple[str, str, str]]]:
        with run_mtail(root) as mtail, gateway(root, mtail, strip_newline) as nginx:
            send_round(nginx)
            time.sleep(3.0)
            return mtail.value("mtail_lines_total"), mtail.counts()

    lines, counts = unless_slow(once, tmp_path)
    assert lines == 0 and counts == Counter()


def test_mtail_down_costs_only_the_metrics(tmp_path: Path) -> None:
    """With mtail stopped, every request is still answered; and a reload while its name does not
    resolve fails, leaving nginx serving on the config it had."""
    with run_mtail(tmp_path) as mtail, gateway(tmp_path, mtail) as nginx:
        stop(mtail.process)
        replies = [call(nginx.url, CHAT, key=KEY_A, body={}) for _ in range(3)]
        assert [r.status for r in replies] == [200, 200, 200]
        nginx.remap({k: v for k, v in HOSTS.items() if k != MTAIL_NAME})
        nginx.reload()
        poll("nginx to log the failed reload", lambda: "host not found" in nginx.log.read_text(), 10)
        assert nginx.process.poll() is None
        time.sleep(REFILL_SECONDS)
        assert call(nginx.url, CHAT, key=KEY_A, body={}).status == 200


# --- 3. Prometheus on the real mtail: the panels show data, the alert sees the 5xx share ----------

GATEWAY_PANELS = {title for title, _, queries in PANELS for _, expr in queries if RESPONSES in metric_names(expr)}


def test_prometheus_scrapes_mtail_and_the_gateway_panels_and_alert_have_data(tmp_path: Path) -> None:
    """Debian's Prometheus scrapes the real mtail with the generated `gateway-status` job every
    second and evaluates the generated rules. Two identical rounds of traffic are sent, the second
    after Prometheus saw the first, so every series grows by the same factor between the first and
    the last sample: the rates are then in exactly the proportions of the counts, and the 5xx
    share the panel and the alert compute is exactly 2/22."""
    require_tool("prometheus")
    slo = SloConfig()
    assert {"Gateway responses by status", "Gateway 5xx ratio"} <= GATEWAY_PANELS

    def once(root: Path) -> tuple[dict[str, float], float]:
        with run_mtail(root) as mtail, gateway(root, mtail) as nginx:
            first_end = send_round(nginx)
            assert counted(mtail, 1) == expected(1)
            target = mtail.metrics_url.removeprefix("http://").removesuffix("/metrics")
            config = render_prometheus_yml([], [], None, "1s", status_exporter=target)
            prom_dir = root / "prometheus"
            prom_dir.mkdir()
            (prom_dir / "inference.yml").write_text(render_rules(slo))
            with prometheus(prom_dir, config.replace(RULES_PATH, str(prom_dir / "inference.yml"))) as prom:

                def scraped_total() -> float:
                    result = query(prom, f'sum({RESPONSES}{{job="{GATEWAY_STATUS_JOB}"}})')["data"]["result"]
                    return float(result[0]["value"][1]) if result else -1.0

                poll("Prometheus to scrape the first round", lambda: scraped_total() == len(ROUND), 20)
                time.sleep(max(0.0, first_end + REFILL_SECONDS - time.monotonic()))
                send_round(nginx)
                assert counted(mtail, 2) == expected(2)
                poll("Prometheus to scrape the second round", lambda: scraped_total() == 2 * len(ROUND), 20)

                panels: dict[str, list[dict[str, Any]]] = {}
                for name, expr in dashboard_exprs():
                    if RESPONSES in metric_names(expr):
                        answer = query(prom, expr)
                        assert answer["status"] == "success", (name, answer)
                        panels[name] = answer["data"]["result"]
                        assert panels[name], f"dashboard {name}: {expr} shows no data"
                by_status = {
                    r["metric"]["status"]: float(r["value"][1])
                    for r in panels["Gateway responses by status / {{status}}"]
                }
                assert set(by_status) == set(PER_STATUS)
                rates = {status: value / by_status["503"] for status, value in by_status.items()}
                assert rates == pytest.approx({s: n / PER_STATUS["503"] for s, n in PER_STATUS.items()}, rel=1e-9)
                (ratio,) = panels["Gateway 5xx ratio / 5xx"]
                assert float(ratio["value"][1]) == pytest.approx(2 / 22, rel=1e-9)

                rule = next(r for r in alert_rules(slo) if r["alert"] == "GatewayErrorRatio")
                fired = query(prom, str(rule["expr"]))["data"]["result"]
                assert [float(r["value"][1]) for r in fired] == pytest.approx([2 / 22], rel=1e-9)

                def pending() -> list[dict[str, Any]]:
                    """The alert once an evaluation has seen the last round whole (the rule runs every
                    second; one evaluation may fall between two scrapes of the second round)."""
                    alerts = get_json(f"{prom}/api/v1/alerts")["data"]["alerts"]
                    return [
                        a
                        for a in alerts
                        if a["labels"]["alertname"] == "GatewayErrorRatio"
                        and math.isclose(float(a["value"]), 2 / 22, rel_tol=1e-9)
                    ]

                (alert,) = poll("GatewayErrorRatio to be pending at 2/22", pending, 15)
                assert alert["state"] == "pending"  # `for` is observability.slo.forMinutes
                assert alert["labels"] == {"alertname": "GatewayErrorRatio", "severity": "page"}
                return by_status, float(ratio["value"][1])

    by_status, ratio = unless_slow(once, tmp_path)
    print(f"rates by status {by_status}; 5xx ratio {ratio:.4f}")


def test_the_tests_run_the_mtail_the_image_installs() -> None:
    """The Dockerfile pins Debian's mtail; these tests are only evidence for that same build."""
    binary = require_tool("mtail")
    dockerfile = (status_metrics.CONTEXT_DIR / "Dockerfile").read_text()
    pinned = re.search(r"\bmtail=(\S+)", dockerfile)
    assert pinned, "the Dockerfile no longer pins mtail's version"
    version = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30, check=True).stdout
    assert f"git revision {pinned[1]} " in version, f"image pins {pinned[1]}, tests run: {version.strip()}"
    assert f"COPY {status_metrics.PROGRAM_FILE.name} {status_metrics.PROGRAMS_DIR}/" in dockerfile
