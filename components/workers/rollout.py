"""Rolling updates: in which order Pulumi replaces a group's workers.

A change to a group's image, model revision or flags replaces every worker container of the
group (each of those inputs forces a new container). The program turns that into a rolling
update with Pulumi's own mechanisms:

- **Waves.** The group's workers are split, in placement order, into waves of
  `rollout.maxUnavailable`. Every worker of a wave `depends_on` the gateway-membership command of
  every worker of the wave before, so Pulumi starts replacing a wave only once the previous one
  is healthy (`wait=True`) and back in the gateway.
- **Create before delete, onto a spare GPU** (`layout.py`): when the host has GPUs no worker
  holds, a replaced worker starts there under its other name before the old one is drained and
  deleted. One spare GPU serves one worker per update.
- **Delete before replace, everywhere else.** A replacement needs what its predecessor holds: the
  GPUs in its device request, its container name, and (in a multi-host stack) its host port on the
  private address. So such a worker is `delete_before_replace`. Pulumi then first deletes the worker's
  membership command, whose delete step drains the worker (out of the gateway, then waits for its
  running requests, bounded by `rollout.drainTimeoutSeconds`), then deletes the container (SIGTERM,
  60 s grace), creates the new one, waits until its two-tier healthcheck passes, and runs the
  membership command again, which puts it back.

With a canary (`canary.py`), its workers come first: they form the first waves, and the rest of
the group waits for the canary gate and, at 100 %, the promotion.

`plan` says what that graph does, worker by worker, and why each one is delete-before-replace.
"""

from __future__ import annotations

from dataclasses import dataclass

from components.workers.layout import CREATE_FIRST, DELETE_FIRST, Seat
from stacks.placement import Placement

__all__ = ["CREATE_FIRST", "DELETE_FIRST", "Step", "plan"]


@dataclass(frozen=True)
class Step:
    """One worker's replacement in a rolling update."""

    worker: str
    """The placement name, e.g. `chat-gpu-a-0`."""
    wave: int
    after: tuple[str, ...]
    """Workers (of the previous wave) that must be healthy and back in the gateway first."""
    strategy: str
    reason: str


def _reason(placement: Placement) -> str:
    held = []
    if placement.devices:
        held.append(f"GPU {','.join(placement.devices)}")
    held.append("its container name")
    if placement.published_port is not None:
        held.append(f"host port {placement.published_port}")
    return "the replacement needs " + ", ".join(held) + ", which the old container holds until deleted"


def plan(placements: list[Placement], max_unavailable: int, seats: dict[str, Seat] | None = None) -> list[Step]:
    """The replacement order of one group's workers (`placements`, in placement order): canary
    workers first, in waves of their own. `seats` (from `layout.seat`) says which go
    create-before-delete onto a spare GPU; the rest are delete-before-replace."""
    steps: list[Step] = []
    previous: tuple[str, ...] = ()
    waves = []
    for part in ([p for p in placements if p.canary], [p for p in placements if not p.canary]):
        waves += [part[i : i + max_unavailable] for i in range(0, len(part), max_unavailable)]
    for number, wave in enumerate(waves):
        for p in wave:
            seat = (seats or {}).get(p.name)
            if seat is not None and seat.strategy == CREATE_FIRST:
                steps.append(Step(p.name, number, previous, CREATE_FIRST, seat.reason))
            else:
                steps.append(Step(p.name, number, previous, DELETE_FIRST, _reason(p)))
        previous = tuple(p.name for p in wave)
    return steps
