"""members.sh with a pool balanced by its prefix-cache router: against Debian's real nginx, the
real vllm-router 0.1.17 (tests/components/gateway/test_routing.py starts it as its image does) and
fake workers. An admit puts the worker in the router and records it for the router's next start;
a drain takes it out of the router before it waits; a router restarted from the record comes back
with the current members, not those of its first start."""

from __future__ import annotations

import json
from pathlib import Path

from components.gateway import members
from components.gateway.nginx import Pool, Route
from tests.components.gateway.fakes import FakeWorker
from tests.components.gateway.test_members import in_nginx, members_sh
from tests.components.gateway.test_nginx import OPEN, gateway
from tests.components.gateway.test_routing import get, require_router, router

ROUTERS = "/etc/nginx/inference-stack/routers"


def listed(address: str) -> set[str]:
    return set(json.loads(get(address, "/list_workers")[1])["urls"])


def test_admit_and_drain_reach_the_pools_router_and_a_restart_keeps_the_members(tmp_path: Path) -> None:
    require_router()
    with (
        FakeWorker("a", "127.0.0.2") as a,
        FakeWorker("b", "127.0.0.3") as b,
        gateway(tmp_path / "gw", [Route("m", Pool("p", []))], {}) as gw,
    ):
        record = tmp_path / "gw" / "etc-nginx" / "inference-stack" / "routers" / "p"
        with router(tmp_path / "first", []) as (address, _):
            placed = in_nginx(gw, "sh", "-c", f"mkdir -p {ROUTERS}/p && echo {address[7:]} > {ROUTERS}/p/address")
            assert placed.returncode == 0, placed.stderr
            for worker in (a, b):
                args = ["admit", "p", members.member_name(worker.address), *members.server(OPEN, worker.address)]
                joined = members_sh(gw, *args)
                assert joined.returncode == 0 and "joined p" in joined.stdout, joined.stderr
            # A readmit (a replaced gateway runs every admit again) changes nothing.
            again = members_sh(gw, "admit", "p", members.member_name(a.address), *members.server(OPEN, a.address))
            assert again.returncode == 0, again.stderr
            assert listed(address) == {f"http://{a.address}", f"http://{b.address}"}
            assert sorted(p.read_text() for p in record.glob("*.url")) == sorted(
                f"http://{w.address}\n" for w in (a, b)
            )
            drained = members_sh(gw, "drain", "p", members.member_name(a.address), a.address, "5")
            assert drained.returncode == 0 and "left p" in drained.stdout, drained.stderr
            assert listed(address) == {f"http://{b.address}"}
        # The router restarted as its image starts it, from what the admits and drains recorded.
        restarted = tmp_path / "restarted"
        restarted.mkdir()
        (restarted / "members").symlink_to(record)
        with router(restarted, []) as (address, _):
            assert listed(address) == {f"http://{b.address}"}


def test_a_router_that_does_not_answer_leaves_the_member_out(tmp_path: Path) -> None:
    with FakeWorker("a", "127.0.0.2") as a, gateway(tmp_path, [Route("m", Pool("p", []))], {}) as gw:
        # Port 9 (discard) on loopback: nothing listens, so the router's API refuses at once.
        placed = in_nginx(gw, "sh", "-c", f"mkdir -p {ROUTERS}/p && echo 127.0.0.1:9 > {ROUTERS}/p/address")
        assert placed.returncode == 0, placed.stderr
        refused = members_sh(gw, "admit", "p", members.member_name(a.address), *members.server(OPEN, a.address))
        assert refused.returncode == 4 and "did not take" in refused.stderr, (refused.stdout, refused.stderr)
        left = in_nginx(gw, "sh", "-c", f"ls {ROUTERS}/p /etc/nginx/inference-stack/members/p 2>/dev/null; true")
        assert ".url" not in left.stdout and ".conf" not in left.stdout, left.stdout
