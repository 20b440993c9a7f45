"""The canary gate (components/workers/files/canary_gate.py) as its Pulumi command runs it: `python3 -`
with the program and its parameters on stdin, against the generated nginx config (real nginx)
with fake workers behind it. The TTFT check runs the gate's own queries against Debian's real
Prometheus scraping vLLM-shaped TTFT histograms of known counts, labelled as the stack labels its
workers, whose quantiles the test computes by Prometheus's interpolation rule; the integration
test runs the gate against real vLLM."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pulumi
import pytest

from components.gateway import members
from components.gateway.nginx import Pool, Route
from components.observability.prometheus import RULES_PATH, Target, render_prometheus_yml
from components.workers import canary
from components.workers.files import canary_gate
from components.workers.files.canary_gate import TTFT
from composition.platform import scrape_targets
from stacks.config import StackConfig, WorkerGroup
from stacks.rules import check
from tests.components.gateway.fakes import FakeWorker
from tests.components.gateway.test_members import members_sh
from tests.components.gateway.test_nginx import GATE_KEY, gateway
from tests.components.observability.test_prometheus import (
    bucket_bounds,
    fixture_labels,
    prometheus,
    quantile,
    query,
    wait_for,
)
from tests.helpers import valid_config
from tests.support.exposition import histogram_text, served_exposition

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
    assert f"PASS  prompt: {canary_gate.TWO_PLUS_TWO['prompt']!r}  expected: '4'" in report
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


# --- TTFT against a real Prometheus ----------------------------------------------------------------

# Observations per scrape, by the `le` of the vLLM bucket they fall in (bounds from the 0.32.0
# fixture: ... 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5 ...). No quantile checked here has
# its rank on a bucket's cumulative count: there, a rounding of Prometheus's extrapolated counts
# could move it across an empty bucket.
CANARY = {"0.04": 10, "0.06": 45, "0.25": 30, "0.5": 7, "1.0": 6, "2.5": 2}
STABLE = {"0.04": 20, "0.06": 40, "0.1": 32, "0.25": 8}
# (q, canary, stable): linear interpolation inside the bucket holding rank q x 100.
QUANTILES = [
    (0.50, 0.04 + 0.02 * (50 - 10) / 45, 0.04 + 0.02 * (50 - 20) / 40),
    (0.90, 0.25 + 0.25 * (90 - 85) / 7, 0.08 + 0.02 * (90 - 60) / 32),
    (0.95, 0.75 + 0.25 * (95 - 92) / 6, 0.1 + 0.15 * (95 - 92) / 8),
    (0.99, 1.0 + 1.5 * (99 - 98) / 2, 0.1 + 0.15 * (99 - 92) / 8),
]
CANARY_P95, STABLE_P95 = 0.875, 0.15625
SCRAPES_BEFORE_THE_GATE = 2  # increase() needs two samples in the window


def ttft_exposition(
    per_scrape: dict[str, int], grows: bool = True, shown: Callable[[], bool] = lambda: True
) -> Callable[[int], str]:
    """vLLM's TTFT histogram (its labels from the fixture) holding `per_scrape` observations more
    on every scrape, or the same counts on every scrape when it does not grow. Until `shown()`
    is true the target exposes nothing, as a target Prometheus does not scrape yet."""
    (labels,) = [{k: v for k, v in lb.items() if k != "le"} for lb in fixture_labels(f"{TTFT}_count")]
    bounds = bucket_bounds(TTFT)
    first: list[int] = []

    def render(scrape: int) -> str:
        if not first and not shown():
            return ""
        first[:] = first or [scrape]
        n = scrape - first[0] + 1 if grows else 1
        cumulative = [(le, n * sum(c for b, c in per_scrape.items() if float(b) <= float(le))) for le in bounds]
        return histogram_text(TTFT, labels, cumulative, n * sum(float(b) * c for b, c in per_scrape.items()))

    return render


def scrape_config(addresses: dict[tuple[str, str], str]) -> str:
    """prometheus.yml as the stack renders it, with each worker's labels as the stack sets them
    (`group`, `role`, ...), every 0.5 s; `addresses` maps (group, role) to a scrape target."""
    raw = valid_config()
    raw["workers"][0].update(replicasPerHost=2, canary={"revision": "b" * 40, "weightPercent": 10})
    cfg = StackConfig.model_validate(raw)
    placements, issues = check(cfg, {})
    assert not issues, issues
    (stable, canary_target) = sorted(scrape_targets(cfg, placements, "dev"), key=lambda t: t.labels["role"] == "canary")
    targets = [
        Target(address, {**(canary_target if role == "canary" else stable).labels, "group": group})
        for (group, role), address in addresses.items()
    ]
    return render_prometheus_yml(targets, [], None, scrape_interval="500ms")


@contextlib.contextmanager
def real_prometheus(tmp_path: Path, chat_canary_shown: Callable[[], bool] = lambda: True) -> Iterator[str]:
    """Debian's Prometheus scraping, by group: `chat` (canary CANARY, stable STABLE), `solo` (canary
    CANARY, a stable pool that served nothing) and `stuck` (a canary whose counts never move)."""
    series = {
        ("chat", "canary"): ttft_exposition(CANARY, shown=chat_canary_shown),
        ("chat", "stable"): ttft_exposition(STABLE),
        ("solo", "canary"): ttft_exposition(CANARY),
        ("solo", "stable"): ttft_exposition({}),
        ("stuck", "canary"): ttft_exposition(CANARY, grows=False),
    }
    with contextlib.ExitStack() as stack:
        addresses = {key: stack.enter_context(served_exposition(render)) for key, render in series.items()}
        rules = tmp_path / "rules.yml"
        rules.write_text("groups: []\n")
        config = scrape_config(addresses).replace(RULES_PATH, str(rules))
        yield stack.enter_context(prometheus(tmp_path, config))


def wait_for_scrapes(prom: str, targets: int = 5) -> None:
    """Until every target was scraped SCRAPES_BEFORE_THE_GATE times (Prometheus 2.42 hands
    discovered targets to its scrapers up to 5 s after it starts)."""

    def scraped_enough() -> bool:
        result = query(prom, 'count_over_time(up{job="vllm"}[1m])')["data"]["result"]
        return len(result) == targets and all(float(r["value"][1]) >= SCRAPES_BEFORE_THE_GATE for r in result)

    wait_for(f"{SCRAPES_BEFORE_THE_GATE} scrapes of every target", scraped_enough, 30)


def test_the_gate_reads_the_canary_p95_from_a_real_prometheus_and_holds_it_to_both_limits(tmp_path: Path) -> None:
    # `quantile` (Prometheus's rule, from test_prometheus.py) agrees with the hand computation.
    for q, canary_q, stable_q in QUANTILES:
        assert quantile(q, TTFT, CANARY) == pytest.approx(canary_q), q
        assert quantile(q, TTFT, STABLE) == pytest.approx(stable_q), q
    ratio = CANARY_P95 / STABLE_P95
    with real_prometheus(tmp_path) as prom, behind_gateway(tmp_path, "4") as (url, _, _):
        wait_for_scrapes(prom)
        base = {**params_for(url, [], prom), "key": GATE_KEY, "timeout_seconds": 30}

        def verdict(ceiling: float, vs_stable: float, group: str = "chat", timeout: int = 30) -> tuple[bool, str]:
            params = {**base, "group": group, "ttft_p95_seconds": ceiling, "ttft_vs_stable_max": vs_stable}
            passed, lines = canary_gate.run({**params, "timeout_seconds": timeout}, sleep=lambda _: time.sleep(0.2))
            print(lines[-1])
            return passed, lines[-1]

        # Prometheus holds that data: each quantile of what it scraped is the one computed above.
        for q, *expected in QUANTILES:
            for role, value in zip(("canary", "stable"), expected, strict=True):
                promql = (
                    f'histogram_quantile({q}, sum by (le) (increase({TTFT}_bucket{{group="chat",role="{role}"}}[10m])))'
                )
                (sample,) = query(prom, promql)["data"]["result"]
                assert float(sample["value"][1]) == pytest.approx(value, rel=1e-9), (q, role)
        # The gate's own queries read the P95s.
        assert canary_gate.p95(base, "canary") == pytest.approx(CANARY_P95, rel=1e-9)
        assert canary_gate.p95(base, "stable") == pytest.approx(STABLE_P95, rel=1e-9)

        ok, line = verdict(CANARY_P95 * 1.01, ratio * 1.01)
        assert ok and line.startswith("PASS  TTFT P95 over 10m: canary 0.875 s, stable 0.156 s"), line
        ok, line = verdict(CANARY_P95 * 0.99, ratio * 1.01)
        assert not ok and f"(above the {CANARY_P95 * 0.99:g} s ceiling)" in line, line
        ok, line = verdict(CANARY_P95 * 1.01, ratio * 0.99)
        assert not ok and f"(above {ratio * 0.99:g} x the stable P95)" in line, line
        # A stable pool with no requests in the window has no P95 (NaN): only the ceiling applies.
        ok, line = verdict(CANARY_P95 * 1.01, 1.0, group="solo")
        assert ok and "stable no samples" in line, line
        ok, line = verdict(CANARY_P95 * 0.99, 1.0, group="solo")
        assert not ok and "stable no samples" in line and f"(above the {CANARY_P95 * 0.99:g} s ceiling)" in line, line
        # Counts that do not move: the gate's own requests never showed up in Prometheus.
        ok, line = verdict(10.0, 10.0, group="stuck", timeout=2)
        assert not ok and "Prometheus did not see the gate's 6 requests in time" in line, line


def test_a_canary_prometheus_first_scrapes_after_the_gate_s_requests_gets_its_p95(tmp_path: Path) -> None:
    """Prometheus may start, or first scrape the canary's new target, only after the gate's
    requests (nothing orders the gate after Monitoring): that scrape is then the canary's only
    sample, increase() over one sample is empty, and the gate must wait for the next."""
    with (
        behind_gateway(tmp_path, "4") as (url, _, canary_worker),
        real_prometheus(tmp_path, chat_canary_shown=lambda: len(canary_worker.seen) >= 6) as prom,
    ):
        params = {**params_for(url, [], prom), "key": GATE_KEY, "timeout_seconds": 30, "ttft_p95_seconds": 10.0}
        passed, lines = canary_gate.run({**params, "ttft_vs_stable_max": 100.0}, sleep=lambda _: time.sleep(0.2))
    print(lines[-1])
    assert passed and lines[-1].startswith("PASS  TTFT P95 over 10m: canary 0.875 s, stable 0.156 s"), lines
