"""Time to first token and throughput added by the gateway, against direct calls and LiteLLM.

    .venv/bin/python benchmarks/gateway.py --litellm .cache/bench-venv/bin/litellm

Three paths to the same fake OpenAI workers, at 1, 16 and 64 concurrent streams, in one run:

- direct: the client round-robins the workers itself (the baseline);
- gateway: Debian's nginx on the config `render_nginx_conf` generates, run unmodified by the
  tests' harness (tools/local_nginx.py), with a client key and a rate limit too high to bite;
- litellm: LiteLLM's proxy (`litellm --config`, a subprocess from its own venv, `make bench`
  installs benchmarks/requirements.txt there) with the workers as `openai/` backends and a
  master key.

The workers are this file's own streaming fake (stdlib asyncio, one process per loopback
address 127.0.0.2-4): a role chunk and the first token at once, then one `chat.completion.chunk`
every few ms on a fixed timeline from the request, so the numbers measure the proxies, not a
model. The client is stdlib asyncio on raw sockets, one keep-alive connection per stream, each
stream sending its next request when the last one ends (a closed loop, so any latency a proxy adds
to a whole response shows as fewer requests per second); the streams start spread over one
response time. TTFT is from the request's first byte sent to the first non-empty `content`
received; "added" is a path's TTFT minus direct's in the same repetition and at the same
concurrency. Requests per second is the sum of each stream's completion rate. Each cell runs for
a fixed time after a warm-up that is not counted, every response is checked token by token, and
a cell during which other processes on the machine used CPU is measured again while the run
still fits its time budget (the cores they used are reported either way).

Needs root (nginx's private mount namespace), and runs everything in a private network namespace
that has only loopback, so no traffic can leave 127.0.0.0/8 and no other process's ports matter.
Results go to docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import report, results
from components.gateway import members
from components.gateway.nginx import Pool, Route, render_clients_map, render_nginx_conf, render_worker_auth
from stacks.config import GatewayConfig, RateLimit
from tools.local_nginx import Nginx, run_nginx
from tools.processes import stop as stop_process

ROOT = Path(__file__).resolve().parent.parent
NETNS_MARK = "INFERENCE_STACK_BENCH_NETNS"
CLIENT_KEY = "sk-bench-client-0123456789abcdef"
WORKER_KEY = "bench-worker-key-0123456789abcdef"
MODEL = "bench"
WORKER_PORT = 8000
GATEWAY_PORT = 8080
LITELLM_PORT = 4000
PATHS = ("direct", "gateway", "litellm")
FIRST_CONTENT = re.compile(rb'"content":\s*"(?!")')
TOKENS = re.compile(rb'"content":\s*"([^"]+)"')


# --- the fake worker ---------------------------------------------------------------------------


def sse_chunk(event: dict[str, object] | str) -> bytes:
    """One SSE event as one HTTP/1.1 chunk, as vLLM sends them."""
    data = event if isinstance(event, str) else json.dumps(event, separators=(",", ":"))
    payload = f"data: {data}\n\n".encode()
    return f"{len(payload):x}\r\n".encode() + payload + b"\r\n"


def completion_chunk(delta: dict[str, str], finish: str | None = None) -> dict[str, object]:
    return {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": MODEL,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }


def expected_tokens(count: int) -> list[bytes]:
    return [f" t{i:03d}".encode() for i in range(count)]


class FakeWorker(asyncio.Protocol):
    """A keep-alive HTTP/1.1 connection to an OpenAI-compatible worker that streams fixed tokens."""

    def __init__(self, tokens: list[bytes], delay: float, address: str) -> None:
        # X-Worker: the benchmark checks that the gateway reaches every worker it admitted.
        self.head = (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
            b"X-Worker: %s\r\nTransfer-Encoding: chunked\r\n\r\n" % address.encode()
        )
        self.role = sse_chunk(completion_chunk({"role": "assistant", "content": ""}))
        self.tokens = [sse_chunk(completion_chunk({"content": t.decode()})) for t in tokens]
        self.end = sse_chunk(completion_chunk({}, "stop")) + sse_chunk("[DONE]") + b"0\r\n\r\n"
        self.delay = delay
        self.start = 0.0
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.auth = f"authorization: bearer {WORKER_KEY}\r\n".encode()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = self.buffer[: end + 2].lower()
        length = 0
        at = head.find(b"\r\ncontent-length:")
        if at >= 0:
            length = int(head[at + 17 : head.index(b"\r\n", at + 2)])
        if len(self.buffer) < end + 4 + length:
            return
        self.buffer = self.buffer[end + 4 + length :]
        assert self.transport is not None
        if not head.startswith(b"post /v1/chat/completions ") or self.auth not in head:
            body = b'{"error":{"message":"unknown path or worker key"}}'
            self.transport.write(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
            return
        self.transport.write(self.head + self.role)
        self.transport.write(self.tokens[0])
        loop = asyncio.get_running_loop()
        self.start = loop.time()
        loop.call_at(self.start + self.delay, self.send, 1)

    def send(self, index: int) -> None:
        # On a fixed timeline from the request, as a decode loop's steps: a write that wakes
        # a proxy (which may run first on a busy core) must not push every later token back.
        assert self.transport is not None
        if self.transport.is_closing():
            return
        if index < len(self.tokens):
            self.transport.write(self.tokens[index])
            asyncio.get_running_loop().call_at(self.start + (index + 1) * self.delay, self.send, index + 1)
        else:
            self.transport.write(self.end)


async def serve_worker(host: str, port: int, tokens: int, delay: float) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: FakeWorker(expected_tokens(tokens), delay, host), host, port, backlog=1024, reuse_address=True
    )
    stop = loop.create_future()
    loop.add_signal_handler(signal.SIGTERM, stop.set_result, None)
    async with server:
        await stop


# --- the load generator ------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    request: bytes


def chat_request(host: str, port: int, path: str, key: str, tokens: int) -> Target:
    body = json.dumps(
        {
            "model": MODEL,
            "messages": [{"role": "user", "content": "Count."}],
            "stream": True,
            "max_tokens": tokens,
        },
        separators=(",", ":"),
    ).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nAccept: text/event-stream\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return Target(host, port, head.encode() + body)


@dataclass
class Result:
    sent: float
    first: float
    done: float
    ok: bool


class Stream(asyncio.Protocol):
    """One keep-alive client connection, one request at a time; a minimal HTTP/1.1 reader that
    de-chunks the body and stamps the arrival of the first non-empty `content`."""

    def __init__(self, expected: list[bytes]) -> None:
        self.expected = expected
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.waiter: asyncio.Future[Result] | None = None
        self.raw = b""
        self.head_done = False
        self.status = 0
        self.worker = ""
        self.chunked = False
        self.length = 0
        self.body = bytearray()
        self.sent = 0.0
        self.first = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("connection closed mid-response"))

    def request(self, payload: bytes) -> asyncio.Future[Result]:
        assert self.transport is not None and self.waiter is None
        self.waiter = asyncio.get_running_loop().create_future()
        self.raw, self.head_done, self.body, self.first = b"", False, bytearray(), 0.0
        self.sent = time.perf_counter()
        self.transport.write(payload)
        return self.waiter

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        self.raw += data
        if not self.head_done:
            end = self.raw.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.raw[:end].lower()
            self.status = int(head[9:12])
            at = head.find(b"\r\nx-worker:")
            self.worker = head[at + 11 :].split(b"\r\n", 1)[0].strip().decode() if at >= 0 else ""
            self.chunked = b"\r\ntransfer-encoding: chunked" in head
            at = head.find(b"\r\ncontent-length:")
            self.length = int(head[at + 17 :].split(b"\r\n", 1)[0]) if at >= 0 else 0
            self.raw = self.raw[end + 4 :]
            self.head_done = True
        complete = self._dechunk() if self.chunked else self._plain()
        if not self.first and FIRST_CONTENT.search(self.body):
            self.first = now
        if complete:
            self._finish(now)

    def _plain(self) -> bool:
        self.body += self.raw
        self.raw = b""
        return len(self.body) >= self.length

    def _dechunk(self) -> bool:
        while True:
            line_end = self.raw.find(b"\r\n")
            if line_end < 0:
                return False
            size = int(self.raw[:line_end].split(b";", 1)[0], 16)
            if size == 0:
                if self.raw.find(b"\r\n\r\n", line_end) < 0:  # trailers end with an empty line
                    return False
                self.raw = b""
                return True
            if len(self.raw) < line_end + 2 + size + 2:
                return False
            self.body += self.raw[line_end + 2 : line_end + 2 + size]
            self.raw = self.raw[line_end + 2 + size + 2 :]

    def _finish(self, now: float) -> None:
        ok = self.status == 200 and bool(self.first) and TOKENS.findall(self.body) == self.expected
        waiter, self.waiter = self.waiter, None
        assert waiter is not None
        waiter.set_result(Result(self.sent, self.first or now, now, ok))


@dataclass
class Cell:
    path: str
    streams: int
    ttft_ms: list[float]
    request_ms: float
    """Mean time from sending a request to its last byte."""
    rps: float
    errors: int
    client_cpu: float
    ours: float = 0.0
    """CPU cores this benchmark's processes (client, workers, proxies) used during the cell."""
    others: float = 0.0
    """CPU cores that processes outside this benchmark used during the cell (a shared machine)."""
    others_per_attempt: list[float] = field(default_factory=list)
    """`others` of every measurement of this cell, the kept one last."""

    def p50(self) -> float:
        return statistics.median(self.ttft_ms)

    def record(self) -> dict[str, object]:
        """The cell as the results file keeps it (the TTFT samples as their quantiles)."""
        return {
            "path": self.path,
            "streams": self.streams,
            "p50_ms": round(self.p50(), 4),
            "p99_ms": round(self.p99(), 4),
            "request_ms": round(self.request_ms, 3),
            "rps": round(self.rps, 3),
            "n": len(self.ttft_ms),
            "errors": self.errors,
            "cores": {
                "client": round(self.client_cpu, 3),
                "ours": round(self.ours, 3),
                "others": round(self.others, 3),
            },
            "others_per_attempt": [round(o, 3) for o in self.others_per_attempt],
        }

    def p99(self) -> float:
        return statistics.quantiles(self.ttft_ms, n=100, method="inclusive")[98]


async def run_cell(
    path: str,
    targets: list[Target],
    streams: int,
    warmup: float,
    duration: float,
    expected: list[bytes],
    spread: float = 0.0,
) -> Cell:
    loop = asyncio.get_running_loop()
    start = time.perf_counter()
    warm_end, end = start + warmup, start + warmup + duration
    turn = itertools.count()
    results: list[Result] = []
    rates: list[float] = []
    errors = 0

    async def client(number: int) -> None:
        nonlocal errors
        connections: dict[int, Stream] = {}
        done: list[float] = []
        # Streams start evenly spread over one response time and keep their phase (the workers
        # keep a fixed timeline), so requests arrive spread out instead of all 64 at once.
        await asyncio.sleep(number * spread / streams)
        while time.perf_counter() < end:
            index = next(turn) % len(targets)
            target = targets[index]
            stream = connections.get(index)
            if stream is None or stream.closed:
                _, stream = await loop.create_connection(lambda: Stream(expected), target.host, target.port)
                connections[index] = stream
            try:
                result = await stream.request(target.request)
            except ConnectionError:
                errors += 1
                continue
            if result.sent >= warm_end:
                results.append(result)
            if result.ok and warm_end <= result.done <= end:
                done.append(result.done)
        for stream in connections.values():
            if stream.transport is not None:
                stream.transport.close()
        # This stream's rate between its first and last completion in the window: counting
        # completions in a fixed window instead would quantize to one request per stream (2% at 64).
        rates.append((len(done) - 1) / (done[-1] - done[0]) if len(done) > 2 else len(done) / duration)

    cpu = time.process_time()
    await asyncio.wait_for(asyncio.gather(*(client(i) for i in range(streams))), timeout=warmup + duration + 120)
    client_cpu = (time.process_time() - cpu) / (time.perf_counter() - start)
    errors += sum(not r.ok for r in results)
    good = [r for r in results if r.ok]
    ttft = [(r.first - r.sent) * 1000 for r in good]
    if len(ttft) < 2:
        raise RuntimeError(f"{path} at {streams} streams: {len(ttft)} good responses, {errors} errors")
    request_ms = statistics.mean((r.done - r.sent) * 1000 for r in good)
    return Cell(path, streams, ttft, request_ms, sum(rates), errors, client_cpu)


# --- the three paths ---------------------------------------------------------------------------


def wait_port(host: str, port: int, process: subprocess.Popen[bytes], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not listen on {host}:{port} in {timeout:.0f} s") from None
            time.sleep(0.05)


def stop(process: subprocess.Popen[bytes]) -> None:
    stop_process(process, timeout=15)


@contextmanager
def workers(addresses: list[str], tokens: int, delay: float) -> Iterator[None]:
    command = [sys.executable, str(Path(__file__).resolve()), "--tokens", str(tokens)]
    processes = [
        subprocess.Popen([*command, "--token-delay-ms", str(delay * 1000), "--serve-worker", address])
        for address in addresses
    ]
    try:
        for address, process in zip(addresses, processes, strict=True):
            wait_port(address, WORKER_PORT, process, f"fake worker {address}", 15)
        yield
    finally:
        for process in processes:
            stop(process)


def worker_names(count: int) -> dict[str, str]:
    """Upstream name (as the stack names worker containers) -> loopback address."""
    return {f"bench-w{i}": f"127.0.0.{i + 2}" for i in range(count)}


@contextmanager
def litellm_proxy(binary: Path, tmp: Path, addresses: list[str]) -> Iterator[Callable[[], None]]:
    """Starts LiteLLM's proxy and yields the wait for it to serve: it takes long to import, so the
    caller starts the rest meanwhile."""
    config = {
        "model_list": [
            {
                "model_name": MODEL,
                "litellm_params": {
                    "model": f"openai/{MODEL}",
                    "api_base": f"http://{address}:{WORKER_PORT}/v1",
                    "api_key": WORKER_KEY,
                },
                # Priced, so LiteLLM's cost tracking does not look up an unknown model per request.
                "model_info": {"input_cost_per_token": 0, "output_cost_per_token": 0},
            }
            for address in addresses
        ],
        "general_settings": {"master_key": CLIENT_KEY},
    }
    path = tmp / "litellm.yaml"
    path.write_text(json.dumps(config, indent=2))  # JSON is YAML
    # No proxy variables: every hop stays on loopback, as in the other two paths.
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env |= {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR", "NO_DOCS": "True"}
    log = tmp / "litellm.log"
    command = [str(binary), "--config", str(path), "--host", "127.0.0.1", "--port", str(LITELLM_PORT)]
    command += ["--num_workers", str(os.cpu_count() or 1)]
    # uvicorn kills a worker that does not answer its supervisor's ping within 5 s; importing
    # LiteLLM on a busy 2-core machine takes longer, so the workers would be killed and restarted
    # forever. The ping only matters for a hung worker, which a benchmark run does not wait for.
    command += ["--timeout_worker_healthcheck", "120"]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    deadline = time.monotonic() + 300

    def ready() -> None:
        url = f"http://127.0.0.1:{LITELLM_PORT}/health/liveliness"
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"litellm exited with {process.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with direct.open(url, timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"litellm did not start:\n{log.read_text()[-3000:]}") from None
                time.sleep(0.2)

    try:
        yield ready
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)  # its own session: the uvicorn workers too
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=5)


def gateway_config(upstreams: dict[str, str]) -> tuple[GatewayConfig, Pool, str, dict[str, str]]:
    # The stack's defaults, with a rate limit that cannot bite at these rates.
    gw = GatewayConfig(rate_limit=RateLimit(requests_per_second=100000, burst=100000))
    pool = Pool(group="bench-chat", servers=[f"{name}:{WORKER_PORT}" for name in upstreams])
    conf = render_nginx_conf(gw, [Route(model=MODEL, stable=pool)], listen_port=GATEWAY_PORT)
    secrets = {
        "clients.map": render_clients_map({"bench": CLIENT_KEY}),
        "worker-auth.conf": render_worker_auth(WORKER_KEY),
    }
    return gw, pool, conf, secrets


def admit(gateway: Nginx, gw: GatewayConfig, pool: Pool) -> None:
    """Each worker joins as a deploy's admit step makes it join: `members.sh admit` with the
    arguments of the stack's per-worker command (`members.admit_argv`), run in nginx's mount
    namespace as `docker exec` runs it in the gateway container. nginx starts with no member, as a
    new gateway does."""
    for server in pool.servers:
        argv = members.admit_argv("gateway", pool.group, server, gw)
        script_args = argv[argv.index(members.SCRIPT_PATH) + 1 :]
        # The script on stdin: nginx's namespace has a private /tmp, where a checkout may live.
        command = ["nsenter", "--target", str(gateway.process.pid), "--mount", "sh", "-s", "--", *script_args]
        done = subprocess.run(command, input=members.script_source(), capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"members.sh admit {server} exited with {done.returncode}: {done.stderr}")


# --- results ------------------------------------------------------------------------------------


def nginx_version() -> str:
    found = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip()
    version = found.removeprefix("nginx version: ").removeprefix("nginx/")
    package = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "nginx"], capture_output=True, text=True)
    return f"{version} (Debian {package.stdout})" if package.returncode == 0 and package.stdout else version


def litellm_version(binary: Path) -> str:
    python = binary.parent / "python"
    code = "import importlib.metadata as m; print(m.version('litellm'))"
    return subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True).stdout.strip()


# --- main ----------------------------------------------------------------------------------------


def cpu_sample() -> tuple[int, int]:
    """(user+nice+system jiffies of the whole machine, utime+stime of this process tree)."""
    parents: dict[int, int] = {}
    used: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fields = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry.name)] = int(fields[1])
        used[int(entry.name)] = int(fields[11]) + int(fields[12])
    ours, mine = 0, os.getpid()
    for pid, jiffies in used.items():
        ancestor = pid
        while ancestor > 1 and ancestor != mine:
            ancestor = parents.get(ancestor, 0)
        if ancestor == mine:
            ours += jiffies
    return results.busy_jiffies(), ours


async def smoke(path: str, targets: list[Target], expected: list[bytes], reach: set[str]) -> None:
    """Every path answers in full, at least three times per worker, before anything is timed; a
    path whose responses name their worker (X-Worker) must reach each of `reach`."""
    loop = asyncio.get_running_loop()
    seen = set()
    for target in targets:
        _, stream = await loop.create_connection(lambda: Stream(expected), target.host, target.port)
        for _ in range(3 * max(1, len(reach) // len(targets))):
            result = await asyncio.wait_for(stream.request(target.request), timeout=60)
            if not result.ok:
                raise RuntimeError(
                    f"{path}: bad response from {target.host}:{target.port}: {stream.status} {stream.body[:500]!r}"
                )
            seen.add(stream.worker)
        assert stream.transport is not None
        stream.transport.close()
    if not reach <= seen:
        raise RuntimeError(f"{path} reached the workers {sorted(seen)}, not all of {sorted(reach)}")


async def measure(
    args: argparse.Namespace, targets: dict[str, list[Target]], reach: dict[str, set[str]]
) -> list[dict[tuple[str, int], Cell]]:
    expected = expected_tokens(args.tokens)
    for path, path_targets in targets.items():
        await smoke(path, path_targets, expected, reach[path])
    tick = os.sysconf("SC_CLK_TCK")
    started, cell_seconds = time.monotonic(), args.warmup + args.duration + 0.5
    cells_left = args.repeat * len(args.streams) * len(args.paths)
    runs: list[dict[tuple[str, int], Cell]] = []
    for repeat in range(args.repeat):
        run: dict[tuple[str, int], Cell] = {}
        for streams in args.streams:
            turn = repeat % len(args.paths)
            for path in args.paths[turn:] + args.paths[:turn]:  # no path always goes first
                cells_left -= 1
                tries: list[float] = []
                for attempt in itertools.count():
                    gc.collect()
                    gc.disable()
                    (busy, ours), start = cpu_sample(), time.monotonic()
                    spread = args.tokens * args.token_delay_ms / 1000
                    cell = await run_cell(path, targets[path], streams, args.warmup, args.duration, expected, spread)
                    (busy_end, ours_end), elapsed = cpu_sample(), time.monotonic() - start
                    gc.enable()
                    cell.ours = (ours_end - ours) / tick / elapsed
                    cell.others = max(0, (busy_end - busy) - (ours_end - ours)) / tick / elapsed
                    tries.append(cell.others)
                    print(
                        f"run {repeat + 1} streams {streams:3d} {path:8s} p50 {cell.p50():7.2f} ms"
                        f" p99 {cell.p99():7.2f} ms request {cell.request_ms:7.2f} ms {cell.rps:6.1f} req/s"
                        f" n {len(cell.ttft_ms):5d} errors {cell.errors}"
                        f" cores: client {cell.client_cpu:.2f} ours {cell.ours:.2f} others {cell.others:.2f}",
                        file=sys.stderr,
                        flush=True,
                    )
                    await asyncio.sleep(0.3)
                    # Re-measure only while the whole run still fits in the budget.
                    spare = args.budget - (time.monotonic() - started) - (cells_left + 1) * cell_seconds
                    if cell.others <= args.max_others or attempt >= args.retries or spare < 0:
                        break
                    print("  other processes were busy: measuring this cell again", file=sys.stderr, flush=True)
                    await asyncio.sleep(2)
                cell.others_per_attempt = tries
                run[(path, streams)] = cell
        runs.append(run)
    return runs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--litellm", type=Path, default=ROOT / ".cache/bench-venv/bin/litellm")
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds per cell, not counted")
    parser.add_argument("--duration", type=float, default=6.0, help="counted seconds per cell")
    parser.add_argument("--workers", type=int, default=3, help="fake worker processes (127.0.0.2, .3, ...)")
    parser.add_argument("--tokens", type=int, default=20)
    parser.add_argument("--token-delay-ms", type=float, default=5.0)
    parser.add_argument(
        "--max-others",
        type=float,
        default=0.15,
        help="CPU cores other processes may use during a cell before it is retried",
    )
    parser.add_argument("--retries", type=int, default=2, help="re-measurements of a cell disturbed by other processes")
    parser.add_argument(
        "--budget", type=float, default=270, help="seconds of measuring, re-measured cells included, not to exceed"
    )
    parser.add_argument("--paths", nargs="+", choices=PATHS, default=list(PATHS), help="direct is always measured")
    parser.add_argument("--results", type=Path, help="write the results file (benchmarks/report.py renders it)")
    parser.add_argument("--serve-worker", metavar="ADDRESS", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.paths = ["direct", *(p for p in PATHS[1:] if p in args.paths)]
    delay = args.token_delay_ms / 1000

    if args.serve_worker:
        gc.freeze()
        asyncio.run(serve_worker(args.serve_worker, WORKER_PORT, args.tokens, delay))
        return 0
    if os.environ.get(NETNS_MARK) != "1":
        if os.geteuid() != 0:
            print("benchmarks/gateway.py needs root: private network and mount namespaces for nginx", file=sys.stderr)
            return 2
        if "litellm" in args.paths and not args.litellm.exists():
            print(
                f"{args.litellm} is missing: `make bench` installs benchmarks/requirements.txt there", file=sys.stderr
            )
            return 2
        # Only loopback exists in there: nothing leaves 127.0.0.0/8, no port clashes with the host.
        script = 'ip link set lo up && exec "$@"'
        command = ["unshare", "--net", "sh", "-c", script, "sh", sys.executable, *sys.argv]
        os.execvpe("unshare", command, {**os.environ, NETNS_MARK: "1"})

    upstreams = worker_names(args.workers)
    addresses = list(upstreams.values())
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="gateway-bench-") as tmp, ExitStack() as stack:
        if "litellm" in args.paths:
            litellm_ready = stack.enter_context(litellm_proxy(args.litellm, Path(tmp), addresses))
        stack.enter_context(workers(addresses, args.tokens, delay))
        gw, pool, conf, secrets = gateway_config(upstreams)
        gateway = stack.enter_context(run_nginx(Path(tmp), conf, secrets, upstreams, GATEWAY_PORT))
        admit(gateway, gw, pool)
        print(f"workers and gateway ready after {time.monotonic() - started:.1f} s", file=sys.stderr, flush=True)
        if "litellm" in args.paths:
            litellm_ready()
            print(f"litellm ready after {time.monotonic() - started:.1f} s", file=sys.stderr, flush=True)
        path = "/v1/chat/completions"
        targets = {
            "direct": [chat_request(a, WORKER_PORT, path, WORKER_KEY, args.tokens) for a in addresses],
            "gateway": [chat_request("127.0.0.1", GATEWAY_PORT, path, CLIENT_KEY, args.tokens)],
            "litellm": [chat_request("127.0.0.1", LITELLM_PORT, path, CLIENT_KEY, args.tokens)],
        }
        # LiteLLM does not pass the workers' headers on.
        reach = {"direct": set(addresses), "gateway": set(addresses), "litellm": set()}
        targets = {p: t for p, t in targets.items() if p in args.paths}
        runs = asyncio.run(measure(args, targets, reach))
    litellm = litellm_version(args.litellm) if "litellm" in args.paths else "not run"
    tools = {"nginx": nginx_version(), "litellm": litellm}
    data = results.record(
        "gateway",
        machine=results.machine(**tools),
        settings={
            "workers": args.workers,
            "tokens": args.tokens,
            "token_delay_ms": args.token_delay_ms,
            "streams": args.streams,
            "paths": args.paths,
            "repeat": args.repeat,
            "warmup_s": args.warmup,
            "duration_s": args.duration,
            "max_others": args.max_others,
            "retries": args.retries,
            "budget_s": args.budget,
        },
        seconds=round(time.monotonic() - started, 1),
        runs=[[cell.record() for cell in run.values()] for run in runs],
    )
    if args.results:
        results.write(args.results, data)
    print(report.gateway_section(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
