"""The resource types the harness applies to the engine, and those it knowingly skips with a reason."""

from __future__ import annotations

from typing import Any

from tests.integration.harness.errors import UnknownResourceTypeError

NETWORK = "docker:index/network:Network"
VOLUME = "docker:index/volume:Volume"
IMAGE = "docker:index/image:Image"
CONTAINER = "docker:index/container:Container"
# Types that are not Docker objects. Each is skipped with the reason recorded in `Applied.skipped`.
SKIPPED_PREFIXES = {
    "random:": "value already revealed in the synth",
    "pulumi:providers:": "provider: the harness talks to the local engine itself",
    "inference-stack:": "component resource: no object of its own",
}


def check_type(res: dict[str, Any]) -> str | None:
    """None for a type the harness applies, else the reason it is skipped; raises for unknown types."""
    type_ = res["type"]
    if type_ in (NETWORK, VOLUME, IMAGE, CONTAINER):
        return None
    if type_ in ("command:local:Command", "command:remote:Command"):
        return "host provisioning step: not run against this machine"
    for prefix, reason in SKIPPED_PREFIXES.items():
        if type_.startswith(prefix):
            return reason
    raise UnknownResourceTypeError(f"{res['name']}: resource type {type_} has no mapping in the harness")
