"""The Gateway alone with `balance: cache_aware`: one hardened router per pool between nginx and
the workers, the record volume shared read-write (nginx) and read-only (routers), and the
addresses members.sh finds them by. The router's behaviour itself is proven with the real
vllm-router (test_routing.py, test_members_router.py) and Docker (tests/integration)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from components.gateway import members, nginx, routing
from components.gateway.gateway import gateway_grace_seconds
from stacks.config import GatewayConfig, RouterConfig
from tests.components.gateway import test_gateway_alone as alone
from tools.synth import Synth

CONFIG = GatewayConfig(balance="cache_aware", router=RouterConfig(cache_threshold=0.5, max_tree_size=65536))
ROUTES = [
    nginx.Route(
        model="m",
        stable=nginx.Pool("chat", [], joined=("chat-b",), router="test-router-chat"),
        canary=nginx.Pool("chat-canary", [], router="test-router-chat-canary"),
    )
]


def build() -> Synth:
    return alone.build(config=CONFIG, routes=ROUTES)


def uploads_of(synth: Synth, name: str) -> dict[str, str]:
    return {u["file"]: u["content"] for u in synth.named(name)["inputs"].get("uploads") or []}


def test_each_pool_gets_a_hardened_router_built_from_the_routing_context() -> None:
    synth = build()
    image = synth.named("gw-router-image")["inputs"]
    assert image["build"] == {"context": os.path.relpath(routing.CONTEXT_DIR)} and image["skipPush"] is True
    assert Path(image["build"]["context"]).resolve() == routing.CONTEXT_DIR
    for pool in ("chat", "chat-canary"):
        router = synth.named(f"gw-router-{pool}")["inputs"]
        assert router["name"] == f"test-router-{pool}"
        assert router["readOnly"] is True and router["capabilities"] == {"drops": ["ALL"]}
        assert router["command"] == routing.command(CONFIG.router)
        assert "--cache-threshold" in router["command"] and "65536" in router["command"]
        assert router["envs"] == [f"{routing.MEMBERS_ENV}=/records/test-router-{pool}_{routing.PORT}"]
        (mount,) = router["mounts"]
        assert mount["target"] == routing.RECORDS_MOUNT and mount["readOnly"] is True
        assert router["healthcheck"]["tests"] == routing.healthcheck()
        assert not router.get("ports"), "a router publishes nothing"
        # Streams pass through it: its stop waits as nginx's does.
        assert router["destroyGraceSeconds"] == gateway_grace_seconds(CONFIG)


def test_nginx_sends_each_pool_to_its_router_and_members_sh_finds_it() -> None:
    synth = build()
    files = uploads_of(synth, "gw-nginx")
    conf = files[nginx.CONFIG_PATH]
    assert re.search(r"upstream chat \{[^}]*server test-router-chat:8090;", conf)
    assert re.search(r"upstream chat_canary \{[^}]*server test-router-chat-canary:8090;", conf)
    assert "include /etc/nginx/inference-stack/members/chat/" not in conf
    # A joined group's members go to the pool's router, so they share its record.
    assert files[f"{members.ROUTERS_DIR}/chat/address"] == "test-router-chat:8090\n"
    assert files[f"{members.ROUTERS_DIR}/chat_b/address"] == "test-router-chat:8090\n"
    assert files[f"{members.ROUTERS_DIR}/chat_canary/address"] == "test-router-chat-canary:8090\n"
    nginx_inputs = synth.named("gw-nginx")["inputs"]
    (mount,) = nginx_inputs["mounts"]
    assert mount["target"] == routing.RECORDS_DIR and not mount.get("readOnly")
    assert synth.named("gw-router-records")["inputs"]["name"] == "test-router-records"


def test_members_sh_records_where_the_routers_read() -> None:
    """The script's default record directory is the one the gateway mounts the volume at, and its
    record names are routing.record_name's."""
    script = members.script_source()
    assert f"RECORDS=${{INFERENCE_STACK_ROUTER_RECORDS:-{routing.RECORDS_DIR}}}" in script
    assert "ROUTERS=${INFERENCE_STACK_ROUTERS:-${MEMBERS%/*}/routers}" in script
    assert members.MEMBERS_DIR.rsplit("/", 1)[0] + "/routers" == members.ROUTERS_DIR
    assert routing.record_name("test-router-chat:8090") == "test-router-chat_8090"


def test_nginx_starts_after_the_routers_and_reloads_when_one_is_replaced() -> None:
    """nginx resolves the routers' names when it loads its config."""
    synth = build()
    for pool in ("chat", "chat-canary"):
        assert synth.depends_on("gw-nginx", f"gw-router-{pool}")
        assert f"gw-router-{pool}-id" in synth.named("gw-reload")["inputs"]["triggers"]
        assert synth.named(f"gw-router-{pool}")["inputs"]["image"].startswith("sha256:")


def test_a_routed_pool_without_its_router_is_refused() -> None:
    routes = [nginx.Route(model="m", stable=nginx.Pool("chat", []))]
    try:
        nginx.render_nginx_conf(CONFIG, routes)
    except ValueError as error:
        assert "needs the pool's router" in str(error)
    else:
        raise AssertionError("rendered a cache_aware pool without a router")
