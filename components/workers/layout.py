"""Where each worker's container goes in this update: create-before-delete onto a spare GPU when
the host has one, delete-before-replace when every GPU is in use.

The program reads the host's current worker containers back (`read`: `docker ps` through
`command.local.run`, an invoke that runs on every preview and update) with three labels each:
the slot (`inference-stack.slot`, the placement name), the GPUs it holds and the fingerprint of
its spec. `seat` then decides, per slot, in rollout order:

- **Not running yet** (a first deploy): its own GPUs and name.
- **Same fingerprint**: where it is. Nothing about it changes, so Pulumi leaves it alone.
- **New fingerprint, and GPUs free on the host**: the replacement goes onto free GPUs under the
  slot's other name (`<name>` and `<name>-b` alternate), create-before-delete: it is created and
  health-gated, joins the gateway, and only then is the old container drained and deleted (at the
  end of the update, as Pulumi deletes what it replaced). Those GPUs stay taken for the rest of
  the update, so one spare GPU moves one worker per update.
- **New fingerprint, every GPU in use**: delete-before-replace where it is (drain, delete,
  create, health, admit), one wave at a time.

Workers that publish a host port (those on hosts without the gateway) always stay where they
are: the replacement would need the same port. A host whose layout cannot be read (no Docker
CLI here, no SSH agent) is treated as full, with every worker under its own name on its own
GPUs, which is always safe (a worker that had moved is then moved back, delete-before-replace).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

import pulumi
import pulumi_command as command

from stacks.config import HostConfig
from stacks.placement import Placement

CREATE_FIRST = "create-before-delete"
DELETE_FIRST = "delete-before-replace"
SLOT_LABEL = "inference-stack.slot"
SPEC_LABEL = "inference-stack.spec"
GPUS_LABEL = "inference-stack.gpus"


@dataclass(frozen=True)
class Running:
    """A worker container on the host now."""

    name: str
    slot: str
    devices: tuple[str, ...]
    spec: str


@dataclass(frozen=True)
class Seat:
    """Where a slot's container goes: its name, its GPUs, and how Pulumi replaces it."""

    name: str
    devices: tuple[str, ...]
    strategy: str
    reason: str


def read_command(host: HostConfig, stack: str) -> str:
    """`docker ps` of the stack's workers on `host`, one tab-separated line each."""
    fmt = "\t".join(["{{.Names}}", *(f'{{{{.Label "{label}"}}}}' for label in (SLOT_LABEL, GPUS_LABEL, SPEC_LABEL))])
    argv = ["docker"]
    if host.ssh is not None:
        argv += ["-H", f"ssh://{host.ssh.user}@{host.ssh.address}:{host.ssh.port}"]
    argv += ["ps", "-a", "--filter", f"label=inference-stack.stack={stack}", "--filter"]
    argv += ["label=inference-stack.role=worker", "--format", fmt]
    # A host that cannot be read prints a marker instead of failing the preview.
    return shlex.join(argv) + " 2>/dev/null || echo unreadable"


def parse(stdout: str) -> list[Running] | None:
    """The running workers, or None when the host could not be read."""
    if stdout.strip() == "unreadable":
        return None
    found = []
    for line in stdout.splitlines():
        parts = line.split("\t")
        if len(parts) != 4 or not parts[1]:
            continue  # a worker from before slots were labelled: it keeps its place
        name, slot, gpus, spec = parts
        found.append(Running(name, slot, tuple(d for d in gpus.split(",") if d), spec))
    return found


def read(host: HostConfig, stack: str) -> list[Running] | None:
    """The host's workers now, read on every preview and update."""
    result = command.local.run(command=read_command(host, stack))
    running = parse(result.stdout or "")
    if running is None:
        pulumi.log.warn(
            f"host {host.name}: could not list its workers (`docker ps` over SSH needs the Docker CLI and an "
            "SSH agent here); every replacement on it is delete-before-replace"
        )
    return running


def other_name(base: str, current: str) -> str:
    return f"{base}-b" if current == base else base


def seat(
    placements: list[Placement],
    specs: dict[str, str],
    running: list[Running] | None,
    devices: list[str],
    stack: str,
) -> dict[str, Seat]:
    """Each slot's seat on one host. `placements`: the host's workers in rollout order; `specs`:
    each slot's new fingerprint; `running`: what `read` found (None: unreadable); `devices`: the
    host's GPUs."""
    if running is None:
        # Nothing known: every worker as the config places it, replaced where it is.
        return {p.name: Seat(p.container_name(stack), p.devices, DELETE_FIRST, _full(p, None)) for p in placements}
    now = {r.slot: r for r in running}
    held = {d for r in running for d in r.devices}
    held |= {d for p in placements if p.name not in now for d in p.devices}
    free = [d for d in devices if d not in held]
    seats = {}
    for p in placements:
        base = p.container_name(stack)
        current = now.get(p.name)
        if current is None:
            seats[p.name] = Seat(base, p.devices, DELETE_FIRST, "first deploy: its own GPUs")
            continue
        size = len(p.devices)
        if current.spec == specs[p.name] or size == 0:
            seats[p.name] = Seat(current.name, current.devices or p.devices, DELETE_FIRST, _full(p, running))
            continue
        if p.published_port is None and len(free) >= size:
            taken, free = tuple(free[:size]), free[size:]
            reason = f"GPU {','.join(taken)} is free: the new container starts there before the old one goes"
            seats[p.name] = Seat(other_name(base, current.name), taken, CREATE_FIRST, reason)
            continue
        seats[p.name] = Seat(current.name, current.devices, DELETE_FIRST, _full(p, running))
    return seats


def _full(p: Placement, running: list[Running] | None) -> str:
    if running is None:
        return "the host's layout could not be read: replaced where it is"
    if p.published_port is not None:
        return f"it publishes host port {p.published_port}, which a second container cannot take"
    return f"every GPU of {p.host.name} is in use: replaced where it is"
