"""A stack's outputs as `pulumi stack output --show-secrets` would print them, under the synth's
mocks (the generated passwords are the mocks' deterministic stand-ins, the same the integration
harness deploys with)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
from pulumi.runtime.settings import get_root_resource

from stacks.errors import NAMESPACE
from tools import synth


@dataclass(frozen=True)
class StackOutput:
    value: Any
    secret: bool


def stack_outputs(
    stack: str, stack_file: Path | None = None, secrets: dict[str, str] | None = None
) -> dict[str, StackOutput]:
    """Runs the program as `synth.synth_stack` does and resolves every `pulumi.export`. The mocks
    register the root stack's outputs before the program runs, so they are read off it here."""
    from composition.platform import main

    config, secret_keys = synth.read_stack_file(stack_file or synth.ROOT / f"Pulumi.{stack}.yaml")
    for key, value in (secrets or {}).items():
        config[f"{NAMESPACE}:{key}"] = value
        secret_keys.append(f"{NAMESPACE}:{key}")
    captured: dict[str, StackOutput] = {}

    async def program() -> None:
        main()
        root: Any = get_root_resource()
        for name, value in root.outputs.items():
            output = pulumi.Output.from_input(value)
            captured[name] = StackOutput(await output.future(), await output.is_secret())

    synth.run(stack, config, secret_keys, program)
    return captured
