"""Host ports: every port the fleet publishes (`stacks/network.py` lists them), each on one
service only, and every worker's `port + index` still a port."""

from __future__ import annotations

import ipaddress

from stacks.config import StackConfig
from stacks.errors import ConfigIssue, key_path
from stacks.network import Published, published
from stacks.placement import Placement


def port_rules(cfg: StackConfig, placements: list[Placement]) -> list[ConfigIssue]:
    return _port_range_issues(cfg, placements) + port_issues(cfg, placements)


def port_issues(cfg: StackConfig, placements: list[Placement]) -> list[ConfigIssue]:
    """Two services on one host address and port: the second container fails to start with
    "address already in use", after everything before it was deployed."""
    issues: list[ConfigIssue] = []
    seen: list[Published] = []
    for item in published(cfg, placements):
        first = next(
            (s for s in seen if (s.host, s.port) == (item.host, item.port) and _overlap(s.address, item.address)), None
        )
        seen.append(item)
        if first is None:
            continue
        where = "on every address" if ipaddress.ip_address(first.address).is_unspecified else f"on {first.address}"
        issues.append(
            ConfigIssue(
                key_path(item.loc),
                item.value,
                f"host port {item.port} on host `{item.host}` is already taken by {first.service} ({where}, "
                f"`{key_path(first.loc).split(':', 1)[1]}`): {item.service} could not start there",
                _port_fix(item, first),
            )
        )
    return issues


def _overlap(a: str, b: str) -> bool:
    """The same address, or one of them the unspecified address of the other's family (0.0.0.0
    takes the port on every IPv4 address of the host, `::` on every IPv6 one)."""
    x, y = ipaddress.ip_address(a), ipaddress.ip_address(b)
    return x == y or (x.version == y.version and (x.is_unspecified or y.is_unspecified))


def _port_fix(item: Published, first: Published) -> str:
    def key(p: Published) -> str:
        return f"`{key_path(p.loc).split(':', 1)[1]}`"

    if item.fixed:
        return f"{item.service}'s port is fixed: move {first.service} ({key(first)}) to another port"
    if item.loc[0] == "workers":
        return f"move the group's range ({key(item)}), e.g. 8000 and 8100 for two groups on a host"
    if first.fixed:
        return f"set {key(item)} to another port: {first.service}'s is fixed"
    return f"set {key(item)} or {key(first)} to another port, or publish them on different addresses"


def _port_range_issues(cfg: StackConfig, placements: list[Placement]) -> list[ConfigIssue]:
    """Worker `index` publishes `port + index`, which must still be a port."""
    issues = []
    for g, group in enumerate(cfg.workers):
        top = max((p.published_port or 0 for p in placements if p.group.name == group.name), default=0)
        if top > 65535:
            issues.append(
                ConfigIssue(
                    key_path(("workers", g, "port")),
                    group.port,
                    f"the group's workers publish `port` + their index, up to {top}, beyond the last port (65535)",
                    f"set `port` to at most {group.port - (top - 65535)}",
                )
            )
    return issues
