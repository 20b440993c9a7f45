"""members.sh with a pool balanced by its prefix-cache router: against Debian's real nginx, the
real vllm-router 0.1.17 (tests/components/gateway/test_routing.py starts it as its image does) and
fake workers. An admit puts the worker in the router and records it for the router's next start;
a drain takes it out of the router before it waits; a router restarted from the record comes back
with the current members, not those of its first start."""

from __future__ import annotations

import subprocess
from pathlib import Path

from components.gateway import members, routing
from components.gateway.nginx import Pool, Route
from tests.components.gateway.fakes import FakeWorker
from tests.components.gateway.test_members import in_nginx
from tests.components.gateway.test_nginx import OPEN, gateway
from tests.components.gateway.test_routing import require_router, router, workers_of
from tools.local_nginx import Nginx

ROUTERS = "/etc/nginx/inference-stack/routers"
# The records volume, here under the gateway's config directory (the test's own), not the host's /var/lib.
RECORDS = "/etc/nginx/inference-stack/records"


def members_sh(gw: Nginx, *args: str) -> subprocess.CompletedProcess[str]:
    """members.sh in nginx's namespace, as test_members runs it, with the records volume's path."""
    env = f"INFERENCE_STACK_ROUTER_RECORDS={RECORDS}"
    return in_nginx(gw, "env", env, "sh", "-s", "--", *args, stdin=members.script_source())


def record_of(gw_dir: Path, address: str) -> Path:
    """Where a router's record lands on the test's side of the gateway's config directory."""
    return gw_dir / "etc-nginx" / "inference-stack" / "records" / routing.record_name(address[7:])


def place_router(gw: Nginx, pool: str, address: str) -> None:
    """The pool's router address in the gateway, as the Gateway component gives it."""
    placed = in_nginx(gw, "sh", "-c", f"mkdir -p {ROUTERS}/{pool} && echo {address[7:]} > {ROUTERS}/{pool}/address")
    assert placed.returncode == 0, placed.stderr


def test_admit_and_drain_reach_the_pools_router_and_a_restart_keeps_the_members(tmp_path: Path) -> None:
    require_router()
    with (
        FakeWorker("a", "127.0.0.2") as a,
        FakeWorker("b", "127.0.0.3") as b,
        gateway(tmp_path / "gw", [Route("m", Pool("p", []))], {}) as gw,
    ):
        with router(tmp_path / "first", []) as (address, _):
            place_router(gw, "p", address)
            record = record_of(tmp_path / "gw", address)
            for worker in (a, b):
                args = ["admit", "p", members.member_name(worker.address), *members.server(OPEN, worker.address)]
                joined = members_sh(gw, *args)
                assert joined.returncode == 0 and "joined p" in joined.stdout, joined.stderr
            # A readmit (a replaced gateway runs every admit again) changes nothing.
            again = members_sh(gw, "admit", "p", members.member_name(a.address), *members.server(OPEN, a.address))
            assert again.returncode == 0, again.stderr
            assert workers_of(address) == {f"http://{a.address}", f"http://{b.address}"}
            assert sorted(p.read_text() for p in record.glob("*.url")) == sorted(
                f"http://{w.address}\n" for w in (a, b)
            )
            drained = members_sh(gw, "drain", "p", members.member_name(a.address), a.address, "5")
            assert drained.returncode == 0 and "left p" in drained.stdout, drained.stderr
            assert workers_of(address) == {f"http://{b.address}"}
        # The router restarted as its image starts it, from what the admits and drains recorded.
        restarted = tmp_path / "restarted"
        restarted.mkdir()
        (restarted / "members").symlink_to(record)
        with router(restarted, []) as (address, _):
            assert workers_of(address) == {f"http://{b.address}"}


def test_a_router_that_does_not_answer_leaves_the_member_out(tmp_path: Path) -> None:
    with FakeWorker("a", "127.0.0.2") as a, gateway(tmp_path, [Route("m", Pool("p", []))], {}) as gw:
        # Port 9 (discard) on loopback: nothing listens, so the router's API refuses at once.
        place_router(gw, "p", "http://127.0.0.1:9")
        refused = members_sh(gw, "admit", "p", members.member_name(a.address), *members.server(OPEN, a.address))
        assert refused.returncode == 4 and "did not take" in refused.stderr, (refused.stdout, refused.stderr)
        left = in_nginx(gw, "sh", "-c", f"ls -R {RECORDS} /etc/nginx/inference-stack/members/p 2>/dev/null; true")
        assert ".url" not in left.stdout and ".conf" not in left.stdout, left.stdout


def test_a_promotion_and_a_move_carry_members_between_the_pools_routers(tmp_path: Path) -> None:
    """A promoted canary's workers leave the canary pool's router for the stable pool's; a worker
    admitted to another pool leaves its old pool's router."""
    require_router()
    pools = [Route("m", Pool("stable", []), canary=Pool("canary", []))]
    with (
        FakeWorker("a", "127.0.0.2") as a,
        FakeWorker("b", "127.0.0.3") as b,
        gateway(tmp_path / "gw", pools, {}) as gw,
        router(tmp_path / "stable", []) as (stable, _),
        router(tmp_path / "canary", []) as (canary, _),
    ):
        place_router(gw, "stable", stable)
        place_router(gw, "canary", canary)
        for worker in (a, b):
            args = ["admit", "canary", members.member_name(worker.address), *members.server(OPEN, worker.address)]
            assert members_sh(gw, *args).returncode == 0
        assert workers_of(canary) == {f"http://{a.address}", f"http://{b.address}"} and workers_of(stable) == set()
        # b moves on its own (admitted to the stable pool), then the canary is promoted.
        moved = members_sh(gw, "admit", "stable", members.member_name(b.address), *members.server(OPEN, b.address))
        assert moved.returncode == 0, moved.stderr
        assert workers_of(canary) == {f"http://{a.address}"} and workers_of(stable) == {f"http://{b.address}"}
        promoted = members_sh(gw, "promote", "canary", "stable")
        assert promoted.returncode == 0 and "1 workers of canary joined stable" in promoted.stdout, promoted.stderr
        assert workers_of(canary) == set() and workers_of(stable) == {f"http://{a.address}", f"http://{b.address}"}
        assert sorted(p.name for p in record_of(tmp_path / "gw", stable).glob("*.url")) == sorted(
            f"{members.member_name(w.address)}.url" for w in (a, b)
        )
        assert list(record_of(tmp_path / "gw", canary).glob("*.url")) == []
