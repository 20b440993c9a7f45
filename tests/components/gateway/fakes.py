"""Fake vLLM workers and a small HTTP client for the gateway tests. Stdlib only.

`FakeWorker` answers any path: a JSON echo (which worker, what it saw, the body's sha256) after
a fixed delay, or, for a body with `"stream": true`, an SSE stream of `chunks` events `gap`
seconds apart whose send times it records, framed as `framing` says: `chunked` (what vLLM's
uvicorn sends), `close` (no length, the body ends when the connection closes) or `length` (a
Content-Length announced up front). A stream whose body has `"hold": true` waits before its
last event until the test sets `release`, so a test can keep it running for exactly as long as it
needs. `/metrics` answers vLLM's running-requests gauge (the streams still open) and records
each poll in `polls`. It runs in a thread of the test process, or as its
own process (`python -m tests.components.gateway.fakes NAME HOST DELAY`) for a test that needs
to SIGKILL it. Every address is on 127.0.0.0/8.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[3]


# vLLM 0.32's render endpoint, which vllm-router's cache_aware policy asks for a prompt's tokens.
RENDER = "/v1/chat/completions/render"


@dataclass
class Seen:
    """One request as the worker received it."""

    method: str
    path: str
    headers: dict[str, str]
    """Lowercased names; a repeated header keeps its values joined by `, `."""
    body_sha256: str
    body_bytes: int


@dataclass
class Stream:
    """One SSE stream the worker sent: `time.monotonic()` just before each event is written."""

    request_id: str
    sent: list[float] = field(default_factory=list)
    done: bool = False


@dataclass
class Poll:
    """One GET /metrics: `time.monotonic()` when it was answered, and the running count it reported."""

    at: float
    running: int


# A held stream is released by the test; this only bounds a test that failed before releasing it.
HOLD_SECONDS = 120.0


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class FakeWorker:
    def __init__(self, name: str, host: str, port: int = 0, delay: float = 0.0, answer: str = "") -> None:
        self.name = name
        self.delay = delay
        self.answer = answer
        """What the worker says in `choices[0].message.content`, as an OpenAI chat completion."""
        self.seen: list[Seen] = []
        self.streams: list[Stream] = []
        self.polls: list[Poll] = []
        self.release = threading.Event()
        """Set to let every held stream send its last event."""
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self.server = _Server((host, port), self._handler())
        self.host, self.port = host, int(self.server.server_address[1])
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def close(self) -> None:
        """Stop listening and cut every open connection (nginx keeps idle ones to reuse)."""
        self.server.shutdown()
        self.server.server_close()
        with self._lock:
            for conn in self._connections:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> FakeWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        worker = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, *args: object) -> None:
                pass

            def setup(self) -> None:
                super().setup()
                with worker._lock:
                    worker._connections.add(self.connection)

            def finish(self) -> None:
                with worker._lock:
                    worker._connections.discard(self.connection)
                with contextlib.suppress(OSError):
                    super().finish()

            def do_GET(self) -> None:
                self._answer()

            def do_POST(self) -> None:
                self._answer()

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    parts: list[bytes] = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0], 16)
                        if size == 0:
                            self.rfile.readline()
                            return b"".join(parts)
                        parts.append(self.rfile.read(size))
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _answer(self) -> None:
                body = self._body()
                if self.command == "GET" and self.path == "/metrics":
                    # vLLM's gauge of requests being generated: here, the streams still open.
                    with worker._lock:
                        running = sum(1 for s in worker.streams if not s.done)
                        worker.polls.append(Poll(time.monotonic(), running))
                    text = f'vllm:num_requests_running{{model_name="m"}} {running}.0\n'.encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "text/plain; version=0.0.4")
                    self.send_header("Content-Length", str(len(text)))
                    self.end_headers()
                    self.wfile.write(text)
                    return
                headers: dict[str, str] = {}
                for key, value in self.headers.items():
                    k = key.lower()
                    headers[k] = f"{headers[k]}, {value}" if k in headers else value
                seen = Seen(self.command, self.path, headers, hashlib.sha256(body).hexdigest(), len(body))
                with worker._lock:
                    worker.seen.append(seen)
                try:
                    request = json.loads(body) if body else {}
                except ValueError:
                    request = {}
                if isinstance(request, dict) and request.get("stream"):
                    chunks, gap = int(request.get("chunks", 5)), float(request.get("gap", 0.2))
                    framing = str(request.get("framing", "chunked"))
                    self._stream(chunks, gap, framing, headers, hold=bool(request.get("hold")))
                    return
                if seen.path == RENDER:
                    self._render(request)
                    return
                time.sleep(worker.delay)
                payload = json.dumps(
                    {
                        "worker": worker.name,
                        "path": seen.path,
                        "sha256": seen.body_sha256,
                        "bytes": seen.body_bytes,
                        "headers": headers,
                        "choices": [{"message": {"role": "assistant", "content": worker.answer}}],
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.send_header("X-Worker", worker.name)
                self.end_headers()
                self.wfile.write(payload)

            def _render(self, request: Any) -> None:
                """vLLM's chat render API (`vllm/entrypoints/scale_out/render/api_router.py`): the
                prompt's token ids (`GenerateRequest.token_ids`), here one stable id per word of
                each message, so equal histories give equal prefixes, as a tokenizer's do."""
                words = [
                    word
                    for message in (request.get("messages") or [] if isinstance(request, dict) else [])
                    for word in f"{message.get('role')}: {message.get('content')}".split()
                ]
                ids = [int.from_bytes(hashlib.sha256(w.encode()).digest()[:3], "big") for w in words] or [0]
                payload = json.dumps({"request_id": "render", "token_ids": ids}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def _stream(self, chunks: int, gap: float, framing: str, headers: dict[str, str], hold: bool) -> None:
                stream = Stream(headers.get("x-request-id", ""))
                with worker._lock:
                    worker.streams.append(stream)
                events = [
                    f"data: {json.dumps({'i': i, 'worker': worker.name}) if i < chunks else '[DONE]'}\n\n".encode()
                    for i in range(chunks + 1)
                ]
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                if framing == "chunked":
                    self.send_header("Transfer-Encoding", "chunked")
                elif framing == "length":
                    self.send_header("Content-Length", str(sum(map(len, events))))
                elif framing == "close":
                    self.send_header("Connection", "close")
                    self.close_connection = True
                else:
                    raise ValueError(f"unknown framing {framing!r}")
                self.send_header("X-Worker", worker.name)
                self.end_headers()
                self.wfile.flush()
                for i, event in enumerate(events):
                    if i:
                        time.sleep(gap)
                    if hold and i == chunks:
                        worker.release.wait(HOLD_SECONDS)
                    stream.sent.append(time.monotonic())
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event) if framing == "chunked" else event)
                    self.wfile.flush()
                if framing == "chunked":
                    self.wfile.write(b"0\r\n\r\n")
                    self.wfile.flush()
                stream.done = True

        return Handler


@contextlib.contextmanager
def worker_process(name: str, host: str, delay: float = 0.0) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """A FakeWorker in its own process, to be SIGKILLed; yields the process and its port."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.components.gateway.fakes", name, host, str(delay)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline())
        yield process, port
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def call(
    base: str,
    path: str,
    *,
    method: str = "POST",
    key: str | None = None,
    body: bytes | dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> Reply:
    """One request on a fresh connection. The path goes out exactly as given (no normalising)."""
    host, port = base.removeprefix("http://").split(":")
    sent = dict(headers or {})
    if key is not None:
        sent["Authorization"] = f"Bearer {key}"
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    if data is not None:
        sent.setdefault("Content-Type", "application/json")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request(method, path, body=data, headers=sent)
        response = conn.getresponse()
        return Reply(response.status, response.headers, response.read())
    finally:
        conn.close()


def read_sse(
    base: str, path: str, *, key: str, body: dict[str, Any], headers: dict[str, str] | None = None, timeout: float = 10
) -> Iterator[tuple[float, dict[str, Any] | str]]:
    """POST and yield `(time.monotonic() at arrival, event data)` for each SSE event as it arrives.
    It accepts gzip as the OpenAI client (httpx) does, and inflates what has arrived so far."""
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        sent = {"Authorization": f"Bearer {key}", "Content-Type": "application/json", "Accept-Encoding": "gzip"}
        conn.request("POST", path, body=json.dumps(body).encode(), headers={**sent, **(headers or {})})
        response = conn.getresponse()
        if response.status != 200:
            raise AssertionError(f"stream answered {response.status}: {response.read()[:500]!r}")
        encoding = response.getheader("Content-Encoding")
        if encoding not in (None, "gzip"):
            raise AssertionError(f"stream came {encoding}-encoded")
        inflate = zlib.decompressobj(16 + zlib.MAX_WBITS) if encoding == "gzip" else None
        buffer = b""
        while True:
            data = response.read1(65536)
            arrived = time.monotonic()
            if not data:
                return
            buffer += inflate.decompress(data) if inflate else data
            while b"\n\n" in buffer:
                event, buffer = buffer.split(b"\n\n", 1)
                text = event.decode().removeprefix("data: ")
                yield arrived, (text if text == "[DONE]" else json.loads(text))
    finally:
        conn.close()


def main() -> None:
    name, host, delay = sys.argv[1], sys.argv[2], float(sys.argv[3])
    worker = FakeWorker(name, host, delay=delay)
    print(worker.port, flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
