"""Where a replaced worker goes (components/workers/layout.py): onto a spare GPU, create-before-
delete, only when the host has one; delete-before-replace where it is when every GPU is in use.
`seat` is checked directly, `parse` against the real `docker ps` of this machine's engine, and
the whole path on the synthesized prod stack with the host's layout read back through the
mocked `command.local.run`."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

from components.workers import layout, rollout, spec
from components.workers.layout import CREATE_FIRST, DELETE_FIRST, Running
from composition.platform import main as program
from stacks.config import HostConfig, StackConfig
from stacks.placement import Placement
from stacks.rules import check
from tests.components.workers.test_rollout import simulate
from tests.helpers import valid_config
from tests.support.docker_engine import require_engine
from tools.synth import Synth, read_stack_file, run

CONTAINER = "docker:index/container:Container"
EMPTY_TAR = b"\0" * 1024  # a tar archive with no entries: two zero blocks


def three_workers_on(gpus: int) -> tuple[StackConfig, list[Placement]]:
    raw = valid_config()
    raw["hosts"][0]["gpus"] = {"count": gpus}
    raw["workers"][0].update(replicasPerHost=3)
    cfg = StackConfig.model_validate(raw)
    placements, issues = check(cfg, {})
    assert not issues
    return cfg, placements


def running(
    placements: list[Placement], spec_of: str = "old", moved: dict[str, tuple[str, str]] | None = None
) -> list[Running]:
    out = []
    for p in placements:
        name, devices = (moved or {}).get(p.name, (p.container_name("dev"), ",".join(p.devices)))
        out.append(Running(name, p.name, tuple(devices.split(",")), spec_of))
    return out


def test_a_full_host_replaces_every_worker_where_it_is() -> None:
    _, placements = three_workers_on(3)
    seats = layout.seat(placements, {p.name: "new" for p in placements}, running(placements), ["0", "1", "2"], "dev")
    assert {s.strategy for s in seats.values()} == {DELETE_FIRST}
    assert [s.devices for s in seats.values()] == [("0",), ("1",), ("2",)]
    assert all("every GPU of gpu-a is in use" in s.reason for s in seats.values())


def test_one_spare_gpu_moves_the_first_replaced_worker_and_the_next_update_moves_it_back() -> None:
    _, placements = three_workers_on(4)
    new = {p.name: "new" for p in placements}
    seats = layout.seat(placements, new, running(placements), ["0", "1", "2", "3"], "dev")
    first, second, third = (seats[p.name] for p in placements)
    assert (first.name, first.devices, first.strategy) == ("dev-chat-gpu-a-0-b", ("3",), CREATE_FIRST)
    assert "GPU 3 is free" in first.reason
    # GPU 0 stays held by the old container until the update ends: the rest go where they are.
    assert (second.devices, second.strategy) == (("1",), DELETE_FIRST)
    assert (third.devices, third.strategy) == (("2",), DELETE_FIRST)

    # The next update: chat-gpu-a-0 runs on GPU 3 as `-b`; GPU 0 is the spare now.
    after = running(placements, "new", moved={"chat-gpu-a-0": ("dev-chat-gpu-a-0-b", "3")})
    newer = {p.name: "newer" for p in placements}
    seats = layout.seat(placements, newer, after, ["0", "1", "2", "3"], "dev")
    assert (seats["chat-gpu-a-0"].name, seats["chat-gpu-a-0"].devices) == ("dev-chat-gpu-a-0", ("0",))
    assert seats["chat-gpu-a-0"].strategy == CREATE_FIRST
    # Nothing changed: everything stays exactly where it runs.
    same = layout.seat(placements, new, after, ["0", "1", "2", "3"], "dev")
    assert (same["chat-gpu-a-0"].name, same["chat-gpu-a-0"].devices) == ("dev-chat-gpu-a-0-b", ("3",))
    assert {s.strategy for s in same.values()} == {DELETE_FIRST}


def test_a_first_deploy_an_unreadable_host_and_a_publishing_worker_never_move() -> None:
    _, placements = three_workers_on(4)
    new = {p.name: "new" for p in placements}
    fresh = layout.seat(placements, new, [], ["0", "1", "2", "3"], "dev")
    assert [(s.name, s.devices) for s in fresh.values()] == [(p.container_name("dev"), p.devices) for p in placements]
    blind = layout.seat(placements, new, None, ["0", "1", "2", "3"], "dev")
    assert {s.strategy for s in blind.values()} == {DELETE_FIRST}
    assert "could not be read" in blind["chat-gpu-a-0"].reason
    publishing = [Placement(p.group, p.host, p.index, p.devices, 8000 + p.index) for p in placements]
    seats = layout.seat(publishing, new, running(placements), ["0", "1", "2", "3"], "dev")
    assert {s.strategy for s in seats.values()} == {DELETE_FIRST}
    assert "publishes host port 8000" in seats["chat-gpu-a-0"].reason


def test_parse_reads_what_docker_ps_prints_for_labelled_containers() -> None:
    """Two created (never started) containers with the labels the workers carry, listed by the
    exact command `read` runs for a local host."""
    require_engine()
    # An empty image is enough: the containers are only created, never started.
    image = "inference-stack-layout-test:empty"
    subprocess.run(["docker", "import", "-", image], input=EMPTY_TAR, check=True, capture_output=True)
    stack = f"layout-{uuid.uuid4().hex[:8]}"
    names = [f"{stack}-chat-gpu-a-0-b", f"{stack}-chat-gpu-a-1"]
    try:
        for name, slot, gpus in ((names[0], "chat-gpu-a-0", "3"), (names[1], "chat-gpu-a-1", "1,2")):
            labels = {
                "inference-stack.stack": stack,
                "inference-stack.role": "worker",
                layout.SLOT_LABEL: slot,
                layout.GPUS_LABEL: gpus,
                layout.SPEC_LABEL: "abc123",
            }
            argv = ["docker", "create", "--name", name, *[f"--label={k}={v}" for k, v in labels.items()], image, "true"]
            subprocess.run(argv, check=True, capture_output=True)
        shown = subprocess.run(
            ["sh", "-c", layout.read_command(HostConfig(name="local"), stack)], capture_output=True, text=True
        )
    finally:
        subprocess.run(["docker", "rm", "-f", *names], capture_output=True)
    found = sorted(layout.parse(shown.stdout) or [], key=lambda r: r.slot)
    assert found == [
        Running(names[0], "chat-gpu-a-0", ("3",), "abc123"),
        Running(names[1], "chat-gpu-a-1", ("1", "2"), "abc123"),
    ]
    assert layout.parse("unreadable\n") is None


# The synthesized prod stack -----------------------------------------------------------------------


def prod(gpus_a: int, runs: dict[str, str] | None = None, revision: str | None = None) -> Synth:
    config, secret_keys = read_stack_file(Path("Pulumi.prod.yaml"))
    hosts = json.loads(config["inference-stack:hosts"])
    hosts[0]["gpus"]["count"] = gpus_a
    config["inference-stack:hosts"] = json.dumps(hosts)
    workers = json.loads(config["inference-stack:workers"])
    workers[0]["replicasPerHost"] = 4
    if revision is not None:
        workers[0]["model"]["revision"] = revision
    config["inference-stack:workers"] = json.dumps(workers)
    return run("prod", config, secret_keys, program, runs=runs)


def ps_lines(s: Synth, host: str) -> str:
    """What `docker ps` would print on `host` after `s` was applied."""
    lines = []
    for c in s.of_type(CONTAINER):
        labels = {item["label"]: item["value"] for item in c["inputs"].get("labels", [])}
        if labels.get("inference-stack.host") == host and labels.get("inference-stack.role") == "worker":
            lines.append(
                "\t".join(
                    [
                        c["inputs"]["name"],
                        labels[layout.SLOT_LABEL],
                        labels[layout.GPUS_LABEL],
                        labels[layout.SPEC_LABEL],
                    ]
                )
            )
    return "\n".join(lines) + "\n"


def gpu_a_command() -> str:
    config, _ = read_stack_file(Path("Pulumi.prod.yaml"))
    host = HostConfig.model_validate(json.loads(config["inference-stack:hosts"])[0])
    return layout.read_command(host, "prod")


def test_on_prod_delete_before_replace_is_taken_only_when_the_gpus_are_full() -> None:
    new_revision = "2" * 40
    # gpu-a with a fifth, spare GPU: the revision change moves mistral-gpu-a-0 onto GPU 4 first.
    before = prod(5)
    after = prod(5, runs={gpu_a_command(): ps_lines(before, "gpu-a")}, revision=new_revision)
    moved = after.named("mistral-gpu-a-0")["inputs"]
    assert moved["name"] == "prod-mistral-gpu-a-0-b" and moved["deviceRequests"][0]["deviceIds"] == ["4"]
    assert "mistral-gpu-a-0" not in after.delete_first
    assert {"mistral-gpu-a-1", "mistral-gpu-a-2", "mistral-gpu-a-3"} <= after.delete_first
    # gpu-b publishes its workers' ports: replaced where they are, spare GPU or not.
    assert {f"mistral-gpu-b-{i}" for i in range(4)} <= after.delete_first
    # The moved worker joins the gateway under its new name; Prometheus still scrapes the slot.
    member = after.named("mistral-gpu-a-0-member")["inputs"]["create"]
    assert "prod-mistral-gpu-a-0-b:8000" in member
    assert "prod-mistral-gpu-a-0" in moved["networksAdvanced"][0]["aliases"]
    # Its compile cache is the slot's, not the name's.
    assert moved["volumes"][0]["hostPath"].endswith("/prod-mistral-gpu-a-0")

    # The same change on full hosts (prod as shipped, read back or not): delete-before-replace everywhere.
    full = prod(4, revision=new_revision)
    assert {w["name"] for w in full.of_type(CONTAINER) if w["parent"] == "mistral"} <= full.delete_first


def test_an_unchanged_stack_reads_back_to_the_same_resources() -> None:
    before = prod(5)
    again = prod(5, runs={gpu_a_command(): ps_lines(before, "gpu-a")})
    assert [r for r in again.resources] == [r for r in before.resources]


def test_the_plan_names_the_strategy_and_why() -> None:
    _, placements = three_workers_on(4)
    seats = layout.seat(
        placements, {p.name: "new" for p in placements}, running(placements), ["0", "1", "2", "3"], "dev"
    )
    steps = rollout.plan(placements, 1, seats)
    assert [s.strategy for s in steps] == [CREATE_FIRST, DELETE_FIRST, DELETE_FIRST]
    assert "GPU 3 is free" in steps[0].reason and "GPU 1" in steps[1].reason
    assert len(spec.fingerprint(placements[0].group)) == 16


def test_a_spare_gpu_keeps_capacity_whole_while_its_worker_is_replaced() -> None:
    """The simulated update over the synthesized graph: the worker that moves to the spare GPU is
    admitted beside its old container, which serves until the update ends; so while each of the
    others is replaced in turn, the gateway still has 8 workers: capacity never drops below 8/8."""
    before = prod(5)
    after = prod(5, runs={gpu_a_command(): ps_lines(before, "gpu-a")}, revision="2" * 40)
    events = simulate(after, "mistral")
    first = [serving for event, serving in events if "mistral-gpu-a-0" in event]
    assert first[0] == 9  # admitted beside the old one, before anything was drained
    assert min(serving for _, serving in events) == 8 and events[-1][1] == 8
