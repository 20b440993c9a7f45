"""The Gateway built alone, on a stub host: no stack file, no workers, no other component."""

from __future__ import annotations

import json

import pulumi

from components.gateway import nginx
from components.gateway.gateway import Gateway, GatewayArgs
from stacks.config import GatewayConfig
from tests.support.stub_host import stub_host
from tools.synth import SECRET, Synth, run

CONFIG = GatewayConfig(port=18081, listen_address="127.0.0.1")
ROUTES = [nginx.Route(model="m", stable=nginx.Pool(group="chat", servers=[]))]
CLIENTS = {"team-a": "sk-team-a-0123456789abcdef"}


def build(
    stack: str = "test", config: GatewayConfig = CONFIG, routes: list[nginx.Route] = ROUTES, **extra: object
) -> Synth:
    def program() -> None:
        Gateway(
            "gw",
            GatewayArgs(
                config=config,
                host=stub_host(),
                routes=routes,
                worker_key=pulumi.Output.secret("worker-key-0123456789abcdef"),
                client_keys=pulumi.Output.secret(json.dumps(CLIENTS)),
                stack=stack,
                **extra,  # type: ignore[arg-type]
            ),
        )

    return run(stack, {}, [], program)


def test_the_gateway_alone_publishes_only_its_port_on_its_address() -> None:
    synth = build()
    (container,) = [c for c in synth.of_type("docker:index/container:Container") if c["parent"] == "gw"]
    ports = container["inputs"]["ports"]
    assert ports == [{"internal": nginx.LISTEN_PORT, "external": 18081, "ip": "127.0.0.1"}]
    assert {r["parent"] for r in synth.resources if r["type"].startswith("docker:")} <= {"gw", "stub"}


def test_its_nginx_conf_is_the_renderer_s_and_its_keys_stay_secret() -> None:
    synth = build()
    files = {k.split("/", 1)[1]: v for k, v in synth.files().items() if k.startswith("gw-")}
    conf = next(v for k, v in files.items() if k.endswith("nginx.conf"))
    assert conf == nginx.render_nginx_conf(CONFIG, ROUTES)
    secret_files = [v for k, v in files.items() if "clients.map" in k or "worker-auth" in k]
    assert secret_files and set(secret_files) == {SECRET}
    assert CLIENTS["team-a"] not in json.dumps(synth.resources)


def test_without_a_generated_key_it_has_no_random_password() -> None:
    assert not build().of_type("random:index/randomPassword:RandomPassword")
    assert build(generate_client_key=True).of_type("random:index/randomPassword:RandomPassword")


def test_gateway_hardening() -> None:
    # dev's gateway: no `gateway` block in Pulumi.dev.yaml, so the defaults.
    synth = build(stack="dev", config=GatewayConfig())
    (nginx_container,) = [c for c in synth.of_type("docker:index/container:Container") if c["parent"] == "gw"]
    inputs = nginx_container["inputs"]
    # Writable root filesystem: see tests/components/test_uploads.py for why it cannot be read-only.
    assert "/tmp" in inputs["tmpfs"]
    assert inputs["healthcheck"]["tests"][:2] == ["CMD", "wget"]
    assert inputs["image"] == "nginx:1.28.0-alpine"
    assert inputs["stopSignal"] == "SIGQUIT"
    # Its edge network, and the network of the host its workers run on.
    assert {n["name"] for n in inputs["networksAdvanced"]} == {"dev-gateway", "stub-workers"}
