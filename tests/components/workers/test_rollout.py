"""Rolling updates (components/workers/rollout.py) on the synthesized resource graph: the order
the dependency chain gives, delete-before-replace, and the serving capacity at every step of a
simulated `pulumi up` that replaces every worker of a group."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from components.gateway import members
from components.workers import rollout
from composition.platform import main as program
from stacks.errors import ConfigError
from stacks.validation import validate
from tools.synth import Synth, read_stack_file, run

CONTAINER = "docker:index/container:Container"


def with_rollout(stack: str, **rollout_config: Any) -> Synth:
    config, secret_keys = read_stack_file(Path(f"Pulumi.{stack}.yaml"))
    workers = json.loads(config["inference-stack:workers"])
    workers[0]["rollout"] = rollout_config
    config["inference-stack:workers"] = json.dumps(workers)
    return run(stack, config, secret_keys, program)


def workers_of(synth: Synth, group: str) -> list[str]:
    return sorted(
        (c["name"] for c in synth.of_type(CONTAINER) if c["parent"] == group),
        key=lambda n: (n.rsplit("-", 2)[1], int(n.rsplit("-", 1)[1])),
    )


def member_of(synth: Synth, worker: str) -> str:
    """The command that admits `worker` to the gateway: the one its container's id triggers."""
    (found,) = [
        r["name"]
        for r in synth.resources
        if f"{worker}-id" in (r["inputs"].get("triggers") or [])
        and members.parse_admit(str(r["inputs"].get("create", ""))) is not None
    ]
    return found


def simulate(synth: Synth, group: str) -> list[tuple[str, int]]:
    """A `pulumi up` that replaces every worker of `group` (a new image), as the engine schedules
    it from the synthesized graph: a replacement starts once everything it depends on in this
    update is done, all ready ones at once (the worst case). A delete-before-replace worker first
    loses its member command (the drain: out of the gateway), is deleted, created, waits for health,
    and gets its member back (in the gateway again). A create-before-delete one (onto a spare GPU)
    is created and admitted first; its old container is drained and deleted at the end of the
    update, as Pulumi deletes what it replaced. Returns (event, workers in the gateway)."""
    workers = workers_of(synth, group)
    member = {w: member_of(synth, w) for w in workers}
    done: set[str] = set()
    serving = len(workers)
    events = [("start", serving)]
    owner = {m: w for w, m in member.items()}

    def finished(dep: str) -> bool:
        """Whether a dependency is through with this update (anything not replaced always is)."""
        if dep in member:
            return dep in done
        if dep in owner:
            return owner[dep] in done
        return True

    while len(done) < len(workers):
        ready = [w for w in workers if w not in done and all(finished(d) for d in synth.depends.get(w, ()))]
        assert ready, f"the update is stuck: {sorted(set(workers) - done)} wait on each other"
        for w in ready:
            if w in synth.delete_first:
                # The engine deletes the dependents it must replace (the member: drain) before the worker.
                assert synth.depends_on(member[w], w)
                serving -= 1
                events.append((f"drain {w}", serving))
        for w in ready:
            serving += 1
            events.append((f"admit {w}", serving))
            done.add(w)
    for w in workers:
        if w not in synth.delete_first:
            serving -= 1
            events.append((f"drain the old {w}", serving))
    return events


@pytest.mark.parametrize("max_unavailable", [1, 2, 3])
def test_capacity_never_drops_below_n_minus_max_unavailable(max_unavailable: int) -> None:
    synth = with_rollout("prod", maxUnavailable=max_unavailable)
    assert set(workers_of(synth, "mistral")) <= synth.delete_first, "full hosts: every worker delete-first"
    events = simulate(synth, "mistral")
    n = len(workers_of(synth, "mistral"))
    low = min(serving for _, serving in events)
    print(f"maxUnavailable {max_unavailable}: {len(events) - 1} steps, lowest capacity {low}/{n}")
    assert low == n - max_unavailable
    assert all(serving >= n - max_unavailable for _, serving in events)
    assert events[-1][1] == n


def test_the_chain_orders_workers_in_waves_of_max_unavailable() -> None:
    synth = with_rollout("prod", maxUnavailable=3)
    workers = workers_of(synth, "mistral")
    waves = [workers[i : i + 3] for i in range(0, len(workers), 3)]
    for k, wave in enumerate(waves):
        for w in wave:
            direct = synth.depends[w]
            # Exactly the previous wave's member commands, nothing of the same or a later wave.
            assert {d for d in direct if d.endswith("-member")} == (
                {member_of(synth, p) for p in waves[k - 1]} if k else set()
            )
            assert not any(synth.depends_on(w, other) for other in wave if other != w)


def test_the_plan_gives_each_worker_its_reason() -> None:
    config, secret_keys = read_stack_file(Path("Pulumi.prod.yaml"))
    values = {k.split(":", 1)[1]: json.loads(v) if v[:1] in "[{" else v for k, v in config.items()}
    _, placements = validate("prod", values, {k.split(":", 1)[1] for k in secret_keys})
    steps = rollout.plan([p for p in placements if p.group.name == "mistral"], 1)
    assert [s.wave for s in steps] == list(range(8))
    gpu_b = steps[4:]
    assert [s.worker for s in gpu_b] == [f"mistral-gpu-b-{i}" for i in range(4)]
    assert gpu_b[0].after == ("mistral-gpu-a-3",)
    assert all(s.strategy == rollout.DELETE_FIRST for s in steps)
    assert "GPU 0" in gpu_b[0].reason and "host port 8000" in gpu_b[0].reason
    assert "host port" not in steps[0].reason  # gpu-a runs the gateway: its workers publish nothing
    assert rollout.plan([], 1) == []


def test_max_unavailable_that_empties_the_group_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as caught:
        with_rollout("prod", maxUnavailable=8)
    text = str(caught.value)
    assert "workers[0].rollout.maxUnavailable" in text and "at most 7" in text
