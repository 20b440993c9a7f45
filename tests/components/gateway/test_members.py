"""members.sh, the gateway-membership script, against Debian's real nginx and fake workers that
stream: admitted workers get traffic, a drain takes one out at once and then waits for its
running streams, and a member nginx refuses is left out. The script runs in nginx's mount
namespace (nsenter), as `docker exec` runs it in the gateway container."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from components.gateway import members
from components.gateway.nginx import Pool, Route
from tests.components.gateway.fakes import FakeWorker, call, read_sse
from tests.components.gateway.test_nginx import KEY_A, OPEN, gateway
from tests.support.nginx import Nginx
from tests.support.tools import require_tool

CHAT = "/v1/chat/completions"


def members_sh(gw: Nginx, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """The script on stdin: nginx's namespace has its own /tmp, where a checkout may live."""
    nsenter = require_tool("nsenter")
    command = [nsenter, "--target", str(gw.process.pid), "--mount", "sh", "-s", "--", *args]
    return subprocess.run(command, input=members.script_source(), capture_output=True, text=True, timeout=timeout)


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
