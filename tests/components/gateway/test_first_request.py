"""The generated client key and the `firstRequest` output: who gets a key, that the gateway accepts
it, and that the printed commands are a shell script that sends it (the integration test runs
them against the ci stack on the real engine)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from components.gateway import first_request
from components.gateway.gateway import with_own_keys
from stacks.secrets import GATE_CLIENT, GENERATED_CLIENT
from tests.support.outputs import stack_outputs
from tools.synth import ROOT, synth_stack

CLIENTS_MAP = "/etc/nginx/inference-stack/clients.map"
TEAM_KEYS = json.dumps({"team-a": "team-a-key-0123456789"})


def clients_map(stack: str, stack_file: Path | None = None, secrets: dict[str, str] | None = None) -> str:
    synth = synth_stack(stack, stack_file, secrets=secrets, reveal=True)
    uploads = {u["file"]: u["content"] for u in synth.named("gateway-nginx")["inputs"]["uploads"]}
    return str(uploads[CLIENTS_MAP])


def test_dev_gets_a_generated_key_the_gateway_accepts_and_a_secret_first_request() -> None:
    outputs = stack_outputs("dev")
    key = outputs["gatewayClientKey"]
    assert key.secret and re.fullmatch(r"[A-Za-z0-9]{40}", key.value)
    assert f'"Bearer {key.value}" {GENERATED_CLIENT};' in clients_map("dev")
    first = outputs["firstRequest"]
    assert first.secret
    assert first.value == first_request.render("http://127.0.0.1:8080", "smollm2-1.7b", key.value)


def test_prod_generates_no_key_and_its_first_request_names_the_key_to_use() -> None:
    outputs = stack_outputs("prod")
    assert "gatewayClientKey" not in outputs
    first = outputs["firstRequest"]
    assert not first.secret and first_request.KEY_PLACEHOLDER in first.value
    assert "http://10.20.0.11:8080/v1/chat/completions" in first.value
    assert GENERATED_CLIENT not in clients_map("prod", secrets={"gatewayApiKeys": TEAM_KEYS})


def stack_file(tmp_path: Path, stack: str, **gateway: object) -> Path:
    doc = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())
    doc["config"].setdefault("inference-stack:gateway", {}).update(gateway)
    path = tmp_path / f"Pulumi.{stack}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.parametrize(
    ("generate", "keys", "expected"),
    [
        (None, False, True),  # unset and no gatewayApiKeys: generated (dev)
        (None, True, False),  # unset beside gatewayApiKeys: those keys alone
        (True, True, True),  # both (ci)
        (False, False, False),  # none at all (prod before its keys are set)
    ],
)
def test_generate_client_key_defaults_to_stacks_without_keys(
    tmp_path: Path, generate: bool | None, keys: bool, expected: bool
) -> None:
    path = stack_file(tmp_path, "dev", **({} if generate is None else {"generateClientKey": generate}))
    secrets = {"gatewayApiKeys": TEAM_KEYS} if keys else None
    assert ("gatewayClientKey" in stack_outputs("dev", path, secrets)) is expected
    clients = clients_map("dev", path, secrets)
    assert (f" {GENERATED_CLIENT};" in clients) is expected
    assert (" team-a;" in clients) is keys


@pytest.mark.parametrize("reserved", [GATE_CLIENT, GENERATED_CLIENT])
def test_a_client_may_not_take_a_name_the_gateway_keeps_for_itself(reserved: str) -> None:
    with pytest.raises(ValueError, match=f"`{reserved}` is the gateway's own"):
        with_own_keys(json.dumps({reserved: "k" * 20}), "gate-key-0123456789", "generated-key-0123456789")
    # Reserved even where the stack generates no key, so turning it on later cannot take a name.
    with pytest.raises(ValueError, match=f"`{reserved}` is the gateway's own"):
        with_own_keys(json.dumps({reserved: "k" * 20}), "", "")
    assert with_own_keys(json.dumps({"team-a": "k" * 20}), "g" * 20, "") == {"team-a": "k" * 20, GATE_CLIENT: "g" * 20}


@pytest.mark.parametrize(
    ("address", "url"),
    [
        ("127.0.0.1", "http://127.0.0.1:8080"),
        ("0.0.0.0", "http://127.0.0.1:8080"),
        ("::", "http://127.0.0.1:8080"),
        ("10.20.0.11", "http://10.20.0.11:8080"),
        ("fd00::11", "http://[fd00::11]:8080"),
    ],
)
def test_the_url_is_the_one_a_client_on_the_gateway_host_reaches(address: str, url: str) -> None:
    assert first_request.reachable_url(address, 8080) == url


def test_the_commands_are_one_shell_script_that_sends_the_key_in_each_request(tmp_path: Path) -> None:
    """Run with a fake curl and python3 that record what they get: the curl request as OpenAI's
    API takes it, and the client code as Python that compiles."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "curl").write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done > "$0.args"\n')
    (bin_dir / "python3").write_text('#!/bin/sh\ncat > "$0.stdin"\n')
    for tool in ("curl", "python3"):
        (bin_dir / tool).chmod(0o755)
    key = "k3y0123456789abcdefXYZ"
    script = first_request.render("http://127.0.0.1:18080", "smollm2-135m", key)
    bash = shutil.which("bash")
    assert bash is not None
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin"}
    run = subprocess.run([bash, "-euo", "pipefail", "-c", script], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    args = (bin_dir / "curl.args").read_text().splitlines()
    assert args[:3] == ["-sS", "-w", "\\n"] and args[3] == "http://127.0.0.1:18080/v1/chat/completions"
    assert args[args.index("-H") + 1] == f"Authorization: Bearer {key}"
    body = json.loads(args[args.index("-d") + 1])
    assert body["model"] == "smollm2-135m" and body["messages"][0]["content"] == "What is 2 + 2? Answer in digits."
    code = (bin_dir / "python3.stdin").read_text()
    compile(code, "first_request", "exec")
    assert f'api_key="{key}"' in code and 'base_url="http://127.0.0.1:18080/v1"' in code
