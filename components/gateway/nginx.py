"""Pure functions that render the gateway's nginx config from the stack.

nginx.conf (beside this file as a template) holds no secret, so `make render` shows it whole;
the client keys and the workers' key go to two small files that are uploaded as secrets.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from components.gateway import routing, status_metrics
from stacks.config import GatewayConfig
from stacks.secrets import GATE_CLIENT, TOKEN68, check_client_keys

TEMPLATE = Path(__file__).with_name("files") / "nginx.conf.template"
SECRETS_DIR = "/etc/nginx/inference-stack"
CONFIG_PATH = "/etc/nginx/nginx.conf"
LISTEN_PORT = 8080
STATUS_PORT = 8081
# The OpenAI endpoints the gateway serves; everything else is a 404 (vLLM's own security guide:
# `--api-key` alone does not protect /metrics, /pause, /tokenize and the like).
ENDPOINTS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/models")
WEIGHTS_DIR = f"{SECRETS_DIR}/weights"
# The client name of the canary gate's key: the only client that may address one pool directly.
GATE_ENDPOINTS = ("/v1/chat/completions", "/v1/completions")
UNAUTHORIZED = (
    '{"error":{"message":"Missing or unknown API key. Send it as Authorization: Bearer <key>.",'
    '"type":"invalid_request_error","param":null,"code":"invalid_api_key"}}'
)


@dataclass(frozen=True)
class Pool:
    """The workers of one group serving one model, as nginx reaches them."""

    group: str
    servers: list[str]
    """`host:port`: a container name on the gateway host's network, or a private address."""
    joined: tuple[str, ...] = ()
    """Other groups whose workers join this pool (more groups serving the same model)."""
    router: str | None = None
    """The container name of the pool's prefix-cache router (`balance: cache_aware`): nginx sends
    the pool's requests to it, and it picks the worker (`routing.py`)."""


@dataclass(frozen=True)
class Route:
    """One served model: its stable pool, and the canary pool that gets a share of its requests
    at run time (`members.sh split`), so starting, promoting or ending a canary never changes
    nginx.conf."""

    model: str
    stable: Pool
    canary: Pool | None = None
    extra: list[Pool] = field(default_factory=list)


def ident(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", text)


# The upstream method of each `balance` but `session`, which is two upstreams per pool (`_upstreams`).
METHODS = {
    "least_conn": "least_conn;",
    "round_robin": "",
    "random_two": "random two least_conn;",
}
# Appended to a pool's upstream name for requests that name a session (`balance: session`).
SESSION_SUFFIX = "_session"


def session_variable(gw: GatewayConfig) -> str:
    """nginx's variable for the session header: `$http_` and the name, lower case, `-` as `_`."""
    return "$http_" + gw.session_header.lower().replace("-", "_")


def _upstreams(pool: Pool, gw: GatewayConfig) -> str:
    name = ident(pool.group)
    if gw.balance == "cache_aware":
        return _upstream(name, "", _router_server(pool), gw)
    if gw.balance != "session":
        return _upstream(name, METHODS[gw.balance], _member_servers(pool), gw)
    # The same members twice: hashed for requests with a session, least_conn for the rest. With
    # `consistent` (ketama), a worker that joins or leaves moves only the sessions it takes or held.
    hashed = f"hash {session_variable(gw)} consistent;"
    return "\n".join(
        [
            _upstream(name, METHODS["least_conn"], _member_servers(pool), gw),
            _upstream(name + SESSION_SUFFIX, hashed, _member_servers(pool), gw),
        ]
    )


def _member_servers(pool: Pool) -> list[str]:
    # The workers join and leave at run time (members.py): one file each, none before the first
    # is healthy. The placeholder keeps an empty pool valid (nginx refuses an upstream without a
    # server) and is never chosen, so an empty pool answers 503 at once.
    lines = [f"include {SECRETS_DIR}/members/{ident(group)}/*.conf;" for group in (pool.group, *pool.joined)]
    return [*lines, "server 127.0.0.1:9 down;"]


def _router_server(pool: Pool) -> list[str]:
    """One server, the pool's router; the members' files still exist (members.sh keeps a pool's
    share and promotions by them), but the router, not nginx, chooses among them. A single server
    is never marked down (nginx ignores max_fails for it); the router's own health checks and
    retries handle a failed worker."""
    if pool.router is None:
        raise ValueError(f"pool {pool.group}: `balance: cache_aware` needs the pool's router")
    return [f"server {routing.address(pool.router)};"]


def _upstream(name: str, method: str, servers: list[str], gw: GatewayConfig) -> str:
    lines = [f"    upstream {name} {{"]
    if method:
        lines.append(f"        {method}")
    # Shared by all nginx worker processes: without it each one counts only its own connections
    # (least_conn piled concurrent streams on one worker) and its own failures.
    lines.append(f"        zone upstream_{name} 64k;")
    lines += [f"        {server}" for server in servers]
    if gw.keepalive:
        lines += [f"        keepalive {gw.keepalive};", "        keepalive_timeout 60s;"]
    lines.append("    }")
    return "\n".join(lines)


def _pool_variable(route: Route) -> str:
    name = f"pool_{ident(route.model)}"
    if route.canary is None:
        return f"    map $host ${name} {{\n        default {ident(route.stable.group)};\n    }}"
    # 100 buckets of 1 % on the request id; the weights file sends the first N to the canary.
    buckets = "".join(f"        1% {i};\n" for i in range(99))
    return (
        f'    split_clients "${{req_id}}" $bucket_{ident(route.model)} {{\n{buckets}        * 99;\n    }}\n'
        f"    map $bucket_{ident(route.model)} ${name} {{\n"
        f"        default {ident(route.stable.group)};\n"
        f"        include {WEIGHTS_DIR}/{ident(route.model)}/*.conf;\n"
        "    }"
    )


def _gate_map(pools: list[Pool]) -> str:
    by_pool = "\n".join(f"        {p.group} {ident(p.group)};" for p in pools)
    return f'    map $gate_pool $gate_upstream {{\n        default "";\n{by_pool}\n    }}'


def _gate_location(gw: GatewayConfig) -> str:
    """`/pools/<group>/v1/...`: one pool, bypassing the split, for the canary gate's key only."""
    paths = "|".join(p.removeprefix("/v1/") for p in GATE_ENDPOINTS)
    return (
        f"        location ~ ^/pools/(?<gate_pool>[A-Za-z0-9_-]+)(?<gate_path>/v1/({paths}))$ {{\n"
        f'            if ($client_name != "{GATE_CLIENT}") {{\n'
        "                return 404;\n"
        "            }\n"
        '            if ($gate_upstream = "") {\n'
        "                return 404;\n"
        "            }\n"
        f"            limit_req zone=per_client burst={gw.rate_limit.burst} nodelay;\n"
        "            proxy_pass http://$gate_upstream$gate_path$is_args$args;\n"
        "        }\n"
    )


def _session_map(gw: GatewayConfig) -> str:
    """`$session_pool`: the suffix that picks a pool's hashed upstream when the request names a session."""
    return f'    map {session_variable(gw)} $session_pool {{\n        "" "";\n        default {SESSION_SUFFIX};\n    }}'


def _session(gw: GatewayConfig) -> str:
    return "$session_pool" if gw.balance == "session" else ""


def _location(match: str, pool: str, gw: GatewayConfig, upstream_uri: str = "") -> str:
    return (
        f"        location {match} {{\n"
        f'            if ($client_name = "") {{\n'
        f"                return 401 '{UNAUTHORIZED}';\n"
        "            }\n"
        f"            limit_req zone=per_client burst={gw.rate_limit.burst} nodelay;\n"
        f"            proxy_pass http://{pool}{_session(gw)}{upstream_uri};\n"
        "        }\n"
    )


def _status_log(routes: list[Route], syslog_server: str) -> str:
    """One more access-log line per request, over UDP syslog to mtail (`status_metrics.py`)."""
    endpoints = "|".join(p.removeprefix("/v1/") for p in ENDPOINTS)
    models = "\n".join(f'        "~^/models/{re.escape(r.model)}/v1/({endpoints})$" {r.model};' for r in routes)
    return (
        "    # Status metrics: labels only from bounded sets (the allowlisted endpoints, the served\n"
        "    # models, else `other`), so no client can mint series with made-up paths or model names.\n"
        "    map $uri $status_endpoint {\n"
        "        default other;\n"
        f'        "~^(/models/[A-Za-z0-9._-]+)?(?<status_path>/v1/({endpoints}))$" $status_path;\n'
        "    }\n"
        "    map $uri $status_model {\n"
        "        default other;\n"
        f'        "~^/v1/({endpoints})$" {routes[0].model};\n'
        f"{models}\n"
        "    }\n"
        "    # The trailing newline is mtail's: it reads UDP as one byte stream and splits lines only at\n"
        "    # newlines, and nginx's syslog messages have none. UDP never blocks a request; with mtail\n"
        "    # down only these lines are lost. Its name is resolved when the config loads, so mtail\n"
        "    # starts first and a replaced mtail triggers the same reload as a replaced worker.\n"
        "    log_format gateway_status\n"
        "        'status=$status endpoint=$status_endpoint model=$status_model request_time=$request_time\\n';\n"
        f"    access_log syslog:server={syslog_server},tag={status_metrics.SYSLOG_TAG},nohostname gateway_status;\n"
    )


def render_nginx_conf(
    gw: GatewayConfig,
    routes: list[Route],
    listen_port: int = LISTEN_PORT,
    status_port: int = STATUS_PORT,
    status_syslog: str | None = None,
) -> str:
    """The whole nginx.conf. The first route is also served at the plain `/v1/...` paths; every
    route is served at `/models/<served name>/v1/...`, so routing never parses a request body.
    `status_syslog` (`host:port` of mtail) adds the log line the per-status metrics count."""
    if not routes:
        raise ValueError("the gateway needs at least one route")
    pools = [p for r in routes for p in (r.stable, *([r.canary] if r.canary else []), *r.extra)]
    default = f"$pool_{ident(routes[0].model)}"
    # The path goes upstream as matched, never as the client spelled it: without a URI, proxy_pass
    # forwards the raw one, and `/metrics/../v1/models` (matched as /v1/models) reached /metrics.
    locations = [_location(f"= {path}", default, gw, f"{path}$is_args$args") for path in ENDPOINTS]
    by_model = "\n".join(f"        {r.model} $pool_{ident(r.model)};" for r in routes)
    pool_map = f'    map $route_model $route_pool {{\n        default "";\n{by_model}\n    }}'
    path_alternatives = "|".join(p.removeprefix("/v1/") for p in ENDPOINTS)
    locations.append(
        f"        location ~ ^/models/(?<route_model>[A-Za-z0-9._-]+)(?<route_path>/v1/({path_alternatives}))$ {{\n"
        '            if ($route_pool = "") {\n'
        '                return 404 \'{"error":{"message":"Unknown model.","type":"invalid_request_error",'
        '"param":"model","code":"model_not_found"}}\';\n'
        "            }\n"
        f'            if ($client_name = "") {{\n'
        f"                return 401 '{UNAUTHORIZED}';\n"
        "            }\n"
        f"            limit_req zone=per_client burst={gw.rate_limit.burst} nodelay;\n"
        f"            proxy_pass http://$route_pool{_session(gw)}$route_path$is_args$args;\n"
        "        }\n"
    )
    locations.append(_gate_location(gw))
    sessions = [_session_map(gw)] if gw.balance == "session" else []
    text = TEMPLATE.read_text()
    values = {
        "UPSTREAMS": "\n".join(_upstreams(p, gw) for p in pools),
        "POOLS": "\n".join([*(_pool_variable(r) for r in routes), pool_map, _gate_map(pools), *sessions]) + "\n",
        "LOCATIONS": "\n".join(locations),
        "PORT": str(listen_port),
        "WORKERS": str(max(1, math.ceil(gw.cpus))),
        "STATUS_PORT": str(status_port),
        "MAX_BODY": gw.client_max_body_size,
        "READ_TIMEOUT": str(gw.read_timeout_seconds),
        "RATE": str(gw.rate_limit.requests_per_second),
        "TRIES": str(gw.next_upstream_tries),
        "SECRETS_DIR": SECRETS_DIR,
        "STATUS_LOG": _status_log(routes, status_syslog) if status_syslog else "",
    }
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", value)
    leftover = re.search(r"\{\{[A-Z_]+\}\}", text)
    if leftover:
        raise ValueError(f"template placeholder {leftover.group()} was not filled")
    return text


def render_clients_map(client_keys: dict[str, str]) -> str:
    """`"Bearer <key>" <client>;` lines for the map in nginx.conf. Keys are checked so that no
    character can break out of the quoted string."""
    check_client_keys(client_keys, own_included=True)
    return "".join(f'"Bearer {key}" {name};\n' for name, key in sorted(client_keys.items()))


def render_worker_auth(worker_key: str) -> str:
    if not TOKEN68.fullmatch(worker_key):
        raise ValueError("the worker API key must be 16-256 characters of A-Z a-z 0-9 . _ ~ + / = -")
    return f'map $host $worker_authorization {{\n    default "Bearer {worker_key}";\n}}\n'
