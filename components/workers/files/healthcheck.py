#!/usr/bin/env python3
"""Two-tier vLLM worker healthcheck, uploaded into the container (never baked into an image).

Tier 1, every run: GET /health, cheap enough for every Docker healthcheck interval.
Tier 2, on the first healthy run and then at most every --probe-every seconds: ask the served
model "What is 2 + 2? Answer in digits." at temperature 0 through /v1/chat/completions and
require a 4 in the answer. A worker that answers 200 with nonsense (weights loaded on the wrong
device, a broken quantization, a truncated download) is worse than one that answers 500, so it
must go unhealthy.

Standard library only: the worker image promises python3 and nothing else (no curl).
Exit 0 healthy, 1 unhealthy; the one line printed lands in `docker inspect`'s health log.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import socket
import sys
import time
import urllib.error
import urllib.request

# "Answer in digits." because SmolLM2-135M's answer to the bare question is one 0.38-nat flip
# from "The answer is "2"", within what another kernel build moves its logits; with it, no
# branch under 1.25 nats lacks the 4 (tests/components/workers/test_healthcheck.py).
QUESTION = "What is 2 + 2? Answer in digits."
# A 4 that is not part of another number ("14", "40" fail), or the word.
ANSWER = re.compile(r"(?<!\d)4(?!\d)|\bfour\b", re.IGNORECASE)


class ProbeError(Exception):
    pass


def request(url: str, timeout: float, body: dict[str, object] | None = None, api_key: str | None = None) -> bytes:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method="POST" if data else "GET")
    if data:
        req.add_header("Content-Type", "application/json")
    if api_key:
        req.add_header("Authorization", f"Bearer {api_key}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            answer: bytes = resp.read()
            return answer
    except urllib.error.HTTPError as err:
        raise ProbeError(f"{url} answered HTTP {err.code}") from None
    except TimeoutError:
        raise ProbeError(f"{url} timed out after {timeout:g}s") from None
    except urllib.error.URLError as err:
        reason = err.reason
        if isinstance(reason, (socket.timeout, TimeoutError)):
            raise ProbeError(f"{url} timed out after {timeout:g}s") from None
        raise ProbeError(f"{url} unreachable: {reason}") from None
    except (ConnectionError, OSError) as err:
        raise ProbeError(f"{url} failed: {err}") from None


def check_health(base: str, timeout: float) -> None:
    request(f"{base}/health", timeout)


def probe_model(base: str, model: str, timeout: float, api_key: str | None) -> str:
    """Returns the model's answer; raises ProbeError unless it contains a 4."""
    body = {
        "model": model,
        "messages": [{"role": "user", "content": QUESTION}],
        "temperature": 0,
        "max_tokens": 32,
    }
    raw = request(f"{base}/v1/chat/completions", timeout, body, api_key)
    try:
        answer = json.loads(raw)["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise ProbeError(f"malformed completion response: {raw[:120]!r}") from None
    if not isinstance(answer, str) or not ANSWER.search(answer):
        raise ProbeError(f"wrong answer to {QUESTION!r}: {str(answer)[:120]!r}")
    return answer


def read_key(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read().strip() or None
    except FileNotFoundError:
        return None


def probe_due(state_file: str, every: float, now: float) -> bool:
    try:
        return now - os.stat(state_file).st_mtime >= every
    except FileNotFoundError:
        return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="worker base URL")
    parser.add_argument("--model", required=True, help="served model name")
    parser.add_argument("--timeout", type=float, default=15.0, help="seconds per HTTP request")
    parser.add_argument("--probe-every", type=float, default=600.0, help="seconds between model probes")
    parser.add_argument("--api-key-file", default="/run/secrets/vllm-api-key")
    parser.add_argument("--state-file", default="/tmp/inference-stack-probe.ok")
    args = parser.parse_args(argv)
    base = args.url.rstrip("/")
    try:
        check_health(base, args.timeout)
        if not probe_due(args.state_file, args.probe_every, time.time()):
            print("healthy (/health ok; model probe passed recently)")
            return 0
        with contextlib.suppress(FileNotFoundError):
            os.remove(args.state_file)
        answer = probe_model(base, args.model, args.timeout, read_key(args.api_key_file))
    except ProbeError as failure:
        print(f"unhealthy: {failure}")
        return 1
    with open(args.state_file, "w", encoding="utf-8") as handle:
        handle.write(f"{time.time():.0f}\n")
    print(f"healthy (model probe answered {answer.strip()[:40]!r})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
