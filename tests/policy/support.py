"""Fixtures for the policy tests: the shipped ci stack, changed one input at a time."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from tools.policy_run import Finding, evaluate
from tools.synth import Synth

WORKER = "chat-local-0"


def new_findings(broken: Synth, baseline: Synth, config: dict[str, Any] | None = None) -> list[Finding]:
    """What `broken` reports beyond the shipped stack's own (advisory) findings."""
    before = set(evaluate(baseline, config or {}))
    return [f for f in evaluate(broken, config or {}) if f not in before]


def mutated(synth: Synth, names: str | tuple[str, ...], change: Callable[[dict[str, Any]], None]) -> Synth:
    broken = copy.deepcopy(synth)
    for name in (names,) if isinstance(names, str) else names:
        change(broken.named(name)["inputs"])
    return broken


def labels_set(inputs: dict[str, Any], key: str, value: str) -> None:
    inputs["labels"] = [item for item in inputs["labels"] if item["label"] != key] + [{"label": key, "value": value}]
