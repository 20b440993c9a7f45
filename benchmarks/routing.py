"""Multi-turn TTFT by balance mode, with real vLLM workers and the real prefix-cache router.

    .venv/bin/python benchmarks/routing.py --results benchmarks/results/routing.json

Three vLLM 0.32 CPU workers (SmolLM2-135M from `make test-model`, its venv) on 127.0.0.1, each
with a KV cache of `--kv-tokens` tokens (`--kv-cache-memory-bytes`): about a third of one cell's
working set, so the three together hold all of it. In front of them, four paths, each the config
the program generates: Debian's nginx with `balance` `least_conn`, `round_robin` and `session`
(one nginx each), and nginx with `cache_aware`, whose upstream is vllm-router 0.1.17 (from
`make router-venv`, started by the image's start script with `routing.command`).

Workload: per cell, `--conversations` conversations, each opening with its own history of about
1,100 tokens (distinct from its first token: no two conversations share a cache block), then
`--turns` turns, each adding a short user message and the model's short answer to it. Turns of
different conversations interleave: a client stream takes the next conversation whose previous
turn is done. Every request carries `X-Session-Id` (only `session` reads it). Cells run one
after another, the paths in a rotating order within each concurrency, so each path meets the
same machine; each cell's conversations are new, so no path profits from another's cache.

Reported per path and concurrency: TTFT p50/p95/p99 (first non-empty content of the stream),
end-to-end latency, requests per second, errors, and each worker's prefix-cache hit rate over
the cell from its own `vllm:prefix_cache_{hits,queries}_total`. Then the router hop on a
cache-neutral workload: short unique prompts through nginx `least_conn` and through nginx and the
router, alternated request by request at concurrency 1; the added TTFT is the median of the
paired differences.

Needs root (nginx's private mount namespace). Every request goes to 127.0.0.0/8; every loop is
bounded in requests and by `--budget-seconds`.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import report, results
from benchmarks.gateway import admit, nginx_version
from components.gateway import routing
from components.gateway.nginx import Pool, Route, render_clients_map, render_nginx_conf, render_worker_auth
from stacks.config import GatewayConfig, RateLimit, RouterConfig
from tools.local_nginx import free_port, run_nginx
from tools.processes import stop as stop_process

ROOT = Path(__file__).resolve().parent.parent
VLLM = ROOT / ".cache/test-model/venv/bin/vllm"
MODEL_DIR = ROOT / ".cache/test-model/smollm2-135m"
ROUTER_BIN = ROOT / ".cache/router-venv/bin"
MODEL = "smollm2-135m"
CLIENT_KEY = "sk-bench-client-0123456789abcdef"
WORKER_KEY = "bench-worker-key-0123456789abcdef"
PATHS = ("least_conn", "round_robin", "session", "cache_aware")
ROUTER_HOST = "127.0.0.5"
# SmolLM2-135M's KV cache per token as vLLM 0.32's CPU backend counts it: it estimated 1,920
# tokens in 47,185,920 bytes (30 layers x 3 KV heads x 64 dims x K and V x bf16 is 23,040).
KV_BYTES_PER_TOKEN = 24576
MAX_MODEL_LEN = 2048
VOCABULARY = (
    "amber basin cedar delta ember fjord granite harbor island juniper kestrel lagoon meadow "
    "nectar orchard prairie quartz river summit tundra upland valley willow yarrow zephyr anchor "
    "beacon canyon dune estuary forest glacier heath inlet jetty knoll ledge marsh"
)
WORDS = VOCABULARY.split()


# --- processes ----------------------------------------------------------------------------------


def wait_http(url: str, process: subprocess.Popen[bytes], what: str, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    parts = urllib.parse.urlsplit(url)
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            conn = http.client.HTTPConnection(str(parts.hostname), parts.port, timeout=2)
            conn.request("GET", parts.path or "/")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{what} did not answer {url} in {timeout:.0f} s:\n{log.read_text()[-3000:]}")


@contextmanager
def process(argv: list[str], log: Path, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, stdin=subprocess.DEVNULL)
    try:
        yield proc
    finally:
        stop_process(proc)


def start_workers(stack: ExitStack, tmp: Path, count: int, kv_tokens: int) -> list[int]:
    ports = [free_port() for _ in range(count)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}
    env.pop("VLLM_CPU_KVCACHE_SPACE", None)  # it would override --kv-cache-memory-bytes
    procs = []
    for i, port in enumerate(ports):
        argv = [
            str(VLLM), "serve", str(MODEL_DIR), "--served-model-name", MODEL, "--host", "127.0.0.1",
            "--port", str(port), "--max-model-len", str(MAX_MODEL_LEN), "--dtype", "bfloat16", "--enforce-eager",
            "--api-key", WORKER_KEY, "--enable-scale-out",
            "--kv-cache-memory-bytes", str(kv_tokens * KV_BYTES_PER_TOKEN),
        ]  # fmt: skip
        procs.append((stack.enter_context(process(argv, tmp / f"worker-{i}.log", env)), port, tmp / f"worker-{i}.log"))
    for i, (proc, port, log) in enumerate(procs):
        wait_http(f"http://127.0.0.1:{port}/health", proc, f"worker {i}", 600, log)
    return ports


def start_router(stack: ExitStack, tmp: Path, worker_ports: list[int], config: RouterConfig) -> None:
    record = tmp / "records"
    record.mkdir()
    for port in worker_ports:
        url = f"http://127.0.0.1:{port}"
        (record / routing.member_file(url)).write_text(url + "\n")
    argv = routing.command(config, host=ROUTER_HOST, metrics_port=free_port())
    env = {**os.environ, "PATH": f"{ROUTER_BIN}:{os.environ['PATH']}", routing.MEMBERS_ENV: str(record)}
    log = tmp / "router.log"
    proc = stack.enter_context(process(["sh", str(routing.START_SCRIPT), *argv], log, env))
    wait_http(f"http://{ROUTER_HOST}:{routing.PORT}/readiness", proc, "the router", 60, log)


def start_gateway(stack: ExitStack, tmp: Path, balance: str, worker_ports: list[int]) -> str:
    """nginx on the generated config for `balance`; the workers join as members.sh admits them."""
    gw = GatewayConfig(balance=balance, rate_limit=RateLimit(requests_per_second=100000, burst=100000))  # type: ignore[arg-type]
    servers = [f"w{i}:{port}" for i, port in enumerate(worker_ports)]
    pool = Pool("bench-chat", servers, router="router" if balance == "cache_aware" else None)
    port = free_port()
    # Each nginx its own status port too: four run side by side.
    conf = render_nginx_conf(gw, [Route(model=MODEL, stable=pool)], listen_port=port, status_port=free_port())
    secrets = {
        "clients.map": render_clients_map({"bench": CLIENT_KEY}),
        "worker-auth.conf": render_worker_auth(WORKER_KEY),
    }
    hosts = {f"w{i}": "127.0.0.1" for i in range(len(worker_ports))} | {"router": ROUTER_HOST}
    nginx = stack.enter_context(run_nginx(tmp / f"nginx-{balance}", conf, secrets, hosts, port))
    if balance != "cache_aware":
        admit(nginx, gw, pool)
    return nginx.url


# --- the client ---------------------------------------------------------------------------------


@dataclass
class Outcome:
    ttft: float
    e2e: float
    status: int
    answer: str
    prompt_tokens: int = 0


def chat(url: str, messages: list[dict[str, str]], session: str, max_tokens: int, timeout: float = 300) -> Outcome:
    """One streamed chat completion; TTFT is to the first non-empty content."""
    host, port = url.removeprefix("http://").split(":")
    body = json.dumps(
        {
            "model": MODEL,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
    )
    headers = {"Authorization": f"Bearer {CLIENT_KEY}", "Content-Type": "application/json", "X-Session-Id": session}
    started = time.perf_counter()
    ttft = 0.0
    parts: list[str] = []
    prompt_tokens = 0
    try:
        conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
        conn.request("POST", "/v1/chat/completions", body=body, headers=headers)
        response = conn.getresponse()
        if response.status != 200:
            response.read()
            return Outcome(0.0, time.perf_counter() - started, response.status, "")
        for raw in response:
            line = raw.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if event.get("usage"):
                prompt_tokens = int(event["usage"]["prompt_tokens"])
            for choice in event.get("choices") or []:
                text = (choice.get("delta") or {}).get("content") or ""
                if text and not ttft:
                    ttft = time.perf_counter() - started
                parts.append(text)
        conn.close()
    except (OSError, http.client.HTTPException, json.JSONDecodeError):
        return Outcome(0.0, time.perf_counter() - started, -1, "")
    status = 200 if ttft else -2  # a stream without content is an error too
    return Outcome(ttft, time.perf_counter() - started, status, "".join(parts), prompt_tokens)


def opening(rng: random.Random, tag: str, words: int) -> str:
    # The tag first: conversations differ from their first token, so they share no cache block.
    text = " ".join(rng.choice(WORDS) for _ in range(words))
    return f"Conversation {tag}. Read these field notes, then answer briefly.\n{text}"


@dataclass
class Conversation:
    tag: str
    messages: list[dict[str, str]]
    turns_done: int = 0
    busy: bool = False


@dataclass
class Cell:
    path: str
    concurrency: int
    outcomes: list[Outcome] = field(default_factory=list)
    seconds: float = 0.0
    hit_rates: list[float | None] = field(default_factory=list)


def run_cell(
    url: str, cell: Cell, conversations: list[Conversation], turns: int, deadline: float, order: random.Random
) -> None:
    lock = threading.Lock()

    def take() -> Conversation | None:
        while time.monotonic() < deadline:
            with lock:
                open_ = [c for c in conversations if c.turns_done < turns]
                if not open_:
                    return None
                # A random one of the least advanced free conversations: turns interleave across
                # conversations, in an order no balancer can profit from (a fixed order would let
                # round_robin land every turn on its conversation's worker).
                free = [c for c in open_ if not c.busy]
                if free:
                    least = min(c.turns_done for c in free)
                    chosen = order.choice([c for c in free if c.turns_done == least])
                    chosen.busy = True
                    return chosen
            time.sleep(0.01)
        return None

    def stream() -> None:
        while (conversation := take()) is not None:
            question = f"Question {conversation.turns_done + 1}: name one word from the notes."
            messages = [*conversation.messages, {"role": "user", "content": question}]
            outcome = chat(url, messages, conversation.tag, max_tokens=8)
            with lock:
                cell.outcomes.append(outcome)
                conversation.messages = [*messages, {"role": "assistant", "content": outcome.answer or "."}]
                conversation.turns_done += 1
                conversation.busy = False

    started = time.monotonic()
    threads = [threading.Thread(target=stream) for _ in range(cell.concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    cell.seconds = time.monotonic() - started


def prefix_counters(ports: list[int]) -> list[tuple[float, float]]:
    """(queried, hit) prompt tokens of each worker, from its own /metrics."""
    found = []
    for port in ports:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
        total = {"vllm:prefix_cache_queries_total": 0.0, "vllm:prefix_cache_hits_total": 0.0}
        for line in text.splitlines():
            name = line.split("{", 1)[0].split(" ", 1)[0]
            if name in total:
                total[name] += float(line.rsplit(" ", 1)[1])
        found.append((total["vllm:prefix_cache_queries_total"], total["vllm:prefix_cache_hits_total"]))
    return found


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = q * (len(ordered) - 1)
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary(cell: Cell) -> dict[str, Any]:
    ok = [o for o in cell.outcomes if o.status == 200]
    ttfts = [o.ttft for o in ok]
    return {
        "path": cell.path,
        "concurrency": cell.concurrency,
        "requests": len(cell.outcomes),
        "errors": len(cell.outcomes) - len(ok),
        "ttft_p50": percentile(ttfts, 0.5),
        "ttft_p95": percentile(ttfts, 0.95),
        "ttft_p99": percentile(ttfts, 0.99),
        "e2e_p50": percentile([o.e2e for o in ok], 0.5),
        "e2e_p95": percentile([o.e2e for o in ok], 0.95),
        "requests_per_second": len(ok) / cell.seconds if cell.seconds else 0.0,
        "prompt_tokens_p50": percentile([float(o.prompt_tokens) for o in ok], 0.5),
        "worker_hit_rates": cell.hit_rates,
        "seconds": cell.seconds,
    }


def measure_hop(gateways: dict[str, str], requests: int, deadline: float) -> dict[str, Any]:
    """nginx alone vs nginx and the router, alternated, on short unique prompts (no prefix shared)."""
    pairs: list[tuple[float, float]] = []
    errors = 0
    for i in range(requests):
        if time.monotonic() > deadline:
            break
        got = []
        for path in ("least_conn", "cache_aware") if i % 2 == 0 else ("cache_aware", "least_conn"):
            prompt = [{"role": "user", "content": f"{random.getrandbits(64):x} hello"}]
            got.append((path, chat(gateways[path], prompt, f"hop-{i}-{path}", max_tokens=1)))
        by = dict(got)
        if all(o.status == 200 for o in by.values()):
            pairs.append((by["least_conn"].ttft, by["cache_aware"].ttft))
        else:
            errors += 1
    direct = [a for a, _ in pairs]
    routed = [b for _, b in pairs]
    return {
        "pairs": len(pairs),
        "errors": errors,
        "nginx_ttft_p50": percentile(direct, 0.5),
        "router_ttft_p50": percentile(routed, 0.5),
        "added_ttft_p50": statistics.median(b - a for a, b in pairs) if pairs else float("nan"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks/results/routing.json")
    parser.add_argument("--conversations", type=int, default=13)
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--words", type=int, default=700, help="words of each opening history (~1.5 tokens each)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--kv-tokens", type=int, default=0, help="per worker; default: a third of a cell's working set")
    parser.add_argument("--hop-requests", type=int, default=60)
    parser.add_argument("--budget-seconds", type=float, default=3600)
    parser.add_argument("--workdir", type=Path, help="keep the logs and configs here (default: a temporary directory)")
    args = parser.parse_args()
    for needed in (VLLM, ROUTER_BIN / "vllm-router"):
        if not needed.exists():
            print(f"{needed} is missing: `make test-model router-venv`", file=sys.stderr)
            return 2
    began = time.monotonic()
    deadline = began + args.budget_seconds
    rng = random.Random(18)
    with ExitStack() as stack:
        if args.workdir:
            args.workdir.mkdir(parents=True, exist_ok=True)
            tmp = args.workdir
        else:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-routing-")))
        # Estimated, not measured: ~1.6 tokens per word of the opening (the table's prompt tokens
        # p50 shows what it came to), and ~40 tokens per turn (question and answer).
        kv_tokens = args.kv_tokens
        conversation_tokens = 0
        if not kv_tokens:
            conversation_tokens = int(args.words * 1.6) + 40 * args.turns
            # vLLM refuses a cache that cannot hold one request of the longest length.
            kv_tokens = max(MAX_MODEL_LEN + 128, conversation_tokens * args.conversations // 3)
        ports = start_workers(stack, tmp, 3, kv_tokens)
        start_router(stack, tmp, ports, RouterConfig())
        gateways = {path: start_gateway(stack, tmp, path, ports) for path in PATHS}
        # Warm-up: each path once, each worker compiled its kernels.
        for path in PATHS:
            for _ in range(3):
                chat(gateways[path], [{"role": "user", "content": f"warm {random.getrandbits(32)}"}], "warm", 2)
        cells: list[dict[str, Any]] = []
        for ci, concurrency in enumerate(args.concurrency):
            order = PATHS[ci % len(PATHS) :] + PATHS[: ci % len(PATHS)]
            for path in order:
                conversations = [
                    Conversation(f"{path}-{concurrency}-{c}-{rng.getrandbits(32):x}", [])
                    for c in range(args.conversations)
                ]
                for conv in conversations:
                    conv.messages = [{"role": "user", "content": opening(rng, conv.tag, args.words)}]
                before = prefix_counters(ports)
                cell = Cell(path, concurrency)
                run_cell(gateways[path], cell, conversations, args.turns, deadline, random.Random(ci))
                after = prefix_counters(ports)
                deltas = [(a[0] - b[0], a[1] - b[1]) for a, b in zip(after, before, strict=True)]
                cell.hit_rates = [round(h / q, 4) if q else None for q, h in deltas]
                queried = sum(q for q, _ in deltas)
                row = summary(cell)
                row["hit_rate"] = round(sum(h for _, h in deltas) / queried, 4) if queried else None
                row["worker_queried_tokens"] = [int(q) for q, _ in deltas]
                cells.append(row)
                print(json.dumps(row), flush=True)
        hop = measure_hop(gateways, args.hop_requests, deadline)
        print(json.dumps({"hop": hop}), flush=True)
    data = results.record(
        "routing",
        machine=results.machine(
            vllm=version(VLLM), vllm_router=version(ROUTER_BIN / "vllm-router"), nginx=nginx_version()
        ),
        seconds=round(time.monotonic() - began, 1),
        kv_tokens_per_worker=kv_tokens,
        estimated_working_set_tokens=conversation_tokens * args.conversations,
        conversations=args.conversations,
        turns=args.turns,
        words=args.words,
        cells=cells,
        hop=hop,
    )
    results.write(args.results, data)
    print(report.routing_section(data))
    return 0


def version(binary: Path) -> str:
    """A venv's package version, from the interpreter beside the binary."""
    name = "vllm" if binary.name == "vllm" else "vllm-router"
    python = binary.with_name("python")
    code = f"import importlib.metadata as m; print(m.version({name!r}))"
    found = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=60)
    return found.stdout.strip() or "unknown"


if __name__ == "__main__":
    sys.exit(main())
