"""A Prometheus scrape target on a free loopback port, serving text format 0.0.4, and the text of
one histogram series in that format."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@contextlib.contextmanager
def served_exposition(render: Callable[[int], str]) -> Iterator[str]:
    """Serve `render(n)` on the n-th scrape (from 1); yields `host:port`."""
    scrapes = 0
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            nonlocal scrapes
            with lock:
                scrapes += 1
                body = render(scrapes).encode()
            # A scrape in flight when the test stops Prometheus has nobody left to read it.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def histogram_text(name: str, labels: Mapping[str, str], buckets: Sequence[tuple[str, float]], total: float) -> str:
    """`# TYPE` and samples of one histogram series: `buckets` are (`le`, cumulative count) in
    order, ending with `+Inf`; `total` is its `_sum`."""
    assert buckets and buckets[-1][0] == "+Inf", buckets

    def series(suffix: str, extra: Mapping[str, str]) -> str:
        merged = {**labels, **extra}
        return f"{name}{suffix}{{" + ",".join(f'{k}="{v}"' for k, v in sorted(merged.items())) + "}"

    lines = [f"# TYPE {name} histogram"]
    lines += [f"{series('_bucket', {'le': le})} {count!r}" for le, count in buckets]
    lines += [f"{series('_count', {})} {float(buckets[-1][1])!r}", f"{series('_sum', {})} {total!r}"]
    return "\n".join(lines) + "\n"
