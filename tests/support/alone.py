"""What every test that builds one component alone checks the same way: that nothing but the
component's own children and the stub host's exist, and what the policy pack says of them."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from policy.checklist import STACK_POLICIES
from tools.policy_run import Finding, evaluate, load_config
from tools.synth import Synth

CONTAINER = "docker:index/container:Container"
# The checklist's stack policies judge how components meet (every worker a Prometheus target):
# a component alone answers to every other policy, the hardening stack policies included.
PROGRAM_POLICIES = {p.name for p in STACK_POLICIES}


def children(synth: Synth, parent: str) -> list[dict[str, Any]]:
    return [r for r in synth.resources if r["parent"] == parent]


def containers(synth: Synth, parent: str) -> dict[str, dict[str, Any]]:
    """The component's containers by resource name, their inputs."""
    return {r["name"]: r["inputs"] for r in children(synth, parent) if r["type"] == CONTAINER}


def assert_only(synth: Synth, component: str, stubs: Collection[str] = ("stub",)) -> None:
    """Every resource is the component, a stub host, or a child of one of them."""
    roots = {r["name"] for r in synth.resources if r["parent"] is None}
    assert roots == {component, *stubs}, roots
    assert {r["parent"] for r in synth.resources} - {None} <= {component, *stubs}


def findings(synth: Synth) -> list[Finding]:
    """The pack as prod enforces it (`policy/config/prod.json`), but for `PROGRAM_POLICIES`."""
    return [f for f in evaluate(synth, load_config("prod")) if f.policy not in PROGRAM_POLICIES]


def assert_hardened(synth: Synth, writable: Collection[str] = ()) -> None:
    """No mandatory violation; the only advisory is a writable root filesystem, for exactly the
    containers in `writable`, each for a reason the pack names (`policy/hardening.py`)."""
    found = findings(synth)
    assert not [f for f in found if f.enforcement == "mandatory"], found
    assert {(f.policy, f.resource) for f in found} == {("writable-rootfs", name) for name in writable}, found
