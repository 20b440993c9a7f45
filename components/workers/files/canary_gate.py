#!/usr/bin/env python3
"""The canary gate: run on the gateway host by a Pulumi command before a canary's weight rises.

1. Accuracy: every probe (always the health probe's 2 + 2 -> 4, then the stack's own
   prompt/fragment pairs) goes at temperature 0 through the gateway to the canary pool alone
   (`/pools/<pool>/v1/chat/completions`, which only the gate's key may use), in turn until
   `requests` requests were sent. Every answer must contain its fragment (case-insensitive).
2. TTFT: once Prometheus has scraped those requests (and the canary twice in the window, as
   increase() needs), the canary's TTFT P95 over the window
   (`vllm:time_to_first_token_seconds`, labels `group` and `role`) must be under the absolute
   ceiling and at most `ttft_vs_stable_max` times the stable workers' P95 (when they have samples).

Exit 0 when everything passes, 1 with a report (prompt, expected fragment, answer; the P95s)
when anything fails, so `pulumi up` stops before the weight rises. Standard library only: it runs
with whatever python3 the gateway host has. Parameters come as JSON after the script on stdin
(they hold the gate's key, so never argv).
"""

from __future__ import annotations

import json
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

# The workers' health probe question (healthcheck.QUESTION; this file runs standalone).
TWO_PLUS_TWO = {"prompt": "What is 2 + 2? Answer in digits.", "expect": "4"}
TTFT = "vllm:time_to_first_token_seconds"


class GateError(Exception):
    pass


def _post(url: str, key: str, body: dict[str, Any], timeout: float) -> dict[str, Any]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    req.add_header("Content-Type", "application/json")
    req.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            answer: dict[str, Any] = json.loads(resp.read())
            return answer
    except urllib.error.HTTPError as err:
        raise GateError(f"HTTP {err.code}: {err.read()[:200].decode(errors='replace')}") from None
    except (urllib.error.URLError, OSError, ValueError) as err:
        raise GateError(f"{url}: {err}") from None


def ask(params: dict[str, Any], prompt: str, timeout: float) -> str:
    """The canary pool's answer to `prompt`, through the gateway."""
    url = f"{params['gateway_url']}/pools/{params['pool']}/v1/chat/completions"
    body = {
        "model": params["model"],
        "messages": [{"role": "user", "content": prompt}],
        "temperature": 0,
        "max_tokens": params.get("max_tokens", 48),
    }
    reply = _post(url, params["key"], body, timeout)
    try:
        return str(reply["choices"][0]["message"]["content"])
    except (KeyError, IndexError, TypeError):
        raise GateError(f"malformed completion: {json.dumps(reply)[:200]}") from None


def contains(answer: str, expect: str) -> bool:
    if expect.isdigit():
        # A 4 that is not part of another number, as the workers' healthcheck reads it.
        return re.search(rf"(?<!\d){re.escape(expect)}(?!\d)", answer) is not None
    return expect.casefold() in answer.casefold()


def query(prometheus: str, promql: str, timeout: float = 10) -> float | None:
    url = f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            data = json.loads(resp.read())
    except (urllib.error.URLError, OSError, ValueError) as err:
        raise GateError(f"Prometheus at {prometheus}: {err}") from None
    result = data.get("data", {}).get("result", [])
    if not result:
        return None
    value = float(result[0]["value"][1])
    return None if value != value else value  # NaN: no samples


def selector(params: dict[str, Any], role: str) -> str:
    return f'group="{params["group"]}",role="{role}"'


def count(params: dict[str, Any], role: str) -> float:
    return query(params["prometheus_url"], f"sum({TTFT}_count{{{selector(params, role)}}})") or 0.0


def _count_or_zero(params: dict[str, Any]) -> float:
    """The canary's TTFT sample count; 0 while Prometheus is unreachable (it is replaced when
    the canary changes its targets' labels), so the wait below retries until the deadline."""
    try:
        return count(params, "canary")
    except GateError:
        return 0.0


def _samples(params: dict[str, Any], role: str, how: str) -> float | None:
    """`how` (min or max) of the samples each of the role's TTFT series has in the window; None
    when there is no such series, 0 while Prometheus is unreachable."""
    promql = f"{how}(count_over_time({TTFT}_count{{{selector(params, role)}}}[{params['window_minutes']}m]))"
    try:
        return query(params["prometheus_url"], promql)
    except GateError:
        return 0.0


def _scraped_twice(params: dict[str, Any]) -> bool:
    """increase() is empty for a series scraped once, as the canary's is when Prometheus starts, or
    first scrapes its new target, after the gate's requests: every canary series needs two samples
    in the window, and the stable workers (when they have series) one series with two."""
    stable = _samples(params, "stable", "max")
    return (_samples(params, "canary", "min") or 0.0) >= 2 and (stable is None or stable >= 2)


def p95(params: dict[str, Any], role: str) -> float | None:
    window = f"{params['window_minutes']}m"
    promql = f"histogram_quantile(0.95, sum by (le) (increase({TTFT}_bucket{{{selector(params, role)}}}[{window}])))"
    return query(params["prometheus_url"], promql)


def run(params: dict[str, Any], clock: Any = time.monotonic, sleep: Any = time.sleep) -> tuple[bool, list[str]]:
    """(passed, report lines)."""
    deadline = clock() + params["timeout_seconds"]
    probes = [TWO_PLUS_TWO, *params.get("probes", [])]
    lines = [
        f"canary gate: group `{params['group']}`, pool `{params['pool']}`, model `{params['model']}`, "
        f"before its weight rises to {params['to_percent']} %"
    ]
    ok = True
    before = _count_or_zero(params) if params.get("prometheus_url") else 0.0
    sent = 0
    results: dict[int, tuple[bool, str]] = {}
    while sent < max(params["requests"], len(probes)):
        i = sent % len(probes)
        probe = probes[i]
        remaining = deadline - clock()
        if remaining <= 0:
            lines.append(f"FAIL  gate timed out after {params['timeout_seconds']} s with {sent} requests sent")
            return False, lines
        try:
            answer = ask(params, probe["prompt"], min(60.0, remaining))
            passed = contains(answer, probe["expect"])
        except GateError as err:
            answer, passed = f"(no answer: {err})", False
        sent += 1
        if i not in results or not passed:
            results[i] = (passed, answer)
    for i, probe in enumerate(probes):
        passed, answer = results[i]
        ok &= passed
        lines.append(
            f"{'PASS' if passed else 'FAIL'}  prompt: {probe['prompt']!r}  expected: {probe['expect']!r}  "
            f"answer: {answer.strip()[:300]!r}"
        )
    if not params.get("prometheus_url"):
        lines.append("SKIP  TTFT: the stack runs no Prometheus (observability.enabled is false)")
        return ok, lines
    # Wait for a scrape that includes the gate's own requests, and for samples increase() can use.
    while _count_or_zero(params) < before + sent or not _scraped_twice(params):
        if clock() >= deadline:
            lines.append(f"FAIL  TTFT: Prometheus did not see the gate's {sent} requests in time")
            return False, lines
        sleep(2)
    canary, stable = p95(params, "canary"), p95(params, "stable")
    ceiling, ratio = params["ttft_p95_seconds"], params["ttft_vs_stable_max"]
    problems = []
    if canary is None:
        problems.append("no canary TTFT samples")
    else:
        if canary > ceiling:
            problems.append(f"above the {ceiling:g} s ceiling")
        if stable is not None and canary > ratio * stable:
            problems.append(f"above {ratio:g} x the stable P95")
    shown = "n/a" if canary is None else f"{canary:.3f} s"
    versus = "no samples" if stable is None else f"{stable:.3f} s"
    lines.append(
        f"{'FAIL' if problems else 'PASS'}  TTFT P95 over {params['window_minutes']}m: canary {shown}, "
        f"stable {versus}; ceiling {ceiling:g} s, at most {ratio:g} x stable"
        + (f" ({'; '.join(problems)})" if problems else "")
    )
    return ok and not problems, lines


def main(params: dict[str, Any]) -> int:
    try:
        passed, lines = run(params)
    except GateError as err:
        passed, lines = False, [f"FAIL  {err}"]
    out = sys.stdout if passed else sys.stderr
    print("\n".join(lines), file=out)
    if not passed:
        print("canary gate FAILED: the weight stays where it was; fix the release or remove the canary", file=out)
    return 0 if passed else 1
