"""The canary gate (components/workers/canary_gate.py) as its Pulumi command runs it: `python3 -`
with the program and its parameters on stdin, against the generated nginx config (real nginx)
with fake workers behind it. The TTFT thresholds are checked against a stub of Prometheus's query
API that answers fixed values; the integration test runs the gate against real vLLM and a real
Prometheus."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast

import pulumi

from components.gateway import members
from components.gateway.nginx import Pool, Route
from components.workers import canary, canary_gate
from stacks.config import WorkerGroup
from tests.components.gateway.fakes import FakeWorker
from tests.components.gateway.test_members import members_sh
from tests.components.gateway.test_nginx import GATE_KEY, gateway
from tests.helpers import valid_config

FRANCE = {"prompt": "What is the capital of France?", "expect": "Paris"}


def group_with(probes: list[dict[str, str]]) -> WorkerGroup:
    raw = valid_config()["workers"][0]
    raw["canary"] = {"revision": "b" * 40, "weightPercent": 10, "gate": {"probes": probes, "requests": 6}}
    return WorkerGroup.model_validate(raw)


@contextlib.contextmanager
def behind_gateway(tmp_path: Path, canary_answer: str) -> Iterator[tuple[str, FakeWorker, FakeWorker]]:
    """Model `m`: a stable worker answering "4", a canary worker answering `canary_answer`."""
    ips = {"stable-0": "127.0.0.2", "canary-0": "127.0.0.3"}
    with (
        FakeWorker("stable", ips["stable-0"], answer="2 + 2 = 4") as s,
        FakeWorker("canary", ips["canary-0"], answer=canary_answer) as c,
        gateway(tmp_path, [Route("m", Pool("chat", []), Pool("chat-canary", []))], ips) as gw,
    ):
        for pool, address in (("chat", f"stable-0:{s.port}"), ("chat_canary", f"canary-0:{c.port}")):
            assert members_sh(gw, "admit", pool, members.member_name(address), address).returncode == 0
        yield gw.url, s, c


def run_gate(params: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    target_key = GATE_KEY
    return subprocess.run(
        [sys.executable, "-"], input=canary.gate_stdin(params, target_key), capture_output=True, text=True, timeout=120
    )


def params_for(url: str, probes: list[dict[str, str]], prometheus: str | None = None) -> dict[str, Any]:
    # gate_params never reads the key (gate_stdin adds it), so no Output (and no event loop) is needed.
    target = canary.GateTarget(url, cast("pulumi.Output[str]", None), prometheus, 1.0)
    params = canary.gate_params(group_with(probes), target)
    return {**params, "model": "m"}


def test_a_wrong_answer_fails_the_gate_with_prompt_expected_fragment_and_answer(tmp_path: Path) -> None:
    with behind_gateway(tmp_path, "2 + 2 is 4, and the capital of France is Lyon.") as (url, stable, canary_worker):
        ran = run_gate(params_for(url, [FRANCE]))
    assert ran.returncode == 1, ran.stdout
    report = ran.stderr
    print(report)
    assert "PASS  prompt: 'What is 2 + 2?'  expected: '4'" in report
    assert (
        "FAIL  prompt: 'What is the capital of France?'  expected: 'Paris'  "
        "answer: '2 + 2 is 4, and the capital of France is Lyon.'" in report
    )
    assert "canary gate FAILED" in report
    # Through the gateway, to the canary pool alone, with the gate's own key: never the stable worker.
    assert stable.seen == [] and len(canary_worker.seen) == 6
    assert {s.path for s in canary_worker.seen} == {"/v1/chat/completions"}


def test_right_answers_pass_and_a_stack_without_prometheus_says_ttft_was_not_checked(tmp_path: Path) -> None:
    with behind_gateway(tmp_path, "Paris. Also, 2 + 2 = 4.") as (url, _, canary_worker):
        ran = run_gate(params_for(url, [FRANCE]))
    assert ran.returncode == 0, ran.stderr
    assert "SKIP  TTFT: the stack runs no Prometheus" in ran.stdout
    assert len(canary_worker.seen) == 6


def test_a_4_must_stand_alone_and_an_unreachable_pool_fails(tmp_path: Path) -> None:
    assert canary_gate.contains("It is 4.", "4") and not canary_gate.contains("It is 14.", "4")
    assert canary_gate.contains("paris!", "Paris")
    with behind_gateway(tmp_path, "") as (url, _, _):
        params = {**params_for(url, []), "pool": "nope"}
        ran = run_gate(params)
    assert ran.returncode == 1 and "(no answer: HTTP 404" in ran.stderr


@contextlib.contextmanager
def stub_prometheus(values: dict[str, float | None]) -> Iterator[str]:
    """Prometheus's /api/v1/query, answering by the query's kind and role: `count`, `canary`, `stable`.
    A nonzero count grows by 10 on every query, as scrapes add the gate's requests."""
    queries = {"count": 0}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            promql = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)["query"][0]
            role = "canary" if 'role="canary"' in promql else "stable"
            key = "count" if promql.startswith("sum(") else role
            value = values.get(key)
            if key == "count" and value:
                queries["count"] += 1
                value += 10 * queries["count"]
            result = [] if value is None else [{"metric": {}, "value": [0, str(value)]}]
            body = json.dumps({"status": "success", "data": {"resultType": "vector", "result": result}}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def ttft_verdict(tmp_path: Path, values: dict[str, float | None], timeout: int = 30) -> tuple[bool, str]:
    with behind_gateway(tmp_path, "4") as (url, _, _), stub_prometheus(values) as prometheus:
        params = {**params_for(url, [], prometheus), "key": GATE_KEY, "timeout_seconds": timeout}
        passed, lines = canary_gate.run(params, sleep=lambda _: None)
    return passed, lines[-1]


def test_ttft_is_held_to_the_ceiling_and_to_the_stable_workers(tmp_path: Path) -> None:
    ok, line = ttft_verdict(tmp_path, {"count": 1e6, "canary": 0.3, "stable": 0.25})
    assert ok and line.startswith("PASS  TTFT P95 over 10m: canary 0.300 s, stable 0.250 s"), line
    ok, line = ttft_verdict(tmp_path, {"count": 1e6, "canary": 0.5, "stable": 0.2})
    assert not ok and "above 1.5 x the stable P95" in line, line
    ok, line = ttft_verdict(tmp_path, {"count": 1e6, "canary": 1.2, "stable": None})
    assert not ok and "stable no samples" in line and "above the 1 s ceiling" in line, line
    ok, line = ttft_verdict(tmp_path, {"count": 1e6, "canary": None, "stable": 0.2})
    assert not ok and "no canary TTFT samples" in line, line
    ok, line = ttft_verdict(tmp_path, {"count": 0, "canary": 0.1}, timeout=3)
    assert not ok and "Prometheus did not see the gate's 6 requests in time" in line, line
