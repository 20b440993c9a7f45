"""The gateway as the shipped stacks declare it (Pulumi mocks): the only published port, secrets
as files, routes to local and remote workers, and workers joining it through member commands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from components.gateway import members
from composition.platform import main as program
from tools.synth import Synth, read_stack_file, run

CONTAINER = "docker:index/container:Container"


def gateway(s: Synth) -> dict[str, Any]:
    return s.named("gateway-nginx")


def member_servers(s: Synth) -> dict[str, list[str]]:
    """Pool -> the worker addresses its member commands admit."""
    found: dict[str, list[str]] = {}
    for res in s.resources:
        admit = members.parse_admit(str(res["inputs"].get("create", "")))
        if admit is not None:
            found.setdefault(admit[0], []).append(admit[2][0])
    return {pool: sorted(servers) for pool, servers in found.items()}


def test_gateway_is_the_only_published_api_port_in_dev(dev: Synth) -> None:
    published = {c["name"]: c["inputs"]["ports"] for c in dev.of_type(CONTAINER) if c["inputs"].get("ports")}
    # Besides the gateway, only the Prometheus, Grafana and Jaeger UIs, on loopback for an SSH tunnel.
    uis = ("monitoring-prometheus", "monitoring-grafana", "tracing-jaeger")
    assert set(published) == {"gateway-nginx", *uis}
    for ui in uis:
        assert all(p["ip"] == "127.0.0.1" for p in published[ui])
    (port,) = published["gateway-nginx"]
    assert port["internal"] == 8080 and port["external"] == 8080 and port["ip"] == "127.0.0.1"


def test_config_is_plain_and_keys_are_secret_files(dev: Synth) -> None:
    files = {u["file"]: u for u in gateway(dev)["inputs"]["uploads"]}
    conf = files["/etc/nginx/nginx.conf"]["content"]
    assert "proxy_buffering off;" in conf and "include /etc/nginx/inference-stack/members/chat/*.conf;" in conf
    assert "dev-chat-local-0" not in conf, "nginx.conf names no worker: they join through member commands"
    assert member_servers(dev) == {"chat": ["dev-chat-local-0:8000"]}
    assert files[members.SCRIPT_PATH]["permissions"] == "0555"
    for secret in ("/etc/nginx/inference-stack/clients.map", "/etc/nginx/inference-stack/worker-auth.conf"):
        assert files[secret]["content"] == "[secret]" and files[secret]["permissions"] == "0400"


def test_workers_join_the_gateway_through_member_commands(prod: Synth) -> None:
    workers = [c["name"] for c in prod.of_type(CONTAINER) if c["parent"] == "mistral"]
    assert len(workers) == 8
    for worker in workers:
        assert not prod.depends_on("gateway-nginx", worker), "the gateway starts first; workers join it"
        member = prod.named(f"{worker}-member")
        assert member["type"] == "command:remote:Command"  # the gateway host is an SSH host in prod
        assert member["parent"] == worker  # under its worker (alias: the pool, its old parent)
        assert prod.depends_on(member["name"], worker) and prod.depends_on(member["name"], "gateway-nginx")
        # A replaced worker replaces its member: drained first, admitted again after.
        assert member["inputs"]["triggers"] == [f"{worker}-id"]
        assert member["inputs"]["create"].startswith("sudo -n docker exec prod-gateway sh ")
        assert " drain mistral " in member["inputs"]["delete"]
    # A replaced gateway starts empty: one step admits every worker again, without draining any.
    readmit = prod.named("gateway-readmit")
    assert readmit["inputs"]["triggers"] == ["gateway-nginx-id"]
    for worker in workers:
        assert (
            prod.named(f"{worker}-member")["inputs"]["create"].removeprefix("sudo -n ") in readmit["inputs"]["create"]
        )
        assert prod.depends_on("gateway-readmit", f"{worker}-member")
    # Only mtail's replacement still needs a plain reload (nginx resolves the syslog host).
    reload = prod.named("gateway-reload")
    assert reload["inputs"]["create"] == "sudo -n docker kill --signal HUP prod-gateway"
    assert sorted(reload["inputs"]["triggers"]) == ["gateway-mtail-id", "gateway-nginx-id"]


def test_prod_upstreams_local_by_name_remote_by_private_address(prod: Synth) -> None:
    assert member_servers(prod)["mistral"] == [
        "10.20.0.12:8000",
        "10.20.0.12:8001",
        "10.20.0.12:8002",
        "10.20.0.12:8003",
        "prod-mistral-gpu-a-0:8000",
        "prod-mistral-gpu-a-1:8000",
        "prod-mistral-gpu-a-2:8000",
        "prod-mistral-gpu-a-3:8000",
    ]


# Status metrics: the mtail sidecar --------------------------------------------------------------

IMAGE = "docker:index/image:Image"


def stack_without_observability(stack: str) -> Synth:
    config, secret_keys = read_stack_file(Path(f"Pulumi.{stack}.yaml"))
    config["inference-stack:observability"] = json.dumps({"enabled": False})
    return run(stack, config, secret_keys, program)


def nginx_conf(s: Synth) -> str:
    return str({u["file"]: u["content"] for u in gateway(s)["inputs"]["uploads"]}["/etc/nginx/nginx.conf"])


def test_status_exporter_sits_beside_the_gateway_unpublished(dev: Synth, prod: Synth) -> None:
    for stack, synth in (("dev", dev), ("prod", prod)):
        mtail = synth.named("gateway-mtail")
        inputs = mtail["inputs"]
        assert mtail["type"] == CONTAINER and mtail["parent"] == "gateway"
        assert inputs["name"] == f"{stack}-gateway-mtail"
        assert "ports" not in inputs, "mtail publishes nothing: nginx and Prometheus reach it on the edge network"
        assert [n["name"] for n in inputs["networksAdvanced"]] == [f"{stack}-gateway"]
        assert inputs["readOnly"] is True and "uploads" not in inputs
        assert inputs["memory"] == 128 and inputs["restart"] == "unless-stopped"
        assert inputs["logDriver"] == "json-file"
        assert inputs["logOpts"]["max-size"] == "20m" and inputs["logOpts"]["max-file"] == "3"
        command = inputs["command"]
        assert command[command.index("--logs") + 1] == "udp://0.0.0.0:5140"
        assert command[command.index("--port") + 1] == "3903"
        # The built image, by id, so that a rebuild replaces the container.
        (image,) = synth.of_type(IMAGE)
        assert image["name"] == "gateway-mtail-image" and image["parent"] == "gateway"
        assert image["inputs"]["imageName"] == "inference-stack/mtail:3.0.0-rc50"
        assert image["inputs"]["skipPush"] is True
        context = Path(image["inputs"]["build"]["context"])
        assert (context / "Dockerfile").is_file() and (context / "gateway.mtail").is_file()
        assert inputs["image"].startswith("sha256:")
        # nginx resolves the syslog server's name when it loads its config, so mtail comes first.
        assert synth.depends_on("gateway-nginx", "gateway-mtail")
        assert f"access_log syslog:server={stack}-gateway-mtail:5140," in nginx_conf(synth)
        prometheus = {u["file"]: u["content"] for u in synth.named("monitoring-prometheus")["inputs"]["uploads"]}
        jobs = {
            j["job_name"]: j for j in yaml.safe_load(prometheus["/etc/prometheus/prometheus.yml"])["scrape_configs"]
        }
        assert jobs["gateway-status"]["static_configs"] == [{"targets": [f"{stack}-gateway-mtail:3903"]}]


def test_dev_reload_also_follows_mtail(dev: Synth) -> None:
    reload = dev.named("gateway-reload")
    assert "gateway-mtail-id" in reload["inputs"]["triggers"]
    assert dev.depends_on("gateway-reload", "gateway-nginx")


def test_no_status_exporter_without_observability() -> None:
    synth = stack_without_observability("prod")
    names = {r["name"] for r in synth.resources}
    assert "gateway-mtail" not in names and synth.of_type(IMAGE) == []
    assert "monitoring-prometheus" not in names
    assert "syslog:" not in nginx_conf(synth) and "gateway_status" not in nginx_conf(synth)
    # No mtail, so no reload for it; workers still join through their member commands.
    assert "gateway-reload" not in names
    assert len(member_servers(synth)["mistral"]) == 8
