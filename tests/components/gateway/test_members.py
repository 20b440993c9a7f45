"""members.sh, the gateway-membership script, against Debian's real nginx and fake workers that
stream: admitted workers get traffic, a drain takes one out at once and then waits for its
running streams, and a member nginx refuses is left out. The script runs in nginx's mount
namespace (nsenter), as `docker exec` runs it in the gateway container."""

from __future__ import annotations

import subprocess
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from components.gateway import members
from components.gateway.nginx import WEIGHTS_DIR, Pool, Route
from tests.components.gateway.fakes import FakeWorker, call, read_sse
from tests.components.gateway.test_nginx import GATE_KEY, KEY_A, OPEN, gateway
from tests.support.nginx import Nginx
from tests.support.tools import require_tool

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
                body = {"stream": True, "chunks": 15, "gap": 0.2}
                events.extend(data for _, data in read_sse(gw.url, CHAT, key=KEY_A, body=body))
            except BaseException as exc:
                errors.append(exc)

        reader = threading.Thread(target=stream)
        reader.start()
        deadline = time.monotonic() + 5
        while not a.streams and time.monotonic() < deadline:
            time.sleep(0.02)
        assert admit(gw, f"wb:{b.port}").returncode == 0

        started = time.monotonic()
        drained: list[subprocess.CompletedProcess[str]] = []
        drainer = threading.Thread(
            target=lambda: drained.append(
                members_sh(gw, "drain", "p", members.member_name(f"wa:{a.port}"), f"127.0.0.2:{a.port}", "20")
            )
        )
        drainer.start()
        time.sleep(0.5)
        # Out of the gateway at once: every new request goes to b while a still streams.
        assert drainer.is_alive() and workers_hit(gw) == {"b"}
        drainer.join(timeout=30)
        reader.join(timeout=10)
        waited = time.monotonic() - started
        print(f"drain returned after {waited:.1f} s: {drained[0].stdout.strip()}")
        assert drained[0].returncode == 0 and "0 running requests" in drained[0].stdout, drained[0]
        assert errors == [] and events[-1] == "[DONE]" and len(events) == 16
        assert waited >= 1.0, "the drain returned before the running stream ended"

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


def weights_file(gw: Nginx, model: str, pool: str) -> str:
    shown = in_nginx(gw, "cat", f"{WEIGHTS_DIR}/{model}/{pool}.conf")
    return shown.stdout if shown.returncode == 0 else ""


def test_a_canary_pool_gets_its_share_only_through_split_and_loses_it_with_its_last_worker(tmp_path: Path) -> None:
    """The route's canary pool starts empty and with no share: every request goes to the stable
    worker. `split m p-canary 20` gives it 20 % of 500 requests whose ids nginx generates (within
    6 points: the binomial sd is 1.8). A repeated request id always lands on the same side. Only
    the gate's key may address one pool directly. Draining the canary's last worker takes the share
    away in the same reload, and so does `promote`, which moves the canary into the stable pool."""
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
        replies = [call(gw.url, CHAT, key=KEY_A, body={}) for _ in range(500)]
        pinned = {
            call(gw.url, CHAT, key=KEY_A, body={}, headers={"X-Request-ID": rid}).headers["X-Worker"]
            for rid in [str(uuid.uuid4())] * 10
        }
        share = Counter(r.headers["X-Worker"] for r in replies)["canary"] / 500
        print(f"canary share over 500 requests at 20 %: {share:.1%}")
        assert len({r.headers["X-Request-ID"] for r in replies}) == 500
        assert abs(share - 0.20) <= 0.06 and len(pinned) == 1

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
