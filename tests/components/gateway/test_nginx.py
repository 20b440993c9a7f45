"""The gateway's generated nginx config, run by a real nginx against real upstream servers.

Debian's nginx 1.22 runs the config unmodified (tools/local_nginx.py). The production image is
nginx 1.28 (alpine); the config uses nothing newer than 1.22, so 1.22 checks and runs all of it.
Upstreams are fake workers on 127.0.0.2-127.0.0.9 (tests/components/gateway/fakes.py), and one
real vLLM (CPU, SmolLM2-135M) for the OpenAI client test. All traffic stays on 127.0.0.0/8.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import statistics
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from components.gateway import members
from components.gateway.members import render_members
from components.gateway.nginx import (
    CONFIG_PATH,
    Pool,
    Route,
    render_clients_map,
    render_nginx_conf,
    render_worker_auth,
)
from components.workers.files import healthcheck
from stacks.config import GatewayConfig, RateLimit
from stacks.secrets import GATE_CLIENT
from tests.components.gateway.fakes import FakeWorker, call, read_sse, worker_process
from tests.support.model_server import SERVED_MODEL_NAME, require_model_server, vllm_server
from tests.support.nginx import nginx_test, run_nginx
from tools.local_nginx import Nginx, free_port
from tools.synth import Synth

WORKER_KEY = "worker-key-0123456789abcdefXYZ"
CLIENT_KEYS = {
    "team-a": "sk-team-a-0123456789abcdef",
    "team-b": "sk-team-b-fedcba9876543210",
    GATE_CLIENT: "gate-key-0123456789abcdef",
}
KEY_A, KEY_B, GATE_KEY = CLIENT_KEYS["team-a"], CLIENT_KEYS["team-b"], CLIENT_KEYS[GATE_CLIENT]
SECRETS = {"clients.map": render_clients_map(CLIENT_KEYS), "worker-auth.conf": render_worker_auth(WORKER_KEY)}
# No rate limit in the way, except in the test about it.
OPEN = GatewayConfig(rate_limit=RateLimit(requests_per_second=100000, burst=100000))
CHAT = "/v1/chat/completions"


@contextlib.contextmanager
def gateway(root: Path, routes: list[Route], hosts: dict[str, str], gw: GatewayConfig = OPEN) -> Iterator[Nginx]:
    port = free_port()
    conf = render_nginx_conf(gw, routes, listen_port=port, status_port=free_port())
    with run_nginx(root, conf, {**SECRETS, **render_members(gw, routes)}, hosts, port) as nginx:
        yield nginx


def single(name: str, servers: list[str], model: str = "m") -> list[Route]:
    return [Route(model, Pool(name, servers))]


@contextlib.contextmanager
def one_worker(root: Path, gw: GatewayConfig = OPEN) -> Iterator[tuple[FakeWorker, Nginx]]:
    """Model `m` served by one fake worker `w` on 127.0.0.2, behind the gateway."""
    with (
        FakeWorker("w", "127.0.0.2") as w,
        gateway(root, single("p", [f"w:{w.port}"]), {"w": "127.0.0.2"}, gw) as nginx,
    ):
        yield w, nginx


def access_log(nginx: Nginx) -> list[dict[str, Any]]:
    """The JSON access-log lines nginx wrote to stdout (error-log lines on stderr are skipped)."""
    return [json.loads(line) for line in nginx.log.read_text().splitlines() if line.startswith("{")]


def wait_for(predicate: Any, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def error_code(reply: Any) -> str:
    assert reply.headers["Content-Type"] == "application/json", reply.headers
    return str(reply.json()["error"]["code"])


# 0. nginx -t on what the stacks generate ----------------------------------------------------------


def stack_conf(synth: Synth) -> str:
    confs = {k: v for k, v in synth.files().items() if k.endswith(CONFIG_PATH)}
    assert len(confs) == 1, f"expected one gateway container uploading {CONFIG_PATH}, got {sorted(confs)}"
    return next(iter(confs.values()))


def stack_members(synth: Synth) -> dict[str, str]:
    """The member files the stack's admit commands write once every worker is healthy."""
    files = {}
    for res in synth.resources:
        admit = members.parse_admit(str(res["inputs"].get("create", "")))
        if admit is not None:
            path, content = members.member_file(*admit)
            files[path] = content
    return files


def upstream_hosts(conf: str) -> dict[str, str]:
    """Container names the config resolves when it loads (upstream `server` lines, and the syslog
    server of the status metrics), each mapped to its own loopback address."""
    found = re.findall(r"^\s*server ([^\s:]+):\d+", conf, re.M) + re.findall(r"syslog:server=([^\s:,]+)", conf)
    names = sorted({m for m in found if not re.fullmatch(r"[\d.]+", m)})
    return {name: f"127.0.1.{i + 1}" for i, name in enumerate(names)}


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_stack_config_passes_nginx_t(stack: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """`nginx -t` on the uploaded /etc/nginx/nginx.conf of the stack's gateway container, with the
    two secret files rendered from test keys, the member files its admit commands write, and the
    worker container names resolvable.

    The production image is nginx 1.28 (alpine); the config uses nothing newer than 1.22, so
    Debian's 1.22 checks all of it."""
    synth = request.getfixturevalue(stack)
    conf, files = stack_conf(synth), stack_members(synth)
    hosts = upstream_hosts(conf + "".join(files.values()))
    assert files and hosts, "the stack admits no worker container"
    result = nginx_test(tmp_path, conf, {**SECRETS, **files}, hosts)
    assert result.returncode == 0, result.stderr
    assert "syntax is ok" in result.stderr and "test is successful" in result.stderr


def test_nginx_t_rejects_a_broken_config(dev: Synth, tmp_path: Path) -> None:
    """The check is real: a bad directive value fails it, and so does a missing secret file."""
    conf = stack_conf(dev)
    hosts = upstream_hosts(conf)
    broken = conf.replace("proxy_buffering off;", "proxy_buffering maybe;")
    assert broken != conf
    bad_value = nginx_test(tmp_path / "value", broken, SECRETS, hosts)
    assert bad_value.returncode != 0 and 'invalid value "maybe"' in bad_value.stderr, bad_value.stderr
    no_clients = {k: v for k, v in SECRETS.items() if k != "clients.map"}
    missing = nginx_test(tmp_path / "secret", conf, no_clients, hosts)
    assert missing.returncode != 0 and "clients.map" in missing.stderr, missing.stderr


# 1. Streaming --------------------------------------------------------------------------------------


@pytest.mark.parametrize("framing", ["chunked", "close", "length"])
def test_sse_chunks_are_not_held_back(tmp_path: Path, framing: str) -> None:
    """Every SSE event reaches the client before the worker sends the next one, 500 ms later, and
    the median one within 50 ms of the worker sending it (one clock: time.monotonic() in this
    process, where both the fake worker and the client run), however the worker frames its body.
    nginx with proxy_buffering on streams a chunked body promptly too, since its chunked parser
    hands on every complete chunk, but it holds a close-delimited or Content-Length body until a
    proxy buffer fills or the body ends: the `close` and `length` cases then get every event in
    one burst at the end. A single event can lag on a loaded 2-core machine (up to 158 ms seen),
    hence the wide gap, and the median for the 50 ms bound."""
    chunks, gap = 5, 0.5
    body = {"stream": True, "chunks": chunks, "gap": gap, "framing": framing}
    with one_worker(tmp_path) as (w, gw):
        arrivals = list(read_sse(gw.url, CHAT, key=KEY_A, body=body))
        wait_for(lambda: w.streams and w.streams[0].done, what="the stream to finish")
        sent = w.streams[0].sent
    assert [data for _, data in arrivals] == [*({"i": i, "worker": "w"} for i in range(chunks)), "[DONE]"]
    delays = [arrived - left for (arrived, _), left in zip(arrivals, sent, strict=True)]
    print(f"SSE delay per chunk: max {max(delays) * 1000:.1f} ms, median {statistics.median(delays) * 1000:.1f} ms")
    shown = [round(d * 1000, 1) for d in delays]
    late = [i for i, (arrived, _) in enumerate(arrivals[:-1]) if arrived >= sent[i + 1]]
    assert not late, f"events {late} reached the client only after the worker sent the next one; ms: {shown}"
    assert all(d >= 0 for d in delays)
    assert statistics.median(delays) < 0.050, shown


def test_openai_client_streams_from_real_vllm(tmp_path: Path) -> None:
    """The official client, streaming through the gateway with a client key, to vLLM holding the
    workers' key: the health probe's 2 + 2 holds its 4, and a long generation's chunks arrive one by one. Also, vLLM's
    /metrics stays out of reach even behind a dot-segment path that nginx normalises to an allowed
    endpoint."""
    require_model_server()
    import openai

    def stream(client: openai.OpenAI, prompt: str, **extra: object) -> list[tuple[float, str]]:
        start = time.monotonic()
        arrivals: list[tuple[float, str]] = []
        chunks = client.chat.completions.create(
            model=SERVED_MODEL_NAME,
            messages=[{"role": "user", "content": prompt}],
            temperature=0,
            stream=True,
            **extra,  # type: ignore[call-overload]
        )
        for chunk in chunks:
            if chunk.choices and chunk.choices[0].delta.content:
                arrivals.append((time.monotonic() - start, chunk.choices[0].delta.content))
        return arrivals

    with vllm_server(api_key=WORKER_KEY) as base:
        port = int(base.rsplit(":", 1)[1])
        routes = single("smol", [f"vllm-0:{port}"], model=SERVED_MODEL_NAME)
        with gateway(tmp_path, routes, {"vllm-0": "127.0.0.1"}) as gw:
            for prefix in ("", f"/models/{SERVED_MODEL_NAME}"):
                client = openai.OpenAI(base_url=f"{gw.url}{prefix}/v1", api_key=KEY_A, max_retries=0, timeout=60)
                # The health probe's question and check: its 4 holds on every kernel build (test_healthcheck).
                answer = "".join(text for _, text in stream(client, healthcheck.QUESTION, max_tokens=32))
                print(f"{prefix or '/'}: {answer!r}")
                assert healthcheck.ANSWER.search(answer), answer
                # A short answer can reach the client in one burst even unbuffered: on a starved CPU
                # vLLM's API process may collect several finished steps before it writes. 80 forced
                # tokens take over a second to generate, so a gateway holding the whole answer shows
                # as one burst at the end, and a streaming one as chunks spread over that second.
                # (uvicorn sends the stream chunked, which nginx hands on even with proxy_buffering
                # on; test_sse_chunks_are_not_held_back covers the framings it would hold.)
                arrivals = stream(client, "Count from 1 to 50.", max_tokens=80, extra_body={"ignore_eos": True})
                spread = arrivals[-1][0] - arrivals[0][0]
                print(f"{prefix or '/'}: {len(arrivals)} content chunks over {spread * 1000:.0f} ms")
                assert len(arrivals) >= 20 and spread > 0.25, arrivals
                assert len({round(t, 2) for t, _ in arrivals}) >= 5, arrivals
            # Without the key vLLM refuses; through the gateway the client key is swapped for it.
            assert call(base, "/v1/models", method="GET", key=KEY_A).status == 401
            models = call(gw.url, "/v1/models", method="GET", key=KEY_A)
            assert models.status == 200 and models.json()["data"][0]["id"] == SERVED_MODEL_NAME
            sneaky = call(gw.url, "/metrics/../v1/models", method="GET", key=KEY_A)
            assert b"vllm:" not in sneaky.body, "the gateway forwarded the raw path and vLLM served /metrics"
            assert sneaky.status == 200 and sneaky.json()["data"][0]["id"] == SERVED_MODEL_NAME


# 2. Balance ---------------------------------------------------------------------------------------


def test_least_conn_shares_load_by_busy_time(tmp_path: Path) -> None:
    """Three workers answering in 10, 50 and 150 ms; 16 clients send 400 requests in all.

    least_conn keeps the number of requests in flight on each worker about equal, so each worker is
    busy about a third of the time and the fast one answers the most requests (~100:20:7 by count).
    Fair here means each worker's share of the busy time (requests x service time) is at least
    15 %: half the ideal 33 %, room for nginx's per-process counters and scheduling noise, and far
    above what round robin would give the fast worker (10/210 = 5 %). By count every worker must
    still get a real share (at least 3 %, ~15 requests), and the fast one the most."""
    delays = {"fast": 0.010, "mid": 0.050, "slow": 0.150}
    ips = {"fast": "127.0.0.2", "mid": "127.0.0.3", "slow": "127.0.0.4"}
    workers = [FakeWorker(name, ips[name], delay=delay) for name, delay in delays.items()]
    try:
        servers = [f"{w.name}:{w.port}" for w in workers]
        with gateway(tmp_path, single("p", servers), ips) as gw:

            def one(_: int) -> str:
                reply = call(gw.url, CHAT, key=KEY_A, body={"messages": []})
                assert reply.status == 200, reply.body
                return str(reply.headers["X-Worker"])

            with ThreadPoolExecutor(16) as pool:
                counts = Counter(pool.map(one, range(400)))
    finally:
        for w in workers:
            w.close()
    total = sum(counts.values())
    busy = {name: counts[name] * delays[name] for name in delays}
    busy_total = sum(busy.values())
    shares = {name: round(counts[name] / total, 3) for name in delays}
    busy_shares = {name: round(busy[name] / busy_total, 3) for name in delays}
    print(f"requests {dict(counts)}; share by count {shares}; share of busy time {busy_shares}")
    assert total == 400
    assert all(share >= 0.15 for share in busy_shares.values()), busy_shares
    assert all(share >= 0.03 for share in shares.values()), shares
    assert counts["fast"] == max(counts.values())


def test_concurrent_streams_spread_over_workers(tmp_path: Path) -> None:
    """Long generations are where least_conn matters: 6 streams opened at once over separate
    connections land 3 and 3 on two workers, whichever nginx worker process accepts each."""
    ips = {"a": "127.0.0.2", "b": "127.0.0.3"}
    with (
        FakeWorker("a", ips["a"]) as a,
        FakeWorker("b", ips["b"]) as b,
        gateway(tmp_path, single("p", [f"a:{a.port}", f"b:{b.port}"]), ips) as gw,
    ):

        def one(_: int) -> str:
            events = [d for _, d in read_sse(gw.url, CHAT, key=KEY_A, body={"stream": True, "chunks": 3, "gap": 0.3})]
            first = events[0]
            assert isinstance(first, dict)
            return str(first["worker"])

        with ThreadPoolExecutor(6) as pool:
            futures = []
            for i in range(6):
                futures.append(pool.submit(one, i))
                time.sleep(0.02)
            counts = Counter(f.result() for f in futures)
    print(f"6 concurrent streams: {dict(counts)}")
    assert counts == {"a": 3, "b": 3}


# 3. Failover --------------------------------------------------------------------------------------


def test_killing_a_worker_fails_no_request(tmp_path: Path) -> None:
    """8 clients send requests for ~3 s to three workers; one is SIGKILLed after 1 s. Every request
    that starts after the kill succeeds (passive failover and proxy_next_upstream), and so does,
    here, every request that was in flight on it."""
    ips = {"a": "127.0.0.2", "b": "127.0.0.3", "victim": "127.0.0.4"}
    with (
        FakeWorker("a", ips["a"], delay=0.02) as a,
        FakeWorker("b", ips["b"], delay=0.02) as b,
        worker_process("victim", ips["victim"], delay=0.02) as (victim, victim_port),
        gateway(tmp_path, single("p", [f"a:{a.port}", f"b:{b.port}", f"victim:{victim_port}"]), ips) as gw,
    ):
        results: list[tuple[float, float, int, str]] = []
        lock = threading.Lock()
        stop = time.monotonic() + 3.0

        def client() -> None:
            while time.monotonic() < stop:
                started = time.monotonic()
                try:
                    reply = call(gw.url, CHAT, key=KEY_A, body={"messages": []}, timeout=5)
                    status, worker = reply.status, reply.headers.get("X-Worker", "")
                except OSError as exc:
                    status, worker = 0, repr(exc)
                with lock:
                    results.append((started, time.monotonic(), status, worker))

        threads = [threading.Thread(target=client) for _ in range(8)]
        for t in threads:
            t.start()
        time.sleep(1.0)
        killed = time.monotonic()
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=5)
        for t in threads:
            t.join(timeout=15)
    before = [r for r in results if r[0] < killed]
    after = [r for r in results if r[0] >= killed]
    failed_after = [r for r in after if r[2] != 200]
    failed_in_flight = [r for r in before if r[1] >= killed and r[2] != 200]
    print(
        f"before the kill: {len(before)} requests, {Counter(r[3] for r in before)}; "
        f"after: {len(after)} requests, {len(failed_after)} failed, {Counter(r[3] for r in after)}; "
        f"in flight at the kill that failed: {len(failed_in_flight)}"
    )
    assert Counter(r[3] for r in before)["victim"] > 0, "the victim got no traffic before the kill"
    assert len(after) > 100
    assert failed_after == []
    assert failed_in_flight == []
    assert all(r[3] in ("a", "b") for r in after)


# 4. Replacement -----------------------------------------------------------------------------------


def worker_pids(master: int) -> set[int]:
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return {int(pid) for pid in children}


def stopped_accepting(pid: int) -> bool:
    """An nginx worker that has exited, or retitled itself on SIGQUIT just before it closes its
    listening sockets (it keeps serving the requests it has)."""
    try:
        title = Path(f"/proc/{pid}/cmdline").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return title == "" or "is shutting down" in title


def test_reload_moves_a_name_to_a_new_address_without_cutting_streams(tmp_path: Path) -> None:
    """Worker `a` is replaced: a new server on another address, the name remapped, SIGHUP. New
    requests reach the new server under the same nginx master, and a stream in flight on worker `b`
    (the other model) runs to its end across the reload."""
    ips = {"worker-a": "127.0.0.2", "worker-b": "127.0.0.3"}
    with FakeWorker("a-old", "127.0.0.2") as old, FakeWorker("b", "127.0.0.3") as b:
        routes = [Route("ma", Pool("ga", [f"worker-a:{old.port}"])), Route("mb", Pool("gb", [f"worker-b:{b.port}"]))]
        with gateway(tmp_path, routes, ips) as gw:
            assert call(gw.url, "/models/ma/v1/chat/completions", key=KEY_A, body={}).headers["X-Worker"] == "a-old"
            master = gw.process.pid
            old_workers = worker_pids(master)
            events: list[Any] = []
            errors: list[BaseException] = []

            def stream() -> None:
                try:
                    body = {"stream": True, "chunks": 15, "gap": 0.2}
                    for _, data in read_sse(gw.url, "/models/mb/v1/chat/completions", key=KEY_A, body=body):
                        events.append(data)
                except BaseException as exc:
                    errors.append(exc)

            reader = threading.Thread(target=stream)
            reader.start()
            wait_for(lambda: len(events) >= 2, what="the stream to start")
            with FakeWorker("a-new", "127.0.0.5", port=old.port):
                gw.remap({"worker-a": "127.0.0.5", "worker-b": "127.0.0.3"})
                gw.reload()
                at_reload = len(events)

                def reaches_new() -> bool:
                    reply = call(gw.url, "/models/ma/v1/chat/completions", key=KEY_A, body={})
                    return reply.status == 200 and reply.headers["X-Worker"] == "a-new"

                wait_for(reaches_new, what="traffic to reach the new worker")
                # Until the master has told the old nginx workers to quit, they accept too (old config).
                wait_for(lambda: all(stopped_accepting(p) for p in old_workers), what="old nginx workers to quit")
                time.sleep(0.05)
                replies = [call(gw.url, "/models/ma/v1/chat/completions", key=KEY_A, body={}) for _ in range(20)]
                assert [r.headers["X-Worker"] for r in replies] == ["a-new"] * 20
                assert gw.process.poll() is None and gw.process.pid == master
                assert "nginx: master process" in Path(f"/proc/{master}/cmdline").read_text().replace("\0", " ")
                assert worker_pids(master) - old_workers, "no new nginx worker process: the reload did not happen"
                at_switch = len(events)
                reader.join(timeout=10)
    print(
        f"stream had {at_reload} of 16 events at the reload, {at_switch} when all traffic had moved; "
        f"got {len(events)}; errors {errors}"
    )
    assert not reader.is_alive() and errors == []
    assert 2 <= at_reload <= at_switch < 16, "the reload did not happen mid-stream"
    assert events == [*({"i": i, "worker": "b"} for i in range(15)), "[DONE]"]


# 5. Status codes ----------------------------------------------------------------------------------


def test_status_codes_and_json_errors(tmp_path: Path) -> None:
    """401 without or with an unknown key (the workers' key is no client key), 404 for every path
    outside the allowlist and for an unknown model, 429 with Retry-After per client, all as JSON
    OpenAI errors with an X-Request-ID; /healthz answers without a key."""
    limited = GatewayConfig(rate_limit=RateLimit(requests_per_second=1, burst=2))
    with one_worker(tmp_path, limited) as (w, gw):
        assert call(gw.url, "/healthz", method="GET").json() == {"status": "ok"}
        for key in (None, "sk-nobody-0123456789abcdef", WORKER_KEY):
            for path in (CHAT, "/v1/models", "/models/m/v1/completions"):
                reply = call(gw.url, path, key=key, body={})
                assert reply.status == 401 and error_code(reply) == "invalid_api_key", (key, path, reply)
                assert reply.json()["error"]["type"] == "invalid_request_error"
                assert re.fullmatch(r"[0-9a-f]{32}", reply.headers["X-Request-ID"])
        basic = call(gw.url, CHAT, body={}, headers={"Authorization": f"Basic {KEY_A}"})
        assert basic.status == 401 and error_code(basic) == "invalid_api_key"
        for path in (
            "/metrics",
            "/health",
            "/tokenize",
            "/detokenize",
            "/pause",
            "/invocations",
            "/update_weights",
            "/v1/load_lora_adapter",
            "/v1/chat/completions/extra",
            "/models/m/metrics",
        ):
            for method in ("GET", "POST"):
                reply = call(gw.url, path, method=method, key=KEY_A, body={} if method == "POST" else None)
                assert reply.status == 404 and error_code(reply) == "not_found", (path, reply)
        unknown = call(gw.url, "/models/nope/v1/chat/completions", key=KEY_A, body={})
        assert unknown.status == 404 and error_code(unknown) == "model_not_found"
        assert unknown.json()["error"]["param"] == "model"
        assert w.seen == []
        # 1 r/s with a burst of 2: of 6 requests at once, 3 pass and the rest are refused.
        burst = [call(gw.url, CHAT, key=KEY_A, body={}) for _ in range(6)]
        assert [r.status for r in burst[:3]] == [200, 200, 200], [r.status for r in burst]
        refused = [r for r in burst if r.status == 429]
        assert len(refused) >= 2
        for reply in refused:
            assert error_code(reply) == "rate_limit_exceeded"
            assert reply.json()["error"]["type"] == "rate_limit_error"
            assert reply.headers["Retry-After"] == "1"
            assert reply.headers["X-Request-ID"]
        # The limit is per client: team-b is untouched by team-a's burst.
        assert call(gw.url, CHAT, key=KEY_B, body={}).status == 200
        time.sleep(1.1)
        assert call(gw.url, CHAT, key=KEY_A, body={}).status == 200


def test_only_allowlisted_paths_reach_a_worker(tmp_path: Path) -> None:
    """nginx matches locations on the normalised path; the worker must get that path too, never
    the raw one, or `/metrics/../v1/models` (normalised: /v1/models) reaches vLLM's /metrics."""
    with one_worker(tmp_path) as (w, gw):
        sneaky = {
            "/metrics/../v1/models": "/v1/models",
            "/tokenize/%2e%2e/v1/completions": "/v1/completions",
            "/v1//chat/completions": "/v1/chat/completions",
            "/v1/./embeddings?x=1": "/v1/embeddings?x=1",
            "/models/m/v1/../v1/models": "/v1/models",
        }
        for raw, expected in sneaky.items():
            reply = call(gw.url, raw, key=KEY_A, body={})
            assert reply.status == 200, (raw, reply)
            assert reply.json()["path"] == expected, (raw, reply.json()["path"])
    allowed = {"/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/models"}
    assert {s.path.split("?")[0] for s in w.seen} <= allowed


# 6. Large prompt ----------------------------------------------------------------------------------


def test_two_megabyte_prompt_arrives_intact(tmp_path: Path) -> None:
    """A 2 MB JSON body (over the 1 MB in-memory buffer, so nginx spools it to a temp file) is
    accepted and reaches the worker byte for byte."""
    body = json.dumps(
        {"model": "m", "messages": [{"role": "user", "content": os.urandom(1024 * 1024).hex() + "é\u4e2d"}]},
        ensure_ascii=False,
    ).encode()
    assert len(body) > 2_000_000
    with one_worker(tmp_path) as (w, gw):
        reply = call(gw.url, CHAT, key=KEY_A, body=body)
    assert reply.status == 200, reply.body[:300]
    assert reply.json()["bytes"] == len(body)
    assert reply.json()["sha256"] == w.seen[0].body_sha256 == hashlib.sha256(body).hexdigest()
    print(f"{len(body)} bytes, sha256 intact")


# 7. Headers ---------------------------------------------------------------------------------------


def test_request_id_trace_and_keys(tmp_path: Path) -> None:
    """X-Request-ID passes through (or is generated), traceparent passes through, the worker sees
    the workers' key and never the client's, the client's claimed name is overwritten, and the
    access log line names the client and the request id."""
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    with one_worker(tmp_path) as (w, gw):
        given = call(
            gw.url,
            CHAT,
            key=KEY_A,
            body={},
            headers={"X-Request-ID": "req-given-1", "traceparent": traceparent, "X-Client-Name": "admin"},
        )
        generated = call(gw.url, "/models/m/v1/completions", key=KEY_B, body={})
        time.sleep(0.2)  # the access log is written after the response
        log = access_log(gw)
    assert given.status == 200 and generated.status == 200
    assert given.headers["X-Request-ID"] == "req-given-1"
    new_id = generated.headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", new_id)
    first, second = w.seen
    assert first.headers["x-request-id"] == "req-given-1" and second.headers["x-request-id"] == new_id
    assert first.headers["traceparent"] == traceparent and "traceparent" not in second.headers
    for seen, name in ((first, "team-a"), (second, "team-b")):
        assert seen.headers["authorization"] == f"Bearer {WORKER_KEY}"
        assert seen.headers["x-client-name"] == name
        assert not any(key in value for value in seen.headers.values() for key in CLIENT_KEYS.values())
    by_id = {line["request_id"]: line for line in log}
    assert by_id["req-given-1"]["client"] == "team-a" and by_id["req-given-1"]["traceparent"] == traceparent
    assert by_id["req-given-1"]["status"] == 200 and by_id["req-given-1"]["uri"] == CHAT
    assert by_id[new_id]["client"] == "team-b" and by_id[new_id]["upstream"] == w.address
    assert not any(key in json.dumps(log) for key in CLIENT_KEYS.values())
    print(f"log line: {by_id['req-given-1']}")


def test_the_longest_key_the_gateway_accepts_works(tmp_path: Path) -> None:
    """A 256-character client key (the most `gatewayApiKeys` allows) loads and authenticates: nginx's
    default map bucket (one cache line) refused even the 48-character generated gate key."""
    longest = "k" * 256
    conf = render_nginx_conf(OPEN, single("p", []), listen_port=free_port(), status_port=free_port())
    secrets = {**SECRETS, "clients.map": render_clients_map({**CLIENT_KEYS, "long": longest})}
    checked = nginx_test(tmp_path, conf, secrets, {})
    assert checked.returncode == 0, checked.stderr
    with FakeWorker("w", "127.0.0.2") as w:
        port = free_port()
        conf = render_nginx_conf(OPEN, single("p", [f"w:{w.port}"]), listen_port=port, status_port=free_port())
        routes = single("p", [f"w:{w.port}"])
        with run_nginx(
            tmp_path / "run", conf, {**secrets, **render_members(OPEN, routes)}, {"w": "127.0.0.2"}, port
        ) as gw:
            assert call(gw.url, CHAT, key=longest, body={}).status == 200


def test_no_worker_and_too_large_are_json_errors(tmp_path: Path) -> None:
    """nginx's own failures keep OpenAI's error shape: every worker down is a 503, a body over
    clientMaxBodySize is a 413."""
    small = GatewayConfig(rate_limit=RateLimit(requests_per_second=100000, burst=100000), client_max_body_size="1m")
    dead = free_port()  # nothing listens there
    with gateway(tmp_path, single("p", [f"w:{dead}"]), {"w": "127.0.0.2"}, small) as gw:
        down = call(gw.url, CHAT, key=KEY_A, body={"model": "m"})
        assert down.status == 503 and error_code(down) == "service_unavailable"
        large = call(gw.url, CHAT, key=KEY_A, body=b"x" * (2 * 1024 * 1024))
        assert large.status == 413 and error_code(large) == "request_too_large"
        assert down.headers["X-Request-ID"] and large.headers["X-Request-ID"]
