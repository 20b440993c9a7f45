"""Canary releases on the synthesized prod stack (Pulumi mocks): where the canary runs, the
gateway steps that give it its weight at each promotion step, the gate before every rise, and
that promotion, folding and rollback replace exactly what they must."""

from __future__ import annotations

import ast
import json
import tempfile
from pathlib import Path
from typing import Any

import yaml

from components.gateway import members
from composition.platform import main as program
from tools.synth import Synth, read_stack_file, run, synth_stack

CONTAINER = "docker:index/container:Container"
NEW = "1" * 40
CANARY = "mistral-gpu-b-3"
MODEL = "mistral_7b_instruct"


def prod(canary: dict[str, Any] | None = None, revision: str | None = None, reveal: bool = False) -> Synth:
    config, secret_keys = read_stack_file(Path("Pulumi.prod.yaml"))
    workers = json.loads(config["inference-stack:workers"])
    if canary is not None:
        workers[0]["canary"] = canary
    if revision is not None:
        workers[0]["model"]["revision"] = revision
    config["inference-stack:workers"] = json.dumps(workers)
    return run("prod", config, secret_keys, program)


def at(weight: int, **more: Any) -> Synth:
    return prod({"revision": NEW, "weightPercent": weight, **more})


def workers(s: Synth) -> dict[str, dict[str, Any]]:
    return {c["name"]: c["inputs"] for c in s.of_type(CONTAINER) if c["parent"] == "mistral"}


def revision(inputs: dict[str, Any]) -> str:
    command = inputs["command"]
    return str(command[command.index("--revision") + 1])


def pools(s: Synth) -> dict[str, str]:
    """Worker address -> the pool its member command admits it to."""
    found = {}
    for res in s.resources:
        admit = members.parse_admit(str(res["inputs"].get("create", "")))
        if admit is not None and res["name"] != "gateway-readmit":
            found[admit[2][0]] = admit[0]
    return found


def gateway_steps(s: Synth) -> dict[str, str]:
    return {
        r["name"]: str(r["inputs"]["create"])
        for r in s.resources
        if r["name"] in ("mistral-canary-split", "mistral-canary-promote")
    }


def test_the_canary_is_the_groups_last_worker_and_nothing_else_changes() -> None:
    base, ten = prod(), at(10)
    before, after = workers(base), workers(ten)
    assert before.keys() == after.keys()
    changed = {name for name in before if before[name] != after[name]}
    assert changed == {CANARY}
    assert revision(after[CANARY]) == NEW and revision(before[CANARY]) != NEW
    # The gateway is untouched: its config names no worker and has the canary pool already.
    assert base.named("gateway-nginx")["inputs"] == ten.named("gateway-nginx")["inputs"]
    assert pools(ten)["10.20.0.12:8003"] == "mistral_canary"
    assert {pool for address, pool in pools(ten).items() if address != "10.20.0.12:8003"} == {"mistral"}
    # Its targets are labelled as the canary for the dashboards and the gate's TTFT query.
    prometheus = ten.files()["monitoring-prometheus/etc/prometheus/prometheus.yml"]
    assert '"role": "canary"' in prometheus or "role: canary" in prometheus


def test_the_gateway_weights_follow_each_promotion_step() -> None:
    steps = {weight: gateway_steps(at(weight)) for weight in (10, 50, 100)}
    script = f"sudo -n docker exec prod-gateway sh {members.SCRIPT_PATH}"
    assert steps[10] == {"mistral-canary-split": f"{script} split {MODEL} mistral_canary 10"}
    assert steps[50] == {"mistral-canary-split": f"{script} split {MODEL} mistral_canary 50"}
    assert steps[100] == {"mistral-canary-promote": f"{script} promote mistral_canary mistral"}
    assert gateway_steps(prod()) == {}
    # Taking the split away (rollback, or the canary's end) gives the share back, gateway or not.
    delete = at(10).named("mistral-canary-split")["inputs"]["delete"]
    assert delete.startswith("sudo -n sh -c ") and delete.endswith(f"split {MODEL} mistral_canary 0")


def test_the_gate_runs_after_the_canary_is_healthy_and_before_its_weight_rises() -> None:
    for weight in (10, 50):
        s = at(weight)
        assert s.depends_on("mistral-canary-split", "mistral-canary-gate")
        assert s.depends_on("mistral-canary-gate", f"{CANARY}-member")
        assert s.depends_on("mistral-canary-gate", CANARY)
        assert s.named("mistral-canary-gate")["inputs"]["triggers"] == [f"{CANARY}-id"]
    hundred = at(100)
    assert hundred.depends_on("mistral-canary-promote", "mistral-canary-gate")
    # At 100 % the rest of the group rolls only after the gate passed and the canary was promoted.
    for name in workers(hundred):
        if name != CANARY:
            assert hundred.depends_on(name, "mistral-canary-promote"), name


def test_a_weight_change_reruns_the_gate_and_replaces_no_worker() -> None:
    ten, fifty = at(10, gate={"probes": [{"prompt": "Capital of France?", "expect": "Paris"}]}), at(50)
    assert workers(ten) == workers(at(10))
    assert workers(ten) == workers(fifty)
    # The gate's parameters are its stdin: a new weight (or probe) is a changed input, so it runs again.
    revealed = [
        run_revealed(weight, probes) for weight, probes in ((10, []), (50, []), (10, [("Capital of France?", "Paris")]))
    ]
    assert len(set(revealed)) == 3
    params = gate_params_of(revealed[0])
    assert params["to_percent"] == 10 and params["pool"] == "mistral-canary" and params["probes"] == []


def gate_params_of(stdin: str) -> dict[str, Any]:
    """The parameters `canary.gate_stdin` appended to the gate program."""
    last = stdin.strip().splitlines()[-1]
    prefix, suffix = "raise SystemExit(main(json.loads(", ")))"
    assert last.startswith(prefix) and last.endswith(suffix)
    params: dict[str, Any] = json.loads(ast.literal_eval(last[len(prefix) : -len(suffix)]))
    return params


def run_revealed(weight: int, probes: list[tuple[str, str]]) -> str:
    config, _ = read_stack_file(Path("Pulumi.prod.yaml"))
    workers_ = json.loads(config["inference-stack:workers"])
    workers_[0]["canary"] = {
        "revision": NEW,
        "weightPercent": weight,
        "gate": {"probes": [{"prompt": p, "expect": e} for p, e in probes]},
    }
    data = yaml.safe_load(Path("Pulumi.prod.yaml").read_text())
    data["config"]["inference-stack:workers"] = workers_
    path = Path(tempfile.mkdtemp()) / "Pulumi.prod.yaml"
    path.write_text(yaml.safe_dump(data))
    s = synth_stack("prod", stack_file=path, secrets=SECRETS, reveal=True)
    return str(s.named("mistral-canary-gate")["inputs"]["stdin"])


SECRETS = {"gatewayApiKeys": json.dumps({"team": "sk-team-0123456789abcdef"}), "vllmApiKey": "wk-0123456789abcdef"}


def test_promotion_rolls_the_rest_onto_the_release_and_folding_replaces_nothing() -> None:
    ten, hundred = workers(at(10)), workers(at(100))
    assert {revision(w) for w in hundred.values()} == {NEW}
    assert hundred[CANARY] == ten[CANARY], "the canary worker is not replaced again at 100 %"
    folded = prod(revision=NEW)
    assert workers(folded) == hundred, "folding the release into the group replaces no worker"
    # The canary's member command moves it to the stable pool (an update: its trigger is unchanged).
    member = f"{CANARY}-member"
    assert at(100).named(member)["inputs"]["triggers"] == folded.named(member)["inputs"]["triggers"]
    assert set(pools(folded).values()) == {"mistral"}
    assert gateway_steps(folded) == {}


def test_removing_the_canary_rolls_only_the_canary_back() -> None:
    base, ten = workers(prod()), workers(at(10))
    assert {n for n in base if base[n] != ten[n]} == {CANARY}
    assert set(pools(prod()).values()) == {"mistral"}


def test_the_gate_key_stays_secret_and_out_of_argv() -> None:
    s = at(10)
    gate = s.named("mistral-canary-gate")
    assert gate["inputs"]["create"] == "sudo -n python3 -" and gate["inputs"]["stdin"] == "[secret]"
    revealed = run_revealed(10, [])
    key = gate_params_of(revealed)["key"]
    assert len(key) == 48
    for res in s.resources:
        for field in ("create", "delete"):
            assert key not in str(res["inputs"].get(field, ""))


def test_both_releases_are_fetched_and_pulled_on_the_canarys_host() -> None:
    s = at(10, image="vllm/vllm-openai:v0.32.1")
    steps = {r["name"] for r in s.resources if r["name"].startswith("gpu-b-weights-")}
    assert steps == {"gpu-b-weights-mistral-7b-instruct", f"gpu-b-weights-mistral-7b-instruct-{NEW[:12]}"}
    assert {r["name"] for r in s.resources if r["name"].startswith("gpu-a-weights-")} == {
        "gpu-a-weights-mistral-7b-instruct"
    }
    pull = s.files()["gpu-b-images/pull-images.sh"]
    assert pull  # the script; the images are its arguments
    create = s.named("gpu-b-images")["inputs"]["create"]
    assert "vllm/vllm-openai:v0.32.0" in create and "vllm/vllm-openai:v0.32.1" in create
