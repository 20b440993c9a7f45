"""`balance: session` run by a real nginx (Debian's 1.22) over fake workers on 127.0.0.2-4: each
conversation (its `X-Session-Id`) keeps to one worker, conversations spread over all of them, a
request without the header is balanced least_conn, and a worker that leaves moves only the
conversations it held (ketama, `hash ... consistent`)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from stacks.config import GatewayConfig, RateLimit
from tests.components.gateway.fakes import FakeWorker, call
from tests.components.gateway.test_nginx import CHAT, KEY_A, gateway, single
from tests.helpers import assert_refused_at, valid_config, validate_values

SESSION = GatewayConfig(balance="session", rate_limit=RateLimit(requests_per_second=100000, burst=100000))
IPS = {"a": "127.0.0.2", "b": "127.0.0.3", "c": "127.0.0.4"}
SESSIONS = [f"conversation-{i}" for i in range(60)]


def worker_of(url: str, headers: dict[str, str]) -> str:
    reply = call(url, CHAT, key=KEY_A, body={"messages": []}, headers=headers)
    assert reply.status == 200, reply.body
    return str(reply.headers["X-Worker"])


def placements(root: Path, names: list[str], ports: dict[str, int], rounds: int = 3) -> dict[str, str]:
    """Each session's worker with `names` in the pool; every session sent `rounds` times."""
    servers = [f"{n}:{ports[n]}" for n in names]
    with gateway(root, single("p", servers), IPS, SESSION) as gw:
        seen = {s: {worker_of(gw.url, {"X-Session-Id": s}) for _ in range(rounds)} for s in SESSIONS}
    assert all(len(w) == 1 for w in seen.values()), {s: w for s, w in seen.items() if len(w) > 1}
    return {s: next(iter(w)) for s, w in seen.items()}


def test_a_session_keeps_to_one_worker_and_sessions_spread(tmp_path: Path) -> None:
    workers = [FakeWorker(name, ip) for name, ip in IPS.items()]
    try:
        ports = {w.name: w.port for w in workers}
        three = placements(tmp_path / "three", ["a", "b", "c"], ports)
        two = placements(tmp_path / "two", ["a", "b"], ports)
    finally:
        for w in workers:
            w.close()
    spread = Counter(three.values())
    print(f"60 sessions over 3 workers: {dict(spread)}")
    # Ketama puts 160 points per server on the ring: each worker gets a real share.
    assert set(spread) == {"a", "b", "c"} and min(spread.values()) >= 8, spread
    moved = [s for s in SESSIONS if three[s] != "c" and two[s] != three[s]]
    print(f"c left: {sum(1 for s in SESSIONS if three[s] == 'c')} sessions moved from c, {len(moved)} others moved")
    assert moved == []


def test_without_the_header_requests_are_balanced_least_conn(tmp_path: Path) -> None:
    """Requests without a session alternate between two idle workers (least_conn, ties taken in
    turn), where a hash of the empty value would send every one to the same worker."""
    with (
        FakeWorker("a", IPS["a"]) as a,
        FakeWorker("b", IPS["b"]) as b,
        gateway(tmp_path, single("p", [f"a:{a.port}", f"b:{b.port}"]), IPS, SESSION) as gw,
    ):
        counts = Counter(worker_of(gw.url, {}) for _ in range(20))
    assert counts == {"a": 10, "b": 10}, counts


@pytest.mark.parametrize("header", ["Authorization", "x-request-id", "Traceparent"])
def test_a_header_with_a_meaning_already_is_a_config_error(header: str) -> None:
    cfg = {**valid_config(), "gateway": {"balance": "session", "sessionHeader": header}}
    error = assert_refused_at(cfg, "inference-stack:gateway.sessionHeader", "already means something")
    assert header in str(error) and "X-Session-Id" in str(error)


def test_session_balance_over_workers_that_cache_no_prefix_is_a_config_error() -> None:
    cfg = valid_config()
    cfg["gateway"] = {"balance": "session"}
    cfg["workers"][0]["extraArgs"] = ["--no-enable-prefix-caching"]
    error = assert_refused_at(cfg, "inference-stack:workers[0].extraArgs", "turns that cache off")
    assert "balance: least_conn" in str(error)
    # The same workers under least_conn are a valid stack.
    cfg["gateway"] = {"balance": "least_conn"}
    validate_values(cfg)


def test_cache_aware_balance_over_workers_that_cache_no_prefix_is_a_config_error() -> None:
    cfg = valid_config()
    cfg["gateway"] = {"balance": "cache_aware"}
    cfg["workers"][0]["extraArgs"] = ["--no-enable-prefix-caching"]
    error = assert_refused_at(cfg, "inference-stack:workers[0].extraArgs", "turns that cache off")
    assert "balance: cache_aware" in str(error)


@pytest.mark.parametrize(
    ("key", "value", "rule"),
    [
        ("cacheThreshold", 1.5, "less than or equal to 1"),
        ("balanceRelThreshold", 0.5, "greater than or equal to 1"),
        ("maxTreeSize", 10, "greater than or equal to 4096"),
        ("memoryMb", 64, "greater than or equal to 128"),
    ],
)
def test_an_out_of_range_router_knob_is_a_config_error(key: str, value: float, rule: str) -> None:
    cfg = {**valid_config(), "gateway": {"balance": "cache_aware", "router": {key: value}}}
    assert_refused_at(cfg, f"inference-stack:gateway.router.{key}", rule)
