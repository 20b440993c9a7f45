"""The k8s stack's gateway ConfigMap, run by Debian's real nginx (tools/local_nginx.py) as the pod
mounts it: nginx.conf, the canary split files at the paths the projected volume gives them, the
key files rendered from test keys. Each router Service name resolves to a fake router on
127.0.0.2-127.0.0.5 port 8090; all traffic stays on 127.0.0.0/8.

The pod listens on 8080 and 8081; here those two `listen` lines get free ports, since this
machine's 8080 may be taken. Nothing else of the config changes.
"""

from __future__ import annotations

import contextlib
import math
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from components.gateway import nginx, routing
from components.kubernetes import edge
from tests.components.gateway.fakes import FakeWorker, call
from tests.support.nginx import nginx_test, run_nginx
from tools import render
from tools.local_nginx import Nginx, free_port
from tools.synth import Synth

WORKER_KEY = "worker-key-0123456789abcdefXYZ"
CLIENTS = {f"team-{i:02d}": f"sk-team-{i:02d}-0123456789abcdef" for i in range(40)}
ROUTERS = {"mistral": "127.0.0.2", "mistral-canary": "127.0.0.3", "smollm": "127.0.0.4", "smollm-canary": "127.0.0.5"}
CHAT = "/v1/chat/completions"


def objects(synth: Synth) -> dict[tuple[str, str], dict[str, Any]]:
    docs = [yaml.safe_load(t) for t in render.manifests(synth).values() if not t.startswith("# helm")]
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def mounted(synth: Synth) -> tuple[str, dict[str, str]]:
    """nginx.conf and the files under nginx's secrets dir, as the gateway pod's volumes lay them out."""
    found = objects(synth)
    config = found[("ConfigMap", edge.GATEWAY)]["data"]
    pod = found[("Deployment", edge.GATEWAY)]["spec"]["template"]["spec"]
    (keys,) = [v for v in pod["volumes"] if v["name"] == "keys"]
    files = {
        "clients.map": nginx.render_clients_map(CLIENTS),
        "worker-auth.conf": nginx.render_worker_auth(WORKER_KEY),
    }
    for source in keys["projected"]["sources"]:
        if "configMap" in source:
            files.update({item["path"]: config[item["key"]] for item in source["configMap"]["items"]})
    return config["nginx.conf"], files


def hosts(namespace: str = "inference") -> dict[str, str]:
    return {edge.router_host(pool, namespace): ip for pool, ip in ROUTERS.items()}


def on_free_ports(conf: str) -> tuple[str, int]:
    port = free_port()
    conf, n = re.subn(rf"listen {nginx.LISTEN_PORT} reuseport;", f"listen {port} reuseport;", conf)
    conf, m = re.subn(rf"listen {nginx.STATUS_PORT};", f"listen {free_port()};", conf)
    assert (n, m) == (1, 1), "the pod's two listen lines"
    return conf, port


@contextlib.contextmanager
def cluster_gateway(root: Path, synth: Synth) -> Iterator[tuple[Nginx, dict[str, FakeWorker]]]:
    conf, files = mounted(synth)
    conf, port = on_free_ports(conf)
    with contextlib.ExitStack() as stack:
        routers = {pool: stack.enter_context(FakeWorker(pool, ip, port=routing.PORT)) for pool, ip in ROUTERS.items()}
        yield stack.enter_context(run_nginx(root, conf, files, hosts(), port)), routers


def test_the_cluster_gateway_config_passes_nginx_t(k8s: Synth, tmp_path: Path) -> None:
    conf, files = mounted(k8s)
    result = nginx_test(tmp_path, conf, files, hosts())
    assert result.returncode == 0, result.stderr
    unresolved = nginx_test(tmp_path / "dns", conf, files, {})
    assert unresolved.returncode != 0 and "host not found in upstream" in unresolved.stderr, unresolved.stderr


def test_the_canary_gets_its_weight_through_its_router(k8s: Synth, tmp_path: Path) -> None:
    """`canary.weightPercent: 10`: of 400 requests (40 clients, under each one's limit), about a
    tenth reach the canary pool's router; the other model's routers get none of model one's."""
    with cluster_gateway(tmp_path, k8s) as (gw, routers):
        statuses = [
            call(gw.url, CHAT, key=key, body={"model": "mistral-7b-instruct", "messages": []}).status
            for _ in range(10)
            for key in CLIENTS.values()
        ]
    assert statuses.count(200) == 400, statuses
    canary, stable = len(routers["mistral-canary"].seen), len(routers["mistral"].seen)
    assert canary + stable == 400
    # Binomial(400, 0.1): mean 40, sd 6; the bounds are 4 sd either way.
    assert 16 <= canary <= 64, (canary, stable)
    assert not routers["smollm"].seen and not routers["smollm-canary"].seen
    assert all(s.headers.get("authorization") == f"Bearer {WORKER_KEY}" for s in routers["mistral"].seen[:5])


def test_each_replica_enforces_its_share_of_the_rate_limit(k8s: Synth, tmp_path: Path) -> None:
    """20 requests/s, burst 40, over 3 gateway replicas: each replica lets one client burst
    ceil(40/3) = 14 at once, then ceil(20/3) = 7 a second, so the three together admit the
    stack's limit (rounded up), not three times it."""
    key = next(iter(CLIENTS.values()))
    with cluster_gateway(tmp_path, k8s) as (gw, _):
        start = time.monotonic()
        statuses = [call(gw.url, CHAT, key=key, body={"messages": []}).status for _ in range(40)]
        elapsed = time.monotonic() - start
    admitted = statuses.count(200)
    assert set(statuses) <= {200, 429}
    burst, rate = math.ceil(40 / 3), math.ceil(20 / 3)
    assert burst <= admitted <= burst + 1 + math.ceil(rate * elapsed), (admitted, elapsed)
