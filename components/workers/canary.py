"""Canary releases: the gate that must pass before a canary's weight rises, and the gateway steps
that raise it.

A group's `canary` runs its release on the group's last workers, which join the canary pool
(`<group>-canary`). Then, in this order, each step waiting for the one before:

1. **Gate** (`canary_gate.py`, a Pulumi command on the gateway host): accuracy probes through the
   gateway against the canary pool alone, then the canary's TTFT P95 from Prometheus against the
   stable workers' and an absolute ceiling. It runs when a canary worker is (re)created and when
   anything it checks against changes, the weight included. A failure fails `pulumi up` with its
   report; nothing after it runs, so the weight stays where it was.
2. **Split** (below 100 %): `members.sh split` gives the canary pool its share of the model's
   requests. Deleting the step (the canary removed) takes the share away; so does the canary
   pool losing its last worker.
3. **Promote** (at 100 %): `members.sh promote` moves the canary workers into the stable pool.
   Only then does the rest of the group roll onto the release, wave by wave, as in a rolling
   update (its first wave depends on this step).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi

from components.gateway import members
from stacks.config import WorkerGroup
from stacks.placement import canary_pool

GATE_SCRIPT = Path(__file__).with_name("files") / "canary_gate.py"
GATE_ARGV = ["python3", "-"]


@dataclass(frozen=True)
class GateTarget:
    """Where the gate, on the gateway host, reaches the gateway and Prometheus."""

    gateway_url: str
    key: pulumi.Output[str]
    """The gate's own gateway key (client `canary-gate`), a secret."""
    prometheus_url: str | None
    """None when the stack runs no Prometheus: the TTFT check is then skipped, and says so."""
    ttft_p95_seconds: float
    """The stack's TTFT P95 SLO, the ceiling unless the gate sets its own."""


def local_url(address: str, port: int) -> str:
    """A published port as a process on the same host reaches it."""
    return f"http://{'127.0.0.1' if address in ('0.0.0.0', '::') else address}:{port}"


def gate_params(group: WorkerGroup, target: GateTarget) -> dict[str, Any]:
    """Everything the gate checks, except its key. A change to any of it re-runs the gate."""
    canary = group.canary
    if canary is None:
        raise ValueError(f"group {group.name} has no canary")
    gate, release = canary.gate, group.released()
    return {
        "group": group.name,
        "pool": canary_pool(group.name),
        "model": group.model.served_name,
        "to_percent": canary.weight_percent,
        "release": {
            "image": release.image,
            "revision": release.model.revision,
            "extraArgs": release.extra_args,
        },
        "gateway_url": target.gateway_url,
        "prometheus_url": target.prometheus_url,
        "probes": [p.model_dump() for p in gate.probes],
        "requests": gate.requests,
        "ttft_p95_seconds": gate.ttft_p95_seconds or target.ttft_p95_seconds,
        "ttft_vs_stable_max": gate.ttft_vs_stable_max,
        "window_minutes": gate.window_minutes,
        "timeout_seconds": gate.timeout_seconds,
    }


def gate_stdin(params: dict[str, Any], key: str) -> str:
    """The gate program as `python3 -` reads it: the script, then a call with its parameters."""
    payload = json.dumps({**params, "key": key}, sort_keys=True)
    return f"{GATE_SCRIPT.read_text()}\n\nraise SystemExit(main(json.loads({payload!r})))\n"


def split_step(gateway: str, group: WorkerGroup) -> tuple[list[str], list[str]]:
    """(create, delete) of the step that gives the canary pool its share."""
    assert group.canary is not None
    model, pool = group.model.served_name, canary_pool(group.name)
    create = members.split_argv(gateway, model, pool, group.canary.weight_percent)
    return create, members.tolerant(members.split_argv(gateway, model, pool, 0))


def promote_step(gateway: str, group: WorkerGroup) -> list[str]:
    return members.promote_argv(gateway, canary_pool(group.name), group.name)
