"""members.sh, the gateway-membership script, against Debian's real nginx and fake workers that
stream: admitted workers get traffic, a drain takes one out at once and then waits for its
running streams, and a member nginx refuses is left out. The script runs in nginx's mount
namespace (nsenter), as `docker exec` runs it in the gateway container.

Nothing here waits a fixed time and then asserts: each step waits (bounded) for what it needs to
have happened, as the fakes record it, so a loaded machine makes the tests slower, not red."""

from __future__ import annotations

import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from components.gateway import members
from components.gateway.nginx import WEIGHTS_DIR, Pool, Route
from tests.components.gateway.fakes import FakeWorker, call, read_sse
from tests.components.gateway.test_nginx import GATE_KEY, KEY_A, OPEN, gateway
from tests.support.tools import require_tool
from tools.local_nginx import Nginx

CHAT = "/v1/chat/completions"


def in_nginx(gw: Nginx, *argv: str, stdin: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`argv` in nginx's mount namespace, where the gateway's config directory is, as `docker exec`
    runs in the gateway container."""
    command = [require_tool("nsenter"), "--target", str(gw.process.pid), "--mount", *argv]
    return subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=timeout)


def members_sh(gw: Nginx, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """The script on stdin: nginx's namespace has its own /tmp, where a checkout may live."""
    return in_nginx(gw, "sh", "-s", "--", *args, stdin=members.script_source(), timeout=timeout)


def admit(gw: Nginx, address: str) -> subprocess.CompletedProcess[str]:
    return members_sh(gw, "admit", "p", members.member_name(address), *members.server(OPEN, address))


def workers_hit(gw: Nginx, n: int = 12) -> set[str]:
    return {call(gw.url, CHAT, key=KEY_A, body={}).headers.get("X-Worker", "none") for _ in range(n)}


T = TypeVar("T")


def wait_until(what: str, check: Callable[[], T], timeout: float = 30.0) -> T:
    """`check()` once it is truthy; the bound only ends a test whose condition never comes."""
    deadline = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.02)
    return result


def test_admit_and_drain_move_traffic_and_the_drain_waits_for_running_streams(tmp_path: Path) -> None:
    hosts = {"wa": "127.0.0.2", "wb": "127.0.0.3"}
    with (
        FakeWorker("a", "127.0.0.2") as a,
        FakeWorker("b", "127.0.0.3") as b,
        gateway(tmp_path, [Route("m", Pool("p", []))], hosts) as gw,
    ):
        # An empty pool is valid config and answers 503 at once.
        empty = call(gw.url, CHAT, key=KEY_A, body={})
        assert empty.status == 503 and empty.json()["error"]["code"] == "service_unavailable"
        joined = admit(gw, f"wa:{a.port}")
        assert joined.returncode == 0 and "joined p" in joined.stdout, joined.stderr
        assert workers_hit(gw) == {"a"}

        events: list[Any] = []
        errors: list[BaseException] = []

        def stream() -> None:
            try:
                # Held before its last event until the test releases it: it runs exactly as long
                # as the drain needs watching, however slow the machine is.
                body = {"stream": True, "chunks": 3, "gap": 0.05, "hold": True}
                events.extend(data for _, data in read_sse(gw.url, CHAT, key=KEY_A, body=body, timeout=60))
            except BaseException as exc:
                errors.append(exc)

        reader = threading.Thread(target=stream)
        reader.start()
        drained: list[subprocess.CompletedProcess[str]] = []
        drain_ended: list[float] = []

        def drain() -> None:
            drained.append(
                members_sh(
                    gw, "drain", "p", members.member_name(f"wa:{a.port}"), f"127.0.0.2:{a.port}", "60", timeout=120
                )
            )
            drain_ended.append(time.monotonic())

        drainer = threading.Thread(target=drain)
        try:
            wait_until("the stream to start on a", lambda: a.streams)
            assert admit(gw, f"wb:{b.port}").returncode == 0
            drainer.start()
            # The drain polls a's running requests once its reload has taken effect: from then on
            # every new request goes to b while a still streams.
            wait_until("the drain to poll a", lambda: a.polls or not drainer.is_alive())
            assert drainer.is_alive(), f"the drain returned while a stream was running: {drained}"
            assert workers_hit(gw) == {"b"} and not a.streams[0].done
            # A second poll: it saw the running stream and kept waiting.
            wait_until("the drain to poll a again", lambda: len(a.polls) >= 2 or not drainer.is_alive())
            assert drainer.is_alive(), f"the drain returned while a stream was running: {drained}"
        finally:
            a.release.set()
        drainer.join(timeout=90)
        reader.join(timeout=60)
        assert not drainer.is_alive() and not reader.is_alive()
        print(f"drain: {drained[0].stdout.strip()}; a's running requests as it polled: {[p.running for p in a.polls]}")
        assert drained[0].returncode == 0 and "0 running requests" in drained[0].stdout, drained[0]
        assert errors == [] and events[-1] == "[DONE]" and len(events) == 4
        # It kept polling while the stream ran and returned at the second poll in a row that found
        # none, after the stream's last event had gone out.
        polled = [p.running for p in a.polls]
        assert polled[-2:] == [0, 0] and set(polled[:-2]) == {1}, polled
        assert drain_ended[0] > a.streams[0].sent[-1]

        # A member nginx cannot resolve is refused and left out; nginx keeps serving.
        refused = admit(gw, "nowhere:8000")
        assert refused.returncode == 3 and "left it out" in refused.stderr, refused
        assert workers_hit(gw) == {"b"}
        # A worker that is already gone is drained at once.
        a.close()
        gone = members_sh(gw, "drain", "p", "never-joined", f"127.0.0.2:{a.port}", "20", timeout=10)
        assert gone.returncode == 0 and "no running requests" in gone.stdout, gone


def test_bad_arguments_are_refused_with_code_2(tmp_path: Path) -> None:
    with gateway(tmp_path, [Route("m", Pool("p", []))], {}) as gw:
        for args in (
            ("admit", "p"),
            ("admit", "p/../x", "m", "a:1"),
            ("drain", "p", "m", "a:1", "soon"),
            ("nap", "p", "m"),
        ):
            result = members_sh(gw, *args)
            assert result.returncode == 2 and result.stderr.startswith("members: error:"), (args, result)


def test_members_script_passes_shellcheck() -> None:
    shellcheck = require_tool("shellcheck")
    result = subprocess.run([shellcheck, "--shell=sh", str(members.SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


# Canary pools: a share at run time ------------------------------------------------------------------


# nginx's split_clients hashes its key with MurmurHash2 (ngx_murmur_hash2, src/core/ngx_murmurhash.c)
# and takes the first part whose cumulative threshold is above the hash; each "1%" part adds
# 100 * 0xffffffff / 10000, truncated (ngx_http_split_clients_module.c). So the bucket of every
# request id, and the pool a weights file sends it to, is known exactly before it is sent.
MURMUR_M = 0x5BD1E995
U32 = 0xFFFFFFFF
PART = 100 * U32 // 10000
BUCKETS = 100


def murmur_hash2(data: bytes) -> int:
    h = len(data) & U32
    whole = len(data) - len(data) % 4
    for i in range(0, whole, 4):
        k = int.from_bytes(data[i : i + 4], "little") * MURMUR_M & U32
        k ^= k >> 24
        h = (h * MURMUR_M & U32) ^ (k * MURMUR_M & U32)
    if data[whole:]:
        h = (h ^ int.from_bytes(data[whole:], "little")) * MURMUR_M & U32
    h ^= h >> 13
    h = h * MURMUR_M & U32
    return h ^ (h >> 15)


def bucket(request_id: str) -> int:
    """The bucket nginx's `split_clients "${req_id}"` (99 parts of 1 %, then `*`) puts a request in."""
    return min(murmur_hash2(request_id.encode()) // PART, BUCKETS - 1)


def one_id_per_bucket() -> list[str]:
    """Request ids, one in each of the 100 buckets, in bucket order."""
    found: dict[int, str] = {}
    n = 0
    while len(found) < BUCKETS:
        found.setdefault(bucket(f"split-{n}"), f"split-{n}")
        n += 1
    return [found[i] for i in range(BUCKETS)]


def test_bucket_is_nginx_murmur_hash2() -> None:
    """ngx_murmur_hash2's own answers (its C from nginx's source, compiled) for each tail length,
    and the part edges; the canary test then checks every bucket against the running nginx."""
    assert [murmur_hash2(t) for t in (b"", b"a", b"ab", b"abc", b"abcd", b"abcde")] == [
        0,
        2456313694,
        446775395,
        324500635,
        646393889,
        1594468574,
    ]
    assert PART == 42949672 and 99 * PART < U32
    assert [bucket(i) for i in one_id_per_bucket()] == list(range(BUCKETS))


def weights_file(gw: Nginx, model: str, pool: str) -> str:
    shown = in_nginx(gw, "cat", f"{WEIGHTS_DIR}/{model}/{pool}.conf")
    return shown.stdout if shown.returncode == 0 else ""


def assert_split(gw: Nginx, percent: int) -> None:
    """Every request of model `m` goes where its bucket says: the canary below `percent`."""
    ids = one_id_per_bucket()
    chosen = [call(gw.url, CHAT, key=KEY_A, body={}, headers={"X-Request-ID": rid}) for rid in ids]
    generated = [call(gw.url, CHAT, key=KEY_A, body={}) for _ in range(BUCKETS)]
    assert [r.headers["X-Request-ID"] for r in chosen] == ids
    assert len({r.headers["X-Request-ID"] for r in generated}) == BUCKETS
    for reply in chosen + generated:
        rid = reply.headers["X-Request-ID"]
        assert reply.headers["X-Worker"] == ("canary" if bucket(rid) < percent else "stable"), (rid, bucket(rid))
    share = Counter(r.headers["X-Worker"] for r in generated)["canary"] / BUCKETS
    print(f"at {percent} %: buckets 0-{percent - 1} on the canary; {share:.0%} of {BUCKETS} generated ids")


def test_a_canary_pool_gets_its_share_only_through_split_and_loses_it_with_its_last_worker(tmp_path: Path) -> None:
    """The route's canary pool starts empty and with no share: every request goes to the stable
    worker. `split m p-canary 20` sends it the requests of buckets 0-19 of nginx's split on the
    request id, exactly: one chosen id in each of the 100 buckets, and 100 ids nginx generates,
    each land on the side their bucket names (`bucket`), and so they do at 50 %. A repeated request
    id always lands on the same side. Only the gate's key may address one pool directly. Draining
    the canary's last worker takes the share away in the same reload, and so does `promote`, which
    moves the canary into the stable pool."""
    ips = {"stable-0": "127.0.0.2", "canary-0": "127.0.0.3"}
    with (
        FakeWorker("stable", ips["stable-0"], answer="4") as s,
        FakeWorker("canary", ips["canary-0"], answer="four") as c,
        gateway(tmp_path, [Route("m", Pool("p", []), Pool("p-canary", []))], ips) as gw,
    ):
        stable, canary = f"stable-0:{s.port}", f"canary-0:{c.port}"
        assert members_sh(gw, "admit", "p", members.member_name(stable), *members.server(OPEN, stable)).returncode == 0
        joined = members_sh(gw, "admit", "p_canary", members.member_name(canary), *members.server(OPEN, canary))
        assert joined.returncode == 0, joined.stderr
        assert workers_hit(gw, 30) == {"stable"}

        gate_path = "/pools/p-canary/v1/chat/completions"
        assert {call(gw.url, gate_path, key=GATE_KEY, body={}).headers["X-Worker"] for _ in range(5)} == {"canary"}
        assert call(gw.url, gate_path, key=KEY_A, body={}).status == 404
        assert call(gw.url, "/pools/nope/v1/chat/completions", key=GATE_KEY, body={}).status == 404

        split = members_sh(gw, "split", "m", "p_canary", "20")
        assert split.returncode == 0 and "gets 20 % of m" in split.stdout, split.stderr
        assert len(weights_file(gw, "m", "p_canary").splitlines()) == 20
        assert_split(gw, 20)
        pinned = {
            call(gw.url, CHAT, key=KEY_A, body={}, headers={"X-Request-ID": rid}).headers["X-Worker"]
            for rid in [str(uuid.uuid4())] * 10
        }
        assert len(pinned) == 1

        assert members_sh(gw, "split", "m", "p_canary", "101").returncode == 2
        drained = members_sh(gw, "drain", "p_canary", members.member_name(canary), f"127.0.0.3:{c.port}", "5")
        assert drained.returncode == 0, drained.stderr
        assert weights_file(gw, "m", "p_canary") == "" and workers_hit(gw, 30) == {"stable"}

        # Back with 50 %, then promoted: both workers in the stable pool, no share left.
        assert (
            members_sh(gw, "admit", "p_canary", members.member_name(canary), *members.server(OPEN, canary)).returncode
            == 0
        )
        assert members_sh(gw, "split", "m", "p_canary", "50").returncode == 0
        assert_split(gw, 50)
        promoted = members_sh(gw, "promote", "p_canary", "p")
        assert promoted.returncode == 0 and "1 workers of p_canary joined p" in promoted.stdout, promoted.stderr
        assert weights_file(gw, "m", "p_canary") == ""
        assert workers_hit(gw, 40) == {"stable", "canary"}
        assert call(gw.url, gate_path, key=GATE_KEY, body={}).status == 503  # the canary pool is empty


def test_admitting_a_worker_to_another_pool_moves_it(tmp_path: Path) -> None:
    """A promoted canary's member command, updated to the stable pool, moves the worker: it is never
    in two pools, and the pool it left loses its share."""
    with (
        FakeWorker("w", "127.0.0.2") as w,
        gateway(tmp_path, [Route("m", Pool("p", []), Pool("p-canary", []))], {"w": "127.0.0.2"}) as gw,
    ):
        address = f"w:{w.port}"
        assert members_sh(gw, "admit", "p_canary", members.member_name(address), address).returncode == 0
        assert members_sh(gw, "split", "m", "p_canary", "100").returncode == 0
        assert workers_hit(gw) == {"w"}
        moved = members_sh(gw, "admit", "p", members.member_name(address), address)
        assert moved.returncode == 0, moved.stderr
        assert weights_file(gw, "m", "p_canary") == ""
        assert workers_hit(gw) == {"w"}
        listed = in_nginx(gw, "find", members.MEMBERS_DIR, "-name", "*.conf").stdout.split()
        assert [p.removeprefix(members.MEMBERS_DIR + "/") for p in listed] == [f"p/{members.member_name(address)}.conf"]
