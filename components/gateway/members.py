"""Gateway membership: which workers nginx sends requests to, changed at run time.

nginx.conf names no worker. Each upstream includes `members/<pool>/*.conf`, one file per worker,
written by `members.sh` inside the gateway container: a per-worker Pulumi command admits the
worker once its container is healthy (create) and drains it before the container is deleted or
replaced (delete). That is what lets a rolling update take one worker out of the gateway, wait
for its running requests, replace it and put it back, without touching nginx.conf, and so
without replacing the gateway. The files live in the gateway container, so a replaced gateway
starts with none and its readmit step (`Gateway.readmit`) runs every admit, split and promotion
again. A canary pool's share of its model's requests is a file of the same kind (`split_argv`).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from components.gateway import nginx
from stacks.config import GatewayConfig

SCRIPT = Path(__file__).with_name("files") / "members.sh"
SCRIPT_PATH = "/opt/inference-stack/members.sh"
MEMBERS_DIR = f"{nginx.SECRETS_DIR}/members"
ROUTERS_DIR = f"{nginx.SECRETS_DIR}/routers"
"""members.sh's `ROUTERS`: `<pool>/address` is the pool's router, when it has one."""
# The drain of a worker whose gateway is already gone (a destroy, a replaced gateway host) has
# nothing to do; any other failure to reach the gateway fails the step.
_TOLERANT = (
    'if docker inspect --type container "$1" >/dev/null 2>&1; then exec docker exec "$@"; '
    'else echo "members: gateway $1 is gone: nothing to undo"; fi'
)


def script_source() -> str:
    return SCRIPT.read_text()


def member_name(address: str) -> str:
    """The file name of a worker's member entry: its address, which is unique per container."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", address)


def server(gw: GatewayConfig, address: str) -> list[str]:
    """The upstream `server` parameters of one worker."""
    return [address, f"max_fails={gw.max_fails}", f"fail_timeout={gw.fail_timeout_seconds}s"]


def _in_gateway(gateway: str, action: str, *args: str) -> list[str]:
    """`members.sh ACTION ARGS...` run in the gateway container."""
    return ["docker", "exec", gateway, "sh", SCRIPT_PATH, action, *args]


def admit_argv(gateway: str, pool: str, address: str, gw: GatewayConfig) -> list[str]:
    return _in_gateway(gateway, "admit", nginx.ident(pool), member_name(address), *server(gw, address))


def split_argv(gateway: str, model: str, pool: str, percent: int) -> list[str]:
    """Gives `pool` (a canary pool) `percent` of `model`'s requests."""
    return _in_gateway(gateway, "split", nginx.ident(model), nginx.ident(pool), str(percent))


def promote_argv(gateway: str, pool: str, into: str) -> list[str]:
    """Moves every member of `pool` into `into`; `pool` loses its share."""
    return _in_gateway(gateway, "promote", nginx.ident(pool), nginx.ident(into))


def drain_argv(gateway: str, pool: str, address: str, timeout_seconds: int) -> list[str]:
    return tolerant(
        _in_gateway(gateway, "drain", nginx.ident(pool), member_name(address), address, str(timeout_seconds))
    )


def tolerant(argv: list[str]) -> list[str]:
    """A `docker exec` into the gateway (for a delete step) that succeeds when the gateway is gone."""
    if argv[:2] != ["docker", "exec"] or argv[3:5] != ["sh", SCRIPT_PATH] or len(argv) < 6:
        raise ValueError(f"not a members.sh step: {argv}")
    # $0 is the action, for the shell's own error messages.
    return ["sh", "-c", _TOLERANT, argv[5], *argv[2:]]


def member_file(pool: str, member: str, server_args: list[str]) -> tuple[str, str]:
    """(path relative to the gateway's config directory, content) of one member, as `members.sh
    admit` writes it."""
    return f"members/{pool}/{member}.conf", f"server {' '.join(server_args)};\n"


def render_members(gw: GatewayConfig, routes: list[nginx.Route]) -> dict[str, str]:
    """Every worker of `routes` as a member file (path relative to the gateway's config
    directory), as the admit commands leave them once all workers are healthy."""
    files = {}
    for route in routes:
        for pool in (route.stable, *([route.canary] if route.canary else []), *route.extra):
            for address in pool.servers:
                path, content = member_file(nginx.ident(pool.group), member_name(address), server(gw, address))
                files[path] = content
    return files


def parse_admit(create: str) -> tuple[str, str, list[str]] | None:
    """(pool, member, server parameters) of an admit command line, or None for another command."""
    words = shlex.split(create)
    if SCRIPT_PATH not in words or "admit" not in words:
        return None
    i = words.index("admit")
    return words[i + 1], words[i + 2], words[i + 3 :]
