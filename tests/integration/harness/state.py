"""Pulumi's state for one stack: what the provider stored (its Read of `docker inspect`), the plan
of the next `apply` against it (`tests/integration/plan.py`'s rules), and what `apply` did."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from stacks import provider_rules
from tests.integration import plan as plan_mod
from tests.integration.harness.engine import HARNESS_LABELS, inspect
from tests.integration.harness.inputs import plan_container
from tests.integration.harness.kinds import CONTAINER

# What a container-update step sends: the fields the provider's Update passes to ContainerUpdate
# (resource_docker_container_funcs.go:1031-1060 at the pin in `stacks.provider_rules`); NanoCpus is
# not among them, `cpus` replaces.
UPDATE_FIELDS = ("Memory", "MemorySwap", "MemoryReservation", "CpuShares", "CpusetCpus", "RestartPolicy")


@dataclass
class Entry:
    """One resource in the state: its inputs as the provider stored them, and its id."""

    type: str
    inputs: dict[str, Any]
    id: str
    stdout: str = ""
    stderr: str = ""


@dataclass
class State:
    """Pulumi's state for one stack. A later `apply` diffs the program against it, not against
    what the program sent last time."""

    entries: dict[str, Entry] = field(default_factory=dict)


STATE = State()
"""The default stack's state; a test that applies a stack of its own passes its own `State`."""


def resolved(
    res: dict[str, Any], ids: dict[str, str | None], images: dict[str, str], digests: dict[str, str]
) -> dict[str, Any]:
    """The inputs the provider receives: an Image's mock digest as the built image's id, and a
    trigger that is another resource's id as that id (`plan.UNKNOWN` while it is still to be made)."""
    inputs = dict(res["inputs"])
    if res["type"] == CONTAINER and str(inputs.get("image")) in digests:
        inputs["image"] = images[digests[str(inputs["image"])]]
    if "triggers" in inputs:
        triggers = []
        for value in inputs["triggers"] or []:
            ref = str(value).removesuffix("-id")
            if str(value).endswith("-id") and ref in ids:
                triggers.append(ids[ref] or plan_mod.UNKNOWN)
            else:
                triggers.append(value)
        inputs["triggers"] = triggers
    return inputs


def _trigger_refs(res: dict[str, Any]) -> set[str]:
    return {str(t).removesuffix("-id") for t in res["inputs"].get("triggers") or [] if str(t).endswith("-id")}


def build_plan(
    resources: list[dict[str, Any]], state: State, images: dict[str, str], digests: dict[str, str]
) -> plan_mod.Plan:
    """Steps for every applied resource, and a delete for every one in state the program lost.
    Containers first: a command triggered by a container's id is replaced when the container is."""
    plan = plan_mod.Plan()
    ids: dict[str, str | None] = {}
    ordered = sorted(resources, key=lambda r: r["type"].startswith("command:"))
    for res in ordered:
        entry = state.entries.get(res["name"])
        new = resolved(res, ids, images, digests)
        step = plan_mod.step_for(res["name"], res["type"], new, None if entry is None else entry.inputs)
        plan.steps[res["name"]] = step
        ids[res["name"]] = entry.id if entry is not None and step.op not in ("create", "replace") else None
    names = {r["name"] for r in resources}
    for name, entry in state.entries.items():
        if name not in names:
            plan.steps[name] = plan_mod.Step(name, entry.type, "delete")
    by_name = {r["name"]: r for r in resources}
    for res in resources:
        step = plan.steps[res["name"]]
        if res["type"].startswith("command:") and step.op == "replace":
            replaced = sorted(r for r in _trigger_refs(res) if r in by_name and plan.steps[r].op == "replace")
            if replaced and all(by_name[r]["type"] == CONTAINER for r in replaced):
                step.deleted_before = replaced
                step.reason = f"deleted before {', '.join(replaced)}, which is replaced delete-first"
    return plan


def written(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The state after an update: Update does not end in Read, so it stores the new inputs as
    written; an Optional+Computed input left out keeps its stored value (`stacks/provider_rules.py`)."""
    computed = provider_rules.COMPUTED[CONTAINER]
    return {**{k: v for k, v in old.items() if k in computed and k not in new}, **new}


def _read(info: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
    """The provider's Read of a `docker inspect`, without the harness's own labels."""
    labels = {k: v for k, v in (info["Config"].get("Labels") or {}).items() if k not in HARNESS_LABELS}
    return provider_rules.container_state({**info, "Config": {**info["Config"], "Labels": labels}}, inputs)


def readback(cid: str, inputs: dict[str, Any]) -> dict[str, Any]:
    """What the provider stores after a create: its Read of the real `docker inspect`."""
    return _read(inspect(cid), inputs)


def predicted_state(res: dict[str, Any], **daemon: Any) -> dict[str, Any]:
    """What the provider would store for a container resource, from its inputs alone: the create
    request mapped as for the engine, the daemon's additions (`plan.engine_inspect`, with
    `daemon` its variants), then Read. The check for stacks no engine here can run."""
    inputs = res["inputs"]
    # The ci engine has no GPUs, so the mapping refuses device requests; the daemon reports them
    # as sent, which is what the provider's Read flattens.
    cpu_only = {k: v for k, v in inputs.items() if k != "deviceRequests"}
    body = plan_container({**res, "inputs": cpu_only}, str(inputs["image"]), start_interval_supported=True).body
    if inputs.get("deviceRequests"):
        body["HostConfig"]["DeviceRequests"] = [
            {
                "Driver": d.get("driver", ""),
                "Count": d.get("count", 0),
                "DeviceIDs": d.get("deviceIds"),
                "Capabilities": [d.get("capabilities") or []],
            }
            for d in inputs["deviceRequests"]
        ]
    return _read(plan_mod.engine_inspect(str(inputs["name"]), body, **daemon), inputs)


@dataclass
class Applied:
    containers: dict[str, str] = field(default_factory=dict)
    """Resource name -> container id."""
    names: dict[str, str] = field(default_factory=dict)
    """Resource name -> Docker container name."""
    networks: dict[str, str] = field(default_factory=dict)
    volumes: dict[str, str] = field(default_factory=dict)
    """Resource name -> Docker volume name."""
    images: dict[str, str] = field(default_factory=dict)
    """Image resource name -> built image id."""
    actions: dict[str, str] = field(default_factory=dict)
    """Resource name -> created / kept / updated / recorded / replaced / deleted / ran / skipped."""
    skipped: dict[str, str] = field(default_factory=dict)
    """Resource name -> why it was not applied."""
    notes: list[str] = field(default_factory=list)
    """Inputs the engine accepted but does not honour (e.g. healthcheck startInterval on API < 1.44)."""
    seconds: dict[str, float] = field(default_factory=dict)
    """Resource name -> seconds from create to running (or healthy, with wait)."""
    reports: dict[str, str] = field(default_factory=dict)
    """Canary gate resource name -> what the gate printed."""
    plan: plan_mod.Plan = field(default_factory=plan_mod.Plan)
    """What this apply planned before it changed anything."""
    commands_run: list[str] = field(default_factory=list)
    """Every command run, in order: `name create|update|delete`."""

    def inspect(self, resource: str) -> dict[str, Any]:
        return inspect(self.containers[resource])

    def url(self, resource: str, port: int, network: str | None = None) -> str:
        """http://host:port reaching `port` of a container: its published binding when there is one,
        else its address on `network` (default: its first network)."""
        info = self.inspect(resource)
        for binding in (info["NetworkSettings"]["Ports"] or {}).get(f"{port}/tcp") or []:
            host_ip = binding["HostIp"] or "127.0.0.1"
            host_ip = "127.0.0.1" if host_ip == "0.0.0.0" else host_ip
            return f"http://{host_ip}:{binding['HostPort']}"
        nets = info["NetworkSettings"]["Networks"]
        chosen = nets[network] if network else next(iter(nets.values()))
        return f"http://{chosen['IPAddress']}:{port}"
