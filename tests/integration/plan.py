"""Plan a `pulumi up` the way the engine and the real providers would: new inputs against stored state.

The stored state is what the provider's Read made of the created object (for a container, its
`docker inspect` through `stacks.provider_rules.container_state`), not the inputs the program sent.
Each changed input path is classified by `stacks.provider_rules.rule`: a replacing change replaces
the resource, an in-place one updates it, a state-only one is only recorded. `render` prints the plan
the way `pulumi preview --diff` lists it.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from stacks import provider_rules

Op = Literal["create", "same", "update", "record", "replace", "delete"]
# Terraform TypeSet fields: order is not a change. Everything else compares in order.
SET_PATHS = {
    "envs",
    "securityOpts",
    "capabilities.adds",
    "capabilities.drops",
    "labels",
    "mounts",
    "volumes",
    "uploads",
    "networksAdvanced",
    "networksAdvanced[].aliases",
    "ports",
}
MASKED = {"uploads[].content", "stdin", "connection.privateKey", "connection.password"}
SYMBOL = {"create": "+", "same": " ", "update": "~", "record": "~", "replace": "+-", "delete": "-"}
UNKNOWN = "<computed>"


@dataclass(frozen=True)
class FieldChange:
    path: str
    old: Any
    new: Any
    change: provider_rules.Change
    source: str


@dataclass
class Step:
    name: str
    type: str
    op: Op
    changes: list[FieldChange] = field(default_factory=list)
    reason: str = ""
    """Why a step is what it is beyond its own fields (a replacement forced by a dependency)."""
    deleted_before: list[str] = field(default_factory=list)
    """Containers replaced delete-first whose replacement deletes this resource before them."""


@dataclass
class Plan:
    steps: dict[str, Step] = field(default_factory=dict)

    def count(self, op: Op) -> int:
        return sum(1 for s in self.steps.values() if s.op == op)

    def changed(self) -> dict[str, Op]:
        return {n: s.op for n, s in self.steps.items() if s.op != "same"}

    def render(self, title: str = "Previewing update") -> str:
        lines = [f"{title}:"]
        for step in self.steps.values():
            if step.op == "same":
                continue
            fields = " ".join(f"~{c.path}" for c in step.changes)
            why = f" ({step.reason})" if step.reason else ""
            label = {"record": "update (state only)"}.get(step.op, step.op)
            lines.append(
                f"  {SYMBOL[step.op]:>2} {step.type} {step.name} {label}{why}"
                + (f" [diff: {fields}]" if fields else "")
            )
            for c in step.changes:
                lines.append(
                    f"        ~ {c.path}: {_show(c.path, c.old)} => {_show(c.path, c.new)}  ({c.change}; {c.source})"
                )
        lines.append("Resources:")
        for op in ("create", "update", "record", "replace", "delete"):
            if n := self.count(op):
                lines.append(f"    {SYMBOL[op]} {n} to {({'record': 'update (state only)'}).get(op, op)}")
        lines.append(f"    {self.count('same')} unchanged")
        return "\n".join(lines)


def _show(path: str, value: Any) -> str:
    if value is None:
        return "(none)"
    if path in MASKED or path.endswith("[].content"):
        text = json.dumps(value, sort_keys=True, default=str)
        return f"[{len(text)} chars, sha256 {hashlib.sha256(text.encode()).hexdigest()[:8]}]"
    # Container ids and digests: their first 12 characters, as `docker ps` shows them.
    text = re.sub(r"\b(?:sha256:)?([0-9a-f]{12})[0-9a-f]{52}\b", r"\1", json.dumps(value, sort_keys=True, default=str))
    return text if len(text) <= 120 else text[:117] + "..."


def value_at(inputs: dict[str, Any], path: str) -> Any:
    """The value of one input path; `a[].b` is the list of `b` over the elements of `a`."""
    head, _, rest = path.partition(".")
    if head.endswith("[]"):
        items = inputs.get(head[:-2])
        if not isinstance(items, list):
            return None
        if not rest:
            return items
        return [value_at(item, rest) if isinstance(item, dict) else None for item in items]
    value = inputs.get(head)
    if not rest:
        return value
    return value_at(value, rest) if isinstance(value, dict) else None


def _zeroed(value: Any) -> Any:
    # terraform-plugin-sdk compares an unset attribute as its type's zero value.
    return None if value in ([], {}, "", 0, False) else value


def _canonical(path: str, value: Any) -> Any:
    value = _zeroed(value)
    if isinstance(value, list):
        items = [json.dumps(_zeroed(v), sort_keys=True, default=str) for v in value]
        set_like = path in SET_PATHS or path.split("[]")[0] in SET_PATHS
        return sorted(items) if set_like else items
    return json.dumps(value, sort_keys=True, default=str)


def diff(type_: str, new: dict[str, Any], old: dict[str, Any]) -> list[FieldChange]:
    """Every input path whose value differs between the new inputs and the stored state."""
    rules = provider_rules.RULES.get(type_, {})
    computed = provider_rules.COMPUTED.get(type_, frozenset())
    defaults = provider_rules.DEFAULTS.get(type_, {})
    # What the program sets, and what the state holds for an input the table knows: a state-only
    # attribute the program never sets (a port's protocol) is compared through its default.
    paths = provider_rules.input_paths(new) | {p for p in provider_rules.input_paths(old) if p in rules}
    changes = []
    for path in sorted(paths):
        before, after = value_at(old, path), value_at(new, path)
        top = path.split(".")[0].removesuffix("[]")
        if top not in new and (top in computed or path in computed):
            continue  # Optional+Computed: left out, it keeps what Read stored
        if path in defaults:
            after = _defaulted(after, defaults[path])
            before = _defaulted(before, defaults[path])
        if _canonical(path, before) == _canonical(path, after):
            continue
        rule = provider_rules.rule(type_, path)
        changes.append(FieldChange(path, before, after, rule.change, rule.source))
    return changes


def _defaulted(value: Any, default: Any) -> Any:
    if isinstance(value, list):
        return [default if v is None else v for v in value]
    return default if value is None else value


def step_for(name: str, type_: str, new: dict[str, Any] | None, old: dict[str, Any] | None) -> Step:
    if old is None:
        return Step(name, type_, "create")
    if new is None:
        return Step(name, type_, "delete")
    changes = diff(type_, new, old)
    kinds = {c.change for c in changes}
    op: Op = "replace" if "replace" in kinds else "update" if "update" in kinds else "record" if kinds else "same"
    return Step(name, type_, op, changes)


MIB = 1024 * 1024


def engine_inspect(
    name: str,
    body: dict[str, Any],
    *,
    api_version: tuple[int, int] = (1, 41),
    daemon_log_opts: dict[str, str] | None = None,
    ipv6_ports: bool = False,
) -> dict[str, Any]:
    """What the Docker daemon reports for a container created with the Engine API `body`, for
    the fields the provider's Read uses: the check of a stack no engine here can run (prod, with
    GPUs). `test_stack.py` holds it against the real engine's `docker inspect` for the ci stack.

    The daemon's own additions: MemorySwap twice Memory when unset (moby daemon_unix.go:343),
    ShmSize 64 MiB when unset (:347), its default log-opts merged into a json-file container's
    (daemon/logs.go:177), StartInterval dropped before API 1.44, and with `ipv6_ports` each
    binding on 0.0.0.0 listed a second time on `::` (docker-proxy on a dual-stack host)."""
    config, host = dict(body), dict(body["HostConfig"])
    image = str(config.get("Image"))
    config.pop("HostConfig")
    config.pop("NetworkingConfig", None)
    memory = host.get("Memory") or 0
    if memory and not host.get("MemorySwap"):
        host["MemorySwap"] = 2 * memory
    host.setdefault("ShmSize", 64 * MIB)
    log = dict(host.get("LogConfig") or {"Type": "json-file", "Config": {}})
    if log.get("Type") == "json-file":
        log["Config"] = {**(daemon_log_opts or {}), **(log.get("Config") or {})}
    host["LogConfig"] = log
    check = dict(config.get("Healthcheck") or {})
    if check and api_version < (1, 44):
        check.pop("StartInterval", None)
    if check:
        config["Healthcheck"] = check
    ports: dict[str, list[dict[str, str]]] = {}
    for port, bindings in (host.get("PortBindings") or {}).items():
        for binding in bindings:
            ports.setdefault(port, []).append(binding)
            if ipv6_ports and binding["HostIp"] in ("", "0.0.0.0"):
                ports[port].append({"HostIp": "::", "HostPort": binding["HostPort"]})
    host.setdefault("NetworkMode", "default")
    return {
        "Name": "/" + name,
        # A container created from an image id reports that id; from a name, the name's image.
        "Image": image if image.startswith("sha256:") else "sha256:" + hashlib.sha256(image.encode()).hexdigest(),
        "Config": {"Hostname": name[:12], "User": "", "StopSignal": "", **config},
        "HostConfig": host,
        "NetworkSettings": {"Ports": ports},
    }
