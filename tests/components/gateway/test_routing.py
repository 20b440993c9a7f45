"""The prefix-cache router's command line (components/gateway/routing.py) and start script, run
with the real vllm-router 0.1.17 (`make router-venv` installs the image's pinned set) in front of
fake workers on 127.0.0.2-4 (tests/components/gateway/fakes.py). All traffic stays on 127.0.0.0/8."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from components.gateway import routing
from stacks.config import RouterConfig
from tests.components.gateway.fakes import RENDER, FakeWorker, call
from tools.local_nginx import free_port

ROOT = Path(__file__).resolve().parents[3]
ROUTER_BIN = ROOT / ".cache/router-venv/bin"
IPS = {"a": "127.0.0.2", "b": "127.0.0.3", "c": "127.0.0.4"}
CHAT = "/v1/chat/completions"
START_SECONDS = 30
WORKER_KEY = "worker-key-0123456789abcdef"


def require_router() -> None:
    if (ROUTER_BIN / "vllm-router").exists():
        return
    message = f"{ROUTER_BIN}/vllm-router is missing: `make router-venv` (a prerequisite of `make test`) installs it"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def router_env(members_dir: Path) -> dict[str, str]:
    """The start script's environment: the router venv first on PATH, the members directory."""
    return {
        **os.environ,
        "PATH": f"{ROUTER_BIN}:{os.environ['PATH']}",
        "INFERENCE_STACK_ROUTER_MEMBERS": str(members_dir),
    }


def url(worker: FakeWorker) -> str:
    return f"http://{worker.address}"


def get(address: str, path: str) -> tuple[int, str]:
    reply = call(address, path, method="GET")
    return reply.status, reply.body.decode()


def post(address: str, path: str) -> tuple[int, str]:
    """A worker-API call: a POST with an empty body, as members.sh sends it (`wget --post-data=`)."""
    reply = call(address, path, body=b"")
    return reply.status, reply.body.decode()


@contextlib.contextmanager
def router(root: Path, members: list[str], config: RouterConfig | None = None) -> Iterator[tuple[str, str]]:
    """The router as its image starts it: the start script, with `members` recorded one file each
    under the members directory, then `routing.command`. Yields (API URL, metrics URL)."""
    require_router()
    members_dir = root / "members"
    members_dir.mkdir(parents=True, exist_ok=True)
    for member in members:
        (members_dir / routing.member_file(member)).write_text(member + "\n")
    port, metrics_port = free_port(), free_port()
    argv = routing.command(config or RouterConfig(), host="127.0.0.1", port=port, metrics_port=metrics_port)
    env = router_env(members_dir)
    log = (root / "router.log").open("w")
    process = subprocess.Popen(["sh", str(routing.START_SCRIPT), *argv], env=env, stdout=log, stderr=subprocess.STDOUT)
    address = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_SECONDS
        while get_or_none(address, "/liveness") != 200:
            assert process.poll() is None, (root / "router.log").read_text()[-3000:]
            assert time.monotonic() < deadline, f"the router did not answer /liveness in {START_SECONDS} s"
            time.sleep(0.1)
        yield address, f"http://127.0.0.1:{metrics_port}"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def get_or_none(address: str, path: str) -> int | None:
    try:
        return get(address, path)[0]
    except OSError:
        return None


def workers_of(address: str) -> set[str]:
    status, body = get(address, "/list_workers")
    assert status == 200, body
    return set(json.loads(body)["urls"])


def turn(address: str, history: list[dict[str, str]]) -> str:
    # nginx sends the workers' key (vLLM's --api-key guards /v1/*, render included).
    reply = call(address, CHAT, key=WORKER_KEY, body={"model": "m", "messages": history}, timeout=30)
    assert reply.status == 200, reply.body
    return str(reply.json()["worker"])


def test_the_start_script_hands_the_router_its_recorded_members(tmp_path: Path) -> None:
    """What a restarted router starts with: the members on the volume, not those of its first start."""
    with FakeWorker("a", IPS["a"]) as a, FakeWorker("b", IPS["b"]) as b:
        with router(tmp_path / "two", [url(a), url(b)]) as (address, _):
            assert workers_of(address) == {url(a), url(b)}
            assert get(address, "/readiness")[0] == 200
        with router(tmp_path / "none", []) as (address, _):
            assert workers_of(address) == set()
            # Alive with no worker, but not ready: nginx's upstream gets a fast 503, not a hang.
            status, body = get(address, "/readiness")
            assert status == 503 and "no healthy workers" in body


def test_each_conversation_keeps_to_the_worker_that_holds_its_prefix(tmp_path: Path) -> None:
    """Nine conversations, each with its own ~4,000-character history, four turns each, interleaved:
    every turn after the first reaches the worker that served the first (its prefix is in that
    worker's tree), and the router counts 9 misses and 27 hits. It matches on token ids, which it
    asks the workers for (`/v1/chat/completions/render`, which the fakes answer as vLLM does).
    Where the misses go is the router's choice: with no load at all, 0.1.17 sends them all to one
    worker, so spreading conversations is left to load (benchmarks/routing.py measures it)."""
    workers = [FakeWorker(name, ip) for name, ip in IPS.items()]
    try:
        with router(tmp_path, [url(w) for w in workers]) as (address, metrics):
            histories = [
                [{"role": "user", "content": f"conversation {c}: " + " ".join(f"fact-{c}-{i}" for i in range(400))}]
                for c in range(9)
            ]
            served: dict[int, list[str]] = defaultdict(list)
            for t in range(4):
                for c, history in enumerate(histories):
                    served[c].append(turn(address, history))
                    history += [
                        {"role": "assistant", "content": f"answer {t}"},
                        {"role": "user", "content": f"question {t + 1}"},
                    ]
            exposition = get(metrics, "/metrics")[1]
    finally:
        for w in workers:
            w.close()
    print({c: s for c, s in served.items()})
    assert all(len(set(s)) == 1 for s in served.values()), served
    renders = [seen for w in workers for seen in w.seen if seen.path == RENDER]
    assert len(renders) == 3 * 36 and all(r.headers["authorization"] == f"Bearer {WORKER_KEY}" for r in renders)
    decisions = 'vllm_router_prefix_routing_decisions_total{policy="cache_aware",stage="regular",outcome="%s"}'
    assert f"{decisions % 'prefix_miss'} 9" in exposition and f"{decisions % 'prefix_hit'} 27" in exposition
    assert 'vllm_router_policy_decisions_total{policy="cache_aware"' in exposition


def test_workers_join_and_leave_through_the_worker_api(tmp_path: Path) -> None:
    with FakeWorker("a", IPS["a"]) as a, FakeWorker("b", IPS["b"]) as b, router(tmp_path, [url(a)]) as (address, _):
        assert post(address, f"/add_worker?url={url(b)}") == (200, f"Successfully added worker: {url(b)}")
        # Admitting twice (a replaced gateway's readmit) is refused with 400, and changes nothing.
        assert post(address, f"/add_worker?url={url(b)}")[0] == 400
        assert workers_of(address) == {url(a), url(b)}
        assert post(address, f"/remove_worker?url={url(a)}")[0] == 200
        assert workers_of(address) == {url(b)}
        before = len(a.seen)
        answers = {turn(address, [{"role": "user", "content": f"hello {i}"}]) for i in range(6)}
        assert answers == {"b"} and len(a.seen) == before


def test_the_command_line_is_the_routers_own() -> None:
    """Every flag the command sets is in the real router's --help, and it starts on it (above)."""
    require_router()
    helptext = subprocess.run(
        [str(ROUTER_BIN / "vllm-router"), "--help"], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    flags = [arg for arg in routing.command(RouterConfig()) if arg.startswith("--")]
    assert flags and all(f"  {flag} " in helptext for flag in flags), [f for f in flags if f"  {f} " not in helptext]


def test_a_router_whose_recorded_members_are_all_down_exits_within_its_startup_bound(tmp_path: Path) -> None:
    """It never listens while it waits; exiting (for Docker to restart it onto a newer record)
    beats vllm-router's default of waiting 600 s."""
    require_router()
    members_dir = tmp_path / "members"
    members_dir.mkdir()
    dead = "http://127.0.0.1:9"
    (members_dir / routing.member_file(dead)).write_text(dead + "\n")
    argv = routing.command(RouterConfig(), host="127.0.0.1", port=free_port(), metrics_port=free_port())
    env = router_env(members_dir)
    started = time.monotonic()
    ran = subprocess.run(
        ["sh", str(routing.START_SCRIPT), *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=routing.STARTUP_TIMEOUT_SECONDS + 30,
    )
    took = time.monotonic() - started
    assert ran.returncode != 0 and "to become healthy" in ran.stdout + ran.stderr
    assert routing.STARTUP_TIMEOUT_SECONDS <= took < routing.STARTUP_TIMEOUT_SECONDS + 20, took


def test_a_stopped_router_finishes_its_open_stream_and_takes_no_new_request(tmp_path: Path) -> None:
    """SIGTERM (Docker's stop, within the container's stop grace): the router stops accepting at
    once, lets the stream it is relaying finish whole, then exits 0."""
    require_router()
    with FakeWorker("a", IPS["a"]) as worker:
        members_dir = tmp_path / "members"
        members_dir.mkdir()
        (members_dir / routing.member_file(url(worker))).write_text(url(worker) + "\n")
        port = free_port()
        argv = routing.command(RouterConfig(), host="127.0.0.1", port=port, metrics_port=free_port())
        with (tmp_path / "router.log").open("w") as log:
            process = subprocess.Popen(
                ["sh", str(routing.START_SCRIPT), *argv], env=router_env(members_dir), stdout=log, stderr=log
            )
        address = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + START_SECONDS
            while get_or_none(address, "/readiness") != 200:
                assert process.poll() is None and time.monotonic() < deadline, (tmp_path / "router.log").read_text()
                time.sleep(0.1)
            body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True, "chunks": 16}
            streamed: dict[str, Any] = {}

            def relay() -> None:
                reply = call(address, CHAT, key=WORKER_KEY, body={**body, "gap": 0.25}, timeout=30)
                streamed.update(status=reply.status, events=reply.body.count(b"data:"), done=b"[DONE]" in reply.body)

            thread = threading.Thread(target=relay)
            thread.start()
            time.sleep(1.0)
            stopped_at = time.monotonic()
            process.send_signal(signal.SIGTERM)
            refusing = time.monotonic() + 0.3
            while get_or_none(address, "/liveness") is not None and time.monotonic() < refusing:
                time.sleep(0.05)
            # Refused while the stream it relays is still open.
            assert get_or_none(address, "/liveness") is None, "the router still accepts after SIGTERM"
            assert thread.is_alive(), streamed
            assert process.wait(30) == 0
            thread.join(30)
            # 16 chunks 0.25 s apart: the stream had about 3 s left when the stop came.
            assert time.monotonic() - stopped_at >= 2.0
            assert streamed == {"status": 200, "events": 17, "done": True}, streamed
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
