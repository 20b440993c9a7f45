"""The prefix-cache router between the gateway and one pool's workers: the vLLM project's
`vllm-router` (policy `cache_aware`), built from `router/` (Dockerfile, the pinned requirements,
the start script that hands it the recorded members).

Pure: the router's command line, from `stacks.config.RouterConfig`, its healthcheck, and where
the members it starts with are recorded.
Every flag is one of vllm-router 0.1.17's (`vllm-router --help`); `tests/components/gateway/
test_routing.py` runs this command line with the real router.
"""

from __future__ import annotations

from pathlib import Path

from stacks.config import RouterConfig

CONTEXT_DIR = Path(__file__).with_name("router")
START_SCRIPT = CONTEXT_DIR / "start.sh"
IMAGE = "inference-stack/vllm-router:0.1.17"
RECORDS_DIR = "/var/lib/inference-stack/routers"
"""In the gateway container: the volume where `members.sh` records each router's members, one
directory per router (its container name), one file per member holding its URL."""
RECORDS_MOUNT = "/records"
"""In each router container: the same volume, read-only; the start script reads its own directory."""
MEMBERS_ENV = "INFERENCE_STACK_ROUTER_MEMBERS"
PORT = 8090
"""The OpenAI API and the worker API (`/add_worker`, `/remove_worker`, `/list_workers`)."""
METRICS_PORT = 29000
"""Prometheus metrics (`vllm_router_*`), the router's default port."""
POLICY = "cache_aware"
# A router whose recorded members are all down does not listen until one answers, and exits after
# this long (vllm-router's default is 600 s); Docker then restarts it, and the new start reads the
# record again, with any member admitted meanwhile. Bounded, so admits find a listening router soon.
STARTUP_TIMEOUT_SECONDS = 30
STARTUP_CHECK_SECONDS = 5
# A request the router cannot deliver is retried up to 5 times (its default), each time on the
# worker its policy picks again; a dead worker has the least load, so a cache miss picks it again.
# With the default circuit breaker (10 failures) those retries all fail; opened at the second
# failure, the third attempt goes elsewhere. Closed again after 10 s, by then the health checks
# (every `healthCheckIntervalSeconds`) have taken over.
CIRCUIT_FAILURES = 2
CIRCUIT_OPEN_SECONDS = 10


def command(
    router: RouterConfig, host: str = "0.0.0.0", port: int = PORT, metrics_port: int = METRICS_PORT
) -> list[str]:
    """The router's argv after the start script (which appends `--worker-urls`)."""
    return [
        "vllm-router",
        "--host",
        host,
        "--port",
        str(port),
        "--policy",
        POLICY,
        "--cache-threshold",
        str(router.cache_threshold),
        "--balance-abs-threshold",
        str(router.balance_abs_threshold),
        "--balance-rel-threshold",
        str(router.balance_rel_threshold),
        "--eviction-interval-secs",
        str(router.eviction_interval_seconds),
        "--max-tree-size",
        str(router.max_tree_size),
        "--health-check-interval-secs",
        str(router.health_check_interval_seconds),
        "--worker-startup-timeout-secs",
        str(STARTUP_TIMEOUT_SECONDS),
        "--worker-startup-check-interval",
        str(STARTUP_CHECK_SECONDS),
        "--cb-failure-threshold",
        str(CIRCUIT_FAILURES),
        "--cb-timeout-duration-secs",
        str(CIRCUIT_OPEN_SECONDS),
        "--prometheus-host",
        host,
        "--prometheus-port",
        str(metrics_port),
    ]


def address(container_name: str, port: int = PORT) -> str:
    """`host:port` of a router, as nginx and members.sh reach it."""
    return f"{container_name}:{port}"


def record_name(router_address: str) -> str:
    """The directory of a router's record under `RECORDS_DIR`, as members.sh names it."""
    return router_address.replace(":", "_")


def env(container_name: str) -> list[str]:
    """The router's environment: where the start script finds its recorded members."""
    return [f"{MEMBERS_ENV}={RECORDS_MOUNT}/{record_name(address(container_name))}"]


def healthcheck(port: int = PORT) -> list[str]:
    """`/liveness`: 200 while the process serves, with or without workers. Not `/readiness`, which
    is 503 while the pool is empty (a canary pool most of the time): Docker would restart a router
    that is only idle. The image has Python (the router's launcher) and no wget or curl."""
    probe = f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{port}/liveness', timeout=3)"
    return ["CMD", "python3", "-c", probe]


def member_file(url: str) -> str:
    """The name of a worker's file in the members directory (`router/start.sh`): its URL, made a file name."""
    return url.removeprefix("http://").replace(":", "_").replace("/", "_") + ".url"
